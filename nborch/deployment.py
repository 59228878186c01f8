"""`Deployment`: one executor with replicas (and shards) behind a gateway (SPEC §2–3)."""
from __future__ import annotations

from typing import Any

from nborch.orchestrator import ExecutorPlan, Orchestrator
from nborch.runtime.topology import GATEWAY
from nborch.serving import Serving
from nborch.spec import DeploymentSpec


class Deployment(Serving):
    """Runs `uses` as `replicas` × `shards` worker processes behind one gateway on `port`.

    All arguments are validated here, before any process starts; `start()` (or `with`)
    starts them and returns once every one is ready. With `external=True`, `host`/`port`
    name replicas that already run elsewhere and only a gateway is started (on a free port).
    """

    def __init__(self, *, name: str | None = None, uses: Any = None, **kwargs):
        self.spec = DeploymentSpec.from_kwargs(name=name, uses=uses, **kwargs)
        self._orchestrator = Orchestrator(
            self.spec.name, [ExecutorPlan(self.spec, [GATEWAY])], host=self.spec.host,
            port=self.spec.port, ready_timeout=self.spec.ready_seconds, quiet=self.spec.quiet,
            require_secret=self.spec.require_secret, secret=self.spec.secret,
            tls=self.spec.tls_files, tls_internal=self.spec.tls_internal,
            max_message_size=self.spec.max_message_size, protocols=self.spec.protocol,
            ports=self.spec.ports)
        self._given_port = self.spec.port if self.spec.port_given else None

    @classmethod
    def load_config(cls, path: str, **overrides) -> 'Deployment':
        """A Deployment from a `jtype: Deployment` YAML file (keys at top level or in `with:`)."""
        from nborch.config import deployment_kwargs
        return cls(**{**deployment_kwargs(path), **overrides})

    @property
    def name(self) -> str:
        return self.spec.name

    def __repr__(self) -> str:
        s = self.spec
        uses = 'external' if s.external else s.executor_class.__name__
        state = 'running' if self.running else 'stopped'
        return (f'Deployment(name={s.name!r}, uses={uses}, replicas={s.replicas}, '
                f'shards={s.shards}, {state})')

    def needs_all(self) -> 'Deployment':
        """A no-op the reference page calls on a Deployment; returns the deployment."""
        return self

    def logs(self, shard: int = 0, replica: int = 0) -> str:
        """The last lines a replica printed."""
        return self._orchestrator.logs(self.name, shard, replica)
