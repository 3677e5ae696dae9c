import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

test('the browser bundle stays under 10 KB minified and gzipped', async () => {
  // This file runs from build-test/test/unit; the compiled sources are in build-test/src.
  const src = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../src');
  const out = await build({ stdin: { contents: "export * from './index.js'", resolveDir: src }, bundle: true, minify: true, format: 'esm', write: false, platform: 'browser' });
  const gz = gzipSync(out.outputFiles[0]!.contents, { level: 9 }).length;
  assert.ok(gz < 10 * 1024, `bundle is ${gz} bytes gzipped`);
});
