// npm test: builds the updraft binary once from the repository root (the
// tests start real gateways from it), then runs every compiled test file of
// this package with node's test runner, and removes the binary.
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const pkg = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const root = path.resolve(pkg, '../../..');
if (!fs.existsSync(path.join(root, 'go.mod'))) throw new Error(`no go.mod in ${root}`);

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'updraft-react-bin-'));
let status = 1;
try {
  const bin = path.join(dir, 'updraft');
  if (!process.env.UPDRAFT_BIN) {
    execFileSync('go', ['build', '-buildvcs=false', '-o', bin, './cmd/updraft'], { cwd: root, stdio: 'inherit' });
  }
  const tests = path.join(pkg, 'build-test', 'react', 'test');
  const files = fs.readdirSync(tests).filter((f) => f.endsWith('.test.js')).sort().map((f) => path.join(tests, f));
  const args = ['--test', '--test-concurrency=2', ...process.argv.slice(2), ...files];
  const r = spawnSync(process.execPath, args, {
    cwd: pkg,
    stdio: 'inherit',
    env: { ...process.env, UPDRAFT_BIN: process.env.UPDRAFT_BIN || bin },
  });
  status = r.status ?? 1;
} finally {
  fs.rmSync(dir, { recursive: true, force: true });
}
process.exit(status);
