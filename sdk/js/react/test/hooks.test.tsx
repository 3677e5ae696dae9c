// useChannel, usePresence and useHistory against a real gateway, under
// StrictMode. The provider's client uses a WebSocket that records the
// frames it sends, so that the tests can count subscribes and unsubscribes
// the server received.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { StrictMode, useState, type ReactNode } from 'react';
import WebSocket from 'ws';
import { RealtimeClient, type Member } from '@updraft/client';
import { RealtimeProvider, useChannel, useHistory, usePresence, useRealtime, type UseHistoryResult } from '../src/index.js';
import { CountingWebSocket, count, mount, waitFor } from './util.js';
import { jwt, startNode, stopAll, uniq, type Node } from '../../client/test/integration/harness.js';

let node: Node;
const clients: RealtimeClient[] = [];
const claims = { subscribe: ['chat/**', 'doc/**'], publish: ['chat/**', 'doc/**'] };
const tokens: Record<string, string> = {};
const token = (sub: string) => (tokens[sub] ??= jwt({ sub, ...claims }));

before(async () => {
  node = await startNode('');
});

after(async () => {
  for (const c of clients) c.disconnect();
  await stopAll();
});

/** A plain client (not through React) that publishes and witnesses. */
function witness(): RealtimeClient {
  const rt = new RealtimeClient({ url: node.wsUrl, token: token('witness'), WebSocket });
  clients.push(rt);
  return rt;
}

/** The provider of the tests: StrictMode, the counting WebSocket, the node. */
function App({ sub = 'alice', children }: { sub?: string; children: ReactNode }) {
  return (
    <StrictMode>
      <RealtimeProvider url={node.wsUrl} token={token(sub)} WebSocket={CountingWebSocket}>
        {children}
      </RealtimeProvider>
    </StrictMode>
  );
}

test('useChannel receives events; unmounting unsubscribes on the server, and mounting again works', async () => {
  const topic = uniq('chat/feed');
  const got: number[] = [];
  let state = '';
  function Feed() {
    const ch = useChannel(topic, { message: ({ data }) => got.push(data.n) });
    state = ch.state;
    return <p>{ch.state}</p>;
  }
  const m = mount(<App>{<Feed />}</App>);
  await waitFor(() => state === 'joined', `joined (${state})`);
  assert.equal(count('subscribe', topic), 1, 'StrictMode subscribed once');

  const w = witness();
  const seen: number[] = [];
  await w.channel(topic).on('message', ({ data }) => seen.push(data.n)).subscribe();
  await w.channel(topic).publish('message', { n: 1 });
  await waitFor(() => got.length === 1, `event 1 (got ${got})`);

  m.render(<App>{null}</App>);
  await waitFor(() => count('unsubscribe', topic) === 1, 'the unsubscribe frame');
  await w.channel(topic).publish('message', { n: 2 });
  await waitFor(() => seen.includes(2), 'the witness saw event 2');
  // Mounted again on the same connection: had the server kept the old
  // subscription, event 2 would arrive before event 3.
  state = '';
  m.render(<App>{<Feed />}</App>);
  await waitFor(() => state === 'joined', `joined again (${state})`);
  assert.equal(count('subscribe', topic), 2);
  await w.channel(topic).publish('message', { n: 3 });
  await waitFor(() => got.length === 2, `event 3 (got ${got})`);
  assert.deepEqual(got, [1, 3]);
  m.unmount();
});

test('handlers change between renders without a resubscribe; two components share one subscription', async () => {
  const topic = uniq('chat/labels');
  const got: string[] = [];
  const other: number[] = [];
  let state = '';
  function Labelled({ label }: { label: string }) {
    const ch = useChannel(topic, { message: ({ data }) => got.push(`${label}:${data.n}`) });
    state = ch.state;
    return <p>{label}</p>;
  }
  function Other() {
    useChannel(topic, { '*': ({ data }) => other.push(data.n) });
    return null;
  }
  const m = mount(
    <App>
      <Labelled label="x" />
      <Other />
    </App>,
  );
  await waitFor(() => state === 'joined', 'joined');
  const w = witness();
  await w.channel(topic).publish('message', { n: 1 });
  await waitFor(() => got.length === 1 && other.length === 1, `event 1 (${got}; ${other})`);
  m.render(
    <App>
      <Labelled label="y" />
      <Other />
    </App>,
  );
  await waitFor(() => m.el.textContent === 'y', 'the new label rendered');
  await w.channel(topic).publish('message', { n: 2 });
  await waitFor(() => got.length === 2 && other.length === 2, `event 2 (${got}; ${other})`);
  assert.deepEqual(got, ['x:1', 'y:2']);
  assert.deepEqual(other, [1, 2]);
  assert.equal(count('subscribe', topic), 1, 'one subscribe for two components, StrictMode and a re-render');
  assert.equal(count('unsubscribe', topic), 0);
  m.unmount();
});

test('usePresence: two providers see each other join, update and leave; useChannel shares the topic', async () => {
  const topic = uniq('doc/presence');
  const views: Record<string, Member[]> = {};
  const messages: string[] = [];
  function Doc({ name, typing }: { name: string; typing: boolean }) {
    const { members } = usePresence(topic, { name, typing });
    const { publish } = useChannel(topic, { note: ({ data }) => messages.push(`${name} got ${data}`) });
    views[name] = members;
    return (
      <button onClick={() => void publish('note', `from ${name}`)}>
        {members.map((m) => `${m.state?.name}${m.state?.typing ? '…' : ''}`).join(',')}
      </button>
    );
  }
  const a = mount(<App sub="alice">{<Doc name="alice" typing={false} />}</App>);
  const b = mount(<App sub="bob">{<Doc name="bob" typing={false} />}</App>);
  const names = (who: string) => (views[who] ?? []).map((m) => `${m.state.name}${m.state.typing ? '…' : ''}`).sort().join(',');
  await waitFor(() => names('alice') === 'alice,bob' && names('bob') === 'alice,bob', `both members on both sides (${names('alice')} | ${names('bob')})`);
  assert.equal(count('track', topic), 2, 'one track per provider under StrictMode');

  a.render(<App sub="alice">{<Doc name="alice" typing={true} />}</App>);
  await waitFor(() => names('bob') === 'alice…,bob', `bob sees alice typing (${names('bob')})`);
  // The same state again sends nothing.
  a.render(<App sub="alice">{<Doc name="alice" typing={true} />}</App>);

  // useChannel on the presence topic works alongside.
  (a.el.querySelector('button') as unknown as { click(): void }).click();
  await waitFor(() => messages.length === 2, `the note reached both (${messages})`);
  assert.deepEqual(messages.sort(), ['alice got from alice', 'bob got from alice']);
  assert.equal(count('track', topic), 3);

  // usePresence unmounts while useChannel keeps the topic: alice untracks and stays subscribed.
  let listening = '';
  function Listen() {
    listening = useChannel(topic, {}).state;
    return null;
  }
  a.render(<App sub="alice">{<Listen />}</App>);
  await waitFor(() => names('bob') === 'bob', `alice left (${names('bob')})`);
  assert.equal(count('untrack', topic), 1);
  assert.equal(count('unsubscribe', topic), 0);
  assert.equal(listening, 'joined');
  a.render(<App sub="alice">{null}</App>);
  await waitFor(() => count('unsubscribe', topic) === 1, 'alice unsubscribed');
  a.unmount();
  b.unmount();
});

test('useHistory pages back, then appends live events', async () => {
  const topic = uniq('chat/history');
  const w = witness();
  for (let n = 1; n <= 7; n++) await w.channel(topic).publish('message', { n });
  let h: UseHistoryResult | undefined;
  function History() {
    h = useHistory(topic, { limit: 3, live: true });
    return <p>{h.messages.map((m) => m.data.n).join(',')}</p>;
  }
  const m = mount(<App>{<History />}</App>);
  await waitFor(() => m.el.textContent === '5,6,7', `the newest page (${m.el.textContent})`);
  assert.equal(h!.hasMore, true);
  await h!.loadMore();
  await waitFor(() => m.el.textContent === '2,3,4,5,6,7', `two pages (${m.el.textContent})`);
  await h!.loadMore();
  await waitFor(() => m.el.textContent === '1,2,3,4,5,6,7', `all (${m.el.textContent})`);
  await waitFor(() => h!.hasMore === false && !h!.loading, 'no more');
  await waitFor(() => count('subscribe', topic) === 1, 'live subscribed');
  await w.channel(topic).publish('message', { n: 8 });
  await waitFor(() => m.el.textContent === '1,2,3,4,5,6,7,8', `live event appended (${m.el.textContent})`);
  assert.deepEqual(h!.messages.map((x) => x.seq), [1, 2, 3, 4, 5, 6, 7, 8]);
  m.unmount();
});

test('a refused subscription shows as state error with its code; a second filter on a topic is refused', async () => {
  const forbidden = uniq('secret/plans');
  const table = 'orders';
  const seen: Record<string, { state: string; code: string | undefined }> = {};
  function Probe({ name, topic, filter }: { name: string; topic: string; filter?: string }) {
    const { state, error } = useChannel(topic, {}, filter ? { filter } : {});
    seen[name] = { state, code: error?.code };
    return null;
  }
  const m = mount(
    <App>
      <Probe name="forbidden" topic={forbidden} />
      <Probe name="paid" topic={table} filter="status=eq.paid" />
      <Probe name="new" topic={table} filter="status=eq.new" />
    </App>,
  );
  await waitFor(() => seen.forbidden?.state === 'error', `forbidden (${JSON.stringify(seen)})`);
  assert.equal(seen.forbidden!.code, 'forbidden');
  assert.deepEqual(seen.new, { state: 'error', code: 'bad_request' });
  m.unmount();
});

test('useRealtime gives the client to effects written against @updraft/client', async () => {
  const topic = uniq('chat/raw');
  let n = 0;
  let client: RealtimeClient | undefined;
  function Raw() {
    const { realtime, status } = useRealtime();
    client = realtime;
    const [got, setGot] = useState<number[]>([]);
    useStateEffect(realtime, topic, setGot);
    n = got.length;
    return <p>{status}</p>;
  }
  const m = mount(<App>{<Raw />}</App>);
  await waitFor(() => m.el.textContent === 'connected', 'connected');
  await waitFor(() => client!.channel(topic).state === 'joined', 'subscribed (StrictMode: twice, with an unsubscribe between)');
  const w = witness();
  await w.channel(topic).publish('message', { n: 1 });
  await waitFor(() => n === 1, 'one event');
  await w.channel(topic).publish('message', { n: 2 });
  await waitFor(() => n === 2, 'two events');
  m.unmount();
});

import { useEffect } from 'react';
function useStateEffect(realtime: RealtimeClient, topic: string, set: (f: (p: number[]) => number[]) => void) {
  useEffect(() => {
    const channel = realtime.channel(topic);
    channel.on('message', ({ data }) => set((p) => [...p, data.n])).subscribe();
    return () => void channel.unsubscribe();
  }, [realtime]);
}
