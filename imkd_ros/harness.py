"""Drive the detector node over real DDS: start it, feed it frames or a bag, collect its output.

The one harness of the closed-loop evaluation (imkd_ros.replay_eval), the node tests and the node
benchmarks (train/bench_node.py, train/bench_live.py), so all of them start the node, publish to
it and read its results the same way.

- `NodeProcess`: `imkd-detector --ros-args --params-file config/detector.yaml --params-file <overrides>`
  as a subprocess, its output in a log file.
- `NodeListener`: what the node publishes, collected on a caller's rclpy node.
- `DetectorClient`: an rclpy node in this process (own context, background executor) that
  publishes frames and static TF, collects detections, timing and diagnostics, sets parameters.
- `FramePlayer`: publishes frames (imkd_ros.raw_frames) one at a time and waits for each frame's
  detections, measuring last message published -> detections received.
- `compare_detections`: the one detection-by-detection equality check (node vs Predictor).
- `assemble_bag`: the node's FrameAssembler fed a bag in bag order, without DDS or threads.

Frames complete by evidence, not by timeouts (deterministic whatever the load): the default
camera_offsets make every camera final on its own image, and with only the keyframe radar sweeps
published a `radar_tolerance` of 10 ms makes each keyframe sweep the closing one. Sensor topics
are reliable (`sensor_reliability`): a burst of six full-size JPEGs to best-effort readers loses
messages on a loaded machine, and a lost image would stall or change a frame
(`HARNESS_NODE_PARAMS`).
"""

from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from imkd_core.frame import CAMERAS, CLASSES, RADARS, Detections, SensorFrame
from imkd_ros.params import default_params, default_params_file
from imkd_ros.raw_frames import RawFrame, frame_messages, radar_cloud_msg, static_tf_items
from imkd_ros.rclpy_compat import publisher_count
from imkd_ros.topics import NODE_NAME, TOPICS

NS = 1_000_000_000
# Node parameters the harness needs on top of config/detector.yaml (see the module docstring).
HARNESS_NODE_PARAMS: dict[str, Any] = {"radar_tolerance": 0.01, "stall_timeout": 5.0,
                                       "sensor_reliability": "reliable"}


# ============================================================================ checkpoints and comparison
def make_test_checkpoint(path: str | Path, config: str = "tiny", seed: int = 0, heatmap_gain: float = 300.0) -> Path:
    """A random-init student checkpoint for tests and benchmarks (latency does not depend on the
    weights). The heatmap output layers are scaled by `heatmap_gain` so scores spread over (0, 1)
    instead of all sitting at the prior (~0.1): a fixed score threshold then keeps a stable number
    of detections with no near-ties at the cut."""
    import torch

    from imkd_core.checkpoint import save_checkpoint
    from imkd_core.config import get_config
    from imkd_core.models.detector import Student

    cfg = get_config(config)
    torch.manual_seed(seed)
    model = Student(cfg, load_pretrained=False)
    state = model.state_dict()
    with torch.no_grad():
        for k, v in state.items():
            if k.endswith(".hm.weight"):
                v.mul_(heatmap_gain)
    return save_checkpoint(path, {"kind": "student", "config": cfg.to_dict(), "model": state})


def compare_detections(ref: Detections, got: Detections, xyz_tol: float = 1e-3, score_tol: float = 1e-4,
                       v_tol: float | None = 1e-3) -> list[str]:
    """Problems between two Detections (empty = equal within tolerance): same count, and a
    one-to-one match of same-class boxes with centres within xyz_tol m, scores within score_tol
    and (unless v_tol is None) velocities within v_tol m/s."""
    problems = []
    if len(ref) != len(got):
        problems.append(f"{len(got)} detections, expected {len(ref)}")
    used = np.zeros(len(got), bool)
    for i in np.argsort(-ref.scores, kind="stable"):
        d = np.abs(got.boxes[:, :3] - ref.boxes[i, :3]).max(axis=1) if len(got) else np.zeros(0)
        ok = (~used) & (got.labels == ref.labels[i]) & (d <= xyz_tol)
        ok &= np.abs(got.scores - ref.scores[i]) <= score_tol
        if v_tol is not None and len(got):
            ok &= np.abs(got.boxes[:, 7:9] - ref.boxes[i, 7:9]).max(axis=1) <= v_tol
        if ok.any():
            used[np.flatnonzero(ok)[0]] = True
        else:
            problems.append(f"no match for {CLASSES[ref.labels[i]]} at {ref.boxes[i, :3].round(4).tolist()} "
                            f"score {ref.scores[i]:.6f}")
    return problems[:10]


# ============================================================================ the node process
def node_command() -> list[str]:
    """The console script next to this interpreter (imkd-detector), else `python -m`."""
    script = Path(sys.executable).with_name("imkd-detector")
    if script.is_file():
        return [str(script)]
    found = shutil.which("imkd-detector")
    return [found] if found else [sys.executable, "-m", "imkd_ros.detector_node"]


class NodeProcess:
    """The detector node as a subprocess, started at construction; a context manager.

    Parameters: `params_file` (default: the installed or source config/detector.yaml), then
    `params` through a second params file next to the log, the order rcl applies them in. Output
    goes to `log_path`. In a process group of its own: a terminal's Ctrl-C reaches the caller, which stops the
    node (SIGINT, then SIGTERM, then SIGKILL).
    """

    def __init__(self, params: Mapping[str, Any], log_path: str | Path, extra_args: Sequence[str] = (),
                 command: Sequence[str] | None = None, params_file: str | Path | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        """`command`: what starts the node instead of node_command() (e.g. a python -c wrapper)."""
        self.log_path = Path(log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.override_path = self.log_path.with_suffix(".params.yaml")
        with open(self.override_path, "w") as f:
            yaml.safe_dump({f"/**/{NODE_NAME}": {"ros__parameters": dict(params)}}, f)
        base = params_file if params_file is not None else default_params_file()
        files = (["--params-file", str(base)] if base else []) + ["--params-file", str(self.override_path)]
        self.cmd = list(command or node_command()) + list(extra_args) + ["--ros-args"] + files
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(self.cmd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def tail(self, n: int = 30) -> str:
        """The last n lines of the node's output."""
        return "\n".join(self.output().splitlines()[-n:])

    def wait(self, timeout: float) -> int:
        """Wait for exit (e.g. a start-up error); returns the exit code."""
        return self.proc.wait(timeout=timeout)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGINT, then SIGTERM, then SIGKILL (each after `timeout`); returns the exit code."""
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            if self.proc.poll() is not None:
                break
            try:
                self.proc.send_signal(sig)
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                continue
            except ProcessLookupError:
                break
        self._log.close()
        return self.proc.returncode

    def __enter__(self) -> NodeProcess:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def spin(executor: Any, context: Any, period: float = 0.05) -> None:
    """Spin `executor` until `context` shuts down (a thread's target); shutdown races end it quietly."""
    try:
        while context.ok():
            executor.spin_once(timeout_sec=period)
    except Exception:  # noqa: BLE001 - the context went away under the executor at shutdown
        if context.ok():
            raise


def call_service(node: Any, srv_type: Any, name: str, request: Any, timeout: float) -> Any:
    """One call of service `name` from `node` (spun by another thread); TimeoutError if unanswered.
    Plain clients: Humble has no AsyncParameterClient."""
    client = node.create_client(srv_type, name)
    try:
        if not client.wait_for_service(timeout_sec=timeout):
            raise TimeoutError(f"service {name} not available")
        future = client.call_async(request)
        deadline = time.monotonic() + timeout
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not future.done() or future.result() is None:
            raise TimeoutError(f"{name} did not answer")
        return future.result()
    finally:
        node.destroy_client(client)


def set_node_parameters(node: Any, values: Mapping[str, Any], node_name: str = NODE_NAME,
                        timeout: float = 10.0) -> list[Any]:
    """Set parameters of node `node_name` through its parameter service -> SetParametersResult per value."""
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter

    req = SetParameters.Request(parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()])
    return list(call_service(node, SetParameters, f"/{node_name}/set_parameters", req, timeout).results)


def get_node_parameters(node: Any, names: Sequence[str], node_name: str = NODE_NAME,
                        timeout: float = 10.0) -> dict[str, Any]:
    """Values of parameters `names` of node `node_name`, as it runs them."""
    from rcl_interfaces.srv import GetParameters
    from rclpy.parameter import parameter_value_to_python

    res = call_service(node, GetParameters, f"/{node_name}/get_parameters", GetParameters.Request(names=list(names)),
                       timeout)
    return {n: parameter_value_to_python(v) for n, v in zip(names, res.values)}


# ============================================================================ the client node
@dataclass
class Received:
    """Messages the client got from the node, by kind (detections keyed by header stamp)."""

    detections: dict[int, list[tuple[Any, float]]] = field(default_factory=lambda: defaultdict(list))
    attributes: dict[int, list[Any]] = field(default_factory=lambda: defaultdict(list))  # ~/detection_attributes
    markers: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    timing: dict[int, dict] = field(default_factory=dict)
    diagnostics: list[Any] = field(default_factory=list)      # the last 20 of the node's
    diagnostics_seen: int = 0                                    # all of them


class NodeListener:
    """What the detector publishes, collected on an rclpy node of this process (spun elsewhere):
    ~/detections (taken serialized, keyed by header stamp, with receive time), ~/detection_attributes,
    ~/markers, ~/timing and its /diagnostics."""

    def __init__(self, node: Any, node_name: str = NODE_NAME, depth: int = 100, markers: bool = True) -> None:
        """`markers`: also subscribe to ~/markers (the node builds them only while someone does)."""
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import PointCloud2
        from std_msgs.msg import String
        from vision_msgs.msg import Detection3DArray
        from visualization_msgs.msg import MarkerArray

        self.node = node
        self.node_name = node_name
        self.received = Received()
        self._cond = threading.Condition()
        reliable = QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE)
        base = f"/{node_name}"
        # taken serialized: "received" is when the bytes arrive; turning them into Python objects
        # (~14 ms for 100 boxes in rclpy, a cost of a Python consumer) happens later, on demand
        self._det_type = Detection3DArray
        self.det_sub = node.create_subscription(Detection3DArray, f"{base}/detections", self._on_det, reliable,
                                                raw=True)
        node.create_subscription(PointCloud2, f"{base}/detection_attributes", self._on_attributes, reliable)
        if markers:
            node.create_subscription(MarkerArray, f"{base}/markers", self._on_markers, reliable)
        node.create_subscription(String, f"{base}/timing", self._on_timing, reliable)
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, reliable)

    def _on_det(self, data: bytes) -> None:
        t = time.monotonic()
        # CDR: 4-byte encapsulation header (byte 1: 1 = little endian), then header.stamp sec, nanosec
        sec, nsec = struct.unpack_from("<iI" if data[1] & 1 else ">iI", data, 4)
        with self._cond:
            self.received.detections[sec * NS + nsec].append((data, t))
            self._cond.notify_all()

    def _on_attributes(self, msg: Any) -> None:
        from imkd_ros.msgs import stamp_to_ns

        with self._cond:
            self.received.attributes[stamp_to_ns(msg.header.stamp)].append(msg)
            self._cond.notify_all()

    def _on_markers(self, msg: Any) -> None:
        from imkd_ros.msgs import stamp_to_ns

        if msg.markers:
            with self._cond:
                self.received.markers[stamp_to_ns(msg.markers[0].header.stamp)] += 1

    def _on_timing(self, msg: Any) -> None:
        import json

        d = json.loads(msg.data)
        with self._cond:
            self.received.timing[int(d["stamp"])] = d
            self._cond.notify_all()

    def _on_diag(self, msg: Any) -> None:
        if any(s.name.startswith(f"{self.node_name}:") for s in msg.status):
            with self._cond:
                self.received.diagnostics.append(msg)
                self.received.diagnostics_seen += 1
                del self.received.diagnostics[:-20]
                self._cond.notify_all()

    def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait (condition-notified) until predicate() holds; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.1))
        return True

    def forget(self, stamp: int) -> None:
        """Drop what was received for a frame stamp (before sending that frame again)."""
        with self._cond:
            self.received.detections.pop(stamp, None)
            self.received.attributes.pop(stamp, None)
            self.received.timing.pop(stamp, None)
            self.received.markers.pop(stamp, None)

    def detections_for(self, stamp: int) -> list[tuple[Any, float]]:
        """[(Detection3DArray, receive time)] of a frame stamp, deserialised here."""
        from rclpy.serialization import deserialize_message

        with self._cond:
            got = list(self.received.detections.get(stamp, []))
        return [(deserialize_message(d, self._det_type) if isinstance(d, bytes) else d, t) for d, t in got]

    def wait_detections(self, stamp: int, timeout: float) -> tuple[Any, float]:
        """The first Detection3DArray stamped `stamp` and its receive time (monotonic)."""
        if not self.wait_until(lambda: bool(self.received.detections.get(stamp)), timeout):
            raise TimeoutError(f"no detections for frame stamp {stamp} within {timeout} s")
        return self.detections_for(stamp)[0]

    def wait_attributes(self, stamp: int, timeout: float) -> Any:
        """The first ~/detection_attributes PointCloud2 stamped `stamp`."""
        if not self.wait_until(lambda: bool(self.received.attributes.get(stamp)), timeout):
            raise TimeoutError(f"no detection attributes for frame stamp {stamp} within {timeout} s")
        with self._cond:
            return self.received.attributes[stamp][0]

    def diagnostics_values(self) -> dict[str, dict[str, str]]:
        """Latest diagnostics of the node: status name (without the node prefix) -> key -> value,
        plus '_level' and '_message' per status."""
        with self._cond:
            if not self.received.diagnostics:
                return {}
            msg = self.received.diagnostics[-1]
        out = {}
        for s in msg.status:
            name = s.name.split(": ", 1)[-1]
            out[name] = {kv.key: kv.value for kv in s.values}
            out[name]["_level"] = str(int.from_bytes(s.level, "little") if isinstance(s.level, bytes) else s.level)
            out[name]["_message"] = s.message
        return out

    def wait_diagnostics(self, predicate: Callable[[dict[str, dict[str, str]]], bool], timeout: float) -> dict:
        """Wait for a diagnostics message satisfying predicate(values); returns the last values."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            v = self.diagnostics_values()
            if v and predicate(v):
                return v
            # the count of all messages, not the length of the kept last 20 (which stops growing)
            n = self.received.diagnostics_seen
            self.wait_until(lambda n=n: self.received.diagnostics_seen != n, max(0.0, deadline - time.monotonic()))
        return self.diagnostics_values()

    def detections(self, stamp: int) -> Detections | None:
        """The frame's Detections (velocities from its ~/detection_attributes) once both arrived, else None;
        imkd_ros.msgs.MessageError if they do not parse."""
        from imkd_ros.msgs import msg_to_detections

        with self._cond:
            if not self.received.detections.get(stamp) or not self.received.attributes.get(stamp):
                return None
            attributes = self.received.attributes[stamp][0]
        return msg_to_detections(self.detections_for(stamp)[0][0], attributes)

    def input_counts(self) -> dict[str, int]:
        """{topic: messages the node has fully handled} from its latest /diagnostics ("count <topic>")."""
        inputs = self.diagnostics_values().get("inputs", {})
        return {k[6:]: int(v) for k, v in inputs.items() if k.startswith("count ") and v.isdigit()}

    def matched(self) -> bool:
        """Both directions of discovery done: this reader matched the node's ~/detections writer and
        the node reports (on /diagnostics) that its writer matched a reader."""
        frames = self.diagnostics_values().get("frames", {})
        return publisher_count(self.node, self.det_sub) > 0 and frames.get("detections_subscribers", "0") != "0"


class DetectorClient(NodeListener):
    """An rclpy node in this process that feeds the detector and listens to it (see the module docstring)."""

    def __init__(self, node_name: str = NODE_NAME, params: Mapping[str, Any] | None = None,
                 transport: str = "compressed") -> None:
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from rosgraph_msgs.msg import Clock
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
        from tf2_msgs.msg import TFMessage

        p = {**default_params(), **(params or {})}
        self.context = Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(f"imkd_harness_{uuid.uuid4().hex[:8]}", context=self.context)
        sensor_qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        image_type = Image if (p["image_transport"] == "raw" or transport == "raw") else CompressedImage
        self.topics: dict[str, str] = {}
        for i, cam in enumerate(CAMERAS):
            self.topics[cam] = p["image_topics"][i]
            self.topics[f"{cam}/camera_info"] = p["camera_info_topics"][i]
        for i, radar in enumerate(RADARS):
            self.topics[radar] = p["radar_topics"][i]
        self.pubs: dict[str, Any] = {}
        for key, topic in self.topics.items():
            mtype = CameraInfo if key.endswith("/camera_info") else image_type if key in CAMERAS else PointCloud2
            self.pubs[key] = self.node.create_publisher(mtype, topic, sensor_qos)
        self.pubs["tf"] = self.node.create_publisher(TFMessage, TOPICS["tf"], reliable)
        self.pubs["tf_static"] = self.node.create_publisher(TFMessage, TOPICS["tf_static"], latched)
        self.clock_pub = self.node.create_publisher(Clock, "/clock", reliable)
        NodeListener.__init__(self, self.node, node_name)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=spin, args=(self.executor, self.context), daemon=True)
        self._thread.start()
        self._static: list | None = None
        self._calib: dict[str, tuple] = {}

    def wait_for_node(self, timeout: float, proc: NodeProcess | None = None) -> None:
        """Until the node subscribes to every input and publishes detections (its model is then
        loaded); RuntimeError with the node's output if it exits or the time runs out."""
        deadline = time.monotonic() + timeout
        while True:
            if all(pub.get_subscription_count() > 0 for key, pub in self.pubs.items() if key != "tf_static") and \
                    publisher_count(self.node, self.det_sub) > 0:
                time.sleep(0.2)  # let the remaining endpoint matches settle
                return
            if proc is not None and not proc.alive():
                raise RuntimeError(f"detector node exited with {proc.proc.returncode}:\n{proc.output()[-4000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"detector node not up after {timeout} s:\n"
                                   f"{proc.output()[-4000:] if proc else ''}")
            time.sleep(0.1)

    def publish(self, key: str, msg: Any) -> None:
        self.pubs[key].publish(msg)

    def publish_clock(self, stamp_ns: int) -> None:
        from rosgraph_msgs.msg import Clock

        from imkd_ros.msgs import ns_to_stamp

        self.clock_pub.publish(Clock(clock=ns_to_stamp(stamp_ns)))

    def publish_static(self, items: Sequence[tuple[str, str, int, np.ndarray]]) -> None:
        from imkd_ros.msgs import transforms_to_tf_message

        self.pubs["tf_static"].publish(transforms_to_tf_message(items))

    def publish_messages(self, messages: Sequence[tuple[str, Any]], pace: bool = True) -> float:
        """Publish (key, msg) pairs in order; monotonic time right after the last one.

        With `pace`, each image waits until the node's reader has acknowledged it before the next
        message goes out, as a rig's cameras, firing milliseconds apart, would: a burst of six
        full-size JPEGs overflows Fast DDS's shared-memory segment (512 KB by default) and the
        lost fragments then cost a reliable-protocol heartbeat round (seconds) to recover."""
        from rclpy.duration import Duration

        for key, msg in messages:
            pub = self.pubs[key]
            pub.publish(msg)
            if pace and key in CAMERAS:
                pub.wait_for_all_acked(Duration(seconds=5))
        return time.monotonic()

    def prepare(self, raw: RawFrame, new_epoch: bool = False, settle: float = 0.3) -> bool:
        """Before a frame that starts a new epoch (first frame, new scene or rig, time jumped back)
        publish static TF, CameraInfo and the frame's radar sweeps, then wait `settle` s.

        A running rig has sent all of these before any frame; the node's sync waits for a radar's
        closing sweep only once that radar has sent something since the last reset, so without
        this the first frame would race its own radar messages. True if it did."""
        from imkd_ros import msgs as M

        static = static_tf_items(raw)
        calib = {c.name: (c.K.tobytes(), c.width, c.height) for c in raw.cameras}
        key = [(p_, c_, T.round(12).tobytes()) for p_, c_, _, T in static]
        if key == self._static and calib == self._calib and not new_epoch:
            return False
        self.publish_static(static)
        for c in raw.cameras:
            self.publish(f"{c.name}/camera_info", M.K_to_camera_info(c.K, c.width, c.height, c.stamp, c.frame_id))
        for sweep in raw.sweeps:
            self.publish(sweep.name, radar_cloud_msg(sweep))
        self._static, self._calib = key, calib
        time.sleep(settle)
        return True

    def set_parameters(self, values: Mapping[str, Any], timeout: float = 10.0) -> list[Any]:
        """Set node parameters through its parameter service -> SetParametersResult per value."""
        return set_node_parameters(self.node, values, self.node_name, timeout)

    def get_parameters(self, names: Sequence[str], timeout: float = 10.0) -> dict[str, Any]:
        return get_node_parameters(self.node, names, self.node_name, timeout)

    def close(self) -> None:
        import rclpy

        rclpy.try_shutdown(context=self.context)
        self._thread.join(timeout=2.0)
        try:
            self.node.destroy_node()
        except Exception:  # noqa: BLE001
            pass

    def __enter__(self) -> DetectorClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class FramePlayer:
    """Publishes RawFrames one at a time through a DetectorClient and waits for each result."""

    def __init__(self, client: DetectorClient, transport: str = "compressed", sim_time: bool = False) -> None:
        self.client = client
        self.transport = transport
        self.sim_time = sim_time
        self._last: int | None = None
        self.last_sent = self.last_received = 0.0  # time.monotonic() of the last play()

    def send(self, raw: RawFrame, messages: Sequence[tuple[str, Any]] | None = None) -> float:
        """Publish one frame (static/CameraInfo changes first); monotonic time after its last message."""
        back = self._last is None or raw.stamp < self._last
        self._last = raw.stamp
        if self.sim_time:
            self.client.publish_clock(raw.stamp)
            if back:
                time.sleep(0.3)  # let the node handle the clock jump before the frame's data
        self.client.prepare(raw, new_epoch=back)
        msgs = frame_messages(raw, self.transport) if messages is None else messages
        return self.client.publish_messages(msgs)

    def play(self, raw: RawFrame, timeout: float = 60.0,
             messages: Sequence[tuple[str, Any]] | None = None) -> tuple[Detections, Any, float]:
        """Send a frame and wait for its detections -> (Detections with the velocities of its
        ~/detection_attributes, the Detection3DArray, latency in s from its last message published
        to its detections received)."""
        from imkd_ros.msgs import msg_to_detections

        t_sent = self.send(raw, messages)
        msg, t_recv = self.client.wait_detections(raw.stamp, timeout)
        attributes = self.client.wait_attributes(raw.stamp, timeout)
        self.last_sent, self.last_received = t_sent, t_recv
        return msg_to_detections(msg, attributes), msg, t_recv - t_sent


# ============================================================================ a bag through the assembler, no DDS
def assemble_bag(bag: str | Path, radar_sweeps: int, image_size: tuple[int, int], *,
                 triggers: Iterable[int] | None = None,
                 params: Mapping[str, Any] | None = None, rig: str | None = None) -> dict[int, SensorFrame]:
    """{stamp: SensorFrame} the node's FrameAssembler builds from a bag's messages in bag order.

    The node's own conversions and its parameters (defaults + `params`), decoding like the node
    (JPEG reduction for the model's `image_size` (H, W)), holding an image until its CameraInfo;
    `triggers`: the only CAM_FRONT stamps that start frames (the lock-step replay's keyframes;
    None = all). Without DDS and threads this is the node's frame building with one fixed message
    order: the reference the closed loop must reproduce, and a check of the shared sweep rule.
    rig: the node's rig (imkd_core.rig name or path; None = nuScenes): its topics, order, trigger
    camera and radar field mapping.
    """
    from rclpy.serialization import deserialize_message

    from imkd_core.preprocess import jpeg_reduction
    from imkd_core.rig import load_rig
    from imkd_ros import msgs as M
    from imkd_ros.assembler import FrameAssembler
    from imkd_ros.input_checks import radar_points
    from imkd_ros.params import assembler_config, rig_defaults
    from imkd_ros.replay import message_class, open_bag
    from imkd_ros.topics import input_topics

    spec = load_rig(rig) if rig is not None else None
    p = {**default_params(), **(rig_defaults(spec) if spec is not None else {}), **(params or {})}
    asm = FrameAssembler(assembler_config(p, radar_sweeps, spec))
    keys = {t: k for k, t in input_topics(spec).items()}
    cameras = spec.camera_names if spec is not None else CAMERAS
    fields = {r.name: (None if r.nuscenes_layout else r.fields) for r in spec.radars} if spec is not None else {}
    only = None if triggers is None else set(triggers)
    infos: dict[str, Any] = {}
    held: dict[str, Any] = {}
    frames: dict[int, SensorFrame] = {}

    def add_image(cam: str, msg: Any) -> None:
        stamp = M.stamp_to_ns(msg.header.stamp)
        if cam == p["trigger_camera"] and only is not None and stamp not in only:
            return
        info = infos.get(cam)
        if info is None:
            held[cam] = msg
            return
        rgb = M.msg_to_rgb(msg, jpeg_reduction((int(info.height), int(info.width)), tuple(image_size)))
        asm.add_camera(cam, stamp, rgb, M.camera_info_to_K(info, image_hw=rgb.shape[:2]), msg.header.frame_id)

    reader = open_bag(bag)
    try:
        conns = [c for c in reader.connections if c.topic in keys]
        for conn, _, raw in reader.messages(connections=conns):
            key = keys[conn.topic]
            msg = deserialize_message(raw, message_class(conn.msgtype))
            if key in ("tf", "tf_static"):
                asm.add_transforms(M.tf_message_to_list(msg), static=key == "tf_static")
            elif key.endswith("/camera_info"):
                cam = key.split("/")[0]
                infos[cam] = msg
                if cam in held:
                    add_image(cam, held.pop(cam))
            elif key in cameras:
                add_image(key, msg)
            else:
                pts, _ = radar_points(msg, conn.topic, 1 << 30, fields.get(key))
                asm.add_radar(key, M.stamp_to_ns(msg.header.stamp), pts, msg.header.frame_id)
            frames.update((f.stamp, f) for f in asm.poll())
    finally:
        reader.close()
    frames.update((f.stamp, f) for f in asm.poll(2**62))  # the end of the bag: every timeout passes
    return frames
