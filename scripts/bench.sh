#!/usr/bin/env bash
# Regenerates every number and plot of docs/PERFORMANCE.md in one run:
# builds Release, runs `cbloss-bench kernels`, `service` and `transports` and
# bench/torch_baseline.py, and writes docs/perf/{machine.txt, kernels.json,
# torch.json, service.json, transports.json, tables.md, kernels.png, latency.png}.
#
#   scripts/bench.sh            (BUILD_DIR=... to use another build tree)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build}
out=$root/docs/perf
python=/usr/bin/python3  # Debian's, with torch, numpy and matplotlib

cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" --target cbloss-bench cbloss-server
mkdir -p "$out"
{
  echo "date: $(date -u +%FT%TZ)"
  echo "commit: $(git -C "$root" rev-parse --short HEAD)"
  lscpu | grep -E '^(Model name|CPU\(s\)|Thread|Core|Socket|L1d|L2|L3)' || true
  grep -m1 MemTotal /proc/meminfo
  echo "kernel: $(uname -r)"
  echo "compiler: $(c++ --version | head -1)"
  echo "torch: $($python -c 'import torch; print(torch.__version__)')"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} > "$out/machine.txt"
"$build/bin/cbloss-bench" kernels --json > "$out/kernels.json"
$python "$root/bench/torch_baseline.py" --json --threads 1,2 > "$out/torch.json"
"$build/bin/cbloss-bench" service --json > "$out/service.json"
"$build/bin/cbloss-bench" transports --json > "$out/transports.json"
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$out/machine.txt"
$python "$root/bench/report.py" "$out" > "$out/tables.md"
cat "$out/tables.md"
