"""The RaftNode contract: Ready/advance, proposals, reads, restarts, snapshots (§7) and
the chunked snapshot reassembly."""

from __future__ import annotations

import random

import pytest

from nborch.runtime.consensus import core
from nborch.runtime.consensus.core import (AppendEntriesResponse, Entry,
                                           HardState, InstallSnapshot,
                                           InstallSnapshotResponse, MemoryStorage,
                                           NotLeaderError, ProposalDroppedError, RaftConfig,
                                           RaftNode, ReadyNotAdvancedError, ReadState,
                                           RequestVote, Role, Snapshot, SnapshotMeta, checksum)
from nborch.runtime.consensus.core.snapshot_transfer import SnapshotReceiver

from .test_paper import Peer, app


def test_public_api_is_exactly_all() -> None:
    public = {n for n in dir(core) if not n.startswith("_")}
    modules = {"conf", "config", "errors", "log", "memory", "messages", "node", "progress", "raft",
               "read_only", "snapshot_transfer", "types"}
    assert public - modules == set(core.__all__)


def test_the_core_does_no_io() -> None:
    """The protocol is a pure state machine: no I/O, clock, threads or event loop."""
    import ast
    from pathlib import Path

    forbidden = {"os", "io", "time", "socket", "threading", "asyncio", "subprocess",
                 "pathlib", "grpc", "select", "signal", "datetime", "logging"}
    for path in Path(core.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            for name in names:
                assert name.split(".")[0] not in forbidden, f"{path.name} imports {name}"


def test_config_is_validated() -> None:
    with pytest.raises(ValueError):
        RaftConfig(id=4, peers=(1, 2, 3))
    with pytest.raises(ValueError):
        RaftConfig(id=1, peers=(1, 1, 2))
    with pytest.raises(ValueError):
        RaftConfig(id=1, peers=(1,), election_ticks=1, heartbeat_ticks=1)
    with pytest.raises(ValueError):
        RaftConfig(id=1, peers=(1,), snapshot_chunk_size=0)
    assert RaftConfig(id=2, peers=[3, 2, 1]).peers == (1, 2, 3)


# -- Ready / advance ---------------------------------------------------------------------------

def test_ready_must_be_advanced_before_the_next() -> None:
    p = Peer(peers=(1,))
    p.node.campaign()
    rd = p.node.ready()
    assert not p.node.has_ready()
    with pytest.raises(ReadyNotAdvancedError):
        p.node.ready()
    with pytest.raises(ValueError):
        p.node.advance(core.Ready())
    p.node.advance(rd)


def test_nothing_is_handed_out_twice() -> None:
    p = Peer(id=2)
    p.node.step(app(2, 1, term=1, commit=1, entries=[Entry(1, 1, b"a")]))
    rd = p.ready()
    assert rd.entries and rd.committed_entries and rd.messages and rd.hard_state
    assert not p.node.has_ready()
    assert p.node.ready().is_empty()


def test_the_leader_counts_itself_only_after_persisting() -> None:
    """Thesis §10.2.1: the leader's own entry counts towards the majority once it is
    durable, i.e. after the Ready that carried it is advanced."""
    p = Peer(peers=(1,))
    p.node.campaign()
    rd = p.node.ready()
    assert rd.entries == (Entry(1, 1, b""),) and rd.committed_entries == ()
    p.storage.append(rd.entries)
    p.storage.set_hard_state(rd.hard_state)
    p.node.advance(rd)
    assert p.node.ready().committed_entries == (Entry(1, 1, b""),)


def test_must_sync_only_for_term_vote_entries_or_snapshot() -> None:
    p = Peer(id=2)
    p.node.step(app(2, 1, term=1, entries=[Entry(1, 1, b"a")]))
    assert p.ready().must_sync
    p.node.step(app(2, 1, term=1, prev_index=1, prev_term=1, commit=1))
    rd = p.ready()
    assert rd.hard_state.commit == 1 and not rd.must_sync


def test_steps_between_ready_and_advance_go_to_the_next_ready() -> None:
    p = Peer(id=2)
    p.node.step(app(2, 1, term=1, entries=[Entry(1, 1, b"a"), Entry(1, 2, b"b")]))
    rd = p.node.ready()
    # A new leader overwrites index 2 before the driver finished persisting rd.
    p.node.step(app(2, 3, term=2, prev_index=1, prev_term=1, entries=[Entry(2, 2, b"B")]))
    p.storage.append(rd.entries)
    p.storage.set_hard_state(rd.hard_state)
    p.node.advance(rd)
    rd2 = p.ready()
    assert rd2.entries == (Entry(2, 2, b"B"),)
    assert p.storage.entries(1, 3) == [Entry(1, 1, b"a"), Entry(2, 2, b"B")]
    assert p.raft.log.last_stable_index() == 2


def test_step_rejects_a_message_for_another_node() -> None:
    with pytest.raises(ValueError):
        Peer(id=1).node.step(app(2, 3, term=1))


def test_a_leader_ignores_answers_from_nodes_it_does_not_track() -> None:
    p = Peer(id=1, peers=(1,))
    p.node.campaign()
    assert p.node.role is Role.LEADER
    p.node.advance(p.node.ready())
    p.node.step(AppendEntriesResponse(dst=1, src=9, term=p.node.term, index=5))
    assert p.node.role is Role.LEADER and 9 not in p.node.raft.tracker.progress


# -- proposals and reads -----------------------------------------------------------------------

def test_propose_on_a_follower_names_the_leader() -> None:
    p = Peer(id=2)
    with pytest.raises(NotLeaderError) as err:
        p.node.propose(b"x")
    assert err.value.leader == 0
    p.node.step(app(2, 3, term=1))
    with pytest.raises(NotLeaderError) as err:
        p.node.propose(b"x")
    assert (err.value.leader, err.value.term) == (3, 1)


def test_empty_proposals_are_refused() -> None:
    p = Peer(peers=(1,))
    p.node.campaign()
    with pytest.raises(ProposalDroppedError):
        p.node.propose(b"")


def test_read_index_on_a_single_node_answers_at_once() -> None:
    p = Peer(peers=(1,))
    p.node.campaign()
    p.ready()
    p.ready()
    p.node.read_index(b"q")
    assert p.ready().read_states == (ReadState(1, b"q"),)


def test_read_index_without_a_leader_is_refused() -> None:
    with pytest.raises(NotLeaderError):
        Peer(id=2).node.read_index(b"q")


# -- restart -----------------------------------------------------------------------------------

def test_restart_recovers_hard_state_and_applies_from_the_snapshot() -> None:
    st = MemoryStorage()
    st.append([Entry(1, i, b"%d" % i) for i in range(1, 6)])
    st.create_snapshot(3, b"s3")
    st.compact(3)
    st.set_hard_state(HardState(term=2, vote=1, commit=5))
    node = RaftNode(RaftConfig(id=2, peers=(1, 2, 3)), st, random.Random(1))
    s = node.status()
    assert (s.term, s.vote, s.commit, s.applied, s.first_index) == (2, 1, 5, 3, 4)
    rd = node.ready()
    assert [e.index for e in rd.committed_entries] == [4, 5]


def test_restart_with_trailing_entries_before_the_snapshot() -> None:
    st = MemoryStorage()
    st.append([Entry(1, i, b"%d" % i) for i in range(1, 7)])
    st.create_snapshot(5, b"s5")
    st.compact(3)  # keep entries 4..5 for slow followers
    st.set_hard_state(HardState(term=1, vote=1, commit=6))
    node = RaftNode(RaftConfig(id=2, peers=(1, 2, 3)), st)
    assert (node.status().first_index, node.status().applied) == (4, 5)
    assert [e.index for e in node.ready().committed_entries] == [6]


def test_restart_with_a_stale_commit_uses_the_snapshot() -> None:
    st = MemoryStorage()
    st.apply_snapshot(Snapshot(SnapshotMeta(7, 2, (1, 2, 3)), b"s"))
    st.set_hard_state(HardState(term=2, vote=0, commit=3))  # crashed before saving commit
    node = RaftNode(RaftConfig(id=2, peers=(1, 2, 3)), st)
    assert (node.status().commit, node.status().applied) == (7, 7)


def test_restart_with_a_commit_past_the_log_is_an_error() -> None:
    st = MemoryStorage()
    st.set_hard_state(HardState(term=1, vote=0, commit=3))
    with pytest.raises(core.RaftError):
        RaftNode(RaftConfig(id=1, peers=(1, 2, 3)), st)


# -- §7 snapshots ------------------------------------------------------------------------------

def test_7_leader_sends_a_snapshot_when_entries_are_compacted() -> None:
    """§7: "the leader must occasionally send snapshots to followers that lag behind"
    because "the leader has already discarded the next log entry that it needs to send"."""
    p = Peer(snapshot_chunk_size=3, max_inflight_snapshot_chunks=2)
    p.become_leader()
    for peer in (2, 3):
        p.node.step(AppendEntriesResponse(dst=1, src=peer, term=1, index=1))
    p.msgs()
    for v in (b"a", b"b"):
        p.node.propose(v)
    p.node.step(AppendEntriesResponse(dst=1, src=2, term=1, index=3))
    while p.node.has_ready():
        p.ready()
    p.storage.create_snapshot(3, b"abcdefgh")
    p.storage.compact(3)
    # 3 turns out to lack index 2: its probe is rejected with a hint at index 1.
    p.node.step(AppendEntriesResponse(dst=1, src=3, term=1, index=3, reject=True,
                                      reject_hint=1, hint_term=1))
    chunks = [m for m in p.msgs() if isinstance(m, InstallSnapshot)]
    assert [(m.offset, m.data) for m in chunks] == [(0, b"abc"), (3, b"def")]
    assert all((m.snap_index, m.snap_term, m.total_size, m.checksum)
               == (3, 1, 8, checksum(b"abcdefgh")) for m in chunks)
    p.node.step(InstallSnapshotResponse(dst=1, src=3, term=1, snap_index=3, next_offset=3))
    (last,) = p.msgs()
    assert (last.offset, last.data, last.is_last) == (6, b"gh", True)


def test_7_follower_installs_a_snapshot_only_when_complete_and_verified() -> None:
    p = Peer(id=2, log=(1, 1), term=1)
    data = b"0123456789"

    def chunk(offset, n, crc=checksum(data)):
        return InstallSnapshot(dst=2, src=1, term=1, snap_index=9, snap_term=1,
                               voters=(1, 2, 3), offset=offset, total_size=len(data),
                               checksum=crc, data=data[offset:offset + n])

    p.node.step(chunk(0, 4))
    (ack,) = p.msgs()
    assert (ack.next_offset, ack.reject) == (4, False)
    assert p.raft.log.last_index() == 2  # nothing applied yet
    p.node.step(chunk(4, 4))
    p.node.step(chunk(8, 2))
    rd = p.ready()
    assert rd.snapshot == Snapshot(SnapshotMeta(9, 1, (1, 2, 3)), data)
    assert [type(m) for m in rd.messages] == [InstallSnapshotResponse, AppendEntriesResponse]
    assert rd.messages[-1].index == 9
    assert p.storage.snapshot().meta.index == 9 and p.raft.log.committed == 9


def test_7_snapshot_matching_the_log_keeps_the_following_entries() -> None:
    """§7: "If the follower receives a snapshot that describes a prefix of its log, then
    log entries covered by the snapshot are deleted but entries following the snapshot
    are still valid and must be retained." """
    p = Peer(id=2, log=(1, 1, 1, 1), term=1)
    p.node.step(InstallSnapshot(dst=2, src=1, term=1, snap_index=2, snap_term=1,
                                total_size=1, checksum=checksum(b"s"), data=b"s"))
    rd = p.ready()
    assert rd.snapshot is None
    assert p.raft.log.last_index() == 4 and p.raft.log.committed == 2


class TestSnapshotReceiver:
    data = b"abcdefghij"

    def chunk(self, offset, n, *, index=5, term=1, src=1, crc=None):
        return InstallSnapshot(dst=2, src=src, term=term, snap_index=index, snap_term=1,
                               offset=offset, total_size=len(self.data),
                               checksum=checksum(self.data) if crc is None else crc,
                               data=self.data[offset:offset + n])

    def test_in_order_chunks_complete_the_snapshot(self) -> None:
        r = SnapshotReceiver()
        assert r.receive(self.chunk(0, 4)).next_offset == 4
        assert r.receive(self.chunk(4, 4)).next_offset == 8
        done = r.receive(self.chunk(8, 4))
        assert done.snapshot.data == self.data and r.receiving is None

    def test_a_gap_asks_for_the_held_offset(self) -> None:
        r = SnapshotReceiver()
        r.receive(self.chunk(0, 4))
        res = r.receive(self.chunk(8, 2))
        assert (res.next_offset, res.reject) == (4, True)

    def test_duplicates_are_acknowledged_without_change(self) -> None:
        r = SnapshotReceiver()
        r.receive(self.chunk(0, 4))
        r.receive(self.chunk(4, 4))
        res = r.receive(self.chunk(0, 4))
        assert (res.next_offset, res.reject) == (8, False)

    def test_a_chunk_of_an_unknown_transfer_needs_offset_zero(self) -> None:
        res = SnapshotReceiver().receive(self.chunk(4, 4))
        assert (res.next_offset, res.reject) == (0, True)

    def test_checksum_mismatch_discards_everything(self) -> None:
        r = SnapshotReceiver()
        bad = checksum(b"something else")
        r.receive(self.chunk(0, 5, crc=bad))
        res = r.receive(self.chunk(5, 5, crc=bad))
        assert (res.next_offset, res.reject, res.snapshot) == (0, True, None)
        assert r.receiving is None

    def test_transfers_never_mix(self) -> None:
        r = SnapshotReceiver()
        r.receive(self.chunk(0, 4, index=5))
        # The leader moved on to a newer snapshot: its first chunk replaces the buffer.
        assert r.receive(self.chunk(0, 4, index=6)).next_offset == 4
        # A late chunk of the older transfer is ignored.
        assert r.receive(self.chunk(4, 4, index=5)) is None
        assert r.receiving == (6, 4)
        # Another leader (new term) starts over too.
        assert r.receive(self.chunk(4, 4, index=6, term=2)).reject
        assert r.receiving is None

    def test_empty_snapshot(self) -> None:
        msg = InstallSnapshot(dst=2, src=1, term=1, snap_index=3, snap_term=1, offset=0,
                              total_size=0, checksum=checksum(b""), data=b"")
        assert SnapshotReceiver().receive(msg).snapshot.data == b""


def test_prevote_does_not_change_term_or_vote() -> None:
    """Thesis §9.6: answering a PreVote changes neither term nor vote."""
    p = Peer(id=2, term=1, pre_vote=True)
    p.node.step(RequestVote(dst=2, src=3, term=2, last_index=0, last_term=0, pre_vote=True))
    (resp,) = p.msgs()
    assert not resp.reject and resp.pre_vote and resp.term == 2
    assert (p.node.term, p.raft.vote) == (1, 0)


def test_report_unreachable_stops_pipelining() -> None:
    p = Peer()
    p.become_leader()
    p.node.step(AppendEntriesResponse(dst=1, src=2, term=1, index=1))
    p.msgs()
    assert p.node.status().progress[2].state is core.ProgressState.REPLICATE
    p.node.report_unreachable(2)
    assert p.node.status().progress[2].state is core.ProgressState.PROBE
    assert p.node.role is Role.LEADER
    assert isinstance(p.node.status().progress[3].state, core.ProgressState)


def test_heartbeat_never_commits_past_what_the_follower_holds() -> None:
    p = Peer()
    p.become_leader()
    p.node.step(AppendEntriesResponse(dst=1, src=2, term=1, index=1))
    while p.node.has_ready():
        p.ready()
    p.node.tick()
    beats = {m.dst: m.commit for m in p.msgs()}
    assert beats == {2: 1, 3: 0}
