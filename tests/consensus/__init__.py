"""Tests of the Raft core, its storage and the simulated network they run on."""
