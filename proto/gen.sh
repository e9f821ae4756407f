#!/usr/bin/env bash
# Compiles the .proto contracts (package rbdbackup.v1) into TypeScript (ts-proto, nice-grpc service
# definitions) under src/gen/, and a descriptor set for server reflection. Run by `npm run build`.
set -euo pipefail
cd "$(dirname "$0")/.."
{ command -v protoc && test -f /usr/include/google/protobuf/timestamp.proto; } >/dev/null || deploy/lab/install-deps.sh
rm -rf src/gen
mkdir -p src/gen
protos=(proto/rbdbackup/v1/*.proto)
protoc --plugin=protoc-gen-ts_proto=./node_modules/.bin/protoc-gen-ts_proto --ts_proto_out=src/gen \
  --ts_proto_opt=outputServices=nice-grpc,outputServices=generic-definitions,useExactTypes=false \
  --ts_proto_opt=esModuleInterop=true,forceLong=number,oneof=unions-value,env=both \
  -I proto "${protos[@]}"
protoc --include_imports --include_source_info --descriptor_set_out=src/gen/descriptor.bin -I proto "${protos[@]}"
