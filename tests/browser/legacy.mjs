// Legacy apps in a real browser: an app that knows only its internal name, behind [rewrite],
// and an app down for maintenance. Headless Chromium (Debian's /usr/bin/chromium) driven by
// playwright-core, against the gateway and sample app that tests/browser.rs starts. TEST ONLY.
//
// Usage: node legacy.mjs <config.json>
//   { "erp": "http://erp.localhost:8080", "closed": "http://closed.localhost:8080",
//     "internal": "http://intranet-host:8080", "screenshots": "<dir>" }
// Prints `ok <scenario>` per scenario; exits 1 on the first failure, with what the page showed.

import { launchChromium } from './launch.mjs';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
mkdirSync(config.screenshots, { recursive: true });
const internalHost = new URL(config.internal).host;

const browser = await launchChromium();

class Failure extends Error {}
function expect(condition, what, page) {
  if (!condition) throw new Failure(`${what} (at ${page?.url?.() ?? '?'})`);
}
async function shot(page, name) {
  await page.screenshot({ path: join(config.screenshots, `legacy-${name}.png`), fullPage: true });
}

const scenarios = [
  ['an app that knows only its internal name stays on the public host', async (context) => {
    const page = await context.newPage();
    // Everything the browser asks for, page, style sheet, script, image and all.
    const asked = [];
    page.on('request', (r) => asked.push(r.url()));
    const response = await page.goto(`${config.erp}/`);
    expect(response.status() === 200, `the start page answered ${response.status()}`, page);
    await page.waitForLoadState('networkidle');
    expect(asked.some((u) => u.startsWith(`${config.erp}/style.css`)), 'the style sheet was not loaded from the public host', page);
    expect(asked.some((u) => u.startsWith(`${config.erp}/app.js`)), 'the script was not loaded from the public host', page);
    const api = await page.evaluate(() => window.API);
    expect(api === `${config.erp}/api`, `the script's API base is ${api}`, page);
    await shot(page, 'internal-name');
    await Promise.all([page.waitForNavigation(), page.click('#report')]);
    expect(page.url() === `${config.erp}/reports/q3?x=1`, `the link led to ${page.url()}`, page);
    // A redirect to the internal name lands on the public host.
    await page.goto(`${config.erp}/go`);
    expect(page.url() === `${config.erp}/landing?from=go`, `the redirect led to ${page.url()}`, page);
    // The app's session cookie, scoped to its internal domain, is kept for the public host.
    await page.goto(`${config.erp}/login`);
    const cookies = await context.cookies(config.erp);
    const session = cookies.find((c) => c.name === 'APPSESSION');
    expect(session && session.domain === new URL(config.erp).hostname, `APPSESSION cookie: ${JSON.stringify(cookies)}`, page);
    const leaked = asked.filter((u) => u.includes(internalHost));
    expect(leaked.length === 0, `the browser asked for the internal name: ${leaked.join(', ')}`, page);
  }],
  ['an app down for maintenance shows its page and message', async (context) => {
    const page = await context.newPage();
    const response = await page.goto(`${config.closed}/anything`);
    expect(response.status() === 503, `answered ${response.status()}`, page);
    const heading = await page.locator('h1').innerText();
    expect(heading.includes('Down for maintenance'), `heading: ${heading}`, page);
    const body = await page.locator('body').innerText();
    expect(body.includes('The archive moves to new storage this weekend.'), `no message: ${body}`, page);
    expect(!body.includes('Intranet app'), 'the app itself answered', page);
    await shot(page, 'maintenance');
  }],
];

let failed = false;
for (const [name, run] of scenarios) {
  const context = await browser.newContext();
  try {
    await run(context);
    console.log(`ok ${name}`);
  } catch (e) {
    failed = true;
    console.log(`FAILED ${name}: ${e.message}`);
    break;
  } finally {
    await context.close();
  }
}
await browser.close();
process.exit(failed ? 1 : 0);
