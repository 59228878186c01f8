"""Where a 1-doc request's time goes, per process: client, gateway, worker.

    python benchmarks/profile_echo.py                 # 2 000 posts per measurement
    python benchmarks/profile_echo.py --posts 500     # quicker
    python benchmarks/profile_echo.py --search 10000  # one query (limit=100) over 10k docs
    (writes benchmarks/results/profile_echo.json / profile_search.json; --json elsewhere)

Sequential 1-doc posts (a TextDoc, text only) to `nborch.examples.Echo`, measured four ways
in one run:

1. latency: p50 through `Deployment.post` (the owner routes: client → worker), a `Client` on
   the gateway port (client → gateway → worker) and straight to the worker (a `Client` on
   its port), interleaved in rounds;
2. CPU per request, per process and per thread, from /proc (no profiler running): which
   threads work, for how long, and how often each wakes up (voluntary context switches,
   i.e. hand-offs between threads and processes);
3. the floors, in this run: the docs codec on 1 doc, the thread hop `Deployment.post`
   makes (nborch._loop.run_sync of a coroutine that does nothing), a bare grpc.aio
   `Executor.Stream` echo server (nothing but gRPC; it sends the request's docs back)
   called from its own loop and through that hop, and the executor answering the same
   request in this process;
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
from dataclasses import dataclass

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

import _one_blas_thread  # noqa: E402,F401  (before numpy)
from docarray import DocList  # noqa: E402
from docarray.documents import TextDoc  # noqa: E402

from _proc_cpu import thread_counters  # noqa: E402
from _workloads import percentile  # noqa: E402
from nborch import Client, Deployment  # noqa: E402
from nborch.examples import Echo, QueryDoc  # noqa: E402

PROFILE_ENV = 'NBORCH_BENCH_PROFILE'
ONE_DOC = DocList[TextDoc]([TextDoc(text='hello')])


@dataclass
class Workload:
    """What one request is: 1-doc echo, or (`--search N`) one query, limit=100, to
    PreloadedSearch over N docs (benchmarks/_preloaded.py)."""

    name: str
    uses: type
    uses_with: dict
    endpoint: str
    docs: DocList
    parameters: dict | None = None
    return_type: type = DocList

    @classmethod
    def of(cls, search_docs: int | None) -> 'Workload':
        if not search_docs:
            return cls('echo', Echo, {}, '/', ONE_DOC)
        from _preloaded import PreloadedSearch
        from _workloads import LIMIT, make_queries
        query = make_queries(1, QueryDoc)
        return cls('search', PreloadedSearch, {'docs': search_docs}, '/search', query,
                   {'limit': LIMIT}, DocList[QueryDoc])

    def deployment(self) -> Deployment:
        return Deployment(name=self.name, uses=self.uses, uses_with=self.uses_with, quiet=True)

    def post(self, client):
        return client.post(self.endpoint, self.docs, parameters=self.parameters,
                           return_type=self.return_type)

    def in_process(self):
        """The same request answered by the executor in this process (no codec, no hop)."""
        executor = self.uses(**self.uses_with)
        method = {'/': 'echo', '/search': 'search'}[self.endpoint]
        doc_type = self.docs.doc_type
        fresh = lambda: DocList[doc_type]([doc_type(**d.dict()) for d in self.docs])  # noqa: E731
        inputs = fresh()
        return lambda: getattr(executor, method)(docs=inputs, parameters=self.parameters or {})


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


def thread_label(pid: int, tid: int, comm: str) -> str:
    """A thread's Python name in this process; elsewhere 'main' for the main thread (the
    asyncio loop of a gateway or worker), gRPC's C-core threads by their own name
    ('event_engine'), other Python threads (a worker's executor thread) as 'python thread'."""
    import threading
    if pid == os.getpid():
        names = {t.native_id: t.name for t in threading.enumerate()}
        if tid in names:
            return names[tid]
    if tid == pid:
        return 'main'
    return comm if comm != 'python' else 'python thread'


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
            label = thread_label(pids[role], tid, now['name'])
            t = threads.setdefault(label, {'cpu_us': 0.0, 'wakeups': 0.0, 'preempted': 0.0})
            t['cpu_us'] += (now['cpu_s'] - then['cpu_s']) * 1e6 / n
            t['wakeups'] += (now['voluntary'] - then['voluntary']) / n
            t['preempted'] += (now['nonvoluntary'] - then['nonvoluntary']) / n
        busy = {k: v for k, v in threads.items() if v['cpu_us'] >= 1 or v['wakeups'] >= 0.05}
        out[role] = {'cpu_us': sum(t['cpu_us'] for t in threads.values()),
                     'threads': dict(sorted(busy.items(), key=lambda kv: -kv[1]['cpu_us']))}
    return out


def latency_and_cpu(work: Workload, posts: int, rounds: int = 5) -> dict:
    with work.deployment() as dep:
        worker_port = dep.status()['executors'][0]['shards'][0]['replicas'][0]['port']
        direct = Client(port=worker_port, secret=dep.secret)
        try:
            paths = {'post': lambda: work.post(dep), 'gateway': lambda: work.post(dep.client),
                     'worker': lambda: work.post(direct)}
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


def floors(work: Workload, posts: int) -> dict:
    import asyncio

    import grpc

    from nborch._loop import get_loop, run_sync
    from nborch.protos import nborch_pb2 as pb
    from nborch.protos import nborch_pb2_grpc as pb_grpc
    from nborch.runtime.codec import decode_docs, encode_docs

    answer = work.in_process()
    reply = answer() or work.docs
    request_type, reply_type = work.docs.doc_type, reply.doc_type
    out = {'in_process': summary(timed(answer, posts)),
           'codec_request': summary(timed(
               lambda: decode_docs(encode_docs(work.docs), request_type), posts)),
           'codec_reply': summary(timed(lambda: decode_docs(encode_docs(reply), reply_type),
                                        posts))}

    async def nothing():
        return None

    run_sync(nothing())
    out['thread_hop'] = summary(timed(lambda: run_sync(nothing()), posts))
    server = subprocess.Popen([sys.executable, '-c', BARE_SERVER.format(root=ROOT)],
                              stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline())
        request = pb.DataRequest(endpoint='/', docs=encode_docs(work.docs))
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
        out['grpc_stream_cpu'] = per_thread_cost({'client': os.getpid(), 'server': server.pid},
                                                 lambda: run_sync(in_loop(posts)), posts)
        out['grpc_stream_with_hop'] = summary(timed(lambda: run_sync(round_trip()), posts))
        asyncio.run_coroutine_threadsafe(state['channel'].close(), get_loop()).result(5)
    finally:
        server.terminate()
        server.wait()
    return out


# -- 4: cProfile in every process --------------------------------------------------------------
def profiled_child(work: Workload, folder: str, posts: int) -> None:
    """Runs in a child started with NBORCH_BENCH_PROFILE set (so profiled itself): marks
    'a', makes `posts` posts, marks 'b'; each process writes a snapshot per mark."""
    def mark(name: str, processes: int = 3) -> None:
        open(os.path.join(folder, f'mark-{name}'), 'w').close()
        deadline = time.monotonic() + 30
        while len([f for f in os.listdir(folder) if f.endswith(f'.{name}.stats')]) < processes:
            if time.monotonic() > deadline:
                raise TimeoutError(f'not every process wrote its {name!r} snapshot')
            time.sleep(0.02)

    with work.deployment() as dep:  # through the gateway: every process has a share
        timed(lambda: work.post(dep.client), 200)
        mark('a')
        times = timed(lambda: work.post(dep.client), posts)
        mark('b')
    with open(os.path.join(folder, 'latency.json'), 'w') as f:
        json.dump(summary(times), f)


CATEGORIES = (  # (name, substrings of 'file function'), first match wins
    ('docs codec', ('/runtime/codec', '/runtime/_codec')),
    ('docarray + pydantic', ('docarray', 'pydantic', 'typing.py')),
    ('protobuf', ('google', 'protobuf', '_upb')),
    ('asyncio callbacks (gRPC Cython inside)', ("'run' of '_contextvars.Context'",)),
    ('asyncio event loop', ('asyncio', 'selectors', 'select.epoll')),
    ('thread hand-offs (futures, locks)', ('threading', 'concurrent', '_thread', 'queue')),
    ('grpc (Python side)', ('grpc',)),
    ('json', ('json',)),
)


def category(func: tuple) -> str:
    """What a function belongs to; nborch's own code by its module."""
    text = f'{func[0]} {func[2]}'
    for name, needles in CATEGORIES:
        if any(n in text for n in needles):
            return name
    if '/runtime/' in func[0] or '/nborch/' in func[0]:
        return 'nborch ' + os.path.basename(func[0])
    return 'other'


def builtin(func: tuple) -> bool:
    """A C function that belongs to whoever calls it (isinstance, len, dict.get, ...)."""
    return func[0] == '~' and category(func) == 'other'


def diff(after: dict, before: dict) -> dict:
    """Per function: (calls, own time, {caller: own time when called from it}) between two
    snapshots of one thread."""
    out = {}
    for func, (_cc, nc, tt, _ct, callers) in after.items():
        prev = before.get(func, (0, 0, 0.0, 0.0, {}))
        calls, own = nc - prev[1], tt - prev[2]
        by_caller = {c: v[2] - prev[4].get(c, (0, 0, 0.0, 0.0))[2] for c, v in callers.items()}
        if calls or own > 0:
            out[func] = (calls, own, by_caller)
    return out


def categories_of(funcs: dict) -> dict[str, float]:
    """Own time summed by category; a builtin's time goes to its callers' categories."""
    cats: dict[str, float] = {}
    for func, (_, own, by_caller) in funcs.items():
        if builtin(func) and by_caller:
            for caller, t in by_caller.items():
                cats[category(caller)] = cats.get(category(caller), 0.0) + t
            rest = own - sum(by_caller.values())
        else:
            rest = own
        cats[category(func)] = cats.get(category(func), 0.0) + rest
    return cats


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
            threads[thread] = sum(own for _, own, _ in d.values()) * 1e6 / posts
            for func, (calls, own, by_caller) in d.items():
                acc = funcs.setdefault(func, [0, 0.0, {}])
                acc[0] += calls
                acc[1] += own
                for caller, t in by_caller.items():
                    acc[2][caller] = acc[2].get(caller, 0.0) + t
        total_us = sum(own for _, own, _ in funcs.values()) * 1e6 / posts
        cats = {k: v * 1e6 / posts for k, v in categories_of(funcs).items()}
        loop_turns = sum(calls for func, (calls, _, _) in funcs.items()
                         if func[2] == '_run_once' and 'base_events' in func[0]) / posts
        ranked = sorted(funcs.items(), key=lambda kv: -kv[1][1])[:top]
        profiles[role] = {
            'profiled_cpu_us_per_request': total_us, 'loop_turns_per_request': loop_turns,
            'threads_us': {t: us for t, us in sorted(threads.items(), key=lambda kv: -kv[1])
                           if us >= 1},
            'categories_us': dict(sorted(cats.items(), key=lambda kv: -kv[1])),
            'top': [{'function': where(func), 'calls_per_request': calls / posts,
                     'own_us_per_request': own * 1e6 / posts}
                    for func, (calls, own, _) in ranked]}
    with open(os.path.join(folder, 'latency.json')) as f:
        profiles['latency_under_profiler'] = json.load(f)
    return profiles


def run_profiled(posts: int, top: int, search_docs: int | None) -> dict:
    with tempfile.TemporaryDirectory(prefix='nborch-profile-') as folder:
        env = {**os.environ, PROFILE_ENV: folder,
               'PYTHONPATH': os.pathsep.join([os.path.join(HERE, '_profile'), HERE,
                                              os.environ.get('PYTHONPATH', '')])}
        subprocess.run([sys.executable, os.path.abspath(__file__), '--profiled-child', folder,
                        '--posts', str(posts), '--search', str(search_docs or 0)],
                       env=env, check=True)
        return load_profiles(folder, posts, top)


# -- report ------------------------------------------------------------------------------------
PATHS = {'post': 'Deployment.post (owner routes)', 'gateway': 'Client on the gateway port',
         'worker': 'Client on the worker port'}


def print_report(report: dict) -> None:
    lat = report['latency']
    print(f"\n{report['workload']}, sequential (ms)          p50      p99")
    for path, label in PATHS.items():
        print(f"  {label:<34}{lat[path]['p50_ms']:>6.3f}{lat[path]['p99_ms']:>9.3f}")
    f = report['floors']
    print('floors (ms p50): in-process {:.3f}; codec request {:.3f}, reply {:.3f}; thread hop '
          '{:.3f}; bare gRPC stream round trip {:.3f} in its loop, {:.3f} through the hop'.format(
              f['in_process']['p50_ms'], f['codec_request']['p50_ms'], f['codec_reply']['p50_ms'],
              f['thread_hop']['p50_ms'],
              f['grpc_stream_in_loop']['p50_ms'], f['grpc_stream_with_hop']['p50_ms']))
    g = f['grpc_stream_cpu']
    print(f"bare gRPC stream round trip CPU: client {g['client']['cpu_us']:.0f} us, server "
          f"{g['server']['cpu_us']:.0f} us (wall {g['wall_ms_per_request'] * 1000:.0f} us)")
    for path, cost in report['cpu'].items():
        print(f"\nCPU per request, {PATHS[path]} (/proc, no profiler; wall "
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
        print(f"  {role}: {total:.0f} us, {p['loop_turns_per_request']:.1f} asyncio loop turns "
              f'per request ({cats})')
        for item in p['top'][:8]:
            print(f"      {item['own_us_per_request']:>7.1f} us  {item['calls_per_request']:>5.1f}x"
                  f"  {item['function']}")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--posts', type=int, default=2_000)
    parser.add_argument('--top', type=int, default=25, help='functions kept per process')
    parser.add_argument('--search', type=int, default=0, metavar='DOCS',
                        help='profile one-query searches (limit=100) over DOCS docs, not echo')
    parser.add_argument('--json', default=None,
                        help='default: benchmarks/results/profile_echo.json (profile_search.json)')
    parser.add_argument('--profiled-child', metavar='FOLDER', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    work = Workload.of(args.search)
    if args.profiled_child:
        profiled_child(work, args.profiled_child, args.posts)
        return {}
    args.json = args.json or os.path.join(HERE, 'results', f'profile_{work.name}.json')
    what = f'one-query search over {args.search} docs' if args.search else '1-doc echo'
    print(f'nborch {what} profile: {args.posts} posts per measurement, {os.cpu_count()} cores',
          flush=True)
    report = {'workload': work.name, 'search_docs': args.search, 'posts': args.posts}
    report.update(latency_and_cpu(work, args.posts))
    report['floors'] = floors(work, args.posts)
    report['profile'] = run_profiled(args.posts, args.top, args.search)
    print_report(report)
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, 'w') as f:
        json.dump(report, f, indent=2)
    print(f'\nwrote {args.json}')
    return report


if __name__ == '__main__':
    main()
