#!/usr/bin/env bash
# The README's main job (`npm run demo`): installs what is missing, builds, starts the lab clusters
# site-a and site-b (kept running afterwards; stop them with `npm run lab -- down`), runs the demo. Its
# daemons use fixed loopback ports (127.0.0.1:7300, 9730, 7400, 7401, 7410, 7411; see src/demo/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/lab/install-deps.sh
[ node_modules/.package-lock.json -nt package-lock.json ] || npm ci --no-audit --no-fund --loglevel=error
log="$(mktemp -t rbdbackup-build.XXXXXX)"
trap 'rm -f "$log"' EXIT # printed below if the build fails
echo "building"
npm run build --silent >"$log" 2>&1 || { cat "$log"; echo "build failed" >&2; exit 1; }
deploy/lab/lab.sh up --capacity 4G site-a site-b >/dev/null
node dist/src/demo/main.js "$@"
