"""The closed loop: a bag replayed into the detector node (its own process), its detections recorded.

Default: lock-step, so the closed loop is deterministic however slow or busy the CPU.
Messages keep the bag's timing scaled by --rate, plus these rules:
(a) only keyframe images of the trigger camera (the rig's reference camera; nuScenes: CAM_FRONT)
    are published (sweep images would start frames nobody scores, and the node's newest-frame-wins
    policy could then drop a keyframe);
(b) before keyframe k+1's trigger image, wait for keyframe k's detections (--frame-timeout);
(c) barriers: the node takes its inputs in arrival order (topics in its executor's order, not
    in stamp order) and decides its sync timeouts (camera/radar timeout after the trigger, TF
    timeout after the newest input a frame needs) in input time, the newest stamp it has handled.
    So, from each keyframe's stamp s_k on, the player stops before the first message stamped
    after each barrier point and waits until the node's input counters (/diagnostics "count
    <topic>", which rise once a message is fully handled; 50 Hz here) show every message
    published so far. The points are s_k + the camera and radar timeouts exactly, and every
    0.8 x the smallest timeout up to the largest camera/radar timeout + the TF timeout: then no
    timeout can fire because a callback lagged behind a later-stamped message (per topic,
    callbacks run in order), and the node builds every frame from exactly the inputs the offline
    reader uses. The timeouts are the running node's own parameters, asked from it once it is up.
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

Used by imkd_ros.replay_eval, which scores the recorded detections next to the offline evaluator.
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from imkd_core.frame import Detections
from imkd_core.rig import Rig, load_rig
from imkd_ros.harness import NODE_NAME, NodeListener, NodeProcess, get_node_parameters, set_node_parameters, spin
from imkd_ros.replay import BagPlayer, bag_keyframes, bag_topics, open_bag

_NS = 1_000_000_000
DETECTIONS_TOPIC = f"/{NODE_NAME}/detections"


class ReplayEvalError(RuntimeError):
    """The closed loop could not run (node failed to start or died, bag without keyframes, ...)."""


def _input_topics(rig: Rig | None = None) -> dict[str, str]:
    """{key: topic} of the node's inputs (imkd_ros.topics.input_topics: the table or the rig's)."""
    from imkd_ros.topics import input_topics

    return input_topics(rig)


def trigger_topic(rig: Rig | None = None) -> str:
    """The image topic of the node's trigger camera: the rig's reference camera (nuScenes: CAM_FRONT)."""
    return _input_topics(rig)[rig.reference_camera if rig is not None else "CAM_FRONT"]



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


def keyframes_of_bag(reader: Any, nusc: Any | None = None, reference_camera: str = "CAM_FRONT") -> dict[int, str]:
    """{reference camera stamp: sample token} of an open bag, sorted by stamp.

    From the converter's custom_data; else the /ground_truth/detections stamps matched to the
    reference camera's (nuScenes: CAM_FRONT) keyframe times of `nusc` (exact microsecond match).
    ReplayEvalError if neither.
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
            cam = s["data"].get(reference_camera)
            if cam:
                by_us[int(nusc.get("sample_data", cam)["timestamp"])] = s["token"]
        for _, stamp, _ in reader.messages(connections=gt):
            token = by_us.get(int(stamp) // 1000)
            if token is not None:
                frames[int(stamp)] = token
        if not frames:
            raise ReplayEvalError(f"no /ground_truth/detections stamp of the bag is a {reference_camera} keyframe "
                                  f"time of {nusc.version}: is --dataroot/--version the bag's source dataset?")
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
    rig: str | None = None,
) -> ClosedLoopResult:
    """Start the node, replay the bag through it and record its detections (see the module doc).

    Lock-step protocol: rules (a)-(d) of the module doc; the barrier points come from the
    running node's sync timeouts (`barrier_offsets_ns`). rig: the node's rig parameter (a name or
    YAML path, imkd_core.rig; None = the node's default, nuScenes); the inputs are its topics.
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
    rig_spec = load_rig(rig) if rig is not None else None
    inputs = [t for t in _input_topics(rig_spec).values() if t in available]
    trigger = trigger_topic(rig_spec)
    if trigger not in available:
        raise ReplayEvalError(f"{bag} has no {trigger} (the node's trigger camera)")
    env = {} if domain_id is None else {"ROS_DOMAIN_ID": str(domain_id)}
    stamps = sorted(frames)
    params = {"checkpoint": str(Path(checkpoint).resolve()), **(node_params or {})}
    if rig is not None:
        params.setdefault("rig", str(rig))
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
    listener = NodeListener(node, depth=1000, markers=False)  # no MarkerArray: the node then builds none
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
                log(f"the node had not handled every input after {barrier_timeout} s (lost messages?)")
            state["barriers"] += 1
            state["barrier_s"] += time.monotonic() - t0

        def wait_prev() -> None:
            prev = state["prev"]
            if prev is not None and not _wait(listener, lambda: _complete(listener, prev), frame_timeout, check):
                log(f"no detections for keyframe {prev} within {frame_timeout} s; going on")

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
                log("could not shorten the node's stall_timeout: the last keyframe waits for it")
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
        listener.wait_until(lambda: all(k in listener.received.timing for k in listener.received.detections), 2.0)
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


def log(text: str) -> None:
    print(f"[imkd-replay-eval] {text}", file=sys.stderr, flush=True)
