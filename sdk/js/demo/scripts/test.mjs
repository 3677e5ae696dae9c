// npm test (after tsc type-checked them): bundles the browser tests with esbuild (the
// client's harness and sources included), builds the updraft binary once
// from the repository root, and runs them with node's test runner. The
// gateways serve the committed demo/dist, so build the app (npm run build)
// before testing a change to it.
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const pkg = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const root = path.resolve(pkg, '../../..');
if (!fs.existsSync(path.join(root, 'go.mod'))) throw new Error(`no go.mod in ${root}`);

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

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'updraft-demo-bin-'));
let status = 1;
try {
  const bin = path.join(dir, 'updraft');
  if (!process.env.UPDRAFT_BIN) {
    execFileSync('go', ['build', '-buildvcs=false', '-o', bin, './cmd/updraft'], { cwd: root, stdio: 'inherit' });
  }
  const r = spawnSync(process.execPath, ['--test', ...process.argv.slice(2), path.join(out, 'e2e.test.js')], {
    cwd: pkg,
    stdio: 'inherit',
    env: { ...process.env, UPDRAFT_BIN: process.env.UPDRAFT_BIN || bin },
  });
  status = r.status ?? 1;
} finally {
  fs.rmSync(dir, { recursive: true, force: true });
}
process.exit(status);
