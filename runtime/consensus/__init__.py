"""Raft consensus for stateful executors (see docs/architecture.md)."""
