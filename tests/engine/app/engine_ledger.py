"""The executors the engine tests deploy (this folder is the image's /app).

`Ledger` appends every write it applies, in order, to `history-<replica>.log` in its
workspace (rebuilt at start: Raft replays the log after the latest snapshot), so each
replica's file is its apply sequence, read from its container by the tests.
"""
from __future__ import annotations

import json
import os

from docarray import DocList
from docarray.documents import TextDoc

from nborch import Executor, requests, write


class Ledger(Executor):
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
