"""gRPC contracts and their generated stubs (see protos/nborch.proto)."""
