"""CPU time of processes and their threads, read from /proc (Linux), to say which process
and which thread a request's time was spent in without a profiler's overhead."""
from __future__ import annotations

import os

TICK_S = 1 / os.sysconf('SC_CLK_TCK')


def _stat_fields(path: str) -> list[str]:
    with open(path) as f:
        text = f.read()
    # `pid (comm) state ...`: comm may hold spaces and parentheses
    return text[text.rindex(')') + 2:].split()


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (all its threads)."""
    fields = _stat_fields(f'/proc/{pid}/stat')
    return (int(fields[11]) + int(fields[12])) * TICK_S


def thread_counters(pid: int) -> dict[int, dict]:
    """Per thread of `pid`: its name, CPU seconds and context switches so far."""
    out = {}
    for tid in os.listdir(f'/proc/{pid}/task'):
        base = f'/proc/{pid}/task/{tid}'
        try:
            fields = _stat_fields(f'{base}/stat')
            with open(f'{base}/comm') as f:
                name = f.read().strip()
            switches = {}
            with open(f'{base}/status') as f:
                for line in f:
                    if line.startswith(('voluntary_ctxt_switches', 'nonvoluntary_ctxt_switches')):
                        key, value = line.split(':')
                        switches[key.split('_')[0]] = int(value)
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread ended meanwhile
        out[int(tid)] = {'name': name, 'cpu_s': (int(fields[11]) + int(fields[12])) * TICK_S,
                         'voluntary': switches.get('voluntary', 0),
                         'nonvoluntary': switches.get('nonvoluntary', 0)}
    return out


class CpuMeter:
    """CPU seconds spent by named processes between `start()` and `stop()`, summed over
    as many start/stop windows as are measured."""

    def __init__(self, pids: dict[str, list[int]]):
        self.pids = pids
        self.spent = {role: 0.0 for role in pids}
        self._at: dict[str, float] = {}

    def _now(self) -> dict[str, float]:
        return {role: sum(process_cpu_s(p) for p in pids) for role, pids in self.pids.items()}

    def start(self) -> None:
        self._at = self._now()

    def stop(self) -> None:
        now = self._now()
        for role in self.pids:
            self.spent[role] += now[role] - self._at[role]
