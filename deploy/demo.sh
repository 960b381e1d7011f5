#!/usr/bin/env bash
# Portcullis demo on a fresh Debian machine (as root): installs what it needs, builds a release
# binary, starts a real OpenID Provider (oidc-provider) and a real SAML IdP (samlify), both with
# users alice/bob/carol, three sample legacy apps (the timesheet as two instances; the HR portal
# behind SAML) and the gateway in front of them, signs alice in end to end through each protocol
# as a smoke test, and prints URLs to try.
#
# Usage: ./deploy/demo.sh          start, then stay in the foreground until Ctrl-C
#        ./deploy/demo.sh --detach start and return (stop later with ./deploy/demo.sh stop)
#        ./deploy/demo.sh stop     stop a detached demo
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
run_dir="$root/deploy/demo-run"
mode=${1:-foreground}

stop_demo() {
  if [[ -d "$run_dir" ]]; then
    for pidfile in "$run_dir"/*.pid; do
      [[ -e "$pidfile" ]] || continue
      kill "$(cat "$pidfile")" 2>/dev/null || true
      rm -f "$pidfile"
    done
  fi
}

if [[ "$mode" == "stop" ]]; then
  stop_demo
  echo "demo stopped"
  exit 0
fi

# --- system packages -------------------------------------------------------------------------
# shellcheck source=deploy/packages.sh
source deploy/packages.sh
ensure_packages "${PORTCULLIS_PACKAGES[@]}"
ensure_test_idp

echo "==> building portcullis (release; the first build takes several minutes)"
cargo build --release --locked
bin="${CARGO_TARGET_DIR:-$root/target}/release/portcullis"

# Git does not keep file modes: the test-only secrets get their owner-only mode back.
chmod 600 certs/dev/*.key certs/dev/*.secret

echo "==> checking configuration"
"$bin" check -c deploy/portcullis.toml

stop_demo
mkdir -p "$run_dir"
start() { # name, log, command...
  local name=$1 log=$2
  shift 2
  "$@" >"$run_dir/$log" 2>&1 &
  echo $! >"$run_dir/$name.pid"
}
start idp idp.log node tests/idp/oidc-idp.mjs deploy/demo-idp.json
start saml-idp saml-idp.log node tests/idp/saml-idp.mjs deploy/demo-saml-idp.json
start hr hr.log python3 deploy/sample-apps/legacy_app.py hr 8084
start forms forms.log python3 deploy/sample-apps/form_app.py forms 8085 deploy/demo-form-users.json
start intranet intranet.log python3 deploy/sample-apps/legacy_app.py intranet 8086 --trust-cookie REMOTE_USER
start reports reports.log python3 deploy/sample-apps/legacy_app.py reports 8087 \
  --basic "reports-svc:$(tr -d '\n' < certs/dev/demo-basic-service.secret)"
start erp erp.log python3 deploy/sample-apps/internal_name_app.py 8088 http://erp-legacy.corp.local:8080
start wiki wiki.log python3 deploy/sample-apps/legacy_app.py wiki 8081
start timesheet-a timesheet-a.log python3 deploy/sample-apps/legacy_app.py timesheet-a 8082
start timesheet-b timesheet-b.log python3 deploy/sample-apps/legacy_app.py timesheet-b 8083
start gateway gateway.log "$bin" run -c deploy/portcullis.toml

if [[ "$mode" != "--detach" ]]; then
  trap 'stop_demo; echo "demo stopped"' EXIT
  trap 'echo; exit 130' INT TERM
fi

echo "==> waiting for the sample apps and the gateway"
wait_for() { # url
  for _ in $(seq 1 150); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "not answering: $1 (logs in $run_dir)" >&2
  return 1
}
for port in 8081 8082 8083 8084; do wait_for "http://127.0.0.1:$port/"; done
wait_for http://127.0.0.1:8085/login
wait_for http://127.0.0.1:8086/
wait_for http://127.0.0.1:8088/health
wait_for http://127.0.0.1:9400/.well-known/openid-configuration
wait_for http://127.0.0.1:9500/metadata
wait_for http://127.0.0.1:9090/readyz
curl -fsS http://127.0.0.1:9090/readyz

# Smoke test: each app through the gateway, by Host (curl resolves *.localhost to loopback;
# --resolve makes that explicit for older curl).
resolve=(--resolve wiki.localhost:8080:127.0.0.1 --resolve timesheet.localhost:8080:127.0.0.1
         --resolve hr.localhost:8080:127.0.0.1 --resolve forms.localhost:8080:127.0.0.1
         --resolve intranet.localhost:8080:127.0.0.1 --resolve reports.localhost:8080:127.0.0.1
         --resolve erp.localhost:8080:127.0.0.1
         --resolve wiki.localhost:8443:127.0.0.1 --resolve timesheet.localhost:8443:127.0.0.1)
expect() { # status, url, extra curl args...
  local want=$1 url=$2 code
  shift 2
  for _ in $(seq 1 100); do  # discovery of the IdP runs in the background: allow it a moment
    code=$(curl -s -o /dev/null -w '%{http_code}' --cacert certs/dev/ca.crt "${resolve[@]}" "$@" "$url")
    [[ "$code" == "$want" ]] && break
    sleep 0.1
  done
  echo "    $url -> $code"
  [[ "$code" == "$want" ]] || { echo "demo smoke test failed (wanted $want); see $run_dir/gateway.log" >&2; exit 1; }
}
expect 200 http://timesheet.localhost:8080/
expect 302 http://wiki.localhost:8080/ -H 'Accept: text/html'
expect 302 https://wiki.localhost:8443/ -H 'Accept: text/html'
expect 401 http://wiki.localhost:8080/api -H 'Accept: application/json'
expect 302 http://hr.localhost:8080/ -H 'Accept: text/html'

# End to end: alice opens an app, signs in at the IdP, and the app's page comes back.
oidc_page() { # url: signs alice in at the demo IdP and prints the page the app returns
  local jar form action page
  jar=$(mktemp)
  form=$(curl -s -L -c "$jar" -b "$jar" -H 'Accept: text/html' "${resolve[@]}" "$1")
  action=$(grep -o 'action="[^"]*"' <<<"$form" | head -1 | cut -d'"' -f2)
  page=$(curl -s -L -c "$jar" -b "$jar" -H 'Accept: text/html' "${resolve[@]}" \
    --data 'login=alice&password=alice-demo' "http://127.0.0.1:9400$action")
  rm -f "$jar"
  printf '%s' "$page"
}
page=$(oidc_page http://wiki.localhost:8080/hello)
if grep -q 'alice@corp.example' <<<"$page"; then
  echo "    sign-in as alice -> the wiki received X-Remote-User: alice@corp.example"
else
  echo "demo smoke test failed: sign-in did not reach the wiki; see $run_dir/gateway.log" >&2
  exit 1
fi

# End to end over SAML: alice opens the HR portal, signs in at the SAML IdP, and the browser
# posts the signed response to the gateway (what the IdP's auto-submitting page does).
jar=$(mktemp)
browse=(curl -s -c "$jar" -b "$jar" -H 'Accept: text/html' "${resolve[@]}")
form=$("${browse[@]}" -L http://hr.localhost:8080/payslips)
action=$(grep -o 'action="[^"]*"' <<<"$form" | head -1 | cut -d'"' -f2)
posted=$("${browse[@]}" --data 'login=alice&password=alice-demo' "http://127.0.0.1:9500$action")
hidden() { grep -o "name=\"$1\" value=\"[^\"]*\"" <<<"$posted" | head -1 | sed 's/.*value="//; s/"$//'; }
acs=$(grep -o 'action="[^"]*"' <<<"$posted" | head -1 | cut -d'"' -f2)
page=$("${browse[@]}" -L --data-urlencode "SAMLResponse=$(hidden SAMLResponse)" \
  --data-urlencode "RelayState=$(hidden RelayState)" "$acs")
rm -f "$jar"
if grep -q 'alice@corp.example' <<<"$page"; then
  echo "    SAML sign-in as alice -> the HR portal received X-Remote-User: alice@corp.example"
else
  echo "demo smoke test failed: SAML sign-in did not reach the HR portal; see $run_dir/gateway.log" >&2
  exit 1
fi

# A cookie-trusting app and an HTTP Basic app with one shared account, each after alice signs in.
if grep -q '<b>alice@corp.example</b>' <<<"$(oidc_page http://intranet.localhost:8080/news)"; then
  echo "    identity cookie -> the intranet read alice from its REMOTE_USER cookie"
else
  echo "demo smoke test failed: the intranet did not get the identity cookie" >&2
  exit 1
fi
if grep -q 'reports-svc (HTTP Basic account)' <<<"$(oidc_page http://reports.localhost:8080/q3)"; then
  echo "    Basic replay -> the reporting server accepted the shared service account"
else
  echo "demo smoke test failed: the reporting server did not get its Basic credentials" >&2
  exit 1
fi

# An app that knows only its internal name: after sign-in, its page links to the public host.
page=$(oidc_page http://erp.localhost:8080/)
if grep -q 'href="http://erp.localhost:8080/reports/q3' <<<"$page" && ! grep -q 'erp-legacy.corp.local' <<<"$page"; then
  echo "    rewriting -> the ERP's links to http://erp-legacy.corp.local:8080 now name erp.localhost"
else
  echo "demo smoke test failed: the ERP page still names its internal host; see $run_dir/gateway.log" >&2
  exit 1
fi

# An API caller: the reporting job gets its own access token from the IdP (client credentials,
# audience api://timesheet) and reads the timesheet API with it; a forged token gets 401.
token=$(curl -s -u "timesheet-reports:$(cat certs/dev/demo-api-client.secret)" \
  -d grant_type=client_credentials -d resource=api://timesheet -d scope=timesheet:read \
  http://127.0.0.1:9400/token | python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])')
expect 200 http://timesheet.localhost:8080/api/weeks -H "Authorization: Bearer $token"
expect 401 http://timesheet.localhost:8080/api/weeks -H "Authorization: Bearer ${token%.*}.forged"
expect 403 http://timesheet.localhost:8080/api/weeks -X POST -H "Authorization: Bearer $token"

# End to end with form-fill: alice opens the expense app, signs in at the IdP, stores her app
# password once; the gateway then logs in to the app's own form for her.
rm -f "$run_dir/vault.json"
jar=$(mktemp)
browse=(curl -s -c "$jar" -b "$jar" -H 'Accept: text/html' "${resolve[@]}")
form=$("${browse[@]}" -L http://forms.localhost:8080/claims)
action=$(grep -o 'action="[^"]*"' <<<"$form" | head -1 | cut -d'"' -f2)
enroll=$("${browse[@]}" -L --data 'login=alice&password=alice-demo' "http://127.0.0.1:9400$action")
csrf=$(grep -o 'name="csrf" value="[^"]*"' <<<"$enroll" | head -1 | sed 's/.*value="//; s/"$//')
page=$("${browse[@]}" -L --data-urlencode "username=alice" --data-urlencode "password=alice-app-pw" \
  --data-urlencode "csrf=$csrf" --data-urlencode "return_to=/claims" \
  http://forms.localhost:8080/.portcullis/credentials/forms)
rm -f "$jar"
if grep -q 'Welcome back, <b>alice</b>' <<<"$page"; then
  echo "    form-fill as alice -> the expense app's own login form was filled by the gateway"
else
  echo "demo smoke test failed: form-fill did not reach the expense app; see $run_dir/gateway.log" >&2
  exit 1
fi

cat <<TXT

Portcullis demo is running.
  Gateway (HTTP)   http://wiki.localhost:8080/        http://timesheet.localhost:8080/
                   http://hr.localhost:8080/          (HR portal: SAML sign-in)
                   http://forms.localhost:8080/       (expense app with its own login form)
                   http://intranet.localhost:8080/    (trusts a REMOTE_USER cookie)
                   http://reports.localhost:8080/     (HTTP Basic, one shared account)
                   http://erp.localhost:8080/         (knows only its internal name: rewritten)
  Gateway (HTTPS)  https://wiki.localhost:8443/       (test-only CA: certs/dev/ca.crt)
  Identity provider http://127.0.0.1:9400/            users (password): alice (alice-demo),
                                                      bob (bob-demo), carol (carol-demo)
  SAML IdP         http://127.0.0.1:9500/metadata     same users; IdP-initiated login:
                   http://127.0.0.1:9500/idp-init?sp=http://hr.localhost:8080/.portcullis/saml/metadata
  Admin            http://127.0.0.1:9090/healthz      http://127.0.0.1:9090/readyz
  Logs             $run_dir/gateway.log               (audit records: grep 'audit')

Try, in a browser:
  http://wiki.localhost:8080/           sign in as alice: the wiki shows X-Remote-User, X-Groups
  http://timesheet.localhost:8080/week  no second password (single sign-on); bob gets 403 here
  http://timesheet.localhost:8080/approve/week-47   step-up: the IdP asks again, then for a
                                        one-time code (246810), before approving
  http://wiki.localhost:8080/logout     signs out of every app of that sign-in and of the IdP
  http://hr.localhost:8080/             SAML: sign in at the SAML IdP; /logout ends both sessions
  http://hr.localhost:8080/.portcullis/saml/metadata   the SP metadata an admin gives the IdP
  http://forms.localhost:8080/          form-fill: store your app password once (alice:
                                        alice-app-pw, bob: bob-app-pw); the gateway then fills
                                        the app's own login form for you
  carol (a contractor) is refused by the wiki's no-contractors rule.
Or with curl:
  curl -i -H 'Accept: text/html' http://wiki.localhost:8080/    # 302 to the IdP
  curl -i -H 'Accept: application/json' http://wiki.localhost:8080/api   # 401: API calls get no redirect
  curl -i http://timesheet.localhost:8080/                     # 200, public landing page
  t=\$(curl -s -u timesheet-reports:\$(cat certs/dev/demo-api-client.secret) -d grant_type=client_credentials \\
      -d resource=api://timesheet -d scope=timesheet:read http://127.0.0.1:9400/token | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
  curl -i -H "Authorization: Bearer \$t" http://timesheet.localhost:8080/api/weeks   # 200: an API caller's token
  curl -i http://unknown.localhost:8080/                       # 404, no app here
TXT

if [[ "$mode" == "--detach" ]]; then
  echo "Stop with: ./deploy/demo.sh stop"
else
  echo "Press Ctrl-C to stop."
  wait
fi
