"""What goes into one scene's bag: the time-sorted plan of every message, the ground truth in
base_link and the ego twist (nuScenes devkit tables in, numbers out; no message building)."""

from __future__ import annotations

import os
import sys
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from imkd_core.data.nuscenes import NuScenesDataError, sample_data_path
from imkd_core.frame import CLASSES
from imkd_core.geometry import quat_wxyz_conjugate, quat_wxyz_multiply, quat_wxyz_to_matrix, quat_wxyz_yaw
from imkd_core.rig import load_rig
from imkd_ros.bag_messages import BAG_VERSIONS, DEFAULT_DISTRO, CorruptInputError


@dataclass
class ConvertOptions:
    """How a scene is converted (the CLI flags)."""

    storage: str = "mcap"  # mcap | sqlite3
    distro: str = DEFAULT_DISTRO  # humble (bag v8, plays on Humble and Jazzy) | jazzy (v9)
    compression: str = "none"  # none | zstd
    lidar: bool = True
    ground_truth: bool = True
    on_corrupt: str = "skip"  # skip | stop
    overwrite: bool = False
    progress: bool = True
    fsync: bool = True
    rig: str = "nuscenes"  # imkd_core.rig: channel order, topics, frames, the reference camera

    def __post_init__(self) -> None:
        for name, value, allowed in (("storage", self.storage, ("mcap", "sqlite3")),
                                     ("distro", self.distro, tuple(BAG_VERSIONS)),
                                     ("compression", self.compression, ("none", "zstd")),
                                     ("on_corrupt", self.on_corrupt, ("skip", "stop"))):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")



def warn(msg: str) -> None:
    """One line on stderr, without breaking a tqdm progress bar."""
    try:
        from tqdm import tqdm
        tqdm.write(msg, file=sys.stderr)
    except ImportError:  # pragma: no cover
        print(msg, file=sys.stderr)


# ----------------------------------------------------------------------------------------------
# Devkit-side computations (ground truth, ego twist)
# ----------------------------------------------------------------------------------------------


def ego_twist(stamps_ns: np.ndarray, positions: np.ndarray, rotations_wxyz: np.ndarray,
              half_window_s: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Body-frame linear and angular velocity at each pose by central differences over the poses
    within +-half_window_s (at least the neighbours). Inputs sorted by stamp; returns (N,3), (N,3)."""
    t = np.asarray(stamps_ns, np.int64)
    n = len(t)
    if n < 2:
        return np.zeros((n, 3)), np.zeros((n, 3))
    h = int(half_window_s * 1e9)
    idx = np.arange(n)
    lo = np.minimum(np.searchsorted(t, t - h, side="left"), np.maximum(idx - 1, 0))
    hi = np.maximum(np.searchsorted(t, t + h, side="right") - 1, np.minimum(idx + 1, n - 1))
    dt = (t[hi] - t[lo]) * 1e-9
    ok = dt > 0
    dt = np.where(ok, dt, 1.0)
    p = np.asarray(positions, np.float64)
    q = np.asarray(rotations_wxyz, np.float64)
    rot = quat_wxyz_to_matrix(q)
    v_world = (p[hi] - p[lo]) / dt[:, None]
    linear = np.einsum("nji,nj->ni", rot, v_world)  # R^T v
    q_rel = quat_wxyz_multiply(quat_wxyz_conjugate(q[lo]), q[hi])
    q_rel *= np.where(q_rel[:, :1] < 0, -1.0, 1.0)
    vec = q_rel[:, 1:]
    norm = np.linalg.norm(vec, axis=1)
    angle = 2 * np.arctan2(norm, q_rel[:, 0])
    axis = np.divide(vec, norm[:, None], out=np.zeros_like(vec), where=norm[:, None] > 1e-12)
    angular = axis * (angle / dt)[:, None]
    linear[~ok] = 0.0
    angular[~ok] = 0.0
    return linear, angular


@lru_cache(maxsize=1)
def _category_map() -> Any:
    from nuscenes.eval.detection.utils import category_to_detection_name
    return category_to_detection_name


def sample_ground_truth(nusc: Any, sample_token: str, ref_sd_token: str) -> tuple[np.ndarray, list[str], list[str]]:
    """Annotations of a sample in base_link at the ego pose of `ref_sd_token` (the CAM_FRONT
    keyframe): (N, 9) BOX_COLUMNS boxes, detection class names, annotation tokens. Only the 10
    detection classes; velocity 0 where the devkit has none; no other filters."""
    to_name = _category_map()
    pose = nusc.get("ego_pose", nusc.get("sample_data", ref_sd_token)["ego_pose_token"])
    anns = [nusc.get("sample_annotation", tok) for tok in nusc.get("sample", sample_token)["anns"]]
    anns = [(a, to_name(a["category_name"])) for a in anns]
    anns = [(a, name) for a, name in anns if name in CLASSES]
    if not anns:
        return np.zeros((0, 9)), [], []
    t = np.array([a["translation"] for a, _ in anns], np.float64)
    size = np.array([a["size"] for a, _ in anns], np.float64)  # w, l, h
    q = np.array([a["rotation"] for a, _ in anns], np.float64)
    vel = np.array([nusc.box_velocity(a["token"]) for a, _ in anns], np.float64)
    vel = np.nan_to_num(vel, nan=0.0)
    rot_e = quat_wxyz_to_matrix(np.asarray(pose["rotation"], np.float64))
    boxes = np.zeros((len(anns), 9))
    boxes[:, 0:3] = (t - np.asarray(pose["translation"])) @ rot_e  # R^T (p - t)
    boxes[:, 3] = size[:, 1]
    boxes[:, 4] = size[:, 0]
    boxes[:, 5] = size[:, 2]
    boxes[:, 6] = quat_wxyz_yaw(quat_wxyz_multiply(quat_wxyz_conjugate(np.asarray(pose["rotation"], np.float64)), q))
    boxes[:, 7:9] = (vel @ rot_e)[:, :2]
    return boxes, [name for _, name in anns], [a["token"] for a, _ in anns]


# ----------------------------------------------------------------------------------------------
# Scene plan: every message of the scene as a lightweight, time-sorted event
# ----------------------------------------------------------------------------------------------

# event kinds, in the order used to break timestamp ties
EVENT_TF_STATIC, EVENT_POSE, EVENT_SENSOR, EVENT_GT = 0, 1, 2, 3


class Event(NamedTuple):
    stamp: int  # ns
    kind: int
    seq: int
    ref: Any  # kind-specific payload


@dataclass
class ScenePlan:
    """What goes into one scene's bag (file contents are loaded while writing)."""

    scene: dict
    channels: dict[str, str]  # channel -> modality, in output order
    calib: dict[str, dict]  # channel -> calibrated_sensor record
    events: list[Event]
    missing: Counter
    refused: list[str]  # "<token>: <reason>" of records without a usable filename (skipped)
    keyframes: dict[int, str]  # CAM_FRONT stamp ns -> sample token
    pose_stamps: np.ndarray  # (P,) ns, unique, sorted; the EVENT_POSE event seq indexes these arrays
    pose_positions: np.ndarray  # (P, 3) map frame
    pose_rotations: np.ndarray  # (P, 4) wxyz
    pose_linear: np.ndarray  # (P, 3) base_link
    pose_angular: np.ndarray  # (P, 3) base_link


def _scene_record(nusc: Any, scene_name: str) -> dict:
    for scene in nusc.scene:
        if scene["name"] == scene_name:
            return scene
    names = ", ".join(s["name"] for s in nusc.scene[:20])
    raise ValueError(f"unknown scene {scene_name!r} in {nusc.version} (available: {names}"
                     f"{', ...' if len(nusc.scene) > 20 else ''})")


def _channel_chain(nusc: Any, sd_token: str) -> list[dict]:
    """All sample_data records of one channel in the scene (keyframes and sweeps), in time order."""
    rec = nusc.get("sample_data", sd_token)
    while rec["prev"]:
        rec = nusc.get("sample_data", rec["prev"])
    chain = [rec]
    while rec["next"]:
        rec = nusc.get("sample_data", rec["next"])
        chain.append(rec)
    return chain


def plan_scene(nusc: Any, scene_name: str, options: ConvertOptions) -> ScenePlan:
    """Collect the scene's channels, files, ego poses and keyframes as time-sorted events."""
    scene = _scene_record(nusc, scene_name)
    samples = []
    tok = scene["first_sample_token"]
    while tok:
        s = nusc.get("sample", tok)
        samples.append(s)
        tok = s["next"]
    rig = load_rig(options.rig)
    order = {c: i for i, c in enumerate(rig.camera_names + rig.radar_names + (rig.lidar.name,))}
    channels: dict[str, str] = {}
    calib: dict[str, dict] = {}
    first_sd: dict[str, str] = {}
    for s in samples:  # a channel may start after the first keyframe
        for ch, sd_tok in s["data"].items():
            if ch not in first_sd:
                first_sd[ch] = sd_tok
    for ch in sorted(first_sd, key=lambda c: (order.get(c, len(order)), c)):
        cs = nusc.get("calibrated_sensor", nusc.get("sample_data", first_sd[ch])["calibrated_sensor_token"])
        channels[ch] = nusc.get("sensor", cs["sensor_token"])["modality"]
        calib[ch] = cs

    events: list[Event] = []
    missing: Counter = Counter()
    refused: list[str] = []
    poses: dict[int, str] = {}
    seq = 0
    root = str(nusc.dataroot)
    warned: set[str] = set()
    for ch, modality in channels.items():
        for rec in _channel_chain(nusc, first_sd[ch]):
            poses.setdefault(int(nusc.get("ego_pose", rec["ego_pose_token"])["timestamp"]) * 1000,
                             rec["ego_pose_token"])
            if modality == "lidar" and not options.lidar:
                continue
            try:  # no filename, or one that leaves the dataroot: counted and skipped like a corrupt file
                fname = sample_data_path(root, rec, nusc.version)
            except NuScenesDataError as exc:
                if options.on_corrupt == "stop":
                    raise CorruptInputError(str(exc)) from None
                refused.append(str(exc))
                warn(f"[nuscenes_to_bag] sample_data record skipped: {exc}")
                continue
            if not os.path.isfile(fname):
                missing[ch] += 1
                continue
            if rec["calibrated_sensor_token"] != calib[ch]["token"] and ch not in warned:
                cs = nusc.get("calibrated_sensor", rec["calibrated_sensor_token"])
                if cs["translation"] != calib[ch]["translation"] or cs["rotation"] != calib[ch]["rotation"]:
                    warned.add(ch)
                    print(f"[nuscenes_to_bag] warning: {ch} calibration changes within {scene_name}; "
                          "/tf_static carries the first one", file=sys.stderr)
            events.append(Event(int(rec["timestamp"]) * 1000, EVENT_SENSOR, seq, (ch, modality, Path(fname), rec)))
            seq += 1
    pose_stamps = np.array(sorted(poses), dtype=np.int64)
    pose_recs = [nusc.get("ego_pose", poses[int(t)]) for t in pose_stamps]
    positions = np.array([p["translation"] for p in pose_recs], np.float64).reshape(-1, 3)
    rotations = np.array([p["rotation"] for p in pose_recs], np.float64).reshape(-1, 4)
    linear, angular = ego_twist(pose_stamps, positions, rotations)
    for i, stamp in enumerate(pose_stamps):
        events.append(Event(int(stamp), EVENT_POSE, i, None))
    keyframes: dict[int, str] = {}
    for s in samples:
        cam = s["data"].get(rig.reference_camera)
        stamp = int(nusc.get("sample_data", cam)["timestamp"] if cam else s["timestamp"]) * 1000
        keyframes[stamp] = s["token"]
        if options.ground_truth:
            ref = cam or s["data"].get(rig.lidar.name) or next(iter(s["data"].values()))
            events.append(Event(stamp, EVENT_GT, len(keyframes), (s["token"], ref)))
    t0 = min(e.stamp for e in events) if events else int(samples[0]["timestamp"]) * 1000
    events.append(Event(t0, EVENT_TF_STATIC, 0, None))
    events.sort(key=lambda e: (e.stamp, e.kind, e.seq))
    return ScenePlan(scene, channels, calib, events, missing, refused, keyframes, pose_stamps, positions,
                     rotations, linear, angular)
