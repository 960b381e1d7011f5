#!/usr/bin/env bash
# Portcullis demo on a fresh Debian machine (as root): installs what it needs, builds a release
# binary, starts two sample legacy apps (the timesheet as two instances) and the gateway in
# front of them, checks that each app answers through the gateway, and prints URLs to try.
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

echo "==> building portcullis (release; the first build takes several minutes)"
cargo build --release --locked
bin="${CARGO_TARGET_DIR:-$root/target}/release/portcullis"

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
for port in 8081 8082 8083; do wait_for "http://127.0.0.1:$port/"; done
wait_for http://127.0.0.1:9090/readyz
curl -fsS http://127.0.0.1:9090/readyz

# Smoke test: each app through the gateway, by Host (curl resolves *.localhost to loopback;
# --resolve makes that explicit for older curl).
resolve=(--resolve wiki.localhost:8080:127.0.0.1 --resolve timesheet.localhost:8080:127.0.0.1
         --resolve wiki.localhost:8443:127.0.0.1 --resolve timesheet.localhost:8443:127.0.0.1)
for url in http://wiki.localhost:8080/ http://timesheet.localhost:8080/ https://wiki.localhost:8443/; do
  code=$(curl -s -o /dev/null -w '%{http_code}' --cacert certs/dev/ca.crt "${resolve[@]}" "$url")
  echo "    $url -> $code"
  [[ "$code" == 200 ]] || { echo "demo smoke test failed; see $run_dir/gateway.log" >&2; exit 1; }
done

cat <<TXT

Portcullis demo is running.
  Gateway (HTTP)   http://wiki.localhost:8080/        http://timesheet.localhost:8080/
  Gateway (HTTPS)  https://wiki.localhost:8443/       (test-only CA: certs/dev/ca.crt)
  Admin            http://127.0.0.1:9090/healthz      http://127.0.0.1:9090/readyz
  Logs             $run_dir/gateway.log

Try:
  curl -H 'Accept: application/json' http://wiki.localhost:8080/page
  curl -H 'X-Remote-User: admin' -H 'Accept: application/json' http://wiki.localhost:8080/page   # spoof: stripped
  curl -i http://wiki.localhost:8080/admin/            # 403, rule no-admin
  curl -i http://timesheet.localhost:8080/reports      # 403, no allow rule matches
  curl -i http://unknown.localhost:8080/               # 404, no app here
TXT

if [[ "$mode" == "--detach" ]]; then
  echo "Stop with: ./deploy/demo.sh stop"
else
  echo "Press Ctrl-C to stop."
  wait
fi
