"""Frames as a rig's drivers publish them, read from a nuScenes-format dataroot, and as ROS messages.

- `RawFrame`: one sample's sensor data: original JPEG bytes + K per camera, radar sweeps with all
  18 PCD fields in the sensor frame, ego poses odom <- base_link at every stamp, extrinsics
  base_link <- sensor; `nuscenes_raw_frames` reads them as the bag converter does, from the real
  subset or from a world written by imkd_core.data.synthetic.
- `load_frames`: RawFrames paired with the NuScenesReader's SensorFrames of the same samples (the
  offline reference the node must reproduce).
- `frame_messages`: a RawFrame as ROS messages in the order a bag replays them.
"""

from __future__ import annotations

import os.path as osp
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from imkd_core.frame import CAMERAS, RADARS, SensorFrame
from imkd_ros.topics import BASE_FRAME, MAP_FRAME, ODOM_FRAME, sensor_frame


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


def _pose(translation: Sequence[float], rotation_wxyz: Sequence[float]) -> np.ndarray:
    from imkd_core.geometry import pose_matrix_wxyz

    return pose_matrix_wxyz(translation, rotation_wxyz)


def nuscenes_raw_frames(nusc: Any, sample_tokens: Iterable[str], radar_sweeps: int = 1) -> list[RawFrame]:
    """RawFrames of nuScenes samples: keyframe JPEG bytes, K and size of each camera; per radar the
    keyframe sweep and its `prev` chain up to `radar_sweeps` (files that exist, like the reader);
    ego poses at all those stamps; calibrated_sensor extrinsics. Frame ids as the bag converter."""
    from imkd_core.pcd import parse_pcd

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


@dataclass
class FrameSet:
    """Frames for driving the node: what is published (raw) and the offline SensorFrames of the same samples."""

    source: str                      # "nuscenes" (the real subset) or "synthetic" (imkd_core.data.synthetic)
    raw: list[RawFrame]
    offline: list[SensorFrame]
    image_reduction: int


def load_frames(dataroot: str | Path, version: str = "v1.0-mini", per_scene: int = 3,
                image_size: tuple[int, int] = (128, 352), radar_sweeps: int = 1, start: int = 0,
                max_scenes: int | None = None, offline: bool = True) -> FrameSet:
    """`per_scene` consecutive samples (from `start`) of each scene of a nuScenes-format dataroot
    (the first `max_scenes` in reverse name order: a two-scene subset then jumps back in time
    between its scenes, like a bag loop), with their NuScenesReader frames (`offline`), decoded at
    the JPEG reduction of the model's `image_size` (H, W)."""
    from imkd_core.data.nuscenes import NuScenesReader, load_nuscenes
    from imkd_core.preprocess import jpeg_reduction

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
    source = "synthetic" if (Path(dataroot) / "synthetic_meta.json").is_file() else "nuscenes"
    return FrameSet(source, raw, frames, r)


# The synthetic world the node is driven with where no nuScenes data is at hand: one scene, keyframes
# only, nuScenes-like image size (so the node's JPEG reduction is exercised), a few seconds to write.
SYNTHETIC_NODE_DATA: dict[str, Any] = {"scenes": 1, "samples_per_scene": 8, "seed": 7, "image_size": (800, 450),
                                       "sweeps": False, "lidar_azimuth_steps": 90, "val_fraction": 0.0}


def synthetic_dataroot(out_dir: str | Path) -> Path:
    """`SYNTHETIC_NODE_DATA` written by imkd_core.data.synthetic into `out_dir` (unless already there)."""
    from imkd_core.data.synthetic import SyntheticConfig, generate

    out = Path(out_dir)
    if not (out / "synthetic_meta.json").is_file():
        generate(out, SyntheticConfig(**SYNTHETIC_NODE_DATA))
    return out
