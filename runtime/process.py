"""`ChildHandle`: the one owner of one background process (the parent side of runtime/child.py).

Children are started with `subprocess` (never fork: a notebook kernel holds threads and ZMQ
sockets). Their output is read by one thread per child into a log file, a tail kept for
error messages, and an optional echo (the user sees executor prints and logs live).

The deployment secret (runtime/auth.py) reaches a child through an inherited pipe, read once
and closed (`--secret-fd`): not on a command line (`ps` shows those to every user), not in a
file (one left behind by a crash outlives the deployment), not in the environment (every
subprocess an executor starts would inherit it).
"""
from __future__ import annotations

import collections
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from typing import Callable, Mapping, Sequence

from nborch.errors import ChildStartError

TAIL_LINES = 40


class ChildHandle:
    """Starts, watches and stops one `python -m <module>` child.

    Contract: `spawn()` then `wait_ready()` (blocking, off the event loop); `stop()` is
    idempotent and always leaves the process reaped. The death-pipe write end lives only
    here, so the child exits when this process dies, even by SIGKILL.
    """

    def __init__(self, label: str, module: str, args: Sequence[str], *,
                 env: Mapping[str, str] | None = None, log_path: str | None = None,
                 echo: Callable[[str], None] | None = None, secret: bytes | None = None):
        self.label = label
        self.secret = secret
        self.module = module
        self.args = list(args)
        self.env = dict(env if env is not None else os.environ)
        self.log_path = log_path
        self.echo = echo
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self.info: dict = {}
        self.started_at = 0.0
        self._proc: subprocess.Popen | None = None
        self._ready_r: int | None = None
        self._death_w: int | None = None
        self._reader: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def spawn(self) -> None:
        ready_r, ready_w = os.pipe()
        death_r, death_w = os.pipe()
        env = {**self.env, 'PYTHONUNBUFFERED': '1'}
        cmd = [sys.executable, '-m', self.module, *self.args,
               '--ready-fd', str(ready_w), '--parent-fd', str(death_r)]
        passed = [ready_w, death_r]
        if self.secret is not None:
            secret_r, secret_w = os.pipe()
            os.write(secret_w, self.secret)  # far below a pipe's capacity: never blocks
            os.close(secret_w)
            cmd += ['--secret-fd', str(secret_r)]
            passed.append(secret_r)
        try:
            self._proc = subprocess.Popen(
                cmd, pass_fds=passed, env=env, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the owner, which stops children in order
            )
        finally:
            for fd in passed:
                os.close(fd)
        self._ready_r, self._death_w = ready_r, death_w
        self.started_at = time.monotonic()
        self._reader = threading.Thread(target=self._pump_output, name=f'nborch-log-{self.label}',
                                        daemon=True)
        self._reader.start()

    def wait_ready(self, timeout: float) -> dict:
        """Block until the child reports ready; return its report (`pid`, `port`, ...)."""
        assert self._ready_r is not None, 'spawn() first'
        deadline = time.monotonic() + timeout
        buf = b''
        try:
            while not buf.endswith(b'\n'):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self.kill()
                    raise ChildStartError(self._failure(f'not ready after {timeout:.0f} s'))
                readable, _, _ = select.select([self._ready_r], [], [], min(remaining, 0.5))
                if readable:
                    chunk = os.read(self._ready_r, 4096)
                    if not chunk:
                        break
                    buf += chunk
        finally:
            os.close(self._ready_r)
            self._ready_r = None
        if not buf.endswith(b'\n'):
            code = self._proc.wait(timeout=5)
            self._join_reader()
            self._close_death_pipe()
            raise ChildStartError(self._failure(f'exited with code {code} before it was ready'))
        self.info = json.loads(buf)
        return self.info

    def stop(self, grace: float = 3.0) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds; reap; close pipes. Idempotent."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._close_death_pipe()
        self._join_reader()

    def terminate(self) -> None:
        """Send SIGTERM without waiting (stop many children at once, then `stop()` each)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._close_death_pipe()

    # -- observation -----------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def returncode(self) -> int | None:
        return self._proc.poll() if self._proc is not None else None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = TAIL_LINES) -> str:
        return ''.join(list(self.tail)[-lines:])

    # -- internals -------------------------------------------------------------------------
    def _failure(self, what: str) -> str:
        tail = self.log_tail().rstrip() or '(no output)'
        where = f' (log: {self.log_path})' if self.log_path else ''
        return f'{self.label} {what}{where}. Last lines of its output:\n{tail}'

    def _pump_output(self) -> None:
        stream = self._proc.stdout
        log = open(self.log_path, 'a', buffering=1) if self.log_path else None
        try:
            for raw in iter(stream.readline, b''):
                line = raw.decode('utf-8', 'replace')
                self.tail.append(line)
                if log:
                    log.write(line)
                if self.echo:
                    try:
                        self.echo(line)
                    except Exception:  # a broken echo target must not stop logging
                        self.echo = None
        finally:
            stream.close()
            if log:
                log.close()

    def _join_reader(self) -> None:
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join(timeout=5)

    def _close_death_pipe(self) -> None:
        if self._death_w is not None:
            os.close(self._death_w)
            self._death_w = None
