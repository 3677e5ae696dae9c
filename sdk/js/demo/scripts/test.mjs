// npm test (after tsc type-checked them): bundles the browser tests with
// esbuild (the client's harness and sources included) and runs them with
// the workspace's runner, which builds the updraft binary. The
// gateways serve the committed demo/dist, so build the app (npm run build)
// before testing a change to it.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { runNodeTests } from '../../scripts/node-tests.mjs';

const pkg = path.dirname(path.dirname(fileURLToPath(import.meta.url)));

const esbuild = await import('esbuild');
const out = path.join(pkg, 'build-test');
fs.rmSync(out, { recursive: true, force: true });
await esbuild.build({
  entryPoints: [path.join(pkg, 'test/e2e.test.ts')],
  outdir: out,
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  packages: 'external',
  logLevel: 'warning',
});

runNodeTests(pkg, [path.join(out, 'e2e.test.js')]);
