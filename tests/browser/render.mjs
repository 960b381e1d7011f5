// Opens one page (a local file, e.g. the auditor's report) in headless Chromium (Debian's
// /usr/bin/chromium) through playwright-core and prints what a reader sees, as JSON:
// { title, text, lang, scripts, external } — and leaves a full-page screenshot. TEST ONLY.
//
// Usage: node render.mjs <url> <screenshot.png>

import { chromium } from 'playwright-core';

const [url, screenshot] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'],
});
try {
  const page = await browser.newPage();
  // Self-contained means no request leaves the file.
  const external = [];
  page.on('request', (r) => { if (!r.url().startsWith('file:')) external.push(r.url()); });
  await page.goto(url, { waitUntil: 'load' });
  const seen = {
    title: await page.title(),
    text: await page.locator('body').innerText(),
    lang: await page.getAttribute('html', 'lang'),
    scripts: await page.locator('script').count(),
    external,
  };
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log(JSON.stringify(seen));
} finally {
  await browser.close();
}
