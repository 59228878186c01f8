"""nborch's own event loop, on one daemon thread.

The sync API hands coroutines to this loop and waits (`run_sync`); it never nests a loop in
the caller's (a notebook kernel runs one already), so no `asyncio.run` and no nest_asyncio.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from typing import Coroutine, TypeVar

T = TypeVar('T')

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None


def get_loop() -> asyncio.AbstractEventLoop:
    """The loop, started on first use."""
    global _loop, _thread
    with _lock:
        if _loop is None or not _thread.is_alive():
            loop = asyncio.new_event_loop()
            started = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(started.set)
                loop.run_forever()

            _thread = threading.Thread(target=run, name='nborch-loop', daemon=True)
            _thread.start()
            started.wait()
            _loop = loop
        return _loop


def run_sync(coro: Coroutine[object, object, T], timeout: float | None = None) -> T:
    """Run `coro` on nborch's loop and wait for it from this (non-loop) thread.

    Ctrl-C (KeyboardInterrupt) while waiting, or `timeout` (seconds) passing, cancels the
    coroutine before re-raising, so an interrupted `post` leaves nothing running.
    """
    loop = get_loop()
    if threading.current_thread() is _thread:
        raise RuntimeError('run_sync() called from nborch\'s own loop: await the coroutine instead')
    outcome: concurrent.futures.Future = concurrent.futures.Future()
    task: list[asyncio.Task] = []

    def start() -> None:
        if not outcome.cancelled():  # given up on before it started: never run
            task.append(loop.create_task(_settle(coro, outcome)))
        else:
            coro.close()

    loop.call_soon_threadsafe(start)
    try:
        return outcome.result(timeout)
    except (KeyboardInterrupt, concurrent.futures.TimeoutError):
        if outcome.cancel():
            loop.call_soon_threadsafe(lambda: task and task[0].cancel())
        raise


async def _settle(coro: Coroutine[object, object, T], outcome: concurrent.futures.Future) -> None:
    """Await `coro` and hand its outcome to the waiting thread from this same loop turn
    (`asyncio.run_coroutine_threadsafe` takes one more: a done-callback of its task)."""
    try:
        result = await coro
    except asyncio.CancelledError:
        outcome.cancel()
        raise
    except BaseException as exc:
        with contextlib.suppress(concurrent.futures.InvalidStateError):  # given up on
            outcome.set_exception(exc)
        if not isinstance(exc, Exception):
            raise  # SystemExit, KeyboardInterrupt raised in the loop: as asyncio would
    else:
        with contextlib.suppress(concurrent.futures.InvalidStateError):
            outcome.set_result(result)
