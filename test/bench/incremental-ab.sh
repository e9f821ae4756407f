#!/usr/bin/env bash
# A/B of the small incremental (issue 16) between two builds' daemons, alternating A,B,A,B…: each run
# gets a fresh lab (an incremental's copy-on-write clones stay in the destination's memstore: a 1 GiB
# image's runs fill a 16G lab after two or three), then runs this checkout's
# incremental-latency bench with the agents and coordinator of one build (RBDBACKUP_DAEMONS_DIST).
#
#   RBDBACKUP_LAB_DIR=/tmp/lab-x test/bench/incremental-ab.sh /work/main/dist dist [pairs=2] [runs=3]
#
# One build with two agent settings: give the same dist twice and LIMITS_A / LIMITS_B, e.g.
#   LIMITS_A='{}' LIMITS_B='{"writesInFlight":16}' test/bench/incremental-ab.sh dist dist
# One build with two node flag sets for the agents: NODE_ARGS_A / NODE_ARGS_B (RBDBACKUP_AGENT_NODE_ARGS),
#   e.g. NODE_ARGS_B=--initial-old-space-size=32 test/bench/incremental-ab.sh dist dist
# OSD latency: OSD_DELAY_S=0.004 holds each client message at the OSDs of both clusters 0–4 ms
# (ms_inject_delay_*, as test/bench/scenarios/latency.ts), set on each fresh lab before the bench's
# agents connect. MIB=256: a smaller image (default 1024).
# Prints per run: the build, the machine load before it, and the bench's row (ours, the CLI, where the ms went).
set -euo pipefail
cd "$(dirname "$0")/../.."
a="$(realpath "$1")" b="$(realpath "$2")" pairs="${3:-2}" runs="${4:-3}"
: "${RBDBACKUP_LAB_DIR:?set RBDBACKUP_LAB_DIR to a lab directory of your own}"
trap 'deploy/lab/lab.sh down >/dev/null 2>&1 || true' EXIT
for ((i = 0; i < pairs; i++)); do
  for side in A B; do
    if [[ $side == A ]]; then build="$a" limits="${LIMITS_A:-{\}}" node_args="${NODE_ARGS_A:-}"; else
      build="$b" limits="${LIMITS_B:-{\}}" node_args="${NODE_ARGS_B:-}"
    fi
    deploy/lab/lab.sh down >/dev/null 2>&1 || true
    deploy/lab/lab.sh up --capacity 16G site-a site-b >/dev/null
    for c in site-a site-b; do
      timeout 60 ceph -c "$RBDBACKUP_LAB_DIR/$c/ceph.conf" --connect-timeout 20 osd set nosnaptrim >/dev/null 2>&1
      if [[ -n ${OSD_DELAY_S:-} ]]; then
        for kv in "ms_inject_delay_type client" "ms_inject_delay_probability 1" "ms_inject_delay_max $OSD_DELAY_S"; do
          # shellcheck disable=SC2086 # key and value
          timeout 60 ceph -c "$RBDBACKUP_LAB_DIR/$c/ceph.conf" --connect-timeout 20 config set osd $kv >/dev/null
        done
      fi
    done
    echo "== pair $((i + 1)) $side build $build limits $limits${node_args:+ agent node args $node_args}${OSD_DELAY_S:+ osd delay ≤ $OSD_DELAY_S s} · load before: $(cut -d' ' -f1-3 /proc/loadavg)"
    RBDBACKUP_AGENT_NODE_ARGS="$node_args" RBDBACKUP_DAEMONS_DIST="$build" timeout 600 node dist/test/bench/incremental-latency.js --mib "${MIB:-1024}" \
      --runs "$runs" --only incremental --incr-sizes "${MIB:-1024}" --limits "$limits" 2>&1 | grep -v '^JSON' || echo "(run failed)"
    echo "   load after: $(cut -d' ' -f1-3 /proc/loadavg)"
  done
done
