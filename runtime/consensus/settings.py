"""`RaftSettings`: the user's `raft_configuration`, mapped onto the core and the driver.

Keys are hashicorp/raft's Config names in snake_case (nborch's spelling: durations in
milliseconds, or strings such as `'500ms'`, `'1s'`) or as the reference system passes them on
(`HeartbeatTimeout`, `SnapshotInterval`, ...: whole milliseconds, except `SnapshotInterval`,
whole seconds, as its Raft node reads them). Defaults suit loopback groups: hashicorp's 1 s
heartbeat would make failover take seconds on one machine.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from nborch.runtime.consensus.core import RaftConfig

_DURATION = re.compile(r'^\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*$')
_UNIT_MS = {None: 1, 'ms': 1, 's': 1000, 'm': 60_000}

# The reference system's spelling → (nborch's key, ms per unit of a bare number). It
# PascalCases snake_case keys for its Go node, which reads SnapshotInterval in seconds.
_REFERENCE_KEYS = {
    'HeartbeatTimeout': ('heartbeat_timeout', 1), 'ElectionTimeout': ('election_timeout', 1),
    'CommitTimeout': ('commit_timeout', 1), 'MaxAppendEntries': ('max_append_entries', None),
    'SnapshotInterval': ('snapshot_interval', 1000),
    'SnapshotThreshold': ('snapshot_threshold', None), 'TrailingLogs': ('trailing_logs', None),
    'LeaderLeaseTimeout': ('leader_lease_timeout', 1), 'LogLevel': ('log_level', None),
}
# hashicorp options the reference system passes on that change nothing here, with the value
# that matches what nborch does (any other is refused: it would promise a behaviour).
_NO_EFFECT = {
    'BatchApplyCh': (None, 'applies are batched per tick anyway'),
    'ShutdownOnRemove': (None, 'membership is fixed while a group runs'),
    'NoSnapshotRestoreOnStart': (False, 'a replica always restores its latest snapshot, then '
                                        'replays its log'),
}


def _duration_ms(key: str, value, unit_ms: float = 1) -> float:
    if isinstance(value, bool):
        raise ValueError(f'raft_configuration[{key!r}]={value!r}: a duration (ms, or "500ms"/"1s")')
    if isinstance(value, (int, float)):
        ms = float(value) * unit_ms
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f'raft_configuration[{key!r}]={value!r}: a duration (ms, or "500ms"/"1s")')
        unit = _UNIT_MS[match.group(2)] if match.group(2) else unit_ms
        ms = float(match.group(1)) * unit
    if ms <= 0:
        raise ValueError(f'raft_configuration[{key!r}]={value!r}: must be > 0')
    return ms


def _count(key: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f'raft_configuration[{key!r}]={value!r}: a non-negative integer')
    return value


@dataclass(frozen=True)
class RaftSettings:
    heartbeat_ms: float = 50.0        # one tick; the leader heartbeats every tick
    election_ms: float = 500.0        # followers wait [election, 2 × election) without a leader
    commit_ms: float = 0.0            # accepted for compatibility: commits are not delayed here
    max_append_entries: int = 64
    snapshot_interval_ms: float = 1000.0  # how often to check whether to compact
    snapshot_threshold: int = 2048    # applied entries since the last snapshot before a new one
    trailing_logs: int = 1024         # entries kept after compaction for slightly lagging peers
    leader_lease_ms: float = 500.0    # accepted; CheckQuorum steps a cut-off leader down instead
    log_level: str | None = None      # the `nborch.raft` logger's; None: the replica's own

    KEYS = ('heartbeat_timeout', 'election_timeout', 'commit_timeout', 'max_append_entries',
            'snapshot_interval', 'snapshot_threshold', 'trailing_logs', 'leader_lease_timeout',
            'log_level')

    @classmethod
    def parse(cls, config: dict | None) -> 'RaftSettings':
        given = dict(config or {})
        unknown = sorted(set(given) - set(cls.KEYS) - set(_REFERENCE_KEYS) - set(_NO_EFFECT),
                         key=str)
        if unknown:
            raise ValueError(f'raft_configuration: unknown key(s) {", ".join(map(repr, unknown))}; '
                             f'known: {", ".join(cls.KEYS)}, or as the reference system spells '
                             f'them: {", ".join([*_REFERENCE_KEYS, *_NO_EFFECT])}')
        config, units = {}, {}
        for key, value in given.items():
            if key in _NO_EFFECT:
                allowed, why = _NO_EFFECT[key]
                if not isinstance(value, bool) or (allowed is not None and value != allowed):
                    raise ValueError(f'raft_configuration[{key!r}]={value!r}: only '
                                     f'{allowed if allowed is not None else "True or False"} '
                                     f'here ({why})')
                continue
            name, unit = _REFERENCE_KEYS.get(key, (key, 1))
            if name in config:
                raise ValueError(f'raft_configuration: {units[name][0]!r} and {key!r} are one '
                                 'setting; give it once')
            config[name], units[name] = value, (key, unit)
        values = {}
        for key, field in (('heartbeat_timeout', 'heartbeat_ms'), ('election_timeout', 'election_ms'),
                           ('commit_timeout', 'commit_ms'), ('snapshot_interval', 'snapshot_interval_ms'),
                           ('leader_lease_timeout', 'leader_lease_ms')):
            if key in config:
                written, unit = units[key]
                values[field] = _duration_ms(written, config[key], unit)
        for key in ('max_append_entries', 'snapshot_threshold', 'trailing_logs'):
            if key in config:
                values[key] = _count(units[key][0], config[key])
        if 'log_level' in config:
            level = str(config['log_level']).upper()
            level = {'WARN': 'WARNING', 'TRACE': 'DEBUG'}.get(level, level)  # hclog's names too
            if level not in ('DEBUG', 'INFO', 'WARNING', 'ERROR'):
                raise ValueError(f'raft_configuration[{units["log_level"][0]!r}]='
                                 f'{config["log_level"]!r}: DEBUG, INFO, WARNING or ERROR')
            values['log_level'] = level
        settings = cls(**values)
        if settings.election_ms < 2 * settings.heartbeat_ms:
            raise ValueError('raft_configuration: election_timeout must be at least twice '
                             'heartbeat_timeout')
        if settings.max_append_entries < 1:
            raise ValueError('raft_configuration: max_append_entries must be >= 1')
        return settings

    def core_config(self, node_id: int, peers: tuple[int, ...], applied: int) -> RaftConfig:
        return RaftConfig(id=node_id, peers=peers,
                          election_ticks=max(2, round(self.election_ms / self.heartbeat_ms)),
                          heartbeat_ticks=1, max_append_entries=self.max_append_entries,
                          applied=applied)

    def to_dict(self) -> dict:
        return asdict(self)
