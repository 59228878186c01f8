"""cProfile in every thread of a process, snapshotted on request (profile_echo.py).

`install(folder)` profiles the calling thread and every thread started afterwards (each
under its own `cProfile.Profile`, as cProfile sees one thread only), and starts a watcher
thread. When a file `mark-<name>` appears in `folder`, the watcher snapshots every
profiler's counters, without stopping them, into `<folder>/<role>-<pid>.<name>.stats`
(marshal: {thread name: pstats-style dict}). The difference between two snapshots is what
the process did between the two marks, whatever it did before (imports, start-up).
"""
from __future__ import annotations

import cProfile
import marshal
import os
import sys
import threading
import time

WATCHER = 'nborch-bench-profile'
POLL_S = 0.02
_profilers: list[tuple[str, cProfile.Profile]] = []
_lock = threading.Lock()


def _timer():
    """Each thread's own CPU time (`NBORCH_BENCH_PROFILE_TIMER=wall`: wall time, waits included)."""
    return None if os.environ.get('NBORCH_BENCH_PROFILE_TIMER') == 'wall' else time.thread_time


def _register(name: str) -> cProfile.Profile:
    timer = _timer()
    profiler = cProfile.Profile(timer) if timer else cProfile.Profile()
    with _lock:
        _profilers.append((name, profiler))
    return profiler


def _profiled_run(original):
    def run(self):
        if self.name == WATCHER:
            return original(self)
        profiler = _register(self.name)
        profiler.enable()
        try:
            return original(self)
        finally:
            profiler.disable()
    return run


def role() -> str:
    """'gateway', 'worker' or 'client' (the process that runs the benchmark)."""
    module = os.path.basename(sys.argv[0]) if sys.argv else ''
    return {'gateway.py': 'gateway', 'worker.py': 'worker'}.get(module, 'client')


def snapshot() -> dict[str, dict]:
    """{thread name: {func: (cc, nc, tt, ct, callers)}} of every profiler, still running."""
    out: dict[str, dict] = {}
    with _lock:
        profilers = list(_profilers)
    for name, profiler in profilers:
        profiler.snapshot_stats()
        stats = out.setdefault(name, {})
        for func, (cc, nc, tt, ct, callers) in profiler.stats.items():
            if func in stats:  # two threads of one name (a pool's): add them up
                pcc, pnc, ptt, pct, pcallers = stats[func]
                merged = dict(pcallers)
                for k, v in callers.items():
                    merged[k] = tuple(a + b for a, b in zip(merged[k], v)) if k in merged else v
                stats[func] = (pcc + cc, pnc + nc, ptt + tt, pct + ct, merged)
            else:
                stats[func] = (cc, nc, tt, ct, dict(callers))
    return out


def write_snapshot(folder: str, name: str) -> str:
    path = os.path.join(folder, f'{role()}-{os.getpid()}.{name}.stats')
    data = snapshot()
    with open(path + '.tmp', 'wb') as f:
        marshal.dump(data, f)
    os.replace(path + '.tmp', path)
    return path


def _watch(folder: str) -> None:
    done: set[str] = set()
    while True:
        try:
            marks = [f[len('mark-'):] for f in os.listdir(folder) if f.startswith('mark-')]
        except FileNotFoundError:
            return
        for name in marks:
            if name not in done:
                done.add(name)
                write_snapshot(folder, name)
        time.sleep(POLL_S)


def install(folder: str, watch: bool = True) -> None:
    threading.Thread.run = _profiled_run(threading.Thread.run)
    _register(threading.current_thread().name).enable()
    if watch:
        threading.Thread(target=_watch, args=(folder,), name=WATCHER, daemon=True).start()
