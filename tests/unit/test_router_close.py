"""Closing a pool (the owner stopping, a scale-down removing a replica) while requests wait
on its shared health check or leader poll: those requests fail over or fail as requests do,
they are not cancelled (a CancelledError would end the caller's own task: a writer loop, a
gateway's reply that never comes)."""
from __future__ import annotations

import asyncio
import socket

import pytest

from nborch.runtime.router import ReplicaPool


@pytest.fixture
def silent_address():
    """A port that accepts connections and never answers (a replica frozen by SIGSTOP)."""
    with socket.socket() as listener:
        listener.bind(('127.0.0.1', 0))
        listener.listen(8)
        yield f'127.0.0.1:{listener.getsockname()[1]}'


def test_a_health_check_cut_short_by_close_says_not_alive(silent_address):
    async def main() -> bool:
        pool = ReplicaPool('e', [silent_address])
        (replica,) = pool.replicas
        checking = asyncio.ensure_future(replica.alive())
        await asyncio.sleep(0.1)  # the probe is in flight, unanswered
        await pool.close()
        return await asyncio.wait_for(checking, 5)

    assert asyncio.run(main()) is False


def test_a_leader_poll_cut_short_by_close_learns_nothing(silent_address):
    async def main() -> tuple:
        pool = ReplicaPool('e', [silent_address, silent_address])
        first, _ = pool.replicas
        polling = asyncio.ensure_future(pool._poll_leader(exclude=first))
        await asyncio.sleep(0.1)
        await pool.close()
        await asyncio.wait_for(polling, 5)
        return pool.leader

    assert asyncio.run(main()) == (0, 0)


def test_a_waiter_cancelled_itself_is_still_cancelled(silent_address):
    async def main() -> None:
        pool = ReplicaPool('e', [silent_address])
        (replica,) = pool.replicas
        checking = asyncio.ensure_future(replica.alive())
        await asyncio.sleep(0.1)
        checking.cancel()
        with pytest.raises(asyncio.CancelledError):
            await checking
        await pool.close()

    asyncio.run(main())
