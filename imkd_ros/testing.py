"""Drive the detector node over real DDS: frames as ROS messages, the node in its own process.

Shared by test/test_node_e2e.py, test/test_node_bad_input.py and train/bench_node.py, so the
tests and the benchmark publish frames, start the node and collect its results the same way.

- `RawFrame`: one frame's sensor data as a driver would publish it (original JPEG bytes + K,
  radar sweeps with all 18 PCD fields in the sensor frame, ego poses odom <- base_link at every
  stamp, sensor extrinsics base_link <- sensor). From nuScenes (`nuscenes_raw_frames`, the real
  tables and files, like the bag converter) or hand-made (`synthetic_raw_frames`).
- `raw_frame_to_sensor_frame`: the offline SensorFrame of a RawFrame, composed exactly like
  imkd_core.data.nuscenes.NuScenesReader (the reference for synthetic frames; for nuScenes the
  tests use the reader itself).
- `NodeProcess`: `imkd-detector --ros-args --params-file config/detector.yaml --params-file <overrides>`
  as a subprocess with its log in a file.
- `DetectorClient`: an rclpy node in this process (own context, background executor) that
  publishes frames and static TF, and collects detections, timing, diagnostics; sets parameters.
- `FramePlayer`: publishes frames one at a time (static TF/CameraInfo changes first) and waits
  for each frame's detections, measuring last-message-published -> detections-received.

Frames complete by evidence, not by timeouts (deterministic whatever the load): the default
camera_offsets make every camera final on its own image, and with only the keyframe radar sweeps
published a `radar_tolerance` of 10 ms makes each keyframe sweep the closing one. Sensor topics
are reliable (`sensor_reliability`): a burst of six full-size nuScenes JPEGs to best-effort
readers loses messages on a loaded machine, and a lost image would stall or change a frame.
(`HARNESS_NODE_PARAMS`.)
"""

from __future__ import annotations

import math
import os
import os.path as osp
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

import cv2
import numpy as np
import yaml

from imkd_core.frame import CAMERAS, CLASSES, RADARS, Detections, SensorFrame
from imkd_core.radar import RADAR_PCD_FIELDS, RADAR_PCD_SIZES, RADAR_PCD_TYPES, radar_features
from imkd_ros.params import default_params, default_params_file
from imkd_ros.rclpy_compat import publisher_count
from imkd_ros.topics import BASE_FRAME, MAP_FRAME, NODE_NAME, ODOM_FRAME, TOPICS, sensor_frame

NS = 1_000_000_000
# Node parameters the harness needs on top of config/detector.yaml (see the module docstring).
HARNESS_NODE_PARAMS: dict[str, Any] = {"radar_tolerance": 0.01, "stall_timeout": 5.0,
                                       "sensor_reliability": "reliable"}
RADAR_DTYPE = np.dtype([(n, {"F4": "<f4", "I1": "i1", "I2": "<i2"}[f"{t}{s}"])
                        for n, t, s in zip(RADAR_PCD_FIELDS, RADAR_PCD_TYPES, RADAR_PCD_SIZES)])


# ============================================================================ frames as raw sensor data
@dataclass
class RawCamera:
    """One camera image as a driver publishes it: encoded bytes + full-resolution K."""

    name: str
    frame_id: str
    stamp: int
    data: bytes
    K: np.ndarray
    width: int
    height: int


@dataclass
class RawSweep:
    """One radar sweep: (N,) structured points with the 18 nuScenes fields, sensor frame."""

    name: str
    frame_id: str
    stamp: int
    points: np.ndarray


@dataclass
class RawFrame:
    """Everything published for one frame (see the module docstring)."""

    stamp: int
    token: str
    scene: str
    cameras: list[RawCamera]
    sweeps: list[RawSweep]
    ego_poses: dict[int, np.ndarray]          # stamp -> odom <- base_link
    extrinsics: dict[str, np.ndarray]         # sensor frame id -> base_link <- sensor

    @property
    def last_stamp(self) -> int:
        return max([self.stamp] + [c.stamp for c in self.cameras] + [s.stamp for s in self.sweeps])


def _pose(translation: Sequence[float], rotation_wxyz: Sequence[float]) -> np.ndarray:
    from imkd_core.data.nuscenes import pose_matrix

    return pose_matrix(translation, rotation_wxyz)


def nuscenes_raw_frames(nusc: Any, sample_tokens: Iterable[str], radar_sweeps: int = 1) -> list[RawFrame]:
    """RawFrames of nuScenes samples: keyframe JPEG bytes, K and size of each camera; per radar the
    keyframe sweep and its `prev` chain up to `radar_sweeps` (files that exist, like the reader);
    ego poses at all those stamps; calibrated_sensor extrinsics. Frame ids as the bag converter."""
    from imkd_ros.nuscenes_to_bag import parse_pcd

    frames = []
    for token in sample_tokens:
        sample = nusc.get("sample", token)
        scene = nusc.get("scene", sample["scene_token"])["name"]
        poses: dict[int, np.ndarray] = {}
        extr: dict[str, np.ndarray] = {}

        def add(sd: dict, channel: str, poses: dict = poses, extr: dict = extr) -> tuple[int, str]:
            stamp = int(sd["timestamp"]) * 1000
            ep = nusc.get("ego_pose", sd["ego_pose_token"])
            poses[stamp] = _pose(ep["translation"], ep["rotation"])
            cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
            extr[sensor_frame(channel)] = _pose(cs["translation"], cs["rotation"])
            return stamp, sensor_frame(channel)

        cams = []
        for cam in CAMERAS:
            sd = nusc.get("sample_data", sample["data"][cam])
            stamp, fid = add(sd, cam)
            cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
            with open(osp.join(nusc.dataroot, sd["filename"]), "rb") as f:
                data = f.read()
            cams.append(RawCamera(cam, fid, stamp, data, np.asarray(cs["camera_intrinsic"], np.float64),
                                  int(sd["width"]), int(sd["height"])))
        sweeps = []
        for radar in RADARS:
            sd = nusc.get("sample_data", sample["data"][radar])
            for k in range(radar_sweeps):
                if k:
                    if not sd["prev"]:
                        break
                    sd = nusc.get("sample_data", sd["prev"])
                path = osp.join(nusc.dataroot, sd["filename"])
                if not osp.isfile(path):
                    continue
                stamp, fid = add(sd, radar)
                with open(path, "rb") as f:
                    pts = parse_pcd(f.read()).array().copy()
                sweeps.append(RawSweep(radar, fid, stamp, pts))
        ref = cams[0].stamp
        frames.append(RawFrame(ref, token, scene, cams, sweeps, poses, extr))
    return frames


# (x, y, z, yaw deg) of the 5 radars on a nuScenes-like car
_RADAR_RIG = ((3.4, 0.0, 0.6, 0.0), (2.4, 0.8, 0.5, 90.0), (2.4, -0.8, 0.5, -90.0), (-0.6, 0.6, 0.5, 180.0),
              (-0.6, -0.6, 0.5, 180.0))
_CAM_OFFSETS_MS = (0, 8, 15, 25, 35, -8)      # nuScenes-like firing pattern (CAMERAS order)
_RADAR_OFFSETS_MS = (5, 20, 35, 50, 65)


def _synthetic_ego(t_s: float) -> np.ndarray:
    """odom <- base_link of the synthetic drive: 8 m/s along a gentle left curve."""
    yaw = 0.05 * t_s
    T = np.eye(4)
    T[:3, :3] = [[math.cos(yaw), -math.sin(yaw), 0], [math.sin(yaw), math.cos(yaw), 0], [0, 0, 1]]
    T[:3, 3] = (8.0 * t_s, 0.2 * t_s * t_s, 0.0)
    return T


def _synthetic_image(rng: np.random.Generator, hw: tuple[int, int]) -> bytes:
    h, w = hw
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([x / w * 200, y / h * 200, (x + y) / (w + h) * 255], -1)
    for _ in range(10):
        x0, y0 = int(rng.integers(0, w - 40)), int(rng.integers(0, h - 40))
        img[y0:y0 + int(rng.integers(20, 120)), x0:x0 + int(rng.integers(20, 160))] = rng.uniform(0, 255, 3)
    img += rng.normal(0, 6, img.shape)
    ok, enc = cv2.imencode(".jpg", np.clip(img, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return enc.tobytes()


def _synthetic_sweep(rng: np.random.Generator, n: int) -> np.ndarray:
    pts = np.zeros(n, dtype=RADAR_DTYPE)
    pts["x"] = rng.uniform(3, 70, n)
    pts["y"] = rng.uniform(-15, 15, n)
    pts["z"] = rng.uniform(-0.5, 1.0, n)
    pts["dyn_prop"] = rng.integers(0, 8, n)
    pts["id"] = np.arange(n)
    pts["rcs"] = rng.normal(5, 5, n)
    for f in ("vx", "vy", "vx_comp", "vy_comp"):
        pts[f] = rng.normal(0, 3, n)
    pts["is_quality_valid"] = 1
    pts["ambig_state"] = np.where(rng.uniform(size=n) < 0.1, 4, 3)
    pts["invalid_state"] = np.where(rng.uniform(size=n) < 0.1, 1, 0)
    for f in ("x_rms", "y_rms", "pdh0", "vx_rms", "vy_rms"):
        pts[f] = rng.integers(0, 8, n)
    return pts


def synthetic_raw_frames(n: int = 4, seed: int = 0, src_hw: tuple[int, int] = (450, 800),
                         t0_ns: int = 1_600_000_000 * NS, period_s: float = 0.5,
                         radar_points: int = 60) -> list[RawFrame]:
    """Hand-made RawFrames (no dataset): a nuScenes-like rig on a moving car, smooth JPEG images,
    radar returns with every filter state, nuScenes-like sensor time offsets."""
    from imkd_core.models.synthetic import nuscenes_like_rig

    rng = np.random.default_rng(seed)
    K, T_cam = nuscenes_like_rig(src_hw)
    extr = {sensor_frame(c): T_cam[i] for i, c in enumerate(CAMERAS)}
    for r, (x, y, z, yaw) in zip(RADARS, _RADAR_RIG):
        T = np.eye(4)
        a = math.radians(yaw)
        T[:3, :3] = [[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]]
        T[:3, 3] = (x, y, z)
        extr[sensor_frame(r)] = T
    frames = []
    for k in range(n):
        stamp = t0_ns + int(round(k * period_s * NS))
        stamps = [stamp + o * 1_000_000 for o in _CAM_OFFSETS_MS] + [stamp + o * 1_000_000 for o in _RADAR_OFFSETS_MS]
        cams = [RawCamera(c, sensor_frame(c), stamps[i], _synthetic_image(rng, src_hw), K[i], src_hw[1], src_hw[0])
                for i, c in enumerate(CAMERAS)]
        sweeps = [RawSweep(r, sensor_frame(r), stamps[len(CAMERAS) + i], _synthetic_sweep(rng, radar_points))
                  for i, r in enumerate(RADARS)]
        poses = {s: _synthetic_ego((s - t0_ns) / NS) for s in [stamp] + stamps}
        frames.append(RawFrame(stamp, f"synthetic-{seed}-{k}", f"synthetic-{seed}", cams, sweeps, poses, dict(extr)))
    return frames


def raw_frame_to_sensor_frame(raw: RawFrame, image_reduction: int) -> SensorFrame:
    """The offline SensorFrame of a RawFrame, composed as NuScenesReader does (decode at
    1/image_reduction, K scaled to the decoded size, sensor -> ego(own stamp) -> odom ->
    ego(reference), radar through the shared radar_features, sweeps newest first)."""
    from imkd_core.data.nuscenes import invert_pose
    from imkd_core.preprocess import decode_image, scale_intrinsics
    from imkd_ros.msgs import pointcloud2_fields

    global_to_ref = invert_pose(raw.ego_poses[raw.stamp])
    n = len(CAMERAS)
    imgs, Ks, c2e = [], np.tile(np.eye(3), (n, 1, 1)), np.tile(np.eye(4), (n, 1, 1))
    for c, cam in enumerate(raw.cameras):
        img = decode_image(cam.data, image_reduction)
        K = cam.K
        if (img.shape[1], img.shape[0]) != (cam.width, cam.height):
            K = scale_intrinsics(K, img.shape[1] / cam.width, img.shape[0] / cam.height)
        imgs.append(img)
        Ks[c] = K
        c2e[c] = global_to_ref @ raw.ego_poses[cam.stamp] @ raw.extrinsics[cam.frame_id]
    chunks = [np.zeros((0, 7), np.float32)]
    for radar in RADARS:
        for s in sorted((s for s in raw.sweeps if s.name == radar), key=lambda s: -s.stamp):
            T = global_to_ref @ raw.ego_poses[s.stamp] @ raw.extrinsics[s.frame_id]
            pts = pointcloud2_fields(s.points, RADAR_PCD_FIELDS)
            chunks.append(radar_features(pts, T, (raw.stamp - s.stamp) * 1e-9))
    return SensorFrame(stamp=raw.stamp, images=np.stack(imgs), intrinsics=Ks, cam_to_ego=c2e,
                       camera_mask=np.ones(n, bool), radar=np.concatenate(chunks),
                       ego_to_global=raw.ego_poses[raw.stamp].copy(), token=raw.token).validate()


# ============================================================================ frames as messages
def static_tf_items(raw: RawFrame) -> list[tuple[str, str, int, np.ndarray]]:
    """/tf_static content: map -> odom identity and base_link -> every sensor frame."""
    return [(MAP_FRAME, ODOM_FRAME, 0, np.eye(4))] + [(BASE_FRAME, f, 0, T) for f, T in sorted(raw.extrinsics.items())]


def radar_cloud_msg(sweep: RawSweep) -> Any:
    """sensor_msgs/PointCloud2 of a sweep with its PCD field types (as the bag converter writes)."""
    from imkd_ros.msgs import array_to_pointcloud2

    return array_to_pointcloud2(sweep.points, sweep.stamp, sweep.frame_id)


def frame_messages(raw: RawFrame, transport: str = "compressed") -> list[tuple[str, Any]]:
    """(topic key of nuscenes_to_bag.TOPICS, message) in publication order: /tf with odom ->
    base_link at every stamp of the frame, then the sensors in stamp order (a camera's
    CameraInfo right before its image), as a bag would replay them."""
    from imkd_ros import msgs as M

    out: list[tuple[str, Any]] = [("tf", M.transforms_to_tf_message(
        [(ODOM_FRAME, BASE_FRAME, s, raw.ego_poses[s]) for s in sorted(raw.ego_poses)]))]
    events: list[tuple[int, int, list[tuple[str, Any]]]] = []
    for i, cam in enumerate(raw.cameras):
        info = M.K_to_camera_info(cam.K, cam.width, cam.height, cam.stamp, cam.frame_id)
        if transport == "raw":
            from imkd_core.preprocess import decode_image

            img = M.rgb_to_image(decode_image(cam.data), cam.stamp, cam.frame_id, "rgb8")
        else:
            img = M.bytes_to_compressed(cam.data, cam.stamp, cam.frame_id, "jpeg")
        events.append((cam.stamp, i, [(f"{cam.name}/camera_info", info), (cam.name, img)]))
    for j, s in enumerate(raw.sweeps):
        events.append((s.stamp, 100 + j, [(s.name, radar_cloud_msg(s))]))
    for _, _, msgs in sorted(events, key=lambda e: (e[0], e[1])):
        out += msgs
    return out


# ============================================================================ hostile images
def huge_jpeg(h: int = 60000, w: int = 60000) -> bytes:
    """A valid 16 x 16 JPEG (about 600 bytes) whose frame header (SOF0) declares h x w pixels."""
    ok, enc = cv2.imencode(".jpg", np.full((16, 16, 3), 128, np.uint8))
    buf = bytearray(enc.tobytes())
    i = buf.index(b"\xff\xc0")
    buf[i + 5:i + 9] = h.to_bytes(2, "big") + w.to_bytes(2, "big")
    return bytes(buf)


def huge_png(h: int = 100000, w: int = 100000) -> bytes:
    """An 8 x 8 PNG whose IHDR declares h x w pixels."""
    ok, enc = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))
    buf = bytearray(enc.tobytes())
    buf[16:24] = w.to_bytes(4, "big") + h.to_bytes(4, "big")
    return bytes(buf)


# ============================================================================ model helpers
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


@dataclass
class TestFrames:
    """Frames for a node test: what is published (raw) and the offline SensorFrames of the same samples."""

    source: str                      # "nuscenes" or "synthetic"
    raw: list[RawFrame]
    offline: list[SensorFrame]
    image_reduction: int


def load_test_frames(dataroot: str | Path | None, version: str = "v1.0-mini", per_scene: int = 3,
                     image_size: tuple[int, int] = (128, 352), radar_sweeps: int = 1, start: int = 0,
                     synthetic_n: int = 4, max_scenes: int | None = None, offline: bool = True) -> TestFrames:
    """`per_scene` consecutive samples (from `start`) of each scene of a nuScenes dataroot (the
    first `max_scenes` in reverse name order: the real subset then jumps back in time between its
    two scenes, like a bag loop), with their NuScenesReader frames (`offline`); without a
    dataroot, `synthetic_n` synthetic frames with raw_frame_to_sensor_frame references."""
    from imkd_core.preprocess import jpeg_reduction

    if dataroot is None:
        raw = synthetic_raw_frames(synthetic_n)
        r = jpeg_reduction((raw[0].cameras[0].height, raw[0].cameras[0].width), image_size)
        return TestFrames("synthetic", raw, [raw_frame_to_sensor_frame(f, r) for f in raw] if offline else [], r)
    from imkd_core.data.nuscenes import NuScenesReader, load_nuscenes

    nusc = load_nuscenes(str(dataroot), version)
    sd = nusc.get("sample_data", nusc.sample[0]["data"]["CAM_FRONT"])
    r = jpeg_reduction((int(sd["height"]), int(sd["width"])), image_size)
    reader = NuScenesReader(dataroot, version, radar_sweeps=radar_sweeps, load_lidar=False, image_reduction=r,
                            nusc=nusc)
    tokens = []
    for scene in sorted(reader.scenes, reverse=True)[:max_scenes]:
        tokens += [t for t in reader.sample_tokens if reader.scene_of[t] == scene][start:start + per_scene]
    raw = nuscenes_raw_frames(nusc, tokens, radar_sweeps)
    frames = [reader[reader.index_of(t)][0] for t in tokens] if offline else []
    return TestFrames("nuscenes", raw, frames, r)


# ============================================================================ the node process
def node_command() -> list[str]:
    """The console script next to this interpreter (imkd-detector), else `python -m`."""
    script = Path(sys.executable).with_name("imkd-detector")
    if script.is_file():
        return [str(script)]
    found = shutil.which("imkd-detector")
    return [found] if found else [sys.executable, "-m", "imkd_ros.detector_node"]


class NodeProcess:
    """The detector node as a subprocess: defaults from config/detector.yaml, `params` override
    them through a second params file; output goes to `log_path`."""

    def __init__(self, params: Mapping[str, Any], log_path: str | Path, extra_args: Sequence[str] = (),
                 command: Sequence[str] | None = None) -> None:
        """`command`: what starts the node instead of node_command() (e.g. a python -c wrapper)."""
        self.log_path = Path(log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.override_path = self.log_path.with_suffix(".params.yaml")
        with open(self.override_path, "w") as f:
            yaml.safe_dump({f"/**/{NODE_NAME}": {"ros__parameters": dict(params)}}, f)
        base = default_params_file()
        files = (["--params-file", str(base)] if base else []) + ["--params-file", str(self.override_path)]
        self.cmd = list(command or node_command()) + list(extra_args) + ["--ros-args"] + files
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(self.cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait(self, timeout: float) -> int:
        """Wait for exit (e.g. a start-up error); returns the exit code."""
        return self.proc.wait(timeout=timeout)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGINT, then SIGKILL after `timeout`; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._log.close()
        return self.proc.returncode

    def __enter__(self) -> NodeProcess:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


# ============================================================================ the client node
@dataclass
class Received:
    """Messages the client got from the node, by kind (detections keyed by header stamp)."""

    detections: dict[int, list[tuple[Any, float]]] = field(default_factory=lambda: defaultdict(list))
    attributes: dict[int, list[Any]] = field(default_factory=lambda: defaultdict(list))  # ~/detection_attributes
    markers: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    timing: dict[int, dict] = field(default_factory=dict)
    diagnostics: list[Any] = field(default_factory=list)


class DetectorClient:
    """An rclpy node in this process that feeds the detector and listens to it (see module doc)."""

    def __init__(self, node_name: str = NODE_NAME, params: Mapping[str, Any] | None = None,
                 transport: str = "compressed") -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from rosgraph_msgs.msg import Clock
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
        from std_msgs.msg import String
        from tf2_msgs.msg import TFMessage
        from vision_msgs.msg import Detection3DArray
        from visualization_msgs.msg import MarkerArray

        p = {**default_params(), **(params or {})}
        self.node_name = node_name
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
        self.received = Received()
        self._cond = threading.Condition()
        base = f"/{node_name}"
        # taken serialized: "received" is when the bytes arrive; turning them into Python objects
        # (~14 ms for 100 boxes in rclpy, a cost of a Python consumer) happens later, on demand
        self._det_type = Detection3DArray
        self.det_sub = self.node.create_subscription(Detection3DArray, f"{base}/detections", self._on_det, reliable,
                                                     raw=True)
        self.node.create_subscription(PointCloud2, f"{base}/detection_attributes", self._on_attributes, reliable)
        self.node.create_subscription(MarkerArray, f"{base}/markers", self._on_markers, reliable)
        self.node.create_subscription(String, f"{base}/timing", self._on_timing, reliable)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, reliable)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()
        self._static: list | None = None
        self._calib: dict[str, tuple] = {}

    # ---------------------------------------------------------------- plumbing
    def _spin(self) -> None:
        try:
            while self.context.ok():
                self.executor.spin_once(timeout_sec=0.05)
        except Exception:  # noqa: BLE001 - shutdown races end the spin thread quietly
            pass

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

    # ---------------------------------------------------------------- publishing
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

    # ---------------------------------------------------------------- results
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
            n = len(self.received.diagnostics)
            self.wait_until(lambda n=n: len(self.received.diagnostics) != n, max(0.0, deadline - time.monotonic()))
        return self.diagnostics_values()

    def _call_service(self, srv_type: Any, name: str, request: Any, timeout: float) -> Any:
        """One call of the node's service `name` (plain clients: Humble has no AsyncParameterClient)."""
        client = self.node.create_client(srv_type, f"/{self.node_name}/{name}")
        try:
            if not client.wait_for_service(timeout_sec=timeout):
                raise TimeoutError(f"service /{self.node_name}/{name} not available")
            fut = client.call_async(request)
            if not self.wait_until(fut.done, timeout) or fut.result() is None:
                raise TimeoutError(f"/{self.node_name}/{name} did not answer")
            return fut.result()
        finally:
            self.node.destroy_client(client)

    def set_parameters(self, values: Mapping[str, Any], timeout: float = 10.0) -> list[Any]:
        """Set node parameters through its parameter services -> SetParametersResult per value."""
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        req = SetParameters.Request(parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()])
        return list(self._call_service(SetParameters, "set_parameters", req, timeout).results)

    def get_parameters(self, names: Sequence[str], timeout: float = 10.0) -> dict[str, Any]:
        from rcl_interfaces.srv import GetParameters
        from rclpy.parameter import parameter_value_to_python

        res = self._call_service(GetParameters, "get_parameters", GetParameters.Request(names=list(names)), timeout)
        return {n: parameter_value_to_python(v) for n, v in zip(names, res.values)}

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
                 params: Mapping[str, Any] | None = None) -> dict[int, SensorFrame]:
    """{stamp: SensorFrame} the node's FrameAssembler builds from a bag's messages in bag order.

    The node's own conversions and its parameters (defaults + `params`), decoding like the node
    (JPEG reduction for the model's `image_size` (H, W)), holding an image until its CameraInfo;
    `triggers`: the only CAM_FRONT stamps that start frames (the lock-step replay's keyframes;
    None = all). Without DDS and threads this is the node's frame building with one fixed message
    order: the reference the closed loop must reproduce, and a check of the shared sweep rule.
    """
    from rclpy.serialization import deserialize_message

    from imkd_core.preprocess import jpeg_reduction
    from imkd_ros import msgs as M
    from imkd_ros.assembler import FrameAssembler
    from imkd_ros.params import assembler_config
    from imkd_ros.replay import message_class, open_bag

    p = {**default_params(), **(params or {})}
    asm = FrameAssembler(assembler_config(p, radar_sweeps))
    keys = {TOPICS[k]: k for k in [*CAMERAS, *(f"{c}/camera_info" for c in CAMERAS), *RADARS, "tf", "tf_static"]}
    only = None if triggers is None else set(triggers)
    infos: dict[str, Any] = {}
    held: dict[str, Any] = {}
    frames: dict[int, SensorFrame] = {}

    def add_image(cam: str, msg: Any) -> None:
        stamp = M.stamp_to_ns(msg.header.stamp)
        if cam == "CAM_FRONT" and only is not None and stamp not in only:
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
            elif key in CAMERAS:
                add_image(key, msg)
            else:
                asm.add_radar(key, M.stamp_to_ns(msg.header.stamp), M.radar_points(msg), msg.header.frame_id)
            frames.update((f.stamp, f) for f in asm.poll())
    finally:
        reader.close()
    frames.update((f.stamp, f) for f in asm.poll(2**62))  # the end of the bag: every timeout passes
    return frames


def frame_differences(a: SensorFrame, b: SensorFrame, atol: float = 1e-5) -> list[str]:
    """What differs between two SensorFrames of one stamp (empty: the same frame up to float
    round-off of the pose maths): pixels, K, masks exactly; poses and radar rows within atol."""
    out = []
    if not np.array_equal(a.camera_mask, b.camera_mask):
        out.append(f"camera_mask {a.camera_mask.tolist()} != {b.camera_mask.tolist()}")
    if a.images.shape != b.images.shape or not np.array_equal(a.images, b.images):
        out.append("images differ")
    for name in ("intrinsics", "cam_to_ego", "ego_to_global"):
        x, y = getattr(a, name), getattr(b, name)
        if x.shape != y.shape or not np.allclose(x, y, atol=atol, rtol=0):
            out.append(f"{name} differ (max {np.abs(x - y).max() if x.shape == y.shape else 'shape'})")
    if a.radar.shape != b.radar.shape:
        out.append(f"radar {a.radar.shape} != {b.radar.shape} (dt {sorted(set(np.round(a.radar[:, 6], 3)))} vs "
                   f"{sorted(set(np.round(b.radar[:, 6], 3)))})")
    elif not np.allclose(a.radar, b.radar, atol=atol, rtol=1e-6):
        out.append(f"radar rows differ (max {np.abs(a.radar - b.radar).max():.2e})")
    return out
