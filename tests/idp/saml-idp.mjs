// A real SAML 2.0 IdP on loopback for Portcullis tests and the demo. TEST ONLY.
//
// `samlify` does the protocol: it parses and verifies the SP's AuthnRequests and logout
// messages (HTTP-Redirect, signatures checked against the SP's published metadata), signs
// responses (RSA-SHA256, exclusive c14n) and builds logout messages. This file adds what an
// IdP leaves to its deployer: accounts, a password form, the auto-POST page, and (for tests
// only, when `test_hooks` is set) an endpoint that signs responses with chosen defects.
//
// Usage: node saml-idp.mjs <config.json>
//   { "port": 9500, "key": "<PEM>", "cert": "<PEM>" (or key_file / cert_file, relative to the
//     config), "sps": ["<SP metadata URL>", ...], "users": [ { id, email, password, name,
//     first_name, groups } ], "sign_response": true, "test_hooks": false,
//     "next_signing_certs": ["<PEM>", ...] (also published in the metadata),
//     "encrypt_assertions": false, "data_encryption": "<xmlenc URI>", "key_encryption": "<URI>",
//     "sso_bindings": ["redirect"] (or ["post"]: an IdP that takes AuthnRequests by POST only) }
//   With encrypt_assertions, logins encrypt the (signed) assertion to the SP's metadata
//   encryption certificate, then sign the response, as Okta and Shibboleth do.
// Prints `READY <entity id>` on stdout once listening.

import http from 'node:http';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import samlify from 'samlify';
import xmlenc from '@authenio/xml-encryption';
import * as validator from '@authenio/samlify-node-xmllint';

const configPath = process.argv[2];
const config = JSON.parse(readFileSync(configPath, 'utf8'));
const fromFile = (name) => readFileSync(resolve(dirname(configPath), name), 'utf8');
const key = config.key ?? fromFile(config.key_file);
const cert = config.cert ?? fromFile(config.cert_file);
const port = config.port;
const base = `http://127.0.0.1:${port}`;
const entityID = config.entity_id ?? `${base}/metadata`;
const users = new Map(config.users.map((u) => [u.id, u]));
const signResponse = config.sign_response !== false;

samlify.setSchemaValidator(validator);

const REDIRECT = 'urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect';
const idpSettings = {
  entityID,
  privateKey: key,
  // During a key rollover the metadata lists the next certificate too (`next_signing_certs`).
  signingCert: config.next_signing_certs ? [cert, ...config.next_signing_certs] : cert,
  isAssertionEncrypted: config.encrypt_assertions === true,
  dataEncryptionAlgorithm: config.data_encryption ?? 'http://www.w3.org/2009/xmlenc11#aes256-gcm',
  keyEncryptionAlgorithm: config.key_encryption ?? 'http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p',
  wantAuthnRequestsSigned: config.want_authn_requests_signed !== false,
  wantLogoutRequestSigned: true,
  wantLogoutResponseSigned: false,
  requestSignatureAlgorithm: 'http://www.w3.org/2001/04/xmldsig-more#rsa-sha256',
  nameIDFormat: ['urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress'],
  singleSignOnService: (config.sso_bindings ?? ['redirect']).map((b) => ({
    Binding: b === 'post' ? 'urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST' : REDIRECT,
    Location: `${base}/sso`,
  })),
  singleLogoutService: [{ Binding: REDIRECT, Location: `${base}/slo` }],
};
const idp = samlify.IdentityProvider(idpSettings);

// SPs are read from their metadata URLs when first needed (the gateway may start after us).
// Hosts like wiki.localhost need no DNS: the fetch goes to loopback with the URL's Host.
function fetchLoopback(target) {
  const u = new URL(target);
  return new Promise((resolveBody, reject) => {
    const req = http.get({ host: '127.0.0.1', port: u.port || 80, path: u.pathname + u.search, headers: { host: u.host } }, (res) => {
      let body = '';
      res.on('data', (c) => { body += c; });
      res.on('end', () => (res.statusCode === 200 ? resolveBody(body) : reject(new Error(`SP metadata ${target}: HTTP ${res.statusCode}`))));
    });
    req.on('error', reject);
  });
}
// entity id -> one samlify SP per signing certificate the SP's metadata lists: during a key
// rollover an SP publishes two, and a message verifies when any of them verifies it (samlify
// itself reads only one).
const sps = new Map();
async function loadSps() {
  for (const url of config.sps) {
    const metadata = await fetchLoopback(url);
    const signing = metadata.match(/<(?:\w+:)?KeyDescriptor use="signing">[\s\S]*?<\/(?:\w+:)?KeyDescriptor>/g) ?? [];
    const variants = (signing.length > 1
      ? signing.map((keep) => signing.reduce((m, k) => (k === keep ? m : m.replace(k, '')), metadata))
      : [metadata]
    ).map((md) => samlify.ServiceProvider({
      metadata: md,
      wantMessageSigned: signResponse,
      wantLogoutRequestSigned: true,
      wantLogoutResponseSigned: true,
    }));
    sps.set(variants[0].entityMeta.getEntityID(), variants);
  }
}
async function spVariants(entityId) {
  if (!sps.has(entityId)) await loadSps();
  const variants = sps.get(entityId);
  if (!variants) throw new Error(`unknown SP ${entityId}`);
  return variants;
}
async function spFor(entityId) {
  return (await spVariants(entityId))[0];
}
// Runs `parse` with each of the SP's keys until one verifies: [sp, result].
async function verifiedBy(entityId, parse) {
  let failure;
  for (const sp of await spVariants(entityId)) {
    try {
      return [sp, await parse(sp)];
    } catch (e) {
      failure = e;
    }
  }
  throw failure;
}

// Where a response goes: the ACS URL the AuthnRequest asked for when the SP's metadata lists
// it (one SP entity for several hosts lists one per host), else the SP's default.
const POST = 'urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST';
function acsFor(sp, requestInfo) {
  const listed = [].concat(sp.entityMeta.meta.assertionConsumerService ?? [])
    .filter((e) => e.binding === POST)
    .map((e) => e.location);
  const request = requestInfo?.extract?.request ?? {};
  const asked = request.assertionConsumerServiceUrl ?? request.assertionConsumerServiceURL;
  if (asked && listed.includes(asked)) return asked;
  const fallback = listed.find((_, i) => i === 0);
  return fallback ?? sp.entityMeta.getAssertionConsumerService('post');
}
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
function page(title, body) {
  return `<!doctype html><html><head><meta charset="utf-8"><title>${title}</title></head>
<body><main><h1>Test SAML IdP</h1>${body}<p><small>Test-only identity provider (samlify).</small></p></main></body></html>`;
}
function loginForm(action, error) {
  return page('Sign in', `${error ? `<p role="alert">${esc(error)}</p>` : ''}
<form method="post" action="${esc(action)}">
<label>User <input name="login" autocomplete="username" autofocus></label>
<label>Password <input name="password" type="password" autocomplete="current-password"></label>
<button type="submit">Sign in</button></form>`);
}
function autoPost(acs, fields) {
  const inputs = Object.entries(fields)
    .filter(([, v]) => v !== undefined && v !== '')
    .map(([k, v]) => `<input type="hidden" name="${esc(k)}" value="${esc(v)}">`)
    .join('');
  return page('Signing in', `<form method="post" action="${esc(acs)}">${inputs}<button type="submit">Continue</button></form>
<script>document.forms[0].submit()</script>`);
}

async function readBody(req, limit = 65536) {
  let body = '';
  for await (const chunk of req) {
    body += chunk;
    if (body.length > limit) throw new Error('body too large');
  }
  return body;
}

// Raw query octets, as the redirect binding signs them.
function octetString(rawQuery, messageParam) {
  const raw = Object.fromEntries(rawQuery.split('&').map((p) => {
    const i = p.indexOf('=');
    return i < 0 ? [p, ''] : [p.slice(0, i), p.slice(i + 1)];
  }));
  return ['SAMLRequest', 'SAMLResponse', 'RelayState', 'SigAlg']
    .filter((k) => (k === messageParam || k === 'RelayState' || k === 'SigAlg') && raw[k] !== undefined)
    .map((k) => `${k}=${raw[k]}`)
    .join('&');
}

const iso = (ms) => new Date(ms).toISOString();
const idOf = () => `_${randomUUID().replace(/-/g, '')}`;
const sessions = new Map(); // user id -> session index of their latest login
const issued = []; // every login's { user, session_index }, in order (for tests)
const logouts = []; // LogoutRequests received from SPs (for tests)
const logoutResponses = []; // LogoutResponses received from SPs (for tests)
const postedRequests = []; // AuthnRequests received by HTTP-POST (for tests)

// The Response document, before signing. `o` carries test overrides.
function responseXml(sp, user, inResponseTo, o = {}) {
  const now = Date.now() + (o.shift_seconds ?? 0) * 1000;
  const acs = acsFor(sp, o.request_info);
  const audience = o.audience ?? sp.entityMeta.getEntityID();
  const recipient = o.recipient ?? acs;
  const destination = o.destination ?? acs;
  const notOnOrAfter = iso(now + (o.lifetime_seconds ?? 300) * 1000);
  const irt = (o.in_response_to ?? inResponseTo) ? ` InResponseTo="${esc(o.in_response_to ?? inResponseTo)}"` : '';
  const nameId = o.name_id_raw ?? esc(o.name_id ?? user.email);
  const qualifiers = `${o.name_qualifier ? ` NameQualifier="${esc(o.name_qualifier)}"` : ''}${o.sp_name_qualifier ? ` SPNameQualifier="${esc(o.sp_name_qualifier)}"` : ''}`;
  const responseIssuer = o.response_issuer ?? entityID;
  const statusCode = o.status_code ?? 'urn:oasis:names:tc:SAML:2.0:status:Success';
  const destinationAttr = o.omit_destination ? '' : ` Destination="${esc(destination)}"`;
  const sessionIndex = o.session_index ?? idOf();
  sessions.set(user.id, sessionIndex);
  issued.push({ user: user.id, session_index: sessionIndex });
  const attr = (name, values) => `<saml:Attribute Name="${esc(name)}" NameFormat="urn:oasis:names:tc:SAML:2.0:attrname-format:basic">${values.map((v) => `<saml:AttributeValue xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="xs:string" xmlns:xs="http://www.w3.org/2001/XMLSchema">${esc(v)}</saml:AttributeValue>`).join('')}</saml:Attribute>`;
  const conditions = o.omit_conditions ? '' : `<saml:Conditions NotBefore="${iso(now - 5000)}" NotOnOrAfter="${notOnOrAfter}">${o.omit_audience ? '' : `<saml:AudienceRestriction><saml:Audience>${esc(audience)}</saml:Audience></saml:AudienceRestriction>`}</saml:Conditions>`;
  const authnClass = o.authn_context ?? 'urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport';
  const authn = o.omit_authn_statement ? '' : `<saml:AuthnStatement AuthnInstant="${iso(now)}" SessionIndex="${esc(sessionIndex)}"><saml:AuthnContext><saml:AuthnContextClassRef>${esc(authnClass)}</saml:AuthnContextClassRef></saml:AuthnContext></saml:AuthnStatement>`;
  const issueInstant = iso(now + (o.issue_in_future_seconds ?? 0) * 1000);
  return `<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="${o.response_id ?? idOf()}" Version="2.0" IssueInstant="${issueInstant}"${destinationAttr}${irt}>`
    + `<saml:Issuer>${esc(responseIssuer)}</saml:Issuer><samlp:Status><samlp:StatusCode Value="${esc(statusCode)}"/></samlp:Status>`
    + `<saml:Assertion ID="${o.assertion_id ?? idOf()}" Version="2.0" IssueInstant="${issueInstant}"><saml:Issuer>${esc(entityID)}</saml:Issuer>`
    + `<saml:Subject><saml:NameID Format="urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"${qualifiers}>${nameId}</saml:NameID>`
    + `<saml:SubjectConfirmation Method="urn:oasis:names:tc:SAML:2.0:cm:bearer"><saml:SubjectConfirmationData NotOnOrAfter="${notOnOrAfter}" Recipient="${esc(recipient)}"${irt}/></saml:SubjectConfirmation></saml:Subject>`
    + conditions + authn
    + `<saml:AttributeStatement>${attr('email', [user.email])}${attr('firstName', [user.first_name ?? user.name.split(' ')[0]])}${attr('displayName', [user.name])}${user.groups.length ? attr(o.groups_attribute ?? 'groups', user.groups) : ''}</saml:AttributeStatement>`
    + '</saml:Assertion></samlp:Response>';
}

// Signs as samlify's own login response does: the assertion, then the whole response.
function sign(xml, o = {}) {
  const alg = o.sig_alg ?? 'http://www.w3.org/2001/04/xmldsig-more#rsa-sha256';
  const common = {
    privateKey: o.key ?? key,
    // samlify wants the certificate body, as metadata carries it.
    signingCert: (o.cert ?? cert).replace(/-----[^-]+-----|\s/g, ''),
    signatureAlgorithm: alg,
    isBase64Output: false,
  };
  let out = xml;
  if (o.sign_assertion !== false) {
    out = samlify.SamlLib.constructSAMLSignature({
      ...common,
      rawSamlMessage: out,
      referenceTagXPath: "/*[local-name(.)='Response']/*[local-name(.)='Assertion']",
      signatureConfig: { prefix: 'ds', location: { reference: "/*[local-name(.)='Response']/*[local-name(.)='Assertion']/*[local-name(.)='Issuer']", action: 'after' } },
    });
  }
  if (o.sign_response ?? signResponse) {
    out = samlify.SamlLib.constructSAMLSignature({
      ...common,
      rawSamlMessage: out,
      isMessageSigned: true,
      signatureConfig: { prefix: 'ds', location: { reference: "/*[local-name(.)='Response']/*[local-name(.)='Issuer']", action: 'after' } },
    });
  }
  return out;
}

async function loginResponse(sp, user, requestInfo, authnContext) {
  // samlify builds and signs (it signs the assertion when the SP metadata wants it, and the
  // response when the SP entity is set to want signed messages); we supply the document.
  const { context } = await idp.createLoginResponse(sp, requestInfo, 'post', user, {
    encryptThenSign: true,
    customTagReplacement: () => ({
      id: '',
      context: responseXml(sp, user, requestInfo?.extract?.request?.id, { authn_context: authnContext, request_info: requestInfo }),
    }),
  });
  return context;
}

// The assertion of `xml` encrypted (with @authenio/xml-encryption, samlify's own library)
// to `certPem`, the SP's encryption certificate unless a test names another; `extra` is
// appended to the plaintext (a wrapping attempt hidden inside the encryption).
const pemBody = (pem) => pem.replace(/-----[^-]+-----|\s/g, '');
function spEncryptionCert(sp) {
  const listed = sp.entityMeta.getX509Certificate('encryption');
  const first = [].concat(listed ?? []).find(Boolean);
  if (!first) throw new Error('the SP metadata lists no encryption certificate');
  return `-----BEGIN CERTIFICATE-----\n${pemBody(first).match(/.{1,64}/g).join('\n')}\n-----END CERTIFICATE-----\n`;
}
async function encryptAssertion(sp, xml, e = {}) {
  const match = /<saml:Assertion[\s\S]*<\/saml:Assertion>/.exec(xml);
  if (!match) throw new Error('no assertion to encrypt');
  const certPem = e.cert ?? spEncryptionCert(sp);
  const { createPublicKey } = await import('node:crypto');
  const rsaPub = createPublicKey(certPem).export({ type: 'spki', format: 'pem' });
  const encrypted = await new Promise((ok, fail) => xmlenc.encrypt(match[0] + (e.extra_plaintext ?? ''), {
    rsa_pub: rsaPub,
    pem: certPem,
    encryptionAlgorithm: e.data ?? config.data_encryption ?? 'http://www.w3.org/2009/xmlenc11#aes256-gcm',
    keyEncryptionAlgorithm: e.key ?? config.key_encryption ?? 'http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p',
    warnInsecureAlgorithm: false,
  }, (err, out) => (err ? fail(err) : ok(out))));
  const element = `<saml:EncryptedAssertion>${encrypted}</saml:EncryptedAssertion>`;
  const placed = e.misplace ? `<samlp:Extensions>${element}</samlp:Extensions>` : element;
  return xml.replace(match[0], placed + (e.beside ?? ''));
}

// samlify does not read RequestedAuthnContext: a class other than password asks for a
// second factor here (and is then the class the assertion states).
const PASSWORD_CLASS = 'urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport';
function requestedStrongClass(xml) {
  const requested = /<(?:\w+:)?RequestedAuthnContext[\s\S]*?<\/(?:\w+:)?RequestedAuthnContext>/.exec(xml)?.[0] ?? '';
  const classes = [...requested.matchAll(/<(?:\w+:)?AuthnContextClassRef>([^<]+)</g)].map((m) => m[1].trim());
  return classes.find((c) => c !== PASSWORD_CLASS) ?? null;
}
function codeForm(action, error) {
  return page('Second factor', `${error ? `<p role="alert">${esc(error)}</p>` : ''}
<form method="post" action="${esc(action)}">
<label>One-time code <input name="otp" inputmode="numeric" autocomplete="one-time-code" autofocus></label>
<button type="submit">Verify</button></form>`);
}

const pendingLogins = new Map(); // uid -> { sp, requestInfo, relayState }

async function handler(req, res) {
  const url = new URL(req.url, base);
  const rawQuery = req.url.includes('?') ? req.url.slice(req.url.indexOf('?') + 1) : '';
  const send = (status, body, type = 'text/html; charset=utf-8', extra = {}) => {
    res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store', ...extra });
    res.end(body);
  };
  try {
    if (url.pathname === '/metadata') {
      return send(200, idp.getMetadata(), 'application/samlmetadata+xml');
    }
    if (url.pathname === '/sso' && req.method === 'GET') {
      // SP-initiated: samlify inflates, schema-validates and verifies the AuthnRequest.
      const issuer = Buffer.from(url.searchParams.get('SAMLRequest') ?? '', 'base64');
      const xml = (await import('node:zlib')).inflateRawSync(issuer).toString();
      const spId = /<(?:\w+:)?Issuer[^>]*>([^<]+)</.exec(xml)?.[1] ?? '';
      const [sp, requestInfo] = await verifiedBy(spId.trim(), (candidate) => idp.parseLoginRequest(candidate, 'redirect', {
        query: Object.fromEntries(url.searchParams),
        octetString: octetString(rawQuery, 'SAMLRequest'),
      }));
      const uid = randomUUID();
      pendingLogins.set(uid, {
        sp,
        requestInfo,
        relayState: url.searchParams.get('RelayState') ?? '',
        strongClass: requestedStrongClass(xml),
      });
      return send(200, loginForm(`/login/${uid}`));
    }
    if (url.pathname === '/sso' && req.method === 'POST' && (config.sso_bindings ?? []).includes('post')) {
      // HTTP-POST binding: samlify verifies the AuthnRequest's enveloped XML signature.
      const form = new URLSearchParams(await readBody(req));
      const xml = Buffer.from(form.get('SAMLRequest') ?? '', 'base64').toString();
      const spId = /<(?:\w+:)?Issuer[^>]*>([^<]+)</.exec(xml)?.[1] ?? '';
      const [sp, requestInfo] = await verifiedBy(spId.trim(), (candidate) => idp.parseLoginRequest(candidate, 'post', {
        body: { SAMLRequest: form.get('SAMLRequest'), RelayState: form.get('RelayState') ?? '' },
      }));
      postedRequests.push({
        sp: spId.trim(),
        signed: /<(?:\w+:)?Signature[\s>]/.test(xml),
        signature_method: /<(?:\w+:)?SignatureMethod[^>]*Algorithm="([^"]+)"/.exec(xml)?.[1] ?? null,
        digest_methods: [...xml.matchAll(/<(?:\w+:)?DigestMethod[^>]*Algorithm="([^"]+)"/g)].map((m) => m[1]),
      });
      const uid = randomUUID();
      pendingLogins.set(uid, {
        sp,
        requestInfo,
        relayState: form.get('RelayState') ?? '',
        strongClass: requestedStrongClass(xml),
      });
      return send(200, loginForm(`/login/${uid}`));
    }
    if (url.pathname === '/idp-init' && req.method === 'GET') {
      // IdP-initiated: the user picks the app here (Okta's dashboard tile).
      const sp = await spFor(url.searchParams.get('sp') ?? '');
      const uid = randomUUID();
      pendingLogins.set(uid, { sp, requestInfo: null, relayState: url.searchParams.get('relay') ?? '' });
      return send(200, loginForm(`/login/${uid}`));
    }
    const login = /^\/login\/([\w-]+)$/.exec(url.pathname);
    if (login && req.method === 'POST') {
      const pending = pendingLogins.get(login[1]);
      if (!pending) return send(400, page('Expired', '<p>Login expired.</p>'));
      const form = new URLSearchParams(await readBody(req));
      const user = users.get(form.get('login') ?? '');
      if (!user || user.password !== form.get('password')) {
        return send(200, loginForm(url.pathname, 'Wrong user or password'));
      }
      if (pending.strongClass) {
        pending.user = user;
        return send(200, codeForm(`/otp/${login[1]}`));
      }
      pendingLogins.delete(login[1]);
      const samlResponse = await loginResponse(pending.sp, user, pending.requestInfo);
      return send(200, autoPost(acsFor(pending.sp, pending.requestInfo), {
        SAMLResponse: samlResponse,
        RelayState: pending.relayState,
      }));
    }
    const otp = /^\/otp\/([\w-]+)$/.exec(url.pathname);
    if (otp && req.method === 'POST') {
      const pending = pendingLogins.get(otp[1]);
      if (!pending?.user) return send(400, page('Expired', '<p>Login expired.</p>'));
      const form = new URLSearchParams(await readBody(req));
      if (form.get('otp') !== (pending.user.otp ?? '246810')) {
        return send(200, codeForm(url.pathname, 'Wrong code'));
      }
      pendingLogins.delete(otp[1]);
      const samlResponse = await loginResponse(pending.sp, pending.user, pending.requestInfo, pending.strongClass);
      return send(200, autoPost(acsFor(pending.sp, pending.requestInfo), {
        SAMLResponse: samlResponse,
        RelayState: pending.relayState,
      }));
    }
    if (url.pathname === '/slo' && req.method === 'GET' && url.searchParams.has('SAMLResponse')) {
      // The SP's answer to our IdP-initiated logout: schema-checked and parsed by samlify.
      const deflated = Buffer.from(url.searchParams.get('SAMLResponse') ?? '', 'base64');
      const xml = (await import('node:zlib')).inflateRawSync(deflated).toString();
      const spId = /<(?:\w+:)?Issuer[^>]*>([^<]+)</.exec(xml)?.[1] ?? '';
      const [, info] = await verifiedBy(spId.trim(), (candidate) => idp.parseLogoutResponse(candidate, 'redirect', {
        query: Object.fromEntries(url.searchParams),
        octetString: octetString(rawQuery, 'SAMLResponse'),
      }));
      logoutResponses.push({ sp: spId.trim(), in_response_to: info.extract.response?.inResponseTo ?? null, status: /StatusCode Value="([^"]+)"/.exec(xml)?.[1] });
      return send(200, page('Signed out', '<p>You are signed out everywhere.</p>'));
    }
    if (url.pathname === '/slo' && req.method === 'GET') {
      // SP-initiated logout: verify the LogoutRequest, answer with a LogoutResponse.
      const deflated = Buffer.from(url.searchParams.get('SAMLRequest') ?? '', 'base64');
      const xml = (await import('node:zlib')).inflateRawSync(deflated).toString();
      const spId = /<(?:\w+:)?Issuer[^>]*>([^<]+)</.exec(xml)?.[1] ?? '';
      const [sp, info] = await verifiedBy(spId.trim(), (candidate) => idp.parseLogoutRequest(candidate, 'redirect', {
        query: Object.fromEntries(url.searchParams),
        octetString: octetString(rawQuery, 'SAMLRequest'),
      }));
      logouts.push({ name_id: info.extract.nameID, session_index: info.extract.sessionIndex?.sessionIndex ?? info.extract.sessionIndex, sp: spId.trim(), xml });
      const { context } = idp.createLogoutResponse(sp, info, 'redirect', { relayState: url.searchParams.get('RelayState') ?? '' });
      return send(302, '', 'text/plain', { location: context });
    }
    if (config.test_hooks && url.pathname === '/test/posted-requests') {
      return send(200, JSON.stringify(postedRequests), 'application/json');
    }
    if (config.test_hooks && url.pathname === '/test/sessions') {
      return send(200, JSON.stringify(issued), 'application/json');
    }
    if (config.test_hooks && url.pathname === '/test/logouts') {
      return send(200, JSON.stringify({ requests: logouts, responses: logoutResponses }), 'application/json');
    }
    if (config.test_hooks && url.pathname === '/test/idp-logout' && req.method === 'GET') {
      // The IdP ends a user's session everywhere: a signed LogoutRequest to the SP.
      const sp = await spFor(url.searchParams.get('sp') ?? '');
      const user = users.get(url.searchParams.get('user') ?? '');
      const sessionIndex = url.searchParams.get('session_index') ?? sessions.get(user?.id);
      const who = { logoutNameID: url.searchParams.get('name_id') ?? user?.email, sessionIndex };
      if (url.searchParams.get('binding') === 'post') {
        const { context, entityEndpoint } = idp.createLogoutRequest(sp, 'post', who);
        return send(200, JSON.stringify({ url: entityEndpoint, SAMLRequest: context }), 'application/json');
      }
      const { context } = idp.createLogoutRequest(sp, 'redirect', who);
      return send(200, JSON.stringify({ url: context }), 'application/json');
    }
    if (config.test_hooks && url.pathname === '/test/response' && req.method === 'POST') {
      // A response with chosen defects, signed by this IdP's real code path.
      const o = JSON.parse(await readBody(req));
      const sp = await spFor(o.sp);
      const user = users.get(o.user ?? 'alice');
      let xml = responseXml(sp, user, o.in_response_to_request, o);
      if (o.encrypt) {
        // Sign the assertion, encrypt it, then sign the response around it.
        if (!o.unsigned) xml = sign(xml, { ...o, sign_response: false });
        xml = await encryptAssertion(sp, xml, o.encrypt);
        if (!o.unsigned && (o.sign_response ?? signResponse)) xml = sign(xml, { ...o, sign_assertion: false });
      } else if (!o.unsigned) {
        xml = sign(xml, o);
      }
      return send(200, JSON.stringify({ xml, SAMLResponse: Buffer.from(xml).toString('base64') }), 'application/json');
    }
    return send(404, page('Not found', '<p>Not found.</p>'));
  } catch (e) {
    process.stderr.write(`error: ${e?.stack ?? e}\n`);
    return send(400, page('Error', `<p>${esc(e?.message ?? e)}</p>`));
  }
}

http.createServer(handler).listen(port, '127.0.0.1', () => {
  process.stdout.write(`READY ${entityID}\n`);
});
