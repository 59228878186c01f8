"""nborch beside the reference system (Jina 3.34): the same workloads, interleaved, in one run.

    python benchmarks/vs_reference.py --quick              # a few minutes
    python benchmarks/vs_reference.py                      # 10 000 docs, 200 queries, 3 rounds
    python benchmarks/vs_reference.py --full               # the page's 100 000 docs, 1 000 queries
    python benchmarks/vs_reference.py --reference-venv /path/to/venv-with-jina --json out.json

Runs under nborch's venv. The reference system lives in its own venv (`--reference-venv`,
default `.venv-reference` in the repository), created from the pins (`--pins`, default
`../shared/reference/jina-pins.txt` beside the repository: jina 3.34 needs docarray 0.40 with
pydantic 1.10) when it has no python yet, and reused as it is when it has one.

Workloads, each on both systems, alternating which goes first, for `--rounds` rounds:
  echo       p50/p99 of sequential 1-doc posts to an echo executor through a Deployment's
             gateway, and straight to the executor (the reference system: a second
             Deployment with include_gateway=False); one client each, reused
  numpy-*    the page's index/search (TextDoc, 128-d, request_size=100 for indexing, then
             single-doc searches with limit=100) with a numpy-matrix executor, replicas=1
             and replicas=3 stateful (Raft)
  docarray-* the same with the page's executor (docarray's InMemoryExactNNIndex, ~35 ms a
             query, which hides the orchestration); `--skip-docarray` leaves it out
  writes     p50/p99 of sequential 1-doc @write posts to a replicas=3 stateful Deployment

Each run is a fresh process of the system's own python (nborch_driver.py,
reference_driver.py) with a timeout; every process it starts is killed when it ends, when
the script fails and on Ctrl-C. A run that fails or times out is recorded with its error's
first line and shown as "fails: <reason>"; on the reference side an index whose docs stop
growing for `--stall` seconds fails as "stalled" (its Raft group can wedge with the client
still waiting). Figures are medians over the rounds; the ratio is
reference / nborch (above 1: nborch is faster). The table is printed and the JSON written to
`--json` (default benchmarks/results/vs_reference.json; `-` for stdout).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

import psutil

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
GUARD = os.path.join(HERE, '_loopback')
DRIVERS = {'nborch': os.path.join(HERE, 'nborch_driver.py'),
           'reference': os.path.join(HERE, 'reference_driver.py')}
MARKER = 'NBORCH_VS_REFERENCE_RUN'  # in every process a run starts: how leftovers are found
EXIT_GRACE_S = 20  # after its result is final, a driver gets this long to shut down
PEER_FIGURES = os.path.join(REPO, '..', 'shared', 'reference', 'peer-figures.md')

SIZES = {  # docs, queries, echo posts, sequential writes, rounds
    'quick': dict(docs=2_000, queries=50, echo_posts=200, writes=100, rounds=1),
    'default': dict(docs=10_000, queries=200, echo_posts=1_000, writes=300, rounds=3),
    'full': dict(docs=100_000, queries=1_000, echo_posts=2_000, writes=1_000, rounds=1),
}
TOP1 = 10  # the first queries whose best match both systems must agree on


# -- the reference system's venv ------------------------------------------------------------
def ensure_reference_venv(path: str, pins: str, out) -> dict:
    python = os.path.join(path, 'bin', 'python')
    if not os.path.exists(python):
        if not os.path.exists(pins):
            raise SystemExit(f'no python in {path} and no pins file at {pins} (--pins)')
        print(f'creating the reference venv {path} from {pins} (a few minutes)', file=out,
              flush=True)
        subprocess.run([sys.executable, '-m', 'venv', path], check=True)
        subprocess.run([python, '-m', 'pip', 'install', '-q', '--upgrade', 'pip'], check=False)
        subprocess.run([python, '-m', 'pip', 'install', '-q', '-r', pins], check=True)
    probe = ('import json, sys, jina, docarray, pydantic, grpc; print(json.dumps({'
             '"jina": jina.__version__, "docarray": docarray.__version__, '
             '"pydantic": pydantic.VERSION, "grpcio": grpc.__version__, '
            '"python_version": sys.version.split()[0]}))')
    done = subprocess.run([python, '-c', probe], capture_output=True, text=True,
                          env=driver_env('probe'), timeout=120)
    if done.returncode:
        tail = (done.stderr.strip().splitlines() or ['?'])[-1]
        raise SystemExit(f'{python} cannot import the reference system: {tail}')
    versions = json.loads(done.stdout.strip().splitlines()[-1])
    if versions['jina'] != '3.34.0' or not str(versions['pydantic']).startswith('1.'):
        print(f'warning: the reference venv has jina {versions["jina"]} with pydantic '
              f'{versions["pydantic"]}; the pins say jina 3.34.0 with pydantic 1.10 (with '
              'pydantic 2 its endpoint discovery hangs on nested DocList docs)', file=out)
    return {'venv': path, 'python': python, **versions}


# -- running one driver --------------------------------------------------------------------
def driver_env(token: str) -> dict:
    env = dict(os.environ)
    env[MARKER] = token
    env['JINA_OPTOUT_TELEMETRY'] = '1'  # the reference system's telemetry, off
    env['PYTHONPATH'] = os.pathsep.join([GUARD] + ([env['PYTHONPATH']]
                                                   if env.get('PYTHONPATH') else []))
    env.pop('VIRTUAL_ENV', None)
    return env


def marked(prefix: str) -> list[psutil.Process]:
    """Processes whose environment carries this run's marker (ours and their children,
    orphans included)."""
    found = []
    me = os.getpid()
    for proc in psutil.process_iter(['pid']):
        if proc.pid == me:
            continue
        try:
            if proc.environ().get(MARKER, '').startswith(prefix):
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def kill_tree(root: subprocess.Popen | None, known: dict[int, psutil.Process], prefix: str,
              grace: float = 5.0) -> int:
    """Stop a driver and everything it started: its process group, the descendants seen
    while it ran, then anything still carrying the marker (psutil checks each process's
    identity before it signals, so a reused pid is left alone). Returns how many processes
    were still running."""
    procs = dict(known)
    if root is not None and root.poll() is None:  # not reaped: its pid and group are its own
        try:
            parent = psutil.Process(root.pid)
            procs[parent.pid] = parent
            procs.update({c.pid: c for c in parent.children(recursive=True)})
        except psutil.Error:
            pass
        try:
            os.killpg(root.pid, signal.SIGTERM)
        except OSError:
            pass
    procs.update({p.pid: p for p in marked(prefix)})
    running = [p for p in procs.values() if _running(p)]
    for proc in running:
        try:
            proc.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(running, timeout=grace)
    for proc in alive + marked(prefix):
        try:
            proc.kill()
        except psutil.Error:
            pass
    if root is not None:
        try:
            root.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    return len(running)


class Runner:
    def __init__(self, pythons: dict[str, str], tmp: str):
        self.pythons = pythons
        self.tmp = tmp
        self.prefix = f'{uuid.uuid4().hex}-'
        self.count = 0
        self.current: subprocess.Popen | None = None
        self.known: dict[int, psutil.Process] = {}

    def run(self, side: str, spec: dict, timeout: float) -> dict:
        self.count += 1
        token = f'{self.prefix}{self.count}'
        result_path = os.path.join(self.tmp, f'result-{self.count}.json')
        log_path = os.path.join(self.tmp, f'log-{self.count}.txt')
        work = os.path.join(self.tmp, f'work-{self.count}')  # workspaces land here (TMPDIR)
        os.makedirs(work)
        env = driver_env(token)
        env['TMPDIR'] = work
        start = time.monotonic()
        status, result, hung = 'ok', {}, False
        with open(log_path, 'wb') as log:
            self.current = subprocess.Popen(
                [self.pythons[side], DRIVERS[side], json.dumps(spec), result_path],
                cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True)
            self.known = {}
            final_at = None
            next_scan = 0.0
            try:
                while True:
                    rc = self.current.poll()
                    result = read_json(result_path) or result
                    now = time.monotonic()
                    if rc is not None:
                        break
                    if now >= next_scan:  # remember descendants: orphans are found too
                        next_scan = now + 1.0
                        try:
                            for child in psutil.Process(self.current.pid).children(recursive=True):
                                self.known.setdefault(child.pid, child)
                        except psutil.Error:
                            pass
                    if result.get('final') and final_at is None:
                        final_at = now
                    if final_at is not None and now - final_at > EXIT_GRACE_S:
                        hung = True
                        break
                    if now - start > timeout:
                        status = 'timeout'
                        break
                    time.sleep(0.2)
            finally:
                killed = kill_tree(self.current, self.known, token)
                self.current = None
        result = read_json(result_path) or result
        if status == 'timeout':
            result.setdefault('error', f'timed out after {timeout:.0f} s '
                                       f"(at {result.get('phase', 'start')})")
            result['ok'] = False
        elif not result.get('final'):
            status = 'failed'
            result['ok'] = False
            result.setdefault('error', last_error(log_path) or 'the driver exited early')
        elif not result.get('ok'):
            status = 'failed'
        if status != 'ok':
            result['last_error_logged'] = last_error(log_path)
        tail, error_lines = log_summary(log_path)
        result.update(side=side, status=status, wall_s=time.monotonic() - start,
                      hung_on_exit=hung, error_log_lines=error_lines, killed=killed)
        if status != 'ok':
            result['log_tail'] = tail
        shutil.rmtree(work, ignore_errors=True)
        return result

    def stop(self) -> None:
        kill_tree(self.current, self.known, self.prefix)
        self.current = None


def read_json(path: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def log_summary(path: str, lines: int = 25) -> tuple[list[str], dict]:
    """The log's last lines, and how many lines report errors (and how many of those are
    Raft followers refusing writes)."""
    tail: list[str] = []
    counts = {'error': 0, 'not_leader': 0}
    try:
        with open(path, errors='replace') as f:
            for line in f:
                if '[ERROR]' in line or 'ERROR ' in line[:40]:
                    counts['error'] += 1
                    counts['not_leader'] += 'not the leader' in line
                tail.append(line.rstrip())
                if len(tail) > lines:
                    tail.pop(0)
    except OSError:
        pass
    return tail, counts


def last_error(path: str, limit: int = 160) -> str | None:
    """The last line of the log that reports an error, less its timestamp; Raft followers'
    "node is not the leader" lines are routine for the reference system and skipped."""
    tail, _ = log_summary(path, lines=400)
    for line in reversed(tail):
        if 'not the leader' in line or '[INFO]' in line or '[WARN]' in line:
            continue
        if '[ERROR]' in line or 'Error' in line or 'Exception' in line or 'error=' in line:
            line = re.sub(r'^\S*\d{4}-\d\d-\d\dT[\d:.]+Z\s*', '', line.strip())
            if ' error=' in line:  # the Raft library's key=value lines: what failed, and why
                head, detail = line.split(' error=', 1)
                what = head.split(': ')[1] if ': ' in head else head
                line = f"{what.split(':')[0]}: {detail.strip(chr(34))}"
            return line if len(line) <= limit else line[:limit - 3] + '...'
    return None


# -- workloads, figures, table -------------------------------------------------------------
def workloads(args) -> list[tuple[str, str, dict, float]]:
    """(key, title, spec, timeout_s) of every workload in this run."""
    d, q = args.docs, args.queries
    out = [('echo', '1-doc echo', {'workload': 'echo', 'posts': args.echo_posts,
                                   'warmup': min(100, args.echo_posts)},
            120 + 0.1 * args.echo_posts)]
    executors = [('numpy', 'NumpySearch', 0.05)]
    if not args.skip_docarray:
        executors.append(('docarray', 'ExactNNSearch', 0.1 + 2e-6 * d))
    for name, executor, per_query in executors:
        for replicas, stateful in ((1, False), (3, True)):
            key = f'{name}-r{replicas}' + ('-stateful' if stateful else '')
            title = f'{executor} replicas={replicas}' + (' stateful' if stateful else '')
            out.append((key, title, {'workload': 'search', 'executor': executor,
                                     'replicas': replicas, 'stateful': stateful, 'docs': d,
                                     'queries': q, 'top1': TOP1, 'stall_s': args.stall},
                        240 + 0.003 * d + per_query * q))
    out.append(('writes', '1-doc write, replicas=3 stateful',
                {'workload': 'writes', 'writes': args.writes, 'warmup': 20},
                120 + 0.2 * args.writes))
    return [(k, t, s, timeout * args.timeout_scale) for k, t, s, timeout in out]


def metrics(key: str, docs: int) -> list[tuple[str, object]]:
    """(row label, how to read the figure from one run) for a workload."""
    if key == 'echo':
        # The reference system's Deployment.post is a client of its gateway; nborch's
        # routes from the owner, one hop shorter.
        return [('Deployment.post, p50 ms', lambda r: r.get('post', r['gateway'])['p50_ms']),
                ('via the gateway, p50 ms', ('gateway', 'p50_ms')),
                ('via the gateway, p99 ms', ('gateway', 'p99_ms')),
                ('straight to the executor, p50 ms', ('worker', 'p50_ms')),
                ('the gateway\'s share (p50 difference), ms',
                 lambda r: r['gateway']['p50_ms'] - r['worker']['p50_ms'])]
    if key == 'writes':
        return [('p50 ms', ('commit_p50_ms',)), ('p99 ms', ('commit_p99_ms',))]
    return [('Deployment start, s', ('start_s',)), (f'index {docs} docs, s', ('index_s',)),
            ('search, ms/query', ('ms_per_query',))]


def figure(run: dict, how) -> float | None:
    try:
        if callable(how):
            return float(how(run))
        value = run
        for part in how:
            value = value[part]
        return float(value)
    except (KeyError, TypeError, ValueError):
        return None


def summarize(plan, runs: list[dict], docs: int) -> tuple[list[dict], dict]:
    rows, agreement = [], {}
    for key, title, _spec, _timeout in plan:
        mine = {side: [r for r in runs if r['key'] == key and r['side'] == side]
                for side in ('nborch', 'reference')}
        for label, how in metrics(key, docs):
            row = {'workload': key, 'label': f'{title}: {label}'}
            for side, side_runs in mine.items():
                values = [v for v in (figure(r, how) for r in side_runs) if v is not None]
                failures = [r.get('error') or r['status'] for r in side_runs
                            if figure(r, how) is None]
                row[side] = statistics.median(values) if values else None
                row[f'{side}_values'] = values
                row[f'{side}_failures'] = failures
            n, ref = row['nborch'], row['reference']
            row['ratio'] = ref / n if n and ref and n > 0 and ref > 0 else None
            rows.append(row)
        if key.startswith(('numpy', 'docarray')):
            agreement[key] = agree(mine['nborch'], mine['reference'])
    return rows, agreement


def agree(nborch_runs: list[dict], reference_runs: list[dict]) -> dict:
    """Do both systems return the same best match for the first queries?"""
    a = next((r['top1'] for r in nborch_runs if r.get('top1')), None)
    b = next((r['top1'] for r in reference_runs if r.get('top1')), None)
    if not a or not b:
        return {'compared': 0, 'same': 0}
    common = sorted(set(a) & set(b))
    return {'compared': len(common), 'same': sum(a[k] == b[k] for k in common)}


def fmt(value: float | None) -> str:
    if value is None:
        return ''
    return f'{value:.3f}' if abs(value) < 10 else f'{value:.1f}'


def cell(row: dict, side: str, width: int = 72) -> str:
    value, failures = row[side], row[f'{side}_failures']
    if value is None:
        text = f'fails: {failures[0]}' if failures else 'not run'
        return text if len(text) <= width else text[:width - 3] + '...'
    mark = f' ({len(failures)}/{len(failures) + len(row[side + "_values"])} failed)' \
        if failures else ''
    return fmt(value) + mark


def print_table(report: dict, out) -> None:
    rows = report['table']
    cells = [(r['label'], cell(r, 'nborch'), cell(r, 'reference'),
              f"{r['ratio']:.2f}x" if r['ratio'] else '') for r in rows]
    widths = [max(len(c[i]) for c in cells + [('workload', 'nborch', 'reference', 'reference/nborch')])
              for i in range(4)]
    header = ('workload', 'nborch', 'reference', 'reference/nborch')
    print(file=out)
    print('  '.join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in
                    enumerate(zip(header, widths))), file=out)
    print('  '.join('-' * w for w in widths), file=out)
    for c in cells:
        print('  '.join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in
                        enumerate(zip(c, widths))), file=out)
    print(file=out)
    for note in report['notes']:
        print(f'- {note}', file=out)


def notes(report: dict) -> list[str]:
    c, ref = report['config'], report['reference_system']
    out = [f"Figures measured in this run on {c['cores']} cores: nborch {c['nborch']} "
           f"(python {c['python']}) and jina {ref['jina']} (docarray {ref['docarray']}, "
           f"pydantic {ref['pydantic']}, grpcio {ref['grpcio']}, from {ref['venv']}); each "
           f"the median of {c['rounds']} round(s), the two systems alternating which runs "
           f"first; {c['docs']} docs, {c['queries']} queries, {c['echo_posts']} echo posts, "
           f"{c['writes']} sequential writes. ratio = reference / nborch (above 1: nborch "
           'is faster).',
           'Both sides use their default client settings, one client per Deployment reused '
           "for every post (the reference system's Client.post opens a gRPC channel per "
           'call: that is in its figures, as a user gets it).']
    for run in report['runs']:
        if run['status'] != 'ok':
            logged = run.get('last_error_logged')
            out.append(f"{run['side']} failed in {run['key']} (round {run['round']}, after "
                       f"{run['wall_s']:.0f} s): {run.get('error')}"
                       + (f'; the last error it logged: {logged}' if logged else ''))
    for key, a in report['agreement'].items():
        if a['compared']:
            verdict = 'the same' if a['same'] == a['compared'] else 'DIFFERENT'
            out.append(f"{key}: best match of {a['compared']} queries {verdict} on both "
                       f"systems ({a['same']}/{a['compared']} agree)")
    for side in ('nborch', 'reference'):
        logged = {}
        for run in report['runs']:
            if run['side'] == side and run['error_log_lines']['error']:
                logged.setdefault(run['key'], []).append(run['error_log_lines'])
        for key, counts in logged.items():
            worst = max(counts, key=lambda c: c['error'])
            leader = (f", {worst['not_leader']} of them \"node is not the leader\" (writes "
                      'sent to a Raft follower)') if worst['not_leader'] else ''
            out.append(f'{side} {key}: its processes logged up to {worst["error"]} error '
                       f'lines a run{leader}')
    hung = sorted({f"{r['side']} {r['key']}" for r in report['runs'] if r.get('hung_on_exit')})
    if hung:
        out.append(f'did not exit within {EXIT_GRACE_S} s of its result (killed): '
                   + ', '.join(hung))
    if c['docs'] < SIZES['full']['docs'] and 'numpy-r3-stateful' in report['agreement']:
        out.append("not run at this size: at the page's 100 000 docs (--full) the reference "
                   "system's replicas=3 stateful index with its default client is known to "
                   "fail after ~25 000 docs with \"timed out enqueuing operation\" "
                   '(measured before, ../shared/reference/peer-figures.md)')
    return out


# -- main ------------------------------------------------------------------------------------
def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument('--quick', action='store_true', help=f"{SIZES['quick']}")
    size.add_argument('--full', action='store_true', help=f"the page's size: {SIZES['full']}")
    parser.add_argument('--docs', type=int)
    parser.add_argument('--queries', type=int)
    parser.add_argument('--echo-posts', type=int)
    parser.add_argument('--writes', type=int, help='sequential 1-doc writes')
    parser.add_argument('--rounds', type=int, help='1 with --quick/--full, else 3')
    parser.add_argument('--skip-docarray', action='store_true',
                        help="leave out the page's docarray-index executor")
    parser.add_argument('--only', metavar='KEYS',
                        help='comma-separated workloads (echo, numpy-r1, numpy-r3-stateful, '
                             'docarray-r1, docarray-r3-stateful, writes)')
    parser.add_argument('--reference-venv', default=os.path.join(REPO, '.venv-reference'),
                        help='a venv with the reference system, created from --pins if it '
                             'has no python (default: .venv-reference in the repository)')
    parser.add_argument('--pins', default=os.path.normpath(
        os.path.join(REPO, '..', 'shared', 'reference', 'jina-pins.txt')))
    parser.add_argument('--stall', type=float, default=120, metavar='S',
                        help="the reference side's stateful index counts as failed when its "
                             'docs have not grown (or no count came back) for S seconds '
                             '(default 120)')
    parser.add_argument('--timeout-scale', type=float, default=1.0,
                        help="multiplies every run's timeout")
    parser.add_argument('--json', metavar='PATH',
                        default=os.path.join(HERE, 'results', 'vs_reference.json'),
                        help="where the JSON goes ('-': stdout)")
    args = parser.parse_args(argv)
    sizes = SIZES['quick' if args.quick else 'full' if args.full else 'default']
    for name, value in sizes.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def main(argv=None) -> dict:
    args = parse(argv)
    out = sys.stderr if args.json == '-' else sys.stdout
    import nborch
    reference = ensure_reference_venv(os.path.abspath(args.reference_venv), args.pins, out)
    plan = workloads(args)
    if args.only:
        keep = set(args.only.split(','))
        plan = [w for w in plan if w[0] in keep]
    config = {k: getattr(args, k) for k in ('docs', 'queries', 'echo_posts', 'writes', 'rounds')}
    config.update(cores=os.cpu_count(), python=platform.python_version(),
                  nborch=getattr(nborch, '__version__', '?'), skip_docarray=args.skip_docarray,
                  timeout_s={k: t for k, _, _, t in plan})
    report = {'config': config, 'reference_system': reference, 'runs': []}
    print(f"nborch vs the reference system (jina {reference['jina']}): {args.docs} docs, "
          f"{args.queries} queries, {args.rounds} round(s), {os.cpu_count()} cores", file=out,
          flush=True)
    tmp = tempfile.mkdtemp(prefix='nborch-vsref-')
    runner = Runner({'nborch': sys.executable, 'reference': reference['python']}, tmp)

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f'signal {signum}')
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        for rnd in range(args.rounds):
            for key, title, spec, timeout in plan:
                sides = ('nborch', 'reference') if rnd % 2 == 0 else ('reference', 'nborch')
                for side in sides:
                    run = runner.run(side, spec, timeout)
                    run.update(key=key, round=rnd + 1)
                    report['runs'].append(run)
                    print(f'[round {rnd + 1}/{args.rounds}] {key:<22} {side:<9} '
                          f'{progress(run)} ({run["wall_s"]:.0f} s)', file=out, flush=True)
    except KeyboardInterrupt:
        print('interrupted: stopping what runs; the table has what was measured', file=out,
              flush=True)
        runner.stop()
        report['interrupted'] = True
    finally:
        runner.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
        shutil.rmtree(tmp, ignore_errors=True)
    report['table'], report['agreement'] = summarize(plan, report['runs'], args.docs)
    report['notes'] = notes(report)
    print_table(report, out)
    if args.json == '-':
        json.dump(report, sys.stdout, indent=2)
        print()
    elif args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, 'w') as f:
            json.dump(report, f, indent=2)
        print(f'JSON: {args.json}', file=out)
    if report.get('interrupted'):
        raise SystemExit(130)
    return report


def progress(run: dict) -> str:
    if run['status'] != 'ok':
        return f"{run['status'].upper()}: {run.get('error', '?')}"
    if 'gateway' in run:
        post = f"Deployment.post p50 {run['post']['p50_ms']:.2f} ms, " if 'post' in run else ''
        return (f"{post}gateway p50 {run['gateway']['p50_ms']:.2f} ms, executor p50 "
                f"{run['worker']['p50_ms']:.2f} ms")
    if 'commit_p50_ms' in run:
        return f"write p50 {run['commit_p50_ms']:.2f} ms, p99 {run['commit_p99_ms']:.2f} ms"
    return (f"start {run['start_s']:.1f} s, index {run['index_s']:.2f} s, "
            f"search {run['ms_per_query']:.2f} ms/query")


if __name__ == '__main__':
    main()
