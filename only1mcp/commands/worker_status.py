"""``only1mcp worker status``: the worker's consumer group, offset by offset, as the broker keeps it.

For the group (``--group``, default ``[worker] group``) and each topic it consumes (``--topic``,
repeatable; default: ``mcp.requests``, the worker's internal input topic when the broker has it,
topics named ``<group>-…`` but table changelogs and Faust's leader topic, and any other topic the
group has committed offsets on), per partition: the committed offset, the log end offset
(highwater) and the lag between them; then the group's state and members as the broker says.

How each figure is read, so that it is right on Apache Kafka and on the embedded broker (tansu):

- **committed**: ``AIOKafkaConsumer(group_id=G).committed(tp)`` from a consumer that never joins
  the group (it disturbs nobody, commits nothing). aiokafka's admin ``list_consumer_group_offsets``
  cannot decode tansu's OffsetFetch answer; this path works on both.
- **highwater**: ``end_offsets()`` (ListOffsets "latest"), then one fetch at the last listed offset,
  whose answer carries the partition's real high watermark. tansu's ListOffsets answers the base
  offset of the last record batch plus one, short by that batch's size (about 2 % of a busy log);
  the fetch corrects it, and the output says so where it did. On Kafka both agree.
- **lag**: highwater − committed. A partition without a committed offset has the whole log as lag
  (highwater − log start: the worker starts a new group at the earliest offset) and says so.

Exit 0 when every topic was read; 1 when the broker does not answer (one line on stderr) or a
topic does not exist. Without ``--config`` it reads the configuration of the last
``only1mcp up`` in this folder (commands/_config.py) and names it on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

__all__ = ["add_status_arguments", "run_status", "read_status", "GroupStatus", "PartitionStatus",
           "BrokerUnreachable", "default_topics", "format_table"]

_CLIENT_ID = "only1mcp-worker-status"
_PROBE_WAIT_S = 3.0  # a probing fetch starts at a record that exists: the answer comes at once
# The worker's input topics, by their names in only1mcp.events.TOPICS: the first always, the others
# when the core names them and the broker has them (the entity re-keying stage's internal topic).
_WORKER_INPUTS = ("requests", "feature_events")
_NOT_CONSUMED = ("-changelog", "-__assignor-__leader")  # <group>-… topics the group commits nothing on


class BrokerUnreachable(RuntimeError):
    """The broker did not answer (refused, timed out, not Kafka)."""


@dataclass
class PartitionStatus:
    topic: str
    partition: int
    committed: int | None  # None: the group has committed nothing here
    highwater: int  # log end offset: the offset the next record will get
    log_start: int
    lag: int
    note: str = ""  # "no committed offset", "log end corrected by a fetch (ListOffsets said N)", …


@dataclass
class GroupStatus:
    bootstrap: str
    group: str
    state: str  # as the broker says: "Stable", "Empty", "PreparingRebalance", … or "unknown"
    members: list[dict[str, Any]]
    partitions: list[PartitionStatus] = field(default_factory=list)
    missing_topics: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def lag(self) -> int:
        return sum(p.lag for p in self.partitions)

    def to_json(self) -> dict[str, Any]:
        return {"bootstrap": self.bootstrap, "group": self.group, "state": self.state, "members": self.members,
                "lag": self.lag, "partitions": [asdict(p) for p in self.partitions],
                "missing_topics": self.missing_topics, "notes": self.notes}


def add_status_arguments(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS: `worker --config F status` keeps the F given before the action.
    parser.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                        help="TOML configuration file (default: the last `only1mcp up` here, else built-in defaults)")
    parser.add_argument("--group", metavar="G", help="consumer group (default: [worker] group)")
    parser.add_argument("--topic", metavar="T", action="append",
                        help="a topic the group consumes; repeat for more (default: mcp.requests, the worker's internal "
                             "topics, <group>-… topics but changelogs, and any topic the group committed on)")
    parser.add_argument("--format", choices=("table", "json"), default="table", help="output format (default: table)")
    parser.add_argument("--bootstrap", metavar="HOST:PORT",
                        help="Kafka bootstrap servers (default: KAFKA_BOOTSTRAP, else [worker] bootstrap)")
    parser.add_argument("--timeout", type=float, default=10.0, metavar="S",
                        help="seconds to wait for the broker before giving up (default 10)")


def default_topics(group: str, existing: set[str], committed_on: set[str] = frozenset()) -> list[str]:
    """The topics the worker's group consumes: ``mcp.requests`` (always, so a missing one is said),
    the worker's internal input topics of the core's TOPICS that exist, the group's own topics
    (``<group>-…``) but table changelogs (read back at recovery, never committed: their "lag" would
    always be their whole log) and Faust's leader-election topic (never written), and any other
    topic the group has committed offsets on."""
    from only1mcp.events import TOPICS

    internal = [TOPICS[name] for name in _WORKER_INPUTS[1:] if name in TOPICS and TOPICS[name] in existing]
    own = sorted(t for t in existing if t.startswith(f"{group}-") and not t.endswith(_NOT_CONSUMED))
    return list(dict.fromkeys([TOPICS[_WORKER_INPUTS[0]], *internal, *own, *sorted(committed_on & existing)]))


async def _topics_with_commits(member: Any, existing: dict[str, list[int]]) -> set[str]:
    """The topics on which the group has committed at least one offset (one OffsetFetch per partition)."""
    from aiokafka import TopicPartition

    found = set()
    for topic, partitions in sorted(existing.items()):
        if topic.startswith("__"):  # the broker's own (__consumer_offsets, …)
            continue
        for partition in partitions:
            committed = await member.committed(TopicPartition(topic, partition))
            if committed is not None and committed >= 0:
                found.add(topic)
                break
    return found


async def _topic_partitions(admin: Any) -> dict[str, list[int]]:
    """Every topic on the broker and its partitions (Metadata for all topics)."""
    return {d["topic"]: sorted(p["partition"] for p in d["partitions"])
            for d in await admin.describe_topics() if not d["error_code"] and d["partitions"]}


async def _describe_group(admin: Any, group: str) -> tuple[str, list[dict[str, Any]]]:
    """(state, members) from DescribeGroups; members' partitions are None when the broker sends no
    assignment (tansu sends none, nor client ids)."""
    from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

    responses = await admin.describe_consumer_groups([group])
    for response in responses:
        for error_code, name, state, _ptype, _protocol, members, *_ in response.groups:
            if name != group or error_code:
                continue
            described = []
            for member_id, client_id, host, _metadata, assignment in members:
                partitions: dict[str, list[int]] | None = None
                if assignment:
                    try:
                        decoded = ConsumerProtocolMemberAssignment.decode(assignment)
                        partitions = {topic: sorted(parts) for topic, parts in decoded.assignment}
                    except Exception:  # another protocol's bytes: say nothing rather than something wrong
                        partitions = None
                described.append({"member_id": member_id, "client_id": client_id or None, "host": host or None,
                                  "partitions": partitions})
            return str(state or "unknown"), described
    return "unknown", []


async def _probe_highwaters(consumer: Any, listed: dict[Any, int], starts: dict[Any, int]) -> dict[Any, int]:
    """The log end of each partition from a fetch at its last listed offset (see the module docstring)."""
    probed = {tp: end for tp, end in listed.items() if end > starts.get(tp, 0)}
    found = dict(listed)
    if not probed:
        return found
    consumer.assign(list(probed))
    for tp, end in probed.items():
        consumer.seek(tp, end - 1)
    pending = set(probed)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _PROBE_WAIT_S
    while pending and loop.time() < deadline:
        batches = await consumer.getmany(*pending, timeout_ms=200)
        for tp, records in batches.items():
            if records:
                found[tp] = max(found[tp], records[-1].offset + 1)
        for tp in list(pending):
            highwater = consumer.highwater(tp)
            if highwater is not None:
                found[tp] = max(found[tp], highwater)
                pending.discard(tp)
    return found


async def read_status(bootstrap: str, group: str, topics: list[str] | None, timeout_s: float = 10.0) -> GroupStatus:
    """The group's offsets on ``topics`` (None: :func:`default_topics`). Raises BrokerUnreachable."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    request_ms = int(max(1.0, timeout_s) * 1000)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=request_ms, client_id=_CLIENT_ID)
    # One consumer reads the log (no group: it can fetch without touching anyone's offsets), one in
    # the group reads what the group committed; neither subscribes, so neither joins the group.
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                              request_timeout_ms=request_ms, fetch_max_wait_ms=100, client_id=_CLIENT_ID)
    member = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                              request_timeout_ms=request_ms, client_id=_CLIENT_ID)
    try:
        await admin.start()
        await reader.start()
        await member.start()
        existing = await _topic_partitions(admin)
        if topics:
            wanted = list(dict.fromkeys(topics))
        else:
            wanted = default_topics(group, set(existing), await _topics_with_commits(member, existing))
        state, members = await _describe_group(admin, group)
        status = GroupStatus(bootstrap, group, state, members)
        tps = []
        for topic in wanted:
            partitions = existing.get(topic)
            if not partitions:
                status.missing_topics.append(topic)
                continue
            tps += [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return status
        starts = await reader.beginning_offsets(tps)
        listed = await reader.end_offsets(tps)
        ends = await _probe_highwaters(reader, listed, starts)
        corrected = 0
        for tp in tps:
            committed = await member.committed(tp)
            committed = committed if committed is not None and committed >= 0 else None
            start, end = starts[tp], ends[tp]
            notes = []
            if committed is None:
                lag = end - start
                notes.append("no committed offset" + (": the whole log is lag" if lag else ""))
            else:
                lag = max(0, end - committed)
                if committed > end:
                    notes.append("committed beyond the log end (was the topic recreated?)")
            if end != listed[tp]:
                corrected += 1
                notes.append(f"log end read by a fetch (ListOffsets said {listed[tp]})")
            status.partitions.append(PartitionStatus(tp.topic, tp.partition, committed, end, start, lag,
                                                     "; ".join(notes)))
        if not any(p.committed is not None for p in status.partitions):
            status.notes.append(f"group {group!r} has no committed offsets on these topics")
        if corrected:
            status.notes.append(f"the broker's ListOffsets was short on {corrected} partition(s) (the embedded "
                                "broker, tansu, answers the last batch's base offset): the log ends shown come "
                                "from a fetch")
        return status
    except Exception as exc:  # refused, not Kafka, gone half-way: one line, no traceback
        said = str(exc) if str(exc).startswith(type(exc).__name__) else f"{type(exc).__name__}: {exc}"
        raise BrokerUnreachable(f"Kafka at {bootstrap} did not answer: {said}") from None
    finally:
        for consumer in (member, reader):  # started or not: an unstopped one warns when collected
            try:
                await consumer.stop()
            except Exception:
                pass
        try:
            await admin.close()
        except Exception:
            pass


def format_table(status: GroupStatus) -> str:
    rows = [("TOPIC", "PARTITION", "COMMITTED", "HIGHWATER", "LAG", "NOTE")]
    for p in status.partitions:
        rows.append((p.topic, str(p.partition), "-" if p.committed is None else str(p.committed), str(p.highwater),
                     str(p.lag), p.note))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = [f"group {status.group} on {status.bootstrap}: {status.state}, {len(status.members)} member(s), "
             f"lag {status.lag}"]
    for m in status.members:
        parts = m["partitions"]
        held = ("partitions not reported by the broker" if parts is None
                else ", ".join(f"{t}[{','.join(map(str, ps))}]" for t, ps in sorted(parts.items())) or "nothing")
        who = " ".join(x for x in (m["client_id"], m["host"]) if x)
        lines.append(f"  member {m['member_id']}{f' ({who})' if who else ''}: {held}")
    lines.append("")
    for row in rows:
        lines.append("  ".join(cell.ljust(widths[i]) if i < 5 else cell for i, cell in enumerate(row)).rstrip())
    for topic in status.missing_topics:
        lines.append(f"topic {topic}: does not exist on the broker")
    lines += [f"note: {n}" for n in status.notes]
    return "\n".join(lines)


def run_status(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    import logging

    from only1mcp.commands._config import announce, resolve_config

    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # its connection errors: one clear line instead
    found = resolve_config(args)  # the last `up` here knows its embedded broker's port
    settings = found.settings
    bootstrap = args.bootstrap or settings.worker.bootstrap
    group = args.group or settings.worker.group
    why = " (--bootstrap)" if args.bootstrap else " (KAFKA_BOOTSTRAP)" if args.environ.get("KAFKA_BOOTSTRAP") else ""
    announce("worker status", found.describe(), f"broker {bootstrap}{why}, group {group}")
    try:
        status = asyncio.run(asyncio.wait_for(read_status(bootstrap, group, args.topic, args.timeout),
                                              args.timeout * 3 + 5))
    except (BrokerUnreachable, asyncio.TimeoutError) as exc:
        reason = str(exc) or f"Kafka at {bootstrap} did not answer within {args.timeout * 3 + 5:g} s"
        print(f"only1mcp worker status: {reason}", file=sys.stderr)
        return 1
    if args.format == "json":
        out.write(json.dumps(status.to_json(), indent=2) + "\n")
    else:
        out.write(format_table(status) + "\n")
    if status.missing_topics:
        print(f"only1mcp worker status: no such topic on {bootstrap}: {', '.join(status.missing_topics)}",
              file=sys.stderr)
        return 1
    return 0
