"""Commands of the scenario scripts in ``testdata/`` (after etcd-io/raft's rafttest).

Nodes are numbered from 1. Messages queue on a network with no delay; ``deliver-msgs``
and ``stabilize`` move them. Commands:

    add-nodes N [join=true] [prevote=B] [checkquorum=B] [election=N] [heartbeat=N]
                [max-append-entries=N] [max-append-bytes=N] [max-inflight=N]
                [chunk=N] [chunk-window=N]
    campaign ID | propose ID DATA | read-index ID CTX
    propose-conf-change ID add-learner|promote|remove NODE | members [ID...]
    tick ID [N] | tick-heartbeat ID | tick-election ID
    process-ready ID... | deliver-msgs ID... [type=T] [count=N] [drop=true] | stabilize [ID...]
    partition 1 2 | 3 | isolate ID | heal | crash ID | restart ID
    compact ID [keep=N] | status [ID...] | raft-log ID | app ID
"""

from __future__ import annotations

from pathlib import Path

from nborch.runtime.consensus.core import (ConfChange, ConfChangeError, ConfOp, Message,
                                           NotLeaderError, RaftError, Ready, Role)
from nborch.runtime.consensus.core.messages import describe_data, describe_entry

from .sim import Cluster

_CONFIG_KEYS = {
    "prevote": ("pre_vote", "bool"),
    "checkquorum": ("check_quorum", "bool"),
    "election": ("election_ticks", "int"),
    "heartbeat": ("heartbeat_ticks", "int"),
    "max-append-entries": ("max_append_entries", "int"),
    "max-append-bytes": ("max_append_bytes", "int"),
    "max-inflight": ("max_inflight", "int"),
    "chunk": ("snapshot_chunk_size", "int"),
    "chunk-window": ("max_inflight_snapshot_chunks", "int"),
}


def describe_ready(rd: Ready) -> list[str]:
    out = [f"Ready must_sync={str(rd.must_sync).lower()}:"]
    if rd.soft_state is not None:
        out.append(f"soft: {rd.soft_state.role} leader={rd.soft_state.leader}")
    if rd.hard_state is not None:
        hs = rd.hard_state
        out.append(f"hard: term={hs.term} vote={hs.vote} commit={hs.commit}")
    if rd.snapshot is not None:
        m = rd.snapshot.meta
        learners = f" learners={m.learners}" if m.learners else ""
        out.append(f"snapshot: {m.term}/{m.index} voters={m.voters}{learners} "
                   f"data={describe_data(rd.snapshot.data)}")
    if rd.entries:
        out.append("entries:")
        out += ["  " + describe_entry(e) for e in rd.entries]
    if rd.committed_entries:
        out.append("committed:")
        out += ["  " + describe_entry(e) for e in rd.committed_entries]
    if rd.messages:
        out.append("messages:")
        out += ["  " + m.describe() for m in rd.messages]
    if rd.read_states:
        out.append("read-states:")
        out += [f"  index={rs.index} ctx={describe_data(rs.context)}" for rs in rd.read_states]
    return out


class InteractionEnv:
    def __init__(self, tmp_dir: Path | None = None) -> None:
        self.cluster = Cluster(seed="interaction")
        self.tmp_dir = tmp_dir

    def close(self) -> None:
        self.cluster.close()

    # -- dispatch ----------------------------------------------------------------------------

    def handle(self, cmd: str, args: list[str], kw: dict[str, str]) -> str:
        fn = getattr(self, "cmd_" + cmd.replace("-", "_"), None)
        if fn is None:
            raise ValueError(f"unknown command {cmd!r}")
        out = fn(args, kw)
        return "\n".join(out) if isinstance(out, list) else (out or "")

    def _ids(self, args: list[str]) -> list[int]:
        return [int(a) for a in args] if args else sorted(self.cluster.nodes)

    def _node(self, i: int):
        sn = self.cluster.nodes[i]
        if sn.node is None:
            raise ValueError(f"node {i} is crashed")
        return sn.node

    def _observe(self, i: int, before: tuple) -> list[str]:
        node = self.cluster.nodes[i].node
        if node is None:
            return []
        after = (node.role, node.term, node.leader)
        if after == before:
            return []
        return [f"{i} is {node.role} at term {node.term}, leader {node.leader}"]

    def _state(self, i: int) -> tuple:
        node = self.cluster.nodes[i].node
        return (node.role, node.term, node.leader) if node else ()

    # -- commands ----------------------------------------------------------------------------

    def cmd_add_nodes(self, args, kw):
        overrides = {}
        join = kw.pop("join", "false") == "true"
        for k, v in kw.items():
            if k == "disk":
                if v == "true":
                    assert self.tmp_dir is not None
                    self.cluster.storage_dir = self.tmp_dir
                continue
            name, kind = _CONFIG_KEYS[k]
            overrides[name] = (v == "true") if kind == "bool" else int(v)
        ids = self.cluster.add_nodes(int(args[0]), join=join, **overrides)
        return [self._status_line(i) for i in ids]

    def cmd_campaign(self, args, kw):
        out = []
        for i in self._ids(args):
            before = self._state(i)
            self._node(i).campaign()
            out += self._observe(i, before)
        return out

    def cmd_propose(self, args, kw):
        i = int(args[0])
        try:
            eid = self._node(i).propose(args[1].encode())
        except NotLeaderError as exc:
            return f"error: {exc}"
        return f"proposed {eid.term}/{eid.index}"

    def cmd_propose_conf_change(self, args, kw):
        i = int(args[0])
        op = {str(o): o for o in ConfOp}[args[1]]
        try:
            eid = self._node(i).propose_conf_change(ConfChange(op, int(args[2])))
        except (NotLeaderError, ConfChangeError) as exc:
            return f"error: {exc}"
        return f"proposed {eid.term}/{eid.index}"

    def cmd_members(self, args, kw):
        """The membership each node uses now (the latest in its log)."""
        out = []
        for i in self._ids(args):
            sn = self.cluster.nodes[i]
            out.append(f"{i}: crashed" if sn.node is None else f"{i}: {sn.node.conf_state()}")
        return out

    def cmd_read_index(self, args, kw):
        i = int(args[0])
        try:
            self._node(i).read_index(args[1].encode())
        except NotLeaderError as exc:
            return f"error: {exc}"
        return ""

    def cmd_tick(self, args, kw):
        i = int(args[0])
        n = int(args[1]) if len(args) > 1 else 1
        before = self._state(i)
        for _ in range(n):
            self._node(i).tick()
        return self._observe(i, before)

    def cmd_tick_heartbeat(self, args, kw):
        i = int(args[0])
        return self.cmd_tick([str(i), str(self.cluster.nodes[i].config.heartbeat_ticks)], kw)

    def cmd_tick_election(self, args, kw):
        """Tick until the election timer fires (a follower campaigns, a leader checks its
        quorum)."""
        i = int(args[0])
        r = self._node(i).raft
        timeout = (r.config.election_ticks if r.role is Role.LEADER
                   else r.randomized_election_timeout)
        return self.cmd_tick([str(i), str(timeout - r.election_elapsed)], kw)

    def _process(self, i: int) -> list[str]:
        before = self._state(i)
        rd = self.cluster.handle_ready(i)
        if rd is None:
            return [f"> {i} has no Ready"]
        return [f"> {i} handling Ready"] + ["  " + ln for ln in describe_ready(rd)] + [
            "  " + ln for ln in self._observe(i, before)]

    def cmd_process_ready(self, args, kw):
        out = []
        for i in self._ids(args):
            out += self._process(i)
        return out

    def _take(self, i: int, kind: str | None, count: int | None) -> list[Message]:
        picked, rest = [], []
        for q in self.cluster.queue:
            m = q[2]
            ok = m.dst == i and (kind is None or type(m).__name__ == kind)
            if ok and (count is None or len(picked) < count):
                picked.append(m)
            else:
                rest.append(q)
        self.cluster.queue = rest
        return picked

    def _deliver(self, i: int, kind=None, count=None, drop=False) -> list[str]:
        msgs = self._take(i, kind, count)
        if not msgs:
            return []
        out = [f"> {i} {'dropping' if drop else 'receiving'} messages"]
        for m in msgs:
            if drop:
                out.append("  " + m.describe())
                continue
            before = self._state(i)
            try:
                delivered = self.cluster.deliver(m)
            except RaftError as exc:
                out.append(f"  {m.describe()}\n  error: {exc}")
                continue
            out.append(("  " if delivered else "  dropped: ") + m.describe())
            out += ["  " + ln for ln in self._observe(i, before)]
        return out

    def cmd_deliver_msgs(self, args, kw):
        out = []
        count = int(kw["count"]) if "count" in kw else None
        for i in self._ids(args):
            out += self._deliver(i, kw.get("type"), count, kw.get("drop") == "true")
        return out

    def cmd_drop_msgs(self, args, kw):
        return self.cmd_deliver_msgs(args, {**kw, "drop": "true"})

    def cmd_stabilize(self, args, kw):
        ids = self._ids(args)
        out: list[str] = []
        while True:
            done = True
            for i in ids:
                sn = self.cluster.nodes[i]
                if sn.node is not None and sn.node.has_ready():
                    done = False
                    out += self._process(i)
            for i in ids:
                if any(q[2].dst == i for q in self.cluster.queue):
                    done = False
                    out += self._deliver(i)
            if done:
                return out

    def cmd_partition(self, args, kw):
        groups, cur = [], []
        for a in args:
            if a == "|":
                groups.append(cur)
                cur = []
            else:
                cur.append(int(a))
        groups.append(cur)
        self.cluster.partition(*groups)
        return ""

    def cmd_isolate(self, args, kw):
        self.cluster.isolate(int(args[0]))
        return ""

    def cmd_heal(self, args, kw):
        self.cluster.heal()
        return ""

    def cmd_crash(self, args, kw):
        for i in self._ids(args):
            self.cluster.crash(i)
        return ""

    def cmd_restart(self, args, kw):
        out = []
        for i in self._ids(args):
            self.cluster.restart(i)
            out.append(self._status_line(i))
        return out

    def cmd_compact(self, args, kw):
        i = int(args[0])
        snap = self.cluster.compact(i, keep=int(kw.get("keep", 0)))
        if snap is None:
            return "nothing to compact"
        st = self.cluster.nodes[i].storage
        return (f"snapshot {snap.meta.term}/{snap.meta.index} data={describe_data(snap.data)}; "
                f"log now starts at {st.first_index()}")

    def _status_line(self, i: int) -> str:
        sn = self.cluster.nodes[i]
        if sn.node is None:
            return f"{i}: crashed"
        s = sn.node.status()
        return (f"{i}: {s.role} term={s.term} vote={s.vote} leader={s.leader} "
                f"log=[{s.first_index},{s.last_index}] commit={s.commit} applied={s.applied}")

    def cmd_status(self, args, kw):
        out = []
        for i in self._ids(args):
            out.append(self._status_line(i))
            sn = self.cluster.nodes[i]
            if sn.node is not None and sn.node.role is Role.LEADER:
                for peer, p in sn.node.status().progress.items():
                    if peer == i:
                        continue
                    line = f"  -> {peer}: {p.state} match={p.match} next={p.next}"
                    if p.snapshot_progress is not None:
                        line += f" snapshot={p.snapshot_progress[0]}/{p.snapshot_progress[1]}"
                    out.append(line)
        return out

    def cmd_raft_log(self, args, kw):
        i = int(args[0])
        sn = self.cluster.nodes[i]
        if sn.node is not None:
            log = sn.node.raft.log
            first, last = log.first_index(), log.last_index()
            ents = log.slice(first, last + 1)
            snap = log.snapshot()
        else:
            first, last = sn.storage.first_index(), sn.storage.last_index()
            ents = sn.storage.entries(first, last + 1) if last >= first else []
            snap = sn.storage.snapshot()
        out = []
        if snap.meta.index:
            out.append(f"snapshot {snap.meta.term}/{snap.meta.index}")
        out += [describe_entry(e) for e in ents]
        return out or ["(empty)"]

    def cmd_app(self, args, kw):
        out = []
        for i in self._ids(args):
            app = self.cluster.nodes[i].app
            vals = " ".join(v.decode() for v in app.values)
            out.append(f"{i}: applied={app.applied} values=[{vals}]")
        return out
