import { test } from 'node:test';
import assert from 'node:assert/strict';
import { backoffDelay, closeReaction } from '../../src/backoff.js';
import { splitFrame } from '../../src/frames.js';
import { renewDelay, tokenExp, tokenStale } from '../../src/token.js';
import { fakeJwt } from './fake.js';

test('backoff is full jitter under a doubling ceiling capped at max', () => {
  assert.equal(backoffDelay(0, 100, 10_000, () => 0), 0);
  assert.equal(backoffDelay(0, 100, 10_000, () => 0.999999), 100);
  assert.equal(backoffDelay(3, 100, 10_000, () => 0.999999), 800);
  assert.equal(backoffDelay(20, 100, 10_000, () => 0.999999), 10_000);
  assert.equal(backoffDelay(1000, 100, 10_000, () => 0.999999), 10_000);
  for (let i = 0; i < 200; i++) {
    const d = backoffDelay(4, 100, 10_000, Math.random);
    assert.ok(d >= 0 && d <= 1600, `delay ${d}`);
  }
});

test('close codes map to the protocol table', () => {
  assert.equal(closeReaction(1012, false), 'now');
  for (const c of [1003, 4000, 4003]) assert.equal(closeReaction(c, true), 'stop');
  assert.equal(closeReaction(4001, false), 'stop');
  assert.equal(closeReaction(4001, true), 'backoff');
  for (const c of [1001, 1006, 1009, 4008, 4029]) assert.equal(closeReaction(c, false), 'backoff');
});

test('a frame splits into its messages; blank and bad lines are skipped', () => {
  const bad: string[] = [];
  const msgs = splitFrame('{"type":"event","seq":1}\n\n{"type":"reply","ref":"2"}\n  \nnot json\n[1]\n{"no":"type"}\n{"type":"presence"}', (l) => bad.push(l));
  assert.deepEqual(
    msgs.map((m) => m.type),
    ['event', 'reply', 'presence'],
  );
  assert.deepEqual(bad, ['not json', '[1]', '{"no":"type"}']);
  assert.deepEqual(splitFrame(''), []);
});

test('token exp is read and renewal is due a quarter of the time left before exp, at most 60s before', () => {
  const now = 1_700_000_000_000;
  const tok = fakeJwt({ sub: 'u', exp: now / 1000 + 100 });
  assert.equal(tokenExp(tok), now / 1000 + 100);
  assert.equal(tokenExp('garbage'), undefined);
  assert.equal(tokenExp(fakeJwt({ sub: 'u' })), undefined);
  assert.equal(renewDelay(now / 1000 + 100, now), 75_000);
  assert.equal(renewDelay(now / 1000 + 3600, now), 3_540_000);
  assert.equal(renewDelay(now / 1000 - 1, now), 0);
  assert.equal(renewDelay(undefined, now), undefined);
  assert.equal(tokenStale(undefined, now), true);
  assert.equal(tokenStale(tok, now), false);
  assert.equal(tokenStale(tok, now + 80_000), false);
  assert.equal(tokenStale(tok, now + 96_000), true);
});
