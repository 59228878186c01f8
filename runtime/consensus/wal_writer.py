"""Group commit: a replica's log appends go to disk on a thread of their own.

The driver hands each Ready's entries — every proposal (leader) or AppendEntries (follower)
that arrived since the last batch — to one thread, which writes them as one WAL record run
and fsyncs once. Meanwhile the event loop keeps taking messages and proposals, which become
the next batch: the more writes in flight, the more each fsync carries.

Nothing that promises durability (an acknowledgement, a vote) is sent before `append`
returns, and `append` returns only once the fsync has.
"""
from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from nborch.runtime.consensus.core.types import Entry
from nborch.runtime.consensus.storage import DiskStorage


class WalWriter:
    def __init__(self, storage: DiskStorage):
        self.storage = storage
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix='raft-wal')

    async def append(self, entries: tuple[Entry, ...]) -> None:
        """Append `entries` with one write and one fsync; returns once they are durable."""
        pending = self.storage.prepare_append(entries)
        if pending is None:
            return
        loop = asyncio.get_running_loop()
        # Shielded: a driver cancelled meanwhile must not touch the storage while the thread
        # still writes; `close` waits for the thread.
        await asyncio.shield(loop.run_in_executor(self._thread, self.storage.write_pending,
                                                  pending))
        self.storage.finish_append(pending)

    def close(self) -> None:
        """Wait for a write in progress, then stop the thread."""
        self._thread.shutdown(wait=True)
