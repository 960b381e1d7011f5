// Debian's headless Chromium (/usr/bin/chromium) as every browser test here starts it, with
// the flags this machine's closed network needs (no background or component traffic). TEST ONLY.

import { chromium } from 'playwright-core';

export function launchChromium() {
  return chromium.launch({
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}
