// Browser end-to-end tests of the demo app: Debian's chromium, driven by
// playwright-core, opens the demo served by two real `updraft serve` nodes
// on one Redis (UPDRAFT_DEMO=true), with `updraft tracker` tracking a
// PostgreSQL orders table beside them. One page per node: what one page
// does shows on the other. Screenshots of every view go to tmp/e2e-demo/
// at the repository root.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { createServerClient } from '../../client/src/index.js';
import {
  API_KEY,
  repoRoot,
  startNode,
  startPostgres,
  startRedis,
  startTracker,
  stopAll,
  updraftBinary,
  waitFor,
  type Node,
  type Postgres,
} from '../../client/test/integration/harness.js';
import { ensureChromium } from './chromium.js';

const shots = path.join(repoRoot(), 'tmp', 'e2e-demo');
let pg: Postgres | undefined;
let a: Node, b: Node;
let browser: Browser | undefined;
const contexts: BrowserContext[] = [];

// The gateways as `make run` configures them for a browser: anonymous
// access, the loopback origins, the demo app.
const demoEnv = {
  UPDRAFT_ALLOW_ANONYMOUS: 'true',
  UPDRAFT_ALLOWED_ORIGINS: 'http://127.0.0.1:*',
  UPDRAFT_DEMO: 'true',
  UPDRAFT_TRACK_TABLES: 'orders',
};

before(async () => {
  fs.mkdirSync(shots, { recursive: true });
  const executablePath = ensureChromium();
  const [redis, postgres] = await Promise.all([startRedis(), startPostgres()]);
  pg = postgres;
  pg.sql('CREATE TABLE orders (id serial PRIMARY KEY, customer_id int NOT NULL, status text NOT NULL, total numeric(10,2) NOT NULL)');
  await startTracker(redis.url, { UPDRAFT_DATABASE_URL: pg.url, UPDRAFT_TRACK_TABLES: 'orders' });
  [a, b] = await Promise.all([startNode(redis.url, demoEnv), startNode(redis.url, demoEnv)]);
  browser = await chromium.launch({
    executablePath,
    headless: true,
    args: [
      ...(process.getuid?.() === 0 ? ['--no-sandbox'] : []),
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
});

after(async () => {
  for (const c of contexts) await c.close().catch(() => {});
  await browser?.close();
  await stopAll(); // gateways and tracker first, then PostgreSQL below
  await pg?.stop();
});

/** Opens the demo at path on node, in a context of its own (its own tab identity). */
async function open(node: Node, route: string, connected = true): Promise<Page> {
  const context = await browser!.newContext({ viewport: { width: 1280, height: 800 } });
  contexts.push(context);
  const page = await context.newPage();
  page.on('pageerror', (e) => console.error(`page error on ${node.addr}${route}:`, e));
  await page.goto(`${node.url}${route}`);
  if (connected) await page.locator('[data-testid="status"][data-status="connected"]').waitFor({ timeout: 10_000 });
  return page;
}

async function shot(page: Page, name: string): Promise<void> {
  // Finite animations (row highlights, slide-ins) are shown finished.
  await page.screenshot({ path: path.join(shots, `${name}.png`), animations: 'disabled' });
}

async function myName(page: Page): Promise<string> {
  return (await page.getByTestId('me').textContent()) ?? '';
}

test('the dashboard shows a row inserted in PostgreSQL within a second, then its update and delete', async () => {
  const page = await open(a, '/');
  // The first row also proves the pipeline is up (the tracker installed its trigger).
  pg!.sql(`INSERT INTO orders (customer_id, status, total) VALUES (7, 'paid', 42.50), (12, 'pending', 18.00)`);
  await page.locator('[data-order-id="2"]').waitFor({ timeout: 10_000 });
  const t0 = Date.now();
  pg!.sql(`INSERT INTO orders (customer_id, status, total) VALUES (31, 'pending', 129.90)`);
  await page.locator('[data-order-id="3"]').waitFor({ timeout: 1000 });
  const ms = Date.now() - t0;
  console.log(`dashboard: an inserted row showed after ${ms} ms`);
  assert.ok(ms <= 1000, `the row took ${ms} ms`);
  pg!.sql(`UPDATE orders SET status = 'shipped' WHERE id = 1`);
  await page.locator('[data-order-id="1"] .badge', { hasText: 'shipped' }).waitFor({ timeout: 5000 });
  pg!.sql(`INSERT INTO orders (customer_id, status, total) VALUES (5, 'paid', 64.00), (9, 'cancelled', 12.00)`);
  pg!.sql(`DELETE FROM orders WHERE id = 5`);
  await page.locator('[data-order-id="4"]').waitFor({ timeout: 5000 });
  await waitFor(async () => (await page.locator('[data-order-id="5"]').count()) === 0, 'the deleted row to leave');
  assert.equal(await page.getByTestId('orders-count').textContent(), '4');
  await shot(page, '1-orders');
  // A page opened later builds the table from the retained changes.
  const late = await open(b, '/');
  await waitFor(async () => (await late.getByTestId('orders-count').textContent()) === '4', 'the late page to show the four orders');
  assert.equal(await late.locator('[data-order-id="5"]').count(), 0);
  assert.equal(await late.locator('[data-order-id="1"] .badge').textContent(), 'shipped');
});

test('the dashboard of a node without a database says how to start one', async () => {
  const solo = await startNode('', { ...demoEnv, UPDRAFT_TRACK_TABLES: '' });
  const page = await open(solo, '/');
  const card = page.getByTestId('orders-setup');
  await card.waitFor();
  const text = (await card.textContent()) ?? '';
  assert.match(text, /make db/);
  assert.match(text, /UPDRAFT_DATABASE_URL=\$DB UPDRAFT_TRACK_TABLES=orders make run/);
  await shot(page, '1-orders-no-database');
});

test("a gateway that does not allow the page's origin refuses it, and the page says how to allow it", async () => {
  const strict = await startNode('', { ...demoEnv, UPDRAFT_ALLOWED_ORIGINS: 'https://app.example.com' });
  const page = await open(strict, '/chat/general', false);
  const banner = page.getByRole('status');
  await banner.waitFor({ timeout: 10_000 });
  assert.ok(((await banner.textContent()) ?? '').includes(`UPDRAFT_ALLOWED_ORIGINS=${strict.url}`));
  assert.notEqual(await page.getByTestId('status').getAttribute('data-status'), 'connected');
  await shot(page, '0-origin-refused');
});

test('chat: a message crosses nodes, presence shows both members and the typing indicator; a closed page leaves', async () => {
  const pa = await open(a, '/chat/general');
  const pb = await open(b, '/chat/general');
  for (const p of [pa, pb]) await waitFor(async () => (await p.getByTestId('member-count').textContent()) === '2', 'two members');
  const nameA = await myName(pa);
  assert.equal(await pb.locator(`[data-member="${nameA}"]`).count(), 1);

  await pa.getByTestId('composer').pressSequentially('Hello from node A', { delay: 15 });
  await pb.getByTestId('typing').getByText(`${nameA} is typing`).waitFor({ timeout: 5000 });
  await shot(pb, '2-chat-typing');
  await pa.getByTestId('composer').press('Enter');
  await pb.getByTestId('messages').getByText('Hello from node A').waitFor({ timeout: 5000 });
  // Sending ends the typing state.
  await waitFor(async () => ((await pb.getByTestId('typing').textContent()) ?? '') === '', 'the typing indicator to clear');
  await pb.getByTestId('composer').fill('Hi A, B here on the other node');
  await pb.getByTestId('composer').press('Enter');
  await pa.getByTestId('messages').getByText('B here on the other node').waitFor({ timeout: 5000 });
  // The seed's server-side call shape reaches both pages.
  await createServerClient({ url: a.url, apiKey: API_KEY }).socket.emit('message', { text: 'Deploy finished', timestamp: Date.now() }, 'chat/general');
  for (const p of [pa, pb]) await p.getByTestId('messages').getByText('Deploy finished').waitFor({ timeout: 5000 });
  await shot(pa, '2-chat');
  // Client-side navigation away and back rejoins the room afresh: history and members again.
  await pa.locator('a.room', { hasText: 'engineering' }).click();
  await pa.getByRole('heading', { name: '#engineering' }).waitFor();
  await pa.locator('a.room', { hasText: 'general' }).click();
  await pa.getByTestId('messages').getByText('Deploy finished').waitFor({ timeout: 5000 });
  assert.equal(await pa.getByTestId('messages').locator('.msg').count(), 3);
  await waitFor(async () => (await pa.getByTestId('member-count').textContent()) === '2', 'two members after coming back');

  await pb.context().close();
  await waitFor(async () => (await pa.getByTestId('member-count').textContent()) === '1', 'the closed page to leave', 15_000);
  assert.equal(await pa.locator('[data-member]').count(), 1);
});

test('chat scroll-back: the room opens with the last 50 messages and loads the earlier ones', async () => {
  const sdk = createServerClient({ url: a.url, apiKey: API_KEY });
  const results = await sdk.emitBatch(
    Array.from({ length: 70 }, (_, i) => ({ topic: 'chat/engineering', event: 'message', data: { text: `backlog message ${i + 1}`, author: 'Release bot', color: '#64748b' } })),
  );
  assert.ok(results.every((r) => !(r instanceof Error)));
  const page = await open(b, '/chat/engineering');
  const msgs = page.getByTestId('messages');
  await msgs.getByText('backlog message 70', { exact: true }).waitFor();
  assert.equal(await msgs.locator('.msg').count(), 50);
  assert.equal(await msgs.getByText('backlog message 20', { exact: true }).count(), 0);
  await page.getByText('Load earlier messages').click();
  await msgs.getByText('backlog message 1', { exact: true }).waitFor();
  assert.equal(await msgs.locator('.msg').count(), 70);
  assert.equal(await page.getByText('Load earlier messages').count(), 0);
  await msgs.evaluate((el) => el.scrollTo(0, 0));
  await shot(page, '2-chat-history');
});

test('cursors: a pointer moving on one page shows on the other', async () => {
  const pa = await open(a, '/cursors/lobby');
  const pb = await open(b, '/cursors/lobby');
  await waitFor(async () => (await pb.getByTestId('board-members').locator('.avatar').count()) === 2, 'two on the board');
  const nameA = await myName(pa);
  const box = (await pa.getByTestId('board').boundingBox())!;
  await pa.mouse.move(box.x + box.width * 0.2, box.y + box.height * 0.3);
  for (let i = 1; i <= 10; i++) await pa.mouse.move(box.x + box.width * (0.2 + i * 0.04), box.y + box.height * (0.3 + i * 0.02), { steps: 2 });
  const cursor = pb.locator(`[data-cursor="${nameA}"]`);
  await cursor.waitFor({ timeout: 5000 });
  // It settles where A's pointer stopped: 60% across, 50% down.
  await waitFor(async () => {
    const style = (await cursor.getAttribute('style')) ?? '';
    const left = Number(/left: ([\d.]+)%/.exec(style)?.[1]);
    const top = Number(/top: ([\d.]+)%/.exec(style)?.[1]);
    return Math.abs(left - 60) < 1 && Math.abs(top - 50) < 1;
  }, 'the cursor at its last position');
  await pb.mouse.move(box.x + box.width * 0.75, box.y + box.height * 0.65);
  await pb.waitForTimeout(200); // the 80 ms cursor transition
  await shot(pb, '3-cursors');
  await pa.context().close();
  await cursor.waitFor({ state: 'detached', timeout: 15_000 });
});

test('AI answers: a stream renders token by token, and a page opened mid-stream shows the whole answer', async () => {
  const tokens = 'Updraft streams each token to every watcher the moment the model produces it, and a late joiner replays the answer so far before it continues live.'
    .split(' ')
    .map((w) => w + ' ');
  const pa = await open(a, '/answers/e2e');
  const emit = spawn(updraftBinary(), ['emit', '--url', b.url, '--api-key', API_KEY, '--stream', 'ai/e2e', 'token'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  emit.stdout.on('data', (d) => (out += d));
  emit.stderr.on('data', (d) => (out += d));
  const exited = new Promise<number | null>((resolve) => emit.once('exit', resolve));
  const text = (p: Page) => p.getByTestId('answer-text').textContent();
  let pb: Page | undefined;
  const half = Math.floor(tokens.length / 2);
  try {
    for (let i = 0; i < tokens.length; i++) {
      emit.stdin.write(JSON.stringify(tokens[i]) + '\n');
      const want = tokens.slice(0, i + 1).join('');
      // Token by token: the page shows exactly the tokens sent so far.
      await waitFor(async () => (await text(pa).catch(() => null)) === want, `token ${i + 1} on the page`, 5000);
      if (i === half) {
        assert.equal(await pa.getByTestId('answer-state').textContent(), 'streaming…');
        await shot(pa, '4-answer-streaming');
        pb = await open(b, '/answers/e2e');
        await waitFor(async () => (await text(pb!).catch(() => null)) === want, 'the late joiner to show the answer so far', 5000);
      }
    }
    emit.stdin.end();
    assert.equal(await exited, 0, `updraft emit --stream: ${out}`);
  } finally {
    if (emit.exitCode === null) emit.kill('SIGKILL');
  }
  const whole = tokens.join('');
  for (const p of [pa, pb!]) {
    await p.getByTestId('answer-state').getByText('complete').waitFor({ timeout: 5000 });
    assert.equal(await text(p), whole);
  }
  await shot(pb!, '4-answer-late-joiner');
  // A page opened after the end sees it whole too.
  const pc = await open(a, '/answers/e2e');
  await pc.getByTestId('answer-state').getByText('complete').waitFor({ timeout: 5000 });
  assert.equal(await text(pc), whole);
  // The sample button publishes an answer from the page itself; the other node's page renders it.
  await pc.getByRole('button', { name: 'Play a sample answer' }).click();
  await pb!.getByTestId('answer-state').getByText('streaming…').waitFor({ timeout: 5000 });
  await pb!.getByTestId('answer-state').getByText('complete').waitFor({ timeout: 15_000 });
  assert.match((await text(pb!)) ?? '', /^Updraft keeps one WebSocket per browser tab\..*continues live\.$/);
  await shot(pb!, '4-answer-sample');
});
