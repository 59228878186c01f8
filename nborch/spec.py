"""`DeploymentSpec`: the user's intent, typed and validated before any process starts.

Every input error surfaces here (STYLE: spec, then reconcile). Starting a deployment is
reconciling processes to a valid spec.
"""
from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from typing import Any

from nborch.addresses import Address, external_addresses
from nborch.executor import Executor
from nborch.ports import free_port
from nborch.runtime.gpu import CUDA_VISIBLE_DEVICES, RoundRobinSpec, parse_rr
from nborch.runtime.polling import PollingTable
from nborch.uses import resolve_uses

_NAME = re.compile(r'^[A-Za-z0-9_][A-Za-z0-9_.\-]*$')
_IGNORED = {'install_requirements'}  # reference-system options with nothing to do here
_RESOLVED = ('executor_class', 'polling_table', 'external_addresses', 'round_robin')


@dataclass
class DeploymentSpec:
    name: str = 'executor'
    uses: Any = None
    uses_with: dict = field(default_factory=dict)
    replicas: int = 1
    shards: int = 1
    polling: Any = 'ANY'
    port: Any = None                   # the gateway's; with external=True the replicas' port(s)
    host: Any = '127.0.0.1'            # the gateway's; with external=True the replicas' host(s)
    external: bool = False             # host/port name running replicas; nothing is started
    env: dict = field(default_factory=dict)
    workspace: str | None = None
    timeout_ready: int = 60_000        # ms, as in the reference system; -1 waits forever
    quiet: bool = False                # do not echo replica output to this process's stdout
    log_level: str = 'INFO'

    # Resolved by validate():
    executor_class: type[Executor] | None = field(default=None, repr=False)
    polling_table: PollingTable | None = field(default=None, repr=False)
    external_addresses: list[Address] = field(default_factory=list, repr=False)
    round_robin: RoundRobinSpec | None = field(default=None, repr=False)

    @classmethod
    def from_kwargs(cls, **kwargs) -> 'DeploymentSpec':
        known = {f.name for f in dataclasses.fields(cls) if f.name not in _RESOLVED}
        for key in _IGNORED & kwargs.keys():
            kwargs.pop(key)
        unknown = sorted(kwargs.keys() - known)
        if unknown:
            raise TypeError(f'unknown argument(s) {", ".join(unknown)}; '
                            f'a Deployment takes {", ".join(sorted(known))}')
        spec = cls(**{k: v for k, v in kwargs.items() if v is not None})
        spec.validate()
        return spec

    def validate(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ValueError(f'name={self.name!r}: use letters, digits, "_", "-" and "."')
        for key in ('replicas', 'shards'):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f'{key}={value!r}: must be an integer >= 1')
        if not isinstance(self.uses_with, dict):
            raise TypeError(f'uses_with must be a dict, got {type(self.uses_with).__name__}')
        self.polling_table = PollingTable.parse(self.polling)
        if self.external:
            self._validate_external()
        else:
            self.executor_class = resolve_uses(self.uses)
        if self.host in ('localhost', None):
            self.host = '127.0.0.1'
        if not isinstance(self.host, str):
            raise ValueError(f'host={self.host!r}: one host to bind (a list of hosts needs '
                             'external=True)')
        if self.port is None:
            self.port = free_port(self.host)
        elif isinstance(self.port, bool) or not isinstance(self.port, int) or not 0 < self.port < 65536:
            raise ValueError(f'port={self.port!r}: must be an integer in 1..65535')
        if not isinstance(self.timeout_ready, int) or (self.timeout_ready <= 0 and self.timeout_ready != -1):
            raise ValueError(f'timeout_ready={self.timeout_ready!r}: milliseconds > 0, or -1')
        self.env = {str(k): str(v) for k, v in (self.env or {}).items()}
        visible = self.env.get(CUDA_VISIBLE_DEVICES, os.environ.get(CUDA_VISIBLE_DEVICES, ''))
        try:
            self.round_robin = parse_rr(visible)
        except ValueError as exc:
            raise ValueError(f'{self.name}: {exc}') from None
        if self.workspace is not None:
            self.workspace = os.path.abspath(os.path.expanduser(self.workspace))

    def _validate_external(self) -> None:
        """host/port name the replicas; the deployment only runs a gateway in front of them."""
        self.external_addresses = external_addresses(self.host, self.port)
        self.executor_class = None
        if self.shards != 1:
            raise ValueError('external=True: an external executor is one shard of replicas')
        self.replicas = len(self.external_addresses)
        self.host, self.port = '127.0.0.1', None

    @property
    def ready_seconds(self) -> float:
        return 10 ** 9 if self.timeout_ready == -1 else self.timeout_ready / 1000
