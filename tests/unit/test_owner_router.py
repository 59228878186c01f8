"""The owner's routing counters joined with the gateway process's (pure)."""
from nborch.owner_router import add_counters
from nborch.runtime.gateway import RECENT_ROUTES


def _report(requests, replicas, routes=(), raft=None):
    return {'requests': requests, 'executors': [{'name': 'e', 'needs': ['gateway'], 'shards': [
        {'replicas': [{'address': a, 'outstanding': o, 'served': s, 'failures': 0,
                       'deadline_misses': 0, 'ejections': 0, 'ejected': ej, 'raft': raft}
                      for a, o, s, ej in replicas]}]}],
        'recent_routes': [{'executor': 'e', 'time': t} for t in routes]}


def test_counters_are_summed_by_address_and_raft_kept_from_the_gateway():
    routed = _report(5, [('h:1', 1, 3, False), ('h:2', 0, 2, False)], raft={'role': 'leader'})
    # the owner's pools list the replicas in another order, and one the gateway lacks
    local = _report(7, [('h:2', 2, 4, True), ('h:1', 0, 3, False), ('h:9', 1, 1, False)])
    merged = add_counters(routed, local)
    assert merged['requests'] == 12
    (shard,) = merged['executors'][0]['shards']
    assert [(r['address'], r['outstanding'], r['served'], r['ejected']) for r in shard['replicas']] \
        == [('h:1', 1, 6, False), ('h:2', 2, 6, True)]
    assert all(r['raft'] == {'role': 'leader'} for r in shard['replicas'])
    assert routed['executors'][0]['shards'][0]['replicas'][0]['served'] == 3  # not mutated


def test_recent_routes_merge_in_time_order_and_stay_bounded():
    routed = _report(0, [], routes=range(0, 60, 2))
    local = _report(0, [], routes=range(1, 61, 2))
    routes = add_counters(routed, local)['recent_routes']
    assert [r['time'] for r in routes] == list(range(60 - RECENT_ROUTES, 60))


def test_importing_nborch_loads_no_runtime_entry_module():
    """`python -m nborch.runtime.gateway` (or .worker) imports nborch first; a copy of the
    module loaded then would be a second one beside __main__ (runpy warns of it)."""
    import subprocess
    import sys
    code = ('import sys, nborch; loaded = [m for m in ("nborch.runtime.gateway", '
            '"nborch.runtime.worker") if m in sys.modules]; print(loaded); '
            'raise SystemExit(bool(loaded))')
    done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
