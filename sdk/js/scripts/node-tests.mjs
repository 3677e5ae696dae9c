// The one way the workspace's packages run their tests: build the updraft
// binary once from the repository root (the tests start real gateways from
// it; UPDRAFT_BIN, when set, names one to use instead), run the given
// compiled test files with node's test runner, remove the binary, and
// exit with the runner's status.
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
if (!fs.existsSync(path.join(root, 'go.mod'))) throw new Error(`no go.mod in ${root}`);

/**
 * @param {string} pkg the package's directory, the tests' working directory
 * @param {string[]} files the compiled test files
 * @param {{ concurrency?: number }} [opts] test files run at once (node's default when unset)
 */
export function runNodeTests(pkg, files, opts = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'updraft-js-bin-'));
  let status = 1;
  try {
    let bin = process.env.UPDRAFT_BIN;
    if (!bin) {
      bin = path.join(dir, 'updraft');
      execFileSync('go', ['build', '-buildvcs=false', '-o', bin, './cmd/updraft'], { cwd: root, stdio: 'inherit' });
    }
    const args = ['--test'];
    if (opts.concurrency) args.push(`--test-concurrency=${opts.concurrency}`);
    const r = spawnSync(process.execPath, [...args, ...process.argv.slice(2), ...files], {
      cwd: pkg,
      stdio: 'inherit',
      env: { ...process.env, UPDRAFT_BIN: bin },
    });
    status = r.status ?? 1;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  process.exit(status);
}
