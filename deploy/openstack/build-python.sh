#!/usr/bin/env bash
# Builds the Python side of rbdbackup into dist/python/ (`npm run build:python`): the messages and the
# BackupService stubs generated from proto/ (nothing generated is committed), plus the hand-written
# packages rbdbackup_client (typed wrapper) and rbdbackup_cinder (the Cinder backup driver).
#
# Messages: Debian's protoc (protobuf-compiler, 3.21) with --python_out and --pyi_out (type stubs); its
# output matches Debian's python3-protobuf runtime. Service stubs: python3-grpc-tools' plugin
# (--grpc_python_out only; its bundled protoc is too old for the messages). The result is checked by
# importing it with /usr/bin/python3 (Debian's interpreter, where python3-grpcio lives).
#
# dist/python/ is then one directory to put on the PYTHONPATH of cinder-backup (see README.md,
# "OpenStack Cinder"). `npm run build:ts` empties dist/, so run this after it.
set -euo pipefail
cd "$(dirname "$0")/../.."
py=/usr/bin/python3
need() { echo "build:python: $1 (apt-get install -y --no-install-recommends $2)" >&2; exit 1; }
command -v protoc >/dev/null || need "protoc is missing" protobuf-compiler
test -f /usr/include/google/protobuf/timestamp.proto || need "the well-known .proto files are missing" libprotobuf-dev
"$py" -c 'import grpc_tools.protoc' 2>/dev/null || need "grpc_tools is missing for $py" python3-grpc-tools
"$py" -c 'import grpc, google.protobuf' 2>/dev/null || need "grpcio is missing for $py" python3-grpcio

out=dist/python
rm -rf "$out"
mkdir -p "$out"
protos=(proto/rbdbackup/v1/*.proto)
protoc -I proto --python_out="$out" --pyi_out="$out" "${protos[@]}"
"$py" -m grpc_tools.protoc -I proto -I /usr/include --grpc_python_out="$out" proto/rbdbackup/v1/backup_service.proto
touch "$out/rbdbackup/__init__.py" "$out/rbdbackup/v1/__init__.py"
cp -r deploy/openstack/rbdbackup_client deploy/openstack/rbdbackup_cinder "$out/"
find "$out" -name __pycache__ -prune -exec rm -rf {} +

# The generated code must import with the installed runtime (Debian's grpcio/protobuf pair).
PYTHONDONTWRITEBYTECODE=1 PYTHONPATH="$out" "$py" -c '
from rbdbackup.v1 import backup_service_pb2 as pb, backup_service_pb2_grpc as rpc
assert pb.CreateBackupRequest(idempotency_key="k").idempotency_key == "k"
assert rpc.BackupServiceStub
import rbdbackup_client
' || {
  echo "build:python: the generated code does not import with $py (see above)" >&2
  exit 1
}
echo "build:python: $out"
