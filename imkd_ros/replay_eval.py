"""Closed-loop evaluation: bag -> replay -> detector node -> recorded detections -> devkit metrics.

    imkd-replay-eval BAG --checkpoint C --dataroot D [--version V] [--rate R] [--realtime]
                     [--out DIR] [--params-file F] [--node-param NAME:=VALUE ...] [--no-offline]

What it does:
1. starts the detector node in its own process (`python -m imkd_ros.detector_node --ros-args
   --params-file config/detector.yaml -p checkpoint:=C ...`), in the current ROS_DOMAIN_ID
   (or --domain-id), and waits until it subscribes to the bag's sensor topics;
2. replays the bag's node inputs (cameras, camera_info, radars, /tf, /tf_static; not /odom,
   LiDAR or ground truth) with imkd_ros.replay.BagPlayer and records `/imkd_detector/detections`
   (vision_msgs/Detection3DArray + its ~/detection_attributes -> imkd_ros.msgs.msg_to_detections);
3. matches detections to the bag's keyframes by stamp: the converter stamps ground truth and
   keyframes with the keyframe's CAM_FRONT time (= SensorFrame.stamp = the node's output stamp)
   and stores {stamp: sample token} in the bag's custom_data `imkd.keyframes`; a bag without it
   is matched through its /ground_truth/detections stamps to the CAM_FRONT keyframe times of
   the source dataset;
4. scores them with imkd_core.evaluate (the devkit's DetectionEval) against the SOURCE dataset
   (--dataroot/--version): the bag's ground truth lacks the lidar/radar point counts, attributes
   and visibility the devkit filters and scores with, so the honest reference is the devkit on
   the dataset the bag was converted from (sample tokens come from the bag, so nothing is guessed).
   A keyframe without a detection message counts as an empty prediction (it is not dropped);
5. runs the offline evaluator on the same samples (NuScenesReader -> Predictor -> evaluate, the
   path of train/evaluate.py) and prints both side by side, then, as the last line, one JSON
   object {"replay": {...}, "offline": {...}, "frames_expected", "frames_received", ...}.

Pacing. Default: lock-step, so the closed loop is deterministic however slow or busy the CPU.
Messages keep the bag's timing scaled by --rate, plus these rules:
(a) only keyframe CAM_FRONT images are published (the trigger camera; sweep images would start
    frames nobody scores, and the node's newest-frame-wins policy could then drop a keyframe);
(b) before keyframe k+1's CAM_FRONT image, wait for keyframe k's detections (--frame-timeout);
    a frame the node reports published (its /diagnostics frames_published) that does not arrive
    within 5 s is reported lost at once instead of waiting out the timeout;
(c) barriers: the node serves its inputs in parallel callback groups and decides its sync
    timeouts (camera/radar timeout after the trigger, TF timeout after the newest input a frame
    needs) in input time, the newest stamp it has handled. So, from each keyframe's stamp s_k on,
    the player stops before the first message stamped after each barrier point b and waits until
    the node's input counters (/diagnostics "count <topic>", which rise once a message is fully
    handled; 50 Hz here) show every message published so far. The points are s_k + the camera and
    radar timeouts exactly, and every 0.8 x the smallest timeout up to the largest camera/radar
    timeout + the TF timeout: then no timeout can fire because a callback lagged behind a
    later-stamped message (per topic, callbacks run in order), and the node builds every frame from
    exactly the inputs the offline reader uses. The timeouts are read from the node's parameters
    (defaults, --params-file, --node-param).
(d) the node's stall flush (stall_timeout: complete pending frames after no input for a while) is
    held off (3600 s) during the replay, since a busy CPU could otherwise flush a frame before its
    last inputs were published; after the bag's last message the player sets stall_timeout to
    0.05 s through the node's parameter service, so the last keyframe completes at once.
The node also gets sensor_reliability:=reliable with deep queues (lossless delivery from the
reliable player). Before playing, the player waits until both directions of discovery are done
(its reader matched the node's ~/detections writer, and the node's /diagnostics reports a
matched reader), so the first frame's detections cannot be lost to discovery. After the last
message it waits for the last keyframe. --realtime: none of this, every message at --rate (what
a robot sees; frames the node cannot keep up with are dropped and count as missing, i.e. empty
predictions).

Outputs (--out DIR, default replay_eval_out): replay/ and offline/ (results_nusc.json and the
devkit's metrics files), detections_replay.json / detections_offline.json (per-frame boxes in
base_link), node_frames.json (the node's per-frame ~/timing facts: cameras, radar points,
latencies), replay_eval.json (the summary), node.log (the node's output). All written atomically.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from imkd_core.atomic import atomic_write_text
from imkd_core.errors import cli_main
from imkd_core.frame import CAMERAS, CLASSES, RADARS, Detections
from imkd_ros.replay import BagError, BagPlayer, bag_custom_data, bag_keyframes, bag_topics, open_bag

__all__ = [
    "ClosedLoopResult",
    "DetectionLimits",
    "DetectorProcess",
    "DetectionRecorder",
    "ReplayEvalError",
    "ReplayEvalReport",
    "barrier_offsets_ns",
    "compare_detections",
    "evaluate_side_by_side",
    "main",
    "node_sweep_rule",
    "node_sync_timeouts",
    "offline_detections",
    "replay_closed_loop",
    "run_replay_eval",
    "set_node_parameter",
]

_NS = 1_000_000_000
NODE_MODULE = "imkd_ros.detector_node"
NODE_NAME = "imkd_detector"
DETECTIONS_TOPIC = f"/{NODE_NAME}/detections"
CHECKPOINT_PARAM = "checkpoint"
METRIC_KEYS: tuple[str, ...] = ("NDS", "mAP", "mATE", "mASE", "mAOE", "mAVE", "mAAE", "NDS_present", "mAP_present")


class ReplayEvalError(RuntimeError):
    """The closed loop could not run (node failed to start or died, bag without keyframes, ...)."""


@dataclass(frozen=True)
class DetectionLimits:
    """Decode score threshold and top-K, set alike on the node (-p) and the offline Predictor.

    Evaluation wants the whole precision-recall curve, so the defaults (`for_checkpoint`) are the
    model config's own decode settings (tiny: 0.1 / 200), not the node's display-oriented 0.3 / 100.
    """

    score_threshold: float
    max_detections: int

    @classmethod
    def for_checkpoint(cls, checkpoint: str | Path, score_threshold: float | None = None,
                       max_detections: int | None = None) -> DetectionLimits:
        from imkd_core.checkpoint import load_checkpoint
        from imkd_core.config import IMKDConfig

        model = IMKDConfig.from_dict(load_checkpoint(checkpoint)["config"]).model
        thr = float(model.score_threshold if score_threshold is None else score_threshold)
        top = int(model.max_detections if max_detections is None else max_detections)
        if not 0.0 <= thr < 1.0:
            raise ValueError(f"score threshold must be in [0, 1), got {thr}")
        return cls(thr, min(max(top, 1), 1000))  # the node accepts 1..1000

    def node_params(self) -> dict[str, Any]:
        return {"score_threshold": float(self.score_threshold), "max_detections": int(self.max_detections)}


def _input_topics() -> dict[str, str]:
    """{key: topic} of the node's inputs, from the converter's one topic table."""
    from imkd_ros.topics import TOPICS

    keys = [*CAMERAS, *(f"{c}/camera_info" for c in CAMERAS), *RADARS, "tf", "tf_static"]
    return {k: TOPICS[k] for k in keys}


def trigger_topic() -> str:
    """The CAM_FRONT image topic (the node's trigger camera)."""
    return _input_topics()["CAM_FRONT"]


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return None if not math.isfinite(v) else round(v, 6)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def write_json(path: Path, obj: Any) -> None:
    """JSON (NaN -> null), written atomically."""
    atomic_write_text(path, json.dumps(_jsonable(obj), indent=1) + "\n")


# ----------------------------------------------------------------------------------------------
# The node process
# ----------------------------------------------------------------------------------------------


class DetectorProcess:
    """The detector node in its own process (stdout/stderr to `log_path`); a context manager."""

    def __init__(self, checkpoint: str | Path, params_file: str | Path | None = None,
                 params: Mapping[str, Any] | None = None, log_path: str | Path | None = None,
                 env: Mapping[str, str] | None = None, extra_args: Sequence[str] = ()) -> None:
        self.cmd = [sys.executable, "-m", NODE_MODULE, *extra_args, "--ros-args"]
        if params_file is None:  # explicit, and before the -p overrides: rcl applies them in order
            from imkd_ros.params import default_params_file

            params_file = default_params_file()
        if params_file is not None:
            self.cmd += ["--params-file", str(params_file)]
        merged = {CHECKPOINT_PARAM: str(Path(checkpoint).resolve()), **(params or {})}
        for name, value in merged.items():
            self.cmd += ["-p", f"{name}:={_param_text(value)}"]
        self.log_path = Path(log_path) if log_path else None
        self.env = {**os.environ, **(env or {})}
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        self.proc: subprocess.Popen | None = None
        self._log = None

    def start(self) -> DetectorProcess:
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(self.cmd, stdout=self._log or subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                     env=self.env, start_new_session=True)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, n: int = 30) -> str:
        """The last n lines of the node's log."""
        if self.log_path is None or not self.log_path.is_file():
            return ""
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGINT, then SIGTERM, then SIGKILL (each after `timeout`); returns the exit code."""
        if self.proc is not None and self.proc.poll() is None:
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
                try:
                    self.proc.send_signal(sig)
                    self.proc.wait(timeout=timeout)
                    break
                except subprocess.TimeoutExpired:
                    continue
                except ProcessLookupError:
                    break
        if self._log is not None:
            self._log.close()
            self._log = None
        return None if self.proc is None else self.proc.poll()

    def __enter__(self) -> DetectorProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _int(text: str) -> int:
    try:
        return int(float(text))
    except ValueError:
        return 0


def _param_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_param_text(v) for v in value) + "]"
    return str(value)


def parse_node_param(text: str) -> tuple[str, str]:
    """'name:=value' -> (name, value) (the value is passed to the node as written)."""
    name, sep, value = text.partition(":=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"node parameter must look like name:=value, got {text!r}")
    return name, value


# ----------------------------------------------------------------------------------------------
# Recording detections
# ----------------------------------------------------------------------------------------------


class DetectionRecorder:
    """Subscribes to the node's Detection3DArray output and its companion ~/detection_attributes
    (velocities) and keeps {header stamp: Detections} once both of a frame have arrived."""

    def __init__(self, node: Any, topic: str = DETECTIONS_TOPIC, depth: int = 1000) -> None:
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
        from vision_msgs.msg import Detection3DArray

        self.node = node
        self.topic = topic
        self.frames: dict[int, Detections] = {}
        self.arrival: dict[int, float] = {}
        self.errors: list[str] = []
        self.messages = 0
        self._cond = threading.Condition()
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.VOLATILE)
        self.subscription = node.create_subscription(Detection3DArray, topic, self._on_msg, qos)
        from sensor_msgs.msg import PointCloud2

        self._halves: dict[int, dict[str, Any]] = {}  # stamp -> {"det": msg, "attr": msg} until both came
        attr_topic = topic.rsplit("/", 1)[0] + "/detection_attributes"
        self.attr_subscription = node.create_subscription(PointCloud2, attr_topic, self._on_attributes, qos)
        # the node's per-frame facts (cameras, radar points, timings; JSON on ~/timing), kept by stamp
        from std_msgs.msg import String

        self.timing: dict[int, dict[str, Any]] = {}
        timing_topic = topic.rsplit("/", 1)[0] + "/timing"
        self.timing_subscription = node.create_subscription(String, timing_topic, self._on_timing, qos)
        # the node's input counters ("count <topic>" of its /diagnostics "inputs" status)
        from diagnostic_msgs.msg import DiagnosticArray

        self.input_counts: dict[str, int] = {}
        self.node_frames_published = 0
        self.node_detection_readers = 0
        self.lost_frames: list[int] = []  # stamps the node published that never arrived
        self.diagnostics_received = 0
        self.diag_subscription = node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)

    def _on_msg(self, msg: Any) -> None:
        self._half("det", msg)

    def _on_attributes(self, msg: Any) -> None:
        self._half("attr", msg)

    def _half(self, kind: str, msg: Any) -> None:
        from imkd_ros.msgs import MessageError, msg_to_detections, stamp_to_ns

        now = time.monotonic()
        stamp = stamp_to_ns(msg.header.stamp)
        with self._cond:
            halves = self._halves.setdefault(stamp, {})
            halves[kind] = msg
            if len(halves) < 2:
                return
            del self._halves[stamp]
        try:
            det = msg_to_detections(halves["det"], halves["attr"])
        except MessageError as exc:
            self.errors.append(f"{stamp}: {exc}")
            det = Detections.empty(stamp)
        with self._cond:
            self.messages += 1
            self.frames[stamp] = det
            self.arrival.setdefault(stamp, now)
            self._cond.notify_all()

    def _on_timing(self, msg: Any) -> None:
        try:
            info = json.loads(msg.data)
            stamp = int(info["stamp"])
        except (ValueError, KeyError, TypeError):
            return
        with self._cond:
            self.timing[stamp] = info

    def _on_diagnostics(self, msg: Any) -> None:
        counts: dict[str, int] = {}
        frames: dict[str, int] = {}
        for status in msg.status:
            if status.name.endswith(": inputs"):
                for kv in status.values:
                    if kv.key.startswith("count "):
                        counts[kv.key[6:]] = _int(kv.value)
            elif status.name.endswith(": frames"):
                frames = {kv.key: _int(kv.value) for kv in status.values
                          if kv.key in ("frames_published", "detections_subscribers")}
        if counts:
            with self._cond:
                self.input_counts = counts
                self.node_frames_published = frames.get("frames_published", self.node_frames_published)
                self.node_detection_readers = frames.get("detections_subscribers", self.node_detection_readers)
                self.diagnostics_received += 1
                self._cond.notify_all()

    def matched(self) -> bool:
        """Both directions of discovery done: our reader matched the node's writer and the node
        reports (on /diagnostics) that its ~/detections writer matched a reader."""
        from imkd_ros.rclpy_compat import publisher_count

        return publisher_count(self.node, self.subscription) > 0 and self.node_detection_readers > 0

    def wait_for_diagnostics(self, timeout: float) -> bool:
        """Block until one more /diagnostics input count arrives (True) or timeout (False)."""
        with self._cond:
            n = self.diagnostics_received
            return self._cond.wait_for(lambda: self.diagnostics_received > n, timeout)

    def wait_for_counts(self, target: Mapping[str, int], timeout: float, abort: Any = None) -> bool:
        """Block until the node's input counters reach `target` {topic: messages published} (True)
        or `timeout` s passed (False); abort() as in wait_for."""
        deadline = time.monotonic() + timeout

        def done() -> bool:
            return all(self.input_counts.get(t, 0) >= n for t, n in target.items())

        with self._cond:
            while not done():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.2))
                if abort is not None and not done():
                    reason = abort()
                    if reason:
                        raise ReplayEvalError(reason)
        return True

    def wait_for(self, stamp: int, timeout: float, abort: Any = None, published: int | None = None,
                 lost_after: float = 5.0) -> bool:
        """Block until detections stamped `stamp` arrived (True) or `timeout` s passed (False).

        abort() -> str | None is polled every 0.2 s; a message raises ReplayEvalError.
        published: the node's frames_published count once it has published this frame; when its
        /diagnostics report that many and the message is still missing `lost_after` s later, the
        message is taken as lost (False, noted in `lost_frames`) without waiting out `timeout`.
        """
        deadline = time.monotonic() + timeout
        seen_published: float | None = None
        with self._cond:
            while stamp not in self.frames:
                now = time.monotonic()
                if published is not None and seen_published is None and self.node_frames_published >= published:
                    seen_published = now
                if seen_published is not None and now - seen_published > lost_after:
                    self.lost_frames.append(stamp)
                    return False
                left = deadline - now
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.2))
                if abort is not None and stamp not in self.frames:
                    reason = abort()
                    if reason:
                        raise ReplayEvalError(reason)
        return True

    def wait_quiet(self, quiet: float, timeout: float) -> None:
        """Block until no message came for `quiet` s (or `timeout` s passed)."""
        deadline = time.monotonic() + timeout
        last = self.messages
        t_last = time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.1)
            if self.messages != last:
                last, t_last = self.messages, time.monotonic()
            elif time.monotonic() - t_last >= quiet:
                return


# ----------------------------------------------------------------------------------------------
# The closed loop
# ----------------------------------------------------------------------------------------------


@dataclass
class ClosedLoopResult:
    """Detections recorded from the node, keyed by keyframe sample token."""

    keyframes: dict[int, str]                       # stamp -> sample token (bag order)
    detections: dict[str, Detections]               # token -> detections (received frames only)
    frames_received: int = 0
    extra_frames: int = 0                           # node outputs at non-keyframe stamps
    missing: list[str] = field(default_factory=list)
    playback: dict[str, Any] = field(default_factory=dict)
    latency_ms: dict[str, float] = field(default_factory=dict)  # keyframe trigger publish -> detections
    message_errors: list[str] = field(default_factory=list)
    node_frames: dict[str, dict[str, Any]] = field(default_factory=dict)  # token -> the node's ~/timing facts
    lost: dict[str, int] = field(default_factory=dict)  # topic -> published - received by the node (if known)
    node_exit_code: int | None = None
    seconds: float = 0.0


def keyframes_of_bag(reader: Any, nusc: Any | None = None) -> dict[int, str]:
    """{CAM_FRONT stamp: sample token} of an open bag, sorted by stamp.

    From the converter's custom_data; else the /ground_truth/detections stamps matched to the
    CAM_FRONT keyframe times of `nusc` (exact microsecond match). ReplayEvalError if neither.
    """
    frames = bag_keyframes(reader)
    if not frames:
        from imkd_ros.topics import TOPICS

        gt = [c for c in reader.connections if c.topic == TOPICS["gt_detections"]]
        if not gt or nusc is None:
            raise ReplayEvalError("the bag has no keyframe table (custom_data 'imkd.keyframes') and no "
                                  "/ground_truth/detections with a source dataset to match: convert it with "
                                  "imkd-nuscenes-to-bag (with ground truth)")
        by_us = {}
        for s in nusc.sample:
            cam = s["data"].get("CAM_FRONT")
            if cam:
                by_us[int(nusc.get("sample_data", cam)["timestamp"])] = s["token"]
        for _, stamp, _ in reader.messages(connections=gt):
            token = by_us.get(int(stamp) // 1000)
            if token is not None:
                frames[int(stamp)] = token
        if not frames:
            raise ReplayEvalError("no /ground_truth/detections stamp of the bag is a CAM_FRONT keyframe time of "
                                  f"{nusc.version}: is --dataroot/--version the bag's source dataset?")
    return dict(sorted(frames.items()))


def replay_closed_loop(
    bag: str | Path,
    checkpoint: str | Path,
    *,
    rate: float = 1.0,
    lockstep: bool = True,
    params_file: str | Path | None = None,
    node_params: Mapping[str, Any] | None = None,
    keyframes: Mapping[int, str] | None = None,
    frame_timeout: float = 60.0,
    startup_timeout: float = 180.0,
    barrier_timeout: float = 10.0,
    log_path: str | Path | None = None,
    domain_id: int | None = None,
    progress: bool = True,
) -> ClosedLoopResult:
    """Start the node, replay the bag through it and record its detections (see the module doc).

    Lock-step protocol: rules (a)-(d) of the module doc; the barrier points come from the
    node's sync timeouts (`barrier_offsets_ns`).
    """
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    t_start = time.monotonic()
    reader = open_bag(bag)
    try:
        frames = dict(keyframes) if keyframes is not None else keyframes_of_bag(reader)
        available = set(bag_topics(reader))
    finally:
        reader.close()
    if not frames:
        raise ReplayEvalError(f"{bag}: no keyframes to evaluate")
    inputs = [t for t in _input_topics().values() if t in available]
    trigger = trigger_topic()
    if trigger not in available:
        raise ReplayEvalError(f"{bag} has no {trigger} (the node's trigger camera)")
    env = {} if domain_id is None else {"ROS_DOMAIN_ID": str(domain_id)}
    stamps = sorted(frames)
    params = dict(node_params or {})
    if lockstep:  # fast input counters for the barriers; lossless delivery from the (reliable) player
        params.setdefault("diagnostics_period", 0.02)
        params.setdefault("sensor_reliability", "reliable")
        params.setdefault("sensor_queue_depth", 1000)  # reliable + deep: the player may run ahead of decoding
        params.setdefault("stall_timeout", 3600.0)     # (d): shortened after the last message
    offsets = barrier_offsets_ns(node_sync_timeouts(params_file, params))
    state: dict[str, Any] = {"prev": None, "published": {}, "due": [], "triggered": 0,
                             "barriers": 0, "barrier_timeouts": 0, "barrier_s": 0.0, "use_barriers": lockstep}

    context = Context()
    rclpy.init(context=context, domain_id=domain_id, signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node("imkd_replay_eval", context=context)
    executor = SingleThreadedExecutor(context=context)
    recorder = DetectionRecorder(node)
    executor.add_node(node)
    spin = threading.Thread(target=_spin, args=(executor, context), daemon=True)
    spin.start()
    detector = DetectorProcess(checkpoint, params_file, params, log_path, env=env)
    player: BagPlayer | None = None
    result = ClosedLoopResult(keyframes=dict(frames), detections={})
    bar = None
    try:
        detector.start()

        def abort() -> str | None:
            if not detector.alive():
                return (f"the detector node exited with code {detector.proc.returncode}; its last output:\n"
                        f"{detector.tail()}")
            return None

        def barrier() -> None:
            t0 = time.monotonic()
            target = dict(player.stats.published)
            ok = recorder.wait_for_counts(target, barrier_timeout, abort)
            state["barriers"] += 1
            if not ok:
                state["barrier_timeouts"] += 1
                if not recorder.diagnostics_received:
                    state["use_barriers"] = False
                    _log(f"no input counters on /diagnostics within {barrier_timeout} s: lock-step goes on without "
                         "barriers (results may depend on timing)")
                else:
                    _log(f"the node had not handled every input after {barrier_timeout} s (lost messages?)")
            state["barrier_s"] += time.monotonic() - t0

        def wait_prev() -> None:
            if state["prev"] is not None and not recorder.wait_for(state["prev"], frame_timeout, abort,
                                                                   published=state["triggered"]):
                why = "lost on the way (the node published it)" if state["prev"] in recorder.lost_frames \
                    else f"none within {frame_timeout} s"
                _log(f"no detections for keyframe {state['prev']}: {why}; going on")

        def before_publish(topic: str, stamp: int) -> bool:
            due = state["due"]
            if state["use_barriers"] and due and stamp > due[0]:
                barrier()
                while due and due[0] < stamp:
                    due.pop(0)
            if topic != trigger:
                return True
            if stamp not in frames:
                return not lockstep  # lock-step: only keyframes trigger the node
            if lockstep:
                wait_prev()
                state["due"] = [stamp + off for off in offsets]
            state["triggered"] += 1
            state["prev"] = stamp
            state["published"][stamp] = time.monotonic()
            if bar is not None:
                bar.update()
            return True

        player = BagPlayer(bag, node, rate=rate, topics=inputs, before_publish=before_publish)
        _wait_for_node(player, node, recorder, inputs, startup_timeout, abort)
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(frames), desc="closed loop", unit="keyframe", file=sys.stderr, leave=False)
        stats = player.run()
        if lockstep and state["prev"] is not None:
            if not set_node_parameter(node, "stall_timeout", 0.05):  # (d): the bag ended, flush now
                _log("could not shorten the node's stall_timeout: the last keyframe waits for it")
            wait_prev()
        else:
            recorder.wait_quiet(quiet=2.0, timeout=frame_timeout)
        if bar is not None:
            bar.close()
        result.playback = {**stats.summary(), "barriers": state["barriers"],
                           "barrier_timeouts": state["barrier_timeouts"], "barrier_s": round(state["barrier_s"], 3)}
        # the node's input counters after the last message: give its callbacks time to count the
        # bag's tail (a loaded CPU can be seconds behind) before calling anything lost
        recorder.wait_for_counts(dict(stats.published), barrier_timeout, abort)
        if recorder.wait_for_diagnostics(timeout=5.0):
            with recorder._cond:
                counts = dict(recorder.input_counts)
            result.lost = {t: n - counts[t] for t, n in stats.published.items() if t in counts and counts[t] < n}
    finally:
        if player is not None:
            player.close()
        result.node_exit_code = detector.stop()
        # stop the spin thread before destroying what it waits on: destroying the node under a
        # running spin_once is a use-after-free in rclpy (an intermittent SIGSEGV of make demo)
        rclpy.try_shutdown(context=context)
        spin.join(timeout=5.0)
        try:
            node.destroy_node()
        except Exception:  # noqa: BLE001 - the context is already shut down; nothing left to free
            pass
    with recorder._cond:
        received = dict(recorder.frames)
        arrival = dict(recorder.arrival)
        result.node_frames = {frames[s]: dict(v) for s, v in recorder.timing.items() if s in frames}
    result.detections = {frames[s]: det for s, det in received.items() if s in frames}
    result.frames_received = len(result.detections)
    result.extra_frames = sum(1 for s in received if s not in frames)
    result.missing = [frames[s] for s in stamps if s not in received]
    lat = [1e3 * (arrival[s] - state["published"][s]) for s in stamps if s in arrival and s in state["published"]]
    if lat:
        result.latency_ms = {"p50": float(np.percentile(lat, 50)), "p95": float(np.percentile(lat, 95)),
                             "max": float(np.max(lat))}
    result.message_errors = list(recorder.errors)
    result.seconds = time.monotonic() - t_start
    return result


def _spin(executor: Any, context: Any) -> None:
    from rclpy.executors import ExternalShutdownException

    try:
        while context.ok():
            executor.spin_once(timeout_sec=0.1)
    except (ExternalShutdownException, KeyboardInterrupt):
        pass
    except Exception:  # noqa: BLE001 - the context went away under the executor at shutdown
        if context.ok():
            raise


def _wait_for_node(player: BagPlayer, node: Any, recorder: DetectionRecorder, inputs: Sequence[str],
                   timeout: float, abort: Any) -> None:
    """Until the node subscribes to every input topic and its ~/detections writer and our reader
    have matched each other (the node's side from its /diagnostics)."""
    deadline = time.monotonic() + timeout
    needed = [t for t in inputs if t != "/tf_static"]
    while True:
        reason = abort()
        if reason:
            raise ReplayEvalError(reason)
        missing = player.wait_for_subscribers(needed, timeout=0.0)
        matched = recorder.matched()
        if not missing and matched:
            return
        if time.monotonic() > deadline:
            raise ReplayEvalError(f"the detector node did not come up within {timeout} s (not subscribed to "
                                  f"{missing[:4]}{'...' if len(missing) > 4 else ''}; {DETECTIONS_TOPIC} matched "
                                  f"both ways: {matched})")
        time.sleep(0.05)


SYNC_TIMEOUTS: tuple[str, ...] = ("camera_timeout", "radar_timeout", "tf_timeout")


def node_param_values(params_file: str | Path | None, params: Mapping[str, Any],
                      names: Sequence[str]) -> dict[str, Any]:
    """Parameters `names` of the node as it will run: its defaults, then a params file (any node
    key), then -p overrides - the order rcl applies them."""
    import yaml

    from imkd_ros.params import PARAMS

    values = {p.name: p.default for p in PARAMS if p.name in names}
    if params_file is not None:
        doc = yaml.safe_load(Path(params_file).read_text()) or {}
        for section in doc.values() if isinstance(doc, dict) else ():
            ros = section.get("ros__parameters", {}) if isinstance(section, dict) else {}
            values.update({k: ros[k] for k in names if k in ros})
    values.update({k: params[k] for k in names if k in params})
    return values


def node_sync_timeouts(params_file: str | Path | None, params: Mapping[str, Any]) -> dict[str, float]:
    """The node's camera/radar/TF sync timeouts (s)."""
    return {k: float(v) for k, v in node_param_values(params_file, params, SYNC_TIMEOUTS).items()}


def node_sweep_rule(params_file: str | Path | None, params: Mapping[str, Any], radar_sweeps: int) -> Any:
    """The radar SweepRule the node will apply (its radar_* parameters; radar_sweeps 0 = the model's
    `radar_sweeps`), for the offline reader of the side-by-side evaluation."""
    from imkd_core.radar import SweepRule

    v = node_param_values(params_file, params, ("radar_sweeps", "radar_mode", "radar_tolerance", "radar_timeout",
                                                "radar_max_gap", "radar_max_age"))
    ns = {k: int(round(float(v[k]) * _NS)) for k in v if k not in ("radar_mode", "radar_sweeps")}
    return SweepRule(sweeps=int(v["radar_sweeps"]) or int(radar_sweeps), mode=str(v["radar_mode"]),
                     tolerance_ns=ns["radar_tolerance"], timeout_ns=ns["radar_timeout"],
                     max_gap_ns=ns["radar_max_gap"], max_age_ns=ns["radar_max_age"])


def barrier_offsets_ns(timeouts: Mapping[str, float]) -> list[int]:
    """Barrier points after a keyframe's stamp (ns), rule (c) of the module doc: the camera and
    radar timeouts exactly, and every 0.8 x the smallest timeout up to max(camera, radar) + TF."""
    cam, radar, tf = (int(round(timeouts[k] * _NS)) for k in SYNC_TIMEOUTS)
    step = max(1, int(0.8 * min(cam, radar, tf)))
    horizon = max(cam, radar) + tf
    points = {cam, radar} | set(range(step, horizon + step, step))
    return sorted(p for p in points if p > 0)


def set_node_parameter(node: Any, name: str, value: float, timeout: float = 10.0) -> bool:
    """Set one double parameter of the detector node through its parameter service (True: accepted)."""
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    client = node.create_client(SetParameters, f"/{NODE_NAME}/set_parameters")
    try:
        if not client.wait_for_service(timeout_sec=timeout):
            return False
        req = SetParameters.Request(parameters=[Parameter(
            name=name, value=ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=float(value)))])
        future = client.call_async(req)
        done = threading.Event()
        future.add_done_callback(lambda _: done.set())
        if not done.wait(timeout) or future.result() is None:
            return False
        return all(r.successful for r in future.result().results)
    finally:
        node.destroy_client(client)


def _log(text: str) -> None:
    print(f"[imkd-replay-eval] {text}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------
# Offline path and evaluation
# ----------------------------------------------------------------------------------------------


def _source_hw(nusc: Any, tokens: Sequence[str]) -> tuple[int, int]:
    """(H, W) of the CAM_FRONT images of these samples (sample_data table)."""
    sd = nusc.get("sample_data", nusc.get("sample", tokens[0])["data"]["CAM_FRONT"])
    if sd.get("height"):
        return int(sd["height"]), int(sd["width"])
    return 900, 1600


def make_reader(nusc: Any, tokens: Sequence[str], config: Any, radar_rule: Any = None) -> Any:
    """NuScenesReader over the scenes of `tokens`, decoding like the node (JPEG reduction from the
    model's input size), radar sweeps by `radar_rule` (default: SweepRule defaults with the model's
    sweep count, as the node's default parameters), no LiDAR."""
    from imkd_core.data.nuscenes import NuScenesReader
    from imkd_core.preprocess import jpeg_reduction

    scenes = sorted({nusc.get("scene", nusc.get("sample", t)["scene_token"])["name"] for t in tokens})
    reduction = jpeg_reduction(_source_hw(nusc, tokens), tuple(config.data.image_size))
    return NuScenesReader(nusc.dataroot, nusc.version, scenes=scenes, radar_sweeps=int(config.data.radar_sweeps),
                          load_lidar=False, image_reduction=reduction, nusc=nusc, radar_rule=radar_rule)


def offline_detections(reader: Any, tokens: Sequence[str], checkpoint: str | Path, device: str = "cpu",
                       limits: DetectionLimits | None = None, progress: bool = True) -> dict[str, Detections]:
    """Predictor detections of the given samples (the offline evaluator's path), decoded with the
    node's score threshold / top-K (`limits`) through the node's own apply_detection_limits."""
    from tqdm import tqdm

    from imkd_core.predict import Predictor
    from imkd_ros.params import apply_detection_limits

    predictor = Predictor(checkpoint=checkpoint, device=device)
    if limits is not None:
        apply_detection_limits(predictor, limits.score_threshold, limits.max_detections)
    out: dict[str, Detections] = {}
    for token in tqdm(tokens, desc="offline", unit="frame", disable=not progress, file=sys.stderr, leave=False):
        frame, _ = reader[reader.index_of(token)]
        out[token] = predictor.predict(frame)
    return out


def compare_detections(a: Mapping[str, Detections], b: Mapping[str, Detections], score_tol: float = 1e-4,
                       box_tol: float = 1e-3) -> dict[str, Any]:
    """Per-frame agreement of two detection sets on their common tokens.

    Frames "identical": same count, labels and (score-sorted) boxes/scores within tolerances.
    Returns counts and the largest absolute box/score differences over frames of equal size.
    """
    same = 0
    max_box = max_score = 0.0
    compared = 0
    for token in sorted(set(a) & set(b)):
        da, db = a[token], b[token]
        if len(da) != len(db):
            continue
        compared += 1
        ia = np.lexsort((da.boxes[:, 1], da.boxes[:, 0], da.labels, -np.round(da.scores, 4)))
        ib = np.lexsort((db.boxes[:, 1], db.boxes[:, 0], db.labels, -np.round(db.scores, 4)))
        if len(da) == 0:
            same += 1
            continue
        box = np.abs(_wrap_yaw(da.boxes[ia].astype(np.float64) - db.boxes[ib].astype(np.float64))).max()
        score = float(np.abs(da.scores[ia] - db.scores[ib]).max())
        labels_equal = bool((da.labels[ia] == db.labels[ib]).all())
        max_box, max_score = max(max_box, float(box)), max(max_score, score)
        if labels_equal and box <= box_tol and score <= score_tol:
            same += 1
    return {"frames_compared": len(set(a) & set(b)), "frames_same_count": compared, "frames_identical": same,
            "max_box_abs_diff": max_box, "max_score_abs_diff": max_score}


def _wrap_yaw(diff: np.ndarray) -> np.ndarray:
    diff = diff.copy()
    diff[:, 6] = (diff[:, 6] + np.pi) % (2 * np.pi) - np.pi
    return diff


def evaluate_detections(nusc: Any, reader: Any, tokens: Sequence[str], detections: Mapping[str, Detections],
                        out_dir: Path) -> dict[str, Any]:
    """Devkit metrics of `detections` on `tokens` (a token without detections = empty prediction)."""
    from imkd_core.evaluate import detections_to_results, evaluate

    dets = {t: detections.get(t, Detections.empty()) for t in tokens}
    poses = {t: reader.ego_to_global(reader.index_of(t)) for t in tokens}
    results = detections_to_results(dets, poses)
    return evaluate(nusc, nusc.version, results, tokens, out_dir, verbose=False)


def detections_json(detections: Mapping[str, Detections], keyframes: Mapping[int, str]) -> dict[str, Any]:
    """{token: {"stamp", "boxes" (N x 9 base_link), "scores", "labels" (class names)}} for the outputs."""
    stamp_of = {t: s for s, t in keyframes.items()}
    return {t: {"stamp": int(stamp_of.get(t, d.stamp)), "boxes": np.round(d.boxes.astype(np.float64), 5).tolist(),
                "scores": np.round(d.scores.astype(np.float64), 6).tolist(),
                "labels": [CLASSES[i] for i in d.labels]} for t, d in detections.items()}


def format_side_by_side(replay: Mapping[str, Any], offline: Mapping[str, Any] | None) -> str:
    """A table: headline metrics and per-class AP, replay | offline | difference."""
    head = f"{'metric':<24}{'replay':>10}" + (f"{'offline':>10}{'diff':>10}" if offline else "")
    lines = [head, "-" * len(head)]

    def row(name: str, a: float, b: float | None) -> str:
        text = f"{name:<24}{a:>10.4f}"
        if offline is not None and b is not None:
            text += f"{b:>10.4f}{a - b:>+10.4f}"
        return text

    for k in METRIC_KEYS:
        lines.append(row(k, replay[k], offline[k] if offline else None))
    lines.append(f"{'AP per class':<24}")
    for c in CLASSES:
        lines.append(row(f"  {c}", replay["per_class_AP"][c], offline["per_class_AP"][c] if offline else None))
    return "\n".join(lines)


def headline(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The headline metrics of an evaluate() result."""
    return {k: float(metrics[k]) for k in METRIC_KEYS}


def evaluate_side_by_side(nusc: Any, closed: ClosedLoopResult, checkpoint: str | Path, out_dir: Path,
                          offline: bool = True, device: str = "cpu", limits: DetectionLimits | None = None,
                          progress: bool = True, params_file: str | Path | None = None,
                          node_params: Mapping[str, Any] | None = None,
                          ) -> tuple[dict[str, Any], dict[str, Any] | None, dict[str, Detections] | None, Any]:
    """(replay metrics, offline metrics or None, offline detections or None, reader) on the bag's
    keyframes; the offline reader takes radar sweeps by the node's rule (params_file/node_params)."""
    from imkd_core.checkpoint import load_checkpoint
    from imkd_core.config import IMKDConfig

    tokens = list(closed.keyframes.values())
    config = IMKDConfig.from_dict(load_checkpoint(checkpoint)["config"])
    rule = node_sweep_rule(params_file, node_params or {}, int(config.data.radar_sweeps))
    reader = make_reader(nusc, tokens, config, radar_rule=rule)
    m_replay = evaluate_detections(nusc, reader, tokens, closed.detections, out_dir / "replay")
    if not offline:
        return m_replay, None, None, reader
    dets_off = offline_detections(reader, tokens, checkpoint, device=device, limits=limits, progress=progress)
    m_off = evaluate_detections(nusc, reader, tokens, dets_off, out_dir / "offline")
    return m_replay, m_off, dets_off, reader


# ----------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------


@dataclass
class ReplayEvalReport:
    """Everything a closed-loop evaluation produced (the demo draws from it)."""

    summary: dict[str, Any]                          # what replay_eval.json holds
    closed: ClosedLoopResult
    metrics_replay: dict[str, Any]
    metrics_offline: dict[str, Any] | None
    offline_detections: dict[str, Detections] | None
    nusc: Any
    reader: Any                                      # NuScenesReader over the bag's scene(s)


def run_replay_eval(
    bag: str | Path,
    checkpoint: str | Path,
    dataroot: str | Path,
    version: str | None = None,
    *,
    out_dir: str | Path = "replay_eval_out",
    rate: float = 1.0,
    lockstep: bool = True,
    offline: bool = True,
    params_file: str | Path | None = None,
    node_params: Mapping[str, Any] | None = None,
    score_threshold: float | None = None,
    max_detections: int | None = None,
    frame_timeout: float = 60.0,
    startup_timeout: float = 180.0,
    domain_id: int | None = None,
    device: str = "cpu",
    nusc: Any | None = None,
    progress: bool = True,
    verbose: bool = True,
) -> ReplayEvalReport:
    """The whole closed-loop evaluation (module doc); the summary is also written to out_dir/replay_eval.json.

    The node and the offline Predictor run on `device` with the same DetectionLimits
    (score_threshold / max_detections; default: the checkpoint config's decode settings).
    Raises BagError, CheckpointError, FileNotFoundError, NuScenesDataError or ReplayEvalError
    with a clear message on a missing/corrupt bag, checkpoint or dataset, or a failing node.
    """
    from imkd_core.data.nuscenes import load_nuscenes

    t0 = time.monotonic()
    out = Path(out_dir)
    limits = DetectionLimits.for_checkpoint(checkpoint, score_threshold, max_detections)  # fails early
    reader = open_bag(bag)
    try:
        if nusc is None:
            version = version or _version_from_source(bag_custom_data(reader).get("imkd.source", ""))
            if version is None:
                raise ReplayEvalError("cannot tell the bag's source dataset version (no 'imkd.source' in its "
                                      "custom_data): pass --version")
            nusc = load_nuscenes(str(dataroot), version)
        version = nusc.version
        frames = keyframes_of_bag(reader, nusc)
    finally:
        reader.close()
    known = {s["token"] for s in nusc.sample}
    unknown = [t for t in frames.values() if t not in known]
    if unknown:
        raise ReplayEvalError(f"{len(unknown)} keyframe sample tokens of the bag are not in {version} at "
                              f"{dataroot} (e.g. {unknown[0]}): is that the bag's source dataset?")
    out.mkdir(parents=True, exist_ok=True)
    if verbose:
        _log(f"{bag}: {len(frames)} keyframes; node {NODE_MODULE} with {checkpoint} on {device}; "
             f"{'lock-step' if lockstep else 'real-time'} at rate {rate}; score >= {limits.score_threshold}, "
             f"top {limits.max_detections}")
    params = {"device": device, **limits.node_params(), **(node_params or {})}
    closed = replay_closed_loop(bag, checkpoint, rate=rate, lockstep=lockstep, params_file=params_file,
                                node_params=params, keyframes=frames, frame_timeout=frame_timeout,
                                startup_timeout=startup_timeout, log_path=out / "node.log", domain_id=domain_id,
                                progress=progress)
    if closed.frames_received == 0:
        _log(f"the node published no detections for the bag's keyframes; its last output:\n"
             f"{_tail(out / 'node.log')}")
    m_replay, m_off, dets_off, ds_reader = evaluate_side_by_side(nusc, closed, checkpoint, out, offline=offline,
                                                                 params_file=params_file, node_params=params,
                                                                 device=device, limits=limits, progress=progress)
    write_json(out / "detections_replay.json", detections_json(closed.detections, frames))
    write_json(out / "node_frames.json", closed.node_frames)
    summary: dict[str, Any] = {"replay": headline(m_replay)}
    if m_off is not None:
        write_json(out / "detections_offline.json", detections_json(dets_off, frames))
        summary["offline"] = headline(m_off)
        summary["max_metric_abs_diff"] = max(abs(summary["replay"][k] - summary["offline"][k]) for k in METRIC_KEYS)
        summary["detections_agreement"] = compare_detections(closed.detections, dets_off)
    summary.update({
        "frames_expected": len(frames),
        "frames_received": closed.frames_received,
        "frames_missing": closed.missing,
        "extra_frames": closed.extra_frames,
        "lockstep": lockstep,
        "rate": rate,
        "score_threshold": limits.score_threshold,
        "max_detections": limits.max_detections,
        "bag": str(bag),
        "checkpoint": str(checkpoint),
        "version": version,
        "scenes": sorted({nusc.get("scene", nusc.get("sample", t)["scene_token"])["name"] for t in frames.values()}),
        "classes_with_gt": list(m_replay["classes_with_gt"]),
        "replay_publish_error_ms": closed.playback.get("publish_error_ms", {}),
        "trigger_to_detection_ms": closed.latency_ms,
        "message_errors": len(closed.message_errors),
        "messages_lost": closed.lost,
        "node_exit_code": closed.node_exit_code,
        "closed_loop_s": round(closed.seconds, 2),
        "seconds": round(time.monotonic() - t0, 2),
        "out": str(out),
    })
    summary["per_class_AP"] = {"replay": m_replay["per_class_AP"]}
    if m_off is not None:
        summary["per_class_AP"]["offline"] = m_off["per_class_AP"]
    write_json(out / "replay_eval.json", summary)
    if verbose:
        print(format_side_by_side(m_replay, m_off))
        print(f"frames: {closed.frames_received}/{len(frames)} received"
              + (f", missing {closed.missing}" if closed.missing else ""))
    return ReplayEvalReport(summary, closed, m_replay, m_off, dets_off, nusc, ds_reader)


def _version_from_source(source: str) -> str | None:
    """'nuScenes v1.0-synth synth-val-0001' (the converter's imkd.source) -> 'v1.0-synth'."""
    parts = source.split()
    return parts[1] if len(parts) >= 2 and parts[0] == "nuScenes" else None


def _tail(path: Path, n: int = 30) -> str:
    if not path.is_file():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="imkd-replay-eval", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bag", help="a bag written by imkd-nuscenes-to-bag (with ground truth)")
    p.add_argument("--checkpoint", required=True, help="student checkpoint for the node (and the offline run)")
    p.add_argument("--dataroot", required=True,
                   help="the bag's source dataset (the devkit scores against its annotations)")
    p.add_argument("--version", default=None, help="version folder (default: from the bag's custom_data)")
    p.add_argument("--rate", type=float, default=1.0, help="replay speed factor")
    p.add_argument("--realtime", action="store_true",
                   help="no lock-step: publish everything at --rate, frames the node misses count as empty")
    p.add_argument("--out", default="replay_eval_out", help="output folder")
    p.add_argument("--score-threshold", type=float, default=None,
                   help="decode threshold of node and offline Predictor (default: the checkpoint config's)")
    p.add_argument("--max-detections", type=int, default=None,
                   help="top-K per frame of node and offline Predictor (default: the checkpoint config's, <= 1000)")
    p.add_argument("--params-file", default=None, help="node parameters (default: the node's config/detector.yaml)")
    p.add_argument("--node-param", action="append", type=parse_node_param, default=[], metavar="NAME:=VALUE",
                   help="extra node parameter (repeatable), passed as -p NAME:=VALUE")
    p.add_argument("--no-offline", action="store_true", help="skip the offline evaluator")
    p.add_argument("--frame-timeout", type=float, default=60.0, help="seconds to wait for one frame's detections")
    p.add_argument("--startup-timeout", type=float, default=180.0, help="seconds for the node to come up")
    p.add_argument("--domain-id", type=int, default=None, help="ROS domain for the node and the player")
    p.add_argument("--device", default="cpu", help="inference device of the node and the offline Predictor")
    p.add_argument("--no-progress", action="store_true")
    return p


@cli_main(also=(BagError, ReplayEvalError, ValueError), prog="imkd-replay-eval")
def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: 0 on success; a user error (bag, checkpoint, dataset, flags) is one line on
    stderr and exit status 2."""
    args = build_parser().parse_args(argv)
    try:
        report = run_replay_eval(
            args.bag, args.checkpoint, args.dataroot, args.version, out_dir=args.out, rate=args.rate,
            lockstep=not args.realtime, offline=not args.no_offline, params_file=args.params_file,
            node_params=dict(args.node_param), score_threshold=args.score_threshold,
            max_detections=args.max_detections, frame_timeout=args.frame_timeout,
            startup_timeout=args.startup_timeout, domain_id=args.domain_id, device=args.device,
            progress=not args.no_progress)
    except KeyboardInterrupt:
        print("[imkd-replay-eval] interrupted", file=sys.stderr)
        return 130
    brief = {k: v for k, v in report.summary.items() if k != "per_class_AP"}
    print(json.dumps(_jsonable(brief)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
