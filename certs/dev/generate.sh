#!/usr/bin/env bash
# TEST-ONLY certificates for the demo and the test suite. NEVER use these in production:
# the private keys are public (they are committed to the repository).
#
# Makes: ca.crt/ca.key (a dev CA), upstream-client.crt/.key (the gateway's client certificate
# towards mutual-TLS backends), gateway.crt/gateway.key (the gateway's HTTPS listener, for
# localhost, the demo hosts, *.portcullis.localhost, 127.0.0.1, ::1) and backend.crt/backend.key (a TLS backend used by
# tests of https upstreams, for localhost and 127.0.0.1).
set -euo pipefail
cd "$(dirname "$0")"
days=3650
openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days "$days" \
  -keyout ca.key -out ca.crt -subj "/O=Portcullis TEST ONLY/CN=Portcullis Dev CA (TEST ONLY)" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null

issue() { # name, subject CN, subjectAltName[, extended key usage]
  local name=$1 cn=$2 san=$3 usage=${4:-serverAuth}
  openssl req -newkey rsa:2048 -nodes -sha256 -keyout "$name.key" -out "$name.csr" \
    -subj "/O=Portcullis TEST ONLY/CN=$cn" 2>/dev/null
  printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=%s\n' "$san" "$usage" > "$name.ext"
  openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days "$days" -sha256 \
    -extfile "$name.ext" -out "$name.crt" 2>/dev/null
  rm -f "$name.csr" "$name.ext"
}
issue gateway localhost "DNS:localhost,DNS:wiki.localhost,DNS:timesheet.localhost,DNS:*.portcullis.localhost,IP:127.0.0.1,IP:::1"
issue backend localhost "DNS:localhost,IP:127.0.0.1"
# The gateway's client certificate towards backends that demand mutual TLS.
issue upstream-client "portcullis-gateway" "DNS:portcullis-gateway" clientAuth
rm -f ca.srl
# SAML signing keys: the gateway as SAML SP (signs AuthnRequests and logout messages) and the
# demo SAML IdP (signs assertions). Self-signed, as SAML metadata certificates usually are.
saml_pair() { # name, CN
  openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days "$days" -keyout "$1.key" -out "$1.crt" \
    -subj "/O=Portcullis TEST ONLY/CN=$2" 2>/dev/null
}
saml_pair saml-sp "Portcullis SAML SP (TEST ONLY)"
saml_pair demo-saml-idp "Portcullis demo SAML IdP (TEST ONLY)"
# ES256 key signing the gateway's identity assertions (X-Portcullis-Jwt-Assertion).
openssl ecparam -name prime256v1 -genkey -noout 2>/dev/null | openssl pkcs8 -topk8 -nocrypt -out jwt-signing.key
# The demo's credential vault key (32 random bytes).
openssl rand -out vault.key 32
# Session cookie key (64 random bytes) and the demo IdP client secret.
openssl rand -out cookie.key 64
printf 'demo-client-secret-%s-TEST-ONLY\n' "$(openssl rand -hex 16)" > demo-oidc-client.secret
printf 'demo-api-client-secret-%s-TEST-ONLY\n' "$(openssl rand -hex 16)" > demo-api-client.secret
chmod 600 ./*.key demo-oidc-client.secret demo-api-client.secret
echo "TEST-ONLY certificates written to $(pwd)"
