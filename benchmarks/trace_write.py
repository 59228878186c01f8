"""Where one stateful write's time goes: a timeline across the owner and three replicas.

    python benchmarks/trace_write.py               # 30 traced writes (after 200 untraced)
    python benchmarks/trace_write.py --show 2      # and print the whole timeline of 2

A 3-replica stateful Deployment of `NumpySearch` takes sequential 1-doc `/index` posts.
Each replica process loads benchmarks/_trace/sitecustomize.py (PYTHONPATH), which stamps
the steps of a write with one clock shared by every process here: the leader's handling of
the request, its proposal going out, each WAL append (write + fsync), each peer message
received, each apply. Per write, the summary splits the post into its stretches (medians
over the traced writes):

    owner → leader       the post until the leader's handler starts (client, routing, codec,
                         one gRPC hop)
    leader fsync         the leader's WAL append of the entry (followers append meanwhile)
    replication          leader's send → the last follower ack that made the entry committed
    apply                the leader's apply (the executor thread: decode, index, reply)
    leader → owner       the handler's end until the post returns
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # the checkout this script is in

import numpy as np  # noqa: E402
from docarray import DocList  # noqa: E402
from docarray.documents import TextDoc  # noqa: E402

from nborch import Deployment  # noqa: E402
from nborch.examples import NumpySearch  # noqa: E402


def traced_writes(n: int, warmup: int, trace: str) -> tuple[dict[int, str], list[tuple]]:
    os.environ['NBORCH_BENCH_TRACE'] = trace
    os.environ['PYTHONPATH'] = os.pathsep.join(
        [os.path.join(HERE, '_trace'), *filter(None, [os.environ.get('PYTHONPATH')])])
    workspace = tempfile.mkdtemp(prefix='nborch-trace-')
    windows = []
    try:
        with Deployment(name='traced', uses=NumpySearch, replicas=3, stateful=True,
                        workspace=workspace, quiet=True) as dep:
            roles = {r['pid']: (r.get('raft') or {}).get('role', '?')
                     for r in dep.status()['executors'][0]['shards'][0]['replicas']}
            for i in range(warmup + n):
                doc = DocList[TextDoc]([TextDoc(text=f'w{i}', embedding=np.zeros(8))])
                start = time.perf_counter()
                dep.post('/index', doc)
                if i >= warmup:
                    windows.append((start, time.perf_counter()))
                    time.sleep(0.02)  # the group idles between writes: one write per window
    finally:
        shutil.rmtree(workspace, ignore_errors=True)
    return roles, windows


def read_trace(path: str) -> list[tuple[float, int, str]]:
    with open(path) as f:
        return sorted((float(t), int(pid), step) for t, pid, step in
                      (line.split() for line in f if line.strip()))


def stretches(events: list[tuple[float, int, str]], leader: int, start: float,
              end: float) -> dict[str, float] | None:
    """The write's stretches (ms) from the stamps in [start, end], or None if incomplete."""
    mine = [(t, pid, step) for t, pid, step in events if start <= t <= end]

    def first(pid_ok, step, after=start):
        return next((t for t, pid, s in mine if s == step and pid_ok(pid) and t >= after), None)

    is_leader = leader.__eq__
    handle = first(is_leader, 'handle>')
    sent = first(is_leader, '_send', after=handle or end)
    append_in, append_out = first(is_leader, 'append>', handle or end), \
        first(is_leader, 'append<', handle or end)
    apply_in = first(is_leader, '_apply>', handle or end)
    apply_out = first(is_leader, '_apply<', apply_in or end)
    handled = first(is_leader, 'handle<', apply_out or end)
    # the ack that committed the entry: the last message the leader received before applying
    acks = [t for t, pid, s in mine if pid == leader and s == 'receive' and
            sent is not None and apply_in is not None and sent <= t <= apply_in]
    if None in (handle, sent, append_in, append_out, apply_in, apply_out, handled) or not acks:
        return None
    ms = 1000
    return {'owner → leader': (handle - start) * ms,
            'leader fsync': (append_out - append_in) * ms,
            'replication': (acks[-1] - sent) * ms,
            'apply': (apply_out - apply_in) * ms,
            'leader → owner': (end - handled) * ms,
            'total': (end - start) * ms}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--writes', type=int, default=30)
    parser.add_argument('--warmup', type=int, default=200)
    parser.add_argument('--show', type=int, default=0, help='print the timeline of N writes')
    args = parser.parse_args(argv)
    folder = tempfile.mkdtemp(prefix='nborch-trace-')
    trace = os.path.join(folder, 'trace.log')
    try:
        roles, windows = traced_writes(args.writes, args.warmup, trace)
        events = read_trace(trace)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    leader = next(pid for pid, role in roles.items() if role == 'leader')
    followers = [pid for pid in roles if pid != leader]
    names = {leader: 'leader', **{pid: f'follower {i + 1}' for i, pid in enumerate(followers)}}
    for start, end in windows[:args.show]:
        print(f'-- one write, {(end - start) * 1000:.2f} ms (ms from the post)')
        for t, pid, step in events:
            if start <= t <= end:
                print(f'  {(t - start) * 1000:7.3f}  {names.get(pid, pid):<10}  {step}')
    parts = [s for s in (stretches(events, leader, a, b) for a, b in windows) if s]
    if not parts:
        raise SystemExit('no complete write in the trace')
    print(f'\na stateful 1-doc write, sequential: medians of {len(parts)} traced writes (ms)')
    for key in parts[0]:
        print(f'  {key:<16}{statistics.median(p[key] for p in parts):>7.2f}')


if __name__ == '__main__':
    main()
