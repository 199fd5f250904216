"""What to generate and the rig it is seen with: `SyntheticConfig`, named presets, scene names and
splits, the nuScenes sensor rig (calibration, rates; the same numbers as imkd_core/rigs/nuscenes.yaml,
other rigs come from their rig file) and the world's physical constants.

Every other module of the package reads its constants from here, so one place says how big a
car is, how bright asphalt is in LiDAR, and where each sensor sits.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from imkd_core.geometry import quat_wxyz_to_matrix, transform_matrix
from imkd_core.rig import Rig

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


# Camera firing offsets relative to the LiDAR keyframe: each rig camera's fire_offset (imkd_core.rig).
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
# Classes with a LiDAR front and back: vehicles, and cycles (rear reflector, tail light, dark front).
_FACED = (*_VEHICLES, "bicycle", "motorcycle")
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
    rig: str = "nuscenes"  # imkd_core.rig name or YAML path; image_size is its first camera's size

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
        if not isinstance(self.rig, str) or not self.rig.strip():
            raise ValueError(f"rig must be a rig name or YAML path, got {self.rig!r}")


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
# Frames: yaw rotations, homogeneous transforms, sensor extrinsics and intrinsics
# --------------------------------------------------------------------------------------------
def _yaw_quat(yaw: float) -> list[float]:
    """Rotation about +z as a (w, x, y, z) quaternion list."""
    return [math.cos(yaw / 2.0), 0.0, 0.0, math.sin(yaw / 2.0)]


def _sensor_pose(channel: str, rig: Rig | None = None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(translation, rotation w, x, y, z) sensor -> ego of a channel of `rig` (default: nuScenes);
    "LIDAR_TOP" also names the rig's LiDAR, whatever its name."""
    if rig is None:
        return RIG[channel][0], RIG[channel][1]
    spec = rig.lidar if channel in (rig.lidar.name, "LIDAR_TOP") else (
        rig.camera(channel) if channel in rig.camera_names else rig.radar(channel))
    return spec.translation, spec.rotation


def _sensor_to_ego(channel: str, rig: Rig | None = None) -> np.ndarray:
    trans, quat = _sensor_pose(channel, rig)
    return transform_matrix(quat_wxyz_to_matrix(quat), trans)


def _scaled_intrinsic(channel: str, size: tuple[int, int], rig: Rig | None = None) -> np.ndarray:
    """The channel's intrinsic matrix scaled from its calibrated size (nuScenes: 1600x900) to `size` (W, H)."""
    if rig is None:
        k, full = np.array(RIG[channel][2], dtype=np.float64), _FULL_IMAGE_SIZE
    else:
        cam = rig.camera(channel)
        k, full = np.array(cam.intrinsic, dtype=np.float64), cam.image_size
    sx, sy = size[0] / full[0], size[1] / full[1]
    k[0] *= sx
    k[1] *= sy
    return k


def camera_sizes(cfg: SyntheticConfig, rig: Rig) -> dict[str, tuple[int, int]]:
    """(W, H) each camera of `rig` is rendered at: cfg.image_size for the first (reference) camera,
    the others scaled from their rig size by the same factors (nuScenes: all cfg.image_size)."""
    ref = rig.cameras[0].image_size
    sx, sy = cfg.image_size[0] / ref[0], cfg.image_size[1] / ref[1]
    return {c.name: (cfg.image_size if c.image_size == ref else
                     (max(32, round(c.image_size[0] * sx)), max(18, round(c.image_size[1] * sy))))
            for c in rig.cameras}


def _wrap(a: np.ndarray | float) -> np.ndarray | float:
    return (a + np.pi) % (2.0 * np.pi) - np.pi


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
