#!/usr/bin/env bash
# Benchmarks (npm run bench): builds, makes sure the lab clusters are up (deploy/lab, default
# directory), compiles the C API baseline, and runs every benchmark under test/bench/:
#   addon-throughput  the addon vs rbd bench vs the C API (raw reads and writes)
#   backup-vs-cli     rbdbackup's agents vs rbd export-diff | rbd import-diff (full and incremental)
#   transport         the data plane without Ceph: grpc-js vs the agents' own HTTP/2 client and server vs a
#                     bare TLS socket, CPU per GiB on each side
#   clone-restore     CLONE restore of a 10 GiB thin volume (64 MiB written) through the API vs `rbd clone`:
#                     seconds to usable, side by side, and the ratio
#   suite             the performance suite: the scenarios of test/bench/scenarios/ (full, incremental, live
#                     writes, sparse, small, restore, latency, WAN as root, raw write) through the coordinator's
#                     API against the CLI pipe; table + JSON (also written to dist/bench-results.json)
#   policy-scale      1,000 volumes under policies, simulated agents (no Ceph): the coordinator's CPU per
#                     1,000 backups at 1,000/hour and compressed, RSS, API p50/p99 while it runs (~15 min;
#                     alone: npm run build:ts && node dist/test/bench/policy-scale.js [--minutes 4] [--volumes 1000])
# Not run here: transfer-probe (CPU and RSS of each agent and OSD during one transfer; the knob sweep), e.g.
#   node dist/test/bench/transfer-probe.js --mib 512 --runs 2 --limits '{"chunkSizeBytes":4194304}'

# Extra arguments go to each benchmark, e.g. `npm run bench -- --mib 512 --rounds 5`.
#
# `run.sh --readme [suite args]` (npm run bench:readme): prepares the same way, runs only the suite and
# rewrites the README's table from it; with `--from-json FILE` it builds and runs nothing and re-renders the
# table from an earlier run's JSON (e.g. `npm run bench:readme -- --from-json dist/bench-results.json`).
set -euo pipefail
cd "$(dirname "$0")/../.."
readme=false
if [ "${1:-}" = "--readme" ]; then
  readme=true
  shift
  if [[ " $* " == *" --from-json "* ]]; then exec node dist/test/bench/suite.js --readme README.md "$@"; fi
fi
deploy/lab/install-deps.sh
[ node_modules/.package-lock.json -nt package-lock.json ] || npm ci --no-audit --no-fund
npm run build >/dev/null
deploy/lab/lab.sh up --capacity 16G site-a site-b >/dev/null
# Memstore OSDs can crash trimming snapshots under load (test/run.sh says more): trimming is held off and
# the suite lets the OSDs trim only between scenarios, with no I/O running (test/bench/lab-trim.ts).
for c in site-a site-b; do
  timeout 60 ceph -c "${RBDBACKUP_LAB_DIR:-/tmp/rbdbackup-lab}/$c/ceph.conf" --connect-timeout 20 osd set nosnaptrim >/dev/null
done
if $readme; then exec node dist/test/bench/suite.js --json-out dist/bench-results.json --readme README.md "$@"; fi
gcc -O2 -Wall -o dist/test/bench/c-api-bench test/bench/c-api-bench.c -lrbd -lrados -lpthread
node dist/test/bench/addon-throughput.js "$@"
node dist/test/bench/backup-vs-cli.js "$@"
node dist/test/bench/transport.js "$@"
node dist/test/bench/clone-restore.js "$@"
node dist/test/bench/verify.js "$@"
node dist/test/bench/suite.js --json-out dist/bench-results.json "$@"
node dist/test/bench/policy-scale.js --json-out dist/policy-scale-results.json
