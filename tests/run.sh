#!/usr/bin/env bash
# Runs every Portcullis test on a fresh Debian machine (as root): installs the system packages
# the build and tests need, then format check, lints, unit tests and integration tests (which
# start the real gateway binary against real backends on loopback).
#
# Usage: ./tests/run.sh            (from anywhere)
# Env:   CARGO_TARGET_DIR          reuse a build cache between clones (CI sets one)
set -euo pipefail
cd "$(dirname "$0")/.."

# --- system packages -------------------------------------------------------------------------
# shellcheck source=deploy/packages.sh
source deploy/packages.sh
ensure_packages "${PORTCULLIS_PACKAGES[@]}"
ensure_test_idp
# A real WebSocket backend for tests/websocket.rs (run with Debian's /usr/bin/python3).
ensure_packages python3-websockets
# The high-availability tests (tests/ha.rs): real Redis, Sentinel and HAProxy on loopback.
ensure_packages redis-server redis-sentinel haproxy
# Metrics (tests/metrics.rs): promtool checks the exposition, a real Prometheus scrapes it.
ensure_packages prometheus
# Audit to a SIEM (tests/audit_syslog.rs): a real rsyslogd receiving over TCP and TLS.
ensure_packages rsyslog rsyslog-gnutls
# The audit records' JSON schema (deploy/audit-schema.json) is checked with Debian's validator.
ensure_packages python3-jsonschema
# The service unit (tests/service_unit.rs): systemd-analyze verify and security; util-linux's
# `script` gives the progress-bar test a terminal.
ensure_packages systemd bsdutils
# Install like a service (tests/install.rs): the Debian package is built with cargo-deb and
# installed here; the Kubernetes manifests are read with Debian's PyYAML.
ensure_packages dpkg-dev python3-yaml
# Attributes from LDAP (tests/directory.rs): a real OpenLDAP server, started per test.
ensure_packages slapd
# Kerberos constrained delegation (tests/kerberos.rs): an MIT KDC on its LDAP back end (the
# DB2 one cannot hold krbAllowedToDelegateTo) and Apache with mod_auth_gssapi as the backend.
ensure_packages krb5-kdc krb5-kdc-ldap krb5-admin-server apache2 libapache2-mod-auth-gssapi
cargo deb --version >/dev/null 2>&1 || cargo install --locked --quiet cargo-deb
ensure_browser_tests
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt >/dev/null 2>&1 || true

# --- checks ------------------------------------------------------------------------------------
echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> cargo clippy (warnings are errors)"
cargo clippy --all-targets --locked -- -D warnings

echo "==> cargo build --release (the Debian package in tests/install.rs and the benchmarks)"
cargo build --release --locked --quiet --bin portcullis

echo "==> cargo test"
# Integration tests each start gateway processes; two test threads keep a 2-core machine sane.
cargo test --all-targets --locked -- --test-threads="${TEST_THREADS:-2}"

echo "==> policy examples (the shipped policies' [[test]] entries)"
cargo run --locked --quiet -- policy test -c deploy/portcullis.toml

echo "==> fuzz smoke run (fuzz/run.sh --smoke: every target builds and runs for seconds)"
./fuzz/run.sh --smoke

echo "==> benchmark smoke run (bench/run.sh --smoke: every system answers authenticated 200s)"
./bench/run.sh --smoke

echo "==> all tests passed"
