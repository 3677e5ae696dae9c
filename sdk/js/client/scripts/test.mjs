// npm test: every compiled test file of this package (unit and
// integration: the latter start real gateways), run by the workspace's
// runner, two files at a time since the integration files mostly wait on
// gateways and timers.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { runNodeTests } from '../../scripts/node-tests.mjs';

const pkg = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const files = [];
const walk = (d) => {
  for (const e of fs.readdirSync(d, { withFileTypes: true })) {
    const p = path.join(d, e.name);
    if (e.isDirectory()) walk(p);
    else if (e.name.endsWith('.test.js')) files.push(p);
  }
};
walk(path.join(pkg, 'build-test', 'test'));
files.sort();
runNodeTests(pkg, files, { concurrency: 2 });
