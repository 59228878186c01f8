"""The membership of a Raft group, recorded in each replica's folder (etcd's ConfState).

`<raft dir>/membership` holds, as JSON with a CRC-32, replaced atomically:

    group   an id drawn when the group first starts: a folder of another group is recognised
    node    the replica's node id (replica id + 1): a folder moved to another replica is too
    voters  every node id of the group: its size is the replica count

A separate file, not a field of the hard state: it is written when a group starts and after
each live scale (the hard state on every vote), and the orchestrator reads it before any
process starts, without opening the replica's storage. The check is what keeps a restart with
another `replicas` from electing a leader among fewer replicas than acknowledged the writes —
a silent loss. Growing or shrinking a group is a membership change in its Raft log, made while
it runs (`Deployment.scale`); Raft itself goes by the log, this record tells the owner.
"""
from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from nborch.errors import MembershipError
from nborch.runtime.consensus.core import checksum
from nborch.runtime.consensus.durable_files import atomic_write, make_dir
from nborch.runtime.worker_spec import raft_dir, raft_node_id

FILE = 'membership'
_RESIZE = ('a stateful group grows or shrinks only while it runs, by a membership change '
           '(dep.scale(replicas=N), flow.scale(name, replicas=N), %nborch scale NAME N)')


class MembershipCorruptError(MembershipError):
    """The membership file is unreadable or fails its checksum."""


@dataclass(frozen=True)
class Membership:
    group: str
    node: int
    voters: tuple[int, ...]

    def to_json(self) -> dict:
        return {'group': self.group, 'node': self.node, 'voters': list(self.voters)}


def new_group_id() -> str:
    return uuid.uuid4().hex


def read(directory: str | os.PathLike) -> Membership | None:
    """The folder's record, or None when it has none."""
    path = Path(directory) / FILE
    try:
        raw = json.loads(path.read_bytes())
        body = raw['membership']
        if raw['crc32'] != checksum(_canonical(body)):
            raise MembershipCorruptError(f'{path}: checksum mismatch')
        return Membership(str(body['group']), int(body['node']),
                          tuple(int(v) for v in body['voters']))
    except FileNotFoundError:
        return None
    except MembershipCorruptError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise MembershipCorruptError(f'{path}: not a membership record ({exc})') from exc


def write(directory: str | os.PathLike, membership: Membership) -> None:
    root = Path(directory)
    make_dir(root)
    body = membership.to_json()
    data = json.dumps({'membership': body, 'crc32': checksum(_canonical(body))})
    atomic_write(root / FILE, data.encode())


def set_voters(directory: str | os.PathLike, voters: tuple[int, ...]) -> None:
    """After a live scale committed: the folder's record names the group's new voters."""
    found = read(directory)
    if found is not None:
        write(directory, Membership(found.group, found.node, tuple(voters)))


def record(directory: str | os.PathLike, node: int, voters: tuple[int, ...],
           group: str | None = None, *, label: str = 'this replica') -> Membership:
    """Check the folder against the group this replica starts in, and record it there when
    the folder has no record yet (a new group, or one made before records existed).

    `group` None (a replica started by hand, `nborch executor`) accepts the recorded group.
    Raises MembershipError naming both sides when they differ."""
    found = read(directory)
    if found is None:
        found = Membership(group or new_group_id(), node, tuple(voters))
        write(directory, found)
        return found
    where = Path(directory) / FILE
    if len(found.voters) != len(voters):
        raise MembershipError(
            f'{label}: {where} records a Raft group of {len(found.voters)} replicas, but it was '
            f'started with {len(voters)}; {_RESIZE}. Start it with replicas='
            f'{len(found.voters)}, or use a new workspace.')
    if found.node != node:
        raise MembershipError(f'{label}: {where} holds the state of replica {found.node - 1}, '
                              f'not of replica {node - 1}')
    if group is not None and found.group != group:
        raise MembershipError(f'{label}: {where} belongs to another Raft group ({found.group}, '
                              f'this one is {group}): a replica folder copied from elsewhere?')
    return found


def check_workspace(name: str, workspace: str, shards: int, replicas: int) -> list[str]:
    """Before anything starts: every replica folder of every shard must agree with `replicas`
    and with each other. Returns each shard's group id (the recorded one, or a new one)."""
    groups = []
    for shard in range(shards):
        folders = [Path(raft_dir(workspace, shards, shard, r)) for r in range(replicas)]
        label = f'{name} (workspace {workspace}' + (f', shard {shard})' if shards > 1 else ')')
        _refuse_extra_replicas(label, folders[0].parent, replicas)
        recorded = [(folder, read(folder)) for folder in folders]
        recorded = [(folder, m) for folder, m in recorded if m is not None]
        for folder, m in recorded:
            if len(m.voters) != replicas:
                raise MembershipError(
                    f'{label}: {folder / FILE} records a Raft group of {len(m.voters)} '
                    f'replicas, but it was started with replicas={replicas}; {_RESIZE}. Start '
                    f'it with replicas={len(m.voters)}, or use a new workspace.')
        group = recorded[0][1].group if recorded else new_group_id()
        for folder, m in recorded:
            record(folder, raft_node_id(int(folder.name)), m.voters, group, label=label)
        groups.append(group)
    return groups


def _refuse_extra_replicas(label: str, shard_dir: Path, replicas: int) -> None:
    """A folder with state for a replica id past `replicas` means the group was bigger (this
    catches a shrink even in a workspace written before membership was recorded)."""
    if not shard_dir.is_dir():
        return
    for folder in sorted(shard_dir.iterdir()):
        if folder.name.isdigit() and int(folder.name) >= replicas and folder.is_dir() \
                and any(folder.iterdir()):
            m = read(folder)
            size = f'a Raft group of {len(m.voters)} replicas' if m else \
                f'Raft state for replica {folder.name}'
            raise MembershipError(
                f'{label}: {folder} holds {size}, but it was started with replicas={replicas}; '
                f'{_RESIZE}. Start it with the replica count it had, or use a new workspace.')


def _canonical(body: dict) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(',', ':')).encode()
