"""The sensor rig: which cameras and radars a vehicle has, where they sit, what they publish.

A rig file (YAML; shipped ones in imkd_core/rigs/, also installed as config/rigs/) names the
cameras (SensorFrame order: the first is the reference camera whose stamp is the frame stamp)
and radars, their ROS topics and frames, image sizes, how a radar's PointCloud2 fields map onto
the columns the model reads, and the sweep counts. `load_rig("nuscenes")` is the default and
reproduces the nuScenes rig of imkd_core.frame exactly. Readers, the node, the converter, the
evaluator and the synthetic generator all take a `Rig`; a checkpoint records the rig's name in
its data config, and `rig_mismatch` says why a rig does not fit a checkpoint.

Calibration (translation, rotation, intrinsic) follows nuScenes' calibrated_sensor table:
translation and rotation (w, x, y, z) take sensor coordinates to ego (base_link); camera frames
are optical (z forward, x right, y down). It is only needed to synthesise data and warm the
model up: at run time the node takes calibration from TF and CameraInfo.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from imkd_core.errors import UserError
from imkd_core.radar import RADAR_FILTER_FIELDS, RADAR_MODEL_FIELDS, RADAR_PCD_FIELDS

RIG_DIR = Path(__file__).resolve().parent / "rigs"
DEFAULT_RIG = "nuscenes"


class RigError(UserError, ValueError):
    """A rig file is missing, unreadable or inconsistent (reported as one line, exit 2)."""


@dataclass(frozen=True)
class CameraSpec:
    """One camera. image_size: (W, H) of its images as published; input_size: (H, W) the model
    expects (None = the model config's data.image_size); sync_offset: s, expected stamp minus the
    reference camera's; fire_offset: s, stamp relative to a keyframe (synthetic data only)."""

    name: str
    topic: str
    info_topic: str
    frame: str
    image_size: tuple[int, int]
    intrinsic: tuple[tuple[float, ...], ...]
    translation: tuple[float, float, float]
    rotation: tuple[float, float, float, float]
    input_size: tuple[int, int] | None = None
    sync_offset: float = 0.0
    fire_offset: float = 0.0


@dataclass(frozen=True)
class RadarSpec:
    """One radar. fields: model column (x, y, z, rcs, vx_comp, vy_comp and optionally the ARS408
    filter fields dyn_prop, ambig_state, invalid_state) -> the PointCloud2/PCD field holding it.
    A filter rule applies only where its field is mapped."""

    name: str
    topic: str
    frame: str
    fields: dict[str, str]
    translation: tuple[float, float, float]
    rotation: tuple[float, float, float, float]

    @property
    def nuscenes_layout(self) -> bool:
        """True for the 18 ARS408 fields under their own names (the nuScenes files, byte layout)."""
        return self.fields == {n: n for n in RADAR_PCD_FIELDS}

    @property
    def source_fields(self) -> tuple[str, ...]:
        """The message fields this radar needs, in the order of `fields`."""
        return tuple(self.fields.values())


@dataclass(frozen=True)
class LidarSpec:
    """The training-only LiDAR (the teacher's input, the depth target); never read at run time."""

    name: str = "LIDAR_TOP"
    topic: str = "/sensors/lidar/lidar_top/points"
    frame: str = "lidar_top"
    translation: tuple[float, float, float] = (0.985793, 0.0, 1.84019)
    rotation: tuple[float, float, float, float] = (0.706749235646644, -0.015300993788500868,
                                                   0.01739745181256607, -0.7070846669051719)


@dataclass(frozen=True)
class Rig:
    """A vehicle's sensors; see the module docstring."""

    name: str
    cameras: tuple[CameraSpec, ...]
    radars: tuple[RadarSpec, ...]
    lidar: LidarSpec = field(default_factory=LidarSpec)
    radar_sweeps: int = 6
    lidar_sweeps: int = 10
    source: str = ""  # the file it was read from

    # ---- names in SensorFrame order
    @property
    def camera_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.cameras)

    @property
    def radar_names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.radars)

    @property
    def reference_camera(self) -> str:
        return self.cameras[0].name

    def camera(self, name: str) -> CameraSpec:
        for c in self.cameras:
            if c.name == name:
                return c
        raise KeyError(name)

    def radar(self, name: str) -> RadarSpec:
        for r in self.radars:
            if r.name == name:
                return r
        raise KeyError(name)

    def signature(self) -> dict[str, Any]:
        """What a model trained on this rig depends on: its name and camera/radar order."""
        return {"name": self.name, "cameras": list(self.camera_names), "radars": list(self.radar_names)}

    def calibration(self, hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """(intrinsics (N, 3, 3) scaled to images of (H, W), cam_to_ego (N, 4, 4)) from the file's
        calibration: a plausible frame of this rig (warm-up, tests)."""
        from imkd_core.geometry import quat_wxyz_to_matrix, transform_matrix

        n = len(self.cameras)
        K, T = np.zeros((n, 3, 3)), np.zeros((n, 4, 4))
        for i, c in enumerate(self.cameras):
            k = np.array(c.intrinsic, dtype=np.float64)
            k[0] *= hw[1] / c.image_size[0]
            k[1] *= hw[0] / c.image_size[1]
            K[i] = k
            T[i] = transform_matrix(quat_wxyz_to_matrix(c.rotation), c.translation)
        return K, T


def rig_mismatch(rig: Rig, trained: Rig | dict[str, Any]) -> str | None:
    """Why `rig` cannot run a model trained for `trained` (a Rig or its signature), or None."""
    sig = trained.signature() if isinstance(trained, Rig) else trained
    mine = rig.signature()
    if mine == sig:
        return None
    return (f"rig {mine['name']!r} ({len(mine['cameras'])} cameras {', '.join(mine['cameras'])}; "
            f"{len(mine['radars'])} radars) does not match the rig the checkpoint was trained for, "
            f"{sig['name']!r} ({len(sig['cameras'])} cameras {', '.join(sig['cameras'])}; "
            f"{len(sig['radars'])} radars)")


# ----------------------------------------------------------------------------- loading
def rig_path(name_or_path: str | Path) -> Path:
    """A shipped rig's name ('nuscenes', 'compact4') or a YAML path -> the file."""
    text = str(name_or_path).strip()
    if not text:
        raise RigError("rig: empty name (a shipped rig such as 'nuscenes' or a YAML path)")
    if "/" not in text and not text.endswith((".yaml", ".yml")):
        path = RIG_DIR / f"{text}.yaml"
        if not path.is_file():
            known = sorted(p.stem for p in RIG_DIR.glob("*.yaml"))
            raise RigError(f"unknown rig {text!r}; shipped rigs: {', '.join(known)} (or pass a YAML path)")
        return path
    return Path(text).expanduser()


def load_rig(name_or_path: str | Path = DEFAULT_RIG) -> Rig:
    """Read and check a rig file (cached per resolved path); RigError with one line otherwise."""
    path = rig_path(name_or_path)
    try:
        key = str(path.resolve())
        mtime = path.stat().st_mtime_ns
    except OSError as e:
        raise RigError(f"rig file {path}: {e.strerror or e}") from None
    return _load_cached(key, mtime)


@lru_cache(maxsize=16)
def _load_cached(path: str, _mtime: int) -> Rig:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as e:
        raise RigError(f"rig file {path}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise RigError(f"rig file {path}: not YAML: {' '.join(str(e).split())}") from None
    return rig_from_dict(data, path)


def rig_from_dict(data: Any, source: str = "<dict>") -> Rig:
    """Build and check a Rig from the YAML mapping; RigError naming the file and key otherwise."""
    where = f"rig file {source}"
    if not isinstance(data, dict):
        raise RigError(f"{where}: must hold a mapping, got {type(data).__name__}")
    _keys(data, {"name", "cameras", "radars", "lidar", "radar_sweeps", "lidar_sweeps"}, where)
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise RigError(f"{where}: 'name' must be a non-empty string")
    cams = data.get("cameras")
    if not isinstance(cams, list) or not cams:
        raise RigError(f"{where}: 'cameras' must be a non-empty list")
    radars = data.get("radars", [])
    if not isinstance(radars, list):
        raise RigError(f"{where}: 'radars' must be a list")
    cameras = tuple(_camera(c, f"{where}: cameras[{i}]") for i, c in enumerate(cams))
    radar_specs = tuple(_radar(r, f"{where}: radars[{i}]") for i, r in enumerate(radars))
    lidar = LidarSpec() if data.get("lidar") is None else _lidar(data["lidar"], f"{where}: lidar")
    names = [c.name for c in cameras] + [r.name for r in radar_specs] + [lidar.name]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise RigError(f"{where}: sensor names must be distinct, repeated: {', '.join(dup)}")
    for what, items in (("topic", [c.topic for c in cameras] + [c.info_topic for c in cameras]
                         + [r.topic for r in radar_specs]),
                        ("frame", [c.frame for c in cameras] + [r.frame for r in radar_specs])):
        dup = sorted({t for t in items if items.count(t) > 1})
        if dup:
            raise RigError(f"{where}: every {what} must be distinct, repeated: {', '.join(dup)}")
    sizes = {c.input_size for c in cameras if c.input_size is not None}
    if len(sizes) > 1:
        raise RigError(f"{where}: cameras' input_size must agree (one model input), got {sorted(sizes)}")
    sweeps = {k: data.get(k, d) for k, d in (("radar_sweeps", 6), ("lidar_sweeps", 10))}
    for k, v in sweeps.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise RigError(f"{where}: {k} must be an integer >= 1, got {v!r}")
    return Rig(name=name.strip(), cameras=cameras, radars=radar_specs, lidar=lidar, source=str(source), **sweeps)


def _keys(d: dict, allowed: set[str], where: str) -> None:
    bad = sorted(set(d) - allowed)
    if bad:
        raise RigError(f"{where}: unknown key(s) {', '.join(map(str, bad))}; known: {', '.join(sorted(allowed))}")


def _str(d: dict, key: str, where: str, default: str | None = None) -> str:
    v = d.get(key, default)
    if not isinstance(v, str) or not v.strip():
        raise RigError(f"{where}: '{key}' must be a non-empty string, got {v!r}")
    return v.strip()


def _floats(v: Any, n: int, key: str, where: str) -> tuple[float, ...]:
    ok = isinstance(v, (list, tuple)) and len(v) == n and all(
        isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v)
    if not ok:
        raise RigError(f"{where}: '{key}' must be {n} finite numbers, got {v!r}")
    return tuple(float(x) for x in v)


def _size(v: Any, key: str, where: str) -> tuple[int, int]:
    ok = isinstance(v, (list, tuple)) and len(v) == 2 and all(
        isinstance(x, int) and not isinstance(x, bool) and 0 < x <= 16384 for x in v)
    if not ok:
        raise RigError(f"{where}: '{key}' must be two positive integers, got {v!r}")
    return int(v[0]), int(v[1])


def _pose(d: dict, where: str) -> tuple[tuple[float, float, float], tuple[float, float, float, float]]:
    """translation + (rotation quaternion w, x, y, z | yaw_deg [, pitch_deg])."""
    t = _floats(d.get("translation"), 3, "translation", where)
    if "rotation" in d:
        if "yaw_deg" in d:
            raise RigError(f"{where}: give 'rotation' or 'yaw_deg', not both")
        q = _floats(d["rotation"], 4, "rotation", where)
        norm = math.sqrt(sum(x * x for x in q))
        if abs(norm - 1.0) > 1e-3:
            raise RigError(f"{where}: 'rotation' must be a unit quaternion (w, x, y, z), norm {norm:.4f}")
        return t, q  # type: ignore[return-value]
    if "yaw_deg" not in d:
        raise RigError(f"{where}: needs 'rotation' (w, x, y, z) or 'yaw_deg'")
    yaw = _floats([d["yaw_deg"]], 1, "yaw_deg", where)[0]
    pitch = _floats([d.get("pitch_deg", 0.0)], 1, "pitch_deg", where)[0]
    return t, _yaw_pitch_quat(math.radians(yaw), math.radians(pitch), optical="fov_deg" in d or "intrinsic" in d)


def _yaw_pitch_quat(yaw: float, pitch: float, optical: bool) -> tuple[float, float, float, float]:
    """Sensor -> ego rotation of a sensor looking along yaw (about +z), pitched down by `pitch`;
    optical frames (cameras) have z forward, x right, y down."""
    from imkd_core.geometry import matrix_to_quat_wxyz

    cy, sy, cp, sp = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch)
    fwd = np.array([cy * cp, sy * cp, -sp])
    left = np.array([-sy, cy, 0.0])
    up = np.cross(fwd, left)
    R = np.stack([-left, -up, fwd], 1) if optical else np.stack([fwd, left, up], 1)
    return tuple(float(x) for x in matrix_to_quat_wxyz(R))  # type: ignore[return-value]


def _camera(d: Any, where: str) -> CameraSpec:
    if not isinstance(d, dict):
        raise RigError(f"{where}: must be a mapping")
    _keys(d, {"name", "topic", "info_topic", "frame", "image_size", "input_size", "intrinsic", "fov_deg",
              "translation", "rotation", "yaw_deg", "pitch_deg", "sync_offset", "fire_offset"}, where)
    name = _str(d, "name", where)
    where = f"{where} ({name})"
    low = name.lower()
    W, H = _size(d.get("image_size"), "image_size", where)
    if "intrinsic" in d:
        if "fov_deg" in d:
            raise RigError(f"{where}: give 'intrinsic' or 'fov_deg', not both")
        rows = d["intrinsic"]
        if not isinstance(rows, list) or len(rows) != 3:
            raise RigError(f"{where}: 'intrinsic' must be a 3x3 matrix")
        K = tuple(_floats(r, 3, "intrinsic", where) for r in rows)
        if K[0][0] <= 0 or K[1][1] <= 0 or K[2] != (0.0, 0.0, 1.0):
            raise RigError(f"{where}: 'intrinsic' must be a pinhole K (fx, fy > 0, last row 0 0 1)")
    elif "fov_deg" in d:
        fov = _floats([d["fov_deg"]], 1, "fov_deg", where)[0]
        if not 1.0 <= fov <= 170.0:
            raise RigError(f"{where}: 'fov_deg' (horizontal) must be in [1, 170], got {fov}")
        f = W / 2.0 / math.tan(math.radians(fov) / 2.0)
        K = ((f, 0.0, W / 2.0), (0.0, f, H / 2.0), (0.0, 0.0, 1.0))
    else:
        raise RigError(f"{where}: needs 'intrinsic' (3x3 at image_size) or 'fov_deg'")
    t, q = _pose(d, where)
    inp = d.get("input_size")
    if inp is not None:
        inp = _size(inp, "input_size", where)
        if inp[0] % 32 or inp[1] % 32:
            raise RigError(f"{where}: 'input_size' (H, W) must be multiples of 32, got {inp}")
    offsets = {k: _floats([d.get(k, 0.0)], 1, k, where)[0] for k in ("sync_offset", "fire_offset")}
    if abs(offsets["sync_offset"]) >= 1.0:
        raise RigError(f"{where}: 'sync_offset' must be |v| < 1 s, got {offsets['sync_offset']}")
    return CameraSpec(name=name, topic=_str(d, "topic", where, f"/sensors/camera/{low}/image_rect_color/compressed"),
                      info_topic=_str(d, "info_topic", where, f"/sensors/camera/{low}/camera_info"),
                      frame=_str(d, "frame", where, low), image_size=(W, H), intrinsic=K,
                      translation=t, rotation=q, input_size=inp, **offsets)  # type: ignore[arg-type]


def _radar(d: Any, where: str) -> RadarSpec:
    if not isinstance(d, dict):
        raise RigError(f"{where}: must be a mapping")
    _keys(d, {"name", "topic", "frame", "fields", "translation", "rotation", "yaw_deg", "pitch_deg"}, where)
    name = _str(d, "name", where)
    where = f"{where} ({name})"
    low = name.lower()
    fields = d.get("fields", "nuscenes")
    if fields == "nuscenes":
        fields = {n: n for n in RADAR_PCD_FIELDS}
    if not isinstance(fields, dict):
        raise RigError(f"{where}: 'fields' must be 'nuscenes' or a mapping column -> message field")
    allowed = set(RADAR_MODEL_FIELDS) | set(RADAR_FILTER_FIELDS) | set(RADAR_PCD_FIELDS)
    unknown = sorted(set(map(str, fields)) - allowed)
    if unknown:
        raise RigError(f"{where}: 'fields' has unknown column(s) {', '.join(unknown)}; the model reads "
                       f"{', '.join(RADAR_MODEL_FIELDS)} (+ filter fields {', '.join(RADAR_FILTER_FIELDS)})")
    missing = [c for c in RADAR_MODEL_FIELDS if c not in fields]
    if missing:
        raise RigError(f"{where}: 'fields' lacks {', '.join(missing)} (needed by the model)")
    if not all(isinstance(v, str) and v.strip() for v in fields.values()):
        raise RigError(f"{where}: every field name must be a non-empty string")
    src = [v.strip() for v in fields.values()]
    dup = sorted({v for v in src if src.count(v) > 1})
    if dup:
        raise RigError(f"{where}: one message field feeds two columns: {', '.join(dup)}")
    t, q = _pose(d, where)
    return RadarSpec(name=name, topic=_str(d, "topic", where, f"/sensors/radar/{low}/points"),
                     frame=_str(d, "frame", where, low), fields={str(k): v.strip() for k, v in fields.items()},
                     translation=t, rotation=q)  # type: ignore[arg-type]


def _lidar(d: Any, where: str) -> LidarSpec:
    if not isinstance(d, dict):
        raise RigError(f"{where}: must be a mapping")
    _keys(d, {"name", "topic", "frame", "translation", "rotation", "yaw_deg", "pitch_deg"}, where)
    name = _str(d, "name", where, "LIDAR_TOP")
    t, q = _pose(d, where)
    return LidarSpec(name=name, topic=_str(d, "topic", where, f"/sensors/lidar/{name.lower()}/points"),
                     frame=_str(d, "frame", where, name.lower()), translation=t, rotation=q)  # type: ignore[arg-type]
