// A Shared Signals Framework transmitter on loopback, for Portcullis tests. TEST ONLY.
//
// No real transmitter runs here (Okta's is a cloud service), so the harness plays one: it
// signs Security Event Tokens (RFC 8417) with its own key, generated at each start and
// published at /jwks.json, and pushes them (RFC 8935) to the receiver it is told about.
//
// Usage: node ssf-transmitter.mjs <config.json>
//   { "port": 9500, "receiver": "http://127.0.0.1:8080/.portcullis/ssf/events",
//     "audience": "https://gateway.example" }
// Prints `READY <issuer>` once listening. The test drives it:
//   POST /push   {"claims": {...}, "header": {...}, "key": "own" | "stranger" | "none"}
//                signs a SET (defaults: iss = this transmitter, aud = the configured
//                audience, iat = now, a fresh jti; a claim set to null is left out) and
//                pushes it; answers {"status": <receiver's status>, "body": "<its body>"}
//   POST /resend pushes the last SET again, byte for byte (a replay)

import http from 'node:http';
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { CompactSign, importJWK } from 'jose';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const issuer = `http://127.0.0.1:${config.port}`;

function newKey() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { ...privateKey.export({ format: 'jwk' }), kid: randomUUID(), use: 'sig', alg: 'RS256' };
}
// The transmitter's own key, and one it never publishes (a forger's).
const ownKey = newKey();
const strangerKey = newKey();
const publicJwk = ({ kty, n, e, kid, use, alg }) => ({ kty, n, e, kid, use, alg });

const b64 = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');

async function sign(claims, header, key) {
  if (key === 'none') {
    return `${b64({ alg: 'none', typ: 'secevent+jwt', ...header })}.${b64(claims)}.`;
  }
  const jwk = key === 'stranger' ? strangerKey : ownKey;
  return new CompactSign(new TextEncoder().encode(JSON.stringify(claims)))
    .setProtectedHeader({ alg: 'RS256', kid: jwk.kid, typ: 'secevent+jwt', ...header })
    .sign(await importJWK(jwk, 'RS256'));
}

let last = null;
async function push(set) {
  last = set;
  const response = await fetch(config.receiver, {
    method: 'POST',
    headers: { 'content-type': 'application/secevent+jwt', accept: 'application/json' },
    body: set,
  });
  return { status: response.status, body: await response.text() };
}

async function readJson(req) {
  let body = '';
  for await (const chunk of req) body += chunk;
  return JSON.parse(body || '{}');
}

const server = http.createServer(async (req, res) => {
  const send = (status, value) => {
    res.statusCode = status;
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify(value));
  };
  try {
    if (req.method === 'GET' && req.url === '/jwks.json') {
      return send(200, { keys: [publicJwk(ownKey)] });
    }
    if (req.method === 'POST' && req.url === '/push') {
      const { claims = {}, header = {}, key = 'own' } = await readJson(req);
      const set = {
        iss: issuer,
        aud: config.audience,
        iat: Math.floor(Date.now() / 1000),
        jti: randomUUID(),
        ...claims,
      };
      for (const [name, value] of Object.entries(set)) if (value === null) delete set[name];
      return send(200, await push(await sign(set, header, key)));
    }
    if (req.method === 'POST' && req.url === '/resend' && last) {
      return send(200, await push(last));
    }
    return send(404, { error: 'unknown' });
  } catch (err) {
    return send(500, { error: err.message });
  }
});
server.listen(config.port, '127.0.0.1', () => {
  process.stdout.write(`READY ${issuer}\n`);
});
