"""Closed-loop evaluation: bag -> replay -> detector node -> recorded detections -> devkit metrics.

    imkd-replay-eval BAG --checkpoint C --dataroot D [--version V] [--rate R] [--realtime]
                     [--out DIR] [--params-file F] [--node-param NAME:=VALUE ...] [--no-offline]

What it does:
1. starts the detector node in its own process (imkd_ros.harness.NodeProcess: `imkd-detector
   --ros-args --params-file config/detector.yaml --params-file <checkpoint:=C, ...>`), in the
   current ROS_DOMAIN_ID (or --domain-id), and waits until it subscribes to the bag's sensor topics;
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
(c) barriers: the node serves its inputs in parallel callback groups and decides its sync
    timeouts (camera/radar timeout after the trigger, TF timeout after the newest input a frame
    needs) in input time, the newest stamp it has handled. So, from each keyframe's stamp s_k on,
    the player stops before the first message stamped after each barrier point b and waits until
    the node's input counters (/diagnostics "count <topic>", which rise once a message is fully
    handled; 50 Hz here) show every message published so far. The points are s_k + the camera and
    radar timeouts exactly, and every 0.8 x the smallest timeout up to the largest camera/radar
    timeout + the TF timeout: then no timeout can fire because a callback lagged behind a
    later-stamped message (per topic, callbacks run in order), and the node builds every frame from
    exactly the inputs the offline reader uses. The timeouts are the running node's own
    parameters, asked from it once it is up.
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
import sys
import tempfile
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
from imkd_ros.harness import NODE_NAME, NodeListener, NodeProcess, get_node_parameters, set_node_parameters, spin
from imkd_ros.replay import BagError, BagPlayer, bag_custom_data, bag_keyframes, bag_topics, open_bag

__all__ = [
    "ClosedLoopResult",
    "DetectionLimits",
    "ReplayEvalError",
    "ReplayEvalReport",
    "barrier_offsets_ns",
    "detections_agreement",
    "evaluate_side_by_side",
    "main",
    "node_sweep_rule",
    "offline_detections",
    "replay_closed_loop",
    "run_replay_eval",
]

_NS = 1_000_000_000
DETECTIONS_TOPIC = f"/{NODE_NAME}/detections"
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
    from imkd_ros.nuscenes_to_bag import TOPICS

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


def parse_node_param(text: str) -> tuple[str, Any]:
    """'name:=value' -> (name, value), the value read as YAML, as rcl reads `-p name:=value`."""
    import yaml

    name, sep, value = text.partition(":=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"node parameter must look like name:=value, got {text!r}")
    try:
        return name, yaml.safe_load(value)
    except yaml.YAMLError as exc:
        raise argparse.ArgumentTypeError(f"node parameter {name}: {value!r} is not a YAML value") from exc


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
    node_parameters: dict[str, Any] = field(default_factory=dict)  # the running node's sync and radar parameters
    node_exit_code: int | None = None
    seconds: float = 0.0


def keyframes_of_bag(reader: Any, nusc: Any | None = None) -> dict[int, str]:
    """{CAM_FRONT stamp: sample token} of an open bag, sorted by stamp.

    From the converter's custom_data; else the /ground_truth/detections stamps matched to the
    CAM_FRONT keyframe times of `nusc` (exact microsecond match). ReplayEvalError if neither.
    """
    frames = bag_keyframes(reader)
    if not frames:
        from imkd_ros.nuscenes_to_bag import TOPICS

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
    running node's sync timeouts (`barrier_offsets_ns`).
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
    params = {"checkpoint": str(Path(checkpoint).resolve()), **(node_params or {})}
    if lockstep:  # fast input counters for the barriers; lossless delivery from the (reliable) player
        params.setdefault("diagnostics_period", 0.02)
        params.setdefault("sensor_reliability", "reliable")
        params.setdefault("sensor_queue_depth", 1000)  # reliable + deep: the player may run ahead of decoding
        params.setdefault("stall_timeout", 3600.0)     # (d): shortened after the last message
    state: dict[str, Any] = {"prev": None, "published": {}, "due": [], "barriers": 0, "barrier_timeouts": 0,
                             "barrier_s": 0.0}
    tmp = None
    if log_path is None:
        tmp = tempfile.TemporaryDirectory(prefix="imkd_replay_eval_")
        log_path = Path(tmp.name) / "node.log"

    context = Context()
    rclpy.init(context=context, domain_id=domain_id, signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node("imkd_replay_eval", context=context)
    executor = SingleThreadedExecutor(context=context)
    listener = NodeListener(node, depth=1000)
    executor.add_node(node)
    spinner = threading.Thread(target=spin, args=(executor, context, 0.1), daemon=True)
    spinner.start()
    detector: NodeProcess | None = None
    player: BagPlayer | None = None
    result = ClosedLoopResult(keyframes=dict(frames), detections={})
    bar = None
    try:
        detector = NodeProcess(params, log_path, params_file=params_file, env=env)

        def check() -> None:
            if not detector.alive():
                raise ReplayEvalError(f"the detector node exited with code {detector.proc.returncode}; its last "
                                      f"output:\n{detector.tail()}")

        def barrier() -> None:
            t0 = time.monotonic()
            target = dict(player.stats.published)
            if not _wait(listener, lambda: _handled(listener, target), barrier_timeout, check):
                state["barrier_timeouts"] += 1
                _log(f"the node had not handled every input after {barrier_timeout} s (lost messages?)")
            state["barriers"] += 1
            state["barrier_s"] += time.monotonic() - t0

        def wait_prev() -> None:
            prev = state["prev"]
            if prev is not None and not _wait(listener, lambda: _complete(listener, prev), frame_timeout, check):
                _log(f"no detections for keyframe {prev} within {frame_timeout} s; going on")

        def before_publish(topic: str, stamp: int) -> bool:
            due = state["due"]
            if lockstep and due and stamp > due[0]:
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
            state["prev"] = stamp
            state["published"][stamp] = time.monotonic()
            if bar is not None:
                bar.update()
            return True

        player = BagPlayer(bag, node, rate=rate, topics=inputs, before_publish=before_publish)
        _wait_for_node(player, listener, inputs, startup_timeout, check)
        result.node_parameters = get_node_parameters(node, NODE_RUN_PARAMS)
        offsets = barrier_offsets_ns(result.node_parameters)
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(frames), desc="closed loop", unit="keyframe", file=sys.stderr, leave=False)
        stats = player.run()
        if lockstep and state["prev"] is not None:
            if not _shorten_stall_timeout(node):  # (d): the bag ended, flush now
                _log("could not shorten the node's stall_timeout: the last keyframe waits for it")
            wait_prev()
        else:
            _wait_quiet(listener, quiet=2.0, timeout=frame_timeout)
        if bar is not None:
            bar.close()
        result.playback = {**stats.summary(), "barriers": state["barriers"],
                           "barrier_timeouts": state["barrier_timeouts"], "barrier_s": round(state["barrier_s"], 3)}
        # the node's input counters after the last message: give its callbacks time to count the
        # bag's tail (a loaded CPU can be seconds behind) before calling anything lost
        _wait(listener, lambda: _handled(listener, dict(stats.published)), barrier_timeout, check)
        seen = listener.received.diagnostics_seen
        if listener.wait_until(lambda: listener.received.diagnostics_seen > seen, 5.0):
            counts = listener.input_counts()
            result.lost = {t: n - counts[t] for t, n in stats.published.items() if t in counts and counts[t] < n}
    finally:
        if player is not None:
            player.close()
        if detector is not None:
            result.node_exit_code = detector.stop()
        # stop the spin thread before destroying what it waits on: destroying the node under a
        # running spin_once is a use-after-free in rclpy (an intermittent SIGSEGV of make demo)
        rclpy.try_shutdown(context=context)
        spinner.join(timeout=5.0)
        try:
            node.destroy_node()
        except Exception:  # noqa: BLE001 - the context is already shut down; nothing left to free
            pass
        if tmp is not None:
            tmp.cleanup()
    from imkd_ros.msgs import MessageError

    received: dict[int, Detections] = {}
    arrival: dict[int, float] = {}
    for stamp, got in list(listener.received.detections.items()):
        try:
            det = listener.detections(stamp)
        except MessageError as exc:
            result.message_errors.append(f"{stamp}: {exc}")
            det = Detections.empty(stamp)
        if det is not None:
            received[stamp], arrival[stamp] = det, got[0][1]
    result.node_frames = {frames[s]: dict(v) for s, v in listener.received.timing.items() if s in frames}
    result.detections = {frames[s]: det for s, det in received.items() if s in frames}
    result.frames_received = len(result.detections)
    result.extra_frames = sum(1 for s in received if s not in frames)
    result.missing = [frames[s] for s in stamps if s not in received]
    lat = [1e3 * (arrival[s] - state["published"][s]) for s in stamps if s in arrival and s in state["published"]]
    if lat:
        result.latency_ms = {"p50": float(np.percentile(lat, 50)), "p95": float(np.percentile(lat, 95)),
                             "max": float(np.max(lat))}
    result.seconds = time.monotonic() - t_start
    return result


def _wait(listener: NodeListener, predicate: Any, timeout: float, check: Any) -> bool:
    """listener.wait_until(predicate, timeout) in 0.2 s steps, calling check() (raises) between them."""
    deadline = time.monotonic() + timeout
    while not listener.wait_until(predicate, min(0.2, max(0.0, deadline - time.monotonic()))):
        check()
        if time.monotonic() >= deadline:
            return False
    return True


def _handled(listener: NodeListener, target: Mapping[str, int]) -> bool:
    """The node's input counters have reached `target` {topic: messages published}."""
    counts = listener.input_counts()
    return all(counts.get(t, 0) >= n for t, n in target.items())


def _complete(listener: NodeListener, stamp: int) -> bool:
    """Both halves of a frame's output (detections and their attributes) arrived."""
    return bool(listener.received.detections.get(stamp)) and bool(listener.received.attributes.get(stamp))


def _wait_quiet(listener: NodeListener, quiet: float, timeout: float) -> None:
    """Until no detections came for `quiet` s (or `timeout` s passed)."""
    deadline = time.monotonic() + timeout
    last, t_last = -1, time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        n = sum(len(v) for v in listener.received.detections.values())
        if n != last:
            last, t_last = n, time.monotonic()
        elif time.monotonic() - t_last >= quiet:
            return


def _shorten_stall_timeout(node: Any) -> bool:
    """Rule (d): stall_timeout 0.05 s on the running node (True: accepted)."""
    try:
        return all(r.successful for r in set_node_parameters(node, {"stall_timeout": 0.05}))
    except TimeoutError:
        return False


def _wait_for_node(player: BagPlayer, listener: NodeListener, inputs: Sequence[str], timeout: float,
                   check: Any) -> None:
    """Until the node subscribes to every input topic and its ~/detections writer and our reader
    have matched each other (the node's side from its /diagnostics)."""
    deadline = time.monotonic() + timeout
    needed = [t for t in inputs if t != "/tf_static"]
    while True:
        check()
        missing = player.wait_for_subscribers(needed, timeout=0.0)
        matched = listener.matched()
        if not missing and matched:
            return
        if time.monotonic() > deadline:
            raise ReplayEvalError(f"the detector node did not come up within {timeout} s (not subscribed to "
                                  f"{missing[:4]}{'...' if len(missing) > 4 else ''}; {DETECTIONS_TOPIC} matched "
                                  f"both ways: {matched})")
        time.sleep(0.05)


SYNC_TIMEOUTS: tuple[str, ...] = ("camera_timeout", "radar_timeout", "tf_timeout")
SWEEP_PARAMS: tuple[str, ...] = ("radar_sweeps", "radar_mode", "radar_tolerance", "radar_timeout", "radar_max_gap",
                                 "radar_max_age")
NODE_RUN_PARAMS: tuple[str, ...] = tuple(dict.fromkeys(SYNC_TIMEOUTS + SWEEP_PARAMS))


def node_sweep_rule(values: Mapping[str, Any], radar_sweeps: int) -> Any:
    """The radar SweepRule of node parameter `values` (its radar_* parameters; radar_sweeps 0 = the
    model's `radar_sweeps`), for the offline reader of the side-by-side evaluation."""
    from imkd_core.radar import SweepRule

    ns = {k: int(round(float(values[k]) * _NS)) for k in SWEEP_PARAMS if k not in ("radar_mode", "radar_sweeps")}
    return SweepRule(sweeps=int(values["radar_sweeps"]) or int(radar_sweeps), mode=str(values["radar_mode"]),
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
    from imkd_ros.detector_node import apply_detection_limits

    predictor = Predictor(checkpoint=checkpoint, device=device)
    if limits is not None:
        apply_detection_limits(predictor, limits.score_threshold, limits.max_detections)
    out: dict[str, Detections] = {}
    for token in tqdm(tokens, desc="offline", unit="frame", disable=not progress, file=sys.stderr, leave=False):
        frame, _ = reader[reader.index_of(token)]
        out[token] = predictor.predict(frame)
    return out


def detections_agreement(a: Mapping[str, Detections], b: Mapping[str, Detections], score_tol: float = 1e-4,
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
                          progress: bool = True,
                          ) -> tuple[dict[str, Any], dict[str, Any] | None, dict[str, Detections] | None, Any]:
    """(replay metrics, offline metrics or None, offline detections or None, reader) on the bag's
    keyframes; the offline reader takes radar sweeps by the rule the node ran with."""
    from imkd_core.checkpoint import load_checkpoint
    from imkd_core.config import IMKDConfig

    tokens = list(closed.keyframes.values())
    config = IMKDConfig.from_dict(load_checkpoint(checkpoint)["config"])
    rule = node_sweep_rule(closed.node_parameters, int(config.data.radar_sweeps))
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
        _log(f"{bag}: {len(frames)} keyframes; node {NODE_NAME} with {checkpoint} on {device}; "
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
                                                                 device=device, limits=limits, progress=progress)
    write_json(out / "detections_replay.json", detections_json(closed.detections, frames))
    write_json(out / "node_frames.json", closed.node_frames)
    summary: dict[str, Any] = {"replay": headline(m_replay)}
    if m_off is not None:
        write_json(out / "detections_offline.json", detections_json(dets_off, frames))
        summary["offline"] = headline(m_off)
        summary["max_metric_abs_diff"] = max(abs(summary["replay"][k] - summary["offline"][k]) for k in METRIC_KEYS)
        summary["detections_agreement"] = detections_agreement(closed.detections, dets_off)
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
