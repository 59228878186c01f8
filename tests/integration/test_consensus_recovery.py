"""A replica whose WAL is corrupt is set aside and rebuilt from its peers (real processes).

The deployment still starts; the replica's Raft files are kept in its quarantine folder; a
single warning names the corrupt file; every replica ends with every write exactly once.
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from nborch import Deployment
from nborch.runtime.consensus.wal_format import RECORD_HEAD, read_records
from tests.integration.helpers import Ledger, read_history
from tests.integration.helpers import docs, replicas
from tests.integration.test_consensus import FAST, wait_converged

pytestmark = pytest.mark.timeout(240)
CONFIG = {**FAST, 'snapshot_threshold': 20, 'snapshot_interval': 10, 'trailing_logs': 5}


def corrupt_a_middle_record(raft_dir: Path) -> tuple[str, bytes]:
    """Flip a payload byte of a record in the middle of the replica's busiest segment;
    returns the segment's name and its corrupted bytes."""
    best = max((raft_dir / 'wal').glob('*.wal'), key=lambda p: len(read_records(p.read_bytes())[0]))
    records, _ = read_records(best.read_bytes())
    assert len(records) >= 5, f'{best} holds only {len(records)} records'
    raw = bytearray(best.read_bytes())
    raw[records[len(records) // 2].offset + RECORD_HEAD.size + 4] ^= 0x20
    best.write_bytes(bytes(raw))
    return best.name, bytes(raw)


def wait_for_log(dep, replica: int, text: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while True:
        logs = dep.logs(replica=replica)
        if text in logs or time.monotonic() > deadline:
            return logs
        time.sleep(0.1)


def test_a_replica_with_a_corrupt_wal_rejoins_empty_and_is_rebuilt_by_its_peers(tmp_path):
    dep = Deployment(name='ledger', uses=Ledger, replicas=3, stateful=True,
                     workspace=str(tmp_path), raft_configuration=CONFIG, quiet=True)
    expected = [f'a{i}' for i in range(60)] + [f'b{i}' for i in range(12)]
    with dep:
        dep.post('/index', docs(60, 'a'), request_size=3)
        dep.post('/index', docs(12, 'b'), request_size=1, prefetch=1)  # records after compaction
        wait_converged(dep, at_least=1)
    victim = 1
    victim_dir = tmp_path / 'raft' / str(victim)
    segment, corrupted = corrupt_a_middle_record(victim_dir)

    with dep:  # starts although replica 1's log is corrupt
        logs = wait_for_log(dep, victim, 'rejoins empty')
        warnings = [line for line in logs.splitlines() if 'WARNING' in line]
        [folder] = [p for p in (victim_dir / 'quarantine').iterdir() if p.name.endswith('-corrupt')]
        kept = folder / 'wal' / segment
        assert kept.read_bytes() == corrupted  # kept byte for byte
        assert len(warnings) == 1 and str(kept) in warnings[0], logs
        counts = []
        for _ in range(3):  # linearizable: each answer is at least every acknowledged write
            dep.post('/count', None, parameters={'read_consistency': 'linearizable'},
                     on_done=lambda r: counts.append(r.parameters['__results__']['ledger']))
        reps = wait_converged(dep, at_least=1)
        rebuilt = reps[victim]['raft']
        deadline = time.monotonic() + 60
        while rebuilt['rejoining'] and time.monotonic() < deadline:
            time.sleep(0.1)
            rebuilt = replicas(dep)[victim]['raft']
        histories = [read_history(str(tmp_path), 'ledger', i) for i in range(3)]
    assert sorted(c['replica'] for c in counts) == [0, 1, 2]
    assert all(c['n'] == len(expected) for c in counts)
    assert not rebuilt['rejoining'] and rebuilt['snapshot_index'] > 0  # from a peer's snapshot
    assert folder.name in rebuilt['storage']['quarantine']
    for history in histories:  # every write exactly once, same order everywhere
        assert sorted(history) == sorted(expected)
    assert histories[0] == histories[1] == histories[2]
    assert not (victim_dir / 'REJOIN').exists()
