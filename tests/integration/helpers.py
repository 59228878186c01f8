"""Executors and utilities shared by integration tests (importable by replica processes)."""
from __future__ import annotations

from typing import Optional

import json
import os
import subprocess
import sys
import textwrap
import time

from docarray import DocList
from docarray.documents import TextDoc

from nborch import Executor, requests, write


class Echo(Executor):
    @requests
    def echo(self, docs: DocList[TextDoc], **kwargs) -> DocList[TextDoc]:
        return docs


class WhoAmI(Executor):
    """Stamps each doc with the replica that served it."""

    @requests
    def stamp(self, docs: DocList[TextDoc], parameters: dict, **kwargs) -> DocList[TextDoc]:
        for doc in docs:
            doc.text = f'{doc.text}|rep-{self.runtime_args.replica_id}|pid-{os.getpid()}'
        delay = parameters.get('sleep')
        if delay:
            time.sleep(delay)
        return docs


class EndpointNamer(Executor):
    """Prefixes each doc's text with the endpoint that served it."""

    @staticmethod
    def _stamp(docs, on: str):
        for doc in docs:
            doc.text = f'{on}:{doc.text}'
        return docs

    @requests(on='/index')
    def index(self, docs: DocList[TextDoc], **kwargs) -> DocList[TextDoc]:
        return self._stamp(docs, '/index')

    @requests(on='/search')
    def search(self, docs: DocList[TextDoc], **kwargs) -> DocList[TextDoc]:
        return self._stamp(docs, '/search')

    @requests(on='/update')
    def update(self, docs: DocList[TextDoc], **kwargs) -> DocList[TextDoc]:
        return self._stamp(docs, '/update')

    @requests(on='/delete')
    def delete(self, docs: DocList[TextDoc], **kwargs) -> DocList[TextDoc]:
        return self._stamp(docs, '/delete')


class Faulty(Executor):
    @requests(on='/boom')
    def boom(self, docs, **kwargs):
        raise KeyError('no such doc')

    @requests(on='/results')
    def results(self, docs, parameters, **kwargs):
        return {'count': len(docs), 'seen_limit': parameters.get('limit')}

    @requests
    def fine(self, docs, **kwargs):
        for doc in docs:
            doc.text = doc.text.upper()


class BrokenInit(Executor):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        raise RuntimeError('model weights missing at /nowhere')


def text_docs(n: int, prefix: str = 'doc') -> DocList[TextDoc]:
    return DocList[TextDoc]([TextDoc(text=f'{prefix}-{i}') for i in range(n)])


def run_script(code: str, **kwargs) -> subprocess.Popen:
    """Start `code` in a fresh interpreter (its __main__ is the script), output piped."""
    return subprocess.Popen([sys.executable, '-c', textwrap.dedent(code)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), **kwargs)


def wait_for_line(proc: subprocess.Popen, marker: str, timeout: float = 60) -> list[str]:
    """Read `proc`'s output until a line contains `marker`; return the lines read."""
    lines, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if marker in line:
            return lines
    raise AssertionError(f'{marker!r} not seen; output was:\n{"".join(lines)}')


class MyExec(Executor):
    """The reference page's polling-table executor."""

    @requests
    def foo(self, docs: DocList[TextDoc], **kwargs) -> DocList[TextDoc]:
        print(f'inside: {docs.text}')


class MarkDoc(TextDoc):
    a: Optional[str] = None
    b: Optional[str] = None


class MarkA(Executor):
    @requests
    def mark(self, docs: DocList[MarkDoc], **kwargs) -> DocList[MarkDoc]:
        for doc in docs:
            doc.a = f'A{self.runtime_args.shard_id}'


class MarkB(Executor):
    @requests
    def mark(self, docs: DocList[MarkDoc], **kwargs) -> DocList[MarkDoc]:
        for doc in docs:
            doc.b = 'B'


class BrokenShards(Executor):
    """Raises on the shards named in `parameters['broken']` (default: shard 1); the others
    stamp their shard id on each doc."""

    @requests
    def stamp(self, docs: DocList[TextDoc], parameters: dict, **kwargs) -> DocList[TextDoc]:
        shard = self.runtime_args.shard_id
        if shard in parameters.get('broken', [1]):
            raise ValueError(f'shard {shard} is broken')
        for doc in docs:
            doc.text = f'{doc.text}|shard-{shard}'
        return docs


class Ledger(Executor):
    """A stateful executor that records every applied write, in order, in its workspace.

    The history file is rebuilt at start: Raft replays the log (after restoring the latest
    snapshot), so the file always equals this replica's apply sequence.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.ids: list[str] = []
        self.path = os.path.join(self.workspace, f'history-{self.runtime_args.replica_id}.log')
        open(self.path, 'w').close()

    @requests(on='/index')
    @write
    def index(self, docs: DocList[TextDoc], **kwargs) -> DocList[TextDoc]:
        with open(self.path, 'a') as f:
            for doc in docs:
                f.write(doc.id + '\n')
                self.ids.append(doc.id)

    @requests(on='/count')
    def count(self, docs, **kwargs):
        return {'n': len(self.ids), 'replica': self.runtime_args.replica_id}

    def snapshot(self, path: str) -> None:
        with open(path, 'w') as f:
            json.dump(self.ids, f)

    def restore(self, path: str) -> None:
        with open(path) as f:
            self.ids = json.load(f)
        with open(self.path, 'w') as f:
            f.writelines(i + '\n' for i in self.ids)


def read_history(workspace: str, name: str, replica: int, shard: int = 0) -> list[str]:
    with open(os.path.join(workspace, name, str(shard), f'history-{replica}.log')) as f:
        return f.read().split()


class MyStateStatefulExecutor(Executor):
    """The reference page's stateful example, verbatim but for the import."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._docs_dict = {}

    @requests(on=['/index'])
    @write
    def index(self, docs: DocList[TextDoc], **kwargs) -> DocList[TextDoc]:
        for doc in docs:
            self._docs_dict[doc.id] = doc

    @requests(on=['/search'])
    def search(self, docs: DocList[TextDoc], **kwargs) -> DocList[TextDoc]:
        for doc in docs:
            self.logger.debug(f'Searching against {len(self._docs_dict)} documents')
            doc.text = self._docs_dict[doc.id].text


class SlowWriter(Executor):
    """A stateless executor whose write appends to `parameters['path']` after `sleep` s."""

    @requests(on='/write')
    @write
    def record(self, docs: DocList[TextDoc], parameters: dict, **kwargs) -> DocList[TextDoc]:
        time.sleep(parameters.get('sleep', 0))
        with open(parameters['path'], 'a') as f:
            f.writelines(f'{doc.text}\n' for doc in docs)
        return docs


def docs(n: int, prefix: str = 'w') -> DocList[TextDoc]:
    """`n` docs with ids `<prefix>0..` (write ids the Raft tests check on every replica)."""
    return DocList[TextDoc]([TextDoc(id=f'{prefix}{i}', text=str(i)) for i in range(n)])


def replicas(dep, shard: int = 0) -> list[dict]:
    """The first executor's replicas of `shard` as `dep.status()` reports them."""
    return dep.status()['executors'][0]['shards'][shard]['replicas']


def poll(condition, what: str, timeout: float = 60.0, every: float = 0.05):
    """`condition()`'s first truthy value, asked every `every` s; AssertionError naming
    `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f'{what}: not within {timeout} s')
        time.sleep(every)


def converged(dep, at_least: int) -> list[dict] | None:
    """The replicas once all applied the same Raft index >= `at_least` (one per request,
    plus a no-op per leader), else None."""
    reps = replicas(dep)
    applied = {(r.get('raft') or {}).get('applied', -1) for r in reps}
    return reps if len(applied) == 1 and applied.pop() >= at_least else None
