// A hostile OpenID Provider for tests/hostile_op.rs: the flows of a real provider (discovery,
// JWKS, authorization code, token endpoint) that misbehaves on purpose, in the ways the npm
// oidc-provider cannot be made to (it signs correctly). Written for the harness: no real peer
// produces these answers. Node built-ins only.
//
// Usage: node hostile-op.mjs CONFIG.json   (prints READY once listening)
// CONFIG: { "port": N, "client_id": "...", "client_secret": "..." }
//
// The test picks the misbehaviour per login by adding `scenario=<name>` to the authorization
// URL the gateway sent the browser to; the code handed back remembers it. The JWKS answer is
// chosen with POST /test/jwks?mode=<name>, the issuer discovery names with
// POST /test/discovery-issuer?value=<url>. GET /test/calls counts the calls per endpoint.
import http from 'node:http';
import crypto from 'node:crypto';
import fs from 'node:fs';

const config = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const issuer = `http://127.0.0.1:${config.port}`;

const b64url = (data) => Buffer.from(data).toString('base64url');
const newKey = (kid) => {
  const { privateKey, publicKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { kid, privateKey, publicKey, jwk: { ...publicKey.export({ format: 'jwk' }), kid, use: 'sig', alg: 'RS256' } };
};
const k1 = newKey('k1');
const k2 = newKey('k2');
const unpublished = newKey('k-unpublished');

// Keys a JWKS can hold that a verifier must skip or refuse without falling over.
const unusualKeys = [
  { kty: 'oct', kid: 'shared', k: b64url('the secret everyone knows'), alg: 'HS256' },
  { kty: 'RSA', kid: 'huge', use: 'sig', alg: 'RS256', n: b64url(crypto.randomBytes(8192)), e: 'AQAB' },
  { kty: 'RSA', kid: 'big-exponent', use: 'sig', alg: 'RS256', n: k2.jwk.n, e: b64url(crypto.randomBytes(512)) },
  { kty: 'EC', kid: 'odd-curve', use: 'sig', crv: 'secp256k1', x: b64url(crypto.randomBytes(32)), y: b64url(crypto.randomBytes(32)) },
  { kty: 'OKP', kid: 'ed448', use: 'sig', crv: 'Ed448', x: b64url(crypto.randomBytes(57)) },
  { kty: 'RSA', kid: 'not-base64', use: 'sig', alg: 'RS256', n: '!!!', e: '***' },
  { kty: 'made-up', kid: 'alien' },
  { kid: 'no-kty' },
  { kty: 'RSA', kid: 'k1-enc', use: 'enc', n: k1.jwk.n, e: k1.jwk.e },
];

let jwksMode = 'normal';
// The issuer the discovery document names (another one than where it is served: mix-up).
let discoveryIssuer = issuer;
const jwks = () => {
  switch (jwksMode) {
    case 'unusual': return { keys: [...unusualKeys, k1.jwk, k2.jwk] };
    // Over the gateway's 1 MiB cap for any IdP answer.
    case 'oversized': return { keys: [k1.jwk, k2.jwk], padding: 'x'.repeat(2 * 1024 * 1024) };
    case 'not-json': return null;
    default: return { keys: [k1.jwk, k2.jwk] };
  }
};

const calls = {};
const codes = new Map();

const sign = (header, claims, key) => {
  const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
  return `${input}.${crypto.sign('sha256', Buffer.from(input), key.privateKey).toString('base64url')}`;
};

// The ID token for a code, shaped by its scenario.
const idToken = (grant) => {
  const now = Math.floor(Date.now() / 1000);
  const claims = {
    iss: issuer, sub: 'mallory-subject', aud: config.client_id, exp: now + 300, iat: now,
    nonce: grant.nonce, email: 'mallory@corp.example', name: 'Mallory', groups: ['staff'],
  };
  const header = { alg: 'RS256', typ: 'JWT', kid: 'k1' };
  switch (grant.scenario) {
    case 'alg-none': {
      const input = `${b64url(JSON.stringify({ alg: 'none', typ: 'JWT' }))}.${b64url(JSON.stringify(claims))}`;
      return `${input}.`;
    }
    case 'hs256-with-public-key': {
      // The classic key-confusion attack: HMAC keyed with the RSA public key's PEM.
      const h = { alg: 'HS256', typ: 'JWT', kid: 'k1' };
      const input = `${b64url(JSON.stringify(h))}.${b64url(JSON.stringify(claims))}`;
      const secret = k1.publicKey.export({ type: 'spki', format: 'pem' });
      return `${input}.${crypto.createHmac('sha256', secret).update(input).digest('base64url')}`;
    }
    case 'hs256-with-shared-key': {
      const h = { alg: 'HS256', typ: 'JWT', kid: 'shared' };
      const input = `${b64url(JSON.stringify(h))}.${b64url(JSON.stringify(claims))}`;
      return `${input}.${crypto.createHmac('sha256', 'the secret everyone knows').update(input).digest('base64url')}`;
    }
    case 'no-kid': { const { kid, ...rest } = header; return sign(rest, claims, k1); }
    case 'unknown-kid': return sign({ ...header, kid: 'k-unpublished' }, claims, unpublished);
    case 'kid-of-huge-key': return sign({ ...header, kid: 'huge' }, claims, k1);
    case 'signed-by-other-key': return sign(header, claims, k2);
    case 'iat-in-future': return sign(header, { ...claims, iat: now + 3600, exp: now + 7200 }, k1);
    case 'no-exp': { const { exp, ...rest } = claims; return sign(header, rest, k1); }
    case 'expired': return sign(header, { ...claims, iat: now - 7200, exp: now - 3600 }, k1);
    case 'untrusted-audience-no-azp': return sign(header, { ...claims, aud: [config.client_id, 'untrusted-client'] }, k1);
    case 'azp-other-client': return sign(header, { ...claims, aud: [config.client_id, 'untrusted-client'], azp: 'untrusted-client' }, k1);
    case 'not-our-audience': return sign(header, { ...claims, aud: 'untrusted-client' }, k1);
    case 'wrong-nonce': return sign(header, { ...claims, nonce: 'a-nonce-of-the-attackers-choosing' }, k1);
    case 'no-nonce': { const { nonce, ...rest } = claims; return sign(header, rest, k1); }
    case 'other-issuer': return sign(header, { ...claims, iss: 'http://idp.attacker.example' }, k1);
    case 'no-sub': { const { sub, ...rest } = claims; return sign(header, rest, k1); }
    case 'garbage': return 'not.a.jwt';
    default: return sign(header, claims, k1);
  }
};

const send = (res, status, body, headers = {}) => {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store', ...headers });
  res.end(text);
};

const readBody = (req) => new Promise((resolve) => {
  let data = '';
  req.on('data', (chunk) => { data += chunk; if (data.length > 65536) req.destroy(); });
  req.on('end', () => resolve(data));
});

const tokenEndpoint = async (req, res) => {
  const form = new URLSearchParams(await readBody(req));
  const grant = codes.get(form.get('code'));
  if (!grant) return send(res, 400, { error: 'invalid_grant' });
  codes.delete(form.get('code'));
  const verifier = form.get('code_verifier') || '';
  const challenge = crypto.createHash('sha256').update(verifier).digest('base64url');
  if (challenge !== grant.challenge) return send(res, 400, { error: 'invalid_grant', error_description: 'PKCE' });
  switch (grant.scenario) {
    case 'token-redirects':
      // A redirect to somewhere the gateway must not be led (SSRF), with a good token there.
      return send(res, 307, '', { location: `${issuer}/token-elsewhere` });
    case 'token-hangs':
      // Accepts the request and never answers; the socket stays open until the test ends.
      res.socket.setTimeout(0);
      return;
    case 'token-huge':
      res.writeHead(200, { 'content-type': 'application/json' });
      res.write('{"access_token":"a","token_type":"Bearer","padding":"');
      for (let i = 0; i < 64; i++) res.write('x'.repeat(64 * 1024));
      return res.end('"}');
    case 'token-not-json':
      return send(res, 200, '<html>surprise</html>', { 'content-type': 'text/html' });
    case 'token-no-id-token':
      return send(res, 200, { access_token: 'at', token_type: 'Bearer', expires_in: 300 });
    default:
      return send(res, 200, { access_token: 'at', token_type: 'Bearer', expires_in: 300, id_token: idToken(grant) });
  }
};

const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, issuer);
  calls[url.pathname] = (calls[url.pathname] || 0) + 1;
  try {
    switch (url.pathname) {
      case '/.well-known/openid-configuration':
        return send(res, 200, {
          issuer: discoveryIssuer,
          authorization_endpoint: `${issuer}/authorize`,
          token_endpoint: `${issuer}/token`,
          jwks_uri: `${issuer}/jwks`,
          response_types_supported: ['code'],
          subject_types_supported: ['public'],
          id_token_signing_alg_values_supported: ['RS256'],
          token_endpoint_auth_methods_supported: ['client_secret_basic', 'client_secret_post'],
          code_challenge_methods_supported: ['S256'],
          scopes_supported: ['openid', 'email', 'profile', 'groups'],
        });
      case '/jwks': {
        const doc = jwks();
        return doc === null ? send(res, 200, '{"keys": [', {}) : send(res, 200, doc);
      }
      case '/authorize': {
        const p = url.searchParams;
        if (p.get('client_id') !== config.client_id) return send(res, 400, { error: 'unauthorized_client' });
        const code = crypto.randomBytes(16).toString('hex');
        codes.set(code, { nonce: p.get('nonce'), challenge: p.get('code_challenge'), scenario: p.get('scenario') || 'good' });
        const back = new URL(p.get('redirect_uri'));
        back.searchParams.set('code', code);
        back.searchParams.set('state', p.get('state'));
        res.writeHead(302, { location: back.toString() });
        return res.end();
      }
      case '/token':
        return await tokenEndpoint(req, res);
      case '/token-elsewhere':
        return send(res, 200, { error: 'the gateway followed a redirect from the token endpoint' });
      case '/test/jwks':
        jwksMode = url.searchParams.get('mode') || 'normal';
        return send(res, 200, { mode: jwksMode });
      case '/test/discovery-issuer':
        discoveryIssuer = url.searchParams.get('value') || issuer;
        return send(res, 200, { issuer: discoveryIssuer });
      case '/test/calls':
        return send(res, 200, calls);
      default:
        return send(res, 404, { error: 'not_found' });
    }
  } catch (e) {
    console.error(e);
    send(res, 500, { error: 'server_error' });
  }
});
server.listen(config.port, '127.0.0.1', () => console.log('READY'));
