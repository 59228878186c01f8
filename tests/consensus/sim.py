"""A simulated Raft group: nodes, their storage, a faulty network and a safety checker.

Everything is deterministic given the seed: node randomness comes from string-seeded
``random.Random`` instances, the network from the cluster's own ``Random``. Time is logical
(``tick``). The driver loop here is the reference for the real one: persist → send → apply →
advance (see ``Ready``).
"""

from __future__ import annotations

import collections
import dataclasses
import random
from dataclasses import dataclass, field
from pathlib import Path

from nborch.runtime.consensus.core import (Entry, MemoryStorage, Message, RaftConfig, RaftNode,
                                           ReadState, Ready, Role, Snapshot)
from nborch.runtime.consensus.storage import DiskStorage


class App:
    """The replicated state machine: the list of applied (non-empty) values."""

    def __init__(self) -> None:
        self.values: list[bytes] = []
        self.applied = 0

    def apply(self, e: Entry) -> None:
        assert e.index == self.applied + 1, f"applied {e.index} after {self.applied}"
        self.applied = e.index
        if e.is_command:
            self.values.append(e.data)

    def snapshot(self) -> bytes:
        return self.encode(self.values)

    def restore(self, snap: Snapshot) -> None:
        self.values = self.decode(snap.data)
        self.applied = snap.meta.index

    @staticmethod
    def encode(values: list[bytes]) -> bytes:
        return b",".join(values)

    @staticmethod
    def decode(data: bytes) -> list[bytes]:
        return data.split(b",") if data else []


@dataclass
class SimNode:
    id: int
    config: RaftConfig
    storage: MemoryStorage | DiskStorage
    node: RaftNode | None = None
    app: App = field(default_factory=App)
    incarnation: int = 0
    read_states: list[ReadState] = field(default_factory=list)
    checked_term: int = -1  # last term in which the checker verified this node as leader

    @property
    def alive(self) -> bool:
        return self.node is not None


class SafetyViolation(AssertionError):
    pass


class SafetyChecker:
    """Raft's safety properties (§5.2, Figure 3), checked as the simulation runs.

    * Election Safety: at most one leader per term.
    * Log Matching: checked through the equivalent per-entry invariant that an (index, term)
      pair determines the entry's data and the term of its predecessor, for every entry any
      node ever persists.
    * Leader Completeness: a new leader's log holds every entry applied anywhere in an
      earlier term.
    * State Machine Safety: no two nodes apply different entries at one index (snapshots
      included).
    * ReadIndex linearizability: a read index is at least the commit index known anywhere
      when the read was requested.
    """

    def __init__(self) -> None:
        self.leaders: dict[int, int] = {}
        self.entries: dict[tuple[int, int], tuple[bytes, int | None]] = {}
        self.applied: dict[int, tuple[int, bytes, bool]] = {}  # term, data, is a command
        self.applied_term_bound: dict[int, int] = {}
        self.read_floor: dict[bytes, int] = {}
        self.max_applied = 0

    def fail(self, what: str) -> None:
        raise SafetyViolation(what)

    def on_persist(self, node: RaftNode, entries: tuple[Entry, ...]) -> None:
        log = node.raft.log
        for e in entries:
            prev = log.term(e.index - 1)
            seen = self.entries.setdefault((e.index, e.term), (e.data, prev))
            if seen[0] != e.data or (prev is not None and seen[1] is not None and seen[1] != prev):
                self.fail(f"log matching: entry {e.term}/{e.index} on node {node.id} "
                          f"is {e.data!r} after term {prev}, elsewhere {seen}")

    def on_apply(self, node: RaftNode, e: Entry) -> None:
        seen = self.applied.setdefault(e.index, (e.term, e.data, e.is_command))
        if seen != (e.term, e.data, e.is_command):
            self.fail(f"state machine safety: node {node.id} applied {e.term}/{e.index} "
                      f"{e.data!r}, another node applied {seen}")
        bound = self.applied_term_bound.get(e.index)
        if bound is None or node.term < bound:
            self.applied_term_bound[e.index] = node.term
        self.max_applied = max(self.max_applied, e.index)

    def on_restore(self, node_id: int, snap: Snapshot) -> None:
        expected = [self.applied[i][1] for i in range(1, snap.meta.index + 1)
                    if i in self.applied and self.applied[i][2]]
        missing = [i for i in range(1, snap.meta.index + 1) if i not in self.applied]
        if missing:
            self.fail(f"snapshot {snap.meta.index} on node {node_id} covers unapplied {missing}")
        got = App.decode(snap.data)
        if got != expected:
            self.fail(f"state machine safety: snapshot {snap.meta.index} on node {node_id} "
                      f"holds {got}, expected {expected}")

    def on_read_request(self, context: bytes, floor: int) -> None:
        self.read_floor[context] = floor

    def on_read_state(self, node_id: int, rs: ReadState) -> None:
        floor = self.read_floor.get(rs.context)
        if floor is not None and rs.index < floor:
            self.fail(f"linearizability: read {rs.context!r} on node {node_id} at index "
                      f"{rs.index} but {floor} was committed when it was requested")

    def check_leaders(self, nodes: dict[int, SimNode]) -> None:
        for sn in nodes.values():
            if sn.node is None or sn.node.role is not Role.LEADER:
                continue
            term = sn.node.term
            known = self.leaders.setdefault(term, sn.id)
            if known != sn.id:
                self.fail(f"election safety: nodes {known} and {sn.id} both lead term {term}")
            if sn.checked_term != term:
                sn.checked_term = term
                self._check_completeness(sn)

    def _check_completeness(self, sn: SimNode) -> None:
        assert sn.node is not None
        log = sn.node.raft.log
        first = log.first_index()
        for index, (term, _, _) in self.applied.items():
            if index < first or self.applied_term_bound[index] >= sn.node.term:
                continue
            if log.term(index) != term:
                self.fail(f"leader completeness: leader {sn.id} of term {sn.node.term} has "
                          f"term {log.term(index)} at {index}, committed term {term}")


class Cluster:
    """N simulated nodes and the network between them."""

    def __init__(self, rng: random.Random | None = None, *, seed: str = "sim",
                 storage_dir: Path | None = None, codec: bool = True) -> None:
        self.rng = rng or random.Random(seed)
        self.seed = seed
        self.storage_dir = storage_dir
        self.codec = codec
        self.nodes: dict[int, SimNode] = {}
        self.queue: list[tuple[int, int, Message]] = []  # (deliver_at, seq, message)
        self.seq = 0
        self.now = 0
        self.cut: set[tuple[int, int]] = set()
        self.drop_rate = 0.0
        self.dup_rate = 0.0
        self.max_delay = 0
        self.checker = SafetyChecker()
        self.conf_changes_proposed: collections.Counter = collections.Counter()  # by ConfOp

    # -- membership and lifecycle --------------------------------------------------------------

    def add_nodes(self, n: int, *, join: bool = False, **overrides) -> list[int]:
        """Start ``n`` nodes: the founding voters, or (``join``) newcomers to the running
        group, which start as learners knowing its current voters until a membership change
        (``propose_conf_change``) adds them and the leader sends them the log."""
        if self.nodes and not join:
            raise ValueError("the group is running: add nodes with join=True")
        if join and not self.nodes:
            raise ValueError("there is no group to join")
        start = max(self.nodes, default=0) + 1
        ids = list(range(start, start + n))
        for i in ids:
            if join:
                voters = self._current_voters()
                cfg = RaftConfig(id=i, peers=voters, learners=(i,), **overrides)
            else:
                cfg = RaftConfig(id=i, peers=tuple(ids), **overrides)
            self.nodes[i] = SimNode(i, cfg, self._open_storage(i))
            self._boot(self.nodes[i])
        return ids

    def _current_voters(self) -> tuple[int, ...]:
        """The voters as the most advanced live node's log says."""
        live = [sn.node for sn in self.nodes.values() if sn.node is not None]
        best = max(live, key=lambda node: (node.raft.log.last_term(), node.raft.log.last_index()))
        return best.conf_state().voters

    def _open_storage(self, i: int) -> MemoryStorage | DiskStorage:
        if self.storage_dir is None:
            return MemoryStorage()
        return DiskStorage.open(self.storage_dir / str(i), segment_bytes=4096)

    def _boot(self, sn: SimNode) -> None:
        snap = sn.storage.snapshot()
        sn.app = App()
        if snap.meta.index:
            sn.app.restore(snap)
        cfg = dataclasses.replace(sn.config, applied=snap.meta.index)
        rng = random.Random(f"{self.seed}/{sn.id}/{sn.incarnation}")
        sn.node = RaftNode(cfg, sn.storage, rng)
        sn.read_states = []

    def crash(self, i: int) -> None:
        """The process dies: volatile state is lost, storage survives."""
        sn = self.nodes[i]
        sn.node = None
        self.queue = [q for q in self.queue if q[2].dst != i]
        if isinstance(sn.storage, DiskStorage):
            sn.storage.close()

    def restart(self, i: int) -> None:
        sn = self.nodes[i]
        assert sn.node is None, f"node {i} is running"
        sn.incarnation += 1
        if isinstance(sn.storage, DiskStorage):
            sn.storage = DiskStorage.open(sn.storage.path, segment_bytes=4096)
        self._boot(sn)

    def close(self) -> None:
        for sn in self.nodes.values():
            if isinstance(sn.storage, DiskStorage):
                sn.storage.close()

    # -- network faults ----------------------------------------------------------------------

    def partition(self, *groups: list[int]) -> None:
        self.cut = set()
        for a_group in groups:
            for b_group in groups:
                if a_group is not b_group:
                    self.cut.update((a, b) for a in a_group for b in b_group)

    def isolate(self, i: int) -> None:
        for j in self.nodes:
            if j != i:
                self.cut.update({(i, j), (j, i)})

    def heal(self) -> None:
        self.cut = set()

    def connected(self, a: int, b: int) -> bool:
        return (a, b) not in self.cut

    # -- the driver loop -----------------------------------------------------------------------

    def send(self, m: Message) -> None:
        dst = self.nodes.get(m.dst)
        if dst is None or dst.node is None or not self.connected(m.src, m.dst):
            return  # a message to a dead process or across a cut link is lost
        if self.codec:
            m = Message.from_bytes(m.to_bytes())
        copies = 2 if self.dup_rate and self.rng.random() < self.dup_rate else 1
        for _ in range(copies):
            delay = self.rng.randint(0, self.max_delay) if self.max_delay else 0
            self.seq += 1
            self.queue.append((self.now + 1 + delay, self.seq, m))

    def handle_ready(self, i: int, *, crash_after_persist: bool = False) -> Ready | None:
        """One round of the driver: persist → send → apply → advance."""
        sn = self.nodes[i]
        node = sn.node
        if node is None or not node.has_ready():
            return None
        rd = node.ready()
        st = sn.storage
        if rd.snapshot is not None:
            st.apply_snapshot(rd.snapshot)
        if rd.entries:
            self.checker.on_persist(node, rd.entries)
            st.append(rd.entries)
        if rd.hard_state is not None:
            st.set_hard_state(rd.hard_state)
        if crash_after_persist:
            self.crash(i)
            return rd
        for m in rd.messages:
            self.send(m)
        if rd.snapshot is not None:
            self.checker.on_restore(i, rd.snapshot)
            sn.app.restore(rd.snapshot)
        for e in rd.committed_entries:
            self.checker.on_apply(node, e)
            sn.app.apply(e)
        for rs in rd.read_states:
            self.checker.on_read_state(i, rs)
            sn.read_states.append(rs)
        node.advance(rd)
        return rd

    def deliver(self, m: Message) -> bool:
        sn = self.nodes.get(m.dst)
        if sn is None or sn.node is None or not self.connected(m.src, m.dst):
            return False
        sn.node.step(m)
        return True

    def compact(self, i: int, keep: int = 0) -> Snapshot | None:
        """The application snapshots its state at its applied index and compacts the log."""
        sn = self.nodes[i]
        assert sn.node is not None
        index = sn.app.applied
        if index <= sn.storage.snapshot().meta.index:
            return None
        conf = sn.node.conf_at(index)
        snap = sn.storage.create_snapshot(index, sn.app.snapshot(), conf.voters, conf.learners)
        sn.storage.compact(max(index - keep, sn.storage.first_index() - 1))
        return snap

    # -- helpers for tests -------------------------------------------------------------------

    def live(self) -> list[SimNode]:
        return [sn for sn in self.nodes.values() if sn.node is not None]

    def leader(self) -> int | None:
        """The leader of the highest term among live nodes, if any."""
        best = None
        for sn in self.live():
            if sn.node.role is Role.LEADER and (best is None or sn.node.term > best[0]):
                best = (sn.node.term, sn.id)
        return best[1] if best else None

    def tick_all(self) -> None:
        for sn in self.live():
            sn.node.tick()

    def step_time(self) -> None:
        """One unit of simulated time: tick, deliver what is due, drain every Ready."""
        self.now += 1
        self.tick_all()
        self.deliver_due()
        self.drain()
        self.checker.check_leaders(self.nodes)

    def deliver_due(self) -> None:
        due = [q for q in self.queue if q[0] <= self.now]
        if not due:
            return
        self.queue = [q for q in self.queue if q[0] > self.now]
        due.sort(key=lambda q: q[1])
        if self.max_delay:
            self.rng.shuffle(due)  # reorder
        for _, _, m in due:
            if self.drop_rate and self.rng.random() < self.drop_rate:
                continue
            self.deliver(m)

    def drain(self, crash_rate: float = 0.0) -> None:
        progressed = True
        while progressed:
            progressed = False
            for i in list(self.nodes):
                crash = bool(crash_rate) and self.rng.random() < crash_rate
                if self.handle_ready(i, crash_after_persist=crash) is not None:
                    progressed = True

    def run_until(self, predicate, max_ticks: int) -> bool:
        for _ in range(max_ticks):
            if predicate():
                return True
            self.step_time()
        return predicate()
