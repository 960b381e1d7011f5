#!/usr/bin/env bash
# Runs every fuzz target (cargo fuzz, libFuzzer) for a while; a crash, a panic, a timeout or
# running out of memory fails the run, with the input that did it under fuzz/artifacts/.
#
# Usage: fuzz/run.sh [SECONDS] [TARGET...]   optimised build, SECONDS per target (default 60)
#        fuzz/run.sh --smoke                 debug build, a few seconds each (tests/run.sh)
# Env:   CARGO_TARGET_DIR                    shared with the main build (CI sets one)
#
# Seeds are committed under fuzz/seeds/<target>/; what the fuzzer learns goes to a working
# corpus in the build cache, so the repository keeps only the small seed sets. A finding is
# fixed in the gateway and kept as a regression test beside the code it broke.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=60
smoke=false
if [[ "${1:-}" == "--smoke" ]]; then
  smoke=true
  seconds=${SMOKE_SECONDS:-5}
  shift
elif [[ "${1:-}" =~ ^[0-9]+$ ]]; then
  seconds=$1
  shift
fi
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(config path cookie saml hygiene jwt)

CARGO_FUZZ_VERSION=0.13.2
if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  echo "==> installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install --locked --quiet cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi
# libFuzzer's instrumentation needs unstable compiler flags; the machine has one (stable)
# toolchain, which accepts them with RUSTC_BOOTSTRAP.
export RUSTC_BOOTSTRAP=1
# No address sanitizer: the gateway is safe Rust (unsafe_code = "forbid"), and the C it links
# (OpenSSL, libxml2, xmlsec) is not instrumented either way. Panics, hangs and memory growth
# are what is looked for.
build=(--sanitizer none)
if $smoke; then
  build+=(--dev)
else
  build+=(--release --debug-assertions)
  # The release profile's fat LTO buys nothing here but minutes of linking.
  export CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16
fi
target_dir="${CARGO_TARGET_DIR:-$(pwd)/target}"
echo "==> building fuzz targets (${build[*]})"
cargo fuzz build "${build[@]}"
failed=()
for target in "${targets[@]}"; do
  corpus="$target_dir/fuzz-corpus/$target"
  artifacts="fuzz/artifacts/$target"
  mkdir -p "$corpus" "$artifacts"
  echo "==> fuzz $target (${seconds}s)"
  if ! cargo fuzz run "${build[@]}" "$target" "$corpus" "fuzz/seeds/$target" -- \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
      -artifact_prefix="$artifacts/" -print_final_stats=1 > "$corpus.log" 2>&1; then
    failed+=("$target")
    tail -n 40 "$corpus.log" >&2
  else
    grep -E "stat::number_of_executed_units|stat::peak_rss_mb" "$corpus.log" | tr '\n' ' ' | sed 's/^/    /'
    echo
  fi
done
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "fuzzing found problems in: ${failed[*]} (inputs under fuzz/artifacts/)" >&2
  exit 1
fi
echo "==> fuzzing: no findings"
