"""Polling: which shards of a deployment receive a request (pure, no I/O).

``polling`` says, per endpoint, whether a request goes to ANY one shard (rotating) or to ALL
shards (results are then reduced, see :mod:`nborch.runtime.reduce`).

Accepted forms (:meth:`PollingTable.parse`):

- ``'ANY'`` / ``'ALL'`` in any case, surrounding whitespace ignored, or a :class:`Polling`;
- a dict ``{endpoint: 'ANY' | 'ALL' | Polling, '*': default}``;
- the same dict as a JSON object string (what the CLI and YAML hand over);
- ``None`` (not given): the same as ``'ANY'``.

Lookup order in :meth:`PollingTable.for_endpoint`:

1. an explicit dict entry for the endpoint;
2. the built-ins: ``/search`` -> ALL; ``/index``, ``/update``, ``/delete`` -> ANY;
3. the default: the plain value, or the dict's ``'*'`` entry (ANY when absent).

Decision — a plain ``'ALL'``/``'ANY'`` does **not** override the built-ins. This is what the
reference system does: its head runtime (``HeaderRequestHandler.__init__``) turns a plain
string into ``defaultdict(lambda: plain, {'/search': ALL, '/index': ANY})``, exactly as it does
with a dict's ``'*'`` entry. It has to be so: the default polling is ``'ANY'``, and a sharded
``/search`` must still reach every shard under it. So ``polling='ALL'`` sends ``'/'``,
``/custom`` and ``/search`` to every shard but ``/index`` to one shard; to broadcast
``/index`` say so explicitly: ``{'/index': 'ALL'}``. The reference page's table
(``shards=2, polling='ALL'`` posting to ``'/'`` reaches both shards) holds either way.

Difference from the reference system's code: nborch's built-ins also route ``/update`` and
``/delete`` to ANY (the reference page says "Index (and update, delete) are handled by a single
replica"); its code only lists ``/search`` and ``/index``.

Endpoints are matched exactly (``'search'`` is not ``'/search'``).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ['BUILTIN_POLLING', 'Polling', 'PollingTable', 'choose_shards']


class Polling(enum.Enum):
    """ANY: one shard gets the request. ALL: every shard gets it and the results are reduced."""

    ANY = 'ANY'
    ALL = 'ALL'


BUILTIN_POLLING: Mapping[str, Polling] = {
    '/search': Polling.ALL,
    '/index': Polling.ANY,
    '/update': Polling.ANY,
    '/delete': Polling.ANY,
}
"""Defaults that a plain value or ``'*'`` does not change; an explicit dict entry does."""

_WILDCARD = '*'
_ACCEPTED = (
    "'ANY' or 'ALL' (any case), or a dict / JSON object "
    "{endpoint: 'ANY'|'ALL', '*': default}"
)


def _polling_value(value: Any, where: str) -> Polling:
    """One polling value (a name in any case, or a member); ``where`` names it in errors."""
    if isinstance(value, Polling):
        return value
    if isinstance(value, str):
        try:
            return Polling[value.strip().upper()]
        except KeyError:
            pass
    raise ValueError(f"invalid polling {where}{value!r}: expected 'ANY' or 'ALL' (any case)")


@dataclass(frozen=True)
class PollingTable:
    """Per-endpoint polling: explicit entries, then :data:`BUILTIN_POLLING`, then ``default``.

    ``explicit`` is a tuple of ``(endpoint, Polling)`` pairs (sorted, so equal tables compare
    equal and hash alike); build tables with :meth:`parse`.
    """

    default: Polling = Polling.ANY
    explicit: tuple[tuple[str, Polling], ...] = ()
    _lookup: Mapping[str, Polling] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        lookup = dict(BUILTIN_POLLING)
        lookup.update(self.explicit)
        # frozen: the lookup cache is derived state, set once here
        object.__setattr__(self, '_lookup', lookup)

    @classmethod
    def parse(cls, spec: PollingTable | Polling | str | Mapping[str, Any] | None) -> PollingTable:
        """Build a table from any accepted form (see the module docstring).

        Raises ``ValueError`` naming the bad value and the accepted forms.
        """
        if spec is None:
            return cls()
        if isinstance(spec, PollingTable):
            return spec
        if isinstance(spec, Polling):
            return cls(default=spec)
        if isinstance(spec, str):
            text = spec.strip()
            if text.startswith('{'):
                try:
                    loaded = json.loads(text)
                except json.JSONDecodeError as err:
                    raise ValueError(
                        f'invalid polling {spec!r}: malformed JSON ({err.msg} at char {err.pos});'
                        f' expected {_ACCEPTED}'
                    ) from None
                return cls._from_mapping(loaded)
            if text.upper() in Polling.__members__:
                return cls(default=Polling[text.upper()])
            raise ValueError(f'invalid polling {spec!r}: expected {_ACCEPTED}')
        if isinstance(spec, Mapping):
            return cls._from_mapping(spec)
        raise ValueError(
            f'invalid polling {spec!r} of type {type(spec).__name__}: expected {_ACCEPTED}'
        )

    @classmethod
    def _from_mapping(cls, spec: Mapping[Any, Any]) -> PollingTable:
        default = Polling.ANY
        explicit: dict[str, Polling] = {}
        for key, value in spec.items():
            if not isinstance(key, str):
                raise ValueError(
                    f'invalid polling endpoint {key!r} of type {type(key).__name__}:'
                    " endpoints are strings such as '/search' (or '*' for the default)"
                )
            if not key.strip() or key != key.strip():
                raise ValueError(
                    f'invalid polling endpoint {key!r}: an endpoint is a non-empty string'
                    " without surrounding whitespace, such as '/search' (or '*')"
                )
            polling = _polling_value(value, f'for endpoint {key!r}: ')
            if key == _WILDCARD:
                default = polling
            else:
                explicit[key] = polling
        return cls(default=default, explicit=tuple(sorted(explicit.items())))

    def for_endpoint(self, endpoint: str) -> Polling:
        """Polling of ``endpoint``: explicit entry, else built-in, else the default."""
        return self._lookup.get(endpoint, self.default)


def choose_shards(polling: Polling, shards: int, rotation: int) -> tuple[int, ...]:
    """Shard ids that receive one request.

    ALL: every shard, in order. ANY: ``(rotation % shards,)``, the caller advances
    ``rotation`` per request so ANY requests (and the docs they index) spread over the shards.
    With one shard both give ``(0,)``.
    """
    if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
        raise ValueError(f'invalid shards={shards!r}: expected an integer >= 1')
    if polling is Polling.ALL:
        return tuple(range(shards))
    if polling is Polling.ANY:
        return (rotation % shards,)
    raise ValueError(f'invalid polling {polling!r}: expected Polling.ANY or Polling.ALL')
