// npm run size: the browser bundle of @updraft/client, minified and gzipped.
import { build } from 'esbuild';
import { gzipSync } from 'node:zlib';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const pkg = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
for (const [name, contents] of [
  ['whole package', "export * from './dist/index.js'"],
  ['RealtimeClient only', "export { RealtimeClient } from './dist/index.js'"],
]) {
  const out = await build({ stdin: { contents, resolveDir: pkg }, bundle: true, minify: true, format: 'esm', write: false, platform: 'browser' });
  const code = out.outputFiles[0].contents;
  console.log(`${name}: ${code.length} bytes minified, ${gzipSync(code, { level: 9 }).length} bytes gzipped`);
}
