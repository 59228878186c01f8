"""What a replicated (Raft, fsync on) write costs, next to its physical floor.

    python benchmarks/consensus_writes.py              # 10 000 docs indexed, 2 000 writes
    python benchmarks/consensus_writes.py --quick      # a smaller run
    python benchmarks/consensus_writes.py --json out.json

Measures, in one run:

* the floor: one fsync of a small append on this disk (p50 of `--fsyncs`), and one loopback
  gRPC round trip on an open channel (p50);
* 1-doc @write requests to a 3-replica stateful Deployment: commit p50/p99 of sequential
  writes, compared with one fsync + two loopback hops (a commit needs the client's hop and the
  leader's round trip to a follower, which fsyncs while the leader does);
* writes/s with 1, 8 and 64 requests in flight (`prefetch`), each process's CPU per write
  (the owner, which routes `Deployment.post`, the leader, the followers), and with 64 in flight to one
  replica that is not stateful (the same requests without Raft: the ceiling the gateway,
  client and executor leave);
* the Raft layer alone: three replicas' drivers in this process on real logs (in-process
  links, no gRPC), sequential commit p50 and writes/s with 64 in flight — what the
  consensus code costs, apart from the request path;
* indexing N docs (request_size=100, the default client) at replicas=1 and replicas=3 stateful,
  as a ratio, and the executor's own apply of those requests in this process (decode and
  index, one replica's CPU): every replica of a stateful group pays it, so on C cores the
  three replicas' applies alone take at least 3 × apply / C.

The JSON lands in `benchmarks/results/consensus_writes-<stamp>.json` unless `--json` says
where. Figures move with the machine's load: compare only within one run.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np
import psutil
from docarray import DocList
from docarray.documents import TextDoc

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _workloads import make_docs, percentile, sequential_latencies  # noqa: E402
from nborch import Deployment  # noqa: E402
from nborch.examples import NumpySearch  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results')


def fsync_floor(directory: str, n: int) -> dict:
    """p50/p99 of write + fsync of a 200-byte record appended to one file (a WAL's shape)."""
    path = os.path.join(directory, 'fsync-probe')
    times = []
    with open(path, 'ab', buffering=0) as f:
        for _ in range(n):
            start = time.perf_counter()
            f.write(b'x' * 200)
            os.fsync(f.fileno())
            times.append((time.perf_counter() - start) * 1000)
    os.unlink(path)
    return {'p50_ms': statistics.median(times), 'p99_ms': percentile(times, 99), 'n': n}


def loopback_hop(n: int) -> dict:
    """p50 of a unary gRPC call that echoes 200 bytes on loopback, on an open channel."""
    import grpc

    def echo(request: bytes, context) -> bytes:
        return request

    handler = grpc.method_handlers_generic_handler(
        'bench.Echo', {'Call': grpc.unary_unary_rpc_method_handler(echo)})
    from concurrent.futures import ThreadPoolExecutor
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port('127.0.0.1:0')
    server.start()
    try:
        with grpc.insecure_channel(f'127.0.0.1:{port}') as channel:
            call = channel.unary_unary('/bench.Echo/Call')
            payload = b'x' * 200
            return sequential_latencies(lambda i: call(payload), n, warmup=200)
    finally:
        server.stop(0)


def one_doc(i: int) -> DocList:
    return DocList[TextDoc]([TextDoc(text=f'w{i}', embedding=np.zeros(8))])


def consensus_writes(sequential: int, concurrent: int, in_flight: tuple[int, ...]) -> dict:
    workspace = tempfile.mkdtemp(prefix='nborch-writes-')
    out: dict = {}
    try:
        with Deployment(name='writes', uses=NumpySearch, replicas=3, stateful=True,
                        workspace=workspace, quiet=True) as dep:
            seq = sequential_latencies(lambda i: dep.post('/index', one_doc(i)), sequential,
                                       warmup=50)
            out['commit_p50_ms'], out['commit_p99_ms'] = seq['p50_ms'], seq['p99_ms']
            processes = processes_by_role(dep)
            for n in in_flight:
                batch = DocList[TextDoc]([TextDoc(text=f'c{n}-{i}', embedding=np.zeros(8))
                                          for i in range(concurrent)])
                before = {role: cpu_s(p) for role, p in processes.items()}
                start = time.perf_counter()
                dep.post('/index', batch, request_size=1, prefetch=n)
                out[f'writes_per_s_{n}'] = concurrent / (time.perf_counter() - start)
                out[f'cpu_us_per_write_{n}'] = {
                    role: (cpu_s(p) - before[role]) * 1e6 / concurrent
                    for role, p in processes.items()}
    finally:
        shutil.rmtree(workspace, ignore_errors=True)
    return out


def processes_by_role(dep) -> dict[str, psutil.Process]:
    """This process (the owner, which routes `dep.post`) and each replica, named by its
    Raft role at the start ('leader', 'follower-1', ...)."""
    out = {'owner': psutil.Process()}
    for r in dep.status()['executors'][0]['shards'][0]['replicas']:
        role = (r.get('raft') or {}).get('role', 'replica')
        name = role if role == 'leader' else f"{role}-{r['replica']}"
        out[name] = psutil.Process(r['pid'])
    return out


def cpu_s(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def no_consensus_ceiling(sequential: int, writes: int) -> dict:
    """The same 1-doc /index requests to one plain replica: p50 one at a time, and writes/s
    with 64 in flight."""
    with Deployment(name='plain', uses=NumpySearch, quiet=True) as dep:
        seq = sequential_latencies(lambda i: dep.post('/index', one_doc(i)), sequential,
                                   warmup=50)
        batch = DocList[TextDoc]([TextDoc(text=f'p{i}', embedding=np.zeros(8))
                                  for i in range(writes)])
        start = time.perf_counter()
        dep.post('/index', batch, request_size=1, prefetch=64)
        return {'p50_ms': seq['p50_ms'], 'writes_per_s_64': writes / (time.perf_counter() - start)}


def raft_layer(sequential: int, writes: int, in_flight: int = 64) -> dict:
    """Three `ConsensusReplica`s on one event loop with real logs: the consensus code's own
    cost (driver, WAL thread, storage, core), without gRPC, gateway or executor."""
    import asyncio
    from pathlib import Path

    from tests.consensus.local_group import LocalGroup, write_request

    async def run(root: str) -> dict:
        group = LocalGroup(Path(root))
        leader = await group.start_all()
        for i in range(50):
            await leader.write(write_request(-1 - i))
        times = []
        for i in range(sequential):
            start = time.perf_counter()
            await leader.write(write_request(1_000_000 + i))
            times.append((time.perf_counter() - start) * 1000)
        todo = iter(range(writes))

        async def writer() -> None:
            for i in todo:
                await leader.write(write_request(i))
        fsyncs = [0]
        real_fsync = os.fsync

        def counted_fsync(fd: int) -> None:  # every fsync in this process: three replicas'
            fsyncs[0] += 1
            real_fsync(fd)
        os.fsync = counted_fsync
        try:
            start = time.perf_counter()
            await asyncio.gather(*(writer() for _ in range(in_flight)))
            elapsed = time.perf_counter() - start
        finally:
            os.fsync = real_fsync
        await group.close()
        return {'commit_p50_ms': statistics.median(times), 'commit_p99_ms': percentile(times, 99),
                f'writes_per_s_{in_flight}': writes / elapsed,
                'entries_per_fsync': writes * len(group.ids) / max(fsyncs[0], 1)}

    root = tempfile.mkdtemp(prefix='nborch-raft-layer-')
    try:
        return asyncio.run(run(root))
    finally:
        shutil.rmtree(root, ignore_errors=True)


def apply_time(docs: DocList) -> float:
    """Seconds one replica's executor takes to apply the index requests (no I/O)."""
    from nborch.protos import nborch_pb2 as pb
    from nborch.runtime.codec import encode_docs
    from nborch.runtime.worker import ExecutorRunner
    requests = [pb.DataRequest(endpoint='/index', docs=encode_docs(docs[i:i + 100]))
                for i in range(0, len(docs), 100)]
    runner = ExecutorRunner(NumpySearch(), 'apply')
    start = time.perf_counter()
    for request in requests:
        runner.handle_sync(request, reply=False)  # as a follower applies: no reply encoded
    return time.perf_counter() - start


def index_time(docs: DocList, replicas: int, stateful: bool) -> float:
    workspace = tempfile.mkdtemp(prefix='nborch-index-') if stateful else None
    extra = {'stateful': True, 'workspace': workspace} if stateful else {}
    try:
        with Deployment(name='indexer', uses=NumpySearch, replicas=replicas, quiet=True,
                        **extra) as dep:
            start = time.perf_counter()
            dep.post('/index', docs, request_size=100)
            return time.perf_counter() - start
    finally:
        if workspace:
            shutil.rmtree(workspace, ignore_errors=True)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true', help='fewer writes and docs')
    parser.add_argument('--docs', type=int, help='docs indexed (default 10 000; quick 2 000)')
    parser.add_argument('--writes', type=int, help='writes per in-flight level (default 2 000)')
    parser.add_argument('--sequential', type=int, help='sequential 1-doc writes (default 500)')
    parser.add_argument('--fsyncs', type=int, default=300)
    parser.add_argument('--label', default='', help='a name for this run in the JSON')
    parser.add_argument('--json', metavar='PATH')
    args = parser.parse_args(argv)
    docs = args.docs or (2_000 if args.quick else 10_000)
    writes = args.writes or (500 if args.quick else 2_000)
    sequential = args.sequential or (200 if args.quick else 500)

    report: dict = {'label': args.label, 'docs': docs, 'writes': writes,
                    'sequential': sequential, 'cpus': os.cpu_count()}
    probe_dir = tempfile.mkdtemp(prefix='nborch-fsync-')
    try:
        report['fsync'] = fsync_floor(probe_dir, args.fsyncs)
    finally:
        shutil.rmtree(probe_dir, ignore_errors=True)
    report['hop'] = loopback_hop(2_000)
    report['consensus'] = consensus_writes(sequential, writes, (1, 8, 64))
    report['no_consensus'] = no_consensus_ceiling(sequential, writes)
    try:
        report['raft_layer'] = raft_layer(sequential, writes)
    except ImportError as exc:  # a checkout without the in-process harness
        report['raft_layer'] = {'error': str(exc)}
    index_docs, _ = make_docs(docs, seed=0)
    report['index_s_replicas1'] = index_time(index_docs, 1, stateful=False)
    report['index_s_consensus3'] = index_time(index_docs, 3, stateful=True)
    report['apply_s'] = apply_time(index_docs)
    report['floor_ms'] = report['fsync']['p50_ms'] + 2 * report['hop']['p50_ms']
    report['commit_vs_floor'] = report['consensus']['commit_p50_ms'] / report['floor_ms']
    report['index_ratio'] = report['index_s_consensus3'] / report['index_s_replicas1']
    print_table(report)
    path = args.json or os.path.join(
        RESULTS, f"consensus_writes-{args.label or 'run'}-{time.strftime('%Y%m%dT%H%M%S')}.json")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, 'w') as f:
        json.dump(report, f, indent=2)
    print(f'JSON: {path}')
    return report


def print_table(r: dict) -> None:
    c, plain = r['consensus'], r['no_consensus']
    rows = [
        ('fsync of a small append (this disk)', f"p50 {r['fsync']['p50_ms']:.2f} ms, "
                                                f"p99 {r['fsync']['p99_ms']:.2f} ms"),
        ('loopback gRPC round trip', f"p50 {r['hop']['p50_ms']:.3f} ms"),
        ('floor: 1 fsync + 2 hops', f"{r['floor_ms']:.2f} ms"),
        ('1-doc commit, sequential', f"p50 {c['commit_p50_ms']:.2f} ms, "
                                     f"p99 {c['commit_p99_ms']:.2f} ms "
                                     f"({r['commit_vs_floor']:.2f}x the floor; target <= 1.5x)"),
        ('  same request, one plain replica (no Raft)',
         f"p50 {plain['p50_ms']:.2f} ms (Raft adds {c['commit_p50_ms'] - plain['p50_ms']:.2f} ms)"),
        ('writes/s, 1 in flight', f"{c['writes_per_s_1']:.0f}"),
        ('writes/s, 8 in flight', f"{c['writes_per_s_8']:.0f}"),
        ('writes/s, 64 in flight', f"{c['writes_per_s_64']:.0f} (target >= 2000)"),
        ('  CPU per write, 64 in flight', ', '.join(
            f'{role} {us:.0f} us' for role, us in c['cpu_us_per_write_64'].items())
         + f" (all: {sum(c['cpu_us_per_write_64'].values()):.0f} us on {r['cpus']} cores)"),
        ('  same requests, one plain replica (no Raft)',
         f"{plain['writes_per_s_64']:.0f}"),
        *raft_layer_rows(r['raft_layer']),
        (f"index {r['docs']} docs, replicas=1", f"{r['index_s_replicas1']:.2f} s"),
        (f"index {r['docs']} docs, replicas=3 stateful",
         f"{r['index_s_consensus3']:.2f} s ({r['index_ratio']:.2f}x; target <= 1.3x)"),
        ("  one replica's executor apply of them (CPU)",
         f"{r['apply_s']:.2f} s; three replicas on {r['cpus']} cores: >= "
         f"{3 * r['apply_s'] / r['cpus']:.2f} s"),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"consensus writes{' — ' + r['label'] if r['label'] else ''}")
    for name, value in rows:
        print(f'  {name:<{width}}  {value}')


def raft_layer_rows(layer: dict) -> list[tuple[str, str]]:
    if 'error' in layer:
        return [('Raft layer alone (in-process)', f"not measured: {layer['error']}")]
    return [('Raft layer alone: commit, sequential', f"p50 {layer['commit_p50_ms']:.2f} ms, "
                                                   f"p99 {layer['commit_p99_ms']:.2f} ms"),
            ('Raft layer alone: writes/s, 64 in flight',
             f"{layer['writes_per_s_64']:.0f} ({layer['entries_per_fsync']:.1f} "
             "entries per fsync)")]


if __name__ == '__main__':
    main()
