// Integration tests against two real `updraft serve` nodes on one Redis:
// pub/sub across nodes, history paging, permissions, presence and the
// server helper.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { RealtimeClient, UpdraftError, createServerClient, type MessagePayload, type PresencePayload } from '../../src/index.js';
import { API_KEY, jwt, startNode, startRedis, stopAll, uniq, waitFor, type Node } from './harness.js';

let a: Node, b: Node;
const clients: RealtimeClient[] = [];

before(async () => {
  const redis = await startRedis();
  [a, b] = await Promise.all([startNode(redis.url), startNode(redis.url)]);
});

after(async () => {
  for (const c of clients) c.disconnect();
  await stopAll();
});

function client(node: Node, claims: Record<string, unknown> = {}): RealtimeClient {
  const token = jwt({ sub: 'user-1', subscribe: ['chat/**', 'doc/**', 'ai/**', 'orders'], publish: ['chat/**', 'doc/**'], ...claims });
  const rt = new RealtimeClient({ url: node.wsUrl, token, WebSocket });
  clients.push(rt);
  return rt;
}

test('a message published on one node reaches a subscriber on the other, with from', async () => {
  const topic = uniq('chat/room');
  const sub = client(a, { sub: 'reader' });
  const pub = client(b, { sub: 'writer' });
  const got: MessagePayload[] = [];
  const res = await sub.channel(topic).on('message', (p) => got.push(p)).subscribe();
  assert.equal(sub.status, 'connected');
  assert.deepEqual(res, { epoch: res.epoch, seq: 0, recovered: false });
  const pos = await pub.channel(topic).publish('message', { text: 'hi' });
  assert.equal(pos.seq, 1);
  await waitFor(() => got.length === 1, 'the message on the other node');
  assert.deepEqual(got[0]!.data, { text: 'hi' });
  assert.equal(got[0]!.from, 'writer');
  assert.equal(got[0]!.seq, 1);
  assert.equal(typeof got[0]!.ts, 'number');
});

test('calls made before connect() are queued and run once connected', async () => {
  const topic = uniq('chat/lazy');
  const rt = client(a);
  assert.equal(rt.status, 'idle');
  const got: unknown[] = [];
  const ch = rt.channel(topic).on('*', (p) => got.push(p.data));
  const [res, pos] = await Promise.all([ch.subscribe(), ch.publish('note', 1)]);
  assert.equal(res.seq, 0);
  assert.equal(pos.seq, 1);
  await waitFor(() => got.length === 1, 'own publish');
});

test('the StrictMode sequence (subscribe, unsubscribe, on again, subscribe) handles each event once', async () => {
  const topic = uniq('chat/strict');
  const rt = client(a);
  const seen: unknown[] = [];
  const effect = () => {
    const channel = rt.channel(topic);
    channel.on('message', ({ data }) => seen.push(data)).subscribe().catch(() => {});
    return () => channel.unsubscribe();
  };
  const cleanup = effect();
  void cleanup();
  effect();
  await rt.channel(topic).subscribe();
  const sdk = createServerClient({ url: b.url, apiKey: API_KEY });
  for (const n of [1, 2, 3]) await sdk.emit({ topic, event: 'message', data: n });
  await waitFor(() => seen.length >= 3, 'three messages');
  await rt.ping(); // anything duplicated would have arrived before this reply
  assert.deepEqual(seen, [1, 2, 3]);
});

test('history pages back with before, oldest first', async () => {
  const topic = uniq('chat/hist');
  const sdk = createServerClient({ url: b.url, apiKey: API_KEY });
  const results = await sdk.emitBatch(Array.from({ length: 25 }, (_, i) => ({ topic, event: 'm', data: { i: i + 1 } })));
  assert.equal(results.length, 25);
  const rt = client(a);
  const ch = rt.channel(topic);
  const seqs = async (opts: { limit?: number; before?: number }) => (await ch.getHistory(opts)).messages.map((m) => m.seq);
  const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);
  assert.deepEqual(await seqs({ limit: 10 }), range(16, 25));
  assert.deepEqual(await seqs({ limit: 10, before: 16 }), range(6, 15));
  assert.deepEqual(await seqs({ limit: 10, before: 6 }), range(1, 5));
  assert.deepEqual(await seqs({ limit: 10, before: 1 }), []);
  const page = await ch.getHistory({ limit: 1 });
  assert.equal(page.epoch, (results[24] as { epoch: string }).epoch);
  assert.deepEqual(page.messages[0]!.data, { i: 25 });
  assert.equal(page.messages[0]!.event, 'm');
  const viaHttp = await sdk.history(topic, { limit: 3, before: 4 });
  assert.deepEqual(viaHttp.messages.map((m) => m.seq), [1, 2, 3]);
});

test('rewind replays the last messages before live ones', async () => {
  const topic = uniq('chat/rewind');
  const sdk = createServerClient({ url: a.url, apiKey: API_KEY });
  await sdk.emitBatch(Array.from({ length: 5 }, (_, i) => ({ topic, event: 'm', data: i + 1 })));
  const rt = client(b);
  const got: number[] = [];
  const res = await rt.channel(topic, { rewind: 3 }).on('m', (p) => got.push(p.seq)).subscribe();
  assert.equal(res.recovered, true);
  await sdk.emit({ topic, event: 'm', data: 6 });
  await waitFor(() => got.length === 4, 'rewound and live messages');
  assert.deepEqual(got, [3, 4, 5, 6]);
});

test('a forbidden topic rejects with forbidden; publishing to a table topic too', async () => {
  const rt = client(a, { subscribe: ['chat/*'], publish: ['chat/*'] });
  await assert.rejects(rt.channel('secret/plans').subscribe(), (e: unknown) => e instanceof UpdraftError && e.code === 'forbidden');
  await assert.rejects(rt.channel('orders').publish('INSERT', {}), (e: UpdraftError) => e.code === 'forbidden');
  await assert.rejects(rt.channel('chat/a').getHistory({ limit: -1 }), (e: UpdraftError) => e.code === 'bad_request');
  assert.equal(rt.status, 'connected');
});

test('presence: join, update and leave reach a watcher on the other node', async () => {
  const topic = uniq('doc/page');
  const watcher = client(a, { sub: 'watcher' });
  const sarah = client(b, { sub: 'sarah' });
  const events: PresencePayload[] = [];
  const wch = watcher.channel(topic, { presence: true }).on('presence', (p) => events.push(p));
  await wch.subscribe();
  const sch = sarah.channel(topic, { presence: true });
  await sch.subscribe();
  await sch.track({ name: 'Sarah' });
  await waitFor(() => events.length === 1, 'join');
  assert.equal(events[0]!.event, 'join');
  assert.equal(events[0]!.member.key, 'sarah');
  assert.equal(events[0]!.member.conn, sarah.session);
  assert.deepEqual(events[0]!.member.state, { name: 'Sarah' });
  assert.deepEqual(events[0]!.members.map((m) => m.key), ['sarah']);
  const members = await wch.members();
  assert.deepEqual(members.map((m) => m.key), ['sarah']);
  const sdk = createServerClient({ url: a.url, apiKey: API_KEY });
  assert.deepEqual((await sdk.presence(topic)).map((m) => m.conn), [sarah.session]);

  await sch.track({ name: 'Sarah', typing: true });
  await waitFor(() => events.length === 2, 'update');
  assert.equal(events[1]!.event, 'update');
  assert.deepEqual(events[1]!.member.state, { name: 'Sarah', typing: true });

  await sch.untrack();
  await waitFor(() => events.length === 3, 'leave');
  assert.equal(events[2]!.event, 'leave');
  assert.deepEqual(events[2]!.members, []);
  assert.deepEqual(wch.presence, []);

  // A late subscriber gets the current members from its subscribe reply.
  await sch.track({ name: 'Sarah' });
  await waitFor(() => events.length === 4, 'join again');
  const late = client(a, { sub: 'late' });
  const lateEvents: PresencePayload[] = [];
  await late.channel(topic, { presence: true }).on('presence', (p) => lateEvents.push(p)).subscribe();
  assert.deepEqual(lateEvents.map((e) => `${e.event} ${e.member.key}`), ['join sarah']);
  // Unsubscribing leaves.
  await sch.unsubscribe();
  await waitFor(() => events.length === 5 && events[4]!.event === 'leave', 'leave on unsubscribe');
});

test('server helper: socket.emit, emit, emitBatch with a failing message', async () => {
  const topic = uniq('chat/engineering');
  const rt = client(a);
  const got: MessagePayload[] = [];
  await rt.channel(topic).on('*', (p) => got.push(p)).subscribe();
  const sdk = createServerClient({ url: b.url, apiKey: API_KEY });
  const p1 = await sdk.socket.emit('message', { text: 'from the server' }, topic);
  assert.equal(p1.seq, 1);
  const p2 = await sdk.emit({ topic, event: 'note', data: [1, 2] });
  assert.equal(p2.seq, 2);
  const results = await sdk.emitBatch([
    { topic, event: 'b', data: 1 },
    { topic: 'orders', event: 'x', data: 2 },
    { topic, event: 'b', data: 3 },
  ]);
  assert.deepEqual((results[0] as { seq: number }).seq, 3);
  assert.ok(results[1] instanceof UpdraftError && results[1].code === 'forbidden');
  assert.deepEqual((results[2] as { seq: number }).seq, 4);
  await waitFor(() => got.length === 4, 'four messages');
  assert.deepEqual(got.map((p) => [p.event, p.data, p.from]), [
    ['message', { text: 'from the server' }, undefined],
    ['note', [1, 2], undefined],
    ['b', 1, undefined],
    ['b', 3, undefined],
  ]);
  const bad = createServerClient({ url: b.url, apiKey: 'wrong' });
  await assert.rejects(bad.emit({ topic, event: 'x' }), (e: UpdraftError) => e.status === 401);
});

test('server helper: stream publishes each value as it is yielded, then .end', async () => {
  const topic = uniq('ai/answer');
  const rt = client(a);
  const tokens: unknown[] = [];
  let end: unknown;
  await rt
    .channel(topic)
    .on('token', (p) => tokens.push(p.data))
    .on('token.end', (p) => (end = p.data))
    .subscribe();
  const sdk = createServerClient({ url: b.url, apiKey: API_KEY });
  const words = ['Hello', ', ', 'world', '!'];
  // Each word is yielded only once the watcher got the one before: a
  // fetch that buffered the body would never get there.
  async function* model() {
    for (let i = 0; i < words.length; i++) {
      if (i > 0) await waitFor(() => tokens.length === i, `token ${i} before yielding the next`);
      yield words[i];
    }
  }
  const res = await sdk.stream(topic, 'token', model());
  // The answer can come before the watcher's WebSocket delivered the last token.
  await waitFor(() => tokens.length === words.length, 'the last token');
  assert.deepEqual(tokens, words);
  assert.equal(res.count, 4);
  assert.equal(res.lastSeq - res.firstSeq + 1, 4);
  await waitFor(() => end !== undefined, 'token.end');
  assert.deepEqual(end, { first_seq: res.firstSeq, last_seq: res.lastSeq, count: 4 });

  // With rollup, values that arrive within a window go out as one array.
  const rolled: unknown[] = [];
  const topic2 = uniq('ai/rolled');
  await rt.channel(topic2).on('t', (p) => rolled.push(p.data)).subscribe();
  const r2 = await sdk.stream(topic2, 't', ['a', 'b', 'c'], { rollup: '200ms' });
  await waitFor(() => rolled.length === r2.count, 'rolled-up messages');
  assert.deepEqual(rolled.flat(), ['a', 'b', 'c']);
  assert.ok(r2.count < 3, `rollup sent ${r2.count} messages`);

  // An iterable that throws cuts the stream: watchers get .error, the caller the error.
  const topic3 = uniq('ai/broken');
  let streamErr: unknown;
  await rt.channel(topic3).on('t.error', (p) => (streamErr = p.data)).subscribe();
  const boom = new Error('model crashed');
  async function* broken() {
    yield 'partial';
    throw boom;
  }
  await assert.rejects(sdk.stream(topic3, 't', broken()), (e) => e === boom);
  await waitFor(() => streamErr !== undefined, 't.error');

  // A bad query is refused with a typed error.
  await assert.rejects(sdk.stream('orders', 't', ['x']), (e: UpdraftError) => e.status === 403 && e.code === 'forbidden');
});
