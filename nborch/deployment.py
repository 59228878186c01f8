"""`Deployment`: one executor with replicas (and shards) behind a gateway."""
from __future__ import annotations

from typing import Any

from nborch.orchestrator import ExecutorPlan, Orchestrator
from nborch.runtime.topology import GATEWAY
from nborch.serving import Serving
from nborch.spec import ROLLING_KEYS, DeploymentSpec, http_options, live_edits


class Deployment(Serving):
    """Runs `uses` as `replicas` × `shards` worker processes behind one gateway on `port`.

    All arguments are validated here, before any process starts; `start()` (or `with`)
    starts them and returns once every one is ready. With `external=True`, `host`/`port`
    name replicas that already run elsewhere and only a gateway is started (on a free port),
    and not even that for one address: posts then go straight to it.
    """

    def __init__(self, *, name: str | None = None, uses: Any = None, **kwargs):
        self.spec = DeploymentSpec.from_kwargs(name=name, uses=uses, **kwargs)
        s = self.spec
        # One external address needs no gateway unless a gateway feature is asked for
        # (several addresses do: the gateway spreads requests over them).
        direct = s.external_addresses[0] if s.external and len(s.external_addresses) == 1 \
            and s.tls_files is None and not s.require_secret and s.timeout_send is None \
            and tuple(s.protocol) == ('grpc',) else None
        self._orchestrator = Orchestrator(
            s.name, [ExecutorPlan(s, [GATEWAY])], host=direct.host if direct else s.host,
            port=direct.port if direct else s.port, ready_timeout=s.ready_seconds,
            quiet=s.quiet, require_secret=s.require_secret, secret=s.secret,
            tls=s.tls_files, tls_internal=s.tls_internal,
            max_message_size=s.max_message_size, direct=direct, protocols=s.protocol,
            ports=[direct.port] if direct else s.ports, http_options=http_options(s))
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

    def scale(self, replicas: int) -> dict:
        """Run `replicas` per shard from now on, without stopping: new replicas take requests
        once ready; removed ones finish what they hold first. A stateful executor's Raft
        group changes one member at a time: a new replica joins as a learner, catches up and
        is promoted; a removed one leaves the group before it stops. Returns {'started',
        'stopped', 'undrained'}. Before `start()` it sets the count."""
        return self._orchestrator.scale(self.name, replicas)

    def rolling_update(self, **changes) -> dict:
        """Replace the replicas one at a time by ones built with `changes` (`uses=`,
        `uses_with=`, `uses_dynamic_batching=`, `py_modules=`, `env=`, `log_level=`), with
        no request failing: each new replica starts, becomes ready and takes requests, then
        the one it replaces finishes what it holds and stops. A new replica that cannot
        start stops the rollout (RolloutError); the others keep serving the old version.
        A stateful replica restarts in place as the new version (same Raft folder and node
        id, followers first, the leader last) and is routed to once caught up.
        Returns {'replaced': n}."""
        return self._orchestrator.roll_out(self.name, changes)

    def update(self, inputs=None, **kwargs):
        """`update(uses=..., uses_with=...)`: a rolling update (`rolling_update`). Otherwise,
        as in the reference system, `post('/update', inputs, ...)`."""
        rolling = {k: kwargs.pop(k) for k in ROLLING_KEYS if k in kwargs}
        if not rolling:
            return super().update(inputs, **kwargs)
        if inputs is not None or kwargs:
            raise TypeError('update(): either a rolling update (uses=, uses_with=, ...) or '
                            'docs to post to /update, not both')
        return self.rolling_update(**rolling)

    def live_edits(self, edited: Serving) -> dict[str, dict] | None:
        """{name: changes} when `edited` differs from this one only in what a running
        deployment takes without a restart (`replicas`, what `rolling_update` changes)."""
        if not isinstance(edited, Deployment):
            return None
        changes = live_edits(self.spec, edited.spec)
        return None if changes is None else {self.name: changes}

    def needs_all(self) -> 'Deployment':
        """A no-op the reference page calls on a Deployment; returns the deployment."""
        return self

    def logs(self, shard: int = 0, replica: int = 0) -> str:
        """The last lines a replica printed."""
        return self._orchestrator.logs(self.name, shard, replica)
