"""`run_sync`: a coroutine run on nborch's loop from another thread, and given up on cleanly."""
import asyncio
import concurrent.futures
import threading

import pytest

from nborch._loop import get_loop, run_sync


def test_the_result_and_the_exception_come_back_to_the_caller():
    async def double(x):
        await asyncio.sleep(0)
        return 2 * x

    async def fail():
        raise ValueError('no')

    assert run_sync(double(21)) == 42
    with pytest.raises(ValueError, match='no'):
        run_sync(fail())


def test_a_timeout_cancels_the_coroutine():
    cancelled = threading.Event()

    async def forever():
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(concurrent.futures.TimeoutError):
        run_sync(forever(), timeout=0.05)
    assert cancelled.wait(5)


def test_a_coroutine_cancelled_on_the_loop_cancels_the_wait():
    async def cancelled_inside():
        asyncio.current_task().cancel()
        await asyncio.sleep(1)

    with pytest.raises(concurrent.futures.CancelledError):
        run_sync(cancelled_inside())


def test_calling_it_from_the_loop_itself_is_refused():
    async def nested():
        coro = asyncio.sleep(0)
        try:
            run_sync(coro)
        finally:
            coro.close()

    future = asyncio.run_coroutine_threadsafe(nested(), get_loop())
    with pytest.raises(RuntimeError, match='own loop'):
        future.result(5)
