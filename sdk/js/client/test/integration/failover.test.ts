// Integration tests that break things: a node killed with SIGKILL mid-stream,
// a Redis FLUSHALL, tokens that expire. Each test starts what it breaks.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { RealtimeClient, createServerClient, type ChannelStatusEvent, type Status } from '../../src/index.js';
import { API_KEY, Proxy, jwt, startNode, startRedis, stopAll, uniq, waitFor } from './harness.js';

const clients: RealtimeClient[] = [];
const proxies: Proxy[] = [];

after(async () => {
  for (const c of clients) c.disconnect();
  for (const p of proxies) await p.close();
  await stopAll();
});

const claims = { sub: 'user-1', subscribe: ['chat/**'], publish: ['chat/**'] };

function track(rt: RealtimeClient): Status[] {
  clients.push(rt);
  const statuses: Status[] = [];
  rt.onStatusChange((s) => statuses.push(s));
  return statuses;
}

test('kill -9 of the client node mid-stream: it reconnects to the other node and gets every message exactly once', async () => {
  const redis = await startRedis();
  const [doomed, survivor] = await Promise.all([startNode(redis.url), startNode(redis.url)]);
  const topic = uniq('chat/stream');
  const rt = new RealtimeClient({
    url: [doomed.wsUrl, survivor.wsUrl],
    token: jwt(claims),
    WebSocket,
    backoff: { minMs: 50, maxMs: 500 },
  });
  const statuses = track(rt);
  const seqs: number[] = [];
  const chStatus: ChannelStatusEvent[] = [];
  await rt
    .channel(topic)
    .on('n', (p) => seqs.push(p.seq))
    .subscribe((e) => chStatus.push(e));
  const firstNode = rt.node;

  const total = 300;
  const sdk = createServerClient({ url: survivor.url, apiKey: API_KEY });
  let sent = 0;
  const publisher = (async () => {
    for (; sent < total; sent++) await sdk.emit({ topic, event: 'n', data: sent + 1 });
  })();
  await waitFor(() => seqs.length >= 50, '50 messages before the kill');
  await doomed.kill();
  const sentAtKill = sent;
  await publisher;
  assert.ok(sentAtKill < total - 50, `the kill came mid-stream (${sentAtKill} of ${total} sent)`);
  await waitFor(() => seqs.length >= total, `all ${total} messages (got ${seqs.length})`, 20_000);
  assert.deepEqual(seqs, Array.from({ length: total }, (_, i) => i + 1), 'every message once, in order');
  assert.notEqual(rt.node, firstNode);
  assert.deepEqual(statuses, ['connecting', 'connected', 'reconnecting', 'connected']);
  assert.deepEqual(
    chStatus.map((e) => e.status + ('resubscribed' in e ? (e.resubscribed ? ' again' : ' first') : '')),
    ['subscribed first', 'subscribed again'],
    'recovered: no recovery_failed',
  );
  assert.ok(rt.lastClose && rt.lastClose.code === 1006, `last close ${JSON.stringify(rt.lastClose)}`);
});

test('a draining node (1012) sends the client to the next node at once, without the backoff', async () => {
  const redis = await startRedis();
  const [draining, other] = await Promise.all([
    startNode(redis.url, { UPDRAFT_DRAIN_TIMEOUT: '2s' }),
    startNode(redis.url),
  ]);
  const topic = uniq('chat/drain');
  // A backoff this long would show: only the 1012 path reconnects within seconds.
  const rt = new RealtimeClient({ url: [draining.wsUrl, other.wsUrl], token: jwt(claims), WebSocket, backoff: { minMs: 60_000, maxMs: 60_000 } });
  track(rt);
  const got: unknown[] = [];
  await rt.channel(topic).on('m', (p) => got.push(p.data)).subscribe();
  const first = rt.node;
  draining.proc.terminate();
  await waitFor(() => rt.status === 'connected' && rt.node !== first, 'a connection to the other node', 5_000);
  assert.equal(rt.lastClose?.code, 1012);
  await createServerClient({ url: other.url, apiKey: API_KEY }).emit({ topic, event: 'm', data: 'after the drain' });
  await waitFor(() => got.length === 1, 'a message on the new node');
});

test('recovered:false after a Redis FLUSHALL is reported as recovery_failed', async () => {
  const redis = await startRedis();
  const node = await startNode(redis.url);
  const proxy = await new Proxy(Number(node.addr.split(':')[1])).start();
  proxies.push(proxy);
  const topic = uniq('chat/flushed');
  const rt = new RealtimeClient({ url: proxy.wsUrl, token: jwt(claims), WebSocket, backoff: { minMs: 50, maxMs: 200 } });
  track(rt);
  const seen: number[] = [];
  const chStatus: ChannelStatusEvent[] = [];
  const ch = rt.channel(topic).on('*', (p) => seen.push(p.seq));
  await ch.subscribe((e) => chStatus.push(e));
  const sdk = createServerClient({ url: node.url, apiKey: API_KEY });
  for (let i = 0; i < 3; i++) await sdk.emit({ topic, event: 'm', data: i });
  await waitFor(() => seen.length === 3, 'three messages');

  assert.equal(await redis.command('FLUSHALL'), '+OK');
  proxy.dropAll();
  await waitFor(() => chStatus.some((e) => e.status === 'recovery_failed'), 'recovery_failed');
  const failed = chStatus.find((e) => e.status === 'recovery_failed') as Extract<ChannelStatusEvent, { status: 'recovery_failed' }>;
  assert.equal(failed.result.recovered, false);
  assert.equal(rt.status, 'connected');

  // Live delivery goes on in the topic's new history.
  await sdk.emit({ topic, event: 'm', data: 'after' });
  await waitFor(() => seen.length === 4, 'a message after the flush');
  assert.equal(seen[3], 1);
});

test('the token is renewed through getToken before it expires, on the same connection', async () => {
  const redis = await startRedis();
  const node = await startNode(redis.url);
  let minted = 0;
  const rt = new RealtimeClient({
    url: node.wsUrl,
    WebSocket,
    getToken: async () => {
      minted++;
      return jwt({ ...claims, exp: Math.floor(Date.now() / 1000) + 3 });
    },
  });
  const statuses = track(rt);
  await rt.connect();
  const session = rt.session;
  const firstExp = Math.floor(Date.now() / 1000) + 3;
  // Well past the first token's exp, when the server would have closed with 4001.
  await waitFor(() => Date.now() > firstExp * 1000 + 1500, 'the first token to expire', 10_000);
  await rt.ping();
  assert.equal(rt.session, session, 'same connection');
  assert.deepEqual(statuses, ['connecting', 'connected']);
  assert.ok(minted >= 2, `getToken called ${minted} times`);
});

test('after 4001 (token expired) the client gets a new token through getToken and reconnects', async () => {
  const redis = await startRedis();
  const node = await startNode(redis.url);
  let broken = true; // renewals fail until the server closed with 4001
  let minted = 0;
  const rt = new RealtimeClient({
    url: node.wsUrl,
    WebSocket,
    getToken: async () => {
      if (minted > 0 && broken) throw new Error('token service down');
      minted++;
      return jwt({ ...claims, exp: Math.floor(Date.now() / 1000) + (minted === 1 ? 2 : 3600) });
    },
    onError: () => {},
  });
  const statuses = track(rt);
  rt.onStatusChange((s) => {
    if (s === 'reconnecting') broken = false;
  });
  const topic = uniq('chat/renew');
  const got: unknown[] = [];
  await rt.channel(topic).on('m', (p) => got.push(p.data)).subscribe();
  const session = rt.session;
  await waitFor(() => statuses.includes('reconnecting') && rt.status === 'connected', 'a reconnect after 4001', 10_000);
  assert.equal(rt.lastClose?.code, 4001);
  assert.notEqual(rt.session, session);
  assert.equal(minted, 2);
  // The subscription was renewed on the new connection.
  await createServerClient({ url: node.url, apiKey: API_KEY }).emit({ topic, event: 'm', data: 'still here' });
  await waitFor(() => got.length === 1, 'a message after the reconnect');
});

test('a client without getToken stops on 4001 with unauthorized', async () => {
  const redis = await startRedis();
  const node = await startNode(redis.url);
  const rt = new RealtimeClient({ url: node.wsUrl, WebSocket, token: jwt({ ...claims, exp: Math.floor(Date.now() / 1000) + 1 }) });
  track(rt);
  await rt.connect();
  await waitFor(() => rt.status === 'disconnected', 'the server to close the expired session');
  assert.equal(rt.error?.code, 'unauthorized');
  assert.equal(rt.lastClose?.code, 4001);
  const bad = new RealtimeClient({ url: node.wsUrl, WebSocket, token: 'not-a-jwt' });
  track(bad);
  await assert.rejects(bad.connect(), (e: { code?: string }) => e.code === 'unauthorized');
});
