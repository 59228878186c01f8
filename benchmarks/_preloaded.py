"""`PreloadedSearch`: nborch.examples.NumpySearch holding the page's docs from its start.

Every replica builds the same matrix from the same seed (`uses_with={'docs': N}`), so a
replica's search costs the same at replicas=1 and replicas=4 and no indexing run is needed;
with shards, shard `s` of `S` holds docs `s, s+S, s+2S, ...` (the ALL search then reduces
the shards' top-`limit` lists to the global one). The sweep also builds one in its own
process: the same executor called in-process.
"""
from __future__ import annotations

import numpy as np

from _workloads import doc_text, make_embeddings
from nborch.examples import NumpySearch


class PreloadedSearch(NumpySearch):
    def __init__(self, docs: int = 10_000, **kwargs):
        super().__init__(**kwargs)
        shard, shards = self.runtime_args.shard_id, self.runtime_args.shards
        rows = np.arange(shard, docs, shards)
        self._chunks.append(make_embeddings(docs, seed=0)[rows].astype(np.float32))
        self._ids.extend(f'doc-{i}' for i in rows)
        self._texts.extend(doc_text(i) for i in rows)
        self.matrix()  # concatenated now, not on the first query
