"""nborch's own event loop, on one daemon thread.

The sync API hands coroutines to this loop and waits (`run_sync`); it never nests a loop in
the caller's (a notebook kernel runs one already), so no `asyncio.run` and no nest_asyncio.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Awaitable, TypeVar

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


def run_sync(coro: Awaitable[T], timeout: float | None = None) -> T:
    """Run `coro` on nborch's loop and wait for it from this (non-loop) thread.

    Ctrl-C (KeyboardInterrupt) while waiting cancels the coroutine before re-raising, so an
    interrupted `post` leaves nothing running.
    """
    loop = get_loop()
    if threading.current_thread() is _thread:
        raise RuntimeError('run_sync() called from nborch\'s own loop: await the coroutine instead')
    future = asyncio.run_coroutine_threadsafe(coro, loop)
    try:
        return future.result(timeout)
    except (KeyboardInterrupt, concurrent.futures.TimeoutError):
        future.cancel()
        raise
