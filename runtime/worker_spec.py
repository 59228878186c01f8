"""What one replica process needs to know, written by the orchestrator as a JSON file."""
from __future__ import annotations

import base64
import io
import json
import operator
import os
import re
import sys
import typing
from dataclasses import asdict, dataclass, field

import cloudpickle
import pydantic
from docarray import BaseDoc, DocList

from nborch.runtime.limits import DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_MAX_REQUEST_DOCS


def doclist_class(doc_type):
    """The class docarray makes for `DocList[doc_type]` (instances of it are of this class)."""
    alias = DocList[doc_type]
    return typing.get_origin(alias) or alias


def rebuild_doc_class(name: str, qualname: str, base: type, fields: dict):
    """Re-create a document schema that was defined in `__main__` or a notebook."""
    cls = pydantic.create_model(name, __base__=base, **fields)
    cls.__qualname__ = qualname
    return cls


def _importable(cls: type) -> bool:
    module = sys.modules.get(cls.__module__)
    return cls.__module__ != '__main__' and getattr(module, cls.__qualname__, None) is cls


class _ClassPickler(cloudpickle.Pickler):
    """cloudpickle plus two rebuild rules for docarray types that cannot travel as they are:
    `DocList[X]` classes are made on the fly (no importable name), and pydantic document
    classes from `__main__`/a notebook do not survive cloudpickle's by-value class rebuild.
    Rebuilt document classes keep their fields, not custom methods or validators."""

    def reducer_override(self, obj):
        origin, args = typing.get_origin(obj), typing.get_args(obj)
        if isinstance(origin, type) and issubclass(origin, DocList) and args:
            return operator.getitem, (DocList, args[0])  # the typing alias DocList[X]
        if isinstance(obj, type) and issubclass(obj, DocList) and obj is not DocList:
            doc_type = getattr(obj, 'doc_type', None)
            if doc_type is not None:
                return doclist_class, (doc_type,)
        if isinstance(obj, type) and issubclass(obj, BaseDoc) and not _importable(obj):
            base = obj.__bases__[0]
            own = {k: (f.annotation, f) for k, f in obj.model_fields.items()
                   if k in obj.__dict__.get('__annotations__', {})}
            return rebuild_doc_class, (obj.__name__, obj.__qualname__, base, own)
        return super().reducer_override(obj)


def raft_node_id(replica_id: int) -> int:
    """A replica's id in its Raft group: Raft keeps 0 for "nobody", so replica id + 1."""
    return replica_id + 1


def replica_of_node(node_id: int) -> int | None:
    """The replica a Raft node id names (None for 0, "nobody")."""
    return node_id - 1 if node_id > 0 else None


def raft_dir(workspace: str, shards: int, shard: int, replica: int) -> str:
    """`<workspace>/raft/[<shard>/]<replica>/`: the shard level only when sharded."""
    parts = [workspace, 'raft'] + ([str(shard)] if shards > 1 else []) + [str(replica)]
    return os.path.join(*parts)


@dataclass
class WorkerSpec:
    name: str
    uses: str                      # base64 of the cloudpickled Executor class
    uses_with: dict = field(default_factory=dict)
    uses_dynamic_batching: dict = field(default_factory=dict)  # {endpoint or method: settings}
    shard_id: int = 0
    replica_id: int = 0
    shards: int = 1
    replicas: int = 1
    workspace: str | None = None
    host: str = '127.0.0.1'
    port: int = 0                  # 0: any free port (reported back on the ready pipe)
    sys_path: list[str] = field(default_factory=list)  # the owner's, so by-reference classes import
    log_level: str = 'INFO'
    # Stateful replicas (Raft): every replica of the shard, by replica id, as 'host:port' of
    # its Raft service; this replica listens on peers[replica_id].
    stateful: bool = False
    peers: list[str] = field(default_factory=list)
    raft_dir: str | None = None
    raft_group: str | None = None  # the group id the orchestrator found or drew (membership.py)
    raft_join: bool = False        # a new member of a running group: starts as a learner
    raft_configuration: dict = field(default_factory=dict)
    read_consistency: str = 'eventual'
    tls: dict | None = None        # mutual TLS on both ports and to the peers (runtime/tls.py)
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE  # bytes of one request or reply
    max_request_docs: int = DEFAULT_MAX_REQUEST_DOCS

    def complete(self) -> None:
        """Check a spec given by hand (`nborch executor`) and fill what follows from it;
        ValueError names the flag at fault. The orchestrator's specs are complete already."""
        if not self.stateful:
            return
        if not self.peers:
            raise ValueError('--stateful needs --peers: the Raft address (host:port) of every '
                             'replica of the shard, in replica order')
        for peer in self.peers:
            host, _, port = peer.rpartition(':')
            if not host or not port.isdigit():
                raise ValueError(f'--peers: {peer!r} is not host:port')
        if not 0 <= self.replica_id < len(self.peers):
            raise ValueError(f'--replica-id {self.replica_id} has no entry in --peers '
                             f'({len(self.peers)} given)')
        if self.replicas == 1:
            self.replicas = len(self.peers)
        elif self.replicas != len(self.peers):
            raise ValueError(f'--replicas {self.replicas} but --peers names {len(self.peers)}')
        if self.raft_dir is None:
            if not self.workspace:
                raise ValueError('--stateful needs --workspace (or --raft-dir): the Raft log '
                                 'must survive restarts')
            self.raft_dir = raft_dir(self.workspace, self.shards, self.shard_id, self.replica_id)

    @staticmethod
    def pack_class(cls) -> str:
        """Classes from `__main__` or a notebook go by value, importable ones by reference."""
        buffer = io.BytesIO()
        _ClassPickler(buffer).dump(cls)
        return base64.b64encode(buffer.getvalue()).decode()

    @staticmethod
    def class_fingerprint(cls) -> bytes:
        """What `pack_class` sends, without the id cloudpickle draws for each class object
        (a uuid4 hex): equal for a class redefined from unchanged code."""
        buffer = io.BytesIO()
        _ClassPickler(buffer).dump(cls)
        return re.sub(rb'[0-9a-f]{32}', b'0' * 32, buffer.getvalue())

    def executor_class(self):
        return cloudpickle.loads(base64.b64decode(self.uses))

    @property
    def replica_name(self) -> str:
        """This replica's name, as the reference system's: `<name>/rep-<r>`, or
        `<name>/shard-<s>/rep-<r>` when the executor is sharded."""
        shard = f'/shard-{self.shard_id}' if self.shards > 1 else ''
        return f'{self.name}{shard}/rep-{self.replica_id}'

    def build_executor(self):
        cls = self.executor_class()
        runtime_args = {'name': self.replica_name, 'replica_id': self.replica_id,
                        'shard_id': self.shard_id, 'replicas': self.replicas,
                        'shards': self.shards, 'workspace': self.workspace}
        return cls(**self.uses_with, metas={'name': self.name}, runtime_args=runtime_args)

    def dump(self, path: str) -> None:
        with open(path, 'w') as f:
            json.dump(asdict(self), f)

    @classmethod
    def load(cls, path: str) -> 'WorkerSpec':
        with open(path) as f:
            return cls(**json.load(f))
