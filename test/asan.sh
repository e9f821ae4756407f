#!/usr/bin/env bash
# The addon's tests under AddressSanitizer + UndefinedBehaviorSanitizer (`npm run test:asan`; not part of
# `npm test`). Needs a running lab (it never starts or stops one): RBDBACKUP_LAB_DIR (default
# /tmp/rbdbackup-lab) must hold site-a's cluster.json, e.g. after `deploy/lab/lab.sh up site-a site-b`.
#   1. builds the addon with -fsanitize=address,undefined into agents/native/sanitize/build/ (the normal
#      build in agents/native/build/ is left alone) and the TypeScript (npm run build:ts);
#   2. runs test/integration/ceph/*.test.js with libasan preloaded (node itself is not instrumented, so the
#      ASan runtime must come first) and RBDBACKUP_NATIVE_PATH pointing at the sanitized addon;
#   3. fails if any sanitizer wrote a report, and prints the reports.
# Leak detection is off (detect_leaks=0): LeakSanitizer reports whatever is still allocated at exit, and
# that is mostly others' on purpose — librados keeps process-lifetime state (CephContext, its threads,
# caches) and Node never frees its heap at exit — so a report would be thousands of lines that are not
# ours. Our leaks are what leak.test.js measures (RSS over 8,000 open/read/close cycles) in the normal
# suite; here it runs with RBDBACKUP_LEAK_CYCLES (default 2000) for its churn, and RBDBACKUP_SANITIZER=asan
# tells it not to assert RSS (ASan's quarantine and shadow memory grow RSS by design).
# Environment: RBDBACKUP_LAB_DIR, RBDBACKUP_ASAN_FILES (test files, default every ceph integration test),
# RBDBACKUP_LEAK_CYCLES.
set -euo pipefail
cd "$(dirname "$0")/.."

export RBDBACKUP_LAB_DIR="${RBDBACKUP_LAB_DIR:-/tmp/rbdbackup-lab}"
if [ ! -f "$RBDBACKUP_LAB_DIR/site-a/cluster.json" ]; then
  echo "test:asan: no lab at $RBDBACKUP_LAB_DIR (start one with deploy/lab/lab.sh up site-a site-b, or set RBDBACKUP_LAB_DIR)" >&2
  exit 1
fi

# node-gyp is on PATH under `npm run` (npm's own copy, with npm's config such as nodedir).
# configure + build (not rebuild): make only recompiles what changed since the last sanitizer build.
node-gyp configure --directory agents/native/sanitize
node-gyp build --directory agents/native/sanitize
npm run build:ts --silent

addon="$PWD/agents/native/sanitize/build/Release/rbdbackup_native.node"
libasan="$(gcc -print-file-name=libasan.so)"
[ -f "$libasan" ] || { echo "test:asan: libasan not found (gcc -print-file-name=libasan.so gave $libasan)" >&2; exit 1; }
nm -D "$addon" | grep __asan_init >/dev/null || { echo "test:asan: $addon is not instrumented" >&2; exit 1; }
reports="$(mktemp -d /tmp/rbdbackup-asan-XXXXXX)"
trap 'rm -rf "$reports"' EXIT

if [ -n "${RBDBACKUP_ASAN_FILES:-}" ]; then
  read -r -a files <<<"$RBDBACKUP_ASAN_FILES"
else
  mapfile -t files < <(find dist/test/integration/ceph -name '*.test.js' | sort)
fi

status=0
LD_PRELOAD="$libasan" \
  ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:log_path=$reports/asan" \
  UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$reports/ubsan" \
  RBDBACKUP_NATIVE_PATH="$addon" \
  RBDBACKUP_LEAK_CYCLES="${RBDBACKUP_LEAK_CYCLES:-2000}" \
  RBDBACKUP_SANITIZER=asan \
  node --test --test-concurrency=1 --test-timeout=900000 "${files[@]}" || status=$?

if compgen -G "$reports/*" >/dev/null; then
  echo "test:asan: sanitizer reports:" >&2
  for f in "$reports"/*; do
    echo "== $f" >&2
    cat "$f" >&2
  done
  status=1
fi
[ "$status" -eq 0 ] && echo "test:asan: no sanitizer reports; tests passed"
exit "$status"
