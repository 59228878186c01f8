"""nborch: Jupyter-first orchestration of executor replicas, shards and Raft groups."""
from nborch.client import AsyncClient, Client, Response
from nborch.deployment import Deployment
from nborch.errors import ExecutorError, PortInUseError
from nborch.executor import Executor, requests, write
from nborch.flow import Flow

__version__ = '0.1.0'

__all__ = [
    'AsyncClient',
    'Client',
    'Deployment',
    'Executor',
    'ExecutorError',
    'Flow',
    'PortInUseError',
    'Response',
    'requests',
    'write',
]
