"""Routing: which replica serves a request (policy, pure) and calling it (mechanism).

Policy is `choose_replica`, a pure function tested without sockets. Mechanism is
`ReplicaPool`, the one place that owns channels, in-flight counts, retries and ejection of
failed replicas. Shard choice (polling) sits one level up, in the gateway's executor node,
and calls one `ReplicaPool` per shard.
"""
from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Callable, Collection, Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from nborch.protos import nborch_pb2 as pb
from nborch.protos import nborch_pb2_grpc as pb_grpc
from nborch.runtime.auth import STATUS_METHOD, AuthError, LinkAuth, call_unary
from nborch.runtime.grpc_options import channel_options, secure_channel
from nborch.runtime.limits import DEFAULT_MAX_MESSAGE_SIZE
from nborch.runtime.mux import Overdue, StreamError, StreamMux
from nborch.runtime.resolve import dial_target, resolve_replicas
from nborch.runtime.tls import TlsFiles

MAX_LEADER_MOVES = 16  # a write follows a moving leader this many times before it gives up
EJECT_SECONDS = 0.5  # a failed replica is tried last for at least this long
DISCOVERY_REFRESH_S = 5.0  # how often a discovered name is resolved again
# A request unanswered this long makes the router ask whether its replica is alive: far above
# a healthy round trip (~0.3 ms), and about four default election timeouts, so a frozen
# replica holds a request ~3 s instead of until it thaws; honest slow work is never cut.
LIVENESS_CHECK_S = 2.0
PROBE_TIMEOUT_S = 1.0  # a live replica answers a health check from its event loop at once,
                       # even while its executor thread is busy
READMIT_PROBE_S = 0.5  # how often a replica ejected for silence is asked again
LEADER_POLL_TIMEOUT_S = 0.5
DRAIN_POLL_S = 0.005  # how often a removed replica is checked for the requests it still holds


@dataclass(frozen=True)
class CallPolicy:
    """How long one attempt at a replica may take and which requests may be retried.

    `timeout_send` (seconds) is the reference system's option of that name: the limit for a
    request sent to an executor; a replica that misses it is ejected and the request goes
    to another replica where that is safe. Without it, a request has no time limit while
    its replica is alive, but one that stays unanswered for `liveness_check` seconds has its
    replica asked for a health reply, and silence counts as a miss.
    """

    timeout_send: float | None = None
    liveness_check: float | None = LIVENESS_CHECK_S
    endpoints: dict[str, bool] | None = None  # path → is a write; None: unknown (external)
    stateful: bool = False
    election_s: float = 0.5  # a Raft election timeout of the group (stateful only)

    @classmethod
    def from_timeout_send(cls, timeout_send_ms: int | None, **kwargs) -> 'CallPolicy':
        """None: liveness checks only; -1: no limit and no checks (as in the reference
        system); N > 0: N milliseconds per attempt, with liveness checks before it."""
        if timeout_send_ms == -1:
            return cls(None, None, **kwargs)
        return cls(None if timeout_send_ms is None else timeout_send_ms / 1000, **kwargs)

    def is_write(self, endpoint: str) -> bool:
        """Resolved as a worker does: the endpoint's own flag, else `/default`'s."""
        table = self.endpoints
        if not table:
            return False
        flag = table.get(endpoint)
        return table.get('/default', False) if flag is None else flag

    def retry_safe(self, request: pb.DataRequest) -> bool:
        """Whether a request that may already have run can be sent again: reads always;
        writes only to a stateful executor, whose replicas apply one `write_id` once."""
        return not self.is_write(request.endpoint) or (self.stateful and bool(request.write_id))


def newer_leader(known: tuple[int, int], term: int, leader: int) -> bool:
    """Whether a replica's (term, leader) hint should replace the `known` one.

    A higher term wins whoever reports it, even with no leader yet (the known one was
    deposed: stop preferring it); within a term, a hint only fills in an unknown leader.
    """
    known_term, known_leader = known
    return term > known_term or (term == known_term and leader != 0 and known_leader == 0)


def choose_replica(outstanding: Sequence[int], start: int, *, tried: Collection[int] = (),
                   ejected: Collection[int] = (), preferred: int | None = None) -> int | None:
    """The replica to send the next request to, or None when every replica was tried.

    Least outstanding requests wins (the idle replica gets the request first); ties go to
    the first replica at or after `start`, so equal replicas take turns. Replicas in `tried`
    are never chosen; replicas in `ejected` only when no healthy untried one is left.
    A `preferred` replica (the Raft leader, for writes) wins while it is untried and healthy:
    any replica would forward the write to it anyway.
    """
    if preferred is not None and preferred not in tried and preferred not in ejected:
        return preferred
    n = len(outstanding)
    best, best_key = None, None
    for offset in range(n):
        i = (start + offset) % n
        if i in tried:
            continue
        key = (i in ejected, outstanding[i])
        if best_key is None or key < best_key:
            best, best_key = i, key
    return best


class ReplicaSilent(ConnectionError):
    """A replica missed a deadline or stopped answering; the request may have run there."""


class NotRetried(ConnectionError):
    """A request that may have run on a failed replica and is unsafe to run twice."""


class _NotSent(Exception):
    """The request could not be sent (the stream was already broken)."""


class _LeaderMoved(Exception):
    """A newer leader was learned while a write waited at the old one: send it there."""


async def _shared(task: asyncio.Future, closed):
    """Await `task`, which several waiters share (shielded: one waiter's cancellation is
    not the others'); if its owner cancelled it while closing, return `closed` instead of
    raising CancelledError into waiters that were not cancelled themselves (a post in flight
    while the owner stops, or a request on a replica a scale-down removed)."""
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        if task.done() and not caller_cancelled():
            return closed
        raise


def caller_cancelled() -> bool:
    """Whether the running task itself is being cancelled: a CancelledError can also mean
    that something it awaited was cancelled, or that a gRPC call's channel was closed
    under it (grpc.aio raises that)."""
    return bool(asyncio.current_task().cancelling())


def _channel(address: str, max_message_size: int,
             tls: TlsFiles | None = None) -> grpc.aio.Channel:
    """`host:port`, `grpc://host:port` or `grpcs://host:port` (TLS with system roots); with
    `tls`, mutual TLS with those files (the deployment's own replicas)."""
    options = channel_options(max_message_size)
    if tls is not None:
        return secure_channel(dial_target(address.removeprefix('grpc://')), tls, options)
    if address.startswith('grpcs://'):
        return grpc.aio.secure_channel(dial_target(address[len('grpcs://'):]),
                                       grpc.ssl_channel_credentials(), options=options)
    return grpc.aio.insecure_channel(dial_target(address.removeprefix('grpc://')),
                                     options=options)


@dataclass
class Served:
    response: pb.DataResponse
    replica: int


class _Replica:
    """One replica's connection, counters and ejection state."""

    def __init__(self, address: str, executor: str, max_message_size: int,
                 auth: LinkAuth | None = None, tls: TlsFiles | None = None):
        self.address = address
        self.auth = auth
        self.target = dial_target(address.removeprefix('grpcs://').removeprefix('grpc://'))
        self.channel = _channel(address, max_message_size, tls)
        self.stub = pb_grpc.ExecutorStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)
        self.stream = StreamMux(self.channel, auth=auth, target=self.target,
                                max_message_size=max_message_size,
                                limit_of=f'executor {executor!r}')
        self.outstanding = 0
        self.served = 0
        self.failures = 0
        self.deadline_misses = 0  # requests it held past timeout_send or while silent
        self.ejections = 0
        self.ejected_until = 0.0
        self.silent = False       # ejected for not answering: back once a health check is
        self._probe: asyncio.Future | None = None
        self._readmit: asyncio.Task | None = None

    def ejected(self, now: float) -> bool:
        return self.silent or self.ejected_until > now

    async def alive(self) -> bool:
        """Whether the process answers a health check now; concurrent askers share one."""
        if self._probe is None or self._probe.done():
            self._probe = asyncio.ensure_future(self._check())
        return await _shared(self._probe, closed=False)  # closed: it answers nothing more

    async def _check(self) -> bool:
        try:
            await self.health.Check(health_pb2.HealthCheckRequest(), timeout=PROBE_TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:  # any answer but silence means it is alive
            return exc.code() not in (grpc.StatusCode.DEADLINE_EXCEEDED,
                                      grpc.StatusCode.UNAVAILABLE)
        except asyncio.CancelledError:
            if not caller_cancelled():
                return False  # closed under the check: it answers nothing more
            raise
        return True

    def eject_silent(self, now: float) -> None:
        """Tried last until it answers a health check again (at least EJECT_SECONDS)."""
        self.ejections += 1
        self.silent = True
        self.ejected_until = now + EJECT_SECONDS
        if self._readmit is None or self._readmit.done():
            self._readmit = asyncio.ensure_future(self._readmit_when_alive())

    async def _readmit_when_alive(self) -> None:
        while not await self.alive():
            await asyncio.sleep(READMIT_PROBE_S)
        self.silent = False

    async def close(self) -> None:
        for task in (self._readmit, self._probe):
            if task is not None:
                task.cancel()
        await self.stream.close()
        await self.channel.close()


class ReplicaPool:
    """The replicas of one shard of one executor, as seen from the gateway.

    Replicas are fixed addresses, or with `discover` the records a DNS name resolves to,
    refreshed every `refresh_s` (replicas come and go with the pods behind the name).
    Not thread-safe: used from the gateway's event loop only.
    """

    def __init__(self, executor: str, addresses: Sequence[str], *, discover: bool = False,
                 refresh_s: float = DISCOVERY_REFRESH_S, policy: CallPolicy = CallPolicy(),
                 clock: Callable[[], float] = time.monotonic, auth: LinkAuth | None = None,
                 tls: TlsFiles | None = None, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE):
        self.executor = executor
        self.auth = auth  # the deployment's secret: its own replicas must prove it
        self.tls = tls
        self.discover = discover
        self.policy = policy
        self.max_message_size = max_message_size
        self.names = list(addresses)  # what the topology says (DNS names when discovering)
        self.replicas = [] if discover else [self._replica(a) for a in addresses]
        self._refresh_s = refresh_s
        self._resolved_at: float | None = None
        self._rotation = 0
        self._clock = clock
        # The Raft leader as the replicas report it: (term, its replica index + 1; 0: unknown).
        self.leader: tuple[int, int] = (0, 0)
        self._leader_poll: asyncio.Future | None = None
        self._watchdog: asyncio.Task | None = None

    def _replica(self, address: str) -> _Replica:
        return _Replica(address, self.executor, self.max_message_size, self.auth, self.tls)

    @property
    def addresses(self) -> list[str]:
        return [r.address for r in self.replicas]

    async def refresh(self, force: bool = False) -> None:
        """Re-resolve a discovered name when due: new records join, vanished ones leave."""
        now = self._clock()
        if not self.discover or (not force and self._resolved_at is not None
                                 and now - self._resolved_at < self._refresh_s):
            return
        self._resolved_at = now
        found: list[str] = []
        for name in self.names:
            records = await resolve_replicas(name)
            if records is None:  # a DNS failure is not "every replica left": keep them
                return
            found += records
        if found == self.addresses:
            return
        current = {r.address: r for r in self.replicas}
        self.replicas = [current.pop(a, None) or self._replica(a) for a in found]
        for gone in current.values():  # in-flight calls on it fail over to the others
            await gone.close()

    def set_addresses(self, addresses: Sequence[str]) -> list[_Replica]:
        """Make a fixed pool's replicas `addresses`, in this order (the owner scaled or
        replaced replicas). Kept ones keep their channels and counters; the removed ones are
        returned, still open: no new request goes to them, and `drain` waits for what they
        hold."""
        if self.discover:
            raise ValueError(f'executor {self.executor!r}: its replicas are found by DNS '
                             f'({", ".join(self.names)}); they cannot be set')
        current = {r.address: r for r in self.replicas}
        self.replicas = [current.pop(a, None) or self._replica(a) for a in addresses]
        self.names = list(addresses)
        return list(current.values())

    @staticmethod
    async def drain(removed: Sequence[_Replica], timeout: float) -> int:
        """Wait until the removed replicas hold no request (at most `timeout` s), then close
        them; returns how many still held requests when the time ran out."""
        deadline = time.monotonic() + timeout
        while any(r.outstanding for r in removed) and time.monotonic() < deadline:
            await asyncio.sleep(DRAIN_POLL_S)
        undrained = sum(1 for r in removed if r.outstanding)
        for replica in removed:
            await replica.close()
        return undrained

    def _leader_index(self) -> int | None:
        leader = self.leader[1]
        return leader - 1 if 0 < leader <= len(self.replicas) else None

    def hear_leader(self, term: int, leader: int) -> None:
        if newer_leader(self.leader, term, leader):
            self.leader = (term, leader)

    async def call(self, request: pb.DataRequest, timeout: float | None = None) -> Served:
        """Send `request` to one replica, failing over to others where that is safe.

        ConnectionError when no replica could serve it (NotRetried when it may have run on
        one and must not run twice). `timeout` overrides the policy's `timeout_send`.
        """
        if self.discover:  # fixed pools skip this: it is on every request's path
            await self.refresh(force=not self.replicas)
        policy = self.policy
        is_write = policy.is_write(request.endpoint)
        deadline = policy.timeout_send if timeout is None else timeout
        tried: list[_Replica] = []
        errors: list[str] = []
        moves = 0
        while True:
            replicas = self.replicas
            now = self._clock()
            i = choose_replica([r.outstanding for r in replicas], self._rotation,
                               tried=[j for j, r in enumerate(replicas) if r in tried],
                               ejected=[j for j, r in enumerate(replicas)
                                        if r.silent or r.ejected_until > now],
                               preferred=self._leader_index() if is_write else None)
            if i is None:
                what = '; '.join(f'{r.address} ({e})' for r, e in zip(tried, errors)) if tried \
                    else f'no replica found at {", ".join(self.names)}'
                raise ConnectionError(
                    f'executor {self.executor!r}: no replica could serve the request; tried {what}')
            replica = replicas[i]
            self._rotation = i + 1
            tried.append(replica)
            replica.outstanding += 1
            try:
                response = await self._attempt(replica, request, deadline,
                                               watch_leader=is_write and policy.stateful)
            except _LeaderMoved:
                # Not a failure of that replica: the write (its id applies once) follows the
                # leader, and may come back here if leadership returns; elections under load
                # can move it several times, so only a run of moves ends it.
                tried.pop()
                moves += 1
                if moves > MAX_LEADER_MOVES:
                    raise ConnectionError(
                        f'executor {self.executor!r}: the Raft leader moved {moves} times while '
                        'the write waited; the group has no stable leader') from None
                continue
            except _NotSent as exc:  # nothing reached the replica: any request may go elsewhere
                replica.failures += 1
                replica.ejected_until = self._clock() + EJECT_SECONDS
                errors.append(str(exc))
                continue
            except (StreamError, ReplicaSilent) as exc:
                replica.failures += 1
                now = self._clock()
                if isinstance(exc, ReplicaSilent):
                    replica.deadline_misses += 1
                    replica.eject_silent(now)
                else:
                    replica.ejected_until = now + EJECT_SECONDS
                errors.append(str(exc) or type(exc).__name__)
                if not policy.retry_safe(request):
                    raise NotRetried(
                        f'executor {self.executor!r}: {request.endpoint} is a write to a '
                        f'stateless executor and may have run on {replica.address} ({exc}); '
                        'not sent again, so it cannot run twice') from None
                continue
            finally:
                replica.outstanding -= 1
            replica.served += 1
            replica.ejected_until = 0.0
            if response.leader_term:
                self.hear_leader(response.leader_term, response.leader_hint)
            return Served(response, self.replicas.index(replica)
                          if replica in self.replicas else i)

    async def _attempt(self, replica: _Replica, request: pb.DataRequest,
                       deadline: float | None, watch_leader: bool) -> pb.DataResponse:
        """One try at one replica, bounded by `deadline` and checked for liveness.

        The wait costs nothing extra while replies are prompt: the pool's watchdog wakes
        a waiter (`Overdue`) only once its next check is due."""
        policy = self.policy
        check = policy.liveness_check
        if watch_leader:  # a frozen leader is noticed within an election timeout
            check = min(check or policy.election_s, policy.election_s)
        limit = check if deadline is None or (check is not None and check < deadline) \
            else deadline
        loop = asyncio.get_running_loop()
        started = loop.time()
        if limit is not None and self._watchdog is None:
            checks = (policy.liveness_check, policy.timeout_send, limit,
                      policy.election_s if policy.stateful else None)
            self._watchdog = asyncio.ensure_future(
                self._watch(min(c for c in checks if c is not None)))
        try:
            request_id, reply = await replica.stream.send(
                request, None if limit is None else started + limit)
        except StreamError as exc:
            raise _NotSent(str(exc)) from None
        try:
            while True:
                try:
                    return await reply
                except Overdue as overdue:
                    reply = overdue.reply
                waited = loop.time() - started
                if deadline is not None and waited >= deadline:
                    raise ReplicaSilent(f'no reply within timeout_send={deadline * 1000:.0f} ms')
                if watch_leader:
                    await self._poll_leader(exclude=replica)
                    leader = self._leader_index()
                    if leader is not None and self.replicas[leader] is not replica:
                        raise _LeaderMoved()
                if reply.done():
                    return reply.result()
                if policy.liveness_check is not None and not await replica.alive():
                    raise ReplicaSilent(f'no reply in {waited:.1f} s and no health reply '
                                        f'in {PROBE_TIMEOUT_S:.0f} s')
                next_check = check if check is not None else deadline
                if deadline is not None:
                    next_check = min(next_check, deadline - (loop.time() - started))
                replica.stream.wake_later(request_id, loop.time() + max(next_check, 0.0))
        finally:
            replica.stream.forget(request_id)

    async def _watch(self, shortest: float) -> None:
        """Wake overdue waiters, a few times per shortest check: one timer per pool instead
        of one per request."""
        tick = max(shortest / 4, 0.01)
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(tick)
            now = loop.time()
            for replica in self.replicas:
                replica.stream.wake_overdue(now)

    async def _poll_leader(self, exclude: _Replica) -> None:
        """Ask the other replicas who leads (one poll at a time, shared by the waiters)."""
        if self._leader_poll is None or self._leader_poll.done():
            self._leader_poll = asyncio.ensure_future(asyncio.gather(
                *(self.status(r, timeout=LEADER_POLL_TIMEOUT_S)
                  for r in self.replicas if r is not exclude)))
        for report in await _shared(self._leader_poll, closed=()):
            raft = (report or {}).get('raft') or {}
            leader = raft.get('leader_replica')
            self.hear_leader(int(raft.get('term') or 0), 0 if leader is None else int(leader) + 1)

    @staticmethod
    async def status(replica: _Replica, timeout: float = 2.0) -> dict | None:
        """The replica's own status report, or None when it does not answer."""
        try:
            reply = await call_unary(replica.auth, STATUS_METHOD, replica.target,
                                     replica.stub.Status, pb.StatusRequest(), timeout=timeout)
        except (grpc.aio.AioRpcError, AuthError):
            return None
        except asyncio.CancelledError:
            if not caller_cancelled():
                return None  # closed under the call
            raise
        return json.loads(reply.json)

    async def close(self) -> None:
        for task in (self._leader_poll, self._watchdog):
            if task is not None:
                task.cancel()
        for replica in self.replicas:
            await replica.close()
        self.replicas = []
