"""imkd_ros.replay: a converted synthetic bag published through rclpy (real DDS, isolated domain).

One tiny synthetic scene (4 keyframes, keyframes only, 176x99 images) is generated in a tmp
folder and converted with imkd_ros.nuscenes_to_bag (MCAP and sqlite3). Checked: per-topic
counts and byte-identical payloads at a subscriber, /tf_static reaching a late subscriber
(transient local), /clock, rate scaling, loop with a backwards clock jump, start offset, the
timing-error statistic, the CLI in its own process, and clear errors for bad bags.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.ros

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("vision_msgs.msg", reason="vision_msgs not built into the venv (tools/build_interfaces.sh)")

from imkd_ros import nuscenes_to_bag as n2b  # noqa: E402
from imkd_ros import topics  # noqa: E402
from imkd_ros.replay import BagError, BagPlayer, bag_keyframes, message_class, open_bag  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CAM_FRONT = topics.TOPICS["CAM_FRONT"]
RADAR_FRONT = topics.TOPICS["RADAR_FRONT"]


# ------------------------------------------------------------------------------------------ data


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from imkd_core.data.synthetic import SyntheticConfig, generate

    root = tmp_path_factory.mktemp("synth")
    generate(root, SyntheticConfig(scenes=1, samples_per_scene=4, seed=3, image_size=(176, 99), sweeps=False,
                                   lidar_azimuth_steps=180))
    return root


@pytest.fixture(scope="module", params=["mcap", "sqlite3"])
def bag(request: pytest.FixtureRequest, dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A converted bag and its content as read back with rosbags: [(topic, stamp, raw bytes)]."""
    nusc = n2b.load_nuscenes(dataset, "v1.0-synth")
    out = tmp_path_factory.mktemp(f"bag_{request.param}")
    opts = n2b.ConvertOptions(storage=request.param, lidar=request.param == "mcap", progress=False, fsync=False)
    stats = n2b.convert_scene(nusc, nusc.scene[0]["name"], out, opts)
    assert stats.status == "ok"
    reader = open_bag(stats.bag)
    try:
        msgs = [(c.topic, int(s), bytes(raw)) for c, s, raw in reader.messages()]
        types = {c.topic: c.msgtype for c in reader.connections}
    finally:
        reader.close()
    return {"path": stats.bag, "msgs": msgs, "types": types, "storage": request.param}


# ------------------------------------------------------------------------------------------ harness


class Graph:
    """A player node and a subscriber node in one rclpy context; the subscriber spins in a thread."""

    def __init__(self, context: Any) -> None:
        from rclpy.executors import SingleThreadedExecutor

        self.context = context
        self.player_node = rclpy.create_node("replay_test_player", context=context)
        self.sub_node = rclpy.create_node("replay_test_sub", context=context)
        self.received: dict[str, list[tuple[float, bytes]]] = defaultdict(list)
        self.lock = threading.Lock()
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.sub_node)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        while not self._stop.is_set() and self.context.ok():
            self.executor.spin_once(timeout_sec=0.05)

    def subscribe(self, topic: str, msgtype: str, qos: Any, raw: bool = True) -> Any:
        def cb(msg: Any) -> None:
            with self.lock:
                self.received[topic].append((time.monotonic(), msg))

        return self.sub_node.create_subscription(message_class(msgtype), topic, cb, qos, raw=raw)

    def count(self, topic: str) -> int:
        with self.lock:
            return len(self.received[topic])

    def wait_count(self, topic: str, n: int, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while self.count(topic) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.count(topic) >= n

    def close(self) -> None:
        self._stop.set()
        self.thread.join(timeout=2.0)
        self.executor.shutdown(timeout_sec=1.0)
        self.sub_node.destroy_node()
        self.player_node.destroy_node()


@pytest.fixture
def graph(ros_context: Any) -> Any:
    g = Graph(ros_context)
    try:
        yield g
    finally:
        g.close()


def _reliable(depth: int = 1000) -> Any:
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=ReliabilityPolicy.RELIABLE)


def _per_topic(msgs: list[tuple[str, int, bytes]]) -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = defaultdict(list)
    for topic, _, raw in msgs:
        out[topic].append(raw)
    return out


# ------------------------------------------------------------------------------------------ tests


def test_every_topic_arrives_complete_and_byte_identical(bag: dict[str, Any], graph: Graph) -> None:
    expected = _per_topic(bag["msgs"])
    for topic, typ in bag["types"].items():
        graph.subscribe(topic, typ, _reliable())
    player = BagPlayer(bag["path"], graph.player_node, rate=4.0)
    try:
        assert set(player.topics) == set(bag["types"])
        assert player.wait_for_subscribers(player.topics, timeout=10.0) == []
        time.sleep(0.3)
        stats = player.run()
        for topic, raws in expected.items():
            assert graph.wait_count(topic, len(raws)), f"{topic}: {graph.count(topic)}/{len(raws)} received"
    finally:
        player.close()
    assert stats.published == {t: len(r) for t, r in expected.items()}
    assert stats.total == len(bag["msgs"]) and stats.passes == 1
    for topic, raws in expected.items():
        got = [raw for _, raw in graph.received[topic]]
        assert len(got) == len(raws), topic
        assert got == raws, f"{topic}: payload differs from the bag's bytes"
    # the payloads also deserialise as the right rclpy messages
    from rclpy.serialization import deserialize_message

    img = deserialize_message(graph.received[CAM_FRONT][0][1], message_class(bag["types"][CAM_FRONT]))
    assert img.format == "jpeg" and bytes(img.data[:2]) == b"\xff\xd8"


def test_tf_static_reaches_a_late_subscriber(bag: dict[str, Any], graph: Graph) -> None:
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    player = BagPlayer(bag["path"], graph.player_node, rate=8.0, topics=["/tf_static", "/tf"])
    try:
        qos = player.topics["/tf_static"].qos
        assert qos.durability == DurabilityPolicy.TRANSIENT_LOCAL and qos.reliability == ReliabilityPolicy.RELIABLE
        assert player.topics["/tf"].qos.durability == DurabilityPolicy.VOLATILE
        player.run()  # nobody listens yet
        late = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                          durability=DurabilityPolicy.TRANSIENT_LOCAL)
        graph.subscribe("/tf_static", bag["types"]["/tf_static"], late, raw=False)
        assert graph.wait_count("/tf_static", 1, timeout=5.0), "a late transient-local subscriber got no /tf_static"
    finally:
        player.close()
    msg = graph.received["/tf_static"][0][1]
    children = {t.child_frame_id for t in msg.transforms}
    assert {"cam_front", "radar_front", "odom"} <= children


def test_rate_scaling_clock_and_timing_statistic(bag: dict[str, Any], graph: Graph) -> None:
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    graph.subscribe(CAM_FRONT, bag["types"][CAM_FRONT], _reliable())
    graph.subscribe("/clock", "rosgraph_msgs/msg/Clock", QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE),
                    raw=False)
    stamps = [s for t, s, _ in bag["msgs"] if t == CAM_FRONT]
    walls = {}
    for rate in (2.0, 4.0):
        before = graph.count(CAM_FRONT)
        player = BagPlayer(bag["path"], graph.player_node, rate=rate, clock=True, clock_hz=50.0,
                           topics=[CAM_FRONT, "/tf"])
        try:
            assert player.wait_for_subscribers([CAM_FRONT], timeout=10.0) == []
            time.sleep(0.3)
            stats = player.run()
            assert graph.wait_count(CAM_FRONT, before + len(stamps))
        finally:
            player.close()
        span = (max(s for t, s, _ in bag["msgs"] if t in (CAM_FRONT, "/tf")) -
                min(s for t, s, _ in bag["msgs"] if t in (CAM_FRONT, "/tf"))) / 1e9
        walls[rate] = stats.wall_s
        assert stats.wall_s == pytest.approx(span / rate, abs=0.15 + 0.1 * span / rate), (rate, stats.wall_s, span)
        arrivals = [t for t, _ in graph.received[CAM_FRONT][before:]]
        gaps = np.diff(arrivals)
        expected = np.diff(stamps) / 1e9 / rate
        assert np.abs(gaps - expected).max() < 0.1, (gaps, expected)
        timing = stats.timing_ms()
        assert timing["count"] == stats.total
        assert 0 <= timing["p50"] <= timing["p95"] <= timing["max"]
        assert timing["p50"] < 20.0, timing  # generous: 2 shared CPU cores
        assert stats.clock_messages >= stats.total
    assert walls[2.0] > walls[4.0]
    clock = [m.clock.sec * 10**9 + m.clock.nanosec for _, m in graph.received["/clock"]]
    assert clock, "no /clock received"
    assert min(clock) >= min(s for _, s, _ in bag["msgs"]) - 1
    assert max(clock) <= max(s for _, s, _ in bag["msgs"]) + 1


def test_loop_jumps_clock_back_and_stop(bag: dict[str, Any], graph: Graph) -> None:
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    graph.subscribe("/clock", "rosgraph_msgs/msg/Clock", QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE),
                    raw=False)
    graph.subscribe(CAM_FRONT, bag["types"][CAM_FRONT], _reliable())
    n_front = sum(1 for t, _, _ in bag["msgs"] if t == CAM_FRONT)
    seen: list[int] = []
    player: BagPlayer | None = None

    def hook(topic: str, stamp: int) -> bool:
        if topic == CAM_FRONT:
            seen.append(stamp)
            if len(seen) > 2 * n_front:  # third pass begins: stop
                player.stop()
                return False
        return True

    player = BagPlayer(bag["path"], graph.player_node, rate=8.0, loop=True, clock=True,
                       topics=[CAM_FRONT, "/tf"], before_publish=hook)
    try:
        assert player.wait_for_subscribers([CAM_FRONT], timeout=10.0) == []
        time.sleep(0.3)
        stats = player.run()
        assert graph.wait_count(CAM_FRONT, 2 * n_front)
        time.sleep(0.2)
    finally:
        player.close()
    assert stats.passes == 2 and stats.published[CAM_FRONT] == 2 * n_front
    assert seen[n_front] == seen[0]  # the second pass starts over
    clock = np.array([m.clock.sec * 10**9 + m.clock.nanosec for _, m in graph.received["/clock"]])
    assert (np.diff(clock) < -10**9).sum() >= 1, "no backwards /clock jump at the loop"


def test_start_offset_keeps_tf_static(bag: dict[str, Any], graph: Graph) -> None:
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    graph.subscribe("/tf_static", bag["types"]["/tf_static"], latched)
    graph.subscribe(CAM_FRONT, bag["types"][CAM_FRONT], _reliable())
    stamps = sorted(s for t, s, _ in bag["msgs"] if t == CAM_FRONT)
    start = min(s for _, s, _ in bag["msgs"])
    offset = (stamps[1] - start) / 1e9 - 0.01  # just before the second keyframe's image
    player = BagPlayer(bag["path"], graph.player_node, rate=8.0, start_offset=offset,
                       topics=["/tf_static", CAM_FRONT])
    try:
        assert player.wait_for_subscribers([CAM_FRONT], timeout=10.0) == []
        time.sleep(0.3)
        stats = player.run()
        assert graph.wait_count(CAM_FRONT, len(stamps) - 1) and graph.wait_count("/tf_static", 1)
    finally:
        player.close()
    assert stats.published == {CAM_FRONT: len(stamps) - 1, "/tf_static": 1}


def test_keyframes_and_clear_errors(bag: dict[str, Any], tmp_path: Path, graph: Graph) -> None:
    reader = open_bag(bag["path"])
    try:
        frames = bag_keyframes(reader)
    finally:
        reader.close()
    assert sorted(frames) == sorted(s for t, s, _ in bag["msgs"] if t == topics.TOPICS["gt_detections"])
    with pytest.raises(BagError, match="bag not found"):
        open_bag(tmp_path / "nope")
    (tmp_path / "half.partial").mkdir()
    with pytest.raises(BagError, match="did not finish"):
        open_bag(tmp_path / "half")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BagError, match="no metadata.yaml"):
        open_bag(tmp_path / "empty")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "metadata.yaml").write_text("rosbag2_bagfile_information: {version: 8, storage_identifier: [}\n")
    with pytest.raises(BagError, match="cannot open bag"):
        open_bag(broken)
    with pytest.raises(ValueError, match="rate"):
        BagPlayer(bag["path"], graph.player_node, rate=0.0)
    with pytest.raises(ValueError, match="not in the bag"):
        BagPlayer(bag["path"], graph.player_node, topics=["/nope"])


def test_cli_in_its_own_process(bag: dict[str, Any], graph: Graph, tmp_path: Path) -> None:
    graph.subscribe(RADAR_FRONT, bag["types"][RADAR_FRONT], _reliable())
    n = sum(1 for t, _, _ in bag["msgs"] if t == RADAR_FRONT)
    proc = subprocess.run([sys.executable, "-m", "imkd_ros.replay", str(bag["path"]), "--rate", "4", "--clock",
                           "--wait-for", RADAR_FRONT, "--wait-timeout", "20", "--delay", "0.3"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["published"][RADAR_FRONT] == n and summary["passes"] == 1
    assert summary["publish_error_ms"]["count"] == summary["messages"]
    assert graph.wait_count(RADAR_FRONT, n), f"{graph.count(RADAR_FRONT)}/{n} radar sweeps received"
    bad = subprocess.run([sys.executable, "-m", "imkd_ros.replay", str(tmp_path / "missing_bag")],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "bag not found" in bad.stderr
