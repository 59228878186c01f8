"""choose_replica: least outstanding wins, ties by rotation, tried never twice (SPEC §3)."""
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
    import asyncio

    from nborch.protos import nborch_pb2 as pb
    from nborch.runtime.mux import StreamMux

    class FakeCall:
        def __init__(self):
            self.written = []

        async def write(self, message):
            self.written.append(message)
            await asyncio.sleep(0)

        async def read(self):
            await asyncio.sleep(3600)

    class FakeStub:
        def __init__(self):
            self.call = FakeCall()

        def Stream(self):
            return self.call

    async def main():
        muxes = [StreamMux.__new__(StreamMux) for _ in range(2)]
        for skip, mux in enumerate(muxes):
            mux._stub, mux._stream = FakeStub(), None
            mux._max_message_size, mux._limit_of = 1 << 20, 'the test'
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
