// A real OpenID Provider on loopback for Portcullis tests and the demo. TEST ONLY.
//
// panva's `oidc-provider` (OpenID Certified) does every protocol step: discovery, JWKS,
// authorization with PKCE, token, userinfo, RP-initiated logout. This file adds only what a
// provider leaves to its deployer: accounts, a password login form and first-party consent.
//
// Usage: node oidc-idp.mjs <config.json>
//   { "port": 9400, "clients": [ { client_id, client_secret | client_secret_file, redirect_uris,
//     post_logout_redirect_uris, token_endpoint_auth_method? } ],
//     "users": [ { id, email, password, name, groups, otp? } ] }
// A login whose acr_values ask for `mfa` also needs the user's one-time code (default 246810):
// the ID token then says acr `mfa`, amr [pwd, otp]; otherwise acr `pwd`, amr [pwd].
// Prints `READY <issuer>` on stdout once listening.
//
// Session lifecycle (tests): clients allowed the `refresh_token` grant get refresh tokens,
// rotated on every use (a reused one revokes the grant, as Okta's rotation does); clients with
// a `backchannel_logout_uri` get OpenID Connect back-channel logout tokens when the user signs
// out here. With "test_controls": true the IdP also answers, on loopback, TEST ONLY:
//   POST /test/users/<id>   {"groups": [...]} changes a user's groups; {"active": false}
//                           deactivates them (refresh then fails, as for a deactivated Okta user);
//                           {"revoke_grants": true} revokes every grant they were given
//   POST /test/sign         {"header": {...}, "claims": {...}} signs any JWT with the IdP's key
//                           (to send the gateway tokens a buggy or hostile IdP would)
//   GET  /test/stats        {"refresh": <refresh grants answered>, "refresh_refused": <n>}
//
// APIs (tests of bearer tokens): "resource_servers": { "<resource indicator>": { "scope":
// "orders:read orders:write", "format": "jwt" | "opaque" } } are the APIs tokens can be asked
// for (RFC 8707 `resource`), as the audiences of an Okta custom authorization server. Clients
// with the `client_credentials` grant get tokens for themselves; users' access tokens carry
// their email and groups (as an Okta claim rule would add). Confidential clients may
// introspect any token (RFC 7662).

import http from 'node:http';
import https from 'node:https';
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import Provider, { errors } from 'oidc-provider';
import { CompactSign, importJWK } from 'jose';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
// A client may name its secret by file (relative to the config), so no secret sits in the JSON.
for (const client of config.clients) {
  if (client.client_secret_file) {
    const file = resolve(dirname(process.argv[2]), client.client_secret_file);
    client.client_secret = readFileSync(file, 'utf8').trim();
    delete client.client_secret_file;
  }
}
const users = new Map(config.users.map((u) => [u.id, u]));
const resourceServers = config.resource_servers ?? {};
const stats = { refresh: 0, refresh_refused: 0, introspection: 0 };
// Grants handed out, by account (so a test can revoke a user's grants, as an admin would).
const grantsByAccount = new Map();

function page(title, body) {
  return `<!doctype html><html><head><meta charset="utf-8"><title>${title}</title>
<style>body{font-family:system-ui,sans-serif;background:#eef1f6}main{max-width:22rem;margin:10vh auto;background:#fff;padding:2rem;border-radius:8px}
input,button{display:block;width:100%;margin:.4rem 0;padding:.5rem;box-sizing:border-box}</style></head>
<body><main><h1>Test IdP</h1>${body}<p><small>Test-only identity provider (oidc-provider).</small></p></main></body></html>`;
}

const escape = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function loginForm(uid, error) {
  return page('Sign in', `${error ? `<p role="alert">${escape(error)}</p>` : ''}
<form method="post" action="/interaction/${escape(uid)}/login">
<label>User <input name="login" autocomplete="username" autofocus></label>
<label>Password <input name="password" type="password" autocomplete="current-password"></label>
<button type="submit">Sign in</button></form>`);
}

async function readForm(req) {
  let body = '';
  for await (const chunk of req) {
    body += chunk;
    if (body.length > 16384) throw new Error('form too large');
  }
  return new URLSearchParams(body);
}

// A fresh signing key (and key id) per start, like a key rotation at a real IdP.
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: randomUUID(), use: 'sig', alg: 'RS256' };

const port = config.port;
// With "tls": { "cert", "key" } (PEM paths) the IdP speaks https as `localhost`, like an
// internal IdP with a certificate from a private CA.
const tls = config.tls
  ? { cert: readFileSync(config.tls.cert), key: readFileSync(config.tls.key) }
  : null;
const issuer = tls ? `https://localhost:${port}` : `http://127.0.0.1:${port}`;

const provider = new Provider(issuer, {
  clients: config.clients,
  async findAccount(ctx, id) {
    const user = users.get(id);
    if (!user || user.active === false) return undefined;
    return {
      accountId: id,
      async claims() {
        return {
          sub: id,
          email: user.email,
          email_verified: true,
          name: user.name,
          groups: user.groups,
        };
      },
    };
  },
  claims: {
    openid: ['sub', 'amr'],
    email: ['email', 'email_verified'],
    profile: ['name'],
    groups: ['groups'],
  },
  scopes: ['openid', 'offline_access', 'email', 'profile', 'groups'],
  // Put the scope's claims in the ID token itself, as Okta does with a groups claim.
  conformIdTokenClaims: false,
  // `mfa` when the client asks for it with acr_values: password, then a one-time code.
  acrValues: ['pwd', 'mfa'],
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: {
      enabled: true,
      async allowedPolicy(ctx, client, token) {
        return client.clientAuthMethod !== 'none' || token.clientId === client.clientId;
      },
    },
    resourceIndicators: {
      enabled: true,
      defaultResource: (ctx, client, oneOf) => oneOf,
      useGrantedResource: () => false,
      async getResourceServerInfo(ctx, resourceIndicator) {
        const server = resourceServers[resourceIndicator];
        if (!server) throw new errors.InvalidTarget();
        return {
          scope: server.scope,
          audience: resourceIndicator,
          accessTokenTTL: config.access_token_ttl ?? 600,
          accessTokenFormat: server.format === 'opaque' ? 'opaque' : 'jwt',
          ...(server.format === 'opaque' ? {} : { jwt: { sign: { alg: 'RS256' } } }),
        };
      },
    },
    backchannelLogout: { enabled: true },
    rpInitiatedLogout: {
      enabled: true,
      async logoutSource(ctx, form) {
        ctx.body = page('Sign out', `${form}<p>Sign out of the test IdP?</p>
<button type="submit" form="op.logoutForm" value="yes" name="logout">Yes, sign me out</button>`);
      },
      async postLogoutSuccessSource(ctx) {
        ctx.body = page('Signed out', '<p>You are signed out of the test IdP.</p>');
      },
    },
  },
  cookies: { keys: ['portcullis-test-idp-cookie-key-TEST-ONLY'] },
  // Outgoing calls (back-channel logout) go to the gateway under test on loopback, which the
  // provider's SSRF guard refuses: TEST ONLY, lift it.
  fetch: (url, options) => {
    delete options.dispatcher;
    return globalThis.fetch(url, options);
  },
  // A user's access token says who they are, as Okta's custom claims do.
  async extraTokenClaims(ctx, token) {
    const user = token.accountId && users.get(token.accountId);
    return user ? { email: user.email, groups: user.groups } : undefined;
  },
  // Every refresh rotates the refresh token; reusing a rotated one revokes the grant.
  rotateRefreshToken: true,
  // Refresh tokens for clients allowed the grant (oidc-provider otherwise wants a consent
  // prompt for offline_access; a corporate IdP's first-party apps have none).
  async issueRefreshToken(ctx, client) {
    return client.grantTypeAllowed('refresh_token');
  },
  // Optional "id_token_ttl" (seconds): short-lived ID tokens, to test expiry checks.
  // Optional "access_token_ttl" (seconds): short-lived access tokens, to test refresh ahead of
  // expiry.
  ttl: {
    ...(config.id_token_ttl ? { IdToken: config.id_token_ttl } : {}),
    ...(config.access_token_ttl ? { AccessToken: config.access_token_ttl } : {}),
  },
  jwks: { keys: [signingKey] },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  // First-party clients: no consent screen, as in a corporate IdP.
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId
      || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope(ctx.oidc.client.grantTypeAllowed('refresh_token')
      ? 'openid email profile groups offline_access'
      : 'openid email profile groups');
    for (const [indicator, server] of Object.entries(resourceServers)) {
      grant.addResourceScope(indicator, server.scope);
    }
    await grant.save();
    return grant;
  },
});

const callback = provider.callback();
provider.on('grant.success', (ctx) => {
  if (ctx.oidc.params.grant_type === 'refresh_token') stats.refresh += 1;
  const grant = ctx.oidc.entities.Grant;
  if (grant) {
    const ids = grantsByAccount.get(grant.accountId) ?? new Set();
    ids.add(grant.jti);
    grantsByAccount.set(grant.accountId, ids);
  }
});
provider.on('backchannel.error', (ctx, err, client) => {
  process.stderr.write(`back-channel logout to ${client.clientId} failed: ${err.message} ${err.cause?.message ?? ""}\n`);
});
provider.on('backchannel.success', (ctx, client) => {
  process.stdout.write(`back-channel logout sent to ${client.clientId}\n`);
});
provider.on('grant.error', (ctx) => {
  if (ctx.oidc.params?.grant_type === 'refresh_token') stats.refresh_refused += 1;
});

async function readJson(req) {
  let body = '';
  for await (const chunk of req) {
    body += chunk;
    if (body.length > 65536) throw new Error('body too large');
  }
  return JSON.parse(body || '{}');
}

// TEST ONLY controls (see the top of this file); off unless the config asks for them.
async function testControl(req, res) {
  const send = (status, value) => {
    res.statusCode = status;
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify(value));
  };
  if (req.method === 'GET' && req.url === '/test/stats') return send(200, stats);
  const user = req.url.match(/^\/test\/users\/([A-Za-z0-9_-]+)$/);
  if (req.method === 'POST' && user) {
    const found = users.get(user[1]);
    if (!found) return send(404, { error: 'no such user' });
    const change = await readJson(req);
    if (Array.isArray(change.groups)) found.groups = change.groups;
    if (typeof change.active === 'boolean') found.active = change.active;
    if (change.revoke_grants) {
      for (const id of grantsByAccount.get(found.id) ?? []) {
        const grant = await provider.Grant.find(id);
        if (grant) await grant.destroy();
      }
      grantsByAccount.delete(found.id);
    }
    return send(200, found);
  }
  if (req.method === 'POST' && req.url === '/test/sign') {
    const { header = {}, claims = {} } = await readJson(req);
    const key = await importJWK(signingKey, 'RS256');
    const jws = await new CompactSign(new TextEncoder().encode(JSON.stringify(claims)))
      .setProtectedHeader({ alg: 'RS256', kid: signingKey.kid, ...header })
      .sign(key);
    res.setHeader('content-type', 'application/jwt');
    return res.end(jws);
  }
  return send(404, { error: 'unknown test control' });
}

// Logins that passed the password and wait for their one-time code: uid -> user id.
const awaitingCode = new Map();
function codeForm(uid, error) {
  return page('Second factor', `${error ? `<p role="alert">${escape(error)}</p>` : ''}
<form method="post" action="/interaction/${escape(uid)}/otp">
<label>One-time code <input name="otp" inputmode="numeric" autocomplete="one-time-code" autofocus></label>
<button type="submit">Verify</button></form>`);
}

const handler = async (req, res) => {
  if (req.url === '/token/introspection') stats.introspection += 1;
  if (config.test_controls && req.url.startsWith('/test/')) {
    try {
      return await testControl(req, res);
    } catch (err) {
      res.statusCode = 400;
      return res.end(`test control failed: ${err.message}`);
    }
  }
  const match = req.url.match(/^\/interaction\/([A-Za-z0-9_-]+)(\/login|\/otp)?$/);
  if (!match) return callback(req, res);
  try {
    const details = await provider.interactionDetails(req, res);
    if (req.method === 'GET' && !match[2]) {
      res.setHeader('content-type', 'text/html; charset=utf-8');
      return res.end(loginForm(details.uid));
    }
    if (req.method === 'POST' && match[2] === '/login') {
      const form = await readForm(req);
      const user = users.get(form.get('login') ?? '');
      if (!user || user.password !== form.get('password')) {
        res.statusCode = 401;
        res.setHeader('content-type', 'text/html; charset=utf-8');
        return res.end(loginForm(details.uid, 'Wrong user or password'));
      }
      const wanted = String(details.params.acr_values ?? '').split(' ');
      if (wanted.includes('mfa')) {
        awaitingCode.set(details.uid, user.id);
        res.setHeader('content-type', 'text/html; charset=utf-8');
        return res.end(codeForm(details.uid));
      }
      return await provider.interactionFinished(req, res, {
        login: { accountId: user.id, acr: 'pwd', amr: ['pwd'] },
      }, { mergeWithLastSubmission: false });
    }
    if (req.method === 'POST' && match[2] === '/otp') {
      const form = await readForm(req);
      const user = users.get(awaitingCode.get(details.uid) ?? '');
      if (!user) {
        res.statusCode = 400;
        return res.end('no password step for this login');
      }
      if (form.get('otp') !== (user.otp ?? '246810')) {
        res.statusCode = 401;
        res.setHeader('content-type', 'text/html; charset=utf-8');
        return res.end(codeForm(details.uid, 'Wrong code'));
      }
      awaitingCode.delete(details.uid);
      return await provider.interactionFinished(req, res, {
        login: { accountId: user.id, acr: 'mfa', amr: ['pwd', 'otp'] },
      }, { mergeWithLastSubmission: false });
    }
    res.statusCode = 405;
    return res.end();
  } catch (err) {
    res.statusCode = 400;
    return res.end(`interaction failed: ${err.message}`);
  }
};

const server = tls ? https.createServer(tls, handler) : http.createServer(handler);

server.listen(port, '127.0.0.1', () => {
  process.stdout.write(`READY ${issuer}\n`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
