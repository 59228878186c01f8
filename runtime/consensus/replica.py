"""`ConsensusReplica`: the driver of one replica's Raft node inside a worker process.

It owns the node, its storage and its peer links, on the worker's event loop:

    tick / receive / propose ──▶ node ──▶ Ready: persist (fsync) → send → apply → advance

Group commit: proposals queue until the driver's next round, which proposes them together
(one AppendEntries per follower), and a Ready's entries go to disk as one write and one
fsync on the WAL thread (:mod:`.wal_writer`) while the loop takes the next batch. A leader
sends its appends before its own fsync (it counts itself only once that is done, thesis
§10.2.1); everything else is sent only once the Ready is durable.

Writes (`write`) are proposed here when this replica leads, else forwarded to the leader,
which says where the entry landed; every replica applies committed entries in log order,
once, through its state machine, and the replica that took the request answers with its
own apply result. A retried write (same `write_id`) is applied once: the ids of applied
writes are part of the replicated state (and of snapshots). Reads may call `read_barrier`
first for linearizability (ReadIndex, thesis §6.4).

Membership changes (`change_membership`, the owner's live scale) go through the leader one
at a time; a change that adds a node carries its address, so every member can reach it as
soon as the entry is in its log. A replica started with `joining` starts as a learner.
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import logging
import random
import struct
import time
import uuid
from pathlib import Path
from typing import Callable, Protocol

from nborch.protos import nborch_pb2 as pb
from nborch.runtime.consensus.core import (ConfChange, ConfChangeError, ConfOp, EntryKind,
                                           Message, MessageDecodeError, NotLeaderError, RaftNode,
                                           Role)
from nborch.runtime.consensus.coalesce import drop_redundant_appends
from nborch.runtime.consensus.drops import DropCounter
from nborch.runtime.consensus.settings import RaftSettings
from nborch.runtime.consensus.storage import DiskStorage, StorageCorruptError, quarantine_corrupt
from nborch.runtime.consensus.transport import PeerLink
from nborch.runtime.consensus.wal_writer import WalWriter
from nborch.runtime.limits import DEFAULT_MAX_MESSAGE_SIZE

WRITE_TIMEOUT_S = 30.0
FORWARD_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 10.0       # a linearizable read waits this long for a read point
REMEMBERED_WRITES = 100_000   # write ids kept for de-duplication (replicated state)
RECENT_RESULTS = 4_096        # apply results nobody waited for yet (a forward's reply may follow)
_ENVELOPE = struct.Struct('<I')

log = logging.getLogger('nborch.raft')


class StateMachine(Protocol):
    can_snapshot: bool

    async def apply_many(self, requests: list[tuple[pb.DataRequest, bool]]) -> list[pb.DataResponse]:
        """Apply in order; the flag says whether the reply's docs are wanted."""
    async def snapshot(self) -> bytes: ...
    async def restore(self, data: bytes) -> None: ...


class ProposalLost(Exception):
    """The entry a proposal got was replaced (leader change): propose again."""


def pass_through(request: pb.DataRequest) -> pb.DataResponse:
    """The answer for a write that was applied before (a retry) or inside a snapshot."""
    return pb.DataResponse(docs=request.docs, parameters=request.parameters)


class ConsensusReplica:
    def __init__(self, *, node_id: int, peers: dict[int, str], directory: str,
                 settings: RaftSettings, state_machine: StateMachine,
                 max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
                 connect: Callable[..., PeerLink] = PeerLink, joining: bool = False):
        self.node_id = node_id
        self.joining = joining  # a new member: a learner until the group promotes it
        self.max_message_size = max_message_size  # of the write requests its links carry
        self.peers = dict(peers)            # node id → 'host:port' of its Raft service
        self.directory = Path(directory)
        self.settings = settings
        if settings.log_level:  # raft_configuration's LogLevel: this replica's Raft messages
            log.setLevel(settings.log_level)
        self.sm = state_machine
        self.node: RaftNode | None = None
        self.storage: DiskStorage | None = None
        self.wal: WalWriter | None = None
        self._connect = connect  # (peer, address, on_unreachable, max_message_size) → link
        self._proposals: list[tuple[pb.DataRequest, asyncio.Future]] = []  # for the next round
        # Requests proposed here, by index: the leader applies them without decoding its own
        # entries again (the term tells whether the entry at that index is still ours).
        self._proposed: dict[int, tuple[int, pb.DataRequest]] = {}
        self.applied = 0
        self.snapshot_index = 0
        self.applied_writes: collections.OrderedDict[str, int] = collections.OrderedDict()
        self._recent: collections.OrderedDict[int, tuple[int, pb.DataResponse]] = \
            collections.OrderedDict()
        self._waiters: dict[int, tuple[int, asyncio.Future]] = {}
        self._reads: dict[bytes, asyncio.Future] = {}
        self._applied_waiters: list[tuple[int, asyncio.Future]] = []
        self._links: dict[int, PeerLink] = {}
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._last_compact_check = 0.0
        self._forwards_in_flight = 0  # while > 0 a forward's reply may name an index applied here
        self.drops = DropCounter()
        self.failure: str | None = None  # why the driver stopped, once it has
        self.on_failure: Callable[[str], None] | None = None  # the owner exits the process

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Open storage, restore the latest snapshot, and start driving (replay follows).

        Storage that fails its checks is set aside, not repaired: with peers to rebuild it,
        the replica moves its Raft files into `quarantine/` (kept), starts empty and
        rejoins (the core keeps it out of elections until a leader has caught it up); the
        executor, still as constructed, then gets the group's snapshot and log like a new
        member, so it ends with exactly its peers' state. Alone, the error stands."""
        try:
            self.storage = DiskStorage.open(self.directory)
        except StorageCorruptError as exc:
            if len(self.peers) < 2:
                raise  # nobody to rebuild it from: the user decides (the error names the file)
            rejoin = quarantine_corrupt(self.directory, exc)
            log.warning('raft replica %d: %s. Its Raft files were moved to %s (kept; the '
                        'corrupt file is now %s) and it rejoins empty: its peers rebuild it '
                        'from a snapshot and the log. Delete that folder once the group is '
                        'healthy.', self.node_id, exc, rejoin.quarantined, rejoin.corrupt_file)
            self.storage = DiskStorage.open(self.directory)
        log.info('raft replica %d storage: %s', self.node_id, self.storage.report.summary())
        snapshot = self.storage.snapshot()
        if not snapshot.is_empty:
            await self._restore(snapshot.data)
            self.applied = self.snapshot_index = snapshot.meta.index
        config = self.settings.core_config(self.node_id, tuple(sorted(self.peers)), self.applied)
        if self.joining:  # the group's log (or snapshot) says who is who once it arrives
            config = dataclasses.replace(
                config, peers=tuple(sorted(p for p in self.peers if p != self.node_id)),
                learners=(self.node_id,))
        if self.storage.rejoin is not None:
            config = dataclasses.replace(config, rejoin_commit=self.storage.rejoin.until_commit)
        self.node = RaftNode(config, self.storage, rng=random.Random())
        self.wal = WalWriter(self.storage)
        self._links = {}
        for peer, address in self.peers.items():
            self._link_to(peer, address)
        self._tasks = [asyncio.ensure_future(self._tick()), asyncio.ensure_future(self._drive())]
        self._wake.set()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for link in self._links.values():
            await link.close()
        if self.wal is not None:
            self.wal.close()  # a batch being written finishes first
        if self.storage is not None:
            self.storage.close()

    # -- inputs ----------------------------------------------------------------------------
    def receive(self, data: bytes) -> None:
        """Step one peer message; anything an honest peer of this group cannot have sent is
        a counted drop, never an error that reaches the driver."""
        try:
            message = Message.from_bytes(data)
        except MessageDecodeError as exc:
            return self.drops.drop('malformed', lambda exc=exc: str(exc))
        if message.dst != self.node_id:
            return self.drops.drop('wrong_dst', message.describe)
        if message.src == self.node_id or message.src not in self.peers:
            return self.drops.drop('unknown_src', message.describe)
        try:
            self.node.step(message)
        except Exception as exc:  # the core refused it (e.g. a commit past our log)
            self.drops.drop('refused', lambda exc=exc: f'{message.describe()}: {exc}')
        self._wake.set()  # a refused message may have changed the term before it failed

    async def propose(self, request: pb.DataRequest) -> pb.ProposeReply:
        """A write forwarded by a follower (or taken here): append it if this replica leads.

        It waits for the driver's next round, which proposes everything queued by then as
        one batch; the reply says where the entry landed (or who leads)."""
        future = asyncio.get_running_loop().create_future()
        self._proposals.append((request, future))
        self._wake.set()
        return await future

    async def write(self, request: pb.DataRequest) -> pb.DataResponse:
        """Commit `request` in the log, then return this replica's result of applying it."""
        deadline = time.monotonic() + WRITE_TIMEOUT_S
        while True:
            if request.write_id and request.write_id in self.applied_writes:
                return pass_through(request)  # a retry of a write that already applied
            term, index = await self._place(request, deadline)
            try:
                return await self._result_of(term, index, deadline)
            except ProposalLost:
                continue

    async def read_barrier(self, timeout: float = READ_TIMEOUT_S) -> None:
        """Return once this replica has applied everything committed before the call.

        A read point asked of a leader that then loses its leadership is never given (the
        next leader knows nothing of it), so the question is asked again, under the same
        context, whenever the leader changes or an election timeout passes unanswered;
        an election in between is waited for, up to ``timeout`` in all. Any answer is a
        valid read point: each was asked after the call began."""
        deadline = time.monotonic() + timeout
        context = uuid.uuid4().bytes
        future = asyncio.get_running_loop().create_future()
        self._reads[context] = future
        poll = self.settings.heartbeat_ms / 1000
        patience = self.settings.election_ms / 1000
        try:
            while not future.done():
                try:
                    self.node.read_index(context)
                except NotLeaderError:
                    await self._until_leader_known(deadline)
                    continue
                self._wake.set()
                asked_of, asked_at = (self.node.term, self.node.leader), time.monotonic()
                while not future.done():
                    now = time.monotonic()
                    if now >= deadline:
                        raise TimeoutError
                    if (self.node.term, self.node.leader) != asked_of or now - asked_at >= patience:
                        break  # ask again
                    await asyncio.wait({future}, timeout=min(poll, deadline - now))
        except TimeoutError:  # also from _until_leader_known
            raise TimeoutError('no linearizable read point: the group has no leader') from None
        finally:
            self._reads.pop(context, None)
        await self._applied_at_least(future.result())

    async def change_membership(self, op: str, node: int, address: str = '') -> dict:
        """Make one membership change if this replica leads, and answer once it committed:
        {'index': n}, or {'error': why, 'leader': who leads (0: unknown)}."""
        kinds = {str(kind): kind for kind in ConfOp}
        if op not in kinds:
            return {'error': f'unknown membership change {op!r} (one of {", ".join(kinds)})',
                    'leader': self.node.leader}
        if kinds[op] is ConfOp.ADD_LEARNER and _address_of(address.encode()) is None:
            return {'error': f'adding node {node} needs its Raft address as host:port, got '
                             f'{address!r}', 'leader': self.node.leader}
        change = ConfChange(kinds[op], node, address.encode())
        conf, log_ = self.node.conf_state(), self.node.raft.log
        done = {ConfOp.ADD_LEARNER: node in conf.learners, ConfOp.PROMOTE: node in conf.voters,
                ConfOp.REMOVE: node not in conf.members}[change.op]
        if done and self.node.role is Role.LEADER and log_.conf_index() <= log_.committed:
            return {'index': log_.conf_index()}  # asked again after a lost answer: it is made
        try:
            where = self.node.propose_conf_change(change)
        except NotLeaderError as exc:
            return {'error': 'not the leader', 'leader': exc.leader}
        except ConfChangeError as exc:
            return {'error': str(exc), 'leader': self.node_id}
        self._learn_member(change)  # its link must exist before the entry is sent to it
        self._wake.set()
        try:
            await asyncio.wait_for(self._applied_at_least(where.index), WRITE_TIMEOUT_S)
        except asyncio.TimeoutError:
            return {'error': f'the change at index {where.index} did not commit within '
                             f'{WRITE_TIMEOUT_S:.0f} s', 'leader': self.node.leader}
        if self.node.raft.log.term(where.index) not in (where.term, None):
            return {'error': 'the change was lost in a leader change; ask again',
                    'leader': self.node.leader}
        return {'index': where.index}

    def _learn_member(self, change: ConfChange) -> None:
        if change.op is ConfOp.ADD_LEARNER and change.context:
            address = _address_of(change.context)
            if address is None:
                return self.drops.drop('bad_address', lambda: f'{change}: {change.context!r}')
            if self.peers.get(change.node) != address or change.node not in self._links:
                self.peers[change.node] = address
                self._link_to(change.node, address)

    def _link_to(self, peer: int, address: str) -> None:
        if peer == self.node_id:
            return
        old = self._links.pop(peer, None)
        if old is not None:
            asyncio.ensure_future(old.close())
        self._links[peer] = self._connect(peer, address, self._unreachable, self.max_message_size)

    def status(self) -> dict:
        s = self.node.status()
        return {'id': self.node_id, 'role': str(s.role), 'term': s.term, 'leader': s.leader,
                'commit': s.commit, 'applied': self.applied, 'snapshot_index': self.snapshot_index,
                'peers': len(self.peers), 'voters': list(s.voters), 'learners': list(s.learners),
                'dropped': self.drops.as_dict(),
                'rejoining': s.rejoining, 'storage': self.storage.report.as_dict()}

    # -- placing and awaiting writes -------------------------------------------------------
    async def _place(self, request: pb.DataRequest, deadline: float) -> tuple[int, int]:
        while time.monotonic() < deadline:
            if self.node.role is Role.LEADER:
                reply = await self.propose(request)
            elif self.node.leader:
                link = self._links[self.node.leader]
                self._forwards_in_flight += 1
                try:
                    reply = await link.propose(request, FORWARD_TIMEOUT_S)
                except Exception as exc:  # the leader is gone: wait for the next one
                    log.debug('forward to %d failed: %s', self.node.leader, exc)
                    await asyncio.sleep(self.settings.heartbeat_ms / 1000)
                    continue
                finally:
                    self._forwards_in_flight -= 1
            else:
                await self._until_leader_known(deadline)
                continue
            if not reply.error:
                return reply.term, reply.index
            await asyncio.sleep(self.settings.heartbeat_ms / 1000)
        raise TimeoutError('the write was not committed in time: no leader with a majority')

    async def _result_of(self, term: int, index: int, deadline: float) -> pb.DataResponse:
        """This replica's result of applying the entry proposed at (term, index).

        Raises ProposalLost when another entry took that index, and also when a new term
        began and the index stays unapplied for a few election timeouts: the entry may
        have died with its leader, and the log may never grow that far again. Proposing
        again is safe because a write id applies once.
        """
        recent = self._recent.get(index)
        if recent is not None:  # applied here before the forward's reply arrived
            if recent[0] != term or recent[1] is None:
                raise ProposalLost()
            return recent[1]
        if index <= self.applied:
            raise ProposalLost()  # applied inside a snapshot: write() checks the write ids
        future = asyncio.get_running_loop().create_future()
        self._waiters[index] = (term, future)
        grace = 3 * self.settings.election_ms / 1000
        term_changed_at = None
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError('the write was not committed in time')
                await asyncio.wait((future,), timeout=min(remaining, grace / 3))
                if future.done():
                    return future.result()
                if self.node.term > term:
                    term_changed_at = term_changed_at or time.monotonic()
                    if time.monotonic() - term_changed_at > grace:
                        raise ProposalLost()
        finally:
            self._waiters.pop(index, None)
            if not future.done():
                future.cancel()

    async def _until_leader_known(self, deadline: float) -> None:
        while not self.node.leader:
            if time.monotonic() >= deadline:
                raise TimeoutError('no Raft leader was elected in time')
            await asyncio.sleep(self.settings.heartbeat_ms / 1000)

    async def _applied_at_least(self, index: int) -> None:
        if self.applied >= index:
            return
        future = asyncio.get_running_loop().create_future()
        self._applied_waiters.append((index, future))
        await future

    # -- the driver loop -------------------------------------------------------------------
    async def _tick(self) -> None:
        interval = self.settings.heartbeat_ms / 1000
        try:
            while True:
                await asyncio.sleep(interval)
                self.node.tick()
                self._wake.set()
        except Exception as exc:
            self._fail('ticking', exc)

    async def _drive(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                self._propose_queued()
                while self.node.has_ready():
                    await self._handle_ready(self.node.ready())
                    self._propose_queued()
                await self._maybe_compact()
        except Exception as exc:
            self._fail('handling a Ready', exc)

    def _propose_queued(self) -> None:
        """Propose every queued write as one batch, and tell each caller where it landed."""
        if not self._proposals:
            return
        batch, self._proposals = self._proposals, []
        try:
            entries = [_entry_request(request) for request, _ in batch]
            where = self.node.propose_many([entry.SerializeToString() for entry in entries])
        except NotLeaderError as exc:
            replies = [pb.ProposeReply(leader=exc.leader, error='not the leader')] * len(batch)
        else:
            replies = [pb.ProposeReply(term=w.term, index=w.index) for w in where]
            for w, entry in zip(where, entries):
                self._proposed[w.index] = (w.term, entry)
        for (_, future), reply in zip(batch, replies):
            if not future.done():
                future.set_result(reply)

    def _fail(self, doing: str, exc: Exception) -> None:
        """A replica whose driver stopped cannot commit or apply again: say why and let the
        owner end the process, so its supervisor restarts it from storage."""
        if self.failure is not None:
            return
        self.failure = f'the Raft driver failed while {doing}: {type(exc).__name__}: {exc}'
        log.error('%s', self.failure, exc_info=exc)
        if self.on_failure is not None:
            self.on_failure(self.failure)

    async def _handle_ready(self, rd) -> None:
        # 0. A leader's appends and heartbeats promise nothing about its own disk (its term
        # and vote became durable before it campaigned), so they go out before its fsync:
        # followers persist the batch while it does.
        sent_early = self.node.role is Role.LEADER and (
            rd.hard_state is None or rd.hard_state.term == self.storage.hard_state.term)
        if sent_early:
            self._send(rd.messages)
        # 1. persist, durably, in this order (core/node.py: Ready)
        if rd.snapshot is not None:
            self.storage.apply_snapshot(rd.snapshot)
        if rd.entries:
            await self.wal.append(rd.entries)  # one write, one fsync, off the loop
        if rd.hard_state is not None:
            # Term and vote are always written durably by the storage; a commit index alone
            # is re-learned from the leader, so it need not cost three more fsyncs per round.
            self.storage.set_hard_state(rd.hard_state, durable=False)
        if self.storage.rejoin is not None and not self.node.rejoining:
            # Caught up, and what it was caught up with is on disk now (no await since ready()).
            self.storage.finish_rejoin()
            log.info('raft replica %d is caught up after its rejoin', self.node_id)
        for entry in rd.entries:  # every entry passes here once, when it reaches our log
            if entry.kind == EntryKind.CONF_CHANGE:  # a newcomer's address, before sending
                self._learn_member(ConfChange.decode(entry.data))
        # 2. send, only after the writes above are on disk
        if not sent_early:
            self._send(rd.messages)
        # 3. apply
        if rd.snapshot is not None:
            await self._restore(rd.snapshot.data)
            self.applied = self.snapshot_index = rd.snapshot.meta.index
            self._proposed.clear()  # a leader is never sent a snapshot: these lost their place
            for index, (term, future) in list(self._waiters.items()):
                if index <= self.applied and not future.done():
                    future.set_exception(ProposalLost())
        if rd.committed_entries:
            await self._apply(rd.committed_entries)
        for read in rd.read_states:
            future = self._reads.get(read.context)
            if future is not None and not future.done():
                future.set_result(read.index)
        # 4. advance
        self.node.advance(rd)
        self._notify_applied()

    async def _apply(self, entries) -> None:
        """Apply committed entries in order; a write id seen before (earlier, or earlier in
        this same batch: a retried proposal can commit twice) is not applied again."""
        requests: dict[int, pb.DataRequest] = {}
        duplicates: set[int] = set()
        seen: set[str] = set()
        for entry in entries:
            proposed = self._proposed.pop(entry.index, None)
            if entry.is_command:
                if proposed is not None and proposed[0] == entry.term:
                    request = requests[entry.index] = proposed[1]
                else:
                    request = requests[entry.index] = pb.DataRequest.FromString(entry.data)
                write_id = request.write_id
                if write_id and (write_id in self.applied_writes or write_id in seen):
                    duplicates.add(entry.index)
                elif write_id:
                    seen.add(write_id)
        todo = [(r, self._answer_wanted(i)) for i, r in requests.items() if i not in duplicates]
        results = iter(await self.sm.apply_many(todo)) if todo else iter(())
        for entry in entries:
            response = None
            request = requests.get(entry.index)
            if request is not None:
                if entry.index in duplicates:
                    response = pass_through(request)
                else:
                    response = next(results)
                    if request.write_id:
                        self._remember(request.write_id, entry.index)
            self.applied = entry.index
            waiter = self._waiters.get(entry.index)
            if waiter is not None and not waiter[1].done():
                term, future = waiter
                if term == entry.term and response is not None:
                    future.set_result(response)
                    continue  # its one asker has it: no copy kept (a reply may be large)
                future.set_exception(ProposalLost())
            # Kept for a forwarded write whose leader's reply (term, index) comes after
            # this apply: `_result_of` finds it here.
            self._recent[entry.index] = (entry.term, response)
            if len(self._recent) > RECENT_RESULTS:
                self._recent.popitem(last=False)

    def _answer_wanted(self, index: int) -> bool:
        """Whether a caller here may want the apply result of `index` (encoding the reply
        docs costs as much as decoding them; most replicas apply for nobody)."""
        return index in self._waiters or self._forwards_in_flight > 0

    def _remember(self, write_id: str, index: int) -> None:
        self.applied_writes[write_id] = index
        if len(self.applied_writes) > REMEMBERED_WRITES:
            self.applied_writes.popitem(last=False)

    def _notify_applied(self) -> None:
        still = []
        for index, future in self._applied_waiters:
            if future.done():
                continue
            if self.applied >= index:
                future.set_result(None)
            else:
                still.append((index, future))
        self._applied_waiters = still

    def _send(self, messages) -> None:
        for message in drop_redundant_appends(messages):
            link = self._links.get(message.dst)
            if link is not None:
                link.send(message.to_bytes())

    def _unreachable(self, peer: int) -> None:
        if self.node is not None:
            self.node.report_unreachable(peer)

    # -- snapshots -------------------------------------------------------------------------
    async def _maybe_compact(self) -> None:
        if not self.sm.can_snapshot:
            return  # executors without snapshot()/restore() keep the full log
        now = time.monotonic()
        if now - self._last_compact_check < self.settings.snapshot_interval_ms / 1000:
            return
        self._last_compact_check = now
        if self.applied - self.snapshot_index < self.settings.snapshot_threshold:
            return
        index = self.applied
        data = _pack_snapshot(list(self.applied_writes), await self.sm.snapshot())
        conf = self.node.conf_at(index)
        self.storage.create_snapshot(index, data, conf.voters, conf.learners)
        self.snapshot_index = index
        keep_from = index - self.settings.trailing_logs
        if keep_from >= self.storage.first_index():
            self.storage.compact(keep_from)
        log.info('snapshot at index %d (%d bytes)', index, len(data))

    async def _restore(self, data: bytes) -> None:
        writes, state = _unpack_snapshot(data)
        self.applied_writes = collections.OrderedDict((w, 0) for w in writes)
        await self.sm.restore(state)


def _address_of(context: bytes) -> str | None:
    """The 'host:port' a membership change carries, or None when it is not one."""
    try:
        address = context.decode()
    except UnicodeDecodeError:
        return None
    host, _, port = address.rpartition(':')
    return address if host and port.isdigit() else None


def _entry_request(request: pb.DataRequest) -> pb.DataRequest:
    """A log entry is the request itself, less the hop-local stream id."""
    entry = pb.DataRequest()
    entry.CopyFrom(request)
    entry.request_id = ''
    return entry


def _pack_snapshot(write_ids: list[str], state: bytes) -> bytes:
    header = json.dumps({'writes': write_ids}).encode()
    return _ENVELOPE.pack(len(header)) + header + state


def _unpack_snapshot(data: bytes) -> tuple[list[str], bytes]:
    (length,) = _ENVELOPE.unpack_from(data)
    header = json.loads(data[_ENVELOPE.size:_ENVELOPE.size + length])
    return header['writes'], data[_ENVELOPE.size + length:]
