"""A replica's `WorkerSpec`, rendered as the `nborch executor` command line that starts it,
reads back as the same spec: what an exported container runs is what a local replica gets."""
import dataclasses

import pytest

from nborch import Executor, requests, write
from nborch.cli import build_parser, executor_fields
from nborch.desired import Placement, replica_ids, worker_spec
from nborch.options import executor_argv
from nborch.spec import DeploymentSpec


class Thing(Executor):
    @write
    @requests(on='/index')
    def index(self, docs, **kwargs):
        return docs

    @requests
    def encode(self, docs, **kwargs):
        return docs


CALLERS_OWN = ('uses', 'sys_path')  # the packed class and the owner's path: not flags


def read_back(argv: list[str]) -> dict:
    return executor_fields(build_parser().parse_args(argv))


def spec_fields(spec) -> dict:
    return {k: v for k, v in dataclasses.asdict(spec).items() if k not in CALLERS_OWN}


def placement(spec: DeploymentSpec) -> Placement:
    peers = {s: [f'{spec.name}-{s}-{r}:8081' for r in range(spec.replicas)]
             for s in range(spec.shards)}
    return Placement(packed='unused', host='0.0.0.0', sys_path=(), peers=peers,
                     groups=[f'group-{s}' for s in range(spec.shards)] if spec.stateful else None)


@pytest.mark.parametrize('kwargs', [
    {'name': 'plain'},
    {'name': 'encoder', 'uses': Thing, 'replicas': 3,
     'uses_with': {'dim': 128, 'labels': ['a', 'b']},
     'uses_dynamic_batching': {'/index': {'preferred_batch_size': 8, 'timeout': 5}},
     'log_level': 'DEBUG', 'max_message_size': 1 << 20, 'max_request_docs': 50},
    {'name': 'ledger', 'uses': Thing, 'replicas': 3, 'shards': 2, 'stateful': True,
     'workspace': '/data',
     'raft_configuration': {'heartbeat_timeout': 100, 'election_timeout': 600},
     'read_consistency': 'linearizable'},
])
def test_every_replica_of_the_table_round_trips_through_the_command_line(kwargs):
    spec = DeploymentSpec.from_kwargs(**kwargs)
    for rid in replica_ids(spec):
        wanted = worker_spec(spec, placement(spec), rid)
        argv = executor_argv(wanted, 'executors:Thing')
        assert argv[:3] == ['executor', '--uses', 'executors:Thing']
        assert read_back(argv) == spec_fields(wanted), argv


def test_defaults_are_left_out_of_the_command_line():
    spec = DeploymentSpec.from_kwargs(name='executor')
    argv = executor_argv(worker_spec(spec, placement(spec), replica_ids(spec)[0]), 'm:C')
    assert argv == ['executor', '--uses', 'm:C', '--host', '0.0.0.0']
