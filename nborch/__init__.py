"""nborch: Jupyter-first orchestration of executor replicas, shards and Raft groups."""
from nborch._version import __version__
from nborch.client import AsyncClient, Client, Response
from nborch.deployment import Deployment
from nborch.errors import (ChildStartError, ConfigError, ExecutorError, ExportError,
                           IncompletePostError, MembershipError, MessageTooLargeError,
                           PortInUseError, RolloutError, UnavailableError)
from nborch.executor import Executor, dynamic_batching, requests, write
from nborch.flow import Flow

__all__ = [
    'AsyncClient',
    'ChildStartError',
    'Client',
    'ConfigError',
    'Deployment',
    'Executor',
    'ExecutorError',
    'ExportError',
    'Flow',
    'IncompletePostError',
    'MembershipError',
    'MessageTooLargeError',
    'PortInUseError',
    'Response',
    'RolloutError',
    'UnavailableError',
    'dynamic_batching',
    'requests',
    'write',
]


def load_ipython_extension(ipython) -> None:
    """`%load_ext nborch` (IPython is imported only here, never by `import nborch`)."""
    from nborch.magics import load_ipython_extension as load
    load(ipython)


def unload_ipython_extension(ipython) -> None:
    """`%unload_ext nborch`: stops what the magics started."""
    from nborch.magics import unload_ipython_extension as unload
    unload(ipython)
