// Builds the demo app straight into the Go package that embeds it
// (demo/dist at the repository root), bundling @updraft/client from its
// sources so that no other build step is needed. scripts/stamp.mjs then
// records the sources' digest beside it (demo/sources.sha256).
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';

const here = (p: string) => fileURLToPath(new URL(p, import.meta.url));

export default defineConfig({
  base: '/',
  resolve: { alias: { '@updraft/client': here('../client/src/index.ts') } },
  esbuild: { jsx: 'automatic' },
  build: {
    outDir: here('../../../demo/dist'),
    emptyOutDir: true,
    reportCompressedSize: false,
    target: 'es2022',
  },
  server: { proxy: { '/api': { target: 'http://127.0.0.1:8080', ws: true }, '/config.json': 'http://127.0.0.1:8080' } },
});
