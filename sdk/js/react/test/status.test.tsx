// useRealtime: the status re-renders the component on every change, and
// the provider connects on mount and disconnects on unmount.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { StrictMode } from 'react';
import type { RealtimeClient, Status } from '@updraft/client';
import { RealtimeProvider, useRealtime } from '../src/index.js';
import { CountingWebSocket, mount, waitFor } from './util.js';
import { jwt, startNode, stopAll } from '../../client/test/integration/harness.js';

after(() => stopAll());

test('status follows the connection: connecting, connected, reconnecting, disconnected after unmount', async () => {
  const node = await startNode('');
  const seen: Status[] = [];
  let client: RealtimeClient | undefined;
  function Probe() {
    const { realtime, status } = useRealtime();
    client = realtime;
    if (seen[seen.length - 1] !== status) seen.push(status);
    return <p>{status}</p>;
  }
  const m = mount(
    <StrictMode>
      <RealtimeProvider url={node.wsUrl} token={jwt({ sub: 'u' })} WebSocket={CountingWebSocket} backoff={{ minMs: 50, maxMs: 100 }}>
        <Probe />
      </RealtimeProvider>
    </StrictMode>,
  );
  await waitFor(() => m.el.textContent === 'connected', `connected (shows ${m.el.textContent})`);
  assert.deepEqual(seen, ['idle', 'connecting', 'connected']);
  const rt = client!;
  await node.kill();
  await waitFor(() => m.el.textContent === 'reconnecting', `reconnecting (shows ${m.el.textContent})`);
  m.unmount();
  await waitFor(() => rt.status === 'disconnected', `the client disconnected (${rt.status})`);
});
