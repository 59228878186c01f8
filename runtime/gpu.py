"""GPU round robin: ``CUDA_VISIBLE_DEVICES=RR...`` spreads replicas over devices.

The parsing and allocation are pure. The only I/O is :func:`run_nvidia_smi_list`, and
:func:`detect_device_count` on top of it; the orchestrator calls that once and passes the count
down.

Accepted values of ``CUDA_VISIBLE_DEVICES`` (surrounding whitespace ignored):

========================  ======================================  =========================
form                      pool of devices                         needs the device count
========================  ======================================  =========================
``RR``                    every device: ``0 .. count-1``          yes
``RR<slice>``             ``range(count)[slice]``, Python slice   yes
                          syntax: ``RR1:``, ``RR0:2``, ``RR:2``,
                          ``RR::2``, ``RR1:3:1``, ``RR:-1``; also
                          bracketed: ``RR[0:2]``
``RR<i>``                 the one device ``i``: ``RR2``           no
``RR<i>,<j>,...``         those devices in that order: ``RR1,3``  no
``RRGPU-<uuid>,...``      those devices by UUID (``MIG-...`` too)  no
anything else             not a round robin: passed through
========================  ======================================  =========================

Replica ``r`` gets ``pool[r % len(pool)]``; every shard uses the same map.

Decisions:

- The device count comes from ``nvidia-smi -L`` (lines starting with ``GPU ``; MIG instances
  are listed indented under their GPU and are not counted), else ``CUDA_TOTAL_DEVICES``,
  else 0. With a count of 0, forms that need the count assign nothing (every replica gets
  ``None``); explicit indexes and UUIDs are assigned anyway.
- An explicit index ``>= count`` (when the count is known, > 0) is a ``ValueError``: the
  replica would start seeing no GPU at all. The reference system passes it through;
  ``strict=False`` does the same. (``RR1,3`` "with 3 devices" is meant as 1,3,1,3,1; that
  map holds with 4 or more devices, with an unknown count, or with ``strict=False``.)
- A slice that selects no device out of a known count is a ``ValueError``.
- A replica that gets no device starts **without** ``CUDA_VISIBLE_DEVICES`` (rather than with
  the literal ``RR...``, which CUDA would read as "no device"): with no device count known,
  the process sees whatever devices the machine has, as if ``RR`` had not been given.
- UUIDs are not checked against the machine; indexes and UUIDs cannot be mixed in one list.
- The ``RR`` prefix is case-sensitive, as in the reference system: ``rr1:`` is passed through.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    'CUDA_TOTAL_DEVICES',
    'CUDA_VISIBLE_DEVICES',
    'RoundRobinSpec',
    'assign_devices',
    'count_devices',
    'detect_device_count',
    'parse_rr',
    'replica_environments',
    'run_nvidia_smi_list',
]

CUDA_VISIBLE_DEVICES = 'CUDA_VISIBLE_DEVICES'
CUDA_TOTAL_DEVICES = 'CUDA_TOTAL_DEVICES'
_PREFIX = 'RR'

_ACCEPTED = (
    'accepted forms: RR (all devices), RR<start>:<stop>[:<step>] (a Python slice, e.g. RR1:,'
    ' RR0:2, RR::2), RR<index> (e.g. RR2), RR<index>,<index>,... (e.g. RR0,2,3),'
    ' RRGPU-<uuid>,... or RRMIG-<uuid>,...'
)
_INDEX = re.compile(r'[0-9]+')
_SLICE_BOUND = re.compile(r'-?[0-9]+')
_UUID = re.compile(r'(?:GPU|MIG)-[^\s,]+')


@dataclass(frozen=True)
class RoundRobinSpec:
    """A parsed ``RR...`` value: either a slice over all devices or an explicit device list.

    ``window`` is ``(start, stop, step)`` of a slice over ``range(device_count)`` (``RR`` is
    ``(None, None, None)``), or ``None`` when ``devices`` lists the devices explicitly
    (indexes as decimal strings, or UUIDs).
    """

    text: str
    window: tuple[int | None, int | None, int | None] | None = None
    devices: tuple[str, ...] = ()

    @property
    def needs_device_count(self) -> bool:
        """True for ``RR`` and slices: their pool depends on how many devices there are."""
        return self.window is not None

    @property
    def uses_uuids(self) -> bool:
        return bool(self.devices) and not _INDEX.fullmatch(self.devices[0])

    def pool(self, device_count: int, *, strict: bool = True) -> tuple[str, ...]:
        """The devices to cycle through; ``()`` when a count-dependent form meets count 0.

        Raises ``ValueError`` for an empty slice, or (``strict``) an index ``>= device_count``.
        """
        if isinstance(device_count, bool) or not isinstance(device_count, int) or device_count < 0:
            raise ValueError(f'invalid device_count={device_count!r}: expected an integer >= 0')
        if self.window is not None:
            if device_count == 0:
                return ()
            selected = range(device_count)[slice(*self.window)]
            if not selected:
                raise ValueError(
                    f'invalid {CUDA_VISIBLE_DEVICES}={self.text!r}: selects no device, there'
                    f' {_are_devices(device_count)} (indexes 0..{device_count - 1})'
                )
            return tuple(str(index) for index in selected)
        if strict and device_count > 0 and not self.uses_uuids:
            missing = [d for d in self.devices if int(d) >= device_count]
            if missing:
                what = (
                    f'device {missing[0]} does not'
                    if len(missing) == 1
                    else f'devices {", ".join(missing)} do not'
                )
                raise ValueError(
                    f'invalid {CUDA_VISIBLE_DEVICES}={self.text!r}: {what} exist, there'
                    f' {_are_devices(device_count)} (indexes 0..{device_count - 1})'
                )
        return self.devices


def _are_devices(count: int) -> str:
    return 'is 1 device' if count == 1 else f'are {count} devices'


def _malformed(spec: str, reason: str) -> ValueError:
    return ValueError(f'invalid {CUDA_VISIBLE_DEVICES}={spec!r}: {reason}; {_ACCEPTED}')


def parse_rr(spec: str) -> RoundRobinSpec | None:
    """Parse a ``CUDA_VISIBLE_DEVICES`` value; ``None`` when it is not a round robin.

    A value without the ``RR`` prefix (``'0,1'``, ``''``) is not ours: the caller passes it
    through unchanged. A malformed ``RR`` value is a ``ValueError`` naming it and the forms.
    """
    if not isinstance(spec, str):
        raise ValueError(f'invalid {CUDA_VISIBLE_DEVICES}={spec!r}: expected a string')
    text = spec.strip()
    if not text.startswith(_PREFIX):
        return None
    body = text[len(_PREFIX):]
    if not body:
        return RoundRobinSpec(text=text, window=(None, None, None))
    if body.startswith('[') and body.endswith(']'):
        body = body[1:-1]
        if ':' not in body and not _INDEX.fullmatch(body):
            raise _malformed(spec, 'brackets hold a slice such as [0:2]')
    if ':' in body:
        return RoundRobinSpec(text=text, window=_parse_slice(spec, body))
    items = body.split(',')
    if any(not item.strip() for item in items):
        raise _malformed(spec, 'empty item in the device list')
    items = [item.strip() for item in items]
    if all(_INDEX.fullmatch(item) for item in items):
        return RoundRobinSpec(text=text, devices=tuple(str(int(item)) for item in items))
    if all(_UUID.fullmatch(item) for item in items):
        return RoundRobinSpec(text=text, devices=tuple(items))
    if any(_INDEX.fullmatch(item) for item in items) and any(_UUID.fullmatch(i) for i in items):
        raise _malformed(spec, 'device indexes and UUIDs cannot be mixed')
    bad = next(i for i in items if not (_INDEX.fullmatch(i) or _UUID.fullmatch(i)))
    if _SLICE_BOUND.fullmatch(bad):
        raise _malformed(spec, f'device index {bad} is negative')
    raise _malformed(spec, f'{bad!r} is neither a device index nor a GPU-/MIG- UUID')


def _parse_slice(spec: str, body: str) -> tuple[int | None, int | None, int | None]:
    parts = body.split(':')
    if len(parts) > 3:
        raise _malformed(spec, 'a slice has at most start:stop:step')
    bounds: list[int | None] = []
    for part in parts:
        part = part.strip()
        if not part:
            bounds.append(None)
        elif _SLICE_BOUND.fullmatch(part):
            bounds.append(int(part))
        else:
            raise _malformed(spec, f'slice bound {part!r} is not an integer')
    bounds += [None] * (3 - len(bounds))
    if bounds[2] == 0:
        raise _malformed(spec, 'slice step cannot be zero')
    return bounds[0], bounds[1], bounds[2]


def assign_devices(
    spec: RoundRobinSpec, replicas: int, device_count: int, *, strict: bool = True
) -> list[str | None]:
    """Device string per replica: replica ``r`` gets ``pool[r % len(pool)]``.

    Every replica gets ``None`` when the pool is empty (``RR`` or a slice with
    ``device_count == 0``). ``strict``: see :meth:`RoundRobinSpec.pool`.
    """
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
        raise ValueError(f'invalid replicas={replicas!r}: expected an integer >= 0')
    pool = spec.pool(device_count, strict=strict)
    if not pool:
        return [None] * replicas
    return [pool[replica % len(pool)] for replica in range(replicas)]


def replica_environments(
    env: Mapping[str, str], replicas: int, device_count: int, *, strict: bool = True
) -> list[dict[str, str]]:
    """One environment per replica: a copy of ``env`` with its own ``CUDA_VISIBLE_DEVICES``.

    ``env`` is the complete environment a replica starts with (the parent's environment with
    the deployment's ``env=`` over it). Without an ``RR`` value the copies are unchanged; with
    one, each replica's copy holds its device, or lacks the variable when it got none.
    """
    value = env.get(CUDA_VISIBLE_DEVICES)
    spec = parse_rr(value) if value is not None else None
    if spec is None:
        return [dict(env) for _ in range(replicas)]
    environments = []
    for device in assign_devices(spec, replicas, device_count, strict=strict):
        replica_env = dict(env)
        if device is None:
            del replica_env[CUDA_VISIBLE_DEVICES]
        else:
            replica_env[CUDA_VISIBLE_DEVICES] = device
        environments.append(replica_env)
    return environments


def count_devices(run_nvidia_smi: Callable[[], str | None], environ: Mapping[str, str]) -> int:
    """Number of GPUs: ``nvidia-smi -L`` lines starting with ``GPU ``, else
    ``CUDA_TOTAL_DEVICES``, else 0.

    ``run_nvidia_smi`` returns the command's output, or ``None`` when it could not run. An
    output that lists no GPU falls back to ``CUDA_TOTAL_DEVICES`` too. A
    ``CUDA_TOTAL_DEVICES`` that is not an integer ``>= 0`` is a ``ValueError``.
    """
    output = run_nvidia_smi()
    if output is not None:
        gpus = sum(1 for line in output.splitlines() if line.lstrip().startswith('GPU '))
        if gpus:
            return gpus
    raw = environ.get(CUDA_TOTAL_DEVICES)
    if raw is None or not raw.strip():
        return 0
    try:
        total = int(raw.strip())
    except ValueError:
        total = -1
    if total < 0:
        raise ValueError(f'invalid {CUDA_TOTAL_DEVICES}={raw!r}: expected an integer >= 0')
    return total


def run_nvidia_smi_list(
    command: Sequence[str] = ('nvidia-smi', '-L'), timeout: float = 5.0
) -> str | None:
    """Output of ``nvidia-smi -L``, or ``None`` when it is missing, fails or times out."""
    try:
        completed = subprocess.run(
            list(command), capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if completed.returncode != 0:
        return None
    return completed.stdout


def detect_device_count(environ: Mapping[str, str], timeout: float = 5.0) -> int:
    """:func:`count_devices` with the real ``nvidia-smi -L`` (the one I/O in this module)."""
    return count_devices(lambda: run_nvidia_smi_list(timeout=timeout), environ)
