"""Seeded fault schedules and their injection into a running stateful Deployment.

A schedule is a pure function of its seed (kinds, targets' roles, durations, gaps), so a
failing seed replays the same faults; the interleaving with the workload is up to the OS.
"""
from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass

from tests.integration.helpers import replicas

# kill-all: every replica at once (a power cut: acknowledged writes live only on disk);
# restart: close and start the Deployment again on the same workspace.
KINDS = ('kill-leader', 'kill-follower', 'stop-leader', 'stop-follower', 'kill-all', 'restart')
WEIGHTS = (3, 2, 3, 2, 1, 1)


@dataclass(frozen=True)
class Fault:
    kind: str
    gap_s: float        # how long the workload runs undisturbed before this fault
    hold_s: float = 0.0  # SIGSTOP: how long the process stays frozen

    def __str__(self) -> str:
        hold = f' for {self.hold_s:.1f}s' if self.kind.startswith('stop') else ''
        return f'+{self.gap_s:.1f}s {self.kind}{hold}'


def make_schedule(seed: int, faults: int = 4, max_hold_s: float = 4.0) -> list[Fault]:
    rng = random.Random(seed)
    return [Fault(kind, gap_s=round(rng.uniform(0.3, 1.5), 2),
                  hold_s=round(rng.uniform(0.5, max_hold_s), 2) if kind.startswith('stop')
                  else 0.0)
            for kind in rng.choices(KINDS, WEIGHTS, k=faults)]


class Stall(AssertionError):
    """The group made no progress in time (no replica in the role wanted, no write
    acknowledged): the campaign reports it as an anomaly."""


class Injector:
    """Applies faults to `dep`. A SIGSTOP holds in the background, so later faults overlap
    it (a frozen follower and a killed leader leave no majority until the SIGCONT);
    `heal()` (call it in a finally) continues every process still frozen."""

    def __init__(self, dep, rng: random.Random, find_timeout: float = 30.0):
        self.dep = dep
        self.rng = rng
        self.find_timeout = find_timeout
        self.injected: Counter[str] = Counter()
        self.log: list[str] = []
        self._frozen: dict[int, threading.Timer] = {}

    def apply(self, fault: Fault) -> None:
        if fault.kind == 'restart':
            self.dep.close()
            self.dep.start()
            self._record(fault, 'whole deployment')
            return
        if fault.kind == 'kill-all':
            pids = [r['pid'] for r in replicas(self.dep)
                    if r.get('state') == 'ready' and _signal(r['pid'], signal.SIGKILL)]
            self._record(fault, f'pids {pids}')
            return
        role = fault.kind.split('-')[1]
        victim = self._pick(role)
        pid = victim['pid']
        if fault.kind.startswith('kill'):
            _signal(pid, signal.SIGKILL)
        elif _signal(pid, signal.SIGSTOP):
            timer = self._frozen[pid] = threading.Timer(fault.hold_s, _signal,
                                                        (pid, signal.SIGCONT))
            timer.daemon = True
            timer.start()
        self._record(fault, f'pid {pid} (replica {victim["replica"]})')

    def heal(self) -> None:
        frozen, self._frozen = self._frozen, {}
        for pid, timer in frozen.items():
            timer.cancel()
            _signal(pid, signal.SIGCONT)

    def _pick(self, role: str) -> dict:
        """A live replica in `role` (polled: right after a fault the group may be electing)."""
        deadline = time.monotonic() + self.find_timeout
        while True:
            candidates = [r for r in replicas(self.dep)
                          if r.get('state') == 'ready'
                          and (r.get('raft') or {}).get('role') == role]
            if candidates:
                return self.rng.choice(candidates)
            if time.monotonic() > deadline:
                raise Stall(f'no live {role} within {self.find_timeout:.0f}s: '
                               f'{[(r.get("state"), r.get("raft")) for r in replicas(self.dep)]}')
            time.sleep(0.05)

    def _record(self, fault: Fault, target: str) -> None:
        self.injected[fault.kind] += 1
        self.log.append(f'{fault} -> {target}')


def _signal(pid: int, signum: int) -> bool:
    """Signal `pid`; False when it already died (the supervisor restarts it anyway)."""
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        return False
    return True


def wait_healed(dep, timeout: float = 90.0) -> list[dict]:
    """Poll until every replica is up and reports Raft, one leader leads them all, and all
    have applied the same index, which is the leader's commit index."""
    deadline = time.monotonic() + timeout
    while True:
        reps = replicas(dep)
        rafts = [r.get('raft') for r in reps]
        if all(r.get('state') == 'ready' for r in reps) and all(rafts):
            leaders = {raft['leader'] for raft in rafts}
            applied = {raft['applied'] for raft in rafts} | {raft['commit'] for raft in rafts}
            if len(leaders) == 1 and 0 not in leaders and len(applied) == 1:
                return reps
        if time.monotonic() > deadline:
            raise AssertionError(f'the group did not heal in {timeout:.0f}s: '
                                 f'{[(r.get("state"), r.get("raft")) for r in reps]}')
        time.sleep(0.1)
