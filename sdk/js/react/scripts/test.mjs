// npm test: every compiled test file of this package (they start real
// gateways), run by the workspace's runner, two files at a time.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { runNodeTests } from '../../scripts/node-tests.mjs';

const pkg = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const tests = path.join(pkg, 'build-test', 'react', 'test');
const files = fs.readdirSync(tests).filter((f) => f.endsWith('.test.js')).sort().map((f) => path.join(tests, f));
runNodeTests(pkg, files, { concurrency: 2 });
