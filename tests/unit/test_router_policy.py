"""choose_replica: least outstanding wins, ties by rotation, tried never twice."""
import asyncio

import pytest

from nborch.runtime.router import choose_replica


def test_idle_replica_gets_the_request():
    assert choose_replica([2, 0, 1], start=0) == 1


def test_ties_go_to_first_at_or_after_rotation():
    assert choose_replica([0, 0, 0], start=0) == 0
    assert choose_replica([0, 0, 0], start=1) == 1
    assert choose_replica([0, 0, 0], start=5) == 2


def test_rotation_spreads_sequential_requests():
    outstanding, start, picks = [0, 0, 0], 0, []
    for _ in range(6):
        i = choose_replica(outstanding, start)
        picks.append(i)
        start = i + 1
    assert picks == [0, 1, 2, 0, 1, 2]


def test_busy_replica_is_skipped_even_at_rotation_start():
    assert choose_replica([5, 1, 1], start=0) == 1


def test_tried_replicas_are_never_chosen_again():
    assert choose_replica([0, 0, 0], start=0, tried=[0]) == 1
    assert choose_replica([0, 9, 0], start=0, tried=[0, 2]) == 1
    assert choose_replica([0, 0, 0], start=0, tried=[0, 1, 2]) is None


def test_ejected_replicas_only_when_nothing_else_is_left():
    assert choose_replica([0, 3], start=0, ejected=[0]) == 1
    assert choose_replica([0, 3], start=0, tried=[1], ejected=[0]) == 0


def test_every_replica_is_reachable_by_retries():
    n = 5
    tried = []
    while (i := choose_replica([0] * n, start=3, tried=tried)) is not None:
        tried.append(i)
    assert sorted(tried) == list(range(n))
    assert tried[0] == 3


def test_single_replica():
    assert choose_replica([7], start=4) == 0
    assert choose_replica([7], start=4, tried=[0]) is None


def test_stream_mux_leaves_the_callers_request_alone():
    """ALL polling hands one request to several streams at once: each tags its own copy."""
    from nborch.protos import nborch_pb2 as pb
    from nborch.runtime.mux import StreamMux

    class FakeCall:
        def __init__(self):
            self.written = []

        async def write(self, message):
            self.written.extend(message.requests)
            await asyncio.sleep(0)

        async def read(self):
            await asyncio.sleep(3600)

    class FakeStub:
        def __init__(self):
            self.call = FakeCall()

        def StreamBatches(self):
            return self.call

    async def main():
        muxes = [StreamMux(NoChannel()) for _ in range(2)]
        for skip, mux in enumerate(muxes):
            mux._stub = FakeStub()
            mux._ids = iter(range(skip * 10, 100))
        request = pb.DataRequest(endpoint='/search', request_id='mine')
        calls = [asyncio.ensure_future(m.call(request, timeout=0.05)) for m in muxes]
        await asyncio.gather(*calls, return_exceptions=True)
        return request, [m._stub.call.written for m in muxes]

    request, written = asyncio.run(main())
    assert request.request_id == 'mine'
    assert [w[0].request_id for w in written] == ['0', '10']


def test_preferred_replica_wins_while_untried_and_healthy():
    assert choose_replica([9, 0, 0], start=1, preferred=0) == 0
    assert choose_replica([9, 0, 0], start=1, preferred=0, tried=[0]) == 1
    assert choose_replica([9, 0, 5], start=0, preferred=0, ejected=[0]) == 1


# -- deadlines, retry safety and leader hints (pure policy) ---------------------------------

from nborch.protos import nborch_pb2 as pb  # noqa: E402
from nborch.runtime.router import LIVENESS_CHECK_S, CallPolicy, newer_leader  # noqa: E402


def test_timeout_send_forms():
    assert CallPolicy.from_timeout_send(None) == CallPolicy(None, LIVENESS_CHECK_S)
    assert CallPolicy.from_timeout_send(-1) == CallPolicy(None, None)  # no limit, no checks
    assert CallPolicy.from_timeout_send(1500).timeout_send == 1.5


def test_writes_resolve_like_the_worker_does():
    policy = CallPolicy(endpoints={'/index': True, '/search': False, '/default': True})
    assert policy.is_write('/index') and not policy.is_write('/search')
    assert policy.is_write('/anything')  # served by /default
    assert not CallPolicy(endpoints={'/search': False}).is_write('/other')
    assert not CallPolicy(endpoints=None).is_write('/index')  # external: unknown


def test_reads_always_retry_writes_only_with_an_id_on_a_stateful_executor():
    endpoints = {'/index': True, '/search': False}
    stateless, stateful = CallPolicy(endpoints=endpoints), CallPolicy(endpoints=endpoints,
                                                                      stateful=True)
    read = pb.DataRequest(endpoint='/search')
    write = pb.DataRequest(endpoint='/index', write_id='w1')
    assert stateless.retry_safe(read) and stateful.retry_safe(read)
    assert not stateless.retry_safe(write)  # it may have run: never silently twice
    assert stateful.retry_safe(write)       # applied once per write id
    assert not stateful.retry_safe(pb.DataRequest(endpoint='/index'))


def test_a_newer_term_wins_from_any_replica():
    assert newer_leader((3, 1), 4, 2)
    assert newer_leader((3, 1), 4, 0)       # deposed: stop preferring the old leader
    assert not newer_leader((4, 2), 3, 1)   # a thawed ex-leader's stale view
    assert not newer_leader((4, 2), 4, 1)   # same term: the known leader stays
    assert newer_leader((4, 0), 4, 2)       # same term: an unknown leader is filled in
    assert not newer_leader((4, 2), 4, 0)


def test_an_overdue_waiter_is_woken_and_a_late_reply_still_lands():
    """The watchdog's wake: Overdue into the waiter, a fresh future takes the reply."""
    from nborch.runtime.mux import Overdue, StreamMux

    class SlowCall:
        def __init__(self):
            self.written, self.release = [], asyncio.Event()

        async def write(self, message):
            self.written.extend(message.requests)

        async def read(self):
            await self.release.wait()
            self.release.clear()
            return pb.DataResponses(responses=[
                pb.DataResponse(request_id=self.written[-1].request_id, docs=b'late')])

        def cancel(self):
            pass

    async def main():
        call = SlowCall()
        mux = StreamMux(NoChannel())
        mux._stub = type('S', (), {'StreamBatches': lambda self: call})()
        loop = asyncio.get_running_loop()
        request_id, reply = await mux.send(pb.DataRequest(endpoint='/'), loop.time() + 60)
        mux.wake_overdue(loop.time())       # not due yet: nothing happens
        assert not reply.done()
        mux.wake_overdue(loop.time() + 61)  # due: the waiter hears of it once
        try:
            await reply
            raise AssertionError('not woken')
        except Overdue as overdue:
            reply = overdue.reply
        mux.wake_overdue(loop.time() + 120)  # woken once per wake_at
        assert not reply.done()
        call.release.set()
        late = await asyncio.wait_for(reply, 5)
        mux.forget(request_id)
        await mux.close()
        return late

    assert asyncio.run(main()).docs == b'late'


def test_a_write_follows_a_moving_leader_back_to_a_replica_it_left():
    """Elections under load can move the leader away from a waiting write and back: each
    move re-sends the write (its id applies once), and a replica it left is no failure.
    Counting moves as tries once ran a write out of replicas during a leader's kill -9."""
    from nborch.runtime import router

    async def main():
        pool = router.ReplicaPool('ledger', ['127.0.0.1:1', '127.0.0.1:2', '127.0.0.1:3'],
                                  policy=CallPolicy(endpoints={'/index': True}, stateful=True))
        visits = []

        async def attempt(replica, request, deadline, watch_leader):
            visits.append(pool.replicas.index(replica))
            if len(visits) <= 4:  # the leader moves 0 → 1 → 2 → 0 → 1 while it waits
                pool.leader = (len(visits) + 1, len(visits) % 3 + 1)
                raise router._LeaderMoved()
            return pb.DataResponse()

        pool._attempt = attempt
        pool.leader = (1, 1)
        served = await pool.call(pb.DataRequest(endpoint='/index', write_id='w1'))
        await pool.close()
        return visits, served.replica

    visits, replica = asyncio.run(main())
    assert visits == [0, 1, 2, 0, 1] and replica == 1


def test_a_write_gives_up_when_the_leader_never_settles():
    from nborch.runtime import router

    async def main():
        pool = router.ReplicaPool('ledger', ['127.0.0.1:1', '127.0.0.1:2'],
                                  policy=CallPolicy(endpoints={'/index': True}, stateful=True))

        async def attempt(replica, request, deadline, watch_leader):
            term, leader = pool.leader
            pool.leader = (term + 1, 3 - leader)
            raise router._LeaderMoved()

        pool._attempt = attempt
        pool.leader = (1, 1)
        try:
            with pytest.raises(ConnectionError, match='moved 17 times'):
                await pool.call(pb.DataRequest(endpoint='/index', write_id='w1'))
        finally:
            await pool.close()

    asyncio.run(main())


class NoChannel:
    """Enough of a channel for a StreamMux to build its stub; tests swap the stub."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None
