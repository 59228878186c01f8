"""`RaftSettings`: the user's `raft_configuration`, mapped onto the core and the driver.

Keys are the reference system's (hashicorp/raft's Config) in snake_case. Durations are
milliseconds (int) or strings such as `'500ms'`, `'1s'`. Defaults suit loopback groups:
hashicorp's 1 s heartbeat would make failover take seconds on one machine.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from nborch.runtime.consensus.core import RaftConfig

_DURATION = re.compile(r'^\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*$')
_UNIT_MS = {None: 1, 'ms': 1, 's': 1000, 'm': 60_000}


def _duration_ms(key: str, value) -> float:
    if isinstance(value, bool):
        raise ValueError(f'raft_configuration[{key!r}]={value!r}: a duration (ms, or "500ms"/"1s")')
    if isinstance(value, (int, float)):
        ms = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f'raft_configuration[{key!r}]={value!r}: a duration (ms, or "500ms"/"1s")')
        ms = float(match.group(1)) * _UNIT_MS[match.group(2)]
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
    log_level: str = 'INFO'

    KEYS = ('heartbeat_timeout', 'election_timeout', 'commit_timeout', 'max_append_entries',
            'snapshot_interval', 'snapshot_threshold', 'trailing_logs', 'leader_lease_timeout',
            'log_level')

    @classmethod
    def parse(cls, config: dict | None) -> 'RaftSettings':
        config = dict(config or {})
        unknown = sorted(set(config) - set(cls.KEYS))
        if unknown:
            raise ValueError(f'raft_configuration: unknown key(s) {", ".join(map(repr, unknown))}; '
                             f'known: {", ".join(cls.KEYS)}')
        values = {}
        for key, field in (('heartbeat_timeout', 'heartbeat_ms'), ('election_timeout', 'election_ms'),
                           ('commit_timeout', 'commit_ms'), ('snapshot_interval', 'snapshot_interval_ms'),
                           ('leader_lease_timeout', 'leader_lease_ms')):
            if key in config:
                values[field] = _duration_ms(key, config[key])
        for key in ('max_append_entries', 'snapshot_threshold', 'trailing_logs'):
            if key in config:
                values[key] = _count(key, config[key])
        if 'log_level' in config:
            level = str(config['log_level']).upper()
            if level not in ('DEBUG', 'INFO', 'WARN', 'WARNING', 'ERROR'):
                raise ValueError(f'raft_configuration[\'log_level\']={config["log_level"]!r}')
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
