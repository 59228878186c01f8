"""Coalesced, rate-limited drawing from one writer thread per widget.

`Coalescer` is the pure part (a latest-value mailbox with a rate limit and an injectable
clock, tested without sleeps). `Writer` is the one thread that polls a source, if any, and
draws what the coalescer lets through. Nothing here knows about ipywidgets or nborch.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable

_NOTHING = object()
_EPSILON = 1e-9  # clock readings closer than this count as the same instant


class Coalescer:
    """Keeps only the newest submitted value and draws at most `max_hz` times a second.

    Contract: any thread may `submit()`; `pump()` and `flush()` draw, and draws never overlap
    (one lock), so `draw` is only ever called by one thread at a time. A value submitted while
    another waits replaces it: the drawing always shows the latest state, never a backlog.
    """

    def __init__(self, draw: Callable[[Any], None], max_hz: float = 10.0,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        if max_hz <= 0:
            raise ValueError(f'max_hz={max_hz!r}: must be > 0')
        self._draw = draw
        self.interval = 1.0 / max_hz
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._draw_lock = threading.Lock()
        self._value: Any = _NOTHING
        self._last: float | None = None
        self.draws = 0
        self.submitted = 0

    @property
    def pending(self) -> bool:
        return self._value is not _NOTHING

    def submit(self, value: Any) -> None:
        with self._lock:
            self._value = value
            self.submitted += 1

    def due_in(self) -> float | None:
        """Seconds until the waiting value may be drawn (0: now); None when nothing waits."""
        if self._value is _NOTHING:
            return None
        return self._remaining(self._clock())

    def _remaining(self, now: float) -> float:
        if self._last is None:
            return 0.0
        remaining = self._last + self.interval - now
        return remaining if remaining > _EPSILON else 0.0

    def pump(self) -> bool:
        """Draw the waiting value if the rate allows; True when it drew."""
        with self._draw_lock:
            with self._lock:
                if self._value is _NOTHING:
                    return False
                now = self._clock()
                if self._remaining(now) > 0:
                    return False
                value, self._value = self._value, _NOTHING
                self._last = now
            self.draws += 1
            self._draw(value)
            return True

    def flush(self) -> bool:
        """Draw the waiting value as soon as the rate allows (waits at most one interval)."""
        while (delay := self.due_in()) is not None:
            if delay > 0:
                self._sleep(delay)
            if self.pump():
                return True
        return False


class Writer:
    """The one thread that draws for one widget.

    With `poll`, it calls `poll()` every `interval` seconds; `poll` submits to the coalescer
    and returns False once there is nothing more to watch (the orchestration stopped), then
    the writer draws the last value and ends. Without `poll`, it only drains submitted
    values and ends after `idle_exit` seconds without any (`kick()` starts it again).
    """

    def __init__(self, coalescer: Coalescer, *, poll: Callable[[], bool] | None = None,
                 interval: float = 0.1, idle_exit: float = 2.0, name: str = 'nborch-widget'):
        self.coalescer = coalescer
        self._poll = poll
        self.interval = interval
        self.idle_exit = idle_exit
        self.name = name
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> 'Writer':
        with self._lock:
            if self._stopping.is_set() or self.alive:
                return self
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()
        return self

    def kick(self) -> None:
        """Something was submitted: wake the writer (start it if it ended while idle)."""
        self._wake.set()
        if not self.alive:
            self.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the thread to end and wait for it (unless called from the thread itself)."""
        self._stopping.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        try:
            if self._poll is None:
                self._drain()
            else:
                self._watch()
        except BaseException as exc:  # a broken view must not kill the kernel's threads
            self.error = exc

    def _watch(self) -> None:
        next_poll = 0.0
        while not self._stopping.is_set():
            now = time.monotonic()
            if now >= next_poll:
                more = self._poll()
                next_poll = now + self.interval
                if not more:
                    self.coalescer.flush()
                    return
            self.coalescer.pump()
            due = self.coalescer.due_in()
            wait = next_poll - time.monotonic()
            if due is not None:
                wait = min(wait, due)
            self._wake.wait(max(wait, 0.0))
            self._wake.clear()

    def _drain(self) -> None:
        while not self._stopping.is_set():
            self.coalescer.pump()
            due = self.coalescer.due_in()
            woke = self._wake.wait(self.idle_exit if due is None else due)
            self._wake.clear()
            if not woke and due is None:
                with self._lock:
                    if not self.coalescer.pending:
                        self._thread = None
                        return
        self.coalescer.flush()
