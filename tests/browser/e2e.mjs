// Portcullis in a real browser: headless Chromium (Debian's /usr/bin/chromium) driven by
// playwright-core, against the gateway, IdPs and apps that tests/browser.rs starts. TEST ONLY.
//
// Usage: node e2e.mjs <config.json>
//   { "port": 8080, "screenshots": "<dir>", "otp": "246810",
//     "wiki": "wiki.localhost", "timesheet": "timesheet.localhost", "hr": "hr.localhost",
//     "forms": "forms.localhost" }
// Each scenario asserts on page content and URLs (never pixels) and leaves a screenshot for a
// human. Prints `ok <scenario>` per scenario; exits 1 on the first failure (with what the
// page showed). PORTCULLIS_E2E_ONLY=<text> runs only the scenarios whose names contain it.

import { launchChromium } from './launch.mjs';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
mkdirSync(config.screenshots, { recursive: true });
const url = (host, path) => `http://${host}:${config.port}${path}`;

const browser = await launchChromium();

class Failure extends Error {}
function expect(condition, what, page) {
  if (!condition) throw new Failure(`${what} (at ${page?.url?.() ?? '?'})`);
}
async function text(page) {
  return page.locator('body').innerText();
}
async function shot(page, name) {
  await page.screenshot({ path: join(config.screenshots, `${name}.png`), fullPage: true });
}

// The test OpenID Provider's password form, then (when asked for) its one-time code form.
async function signInAtIdp(page, user, password) {
  await page.waitForSelector('input[name=login]');
  await page.fill('input[name=login]', user);
  await page.fill('input[name=password]', password);
  await Promise.all([page.waitForLoadState('load'), page.click('button[type=submit]')]);
}

const scenarios = [];
const scenario = (name, run) => scenarios.push({ name, run });

// One browser profile for alice's single sign-on journey, in order.
const alice = await browser.newContext();
const alicePage = await alice.newPage();

scenario('OIDC login from a deep link lands on the deep link', async () => {
  const deep = url(config.wiki, '/docs/Quarterly%20Plan?rev=3');
  await alicePage.goto(deep);
  expect(alicePage.url().includes('/interaction/'), 'the IdP login form was not shown', alicePage);
  await signInAtIdp(alicePage, 'alice', 'alice-pw');
  expect(alicePage.url() === deep, `landed on ${alicePage.url()}, not the deep link`, alicePage);
  const body = await text(alicePage);
  expect(body.includes('"backend":"wiki"'), 'the wiki did not answer', alicePage);
  expect(body.includes('alice@corp.example'), 'no identity reached the wiki', alicePage);
  await shot(alicePage, 'oidc-deep-link');
});

scenario('single sign-on to a second app asks for no password', async () => {
  await alicePage.goto(url(config.timesheet, '/week'));
  expect(alicePage.url() === url(config.timesheet, '/week'), `landed on ${alicePage.url()}`, alicePage);
  const body = await text(alicePage);
  expect(body.includes('"backend":"timesheet"') && body.includes('alice@corp.example'),
    'the timesheet did not get alice', alicePage);
  await shot(alicePage, 'sso-second-app');
});

scenario('step-up: a path that needs MFA asks for the one-time code and then serves', async () => {
  const target = url(config.wiki, '/payroll/run');
  await alicePage.goto(target);
  expect(alicePage.url().includes('/interaction/'), 'no fresh sign-in was asked for', alicePage);
  await signInAtIdp(alicePage, 'alice', 'alice-pw');
  await alicePage.waitForSelector('input[name=otp]');
  await alicePage.fill('input[name=otp]', config.otp);
  await Promise.all([alicePage.waitForLoadState('load'), alicePage.click('button[type=submit]')]);
  expect(alicePage.url() === target, `landed on ${alicePage.url()}`, alicePage);
  const body = await text(alicePage);
  expect(body.includes('"backend":"wiki"') && body.includes('mfa'), 'the MFA page did not serve', alicePage);
  await shot(alicePage, 'step-up');
});

scenario('one logout ends every app session of that sign-in', async () => {
  await alicePage.goto(url(config.wiki, '/logout'));
  // The IdP asks to confirm its own logout.
  const confirm = alicePage.locator('button[name=logout]');
  if (await confirm.count()) {
    await Promise.all([alicePage.waitForLoadState('load'), confirm.click()]);
  }
  const body = await text(alicePage);
  expect(body.includes('Signed out') || body.includes('signed out'), 'no signed-out page', alicePage);
  await shot(alicePage, 'logout');
  await alicePage.goto(url(config.timesheet, '/week'));
  expect(alicePage.url().includes('/interaction/'),
    `the timesheet still served after logout (at ${alicePage.url()})`, alicePage);
  await shot(alicePage, 'logout-timesheet-asks-again');
});

scenario('a deny page says who is signed in and offers to switch user', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(url(config.wiki, '/'));
  await signInAtIdp(page, 'carol', 'carol-pw');
  const body = await text(page);
  expect(body.includes('Access denied'), 'no deny page', page);
  expect(body.includes('carol@contractors.corp.example'), 'the page does not say who is signed in', page);
  const link = page.locator('a[href="/.portcullis/logout"]');
  expect(await link.count() === 1, 'no sign-out / switch-user link', page);
  await shot(page, 'deny-page');
  await context.close();
});

scenario('SAML login through the IdP\'s auto-post lands on the app', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const target = url(config.hr, '/people?team=7');
  await page.goto(target);
  await signInAtIdp(page, 'alice', 'alice-pw');
  await page.waitForURL(target);
  const body = await text(page);
  expect(body.includes('"backend":"hr"') && body.includes('alice@corp.example'), 'the HR app did not get alice', page);
  await shot(page, 'saml-login');
  await context.close();
});

scenario('SAML by HTTP-POST: the gateway\'s auto-submitted AuthnRequest reaches the IdP', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const blocked = [];
  page.on('console', (m) => { if (/Content Security Policy/i.test(m.text())) blocked.push(m.text()); });
  const target = url(config.payroll, '/runs/2026-11');
  await page.goto(target);
  // No click: the page's one script posts the form; the IdP's login form follows.
  await signInAtIdp(page, 'alice', 'alice-pw');
  await page.waitForURL(target);
  const body = await text(page);
  expect(body.includes('"backend":"payroll"') && body.includes('alice@corp.example'), 'the payroll app did not get alice', page);
  expect(blocked.length === 0, `the page's policy blocked something: ${blocked.join('; ')}`, page);
  await shot(page, 'saml-post-binding');
  await context.close();
});

scenario('form-fill: enrolment in the browser, then the form app signed in', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(url(config.forms, '/dashboard'));
  await signInAtIdp(page, 'bob', 'bob-pw');
  expect(page.url().includes('/.portcullis/credentials/forms'), `no enrolment page (at ${page.url()})`, page);
  const body = await text(page);
  expect(body.includes('Password for forms'), 'not the enrolment page', page);
  await shot(page, 'form-fill-enrolment');
  // The browser fetched /favicon.ico meanwhile; the form must still be accepted.
  await page.waitForTimeout(300);
  await page.fill('input[name=username]', 'asmith');
  await page.fill('input[name=password]', 'Winter2026!');
  await Promise.all([page.waitForLoadState('load'), page.click('button[type=submit]')]);
  const after = await text(page);
  expect(!after.includes('could not accept') && !after.includes('expired'), `the form was refused: ${after}`, page);
  expect(after.includes('Welcome back, asmith'), `the form app did not sign in: ${after}`, page);
  expect(page.url() === url(config.forms, '/dashboard'), `landed on ${page.url()}`, page);
  await shot(page, 'form-fill-signed-in');
  await context.close();
});

// PORTCULLIS_E2E_ONLY=<text> runs only the scenarios whose name contains it (for debugging).
const only = process.env.PORTCULLIS_E2E_ONLY;
let failed = false;
for (const { name, run } of scenarios.filter((s) => !only || s.name.includes(only))) {
  try {
    await run();
    process.stdout.write(`ok ${name}\n`);
  } catch (e) {
    failed = true;
    process.stdout.write(`FAIL ${name}: ${e.message}\n`);
    try {
      for (const context of browser.contexts()) {
        for (const page of context.pages()) {
          process.stdout.write(`  page ${page.url()}:\n${(await text(page)).slice(0, 2000)}\n`);
        }
      }
    } catch { /* the page may be gone */ }
    break;
  }
}
await browser.close();
process.exit(failed ? 1 : 0);
