"""What the detector node drops as bad input, and why: checks of one message each, before it
reaches the assembler.

Each check returns what the node needs from a usable message (a stamp, an image size, radar
points, transforms) or raises `BadInput` with its kind (imkd_ros.diagnostics.BAD_KINDS) and a
one-line detail; the node counts and logs it (throttled) and the message costs only itself.
Checks that drop only part of a message (NaN radar points, single bad transforms) return the
usable rest with the problems to count. No rclpy: the messages are duck-typed.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from imkd_core.radar import RADAR_PCD_FIELDS, canonical_radar
from imkd_ros import msgs as M
from imkd_ros.image_header import check_image_size
from imkd_ros.params import NS_PER_S


class BadInput(ValueError):
    """A message (or part of one) dropped: `kind` is one of BAD_KINDS, `detail` says why."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"[{kind}] {detail}")
        self.kind, self.detail = kind, detail


def header_stamp(msg: Any, topic: str, now_ns: int, max_stamp_future: float) -> int:
    """The message's stamp in ns if its stamp (not zero, not more than `max_stamp_future` s
    ahead of the node clock `now_ns`) and frame_id are usable."""
    stamp = M.stamp_to_ns(msg.header.stamp)
    if stamp <= 0:
        raise BadInput("stamp_zero", f"{topic}: header stamp {stamp} ns")
    if now_ns > 0 and stamp > now_ns + max_stamp_future * NS_PER_S:
        raise BadInput("stamp_future", f"{topic}: stamp {stamp / 1e9:.3f} s is {(stamp - now_ns) / 1e9:.1f} s "
                                       "ahead of the node clock")
    if not msg.header.frame_id:
        raise BadInput("frame_id_empty", f"{topic}: empty header.frame_id")
    return stamp


def check_camera_info(msg: Any, topic: str) -> None:
    """A CameraInfo gives a pinhole K and an image size."""
    try:
        M.camera_info_to_K(msg)
        if int(msg.width) <= 0 or int(msg.height) <= 0:
            raise M.MessageError(f"no image size ({msg.width} x {msg.height})")
    except M.MessageError as e:
        raise BadInput("camera_info_invalid", f"{topic}: {e}") from e


def image_error_kind(msg: Any, err: Exception) -> str:
    """Which BAD_KINDS a MessageError from imkd_ros.msgs.msg_to_rgb is (by its documented wording)."""
    head = str(err).split(":")[0]  # decode failures read "CompressedImage ('jpeg', N bytes): <why>"
    if hasattr(msg, "format"):  # CompressedImage
        return "image_encoding" if "format" in head or head.startswith("unsupported") else "image_corrupt"
    return "image_encoding" if head.startswith("unsupported image encoding") else "image_malformed"


def image_size(msg: Any, topic: str, max_image_bytes: int, max_image_size: tuple[int, int]) -> tuple[int, int]:
    """(height, width) an Image or CompressedImage declares, read without decoding; refuses
    empty, oversized (bytes or pixels) and unreadable images."""
    nbytes = len(msg.data)
    if nbytes == 0 or (not hasattr(msg, "format") and (int(msg.width) == 0 or int(msg.height) == 0)):
        raise BadInput("image_empty", f"{topic}: empty image ({nbytes} bytes)")
    if nbytes > max_image_bytes:
        raise BadInput("image_too_large", f"{topic}: {nbytes} bytes > max_image_bytes {max_image_bytes}")
    try:  # format and the size the header declares (a cut-off JPEG fails here): nothing decoded yet
        hw = M.image_dimensions(msg)
    except M.MessageError as e:
        raise BadInput(image_error_kind(msg, e), f"{topic}: {e}") from e
    too_large = check_image_size(hw, max_image_size)
    if too_large:
        raise BadInput("image_dimensions", f"{topic}: {too_large}; dropped undecoded")
    return hw


def check_image_matches_info(hw: tuple[int, int], info: Any, topic: str, info_topic: str) -> None:
    """The image is the size its CameraInfo describes (else K would apply at the wrong resolution)."""
    if hw != M.camera_info_image_size(info):
        h, w = M.camera_info_image_size(info)
        raise BadInput("camera_info_mismatch", f"{topic}: image {hw[1]} x {hw[0]} but {info_topic} describes "
                                               f"{w} x {h}; image dropped (no intrinsics for it)")


def radar_points(msg: Any, topic: str, max_radar_points: int,
                 fields: dict[str, str] | None = None) -> tuple[np.ndarray, BadInput | None]:
    """(18 x N radar fields with finite x/y/z, the NaN-point problem to count or None) of a
    PointCloud2; refuses oversized, field-less, wrongly named and malformed clouds.

    fields: the rig's mapping column -> message field (imkd_core.rig.RadarSpec.fields) for a
    radar that does not publish nuScenes' 18 ARS408 fields under their names (None: it does);
    columns it lacks get values every filter rule keeps (imkd_core.radar.canonical_radar)."""
    n = int(msg.width) * int(msg.height)
    if n > max_radar_points:
        raise BadInput("radar_too_large", f"{topic}: {n} points > max_radar_points {max_radar_points}")
    if not msg.fields:
        raise BadInput("radar_empty", f"{topic}: PointCloud2 without fields ({n} points, {len(msg.data)} bytes)")
    names = {f.name for f in msg.fields}
    needed = RADAR_PCD_FIELDS if fields is None else tuple(fields.values())
    missing = [f for f in needed if f not in names]
    if missing:
        raise BadInput("radar_fields", f"{topic}: lacks radar fields {missing}; has {sorted(names)}")
    try:
        if fields is None:
            pts = M.radar_points(msg)
        else:
            rows = M.pointcloud2_fields(msg, needed, np.float32)
            pts = canonical_radar(dict(zip(needed, rows)), fields, rows.shape[1], np.float32)
    except M.MessageError as e:
        raise BadInput("radar_malformed", f"{topic}: {e}") from e
    finite = np.isfinite(pts[:3]).all(axis=0)
    if finite.all():
        return pts, None
    nan = BadInput("radar_nan_points", f"{topic}: {int((~finite).sum())} of {pts.shape[1]} points have "
                                       "NaN/inf x/y/z (dropped)")
    return pts[:, finite], nan


def transforms(msg: Any, topic: str, static: bool, now_ns: int,
               max_stamp_future: float) -> tuple[list[tuple[str, str, int, np.ndarray]], list[BadInput]]:
    """(usable transforms of a TFMessage, the problems to count). As tf2: a bad transform costs
    only itself, not its message; dynamic ones need a stamp that is neither zero nor far ahead."""
    problems: list[BadInput] = []
    try:
        items = M.tf_message_to_list(msg)
    except M.MessageError as e:
        items, bad = [], 0
        for t in msg.transforms:
            try:
                items += M.tf_message_to_list(type(msg)(transforms=[t]))
            except M.MessageError:
                bad += 1
        problems.append(BadInput("tf_invalid", f"{topic}: {bad} of {len(msg.transforms)} transform(s) dropped ({e})"))
    if not static:
        horizon = now_ns + max_stamp_future * NS_PER_S if now_ns > 0 else math.inf
        good = [it for it in items if 0 < it[2] <= horizon]
        if len(good) < len(items):
            problems.append(BadInput("tf_stamp_invalid", f"{topic}: {len(items) - len(good)} transform(s) with a "
                                                         "zero or far-future stamp dropped"))
        items = good
    return items, problems
