"""Executors and utilities shared by integration tests (importable by replica processes)."""
from __future__ import annotations

from typing import Optional

import os
import subprocess
import sys
import textwrap
import time

from docarray import DocList
from docarray.documents import TextDoc

from nborch import Executor, requests


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
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            **kwargs)


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
