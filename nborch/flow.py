"""`Flow`: several executors in a DAG behind one gateway.

`add()` appends an executor that needs the previous one (or `needs=` names); a join waits
for all its predecessors and reduces their results like shards, or concatenates
them with `no_reduce=True`. Everything is validated before any process starts.
"""
from __future__ import annotations

import warnings

from nborch.compat import take_reference_arguments
from nborch.orchestrator import ExecutorPlan, Orchestrator
from nborch.runtime.limits import DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_MAX_REQUEST_DOCS
from nborch.runtime.topology import GATEWAY, order_dag
from nborch.serving import Serving
from nborch.spec import (FLOW_GATEWAY_KEYS, DeploymentSpec, flow_executor_default_keys,
                         http_options, live_edits)

class Flow(Serving):
    def __init__(self, *, port: int | list[int] | None = None, host: str = '127.0.0.1', name: str = 'flow',
                 quiet: bool = False, timeout_ready: int = 60_000, protocol='grpc',
                 require_secret: bool = False, secret: bytes | str | None = None,
                 tls: dict | None = None, ssl_certfile: str | None = None,
                 ssl_keyfile: str | None = None, tls_internal: bool = False,
                 max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
                 max_request_docs: int = DEFAULT_MAX_REQUEST_DOCS, title: str | None = None,
                 description: str | None = None, cors: bool = False,
                 uvicorn_kwargs: dict | None = None, **executor_defaults):
        """Gateway arguments, and any Deployment argument (`replicas=3`, `polling=...`,
        `env=...`) as the default of every `add()`; an add's own value wins, as in the
        reference system's Flow."""
        self._executor_defaults = _check_executor_defaults(executor_defaults)
        gateway = DeploymentSpec.from_kwargs(name=name, port=port, host=host,
                                             timeout_ready=timeout_ready, quiet=quiet,
                                             protocol=protocol,
                                             require_secret=require_secret, secret=secret,
                                             tls=tls, ssl_certfile=ssl_certfile,
                                             ssl_keyfile=ssl_keyfile, tls_internal=tls_internal,
                                             max_message_size=max_message_size,
                                             max_request_docs=max_request_docs,
                                             title=title, description=description, cors=cors,
                                             uvicorn_kwargs=uvicorn_kwargs)
        self.name = gateway.name
        self._given_port = gateway.port if gateway.port_given else None
        self.quiet = quiet
        # The gateway's limits, and the default of every executor added
        self._limits = {'max_message_size': gateway.max_message_size,
                        'max_request_docs': gateway.max_request_docs}
        self._plans: list[ExecutorPlan] = []
        self._orchestrator = Orchestrator(name, self._plans, host=gateway.host, port=gateway.port,
                                          ready_timeout=gateway.ready_seconds, quiet=quiet,
                                          require_secret=gateway.require_secret,
                                          secret=gateway.secret, tls=gateway.tls_files,
                                          tls_internal=gateway.tls_internal,
                                          max_message_size=gateway.max_message_size,
                                          protocols=gateway.protocol, ports=gateway.ports,
                                          http_options=http_options(gateway))

    @classmethod
    def load_config(cls, path: str, **overrides) -> 'Flow':
        """A Flow from a `jtype: Flow` YAML file (`with:` for the gateway, `executors:`);
        `overrides` replace gateway arguments (the CLI's flags)."""
        from nborch.config import flow_kwargs
        gateway_kwargs, executors = flow_kwargs(path)
        flow = cls(**{**gateway_kwargs, **overrides})
        for kwargs in executors:
            flow._append(dict(kwargs))
        flow._check()
        return flow

    # -- building --------------------------------------------------------------------------
    def add(self, *, needs: str | list[str] | None = None, **kwargs) -> 'Flow':
        """Add an executor (Deployment arguments); it needs the last one added by default."""
        self._append({**kwargs, 'needs': needs})
        self._check()
        return self

    def needs(self, needs: str | list[str], name: str = 'joiner', **kwargs) -> 'Flow':
        """Add a pass-through executor that joins `needs` (their results are reduced, or
        concatenated with `no_reduce=True`)."""
        return self.add(name=name, needs=needs, **kwargs)

    def needs_all(self, name: str = 'joiner', **kwargs) -> 'Flow':
        """Join every executor nothing else needs yet; a no-op when there is only one."""
        floating = self._floating()
        return self if len(floating) <= 1 else self.needs(floating, name=name, **kwargs)

    def _append(self, kwargs: dict) -> None:
        needs = kwargs.pop('needs', None)
        kwargs.setdefault('name', f'executor{len(self._plans)}')
        kwargs.setdefault('quiet', self.quiet)
        for key, value in {**self._limits, **self._executor_defaults}.items():
            kwargs.setdefault(key, value)
        spec = DeploymentSpec.from_kwargs(**kwargs)
        if any(p.spec.name == spec.name for p in self._plans):
            raise ValueError(f'the flow already has an executor named {spec.name!r}')
        shared = [p.spec.name for p in self._plans if spec.stateful and p.spec.stateful
                  and p.spec.workspace == spec.workspace]
        if shared:  # a Flow-wide workspace makes this easy to do by accident
            raise ValueError(f'{spec.name!r} and {shared[0]!r} are both stateful in workspace '
                             f'{spec.workspace}: their Raft logs would mix; give each its own '
                             'workspace=')
        if spec.name == GATEWAY:
            raise ValueError(f'{GATEWAY!r} is reserved for the flow\'s entry point')
        if needs is None:
            needs = [self._plans[-1].spec.name] if self._plans else [GATEWAY]
        elif isinstance(needs, str):
            needs = [needs]
        elif not isinstance(needs, (list, tuple)) or not all(isinstance(n, str) for n in needs):
            raise ValueError(f'needs={needs!r}: an executor name or a list of names')
        if spec.external and spec.no_reduce and len(needs) > 1:
            # The reference page's rule for external executors with several needs.
            raise ValueError(f'{spec.name}: an external executor that needs several '
                             f'executors ({", ".join(needs)}) must reduce their results; '
                             'no_reduce=True is not allowed here')
        self._plans.append(ExecutorPlan(spec, list(needs)))

    def _check(self) -> None:
        """Unknown `needs` and cycles are errors before anything starts."""
        order_dag({p.spec.name: p.needs for p in self._plans})

    def _floating(self) -> list[str]:
        needed = {n for p in self._plans for n in p.needs}
        return [p.spec.name for p in self._plans if p.spec.name not in needed]

    # -- views -----------------------------------------------------------------------------
    @property
    def executors(self) -> list[DeploymentSpec]:
        return [p.spec for p in self._plans]

    def __repr__(self) -> str:
        chain = ', '.join(f'{p.spec.name}<-{"+".join(p.needs)}' for p in self._plans)
        state = 'running' if self.running else 'stopped'
        return f'Flow(name={self.name!r}, port={self.port}, [{chain}], {state})'

    def rolling_update(self, executor: str, **changes) -> dict:
        """Replace `executor`'s replicas one at a time by ones built with `changes`
        (`uses=`, `uses_with=`, ...), as `Deployment.rolling_update` does."""
        return self._orchestrator.roll_out(executor, changes)

    def live_edits(self, edited: Serving) -> dict[str, dict] | None:
        """{executor: changes} when `edited` differs from this flow only in what running
        executors take without a restart (`replicas`, what `rolling_update` changes)."""
        if not isinstance(edited, Flow) or len(edited._plans) != len(self._plans):
            return None
        mine, theirs = self._orchestrator, edited._orchestrator
        gateway = ('label', 'host', 'protocols', 'require_secret', 'tls', 'max_message_size',
                   'http_options', 'quiet')
        if any(getattr(mine, k) != getattr(theirs, k) for k in gateway) or \
                (edited._given_port is not None and edited._given_port != self._given_port):
            return None
        edits = {}
        for old, new in zip(self._plans, edited._plans):
            changes = live_edits(old.spec, new.spec)
            if old.needs != new.needs or old.spec.name != new.spec.name or changes is None:
                return None
            edits[new.spec.name] = changes
        return edits

    def scale(self, executor: str, replicas: int) -> dict:
        """Run `replicas` per shard of `executor` from now on, without stopping the flow:
        new replicas take requests once ready; removed ones finish what they hold first.
        A stateless executor only. Returns {'started', 'stopped', 'undrained'}."""
        return self._orchestrator.scale(executor, replicas)

    def logs(self, executor: str, shard: int = 0, replica: int = 0) -> str:
        return self._orchestrator.logs(executor, shard, replica)


def _check_executor_defaults(defaults: dict) -> dict:
    """Unknown names are a TypeError naming what Flow() takes; values are checked as one
    Deployment would check them, unless they need each add's own arguments to be judged."""
    defaults = take_reference_arguments(dict(defaults), 'Flow')  # warned about or refused
    known = flow_executor_default_keys()
    unknown = sorted(defaults.keys() - set(known))
    if unknown:
        raise TypeError(f'unknown argument(s) {", ".join(unknown)}; a Flow takes '
                        f'{", ".join(FLOW_GATEWAY_KEYS)} for its gateway, and as defaults of '
                        f'every add(): {", ".join(known)}')
    if defaults and not {'stateful', 'external'} & defaults.keys():
        with warnings.catch_warnings():  # each add() warns for its own executor
            warnings.simplefilter('ignore')
            DeploymentSpec.from_kwargs(name='flow-defaults', **defaults)
    return dict(defaults)
