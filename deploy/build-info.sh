#!/usr/bin/env bash
# Writes what a build says of itself (src/common/version.ts reads it): the commit and its date, as
#   {"commit":"<12 hex digits>[-dirty]","date":"YYYY-MM-DD"}
# "dirty" when the checkout had changes the commit does not hold; "unknown" outside a git checkout (the
# date is then the build's). Every part reports "<package version>+<date>.<commit>": ListAgents,
# GetCoordinatorStatus, rbdbackup_build_info, the daemons' start log — how an operator tells an old
# build from a new one during an upgrade (README "Upgrading").
#   build-info.sh OUT
set -euo pipefail
out="$1"
cd "$(dirname "$0")/.."
if commit=$(git rev-parse --short=12 HEAD 2>/dev/null); then
  date=$(git log -1 --format=%cs HEAD)
  git diff --quiet HEAD -- 2>/dev/null || commit="$commit-dirty"
else
  commit=unknown
  date=$(date -u +%F)
fi
printf '{"commit":"%s","date":"%s"}\n' "$commit" "$date" > "$out"
