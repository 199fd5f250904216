"""The IMKD detector node: a rig's cameras and radars (nuScenes: 6 + 5) + TF in, vision_msgs/Detection3DArray out
(+ ~/detection_attributes: velocity, score and class per box, index-aligned; imkd_ros.msgs).

    imkd-detector [--ros-args --params-file my.yaml -p checkpoint:=student.pt -p device:=cuda]
    ros2 launch imkd_ros detector.launch.py checkpoint:=student.pt        (real ROS installs)

A thin rclpy wrapper (docs/design.md, "The ROS 2 node"): input callbacks check each message
(imkd_ros.input_checks), convert it (imkd_ros.msgs) and buffer it (imkd_ros.assembler, which owns
the time synchronisation and the TfBuffer); images stay JPEG bytes. Inference has its own
thread, woken by every accepted input while a frame is in assembly (and every 50 ms for the
stall flush): it takes the newest completed frame, decodes that frame's images
(`_decode_image`, the one place images are decoded) and runs imkd_core.predict.Predictor, so
decode work scales with the inference rate and inputs never queue behind the model
(docs/design.md, "Live operation"). No model math lives here.

Bad input never raises out of a callback: it is dropped, counted by kind and logged with a
per-kind throttle (imkd_ros.diagnostics, on /diagnostics). Parameters are declared from
imkd_ros.params.PARAMS, `rig` first: the topic lists, trigger camera and camera offsets default
to the rig's (imkd_core.rig), which must be the checkpoint's. They are validated at start (exit
code 2 with every problem listed) and, for the few that may change at run time, in the
set-parameters callbacks.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock, ClockChange, ClockType, JumpThreshold, TimeJump
from rclpy.duration import Duration
from rclpy.exceptions import (
    InvalidParameterTypeException,
    InvalidParameterValueException,
    InvalidTopicNameException,
    ParameterException,
)
from rclpy.executors import ExternalShutdownException
from rclpy.logging import get_logger
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import String
from tf2_msgs.msg import TFMessage
from vision_msgs.msg import Detection3DArray
from visualization_msgs.msg import MarkerArray

from imkd_core.frame import SensorFrame
from imkd_core.rig import Rig, RigError, load_rig, rig_mismatch
from imkd_ros import input_checks as checks
from imkd_ros import msgs as M
from imkd_ros import param_files, rclpy_compat
from imkd_ros.assembler import FrameAssembler
from imkd_ros.diagnostics import BAD_KINDS, DiagnosticsReport, NodeState, Throttle, Window
from imkd_ros.params import (
    DYNAMIC_PARAMS,
    NS_PER_S,
    PARAM_SPECS,
    NodeConfigError,
    apply_detection_limits,
    assembler_config,
    change_problems,
    default_params,
    resolve_checkpoint,
    rig_defaults,
    rig_of_args,
    specs_for_rig,
    validate_params,
    with_default_params_file,
)
from imkd_ros.rclpy_compat import make_executor
from imkd_ros.tf_buffer import TfBuffer, TransformError, reparents_static, static_conflicts
from imkd_ros.topics import (
    ATTRIBUTES_TOPIC,
    DETECTIONS_TOPIC,
    DIAGNOSTICS_TOPIC,
    MARKERS_TOPIC,
    NODE_NAME,
    TIMING_TOPIC,
    TOPICS,
)


# ============================================================================ small helpers
class _EncodedImage:
    """An image message kept encoded in the assembler (imkd_ros.assembler.EncodedImage)."""

    __slots__ = ("node", "camera", "msg", "info")

    def __init__(self, node: DetectorNode, camera: int, msg: Any, info: Any) -> None:
        self.node, self.camera, self.msg, self.info = node, camera, msg, info

    def decode(self) -> tuple[np.ndarray, np.ndarray]:
        return self.node._decode_image(self.camera, self.msg, self.info)


# ============================================================================ the node
class DetectorNode(Node):
    """rclpy node 'imkd_detector': see the module docstring; raises NodeConfigError at start."""

    def __init__(self, **node_kwargs: Any) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        self.rig: Rig = self._declare_rig()
        self.p = self._declare_parameters()
        errors = validate_params(self.p, self.rig)
        ckpt = resolve_checkpoint(self.p["checkpoint"])  # MissingCheckpoint: one line, exit 2
        if not errors and not ckpt.is_file():
            errors.append(f"checkpoint = {self.p['checkpoint']!r}: file not found: {ckpt}")
        if errors:
            raise NodeConfigError("invalid parameters:\n  - " + "\n  - ".join(errors))

        self._lock = threading.Lock()  # node-side counters and state
        self.bad: Counter[str] = Counter(dict.fromkeys(BAD_KINDS, 0))
        self._throttle = Throttle(5.0)
        self.predictor = self._load_predictor(ckpt)
        model_cfg = self.predictor.config
        self._check_rig(model_cfg.data.rig, ckpt)
        self.radar_sweeps = int(self.p["radar_sweeps"] or model_cfg.data.radar_sweeps)
        try:
            acfg = assembler_config(self.p, self.radar_sweeps, self.rig)
        except ValueError as e:
            raise NodeConfigError(f"invalid synchronisation parameters: {e}") from e
        self.tf = TfBuffer(cache_time_ns=int(self.p["tf_cache_time"] * NS_PER_S),
                           max_extrapolation_ns=int(self.p["tf_max_extrapolation"] * NS_PER_S))
        self.assembler = FrameAssembler(acfg, self.tf)
        self.image_size: tuple[int, int] = tuple(model_cfg.data.image_size)  # type: ignore[assignment]
        self._flush_ns = max(acfg.camera_timeout_ns, acfg.radar_timeout_ns, acfg.tf_timeout_ns) + 1_000_000

        # per-camera state: newest CameraInfo (and recent ones by stamp), image held until CameraInfo
        n = len(self.rig.cameras)
        self._infos: list[dict[int, Any]] = [{} for _ in range(n)]
        self._latest_info: list[Any | None] = [None] * n
        self._held: list[Any | None] = [None] * n
        self._camera_frames: list[str | None] = [None] * n
        self._radar_frames: list[str | None] = [None] * len(self.rig.radars)
        # per radar: its field mapping, or None for the 18 ARS408 fields under their own names
        self._radar_fields = [None if r.nuscenes_layout else r.fields for r in self.rig.radars]
        self._newest_stamp: int | None = None
        self._last_input_mono: float | None = None
        self._last_input_clock: int | None = None
        self._waiting: str | None = "no input yet"
        self.frames_published = 0
        self.ros_clock_resets = 0
        self.input_counts: Counter[str] = Counter()
        self._report = DiagnosticsReport()
        self.latency = {k: Window() for k in ("latency_ms", "processing_ms", "wait_ms", "age_ms")}
        # node clock at the callback minus header stamp, every sensor and /tf message (lag behind the stream)
        self.latency["input_lag_ms"] = Window(5000)
        self.stage_ms: dict[str, Window] = {}

        if self.p["warmup"]:  # before the subscriptions exist: being subscribed means ready
            self._warmup()
        self._started = time.monotonic()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._create_interfaces()
        self._worker = threading.Thread(target=self._inference_loop, name="imkd_inference", daemon=True)
        self._worker.start()
        rclpy_compat.pre_set_parameters_callback(self, self._pre_set_parameters)  # Iron+ API or fallback
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._jump_handle = self.get_clock().create_jump_callback(
            JumpThreshold(min_forward=None, min_backward=Duration(nanoseconds=-int(self.p["max_clock_jump_back"]
                                                                                   * NS_PER_S)),
                          on_clock_change=True),
            post_callback=self._on_clock_jump)
        if self.p["image_transport"] == "raw" and any(t.endswith("/compressed") for t in self.p["image_topics"]):
            self.get_logger().warning("image_transport is 'raw' but image_topics end in '/compressed': "
                                      "nothing will match those CompressedImage topics")
        self.get_logger().info(
            f"ready: model {model_cfg.name!r} ({model_cfg.data.image_size[0]}x{model_cfg.data.image_size[1]}) "
            f"from {ckpt} on {self.predictor.device}; rig {self.rig.name!r}: {n} {self.p['image_transport']} cameras, "
            f"{len(self.rig.radars)} radars "
            f"x {self.radar_sweeps} sweeps; publishing {self.det_pub.topic_name}, {self.attr_pub.topic_name}, "
            f"{self.marker_pub.topic_name}, "
            f"{self.timing_pub.topic_name}, /diagnostics")

    # ------------------------------------------------------------------ start-up
    def _declare_rig(self) -> Rig:
        """Declare `rig` first and load it: the other parameters' defaults depend on it."""
        spec = PARAM_SPECS["rig"]
        desc = ParameterDescriptor(name=spec.name, description=spec.description,
                                   additional_constraints=spec.constraint, read_only=True)
        try:
            value = self.declare_parameter(spec.name, spec.default, desc).value
        except InvalidParameterTypeException as e:
            raise NodeConfigError(f"invalid parameters: rig: expected a string like 'nuscenes' ({e})") from e
        try:
            return load_rig(str(value))
        except RigError as e:
            raise NodeConfigError(f"rig = {value!r}: {e}") from e

    def _check_rig(self, trained_for: str, ckpt: Path) -> None:
        """The node's rig must be the one the checkpoint was trained for (its data.rig)."""
        try:
            trained = load_rig(trained_for)
        except RigError as e:
            raise NodeConfigError(f"{ckpt} was trained for rig {trained_for!r}, which cannot be read here: {e}") from e
        problem = rig_mismatch(self.rig, trained)
        if problem:
            raise NodeConfigError(f"{problem} ({ckpt}); pass rig:={trained_for} or a checkpoint trained for "
                                  f"{self.rig.name!r}")

    def _declare_parameters(self) -> dict[str, Any]:
        values: dict[str, Any] = {"rig": self.get_parameter("rig").value}
        errors: list[str] = []
        for s in specs_for_rig(self.rig):
            if s.name == "rig":
                continue
            desc = ParameterDescriptor(name=s.name, description=s.description, additional_constraints=s.constraint,
                                       read_only=not s.dynamic)
            if s.float_range:
                desc.floating_point_range = [FloatingPointRange(from_value=s.float_range[0],
                                                                to_value=s.float_range[1], step=0.0)]
            if s.int_range:
                desc.integer_range = [IntegerRange(from_value=s.int_range[0], to_value=s.int_range[1], step=1)]
            try:
                values[s.name] = self._plain(self.declare_parameter(s.name, s.default, desc).value)
            except InvalidParameterTypeException as e:
                errors.append(f"{s.name}: expected a {param_files.yaml_type(s.default)} like {s.default!r} "
                              f"(write 1.0, not 1, for doubles) ({e})")
            except (InvalidParameterValueException, ParameterException) as e:
                errors.append(f"{s.name}: must be {s.constraint} ({e})")
        if errors:
            raise NodeConfigError("invalid parameters:\n  - " + "\n  - ".join(errors))
        return values

    @staticmethod
    def _plain(v: Any) -> Any:
        return list(v) if isinstance(v, (list, tuple)) or hasattr(v, "tolist") else v

    def _load_predictor(self, ckpt: Path) -> Any:
        """Imported here: torch loads only once the parameters are known to be valid."""
        import torch

        from imkd_core.checkpoint import CheckpointError
        from imkd_core.config import ConfigError
        from imkd_core.predict import Predictor

        dev = self.p["device"]
        if dev.startswith("cuda") and not torch.cuda.is_available():
            raise NodeConfigError(f"device = {dev!r}: CUDA is not available to torch {torch.__version__} here "
                                  "(use device:=auto or cpu)")
        if dev.startswith("cuda:") and int(dev[5:]) >= torch.cuda.device_count():
            raise NodeConfigError(f"device = {dev!r}: only {torch.cuda.device_count()} CUDA device(s)")
        try:
            predictor = Predictor(config=self.p["model_config"] or None, checkpoint=ckpt, device=dev,
                                  backend=self.p["backend"], precision=self.p["precision"])
        except (CheckpointError, ConfigError) as e:
            raise NodeConfigError(f"cannot load the model: {e}") from e
        except Exception as e:  # noqa: BLE001 - e.g. a CUDA error: report it as a start-up failure
            raise NodeConfigError(f"cannot load the model on {dev!r}: {type(e).__name__}: {e}") from e
        apply_detection_limits(predictor, self.p["score_threshold"], self.p["max_detections"])
        return predictor

    def _warmup(self) -> None:
        H, W = self.image_size
        K, T = self.rig.calibration((H, W))
        n = len(self.rig.cameras)
        frame = SensorFrame(stamp=0, images=np.zeros((n, H, W, 3), np.uint8), intrinsics=K,
                            cam_to_ego=T, camera_mask=np.ones(n, bool), radar=np.zeros((0, 7), np.float32))
        t0 = time.perf_counter()
        try:
            self.predictor.predict(frame)
        except Exception as e:  # noqa: BLE001 - e.g. CUDA out of memory: fail at start, not per frame
            raise NodeConfigError(f"warm-up inference failed on {self.predictor.device}: "
                                  f"{type(e).__name__}: {e}") from e
        self.get_logger().info(f"warm-up inference: {(time.perf_counter() - t0) * 1e3:.0f} ms")

    def _create_interfaces(self) -> None:
        p = self.p
        raw = p["image_transport"] == "raw"
        image_type = Image if raw else CompressedImage
        self.cam_groups = [MutuallyExclusiveCallbackGroup() for _ in self.rig.cameras]
        self.radar_groups = [MutuallyExclusiveCallbackGroup() for _ in self.rig.radars]
        self.tf_group = MutuallyExclusiveCallbackGroup()
        self.diag_group = MutuallyExclusiveCallbackGroup()
        self.subs: list[Any] = []
        sensor_qos = QoSProfile(depth=p["sensor_queue_depth"], history=qos_profile_sensor_data.history,
                                durability=qos_profile_sensor_data.durability,
                                reliability=ReliabilityPolicy.RELIABLE if p["sensor_reliability"] == "reliable"
                                else qos_profile_sensor_data.reliability)
        try:
            for c, (topic, info_topic) in enumerate(zip(p["image_topics"], p["camera_info_topics"])):
                # CameraInfo first: when both are ready the executor serves it before the image
                self.subs.append(self.create_subscription(
                    CameraInfo, info_topic,
                    lambda m, c=c, t=info_topic: self._guard_cb(self._on_camera_info, c, m, topic=t),
                    sensor_qos, callback_group=self.cam_groups[c]))
                self.subs.append(self.create_subscription(
                    image_type, topic, lambda m, c=c, t=topic: self._guard_cb(self._on_image, c, m, topic=t),
                    sensor_qos, callback_group=self.cam_groups[c]))
            for r, topic in enumerate(p["radar_topics"]):
                self.subs.append(self.create_subscription(
                    PointCloud2, topic, lambda m, r=r, t=topic: self._guard_cb(self._on_radar, r, m, topic=t),
                    sensor_qos, callback_group=self.radar_groups[r]))
        except (ValueError, TypeError, InvalidTopicNameException) as e:
            raise NodeConfigError(f"invalid topic name: {e}") from e
        tf_qos = QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                            durability=DurabilityPolicy.VOLATILE)  # tf2_ros's dynamic listener QoS
        static_qos = QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                                durability=DurabilityPolicy.TRANSIENT_LOCAL)  # tf2_ros's static listener QoS
        for static, topic, qos in ((False, TOPICS["tf"], tf_qos), (True, TOPICS["tf_static"], static_qos)):
            self.subs.append(self.create_subscription(
                TFMessage, topic, lambda m, s=static, t=topic: self._guard_cb(self._on_tf, s, m, topic=t), qos,
                callback_group=self.tf_group))
        out_qos = QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
        self.det_pub = self.create_publisher(Detection3DArray, DETECTIONS_TOPIC, out_qos)
        self.attr_pub = self.create_publisher(PointCloud2, ATTRIBUTES_TOPIC, out_qos)  # index-aligned
        self.marker_pub = self.create_publisher(MarkerArray, MARKERS_TOPIC, out_qos)
        self.timing_pub = self.create_publisher(String, TIMING_TOPIC, out_qos)
        self.diag_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, out_qos)
        # steady-clock timer: it also ticks when a simulated clock stands still (paused bag)
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self._diag_timer = self.create_timer(float(p["diagnostics_period"]), self._publish_diagnostics,
                                             callback_group=self.diag_group, clock=steady)

    # ------------------------------------------------------------------ run-time parameters
    def _change_problems(self, params: list[Parameter]) -> list[str]:
        """Why a run-time change of our parameters would be refused (read-only, type, value)."""
        return change_problems(self.p, [(prm.name, self._plain(prm.value)) for prm in params])

    def _pre_set_parameters(self, params: list[Parameter]) -> list[Parameter]:
        """Runs before rclpy's own checks (read-only, ranges, types), which refuse without calling
        the on-set callback: count every refused change here (for /diagnostics) and log it."""
        reasons = self._change_problems(params)
        if reasons:
            self._count_bad("parameter_rejected", "; ".join(reasons))
        return params

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Validate run-time changes; apply the detection limits when accepted."""
        reasons = self._change_problems(params)
        if reasons:
            return SetParametersResult(successful=False, reason="; ".join(reasons))
        for prm in params:
            if prm.name in DYNAMIC_PARAMS:
                self.p[prm.name] = self._plain(prm.value)
        apply_detection_limits(self.predictor, self.p["score_threshold"], self.p["max_detections"])
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------ bookkeeping
    def _count_bad(self, kind: str, detail: str) -> None:
        with self._lock:
            self.bad[kind] += 1
        skipped = self._throttle(kind)
        if skipped is not None:
            more = f" (+{skipped} more since the last report)" if skipped else ""
            self.get_logger().warning(f"bad input [{kind}]: {detail}{more}")

    def _warn_throttled(self, key: str, text: str) -> None:
        skipped = self._throttle(key)
        if skipped is not None:
            self.get_logger().warning(text)

    def _guard_cb(self, fn: Callable[..., None], *args: Any, topic: str | None = None) -> None:
        """Run a callback; anything unexpected is logged and counted, never raised into rclpy.

        `topic`: the input counter ("count <topic>" in /diagnostics) rises when the message has
        been fully handled (in the assembler, held or refused), so a replay tool that waits for
        the counters knows the node's state includes every message it published.
        """
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001 - the node must survive any input
            self._count_bad("callback_errors", f"{type(e).__name__}: {e}")
            if self._throttle("traceback:" + type(e).__name__) is not None:
                self.get_logger().error(traceback.format_exc())
        finally:
            if topic is not None:
                with self._lock:
                    self.input_counts[topic] += 1

    def _now(self) -> int:
        return self.get_clock().now().nanoseconds

    def _input(self, stamp: int | None = None) -> None:
        """Note an input: the time of the newest input, the newest stamp."""
        now = self._now()
        with self._lock:
            self._last_input_mono = time.monotonic()
            self._last_input_clock = now
            if stamp is not None and (self._newest_stamp is None or stamp > self._newest_stamp):
                self._newest_stamp = stamp

    def _note_lag(self, stamp: int) -> None:
        """How far behind its stamp an input is handled (node clock; sim time when replaying)."""
        now = self._now()
        if now > 0:
            self.latency["input_lag_ms"].add((now - stamp) / 1e6)

    def _after_add(self, reset: bool, stamp: int) -> None:
        if reset:
            self.get_logger().warning(f"input stamps jumped back (to {stamp / 1e9:.3f} s): "
                                      f"sync buffers and dynamic TF reset ({self.assembler.last_error})")
            with self._lock:
                self._newest_stamp = stamp
        if self.assembler.pending:  # only a frame in assembly can complete now
            self._wake.set()

    def _on_clock_jump(self, jump: TimeJump) -> None:
        """The ROS clock (sim time) jumped back: reset, unless the inputs already did (their stamps
        jumped back first and the assembler reset itself): new data is then kept."""
        if jump.clock_change in (ClockChange.ROS_TIME_ACTIVATED, ClockChange.ROS_TIME_DEACTIVATED):
            self.get_logger().info(f"clock source changed ({jump.clock_change.name})")
        elif jump.delta.nanoseconds >= 0:
            return
        now = self._now()
        with self._lock:
            newest = self._newest_stamp
            stale = newest is not None and newest > now + self.p["max_clock_jump_back"] * NS_PER_S
            if stale:
                self._newest_stamp = None
                self.ros_clock_resets += 1
        if stale:
            self.tf.clear()
            self.assembler.reset()  # after the TF clear: held /tf of the new timeline goes back in
        if stale or jump.clock_change not in (ClockChange.ROS_TIME_ACTIVATED, ClockChange.ROS_TIME_DEACTIVATED):
            self.get_logger().warning(f"ROS clock jumped back by {-jump.delta.nanoseconds / 1e9:.3f} s (bag loop?)"
                                      + (": sync buffers and dynamic TF reset" if stale else ""))

    # ------------------------------------------------------------------ inputs
    def _on_camera_info(self, c: int, msg: CameraInfo) -> None:
        try:
            checks.check_camera_info(msg, self.p["camera_info_topics"][c])
        except checks.BadInput as e:
            self._count_bad(e.kind, e.detail)
            return
        stamp = M.stamp_to_ns(msg.header.stamp)
        infos = self._infos[c]
        infos[stamp] = msg
        while len(infos) > 8:
            del infos[min(infos)]
        self._latest_info[c] = msg
        held, self._held[c] = self._held[c], None
        if held is not None:
            self._on_image(c, held, was_held=True)

    def _on_image(self, c: int, msg: Any, was_held: bool = False) -> None:
        p = self.p
        topic, info_topic = p["image_topics"][c], p["camera_info_topics"][c]
        if not was_held:
            self._input()
        try:
            stamp = checks.header_stamp(msg, topic, self._now(), p["max_stamp_future"])
            if not was_held:
                self._note_lag(stamp)
            hw = checks.image_size(msg, topic, p["max_image_bytes"], p["max_image_size"])
            info = self._infos[c].get(stamp) or self._latest_info[c]
            if info is None:  # hold the newest image until the camera's CameraInfo arrives
                self._held[c] = msg
                raise checks.BadInput("waiting_camera_info", f"{topic}: no CameraInfo yet on {info_topic}; image held")
            checks.check_image_matches_info(hw, info, topic, info_topic)
        except checks.BadInput as e:
            self._count_bad(e.kind, e.detail)
            return
        self._camera_frames[c] = msg.header.frame_id
        with self._lock:
            self._newest_stamp = stamp if self._newest_stamp is None else max(self._newest_stamp, stamp)
        try:  # kept encoded: decoded by _decode_image only if a frame that is inferred uses it
            reset = self.assembler.add_camera(c, stamp, _EncodedImage(self, c, msg, info), None, msg.header.frame_id)
        except ValueError as e:
            self._count_bad("assembler_rejected", f"{topic}: {e}")
            return
        self._after_add(reset, stamp)

    def _decode_image(self, c: int, msg: Any, info: Any) -> tuple[np.ndarray, np.ndarray]:
        """The one function that decodes an image message -> (RGB at the JPEG reduction for the
        model input, K scaled to it). Runs on the inference thread for the frame it builds only
        (newest frame wins: skipped frames are never decoded). Raises MessageError, counted."""
        r = self.p["jpeg_reduction"] or _reduction(M.camera_info_image_size(info), self.image_size)
        try:
            rgb = M.msg_to_rgb(msg, r)
        except M.MessageError as e:
            self._count_bad(checks.image_error_kind(msg, e), f"{self.p['image_topics'][c]}: {e}")
            raise
        try:
            K = M.camera_info_to_K(info, image_hw=rgb.shape[:2])
        except M.MessageError as e:
            self._count_bad("camera_info_invalid", f"{self.p['camera_info_topics'][c]}: {e}")
            raise
        return rgb, K

    def _on_radar(self, r: int, msg: PointCloud2) -> None:
        topic = self.p["radar_topics"][r]
        self._input()
        try:
            stamp = checks.header_stamp(msg, topic, self._now(), self.p["max_stamp_future"])
            self._note_lag(stamp)
            pts, nan_points = checks.radar_points(msg, topic, self.p["max_radar_points"], self._radar_fields[r])
        except checks.BadInput as e:
            self._count_bad(e.kind, e.detail)
            return
        if nan_points is not None:  # those points are dropped, the sweep is kept
            self._count_bad(nan_points.kind, nan_points.detail)
        self._radar_frames[r] = msg.header.frame_id
        with self._lock:
            self._newest_stamp = stamp if self._newest_stamp is None else max(self._newest_stamp, stamp)
        try:
            reset = self.assembler.add_radar(r, stamp, pts, msg.header.frame_id)
        except ValueError as e:
            self._count_bad("assembler_rejected", f"{topic}: {e}")
            return
        self._after_add(reset, stamp)

    def _on_tf(self, static: bool, msg: TFMessage) -> None:
        topic = "/tf_static" if static else "/tf"
        items, problems = checks.transforms(msg, topic, static, self._now(), self.p["max_stamp_future"])
        for e in problems:
            self._count_bad(e.kind, e.detail)
        if not static and items:
            newest = max(it[2] for it in items)
            self._input(newest)
            self._note_lag(newest)
            conflicts = static_conflicts(self.tf, items)
            if conflicts:
                self._count_bad("tf_static_conflict", f"{topic}: {'; '.join(conflicts)}")
                items = [it for it in items if not reparents_static(self.tf, it[0], it[1])]
        if not items:
            return
        reset = self.assembler.add_transforms(items, static=static)
        self._after_add(reset, max(it[2] for it in items))

    # ------------------------------------------------------------------ inference
    def _ready(self) -> str | None:
        """None when frames can be built, else what the node waits for."""
        p = self.p
        try:
            self.tf.latest_common_time(p["fixed_frame"], p["base_frame"])
        except TransformError:
            return f"TF {p['fixed_frame']} <- {p['base_frame']} (odometry on /tf)"
        trig = self.rig.camera_names.index(p["trigger_camera"])
        frame = self._camera_frames[trig]
        if frame is None:
            if any(self._held):
                return "CameraInfo on " + ", ".join(t for t, h in zip(p["camera_info_topics"], self._held) if h)
            return f"images on {p['image_topics'][trig]}"
        try:
            self.tf.latest_common_time(p["base_frame"], frame)
        except TransformError:
            return f"TF {p['base_frame']} <- {frame} (camera extrinsics on /tf_static)"
        return None

    def _inference_loop(self) -> None:
        """The inference thread: woken by every accepted input while a frame is in assembly, and
        every 50 ms (steady time) for the stall flush. Input callbacks never wait for it, and it
        never waits for them: it takes the newest completed frame when it is free."""
        while not self._stop.is_set():
            self._wake.wait(0.05)
            self._wake.clear()
            if self._stop.is_set() or not self.context.ok():
                break
            try:
                last = self._last_input_clock
                now = self._now()
                stalled = last is not None and now - last > self.p["stall_timeout"] * NS_PER_S
                self._infer_step(flush=stalled and self.assembler.pending > 0)
            except Exception as e:  # noqa: BLE001 - the thread must survive anything but shutdown
                if self._stop.is_set() or not self.context.ok():
                    break
                self._count_bad("callback_errors", f"inference loop: {type(e).__name__}: {e}")
                if self._throttle("traceback:inference_loop") is not None:
                    self.get_logger().error(traceback.format_exc())

    def destroy_node(self) -> None:
        """Stop the inference thread first (it publishes through this node), then destroy."""
        self._stop.set()
        self._wake.set()
        worker = getattr(self, "_worker", None)
        if worker is not None and worker is not threading.current_thread():
            worker.join(timeout=30.0)
        super().destroy_node()

    def _infer_step(self, flush: bool) -> None:
        waiting = self._ready()
        if waiting != self._waiting:
            self._waiting = waiting
            if waiting is None:
                self.get_logger().info("inputs complete: detecting")
        if waiting is not None:
            if self.assembler.pending:
                self._warn_throttled("waiting", f"waiting for {waiting}; frames are held")
            return
        poll_mono = time.monotonic()
        last_input = self._last_input_mono
        with self._lock:
            now_ns = self._newest_stamp + self._flush_ns if flush and self._newest_stamp is not None else None
        t0 = time.perf_counter()
        frames = self.assembler.poll(now_ns)  # decodes the images of the frames it returns
        decode_ms = self.assembler.poll_decode_ms
        build_ms = (time.perf_counter() - t0) * 1e3 - decode_ms
        for frame in frames:
            self._run(frame, poll_mono, last_input, build_ms / len(frames), decode_ms / len(frames))

    def _run(self, frame: SensorFrame, poll_mono: float, last_input: float | None, build_ms: float,
             decode_ms: float = 0.0) -> None:
        try:
            det = self.predictor.predict(frame)
        except Exception as e:  # noqa: BLE001 - a bad frame or a CUDA error must not end the node
            self._count_bad("inference_errors", f"frame {frame.stamp}: {type(e).__name__}: {e}")
            if self._throttle("inference_traceback") is not None:
                self.get_logger().error(traceback.format_exc())
            return
        stages = dict(self.predictor.last_timing)
        base = self.p["base_frame"]
        t0 = time.perf_counter()
        try:
            self.det_pub.publish(M.detections_to_cdr(det, base, frame.stamp))  # serialised: ~10x cheaper
            published = time.monotonic()
            self.attr_pub.publish(M.detections_to_attributes(det, base, frame.stamp))  # velocity, score, label
            t1 = time.perf_counter()
            if self.marker_pub.get_subscription_count():  # after the detections: RViz only
                self.marker_pub.publish(M.detections_to_markers(det, base, frame.stamp,
                                                                lifetime_s=float(self.p["marker_lifetime"])))
        except M.MessageError as e:
            self._count_bad("inference_errors", f"frame {frame.stamp}: detections not publishable: {e}")
            return
        t2 = time.perf_counter()
        age_ms = (self._now() - frame.stamp) / 1e6
        processing_ms = (published - poll_mono) * 1e3
        wait_ms = max(0.0, (poll_mono - last_input) * 1e3) if last_input is not None else 0.0
        latency_ms = (published - last_input) * 1e3 if last_input is not None else processing_ms
        stages.update(build=build_ms, decode_images=decode_ms, publish=(t1 - t0) * 1e3, markers=(t2 - t1) * 1e3)
        with self._lock:
            self.frames_published += 1
            for k, v in (("latency_ms", latency_ms), ("processing_ms", processing_ms), ("wait_ms", wait_ms),
                         ("age_ms", age_ms)):
                self.latency[k].add(v)
            for k, v in stages.items():
                self.stage_ms.setdefault(k, Window(100)).add(v)
        if self.timing_pub.get_subscription_count():
            self.timing_pub.publish(String(data=json.dumps({
                "stamp": int(frame.stamp), "detections": len(det), "cameras": int(frame.camera_mask.sum()),
                "radar_points": int(len(frame.radar)), "latency_ms": round(latency_ms, 3),
                "processing_ms": round(processing_ms, 3), "wait_ms": round(wait_ms, 3), "age_ms": round(age_ms, 3),
                "stages_ms": {k: round(v, 3) for k, v in stages.items()},
                # CLOCK_MONOTONIC (s): comparable with time.monotonic() of other processes on this host
                "monotonic": {"last_input": last_input, "poll": poll_mono, "published": published}})))

    # ------------------------------------------------------------------ diagnostics
    def diagnostics(self) -> DiagnosticArray:
        """The DiagnosticArray published every diagnostics_period (imkd_ros.diagnostics, README.md)."""
        p = self.p
        with self._lock:
            counts = dict(self.input_counts)
        stats = self.assembler.stats
        frames = [f for f in self._camera_frames + self._radar_frames if f is not None and not self._connected(f)]
        with self._lock:
            bad, published, resets = dict(self.bad), self.frames_published, self.ros_clock_resets
            latency = {k: w.summary() for k, w in self.latency.items()}
            stages = {k: w.summary() for k, w in self.stage_ms.items()}
        state = NodeState(
            name=self.get_name(), waiting_for=self._waiting, base_frame=p["base_frame"],
            input_topics=list(p["image_topics"]) + list(p["camera_info_topics"]) + list(p["radar_topics"])
            + ["/tf", "/tf_static"], sensor_topics=list(p["image_topics"]) + list(p["radar_topics"]),
            input_counts=counts, frames_without_tf=frames, frames_published=published,
            detections_subscribers=self.det_pub.get_subscription_count(), ros_clock_resets=resets,
            pending=self.assembler.pending, assembler_stats=stats, bad=bad, latency=latency, stages=stages,
            device=str(self.predictor.device), model=self.predictor.config.name)
        arr = self._report.build(state)
        arr.header.stamp = self.get_clock().now().to_msg()
        return arr

    def _connected(self, frame: str) -> bool:
        try:
            self.tf.latest_common_time(self.p["base_frame"], frame)
            return True
        except TransformError:
            return False

    def _publish_diagnostics(self) -> None:
        if not self.input_counts and time.monotonic() - self._started > 5.0:
            self._warn_throttled("no_input", "no input on any topic yet: check the topic names "
                                 f"({self.p['image_topics'][0]}, ...) and QoS (sensor_reliability: "
                                 f"{self.p['sensor_reliability']}; a reliable subscription ignores best-effort "
                                 "publishers), and that /tf and /tf_static are published")
        try:
            self.diag_pub.publish(self.diagnostics())
        except Exception:  # noqa: BLE001 - diagnostics must never take the node down
            if self._throttle("diagnostics_traceback") is not None:
                self.get_logger().error(traceback.format_exc())


def _reduction(src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> int:
    from imkd_core.preprocess import jpeg_reduction

    return jpeg_reduction(src_hw, dst_hw)


# ============================================================================ entry point
def main(args: Iterable[str] | None = None) -> int:
    """Console scripts imkd-detector / detector_node: run the node until Ctrl-C (exit 2 on bad config)."""
    argv = with_default_params_file(list(sys.argv if args is None else args))
    log = get_logger(NODE_NAME)
    try:  # the parameters are checked against the rig they will run with
        rig = load_rig(rig_of_args(argv))
    except RigError as e:
        log.fatal(f"cannot start: rig: {e}")
        return 2
    checked = param_files.check_args(argv, NODE_NAME, PARAM_SPECS, param_files.check_value_against(
        {**default_params(), **rig_defaults(rig)}, lambda p: validate_params(p, rig)))
    for w in checked.warnings:
        log.warning(w)
    if checked.errors:
        for e in checked.errors:
            log.fatal(f"cannot start: {e}")
        return 2
    try:
        rclpy.init(args=argv)
    except Exception as e:  # noqa: BLE001 - rcl's RCLError for arguments it cannot parse: one line, no traceback
        log.fatal(f"cannot start: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
        return 2
    node: DetectorNode | None = None
    try:
        try:
            node = DetectorNode()
        except (NodeConfigError, ParameterException) as e:  # ParameterException: e.g. use_sim_time's type
            log.fatal(f"cannot start: {e}")
            return 2
        executor, kind = make_executor(node.p["executor"], int(node.p["executor_threads"]))
        if kind != node.p["executor"]:
            node.get_logger().info(f"executor {node.p['executor']!r} is not available in this rclpy: using {kind!r}")
        executor.add_node(node)
        try:
            executor.spin()
        except (KeyboardInterrupt, ExternalShutdownException):
            pass
        finally:
            executor.shutdown(timeout_sec=2.0)
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
