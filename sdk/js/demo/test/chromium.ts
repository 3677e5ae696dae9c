// Debian's chromium, which the browser tests drive (playwright-core never
// downloads a browser). `make test` installs it (scripts/ensure-deps.sh
// --chromium); here a missing one fails loudly, naming the fix.
import fs from 'node:fs';

export const CHROMIUM = '/usr/bin/chromium';

export function ensureChromium(): string {
  if (!fs.existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} not found: run make deps (as root on Debian/Ubuntu), or apt-get install chromium`);
  }
  return CHROMIUM;
}
