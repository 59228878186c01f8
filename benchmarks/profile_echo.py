"""Where a 1-doc request's time goes, per process: client, gateway, worker.

    python benchmarks/profile_echo.py                 # 2 000 posts per measurement
    python benchmarks/profile_echo.py --posts 500     # quicker
    (writes benchmarks/results/profile_echo.json; --json elsewhere)

Sequential 1-doc posts (a TextDoc, text only) to `nborch.examples.Echo`, measured four ways
in one run:

1. latency: p50 through `Deployment.post` (client → gateway → worker) and straight to the
   worker (a `Client` on its port), interleaved in rounds;
2. CPU per request, per process and per thread, from /proc (no profiler running): which
   threads work, for how long, and how often each wakes up (voluntary context switches,
   i.e. hand-offs between threads and processes);
3. the floors, in this run: the docs codec on 1 doc, the thread hop `Deployment.post`
   makes (nborch._loop.run_sync of a coroutine that does nothing), and a bare grpc.aio
   `Executor.Stream` echo server (nothing but gRPC) called from its own loop and through
   that hop;
4. cProfile in every thread of every process (benchmarks/_profile_hook.py, installed in the
   gateway and the worker through PYTHONPATH=benchmarks/_profile, a sitecustomize: nborch
   has no profiling hook and none is added), timing each thread's CPU (time.thread_time),
   snapshotted before and after the posts so that start-up is left out; the functions'
   own time summed by what they belong to (codec, protobuf, gRPC, asyncio, threads, ...).
   gRPC's C core and Cython code are not seen by cProfile: their CPU is counted in the
   Python function that called them (mostly nborch's stream code and asyncio's loop).
   The profiler slows Python code several-fold; read its figures as shares.
"""
from __future__ import annotations

import argparse
import json
import marshal
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

from docarray import DocList  # noqa: E402
from docarray.documents import TextDoc  # noqa: E402

from _proc_cpu import thread_counters  # noqa: E402
from _workloads import percentile  # noqa: E402
from nborch import Client, Deployment  # noqa: E402
from nborch.examples import Echo  # noqa: E402

PROFILE_ENV = 'NBORCH_BENCH_PROFILE'
ONE_DOC = DocList[TextDoc]([TextDoc(text='hello')])


def timed(fn, n: int) -> list[float]:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return times


def summary(times: list[float]) -> dict:
    return {'p50_ms': statistics.median(times), 'p99_ms': percentile(times, 99),
            'mean_ms': statistics.mean(times), 'n': len(times)}


# -- 1 and 2: latency and CPU per thread, no profiler ------------------------------------------
def pids_of(dep: Deployment) -> dict[str, int]:
    status = dep.status()
    return {'client': os.getpid(), 'gateway': status['gateway']['pid'],
            'worker': status['executors'][0]['shards'][0]['replicas'][0]['pid']}


def per_thread_cost(pids: dict[str, int], run, n: int) -> dict:
    """CPU µs and context switches per request of each thread (grouped by thread name)
    while `run()` makes `n` requests; and each process's total."""
    before = {role: thread_counters(pid) for role, pid in pids.items()}
    start = time.perf_counter()
    run()
    wall = time.perf_counter() - start
    after = {role: thread_counters(pid) for role, pid in pids.items()}
    out = {'wall_ms_per_request': wall * 1000 / n}
    for role in pids:
        threads: dict[str, dict] = {}
        for tid, now in after[role].items():
            then = before[role].get(tid, {'cpu_s': 0, 'voluntary': 0, 'nonvoluntary': 0})
            t = threads.setdefault(now['name'], {'cpu_us': 0.0, 'wakeups': 0.0, 'preempted': 0.0})
            t['cpu_us'] += (now['cpu_s'] - then['cpu_s']) * 1e6 / n
            t['wakeups'] += (now['voluntary'] - then['voluntary']) / n
            t['preempted'] += (now['nonvoluntary'] - then['nonvoluntary']) / n
        busy = {k: v for k, v in threads.items() if v['cpu_us'] >= 1 or v['wakeups'] >= 0.05}
        out[role] = {'cpu_us': sum(t['cpu_us'] for t in threads.values()),
                     'threads': dict(sorted(busy.items(), key=lambda kv: -kv[1]['cpu_us']))}
    return out


def latency_and_cpu(posts: int, rounds: int = 5) -> dict:
    with Deployment(name='echo', uses=Echo, quiet=True) as dep:
        worker_port = dep.status()['executors'][0]['shards'][0]['replicas'][0]['port']
        direct = Client(port=worker_port, secret=dep.secret)
        try:
            paths = {'gateway': lambda: dep.post('/', ONE_DOC),
                     'worker': lambda: direct.post('/', ONE_DOC)}
            times = {path: [] for path in paths}
            for fn in paths.values():
                timed(fn, 200)  # warm-up
            for _ in range(rounds):
                for path, fn in paths.items():
                    times[path] += timed(fn, posts // rounds)
            pids = pids_of(dep)
            cost = {path: per_thread_cost(pids, lambda fn=fn: timed(fn, posts), posts)
                    for path, fn in paths.items()}
        finally:
            direct.close()
    return {'latency': {path: summary(t) for path, t in times.items()}, 'cpu': cost}


# -- 3: floors ---------------------------------------------------------------------------------
BARE_SERVER = """
import asyncio, grpc, sys
sys.path.insert(0, {root!r})
from nborch.protos import nborch_pb2 as pb, nborch_pb2_grpc as pb_grpc
class Echo(pb_grpc.ExecutorServicer):
    async def Stream(self, requests, context):
        async for r in requests:
            yield pb.DataResponse(docs=r.docs, parameters=r.parameters)
async def main():
    server = grpc.aio.server()
    pb_grpc.add_ExecutorServicer_to_server(Echo(), server)
    port = server.add_insecure_port('127.0.0.1:0')
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()
asyncio.run(main())
"""


def floors(posts: int) -> dict:
    import asyncio

    import grpc

    from nborch._loop import get_loop, run_sync
    from nborch.protos import nborch_pb2 as pb
    from nborch.protos import nborch_pb2_grpc as pb_grpc
    from nborch.runtime.codec import decode_docs, encode_docs

    out = {'codec_1doc': summary(timed(lambda: decode_docs(encode_docs(ONE_DOC), TextDoc),
                                       posts))}

    async def nothing():
        return None

    run_sync(nothing())
    out['thread_hop'] = summary(timed(lambda: run_sync(nothing()), posts))
    server = subprocess.Popen([sys.executable, '-c', BARE_SERVER.format(root=ROOT)],
                              stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline())
        request = pb.DataRequest(endpoint='/', docs=encode_docs(ONE_DOC))
        state = {}

        async def open_stream():
            channel = grpc.aio.insecure_channel(f'127.0.0.1:{port}')
            state['channel'] = channel
            state['call'] = pb_grpc.ExecutorStub(channel).Stream()

        async def round_trip():
            await state['call'].write(request)
            return await state['call'].read()

        async def in_loop(n: int) -> list[float]:
            times = []
            for _ in range(n):
                start = time.perf_counter()
                await round_trip()
                times.append((time.perf_counter() - start) * 1000)
            return times

        run_sync(open_stream())
        run_sync(in_loop(200))
        out['grpc_stream_in_loop'] = summary(run_sync(in_loop(posts)))
        out['grpc_stream_with_hop'] = summary(timed(lambda: run_sync(round_trip()), posts))
        asyncio.run_coroutine_threadsafe(state['channel'].close(), get_loop()).result(5)
    finally:
        server.terminate()
        server.wait()
    return out


# -- 4: cProfile in every process --------------------------------------------------------------
def profiled_child(folder: str, posts: int) -> None:
    """Runs in a child started with NBORCH_BENCH_PROFILE set (so profiled itself): marks
    'a', makes `posts` posts, marks 'b'; each process writes a snapshot per mark."""
    def mark(name: str, processes: int = 3) -> None:
        open(os.path.join(folder, f'mark-{name}'), 'w').close()
        deadline = time.monotonic() + 30
        while len([f for f in os.listdir(folder) if f.endswith(f'.{name}.stats')]) < processes:
            if time.monotonic() > deadline:
                raise TimeoutError(f'not every process wrote its {name!r} snapshot')
            time.sleep(0.02)

    with Deployment(name='echo', uses=Echo, quiet=True) as dep:
        timed(lambda: dep.post('/', ONE_DOC), 200)
        mark('a')
        times = timed(lambda: dep.post('/', ONE_DOC), posts)
        mark('b')
    with open(os.path.join(folder, 'latency.json'), 'w') as f:
        json.dump(summary(times), f)


CATEGORIES = (  # (name, substrings of 'file function'), first match wins
    ('docs codec', ('/runtime/codec', '/runtime/_codec')),
    ('docarray + pydantic', ('docarray', 'pydantic')),
    ('protobuf', ('google', 'protobuf', '_upb')),
    ('auth', ('/runtime/auth',)),
    ('grpc (Python/Cython side)', ('grpc',)),
    ('nborch stream mux', ('/runtime/mux',)),
    ('asyncio event loop', ('asyncio', 'selectors', 'select.epoll', '_contextvars')),
    ('thread hand-offs (futures, locks)', ('threading', 'concurrent', '_thread', 'queue')),
    ('nborch other', ('/nborch/', '/runtime/')),
    ('json', ('json',)),
)


def category(func: tuple) -> str:
    text = f'{func[0]} {func[2]}'
    for name, needles in CATEGORIES:
        if any(n in text for n in needles):
            return name
    return 'other'


def diff(after: dict, before: dict) -> dict:
    """Per function: (calls, own time) between two snapshots of one thread."""
    out = {}
    for func, (_cc, nc, tt, _ct, _callers) in after.items():
        prev = before.get(func)
        calls, own = (nc - prev[1], tt - prev[2]) if prev else (nc, tt)
        if calls or own > 0:
            out[func] = (calls, own)
    return out


def where(func: tuple) -> str:
    path, line, name = func
    if path == '~':
        return name
    parts = path.split(os.sep)
    for anchor in ('site-packages', 'nborch', 'lib'):
        if anchor in parts:
            parts = parts[parts.index(anchor) + (1 if anchor != 'nborch' else 0):]
            break
    return f"{'/'.join(parts[-3:])}:{line}({name})"


def load_profiles(folder: str, posts: int, top: int) -> dict:
    profiles = {}
    for name in sorted(os.listdir(folder)):
        if not name.endswith('.a.stats'):
            continue
        stem = name[:-len('.a.stats')]
        with open(os.path.join(folder, name), 'rb') as f:
            before = marshal.load(f)
        with open(os.path.join(folder, f'{stem}.b.stats'), 'rb') as f:
            after = marshal.load(f)
        role = stem.split('-')[0]
        funcs: dict[tuple, list] = {}
        threads: dict[str, float] = {}
        for thread, stats in after.items():
            d = diff(stats, before.get(thread, {}))
            threads[thread] = sum(own for _, own in d.values()) * 1e6 / posts
            for func, (calls, own) in d.items():
                acc = funcs.setdefault(func, [0, 0.0])
                acc[0] += calls
                acc[1] += own
        total_us = sum(own for _, own in funcs.values()) * 1e6 / posts
        cats: dict[str, float] = {}
        for func, (_, own) in funcs.items():
            cats[category(func)] = cats.get(category(func), 0.0) + own * 1e6 / posts
        ranked = sorted(funcs.items(), key=lambda kv: -kv[1][1])[:top]
        profiles[role] = {
            'profiled_cpu_us_per_request': total_us,
            'threads_us': {t: us for t, us in sorted(threads.items(), key=lambda kv: -kv[1])
                           if us >= 1},
            'categories_us': dict(sorted(cats.items(), key=lambda kv: -kv[1])),
            'top': [{'function': where(func), 'calls_per_request': calls / posts,
                     'own_us_per_request': own * 1e6 / posts}
                    for func, (calls, own) in ranked]}
    with open(os.path.join(folder, 'latency.json')) as f:
        profiles['latency_under_profiler'] = json.load(f)
    return profiles


def run_profiled(posts: int, top: int) -> dict:
    with tempfile.TemporaryDirectory(prefix='nborch-profile-') as folder:
        env = {**os.environ, PROFILE_ENV: folder,
               'PYTHONPATH': os.pathsep.join([os.path.join(HERE, '_profile'), HERE,
                                              os.environ.get('PYTHONPATH', '')])}
        subprocess.run([sys.executable, os.path.abspath(__file__), '--profiled-child', folder,
                        '--posts', str(posts)], env=env, check=True)
        return load_profiles(folder, posts, top)


# -- report ------------------------------------------------------------------------------------
def print_report(report: dict) -> None:
    lat = report['latency']
    print('\n1-doc echo, sequential (ms)          p50      p99')
    for path in ('gateway', 'worker'):
        print(f"  via {path:<30}{lat[path]['p50_ms']:>6.3f}{lat[path]['p99_ms']:>9.3f}")
    f = report['floors']
    print('floors (ms p50): codec 1 doc {:.3f}; thread hop {:.3f}; bare gRPC stream round trip '
          '{:.3f} in its loop, {:.3f} through the hop'.format(
              f['codec_1doc']['p50_ms'], f['thread_hop']['p50_ms'],
              f['grpc_stream_in_loop']['p50_ms'], f['grpc_stream_with_hop']['p50_ms']))
    for path, cost in report['cpu'].items():
        print(f"\nCPU per request via {path} (/proc, no profiler; wall "
              f"{cost['wall_ms_per_request'] * 1000:.0f} us/request)")
        for role in ('client', 'gateway', 'worker'):
            c = cost[role]
            threads = ', '.join(f"{name} {t['cpu_us']:.0f} us/{t['wakeups']:.1f} wakeups"
                                for name, t in c['threads'].items())
            print(f"  {role:<8}{c['cpu_us']:>6.0f} us: {threads}")
    print('\ncProfile, thread CPU time per request (us; profiler overhead included, read as '
          'shares)')
    for role in ('client', 'gateway', 'worker'):
        p = report['profile'].get(role)
        if not p:
            continue
        total = p['profiled_cpu_us_per_request']
        cats = ', '.join(f'{k} {v / total:.0%}' for k, v in p['categories_us'].items()
                         if v / total >= 0.02)
        print(f'  {role}: {total:.0f} us ({cats})')
        for item in p['top'][:8]:
            print(f"      {item['own_us_per_request']:>7.1f} us  {item['calls_per_request']:>5.1f}x"
                  f"  {item['function']}")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--posts', type=int, default=2_000)
    parser.add_argument('--top', type=int, default=25, help='functions kept per process')
    parser.add_argument('--json', default=os.path.join(HERE, 'results', 'profile_echo.json'))
    parser.add_argument('--profiled-child', metavar='FOLDER', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.profiled_child:
        profiled_child(args.profiled_child, args.posts)
        return {}
    print(f'nborch 1-doc echo profile: {args.posts} posts per measurement, {os.cpu_count()} cores',
          flush=True)
    report = latency_and_cpu(args.posts)
    report['floors'] = floors(args.posts)
    report['profile'] = run_profiled(args.posts, args.top)
    report['posts'] = args.posts
    print_report(report)
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, 'w') as f:
        json.dump(report, f, indent=2)
    print(f'\nwrote {args.json}')
    return report


if __name__ == '__main__':
    main()
