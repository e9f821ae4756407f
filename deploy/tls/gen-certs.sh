#!/usr/bin/env bash
# Generates the TLS material rbdbackup's parts use for mutual TLS, with openssl:
#   gen-certs.sh OUTDIR NAME...
# OUTDIR/ca.pem + ca.key (a new CA, created once and reused), and for every NAME a certificate
# OUTDIR/NAME.pem + NAME.key signed by it, valid for both server and client use, for the names
# NAME and localhost and the addresses 127.0.0.1 and ::1 (set RBDBACKUP_TLS_SANS to add more, e.g.
# "DNS:backup.example.org,IP:10.0.0.5"). Keys are EC P-256; certificates last 825 days.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 OUTDIR NAME..." >&2; exit 2; }
out="$1"; shift
mkdir -p "$out"
chmod 700 "$out"
if [ ! -f "$out/ca.pem" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
    -subj "/CN=rbdbackup CA $(date +%s)" -keyout "$out/ca.key" -out "$out/ca.pem" 2>/dev/null
  chmod 600 "$out/ca.key"
fi
for name in "$@"; do
  [[ "$name" =~ ^[A-Za-z0-9._-]+$ ]] || { echo "bad name $name" >&2; exit 2; }
  [ -f "$out/$name.pem" ] && continue
  sans="DNS:$name,DNS:localhost,IP:127.0.0.1,IP:::1${RBDBACKUP_TLS_SANS:+,$RBDBACKUP_TLS_SANS}"
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$name" \
    -keyout "$out/$name.key" -out "$out/$name.csr" 2>/dev/null
  openssl x509 -req -in "$out/$name.csr" -CA "$out/ca.pem" -CAkey "$out/ca.key" -CAcreateserial -days 825 \
    -extfile <(printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=digitalSignature,keyEncipherment\nbasicConstraints=CA:FALSE\n' "$sans") \
    -out "$out/$name.pem" 2>/dev/null
  rm -f "$out/$name.csr"
  chmod 600 "$out/$name.key"
done
echo "$out"
