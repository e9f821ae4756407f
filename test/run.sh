#!/usr/bin/env bash
# The test command (`npm test`, called by .ci/run): does everything on a fresh Debian 12 machine.
#   1. installs Debian's Ceph packages when missing (deploy/lab/install-deps.sh)
#   2. installs npm packages (npm ci), builds the native addon and the TypeScript
#   3. lint + format check (Biome)
#   4. starts the lab clusters site-a, site-b (16 GiB of memstore accounting each) and site-small
#      (256 MiB, to fill) once for
#      the whole run, in their own directory
#   4b. starts a throwaway PostgreSQL on loopback (deploy/lab/postgres.sh; RBDBACKUP_TEST_PG_URL)
#   5. runs every test under dist/test (unit and integration, node:test), two files at a time except
#      five that run alone after them (see below), with throw-trace preloaded
#      (test/diagnostics/throw-trace.cc: the stack of a std::system_error thrown on a Ceph thread)
#   5b. after a failure, prints the output of the daemons the failed test files started, then (last,
#       so that the end of the output says it) the failed tests with their errors and each crash report
#       with its stack
#   6. fails if the tests left anything new in /tmp, an image, namespace or trash entry in the lab's
#      pools, or a daemon of ours running (every test removes what it creates)
#   7. stops the clusters (also on failure or Ctrl-C)
# Environment: RBDBACKUP_TEST_LAB_DIR (default /tmp/rbdbackup-test-lab), RBDBACKUP_TEST_FILES
# (restrict to some compiled test files, e.g. dist/test/unit), RBDBACKUP_TEST_TMP_IGNORE (an extended
# regex of more /tmp entry names the leftovers check ignores, e.g. ones other programs on the machine make),
# RBDBACKUP_TEST_CONCURRENCY (test files run at once, default 2; 1 runs them one by one).
set -euo pipefail
cd "$(dirname "$0")/.."

# + promtool and Prometheus for the observability tests, PostgreSQL for the catalog's second store and
# several coordinators, Cinder and gRPC for Python for the OpenStack driver's tests, systemd for
# systemd-analyze (the units in deploy/systemd are verified; nothing is started).
deploy/lab/install-deps.sh prometheus postgresql python3-cinder python3-grpcio python3-grpc-tools systemd
npm ci --no-audit --no-fund --loglevel=error
npm run build --silent
npx biome check .

export RBDBACKUP_LAB_DIR="${RBDBACKUP_TEST_LAB_DIR:-/tmp/rbdbackup-test-lab}"
pg_dir="$RBDBACKUP_LAB_DIR-pg"
deploy/lab/postgres.sh down "$pg_dir" # leftovers of an interrupted run
deploy/lab/lab.sh down
# (The run's own files in the lab directory go first, so that `lab.sh down` can remove the directory.)
trap 'rm -f "$RBDBACKUP_LAB_DIR/test-output.tap" "$RBDBACKUP_LAB_DIR/throw-trace.so"; deploy/lab/postgres.sh down "$pg_dir"; deploy/lab/lab.sh down' EXIT
started=$(date +%s)
# Memstore's capacity is only an accounting figure (RAM holds what is written), and its accounting
# drifts upward with snapshot trims, shrinks and rollbacks (measured: +8 MiB per shrink-after-snapshot):
# a generous figure keeps a long suite from seeing a spuriously full OSD.
deploy/lab/lab.sh up --capacity 16G site-a site-b
# Ceph 16's memstore OSD can segfault while trimming removed snapshots (MemStore::OmapIteratorImpl::value
# under PGSnapTrim: once in six suite runs, once in a benchmark). These clusters never need that space
# back during a run, so snapshot trimming is off on them (snapshot removal itself is unaffected).
for c in site-a site-b; do
  timeout 60 ceph -c "$RBDBACKUP_LAB_DIR/$c/ceph.conf" --connect-timeout 20 osd set nosnaptrim >/dev/null
done
# A small cluster whose pool a test fills on purpose.
deploy/lab/lab.sh up --capacity 256M --pools backups site-small
# One PostgreSQL (loopback, throwaway); each test that needs it makes and drops its own database.
RBDBACKUP_TEST_PG_URL="$(deploy/lab/postgres.sh up "$pg_dir" "${RBDBACKUP_TEST_PG_PORT:-55433}")"
export RBDBACKUP_TEST_PG_URL
echo "lab up in $(($(date +%s) - started)) s"

# Only *.test.js files (node --test given a directory would run every .js file in it).
mapfile -t files < <(find ${RBDBACKUP_TEST_FILES:-dist/test} -name '*.test.js' | sort)
[ ${#files[@]} -gt 0 ] || { echo "no test files found" >&2; exit 1; }

# Leftovers: the names in /tmp before the tests, to compare with after them. Not counted: the lab's own
# directory (removed by `lab.sh down`), what the system and node/npm keep there (compile caches,
# X11/ICE sockets, systemd's private dirs), and RBDBACKUP_TEST_TMP_IGNORE.
tmp_ignore="^($(basename "$RBDBACKUP_LAB_DIR")|$(basename "$RBDBACKUP_LAB_DIR")-pg|v8-compile-cache.*|node-compile-cache|npm-.*|\.npm|\..*-unix"
tmp_ignore+="|systemd-private-.*|snap-private-tmp|hsperfdata_.*${RBDBACKUP_TEST_TMP_IGNORE:+|$RBDBACKUP_TEST_TMP_IGNORE})\$"
tmp_entries() { find /tmp -mindepth 1 -maxdepth 1 -printf '%f\n' | grep -Ev "$tmp_ignore" | LC_ALL=C sort || true; }
tmp_before="$(tmp_entries)"
# And our daemons (agents, coordinators: node running this checkout's dist/ by absolute path).
our_daemons() { pgrep -f -- "$PWD/dist/" | LC_ALL=C sort || true; }
daemons_before="$(our_daemons)"

# A failed test file's daemons leave their output here (src/lab/failure-logs.ts); printed below.
export RBDBACKUP_FAILURE_LOG_DIR="$RBDBACKUP_LAB_DIR/failed-test-logs"
rm -rf "$RBDBACKUP_FAILURE_LOG_DIR"

# throw-trace (test/diagnostics/throw-trace.cc), preloaded into the tests and every daemon they start:
# a std::system_error thrown on one of Ceph's own threads gets its stack printed at the throw (the rare
# agent abort in librados' io_context showed only the thread's entry). Without a compiler: run without it.
trace="$RBDBACKUP_LAB_DIR/throw-trace.so"
preload=()
if g++ -O1 -shared -fPIC -o "$trace" test/diagnostics/throw-trace.cc -ldl; then
  preload=(env "LD_PRELOAD=$trace${LD_PRELOAD:+:$LD_PRELOAD}")
else
  echo "throw-trace not built: the tests run without it" >&2
fi

# Two files at a time (RBDBACKUP_TEST_CONCURRENCY): every test makes its own images (uniqueName), daemons
# (ports picked by the kernel), scratch directories and PostgreSQL databases, and most of a file's time is
# waiting (leases, restarts, OSD round trips), so two share the machine's 2 cores well. These run alone,
# after the others: engine/failures fills site-small's pool (which authz-replay uses) and asserts a bounded
# time for it; ha/two-coordinators asserts a takeover within 10 s; policy/runner asserts a bounded lag;
# coordinator/bad-requests and engine/authz assert that a refused request left every image of whole pools
# as it was (another file's images come and go there).
exclusive='/integration/(engine/failures|ha/two-coordinators|policy/runner|coordinator/bad-requests|engine/authz)\.test\.js$'
shared=()
alone=()
for f in "${files[@]}"; do
  if [[ $f =~ $exclusive ]]; then alone+=("$f"); else shared+=("$f"); fi
done

# A file whose after-hook failed before it stopped its daemons kept its process alive on their handles,
# and node's runner waited for it without end (a failing failback test hung a run past 10 minutes).
# --test-force-exit (Node >= 20.14) ends each file's process once its tests and hooks are done; a
# daemon it left attached is named and fails that file (src/lab/scratch.ts), a detached one is named as
# a stray at the end and fails the run.
force_exit=()
if node --help | grep -q -- --test-force-exit; then force_exit=(--test-force-exit); fi
# A file that leaves a child it started running at its end fails (src/lab/scratch.ts): with force-exit,
# those children are killed at exit instead of holding the file open, and must not pass unseen.
export RBDBACKUP_TEST_STRAYS_FAIL=1

tap="$RBDBACKUP_LAB_DIR/test-output.tap"
: >"$tap"
status=0
run_files() { # CONCURRENCY FILE...
  local concurrency=$1 rc
  shift
  [ $# -gt 0 ] || return 0
  set +e
  "${preload[@]}" node --test "${force_exit[@]}" --test-concurrency="$concurrency" --test-timeout=900000 "$@" 2>&1 | tee -a "$tap"
  rc=${PIPESTATUS[0]}
  set -e
  [ "$rc" -eq 0 ] || status=$rc
}
# Ctrl-C: node's test runner exits 1 on SIGINT, which would start the next phase; stop here (the EXIT
# trap above stops the clusters).
trap 'exit 130' INT
run_files "${RBDBACKUP_TEST_CONCURRENCY:-2}" "${shared[@]}"
run_files 1 "${alone[@]}"

# A test skipped for want of what this command installs (PostgreSQL, Prometheus, systemd) is a failure
# here: a broken install must not pass as green (skipping stays right for a hand-run file without them).
if grep -E '# SKIP .*(RBDBACKUP_TEST_PG_URL is not set|promtool not installed|prometheus not installed|systemd-analyze not installed)' "$tap" >&2; then
  echo "===== tests above were skipped for want of what npm test installs: counted as failed =====" >&2
  [ "$status" -ne 0 ] || status=1
fi

if [ "$status" -ne 0 ] && [ -d "$RBDBACKUP_FAILURE_LOG_DIR" ]; then
  for f in "$RBDBACKUP_FAILURE_LOG_DIR"/*.log; do
    [ -e "$f" ] || continue
    echo "===== daemon output of a failed test file: $(basename "$f") (last 64 KiB) =====" >&2
    tail -c 65536 "$f" >&2
  done
fi

# Last, where a reader of only the end of the output sees it: which tests failed and why, and any
# daemon that crashed (the lines above scroll out of view).
if [ "$status" -ne 0 ]; then
  echo "===== failed tests (node --test exit $status) =====" >&2
  # The lines under error:, expected: and actual: too (an assertion's message and its values are YAML
  # blocks there), a few of each.
  awk '
    function indent(l) { match(l, /^ */); return RLENGTH }
    /^ *not ok [0-9]+ - / { print; n = 0; inblock = 1; under = 0; next }
    inblock && /^ *(ok|not ok|# Subtest:) / { inblock = 0; under = 0 }
    inblock && under && indent($0) > keyindent { if (shown++ < 12) print; next }
    { under = 0 }
    inblock && /^ *(location|failureType|error|code|expected|actual):/ && n < 8 {
      print; n++
      if ($0 ~ /^ *(error|expected|actual):/) { under = 1; shown = 0; keyindent = indent($0) }
    }
  ' "$tap" >&2 || true
  # Crash reports, each header with the stack under it (the frames say where; the header alone does
  # not): the daemons' first, then the test processes'; throw-trace's last (the thrower's own frames, the
  # most telling when only the end of the output is shown).
  crash_reports() { # PATTERN FILE...
    local pattern=$1
    shift
    awk -v pattern="$pattern" '
      FNR == 1 { reports = 0; frames = 0 }
      /^ *(# Subtest:|ok [0-9]+ - |not ok [0-9]+ - )/ { frames = 0; next } # a test title, not a crash
      $0 ~ pattern {
        if (++reports > 3) nextfile
        print FILENAME ": " $0; frames = 1; next
      }
      frames && /\[0x[0-9a-f]+\]/ && frames++ <= 20 { print; next }
      { frames = 0 }
    ' "$@" >&2 || true
  }
  fatal='rbdbackup native: (std::terminate|SIG)|terminate called|Segmentation fault|uncaught exception'
  shopt -s nullglob
  logs=("$RBDBACKUP_FAILURE_LOG_DIR"/*.log)
  for pattern in "$fatal" 'rbdbackup throw-trace'; do
    [ ${#logs[@]} -eq 0 ] || crash_reports "$pattern" "${logs[@]}"
    crash_reports "$pattern" "$tap"
  done
fi

leftovers="$(LC_ALL=C comm -13 <(echo "$tmp_before") <(tmp_entries))"
if [ -n "$leftovers" ]; then
  echo "the tests left these in /tmp (every test removes what it creates):" >&2
  while read -r e; do ls -ld --time-style=+%T "/tmp/$e" >&2 || true; done <<<"$leftovers"
  [ "$status" -ne 0 ] || status=1
fi
# And the lab's pools, which were empty when the clusters came up for this run: every image, namespace
# and trash entry left in them after the tests is a test that did not remove what it made. A listing
# that fails is said too (a check that could not look must not pass); each call is bounded (timeout, and
# an OSD op timeout so that a stuck OSD costs seconds, not the 60 s per call).
pool_leftovers() {
  local conf c pool ns out
  local rbdc=(timeout 60 rbd --rados-osd-op-timeout 20 --rados-mon-op-timeout 20)
  for conf in "$RBDBACKUP_LAB_DIR"/*/ceph.conf; do
    [ -e "$conf" ] || continue
    c="$(basename "$(dirname "$conf")")"
    if ! out="$(timeout 60 ceph -c "$conf" --connect-timeout 20 osd pool ls 2>&1)"; then
      echo "$c: cannot list its pools: ${out##*$'\n'}"
      continue
    fi
    for pool in $out; do
      [ "$pool" = .mgr ] && continue
      local nss
      if ! nss="$("${rbdc[@]}" -c "$conf" namespace ls -p "$pool" --format json 2>&1)"; then
        echo "$c/$pool: cannot list its namespaces: ${nss##*$'\n'}"
        continue
      fi
      for ns in "" $(grep -o '"name":"[^"]*"' <<<"$nss" | cut -d'"' -f4); do
        local where="$c/$pool${ns:+/$ns}" list
        [ -n "$ns" ] && echo "$where (namespace)"
        if list="$("${rbdc[@]}" -c "$conf" ls -p "$pool" --namespace "$ns" 2>&1)"; then
          [ -z "$list" ] || sed "s|^|$where/|" <<<"$list"
        else
          echo "$where: cannot list its images: ${list##*$'\n'}"
        fi
        if list="$("${rbdc[@]}" -c "$conf" trash ls -p "$pool" --namespace "$ns" 2>&1)"; then
          [ -z "$list" ] || sed "s|^|$where (trash) |" <<<"$list"
        else
          echo "$where: cannot list its trash: ${list##*$'\n'}"
        fi
      done
    done
  done
  return 0
}
left_in_pools="$(pool_leftovers)"
if [ -n "$left_in_pools" ]; then
  echo "the tests left these in the lab's pools (every test removes what it creates):" >&2
  echo "$left_in_pools" | head -50 >&2
  [ "$status" -ne 0 ] || status=1
fi
stray="$(LC_ALL=C comm -13 <(echo "$daemons_before") <(our_daemons))"
if [ -n "$stray" ]; then
  echo "the tests left these processes running (killed now):" >&2
  ps -o pid,etime,args -p "$(echo $stray | tr ' ' ,)" >&2 || true
  kill -KILL $stray 2>/dev/null || true
  [ "$status" -ne 0 ] || status=1
fi
exit "$status"
