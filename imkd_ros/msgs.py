"""ROS 2 message <-> numpy conversions used by the node, the bag tools and the tests.

Everything here is vectorised (numpy over all points/pixels; Python loops only over message
fields or over boxes where rclpy needs one message object per box) and raises `MessageError`
(a ValueError) with a message that says what was wrong, so the node can log, count and drop bad
input instead of crashing.

Readers are duck-typed: they accept rclpy messages and also messages deserialised by `rosbags`
(same field names). Builders return rclpy messages.

Images: raw `Image` decoding is numpy + cv2 rather than `cv_bridge.imgmsg_to_cv2`, because the
PyPI cv-bridge port (1.13.0.post0) ignores `step` (row padding), maps 16UC* to 8-bit types and
does no size checks; the tests use cv_bridge as the reference where it is correct (unpadded
rgb8/bgr8/mono8). Compressed images go through `imkd_core.preprocess.decode_image`, the one
JPEG/PNG decoder of the project, so the node decodes exactly like the offline pipeline.

Conventions: REP-103 (x forward, y left, z up, metres, radians), quaternions (x, y, z, w),
stamps as int nanoseconds, 4x4 homogeneous transforms mapping child-frame points into the parent
frame (the TF convention: `header.frame_id` = parent, `child_frame_id` = child).
"""

from __future__ import annotations

import array
import math
from collections.abc import Iterable, Sequence
from typing import Any

import cv2
import numpy as np
from builtin_interfaces.msg import Duration, Time
from geometry_msgs.msg import (
    Point,
    Pose,
    PoseWithCovariance,
    Quaternion,
    Transform,
    TransformStamped,
    Vector3,
)
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField
from std_msgs.msg import ColorRGBA, Header
from tf2_msgs.msg import TFMessage
from vision_msgs.msg import (
    BoundingBox3D,
    Detection3D,
    Detection3DArray,
    ObjectHypothesis,
    ObjectHypothesisWithPose,
)
from visualization_msgs.msg import Marker, MarkerArray

from imkd_core.frame import CLASS_COLORS, CLASSES, Detections
from imkd_core.geometry import matrix_to_quat_xyzw, quat_xyzw_to_matrix, quat_xyzw_yaw, yaw_to_quat_xyzw
from imkd_core.radar import RADAR_PCD_FIELDS
from imkd_ros.cdr import detection_array_cdr

__all__ = [
    "MessageError",
    "stamp_to_ns", "ns_to_stamp", "make_header",
    "image_to_rgb", "rgb_to_image", "compressed_to_rgb", "rgb_to_compressed", "bytes_to_compressed",
    "msg_to_rgb",
    "pointcloud2_to_array", "array_to_pointcloud2", "pointcloud2_fields", "radar_points",
    "camera_info_to_K", "camera_info_image_size", "K_to_camera_info", "image_dimensions",
    "quaternion_to_matrix", "matrix_to_quaternion",
    "transform_to_matrix", "matrix_to_transform", "tf_message_to_list", "transforms_to_tf_message",
    "detections_to_msg", "detections_to_cdr", "detections_to_attributes", "attributes_to_array", "ATTRIBUTE_DTYPE",
    "detection_ids", "msg_to_detections", "detections_to_markers", "box_corners",
]

_NS = 1_000_000_000
_NATIVE = "<" if np.little_endian else ">"


class MessageError(ValueError):
    """A ROS message (or a value to be put in one) is malformed or unsupported."""


def _u8(data: Any, what: str) -> np.ndarray:
    """A zero-copy uint8 view of a message byte field (array.array, bytes, numpy, memoryview)."""
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8:
            raise MessageError(f"{what}: expected uint8 data, got {data.dtype}")
        return data.reshape(-1)
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except TypeError:
        try:  # a plain list of ints (slow path, only for hand-made messages)
            return np.asarray(data, dtype=np.uint8).reshape(-1)
        except (TypeError, ValueError) as e:
            raise MessageError(f"{what}: data is not a byte buffer ({type(data).__name__})") from e


def _byte_array(buf: bytes | bytearray | memoryview | np.ndarray) -> array.array:
    """Bytes -> array.array('B'), the type rclpy stores uint8[] in (skips its per-byte checks)."""
    out = array.array("B")
    if isinstance(buf, np.ndarray):  # any dtype (structured clouds too): its raw bytes, one copy
        buf = np.ascontiguousarray(buf).reshape(-1).view(np.uint8)
    out.frombytes(buf)
    return out


# ============================================================================ stamps
def stamp_to_ns(stamp: Any) -> int:
    """builtin_interfaces/Time -> int nanoseconds."""
    return int(stamp.sec) * _NS + int(stamp.nanosec)


def ns_to_stamp(ns: int) -> Time:
    """int nanoseconds -> builtin_interfaces/Time (nanosec always in [0, 1e9))."""
    if isinstance(ns, (bool, float)) or not isinstance(ns, (int, np.integer)):
        raise MessageError(f"stamp must be integer nanoseconds, got {type(ns).__name__} {ns!r}")
    sec, nsec = divmod(int(ns), _NS)
    if not -(2**31) <= sec < 2**31:
        raise MessageError(f"stamp {ns} ns does not fit builtin_interfaces/Time (int32 seconds)")
    return Time(sec=sec, nanosec=nsec)


def make_header(stamp_ns: int, frame_id: str) -> Header:
    """std_msgs/Header from int ns and a frame id."""
    return Header(stamp=ns_to_stamp(stamp_ns), frame_id=str(frame_id))


def _duration(seconds: float) -> Duration:
    if not math.isfinite(seconds) or seconds < 0:
        raise MessageError(f"duration must be finite and >= 0 s, got {seconds}")
    sec, nsec = divmod(round(seconds * _NS), _NS)
    return Duration(sec=int(sec), nanosec=int(nsec))


# ============================================================================ images
# encoding -> (dtype, channels) for raw sensor_msgs/Image.
_IMAGE_ENCODINGS: dict[str, tuple[str, int]] = {
    "rgb8": ("u1", 3), "bgr8": ("u1", 3), "rgba8": ("u1", 4), "bgra8": ("u1", 4), "mono8": ("u1", 1),
    "8UC1": ("u1", 1), "8UC3": ("u1", 3),
    "rgb16": ("u2", 3), "bgr16": ("u2", 3), "rgba16": ("u2", 4), "bgra16": ("u2", 4), "mono16": ("u2", 1),
}
# cv2 conversion to RGB of the decoded (H, W, C) array (None: already RGB).
_TO_RGB: dict[str, int | None] = {
    "rgb8": None, "rgb16": None, "bgr8": cv2.COLOR_BGR2RGB, "bgr16": cv2.COLOR_BGR2RGB, "8UC3": cv2.COLOR_BGR2RGB,
    "rgba8": cv2.COLOR_RGBA2RGB, "rgba16": cv2.COLOR_RGBA2RGB, "bgra8": cv2.COLOR_BGRA2RGB,
    "bgra16": cv2.COLOR_BGRA2RGB, "mono8": cv2.COLOR_GRAY2RGB, "mono16": cv2.COLOR_GRAY2RGB,
    "8UC1": cv2.COLOR_GRAY2RGB,
}


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise MessageError(f"expected a non-empty H x W x 3 uint8 RGB image, got {rgb.shape} {rgb.dtype}")
    return rgb


def image_to_rgb(msg: Any) -> np.ndarray:
    """sensor_msgs/Image -> H x W x 3 uint8 RGB (a copy).

    Encodings: rgb8, bgr8, rgba8, bgra8, mono8, 8UC1, 8UC3 (OpenCV's BGR), and their 16-bit
    variants (reduced to 8 bit by the high byte). Honours `step` (row padding) and
    `is_bigendian`; raises MessageError on an unknown encoding or a data size that does not
    match height * step.
    """
    enc = str(msg.encoding)
    if enc not in _IMAGE_ENCODINGS:
        raise MessageError(f"unsupported image encoding {enc!r}; supported: {', '.join(_IMAGE_ENCODINGS)}")
    base, ch = _IMAGE_ENCODINGS[enc]
    dt = np.dtype(base).newbyteorder(">" if msg.is_bigendian else "<")
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h == 0 or w == 0:
        raise MessageError(f"empty image ({w} x {h})")
    row = w * ch * dt.itemsize
    if step < row:
        raise MessageError(f"image step {step} < width * bytes per pixel = {w} * {ch * dt.itemsize} = {row}")
    buf = _u8(msg.data, "Image")
    if buf.size != h * step:
        kind = "truncated" if buf.size < h * step else "has extra bytes"
        raise MessageError(f"Image data {kind}: {buf.size} bytes, expected height * step = {h} * {step} = {h * step}")
    img = buf.reshape(h, step)[:, :row].view(dt).reshape(h, w, ch)
    if dt.itemsize == 2:
        img = (img >> 8).astype(np.uint8)
    code = _TO_RGB[enc]
    # Always a new array: the result must not alias the message's buffer. cv2 takes padded rows.
    return np.array(img, order="C") if code is None else cv2.cvtColor(img, code)


def rgb_to_image(rgb: np.ndarray, stamp_ns: int = 0, frame_id: str = "", encoding: str = "rgb8") -> Image:
    """H x W x 3 uint8 RGB -> sensor_msgs/Image in rgb8, bgr8 or mono8 (tightly packed)."""
    rgb = _check_rgb(rgb)
    if encoding == "rgb8":
        out = np.ascontiguousarray(rgb)
    elif encoding == "bgr8":
        out = np.ascontiguousarray(rgb[..., ::-1])
    elif encoding == "mono8":
        out = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    else:
        raise MessageError(f"rgb_to_image: encoding must be rgb8, bgr8 or mono8, got {encoding!r}")
    h, w = rgb.shape[:2]
    msg = Image(header=make_header(stamp_ns, frame_id), height=h, width=w, encoding=encoding,
                is_bigendian=0, step=out.strides[0])
    msg.data = _byte_array(out)
    return msg


def _check_compressed_format(msg: Any) -> None:
    fmt = str(msg.format).lower()
    if "compresseddepth" in fmt:
        raise MessageError(f"CompressedImage format {msg.format!r} is a depth image, not a colour image")
    if fmt and not any(k in fmt for k in ("jpeg", "jpg", "png")):
        raise MessageError(f"unsupported CompressedImage format {msg.format!r} (expected jpeg or png)")


def image_dimensions(msg: Any) -> tuple[int, int]:
    """(height, width) of an Image or CompressedImage without decoding: a JPEG's frame header or
    a PNG's IHDR (imkd_ros.image_header, microseconds), a raw Image's fields. MessageError worded
    like msg_to_rgb's (unsupported format, or bytes that are no readable JPEG/PNG)."""
    if not hasattr(msg, "format"):
        return int(msg.height), int(msg.width)
    from imkd_ros.image_header import ImageHeaderError, image_size

    _check_compressed_format(msg)
    buf = _u8(msg.data, "CompressedImage")
    try:
        return image_size(buf)
    except ImageHeaderError as e:
        raise MessageError(f"CompressedImage ({msg.format!r}, {buf.size} bytes): {e}") from e


def compressed_to_rgb(msg: Any, reduction: int = 1) -> np.ndarray:
    """sensor_msgs/CompressedImage (JPEG or PNG) -> H x W x 3 uint8 RGB.

    `reduction` in (1, 2, 4, 8) decodes a JPEG at 1/reduction scale in the DCT (much faster
    than decoding fully and resizing; see imkd_core.preprocess.jpeg_reduction), giving
    ceil(H / r) x ceil(W / r); scale the intrinsics to match (camera_info_to_K(image_hw=...)).
    """
    from imkd_core.preprocess import decode_image  # lazy: pulls in torch

    _check_compressed_format(msg)
    buf = _u8(msg.data, "CompressedImage")
    try:
        return decode_image(buf, reduction)
    except ValueError as e:
        raise MessageError(f"CompressedImage ({msg.format!r}, {buf.size} bytes): {e}") from e


def rgb_to_compressed(rgb: np.ndarray, stamp_ns: int = 0, frame_id: str = "", fmt: str = "jpeg",
                      quality: int = 95) -> CompressedImage:
    """H x W x 3 uint8 RGB -> sensor_msgs/CompressedImage, `fmt` "jpeg" or "png"."""
    rgb = _check_rgb(rgb)
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    if fmt == "jpeg":
        ok, enc = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    elif fmt == "png":
        ok, enc = cv2.imencode(".png", bgr)
    else:
        raise MessageError(f"rgb_to_compressed: fmt must be 'jpeg' or 'png', got {fmt!r}")
    if not ok:
        raise MessageError(f"cv2 could not encode a {rgb.shape} image as {fmt}")
    return bytes_to_compressed(enc, stamp_ns, frame_id, fmt)


def bytes_to_compressed(data: bytes | np.ndarray, stamp_ns: int = 0, frame_id: str = "",
                        fmt: str = "jpeg") -> CompressedImage:
    """Already-encoded bytes (e.g. an original nuScenes JPEG) -> CompressedImage, unchanged."""
    msg = CompressedImage(header=make_header(stamp_ns, frame_id), format=fmt)
    msg.data = _byte_array(data)
    return msg


def msg_to_rgb(msg: Any, reduction: int = 1) -> np.ndarray:
    """Image or CompressedImage -> RGB at 1/reduction scale (ceil sizes, as JPEG DCT scaling)."""
    if hasattr(msg, "format"):
        return compressed_to_rgb(msg, reduction)
    rgb = image_to_rgb(msg)
    if reduction == 1:
        return rgb
    if reduction not in (2, 4, 8):
        raise MessageError(f"reduction must be one of 1, 2, 4, 8, got {reduction}")
    h, w = rgb.shape[:2]
    return cv2.resize(rgb, (-(-w // reduction), -(-h // reduction)), interpolation=cv2.INTER_AREA)


# ============================================================================ PointCloud2
_PF_TO_NP: dict[int, str] = {
    PointField.INT8: "i1", PointField.UINT8: "u1", PointField.INT16: "i2", PointField.UINT16: "u2",
    PointField.INT32: "i4", PointField.UINT32: "u4", PointField.FLOAT32: "f4", PointField.FLOAT64: "f8",
}
_NP_TO_PF: dict[tuple[str, int], int] = {(np.dtype(v).kind, np.dtype(v).itemsize): k for k, v in _PF_TO_NP.items()}


def _cloud_dtypes(msg: Any) -> tuple[np.dtype, np.dtype]:
    """(wire dtype with offsets/endianness/point_step, packed native dtype) of a PointCloud2."""
    order = ">" if msg.is_bigendian else "<"
    point_step = int(msg.point_step)
    names: list[str] = []
    wire: list[Any] = []
    native: list[Any] = []
    offsets: list[int] = []
    spans: list[tuple[int, int, str]] = []
    for f in msg.fields:  # loop over fields, never over points
        name = str(f.name)
        if not name:
            raise MessageError("PointCloud2 has a field with an empty name")
        if name in names:
            raise MessageError(f"PointCloud2 field {name!r} appears twice")
        if int(f.datatype) not in _PF_TO_NP:
            raise MessageError(f"PointCloud2 field {name!r}: unknown PointField datatype {f.datatype}")
        base = np.dtype(_PF_TO_NP[int(f.datatype)])
        count = max(int(f.count), 1)  # count 0 is written by some drivers for scalars
        off = int(f.offset)
        end = off + base.itemsize * count
        if end > point_step:
            raise MessageError(f"PointCloud2 field {name!r} (offset {off}, {base.itemsize * count} bytes) "
                               f"extends beyond point_step {point_step}")
        names.append(name)
        offsets.append(off)
        spans.append((off, end, name))
        shape = () if count == 1 else (count,)
        wire.append((base.newbyteorder(order), shape) if shape else base.newbyteorder(order))
        native.append((base, shape) if shape else base)
    spans.sort()
    for (_, end_a, a), (start_b, _, b) in zip(spans, spans[1:], strict=False):
        if start_b < end_a:
            raise MessageError(f"PointCloud2 fields {a!r} and {b!r} overlap")
    wire_dt = np.dtype({"names": names, "formats": wire, "offsets": offsets, "itemsize": max(point_step, 1)})
    native_dt = np.dtype({"names": names, "formats": native})
    return wire_dt, native_dt


def pointcloud2_to_array(msg: Any, *, organized: bool = False, skip_nans: bool = False) -> np.ndarray:
    """sensor_msgs/PointCloud2 -> numpy structured array (native byte order, packed, a copy).

    Any field layout: offsets, padding inside a point (point_step) and at row ends (row_step),
    big- or little-endian, count > 1 (sub-array fields). Shape (height * width,) or, with
    `organized`, (height, width). `skip_nans` drops points whose x/y/z (or, without those, any
    float field) is NaN/inf, whatever `is_dense` claims. MessageError on truncated or oversized
    data, inconsistent steps, unknown datatypes, or overlapping fields.
    """
    h, w = int(msg.height), int(msg.width)
    point_step, row_step = int(msg.point_step), int(msg.row_step)
    wire_dt, native_dt = _cloud_dtypes(msg)
    if h * w > 0 and point_step == 0:
        raise MessageError("PointCloud2 point_step is 0")
    if h * w > 0 and not msg.fields:
        raise MessageError("PointCloud2 has points but no fields")
    if h > 0 and row_step < w * point_step:
        raise MessageError(f"PointCloud2 row_step {row_step} < width * point_step = {w} * {point_step}")
    buf = _u8(msg.data, "PointCloud2")
    expected = h * row_step
    if buf.size < expected:
        raise MessageError(f"PointCloud2 data truncated: {buf.size} bytes, expected height * row_step = "
                           f"{h} * {row_step} = {expected}")
    if buf.size > expected:
        raise MessageError(f"PointCloud2 data has {buf.size - expected} bytes more than height * row_step = "
                           f"{h} * {row_step} = {expected}")
    if h * w == 0:
        out = np.zeros((h, w) if organized else (0,), dtype=native_dt)
        return out
    rows = np.ascontiguousarray(buf.reshape(h, row_step)[:, : w * point_step])
    out = rows.view(wire_dt).reshape(h, w).astype(native_dt)  # by position: same field order
    if skip_nans:
        if organized:
            raise MessageError("skip_nans and organized exclude each other (dropping points breaks the grid)")
        out = out.reshape(-1)
        return out[_finite_mask(out)]
    return out if organized else out.reshape(-1)


def _finite_mask(arr: np.ndarray) -> np.ndarray:
    """Per point: x, y, z finite (or all float fields if the cloud has no x/y/z)."""
    names = [n for n in ("x", "y", "z") if n in arr.dtype.names] or [
        n for n in arr.dtype.names if arr.dtype[n].base.kind == "f"]
    keep = np.ones(arr.shape, dtype=bool)
    for n in names:
        v = arr[n]
        keep &= np.isfinite(v).reshape(len(v), -1).all(axis=1) if v.ndim > 1 else np.isfinite(v)
    return keep


def array_to_pointcloud2(points: np.ndarray, stamp_ns: int = 0, frame_id: str = "", *,
                         is_bigendian: bool | None = None, is_dense: bool | None = None) -> PointCloud2:
    """Numpy structured array (N,) or (H, W) -> sensor_msgs/PointCloud2.

    The array's dtype gives the layout: field offsets and itemsize (= point_step, so padding is
    kept, zero-filled) and byte order. `is_bigendian=None` keeps the array's byte order when all
    fields agree (little-endian otherwise); True/False converts. `is_dense=None` computes it (no
    NaN/inf in x/y/z).
    """
    arr = np.asarray(points)
    if arr.dtype.names is None:
        raise MessageError(f"array_to_pointcloud2 needs a numpy structured array, got dtype {arr.dtype}")
    if arr.ndim == 1:
        h, w = 1, arr.shape[0]
    elif arr.ndim == 2:
        h, w = arr.shape
    else:
        raise MessageError(f"point array must be (N,) or (H, W), got shape {arr.shape}")
    dt = arr.dtype
    orders = set()
    fields: list[PointField] = []
    for name in dt.names:
        ft, off = dt.fields[name][:2]
        base = ft.base
        key = (base.kind, base.itemsize)
        if key not in _NP_TO_PF:
            raise MessageError(f"field {name!r}: dtype {base} has no PointField datatype")
        if base.itemsize > 1:
            orders.add({"=": _NATIVE}.get(base.byteorder, base.byteorder))
        count = int(np.prod(ft.shape)) if ft.shape else 1
        fields.append(PointField(name=name, offset=int(off), datatype=_NP_TO_PF[key], count=count))
    big = (orders == {">"}) if is_bigendian is None else bool(is_bigendian)
    order = ">" if big else "<"
    target = np.dtype({
        "names": list(dt.names),
        "formats": [(dt[n].base.newbyteorder(order), dt[n].shape) if dt[n].shape else dt[n].base.newbyteorder(order)
                    for n in dt.names],
        "offsets": [dt.fields[n][1] for n in dt.names],
        "itemsize": dt.itemsize,
    })
    out = np.zeros(arr.shape, dtype=target)  # zeroed padding: deterministic bytes
    for n in dt.names:  # by name (loop over fields)
        out[n] = arr[n]
    if is_dense is None:
        flat = arr.reshape(-1)
        is_dense = bool(_finite_mask(flat).all()) if flat.size else True
    msg = PointCloud2(header=make_header(stamp_ns, frame_id), height=h, width=w, fields=fields,
                      is_bigendian=big, point_step=dt.itemsize, row_step=dt.itemsize * w, is_dense=bool(is_dense))
    msg.data = _byte_array(out)
    return msg


def pointcloud2_fields(cloud: Any, names: Sequence[str], dtype: Any = np.float32) -> np.ndarray:
    """Named scalar fields of a PointCloud2 (or structured array) as a (K, N) array of `dtype`.

    E.g. pointcloud2_fields(msg, RADAR_PCD_FIELDS) gives the (18, N) array the devkit's
    RadarPointCloud holds. MessageError naming the missing fields if any is absent.
    """
    arr = cloud if isinstance(cloud, np.ndarray) else pointcloud2_to_array(cloud)
    if arr.dtype.names is None:
        raise MessageError("pointcloud2_fields needs a PointCloud2 or a structured array")
    missing = [n for n in names if n not in arr.dtype.names]
    if missing:
        raise MessageError(f"point cloud lacks fields {missing}; it has {list(arr.dtype.names)}")
    multi = [n for n in names if arr.dtype[n].shape]
    if multi:
        raise MessageError(f"fields {multi} have count > 1; pointcloud2_fields reads scalar fields only")
    flat = arr.reshape(-1)
    out = np.empty((len(names), flat.shape[0]), dtype=dtype)
    for i, n in enumerate(names):
        out[i] = flat[n]
    return out


def radar_points(msg: Any) -> np.ndarray:
    """A nuScenes radar PointCloud2 -> (18, N) float32 in RADAR_PCD_FIELDS order (devkit layout)."""
    return pointcloud2_fields(msg, RADAR_PCD_FIELDS, np.float32)


# ============================================================================ CameraInfo
def camera_info_image_size(msg: Any) -> tuple[int, int]:
    """(height, width) of the images a CameraInfo describes: its calibrated size, cropped to its
    ROI when one is set and divided by its binning (REP-104, as image_geometry reads it)."""
    H, W = int(msg.height), int(msg.width)
    roi = getattr(msg, "roi", None)
    if roi is not None and int(roi.width) > 0 and int(roi.height) > 0:
        H, W = int(roi.height), int(roi.width)
    bx, by = max(int(getattr(msg, "binning_x", 0)), 1), max(int(getattr(msg, "binning_y", 0)), 1)
    return H // by, W // bx


def camera_info_to_K(msg: Any, image_hw: tuple[int, int] | None = None) -> np.ndarray:
    """sensor_msgs/CameraInfo -> 3x3 float64 K of the images it describes.

    ROI and binning (REP-104) are applied first (principal point shifted by the ROI offset,
    focal lengths and principal point divided by the binning), as image_geometry does; zero
    ROI / binning (nuScenes, most drivers) leave K as calibrated. With `image_hw` = (H, W) of
    the image actually used (e.g. decoded at reduced scale), K is then rescaled from
    camera_info_image_size(msg) with imkd_core.preprocess.scale_intrinsics.
    """
    k = np.asarray(msg.k, dtype=np.float64).reshape(-1)
    if k.size != 9:
        raise MessageError(f"CameraInfo.k must have 9 values, got {k.size}")
    K = k.reshape(3, 3)
    if not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0 or K[2, 2] != 1.0 or K[2, 0] != 0 or K[2, 1] != 0:
        raise MessageError(f"CameraInfo.k is not a calibrated pinhole matrix: {k.tolist()}")
    roi = getattr(msg, "roi", None)
    bx, by = max(int(getattr(msg, "binning_x", 0)), 1), max(int(getattr(msg, "binning_y", 0)), 1)
    if roi is not None and int(roi.width) > 0 and int(roi.height) > 0 or bx > 1 or by > 1:
        K = K.copy()
        if roi is not None and int(roi.width) > 0 and int(roi.height) > 0:
            K[0, 2] -= int(roi.x_offset)
            K[1, 2] -= int(roi.y_offset)
        K[0] /= bx
        K[1] /= by
    if image_hw is not None:
        H, W = camera_info_image_size(msg)
        if (H, W) != tuple(image_hw):
            if H <= 0 or W <= 0:
                raise MessageError(f"CameraInfo has no image size ({W} x {H}); cannot rescale K to {image_hw}")
            from imkd_core.preprocess import scale_intrinsics  # lazy: pulls in torch

            K = scale_intrinsics(K, image_hw[1] / W, image_hw[0] / H)
    return K.copy()


def K_to_camera_info(K: np.ndarray, width: int, height: int, stamp_ns: int = 0, frame_id: str = "",
                     d: Sequence[float] | None = None, distortion_model: str = "plumb_bob") -> CameraInfo:
    """3x3 K (+ optional distortion) -> sensor_msgs/CameraInfo with R = I and P = [K | 0]."""
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3) or not np.isfinite(K).all():
        raise MessageError(f"K must be a finite 3x3 matrix, got shape {K.shape}")
    P = np.zeros((3, 4))
    P[:, :3] = K
    d_arr = np.zeros(5) if d is None else np.asarray(d, dtype=np.float64).reshape(-1)
    msg = CameraInfo(header=make_header(stamp_ns, frame_id), width=int(width), height=int(height),
                     distortion_model=distortion_model)
    msg.d = d_arr.tolist()
    msg.k = K.reshape(-1)
    msg.r = np.eye(3).reshape(-1)
    msg.p = P.reshape(-1)
    return msg


# ============================================================================ rotations / TF
def quaternion_to_matrix(q: np.ndarray) -> np.ndarray:
    """(..., 4) quaternions (x, y, z, w) of a message -> (..., 3, 3) rotation matrices; MessageError
    on a wrong shape or a zero/non-finite quaternion (the maths: imkd_core.geometry)."""
    q = np.asarray(q, dtype=np.float64)
    if q.shape[-1] != 4:
        raise MessageError(f"quaternions must have 4 components (x, y, z, w), got shape {q.shape}")
    n = np.linalg.norm(q, axis=-1, keepdims=True)
    if not np.isfinite(q).all() or (n < 1e-9).any():
        raise MessageError("quaternion is zero or not finite")
    return quat_xyzw_to_matrix(q)


def matrix_to_quaternion(R: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotation matrices -> (..., 4) unit quaternions (x, y, z, w) with w >= 0;
    MessageError on a wrong shape."""
    R = np.asarray(R, dtype=np.float64)
    if R.shape[-2:] != (3, 3):
        raise MessageError(f"rotation matrices must be (..., 3, 3), got {R.shape}")
    return matrix_to_quat_xyzw(R)


def transform_to_matrix(msg: Any) -> np.ndarray:
    """geometry_msgs/Transform or TransformStamped -> 4x4 float64 (child -> parent)."""
    t = getattr(msg, "transform", msg)
    T = np.eye(4)
    r = t.rotation
    T[:3, :3] = quaternion_to_matrix(np.array([r.x, r.y, r.z, r.w], dtype=np.float64))
    T[:3, 3] = (t.translation.x, t.translation.y, t.translation.z)
    if not np.isfinite(T).all():
        raise MessageError("transform translation is not finite")
    return T


def _check_rigid(T: np.ndarray) -> np.ndarray:
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4) or not np.isfinite(T).all():
        raise MessageError(f"transform must be a finite 4x4 matrix, got shape {T.shape}")
    R = T[:3, :3]
    if not np.allclose(T[3], (0, 0, 0, 1), atol=1e-9):
        raise MessageError(f"transform's last row must be [0 0 0 1], got {T[3].tolist()}")
    if np.abs(R.T @ R - np.eye(3)).max() > 1e-5 or np.linalg.det(R) < 0:
        raise MessageError("transform's rotation block is not a proper rotation (orthonormal, det +1)")
    return T


def matrix_to_transform(T: np.ndarray, parent: str, child: str, stamp_ns: int = 0) -> TransformStamped:
    """4x4 rigid transform (child -> parent) -> geometry_msgs/TransformStamped."""
    T = _check_rigid(T)
    q = matrix_to_quaternion(T[:3, :3]).tolist()
    return TransformStamped(
        header=make_header(stamp_ns, parent),
        child_frame_id=str(child),
        transform=Transform(translation=Vector3(x=float(T[0, 3]), y=float(T[1, 3]), z=float(T[2, 3])),
                            rotation=Quaternion(x=q[0], y=q[1], z=q[2], w=q[3])),
    )


def tf_message_to_list(msg: Any) -> list[tuple[str, str, int, np.ndarray]]:
    """tf2_msgs/TFMessage -> [(parent, child, stamp_ns, 4x4 child -> parent), ...]."""
    ts = list(msg.transforms)
    if not ts:
        return []
    num = np.array([(t.transform.translation.x, t.transform.translation.y, t.transform.translation.z,
                     t.transform.rotation.x, t.transform.rotation.y, t.transform.rotation.z, t.transform.rotation.w)
                    for t in ts], dtype=np.float64)
    if not np.isfinite(num).all():
        raise MessageError("TFMessage contains a non-finite transform")
    T = np.tile(np.eye(4), (len(ts), 1, 1))
    T[:, :3, :3] = quaternion_to_matrix(num[:, 3:])
    T[:, :3, 3] = num[:, :3]
    return [(str(t.header.frame_id), str(t.child_frame_id), stamp_to_ns(t.header.stamp), T[i])
            for i, t in enumerate(ts)]


def transforms_to_tf_message(items: Iterable[tuple[str, str, int, np.ndarray]]) -> TFMessage:
    """[(parent, child, stamp_ns, 4x4), ...] -> tf2_msgs/TFMessage."""
    return TFMessage(transforms=[matrix_to_transform(T, p, c, s) for p, c, s, T in items])


# ============================================================================ detections
# The companion of a Detection3DArray (vision_msgs 4.x has no velocity field): a PointCloud2 with
# one point per Detection3D, in the same order and with the same header, whose fields carry what
# the boxes cannot: `id` (= int(Detection3D.id), the index in the frame), box centre x, y, z (so a
# consumer can check the alignment and RViz can show it), vx, vy (m/s in the header frame), score
# and label (index in imkd_core.frame.CLASSES). Standard type, self-describing field names, no
# extra interface package; read it with sensor_msgs_py.point_cloud2.read_points or
# attributes_to_array.
ATTRIBUTE_DTYPE = np.dtype([("x", "<f8"), ("y", "<f8"), ("z", "<f8"), ("vx", "<f8"), ("vy", "<f8"),
                            ("score", "<f8"), ("id", "<u4"), ("label", "<u4")])


def detection_ids(n: int) -> list[str]:
    """Detection3D.id of a frame's n boxes: their index, stable within the frame ("0", "1", ...)."""
    return [str(i) for i in range(n)]


def _pose(b: list[float], q: list[float]) -> Pose:
    return Pose(position=Point(x=b[0], y=b[1], z=b[2]), orientation=Quaternion(x=q[0], y=q[1], z=q[2], w=q[3]))


def _checked_boxes(det: Detections) -> tuple[np.ndarray, np.ndarray]:
    boxes = np.asarray(det.boxes, dtype=np.float64)
    if not np.isfinite(boxes).all() or not np.isfinite(det.scores).all():
        raise MessageError("detections contain NaN/inf boxes or scores")
    labels = np.asarray(det.labels)
    if labels.size and (labels.min() < 0 or labels.max() >= len(CLASSES)):
        raise MessageError(f"detection labels must index CLASSES (0..{len(CLASSES) - 1}), got {labels.tolist()}")
    return boxes, labels


def detections_to_msg(det: Detections, frame_id: str = "base_link", stamp_ns: int | None = None) -> Detection3DArray:
    """Detections -> vision_msgs/Detection3DArray (REP-103, metres, one hypothesis per box).

    class_id = nuScenes class name, score, bbox centre = results[0].pose.pose = box centre with
    yaw as a quaternion about +z, bbox size = (l, w, h) along the box's x (heading), y, z axes,
    id = the box's index in the frame (detection_ids). Velocity travels on the companion
    PointCloud2 (detections_to_attributes).
    """
    boxes, labels = _checked_boxes(det)
    stamp = det.stamp if stamp_ns is None else stamp_ns
    q = yaw_to_quat_xyzw(boxes[:, 6]).tolist()
    out = Detection3DArray(header=make_header(stamp, frame_id))
    dets = []
    for b, qi, score, label, i in zip(boxes.tolist(), q, det.scores.tolist(), labels.tolist(),
                                      detection_ids(len(boxes)), strict=True):
        hyp = ObjectHypothesisWithPose(hypothesis=ObjectHypothesis(class_id=CLASSES[label], score=score),
                                       pose=PoseWithCovariance(pose=_pose(b, qi)))
        dets.append(Detection3D(header=make_header(stamp, frame_id), results=[hyp],
                                bbox=BoundingBox3D(center=_pose(b, qi), size=Vector3(x=b[3], y=b[4], z=b[5])),
                                id=i))
    out.detections = dets
    return out


def detections_to_cdr(det: Detections, frame_id: str = "base_link", stamp_ns: int | None = None) -> bytes:
    """detections_to_msg(...) already serialised (CDR; `Publisher.publish` accepts bytes), written
    by imkd_ros.cdr without building 14 message objects per box (the node's latency path)."""
    boxes, labels = _checked_boxes(det)
    stamp = det.stamp if stamp_ns is None else stamp_ns
    ns_to_stamp(stamp)  # the same range check as the message path
    return detection_array_cdr(stamp, boxes, [CLASSES[i] for i in labels.tolist()], det.scores.tolist(),
                               detection_ids(len(boxes)), str(frame_id))


def detections_to_attributes(det: Detections, frame_id: str = "base_link", stamp_ns: int | None = None) -> PointCloud2:
    """The companion PointCloud2 of detections_to_msg(det, ...): one ATTRIBUTE_DTYPE point per box,
    same order, same header (one message, vectorised)."""
    boxes, labels = _checked_boxes(det)
    stamp = det.stamp if stamp_ns is None else stamp_ns
    pts = np.zeros(len(boxes), ATTRIBUTE_DTYPE)
    for name, col in (("x", 0), ("y", 1), ("z", 2), ("vx", 7), ("vy", 8)):
        pts[name] = boxes[:, col]
    pts["score"] = np.asarray(det.scores, np.float64)
    pts["id"] = np.arange(len(boxes))
    pts["label"] = labels
    return array_to_pointcloud2(pts, stamp, frame_id, is_bigendian=False, is_dense=True)


def attributes_to_array(msg: Any) -> np.ndarray:
    """A companion PointCloud2 -> ATTRIBUTE_DTYPE array (MessageError when a field is missing)."""
    arr = pointcloud2_to_array(msg)
    missing = [n for n in ATTRIBUTE_DTYPE.names if n not in (arr.dtype.names or ())]
    if missing:
        raise MessageError(f"detection attributes lack fields {missing}; have {list(arr.dtype.names or ())}")
    out = np.zeros(arr.shape, ATTRIBUTE_DTYPE)
    for n in ATTRIBUTE_DTYPE.names:
        out[n] = arr[n]
    return out


def msg_to_detections(msg: Any, attributes: Any = None) -> Detections:
    """vision_msgs/Detection3DArray (+ its companion PointCloud2) -> Detections (inverse of
    detections_to_msg + detections_to_attributes, for evaluation).

    Per detection the highest-scoring hypothesis gives class and score; the box comes from bbox
    (centre, size, yaw of the orientation); velocity from `attributes` (matched by header stamp,
    count and id), else 0. Unknown class names, detections without hypotheses or attributes that
    do not belong to `msg` raise MessageError.
    """
    rows: list[list[float]] = []
    quats: list[list[float]] = []
    scores: list[float] = []
    labels: list[int] = []
    ids: list[str] = []
    index = {c: i for i, c in enumerate(CLASSES)}
    for k, d in enumerate(msg.detections):
        if not d.results:
            raise MessageError(f"detection {k} has no hypotheses")
        best = max(d.results, key=lambda r: r.hypothesis.score)
        name = str(best.hypothesis.class_id)
        if name not in index:
            raise MessageError(f"detection {k}: class_id {name!r} is not a nuScenes class {CLASSES}")
        c, s, o = d.bbox.center.position, d.bbox.size, d.bbox.center.orientation
        rows.append([c.x, c.y, c.z, s.x, s.y, s.z, 0.0, 0.0, 0.0])
        quats.append([o.x, o.y, o.z, o.w])
        scores.append(best.hypothesis.score)
        labels.append(index[name])
        ids.append(str(d.id))
    stamp = stamp_to_ns(msg.header.stamp)
    if not rows and attributes is None:
        return Detections.empty(stamp=stamp)
    boxes = np.array(rows, dtype=np.float64).reshape(-1, 9)
    if rows:
        boxes[:, 6] = quat_xyzw_yaw(np.array(quats))
    if attributes is not None:
        if stamp_to_ns(attributes.header.stamp) != stamp:
            raise MessageError(f"detection attributes stamped {stamp_to_ns(attributes.header.stamp)}, "
                               f"detections {stamp}")
        attr = attributes_to_array(attributes)
        if len(attr) != len(rows) or [str(i) for i in attr["id"].tolist()] != ids:
            raise MessageError(f"detection attributes ({len(attr)} points) are not aligned with the {len(rows)} "
                               "detections by id")
        boxes[:, 7], boxes[:, 8] = attr["vx"], attr["vy"]
    if not rows:
        return Detections.empty(stamp=stamp)
    return Detections(boxes, np.array(scores), np.array(labels), stamp=stamp)


# Box corner signs (x, y, z) and the 12 edges of a box as corner index pairs.
_CORNER_SIGNS = np.array([[sx, sy, sz] for sx in (1, -1) for sy in (1, -1) for sz in (1, -1)], dtype=np.float64)
_EDGES = np.array([[0, 1], [2, 3], [4, 5], [6, 7],  # vertical
                   [0, 2], [1, 3], [4, 6], [5, 7],  # along y
                   [0, 4], [1, 5], [2, 6], [3, 7]])  # along x


def box_corners(boxes: np.ndarray) -> np.ndarray:
    """(N, >=7) boxes (x, y, z, l, w, h, yaw, ...) -> (N, 8, 3) corners, vectorised."""
    boxes = np.asarray(boxes, dtype=np.float64)
    half = 0.5 * boxes[:, None, 3:6] * _CORNER_SIGNS[None]  # (N, 8, 3) in the box frame
    c, s = np.cos(boxes[:, 6]), np.sin(boxes[:, 6])
    x = c[:, None] * half[..., 0] - s[:, None] * half[..., 1]
    y = s[:, None] * half[..., 0] + c[:, None] * half[..., 1]
    return np.stack([x, y, half[..., 2]], axis=-1) + boxes[:, None, 0:3]


def _points(xyz: np.ndarray) -> list[Point]:
    return [Point(x=p[0], y=p[1], z=p[2]) for p in xyz.tolist()]


def detections_to_markers(det: Detections, frame_id: str = "base_link", stamp_ns: int | None = None, *,
                          lifetime_s: float = 1.0, ns: str = "imkd", line_width: float = 0.05,
                          min_speed: float = 0.1, min_score: float = 0.0, alpha: float = 1.0) -> MarkerArray:
    """Detections -> visualization_msgs/MarkerArray for RViz.

    First a DELETEALL (clears the previous frame's boxes), then per box i a LINE_LIST of its 12
    edges (ns "<ns>/boxes", id i) in its class colour, and for boxes faster than `min_speed` m/s
    an ARROW from the box centre to centre + 1 s of velocity (ns "<ns>/velocity", id i).
    `lifetime_s` > 0 lets RViz drop stale boxes if the node stops publishing. Boxes scoring below
    `min_score` are left out (rclpy builds one Marker object per box, about 0.15 ms each here).
    """
    if min_score > 0:
        det = det.filter(det.scores >= min_score)
    boxes, labels = _checked_boxes(det)
    stamp = det.stamp if stamp_ns is None else stamp_ns
    _duration(lifetime_s)  # validate once
    markers = [Marker(header=make_header(stamp, frame_id), ns=ns, id=0, action=Marker.DELETEALL)]
    edges = box_corners(boxes)[:, _EDGES.reshape(-1)] if len(boxes) else np.zeros((0, 24, 3))
    speed = np.hypot(boxes[:, 7], boxes[:, 8]) if len(boxes) else np.zeros(0)
    for i in range(len(boxes)):
        r, g, b = CLASS_COLORS[labels[i]].tolist()
        m = Marker(header=make_header(stamp, frame_id), ns=f"{ns}/boxes", id=i, type=Marker.LINE_LIST,
                   action=Marker.ADD, color=ColorRGBA(r=r, g=g, b=b, a=float(alpha)),
                   lifetime=_duration(lifetime_s), frame_locked=False)
        m.pose.orientation.w = 1.0
        m.scale.x = float(line_width)
        m.points = _points(edges[i])
        markers.append(m)
        if speed[i] > min_speed:
            start = boxes[i, 0:3]
            end = start + np.array([boxes[i, 7], boxes[i, 8], 0.0])
            a = Marker(header=make_header(stamp, frame_id), ns=f"{ns}/velocity", id=i, type=Marker.ARROW,
                       action=Marker.ADD, color=ColorRGBA(r=r, g=g, b=b, a=float(alpha)),
                       lifetime=_duration(lifetime_s), frame_locked=False)
            a.pose.orientation.w = 1.0
            a.scale.x, a.scale.y, a.scale.z = 0.1, 0.2, 0.3  # shaft diameter, head diameter, head length
            a.points = _points(np.stack([start, end]))
            markers.append(a)
    return MarkerArray(markers=markers)
