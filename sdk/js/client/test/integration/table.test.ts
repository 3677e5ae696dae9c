// Table topics against a real PostgreSQL and a gateway that tracks the
// orders table in process: INSERT/UPDATE/DELETE payloads and a row filter.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { RealtimeClient, type ChangePayload } from '../../src/index.js';
import { jwt, startNode, startPostgres, stopAll, waitFor, type Postgres } from './harness.js';

let pg: Postgres | undefined;
const clients: RealtimeClient[] = [];

after(async () => {
  for (const c of clients) c.disconnect();
  await stopAll(); // the gateway first, then PostgreSQL below
  await pg?.stop();
});

test('table events carry data, old and truncated; a filter passes only its rows', async () => {
  pg = await startPostgres();
  pg.sql('CREATE TABLE orders (id int PRIMARY KEY, status text NOT NULL, amount int NOT NULL)');
  // No Redis: the gateway runs the tracker in process.
  const node = await startNode('', { UPDRAFT_DATABASE_URL: pg.url, UPDRAFT_TRACK_TABLES: 'orders', UPDRAFT_POLL_INTERVAL: '50ms' });
  const token = jwt({ sub: 'ops', subscribe: ['orders'] });
  const all: ChangePayload[] = [];
  const paid: ChangePayload[] = [];
  const rt = new RealtimeClient({ url: node.wsUrl, token, WebSocket });
  clients.push(rt);
  await rt
    .channel('orders')
    .on('INSERT', (p) => all.push(p))
    .on('UPDATE', (p) => all.push(p))
    .on('DELETE', (p) => all.push(p))
    .subscribe();
  // One channel per topic and client: the filtered one needs its own client.
  await assert.rejects(rt.channel('orders', { filter: 'status=eq.paid' }).subscribe(), (e: { code?: string }) => e.code === 'bad_request');
  const rt2 = new RealtimeClient({ url: node.wsUrl, token, WebSocket });
  clients.push(rt2);
  await rt2.channel('orders', { filter: 'status=eq.paid' }).on('*', (p) => paid.push(p as ChangePayload)).subscribe();

  pg.sql(`INSERT INTO orders VALUES (1, 'new', 5)`);
  pg.sql(`INSERT INTO orders VALUES (2, 'paid', 10)`);
  pg.sql(`UPDATE orders SET amount = 11 WHERE id = 2`);
  pg.sql(`DELETE FROM orders WHERE id = 1`);
  await waitFor(() => all.length === 4, `four changes (got ${all.length})`);
  assert.deepEqual(
    all.map((p) => [p.event, p.data, p.old, p.truncated]),
    [
      ['INSERT', { id: 1, status: 'new', amount: 5 }, undefined, false],
      ['INSERT', { id: 2, status: 'paid', amount: 10 }, undefined, false],
      ['UPDATE', { id: 2, status: 'paid', amount: 11 }, { id: 2, status: 'paid', amount: 10 }, false],
      ['DELETE', { id: 1, status: 'new', amount: 5 }, { id: 1, status: 'new', amount: 5 }, false],
    ],
  );
  assert.deepEqual(all.map((p) => p.seq), [1, 2, 3, 4]);
  await waitFor(() => paid.length === 2, `two paid changes (got ${paid.length})`);
  await rt2.ping();
  assert.deepEqual(paid.map((p) => [p.event, p.data.id]), [['INSERT', 2], ['UPDATE', 2]]);
});
