#!/usr/bin/env bash
# Generates the TLS material rbdbackup's parts use for mutual TLS, with openssl:
#   gen-certs.sh OUTDIR NAME=IDENTITY...
# OUTDIR/ca.pem + ca.key (a new CA, created once and reused), and for every NAME a certificate
# OUTDIR/NAME.pem + NAME.key signed by it, valid for both server and client use, for the names
# NAME and localhost and the addresses 127.0.0.1 and ::1 (set RBDBACKUP_TLS_SANS to add more, e.g.
# "DNS:backup.example.org,IP:10.0.0.5"). An API client's (rbdbackup://client/...) is for client use
# only and names no host: only its identity. Keys are EC P-256; certificates last 825 days.
# IDENTITY says who the holder is and what it may do (a subjectAltName URI; src/common/identity.ts):
#   rbdbackup://coordinator/<id>                    the coordinator
#   rbdbackup://agent/<cluster>/<agent-id>          an agent of one cluster (its config's agentId)
#   rbdbackup://client/<admin|operator|reader>/<name>   an API client with that role
# e.g. gen-certs.sh /etc/rbdbackup/tls coordinator=rbdbackup://coordinator/main \
#        agent-site-a=rbdbackup://agent/site-a/agent-site-a client-ops=rbdbackup://client/operator/ops
# A coordinator's certificate also names the host coordinator.rbdbackup.invalid (a reserved name that
# never resolves): a client that can check only host names (grpcio: the Cinder driver) checks that one
# and so accepts only a coordinator — every certificate here is valid for localhost and 127.0.0.1, an
# agent's too. No other certificate may name it (RBDBACKUP_TLS_SANS with it is refused for them).
# A NAME without =IDENTITY gets none: every service but health refuses it. An existing NAME.pem is kept
# when it already names IDENTITY, and re-issued otherwise (rotation: remove NAME.pem, run again); an API
# client's issued before client certificates became client-only is re-issued too.
# Keys are readable by their owner only; with RBDBACKUP_TLS_GROUP=GROUP every key named in that run
# (NAME.key) and OUTDIR belong to GROUP with group read (0640, 0750) while ca.key stays owner-only (0600):
# for a directory that serves one daemon's user (e.g. RBDBACKUP_TLS_GROUP=rbdbackup-agent for the agents'
# keys; a later run without it on that directory keeps its group). Never give one group both a
# coordinator's and an agent's key: the units run as two users so that neither reads the other's. Copy to
# other hosts only NAME.pem, NAME.key and ca.pem — ca.key stays where certificates are issued (whoever
# holds it can make any identity); the README's Deploying installs each key owned by its daemon's user.
# Runs on one OUTDIR take turns (OUTDIR/.lock, flock, at most 120 s of waiting).
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 OUTDIR NAME=IDENTITY..." >&2; exit 2; }
out="$1"; shift
# The host name only a coordinator's certificate names (src/common/identity.ts COORDINATOR_DNS_NAME).
COORDINATOR_DNS=coordinator.rbdbackup.invalid
# A new OUTDIR starts private (its parents, if made, get the usual mode); its mode and group are settled
# below, under the lock.
mkdir -p -m 0700 -- "$out"
# Two processes sharing OUTDIR (test files run side by side) must not both create a CA, nor both decide
# the directory's group.
exec 9>"$out/.lock"
flock -w 120 9 || { echo "gen-certs: $out is locked by another run for over 120 s" >&2; exit 1; }
group="${RBDBACKUP_TLS_GROUP:-}"
# Run again without it on a directory made with it (group-readable): the same group, so that a key
# issued now stays readable by the daemons.
if [ -z "$group" ] && [ -n "$(find "$out" -maxdepth 0 -perm -g=r)" ]; then
  group="$(stat -c %G "$out")"
fi
if [ -n "$group" ] && ! getent group "$group" >/dev/null; then
  echo "RBDBACKUP_TLS_GROUP: no group $group" >&2
  exit 2
fi
if [ -n "$group" ]; then
  chgrp "$group" "$out"
  chmod 750 "$out"
else
  chmod 700 "$out"
fi
if [ ! -f "$out/ca.pem" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
    -subj "/CN=rbdbackup CA $(date +%s)" -keyout "$out/ca.key" -out "$out/ca.pem" 2>/dev/null
  chmod 600 "$out/ca.key"
fi
for spec in "$@"; do
  name="${spec%%=*}"
  identity=""
  [ "$name" != "$spec" ] && identity="${spec#*=}"
  [[ "$name" =~ ^[A-Za-z0-9._-]+$ ]] || { echo "bad name $name" >&2; exit 2; }
  if [ -n "$identity" ]; then
    [[ "$identity" =~ ^rbdbackup://(coordinator/[A-Za-z0-9._-]+|agent/[A-Za-z0-9._-]+/[A-Za-z0-9._-]+|client/(admin|operator|reader)/[A-Za-z0-9._-]+)$ ]] ||
      { echo "bad identity $identity for $name (see the top of $0)" >&2; exit 2; }
  fi
  coordinator_dns=""
  [[ "$identity" == rbdbackup://coordinator/* ]] && coordinator_dns="DNS:$COORDINATOR_DNS,"
  # Host names match without regard to case, and a wildcard (*.rbdbackup.invalid) would match too: any
  # name under rbdbackup.invalid, in the SANs or as NAME (it becomes a DNS name), is a coordinator's only.
  extra_sans="${RBDBACKUP_TLS_SANS:-}"
  if [ -z "$coordinator_dns" ] && [[ "${extra_sans,,} ${name,,}" == *"${COORDINATOR_DNS#coordinator.}"* ]]; then
    echo "$name: names under ${COORDINATOR_DNS#coordinator.} (in RBDBACKUP_TLS_SANS or as NAME) are for a coordinator's certificate only ($COORDINATOR_DNS)" >&2
    exit 2
  fi
  if [ -f "$out/$name.pem" ]; then
    sans_now=$(openssl x509 -in "$out/$name.pem" -noout -ext subjectAltName 2>/dev/null || true)
    # A coordinator's issued before it named the reserved host: re-issued.
    if { [ -z "$identity" ] || grep -qF "URI:$identity" <<<"$sans_now"; } &&
      { [ -z "$coordinator_dns" ] || grep -qF "DNS:$COORDINATOR_DNS" <<<"$sans_now"; }; then
      # An API client's certificate issued before it became client-only (serverAuth, host names): re-issued.
      if ! [[ "$identity" == rbdbackup://client/* ]] ||
        ! openssl x509 -in "$out/$name.pem" -noout -ext extendedKeyUsage 2>/dev/null | grep -q "Server Authentication"; then
        continue
      fi
    fi
  fi
  if [[ "$identity" == rbdbackup://client/* ]]; then
    # An API client never serves: client authentication only, and no host names — a client's
    # certificate cannot pose as a coordinator or an agent to anyone checking host names alone.
    sans="URI:$identity"
    eku="clientAuth"
  else
    sans="${coordinator_dns}DNS:$name,DNS:localhost,IP:127.0.0.1,IP:::1${identity:+,URI:$identity}${RBDBACKUP_TLS_SANS:+,$RBDBACKUP_TLS_SANS}"
    eku="serverAuth,clientAuth"
  fi
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$name" \
    -keyout "$out/$name.key" -out "$out/$name.csr" 2>/dev/null
  openssl x509 -req -in "$out/$name.csr" -CA "$out/ca.pem" -CAkey "$out/ca.key" -CAcreateserial -days 825 \
    -extfile <(printf 'subjectAltName=%s\nextendedKeyUsage=%s\nkeyUsage=digitalSignature,keyEncipherment\nbasicConstraints=CA:FALSE\n' "$sans" "$eku") \
    -out "$out/$name.pem" 2>/dev/null
  rm -f "$out/$name.csr"
  chmod 600 "$out/$name.key"
done
# The group's read of every key named here (issued now or kept), never of ca.key.
if [ -n "$group" ]; then
  for spec in "$@"; do
    name="${spec%%=*}"
    chgrp "$group" "$out/$name.key" "$out/$name.pem"
    chmod 640 "$out/$name.key"
  done
fi
chmod 600 "$out/ca.key"
echo "$out"
