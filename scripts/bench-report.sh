#!/usr/bin/env bash
# Runs a short version of every criterion group and prints one markdown table: each case's
# median time, and each shmlane case as a ratio to its baseline measured in the same run
# (baseline time / shmlane time: above 1 means shmlane is faster). Prints the machine first.
#
#   scripts/bench-report.sh            # ~5 minutes on 2 cores
#   SHMLANE_PIN=0 scripts/bench-report.sh   # without CPU pinning
set -euo pipefail
cd "$(dirname "$0")/.."

echo "## Machine"
echo
echo "- CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//') ($(nproc) CPUs)"
echo "- kernel: $(uname -r)"
echo "- rustc: $(rustc --version)"
echo

rm -rf target/criterion
for bench in spsc_threads spsc_processes rtt mpmc; do
    cargo bench --bench "$bench" -- --warm-up-time 0.5 --measurement-time 1 --noplot >/dev/null 2>&1 ||
        { echo "cargo bench --bench $bench failed" >&2; exit 1; }
done

python3 - <<'PY'
import json, pathlib

# For each shmlane case, its baseline in the same group: (function, parameter or None for
# "the same parameter").
def baseline(group, function, param):
    if group.startswith("spsc_threads"):
        return "rtrb", None
    if group == "spsc_processes":
        return ("hand_ring", None) if function == "shmlane_chunks" else ("socketpair_stream", None)
    if group == "rtt":
        return ("floor_atomics" if "busy" in function else "socketpair"), None
    if group.startswith("mpmc/"):
        return "crossbeam_array_queue", "threads"
    return None, None

rows = {}
for est in pathlib.Path("target/criterion").glob("**/new/estimates.json"):
    meta = json.loads((est.parent / "benchmark.json").read_text())
    median = json.loads(est.read_text())["median"]["point_estimate"]
    key = (meta["group_id"], meta["function_id"], meta.get("value_str"))
    rows[key] = median

def fmt(ns):
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("us", 1e3)):
        if ns >= scale:
            return f"{ns / scale:.3g} {unit}"
    return f"{ns:.3g} ns"

print("| group | case | median | ratio to baseline |")
print("|---|---|---:|---|")
for (group, function, param), ns in sorted(rows.items(), key=lambda kv: (kv[0][0], kv[0][2] or "", kv[0][1])):
    case = function + (f" / {param}" if param else "")
    ratio = ""
    if function.startswith("shmlane"):
        base_fn, base_param = baseline(group, function, param)
        base = rows.get((group, base_fn, base_param if base_param is not None else param))
        if base:
            ratio = f"{base / ns:.2f}x vs {base_fn}"
    print(f"| {group} | {case} | {fmt(ns)} | {ratio} |")

# Across the process boundary: the same u64 stream between processes and between threads.
procs = rows.get(("spsc_processes", "shmlane", "8"))
threads = rows.get(("spsc_threads/u64/chase", "shmlane", None))
if procs and threads:
    print()
    print(f"shmlane u64 between processes vs between threads (chase): {threads / procs:.2f}x")
PY
