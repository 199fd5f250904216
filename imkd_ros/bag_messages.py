"""rosbag2 message building and wire format for the nuScenes bag converter (rosbags; no rclpy).

The pure `*_msg` builders return rosbags message objects (serialise with ts.serialize_cdr): they
are the reference. The `*_cdr` encoders write the heavy and the numerous messages without
building objects, through imkd_ros.cdr, byte-identical to those builders: files are read
straight into the final CDR buffer (JPEG, LiDAR; one copy), /tf and /odom for all poses are
one numpy fill (`pose_messages`), ground-truth markers a struct-compiled layout (`markers_cdr`),
ground-truth Detection3DArrays the node's own writer (`imkd_ros.cdr.detection_array_cdr`).
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from imkd_core.frame import CLASS_COLORS, CLASSES
from imkd_core.pcd import PcdCloud, PcdError, parse_pcd
from imkd_ros import cdr, image_header
from imkd_ros.topics import (
    BASE_FRAME,
    CAMERA_INFO_TYPE,
    DETECTIONS_TYPE,
    IMAGE_TYPE,
    MARKERS_TYPE,
    ODOM_FRAME,
    ODOM_TYPE,
    POINTS_TYPE,
    TF_TYPE,
)

# rosbag2 metadata version and typestore per target distro (docs/design.md, "Bags for Humble and Jazzy").
BAG_VERSIONS: dict[str, int] = {"humble": 8, "jazzy": 9}
DEFAULT_DISTRO = "humble"


class CorruptInputError(ValueError):
    """An input file that exists but cannot be converted; `path` names it once known."""

    def __init__(self, reason: str, path: str | os.PathLike | None = None) -> None:
        self.reason = reason
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {reason}" if self.path else reason)

    def __reduce__(self) -> tuple:  # keep reason and path across process boundaries (--jobs)
        return (type(self), (self.reason, self.path))


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
    if int(ekind) == 1 and esub[0] in cdr.NUMPY_TYPES:
        return np.zeros(length if kind == 3 else 0, dtype=cdr.NUMPY_TYPES[esub[0]])
    return [_default_value(ts, (ekind, esub)) for _ in range(length if kind == 3 else 0)]



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
    tf_rows = cdr.serialize_many(ts, tf_tmpl, TF_TYPE, {
        **_stamp_columns(tr + "header.stamp.", stamps_ns),
        **{f"{tr}transform.translation.{a}": p[:, i] for i, a in enumerate("xyz")},
        **{f"{tr}transform.rotation.{a}": q[:, i] for i, a in enumerate("wxyz")}})
    od_tmpl = odometry_msg(ts, 0, (0, 0, 0), (1, 0, 0, 0), (0, 0, 0), (0, 0, 0))
    odom_rows = cdr.serialize_many(ts, od_tmpl, ODOM_TYPE, {
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
# File parsers
# ----------------------------------------------------------------------------------------------


def jpeg_size(buf: bytes | bytearray | memoryview) -> tuple[int, int]:
    """(width, height) from a JPEG's SOF marker (imkd_ros.image_header); CorruptInputError if it
    is no complete JPEG."""
    try:
        h, w = image_header.jpeg_size(memoryview(buf).cast("B"))
    except image_header.ImageHeaderError as e:
        raise CorruptInputError(str(e)) from e
    return w, h



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


def radar_pcd_cloud(pcd_raw: bytes) -> tuple[list[tuple[str, int, int, int]], PcdCloud, bool]:
    """A nuScenes radar PCD file -> (PointFields as (name, offset, datatype, count), the parsed
    imkd_core.pcd.PcdCloud, is_dense); CorruptInputError if it is no readable binary PCD or has a
    type PointField lacks."""
    try:
        pcd = parse_pcd(pcd_raw)
    except PcdError as e:
        raise CorruptInputError(str(e)) from None
    fields = []
    for name in pcd.dtype.names:
        ft, offset = pcd.dtype.fields[name][:2]
        key = (ft.base.kind, ft.base.itemsize)
        if key not in _POINTFIELD_TYPES:
            raise CorruptInputError(f"unsupported PCD field type {ft.base} of {name!r}")
        fields.append((name, offset, _POINTFIELD_TYPES[key], int(np.prod(ft.shape)) if ft.shape else 1))
    arr = pcd.array()
    dense = bool(all(np.isfinite(arr[n]).all() for n in ("x", "y", "z") if n in arr.dtype.names))
    return fields, pcd, dense


def radar_pointcloud2_msg(ts: Any, stamp_ns: int, frame_id: str, pcd_raw: bytes) -> Any:
    """PointCloud2 with every field and point of a nuScenes radar PCD, payload byte for byte."""
    fields, pcd, dense = radar_pcd_cloud(pcd_raw)
    return pointcloud2_msg(ts, stamp_ns, frame_id, fields, pcd.point_step, pcd.width, pcd.height, pcd.data, dense)


def lidar_pointcloud2_msg(ts: Any, stamp_ns: int, frame_id: str, bin_raw: bytes) -> Any:
    """PointCloud2 (x, y, z, intensity float32, ring uint16) of a nuScenes LiDAR .bin."""
    pts = lidar_points(bin_raw)
    dense = bool(np.isfinite(np.frombuffer(bin_raw, dtype="<f4")).all())  # conservative: all 5 values
    return pointcloud2_msg(ts, stamp_ns, frame_id, _LIDAR_FIELDS, LIDAR_DTYPE.itemsize, len(pts), 1,
                           pts.view(np.uint8), dense)


# Serialised sensor messages with one copy of the payload (file -> final CDR buffer); each is
# byte-identical to ts.serialize_cdr of the corresponding *_msg builder above.
# PointField datatype of each (numpy kind, itemsize)
_POINTFIELD_TYPES = {("i", 1): 1, ("u", 1): 2, ("i", 2): 3, ("u", 2): 4, ("i", 4): 5, ("u", 4): 6, ("f", 4): 7,
                     ("f", 8): 8}
_PAYLOAD_TAIL = {IMAGE_TYPE: 0, POINTS_TYPE: 1}  # bytes after `data` (PointCloud2: is_dense)


def _payload_frame(ts: Any, msg: Any, typename: str, n: int) -> tuple[bytearray, int]:
    """CDR buffer of `msg` (whose `data` is empty) grown by n payload bytes; returns (buffer,
    payload offset); the caller fills buffer[offset:offset + n]."""
    return cdr.with_payload(ts.serialize_cdr(msg, typename), _PAYLOAD_TAIL[typename], n)


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
    fields, pcd, dense = radar_pcd_cloud(pcd_raw)
    msg = pointcloud2_msg(ts, stamp_ns, frame_id, fields, pcd.point_step, pcd.width, pcd.height, b"", dense)
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


_COLOR_OF = {name: tuple(CLASS_COLORS[i].tolist()) for i, name in enumerate(CLASSES)}


def _class_color(name: str) -> tuple[float, float, float]:
    return _COLOR_OF.get(str(name), (0.5, 0.5, 0.5))


def markers_msg(ts: Any, stamp_ns: int, boxes: np.ndarray, class_names: Sequence[str],
                frame_id: str = BASE_FRAME, ns: str = "ground_truth", alpha: float = 0.4) -> Any:
    """visualization_msgs/MarkerArray: DELETEALL, then a CUBE per box and an ARROW per velocity."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 9)
    m = "visualization_msgs/msg/Marker"
    g = "geometry_msgs/msg/"
    const = ts.types[m]
    markers = [default_msg(ts, m, header=_header(ts, stamp_ns, frame_id), ns=ns, action=const.DELETEALL)]
    for i, b in enumerate(boxes):
        r, gg, bb = _class_color(class_names[i])
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
# Ground-truth markers without message objects (imkd_ros.cdr.CdrPacker, ~10x faster)
# ----------------------------------------------------------------------------------------------

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
    parts = [cdr.CDR_HEADER]
    pos = cdr.sequence_start(parts, 0, 1 + 2 * len(boxes))
    sec, nsec = int(stamp_ns // 1_000_000_000), int(stamp_ns % 1_000_000_000)
    p = cdr.packer(ts, m, key + ("deleteall",), pos % 8,
                   lambda: markers_msg(ts, 0, np.zeros((0, 9)), [], frame_id, ns, alpha).markers[0])
    parts.append(p.pack_at(p.indices(_CUBE_PATHS[:2]), (sec, nsec)))
    pos += len(parts[-1])
    one = np.zeros((1, 9))
    alpha = float(alpha)

    def cube() -> Any:
        return markers_msg(ts, 0, one, ["car"], frame_id, ns).markers[1]

    def arrow() -> Any:
        return markers_msg(ts, 0, one, ["car"], frame_id, ns).markers[2]

    for i, (x, y, z, l, w, h, yaw, vx, vy) in enumerate(boxes.tolist()):
        r, g, b = _class_color(class_names[i])
        p = cdr.packer(ts, m, key + ("cube",), pos % 8, cube)
        parts.append(p.pack_at(p.indices(_CUBE_PATHS), (sec, nsec, 2 * i, x, y, z, math.sin(yaw / 2),
                                                        math.cos(yaw / 2), l, w, h, r, g, b, alpha)))
        pos += len(parts[-1])
        p = cdr.packer(ts, m, key + ("arrow",), pos % 8, arrow)
        parts.append(p.pack_at(p.indices(_ARROW_PATHS), (sec, nsec, 2 * i + 1, x, y, z, x + vx, y + vy, z,
                                                         r, g, b, alpha)))
        pos += len(parts[-1])
    return b"".join(parts)



def check_sensor_cdr(ts: Any, modality: str, stamp: int, frame: str, raw: bytes, blob: bytes | bytearray) -> None:
    """Assert that a fast-path sensor message equals rosbags' serialisation of its builder."""
    if modality == "camera":
        ref = ts.serialize_cdr(compressed_image_msg(ts, stamp, frame, raw), IMAGE_TYPE)
    elif modality == "radar":
        ref = ts.serialize_cdr(radar_pointcloud2_msg(ts, stamp, frame, raw), POINTS_TYPE)
    else:
        ref = ts.serialize_cdr(lidar_pointcloud2_msg(ts, stamp, frame, raw), POINTS_TYPE)
    if bytes(ref) != bytes(blob):
        raise AssertionError(f"fast {modality} CDR differs from rosbags' serialiser")


def check_markers_cdr(ts: Any, stamp: int, boxes: np.ndarray, class_names: Sequence[str], blob: bytes) -> None:
    """Assert that markers_cdr's bytes equal rosbags' serialisation of markers_msg."""
    if bytes(ts.serialize_cdr(markers_msg(ts, stamp, boxes, class_names), MARKERS_TYPE)) != blob:
        raise AssertionError("fast ground-truth marker CDR differs from rosbags' serialiser")
