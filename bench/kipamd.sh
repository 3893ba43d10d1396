#!/usr/bin/env bash
# kipamd under concurrent load: durable allocations per second, latency, memory at 1M
# allocations, restart time.
#
# What it measures (issue 4, "Benchmark"): N concurrent clients (default 1, 16, 64) over
# TCP on 127.0.0.1 and over the unix socket, each allocating for a fixed time and then
# releasing what it got: throughput and p50/p99 latency, with kipamd's mean group-commit
# batch, commit time and CPU time per allocation; then kipamd's RSS holding 1,000,000
# allocations (filled through the API by 64 clients) and the time from a restart to
# /readyz 200 on that store. Every answer is durable: kipamd replies after the WAL holding
# the request's group commit is fsynced (docs/storage.md, "Durability"). Prints the tables and
# whether each target is met.
#
# How to run (root not required; the work directory must be on the disk kipamd would use):
#   bench/kipamd.sh                                  # all of it, about 3 minutes
#   bench/kipamd.sh --clients 64 --fill 0            # throughput at 64 clients only
#   bench/kipamd.sh --work-dir /var/lib/kipamd-bench
# Options are the harness's (crates/kipam-testkit/src/bin/kipamd-bench; `--help`).
# Results go to stdout as Markdown (copy them into docs/BENCHMARKS.md with the machine
# they ran on); progress goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/kipam-target}"

cargo build --release -p kipam-server -p kipam-testkit --bin kipamd --bin kipamd-bench >&2

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), \
$(free -g | awk '/^Mem:/ {print $2 " GiB RAM"}'), $(. /etc/os-release && echo "$PRETTY_NAME"), \
kernel $(uname -r); $(date -u +%Y-%m-%dT%H:%MZ)"
# Other work on the machine skews the numbers: say how busy it was.
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo

"$CARGO_TARGET_DIR/release/kipamd-bench" --kipamd "$CARGO_TARGET_DIR/release/kipamd" "$@"

echo
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
