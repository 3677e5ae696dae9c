// After `vite build`: writes the sources' manifest beside the embedded
// assets (demo/sources.sha256 at the repository root), which the Go test
// TestAssetsAreFresh compares with the sources of the checkout.
import fs from 'node:fs';
import path from 'node:path';
import { manifest, sdk } from './sources.mjs';

const out = path.resolve(sdk, '../../demo/sources.sha256');
fs.writeFileSync(out, manifest());
console.log(`wrote ${path.relative(process.cwd(), out)}`);
