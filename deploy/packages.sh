# Sourced by deploy/demo.sh and tests/run.sh: installs missing Debian packages (as root).
# cmake: pingora's zlib-ng; pkg-config + libssl-dev: link the system OpenSSL (see
# .cargo/config.toml); curl + python3: the demo's sample apps and smoke checks.
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
