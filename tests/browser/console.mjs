// The admin console in a real browser: headless Chromium (Debian's /usr/bin/chromium) driven by
// playwright-core, against the gateway, IdP and wiki app that tests/browser.rs starts. TEST ONLY.
//
// Usage: node console.mjs <config.json>
//   { "console": "http://console.localhost:9090", "wiki": "http://wiki.localhost:8080",
//     "idp": "<issuer URL>", "token": "<admin token>", "screenshots": "<dir>" }
// Users (tests/support/idp.rs): dave is in it-admins (an operator), bob is not, alice is the
// user whose session gets revoked. Prints `ok <scenario>` per scenario; exits 1 on the first
// failure, with what the page showed.

import { launchChromium } from './launch.mjs';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
mkdirSync(config.screenshots, { recursive: true });
const at = (path) => `${config.console}${path}`;

const browser = await launchChromium();

class Failure extends Error {}
function expect(condition, what, page) {
  if (!condition) throw new Failure(`${what} (at ${page?.url?.() ?? '?'})`);
}
async function text(page) {
  return page.locator('body').innerText();
}
async function shot(page, name) {
  await page.screenshot({ path: join(config.screenshots, `console-${name}.png`), fullPage: true });
}

// What every console page must hold for people using a keyboard or a screen reader.
async function accessible(page) {
  const problems = await page.evaluate(() => {
    const out = [];
    if (!document.documentElement.lang) out.push('no lang on <html>');
    if (document.querySelectorAll('h1').length !== 1) out.push('not exactly one h1');
    for (const el of document.querySelectorAll('input, select, textarea')) {
      if (el.type === 'hidden') continue;
      if (el.labels.length === 0 && !el.getAttribute('aria-label')) out.push(`unlabelled ${el.outerHTML}`);
    }
    for (const t of document.querySelectorAll('table')) {
      if (!t.querySelector('caption')) out.push('a table without a caption');
    }
    for (const b of document.querySelectorAll('button')) {
      if (!(b.innerText.trim() || b.getAttribute('aria-label'))) out.push('a button without a name');
    }
    if (document.querySelectorAll('script').length) out.push('a script on the page');
    return out;
  });
  expect(problems.length === 0, `accessibility: ${problems.join('; ')}`, page);
}

// Loads `target` and returns every page the browser navigated through on the way (to see
// whether a session counted there or the browser was sent to the IdP).
async function navigations(page, target) {
  const seen = [];
  const listener = (request) => {
    if (request.isNavigationRequest() && request.frame() === page.mainFrame()) seen.push(request.url());
  };
  page.on('request', listener);
  await page.goto(target);
  const origin = new URL(target).origin;
  await page.waitForURL((u) => u.origin === origin, { timeout: 10000 });
  page.off('request', listener);
  return seen;
}
const viaIdp = (seen) => seen.some((u) => u.startsWith(config.idp));

// Submits a form built on `page` (as a page of that origin would), without waiting.
function postForm(page, action, fields) {
  return page.evaluate(({ action, fields }) => {
    const form = document.createElement('form');
    form.method = 'POST';
    form.action = action;
    for (const [name, value] of Object.entries(fields)) {
      const input = document.createElement('input');
      input.type = 'hidden'; input.name = name; input.value = value;
      form.appendChild(input);
    }
    document.body.appendChild(form);
    form.submit();
  }, { action, fields });
}

// The test OpenID Provider's password form.
async function signInAtIdp(page, user, password) {
  await page.waitForSelector('input[name=login]');
  await page.fill('input[name=login]', user);
  await page.fill('input[name=password]', password);
  await Promise.all([page.waitForLoadState('load'), page.click('button[type=submit]')]);
}

async function ssoAs(page, user) {
  await page.goto(at('/console/'));
  expect(page.url().startsWith(at('/console/signin')), `not sent to sign in: ${page.url()}`, page);
  await Promise.all([page.waitForLoadState('load'), page.click('#sso')]);
  await signInAtIdp(page, user, `${user}-pw`);
  await page.waitForURL((u) => u.href.startsWith(config.console), { timeout: 10000 });
}

const scenarios = [];
const scenario = (name, run) => scenarios.push({ name, run });

scenario('an anonymous visitor is sent to sign in', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const answer = await page.goto(at('/console/sessions'));
  expect(answer.status() === 200, `sign-in page answered ${answer.status()}`, page);
  expect(page.url() === at('/console/signin?return=%2Fconsole%2Fsessions'), `landed on ${page.url()}`, page);
  const body = await text(page);
  expect(body.includes('Sign in with corp') && body.includes('it-admins'), `no SSO offer: ${body}`, page);
  expect(!body.includes('Sessions') || !body.includes('Revoke'), 'the sessions page leaked', page);
  await accessible(page);
  await shot(page, 'sign-in');
  await context.close();
});

scenario('a wrong admin token is refused', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(at('/console/signin'));
  await page.fill('#token', 'not-the-token-but-long-enough-0000000000');
  const [answer] = await Promise.all([page.waitForNavigation(), page.click('text=Sign in with the token')]);
  expect(answer.status() === 401, `wrong token answered ${answer.status()}`, page);
  expect((await text(page)).includes('That is not the admin token'), 'no refusal shown', page);
  const again = await page.goto(at('/console/'));
  expect(page.url().startsWith(at('/console/signin')), `a wrong token opened the console: ${page.url()} ${again.status()}`, page);
  await context.close();
});

scenario('a signed-in user outside the admin group is refused', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await ssoAs(page, 'bob');
  let body = await text(page);
  expect(body.includes('Not a console operator') && body.includes('bob@corp.example'), `bob was not refused: ${body}`, page);
  for (const path of ['/console/', '/console/sessions', '/console/explain', '/console/decisions', '/console/apps/wiki']) {
    const answer = await page.goto(at(path));
    expect(answer.status() === 403, `${path} answered bob ${answer.status()}`, page);
    body = await text(page);
    expect(!body.includes('alice@corp.example') && !body.includes('Rules'), `${path} showed bob console data`, page);
  }
  await shot(page, 'not-an-operator');
  // His session is the console's only: the wiki does not take it (he signs in there anew,
  // silently, through the IdP).
  const seen = await navigations(page, `${config.wiki}/`);
  expect(viaIdp(seen), `the console session opened the wiki: ${seen.join(' -> ')}`, page);
  await context.close();
});

// dave's console session, shared by the scenarios that follow.
const operator = await browser.newContext();
const op = await operator.newPage();
// alice, signed in to the wiki, whose session gets revoked.
const victim = await browser.newContext();
const alice = await victim.newPage();

scenario('an operator signs in with SSO and every page renders', async () => {
  // alice uses the wiki first, so there is a decision and a session to see.
  await alice.goto(`${config.wiki}/`);
  await signInAtIdp(alice, 'alice', 'alice-pw');
  await alice.waitForURL((u) => u.href.startsWith(config.wiki), { timeout: 10000 });
  expect((await text(alice)).includes('alice@corp.example'), 'alice did not reach the wiki', alice);

  await ssoAs(op, 'dave');
  let body = await text(op);
  expect(op.url() === at('/console/'), `dave landed on ${op.url()}`, op);
  for (const want of ['Signed in as dave@corp.example', 'Apps serving', 'wiki', 'timesheet', 'Identity providers', 'corp-saml', 'valid until', 'days left', 'Since this node started', 'in rotation']) {
    expect(body.includes(want), `overview lacks "${want}": ${body}`, op);
  }
  await accessible(op);
  await shot(op, 'overview');

  await Promise.all([op.waitForNavigation(), op.click('a[href="/console/apps/wiki"]')]);
  body = await text(op);
  for (const want of ['App wiki', 'it@corp.example', 'staff', 'no-contractors', 'Contractors never see it', 'mfa-for-payroll', 'SHA-256', 'Examples ([[test]]) run now']) {
    expect(body.includes(want), `app page lacks "${want}": ${body}`, op);
  }
  await accessible(op);
  await shot(op, 'app');

  await op.goto(at('/console/explain'));
  await op.selectOption('#app', 'wiki');
  await op.fill('#user', '{ email = "carol@contractors.corp.example", groups = ["staff"] }');
  await op.fill('#path', '/pages/home');
  await Promise.all([op.waitForNavigation(), op.click('button:text-is("Explain")')]);
  body = await text(op);
  expect(body.includes('Decision:') && body.includes('deny') && body.includes('no-contractors'), `explain: ${body}`, op);
  expect(body.includes('carol@contractors.corp.example'), `explain names no user: ${body}`, op);
  await accessible(op);
  await shot(op, 'explain');
  // A mistake in the form is said, not crashed on.
  await op.fill('#user', '{ email = ');
  await Promise.all([op.waitForNavigation(), op.click('button:text-is("Explain")')]);
  expect((await text(op)).includes('user (the keys of a [[test]] user'), 'a bad user table was not reported', op);

  await op.goto(at('/console/decisions'));
  await op.selectOption('#app', 'wiki');
  await Promise.all([op.waitForNavigation(), op.click('button:text-is("Filter")')]);
  body = await text(op);
  expect(body.includes('alice@corp.example') && body.includes('staff'), `decisions lack alice's: ${body}`, op);
  await accessible(op);
  await shot(op, 'decisions');

  await op.goto(at('/console/sessions'));
  body = await text(op);
  expect(body.includes('alice@corp.example') && body.includes('dave@corp.example'), `sessions: ${body}`, op);
  await accessible(op);
});

scenario('a revoke really ends the session', async () => {
  const before = await navigations(alice, `${config.wiki}/`);
  expect(!viaIdp(before), `alice's session did not work before: ${before.join(' -> ')}`, alice);

  await op.goto(at('/console/sessions'));
  await op.fill('#user', 'alice@corp.example');
  await Promise.all([op.waitForNavigation(), op.press('#user', 'Enter')]);
  expect(op.url().includes('user=alice%40corp.example'), `search went to ${op.url()}`, op);
  await shot(op, 'sessions');
  // By keyboard: Tab to the revoke button, Enter.
  let focused = '';
  for (let i = 0; i < 40 && !focused.startsWith('Revoke all'); i++) {
    await op.keyboard.press('Tab');
    focused = await op.evaluate(() => document.activeElement?.innerText ?? '');
  }
  expect(focused.startsWith('Revoke all'), `the revoke button is not reachable by keyboard (focus: ${focused})`, op);
  await Promise.all([op.waitForNavigation(), op.keyboard.press('Enter')]);
  const body = await text(op);
  expect(/[1-9]\d* session\(s\) revoked/.test(body), `no revoke confirmation: ${body}`, op);
  await shot(op, 'revoked');

  // Her cookie names no session any more: the wiki sends her to the IdP to sign in again.
  const after = await navigations(alice, `${config.wiki}/`);
  expect(viaIdp(after), `alice's session still works after the revoke: ${after.join(' -> ')}`, alice);
});

scenario('a forged revoke is refused', async () => {
  // From the console's own origin with dave's cookie, but without this session's form token.
  await op.goto(at('/console/sessions?user=dave%40corp.example'));
  const csrf = await op.inputValue('input[name=csrf]');
  // (The console's CSP allows no fetch, so the forgeries are real form posts.)
  for (const token of [null, 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA']) {
    await op.goto(at('/console/sessions?user=dave%40corp.example'));
    const [answer] = await Promise.all([op.waitForNavigation(), postForm(op, at('/console/sessions/revoke'), { user: 'dave@corp.example', ...(token ? { csrf: token } : {}) })]);
    expect(answer.status() === 403 && (await text(op)).includes('Form refused'), `a revoke without the form token answered ${answer.status()}`, op);
  }
  // From another site's page, even carrying the real token: the browser names that page's
  // origin, and the console refuses (or, where the browser keeps the cookie back, asks the
  // visitor to sign in). Either way nothing is revoked.
  const elsewhere = await operator.newPage();
  await navigations(elsewhere, `${config.wiki}/`);
  await Promise.all([
    elsewhere.waitForNavigation(),
    postForm(elsewhere, at('/console/sessions/revoke'), { user: 'dave@corp.example', csrf }),
  ]);
  await elsewhere.waitForURL((u) => u.href.startsWith(config.console), { timeout: 10000 });
  const shown = await text(elsewhere);
  expect(shown.includes('Form refused') || elsewhere.url().startsWith(at('/console/signin')), `a cross-site revoke was not refused: ${shown}`, elsewhere);
  await elsewhere.close();
  await op.goto(at('/console/sessions?user=dave%40corp.example'));
  const left = await text(op);
  // Both of dave's sessions (the console's, and the wiki's from the visit above) are there.
  expect(left.includes('2 session(s)') && left.includes('portcullis-console') && !left.includes('revoked on every node'), `a forged revoke ended dave's session: ${left}`, op);
});

scenario('the admin token opens the console', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(at('/console/decisions'));
  await page.fill('#token', config.token);
  await Promise.all([page.waitForNavigation(), page.click('text=Sign in with the token')]);
  expect(page.url() === at('/console/decisions'), `token sign-in landed on ${page.url()}`, page);
  expect((await text(page)).includes('Signed in as admin token'), 'not signed in by token', page);
  await Promise.all([page.waitForNavigation(), page.click('text=Sign out')]);
  expect(page.url().startsWith(at('/console/signin')), `after sign-out: ${page.url()}`, page);
  await page.goto(at('/console/'));
  expect(page.url().startsWith(at('/console/signin')), 'signed out, yet the console opened', page);
  await context.close();
});

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
