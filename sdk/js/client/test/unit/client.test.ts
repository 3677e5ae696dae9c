import { test, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { RealtimeClient, UpdraftError, type Status, type RealtimeClientOptions } from '../../src/index.js';
import { FakeClock, FakeSocket, fakeJwt, flush } from './fake.js';

let clock: FakeClock;
beforeEach(() => {
  clock = new FakeClock();
  FakeSocket.all = [];
  FakeSocket.answerPings = true;
});

function client(opts: Partial<RealtimeClientOptions> = {}): { rt: RealtimeClient; statuses: Status[] } {
  const rt = new RealtimeClient({ url: 'ws://a/api/realtime', WebSocket: FakeSocket, clock, random: () => 0.5, ...opts });
  const statuses: Status[] = [];
  rt.onStatusChange((s) => statuses.push(s));
  return { rt, statuses };
}

async function connected(rt: RealtimeClient, session = 's_1'): Promise<FakeSocket> {
  const p = rt.connect();
  await flush();
  const ws = FakeSocket.last();
  ws.accept(session);
  await p;
  return ws;
}

test('status goes idle, connecting, connected, reconnecting, connected, disconnected', async () => {
  const { rt, statuses } = client();
  assert.equal(rt.status, 'idle');
  const ws = await connected(rt);
  assert.deepEqual(ws.protocols, 'updraft.v1');
  assert.equal(ws.lastOf('connect').sdk, 'js/0.1.0');
  ws.serverClose(1006);
  assert.equal(rt.status, 'reconnecting');
  assert.deepEqual(clock.pending(), [50]); // backoff(0) with random 0.5 of 100ms
  await clock.advance(50);
  assert.equal(FakeSocket.all.length, 2);
  FakeSocket.last().accept('s_2');
  await flush();
  assert.equal(rt.status, 'connected');
  assert.equal(rt.session, 's_2');
  rt.disconnect();
  assert.deepEqual(statuses, ['connecting', 'connected', 'reconnecting', 'connected', 'disconnected']);
  assert.equal(FakeSocket.last().closedByClient, 1000);
});

test('failed attempts back off exponentially and give up after maxReconnectAttempts', async () => {
  const { rt, statuses } = client({ maxReconnectAttempts: 3, random: () => 0.999999 });
  const p = rt.connect();
  await flush();
  const delays: number[] = [];
  for (let i = 0; i < 3; i++) {
    FakeSocket.last().serverClose(1006);
    delays.push(clock.pending()[0]!);
    await clock.advance(delays[i]!);
  }
  FakeSocket.last().serverClose(1006);
  assert.deepEqual(delays, [100, 200, 400]);
  await assert.rejects(p, (e: UpdraftError) => e.code === 'unavailable');
  assert.deepEqual(statuses, ['connecting', 'disconnected']);
});

test('1012 reconnects at once to the next url; 4000 and 4003 never reconnect', async () => {
  const { rt } = client({ url: ['ws://a/api/realtime', 'ws://b/api/realtime'] });
  const ws = await connected(rt);
  assert.equal(ws.url, 'ws://a/api/realtime');
  ws.recv({ type: 'disconnect', code: 1012, reason: 'draining', reconnect: true });
  ws.serverClose(1012);
  assert.deepEqual(clock.pending(), [0]);
  await clock.advance(0);
  assert.equal(FakeSocket.last().url, 'ws://b/api/realtime');
  FakeSocket.last().accept();
  await flush();
  for (const code of [4000, 4003]) {
    FakeSocket.last().serverClose(code, 'go away');
    assert.equal(rt.status, 'disconnected');
    assert.equal(rt.error?.closeCode, code);
    assert.equal(clock.pending().length, 0);
    await connected(rt);
  }
  // The code of the disconnect message wins over an abnormal close.
  FakeSocket.last().recv({ type: 'disconnect', code: 4000, reason: 'malformed', reconnect: false });
  FakeSocket.last().serverClose(1006);
  assert.equal(rt.status, 'disconnected');
  await assert.rejects(rt.channel('chat/x').publish('m', {}), (e: UpdraftError) => e.code === 'closed');
});

test('calls made before connect are queued; subscribes go first after connecting', async () => {
  const { rt } = client();
  const ch = rt.channel('chat/a');
  const pub = ch.publish('message', { text: 'hi' }, { persist: true });
  const sub = ch.subscribe();
  assert.equal(rt.status, 'connecting');
  await flush();
  const ws = FakeSocket.last();
  ws.accept();
  await flush();
  const types = ws.sent.map((m) => m.type);
  assert.deepEqual(types, ['connect', 'subscribe', 'publish']);
  ws.reply(ws.lastOf('subscribe'), { epoch: 'e1', seq: 4, recovered: false });
  ws.reply(ws.lastOf('publish'), { epoch: 'e1', seq: 5 });
  assert.deepEqual(await sub, { epoch: 'e1', seq: 4, recovered: false });
  assert.deepEqual(await pub, { epoch: 'e1', seq: 5 });
  assert.equal(ws.lastOf('publish').persist, true);
});

test('one frame with a reply and events dispatches in order, to named and * handlers, once each', async () => {
  const { rt } = client();
  const ws = await connected(rt);
  const got: string[] = [];
  const sub = rt
    .channel('orders')
    .on('INSERT', (p) => got.push(`INSERT ${p.seq} ${JSON.stringify(p.data)} old=${p.old} t=${p.truncated}`))
    .on('UPDATE', (p) => got.push(`UPDATE ${p.seq} old=${JSON.stringify(p.old)}`))
    .on('*', (p) => got.push(`* ${p.event} ${p.seq}`))
    .subscribe();
  await flush();
  const req = ws.lastOf('subscribe');
  const ev = (seq: number, event: string, extra = {}) => ({ type: 'event', topic: 'orders', event, epoch: 'e1', seq, ts: 1, data: { id: seq }, ...extra });
  ws.recv(
    { type: 'reply', ref: req.ref, ok: true, data: { epoch: 'e1', seq: 2 } },
    ev(2, 'INSERT'), // at the reply's position: not delivered
    ev(3, 'INSERT'),
    ev(4, 'UPDATE', { old: { id: 3 } }),
    ev(4, 'UPDATE'), // duplicate
    { type: 'event', topic: 'other', event: 'INSERT', epoch: 'e1', seq: 9, ts: 1 },
  );
  await sub;
  assert.deepEqual(got, ['INSERT 3 {"id":3} old=undefined t=false', '* INSERT 3', 'UPDATE 4 old={"id":3}', '* UPDATE 4']);
});

test('application events carry data, from, seq and ts', async () => {
  const { rt } = client();
  const ws = await connected(rt);
  let got: any;
  void rt.channel('chat/a').on('message', (p) => (got = p)).subscribe();
  await flush();
  ws.reply(ws.lastOf('subscribe'), { epoch: '', seq: 0 });
  ws.recv({ type: 'event', topic: 'chat/a', event: 'message', epoch: 'e1', seq: 1, ts: 7, from: 'u1', data: { text: 'hi' } });
  assert.deepEqual(got, { event: 'message', topic: 'chat/a', data: { text: 'hi' }, from: 'u1', epoch: 'e1', seq: 1, ts: 7 });
});

test('after a reconnect the channel resubscribes with since, re-tracks, and reports recovery_failed', async () => {
  const { rt } = client();
  let ws = await connected(rt);
  const statuses: string[] = [];
  const ch = rt.channel('doc/1', { presence: true, rewind: 10 });
  const sub = ch.subscribe((e) => statuses.push(e.status));
  await flush();
  assert.equal(ws.lastOf('subscribe').rewind, 10);
  assert.equal(ws.lastOf('subscribe').presence, true);
  ws.reply(ws.lastOf('subscribe'), { epoch: 'e1', seq: 10, recovered: true, members: [] });
  await sub;
  ws.recv({ type: 'event', topic: 'doc/1', event: 'edit', epoch: 'e1', seq: 11, ts: 1 });
  const tracked = ch.track({ name: 'Ann' });
  await flush();
  ws.reply(ws.lastOf('track'));
  await tracked;

  ws.serverClose(4008, 'slow consumer');
  await clock.advance(1000);
  ws = FakeSocket.last();
  ws.accept('s_2');
  await flush();
  const resub = ws.lastOf('subscribe');
  assert.deepEqual(resub.since, { epoch: 'e1', seq: 11 });
  assert.equal(resub.rewind, undefined);
  assert.equal(ws.lastOf('track'), undefined, 'track waits for the subscribe reply');
  ws.reply(resub, { epoch: 'e2', seq: 3, recovered: false, members: [] });
  await flush();
  assert.deepEqual(ws.lastOf('track').state, { name: 'Ann' });
  assert.deepEqual(statuses, ['subscribed', 'subscribed', 'recovery_failed']);
  assert.deepEqual(ch.position, { epoch: 'e2', seq: 3 });
});

test('a resubscribe answered unavailable is retried with backoff; forbidden ends it with an error', async () => {
  const { rt } = client();
  let ws = await connected(rt);
  const statuses: string[] = [];
  const ch = rt.channel('chat/a');
  void ch.subscribe((e) => statuses.push(e.status + ('error' in e ? ':' + e.error.code : '')));
  await flush();
  ws.reply(ws.lastOf('subscribe'), { epoch: 'e1', seq: 1 });
  ws.serverClose(1006);
  await clock.advance(100);
  ws = FakeSocket.last();
  ws.accept();
  await flush();
  ws.refuse(ws.lastOf('subscribe'), 'unavailable');
  assert.equal(ws.ofType('subscribe').length, 1);
  await clock.advance(100);
  assert.equal(ws.ofType('subscribe').length, 2);
  ws.refuse(ws.lastOf('subscribe'), 'forbidden');
  assert.equal(ch.state, 'closed');
  assert.deepEqual(statuses, ['subscribed', 'retrying:unavailable', 'error:forbidden']);
});

test('a refused subscribe rejects with a typed error', async () => {
  const { rt } = client();
  const ws = await connected(rt);
  const p = rt.channel('secret/x').subscribe();
  await flush();
  ws.refuse(ws.lastOf('subscribe'), 'forbidden', 'not allowed to subscribe to secret/x');
  await assert.rejects(p, (e: unknown) => e instanceof UpdraftError && e.code === 'forbidden' && /secret/.test(e.message));
  // A publish cut off by a drop rejects with disconnected; a history read is retried.
  const pub = rt.channel('chat/a').publish('m', 1);
  const hist = rt.channel('chat/a').getHistory({ limit: 2 });
  await flush();
  ws.serverClose(1006);
  await assert.rejects(pub, (e: UpdraftError) => e.code === 'disconnected');
  await clock.advance(100);
  const ws2 = FakeSocket.last();
  ws2.accept();
  await flush();
  const h = ws2.lastOf('history');
  assert.equal(h.limit, 2);
  ws2.reply(h, { epoch: 'e1', messages: [{ seq: 1, event: 'm', ts: 1, data: 1 }] });
  assert.deepEqual(await hist, { epoch: 'e1', messages: [{ seq: 1, event: 'm', ts: 1, data: 1 }] });
});

test('requests time out with a timeout error', async () => {
  const { rt } = client({ requestTimeoutMs: 500 });
  await connected(rt);
  const p = assert.rejects(rt.channel('chat/a').members(), (e: UpdraftError) => e.code === 'timeout');
  await clock.advance(500);
  await p;
});

test('unsubscribe drops handlers: subscribe, unsubscribe, on, subscribe (StrictMode) handles each event once', async () => {
  const { rt } = client();
  const ws = await connected(rt);
  const seen: number[] = [];
  const mount = () => {
    const ch = rt.channel('orders');
    ch.on('INSERT', ({ seq }) => seen.push(seq)).subscribe().catch(() => {});
    return () => ch.unsubscribe();
  };
  const cleanup = mount();
  void cleanup();
  mount();
  await flush();
  assert.equal(rt.channel('orders'), rt.channel('orders'));
  const subs = ws.ofType('subscribe');
  assert.deepEqual(ws.sent.slice(1).map((m) => m.type), ['subscribe', 'unsubscribe', 'subscribe']);
  ws.reply(subs[0], { epoch: 'e1', seq: 0 });
  ws.reply(ws.lastOf('unsubscribe'));
  ws.reply(subs[1], { epoch: 'e1', seq: 0 });
  ws.recv({ type: 'event', topic: 'orders', event: 'INSERT', epoch: 'e1', seq: 1, ts: 1, data: {} });
  assert.deepEqual(seen, [1]);
});

test('the same topic and options give the same channel; another filter on a subscribed topic is refused', async () => {
  const { rt } = client();
  await connected(rt);
  assert.equal(rt.channel('orders', { filter: 'a=eq.1' }), rt.channel('orders', { filter: 'a=eq.1' }));
  assert.notEqual(rt.channel('orders'), rt.channel('orders', { filter: 'a=eq.1' }));
  assert.notEqual(rt.createChannel('orders'), rt.channel('orders'));
  void rt.channel('orders').subscribe();
  await assert.rejects(rt.channel('orders', { filter: 'a=eq.1' }).subscribe(), (e: UpdraftError) => e.code === 'bad_request');
  await assert.rejects(rt.createChannel('orders', { filter: 'a=eq.1' }).subscribe(), (e: UpdraftError) => e.code === 'bad_request');
});

test('channels of one topic share the server subscription: each gets every event once, the last unsubscribe ends it', async () => {
  const { rt } = client();
  const ws = await connected(rt);
  const a: number[] = [];
  const b: number[] = [];
  const ca = rt.channel('orders').on('INSERT', ({ seq }) => a.push(seq));
  const cb = rt.createChannel('orders').on('*', ({ seq }) => b.push(seq));
  const pa = ca.subscribe();
  const pb = cb.subscribe();
  await flush();
  const subs = ws.ofType('subscribe');
  assert.equal(subs.length, 2);
  ws.reply(subs[0], { epoch: 'e1', seq: 4 });
  ws.reply(subs[1], { epoch: 'e1', seq: 4 });
  await Promise.all([pa, pb]);
  const ins = (seq: number) => ({ type: 'event', topic: 'orders', event: 'INSERT', epoch: 'e1', seq, ts: 1, data: {} });
  ws.recv(ins(5), ins(6), ins(6));
  assert.deepEqual([a, b], [[5, 6], [5, 6]]);
  // The seed's cleanup: unsubscribe drops a's handlers and leaves b subscribed on the server.
  await ca.unsubscribe();
  assert.equal(ws.ofType('unsubscribe').length, 0);
  ws.recv(ins(7));
  assert.deepEqual([a, b], [[5, 6], [5, 6, 7]]);
  const done = cb.unsubscribe();
  ws.reply(ws.lastOf('unsubscribe'));
  await done;
  assert.equal(ws.lastOf('unsubscribe').topic, 'orders');
});

test('a shared topic is subscribed with presence while any channel wants it; leaving a shared topic untracks', async () => {
  const { rt } = client();
  const ws = await connected(rt);
  const pres = rt.createChannel('doc/1', { presence: true });
  void pres.subscribe();
  await flush();
  ws.reply(ws.lastOf('subscribe'), { epoch: 'e1', seq: 0, members: [] });
  const tracked = pres.track({ name: 'a' });
  await flush();
  ws.reply(ws.lastOf('track'));
  await tracked;
  const plain = rt.channel('doc/1');
  const got: string[] = [];
  plain.on('message', ({ data }) => got.push(data));
  void plain.subscribe();
  await flush();
  assert.equal(ws.lastOf('subscribe').presence, true, 'the plain channel keeps presence on');
  ws.reply(ws.lastOf('subscribe'), { epoch: 'e1', seq: 0, members: [] });
  void pres.unsubscribe();
  assert.equal(ws.ofType('unsubscribe').length, 0);
  assert.equal(ws.ofType('untrack').length, 1, 'its membership ends');
  ws.recv({ type: 'event', topic: 'doc/1', event: 'message', epoch: 'e1', seq: 1, ts: 1, data: 'hi' });
  assert.deepEqual(got, ['hi']);
});

test('presence: the reply lists members, events update the live list, a join of a listed conn is an update', async () => {
  const { rt } = client();
  const ws = await connected(rt);
  const got: string[] = [];
  const ch = rt.channel('doc/1', { presence: true }).on('presence', (p) => got.push(`${p.event} ${p.member.conn} [${p.members.map((m) => m.conn)}]`));
  void ch.subscribe();
  await flush();
  const a = { key: 'u1', conn: 's_a', joined: 1 };
  ws.reply(ws.lastOf('subscribe'), { epoch: '', seq: 0, members: [a] });
  const b = { key: 'u2', conn: 's_b', joined: 2, state: { typing: false } };
  const pres = (event: string, member: object) => ({ type: 'presence', topic: 'doc/1', event, member });
  ws.recv(pres('join', b), pres('update', { ...b, state: { typing: true } }), pres('join', a), pres('leave', a));
  assert.deepEqual(got, ['join s_a [s_a]', 'join s_b [s_a,s_b]', 'update s_b [s_a,s_b]', 'update s_a [s_a,s_b]', 'leave s_a [s_b]']);
  assert.deepEqual(ch.presence.map((m) => m.state), [{ typing: true }]);
});

test('the token is renewed with a refresh a quarter of its life before exp', async () => {
  let n = 0;
  const mint = () => fakeJwt({ sub: 'u', exp: Math.floor(clock.now() / 1000) + 100, n: ++n });
  const { rt } = client({ getToken: async () => mint() });
  const ws = await connected(rt);
  assert.equal(n, 1);
  await clock.advance(74_000);
  assert.equal(ws.ofType('refresh').length, 0);
  await clock.advance(1_000);
  assert.equal(n, 2);
  const r = ws.lastOf('refresh');
  assert.ok(r, 'refresh sent at 75s');
  ws.reply(r);
  await flush();
  // The next renewal counts from the new token's exp.
  await clock.advance(75_000);
  assert.equal(ws.ofType('refresh').length, 2);
});

test('4001 gets a new token through getToken and reconnects; without getToken it stops', async () => {
  let n = 0;
  const { rt } = client({ getToken: () => fakeJwt({ sub: 'u', exp: Math.floor(clock.now() / 1000) + 3600, n: ++n }) });
  let ws = await connected(rt);
  ws.recv({ type: 'disconnect', code: 4001, reason: 'token expired', reconnect: false });
  ws.serverClose(4001, 'token expired');
  assert.equal(rt.status, 'reconnecting');
  await clock.advance(100);
  ws = FakeSocket.last();
  ws.accept();
  await flush();
  assert.equal(n, 2);
  assert.equal(rt.status, 'connected');

  const { rt: rt2 } = client({ token: 'static' });
  const ws2 = await connected(rt2);
  ws2.serverClose(4001, 'token expired');
  assert.equal(rt2.status, 'disconnected');
  assert.equal(rt2.error?.code, 'unauthorized');
});

test('a missed ping reply closes the connection and reconnects', async () => {
  FakeSocket.answerPings = false;
  const { rt } = client();
  const ws = await connected(rt);
  await clock.advance(25_000);
  assert.equal(ws.ofType('ping').length, 1);
  await clock.advance(25_000);
  assert.equal(rt.status, 'reconnecting');
  assert.ok(ws.closedByClient !== undefined);
});

test('browser offline pauses reconnecting and online resumes at once', async () => {
  const target = new EventTarget();
  const g = globalThis as any;
  const saved = { add: g.addEventListener, remove: g.removeEventListener, nav: Object.getOwnPropertyDescriptor(g, 'navigator') };
  g.addEventListener = target.addEventListener.bind(target);
  g.removeEventListener = target.removeEventListener.bind(target);
  Object.defineProperty(g, 'navigator', { value: { onLine: true }, configurable: true });
  try {
    const { rt } = client();
    const ws = await connected(rt);
    target.dispatchEvent(new Event('offline'));
    ws.serverClose(1006);
    await clock.advance(60_000);
    assert.equal(FakeSocket.all.length, 1, 'no attempt while offline');
    target.dispatchEvent(new Event('online'));
    await flush();
    assert.equal(FakeSocket.all.length, 2);
    rt.disconnect();
  } finally {
    g.addEventListener = saved.add;
    g.removeEventListener = saved.remove;
    if (saved.nav) Object.defineProperty(g, 'navigator', saved.nav);
    else delete g.navigator;
  }
});

test('a rewind that replayed nothing resumes after a reconnect from the rewound position, not from now', async () => {
  const { rt } = client();
  let ws = await connected(rt);
  const got: number[] = [];
  void rt.channel('chat/r', { rewind: 5 }).on('*', (p) => got.push(p.seq)).subscribe();
  await flush();
  ws.recv(
    { type: 'reply', ref: ws.lastOf('subscribe').ref, ok: true, data: { epoch: 'e1', seq: 7, recovered: true } },
    { type: 'event', topic: 'chat/r', event: 'm', epoch: 'e1', seq: 3, ts: 1 },
  );
  assert.deepEqual(got, [3], 'a replayed event below the reply position is delivered');
  ws.serverClose(1006);
  await clock.advance(100);
  ws = FakeSocket.last();
  ws.accept();
  await flush();
  assert.deepEqual(ws.lastOf('subscribe').since, { epoch: 'e1', seq: 3 });
});

test('subscribe after the client was stopped rejects with the reason', async () => {
  const { rt } = client({ token: 'static' });
  const ws = await connected(rt);
  const ch = rt.channel('chat/a');
  const first = ch.subscribe();
  await flush();
  ws.reply(ws.lastOf('subscribe'), { epoch: '', seq: 0 });
  await first;
  ws.serverClose(4001, 'token expired');
  await assert.rejects(ch.subscribe(), (e: UpdraftError) => e.code === 'unauthorized');
  await assert.rejects(rt.channel('chat/b').subscribe(), (e: UpdraftError) => e.code === 'unauthorized');
});

test('after disconnect() a call connects again lazily and the channels resume from where they were', async () => {
  const { rt, statuses } = client();
  let ws = await connected(rt);
  const ch = rt.channel('chat/a');
  const first = ch.subscribe();
  await flush();
  ws.reply(ws.lastOf('subscribe'), { epoch: 'e1', seq: 5 });
  await first;
  const pending = rt.channel('chat/b').getHistory();
  rt.disconnect();
  await assert.rejects(pending, (e: UpdraftError) => e.code === 'closed');
  assert.equal(rt.status, 'disconnected');
  const again = rt.channel('chat/c').subscribe();
  assert.equal(rt.status, 'reconnecting');
  await flush();
  ws = FakeSocket.last();
  ws.accept('s_2');
  await flush();
  const subs = ws.ofType('subscribe');
  assert.deepEqual(subs.map((m) => [m.topic, m.since]), [['chat/a', { epoch: 'e1', seq: 5 }], ['chat/c', undefined]]);
  ws.reply(subs[1], { epoch: '', seq: 0 });
  await again;
  assert.deepEqual(statuses, ['connecting', 'connected', 'disconnected', 'reconnecting', 'connected']);
});

test('a request larger than the server accepts rejects with too_large and is not sent', async () => {
  const { rt } = client();
  const ws = await connected(rt);
  const before = ws.sent.length;
  await assert.rejects(rt.channel('chat/a').publish('m', { text: 'x'.repeat(70_000) }), (e: UpdraftError) => e.code === 'too_large');
  assert.equal(ws.sent.length, before);
  assert.equal(rt.status, 'connected');
});

test('exceptions in handlers go to onError and do not stop dispatch', async () => {
  const errors: unknown[] = [];
  const { rt } = client({ onError: (e) => errors.push(e) });
  const ws = await connected(rt);
  const got: number[] = [];
  void rt
    .channel('chat/a')
    .on('m', () => {
      throw new Error('handler bug');
    })
    .on('m', (p) => got.push(p.seq))
    .subscribe();
  await flush();
  ws.reply(ws.lastOf('subscribe'), { epoch: 'e1', seq: 0 });
  ws.recv({ type: 'event', topic: 'chat/a', event: 'm', epoch: 'e1', seq: 1, ts: 1 }, { type: 'event', topic: 'chat/a', event: 'm', epoch: 'e1', seq: 2, ts: 1 });
  assert.deepEqual(got, [1, 2]);
  assert.equal(errors.length, 2);
});
