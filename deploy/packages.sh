# Sourced by deploy/demo.sh and tests/run.sh: installs missing Debian packages (as root).
# cmake: pingora's zlib-ng; pkg-config + libssl-dev: link the system OpenSSL (see
# .cargo/config.toml); curl + python3: the demo's sample apps and smoke checks. Node.js runs
# the real OpenID Provider (tests/idp) that the tests and the demo sign in with.
PORTCULLIS_PACKAGES=(cmake pkg-config libssl-dev ca-certificates curl python3)

ensure_packages() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    echo "==> installing system packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
  command -v cargo >/dev/null || { echo "cargo not found: install the Rust toolchain (rustup)" >&2; return 1; }
}

# Node.js (>= 20) and the test IdP's npm packages, pinned by tests/idp/package-lock.json.
ensure_test_idp() {
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    ensure_packages nodejs npm
  fi
  local major
  major=$(node -p 'process.versions.node.split(".")[0]')
  if ((major < 20)); then
    echo "Node.js $(node --version) is too old for the test IdP (oidc-provider needs >= 20)" >&2
    return 1
  fi
  if [[ ! -d tests/idp/node_modules/oidc-provider ]] || [[ tests/idp/package-lock.json -nt tests/idp/node_modules/.package-lock.json ]]; then
    echo "==> installing the test IdP (npm ci in tests/idp)"
    npm ci --prefix tests/idp --no-audit --no-fund --loglevel=error >/dev/null
  fi
}
