"""`BatchQueue` on its own: plain lists for docs, an async function for the endpoint."""
import asyncio
import time

import pytest

from nborch.runtime.batching import BatchQueue


class Recorder:
    """An endpoint that upper-cases its docs and records each call's batch."""

    def __init__(self, fail_on=None, returns=None, delay: float = 0.0):
        self.calls: list[list[str]] = []
        self.fail_on = fail_on
        self.returns = returns
        self.delay = delay

    async def __call__(self, docs):
        self.calls.append(list(docs))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail_on is not None and self.fail_on in docs:
            raise KeyError(self.fail_on)
        if self.returns is not None:
            return self.returns(docs)
        return [d.upper() for d in docs]


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 10))


def test_requests_are_gathered_up_to_the_preferred_size_and_each_gets_its_own_docs():
    async def scenario():
        endpoint = Recorder()
        queue = BatchQueue(endpoint, preferred_batch_size=4, timeout=60)
        results = await asyncio.gather(*(queue.push([f'd{i}']) for i in range(8)))
        return endpoint.calls, results

    calls, results = run(scenario())
    assert calls == [['d0', 'd1', 'd2', 'd3'], ['d4', 'd5', 'd6', 'd7']]
    assert results == [[f'D{i}'] for i in range(8)]


def test_fewer_docs_than_preferred_are_flushed_after_the_timeout():
    async def scenario():
        endpoint = Recorder()
        queue = BatchQueue(endpoint, preferred_batch_size=4, timeout=0.2)
        start = time.monotonic()
        results = await asyncio.gather(*(queue.push([f'd{i}']) for i in range(3)))
        return endpoint.calls, results, time.monotonic() - start

    calls, results, elapsed = run(scenario())
    assert calls == [['d0', 'd1', 'd2']] and results == [['D0'], ['D1'], ['D2']]
    assert 0.18 < elapsed < 2


def test_the_timeout_counts_from_the_oldest_waiting_request():
    async def scenario():
        endpoint = Recorder()
        queue = BatchQueue(endpoint, preferred_batch_size=10, timeout=0.3)
        start = time.monotonic()
        first = asyncio.ensure_future(queue.push(['a']))
        await asyncio.sleep(0.2)
        second = asyncio.ensure_future(queue.push(['b']))  # does not restart the clock
        await asyncio.gather(first, second)
        return endpoint.calls, time.monotonic() - start

    calls, elapsed = run(scenario())
    assert calls == [['a', 'b']]
    assert 0.28 < elapsed < 0.45


def test_a_large_request_is_cut_into_calls_of_the_preferred_size():
    async def scenario():
        endpoint = Recorder()
        queue = BatchQueue(endpoint, preferred_batch_size=4, timeout=60)
        big = [f'd{i}' for i in range(10)]
        return endpoint, await queue.push(big)

    endpoint, result = run(scenario())
    assert [len(c) for c in endpoint.calls] == [4, 4, 2]
    assert result == [f'D{i}' for i in range(10)]


def test_a_request_split_across_two_calls_gets_its_docs_back_joined_in_order():
    async def scenario():
        endpoint = Recorder()
        queue = BatchQueue(endpoint, preferred_batch_size=4, timeout=60)
        first = asyncio.ensure_future(queue.push(['a', 'b', 'c']))
        await asyncio.sleep(0)
        second = await queue.push(['d', 'e', 'f'])  # 6 >= 4: flushed as [a b c d] [e f]
        return endpoint.calls, await first, second

    calls, first, second = run(scenario())
    assert calls == [['a', 'b', 'c', 'd'], ['e', 'f']]
    assert (first, second) == (['A', 'B', 'C'], ['D', 'E', 'F'])


def test_flush_all_makes_one_call_of_everything_queued():
    async def scenario():
        endpoint = Recorder()
        queue = BatchQueue(endpoint, preferred_batch_size=2, timeout=60, flush_all=True)
        first = asyncio.ensure_future(queue.push(['a']))
        await asyncio.sleep(0)
        second = await queue.push(['b', 'c', 'd'])
        return endpoint.calls, await first, second

    calls, first, second = run(scenario())
    assert calls == [['a', 'b', 'c', 'd']] and first == ['A'] and second == ['B', 'C', 'D']


def test_an_exception_fails_every_request_of_its_call_and_only_those():
    async def scenario():
        endpoint = Recorder(fail_on='bad')
        queue = BatchQueue(endpoint, preferred_batch_size=2, timeout=60)
        return await asyncio.gather(*(queue.push([d]) for d in ('ok', 'bad', 'x', 'y')),
                                    return_exceptions=True)

    first, second, third, fourth = run(scenario())
    assert isinstance(first, KeyError) and isinstance(second, KeyError)
    assert (third, fourth) == (['X'], ['Y'])


def test_none_means_the_docs_were_changed_in_place():
    async def scenario():
        docs = [[1], [2]]

        async def bump(batch):
            for d in batch:
                d.append('seen')

        queue = BatchQueue(bump, preferred_batch_size=2, timeout=60)
        return await asyncio.gather(*(queue.push([d]) for d in docs))

    assert run(scenario()) == [[[1, 'seen']], [[2, 'seen']]]


@pytest.mark.parametrize('returns, error, match', [
    (lambda docs: docs[:-1], ValueError, 'given: got 2, returned 1'),
    (lambda docs: {'n': len(docs)}, TypeError, 'returns a DocList or None, got dict'),
    (lambda docs: tuple(docs), TypeError, 'got tuple'),
])
def test_a_result_that_cannot_be_split_fails_the_call(returns, error, match):
    async def scenario():
        queue = BatchQueue(Recorder(returns=returns), preferred_batch_size=2, timeout=60)
        return await asyncio.gather(queue.push(['a']), queue.push(['b']), return_exceptions=True)

    for outcome in run(scenario()):
        assert isinstance(outcome, error) and match in str(outcome)


def test_requests_arriving_during_a_call_make_the_next_batch():
    async def scenario():
        endpoint = Recorder(delay=0.1)
        queue = BatchQueue(endpoint, preferred_batch_size=2, timeout=60)
        first = asyncio.gather(queue.push(['a']), queue.push(['b']))
        await asyncio.sleep(0.02)  # the first call is running
        second = asyncio.gather(queue.push(['c']), queue.push(['d']))
        return endpoint.calls, await first, await second

    calls, first, second = run(scenario())
    assert calls == [['a', 'b'], ['c', 'd']]
    assert first == [['A'], ['B']] and second == [['C'], ['D']]


def test_close_runs_what_waits_without_waiting_for_the_timeout():
    async def scenario():
        endpoint = Recorder()
        queue = BatchQueue(endpoint, preferred_batch_size=10, timeout=60)
        waiting = asyncio.ensure_future(queue.push(['a']))
        await asyncio.sleep(0)
        assert queue.queued == 1
        await queue.close()
        return endpoint.calls, await waiting, queue.queued

    assert run(scenario()) == ([['a']], ['A'], 0)


def test_a_request_without_docs_never_waits():
    async def scenario():
        endpoint = Recorder()
        queue = BatchQueue(endpoint, preferred_batch_size=2, timeout=60)
        return endpoint.calls, await queue.push([])

    assert run(scenario()) == ([], [])


def test_a_caller_that_stopped_waiting_does_not_break_the_batch():
    async def scenario():
        endpoint = Recorder(delay=0.05)
        queue = BatchQueue(endpoint, preferred_batch_size=2, timeout=60)
        gone = asyncio.ensure_future(queue.push(['a']))
        await asyncio.sleep(0)
        stays = asyncio.ensure_future(queue.push(['b']))
        await asyncio.sleep(0.01)
        gone.cancel()
        return await stays

    assert run(scenario()) == ['B']


def test_what_arrives_during_a_call_waits_for_it_and_is_taken_whole():
    async def scenario():
        endpoint = Recorder(delay=0.15)
        queue = BatchQueue(endpoint, preferred_batch_size=4, timeout=0.01)
        first = [asyncio.ensure_future(queue.push([d])) for d in 'abcd']  # full: runs now
        await asyncio.sleep(0.02)
        later = [asyncio.ensure_future(queue.push([d])) for d in 'efg']  # due at +10 ms
        await asyncio.sleep(0.05)
        later += [asyncio.ensure_future(queue.push([d])) for d in 'hi']
        await asyncio.gather(*first, *later)
        return endpoint.calls, [f.result() for f in first + later]

    calls, results = run(scenario())
    assert calls == [list('abcd'), list('efgh'), ['i']]
    assert results == [[d.upper()] for d in 'abcdefghi']


def test_a_batch_that_cannot_be_built_fails_its_requests():
    def refuse(docs):
        raise TypeError('mixed document types')

    async def scenario():
        queue = BatchQueue(Recorder(), preferred_batch_size=2, timeout=60, make_batch=refuse)
        return await asyncio.gather(queue.push(['a']), queue.push(['b']), return_exceptions=True)

    assert [str(e) for e in run(scenario())] == ['mixed document types'] * 2


def test_a_custom_metric_weighs_docs_for_the_flush_and_the_calls():
    async def scenario():
        endpoint = Recorder()
        queue = BatchQueue(endpoint, preferred_batch_size=10, timeout=60, weight=len)
        short = asyncio.ensure_future(queue.push(['ab', 'cd']))  # weighs 4: waits
        await asyncio.sleep(0)
        assert not short.done()
        long_ = await queue.push(['efghij', 'k', 'lmnopqrstu'])  # 4 + 7 >= 10: flushed
        return endpoint.calls, await short, long_

    calls, short, long_ = run(scenario())
    # A call takes docs until their weight reaches 10: [2 2 6] then [1 10].
    assert calls == [['ab', 'cd', 'efghij'], ['k', 'lmnopqrstu']]
    assert short == ['AB', 'CD'] and long_ == ['EFGHIJ', 'K', 'LMNOPQRSTU']
