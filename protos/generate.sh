#!/usr/bin/env bash
# Regenerates the committed stubs. The gencode version (grpcio-tools' protoc) must not be
# newer than the oldest protobuf runtime pyproject.toml admits.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m grpc_tools.protoc -Inborch/protos=protos \
  --python_out=. --grpc_python_out=. --pyi_out=. protos/nborch.proto
mv nborch/protos/nborch_pb2*.py* protos/
rmdir nborch/protos
