"""The recorded membership of a Raft group: written once, checked on every start."""
from __future__ import annotations

import json
import struct

import pytest

from nborch.errors import MembershipError
from nborch.runtime.consensus import membership
from nborch.runtime.consensus.core import checksum
from nborch.runtime.consensus.membership import (Membership, MembershipCorruptError,
                                                 check_workspace)
from nborch.runtime.consensus.storage import DiskStorage, HardStateCorruptError
from nborch.runtime.worker_spec import raft_dir


def test_a_record_round_trips_and_a_new_folder_gets_one(tmp_path):
    folder = tmp_path / 'raft' / '0'
    assert membership.read(folder) is None
    made = membership.record(folder, 1, (1, 2, 3), 'g1')
    assert made == Membership('g1', 1, (1, 2, 3)) == membership.read(folder)
    assert membership.record(folder, 1, (1, 2, 3), 'g1') == made  # the same group starts again
    assert membership.record(folder, 1, (1, 2, 3)) == made  # `nborch executor` gives no group


def test_a_corrupt_record_is_an_error_naming_the_file(tmp_path):
    membership.write(tmp_path, Membership('g', 1, (1, 2, 3)))
    path = tmp_path / 'membership'
    raw = json.loads(path.read_text())
    raw['membership']['voters'] = [1]  # edited by hand: the checksum no longer matches
    path.write_text(json.dumps(raw))
    with pytest.raises(MembershipCorruptError, match=f'{path}: checksum mismatch'):
        membership.read(tmp_path)
    path.write_bytes(b'\x00garbage')
    with pytest.raises(MembershipCorruptError, match='not a membership record'):
        membership.read(tmp_path)


@pytest.mark.parametrize('node, voters, group, message', [
    (1, (1,), 'g', 'records a Raft group of 3 replicas, but it was started with 1; a stateful '
                   'group grows or shrinks only while it runs'),
    (2, (1, 2, 3), 'g', 'holds the state of replica 0, not of replica 1'),
    (1, (1, 2, 3), 'other', r'belongs to another Raft group \(g, this one is other\)'),
])
def test_a_folder_of_another_group_is_refused(tmp_path, node, voters, group, message):
    membership.write(tmp_path, Membership('g', 1, (1, 2, 3)))
    with pytest.raises(MembershipError, match=message):
        membership.record(tmp_path, node, voters, group)
    assert membership.read(tmp_path) == Membership('g', 1, (1, 2, 3))  # left as it was


def _started(workspace, shards, replicas, group='g'):
    for shard in range(shards):
        for r in range(replicas):
            membership.record(raft_dir(str(workspace), shards, shard, r), r + 1,
                              tuple(range(1, replicas + 1)), f'{group}{shard}')


def test_the_workspace_check_names_both_counts_and_the_workspace(tmp_path):
    _started(tmp_path, 1, 3)
    assert check_workspace('ledger', str(tmp_path), 1, 3) == ['g0']
    with pytest.raises(MembershipError, match=rf'ledger \(workspace {tmp_path}\): .*raft/1 holds '
                                              r'a Raft group of 3 replicas, but it was started '
                                              r'with replicas=1'):
        check_workspace('ledger', str(tmp_path), 1, 1)
    with pytest.raises(MembershipError, match=r'records a Raft group of 3 replicas, but it was '
                                              r'started with replicas=5; a stateful group grows'):
        check_workspace('ledger', str(tmp_path), 1, 5)


def test_the_workspace_check_draws_a_group_once_and_spots_a_foreign_folder(tmp_path):
    first = check_workspace('ledger', str(tmp_path), 2, 3)
    assert len(set(first)) == 2  # nothing recorded: a new group per shard
    _started(tmp_path, 2, 3)
    membership.write(raft_dir(str(tmp_path), 2, 1, 2), Membership('elsewhere', 3, (1, 2, 3)))
    with pytest.raises(MembershipError, match=r'shard 1\): .*belongs to another Raft group'):
        check_workspace('ledger', str(tmp_path), 2, 3)


def test_a_shrink_is_refused_in_a_workspace_written_before_records(tmp_path):
    for r in range(3):  # Raft state, no membership file (an older version's workspace)
        DiskStorage.open(raft_dir(str(tmp_path), 1, 0, r)).close()
    with pytest.raises(MembershipError, match=r'raft/2 holds Raft state for replica 2'):
        check_workspace('ledger', str(tmp_path), 1, 2)
    check_workspace('ledger', str(tmp_path), 1, 3)


def test_a_hard_state_with_an_out_of_bound_term_is_one_clear_error(tmp_path):
    DiskStorage.open(tmp_path).close()
    body = struct.pack('<4sQQQ', b'NBHS', 2**64 - 1, 1, 0)  # what older versions persisted
    (tmp_path / 'hardstate').write_bytes(body + struct.pack('<I', checksum(body)))
    with pytest.raises(HardStateCorruptError, match=rf'{tmp_path}/hardstate: term '
                                                    r'18446744073709551615 / commit 0 is beyond'):
        DiskStorage.open(tmp_path)
