"""The reference system's (Jina's) arguments that nborch takes without acting on them, and
those it refuses with a reason — one table, read by `DeploymentSpec`, `Flow`, the YAML
readers and `Client`, and written out row by row in docs/compatibility.md.

An argument left at the reference system's default passes silently either way (a YAML file
exported from the reference system carries many of them). A set one either warns
(`IgnoredArgumentWarning`: it would change nothing here) or raises `ValueError` (it would
change behaviour nborch does not have, so running without it would be wrong).
"""
from __future__ import annotations

import warnings

from nborch.errors import IgnoredArgumentWarning

_LOCAL = 'executors run as local processes here, not containers (nborch export writes the ' \
         'container specs)'
_TELEMETRY = "no Prometheus/OpenTelemetry export: status() and the widgets show nborch's counters"
_GRPC_OPTIONS = 'nborch sets its own gRPC options; message sizes are max_message_size'
_OWN_GATEWAY = "the reference system's internal gateway wiring; nborch's gateway reads its " \
               'topology from the owner'

# Would change nothing here: accepted with a warning.
NO_EFFECT: dict[str, str] = {
    'install_requirements': 'install what the executor needs into the environment before start',
    'docker_kwargs': _LOCAL, 'entrypoint': _LOCAL, 'disable_auto_volume': _LOCAL,
    'force_update': _LOCAL, 'prefer_platform': _LOCAL,
    'monitoring': _TELEMETRY, 'port_monitoring': _TELEMETRY, 'tracing': _TELEMETRY,
    'traces_exporter_host': _TELEMETRY, 'traces_exporter_port': _TELEMETRY,
    'metrics': _TELEMETRY, 'metrics_exporter_host': _TELEMETRY,
    'metrics_exporter_port': _TELEMETRY,
    'log_config': "each process logs to its own output (dep.logs()); log_level sets the level",
    'quiet_error': 'an executor error always carries its traceback (ExecutorError)',
    'suppress_root_logging': 'nborch does not configure the root logger of your process',
    'native': 'every replica is an nborch worker process',
    'runtime_cls': 'every replica is an nborch worker process',
    'timeout_ctrl': 'readiness is bounded by timeout_ready; liveness checks are built in',
    'retries': 'the gateway fails a request over to another replica of its shard when a '
               'replica cannot be reached; timeout_send bounds each try',
    'compression': 'local hops need none; gRPC compression is not used',
    'grpc_server_options': _GRPC_OPTIONS, 'grpc_channel_options': _GRPC_OPTIONS,
    'output_array_type': "tensors travel as raw arrays in nborch's codec",
    'allow_concurrent': 'sync endpoints run one at a time on the replica\'s executor thread, '
                        'async endpoints concurrently on its event loop',
    'reuse_session': 'a client keeps one connection per event loop anyway',
    'proxy': 'the client connects directly; proxies from the environment are not used',
    'prefetch@Flow': "the gateway takes every request a client sends; bound the client's "
                     'in-flight requests with Client.post(prefetch=...)',
    'deployments_addresses': _OWN_GATEWAY, 'deployments_metadata': _OWN_GATEWAY,
    'deployments_no_reduce': _OWN_GATEWAY, 'graph_description': _OWN_GATEWAY,
    'graph_conditions': _OWN_GATEWAY,
    'no_debug_endpoints': 'the gateway has no debug endpoints',
    'no_crud_endpoints': 'the HTTP gateway serves one route per endpoint the executors have',
    'expose_endpoints': 'the HTTP gateway serves one route per endpoint the executors have',
    'expose_graphql_endpoint': 'no GraphQL endpoint',
    **dict.fromkeys(('workspace_id', 'pod_role', 'deployment_role', 'noblock_on_start',
                     'replica_id', 'shard_id', 'extra_search_paths', 'force_network_mode'),
                    "the reference system's internal process wiring; nborch numbers and "
                    'places replicas itself'),
}

# Taken without a warning. install_requirements: the reference page passes it in its
# examples, and there is nothing to install that the environment lacks. The others are the
# reference system's own process wiring (its parser fills them in, port_monitoring with a
# random port), which code passing `vars(args)` of its parser carries along.
QUIET = frozenset({'install_requirements', 'port_monitoring', 'workspace_id', 'pod_role',
                   'deployment_role', 'noblock_on_start', 'replica_id', 'shard_id',
                   'extra_search_paths', 'force_network_mode'})

# Would change behaviour nborch does not have: refused, with what to do instead.
NOT_SUPPORTED: dict[str, str] = {
    'uses_before': 'no before-shards executor: add one before this executor in a Flow',
    'uses_after': 'no after-shards executor: add one after this executor in a Flow (with '
                  'no_reduce=True it sees every shard\'s docs)',
    'uses_before_address': 'no before-shards executor: add one before this executor in a Flow',
    'uses_after_address': 'no after-shards executor: add one after this executor in a Flow',
    'floating': "every executor's result is part of the reply: add it to the chain",
    'when': 'no document conditions: filter inside the executor',
    'reload': 'no hot reload: re-run the cell (or restart) with the edited class',
    'uses_requests': 'endpoints come from the class\'s @requests: subclass it to remap them',
    'uses_metas': "metas other than name and workspace have no meaning here: pass "
                  "name= and workspace= to the Deployment",
    'exit_on_exceptions': 'an endpoint that raises fails its request and the replica keeps '
                          'serving; raise SystemExit in the endpoint to stop a replica',
    'connection_list': "the reference system's internal wiring: name running replicas "
                       'with external=True and host/port lists',
    'grpc_metadata': 'no per-request gRPC metadata is forwarded to executors',
    'provider': 'no SageMaker/Azure provider containers',
    'provider_endpoint': 'no SageMaker/Azure provider containers',
    'uses@Flow': "the reference system's Flow(uses=...) names a custom gateway (or a Flow "
                 "YAML); nborch's gateway is its own: load a Flow YAML with "
                 "Flow.load_config(path), and give each executor's uses= to add()",
    'uses_with@Flow': "the reference system's Flow(uses_with=...) configures a custom gateway; "
                      "give each executor's uses_with= to add()",
    'uses_dynamic_batching@Flow': "give it to the add() of the executor it names",
    'k8s_namespace': 'give the namespace to nborch export (--namespace)',
    'env_from_secret': 'put secrets in env= or in the exported manifests',
    'image_pull_secrets': 'put pull secrets in the exported manifests',
}

# The reference system's defaults of the arguments above that are not falsy: passing these
# values is the same as not passing the argument.
_REFERENCE_DEFAULTS: dict[str, tuple] = {
    'log_config': ('default',), 'runtime_cls': ('WorkerRuntime',), 'timeout_ctrl': (60,),
    'retries': (-1,), 'use_dynamic_batching': (True,), 'provider': (['NONE'], 'NONE'),
}


def is_default(name: str, value) -> bool:
    """True when `value` is what the reference system uses when `name` is not given."""
    return value is None or value is False or value == [] or value == {} or value == '' \
        or value in _REFERENCE_DEFAULTS.get(name.partition('@')[0], ())


def take_reference_arguments(kwargs: dict, where: str) -> dict:
    """Remove from `kwargs` (in place) the arguments of NO_EFFECT and NOT_SUPPORTED that
    apply at `where` ('Deployment', 'Flow', 'Client', 'Client.post'): warn for a set
    no-effect one, raise ValueError for a set unsupported one. Returns `kwargs`."""
    for key in list(kwargs):
        reason = NO_EFFECT.get(f'{key}@{where}', NO_EFFECT.get(key))
        refusal = NOT_SUPPORTED.get(f'{key}@{where}', NOT_SUPPORTED.get(key))
        if reason is None and refusal is None:
            continue
        value = kwargs.pop(key)
        if is_default(key, value) or key in QUIET:
            continue
        if refusal is not None:
            raise ValueError(f'{where}({key}={value!r}): not supported by nborch: {refusal}')
        warnings.warn(f'{where}({key}=...) has no effect in nborch: {reason}',
                      IgnoredArgumentWarning, stacklevel=4)
    return kwargs
