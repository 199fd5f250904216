"""Bag replay through rclpy, for machines without `ros2 bag play`.

    imkd-replay BAG [--rate R] [--loop] [--clock] [--clock-hz HZ] [--topics T ...] [--exclude T ...]
                [--start-offset S] [--delay S] [--wait-for [TOPIC ...]] [--node-name NAME]

Publishes a rosbag2 (MCAP or sqlite3; read with `rosbags`, no rosbag2 install needed) with the
original timing scaled by `rate`. Messages go out as the bag's raw CDR bytes (rclpy's
`Publisher.publish(bytes)`), so nothing is deserialised; the rclpy message class of each topic is
only needed to create its publisher. It is taken only for a well-formed ROS 2 type name whose
package is an installed rosidl interface package (located without running it: a bag naming
`this/msg/Zen` does not `import this`) and whose fields equal the bag's own definition of the
type; any other topic is skipped with a warning, or is an error when asked for with --topics.

QoS, per topic, from the bag's `offered_qos_profiles` metadata (the rule of rosbag2's player):
reliable only if every recorded publisher offered reliable, transient local only if every one
offered it (so `/tf_static`, written by the converter as reliable + transient local depth 1,
reaches late subscribers), keep-last with the largest offered depth. A topic without recorded
profiles (the converter's sensor topics) gets reliable + volatile, keep last 100: a reliable
publisher matches reliable and best-effort (SensorDataQoS) subscribers alike.

Time: message k is published at wall time t0 + (stamp_k - stamp_0) / rate (monotonic clock;
coarse sleep, then a short spin for the last 0.2 ms). `--clock` also publishes
rosgraph_msgs/Clock on /clock (at HZ, default 100, and right before every message) with the bag
time, for nodes running with use_sim_time (rclpy's /clock subscriber is best effort depth 1; the
player offers reliable, which matches it). `--loop` starts again at the start offset after the
last message: the bag time (and /clock) then jumps backwards, which the detector node's
assembler treats as a reset. Messages of transient-local topics stamped before the start
offset are published once at the start of every pass (like a latched topic), so `/tf_static`
is not lost with --start-offset.

Accuracy: every publish records actual - scheduled wall time (`PlaybackStats.timing_ms()`:
p50/p95/p99/max, in ms); the CLI prints it and a final JSON line. Time spent in a
`before_publish` hook (the lock-step mode of imkd_ros.replay_eval) pauses the schedule and is
not counted as error.

Python API: `BagPlayer(bag_path, node, rate, loop, clock, topics).run()`, `.stop()`.
"""

from __future__ import annotations

import argparse
import heapq
import importlib
import importlib.util
import json
import math
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "BagError",
    "BagPlayer",
    "BagTopic",
    "PlaybackStats",
    "bag_custom_data",
    "bag_keyframes",
    "bag_topics",
    "main",
    "message_class",
    "open_bag",
    "qos_from_offered",
]

_NS = 1_000_000_000
DEFAULT_DEPTH = 100        # keep-last depth of topics recorded without a QoS profile
CLOCK_TOPIC = "/clock"
KEYFRAMES_KEY = "imkd.keyframes"  # custom_data written by imkd_ros.nuscenes_to_bag
SOURCE_KEY = "imkd.source"


class BagError(RuntimeError):
    """A bag that cannot be played: not found, not a rosbag2, unreadable or corrupt."""


# ----------------------------------------------------------------------------------------------
# Reading the bag (rosbags)
# ----------------------------------------------------------------------------------------------


def open_bag(path: str | Path) -> Any:
    """An opened `rosbags.rosbag2.Reader` on a bag directory (or a .mcap/.db3 file).

    Raises BagError with the path and the reason when the bag is missing, incomplete (a
    converter's `.partial` folder), not a rosbag2 or unreadable.
    """
    from rosbags.rosbag2 import Reader
    from rosbags.rosbag2.errors import ReaderError

    p = Path(path)
    if not p.exists():
        hint = ""
        if Path(f"{p}.partial").exists():
            hint = f" ({p}.partial exists: that conversion did not finish)"
        raise BagError(f"bag not found: {p}{hint}")
    if p.is_dir() and not (p / "metadata.yaml").is_file():
        raise BagError(f"{p} is not a rosbag2 directory (no metadata.yaml)")
    try:
        reader = Reader(p)
        reader.open()
    except (ReaderError, OSError, ValueError, KeyError, TypeError) as exc:
        raise BagError(f"cannot open bag {p}: {type(exc).__name__}: {exc}") from exc
    return reader


def bag_custom_data(reader: Any) -> dict[str, str]:
    """The bag's metadata custom_data (empty when the bag has none)."""
    meta = getattr(reader.storage, "metadata", None)
    return dict(getattr(meta, "custom", None) or {})


def bag_keyframes(reader: Any) -> dict[int, str]:
    """{CAM_FRONT stamp ns: sample token} of a bag written by imkd_ros.nuscenes_to_bag ({} if absent)."""
    raw = bag_custom_data(reader).get(KEYFRAMES_KEY)
    if not raw:
        return {}
    try:
        return {int(k): str(v) for k, v in json.loads(raw).items()}
    except (ValueError, AttributeError) as exc:
        raise BagError(f"custom_data {KEYFRAMES_KEY!r} of the bag is not a JSON map of stamps: {exc}") from exc


_MSGTYPE = re.compile(r"([a-z][a-z0-9_]*)/msg/([A-Z][A-Za-z0-9]*)")


def _module_name(name: str) -> str:
    """rosidl's file name of a message: Detection3DArray -> detection3_d_array."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()


def _definition_fields(msgtype: str, msgdef: Any) -> list[str] | None:
    """Field names of `msgtype` in the bag's own definition (None: the bag stores none)."""
    data = getattr(msgdef, "data", msgdef)
    if not data:
        return None
    fmt = getattr(getattr(msgdef, "format", None), "name", "MSG")
    try:
        from rosbags.typesys import get_types_from_idl, get_types_from_msg

        types = get_types_from_idl(data) if fmt == "IDL" else get_types_from_msg(data, msgtype)
        return [f[0] for f in types[msgtype][1]]
    except Exception as exc:  # noqa: BLE001 - any parser error: the definition is unusable
        raise ValueError(f"the bag's definition of {msgtype} does not parse ({type(exc).__name__}: {exc})") from exc


def message_class(msgtype: str, msgdef: Any = None) -> type:
    """rclpy message class of 'pkg/msg/Name', found without importing anything the bag names
    that is not a generated ROS message: the name must be a ROS 2 message type, `pkg` must be
    an installed package holding rosidl's `msg/_<name>.py` (located with find_spec, which runs
    no code), and the class's fields must equal those of the bag's own definition `msgdef`
    (a rosbags MessageDefinition or its text) when the bag stores one.

    ValueError for a name or definition that does not fit, ImportError when no such message is
    installed (the caller skips that topic)."""
    m = _MSGTYPE.fullmatch(str(msgtype))
    if m is None:
        raise ValueError(f"{msgtype!r} is not a ROS 2 message type name (package/msg/Name)")
    pkg, name = m.groups()
    fields = _definition_fields(msgtype, msgdef)
    spec = importlib.util.find_spec(pkg)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not any((Path(loc) / "msg" / f"_{_module_name(name)}.py").is_file() for loc in locations):
        raise ImportError(f"no ROS interface package {pkg!r} with message {name} is installed")
    cls = getattr(importlib.import_module(f"{pkg}.msg"), name, None)
    if cls is None or not hasattr(cls, "get_fields_and_field_types"):
        raise ImportError(f"{pkg}.msg.{name} is not a generated ROS message class")
    if fields is not None and list(cls.get_fields_and_field_types()) != fields:
        raise ValueError(f"the bag's definition of {msgtype} (fields {fields}) differs from the installed one "
                         f"({list(cls.get_fields_and_field_types())})")
    return cls


def qos_from_offered(offered: Sequence[Any], default_depth: int = DEFAULT_DEPTH) -> Any:
    """rclpy QoSProfile for a topic from the bag's offered profiles (rosbags `Qos` tuples).

    rosbag2's player rule: reliable / transient local only if every offered profile says so;
    keep last with the largest offered depth (at least 1). No profiles: reliable, volatile,
    keep last `default_depth`.
    """
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    if not offered:
        return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=default_depth,
                          reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)

    def _name(v: Any) -> str:
        return str(getattr(v, "name", v)).lower()

    reliable = all(_name(q.reliability) in ("reliable", "system_default") for q in offered)
    latched = all(_name(q.durability) == "transient_local" for q in offered)
    depth = max([int(q.depth) for q in offered if _name(q.history) != "keep_all"] + [1])
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)


@dataclass
class BagTopic:
    """One topic of a bag: its type, message count, connections and the QoS the player offers."""

    topic: str
    msgtype: str
    count: int
    connections: list[Any]
    qos: Any

    @property
    def latched(self) -> bool:
        from rclpy.qos import DurabilityPolicy

        return self.qos.durability == DurabilityPolicy.TRANSIENT_LOCAL


def bag_topics(reader: Any, default_depth: int = DEFAULT_DEPTH) -> dict[str, BagTopic]:
    """{topic: BagTopic} of an open reader (one type per topic, else BagError)."""
    by_topic: dict[str, list[Any]] = {}
    for c in reader.connections:
        by_topic.setdefault(c.topic, []).append(c)
    out: dict[str, BagTopic] = {}
    for topic, conns in by_topic.items():
        types = {c.msgtype for c in conns}
        if len(types) != 1:
            raise BagError(f"topic {topic} has several types in the bag: {sorted(types)}")
        offered = [q for c in conns for q in (getattr(c.ext, "offered_qos_profiles", None) or [])]
        out[topic] = BagTopic(topic, types.pop(), sum(c.msgcount for c in conns), conns,
                              qos_from_offered(offered, default_depth))
    return out


# ----------------------------------------------------------------------------------------------
# Statistics
# ----------------------------------------------------------------------------------------------


@dataclass
class PlaybackStats:
    """What a playback did: messages per topic, passes, and publish-time errors (ns)."""

    published: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)  # refused by before_publish
    passes: int = 0            # passes that reached the end of the bag
    clock_messages: int = 0
    wall_s: float = 0.0
    paused_s: float = 0.0      # time spent in before_publish (excluded from the schedule)
    bag_span_s: float = 0.0    # bag time covered (all passes)
    errors_ns: list[int] = field(default_factory=list)  # actual - scheduled, per published message

    @property
    def total(self) -> int:
        return sum(self.published.values())

    def timing_ms(self) -> dict[str, float]:
        """Publish-time error actual - scheduled in ms: p50, p95, p99, max, mean, and count."""
        if not self.errors_ns:
            return {"count": 0, "p50": math.nan, "p95": math.nan, "p99": math.nan, "max": math.nan,
                    "mean": math.nan}
        e = np.asarray(self.errors_ns, dtype=np.float64) / 1e6
        return {"count": int(e.size), "p50": float(np.percentile(e, 50)), "p95": float(np.percentile(e, 95)),
                "p99": float(np.percentile(e, 99)), "max": float(e.max()), "mean": float(e.mean())}

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary (timing rounded to microseconds)."""
        timing = {k: (round(v, 3) if isinstance(v, float) and math.isfinite(v) else (v if isinstance(v, int) else None))
                  for k, v in self.timing_ms().items()}
        return {"messages": self.total, "passes": self.passes, "clock_messages": self.clock_messages,
                "wall_s": round(self.wall_s, 3), "paused_s": round(self.paused_s, 3),
                "bag_span_s": round(self.bag_span_s, 3), "publish_error_ms": timing,
                "published": dict(sorted(self.published.items())), "skipped": dict(sorted(self.skipped.items()))}


# ----------------------------------------------------------------------------------------------
# The player
# ----------------------------------------------------------------------------------------------

BeforePublish = Callable[[str, int], bool]


class BagPlayer:
    """Publish a rosbag2 through an rclpy node with the bag's timing scaled by `rate`.

    bag_path: bag directory (or .mcap/.db3 file). node: the rclpy Node that owns the publishers
    (spinning it is not required). topics: publish only these (None: every topic whose message
    type is installed); exclude: topics left out. start_offset: seconds after the bag start.
    clock: publish /clock (bag time) at clock_hz and before every message. before_publish(topic,
    stamp) -> bool is called before each message: returning False skips it; time spent inside is
    a pause of the schedule (lock-step replay). defer {(topic, stamp): bag time}: publish that
    message when the bag time reaches the given time instead (after every message stamped
    before it). `run()` blocks until the end (or forever with loop, until `stop()`), and
    returns PlaybackStats.
    """

    def __init__(self, bag_path: str | Path, node: Any, rate: float = 1.0, loop: bool = False,
                 clock: bool = False, topics: Iterable[str] | None = None, *, exclude: Iterable[str] = (),
                 start_offset: float = 0.0, clock_hz: float = 100.0, before_publish: BeforePublish | None = None,
                 defer: Mapping[tuple[str, int], int] | None = None, default_depth: int = DEFAULT_DEPTH,
                 spin_s: float = 2e-4) -> None:
        if not (rate > 0 and math.isfinite(rate)):
            raise ValueError(f"rate must be a finite number > 0, got {rate}")
        if start_offset < 0:
            raise ValueError(f"start_offset must be >= 0 s, got {start_offset}")
        if clock and not clock_hz > 0:
            raise ValueError(f"clock_hz must be > 0, got {clock_hz}")
        self.bag_path = Path(bag_path)
        self.node = node
        self.rate = float(rate)
        self.loop = bool(loop)
        self.clock = bool(clock)
        self.clock_period_ns = int(_NS / clock_hz) if clock else 0
        self.before_publish = before_publish
        self.defer = dict(defer or {})
        self.spin_ns = int(spin_s * _NS)
        self.stats = PlaybackStats()
        self._stop = threading.Event()
        self._reader = open_bag(self.bag_path)
        try:
            self.topics = self._select(bag_topics(self._reader, default_depth), topics, set(exclude))
            self.keyframes = bag_keyframes(self._reader)
            self.custom_data = bag_custom_data(self._reader)
            self.start_ns = int(self._reader.start_time)
            self.end_ns = int(self._reader.end_time)
        except BaseException:
            self._reader.close()
            raise
        self.offset_ns = int(round(start_offset * _NS))
        if self.start_ns + self.offset_ns >= self.end_ns and self._reader.message_count:
            self._reader.close()
            raise ValueError(f"start_offset {start_offset} s is past the end of the bag "
                             f"({(self.end_ns - self.start_ns) / _NS:.3f} s long)")
        self._publishers: dict[str, Any] = {}
        for name, t in self.topics.items():
            self._publishers[name] = node.create_publisher(self._classes[name], name, t.qos)
        self._clock_pub = None
        if self.clock:
            from rclpy.qos import QoSProfile, ReliabilityPolicy
            from rosgraph_msgs.msg import Clock

            self._clock_cls = Clock
            self._clock_pub = node.create_publisher(Clock, CLOCK_TOPIC,
                                                    QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
        self._next_clock_ns = 0
        self._anchor_wall = 0
        self._anchor_bag = 0

    # ------------------------------------------------------------------ set-up helpers
    def _select(self, available: dict[str, BagTopic], wanted: Iterable[str] | None,
                exclude: set[str]) -> dict[str, BagTopic]:
        if wanted is not None:
            wanted = list(dict.fromkeys(wanted))
            unknown = [t for t in wanted if t not in available]
            if unknown:
                raise ValueError(f"topics not in the bag: {unknown}; the bag has {sorted(available)}")
        chosen: dict[str, BagTopic] = {}
        self._classes: dict[str, type] = {}
        for name, t in available.items():
            if name in exclude or (wanted is not None and name not in wanted):
                continue
            try:
                self._classes[name] = message_class(t.msgtype, t.connections[0].msgdef)
            except (ImportError, ValueError) as exc:
                if wanted is not None:
                    raise BagError(f"cannot play {name} ({t.msgtype}): {exc}") from exc
                _warn(f"skipping {name} ({t.msgtype}): {exc}")
                continue
            chosen[name] = t
        return chosen

    @property
    def publishers(self) -> dict[str, Any]:
        """{topic: rclpy Publisher} (e.g. to wait for subscribers before run())."""
        return dict(self._publishers)

    def wait_for_subscribers(self, topics: Iterable[str], timeout: float = 10.0, minimum: int = 1) -> list[str]:
        """Block until each topic has `minimum` matched subscriptions; return those still missing."""
        deadline = time.monotonic() + timeout
        topics = [t for t in topics if t in self._publishers]
        while True:
            missing = [t for t in topics if self._publishers[t].get_subscription_count() < minimum]
            if not missing or time.monotonic() > deadline or self._stop.is_set():
                return missing
            time.sleep(0.02)

    # ------------------------------------------------------------------ control
    def stop(self) -> None:
        """Ask run() to return after the message in progress (thread- and signal-safe)."""
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def close(self) -> None:
        """Close the bag and destroy the publishers."""
        for pub in self._publishers.values():
            self.node.destroy_publisher(pub)
        self._publishers.clear()
        if self._clock_pub is not None:
            self.node.destroy_publisher(self._clock_pub)
            self._clock_pub = None
        if self._reader.is_open:
            self._reader.close()

    def __enter__(self) -> BagPlayer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ time
    def _publish_clock(self, bag_ns: int) -> None:
        if self._clock_pub is None:
            return
        sec, nsec = divmod(int(bag_ns), _NS)
        msg = self._clock_cls()
        msg.clock.sec, msg.clock.nanosec = sec, nsec
        self._clock_pub.publish(msg)
        self.stats.clock_messages += 1

    def _sleep_until(self, target_ns: int, target_bag: int) -> None:
        """Sleep (then spin briefly) until monotonic target_ns, ticking /clock meanwhile (never
        past target_bag, the stamp of the message waited for, so /clock stays monotonic)."""
        while not self._stop.is_set():
            now = time.monotonic_ns()
            if self._clock_pub is not None and now >= self._next_clock_ns:
                self._publish_clock(min(target_bag, self._anchor_bag + int((now - self._anchor_wall) * self.rate)))
                self._next_clock_ns = now + self.clock_period_ns
            remaining = target_ns - now
            if remaining <= 0:
                return
            if remaining > self.spin_ns:
                wake = target_ns - self.spin_ns
                if self._clock_pub is not None:
                    wake = min(wake, self._next_clock_ns)
                time.sleep(min(max(wake - now, 0), 50_000_000) / _NS)
            else:
                time.sleep(0)

    # ------------------------------------------------------------------ playback
    def _latched_before(self, start: int) -> Iterator[tuple[str, int, bytes]]:
        conns = [c for t in self.topics.values() if t.latched for c in t.connections]
        if not conns or start <= self.start_ns:
            return iter(())
        return ((c.topic, s, raw) for c, s, raw in self._reader.messages(connections=conns, stop=start))

    def _ordered(self, messages: Iterable[tuple[Any, int, Any]]) -> Iterator[tuple[str, int, int, Any]]:
        """(topic, stamp, publish-at bag time, raw) in publishing order, applying `defer`."""
        held: list[tuple[int, int, str, int, Any]] = []  # heap of (at, seq, topic, stamp, raw)
        seq = 0
        for conn, stamp, raw in messages:
            while held and held[0][0] < stamp:
                at, _, topic, st, r = heapq.heappop(held)
                yield topic, st, at, r
            at = self.defer.get((conn.topic, stamp)) if self.defer else None
            if at is not None and at > stamp:
                heapq.heappush(held, (int(at), seq, conn.topic, stamp, raw))
                seq += 1
                continue
            yield conn.topic, stamp, stamp, raw
        while held:
            at, _, topic, st, r = heapq.heappop(held)
            yield topic, st, at, r

    def _pass(self) -> bool:
        """One pass over the bag; True when it reached the end (not stopped)."""
        start = self.start_ns + self.offset_ns
        conns = [c for t in self.topics.values() for c in t.connections]
        self._anchor_wall = time.monotonic_ns()
        self._anchor_bag = start
        self._next_clock_ns = 0
        for topic, stamp, raw in self._latched_before(start):
            self._emit(topic, max(stamp, start), raw, scheduled=None)
        last = start
        complete = True
        for topic, stamp, at, raw in self._ordered(self._reader.messages(connections=conns, start=start)):
            if self._stop.is_set():
                complete = False
                break
            target = self._anchor_wall + int((at - self._anchor_bag) / self.rate)
            self._sleep_until(target, at)
            if self._stop.is_set():
                complete = False
                break
            self._emit(topic, stamp, raw, scheduled=target)
            last = max(last, at)
        self.stats.bag_span_s += (last - start) / _NS
        return complete and not self._stop.is_set()

    def _emit(self, topic: str, stamp: int, raw: bytes | memoryview, scheduled: int | None) -> None:
        if self.before_publish is not None:
            t0 = time.monotonic_ns()
            ok = self.before_publish(topic, stamp)
            paused = time.monotonic_ns() - t0
            if paused > 0:  # the hook paused the schedule: shift it
                self._anchor_wall += paused
                self.stats.paused_s += paused / _NS
                if scheduled is not None:
                    scheduled += paused
            if not ok:
                self.stats.skipped[topic] = self.stats.skipped.get(topic, 0) + 1
                return
        if self._clock_pub is not None:
            self._publish_clock(stamp)
        now = time.monotonic_ns()
        self._publishers[topic].publish(raw if isinstance(raw, bytes) else bytes(raw))
        if scheduled is not None:
            self.stats.errors_ns.append(now - scheduled)
        self.stats.published[topic] = self.stats.published.get(topic, 0) + 1

    def run(self) -> PlaybackStats:
        """Play the bag (every pass, with loop) and return the statistics."""
        t0 = time.monotonic()
        try:
            while not self._stop.is_set():
                if self._pass():
                    self.stats.passes += 1
                if not self.loop:
                    break
        finally:
            self.stats.wall_s = time.monotonic() - t0
        return self.stats


def _warn(text: str) -> None:
    print(f"[imkd-replay] {text}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="imkd-replay", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bag", help="rosbag2 directory (MCAP or sqlite3), or a .mcap/.db3 file")
    p.add_argument("--rate", type=float, default=1.0, help="playback speed factor (> 0)")
    p.add_argument("--loop", action="store_true", help="start again at the end (bag time jumps back)")
    p.add_argument("--clock", action="store_true",
                   help="publish /clock with the bag time (at --clock-hz and before every message)")
    p.add_argument("--clock-hz", type=float, default=100.0, help="/clock rate between messages")
    p.add_argument("--topics", nargs="+", default=None, help="publish only these topics")
    p.add_argument("--exclude", nargs="+", default=[], help="topics not to publish")
    p.add_argument("--start-offset", type=float, default=0.0, metavar="S", help="start S seconds into the bag")
    p.add_argument("--delay", type=float, default=0.5, metavar="S",
                   help="wait S seconds after creating the publishers (discovery) before playing")
    p.add_argument("--wait-for", nargs="*", default=None, metavar="TOPIC",
                   help="before playing, wait (up to --wait-timeout) until these topics have a subscriber")
    p.add_argument("--wait-timeout", type=float, default=30.0)
    p.add_argument("--node-name", default="imkd_replay")
    p.add_argument("--quiet", action="store_true", help="only the final JSON line")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: 0 on success, 1 on a bag/argument error, 130 when interrupted."""
    args = build_parser().parse_args(argv)
    import rclpy
    from rclpy.context import Context
    from rclpy.signals import SignalHandlerOptions

    context = Context()
    rclpy.init(args=None, context=context, signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node(args.node_name, context=context)
    player: BagPlayer | None = None
    interrupted = False
    try:
        try:
            player = BagPlayer(args.bag, node, rate=args.rate, loop=args.loop, clock=args.clock,
                               topics=args.topics, exclude=args.exclude, start_offset=args.start_offset,
                               clock_hz=args.clock_hz)
        except (BagError, ValueError) as exc:
            print(f"[imkd-replay] error: {exc}", file=sys.stderr)
            return 1

        def _on_signal(signum: int, frame: Any) -> None:
            nonlocal interrupted
            interrupted = True
            player.stop()

        signal.signal(signal.SIGINT, _on_signal)
        signal.signal(signal.SIGTERM, _on_signal)
        if not args.quiet:
            span = (player.end_ns - player.start_ns) / _NS
            print(f"[imkd-replay] {args.bag}: {len(player.topics)} topics, {span:.2f} s, rate {args.rate}"
                  + (", loop" if args.loop else "") + (", /clock" if player.clock else ""), file=sys.stderr)
            for name, t in sorted(player.topics.items()):
                print(f"  {name:<58} {t.msgtype:<36} {t.count:>6}  {_qos_text(t.qos)}", file=sys.stderr)
        if args.wait_for is not None:
            missing = player.wait_for_subscribers(args.wait_for or list(player.topics), args.wait_timeout)
            if missing and not args.quiet:
                print(f"[imkd-replay] no subscriber after {args.wait_timeout} s on: {missing}", file=sys.stderr)
        if args.delay > 0:
            time.sleep(args.delay)
        stats = player.run()
        summary = {"bag": str(args.bag), "rate": args.rate, "interrupted": interrupted, **stats.summary()}
        if not args.quiet:
            t = stats.timing_ms()
            print(f"[imkd-replay] {stats.total} messages in {stats.wall_s:.2f} s, {stats.passes} pass(es); "
                  f"publish error p50 {t['p50']:.3f} ms, p95 {t['p95']:.3f} ms, max {t['max']:.3f} ms",
                  file=sys.stderr)
        print(json.dumps(summary), flush=True)
        return 130 if interrupted else 0
    finally:
        if player is not None:
            player.close()
        node.destroy_node()
        rclpy.try_shutdown(context=context)


def _qos_text(qos: Any) -> str:
    return (f"{qos.reliability.name.lower()}/{qos.durability.name.lower()}/"
            f"{qos.history.name.lower()}:{qos.depth}")


if __name__ == "__main__":
    sys.exit(main())
