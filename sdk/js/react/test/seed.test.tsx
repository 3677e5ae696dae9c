// The product page's own component, LiveFeed, under StrictMode against a
// real gateway that tracks a real PostgreSQL table. test/fixtures/LiveFeed.jsx
// is the page's snippet with only its import line changed (to
// `import { useRealtime as useAerostack } from '@updraft/react'`); the snippet
// does not export its component, so the test compiles it with esbuild and
// appends the export. It imports the built package (dist), as an app would,
// so the provider below comes from '@updraft/react' too.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { StrictMode, type ComponentType } from 'react';
import { transformSync } from 'esbuild';
import type { RealtimeClient } from '@updraft/client';
import { RealtimeProvider, useChannel, useRealtime } from '@updraft/react';
import { CountingWebSocket, mount, waitFor } from './util.js';
import { jwt, startNode, startPostgres, stopAll, type Postgres } from '../../client/test/integration/harness.js';

let pg: Postgres | undefined;

after(async () => {
  await stopAll(); // the gateway first, then PostgreSQL
  await pg?.stop();
});

/** Compiles the fixture next to the compiled tests (so that its imports resolve) and loads it. */
async function loadLiveFeed(): Promise<ComponentType> {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const src = path.resolve(here, '../../../test/fixtures/LiveFeed.jsx');
  const { code } = transformSync(fs.readFileSync(src, 'utf8'), { loader: 'jsx', jsx: 'automatic', format: 'esm' });
  const out = path.join(here, 'LiveFeed.fixture.js');
  fs.writeFileSync(out, code + '\nexport { LiveFeed }\n');
  return ((await import(pathToFileURL(out).href)) as { LiveFeed: ComponentType }).LiveFeed;
}

test("the product page's LiveFeed shows each inserted row exactly once under StrictMode, beside a useChannel of the same table", async () => {
  const LiveFeed = await loadLiveFeed();
  pg = await startPostgres();
  pg.sql('CREATE TABLE orders (id int PRIMARY KEY, status text NOT NULL)');
  const node = await startNode('', { UPDRAFT_DATABASE_URL: pg.url, UPDRAFT_TRACK_TABLES: 'orders', UPDRAFT_POLL_INTERVAL: '50ms' });
  let client: RealtimeClient | undefined;
  const hooked: string[] = [];
  function Probe() {
    client = useRealtime().realtime;
    // The same topic through the hook: LiveFeed's unsubscribe (StrictMode) must not end it.
    useChannel('orders', { INSERT: ({ data }) => hooked.push(`insert ${data.id}`), UPDATE: ({ data }) => hooked.push(`update ${data.id}`) });
    return null;
  }
  const m = mount(
    <StrictMode>
      <RealtimeProvider url={node.wsUrl} token={jwt({ sub: 'ops', subscribe: ['orders'] })} WebSocket={CountingWebSocket}>
        <Probe />
        <LiveFeed />
      </RealtimeProvider>
    </StrictMode>,
  );
  await waitFor(() => client?.channel('orders').state === 'joined', 'the LiveFeed subscribed');
  const rows = () => [...m.el.querySelectorAll('li')].map((li) => li.textContent);

  for (let id = 1; id <= 5; id++) pg.sql(`INSERT INTO orders VALUES (${id}, 'new-${id}')`);
  await waitFor(() => rows().length >= 5, `five rows (${rows()})`);
  pg.sql(`UPDATE orders SET status = 'paid-2' WHERE id = 2`);
  await waitFor(() => rows().includes('paid-2'), `the update (${rows()})`);
  // A last row: anything duplicated would have arrived before it.
  pg.sql(`INSERT INTO orders VALUES (6, 'new-6')`);
  await waitFor(() => rows().includes('new-6'), `the last row (${rows()})`);
  assert.deepEqual(rows(), ['new-6', 'new-5', 'new-4', 'new-3', 'paid-2', 'new-1']);
  await waitFor(() => hooked.length === 7, `the hook's seven changes (${hooked})`);
  assert.deepEqual(hooked, ['insert 1', 'insert 2', 'insert 3', 'insert 4', 'insert 5', 'update 2', 'insert 6']);
  m.unmount();
});
