#!/usr/bin/env bash
# kipam vs host-local, as a container runtime calls them: one process exec per CNI call.
#
# What it measures: ADD and DEL latency (p50, p99) of the `kipam` CNI IPAM plugin and of
# host-local (the real binary from Debian's containernetworking-plugins, /usr/lib/cni), in
# the same run with the same range (10.123.0.0/16), with 0, 1,000 and 60,000 addresses
# already allocated, sequentially and from 16 parallel callers; the host-local/kipam
# ratios; a bare exec of /bin/true as the floor; and whether the targets of issue 3 are
# met (kipam ADD p50 >= 3x faster than host-local at 0 allocated, >= 10x at 1,000, and
# kipam at 60,000 within 1.5x of itself at 0). Every call is a real exec with the CNI
# environment and the network config (cniVersion 1.0.0) on stdin; each plugin and
# scenario starts from a fresh data directory, pre-filled without execs. kipam keeps its
# default config (30 s quarantine, SQLite synchronous=FULL: every ADD is fsynced before
# it answers; host-local does not fsync). No interface is created and no packet is sent;
# the range is checked against `ip route` first. host-local at 60,000 allocated takes
# ~0.6 s per call, so it gets fewer calls there (see --large-* below).
#
# How to run (root not required, but the data directories must be writable):
#   bench/cni-vs-host-local.sh                 # defaults: 200 sequential calls, 16 x 25 parallel
#   bench/cni-vs-host-local.sh 500             # 500 sequential calls per scenario
#   bench/cni-vs-host-local.sh 200 --allocated 0,1000 --work-dir /var/lib/kipam-bench
# The first argument, if a number, is the sequential iteration count; everything else is
# passed to the harness (crates/kipam-testkit/src/bin/kipam-cni-bench; `--help` lists
# options). Takes about 5 minutes. Results go to stdout as Markdown (copy them into
# docs/BENCHMARKS.md with the machine they ran on); progress goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/kipam-target}"

args=()
if [ $# -gt 0 ] && [[ "$1" =~ ^[0-9]+$ ]]; then
  args+=(--iterations "$1")
  shift
fi

if [ ! -x /usr/lib/cni/host-local ] && ! printf '%s\n' "$@" | grep -q -- '--host-local'; then
  echo "host-local not found: apt-get install containernetworking-plugins (or pass --host-local PATH)" >&2
  exit 1
fi

cargo build --release -p kipam-cni -p kipam-testkit >&2

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), \
$(free -g | awk '/^Mem:/ {print $2 " GiB RAM"}'), $(. /etc/os-release && echo "$PRETTY_NAME"), \
kernel $(uname -r); $(date -u +%Y-%m-%dT%H:%MZ)"
# Other work on the machine skews exec latencies: say how busy it was.
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo

"$CARGO_TARGET_DIR/release/kipam-cni-bench" \
  --kipam "$CARGO_TARGET_DIR/release/kipam" \
  "${args[@]}" "$@"
echo
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
