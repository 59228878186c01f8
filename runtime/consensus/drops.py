"""`DropCounter`: peer messages a replica refused, counted per reason and logged sparingly.

A hostile or broken peer can send thousands of bad messages a second; each costs one counter
increment, and the log gets at most one line per reason per `LOG_EVERY_S` (with the count so
far), so the log stays readable and the disk stays free. The counts are in the replica's
status, where the dashboard and `dep.status()` show them.
"""
from __future__ import annotations

import collections
import logging
import time
from typing import Callable

LOG_EVERY_S = 10.0
DETAIL_CHARS = 200  # a message's description can hold a peer's data: keep the line short

log = logging.getLogger('nborch.raft')


class DropCounter:
    def __init__(self, clock=time.monotonic):
        self.counts: collections.Counter[str] = collections.Counter()
        self._clock = clock
        self._logged_at: dict[str, float] = {}

    def drop(self, reason: str, detail: Callable[[], str]) -> None:
        """Count one refused message; `detail` describes it, called only when logging (a
        flood of big messages costs no formatting)."""
        self.counts[reason] += 1
        now = self._clock()
        last = self._logged_at.get(reason)
        if last is None or now - last >= LOG_EVERY_S:
            self._logged_at[reason] = now
            log.warning('dropped a raft message (%s, %d so far): %s', reason,
                        self.counts[reason], detail()[:DETAIL_CHARS])

    def as_dict(self) -> dict[str, int]:
        return dict(self.counts)
