#!/usr/bin/env bash
# Runs a short version of every criterion group and prints one markdown table: each case's
# median time, and each shmlane case as a ratio to its baseline measured in the same run
# (baseline time / shmlane time: above 1 means shmlane is faster). Prints the machine first,
# and after the table the interleaved A/B of the per-item, chunked, MPMC and busy-polling
# round-trip cases (benches/interleaved.rs).
#
# With RUNS=n (default 1) it runs every criterion group n times and prints, for each case,
# the median over the runs, and for each ratio the median of the per-run ratios with their
# range: on a shared machine one run can land in a lucky or an unlucky regime.
#
#   scripts/bench-report.sh                 # ~5 minutes on 2 cores
#   RUNS=3 scripts/bench-report.sh          # ~15 minutes
#   SHMLANE_PIN=0 scripts/bench-report.sh   # without CPU pinning
#   SHMLANE_BENCH_GRID=8 scripts/bench-report.sh   # also the MPMC scaling grid (16+ CPUs)
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${RUNS:-1}"

echo "## Machine"
echo
echo "- CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//') ($(nproc) CPUs)"
echo "- kernel: $(uname -r)"
echo "- rustc: $(rustc --version)"
echo "- runs: $runs"
echo

results="$(mktemp -d)"
trap 'rm -rf "$results"' EXIT
for run in $(seq 1 "$runs"); do
    rm -rf target/criterion
    for bench in spsc_threads spsc_processes rtt mpmc; do
        cargo bench --bench "$bench" -- --warm-up-time 0.5 --measurement-time 1 --noplot >/dev/null 2>&1 ||
            { echo "cargo bench --bench $bench failed" >&2; exit 1; }
    done
    mv target/criterion "$results/run$run"
done
# The per-item, chunked, MPMC and busy-polling round-trip cases again, shmlane and its
# baseline taking turns trial by trial, in rounds of fresh processes (see
# benches/interleaved.rs): a change in the machine's speed hits both sides of each ratio,
# and no one process's draw of memory decides it.
cargo bench --bench interleaved >"$results/interleaved.md" 2>/dev/null ||
    { echo "cargo bench --bench interleaved failed" >&2; exit 1; }

RESULTS="$results" python3 - <<'PY'
import json, os, pathlib, statistics

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

def read_run(path):
    rows = {}
    for est in path.glob("**/new/estimates.json"):
        meta = json.loads((est.parent / "benchmark.json").read_text())
        median = json.loads(est.read_text())["median"]["point_estimate"]
        rows[(meta["group_id"], meta["function_id"], meta.get("value_str"))] = median
    return rows

runs = [read_run(p) for p in sorted(pathlib.Path(os.environ["RESULTS"]).glob("run*"))]

def fmt(ns):
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("us", 1e3)):
        if ns >= scale:
            return f"{ns / scale:.3g} {unit}"
    return f"{ns:.3g} ns"

def spread(ratios):
    """The median ratio, and its range when there is more than one run."""
    mid = f"{statistics.median(ratios):.2f}x"
    return mid if len(ratios) == 1 else f"{mid} ({min(ratios):.2f}-{max(ratios):.2f})"

# The MPMC scaling grid (SHMLANE_BENCH_GRID) gets its own table, after the main one.
grids = [{k: v for k, v in r.items() if k[0].startswith("mpmc_grid/")} for r in runs]
runs = [{k: v for k, v in r.items() if not k[0].startswith("mpmc_grid/")} for r in runs]

print("| group | case | median | ratio to baseline |")
print("|---|---|---:|---|")
keys = sorted(set().union(*runs), key=lambda k: (k[0], k[2] or "", k[1]))
for group, function, param in keys:
    times = [r[(group, function, param)] for r in runs if (group, function, param) in r]
    case = function + (f" / {param}" if param else "")
    ratio = ""
    if function.startswith("shmlane"):
        base_fn, base_param = baseline(group, function, param)
        base_key = (group, base_fn, base_param if base_param is not None else param)
        ratios = [r[base_key] / r[(group, function, param)]
                  for r in runs if base_key in r and (group, function, param) in r]
        if ratios:
            ratio = f"{spread(ratios)} vs {base_fn}"
    print(f"| {group} | {case} | {fmt(statistics.median(times))} | {ratio} |")

# Across the process boundary: the same u64 stream between processes and between threads.
procs_key, threads_key = ("spsc_processes", "shmlane", "8"), ("spsc_threads/u64/chase", "shmlane", None)
ratios = [r[threads_key] / r[procs_key] for r in runs if procs_key in r and threads_key in r]
if ratios:
    print()
    print(f"shmlane u64 between processes vs between threads (chase): {spread(ratios)}")

print()
print("Interleaved A/B (`cargo bench --bench interleaved`, 24 rounds of 7 pairs, each round a")
print("fresh process): median rates in M items/s (for rtt, M round trips/s), the median of all")
print("per-pair ratios with their quartiles, and the quartiles of the rounds' medians")
print()
print("".join(l for l in open(os.path.join(os.environ["RESULTS"], "interleaved.md")) if l.startswith("|")), end="")

shapes = sorted({tuple(int(x) for x in g.split("/")[1][:-1].split("p")) for r in grids for g, _, _ in r})
if shapes:
    producers, consumers = max(p for p, _ in shapes), max(c for _, c in shapes)
    print()
    print("MPMC scaling, threads backing off after a miss: shmlane million items/s: its ratio")
    print("to ArrayQueue in the same run")
    print()
    print("| producers \\ consumers | " + " | ".join(str(c) for c in range(1, consumers + 1)) + " |")
    print("|---" * (consumers + 1) + "|")
    for p in range(1, producers + 1):
        cells = []
        for c in range(1, consumers + 1):
            group = f"mpmc_grid/{p}p{c}c"
            mine = [r[(group, "shmlane", "threads")] for r in grids if (group, "shmlane", "threads") in r]
            ratios = [r[(group, "crossbeam_array_queue", "threads")] / r[(group, "shmlane", "threads")]
                      for r in grids if (group, "shmlane", "threads") in r
                      and (group, "crossbeam_array_queue", "threads") in r]
            cells.append(f"{1e3 / statistics.median(mine):.0f}: {spread(ratios)}" if mine and ratios else "")
        print(f"| {p} | " + " | ".join(cells) + " |")
PY
