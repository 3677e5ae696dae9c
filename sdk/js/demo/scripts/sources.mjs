// The demo's sources, as the staleness check sees them: every file the
// built assets depend on, relative to sdk/js, with the SHA-256 of each.
// demo/demo_test.go recomputes the same manifest in Go; keep them in step.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const sdk = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/** Files (relative to sdk/js) and directories walked recursively. */
export const inputs = ['demo/index.html', 'demo/package.json', 'demo/tsconfig.json', 'demo/vite.config.ts', 'demo/src', 'client/src'];

/** The manifest: one "sha256  path" line per file, sorted by path, as sha256sum prints. */
export function manifest() {
  const files = [];
  const walk = (rel) => {
    const abs = path.join(sdk, rel);
    if (fs.statSync(abs).isDirectory()) for (const e of fs.readdirSync(abs)) walk(`${rel}/${e}`);
    else files.push(rel);
  };
  inputs.forEach(walk);
  files.sort();
  return files.map((f) => `${createHash('sha256').update(fs.readFileSync(path.join(sdk, f))).digest('hex')}  ${f}\n`).join('');
}
