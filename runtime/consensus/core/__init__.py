"""The Raft protocol as a pure, deterministic state machine (no I/O, no clock)."""
