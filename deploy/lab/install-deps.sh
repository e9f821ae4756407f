#!/usr/bin/env bash
# Idempotently installs what rbdbackup needs from Debian 12's packages: the Ceph daemons for the lab,
# the Ceph CLI, the librados/librbd headers the native addon builds against (and the libzstd/liblz4
# headers for its wire-compression codecs), protoc (the .proto contracts are compiled to TypeScript at
# build time) and openssl (the lab's TLS material).
# Skips apt entirely when everything is already present.
set -euo pipefail

packages=(ceph-mon ceph-osd ceph-common librbd-dev librados-dev libzstd-dev liblz4-dev protobuf-compiler libprotobuf-dev openssl)
# Extra packages may be asked for by the caller (e.g. prometheus for the metrics tests).
packages+=("$@")

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
echo "install-deps: installing ${missing[*]} (Debian packages; about a minute)" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
# Packages with daemons (prometheus) must not start them: the lab runs its own, on loopback, when asked.
# policy-rc.d is Debian's switch for that; ours is removed again afterwards.
policy=/usr/sbin/policy-rc.d
own_policy=""
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null && $sudo chmod 755 "$policy" && own_policy=1
fi
trap '[ -z "$own_policy" ] || $sudo rm -f "$policy"' EXIT
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done" >&2
