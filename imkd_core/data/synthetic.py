"""Synthetic nuScenes-format dataset generator (6 cameras, 5 radars, LiDAR, 10 detection classes).

What: `generate(out_dir, SyntheticConfig(...))` writes a complete dataset in the nuScenes layout
(the 13 JSON tables in `<out_dir>/<version>/`, `samples/` and `sweeps/` files, `maps/` masks) that
the devkit's `NuScenes(version, out_dir)` loads and `DetectionEval` scores.
Why: every stage of IMKD (LiDAR teacher, camera+radar student, evaluation, ROS replay) needs data
that exercises the real format end to end, is small enough for CI and a laptop, and is learnable
in minutes on a CPU (objects are clearly visible and class-distinguishable in every modality).

The world of one scene: a road (straights and arcs, 1-2 lanes per direction, bike and parking
lanes, sidewalks, buildings, poles, trees) on flat ground z = 0, an ego car driving its right lane
with a varying speed profile (stops included), and objects of all 10 classes: traffic that follows
lanes (vehicles in the ego lane replay the ego's own speed profile shifted in time, so queues stop
and go without collisions), parked vehicles, a construction zone (barriers, cones, construction
vehicles, workers), pedestrians on sidewalks, riding and parked cycles, plus a few non-detection
objects (bins). Sensors are simulated from that world at nuScenes rates and calibration:
- cameras (12 Hz, fired 0-50 ms before the LiDAR keyframe like the real rig): a textured ground
  plane (cv2.remap of a top-down texture), sky, and boxes painted far-to-near (painter's algorithm)
  as shaded, per-class textured faces, JPEG;
- LiDAR (20 Hz, HDL-32E beam layout): vectorised ray casting against the ground and oriented boxes
  (a range-image z-buffer per box sub-window), intensity by material/class, `.pcd.bin`;
- radar (~13 Hz, ARS408-like field of view): returns on visible objects (RCS by class, radial
  Doppler raw and ego-motion compensated, realistic states), static clutter and ghosts, binary PCD
  with the 18 nuScenes fields.
Determinism: every random draw comes from a generator seeded by (seed, scene, stream); tokens are
hashes of (seed, table, indices); JSON has a fixed key order; so a seed gives byte-identical files
for any number of worker processes.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import math
import multiprocessing as mp
import os
import queue
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from imkd_core.frame import CAMERAS, CLASSES, LIDAR, RADARS
from imkd_core.radar import RADAR_PCD_FIELDS, RADAR_PCD_SIZES, RADAR_PCD_TYPES

__all__ = [
    "SyntheticConfig",
    "SceneWorld",
    "generate",
    "split_scene_names",
    "scene_name",
    "n_val_scenes",
    "RIG",
]

# --------------------------------------------------------------------------------------------
# The nuScenes rig (log n008-2018-08-30-10-33-52-0400 of the real calibrated_sensor table):
# channel -> (translation ego->sensor [m], rotation quaternion w,x,y,z, intrinsic at 1600x900).
# --------------------------------------------------------------------------------------------
RIG: dict[str, tuple[tuple[float, ...], tuple[float, ...], tuple[tuple[float, ...], ...] | None]] = {
    "CAM_FRONT": ((1.72200568478, 0.00475453292289, 1.49491291905),
                  (0.5077241387638071, -0.4973392230703816, 0.49837167536166627, -0.4964832014373754),
                  ((1252.8131021185304, 0.0, 826.588114781398), (0.0, 1252.8131021185304, 469.9846626224581),
                   (0.0, 0.0, 1.0))),
    "CAM_FRONT_RIGHT": ((1.58082565783, -0.499078711449, 1.51749368405),
                        (0.20335173766558642, -0.19146333228946724, 0.6785710044972951, -0.6793609166212989),
                        ((1256.7485116440405, 0.0, 817.7887570959712), (0.0, 1256.7485116440403, 451.9541780095127),
                         (0.0, 0.0, 1.0))),
    "CAM_BACK_RIGHT": ((1.05945173053, -0.46720294852, 1.55050857555),
                       (0.13819187705364147, -0.13796718183628456, -0.6893329941542625, 0.697630335509333),
                       ((1249.9629280788233, 0.0, 825.3768045375984), (0.0, 1249.9629280788233, 462.54816385708756),
                        (0.0, 0.0, 1.0))),
    "CAM_BACK": ((0.05524611077, 0.0107882366898, 1.56794286957),
                 (0.5067997344989889, -0.4977567019405021, -0.4987849934090844, 0.496594225837321),
                 ((796.8910634503094, 0.0, 857.7774326863696), (0.0, 796.8910634503094, 476.8848988407415),
                  (0.0, 0.0, 1.0))),
    "CAM_BACK_LEFT": ((1.04852047718, 0.483058131052, 1.56210154484),
                      (0.7048620297871717, -0.6907306801461466, -0.11209091960167808, 0.11617345743327073),
                      ((1254.9860565800168, 0.0, 829.5769333630991), (0.0, 1254.9860565800168, 467.1680561863987),
                       (0.0, 0.0, 1.0))),
    "CAM_FRONT_LEFT": ((1.5752559464, 0.500519383135, 1.50696032589),
                       (0.6812088525125634, -0.6687507165046241, 0.2101702448905517, -0.21108161122114324),
                       ((1257.8625342125129, 0.0, 827.2410631095686), (0.0, 1257.8625342125129, 450.915498205774),
                        (0.0, 0.0, 1.0))),
    "LIDAR_TOP": ((0.985793, 0.0, 1.84019),
                  (0.706749235646644, -0.015300993788500868, 0.01739745181256607, -0.7070846669051719), None),
    "RADAR_FRONT": ((3.412, 0.0, 0.5), (0.9999974259839071, 0.0, 0.0, -0.0022689260808398757), None),
    "RADAR_FRONT_LEFT": ((2.422, 0.8, 0.78), (0.7028982997921758, 0.0, 0.0, 0.7112903627557937), None),
    "RADAR_FRONT_RIGHT": ((2.422, -0.8, 0.77), (0.7087093341000862, 0.0, 0.0, -0.7055005880645404), None),
    "RADAR_BACK_LEFT": ((-0.562, 0.628, 0.53), (0.0458860416542946, 0.0, 0.0, 0.9989466808500344), None),
    "RADAR_BACK_RIGHT": ((-0.562, -0.618, 0.53), (0.04361938736533623, 0.0, 0.0, -0.9990482215818578), None),
}
_FULL_IMAGE_SIZE = (1600, 900)  # (W, H) the RIG intrinsics refer to

# Real nuScenes sensor tokens, so tools keyed on them keep working.
_SENSOR_TOKENS: dict[str, str] = {
    "CAM_FRONT": "725903f5b62f56118f4094b46a4470d8",
    "CAM_BACK": "ce89d4f3050b5892b33b3d328c5e82a3",
    "CAM_BACK_LEFT": "a89643a5de885c6486df2232dc954da2",
    "CAM_FRONT_LEFT": "ec4b5d41840a509984f7ec36419d4c09",
    "CAM_FRONT_RIGHT": "2f7ad058f1ac5557bf321c7543758f43",
    "CAM_BACK_RIGHT": "ca7dba2ec9f95951bbe67246f7f2c3f7",
    "LIDAR_TOP": "dc8b396651c05aedbb9cdaae573bb567",
    "RADAR_FRONT": "47fcd48f71d75e0da5c8c1704a9bfe0a",
    "RADAR_FRONT_RIGHT": "232a6c4dc628532e81de1c57120876e9",
    "RADAR_FRONT_LEFT": "1f69f87a4e175e5ba1d03e2e6d9bcd27",
    "RADAR_BACK_LEFT": "df2d5b8be7be55cca33c8c92384f2266",
    "RADAR_BACK_RIGHT": "5c29dee2f70b528a817110173c2e71b9",
}

# The full nuScenes category taxonomy (real tokens); only some are instantiated.
_CATEGORIES: tuple[tuple[str, str, str], ...] = (
    ("1fa93b757fc74fb197cdd60001ad8abf", "human.pedestrian.adult", "Adult subcategory."),
    ("b1c6de4c57f14a5383d9f963fbdcb5cb", "human.pedestrian.child", "Child subcategory."),
    ("b2d7c6c701254928a9e4d6aac9446d79", "human.pedestrian.wheelchair", "Wheelchairs."),
    ("6a5888777ca14867a8aee3fe539b56c4", "human.pedestrian.stroller", "Strollers."),
    ("403fede16c88426885dd73366f16c34a", "human.pedestrian.personal_mobility",
     "A small electric or self-propelled vehicle, e.g. skateboard, segway, or scooters."),
    ("bb867e2064014279863c71a29b1eb381", "human.pedestrian.police_officer", "Police officer."),
    ("909f1237d34a49d6bdd27c2fe4581d79", "human.pedestrian.construction_worker", "Construction worker"),
    ("63a94dfa99bb47529567cd90d3b58384", "animal", "All animals, e.g. cats, rats, dogs, deer, birds."),
    ("fd69059b62a3469fbaef25340c0eab7f", "vehicle.car", "Vehicle designed primarily for personal use."),
    ("dfd26f200ade4d24b540184e16050022", "vehicle.motorcycle", "Gasoline or electric powered 2-wheeled vehicle."),
    ("fc95c87b806f48f8a1faea2dcc2222a4", "vehicle.bicycle", "Human or electric powered 2-wheeled vehicle."),
    ("003edbfb9ca849ee8a7496e9af3025d4", "vehicle.bus.bendy", "Bendy bus subcategory."),
    ("fedb11688db84088883945752e480c2c", "vehicle.bus.rigid", "Rigid bus subcategory."),
    ("6021b5187b924d64be64a702e5570edf", "vehicle.truck", "Vehicles primarily designed to haul cargo."),
    ("5b3cd6f2bca64b83aa3d0008df87d0e4", "vehicle.construction", "Vehicles primarily designed for construction."),
    ("732cce86872640628788ff1bb81006d4", "vehicle.emergency.ambulance", "All types of ambulances."),
    ("7b2ff083a64e4d53809ae5d9be563504", "vehicle.emergency.police", "All types of police vehicles."),
    ("90d0f6f8e7c749149b1b6c3a029841a8", "vehicle.trailer", "Any vehicle trailer, both for trucks, cars and bikes."),
    ("653f7efbb9514ce7b81d44070d6208c1", "movable_object.barrier", "Temporary road barrier to redirect traffic."),
    ("85abebdccd4d46c7be428af5a6173947", "movable_object.trafficcone", "All types of traffic cone."),
    ("d772e4bae20f493f98e15a76518b31d7", "movable_object.pushable_pullable",
     "Objects that a pedestrian may push or pull, e.g. garbage-bins."),
    ("063c5e7f638343d3a7230bc3641caf97", "movable_object.debris", "Movable object left on the driveable surface."),
    ("0a30519ee16a4619b4f4acfe2d78fb55", "static_object.bicycle_rack", "Area or device intended to park bicycles."),
)
_ATTRIBUTES: tuple[tuple[str, str, str], ...] = (
    ("cb5118da1ab342aa947717dc53544259", "vehicle.moving", "Vehicle is moving."),
    ("c3246a1e22a14fcb878aa61e69ae3329", "vehicle.stopped",
     "Vehicle, with a driver/rider in/on it, is currently stationary but has an intent to move."),
    ("58aa28b1c2a54dc88e169808c07331e3", "vehicle.parked",
     "Vehicle is stationary (usually for longer duration) with no immediate intent to move."),
    ("a14936d865eb4216b396adae8cb3939c", "cycle.with_rider", "There is a rider on the bicycle or motorcycle."),
    ("5a655f9751944309a277276b8f473452", "cycle.without_rider", "There is NO rider on the bicycle or motorcycle."),
    ("03aa62109bf043afafdea7d875dd4f43", "pedestrian.sitting_lying_down", "The human is sitting or lying down."),
    ("4d8821270b4a47e3a8a300cbec48188e", "pedestrian.standing", "The human is standing."),
    ("ab83627ff28b465b85c427162dec722f", "pedestrian.moving", "The human is moving."),
)
_VISIBILITY: tuple[tuple[str, str, str], ...] = (
    ("1", "v0-40", "visibility of whole object is between 0 and 40%"),
    ("2", "v40-60", "visibility of whole object is between 40 and 60%"),
    ("3", "v60-80", "visibility of whole object is between 60 and 80%"),
    ("4", "v80-100", "visibility of whole object is between 80 and 100%"),
)
_CAT_TOKEN = {name: tok for tok, name, _ in _CATEGORIES}
_ATTR_TOKEN = {name: tok for tok, name, _ in _ATTRIBUTES}

# Camera firing offsets relative to the LiDAR keyframe (s), from the real data (lidar sweeps past).
_CAM_OFFSETS: dict[str, float] = {
    "CAM_FRONT_LEFT": -0.0443, "CAM_FRONT": -0.0367, "CAM_FRONT_RIGHT": -0.0287,
    "CAM_BACK_RIGHT": -0.0211, "CAM_BACK": -0.0116, "CAM_BACK_LEFT": -0.0017,
}
_KEYFRAME_DT = 0.5          # s, 2 Hz samples
_LIDAR_DT = 0.05            # s, 20 Hz
_CAM_DT = _KEYFRAME_DT / 6  # s, 12 Hz (6 frames per keyframe interval)
_RADAR_DT = 1.0 / 13.0      # s, ~13 Hz
_T0_US = 1_600_000_000_000_000  # first scene start (2020-09-13); scenes are one hour apart

# LiDAR: HDL-32E elevations (ring 0 lowest), like the real LIDAR_TOP files.
_LIDAR_ELEV = np.deg2rad(-30.67 + (41.34 / 31.0) * np.arange(32))
_LIDAR_MAX_RANGE = 90.0
_LIDAR_MIN_RANGE = 1.0

# Per class: size (l, w, h) mean [m] and relative jitter; LiDAR intensity (mean, std);
# radar RCS (dBsm mean, std), detection probability per sweep, mean extra returns.
_CLASS_SPEC: dict[str, dict[str, Any]] = {
    "car": dict(size=(4.62, 1.95, 1.73), jit=0.06, inten=(35, 14), rcs=(8, 4), p=0.85, extra=0.6),
    "truck": dict(size=(6.93, 2.51, 2.84), jit=0.08, inten=(45, 16), rcs=(18, 4), p=0.95, extra=1.2),
    "construction_vehicle": dict(size=(6.37, 2.85, 3.19), jit=0.07, inten=(75, 22), rcs=(16, 4), p=0.95, extra=1.0),
    "bus": dict(size=(10.8, 2.94, 3.47), jit=0.05, inten=(40, 14), rcs=(19, 4), p=0.95, extra=1.5),
    "trailer": dict(size=(11.5, 2.90, 3.80), jit=0.08, inten=(55, 18), rcs=(18, 4), p=0.95, extra=1.5),
    "barrier": dict(size=(0.50, 2.53, 0.98), jit=0.05, inten=(120, 35), rcs=(3, 4), p=0.55, extra=0.2),
    "motorcycle": dict(size=(2.15, 0.85, 1.55), jit=0.05, inten=(30, 12), rcs=(3, 3), p=0.7, extra=0.2),
    "bicycle": dict(size=(1.75, 0.65, 1.70), jit=0.05, inten=(18, 8), rcs=(-2, 3), p=0.45, extra=0.1),
    "pedestrian": dict(size=(0.73, 0.67, 1.77), jit=0.06, inten=(12, 6), rcs=(-6, 3), p=0.45, extra=0.1),
    "traffic_cone": dict(size=(0.41, 0.41, 0.95), jit=0.08, inten=(170, 35), rcs=(-8, 3), p=0.25, extra=0.0),
    "bin": dict(size=(0.65, 0.60, 1.05), jit=0.05, inten=(25, 8), rcs=(-2, 3), p=0.4, extra=0.0),
}
_VEHICLES = ("car", "truck", "construction_vehicle", "bus", "trailer")
# Static clutter kinds: LiDAR intensity (mean, std) and radar RCS range.
_CLUTTER_SPEC: dict[str, dict[str, Any]] = {
    "building": dict(inten=(25, 10), rcs=(2.0, 20.0)),
    "pole": dict(inten=(60, 20), rcs=(0.0, 10.0)),
    "trunk": dict(inten=(12, 5), rcs=(-5.0, 5.0)),
    "canopy": dict(inten=(8, 4), rcs=(-10.0, 0.0)),
}
# Ground materials: 0 grass, 1 asphalt, 2 white paint, 3 yellow paint, 4 sidewalk, 5 kerb.
_MAT_INTENSITY = np.array([[12, 6], [8, 4], [95, 25], [70, 20], [22, 7], [28, 8]], np.float32)
_MAT_ASPHALT = (1, 2, 3)

_LANE_W = 3.5
_BIKE_W = 1.5
_PARK_W = 2.5
_TEX_RES = 0.15        # m per texel of the ground texture
_TEX_MARGIN = 130.0    # m of ground around the ego path
_MAP_RES = 0.1         # m per pixel of the devkit map mask (MapMask expects 0.1 m)
_PCD_PAD = b"\x00" * 7  # the devkit's reader needs bytes after the last point (real files have them too)

# modes of object motion
_STATIC, _LANE, _FOLLOW = 0, 1, 2


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SyntheticConfig:
    """What to generate. `image_size` is (width, height); `jobs` processes over scenes.

    sweeps=False writes keyframes only (faster, for tests); everything else follows nuScenes rates.
    """

    scenes: int = 10
    samples_per_scene: int = 40
    seed: int = 0
    image_size: tuple[int, int] = (704, 396)
    version: str = "v1.0-synth"
    val_fraction: float = 0.2
    jobs: int = 1
    sweeps: bool = True
    jpeg_quality: int = 90
    lidar_azimuth_steps: int = 1080
    annotation_range: float = 70.0

    def __post_init__(self) -> None:
        if self.scenes < 1:
            raise ValueError(f"scenes must be >= 1, got {self.scenes}")
        if self.samples_per_scene < 1:
            raise ValueError(f"samples_per_scene must be >= 1, got {self.samples_per_scene}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        w, h = self.image_size
        if not (32 <= int(w) <= 4096 and 18 <= int(h) <= 4096):
            raise ValueError(f"image_size (W, H) out of range [32..4096]x[18..4096]: {self.image_size}")
        object.__setattr__(self, "image_size", (int(w), int(h)))
        if not self.version or any(c in self.version for c in "/\\") or self.version.startswith("."):
            raise ValueError(f"version must be a plain folder name, got {self.version!r}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.jobs < 1:
            raise ValueError(f"jobs must be >= 1, got {self.jobs}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in [1, 100], got {self.jpeg_quality}")
        if self.lidar_azimuth_steps < 90:
            raise ValueError(f"lidar_azimuth_steps must be >= 90, got {self.lidar_azimuth_steps}")
        if self.annotation_range <= 0:
            raise ValueError(f"annotation_range must be > 0, got {self.annotation_range}")


# Named worlds. `bench` is the miniature distillation benchmark: many short scenes (objects are
# independent across scenes, not across the frames of one scene), 12 of them for validation
# (12 x 20 = 240 val samples), 24 x 20 = 480 train samples (about 5 epochs of a 600-step, batch-4
# student run), one fixed seed so that every ablation sees the same world.
PRESETS: dict[str, dict[str, Any]] = {
    "bench": dict(scenes=36, samples_per_scene=20, seed=1414, val_fraction=1.0 / 3.0),
}


def preset(name: str, **overrides: Any) -> SyntheticConfig:
    """The SyntheticConfig of a named world (PRESETS), with `overrides` (jobs, image_size, ...)."""
    if name not in PRESETS:
        raise ValueError(f"unknown synthetic preset {name!r}; known {sorted(PRESETS)}")
    return SyntheticConfig(**{**PRESETS[name], **overrides})


def n_val_scenes(cfg: SyntheticConfig) -> int:
    """Number of validation scenes: round(val_fraction * scenes), at least 1 when scenes >= 2."""
    if cfg.scenes < 2 or cfg.val_fraction <= 0.0:
        return 0
    return int(min(cfg.scenes - 1, max(1, round(cfg.val_fraction * cfg.scenes))))


def scene_name(cfg: SyntheticConfig, index: int) -> str:
    """'synth-train-NNNN' or 'synth-val-NNNN' (the last n_val_scenes scenes are val)."""
    split = "val" if index >= cfg.scenes - n_val_scenes(cfg) else "train"
    return f"synth-{split}-{index:04d}"


def _token(seed: int, *parts: Any) -> str:
    """Deterministic 32-hex token from the seed and a record path."""
    return hashlib.md5("/".join(str(p) for p in (seed, *parts)).encode()).hexdigest()


# --------------------------------------------------------------------------------------------
# Small geometry helpers
# --------------------------------------------------------------------------------------------
def _quat_to_mat(q: Sequence[float]) -> np.ndarray:
    """Unit quaternion (w, x, y, z) -> 3x3 rotation matrix."""
    w, x, y, z = (float(v) for v in q)
    n = math.sqrt(w * w + x * x + y * y + z * z)
    w, x, y, z = w / n, x / n, y / n, z / n
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def _yaw_quat(yaw: float) -> list[float]:
    """Rotation about +z as a (w, x, y, z) quaternion list."""
    return [math.cos(yaw / 2.0), 0.0, 0.0, math.sin(yaw / 2.0)]


def _rot_z(yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _transform(rot: np.ndarray, trans: Sequence[float]) -> np.ndarray:
    """4x4 homogeneous transform from a rotation and translation."""
    t = np.eye(4)
    t[:3, :3] = rot
    t[:3, 3] = trans
    return t


def _sensor_to_ego(channel: str) -> np.ndarray:
    trans, quat, _ = RIG[channel]
    return _transform(_quat_to_mat(quat), trans)


def _scaled_intrinsic(channel: str, size: tuple[int, int]) -> np.ndarray:
    """The channel's intrinsic matrix scaled from 1600x900 to `size` (W, H)."""
    k = np.array(RIG[channel][2], dtype=np.float64)
    sx, sy = size[0] / _FULL_IMAGE_SIZE[0], size[1] / _FULL_IMAGE_SIZE[1]
    k[0] *= sx
    k[1] *= sy
    return k


def _wrap(a: np.ndarray | float) -> np.ndarray | float:
    return (a + np.pi) % (2.0 * np.pi) - np.pi


def _points_in_boxes(points: np.ndarray, centres: np.ndarray, yaws: np.ndarray, sizes: np.ndarray,
                     margin: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Boolean (n_boxes, n_points) masks: strictly inside (shrunk by margin) and ambiguous.

    Boxes are z-up: centre (x, y, z), size (l, w, h), yaw. A point within `margin` of a face
    is ambiguous: floating-point round-off could decide either way, so callers drop those.
    """
    nb, npt = len(centres), len(points)
    inside = np.zeros((nb, npt), bool)
    ambig = np.zeros((nb, npt), bool)
    for b in range(nb):
        half = sizes[b] / 2.0
        rad = float(np.linalg.norm(half)) + margin + 1e-3
        d = points - centres[b]
        near = np.flatnonzero((np.abs(d[:, 0]) < rad) & (np.abs(d[:, 1]) < rad) & (np.abs(d[:, 2]) < rad))
        if near.size == 0:
            continue
        c, s = math.cos(yaws[b]), math.sin(yaws[b])
        dn = d[near]
        loc = np.abs(np.stack([c * dn[:, 0] + s * dn[:, 1], -s * dn[:, 0] + c * dn[:, 1], dn[:, 2]], 1))
        ins = (loc < half - margin).all(1)
        out = (loc > half + margin).any(1)
        inside[b, near] = ins
        ambig[b, near] = ~ins & ~out
    return inside, ambig


# --------------------------------------------------------------------------------------------
# Road and ego motion
# --------------------------------------------------------------------------------------------
class _Road:
    """Centreline sampled every `ds` metres (arc length s, xy, heading); d > 0 is left of +s."""

    def __init__(self, rng: np.random.Generator, s_lo: float, s_hi: float, curvy: bool, ds: float = 0.5):
        self.ds = ds
        self.s0 = s_lo
        n = int(math.ceil((s_hi - s_lo) / ds)) + 1
        self.s = s_lo + ds * np.arange(n)
        kappa = np.zeros(n)
        pos, head = s_lo, 0.0
        while pos < s_hi:
            pos += rng.uniform(25.0, 90.0) if curvy else rng.uniform(150.0, 400.0)
            radius, angle = rng.uniform(45.0, 160.0), rng.uniform(0.2, 0.9)
            sign = 1.0 if rng.random() < 0.5 else -1.0
            if abs(head + sign * angle) > 1.3:  # keep the road monotone: it never loops back
                sign = -sign
            m = (self.s >= pos) & (self.s < pos + radius * angle)
            kappa[m] = sign / radius
            head += sign * angle
            pos += radius * angle
        heading = np.concatenate([[0.0], np.cumsum(0.5 * (kappa[1:] + kappa[:-1]) * ds)])
        heading += rng.uniform(-np.pi, np.pi) - np.interp(0.0, self.s, heading)
        hm = 0.5 * (heading[1:] + heading[:-1])
        xy = np.zeros((n, 2))
        xy[1:, 0] = np.cumsum(np.cos(hm) * ds)
        xy[1:, 1] = np.cumsum(np.sin(hm) * ds)
        xy -= np.array([np.interp(0.0, self.s, xy[:, 0]), np.interp(0.0, self.s, xy[:, 1])])
        self.xy = xy
        self.heading = heading

    def shift(self, offset: np.ndarray) -> None:
        self.xy = self.xy + offset

    def pose(self, s: np.ndarray | float, d: np.ndarray | float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(x, y, heading) of the point at arc length s and lateral offset d (vectorised)."""
        f = (np.asarray(s, dtype=np.float64) - self.s0) / self.ds
        i = np.clip(np.floor(f).astype(np.int64), 0, len(self.s) - 2)
        a = np.clip(f - i, 0.0, 1.0)
        x = self.xy[i, 0] * (1 - a) + self.xy[i + 1, 0] * a
        y = self.xy[i, 1] * (1 - a) + self.xy[i + 1, 1] * a
        h = self.heading[i] * (1 - a) + self.heading[i + 1] * a
        d = np.asarray(d, dtype=np.float64)
        return x - np.sin(h) * d, y + np.cos(h) * d, h

    def curve(self, o: float, lo: float = -np.inf, hi: float = np.inf) -> np.ndarray:
        """(n, 2) polyline of the offset curve d = o between arc lengths lo and hi."""
        m = (self.s >= lo) & (self.s <= hi)
        h = self.heading[m]
        return self.xy[m] + o * np.stack([-np.sin(h), np.cos(h)], 1)


class _EgoMotion:
    """Arc length s(t) along the ego lane from a speed profile with accelerations and stops."""

    def __init__(self, rng: np.random.Generator, t_end: float, pad: float = 15.0, dt: float = 0.01):
        self.t = np.arange(-pad, t_end + pad + dt, dt)
        v_hi = rng.uniform(7.0, 13.0)
        p_stop = rng.uniform(0.1, 0.3)
        targets = np.empty_like(self.t)
        tc, stops = -pad, 0
        while tc < self.t[-1]:
            if 0.0 <= tc <= t_end and stops < 2 and rng.random() < p_stop:
                dur, v = rng.uniform(2.0, 5.0), 0.0
                stops += 1
            else:
                dur, v = rng.uniform(3.0, 8.0), rng.uniform(2.5, v_hi)
            targets[(self.t >= tc) & (self.t < tc + dur)] = v
            tc += dur
        v = np.empty_like(self.t)
        cur = targets[0]
        for i, tgt in enumerate(targets):  # first-order follower with acceleration limits
            cur += min(max(tgt - cur, -3.0 * dt), 2.0 * dt)
            v[i] = cur
        s = np.concatenate([[0.0], np.cumsum(0.5 * (v[1:] + v[:-1]) * dt)])
        self.s = s - np.interp(0.0, self.t, s)
        self.v = v

    def s_at(self, t: np.ndarray | float) -> np.ndarray:
        return np.interp(t, self.t, self.s)


# --------------------------------------------------------------------------------------------
# Appearance: per-class textured faces
# --------------------------------------------------------------------------------------------
# Faces of the unit box [-0.5, 0.5]^3: origin, u axis, v axis, outward normal.
# 0 front (+x), 1 back (-x), 2 left (+y), 3 right (-y), 4 top (+z), 5 bottom (-z).
# Sides use u from back (0) to front (1); ends use u from right (0) to left (1); v is up.
_FACE_O = np.array([[0.5, -0.5, -0.5], [-0.5, -0.5, -0.5], [-0.5, 0.5, -0.5], [-0.5, -0.5, -0.5],
                    [-0.5, -0.5, 0.5], [-0.5, -0.5, -0.5]])
_FACE_U = np.array([[0, 1, 0], [0, 1, 0], [1, 0, 0], [1, 0, 0], [1, 0, 0], [1, 0, 0]], np.float64)
_FACE_V = np.array([[0, 0, 1], [0, 0, 1], [0, 0, 1], [0, 0, 1], [0, 1, 0], [0, 1, 0]], np.float64)
_FACE_N = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], np.float64)
_F, _B, _L, _R, _T, _D = range(6)
_UNIT_CORNERS = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)])
_SIDES, _ENDS, _VERT = (_L, _R), (_F, _B), (_F, _B, _L, _R)

_CAR_COLOURS = ((190, 25, 30), (25, 60, 160), (225, 225, 230), (35, 35, 40), (150, 152, 158), (25, 105, 60),
                (120, 20, 40), (60, 130, 190), (200, 160, 40))
_SHIRTS = ((200, 40, 40), (40, 90, 190), (240, 240, 235), (40, 140, 70), (230, 190, 40), (120, 60, 150),
           (30, 30, 35), (240, 120, 160), (100, 180, 200))
_TROUSERS = ((30, 35, 60), (25, 25, 28), (90, 90, 95), (150, 130, 95), (60, 80, 120))
_SKIN = ((240, 200, 170), (200, 150, 110), (150, 100, 70), (95, 65, 45))
_GLASS = (45, 60, 75)
_TYRE = (22, 22, 24)
_DARK = (40, 40, 44)


class _StyleBuilder:
    """Collects textured rectangles (face, u0, u1, v0, v1, r, g, b) of one box."""

    def __init__(self) -> None:
        self.rows: list[tuple[float, ...]] = []

    def add(self, faces: Sequence[int] | int, u0: float, u1: float, v0: float, v1: float,
            col: Sequence[float]) -> None:
        for f in (faces,) if isinstance(faces, int) else faces:
            self.rows.append((f, u0, u1, v0, v1, *col))

    def array(self) -> np.ndarray:
        return np.array(self.rows, np.float64).reshape(-1, 8)


def _jit(rng: np.random.Generator, col: Sequence[float], amount: float = 0.08) -> tuple[float, float, float]:
    f = 1.0 + rng.uniform(-amount, amount)
    return tuple(float(np.clip(c * f + rng.uniform(-6, 6), 0, 255)) for c in col)  # type: ignore[return-value]


def _scale(col: Sequence[float], f: float) -> tuple[float, float, float]:
    return tuple(float(min(255.0, c * f)) for c in col)  # type: ignore[return-value]


def _pick(rng: np.random.Generator, options: Sequence[Any]) -> Any:
    return options[int(rng.integers(len(options)))]


def _style(cls: str, category: str, rng: np.random.Generator, rider: bool, size: tuple[float, float, float]
           ) -> np.ndarray:
    """Textured face rectangles for one object of class `cls` (what makes classes look different)."""
    sb = _StyleBuilder()
    if cls == "car":
        body = _jit(rng, _pick(rng, _CAR_COLOURS))
        light = (240, 235, 200)
        sb.add(_SIDES, 0, 1, 0, 0.26, _TYRE)
        sb.add(_SIDES, 0, 1, 0.26, 0.58, body)
        sb.add(_SIDES, 0, 1, 0.58, 1.0, _scale(body, 0.85))
        sb.add(_SIDES, 0.1, 0.47, 0.6, 0.9, _GLASS)
        sb.add(_SIDES, 0.52, 0.88, 0.6, 0.9, _GLASS)
        sb.add(_ENDS, 0, 1, 0, 0.22, _DARK)
        sb.add(_ENDS, 0, 1, 0.22, 0.58, body)
        sb.add(_ENDS, 0, 1, 0.58, 1.0, _scale(body, 0.85))
        sb.add(_ENDS, 0.08, 0.92, 0.6, 0.92, _GLASS)
        sb.add(_F, 0.06, 0.26, 0.36, 0.5, light)
        sb.add(_F, 0.74, 0.94, 0.36, 0.5, light)
        sb.add(_F, 0.32, 0.68, 0.24, 0.4, _DARK)
        sb.add(_B, 0.05, 0.24, 0.36, 0.5, (200, 20, 20))
        sb.add(_B, 0.76, 0.95, 0.36, 0.5, (200, 20, 20))
        sb.add(_B, 0.4, 0.6, 0.26, 0.34, (230, 230, 220))
        sb.add(_T, 0, 1, 0, 1, body)
        sb.add(_T, 0.25, 0.7, 0.12, 0.88, _scale(body, 0.75))
    elif cls == "truck":
        cargo = _jit(rng, _pick(rng, ((235, 235, 235), (200, 200, 205), (40, 80, 160), (220, 120, 30),
                                      (150, 30, 30))))
        cab = _jit(rng, _pick(rng, ((200, 30, 30), (240, 240, 240), (30, 60, 150), (60, 60, 65))))
        stripe = _jit(rng, _pick(rng, ((200, 30, 30), (30, 90, 180), (30, 140, 60), (20, 20, 20))))
        sb.add(_SIDES, 0, 1, 0, 0.16, _TYRE)
        sb.add(_SIDES, 0, 0.74, 0.16, 1, cargo)
        sb.add(_SIDES, 0.03, 0.71, 0.55, 0.63, stripe)
        sb.add(_SIDES, 0.76, 1, 0.16, 0.72, cab)
        sb.add(_SIDES, 0.8, 0.97, 0.46, 0.68, _GLASS)
        sb.add(_F, 0, 1, 0, 0.16, _DARK)
        sb.add(_F, 0, 1, 0.16, 0.72, cab)
        sb.add(_F, 0.06, 0.94, 0.44, 0.68, _GLASS)
        sb.add(_F, 0.05, 0.2, 0.2, 0.28, (240, 235, 200))
        sb.add(_F, 0.8, 0.95, 0.2, 0.28, (240, 235, 200))
        sb.add(_F, 0, 1, 0.76, 1, cargo)
        sb.add(_B, 0, 1, 0, 0.16, _DARK)
        sb.add(_B, 0, 1, 0.16, 1, _scale(cargo, 0.92))
        sb.add(_B, 0.49, 0.51, 0.2, 0.98, _DARK)
        sb.add(_B, 0.04, 0.14, 0.18, 0.24, (200, 20, 20))
        sb.add(_B, 0.86, 0.96, 0.18, 0.24, (200, 20, 20))
        sb.add(_T, 0, 0.74, 0, 1, cargo)
    elif cls == "bus":
        body = _jit(rng, _pick(rng, ((200, 30, 35), (30, 140, 70), (235, 235, 240), (30, 80, 170))))
        roof = (235, 235, 235)
        sb.add(_SIDES, 0, 1, 0, 0.12, _TYRE)
        sb.add(_SIDES, 0, 1, 0.12, 0.42, body)
        sb.add(_SIDES, 0, 1, 0.42, 0.86, _scale(body, 0.8))
        for k in range(8):
            sb.add(_SIDES, 0.03 + k * 0.118, 0.03 + k * 0.118 + 0.1, 0.46, 0.82, _GLASS)
        sb.add(_SIDES, 0, 1, 0.86, 1, roof)
        sb.add(_ENDS, 0, 1, 0, 0.12, _DARK)
        sb.add(_ENDS, 0, 1, 0.12, 1, body)
        sb.add(_F, 0.05, 0.95, 0.36, 0.84, _GLASS)
        sb.add(_F, 0.18, 0.82, 0.87, 0.96, (250, 180, 40))
        sb.add(_B, 0.12, 0.88, 0.6, 0.84, _GLASS)
        sb.add(_B, 0.05, 0.15, 0.18, 0.3, (200, 20, 20))
        sb.add(_B, 0.85, 0.95, 0.18, 0.3, (200, 20, 20))
        sb.add(_T, 0, 1, 0, 1, roof)
    elif cls == "trailer":
        cont = _jit(rng, _pick(rng, ((230, 230, 230), (150, 150, 155), (170, 40, 35), (40, 70, 140),
                                     (40, 110, 80))))
        sb.add(_SIDES, 0, 1, 0.14, 0.22, _DARK)
        sb.add(_SIDES, 0.03, 0.3, 0, 0.14, _TYRE)
        sb.add(_SIDES, 0.77, 0.8, 0, 0.14, _DARK)
        sb.add(_SIDES, 0, 1, 0.22, 1, cont)
        for k in range(12):
            sb.add(_SIDES, k / 12 + 0.01, k / 12 + 0.045, 0.24, 0.98, _scale(cont, 0.82))
        sb.add(_F, 0, 1, 0.22, 1, _scale(cont, 0.9))
        sb.add(_F, 0.1, 0.9, 0.14, 0.22, _DARK)
        sb.add(_B, 0, 1, 0.22, 1, cont)
        sb.add(_B, 0.05, 0.4, 0, 0.2, _TYRE)
        sb.add(_B, 0.6, 0.95, 0, 0.2, _TYRE)
        sb.add(_B, 0.495, 0.505, 0.24, 0.98, _DARK)
        sb.add(_B, 0.02, 0.98, 0.22, 0.27, (200, 30, 30))
        sb.add(_T, 0, 1, 0, 1, _scale(cont, 1.05))
    elif cls == "construction_vehicle":
        y = _jit(rng, _pick(rng, ((240, 180, 20), (245, 130, 20))))
        sb.add(_VERT, 0, 1, 0, 0.22, (30, 30, 30))
        sb.add(_SIDES, 0, 0.62, 0.22, 0.55, y)
        sb.add(_SIDES, 0.0, 0.58, 0.55, 0.72, _scale(y, 0.8))
        sb.add(_SIDES, 0.62, 0.98, 0.22, 1.0, y)
        sb.add(_SIDES, 0.66, 0.95, 0.56, 0.95, _GLASS)
        for k in range(8):
            sb.add(_ENDS, k / 8, (k + 1) / 8, 0.22, 0.36, (25, 25, 25) if k % 2 else (245, 200, 20))
        sb.add(_ENDS, 0, 1, 0.36, 0.58, y)
        sb.add(_F, 0.3, 1, 0.58, 1.0, y)
        sb.add(_F, 0.36, 0.95, 0.62, 0.95, _GLASS)
        sb.add(_B, 0, 1, 0.58, 0.75, _scale(y, 0.85))
        sb.add(_T, 0, 1, 0, 1, _scale(y, 0.9))
        sb.add(_T, 0.62, 0.98, 0.1, 0.9, (60, 60, 60))
    elif cls == "barrier":
        if rng.random() < 0.5:  # plastic red/white
            red, white = (215, 30, 30), (240, 240, 240)
            for k in range(6):
                sb.add(_ENDS, k / 6, (k + 1) / 6, 0.06, 1, red if k % 2 == 0 else white)
            sb.add(_ENDS, 0, 1, 0, 0.06, _DARK)
            sb.add(_SIDES, 0, 1, 0, 1, red)
            sb.add(_T, 0, 1, 0, 1, white)
        else:  # concrete with a reflective band
            grey = _jit(rng, (175, 172, 165))
            sb.add(_VERT, 0, 1, 0, 1, grey)
            sb.add(_VERT, 0, 1, 0, 0.12, _scale(grey, 0.7))
            sb.add(_VERT, 0, 1, 0.58, 0.7, (240, 200, 30))
            sb.add(_T, 0, 1, 0, 1, _scale(grey, 1.08))
    elif cls == "traffic_cone":
        orange, white = (250, 95, 15), (245, 245, 245)
        bands = ((0, 0.07, 0.0, (200, 75, 12)), (0.07, 0.35, 0.12, orange), (0.35, 0.55, 0.2, orange),
                 (0.55, 0.68, 0.25, white), (0.68, 0.8, 0.3, orange), (0.8, 0.9, 0.35, white),
                 (0.9, 1.0, 0.4, orange))
        for v0, v1, inset, col in bands:
            sb.add(_VERT, inset, 1 - inset, v0, v1, col)
        sb.add(_T, 0.4, 0.6, 0.4, 0.6, orange)
    elif cls == "pedestrian":
        skin, hair = _pick(rng, _SKIN), _pick(rng, ((30, 25, 20), (90, 60, 30), (200, 170, 100), (60, 60, 60)))
        trousers = _jit(rng, _pick(rng, _TROUSERS))
        shirt = _jit(rng, _pick(rng, _SHIRTS))
        if category == "human.pedestrian.construction_worker":
            shirt = _pick(rng, ((255, 140, 20), (215, 240, 40)))
        elif category == "human.pedestrian.police_officer":
            shirt, trousers = (25, 35, 85), (20, 25, 50)
        sb.add(_ENDS, 0.16, 0.46, 0, 0.47, trousers)
        sb.add(_ENDS, 0.54, 0.84, 0, 0.47, trousers)
        sb.add(_SIDES, 0.25, 0.75, 0, 0.47, trousers)
        sb.add(_ENDS, 0.04, 0.96, 0.47, 0.83, shirt)
        sb.add(_SIDES, 0.18, 0.82, 0.47, 0.83, shirt)
        if category == "human.pedestrian.construction_worker":
            sb.add(_VERT, 0.05, 0.95, 0.6, 0.65, (230, 230, 230))
        sb.add(_F, 0.32, 0.68, 0.85, 1.0, skin)
        sb.add(_SIDES, 0.3, 0.7, 0.85, 1.0, skin)
        sb.add(_B, 0.32, 0.68, 0.85, 1.0, hair)
        top = (250, 220, 0) if category == "human.pedestrian.construction_worker" else hair
        sb.add(_VERT, 0.3, 0.7, 0.95, 1.0, top)
        sb.add(_T, 0.3, 0.7, 0.3, 0.7, top)
    elif cls in ("bicycle", "motorcycle"):
        moto = cls == "motorcycle"
        frame = _jit(rng, _pick(rng, ((200, 30, 30), (30, 60, 160), (30, 30, 30), (230, 230, 230), (30, 130, 60))))
        wh = min(0.95, 0.7 / size[2]) if not moto else min(0.95, 0.65 / size[2])
        sb.add(_SIDES, 0.0, 0.36, 0, wh, _TYRE)
        sb.add(_SIDES, 0.64, 1.0, 0, wh, _TYRE)
        sb.add(_SIDES, 0.09, 0.27, wh * 0.3, wh * 0.7, (150, 150, 150))
        sb.add(_SIDES, 0.73, 0.91, wh * 0.3, wh * 0.7, (150, 150, 150))
        if moto:
            sb.add(_SIDES, 0.22, 0.82, wh * 0.6, min(1.0, wh * 1.35), frame)
            sb.add(_ENDS, 0.15, 0.85, wh * 0.6, min(1.0, wh * 1.35), frame)
        else:
            sb.add(_SIDES, 0.2, 0.8, wh * 0.8, wh * 0.95, frame)
            sb.add(_SIDES, 0.72, 0.78, wh * 0.8, min(1.0, wh * 1.3), frame)
        sb.add(_ENDS, 0.38, 0.62, 0, wh, _TYRE)
        sb.add(_ENDS, 0.05, 0.95, min(0.97, wh * 1.25), min(1.0, wh * 1.33), _DARK)
        if _pick(rng, (0, 1)) and moto:
            sb.add(_F, 0.4, 0.6, wh * 0.9, wh * 1.1, (240, 235, 200))
        if rider:
            shirt, trousers = _jit(rng, _pick(rng, _SHIRTS)), _jit(rng, _pick(rng, _TROUSERS))
            head = _pick(rng, _SKIN) if not moto else _pick(rng, ((20, 20, 20), (230, 230, 230), (200, 30, 30)))
            sb.add(_SIDES, 0.38, 0.6, wh * 0.75, 0.6, trousers)
            sb.add(_SIDES, 0.3, 0.66, 0.58, 0.86, shirt)
            sb.add(_SIDES, 0.4, 0.6, 0.87, 1.0, head)
            sb.add(_ENDS, 0.1, 0.9, 0.58, 0.86, shirt)
            sb.add(_ENDS, 0.3, 0.7, 0.87, 1.0, head)
            sb.add(_T, 0.3, 0.65, 0.2, 0.8, shirt)
        else:
            sb.add(_T, 0.1, 0.9, 0.42, 0.58, frame)
    elif cls == "bin":
        col = _jit(rng, _pick(rng, ((40, 90, 50), (60, 60, 65), (30, 60, 120))))
        sb.add(_VERT, 0, 1, 0, 0.9, col)
        sb.add(_VERT, 0, 1, 0.9, 1, _scale(col, 0.7))
        sb.add(_T, 0, 1, 0, 1, _scale(col, 0.7))
    else:
        raise ValueError(f"no style for class {cls!r}")
    return sb.array()


def _clutter_style(kind: str, rng: np.random.Generator, size: tuple[float, float, float]) -> np.ndarray:
    """Textured faces of buildings, poles and trees (static scene clutter)."""
    sb = _StyleBuilder()
    if kind == "building":
        wall = _jit(rng, _pick(rng, ((190, 170, 140), (160, 80, 60), (200, 200, 195), (120, 120, 125),
                                     (210, 190, 160), (140, 150, 170))), 0.1)
        glass = _jit(rng, (70, 90, 110), 0.15)
        sb.add(_VERT, 0, 1, 0, 1, wall)
        h = size[2]
        floors = max(1, int(h // 3.2))
        for k in range(floors):
            v0, v1 = (k * 3.2 + 1.0) / h, min((k * 3.2 + 2.5) / h, 0.97)
            if v1 > v0:
                sb.add(_VERT, 0.04, 0.96, v0, v1, glass)
        sb.add(_T, 0, 1, 0, 1, (110, 110, 115))
    elif kind == "pole":
        sb.add(_VERT, 0, 1, 0, 0.97, (120, 122, 128))
        sb.add(_VERT, 0, 1, 0.97, 1, (250, 240, 180))
        sb.add(_T, 0, 1, 0, 1, (120, 122, 128))
    elif kind == "trunk":
        sb.add(_VERT, 0, 1, 0, 1, _jit(rng, (95, 70, 45)))
    elif kind == "canopy":
        g = _jit(rng, (55, 110, 45), 0.15)
        sb.add(_VERT, 0, 1, 0, 1, g)
        sb.add(_VERT, 0, 1, 0.35, 0.7, _scale(g, 0.85))
        sb.add((_T, _D), 0, 1, 0, 1, _scale(g, 0.9))
    else:
        raise ValueError(f"no style for clutter {kind!r}")
    return sb.array()


# --------------------------------------------------------------------------------------------
# World objects
# --------------------------------------------------------------------------------------------
@dataclass
class _Obj:
    """One annotated object: class, nuScenes category, size and a trajectory in road coordinates."""

    cls: str
    category: str
    size: tuple[float, float, float]  # l, w, h
    mode: int = _STATIC
    s0: float = 0.0       # static/lane: arc length at t = 0; follow: gap to the ego (centre)
    d: float = 0.0        # lateral offset
    v: float = 0.0        # lane mode speed along the lane (m/s)
    tau: float = 0.0      # follow mode: time shift of the ego profile (s)
    reverse: bool = False  # drives towards -s
    yaw_off: float = 0.0
    parked: bool = False
    rider: bool = False
    sitting: bool = False


def _size(rng: np.random.Generator, cls: str, scale: tuple[float, float, float] = (1.0, 1.0, 1.0)
          ) -> tuple[float, float, float]:
    spec = _CLASS_SPEC[cls]
    jit = np.clip(rng.normal(0.0, spec["jit"], 3), -2.5 * spec["jit"], 2.5 * spec["jit"])
    return tuple(round(float(m * s * (1 + j)), 3) for m, s, j in zip(spec["size"], scale, jit))  # type: ignore


class _Spawner:
    """Places all objects of a scene along the road without overlaps (per-band occupancy)."""

    def __init__(self, rng: np.random.Generator, lanes: int, sidewalk: float, s_range: tuple[float, float],
                 span: tuple[float, float], ego: _EgoMotion, t_end: float):
        self.rng, self.lanes, self.sw = rng, lanes, sidewalk
        self.lo, self.hi = s_range     # static objects live here
        self.S0, self.S1 = span        # ego arc-length span over the scene
        self.ego, self.t_end = ego, t_end
        self.o_lane = lanes * _LANE_W             # outer edge of the traffic lanes
        self.o_park = self.o_lane + _BIKE_W + _PARK_W / 2
        self.o_kerb = self.o_lane + _BIKE_W + _PARK_W
        self.objs: list[_Obj] = []
        self.occ: dict[int, list[tuple[float, float]]] = {-1: [], 1: []}  # parking+bike band per side
        self.occ_walk: dict[int, list[tuple[float, float]]] = {-1: [], 1: []}  # outer sidewalk band

    # -- helpers
    def free(self, side: int, lo: float, hi: float, band: str = "park") -> bool:
        occ = self.occ if band == "park" else self.occ_walk
        return all(hi <= a or lo >= b for a, b in occ[side])

    def take(self, side: int, lo: float, hi: float, band: str = "park") -> None:
        (self.occ if band == "park" else self.occ_walk)[side].append((lo, hi))

    def add(self, cls: str, category: str, size: tuple[float, float, float] | None = None, **kw: Any) -> _Obj:
        o = _Obj(cls=cls, category=category, size=size or _size(self.rng, cls), **kw)
        self.objs.append(o)
        return o

    def u(self, a: float, b: float) -> float:
        return float(self.rng.uniform(a, b))

    def vehicle(self, kind: str) -> list[tuple[str, str, tuple[float, float, float], bool]]:
        """A vehicle unit (front to back): kind 'truck_trailer' is a truck hauling a trailer."""
        if kind == "truck_trailer":
            return [("truck", "vehicle.truck", _size(self.rng, "truck", (0.9, 1.0, 1.0)), False),
                    ("trailer", "vehicle.trailer", _size(self.rng, "trailer"), False)]
        if kind == "motorcycle":
            return [("motorcycle", "vehicle.motorcycle", _size(self.rng, "motorcycle"), True)]
        cat = {"car": "vehicle.car", "truck": "vehicle.truck", "bus": "vehicle.bus.rigid",
               "trailer": "vehicle.trailer", "construction_vehicle": "vehicle.construction"}[kind]
        return [(kind, cat, _size(self.rng, kind), False)]

    def traffic_kind(self) -> str:
        return str(self.rng.choice(["car", "truck", "bus", "motorcycle", "truck_trailer"],
                                   p=[0.68, 0.11, 0.08, 0.07, 0.06]))

    # -- placement
    def construction_zones(self, side: int) -> None:
        n = 1 + int(self.rng.random() < 0.2)
        for z in range(n):
            for _ in range(20):
                length = self.u(16, 30)
                if z == 0:
                    c = self.S0 + (self.S1 - self.S0) * self.u(0.15, 0.85) + self.u(-10, 25)
                else:
                    c = self.u(self.lo + 30, self.hi - 30)
                z0, z1 = c - length / 2, c + length / 2
                if self.free(side, z0 - 16, z1 + 16):
                    break
            else:
                continue
            self.take(side, z0 - 16, z1 + 16)
            o_bar = self.o_lane + 0.35
            for k in range(int(length // 2.7)):
                self.add("barrier", "movable_object.barrier", s0=z0 + 1.35 + 2.7 * k, d=side * o_bar,
                         yaw_off=np.pi / 2 + self.rng.normal(0, 0.02))
            for j in range(4):
                for s, sgn in ((z0, -1.0), (z1, 1.0)):
                    self.add("traffic_cone", "movable_object.trafficcone", s0=s + sgn * 2.4 * (j + 1),
                             d=side * (o_bar + 0.22 * (j + 1)), yaw_off=self.u(-np.pi, np.pi))
            ncv = 1 + int(self.rng.random() < 0.6)
            cv_spans = []
            for k in range(ncv):
                size = _size(self.rng, "construction_vehicle")
                s = z0 + (k + 0.5) * length / ncv + self.u(-2, 2)
                cv_spans.append((s - size[0] / 2 - 1.0, s + size[0] / 2 + 1.0))
                self.add("construction_vehicle", "vehicle.construction", size=size, s0=s,
                         d=side * (self.o_lane + 2.45), yaw_off=self.u(-0.2, 0.2) + (np.pi if k % 2 else 0.0),
                         parked=self.rng.random() < 0.7)
            for _ in range(int(self.rng.integers(1, 4))):
                s = self.u(z0 + 1, z1 - 1)
                if any(a < s < b for a, b in cv_spans):
                    continue
                self.add("pedestrian", "human.pedestrian.construction_worker",
                         s0=s, d=side * (self.o_lane + self.u(1.1, 3.6)), yaw_off=self.u(-np.pi, np.pi))

    def parked_unit(self, side: int, kind: str, s_front: float, parked: bool = True) -> float:
        """Park a vehicle unit with its front at s_front (in traffic direction); return its length."""
        unit = self.vehicle(kind)
        total = sum(u[2][0] for u in unit) + 0.8 * (len(unit) - 1)
        sgn = -1.0 if side > 0 else 1.0  # left side faces -s
        pos = s_front
        for cls, cat, size, _ in unit:
            c = pos - sgn * size[0] / 2
            self.add(cls, cat, size=size, s0=c, d=side * (self.o_park + self.rng.normal(0, 0.08)),
                     reverse=side > 0, yaw_off=self.rng.normal(0, 0.02), parked=parked,
                     rider=False)
            pos -= sgn * (size[0] + 0.8)
        lo, hi = sorted((s_front, s_front - sgn * total))
        self.take(side, lo - 0.5, hi + 0.5)
        return total

    def guaranteed(self, free_side: int) -> None:
        """Rare classes near the ego path in every scene (so every split sees all 10 classes)."""
        for kind, where in (("trailer", self.u(0.1, 0.9)), ("truck", self.u(0.0, 1.0)), ("bus", self.u(0.2, 1.0)),
                            ("motorcycle", self.u(0.0, 1.0)), ("truck_trailer", self.u(0.3, 1.0))):
            for attempt in range(30):
                side = free_side if attempt % 2 == 0 else -free_side
                s = self.S0 + (self.S1 - self.S0) * where + self.u(-25, 25) + attempt * 3
                if self.free(side, s - 22, s + 22):
                    self.parked_unit(side, kind, s, parked=kind != "bus")
                    if kind == "bus":  # a bus stop: people waiting
                        for _ in range(int(self.rng.integers(2, 5))):
                            self.add("pedestrian", "human.pedestrian.adult", s0=s + self.u(-8, 2),
                                     d=side * (self.o_kerb + self.u(1.0, self.sw - 0.5)),
                                     yaw_off=self.u(-np.pi, np.pi))
                    break

    def parking(self, p_park: float) -> None:
        for side in (-1, 1):
            s = self.lo + self.u(0, 8)
            while s < self.hi:
                kind = str(self.rng.choice(["car", "truck", "trailer", "motorcycle", "bus", "construction_vehicle"],
                                           p=[0.8, 0.08, 0.03, 0.06, 0.02, 0.01]))
                length = {"car": 4.7, "truck": 7.2, "trailer": 12.5, "motorcycle": 2.2, "bus": 11.0,
                          "construction_vehicle": 6.6}[kind] + 1.0
                if self.rng.random() < p_park and self.free(side, s, s + length + 1.0):
                    front = s + length if side < 0 else s
                    total = self.parked_unit(side, kind, front, parked=True)
                    s += total + self.u(0.8, 3.0)
                else:
                    s += self.u(3.0, 12.0)

    def traffic(self) -> None:
        ego, rng = self.ego, self.rng
        d_ego = -(self.o_lane - _LANE_W / 2)
        # ego lane: vehicles replay the ego profile shifted in time (never collide, queue at stops)
        gap, tau = 3.9, 0.0  # ego front bumper from the ego origin (rear axle)
        for _ in range(int(rng.choice([0, 1, 1, 2, 2, 3]))):
            tau += self.u(0.8, 2.2)
            gap += self.u(5.0, 14.0)
            for cls, cat, size, rider in self.vehicle(self.traffic_kind())[::-1]:  # rear unit first
                gap += size[0] / 2
                self.add(cls, cat, size=size, mode=_FOLLOW, s0=gap, d=d_ego + rng.normal(0, 0.1), tau=tau,
                         rider=rider)
                gap += size[0] / 2 + 0.8
        gap, tau = -1.1, 0.0  # ego rear bumper
        for _ in range(int(rng.choice([0, 1, 1, 2]))):
            tau -= self.u(0.8, 2.2)
            gap -= self.u(5.0, 14.0)
            for cls, cat, size, rider in self.vehicle(self.traffic_kind()):
                gap -= size[0] / 2
                self.add(cls, cat, size=size, mode=_FOLLOW, s0=gap, d=d_ego + rng.normal(0, 0.1), tau=tau,
                         rider=rider)
                gap -= size[0] / 2 + 0.8
        # other lanes: constant speed, spread so that some are always around the ego
        t_end = self.t_end
        lanes = [(-(k + 0.5) * _LANE_W, False) for k in range(self.lanes - 1)]
        lanes += [((k + 0.5) * _LANE_W, True) for k in range(self.lanes)]
        for d, rev in lanes:
            v = self.u(5.0, 12.0)
            sgn = -1.0 if rev else 1.0
            ts = np.linspace(0.0, t_end, 8)
            rel = ego.s_at(ts) - sgn * v * ts
            lo, hi = float(rel.min()) - 90.0, float(rel.max()) + 90.0
            s = lo + self.u(0, 20)
            while s < hi:
                unit = self.vehicle(self.traffic_kind())
                pos = s
                for cls, cat, size, rider in unit:  # front unit first, the rest behind it
                    c = pos - sgn * size[0] / 2
                    self.add(cls, cat, size=size, mode=_LANE, s0=c, d=d + rng.normal(0, 0.12), v=v, reverse=rev,
                             rider=rider)
                    pos -= sgn * (size[0] + 0.8)
                s += sum(u[2][0] for u in unit) + self.u(12.0, 45.0)

    def cyclists(self, side: int) -> None:
        """Riders in the bike lane of `side` (which has no construction zone) and parked bikes."""
        rev = side > 0
        sgn = -1.0 if rev else 1.0
        for _ in range(int(self.rng.integers(1, 3))):
            v = self.u(3.0, 6.0)
            tm = self.u(0.2, 0.8) * self.t_end
            s0 = float(self.ego.s_at(tm)) + self.u(-25, 35) - sgn * v * tm
            self.add("bicycle", "vehicle.bicycle", mode=_LANE, s0=s0, d=side * (self.o_lane + _BIKE_W / 2),
                     v=v, reverse=rev, rider=True)
        for _ in range(int(self.rng.integers(1, 3))):  # parked bicycle groups on the outer sidewalk
            sd = int(self.rng.choice([-1, 1]))
            s = self.S0 + (self.S1 - self.S0) * self.u(-0.1, 1.1)
            n = int(self.rng.integers(2, 5))
            if not self.free(sd, s - 1, s + 0.9 * n + 1, "walk"):
                continue
            self.take(sd, s - 1, s + 0.9 * n + 1, "walk")
            for k in range(n):
                self.add("bicycle", "vehicle.bicycle", size=_size(self.rng, "bicycle", (0.97, 0.92, 0.62)),
                         s0=s + 0.9 * k, d=sd * (self.o_kerb + self.sw - 1.0),
                         yaw_off=np.pi / 2 + self.rng.normal(0, 0.08), parked=True)

    def sidewalk_life(self, spacing: float) -> None:
        rng = self.rng
        for side in (-1, 1):
            # walkers (inner band): spread so that some are always near the ego
            for _ in range(int((self.hi - self.lo + 60) / spacing)):
                v = self.u(0.8, 1.7)
                rev = bool(rng.random() < 0.5)
                cat = str(rng.choice(["human.pedestrian.adult", "human.pedestrian.child",
                                      "human.pedestrian.police_officer"], p=[0.88, 0.09, 0.03]))
                size = _size(rng, "pedestrian", (0.75, 0.75, 0.72) if cat.endswith("child") else (1, 1, 1))
                self.add("pedestrian", cat, size=size, mode=_LANE, s0=self.u(self.lo - 30, self.hi + 30),
                         d=side * (self.o_kerb + (1.25 if rev else 0.75) + self.u(0, 0.5)),
                         v=v, reverse=rev)
            # standing / sitting people and bins (outer band)
            for _ in range(int((self.hi - self.lo) / (spacing * 2.5))):
                s = self.u(self.lo, self.hi)
                if not self.free(side, s - 0.6, s + 0.6, "walk"):
                    continue
                self.take(side, s - 0.6, s + 0.6, "walk")
                d = side * (self.o_kerb + self.u(2.4, self.sw - 0.45))
                r = rng.random()
                if r < 0.15:
                    self.add("bin", "movable_object.pushable_pullable", s0=s, d=d, yaw_off=self.u(-0.2, 0.2))
                elif r < 0.27:
                    self.add("pedestrian", "human.pedestrian.adult", size=_size(rng, "pedestrian", (1.2, 1, 0.72)),
                             s0=s, d=d, yaw_off=self.u(-np.pi, np.pi), sitting=True)
                else:
                    self.add("pedestrian", "human.pedestrian.adult", s0=s, d=d, yaw_off=self.u(-np.pi, np.pi))

    def extras(self, zone_side: int) -> None:
        """Cone groups in the bike lane and barrier groups on the sidewalk."""
        for _ in range(int(self.rng.integers(1, 3))):
            s = self.S0 + (self.S1 - self.S0) * self.u(-0.1, 1.1)
            n = int(self.rng.integers(3, 5))
            if not self.free(zone_side, s - 1, s + 3 * n):
                continue
            self.take(zone_side, s - 1, s + 3 * n)
            for k in range(n):
                self.add("traffic_cone", "movable_object.trafficcone", s0=s + 3.0 * k,
                         d=zone_side * (self.o_lane + self.u(0.4, 1.1)), yaw_off=self.u(-np.pi, np.pi))
        for _ in range(int(self.rng.integers(0, 2))):
            side = int(self.rng.choice([-1, 1]))
            s = self.S0 + (self.S1 - self.S0) * self.u(-0.1, 1.1)
            n = int(self.rng.integers(2, 5))
            if not self.free(side, s - 1, s + 2.7 * n + 1, "walk"):
                continue
            self.take(side, s - 1, s + 2.7 * n + 1, "walk")
            for k in range(n):
                self.add("barrier", "movable_object.barrier", s0=s + 1.35 + 2.7 * k,
                         d=side * (self.o_kerb + self.sw - 0.6), yaw_off=np.pi / 2 + self.rng.normal(0, 0.03))


# --------------------------------------------------------------------------------------------
# One scene: world + sensors
# --------------------------------------------------------------------------------------------
class _CameraModel:
    """Static per-camera data: intrinsics, extrinsics, per-pixel ground rays, sky and haze weights.

    The ground layer (texture lookup + haze) is computed at half resolution and upsampled: near the
    car the 0.15 m texture is magnified anyway, and it halves the cost of the largest image op.
    """

    def __init__(self, channel: str, size: tuple[int, int], sky: np.ndarray, haze: np.ndarray):
        w, h = size
        self.channel, self.size = channel, size
        self.K = _scaled_intrinsic(channel, size)
        self.T_ec = _sensor_to_ego(channel)
        u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
        ground, dist, gxy, elev = self._rays(u, v)
        rows = np.flatnonzero(ground.any(1))
        self.row0 = int(rows[0]) if rows.size else h  # rows above are sky only
        a = np.clip(elev / 0.45, 0.0, 1.0)[..., None] ** 0.8
        self.bg = np.clip(haze[None, None] * (1 - a) + sky[None, None] * a, 0, 255).astype(np.uint8)
        # half-resolution ground grid over rows row0..h (pixel centres of 2x2 blocks)
        self.half_size = ((w + 1) // 2, (h - self.row0 + 1) // 2)
        uh, vh = np.meshgrid(2.0 * np.arange(self.half_size[0]) + 0.5,
                             self.row0 + 2.0 * np.arange(self.half_size[1]) + 0.5)
        ground, dist, gxy, _ = self._rays(uh, vh)
        self.gx = np.ascontiguousarray(np.where(ground, gxy[0], 0.0), np.float32)
        self.gy = np.ascontiguousarray(np.where(ground, gxy[1], 0.0), np.float32)
        fade = np.clip((dist - 95.0) / 40.0, 0.0, 1.0)
        f = np.maximum(1.0 - np.exp(-np.where(ground, dist, 1e3) / 260.0), fade * fade * (3 - 2 * fade))
        f = np.where(ground, f, 1.0)
        self.w_bg = np.ascontiguousarray(f, np.float32)
        self.w_fg = np.ascontiguousarray(1.0 - f, np.float32)
        self.bg_half = cv2.resize(self.bg[self.row0:], self.half_size, interpolation=cv2.INTER_AREA)

    def _rays(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Ground mask, ground distance, ego-frame ground (x, y) and ray elevation per pixel (u, v)."""
        fx, fy, cx, cy = self.K[0, 0], self.K[1, 1], self.K[0, 2], self.K[1, 2]
        d_cam = np.stack([(u - cx) / fx, (v - cy) / fy, np.ones_like(u)], -1)
        d_ego = d_cam @ self.T_ec[:3, :3].T
        norm = np.linalg.norm(d_ego, axis=-1)
        dz = d_ego[..., 2]
        lam = np.where(dz < -1e-6, -self.T_ec[2, 3] / np.minimum(dz, -1e-6), np.inf)
        dist = lam * norm
        ground = dist < 140.0
        with np.errstate(invalid="ignore"):
            gxy = np.stack([self.T_ec[0, 3] + lam * d_ego[..., 0], self.T_ec[1, 3] + lam * d_ego[..., 1]])
        return ground, dist, gxy, np.arcsin(np.clip(dz / norm, -1.0, 1.0))


class SceneWorld:
    """Everything about one synthetic scene: road, ego motion, objects, timeline and sensor models.

    Deterministic in (cfg.seed, index). Times are seconds from the first keyframe; `stamp_us`
    converts to nuScenes microseconds. Objects are indexed 0..n_objects-1 (instance order).
    """

    def __init__(self, cfg: SyntheticConfig, index: int):
        if not 0 <= index < cfg.scenes:
            raise ValueError(f"scene index {index} out of range for {cfg.scenes} scenes")
        self.cfg, self.index = cfg, index
        ss = np.random.SeedSequence([cfg.seed, index, 0x5EED])
        s_world, s_tl, self._s_lidar, self._s_radar, s_style = ss.spawn(5)
        rng = np.random.default_rng(s_world)
        self.name = scene_name(cfg, index)
        self.logfile = f"synth-{cfg.seed}-{index:04d}"
        self.t0_us = _T0_US + index * 3_600_000_000
        K = cfg.samples_per_scene
        self.t_end = (K - 1) * _KEYFRAME_DT

        # road layout and ego motion
        self.lanes = int(rng.choice([1, 2]))
        self.sidewalk = float(rng.uniform(3.8, 5.0))
        curvy = bool(rng.random() < 0.75)
        self.ego = _EgoMotion(rng, self.t_end)
        S0, S1 = float(self.ego.s_at(-0.1)), float(self.ego.s_at(self.t_end + 0.1))
        self.road = _Road(rng, S0 - 450.0, S1 + 450.0, curvy)
        self.d_ego = -(self.lanes * _LANE_W - _LANE_W / 2)
        self.o_lane = self.lanes * _LANE_W
        self.o_kerb = self.o_lane + _BIKE_W + _PARK_W

        # global frame: the ground texture region (ego path + margin) starts at (0, 0)
        ts = np.linspace(-0.2, self.t_end + 0.2, max(8, 4 * K))
        ex, ey, _ = self.road.pose(self.ego.s_at(ts), self.d_ego)
        lo = np.array([ex.min(), ey.min()]) - _TEX_MARGIN
        hi = np.array([ex.max(), ey.max()]) + _TEX_MARGIN
        self.road.shift(-lo)
        self.tex_size = (int(math.ceil((hi[0] - lo[0]) / _TEX_RES)), int(math.ceil((hi[1] - lo[1]) / _TEX_RES)))

        # objects
        zone_side = int(rng.choice([-1, 1]))
        sp = _Spawner(rng, self.lanes, self.sidewalk, (S0 - 90.0, S1 + 90.0), (S0, S1), self.ego, self.t_end)
        sp.construction_zones(zone_side)
        sp.guaranteed(-zone_side)
        sp.parking(float(rng.uniform(0.2, 0.4)))
        sp.traffic()
        sp.cyclists(-zone_side)
        sp.extras(zone_side)
        sp.sidewalk_life(float(rng.uniform(26.0, 40.0)))
        self.objects = sp.objs
        self._arrays()
        self.description = (f"synthetic: {self.lanes} lane(s)/direction, {'curvy' if curvy else 'straight'} road, "
                            f"construction zone on the {'left' if zone_side > 0 else 'right'}, "
                            f"{len(self.objects)} objects")

        # static clutter: buildings, poles, trees
        self._build_clutter(rng, S0 - 200.0, S1 + 200.0)

        # appearance
        srng = np.random.default_rng(s_style)
        sun_az, sun_el = srng.uniform(-np.pi, np.pi), srng.uniform(0.5, 1.1)
        self.sun = np.array([math.cos(sun_az), math.sin(sun_az), math.tan(sun_el)])
        self.sun /= np.linalg.norm(self.sun)
        overcast = srng.random() < 0.3
        self.sky = np.array([170, 175, 180] if overcast else [205, 150, 95], np.float64)  # BGR
        self.haze = np.array([200, 200, 200] if overcast else [230, 215, 200], np.float64)
        self.exposure = float(srng.uniform(0.85, 1.1))
        styles = [_style(o.cls, o.category, srng, o.rider, o.size) for o in self.objects]
        styles += [_clutter_style(k, srng, tuple(s)) for k, s in zip(self.clutter_kind, self.clutter_size)]
        self._build_rects(styles)
        self._build_texture(srng)

        # timeline
        self._timeline(np.random.default_rng(s_tl))
        self._cams: dict[str, _CameraModel] | None = None

    # ---------------------------------------------------------------- arrays
    def _arrays(self) -> None:
        o = self.objects
        self.n_objects = len(o)
        self.obj_mode = np.array([x.mode for x in o], np.int64)
        self.obj_s0 = np.array([x.s0 for x in o], np.float64)
        self.obj_d = np.array([x.d for x in o], np.float64)
        self.obj_v = np.array([x.v for x in o], np.float64)
        self.obj_tau = np.array([x.tau for x in o], np.float64)
        self.obj_rev = np.array([x.reverse for x in o], bool)
        self.obj_yaw_off = np.array([x.yaw_off for x in o], np.float64)
        self.obj_size = np.array([x.size for x in o], np.float64).reshape(-1, 3)
        self.obj_cls = [x.cls for x in o]
        specs = [_CLASS_SPEC[c] for c in self.obj_cls]
        self.obj_inten = np.array([s["inten"] for s in specs], np.float64).reshape(-1, 2)
        self.obj_rcs = np.array([s["rcs"] for s in specs], np.float64).reshape(-1, 2)
        self.obj_pdet = np.array([s["p"] for s in specs], np.float64)
        self.obj_extra = np.array([s["extra"] for s in specs], np.float64)
        self.obj_vehicle = np.array([c in _VEHICLES for c in self.obj_cls], bool)

    def _build_clutter(self, rng: np.random.Generator, lo: float, hi: float) -> None:
        kinds: list[str] = []
        cen: list[tuple[float, float, float]] = []
        size: list[tuple[float, float, float]] = []
        yaw: list[float] = []
        road = self.road

        def put(kind: str, s: float, o: float, sz: tuple[float, float, float], z0: float = 0.0,
                yaw_off: float = 0.0) -> None:
            x, y, h = road.pose(s, o)
            kinds.append(kind)
            cen.append((float(x), float(y), z0 + sz[2] / 2))
            size.append(sz)
            yaw.append(float(h) + yaw_off)

        for side in (-1, 1):
            s = lo
            while s < hi:  # buildings
                length = float(rng.uniform(9.0, 17.0))
                depth, height = float(rng.uniform(8.0, 15.0)), float(rng.uniform(5.0, 18.0))
                setback = float(rng.uniform(2.0, 5.0))
                put("building", s + length / 2, side * (self.o_kerb + self.sidewalk + setback + depth / 2),
                    (round(length, 3), round(depth, 3), round(height, 3)))
                s += length + (float(rng.uniform(12, 30)) if rng.random() < 0.15 else float(rng.uniform(0.5, 5)))
            s = lo + float(rng.uniform(0, 20))
            while s < hi:  # street lights at the kerb
                put("pole", s, side * (self.o_kerb + 0.35), (0.25, 0.25, 7.5))
                s += float(rng.uniform(22.0, 35.0))
            s = lo + float(rng.uniform(0, 10))
            while s < hi:  # trees between sidewalk and buildings
                if rng.random() < 0.6:
                    o = side * (self.o_kerb + self.sidewalk + 0.9)
                    put("trunk", s, o, (0.35, 0.35, 2.8))
                    c = float(rng.uniform(2.2, 3.2))
                    put("canopy", s, o, (c, c, float(rng.uniform(2.5, 3.5))), z0=2.8)
                s += float(rng.uniform(10.0, 25.0))
        self.clutter_kind = kinds
        self.clutter_centre = np.array(cen, np.float64).reshape(-1, 3)
        self.clutter_size = np.array(size, np.float64).reshape(-1, 3)
        self.clutter_yaw = np.array(yaw, np.float64)
        self.clutter_inten = np.array([_CLUTTER_SPEC[k]["inten"] for k in kinds], np.float64).reshape(-1, 2)

    def _build_rects(self, styles: list[np.ndarray]) -> None:
        """Stack the textured rectangles of all boxes (objects then clutter) into flat arrays."""
        sizes = np.concatenate([self.obj_size, self.clutter_size])
        counts = np.array([len(s) for s in styles], np.int64)
        self.rect_start = np.concatenate([[0], np.cumsum(counts)])
        st = np.concatenate(styles)
        face = st[:, 0].astype(np.int64)
        box = np.repeat(np.arange(len(styles)), counts)
        u = np.stack([st[:, 1], st[:, 2], st[:, 2], st[:, 1]], 1)[..., None]
        v = np.stack([st[:, 3], st[:, 3], st[:, 4], st[:, 4]], 1)[..., None]
        unit = _FACE_O[face][:, None] + u * _FACE_U[face][:, None] + v * _FACE_V[face][:, None]
        self.rect_local = unit * sizes[box][:, None]  # (n, 4, 3) about the box centre, unrotated
        self.rect_face = face
        self.rect_box = box
        self.rect_col = st[:, 5:8][:, ::-1] * self.exposure  # BGR
        self.rect_order = np.arange(len(st))
        self.is_building = np.array([False] * self.n_objects + [k == "building" for k in self.clutter_kind])

    def _build_texture(self, rng: np.random.Generator) -> None:
        """Top-down ground texture (BGR) and material raster in the global frame, _TEX_RES per texel."""
        w, h = self.tex_size
        mat = np.zeros((h, w), np.uint8)
        sh = 3
        scale = (1 << sh) / _TEX_RES
        road = self.road

        def poly(pts: np.ndarray) -> np.ndarray:
            return np.round(pts * scale).astype(np.int32)

        def band(o1: float, o2: float, value: int) -> None:
            for sgn in (-1.0, 1.0):
                p = np.concatenate([road.curve(sgn * o1), road.curve(sgn * o2)[::-1]])
                cv2.fillPoly(mat, [poly(p)], value, cv2.LINE_8, sh)

        band(0.0, self.o_kerb, 1)
        band(self.o_kerb, self.o_kerb + self.sidewalk, 4)
        band(self.o_kerb, self.o_kerb + 0.25, 5)

        def dashes(o: float, on: float, off: float, width: float, value: int) -> None:
            quads = []
            for s in np.arange(road.s[0], road.s[-1] - on, on + off):
                x0, y0, h0 = road.pose(s, 0.0)
                x1, y1, h1 = road.pose(s + on, 0.0)
                q = []
                for xx, yy, hh, oo in ((x0, y0, h0, o - width / 2), (x1, y1, h1, o - width / 2),
                                       (x1, y1, h1, o + width / 2), (x0, y0, h0, o + width / 2)):
                    q.append((xx - math.sin(hh) * oo, yy + math.cos(hh) * oo))
                quads.append(poly(np.array(q)))
            cv2.fillPoly(mat, quads, value, cv2.LINE_8, sh)

        def line(o: float, width: float, value: int) -> None:
            p = np.concatenate([road.curve(o - width / 2), road.curve(o + width / 2)[::-1]])
            cv2.fillPoly(mat, [poly(p)], value, cv2.LINE_8, sh)

        line(-0.12, 0.12, 3)
        line(0.12, 0.12, 3)
        if self.lanes == 2:
            dashes(-_LANE_W, 3.0, 6.0, 0.15, 2)
            dashes(_LANE_W, 3.0, 6.0, 0.15, 2)
        line(-self.o_lane, 0.15, 2)
        line(self.o_lane, 0.15, 2)
        # zebra crossings near the ego path
        S0, S1 = float(self.ego.s_at(0.0)), float(self.ego.s_at(self.t_end))
        for _ in range(int(rng.integers(0, 3))):
            sc = float(rng.uniform(S0 - 20, S1 + 40))
            quads = []
            for dd in np.arange(-self.o_lane + 0.3, self.o_lane - 0.3, 1.0):
                pts = []
                for ss, oo in ((sc, dd), (sc + 3.5, dd), (sc + 3.5, dd + 0.5), (sc, dd + 0.5)):
                    x, y, _ = road.pose(ss, oo)
                    pts.append((float(x), float(y)))
                quads.append(poly(np.array(pts)))
            cv2.fillPoly(mat, quads, 2, cv2.LINE_8, sh)
        self.material = mat

        pal = np.array([[55, 115, 80], [100, 98, 96], [225, 228, 230], [60, 185, 215], [165, 170, 172],
                        [190, 190, 192]], np.float64)  # BGR
        pal[0] = pal[0] * rng.uniform(0.85, 1.15, 3)
        pal[1] = pal[1] * rng.uniform(0.85, 1.1)
        pal = np.clip(pal * self.exposure, 0, 255)
        amp = np.array([14, 7, 5, 5, 6, 4], np.float32)
        small = rng.normal(0.0, 1.0, (h // 24 + 2, w // 24 + 2)).astype(np.float32)
        blotch = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
        tex = np.empty((h, w, 3), np.uint8)
        for r0 in range(0, h, 512):  # chunked to bound memory
            m = mat[r0:r0 + 512]
            fine = rng.integers(-6, 7, m.shape).astype(np.float32)
            lum = (blotch[r0:r0 + 512] * 1.5 + fine * 0.5) * amp[m]
            tex[r0:r0 + 512] = np.clip(pal[m] + lum[..., None], 0, 255).astype(np.uint8)
        self.texture = tex
        self.grass_bgr = tuple(float(c) for c in pal[0])

    def map_mask(self) -> np.ndarray:
        """Drivable-area mask for the devkit's MapMask (0.1 m/px, row 0 = max y), uint8 0/255."""
        drive = np.isin(self.material, _MAT_ASPHALT).astype(np.uint8) * 255
        h, w = drive.shape
        size = (int(round(w * _TEX_RES / _MAP_RES)), int(round(h * _TEX_RES / _MAP_RES)))
        return np.ascontiguousarray(cv2.resize(drive, size, interpolation=cv2.INTER_NEAREST)[::-1])

    # ---------------------------------------------------------------- timeline
    def _timeline(self, rng: np.random.Generator) -> None:
        """Sensor timestamps (s) with keyframe flags and the sample each record belongs to."""
        K = self.cfg.samples_per_scene
        sweeps = self.cfg.sweeps
        self.times: dict[str, np.ndarray] = {}
        self.is_key: dict[str, np.ndarray] = {}
        self.sample_of: dict[str, np.ndarray] = {}
        n_l = 10 * (K - 1) + 1
        tl = _LIDAR_DT * np.arange(n_l) + rng.normal(0.0, 0.0003, n_l)
        tl[0] = 0.0
        key = np.arange(n_l) % 10 == 0
        sample = (np.arange(n_l) + 9) // 10
        self.sample_t = tl[key].copy()
        self._add_channel(LIDAR, tl, key, sample, sweeps)
        for cam in CAMERAS:
            keys = self.sample_t + _CAM_OFFSETS[cam] + np.clip(rng.normal(0, 0.0008, K), -0.002, 0.002)
            t, k, smp = [keys[0]], [True], [0]
            for i in range(1, K):
                for j in range(1, 6):
                    t.append(keys[i - 1] + j * _CAM_DT + rng.normal(0, 0.0003))
                    k.append(False)
                    smp.append(i)
                t.append(keys[i])
                k.append(True)
                smp.append(i)
            self._add_channel(cam, np.array(t), np.array(k), np.array(smp), sweeps)
        for rad in RADARS:
            period = _RADAR_DT * rng.uniform(0.99, 1.01)
            start = -0.06 + rng.uniform(0.0, period)
            n = int((self.t_end + 0.12) / period) + 2
            t = start + period * np.arange(n) + rng.normal(0.0, 0.0005, n)
            key_idx = np.array([int(np.argmin(np.abs(t - ts))) for ts in self.sample_t])
            t = t[key_idx[0]:key_idx[-1] + 1]
            key_idx = key_idx - key_idx[0]
            k = np.zeros(len(t), bool)
            k[key_idx] = True
            smp = np.searchsorted(key_idx, np.arange(len(t)), side="left")
            self._add_channel(rad, t, k, smp, sweeps)

    def _add_channel(self, ch: str, t: np.ndarray, key: np.ndarray, sample: np.ndarray, sweeps: bool) -> None:
        keep = np.ones(len(t), bool) if sweeps else key
        self.times[ch], self.is_key[ch], self.sample_of[ch] = t[keep], key[keep], sample[keep]

    def instance_token(self, i: int) -> str:
        """Token of object i's instance record (also its identity across samples)."""
        return _token(self.cfg.seed, self.index, "inst", i)

    def stamp_us(self, t: float | np.ndarray) -> np.ndarray:
        return self.t0_us + np.round(np.asarray(t) * 1e6).astype(np.int64)

    # ---------------------------------------------------------------- kinematics
    def ego_pose(self, t: float) -> tuple[float, float, float]:
        """(x, y, yaw) of the ego (rear axle, base_link) in the global frame at time t."""
        x, y, h = self.road.pose(self.ego.s_at(t), self.d_ego)
        return float(x), float(y), float(h)

    def ego_transform(self, t: float) -> np.ndarray:
        x, y, yaw = self.ego_pose(t)
        return _transform(_rot_z(yaw), (x, y, 0.0))

    def ego_velocity(self, t: float, dt: float = 0.01) -> tuple[np.ndarray, float]:
        """Global (vx, vy) and yaw rate of the ego at t."""
        x0, y0, h0 = self.ego_pose(t - dt)
        x1, y1, h1 = self.ego_pose(t + dt)
        return np.array([x1 - x0, y1 - y0]) / (2 * dt), float(_wrap(h1 - h0)) / (2 * dt)

    def _centres(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        s = np.where(self.obj_mode == _LANE, self.obj_s0 + np.where(self.obj_rev, -1.0, 1.0) * self.obj_v * t,
                     self.obj_s0)
        follow = self.obj_mode == _FOLLOW
        if follow.any():
            s = s.copy()
            s[follow] = self.ego.s_at(t + self.obj_tau[follow]) + self.obj_s0[follow]
        x, y, h = self.road.pose(s, self.obj_d)
        return np.stack([x, y], 1), h

    def object_states(self, t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Object centres (n, 3), yaw (n,) and global velocity (n, 2) at time t."""
        xy, h = self._centres(t)
        dt = 0.02
        xy0, _ = self._centres(t - dt)
        xy1, _ = self._centres(t + dt)
        vel = (xy1 - xy0) / (2 * dt)
        yaw = _wrap(h + np.where(self.obj_rev, np.pi, 0.0) + self.obj_yaw_off)
        cen = np.concatenate([xy, self.obj_size[:, 2:3] / 2], 1)
        return cen, yaw, vel

    def all_boxes(self, t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Centres, yaws and sizes of objects (first n_objects) and clutter at time t."""
        cen, yaw, _ = self.object_states(t)
        return (np.concatenate([cen, self.clutter_centre]), np.concatenate([yaw, self.clutter_yaw]),
                np.concatenate([self.obj_size, self.clutter_size]))

    # ---------------------------------------------------------------- cameras
    def cameras(self) -> dict[str, _CameraModel]:
        if self._cams is None:
            self._cams = {c: _CameraModel(c, self.cfg.image_size, self.sky, self.haze) for c in CAMERAS}
        return self._cams

    def render_camera(self, channel: str, t: float, hidden: Sequence[int] = ()) -> np.ndarray:
        """BGR image of camera `channel` at time t; objects whose index is in `hidden` are left out."""
        cam = self.cameras()[channel]
        w, h = cam.size
        ex, ey, eyaw = self.ego_pose(t)
        img = cam.bg.copy()
        r0 = cam.row0
        if r0 < h:  # ground rows: texture lookup through the per-pixel ground rays, hazed with distance
            c, s = math.cos(eyaw), math.sin(eyaw)
            inv = 1.0 / _TEX_RES
            mapx = cv2.addWeighted(cam.gx, c * inv, cam.gy, -s * inv, ex * inv)
            mapy = cv2.addWeighted(cam.gx, s * inv, cam.gy, c * inv, ey * inv)
            ground = cv2.remap(self.texture, mapx, mapy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                               borderValue=self.grass_bgr)
            layer = cv2.blendLinear(ground, cam.bg_half, cam.w_fg, cam.w_bg)
            img[r0:] = cv2.resize(layer, (w, h - r0), interpolation=cv2.INTER_LINEAR)

        T_gc = _transform(_rot_z(eyaw), (ex, ey, 0.0)) @ cam.T_ec
        R_gc, t_gc = T_gc[:3, :3], T_gc[:3, 3]
        K = cam.K
        cen, yaw, size = self.all_boxes(t)
        rad = np.linalg.norm(size, axis=1) / 2
        rel = cen - t_gc
        z_c = rel @ R_gc[:, 2]
        dist = np.linalg.norm(rel, axis=1)
        keep = (dist < 125.0 + rad) & (z_c > -rad)
        if len(hidden):
            keep[np.asarray(hidden, np.int64)] = False
        boxes = np.flatnonzero(keep)
        if boxes.size == 0:
            return img
        # box-level frustum culling with the 8 projected corners
        cb, sb = np.cos(yaw[boxes]), np.sin(yaw[boxes])
        loc = _UNIT_CORNERS[None] * size[boxes][:, None]
        wc = np.stack([cb[:, None] * loc[..., 0] - sb[:, None] * loc[..., 1],
                       sb[:, None] * loc[..., 0] + cb[:, None] * loc[..., 1], loc[..., 2]], -1) + cen[boxes][:, None]
        pc = (wc - t_gc) @ R_gc
        zc = pc[..., 2]
        anyf = (zc > 0.2).any(1)
        allf = (zc > 0.2).all(1)
        zz = np.maximum(zc, 0.2)
        u = K[0, 0] * pc[..., 0] / zz + K[0, 2]
        v = K[1, 1] * pc[..., 1] / zz + K[1, 2]
        onimg = (u.max(1) >= 0) & (u.min(1) < w) & (v.max(1) >= 0) & (v.min(1) < h)
        sel = anyf & (onimg | ~allf)
        boxes = boxes[sel]
        if boxes.size == 0:
            return img
        rank = np.empty(self.n_objects + len(self.clutter_kind), np.int64)
        rank[boxes] = _painter_rank(wc[sel], u[sel], v[sel], allf[sel], cb[sel], sb[sel], cen[boxes], size[boxes],
                                    t_gc, dist[boxes])
        self._draw_shadows(img, cam, boxes[boxes < self.n_objects], cen, yaw, size, R_gc, t_gc, dist)
        # textured rectangles of the kept boxes
        counts = self.rect_start[boxes + 1] - self.rect_start[boxes]
        idx = np.repeat(self.rect_start[boxes] - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts) + \
            np.arange(int(counts.sum()))
        rb = self.rect_box[idx]
        cy_, sy_ = np.cos(yaw[rb]), np.sin(yaw[rb])
        fn = _FACE_N[self.rect_face[idx]]
        nw = np.stack([cy_ * fn[:, 0] - sy_ * fn[:, 1], sy_ * fn[:, 0] + cy_ * fn[:, 1], fn[:, 2]], 1)
        # back-face culling on the face plane (any point of the face works for a planar test)
        loc = self.rect_local[idx]
        p0 = np.stack([cy_ * loc[:, 0, 0] - sy_ * loc[:, 0, 1], sy_ * loc[:, 0, 0] + cy_ * loc[:, 0, 1],
                       loc[:, 0, 2]], 1) + cen[rb]
        vis = np.einsum("ij,ij->i", nw, t_gc - p0) > 1e-6
        idx, rb, nw, loc, cy_, sy_ = idx[vis], rb[vis], nw[vis], loc[vis], cy_[vis], sy_[vis]
        world = np.empty_like(loc)
        world[..., 0] = cy_[:, None] * loc[..., 0] - sy_[:, None] * loc[..., 1] + cen[rb, 0:1]
        world[..., 1] = sy_[:, None] * loc[..., 0] + cy_[:, None] * loc[..., 1] + cen[rb, 1:2]
        world[..., 2] = loc[..., 2] + cen[rb, 2:3]
        pc = (world - t_gc) @ R_gc  # camera frame
        z = pc[..., 2]
        near = 0.2
        front = (z > near).all(1)
        some = (z > near).any(1)
        zc = np.maximum(z, near)
        uv = np.stack([K[0, 0] * pc[..., 0] / zc + K[0, 2], K[1, 1] * pc[..., 1] / zc + K[1, 2]], -1)
        x_, y_ = uv[..., 0], uv[..., 1]
        inside = (x_.max(1) >= 0) & (x_.min(1) < w) & (y_.max(1) >= 0) & (y_.min(1) < h)
        area = 0.5 * np.abs((x_ * np.roll(y_, -1, 1) - np.roll(x_, -1, 1) * y_).sum(1))
        draw = (front & inside & (area > 0.6)) | (some & ~front)  # tiny details are skipped (LOD)
        # shading and haze
        d = np.linalg.norm(world.mean(1) - t_gc, axis=1)
        shade = np.where(nw[:, 2] < -0.5, 0.45, 0.62 + 0.38 * np.clip(nw @ self.sun, 0.0, 1.0))
        fog = (1.0 - np.exp(-d / 260.0))[:, None]
        col = np.clip(self.rect_col[idx] * shade[:, None] * (1 - fog) + self.haze[None] * fog, 0, 255)
        # painter's order: boxes back to front, rectangle order within a box
        order = np.lexsort((idx, rank[rb]))
        order = order[draw[order]]
        pts = np.round(uv[order] * 16.0).astype(np.int32)
        cols = col[order].astype(np.int64).tolist()
        fr = front[order].tolist()
        for k, i in enumerate(order.tolist()):
            if fr[k]:
                cv2.fillConvexPoly(img, pts[k], cols[k], cv2.LINE_AA, 4)
            else:
                p = _clip_near(pc[i], near)
                if len(p) >= 3:
                    q = np.stack([K[0, 0] * p[:, 0] / p[:, 2] + K[0, 2], K[1, 1] * p[:, 1] / p[:, 2] + K[1, 2]], 1)
                    cv2.fillConvexPoly(img, np.round(q * 16.0).astype(np.int32), cols[k], cv2.LINE_AA, 4)
        return img

    def _draw_shadows(self, img: np.ndarray, cam: _CameraModel, boxes: np.ndarray, cen: np.ndarray,
                      yaw: np.ndarray, size: np.ndarray, R_gc: np.ndarray, t_gc: np.ndarray,
                      dist: np.ndarray) -> None:
        """Dark contact shadows under objects (footprint grown and shifted away from the sun)."""
        if boxes.size == 0:
            return
        boxes = boxes[np.argsort(-dist[boxes], kind="stable")]
        sun_xy = -self.sun[:2] / max(self.sun[2], 0.3)
        c, s = np.cos(yaw[boxes]), np.sin(yaw[boxes])
        lx = np.array([1.0, -1.0, -1.0, 1.0])[None] * (size[boxes, 0:1] * 0.56)
        ly = np.array([1.0, 1.0, -1.0, -1.0])[None] * (size[boxes, 1:2] * 0.56)
        off = 0.12 * size[boxes, 2:3]
        gx = c[:, None] * lx - s[:, None] * ly + cen[boxes, 0:1] + sun_xy[0] * off
        gy = s[:, None] * lx + c[:, None] * ly + cen[boxes, 1:2] + sun_xy[1] * off
        g = np.stack([gx, gy, np.full_like(gx, 0.01)], -1)
        pc = (g - t_gc) @ R_gc
        ok = (pc[..., 2] > 0.3).all(1)
        z = np.maximum(pc[..., 2], 0.3)
        K = cam.K
        uv = np.stack([K[0, 0] * pc[..., 0] / z + K[0, 2], K[1, 1] * pc[..., 1] / z + K[1, 2]], -1)
        f = (1.0 - np.exp(-dist[boxes] / 260.0))[:, None]
        col = (np.array([42.0, 44.0, 46.0]) * (1 - f) + self.haze * f).astype(np.int64).tolist()
        pts = np.round(uv * 16).astype(np.int32)
        for k in np.flatnonzero(ok).tolist():
            cv2.fillConvexPoly(img, pts[k], col[k], cv2.LINE_AA, 4)

    # ---------------------------------------------------------------- LiDAR
    def lidar_rays(self) -> np.ndarray:
        """(32, A, 3) unit ray directions in the LiDAR frame (ring-major, azimuth from -pi)."""
        if not hasattr(self, "_rays"):
            a = self.cfg.lidar_azimuth_steps
            az = -np.pi + (np.arange(a) + 0.5) * (2 * np.pi / a)
            el = _LIDAR_ELEV
            self._rays = np.stack([np.cos(el)[:, None] * np.cos(az)[None], np.cos(el)[:, None] * np.sin(az)[None],
                                   np.sin(el)[:, None] * np.ones_like(az)[None]], -1)
            self._rays_t = np.ascontiguousarray(self._rays.transpose(1, 0, 2))  # azimuth-major copy
        return self._rays

    def cast_lidar(self, t: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Ray-cast one LiDAR sweep at time t.

        A range image (ring x azimuth) is z-buffered: the ground plane, then all (ray, box) pairs
        of every box's conservative (ring, azimuth) window at once (slab test, nearest hit per
        ray). Returns points (N, 5) float32 (x, y, z, intensity, ring)
        in the LIDAR_TOP frame, the box index of each point (-1 ground) and, per object, the number
        of rays that would hit it without occlusion (for the visibility level).
        """
        rays = self.lidar_rays()
        nr, na, _ = rays.shape
        T_gs = self.ego_transform(t) @ _sensor_to_ego(LIDAR)
        R, tr = T_gs[:3, :3], T_gs[:3, 3]
        dz = rays @ R[2]
        depth = np.where(dz < -1e-6, -tr[2] / np.minimum(dz, -1e-6), np.inf)  # ground plane z = 0
        ids = np.full((nr, na), -1, np.int64)
        faces = np.zeros((nr, na), np.int8)  # face of the box a ray hits: +1 front (+x), -1 back, 0 other
        unocc = np.zeros(self.n_objects, np.int64)
        cen, yaw, size = self.all_boxes(t)
        rel = cen - tr
        rad = np.linalg.norm(size, axis=1) / 2
        dxy = np.linalg.norm(rel[:, :2], axis=1)
        cand = np.flatnonzero((dxy < _LIDAR_MAX_RANGE + rad) & (dxy > rad + 0.3))
        cand = cand[np.argsort(dxy[cand] - rad[cand], kind="stable")]  # near to far
        if cand.size:
            # per-box windows, vectorised: box frame -> sensor frame, corner azimuths/elevations
            c_s = rel[cand] @ R
            cb, sb = np.cos(yaw[cand]), np.sin(yaw[cand])
            rz = np.zeros((cand.size, 3, 3))
            rz[:, 0, 0], rz[:, 0, 1], rz[:, 1, 0], rz[:, 1, 1], rz[:, 2, 2] = cb, -sb, sb, cb, 1.0
            R_sb = np.einsum("ji,njk->nik", R, rz)
            half = size[cand] / 2
            corners = np.einsum("nij,nkj->nki", R_sb, _UNIT_CORNERS[None] * size[cand][:, None]) + c_s[:, None]
            ac = np.arctan2(c_s[:, 1], c_s[:, 0])
            relaz = _wrap(np.arctan2(corners[..., 1], corners[..., 0]) - ac[:, None])
            da = 2 * np.pi / na
            j0 = np.floor((ac + relaz.min(1) + np.pi) / da).astype(np.int64) - 1
            j1 = np.floor((ac + relaz.max(1) + np.pi) / da).astype(np.int64) + 1
            rxy = np.hypot(c_s[:, 0], c_s[:, 1])
            rh = np.hypot(half[:, 0], half[:, 1])
            rmin, rmax = np.maximum(rxy - rh, 0.05), rxy + rh
            zmin, zmax = corners[..., 2].min(1), corners[..., 2].max(1)
            el_hi = np.arctan2(zmax, np.where(zmax > 0, rmin, rmax))
            el_lo = np.arctan2(zmin, np.where(zmin > 0, rmax, rmin))
            r0 = np.searchsorted(_LIDAR_ELEV, el_lo - 0.002)
            r1 = np.searchsorted(_LIDAR_ELEV, el_hi + 0.002)
            o_b = -np.einsum("ni,nij->nj", c_s, R_sb)  # sensor origin in the box frame
            ok = np.flatnonzero((relaz.max(1) - relaz.min(1) < np.pi) & (r1 > r0))
            # all (ray, box) candidate pairs of the windows at once
            nrow, ncol = (r1 - r0)[ok], (j1 - j0 + 1)[ok]
            cnt = nrow * ncol
            box_of = np.repeat(ok, cnt)
            local = np.arange(int(cnt.sum())) - np.repeat(np.cumsum(cnt) - cnt, cnt)
            ncol_p = np.repeat(ncol, cnt)
            rr = r0[box_of] + local // ncol_p
            cc = (j0[box_of] + local % ncol_p) % na
            ray = rr * na + cc
            dirs_s = rays.reshape(-1, 3)[ray]
            rot = R_sb[box_of]
            lo, hi = -half[box_of] - o_b[box_of], half[box_of] - o_b[box_of]
            tmin = np.full(ray.size, -np.inf)
            tmax = np.full(ray.size, np.inf)
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                for k in range(3):  # slab test per box axis (column-wise: fast on (P,) arrays)
                    dk = dirs_s[:, 0] * rot[:, 0, k] + dirs_s[:, 1] * rot[:, 1, k] + dirs_s[:, 2] * rot[:, 2, k]
                    inv = 1.0 / dk
                    a, b = lo[:, k] * inv, hi[:, k] * inv
                    np.maximum(tmin, np.minimum(a, b), out=tmin)
                    np.minimum(tmax, np.maximum(a, b), out=tmax)
            hit = (tmax >= tmin) & (tmin > 0.0)
            bx = cand[box_of[hit]]
            unocc += np.bincount(bx[bx < self.n_objects], minlength=self.n_objects)  # hits without occlusion
            pair = np.flatnonzero(hit)
            ray, th, tx = ray[hit], tmin[hit], tmax[hit]
            flat = depth.reshape(-1)
            closer = th < flat[ray]  # in front of the ground
            ray, th, tx, bx, pair = ray[closer], th[closer], tx[closer], bx[closer], pair[closer]
            best = np.full(flat.size, np.inf)
            np.minimum.at(best, ray, th)  # nearest box per ray
            win = th == best[ray]
            ray, th, tx, bx, pair = ray[win], th[win], tx[win], bx[win], pair[win]
            # which face the ray enters: the box-frame axis whose slab bound the entry point sits on
            d_b = np.einsum("pi,pik->pk", dirs_s[pair], rot[pair])
            p_b = o_b[box_of[pair]] + th[:, None] * d_b
            rel_b = p_b / half[box_of[pair]]
            on_end = np.abs(rel_b[:, 0]) >= np.abs(rel_b[:, 1:]).max(1)
            faces.reshape(-1)[ray] = np.where(on_end, np.sign(rel_b[:, 0]), 0).astype(np.int8)
            # returns land a little inside the surface (like real points inside a loose box)
            flat[ray] = th + np.minimum(rng.uniform(0.005, 0.04, ray.size), 0.5 * (tx - th))
            ids.reshape(-1)[ray] = bx
        valid = (depth < _LIDAR_MAX_RANGE) & (depth > _LIDAR_MIN_RANGE) & (rng.random(depth.shape) > 0.01)
        sel = np.flatnonzero(valid.T)  # firing order: azimuth-major like the real sensor
        ring = sel % nr
        dep = depth.T.reshape(-1)[sel]
        hid = ids.T.reshape(-1)[sel]
        face = faces.T.reshape(-1)[sel]
        dirs = self._rays_t.reshape(-1, 3)[sel]
        ground = hid < 0
        dep[ground] += rng.normal(0.0, 0.012, int(ground.sum()))
        pts = dirs * dep[:, None]
        # intensity: per box class/material, ground by texture material. Vehicles have a front and a
        # back in LiDAR too: the front (windscreen, dark grille) returns weakly, the back (number
        # plate, tail-light reflectors) strongly, with retro-reflector hits on the back only.
        inten = np.empty(len(dep))
        box_int = np.concatenate([self.obj_inten, self.clutter_inten])
        ob = ~ground
        bi = hid[ob]
        inten[ob] = box_int[bi, 0] + box_int[bi, 1] * rng.standard_normal(bi.size)
        veh = (bi < self.n_objects) & self.obj_vehicle[np.minimum(bi, self.n_objects - 1)]
        fo = face[ob]
        inten[ob] = np.where(veh & (fo > 0), 0.3 * inten[ob], inten[ob])
        inten[ob] = np.where(veh & (fo < 0), inten[ob] + 70.0, inten[ob])
        retro = np.zeros(len(dep), bool)
        retro[ob] = veh & (fo < 0) & (rng.random(bi.size) < 0.25)
        inten[retro] = rng.uniform(150.0, 255.0, int(retro.sum()))
        if ground.any():
            g = pts[ground] @ R.T + tr
            px = np.floor(g[:, 0] / _TEX_RES).astype(np.int64)
            py = np.floor(g[:, 1] / _TEX_RES).astype(np.int64)
            hh, ww = self.material.shape
            inb = (px >= 0) & (px < ww) & (py >= 0) & (py < hh)
            m = np.zeros(len(g), np.int64)
            m[inb] = self.material[py[inb], px[inb]]
            inten[ground] = _MAT_INTENSITY[m, 0] + _MAT_INTENSITY[m, 1] * rng.standard_normal(len(g))
        out = np.empty((len(dep), 5), np.float32)
        out[:, :3] = pts
        out[:, 3] = np.round(np.clip(inten, 0.0, 255.0))
        out[:, 4] = ring
        return out, hid, unocc

    # ---------------------------------------------------------------- radar
    def radar_sweep(self, channel: str, t: float, rng: np.random.Generator) -> np.ndarray:
        """One radar sweep at time t: structured array with the 18 nuScenes fields, radar frame.

        Returns on objects visible in a 1D (azimuth) occlusion buffer, with a per-class detection
        probability and RCS; static clutter on buildings/poles/trees and the ground; a few ghosts
        (moving-looking returns that the devkit's default filters reject).
        """
        T_ge = self.ego_transform(t)
        T_gs = T_ge @ _sensor_to_ego(channel)
        R2, p_r = T_gs[:2, :2], T_gs[:2, 3]
        v_ego, omega = self.ego_velocity(t)
        arm = p_r - T_ge[:2, 3]
        v_s = R2.T @ (v_ego + omega * np.array([-arm[1], arm[0]]))  # sensor velocity in the radar frame
        cen, yaw, vel = self.object_states(t)
        allc = np.concatenate([cen, self.clutter_centre])
        alls = np.concatenate([self.obj_size, self.clutter_size])
        loc = (allc[:, :2] - p_r) @ R2
        lyaw = np.concatenate([yaw, self.clutter_yaw]) - math.atan2(R2[1, 0], R2[0, 0])
        dist = np.linalg.norm(loc, axis=1)
        rad = np.linalg.norm(alls[:, :2], axis=1) / 2
        bottom = allc[:, 2] - alls[:, 2] / 2
        cand = np.flatnonzero((dist < 110.0 + rad) & (np.abs(np.arctan2(loc[:, 1], loc[:, 0])) < np.deg2rad(75))
                              & (dist > rad + 0.2) & (bottom < 1.2) & (bottom + alls[:, 2] > 0.3))
        # footprints in the radar frame -> azimuth spans and nearest range
        c, s = np.cos(lyaw[cand]), np.sin(lyaw[cand])
        hl, hw = alls[cand, 0:1] / 2, alls[cand, 1:2] / 2
        dx, dy = np.array([1.0, 1.0, -1.0, -1.0])[None] * hl, np.array([1.0, -1.0, 1.0, -1.0])[None] * hw
        cx = loc[cand, 0:1] + dx * c[:, None] - dy * s[:, None]
        cy = loc[cand, 1:2] + dx * s[:, None] + dy * c[:, None]
        az = np.arctan2(cy, cx)
        a0, a1 = az.min(1), az.max(1)
        rn = np.hypot(cx, cy).min(1)
        good = a1 - a0 < np.pi
        cand, a0, a1, rn = cand[good], a0[good], a1[good], rn[good]
        nb, amin, abin = 300, -np.deg2rad(75.0), np.deg2rad(150.0) / 300
        i0 = np.clip(((a0 - amin) / abin).astype(np.int64), 0, nb - 1)
        i1 = np.clip(((a1 - amin) / abin).astype(np.int64), 0, nb - 1)
        cnt = i1 - i0 + 1
        owner = np.repeat(np.arange(cand.size), cnt)
        starts = np.concatenate([[0], np.cumsum(cnt)[:-1]]).astype(np.int64)
        bins = np.repeat(i0 - starts, cnt) + np.arange(int(cnt.sum()))
        buf = np.full(nb, np.inf)
        np.minimum.at(buf, bins, rn[owner])
        vis = (np.add.reduceat((rn[owner] <= buf[bins] + 0.5).astype(np.float64), starts) / cnt
               if cand.size else np.zeros(0))
        is_obj = cand < self.n_objects
        # returns on objects
        ob = cand[is_obj]
        rangef = np.where(rn[is_obj] < 40.0, 1.0, np.maximum(0.35, 1.0 - (rn[is_obj] - 40.0) / 100.0))
        p = self.obj_pdet[ob] * rangef * (0.1 + 0.9 * vis[is_obj])
        det = rng.random(ob.size) < p
        n_ret = det * (1 + rng.poisson(self.obj_extra[ob] * (0.5 + 0.5 * vis[is_obj])))
        sel = np.repeat(np.flatnonzero(is_obj), n_ret)  # index into cand per return
        # clutter returns: on clutter boxes or on the ground
        n_c = 1 + int(rng.poisson(26.0 if channel == "RADAR_FRONT" else 16.0))
        cl = np.flatnonzero(~is_obj)
        on_box = rng.random(n_c) < (0.55 if cl.size else 0.0)
        sel_c = cl[rng.integers(0, max(cl.size, 1), int(on_box.sum()))] if cl.size else np.zeros(0, np.int64)
        both = np.concatenate([sel, sel_c]).astype(np.int64)
        frac = rng.uniform(0.1, 0.9, both.size)
        az_s = a0[both] + frac * (a1[both] - a0[both])
        r_s, hit = self._radar_surface(cand[both], az_s, loc, lyaw, alls, rng)
        m_obj = sel.size
        obj_rows = hit[:m_obj]
        box_rows = hit[m_obj:]
        ob_idx = cand[sel][obj_rows]
        n_g = n_c - int(on_box.sum())
        r_g = 2.0 + 98.0 * rng.random(n_g) ** 1.5
        az_g = rng.uniform(-np.pi / 4, np.pi / 4, n_g)
        cb_idx = cand[sel_c][box_rows] - self.n_objects
        crcs = np.array([_CLUTTER_SPEC[self.clutter_kind[i]]["rcs"] for i in cb_idx.tolist()]).reshape(-1, 2)
        r_all = np.concatenate([r_s[:m_obj][obj_rows], r_s[m_obj:][box_rows], r_g])
        az_all = np.concatenate([az_s[:m_obj][obj_rows], az_s[m_obj:][box_rows], az_g])
        vel_all = np.concatenate([vel[ob_idx] @ R2, np.zeros((box_rows.sum() + n_g, 2))])
        rcs_mu = np.concatenate([self.obj_rcs[ob_idx, 0], crcs.mean(1), np.full(n_g, -5.0)])
        rcs_sd = np.concatenate([self.obj_rcs[ob_idx, 1], (crcs[:, 1] - crcs[:, 0]) / 4, np.full(n_g, 4.0)])
        kind = np.concatenate([np.ones(ob_idx.size, np.int64), np.zeros(box_rows.sum() + n_g, np.int64)])
        speed = np.concatenate([np.linalg.norm(vel[ob_idx], axis=1), np.zeros(box_rows.sum() + n_g)])
        stopped = np.concatenate([self.obj_vehicle[ob_idx] & ~np.array([self.objects[i].parked for i in
                                                                          ob_idx.tolist()], bool).reshape(-1),
                                  np.zeros(box_rows.sum() + n_g, bool)]) & (speed < 0.2)
        # ghosts: moving-looking returns that fail the default filters (invalid or ambiguous)
        n_h = int(rng.poisson(2.0))
        r_h, az_h = rng.uniform(5.0, 60.0, n_h), rng.uniform(-np.pi / 4, np.pi / 4, n_h)
        r_all, az_all = np.concatenate([r_all, r_h]), np.concatenate([az_all, az_h])
        v_h = rng.uniform(-8.0, 8.0, n_h)[:, None] * np.stack([np.cos(az_h), np.sin(az_h)], 1)
        vel_all = np.concatenate([vel_all, v_h])
        rcs_mu, rcs_sd = np.concatenate([rcs_mu, np.zeros(n_h)]), np.concatenate([rcs_sd, np.full(n_h, 5.0)])
        kind = np.concatenate([kind, np.full(n_h, 2)])
        speed = np.concatenate([speed, np.linalg.norm(v_h, axis=1)])
        stopped = np.concatenate([stopped, np.zeros(n_h, bool)])
        arr = _radar_rows(rng, r_all, az_all, vel_all, v_s, speed, rcs_mu, rcs_sd, kind, stopped)
        # ARS408-like field of view: +-60 deg to 20 m, +-45 deg to 70 m, +-9 deg to 250 m
        rr = np.hypot(arr["x"], arr["y"])
        aa = np.abs(np.arctan2(arr["y"], arr["x"]))
        fov = ((rr <= 20) & (aa <= np.deg2rad(60))) | ((rr <= 70) & (aa <= np.deg2rad(45))) | \
              ((rr <= 250) & (aa <= np.deg2rad(9)))
        arr = arr[fov & (rr > 0.3)]
        if len(arr) == 0:  # the devkit's reader rejects empty files; real sweeps always have clutter
            arr = _radar_rows(rng, np.array([12.0]), np.zeros(1), np.zeros((1, 2)), v_s, np.zeros(1),
                              np.array([-5.0]), np.array([2.0]), np.zeros(1, np.int64), np.zeros(1, bool))
        arr["id"] = np.arange(len(arr))
        return arr

    @staticmethod
    def _radar_surface(boxes: np.ndarray, az: np.ndarray, loc: np.ndarray, lyaw: np.ndarray, sizes: np.ndarray,
                       rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Range of the first surface along each (box, azimuth) ray plus a little depth; hit mask."""
        c, s = np.cos(lyaw[boxes]), np.sin(lyaw[boxes])
        dx, dy = np.cos(az), np.sin(az)
        dl = np.stack([c * dx + s * dy, -s * dx + c * dy], 1)
        ol = -np.stack([c * loc[boxes, 0] + s * loc[boxes, 1], -s * loc[boxes, 0] + c * loc[boxes, 1]], 1)
        half = sizes[boxes, :2] / 2
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = 1.0 / dl
            t1, t2 = (-half - ol) * inv, (half - ol) * inv
        tn = np.fmax.reduce(np.fmin(t1, t2), axis=1)
        tx = np.fmin.reduce(np.fmax(t1, t2), axis=1)
        hit = (tx >= tn) & (tn > 0)
        depth = rng.uniform(0.03, 1.0, boxes.size) * np.clip(0.5 * (tx - tn), 0.04, 0.5)
        return np.where(hit, tn + depth, 0.0), hit


def _radar_rows(rng: np.random.Generator, r: np.ndarray, az: np.ndarray, vel: np.ndarray, v_s: np.ndarray,
                speed: np.ndarray, rcs_mu: np.ndarray, rcs_sd: np.ndarray, kind: np.ndarray,
                stopped: np.ndarray) -> np.ndarray:
    """Radar clusters (radar frame): noisy position on a 0.2 m grid, RCS in 0.5 dBsm steps, radial
    Doppler (raw relative as the ARS408 reports it, and ego-motion compensated) and states.

    kind: 1 object, 0 static clutter, 2 ghost. vel: (n, 2) object velocity in the radar frame.
    """
    n = r.size
    r = r + rng.normal(0.0, 0.08, n)
    az = az + rng.normal(0.0, 0.004, n)
    ux, uy = np.cos(az), np.sin(az)
    arr = np.zeros(n, _RADAR_DTYPE)
    arr["x"] = np.round(r * ux / 0.2) * 0.2
    arr["y"] = np.round(r * uy / 0.2) * 0.2
    v_comp = vel[:, 0] * ux + vel[:, 1] * uy + rng.normal(0.0, 0.05, n)
    v_rel = v_comp - (v_s[0] * ux + v_s[1] * uy) + rng.normal(0.0, 0.05, n)
    arr["vx"] = np.round(v_rel / np.maximum(ux, 0.2) / 0.25) * 0.25
    arr["vy"] = np.round(rng.normal(0.0, 0.15, n) / 0.25) * 0.25
    arr["vx_comp"] = v_comp * ux
    arr["vy_comp"] = v_comp * uy
    arr["rcs"] = np.round((rcs_mu + rcs_sd * rng.standard_normal(n)) / 0.5) * 0.5
    obj = kind == 1
    moving = speed > 0.5
    dyn_static = np.where(obj, rng.choice(np.array([1, 3, 5, 4]), n, p=[0.62, 0.28, 0.04, 0.06]),
                          rng.choice(np.array([1, 3, 4]), n, p=[0.55, 0.3, 0.15]))
    dyn_moving = np.where(v_comp < -0.3 * speed, 2, np.where(np.abs(v_comp) < 0.3 * speed, 6, 0))
    dyn = np.where(moving, dyn_moving, np.where(stopped & (rng.random(n) < 0.5), 7, dyn_static))
    invalid = np.where(rng.random(n) < np.where(obj, 0.9, 0.6), 0,
                       rng.choice(np.array([4, 7, 8, 9, 11, 15, 16]), n))
    ambig = np.where(rng.random(n) < np.where(obj, 0.95, 0.88), 3, rng.choice(np.array([0, 1, 2, 4]), n))
    ghost = kind == 2
    g_inv = rng.random(n) < 0.8
    invalid = np.where(ghost & g_inv, rng.choice(np.array([1, 6, 14]), n), invalid)
    ambig = np.where(ghost & ~g_inv, rng.choice(np.array([1, 2]), n), ambig)
    dyn = np.where(ghost, rng.choice(np.array([0, 4]), n), dyn)
    arr["dyn_prop"] = dyn
    arr["is_quality_valid"] = 1
    arr["ambig_state"] = ambig
    arr["invalid_state"] = invalid
    arr["pdh0"] = np.where(rng.random(n) < np.where(obj, 0.85, 0.6), 1, rng.choice(np.array([3, 6]), n))
    q = invalid == 0
    arr["x_rms"] = np.where(q, rng.integers(19, 23, n), 0)
    arr["y_rms"] = np.where(q, rng.integers(19, 25, n), 0)
    arr["vx_rms"] = np.where(q, rng.integers(16, 19, n), 0)
    arr["vy_rms"] = np.where(q, 3, 0)
    return arr


def _painter_rank(corners: np.ndarray, u: np.ndarray, v: np.ndarray, in_front: np.ndarray, cos_y: np.ndarray,
                  sin_y: np.ndarray, centres: np.ndarray, sizes: np.ndarray, cam: np.ndarray,
                  dist: np.ndarray) -> np.ndarray:
    """Back-to-front drawing rank of boxes (0 is drawn first).

    Sorting by distance alone fails for long boxes (a pedestrian behind a trailer would be painted
    over it). For pairs whose image boxes overlap: if a face plane of one box has the other box
    entirely on its outer side, the plane separates them and the box on the camera's side of it
    is in front (for z-up boxes the face planes of the two boxes contain a separating plane
    whenever they are disjoint). These constraints are sorted topologically, distance (far first)
    breaking ties and the rare cycles.
    """
    n = len(corners)
    base = np.argsort(-dist, kind="stable")
    if n < 2:
        return np.argsort(base)
    big = 1e9
    x0 = np.where(in_front, u.min(1), -big)
    x1 = np.where(in_front, u.max(1), big)
    y0 = np.where(in_front, v.min(1), -big)
    y1 = np.where(in_front, v.max(1), big)
    ov = (x0[:, None] <= x1[None]) & (x0[None] <= x1[:, None]) & (y0[:, None] <= y1[None]) & (y0[None] <= y1[:, None])
    ii, jj = np.nonzero(np.triu(ov, 1))
    if ii.size == 0:
        return np.argsort(base)
    # face planes: outward normals (n, 6, 3) and offsets (n, 6); a point p is outside face f if n.p > off
    nrm = np.zeros((n, 6, 3))
    nrm[:, 0, :2] = np.stack([cos_y, sin_y], 1)
    nrm[:, 2, :2] = np.stack([-sin_y, cos_y], 1)
    nrm[:, 4, 2] = 1.0
    nrm[:, 1], nrm[:, 3], nrm[:, 5] = -nrm[:, 0], -nrm[:, 2], -nrm[:, 4]
    half = np.repeat(sizes / 2, 2, axis=1)  # l, l, w, w, h, h
    off = np.einsum("nfk,nk->nf", nrm, centres) + half
    cam_out = np.einsum("nfk,k->nf", nrm, cam) - off > 1e-6

    def separated(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """(P, 6): face f of box a has all corners of box b on its outer side."""
        return (np.einsum("pfk,pck->pfc", nrm[a], corners[b]) - off[a][..., None] >= -1e-6).all(-1)

    sep_ab, sep_ba = separated(ii, jj), separated(jj, ii)
    # ii in front of jj: a plane of ii with jj outside and the camera inside (ii's side), or
    # a plane of jj with ii outside and the camera outside too (ii's side)
    a_first = (sep_ab & ~cam_out[ii]).any(1) | (sep_ba & cam_out[jj]).any(1)
    b_first = (sep_ba & ~cam_out[jj]).any(1) | (sep_ab & cam_out[ii]).any(1)
    after: list[list[int]] = [[] for _ in range(n)]  # after[k]: boxes that wait for k to be drawn
    indeg = np.zeros(n, np.int64)
    for a, b, fa, fb in zip(ii.tolist(), jj.tolist(), a_first.tolist(), b_first.tolist()):
        if fa and not fb:
            after[b].append(a)
            indeg[a] += 1
        elif fb and not fa:
            after[a].append(b)
            indeg[b] += 1
    if not indeg.any():
        return np.argsort(base)
    pri = np.argsort(base)  # priority: far first
    heap = [(int(pri[k]), k) for k in range(n) if indeg[k] == 0]
    heapq.heapify(heap)
    out: list[int] = []
    done = np.zeros(n, bool)
    while len(out) < n:
        if not heap:  # a cycle: release the farthest remaining box
            k = int(min((pri[k], k) for k in range(n) if not done[k])[1])
            indeg[k] = 0
            heap.append((int(pri[k]), k))
        _, k = heapq.heappop(heap)
        if done[k]:
            continue
        done[k] = True
        out.append(k)
        for m in after[k]:
            indeg[m] -= 1
            if indeg[m] == 0 and not done[m]:
                heapq.heappush(heap, (int(pri[m]), m))
    rank = np.empty(n, np.int64)
    rank[np.array(out)] = np.arange(n)
    return rank


def _clip_near(poly: np.ndarray, near: float) -> np.ndarray:
    """Clip a 3D polygon (k, 3) in the camera frame to z >= near (Sutherland-Hodgman, one plane)."""
    out = []
    k = len(poly)
    for i in range(k):
        a, b = poly[i], poly[(i + 1) % k]
        ina, inb = a[2] >= near, b[2] >= near
        if ina:
            out.append(a)
        if ina != inb:
            f = (near - a[2]) / (b[2] - a[2])
            out.append(a + f * (b - a))
    return np.array(out).reshape(-1, 3)


_PCD_NP = {("F", 4): "<f4", ("F", 8): "<f8", ("I", 1): "i1", ("I", 2): "<i2", ("I", 4): "<i4",
           ("U", 1): "u1", ("U", 2): "<u2", ("U", 4): "<u4"}
_RADAR_DTYPE = np.dtype([(n, _PCD_NP[(t, s)]) for n, t, s in zip(RADAR_PCD_FIELDS, RADAR_PCD_TYPES, RADAR_PCD_SIZES)])


def radar_pcd_bytes(points: np.ndarray) -> bytes:
    """Binary PCD v0.7 with the 18 nuScenes radar fields (what the real RADAR_* files contain)."""
    if points.dtype != _RADAR_DTYPE:
        raise ValueError(f"radar points must have dtype {_RADAR_DTYPE}, got {points.dtype}")
    n = len(points)
    header = "\n".join([
        "# .PCD v0.7 - Point Cloud Data file format",
        "VERSION 0.7",
        "FIELDS " + " ".join(RADAR_PCD_FIELDS),
        "SIZE " + " ".join(str(s) for s in RADAR_PCD_SIZES),
        "TYPE " + " ".join(RADAR_PCD_TYPES),
        "COUNT " + " ".join("1" for _ in RADAR_PCD_FIELDS),
        f"WIDTH {n}",
        "HEIGHT 1",
        "VIEWPOINT 0 0 0 1 0 0 0",
        f"POINTS {n}",
        "DATA binary",
    ]) + "\n"
    return header.encode("ascii") + points.tobytes() + _PCD_PAD


# --------------------------------------------------------------------------------------------
# Scene generation (one worker task) and table assembly
# --------------------------------------------------------------------------------------------
_PROGRESS_QUEUE: Any = None


def _init_worker(q: Any) -> None:
    global _PROGRESS_QUEUE
    _PROGRESS_QUEUE = q
    cv2.setNumThreads(1)


def _file_name(world: SceneWorld, channel: str, key: bool, stamp: int) -> str:
    ext = "jpg" if channel.startswith("CAM") else ("pcd.bin" if channel == LIDAR else "pcd")
    return f"{'samples' if key else 'sweeps'}/{channel}/{world.logfile}__{channel}__{stamp}.{ext}"


def _attribute(world: SceneWorld, i: int, speed: float) -> list[str]:
    o = world.objects[i]
    if o.cls in _VEHICLES:
        name = "vehicle.moving" if speed > 0.3 else ("vehicle.parked" if o.parked else "vehicle.stopped")
    elif o.cls in ("bicycle", "motorcycle"):
        name = "cycle.with_rider" if o.rider else "cycle.without_rider"
    elif o.cls == "pedestrian":
        name = "pedestrian.moving" if speed > 0.2 else ("pedestrian.sitting_lying_down" if o.sitting
                                                         else "pedestrian.standing")
    else:
        return []
    return [_ATTR_TOKEN[name]]


def _generate_scene(out_dir: str, cfg: SyntheticConfig, index: int,
                    tick: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Write all sensor files of one scene; return its table records and statistics."""
    world = SceneWorld(cfg, index)
    seed = cfg.seed
    out = Path(out_dir)
    K = cfg.samples_per_scene
    W, H = cfg.image_size
    tok = lambda *p: _token(seed, index, *p)  # noqa: E731
    scene_tok, log_tok, map_tok = tok("scene"), tok("log"), tok("map")
    sample_toks = [tok("sample", k) for k in range(K)]
    cs_tok = {ch: tok("cs", ch) for ch in RIG}

    # annotations: objects within range of the ego at some keyframe, contiguous per instance
    states = [world.object_states(float(t)) for t in world.sample_t]
    ego_xy = np.array([world.ego_pose(float(t))[:2] for t in world.sample_t])
    in_range = np.stack([np.linalg.norm(st[0][:, :2] - ego_xy[k], axis=1) <= cfg.annotation_range
                         for k, st in enumerate(states)])  # (K, n)
    annotated = np.zeros_like(in_range)
    for i in np.flatnonzero(in_range.any(0)).tolist():
        ks = np.flatnonzero(in_range[:, i])
        annotated[ks[0]:ks[-1] + 1, i] = True
    ann_boxes = []  # per keyframe: (obj indices, rounded centres, yaws, sizes)
    for k in range(K):
        idx = np.flatnonzero(annotated[k])
        cen = np.round(states[k][0][idx], 3)
        ann_boxes.append((idx, cen, states[k][1][idx], world.obj_size[idx]))
    num_lidar = [np.zeros(len(a[0]), np.int64) for a in ann_boxes]
    num_radar = [np.zeros(len(a[0]), np.int64) for a in ann_boxes]
    vis_level = [np.full(len(a[0]), "1", object) for a in ann_boxes]

    rng_lidar = np.random.default_rng(world._s_lidar)
    rng_radar = np.random.default_rng(world._s_radar)
    sd_records: list[dict[str, Any]] = []
    ego_records: list[dict[str, Any]] = []
    n_bytes = 0
    channels = [LIDAR, *RADARS, *CAMERAS]
    ptr = {ch: 0 for ch in channels}
    sd_tokens = {ch: [tok("sd", ch, n) for n in range(len(world.times[ch]))] for ch in channels}
    encode = [int(cv2.IMWRITE_JPEG_QUALITY), cfg.jpeg_quality]

    for k in range(K):
        for ch in channels:
            times, keys, smp = world.times[ch], world.is_key[ch], world.sample_of[ch]
            while ptr[ch] < len(times) and smp[ptr[ch]] == k:
                n = ptr[ch]
                ptr[ch] += 1
                t = float(times[n])
                stamp = int(world.stamp_us(t))
                key = bool(keys[n])
                fname = _file_name(world, ch, key, stamp)
                if ch == LIDAR:
                    pts, hid, unocc = world.cast_lidar(t, rng_lidar)
                    if key:
                        idx, cen, yaws, sizes = ann_boxes[k]
                        T_gs = world.ego_transform(t) @ _sensor_to_ego(LIDAR)
                        g = pts[:, :3].astype(np.float64) @ T_gs[:3, :3].T + T_gs[:3, 3]
                        inside, amb = _points_in_boxes(g, cen, yaws, sizes, margin=0.002)
                        keep = ~amb.any(0)
                        pts, hid = pts[keep], hid[keep]
                        num_lidar[k] = inside[:, keep].sum(1)
                        hits = np.array([(hid == i).sum() for i in idx.tolist()], np.int64)
                        ratio = np.where(unocc[idx] > 0, hits / np.maximum(unocc[idx], 1), 0.0)
                        vis_level[k] = np.select([ratio >= 0.8, ratio >= 0.6, ratio >= 0.4], ["4", "3", "2"], "1")
                    data = pts.astype(np.float32).tobytes()
                elif ch in RADARS:
                    arr = world.radar_sweep(ch, t, rng_radar)
                    if key:
                        idx, cen, yaws, sizes = ann_boxes[k]
                        T_gs = world.ego_transform(t) @ _sensor_to_ego(ch)
                        p = np.stack([arr["x"], arr["y"], arr["z"]], 1).astype(np.float64)
                        g = p @ T_gs[:3, :3].T + T_gs[:3, 3]
                        inside, _ = _points_in_boxes(g, cen, yaws, sizes)
                        num_radar[k] += inside.sum(1)
                    data = radar_pcd_bytes(arr)
                else:
                    img = world.render_camera(ch, t)
                    ok, buf = cv2.imencode(".jpg", img, encode)
                    if not ok:
                        raise RuntimeError(f"JPEG encoding failed for {fname}")
                    data = buf.tobytes()
                (out / fname).write_bytes(data)
                n_bytes += len(data)
                x, y, yaw = world.ego_pose(t)
                sd_tok = sd_tokens[ch][n]
                ego_records.append({"token": sd_tok, "timestamp": stamp, "rotation": _yaw_quat(yaw),
                                    "translation": [x, y, 0.0]})
                is_cam = ch.startswith("CAM")
                sd_records.append({
                    "token": sd_tok, "sample_token": sample_toks[int(smp[n])], "ego_pose_token": sd_tok,
                    "calibrated_sensor_token": cs_tok[ch], "timestamp": stamp,
                    "fileformat": "jpg" if is_cam else "pcd", "is_key_frame": key,
                    "height": H if is_cam else 0, "width": W if is_cam else 0, "filename": fname,
                    "prev": sd_tokens[ch][n - 1] if n > 0 else "",
                    "next": sd_tokens[ch][n + 1] if n + 1 < len(times) else "",
                })
        if tick is not None:
            tick(1)
        elif _PROGRESS_QUEUE is not None:
            _PROGRESS_QUEUE.put(1)

    # map mask for the devkit
    mask = world.map_mask()
    ok, png = cv2.imencode(".png", mask, [int(cv2.IMWRITE_PNG_COMPRESSION), 6])
    if not ok:
        raise RuntimeError("PNG encoding of the map mask failed")
    (out / "maps" / f"{map_tok}.png").write_bytes(png.tobytes())
    n_bytes += len(png)

    # annotation and instance records
    ann_tok = lambda i, k: tok("ann", i, k)  # noqa: E731
    anns: list[dict[str, Any]] = []
    inst_records: list[dict[str, Any]] = []
    class_counts: dict[str, int] = {}
    for i in np.flatnonzero(annotated.any(0)).tolist():
        ks = np.flatnonzero(annotated[:, i]).tolist()
        inst_records.append({"token": world.instance_token(i), "category_token": _CAT_TOKEN[world.objects[i].category],
                             "nbr_annotations": len(ks), "first_annotation_token": ann_tok(i, ks[0]),
                             "last_annotation_token": ann_tok(i, ks[-1])})
    for k in range(K):
        idx, cen, yaws, sizes = ann_boxes[k]
        vel = states[k][2][idx]
        for j, i in enumerate(idx.tolist()):
            speed = float(np.linalg.norm(vel[j]))
            l, w_, h = (float(v) for v in sizes[j])
            anns.append({
                "token": ann_tok(i, k), "sample_token": sample_toks[k], "instance_token": world.instance_token(i),
                "visibility_token": str(vis_level[k][j]), "attribute_tokens": _attribute(world, i, speed),
                "translation": [float(v) for v in cen[j]], "size": [w_, l, h],
                "rotation": _yaw_quat(float(yaws[j])),
                "prev": ann_tok(i, k - 1) if k > 0 and annotated[k - 1, i] else "",
                "next": ann_tok(i, k + 1) if k + 1 < K and annotated[k + 1, i] else "",
                "num_lidar_pts": int(num_lidar[k][j]), "num_radar_pts": int(num_radar[k][j]),
            })
            cls = world.obj_cls[i]
            class_counts[cls] = class_counts.get(cls, 0) + 1

    samples = [{"token": sample_toks[k], "timestamp": int(world.stamp_us(float(world.sample_t[k]))),
                "prev": sample_toks[k - 1] if k > 0 else "", "next": sample_toks[k + 1] if k + 1 < K else "",
                "scene_token": scene_tok} for k in range(K)]
    calib = []
    for ch in (*CAMERAS, LIDAR, *RADARS):
        trans, quat, _ = RIG[ch]
        intr = _scaled_intrinsic(ch, cfg.image_size).tolist() if ch.startswith("CAM") else []
        calib.append({"token": cs_tok[ch], "sensor_token": _SENSOR_TOKENS[ch], "translation": list(trans),
                      "rotation": list(quat), "camera_intrinsic": intr})
    date = time.strftime("%Y-%m-%d", time.gmtime(world.t0_us / 1e6))
    return {
        "scene": [{"token": scene_tok, "log_token": log_tok, "nbr_samples": K, "first_sample_token": sample_toks[0],
                   "last_sample_token": sample_toks[-1], "name": world.name, "description": world.description}],
        "log": [{"token": log_tok, "logfile": world.logfile, "vehicle": "synth", "date_captured": date,
                 "location": "synth-city"}],
        "map": [{"category": "semantic_prior", "token": map_tok, "filename": f"maps/{map_tok}.png",
                 "log_tokens": [log_tok]}],
        "sample": samples,
        "sample_data": sd_records,
        "ego_pose": ego_records,
        "calibrated_sensor": calib,
        "instance": inst_records,
        "sample_annotation": anns,
        "stats": {"files": len(sd_records) + 1, "bytes": n_bytes, "class_counts": class_counts,
                  "name": world.name},
    }


def _scene_task(args: tuple[str, SyntheticConfig, int]) -> dict[str, Any]:
    return _generate_scene(*args)


def _static_tables() -> dict[str, list[dict[str, Any]]]:
    return {
        "category": [{"token": t, "name": n, "description": d} for t, n, d in _CATEGORIES],
        "attribute": [{"token": t, "name": n, "description": d} for t, n, d in _ATTRIBUTES],
        "visibility": [{"description": d, "token": t, "level": lv} for t, lv, d in _VISIBILITY],
        "sensor": [{"token": _SENSOR_TOKENS[ch], "channel": ch,
                    "modality": "camera" if ch.startswith("CAM") else ("lidar" if ch == LIDAR else "radar")}
                   for ch in (*CAMERAS, LIDAR, *RADARS)],
    }


_TABLES = ("attribute", "calibrated_sensor", "category", "ego_pose", "instance", "log", "map", "sample",
           "sample_annotation", "sample_data", "scene", "sensor", "visibility")


def generate(out_dir: str | os.PathLike[str], cfg: SyntheticConfig | None = None,
             progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Write a complete synthetic nuScenes-format dataset into `out_dir`; return a summary dict.

    `progress(n)` is called as keyframe intervals complete (cfg.scenes * cfg.samples_per_scene in
    total). Raises FileExistsError if `out_dir/<version>` already holds tables.
    """
    cfg = cfg or SyntheticConfig()
    t_start = time.perf_counter()
    out = Path(out_dir)
    vdir = out / cfg.version
    if vdir.exists() and any(vdir.glob("*.json")):
        raise FileExistsError(f"{vdir} already contains tables; choose an empty output directory")
    for ch in (*CAMERAS, LIDAR, *RADARS):
        (out / "samples" / ch).mkdir(parents=True, exist_ok=True)
        if cfg.sweeps:
            (out / "sweeps" / ch).mkdir(parents=True, exist_ok=True)
    (out / "maps").mkdir(parents=True, exist_ok=True)
    vdir.mkdir(parents=True, exist_ok=True)

    tasks = [(str(out), cfg, i) for i in range(cfg.scenes)]
    jobs = min(cfg.jobs, cfg.scenes)
    if jobs > 1:
        ctx = mp.get_context("spawn")  # no fork: safe with OpenCV/torch threads in the parent
        q = ctx.Queue()
        with ctx.Pool(jobs, initializer=_init_worker, initargs=(q,)) as pool:
            res = pool.map_async(_scene_task, tasks, chunksize=1)
            while True:
                try:
                    n = q.get(timeout=0.2)
                    if progress is not None:
                        progress(n)
                except queue.Empty:
                    if res.ready():
                        break
            results = res.get()
            while not q.empty():
                n = q.get()
                if progress is not None:
                    progress(n)
    else:
        threads = cv2.getNumThreads()
        cv2.setNumThreads(1)
        try:
            results = [_generate_scene(*task, tick=progress) for task in tasks]
        finally:
            cv2.setNumThreads(threads)

    tables: dict[str, list[dict[str, Any]]] = {name: [] for name in _TABLES}
    tables.update(_static_tables())
    for r in results:
        for name in ("scene", "log", "map", "sample", "sample_data", "ego_pose", "calibrated_sensor", "instance",
                     "sample_annotation"):
            tables[name].extend(r[name])
    for name in _TABLES:
        with open(vdir / f"{name}.json", "w", encoding="utf-8") as f:
            json.dump(tables[name], f, indent=0)
            f.write("\n")
    class_counts: dict[str, int] = {}
    for r in results:
        for c, n in r["stats"]["class_counts"].items():
            class_counts[c] = class_counts.get(c, 0) + n
    names = [r["stats"]["name"] for r in results]
    summary = {
        "out_dir": str(out),
        "version": cfg.version,
        "scenes": cfg.scenes,
        "samples": len(tables["sample"]),
        "sample_data": len(tables["sample_data"]),
        "annotations": len(tables["sample_annotation"]),
        "instances": len(tables["instance"]),
        "files": sum(r["stats"]["files"] for r in results) + len(_TABLES) + 1,  # + synthetic_meta.json
        "bytes": sum(r["stats"]["bytes"] for r in results),
        "train_scenes": sum(n.startswith("synth-train-") for n in names),
        "val_scenes": sum(n.startswith("synth-val-") for n in names),
        "class_counts": {c: class_counts.get(c, 0) for c in (*CLASSES, "bin")},
        "image_size": list(cfg.image_size),
        "seed": cfg.seed,
        "seconds": round(time.perf_counter() - t_start, 2),
    }
    config = {k: v for k, v in asdict(cfg).items() if k != "jobs"}  # output does not depend on jobs
    meta = {"generator": "imkd_core.data.synthetic", "config": config, "scenes": names}
    (out / "synthetic_meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    return summary


# --------------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------------
def split_scene_names(nusc_or_dir: Any, version: str | None = None) -> dict[str, list[str]]:
    """{'train': [...], 'val': [...]} scene names of a dataset, without the devkit's hard-coded lists.

    Accepts a loaded `NuScenes`, a version folder (holding scene.json) or a dataroot (with
    `version`, or with exactly one version folder). Synthetic scenes split by their name
    ('synth-train-NNNN' / 'synth-val-NNNN'); other names (real nuScenes) fall back to the
    devkit's trainval 'train'/'val' lists; names in neither are left out.
    """
    if hasattr(nusc_or_dir, "scene"):
        names = [s["name"] for s in nusc_or_dir.scene]
    else:
        root = Path(nusc_or_dir)
        if version is not None:
            path = root / version / "scene.json"
        elif (root / "scene.json").is_file():
            path = root / "scene.json"
        else:
            found = sorted(p for p in root.glob("*/scene.json"))
            if len(found) != 1:
                raise FileNotFoundError(f"cannot pick a version folder under {root}: found "
                                        f"{[p.parent.name for p in found] or 'none'}; pass version=")
            path = found[0]
        if not path.is_file():
            raise FileNotFoundError(f"scene table not found: {path}")
        names = [s["name"] for s in json.loads(path.read_text())]
    out: dict[str, list[str]] = {"train": [], "val": []}
    other = []
    for n in names:
        if n.startswith("synth-train-"):
            out["train"].append(n)
        elif n.startswith("synth-val-"):
            out["val"].append(n)
        else:
            other.append(n)
    if other:
        from nuscenes.utils.splits import create_splits_scenes

        splits = create_splits_scenes(verbose=False)
        train, val = set(splits["train"]), set(splits["val"])
        out["train"] += [n for n in other if n in train]
        out["val"] += [n for n in other if n in val]
    return {k: sorted(v) for k, v in out.items()}


def parse_image_size(text: str) -> tuple[int, int]:
    """'704x396' -> (704, 396): the --image-size argument of the generator's command lines."""
    import argparse

    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"image size must look like 704x396, got {text!r}") from exc
    return w, h
