"""nuScenes -> rosbag2 converter: one bag per scene, written with `rosbags` (no rclpy needed).

    imkd-nuscenes-to-bag --dataroot DIR --version v1.0-mini --scenes scene-0916 --out bags/
        [--storage mcap|sqlite3] [--distro humble|jazzy] [--compression none|zstd]
        [--no-lidar] [--no-gt] [--jobs N] [--on-corrupt skip|stop] [--overwrite] [--no-fsync]

Works on any version folder of the devkit layout (v1.0-mini, v1.0-trainval, the synthetic
'v1.0-synth'). Python API: `convert_scene(nusc, scene_name, out_dir, options) -> ConversionStats`.

Topics (the one table, `TOPICS`; the detector config and the replay/eval tools reuse it):

    key                       topic                                                type
    <CAM>                     /sensors/camera/<cam>/image_rect_color/compressed    sensor_msgs/CompressedImage
    <CAM>/camera_info         /sensors/camera/<cam>/camera_info                    sensor_msgs/CameraInfo
    <RADAR>                   /sensors/radar/<radar>/points                        sensor_msgs/PointCloud2
    LIDAR_TOP                 /sensors/lidar/lidar_top/points                      sensor_msgs/PointCloud2
    tf                        /tf                                                  tf2_msgs/TFMessage
    tf_static                 /tf_static                                           tf2_msgs/TFMessage
    odom                      /odom                                                nav_msgs/Odometry
    gt_detections             /ground_truth/detections                             vision_msgs/Detection3DArray
    gt_markers                /ground_truth/markers                                visualization_msgs/MarkerArray

(<cam>, <radar>: the nuScenes channel name lowercased, e.g. cam_front, radar_front_left.)
Image topics follow image_transport: `<ns>/image_rect_color/compressed` next to
`<ns>/camera_info` (nuScenes images are already undistorted, hence "rect").

Content:
- CompressedImage: the ORIGINAL JPEG bytes, format "jpeg"; CameraInfo with the same header:
  K from calibrated_sensor, plumb_bob with zero distortion, R = I, P = [K|0], width/height read
  from the JPEG's SOF marker.
- Radar PointCloud2: every point of the PCD file (no filters), all 18 fields with their PCD
  types/sizes (INT8/INT16/FLOAT32, point_step 43, packed); `data` is the PCD payload byte for
  byte. LiDAR PointCloud2: x, y, z, intensity (float32), ring (uint16), point_step 20.
- /tf_static (once, at the bag start; offered as reliable + transient local, depth 1, in the
  bag's offered_qos_profiles metadata, for every storage and distro; the other topics offer no
  profile, so `ros2 bag play` uses its default, reliable + volatile, which both reliable and
  best-effort subscribers accept): map->odom identity and base_link->sensor extrinsics
  from calibrated_sensor. /tf: odom->base_link at every ego pose of the scene (all
  sample_data records, also those whose files are absent). /odom (nav_msgs/Odometry, frame
  odom, child base_link) at the same stamps; twist by central finite differences over +-50 ms,
  expressed in base_link (the child frame, as nav_msgs specifies).
- Ground truth at every keyframe, stamped with the keyframe's CAM_FRONT time (= the project's
  SensorFrame.stamp) in base_link at that time: Detection3DArray (class_id = nuScenes
  detection class, score 1, bbox centre/yaw/size in metres, id = sample_annotation token;
  boxes of the 10 detection classes, unfiltered) and a MarkerArray (DELETEALL, a CUBE per
  box, an ARROW per velocity). The bag's custom_data holds `imkd.keyframes`: a JSON map
  {CAM_FRONT stamp ns: sample token}, and `imkd.source`.

Speed: the converter writes with rosbags' Writer, but serialises the heavy and the numerous
messages itself, byte-identical to rosbags' serialiser (checked once per bag at run time and in
the tests): files are read straight into the final CDR buffer (JPEG, LiDAR; one copy), /tf and
/odom for all poses are one numpy structured-array fill (`serialize_many`), and the ground-truth
arrays use struct-compiled layouts (`CdrPacker`). The pure `*_msg` builders stay the reference
(and are what replay/eval reuse); `ConversionStats.timings` gives seconds per stage.

Frames (REP-105/REP-103): map (nuScenes global frame) -> odom (identity, static; nuScenes poses
are already global) -> base_link (ego) -> <channel lowercased> (sensor frame; camera frames are
optical frames: z forward, x right, y down, as in nuScenes' calibration). Every message is
written at its header stamp (sample_data timestamp), all topics in one global time order.

Robustness: sweeps are included where their files exist (the real subset has none); missing
files are counted per channel and summarised, never an error. Paths come only from inside
--dataroot and go only inside --out: a sample_data record without a filename, or with an
absolute or '..' one, is counted ("records skipped") and skipped like a corrupt file (or stops
the run under --on-corrupt stop); a scene whose name is not one plain folder name ('../x') fails
alone ("failed", exit 1), nothing written for it. A corrupt input (not a JPEG, a
JPEG without EOI, a truncated or malformed PCD, a LiDAR .bin of odd size, an unreadable file) is
reported by name and skipped (--on-corrupt skip, the default) or ends the run with exit code 2
(--on-corrupt stop). A bag is written into `<out>/<scene>.partial/` and renamed to
`<out>/<scene>` only when complete (after fsync), so an interrupted run never leaves a
finished-looking bag; a stale `.partial` is replaced on the next run; an existing bag is kept
(reported as "exists") unless --overwrite.

Bag format versions (rosbag2 metadata version), what Humble's and Jazzy's `ros2 bag` read:
- rosbags 0.11 writes metadata version 8 or 9 only (Writer(version=8|9)).
- Version 9 (rosbag2 0.25/0.26 = Jazzy, ros2/rosbag2#1476 "Use enum values for
  offered_qos_profiles in code and string names in serialized metadata") stores
  offered_qos_profiles as a YAML list with enum *names*. Humble (rosbag2 0.15.x) parses
  offered_qos_profiles as a string and the QoS enums as integers, so it fails on v9 bags with
  "Exception on parsing info file: yaml-cpp: ... bad conversion" (ros2/rosbag2#2013, maintainer
  reply; rqt_bag#146 shows the v9 layout). No backport exists (ros2/rosbag2#1895).
- Version <= 8 keeps offered_qos_profiles as a YAML *string* with integer enums; Jazzy's reader
  still decodes that path (rosbag2_storage qos.cpp: `if (version <= 8) ... as<int>()`), and
  Humble's decoder (rosbag2_transport qos.cpp of that era: `node["history"].as<int>()`) reads
  exactly that layout and only looks at the fields it knows; it gates fields by version
  (`if (version >= 5) files`...) instead of rejecting newer numbers, which is why the v9 failure
  above is a QoS "bad conversion" and not a version error. v8's extra fields
  (type_description_hash, ros_distro, custom_data as a string map) are ignored by Humble and
  read by Jazzy. An empty offered_qos_profiles means "player default" in both
  (`if (topic.offered_qos_profiles.empty()) return Rosbag2QoS{}`).
  Hence: --distro humble (the DEFAULT) writes version 8 (Humble typestore) and plays on
  Humble and Jazzy; --distro jazzy writes version 9 (Jazzy typestore) for Jazzy and newer only.
- Storage: MCAP is Jazzy's default; on Humble it needs ros-humble-rosbag2-storage-mcap (or use
  --storage sqlite3, Humble's default). --compression zstd: MCAP chunk compression (transparent
  to readers), sqlite3 per-message zstd (compression_mode "message"; Humble forbids message
  mode only for MCAP).
(Checked against the sources above; no Humble/Jazzy install exists on the dev machines, so
playback with a real `ros2 bag play` is not exercised by the tests.)
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import shutil
import struct
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from imkd_core.data.nuscenes import NuScenesDataError, sample_data_path
from imkd_core.errors import UserError, cli_main, writable_dir
from imkd_core.frame import CAMERAS, CLASSES, LIDAR, RADARS
from imkd_ros import image_header
from imkd_ros.cdr import CDR_HEADER, detection_array_cdr
from imkd_ros.topics import (
    BASE_FRAME,
    CAMERA_INFO_TYPE,
    DETECTIONS_TYPE,
    IMAGE_TYPE,
    MAP_FRAME,
    MARKERS_TYPE,
    ODOM_FRAME,
    ODOM_TYPE,
    POINTS_TYPE,
    TF_TYPE,
    TOPICS,
    camera_info_topic,
    image_topic,
    points_topic,
    sensor_frame,
)

# rosbag2 metadata version and typestore per target distro (see the module docstring).
BAG_VERSIONS: dict[str, int] = {"humble": 8, "jazzy": 9}
DEFAULT_DISTRO = "humble"

# ----------------------------------------------------------------------------------------------
# Errors, options, stats
# ----------------------------------------------------------------------------------------------


class CorruptInputError(ValueError):
    """An input file that exists but cannot be converted; `path` names it once known."""

    def __init__(self, reason: str, path: str | os.PathLike | None = None) -> None:
        self.reason = reason
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {reason}" if self.path else reason)

    def __reduce__(self) -> tuple:  # keep reason and path across process boundaries (--jobs)
        return (type(self), (self.reason, self.path))


class UnsafeSceneNameError(UserError, ValueError):
    """A scene name that would place its bag outside the output folder."""


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

    def __post_init__(self) -> None:
        for name, value, allowed in (("storage", self.storage, ("mcap", "sqlite3")),
                                     ("distro", self.distro, tuple(BAG_VERSIONS)),
                                     ("compression", self.compression, ("none", "zstd")),
                                     ("on_corrupt", self.on_corrupt, ("skip", "stop"))):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


@dataclass
class ConversionStats:
    """Result of converting one scene."""

    scene: str
    bag: Path | None = None
    status: str = "ok"  # ok | exists | failed
    messages: dict[str, int] = field(default_factory=dict)  # topic -> count
    missing: dict[str, int] = field(default_factory=dict)  # channel -> files absent
    corrupt: list[str] = field(default_factory=list)  # paths of skipped corrupt files
    refused: list[str] = field(default_factory=list)  # sample_data records skipped: no or unsafe filename
    input_bytes: int = 0  # bytes of the input files read
    output_bytes: int = 0
    seconds: float = 0.0
    error: str = ""
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage (plan, camera, ..., close)

    @property
    def total_messages(self) -> int:
        return sum(self.messages.values())

    @property
    def mb_per_s(self) -> float:
        return self.input_bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0


# ----------------------------------------------------------------------------------------------
# Typestore (rosbags' message classes; vision_msgs registered from .msg files)
# ----------------------------------------------------------------------------------------------


def interface_msg_dir(package: str) -> Path | None:
    """Directory of `<package>/msg/*.msg` definitions: $IMKD_INTERFACES, the repo's
    tools/interfaces, then share/<package>/msg under sys.prefix and $AMENT_PREFIX_PATH."""
    roots: list[Path] = []
    if os.environ.get("IMKD_INTERFACES"):
        roots.append(Path(os.environ["IMKD_INTERFACES"]))
    roots.append(Path(__file__).resolve().parents[1] / "tools" / "interfaces")
    prefixes = [sys.prefix] + [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    roots += [Path(p) / "share" for p in prefixes]
    for root in roots:
        d = root / package / "msg"
        if d.is_dir() and any(d.glob("*.msg")):
            return d
    return None


@cache
def get_typestore(distro: str = DEFAULT_DISTRO) -> Any:
    """rosbags typestore of `distro` plus vision_msgs (and tf2_msgs where absent) registered from
    their .msg files (see interface_msg_dir); vision_msgs is left out when none are found."""
    from rosbags.typesys import Stores
    from rosbags.typesys import get_typestore as _get
    from rosbags.typesys.msg import get_types_from_msg

    ts = _get({"humble": Stores.ROS2_HUMBLE, "jazzy": Stores.ROS2_JAZZY}[distro])
    for package in ("tf2_msgs", "vision_msgs"):
        d = interface_msg_dir(package)
        if d is None:
            continue
        types: dict = {}
        for f in sorted(d.glob("*.msg")):
            name = f"{package}/msg/{f.stem}"
            if name not in ts.types:
                types.update(get_types_from_msg(f.read_text(), name))
        if types:
            ts.register(types)
    return ts


def require_vision_msgs(ts: Any) -> None:
    """Raise FileNotFoundError when the typestore lacks vision_msgs/Detection3DArray."""
    if DETECTIONS_TYPE not in ts.types:
        raise FileNotFoundError(
            "vision_msgs .msg definitions not found (looked in $IMKD_INTERFACES, tools/interfaces, "
            "share/vision_msgs/msg under sys.prefix and $AMENT_PREFIX_PATH); use --no-gt to convert "
            "without ground truth")


def _stamp(ts: Any, ns: int) -> Any:
    return ts.types["builtin_interfaces/msg/Time"](sec=int(ns // 1_000_000_000), nanosec=int(ns % 1_000_000_000))


def _header(ts: Any, ns: int, frame_id: str) -> Any:
    return ts.types["std_msgs/msg/Header"](stamp=_stamp(ts, ns), frame_id=frame_id)


_NP_BASE = {"bool": np.bool_, "byte": np.uint8, "octet": np.uint8, "char": np.uint8, "uint8": np.uint8,
            "int8": np.int8, "int16": np.int16, "uint16": np.uint16, "int32": np.int32,
            "uint32": np.uint32, "int64": np.int64, "uint64": np.uint64, "float32": np.float32,
            "float64": np.float64}


_DEFAULTS: dict[tuple[int, str], tuple[Any, dict[str, Any]]] = {}


def default_msg(ts: Any, typename: str, **values: Any) -> Any:
    """A message of `typename` with zero/empty defaults for every field not in `values`
    (works across distros whose definitions differ, e.g. visualization_msgs/Marker). Default
    sub-messages and arrays are shared between calls: treat them as read-only."""
    key = (id(ts), typename)
    if key not in _DEFAULTS:  # keep ts referenced so its id stays unique
        _DEFAULTS[key] = (ts, {name: _default_value(ts, desc) for name, desc in ts.fielddefs[typename][1]})
    defaults = _DEFAULTS[key][1]
    kwargs = {k: (list(v) if isinstance(v, list) else v) for k, v in defaults.items() if k not in values}
    return ts.types[typename](**kwargs, **values)


def _default_value(ts: Any, desc: Any) -> Any:
    kind, sub = desc
    kind = int(kind)
    if kind == 1:  # BASE
        base = sub[0]
        return "" if base in ("string", "wstring") else (False if base == "bool" else
                                                         (0.0 if base.startswith("float") else 0))
    if kind == 2:  # NAME
        return default_msg(ts, sub)
    (ekind, esub), length = sub
    if int(ekind) == 1 and esub[0] in _NP_BASE:
        return np.zeros(length if kind == 3 else 0, dtype=_NP_BASE[esub[0]])
    return [_default_value(ts, (ekind, esub)) for _ in range(length if kind == 3 else 0)]


_NP_SIZE = {k: np.dtype(v).itemsize for k, v in _NP_BASE.items()}


def cdr_layout(ts: Any, msg: Any, typename: str) -> tuple[int, dict[str, tuple[int, np.dtype, tuple[int, ...]]]]:
    """Byte layout of `msg` serialised as little-endian CDR (with its 4-byte encapsulation
    header): total size and, per numeric leaf path ("header.stamp.sec", "pose.covariance"),
    its (offset, dtype, shape). Strings and sequence lengths are taken from `msg` itself."""
    leaves: dict[str, tuple[int, np.dtype, tuple[int, ...]]] = {}
    pos = 0  # position in the payload (CDR alignment is relative to the payload start)

    def align(n: int) -> None:
        nonlocal pos
        pos = (pos + n - 1) // n * n

    def walk(obj: Any, typ: str, prefix: str) -> None:
        nonlocal pos
        for name, (kind, sub) in ts.fielddefs[typ][1]:
            val, path, kind = getattr(obj, name), prefix + name, int(kind)
            if kind == 2:
                walk(val, sub, path + ".")
                continue
            if kind == 1:
                elem, count, seq = (kind, sub), 1, False
            else:
                elem, count = sub[0], (len(val) if kind == 4 else sub[1])
                seq = kind == 4
                if seq:
                    align(4)
                    pos += 4
            ekind, esub = int(elem[0]), elem[1]
            if ekind == 2:
                for i, item in enumerate(val):
                    walk(item, esub, f"{path}[{i}].")
            elif esub[0] in ("string", "wstring"):
                for item in ([val] if kind == 1 else val):
                    align(4)
                    pos += 4 + len(item.encode()) + 1
            else:
                size = _NP_SIZE[esub[0]]
                if count:
                    align(min(size, 8))
                    shape = () if kind == 1 else (count,)
                    leaves[path] = (pos + 4, np.dtype(_NP_BASE[esub[0]]).newbyteorder("<"), shape)
                    pos += size * count

    walk(msg, typename, "")
    return pos + 4, leaves


def serialize_many(ts: Any, template: Any, typename: str, columns: dict[str, np.ndarray]) -> np.ndarray:
    """CDR bytes of N messages that differ from `template` only in numeric fields, at once:
    (N, size) uint8, row i = the serialisation of `template` with columns[path][i] set. The
    first row is checked against rosbags' own serialiser of the same message."""
    size, leaves = cdr_layout(ts, template, typename)
    base = np.frombuffer(ts.serialize_cdr(template, typename), dtype=np.uint8)
    if len(base) != size:
        raise ValueError(f"CDR layout of {typename} does not match rosbags ({size} != {len(base)} bytes)")
    n = len(next(iter(columns.values())))
    dtype = np.dtype({"names": list(columns),
                      "formats": [(leaves[p][1], leaves[p][2]) if leaves[p][2] else leaves[p][1] for p in columns],
                      "offsets": [leaves[p][0] for p in columns], "itemsize": size})
    out = np.empty((n, size), dtype=np.uint8)
    out[:] = base
    view = out.view(dtype).reshape(n)
    for path, values in columns.items():
        view[path] = values
    return out


def _stamp_columns(prefix: str, stamps_ns: np.ndarray) -> dict[str, np.ndarray]:
    stamps_ns = np.asarray(stamps_ns, np.int64)
    return {prefix + "sec": stamps_ns // 1_000_000_000, prefix + "nanosec": stamps_ns % 1_000_000_000}


def pose_messages(ts: Any, stamps_ns: np.ndarray, positions: np.ndarray, rotations_wxyz: np.ndarray,
                  linear: np.ndarray, angular: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Serialised /tf (odom->base_link) and /odom messages of N ego poses, vectorised:
    two (N, size) uint8 arrays, each row identical to serialising tf_msg(...)/odometry_msg(...)."""
    q = np.asarray(rotations_wxyz, np.float64)
    p = np.asarray(positions, np.float64)
    tf_tmpl = tf_msg(ts, [transform_stamped(ts, 0, ODOM_FRAME, BASE_FRAME, (0, 0, 0), (1, 0, 0, 0))])
    tr = "transforms[0]."
    tf_rows = serialize_many(ts, tf_tmpl, TF_TYPE, {
        **_stamp_columns(tr + "header.stamp.", stamps_ns),
        **{f"{tr}transform.translation.{a}": p[:, i] for i, a in enumerate("xyz")},
        **{f"{tr}transform.rotation.{a}": q[:, i] for i, a in enumerate("wxyz")}})
    od_tmpl = odometry_msg(ts, 0, (0, 0, 0), (1, 0, 0, 0), (0, 0, 0), (0, 0, 0))
    odom_rows = serialize_many(ts, od_tmpl, ODOM_TYPE, {
        **_stamp_columns("header.stamp.", stamps_ns),
        **{f"pose.pose.position.{a}": p[:, i] for i, a in enumerate("xyz")},
        **{f"pose.pose.orientation.{a}": q[:, i] for i, a in enumerate("wxyz")},
        **{f"twist.twist.linear.{a}": np.asarray(linear)[:, i] for i, a in enumerate("xyz")},
        **{f"twist.twist.angular.{a}": np.asarray(angular)[:, i] for i, a in enumerate("xyz")}})
    if len(p):  # self-check against rosbags' serialiser
        ref_tf = ts.serialize_cdr(tf_msg(ts, [transform_stamped(ts, int(stamps_ns[0]), ODOM_FRAME, BASE_FRAME,
                                                                p[0], q[0])]), TF_TYPE)
        ref_od = ts.serialize_cdr(odometry_msg(ts, int(stamps_ns[0]), p[0], q[0], linear[0], angular[0]), ODOM_TYPE)
        if bytes(ref_tf) != tf_rows[0].tobytes() or bytes(ref_od) != odom_rows[0].tobytes():
            raise AssertionError("vectorised CDR of /tf or /odom differs from rosbags' serialiser")
    return tf_rows, odom_rows


# ----------------------------------------------------------------------------------------------
# Pure helpers: quaternions (w, x, y, z), file parsers
# ----------------------------------------------------------------------------------------------


def quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product of (..., 4) wxyz quaternions."""
    aw, ax, ay, az = np.moveaxis(np.asarray(a, np.float64), -1, 0)
    bw, bx, by, bz = np.moveaxis(np.asarray(b, np.float64), -1, 0)
    return np.stack([aw * bw - ax * bx - ay * by - az * bz,
                     aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx,
                     aw * bz + ax * by - ay * bx + az * bw], axis=-1)


def quat_conj(q: np.ndarray) -> np.ndarray:
    """Conjugate (inverse of a unit quaternion), wxyz."""
    return np.asarray(q, np.float64) * np.array([1.0, -1.0, -1.0, -1.0])


def quat_to_mat(q: np.ndarray) -> np.ndarray:
    """(..., 4) wxyz unit quaternions -> (..., 3, 3) rotation matrices."""
    q = np.asarray(q, np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = np.moveaxis(q, -1, 0)
    return np.stack([np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
                     np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
                     np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1)], -2)


def quat_yaw(q: np.ndarray) -> np.ndarray:
    """Heading of the rotated x axis of (..., 4) wxyz quaternions: the devkit evaluator's
    `quaternion_yaw` (not pyquaternion's yaw_pitch_roll, which differs under roll/pitch)."""
    w, x, y, z = np.moveaxis(np.asarray(q, np.float64), -1, 0)
    return np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))


def jpeg_size(buf: bytes | bytearray | memoryview) -> tuple[int, int]:
    """(width, height) from a JPEG's SOF marker (imkd_ros.image_header); CorruptInputError if it
    is no complete JPEG."""
    try:
        h, w = image_header.jpeg_size(memoryview(buf).cast("B"))
    except image_header.ImageHeaderError as e:
        raise CorruptInputError(str(e)) from e
    return w, h


# PCD (TYPE, SIZE) -> (PointField datatype, numpy dtype)
_PCD_TYPES: dict[tuple[str, int], tuple[int, str]] = {
    ("I", 1): (1, "i1"), ("U", 1): (2, "u1"), ("I", 2): (3, "<i2"), ("U", 2): (4, "<u2"),
    ("I", 4): (5, "<i4"), ("U", 4): (6, "<u4"), ("F", 4): (7, "<f4"), ("F", 8): (8, "<f8"),
}


class PcdCloud(NamedTuple):
    """A binary PCD file: PointFields as (name, offset, datatype, count), and the payload."""

    fields: list[tuple[str, int, int, int]]
    dtype: np.dtype  # packed structured dtype of one point
    point_step: int
    width: int
    height: int
    data: memoryview  # exactly width * height * point_step bytes

    def array(self) -> np.ndarray:
        """Structured (N,) view of the points (no copy)."""
        return np.frombuffer(self.data, dtype=self.dtype)


def parse_pcd(raw: bytes) -> PcdCloud:
    """Parse a binary PCD v0.7 file (the nuScenes radar format) without copying its payload."""
    idx = raw.find(b"\nDATA ")
    if not raw.startswith((b"#", b"VERSION")) or idx < 0:
        raise CorruptInputError("not a PCD file (no header / DATA line)")
    eol = raw.find(b"\n", idx + 1)
    if eol < 0:
        raise CorruptInputError("truncated PCD header")
    try:
        header = {}
        for line in raw[:eol].decode("ascii").splitlines():
            parts = line.split()
            if parts and not parts[0].startswith("#"):
                header[parts[0].upper()] = parts[1:]
        names = header["FIELDS"]
        sizes = [int(s) for s in header["SIZE"]]
        types = header["TYPE"]
        counts = [int(c) for c in header.get("COUNT", ["1"] * len(names))]
        width, height = int(header["WIDTH"][0]), int(header.get("HEIGHT", ["1"])[0])
        points = int(header.get("POINTS", [width * height])[0])
        data_kind = header["DATA"][0]
    except (KeyError, IndexError, ValueError, UnicodeDecodeError) as exc:
        raise CorruptInputError(f"malformed PCD header ({exc!r})") from None
    if not (len(names) == len(sizes) == len(types) == len(counts)):
        raise CorruptInputError("malformed PCD header (FIELDS/SIZE/TYPE/COUNT lengths differ)")
    if data_kind != "binary":
        raise CorruptInputError(f"unsupported PCD DATA {data_kind!r} (only binary)")
    if points != width * height:
        raise CorruptInputError(f"malformed PCD header (POINTS {points} != WIDTH*HEIGHT)")
    fields, offset, np_fields = [], 0, []
    for name, size, typ, count in zip(names, sizes, types, counts):
        if (typ, size) not in _PCD_TYPES:
            raise CorruptInputError(f"unsupported PCD field type {typ}{size} of {name!r}")
        datatype, np_type = _PCD_TYPES[(typ, size)]
        fields.append((name, offset, datatype, count))
        np_fields.append((name, np_type, (count,)) if count > 1 else (name, np_type))
        offset += size * count
    need = points * offset
    payload = memoryview(raw)[eol + 1:]
    if len(payload) < need:
        raise CorruptInputError(f"truncated PCD ({len(payload)} of {need} payload bytes)")
    return PcdCloud(fields, np.dtype(np_fields), offset, width, height, payload[:need])


_LIDAR_FIELDS = [("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1), ("intensity", 12, 7, 1), ("ring", 16, 4, 1)]
LIDAR_DTYPE = np.dtype({"names": ["x", "y", "z", "intensity", "ring"],
                        "formats": ["<f4", "<f4", "<f4", "<f4", "<u2"],
                        "offsets": [0, 4, 8, 12, 16], "itemsize": 20})


def lidar_points(raw: bytes) -> np.ndarray:
    """nuScenes LiDAR .bin (float32 x, y, z, intensity, ring) -> (N,) LIDAR_DTYPE array."""
    if len(raw) % 20:
        raise CorruptInputError(f"truncated LiDAR .bin ({len(raw)} bytes, not a multiple of 20)")
    scan = np.frombuffer(raw, dtype="<f4").reshape(-1, 5)
    out = np.zeros(len(scan), dtype=LIDAR_DTYPE)
    for i, name in enumerate(("x", "y", "z", "intensity")):
        out[name] = scan[:, i]
    out["ring"] = scan[:, 4].astype(np.uint16)
    return out


# ----------------------------------------------------------------------------------------------
# Pure message builders (rosbags message objects; serialise with ts.serialize_cdr)
# ----------------------------------------------------------------------------------------------


def compressed_image_msg(ts: Any, stamp_ns: int, frame_id: str, jpeg: bytes) -> Any:
    """CompressedImage carrying the JPEG bytes unchanged."""
    return ts.types[IMAGE_TYPE](header=_header(ts, stamp_ns, frame_id), format="jpeg",
                                data=np.frombuffer(jpeg, dtype=np.uint8))


def camera_info_msg(ts: Any, stamp_ns: int, frame_id: str, k: np.ndarray, width: int, height: int) -> Any:
    """CameraInfo of an undistorted pinhole camera (plumb_bob, zero distortion, P = [K|0])."""
    k = np.asarray(k, np.float64).reshape(3, 3)
    p = np.zeros((3, 4))
    p[:, :3] = k
    roi = ts.types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return ts.types[CAMERA_INFO_TYPE](
        header=_header(ts, stamp_ns, frame_id), height=int(height), width=int(width),
        distortion_model="plumb_bob", d=np.zeros(5), k=k.reshape(-1).copy(), r=np.eye(3).reshape(-1),
        p=p.reshape(-1), binning_x=0, binning_y=0, roi=roi)


def pointcloud2_msg(ts: Any, stamp_ns: int, frame_id: str, fields: Sequence[tuple[str, int, int, int]],
                    point_step: int, width: int, height: int, data: np.ndarray | memoryview | bytes,
                    is_dense: bool) -> Any:
    """PointCloud2 (little endian) from PointField tuples (name, offset, datatype, count)."""
    pf = ts.types["sensor_msgs/msg/PointField"]
    return ts.types[POINTS_TYPE](
        header=_header(ts, stamp_ns, frame_id), height=int(height), width=int(width),
        fields=[pf(name=n, offset=o, datatype=d, count=c) for n, o, d, c in fields],
        is_bigendian=False, point_step=int(point_step), row_step=int(point_step * width),
        data=np.frombuffer(data, dtype=np.uint8), is_dense=bool(is_dense))


def radar_pointcloud2_msg(ts: Any, stamp_ns: int, frame_id: str, pcd_raw: bytes) -> Any:
    """PointCloud2 with every field and point of a nuScenes radar PCD, payload byte for byte."""
    pcd = parse_pcd(pcd_raw)
    arr = pcd.array()
    xyz = [n for n in ("x", "y", "z") if n in arr.dtype.names]
    dense = bool(all(np.isfinite(arr[n]).all() for n in xyz))
    return pointcloud2_msg(ts, stamp_ns, frame_id, pcd.fields, pcd.point_step, pcd.width, pcd.height,
                           pcd.data, dense)


def lidar_pointcloud2_msg(ts: Any, stamp_ns: int, frame_id: str, bin_raw: bytes) -> Any:
    """PointCloud2 (x, y, z, intensity float32, ring uint16) of a nuScenes LiDAR .bin."""
    pts = lidar_points(bin_raw)
    dense = bool(np.isfinite(np.frombuffer(bin_raw, dtype="<f4")).all())  # conservative: all 5 values
    return pointcloud2_msg(ts, stamp_ns, frame_id, _LIDAR_FIELDS, LIDAR_DTYPE.itemsize, len(pts), 1,
                           pts.view(np.uint8), dense)


# Serialised sensor messages with one copy of the payload (file -> final CDR buffer); each is
# byte-identical to ts.serialize_cdr of the corresponding *_msg builder above.
_PAYLOAD_TAIL = {IMAGE_TYPE: 0, POINTS_TYPE: 1}  # bytes after `data` (PointCloud2: is_dense)


def _payload_frame(ts: Any, msg: Any, typename: str, n: int) -> tuple[bytearray, int]:
    """CDR buffer of `msg` (whose `data` is empty) grown by n payload bytes; returns (buffer,
    payload offset); the caller fills buffer[offset:offset + n]."""
    b0 = ts.serialize_cdr(msg, typename)
    head = len(b0) - _PAYLOAD_TAIL[typename]
    out = bytearray(len(b0) + n)
    out[:head] = b0[:head]
    struct.pack_into("<I", out, head - 4, n)
    out[head + n:] = b0[head:]
    return out, head


def _read_into(path: Path, fill: Any) -> int:
    """Open `path`, call fill(file, size) and return size (OSError on a short read)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        fill(f, size)
    return size


def _readinto_exact(f: Any, view: memoryview) -> None:
    got = f.readinto(view)
    if got != len(view):
        raise CorruptInputError(f"short read ({got} of {len(view)} bytes)")


def compressed_image_cdr(ts: Any, stamp_ns: int, frame_id: str, jpeg: bytes | memoryview) -> bytearray:
    """CDR of compressed_image_msg(...)."""
    out, off = _payload_frame(ts, compressed_image_msg(ts, stamp_ns, frame_id, b""), IMAGE_TYPE, len(jpeg))
    out[off:] = jpeg
    return out


def image_file_cdr(ts: Any, stamp_ns: int, frame_id: str, path: Path) -> tuple[bytearray, int, int, int]:
    """CDR of the CompressedImage of a JPEG file, read straight into the buffer; also the file
    size and the image (width, height). CorruptInputError if it is no complete JPEG."""
    res: list = []

    def fill(f: Any, size: int) -> None:
        out, off = _payload_frame(ts, compressed_image_msg(ts, stamp_ns, frame_id, b""), IMAGE_TYPE, size)
        view = memoryview(out)[off:]
        _readinto_exact(f, view)
        res.extend((out, *jpeg_size(view)))

    size = _read_into(path, fill)
    return res[0], size, res[1], res[2]


def radar_pcd_cdr(ts: Any, stamp_ns: int, frame_id: str, pcd_raw: bytes) -> bytearray:
    """CDR of radar_pointcloud2_msg(...) (every point and field of the PCD)."""
    pcd = parse_pcd(pcd_raw)
    arr = pcd.array()
    dense = bool(all(np.isfinite(arr[n]).all() for n in ("x", "y", "z") if n in arr.dtype.names))
    msg = pointcloud2_msg(ts, stamp_ns, frame_id, pcd.fields, pcd.point_step, pcd.width, pcd.height, b"", dense)
    out, off = _payload_frame(ts, msg, POINTS_TYPE, len(pcd.data))
    out[off:off + len(pcd.data)] = pcd.data
    return out


def lidar_file_cdr(ts: Any, stamp_ns: int, frame_id: str, path: Path) -> tuple[bytearray, int]:
    """CDR of lidar_pointcloud2_msg(...) of a LiDAR .bin file, read straight into the buffer
    (the 5th float32 of each point becomes the uint16 ring + 2 zero bytes, in place); also the
    file size."""
    res: list = []

    def fill(f: Any, size: int) -> None:
        if size % 20:
            raise CorruptInputError(f"truncated LiDAR .bin ({size} bytes, not a multiple of 20)")
        n = size // 20
        msg = pointcloud2_msg(ts, stamp_ns, frame_id, _LIDAR_FIELDS, 20, n, 1, b"", True)
        out, off = _payload_frame(ts, msg, POINTS_TYPE, size)
        _readinto_exact(f, memoryview(out)[off:off + size])
        out[-1] = int(bool(np.isfinite(np.frombuffer(out, dtype="<f4", count=n * 5, offset=off)).all()))
        pts = np.frombuffer(out, dtype="<u4", count=n * 5, offset=off).reshape(n, 5)
        pts[:, 4] = pts[:, 4].view("<f4").astype(np.uint16)
        res.append(out)

    size = _read_into(path, fill)
    return res[0], size


def transform_stamped(ts: Any, stamp_ns: int, parent: str, child: str, translation: Sequence[float],
                      rotation_wxyz: Sequence[float]) -> Any:
    """geometry_msgs/TransformStamped parent->child (rotation given as nuScenes wxyz)."""
    t = [float(v) for v in translation]
    w, x, y, z = (float(v) for v in rotation_wxyz)
    tr = ts.types["geometry_msgs/msg/Transform"](
        translation=ts.types["geometry_msgs/msg/Vector3"](x=t[0], y=t[1], z=t[2]),
        rotation=ts.types["geometry_msgs/msg/Quaternion"](x=x, y=y, z=z, w=w))
    return ts.types["geometry_msgs/msg/TransformStamped"](header=_header(ts, stamp_ns, parent),
                                                        child_frame_id=child, transform=tr)


def tf_msg(ts: Any, transforms: Sequence[Any]) -> Any:
    """tf2_msgs/TFMessage."""
    return ts.types[TF_TYPE](transforms=list(transforms))


def odometry_msg(ts: Any, stamp_ns: int, position: Sequence[float], rotation_wxyz: Sequence[float],
                 linear: Sequence[float], angular: Sequence[float], frame_id: str = ODOM_FRAME,
                 child_frame_id: str = BASE_FRAME) -> Any:
    """nav_msgs/Odometry: pose in `frame_id`, twist in `child_frame_id`; covariances unknown (0)."""
    g = "geometry_msgs/msg/"
    w, x, y, z = (float(v) for v in rotation_wxyz)
    pose = ts.types[g + "Pose"](position=ts.types[g + "Point"](x=float(position[0]), y=float(position[1]),
                                                                z=float(position[2])),
                                orientation=ts.types[g + "Quaternion"](x=x, y=y, z=z, w=w))
    twist = ts.types[g + "Twist"](linear=ts.types[g + "Vector3"](x=float(linear[0]), y=float(linear[1]),
                                                                  z=float(linear[2])),
                                  angular=ts.types[g + "Vector3"](x=float(angular[0]), y=float(angular[1]),
                                                                   z=float(angular[2])))
    return ts.types[ODOM_TYPE](
        header=_header(ts, stamp_ns, frame_id), child_frame_id=child_frame_id,
        pose=ts.types[g + "PoseWithCovariance"](pose=pose, covariance=np.zeros(36)),
        twist=ts.types[g + "TwistWithCovariance"](twist=twist, covariance=np.zeros(36)))


def _yaw_pose(ts: Any, x: float, y: float, z: float, yaw: float) -> Any:
    g = "geometry_msgs/msg/"
    return ts.types[g + "Pose"](position=ts.types[g + "Point"](x=float(x), y=float(y), z=float(z)),
                                orientation=ts.types[g + "Quaternion"](x=0.0, y=0.0, z=math.sin(yaw / 2),
                                                                        w=math.cos(yaw / 2)))


def detection_array_msg(ts: Any, stamp_ns: int, boxes: np.ndarray, class_names: Sequence[str],
                        scores: Sequence[float] | None = None, ids: Sequence[str] | None = None,
                        frame_id: str = BASE_FRAME) -> Any:
    """vision_msgs/Detection3DArray from (N, 9) BOX_COLUMNS boxes (x y z l w h yaw vx vy).

    bbox.size = (l, w, h) along the box's x/y/z; class_id = class name; id = ids[i] or "".
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 9)
    scores = np.ones(len(boxes)) if scores is None else np.asarray(scores, np.float64)
    v = "vision_msgs/msg/"
    g = "geometry_msgs/msg/"
    dets = []
    for i, b in enumerate(boxes):
        pose = _yaw_pose(ts, b[0], b[1], b[2], b[6])
        hyp = ts.types[v + "ObjectHypothesisWithPose"](
            hypothesis=ts.types[v + "ObjectHypothesis"](class_id=str(class_names[i]), score=float(scores[i])),
            pose=ts.types[g + "PoseWithCovariance"](pose=pose, covariance=np.zeros(36)))
        bbox = ts.types[v + "BoundingBox3D"](center=pose, size=ts.types[g + "Vector3"](
            x=float(b[3]), y=float(b[4]), z=float(b[5])))
        dets.append(ts.types[v + "Detection3D"](header=_header(ts, stamp_ns, frame_id), results=[hyp],
                                                bbox=bbox, id="" if ids is None else str(ids[i])))
    return ts.types[DETECTIONS_TYPE](header=_header(ts, stamp_ns, frame_id), detections=dets)


_CLASS_COLORS: dict[str, tuple[float, float, float]] = {
    "car": (1.0, 0.62, 0.0), "truck": (1.0, 0.39, 0.28), "construction_vehicle": (0.91, 0.59, 0.48),
    "bus": (1.0, 0.27, 0.0), "trailer": (1.0, 0.55, 0.0), "barrier": (0.44, 0.5, 0.56),
    "motorcycle": (1.0, 0.24, 0.39), "bicycle": (0.86, 0.08, 0.24), "pedestrian": (0.0, 0.0, 0.9),
    "traffic_cone": (0.18, 0.31, 0.31),
}


def markers_msg(ts: Any, stamp_ns: int, boxes: np.ndarray, class_names: Sequence[str],
                frame_id: str = BASE_FRAME, ns: str = "ground_truth", alpha: float = 0.4) -> Any:
    """visualization_msgs/MarkerArray: DELETEALL, then a CUBE per box and an ARROW per velocity."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 9)
    m = "visualization_msgs/msg/Marker"
    g = "geometry_msgs/msg/"
    const = ts.types[m]
    markers = [default_msg(ts, m, header=_header(ts, stamp_ns, frame_id), ns=ns, action=const.DELETEALL)]
    for i, b in enumerate(boxes):
        r, gg, bb = _CLASS_COLORS.get(str(class_names[i]), (0.5, 0.5, 0.5))
        color = ts.types["std_msgs/msg/ColorRGBA"](r=r, g=gg, b=bb, a=float(alpha))
        markers.append(default_msg(
            ts, m, header=_header(ts, stamp_ns, frame_id), ns=ns, id=2 * i, type=const.CUBE,
            action=const.ADD, pose=_yaw_pose(ts, b[0], b[1], b[2], b[6]),
            scale=ts.types[g + "Vector3"](x=float(b[3]), y=float(b[4]), z=float(b[5])), color=color))
        start = ts.types[g + "Point"](x=float(b[0]), y=float(b[1]), z=float(b[2]))
        end = ts.types[g + "Point"](x=float(b[0] + b[7]), y=float(b[1] + b[8]), z=float(b[2]))
        markers.append(default_msg(
            ts, m, header=_header(ts, stamp_ns, frame_id), ns=ns + "/velocity", id=2 * i + 1,
            type=const.ARROW, action=const.ADD, pose=_yaw_pose(ts, 0, 0, 0, 0),
            scale=ts.types[g + "Vector3"](x=0.1, y=0.2, z=0.2), color=color, points=[start, end]))
    return ts.types[MARKERS_TYPE](markers=markers)


# ----------------------------------------------------------------------------------------------
# Fast CDR for the ground-truth markers (byte-identical to rosbags' serialiser, ~10x faster;
# the Detection3DArray writer is imkd_ros.cdr, shared with the node)
# ----------------------------------------------------------------------------------------------

_STRUCT_CODES = {"bool": "?", "byte": "B", "octet": "B", "char": "B", "uint8": "B", "int8": "b", "int16": "h",
                 "uint16": "H", "int32": "i", "uint32": "I", "int64": "q", "uint64": "Q", "float32": "f",
                 "float64": "d"}


class CdrPacker:
    """One message shape (its string and sequence lengths as in `template`) compiled into a
    single struct format, for a message starting at payload offset = `phase` (mod 8).
    pack_at(indices(paths), values) returns its CDR bytes with those numeric/string leaves
    replaced (paths as "header.stamp.sec", "points[1].x"; strings must keep their compiled length)."""

    def __init__(self, ts: Any, typename: str, template: Any, phase: int) -> None:
        fmt: list[str] = []
        self.values: list[Any] = []
        self.index: dict[str, int] = {}
        pos = phase

        def pad(n: int) -> None:
            nonlocal pos
            k = -pos % n
            if k:
                fmt.append(f"{k}x")
                pos += k

        def put(code: str, value: Any, path: str | None = None, count: int = 1) -> None:
            nonlocal pos
            size = struct.calcsize("<" + code)
            pad(min(size, 8))
            if path is not None:
                self.index[path] = len(self.values)
            fmt.append(f"{count}{code}" if count != 1 else code)
            if count == 1:
                self.values.append(value)
            else:
                self.values.extend(value)
            pos += size * count

        def put_string(value: str, path: str) -> None:
            nonlocal pos
            raw = value.encode() + b"\0"
            put("I", len(raw))
            self.index[path] = len(self.values)
            fmt.append(f"{len(raw)}s")
            self.values.append(raw)
            pos += len(raw)

        def walk(obj: Any, typ: str, prefix: str) -> None:
            for name, (kind, sub) in ts.fielddefs[typ][1]:
                val, path, kind = getattr(obj, name), prefix + name, int(kind)
                if kind == 2:
                    walk(val, sub, path + ".")
                elif kind == 1:
                    if sub[0] in ("string", "wstring"):
                        put_string(val, path)
                    else:
                        put(_STRUCT_CODES[sub[0]], val.item() if hasattr(val, "item") else val, path)
                else:
                    (ekind, esub), n = sub[0], (len(val) if kind == 4 else sub[1])
                    if kind == 4:
                        put("I", n)
                    if int(ekind) == 2:
                        for i, item in enumerate(val):
                            walk(item, esub, f"{path}[{i}].")
                    elif esub[0] in ("string", "wstring"):
                        for i, item in enumerate(val):
                            put_string(item, f"{path}[{i}]")
                    elif n:
                        put(_STRUCT_CODES[esub[0]], [v.item() for v in np.asarray(val).reshape(-1)], path, n)

        walk(template, typename, "")
        self.struct = struct.Struct("<" + "".join(fmt))
        self.end_phase = pos % 8

    def indices(self, paths: tuple[str, ...]) -> tuple[int, ...]:
        """Value slots of `paths` (cached), for pack_at."""
        cache = self.__dict__.setdefault("_indices", {})
        if paths not in cache:
            cache[paths] = tuple(self.index[p] for p in paths)
        return cache[paths]

    def pack_at(self, slots: tuple[int, ...], values: Sequence[Any]) -> bytes:
        """CDR bytes with values[k] at slots[k] (strings as NUL-terminated bytes)."""
        vals = self.values.copy()
        for i, v in zip(slots, values):
            vals[i] = v
        return self.struct.pack(*vals)


_PACKERS: dict[tuple, tuple[CdrPacker, Any]] = {}


def _packer(ts: Any, typename: str, key: tuple, phase: int, template: Any) -> CdrPacker:
    """Cached CdrPacker for (typestore, type, shape key, phase); `template()` builds a message."""
    k = (id(ts), typename, key, phase)
    if k not in _PACKERS:
        _PACKERS[k] = (CdrPacker(ts, typename, template(), phase), ts)
    return _PACKERS[k][0]


def _seq_start(parts: list[bytes], pos: int, n: int) -> int:
    k = -pos % 4
    parts.append(b"\0" * k + struct.pack("<I", n))
    return pos + k + 4


_CUBE_PATHS = ("header.stamp.sec", "header.stamp.nanosec", "id", "pose.position.x", "pose.position.y",
               "pose.position.z", "pose.orientation.z", "pose.orientation.w", "scale.x", "scale.y", "scale.z",
               "color.r", "color.g", "color.b", "color.a")
_ARROW_PATHS = ("header.stamp.sec", "header.stamp.nanosec", "id", "points[0].x", "points[0].y", "points[0].z",
                "points[1].x", "points[1].y", "points[1].z", "color.r", "color.g", "color.b", "color.a")


def markers_cdr(ts: Any, stamp_ns: int, boxes: np.ndarray, class_names: Sequence[str],
                frame_id: str = BASE_FRAME, ns: str = "ground_truth", alpha: float = 0.4) -> bytes:
    """CDR bytes of markers_msg(...) (same arguments), without building messages."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 9)
    m = "visualization_msgs/msg/Marker"
    key = (len(frame_id.encode()), len(ns.encode()))
    parts = [CDR_HEADER]
    pos = _seq_start(parts, 0, 1 + 2 * len(boxes))
    sec, nsec = int(stamp_ns // 1_000_000_000), int(stamp_ns % 1_000_000_000)
    p = _packer(ts, m, key + ("deleteall",), pos % 8,
                lambda: markers_msg(ts, 0, np.zeros((0, 9)), [], frame_id, ns, alpha).markers[0])
    parts.append(p.pack_at(p.indices(_CUBE_PATHS[:2]), (sec, nsec)))
    pos += len(parts[-1])
    one = np.zeros((1, 9))
    alpha = float(alpha)
    for i, (x, y, z, l, w, h, yaw, vx, vy) in enumerate(boxes.tolist()):
        r, g, b = _CLASS_COLORS.get(str(class_names[i]), (0.5, 0.5, 0.5))
        p = _packer(ts, m, key + ("cube",), pos % 8, lambda: markers_msg(ts, 0, one, ["car"], frame_id, ns).markers[1])
        parts.append(p.pack_at(p.indices(_CUBE_PATHS), (sec, nsec, 2 * i, x, y, z, math.sin(yaw / 2),
                                                        math.cos(yaw / 2), l, w, h, r, g, b, alpha)))
        pos += len(parts[-1])
        p = _packer(ts, m, key + ("arrow",), pos % 8, lambda: markers_msg(ts, 0, one, ["car"], frame_id, ns).markers[2])
        parts.append(p.pack_at(p.indices(_ARROW_PATHS), (sec, nsec, 2 * i + 1, x, y, z, x + vx, y + vy, z,
                                                         r, g, b, alpha)))
        pos += len(parts[-1])
    return b"".join(parts)


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
    rot = quat_to_mat(q)
    v_world = (p[hi] - p[lo]) / dt[:, None]
    linear = np.einsum("nji,nj->ni", rot, v_world)  # R^T v
    q_rel = quat_mul(quat_conj(q[lo]), q[hi])
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
    rot_e = quat_to_mat(np.asarray(pose["rotation"], np.float64))
    boxes = np.zeros((len(anns), 9))
    boxes[:, 0:3] = (t - np.asarray(pose["translation"])) @ rot_e  # R^T (p - t)
    boxes[:, 3] = size[:, 1]
    boxes[:, 4] = size[:, 0]
    boxes[:, 5] = size[:, 2]
    boxes[:, 6] = quat_yaw(quat_mul(quat_conj(np.asarray(pose["rotation"], np.float64)), q))
    boxes[:, 7:9] = (vel @ rot_e)[:, :2]
    return boxes, [name for _, name in anns], [a["token"] for a, _ in anns]


# ----------------------------------------------------------------------------------------------
# Scene plan: every message of the scene as a lightweight, time-sorted event
# ----------------------------------------------------------------------------------------------

# event kinds, in the order used to break timestamp ties
_TF_STATIC, _POSE, _SENSOR, _GT = 0, 1, 2, 3


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
    pose_stamps: np.ndarray  # (P,) ns, unique, sorted; the _POSE event seq indexes these arrays
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
    order = {c: i for i, c in enumerate(CAMERAS + RADARS + (LIDAR,))}
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
                _warn(f"[nuscenes_to_bag] sample_data record skipped: {exc}")
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
            events.append(Event(int(rec["timestamp"]) * 1000, _SENSOR, seq, (ch, modality, Path(fname), rec)))
            seq += 1
    pose_stamps = np.array(sorted(poses), dtype=np.int64)
    pose_recs = [nusc.get("ego_pose", poses[int(t)]) for t in pose_stamps]
    positions = np.array([p["translation"] for p in pose_recs], np.float64).reshape(-1, 3)
    rotations = np.array([p["rotation"] for p in pose_recs], np.float64).reshape(-1, 4)
    linear, angular = ego_twist(pose_stamps, positions, rotations)
    for i, stamp in enumerate(pose_stamps):
        events.append(Event(int(stamp), _POSE, i, None))
    keyframes: dict[int, str] = {}
    for s in samples:
        cam = s["data"].get("CAM_FRONT")
        stamp = int(nusc.get("sample_data", cam)["timestamp"] if cam else s["timestamp"]) * 1000
        keyframes[stamp] = s["token"]
        if options.ground_truth:
            ref = cam or s["data"].get(LIDAR) or next(iter(s["data"].values()))
            events.append(Event(stamp, _GT, len(keyframes), (s["token"], ref)))
    t0 = min(e.stamp for e in events) if events else int(samples[0]["timestamp"]) * 1000
    events.append(Event(t0, _TF_STATIC, 0, None))
    events.sort(key=lambda e: (e.stamp, e.kind, e.seq))
    return ScenePlan(scene, channels, calib, events, missing, refused, keyframes, pose_stamps, positions,
                     rotations, linear, angular)


# ----------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------


def _qos(durability: str = "volatile", depth: int = 10) -> Any:
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    zero = QosTime(0, 0)
    dur = QosDurability.TRANSIENT_LOCAL if durability == "transient_local" else QosDurability.VOLATILE
    return Qos(QosHistory.KEEP_LAST, depth, QosReliability.RELIABLE, dur, zero, zero,
               QosLiveliness.AUTOMATIC, zero, False)


def _fsync_tree(path: Path) -> None:
    for f in path.rglob("*"):
        if f.is_file():
            fd = os.open(f, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _warn(msg: str) -> None:
    try:
        from tqdm import tqdm
        tqdm.write(msg, file=sys.stderr)
    except ImportError:  # pragma: no cover
        print(msg, file=sys.stderr)


def _check_sensor_cdr(ts: Any, modality: str, stamp: int, frame: str, raw: bytes, blob: bytes | bytearray) -> None:
    """Assert that a fast-path sensor message equals rosbags' serialisation of its builder."""
    if modality == "camera":
        ref = ts.serialize_cdr(compressed_image_msg(ts, stamp, frame, raw), IMAGE_TYPE)
    elif modality == "radar":
        ref = ts.serialize_cdr(radar_pointcloud2_msg(ts, stamp, frame, raw), POINTS_TYPE)
    else:
        ref = ts.serialize_cdr(lidar_pointcloud2_msg(ts, stamp, frame, raw), POINTS_TYPE)
    if bytes(ref) != bytes(blob):
        raise AssertionError(f"fast {modality} CDR differs from rosbags' serialiser")


def _write_bag(nusc: Any, plan: ScenePlan, bag_path: Path, options: ConvertOptions,
               stats: ConversionStats) -> None:
    from rosbags.rosbag2 import Writer
    from rosbags.rosbag2.enums import CompressionFormat, CompressionMode, StoragePlugin
    from tqdm import tqdm

    ts = get_typestore(options.distro)
    if options.ground_truth:
        require_vision_msgs(ts)
    storage = StoragePlugin.MCAP if options.storage == "mcap" else StoragePlugin.SQLITE3
    writer = Writer(bag_path, version=BAG_VERSIONS[options.distro], storage_plugin=storage)
    if options.compression == "zstd":
        mode = CompressionMode.STORAGE if options.storage == "mcap" else CompressionMode.MESSAGE
        writer.set_compression(mode, CompressionFormat.ZSTD)
    writer.set_custom_data("imkd.source", f"nuScenes {nusc.version} {plan.scene['name']}")
    writer.set_custom_data("imkd.keyframes", json.dumps({str(k): v for k, v in plan.keyframes.items()}))
    serialize = ts.serialize_cdr

    # Offered QoS: /tf_static reliable + transient local (depth 1), as tf2's static broadcaster;
    # the other topics carry none, so players use their default (reliable, volatile), which
    # matches both reliable and best-effort subscribers.
    topics: dict[str, tuple[str, str, list]] = {
        "tf_static": (TOPICS["tf_static"], TF_TYPE, [_qos("transient_local", 1)]),
        "tf": (TOPICS["tf"], TF_TYPE, []),
        "odom": (TOPICS["odom"], ODOM_TYPE, [])}
    for ch, modality in plan.channels.items():
        if modality == "camera":
            topics[ch] = (image_topic(ch), IMAGE_TYPE, [])
            topics[f"{ch}/camera_info"] = (camera_info_topic(ch), CAMERA_INFO_TYPE, [])
        elif modality == "radar" or (modality == "lidar" and options.lidar):
            topics[ch] = (points_topic(ch), POINTS_TYPE, [])
    if options.ground_truth:
        topics["gt_detections"] = (TOPICS["gt_detections"], DETECTIONS_TYPE, [])
        topics["gt_markers"] = (TOPICS["gt_markers"], MARKERS_TYPE, [])
    t_pose = time.perf_counter()
    tf_rows, odom_rows = pose_messages(ts, plan.pose_stamps, plan.pose_positions, plan.pose_rotations,
                                       plan.pose_linear, plan.pose_angular)
    stats.timings["tf_odom"] = time.perf_counter() - t_pose

    bar = tqdm(total=len(plan.events), desc=plan.scene["name"], unit="msg", disable=not options.progress,
               mininterval=0.5, leave=False, file=sys.stderr)
    with writer:
        conns = {key: writer.add_connection(topic, typ, typestore=ts, offered_qos_profiles=qos)
                 for key, (topic, typ, qos) in topics.items()}

        def put(key: str, stamp: int, msg: Any, typ: str) -> None:
            writer.write(conns[key], stamp, serialize(msg, typ))

        gt_checked = False
        checked: set[str] = set()
        timings = stats.timings
        stage = ("tf_static", "tf_odom", "sensor", "ground_truth")
        clock = time.perf_counter
        for ev in plan.events:
            t_ev = clock()
            bar.update()
            if ev.kind == _TF_STATIC:
                tfs = [transform_stamped(ts, ev.stamp, MAP_FRAME, ODOM_FRAME, (0, 0, 0), (1, 0, 0, 0))]
                tfs += [transform_stamped(ts, ev.stamp, BASE_FRAME, sensor_frame(ch), cs["translation"],
                                          cs["rotation"]) for ch, cs in plan.calib.items()]
                put("tf_static", ev.stamp, tf_msg(ts, tfs), TF_TYPE)
            elif ev.kind == _POSE:
                writer.write(conns["tf"], ev.stamp, tf_rows[ev.seq].data)
                writer.write(conns["odom"], ev.stamp, odom_rows[ev.seq].data)
            elif ev.kind == _SENSOR:
                ch, modality, path, rec = ev.ref
                try:
                    frame = sensor_frame(ch)
                    if modality == "camera":
                        k = np.asarray(plan.calib[ch]["camera_intrinsic"], np.float64)
                        if k.shape != (3, 3):
                            raise CorruptInputError(f"calibrated_sensor of {ch} has no 3x3 camera_intrinsic")
                        blob, size, width, height = image_file_cdr(ts, ev.stamp, frame, path)
                        info = serialize(camera_info_msg(ts, ev.stamp, frame, k, width, height), CAMERA_INFO_TYPE)
                        writer.write(conns[ch], ev.stamp, blob)
                        writer.write(conns[f"{ch}/camera_info"], ev.stamp, info)
                    elif modality == "radar":
                        raw = path.read_bytes()
                        size = len(raw)
                        blob = radar_pcd_cdr(ts, ev.stamp, frame, raw)
                        writer.write(conns[ch], ev.stamp, blob)
                    else:  # lidar
                        blob, size = lidar_file_cdr(ts, ev.stamp, frame, path)
                        writer.write(conns[ch], ev.stamp, blob)
                    stats.input_bytes += size
                    if modality not in checked:  # the one-copy encoders against rosbags, once per bag
                        _check_sensor_cdr(ts, modality, ev.stamp, frame, path.read_bytes(), blob)
                        checked.add(modality)
                except (CorruptInputError, OSError) as exc:
                    reason = exc.reason if isinstance(exc, CorruptInputError) else f"unreadable ({exc})"
                    err = CorruptInputError(reason, path)
                    if options.on_corrupt == "stop":
                        raise err from None
                    stats.corrupt.append(str(path))
                    _warn(f"[nuscenes_to_bag] corrupt input skipped: {path}: {reason}")
            elif ev.kind == _GT:
                sample_token, ref = ev.ref
                boxes, names, ids = sample_ground_truth(nusc, sample_token, ref)
                dets = detection_array_cdr(ev.stamp, boxes, names, ids=ids)
                marks = markers_cdr(ts, ev.stamp, boxes, names)
                if not gt_checked:  # the fast encoders against rosbags' serialiser, once per bag
                    slow_dets = ts.serialize_cdr(detection_array_msg(ts, ev.stamp, boxes, names, ids=ids),
                                                 DETECTIONS_TYPE)
                    slow_marks = ts.serialize_cdr(markers_msg(ts, ev.stamp, boxes, names), MARKERS_TYPE)
                    if bytes(slow_dets) != dets or bytes(slow_marks) != marks:
                        raise AssertionError("fast ground-truth CDR differs from rosbags' serialiser")
                    gt_checked = True
                writer.write(conns["gt_detections"], ev.stamp, dets)
                writer.write(conns["gt_markers"], ev.stamp, marks)
            key = ev.ref[1] if ev.kind == _SENSOR else stage[ev.kind]
            timings[key] = timings.get(key, 0.0) + clock() - t_ev
        t_close = clock()
        bar.close()
        stats.messages = {topics[key][0]: writer.counts[c.id] for key, c in conns.items()}
    timings["close"] = clock() - t_close


def bag_dir(out_dir: str | os.PathLike, scene_name: str) -> Path:
    """`<out_dir>/<scene_name>`, refusing a scene name (from scene.json) that is not one plain folder
    name: with '/', '..' or a NUL it would put the bag (and its .partial) outside --out."""
    if (not scene_name or scene_name in (".", "..") or "/" in scene_name or "\\" in scene_name
            or "\0" in scene_name):
        raise UnsafeSceneNameError(f"scene name {scene_name!r} in scene.json is not a plain folder name "
                                   "(empty, '.', '..', or holding '/', '\\' or NUL); refused, nothing written")
    return Path(out_dir) / scene_name


def convert_scene(nusc: Any, scene_name: str, out_dir: str | os.PathLike,
                  options: ConvertOptions | None = None) -> ConversionStats:
    """Convert one scene of a loaded `NuScenes` into the bag `<out_dir>/<scene_name>`.

    The bag is written under `<out_dir>/<scene_name>.partial/` and moved into place only when
    complete. Raises CorruptInputError (with `.path`) under on_corrupt="stop"; an existing bag
    is left alone (status "exists") unless options.overwrite.
    """
    options = options or ConvertOptions()
    start = time.perf_counter()
    out = Path(out_dir)
    final = bag_dir(out, scene_name)
    stats = ConversionStats(scene=scene_name, bag=final)
    if final.exists() and not options.overwrite:
        stats.status = "exists"
        return stats
    plan = plan_scene(nusc, scene_name, options)
    stats.missing = dict(plan.missing)
    stats.refused = list(plan.refused)
    stats.timings["plan"] = time.perf_counter() - start
    partial = out / f"{scene_name}.partial"
    if partial.exists():
        shutil.rmtree(partial)  # a stale one from an interrupted run
    partial.mkdir(parents=True)
    try:
        bag_tmp = partial / scene_name
        _write_bag(nusc, plan, bag_tmp, options, stats)
        if options.fsync:
            t_sync = time.perf_counter()
            _fsync_tree(bag_tmp)
            stats.timings["fsync"] = time.perf_counter() - t_sync
        old = None
        if final.exists():  # --overwrite: keep the old bag until the new one is in place
            old = out / f"{scene_name}.old.partial"
            if old.exists():
                shutil.rmtree(old)
            os.rename(final, old)
        os.rename(bag_tmp, final)
        if old is not None:
            shutil.rmtree(old)
        partial.rmdir()
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    stats.output_bytes = sum(f.stat().st_size for f in final.rglob("*") if f.is_file())
    stats.seconds = time.perf_counter() - start
    return stats


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------

_NUSC: Any = None  # the devkit handle shared with forked workers


def load_nuscenes(dataroot: str | os.PathLike, version: str) -> Any:
    """NuScenes(version, dataroot) through `imkd_core.data.nuscenes.load_nuscenes`: a missing
    folder or table, a table that is not valid JSON (named) or a dangling reference is a clear
    error (FileNotFoundError / NuScenesDataError)."""
    from imkd_core.data.nuscenes import load_nuscenes as load

    return load(str(dataroot), version)


def _worker(scene: str, out_dir: str, options: ConvertOptions) -> ConversionStats:
    return convert_scene(_NUSC, scene, out_dir, options)


def _parse_scenes(values: Sequence[str], nusc: Any) -> list[str]:
    names = [n for v in values for n in v.split(",") if n]
    if names == ["all"]:
        return [s["name"] for s in nusc.scene]
    known = {s["name"] for s in nusc.scene}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown scene(s) {unknown} in {nusc.version}; available: {sorted(known)}")
    return list(dict.fromkeys(names))


def format_summary(results: Iterable[ConversionStats]) -> str:
    """A table of the converted scenes and the missing/corrupt files per channel."""
    results = list(results)
    lines = [f"{'scene':<14} {'status':<7} {'msgs':>7} {'in MB':>8} {'out MB':>8} {'s':>7} {'MB/s':>7}  bag"]
    missing: Counter = Counter()
    corrupt: list[str] = []
    for r in results:
        lines.append(f"{r.scene:<14} {r.status:<7} {r.total_messages:>7} {r.input_bytes / 1e6:>8.1f} "
                     f"{r.output_bytes / 1e6:>8.1f} {r.seconds:>7.2f} {r.mb_per_s:>7.1f}  {r.bag or ''}"
                     + (f"  ({r.error})" if r.error else ""))
        missing.update(r.missing)
        corrupt += r.corrupt
    if missing:
        lines.append("missing files (listed in sample_data, absent on disk; skipped): "
                     + ", ".join(f"{ch} {n}" for ch, n in sorted(missing.items())))
    elif any(r.status == "ok" for r in results):
        lines.append("missing files: none")
    if corrupt:
        lines.append(f"corrupt files skipped ({len(corrupt)}):")
        lines += [f"  {p}" for p in corrupt]
    refused = [x for r in results for x in r.refused]
    if refused:
        lines.append(f"sample_data records skipped, no usable filename ({len(refused)}):")
        lines += [f"  {x}" for x in refused]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="imkd-nuscenes-to-bag", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataroot", required=True, help="nuScenes root (holds <version>/, samples/, sweeps/)")
    p.add_argument("--version", default="v1.0-mini", help="table folder, e.g. v1.0-mini, v1.0-trainval")
    p.add_argument("--scenes", nargs="+", default=["all"], help="scene names (space/comma separated) or 'all'")
    p.add_argument("--out", required=True, help="output directory; one bag folder per scene")
    p.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    p.add_argument("--distro", choices=tuple(BAG_VERSIONS), default=DEFAULT_DISTRO,
                   help="humble: bag v8, plays on Humble and Jazzy (default); jazzy: bag v9, Jazzy+ only")
    p.add_argument("--compression", choices=("none", "zstd"), default="none")
    p.add_argument("--no-lidar", action="store_true", help="leave out LIDAR_TOP point clouds")
    p.add_argument("--no-gt", action="store_true", help="leave out ground-truth detections and markers")
    p.add_argument("--jobs", type=int, default=1, help="scenes converted in parallel processes")
    p.add_argument("--on-corrupt", choices=("skip", "stop"), default="skip",
                   help="a corrupt input file is reported and skipped, or stops the run (exit 2)")
    p.add_argument("--overwrite", action="store_true", help="replace existing bags")
    p.add_argument("--no-fsync", action="store_true", help="skip fsync before the final rename (faster, "
                   "still atomic against a killed process, not against a power loss)")
    p.add_argument("--no-progress", action="store_true")
    return p


@cli_main(also=(ValueError,), prog="imkd-nuscenes-to-bag")
def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: 0 on success, 1 when a scene failed, 2 on a user error (one line: bad flags,
    missing/broken tables, an unwritable --out) or when stopped by a corrupt input."""
    global _NUSC
    args = build_parser().parse_args(argv)
    options = ConvertOptions(storage=args.storage, distro=args.distro, compression=args.compression,
                             lidar=not args.no_lidar, ground_truth=not args.no_gt,
                             on_corrupt=args.on_corrupt, overwrite=args.overwrite, fsync=not args.no_fsync,
                             progress=not args.no_progress and args.jobs <= 1)
    if options.ground_truth:
        require_vision_msgs(get_typestore(options.distro))  # fail early, before loading tables
    writable_dir(args.out)
    t0 = time.perf_counter()
    _NUSC = load_nuscenes(args.dataroot, args.version)
    scenes = _parse_scenes(args.scenes, _NUSC)
    print(f"[nuscenes_to_bag] {len(scenes)} scene(s) of {args.version} -> {args.out} "
          f"({options.storage}, bag v{BAG_VERSIONS[options.distro]}/{options.distro}, "
          f"loaded tables in {time.perf_counter() - t0:.1f} s)", file=sys.stderr)
    results: list[ConversionStats] = []
    rc = 0
    try:
        if args.jobs <= 1 or len(scenes) == 1:
            for scene in scenes:
                results.append(_convert_reporting(scene, args.out, options))
        else:
            from tqdm import tqdm
            ctx = mp.get_context("fork")  # workers inherit the loaded tables
            with ProcessPoolExecutor(max_workers=args.jobs, mp_context=ctx) as pool:
                futures = {pool.submit(_worker, s, args.out, options): s for s in scenes}
                try:
                    for fut in tqdm(as_completed(futures), total=len(futures), desc="scenes", unit="scene",
                                    disable=args.no_progress, file=sys.stderr):
                        results.append(_result_of(fut.result, futures[fut]))
                except CorruptInputError:
                    pool.shutdown(wait=True, cancel_futures=True)
                    done = {r.scene for r in results}
                    results += [f.result() for f, s in futures.items()  # scenes that finished meanwhile
                                if s not in done and f.done() and not f.cancelled() and f.exception() is None]
                    raise
    except CorruptInputError as exc:
        print(f"[nuscenes_to_bag] corrupt input, stopping (--on-corrupt stop): {exc}", file=sys.stderr)
        rc = 2
    except KeyboardInterrupt:
        print("[nuscenes_to_bag] interrupted; unfinished bags removed", file=sys.stderr)
        return 130
    results.sort(key=lambda r: scenes.index(r.scene))
    print(format_summary(results))
    if any(r.status == "exists" for r in results):
        print("[nuscenes_to_bag] existing bags were kept (use --overwrite to replace them)", file=sys.stderr)
    if rc == 0 and any(r.status == "failed" for r in results):
        rc = 1
    return rc


def _result_of(call: Any, scene: str) -> ConversionStats:
    """Run `call()`; a non-corrupt-input exception becomes a failed ConversionStats."""
    try:
        return call()
    except CorruptInputError:
        raise
    except Exception as exc:  # noqa: BLE001 - reported per scene, the run goes on
        print(f"[nuscenes_to_bag] {scene} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return ConversionStats(scene=scene, bag=None, status="failed", error=f"{type(exc).__name__}: {exc}")


def _convert_reporting(scene: str, out_dir: str, options: ConvertOptions) -> ConversionStats:
    return _result_of(lambda: convert_scene(_NUSC, scene, out_dir, options), scene)


if __name__ == "__main__":
    sys.exit(main())
