#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 30) on the nightly toolchain, starting from
# and adding to fuzz/corpus/<target>. Installs cargo-fuzz if it is missing. A crash or a
# hang (an input that takes over 10 s) stops the run with the input saved under
# fuzz/artifacts/<target>/: add it to fuzz/regressions/<target>/ once fixed. Optimised, but
# with overflow checks and debug assertions (-a): arithmetic on a hostile counter that
# overflows is a bug the fuzzer must see, not a silent wrap.
#
#   fuzz/run.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-30}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(open_region spsc_ops mpmc_ops hostile_peer handshake)
fi
if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz/run.sh: no nightly toolchain (cargo-fuzz needs one); nothing run" >&2
    exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
cargo +nightly fuzz build -O -a
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target"
    rm -rf "artifacts/$target"
    echo "== $target: ${seconds}s"
    cargo +nightly fuzz run -O -a "$target" "corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -max_len=4096 -print_final_stats=1 2>&1 |
        grep -E '^(#[0-9]+.*DONE|stat::|==[0-9]+==|SUMMARY|artifact_prefix|Test unit written)' || true
    # A failing run leaves its input under artifacts/.
    if compgen -G "artifacts/$target/*" >/dev/null; then
        echo "fuzz/run.sh: $target found a failing input:" artifacts/"$target"/* >&2
        exit 1
    fi
done
