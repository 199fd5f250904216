"""Round trips and content checks of imkd_ros.msgs against independent references (cv2, cv_bridge,
hand-packed wire bytes, closed-form rotations, rclpy/rosbags serialisation)."""

from __future__ import annotations

import json
import math
import struct
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CompressedImage, Image, PointCloud2, PointField
from vision_msgs.msg import Detection3DArray, ObjectHypothesis, ObjectHypothesisWithPose

from imkd_core.frame import CLASSES, Detections
from imkd_core.geometry import quat_xyzw_yaw, yaw_to_quat_xyzw
from imkd_core.preprocess import scale_intrinsics
from imkd_core.radar import RADAR_PCD_FIELDS, RADAR_PCD_SIZES, RADAR_PCD_TYPES
from imkd_ros import msgs as M
from imkd_ros.msgs import MessageError

RNG = np.random.default_rng(0)


def smooth_rgb(h: int = 90, w: int = 160) -> np.ndarray:
    """A smooth colour image (JPEG-friendly) with distinct channels."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([x / w * 255, y / h * 255, 128 + 100 * np.sin(x / 9) * np.cos(y / 7)], axis=-1)
    return np.clip(img, 0, 255).astype(np.uint8)


# ============================================================================ stamps
@pytest.mark.parametrize("ns", [0, 1, 999_999_999, 1_000_000_000, 1_532_402_927_647_951_000, -1, -1_500_000_000])
def test_stamp_round_trip(ns: int) -> None:
    t = M.ns_to_stamp(ns)
    assert 0 <= t.nanosec < 1_000_000_000
    assert M.stamp_to_ns(t) == ns
    h = M.make_header(ns, "base_link")
    assert (M.stamp_to_ns(h.stamp), h.frame_id) == (ns, "base_link")


def test_stamp_errors() -> None:
    with pytest.raises(MessageError, match="integer nanoseconds"):
        M.ns_to_stamp(1.5)  # type: ignore[arg-type]
    with pytest.raises(MessageError, match="int32"):
        M.ns_to_stamp(2**31 * 1_000_000_000)


# ============================================================================ raw images
@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "mono8"])
def test_image_round_trip_and_cv_bridge_reference(encoding: str) -> None:
    from cv_bridge import CvBridge

    rgb = RNG.integers(0, 256, (31, 47, 3), dtype=np.uint8)
    msg = M.rgb_to_image(rgb, 123, "cam", encoding)
    assert (msg.encoding, msg.height, msg.width, M.stamp_to_ns(msg.header.stamp)) == (encoding, 31, 47, 123)
    back = M.image_to_rgb(msg)
    assert back.shape == (31, 47, 3) and back.dtype == np.uint8
    ref = CvBridge().imgmsg_to_cv2(msg, desired_encoding="rgb8")  # the cv_bridge API as reference
    np.testing.assert_array_equal(back, ref)
    if encoding == "mono8":
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        np.testing.assert_array_equal(back, np.repeat(gray[..., None], 3, axis=2))
    else:
        np.testing.assert_array_equal(back, rgb)
    # survives real CDR serialisation
    np.testing.assert_array_equal(M.image_to_rgb(deserialize_message(serialize_message(msg), Image)), back)


def test_image_row_padding_and_16bit_big_endian() -> None:
    rgb = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    step = 7 * 3 + 5  # 5 padding bytes per row
    raw = np.full((5, step), 0xEE, dtype=np.uint8)
    raw[:, :21] = rgb[..., ::-1].reshape(5, 21)  # bgr8
    msg = Image(height=5, width=7, encoding="bgr8", step=step)
    msg.data = raw.tobytes()
    np.testing.assert_array_equal(M.image_to_rgb(msg), rgb)

    mono16 = RNG.integers(0, 65536, (4, 6), dtype=np.uint16)
    raw16 = np.zeros((4, 12 + 3), dtype=np.uint8)  # odd row padding: unaligned 16-bit rows
    raw16[:, :12] = mono16.astype(">u2").view(np.uint8).reshape(4, 12)
    msg16 = Image(height=4, width=6, encoding="mono16", step=15, is_bigendian=1)
    msg16.data = raw16.tobytes()
    out = M.image_to_rgb(msg16)
    np.testing.assert_array_equal(out, np.repeat((mono16 >> 8).astype(np.uint8)[..., None], 3, axis=2))
    msg16.is_bigendian = 0  # same bytes read little-endian give the other byte
    np.testing.assert_array_equal(M.image_to_rgb(msg16)[..., 0], (mono16 & 0xFF).astype(np.uint8))

    padded_rgb = np.zeros((5, step), dtype=np.uint8)
    padded_rgb[:, :21] = rgb.reshape(5, 21)
    msg_rgb = Image(height=5, width=7, encoding="rgb8", step=step)
    msg_rgb.data = padded_rgb.tobytes()
    out = M.image_to_rgb(msg_rgb)
    np.testing.assert_array_equal(out, rgb)
    out[:] = 0  # a copy, not a view into the message
    assert bytes(msg_rgb.data) == padded_rgb.tobytes()

    rgba = RNG.integers(0, 256, (3, 4, 4), dtype=np.uint8)
    msg4 = Image(height=3, width=4, encoding="bgra8", step=16)
    msg4.data = rgba.tobytes()
    np.testing.assert_array_equal(M.image_to_rgb(msg4), rgba[..., 2::-1])


def test_image_errors() -> None:
    msg = M.rgb_to_image(np.zeros((4, 4, 3), np.uint8))
    msg.data = msg.data[:-1]
    with pytest.raises(MessageError, match="truncated"):
        M.image_to_rgb(msg)
    msg = M.rgb_to_image(np.zeros((4, 4, 3), np.uint8))
    msg.step = 10
    with pytest.raises(MessageError, match="step"):
        M.image_to_rgb(msg)
    msg = M.rgb_to_image(np.zeros((4, 4, 3), np.uint8))
    msg.encoding = "yuv422"
    with pytest.raises(MessageError, match="unsupported image encoding 'yuv422'"):
        M.image_to_rgb(msg)
    with pytest.raises(MessageError, match="empty image"):
        M.image_to_rgb(Image(encoding="rgb8"))
    with pytest.raises(MessageError, match="H x W x 3 uint8"):
        M.rgb_to_image(np.zeros((4, 4), np.uint8))
    with pytest.raises(MessageError, match="encoding"):
        M.rgb_to_image(np.zeros((4, 4, 3), np.uint8), encoding="rgba8")


def test_raw_image_reduction_matches_jpeg_sizes() -> None:
    rgb = smooth_rgb(91, 161)
    out = M.msg_to_rgb(M.rgb_to_image(rgb), reduction=2)
    assert out.shape == (46, 81, 3)
    with pytest.raises(MessageError, match="reduction"):
        M.msg_to_rgb(M.rgb_to_image(rgb), reduction=3)


# ============================================================================ compressed images
def test_jpeg_full_and_reduced_scale_against_cv2() -> None:
    rgb = smooth_rgb(96, 176)
    msg = M.rgb_to_compressed(rgb, 7, "cam", "jpeg", quality=95)
    assert msg.format == "jpeg"
    buf = np.frombuffer(msg.data, np.uint8)
    full = M.compressed_to_rgb(msg)
    np.testing.assert_array_equal(full, cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB))
    assert np.abs(full.astype(int) - rgb).mean() < 3.0  # and it is the image we encoded
    for r, flag in ((2, cv2.IMREAD_REDUCED_COLOR_2), (4, cv2.IMREAD_REDUCED_COLOR_4)):
        red = M.compressed_to_rgb(msg, reduction=r)
        assert red.shape == (96 // r, 176 // r, 3)
        np.testing.assert_array_equal(red, cv2.cvtColor(cv2.imdecode(buf, flag), cv2.COLOR_BGR2RGB))
        ref = cv2.resize(rgb, (176 // r, 96 // r), interpolation=cv2.INTER_AREA)
        assert np.abs(red.astype(int) - ref).mean() < 4.0
    # msg_to_rgb dispatches on the message type; survives CDR
    msg2 = deserialize_message(serialize_message(msg), CompressedImage)
    np.testing.assert_array_equal(M.msg_to_rgb(msg2, reduction=2), M.compressed_to_rgb(msg, 2))


def test_png_lossless_and_passthrough_bytes() -> None:
    rgb = RNG.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    msg = M.rgb_to_compressed(rgb, fmt="png")
    np.testing.assert_array_equal(M.compressed_to_rgb(msg), rgb)
    ok, jpg = cv2.imencode(".jpg", rgb)
    raw = jpg.tobytes()
    msg = M.bytes_to_compressed(raw, 5, "cam")
    assert bytes(msg.data) == raw  # JPEG bytes pass through unchanged
    msg.format = "rgb8; jpeg compressed bgr8"  # image_transport's format string
    assert M.compressed_to_rgb(msg).shape == (20, 30, 3)


def test_compressed_errors() -> None:
    msg = M.bytes_to_compressed(b"\xff\xd8 not really a jpeg")
    with pytest.raises(MessageError, match="could not be decoded"):
        M.compressed_to_rgb(msg)
    with pytest.raises(MessageError, match="empty"):
        M.compressed_to_rgb(M.bytes_to_compressed(b""))
    with pytest.raises(MessageError, match="depth"):
        M.compressed_to_rgb(M.bytes_to_compressed(b"x", fmt="16UC1; compressedDepth"))
    with pytest.raises(MessageError, match="unsupported CompressedImage format"):
        M.compressed_to_rgb(M.bytes_to_compressed(b"x", fmt="theora"))
    with pytest.raises(MessageError, match="reduction"):
        M.compressed_to_rgb(M.rgb_to_compressed(smooth_rgb()), reduction=3)


# ============================================================================ PointCloud2
def _padded_big_endian_cloud() -> tuple[PointCloud2, list[tuple[float, float, float, float, int]]]:
    """A 2 x 3 organised cloud packed by hand with struct: big-endian, padding inside each point
    (point_step 32) and at each row end (row_step 32 * 3 + 8)."""
    pts = [(float(i), -2.0 * i, 0.5 * i, 100.0 + i, 60000 + i) for i in range(6)]
    pts[4] = (float("nan"), 1.0, 2.0, 3.0, 7)
    rows = []
    for r in range(2):
        row = b"".join(struct.pack(">fff4xdH6x", *p) for p in pts[3 * r: 3 * r + 3])
        rows.append(row + b"\xab" * 8)
    msg = PointCloud2(height=2, width=3, is_bigendian=True, point_step=32, row_step=104, is_dense=False)
    msg.fields = [PointField(name="x", offset=0, datatype=PointField.FLOAT32, count=1),
                  PointField(name="y", offset=4, datatype=PointField.FLOAT32, count=1),
                  PointField(name="z", offset=8, datatype=PointField.FLOAT32, count=1),
                  PointField(name="intensity", offset=16, datatype=PointField.FLOAT64, count=1),
                  PointField(name="ring", offset=24, datatype=PointField.UINT16, count=1)]
    msg.data = b"".join(rows)
    return msg, pts


def test_pointcloud2_padding_big_endian_height2() -> None:
    msg, pts = _padded_big_endian_cloud()
    arr = M.pointcloud2_to_array(msg)
    assert arr.shape == (6,) and arr.dtype.names == ("x", "y", "z", "intensity", "ring")
    assert arr.dtype["x"] == np.dtype("<f4") and arr.dtype["ring"] == np.dtype("<u2")  # native, packed
    exp = np.array(pts, dtype=np.float64)
    for i, name in enumerate(arr.dtype.names):
        np.testing.assert_array_equal(arr[name].astype(np.float64), exp[:, i].astype(arr.dtype[name]))
    assert M.pointcloud2_to_array(msg, organized=True).shape == (2, 3)
    kept = M.pointcloud2_to_array(msg, skip_nans=True)
    assert len(kept) == 5 and np.isfinite(kept["x"]).all()
    with pytest.raises(MessageError, match="exclude each other"):
        M.pointcloud2_to_array(msg, organized=True, skip_nans=True)


def test_pointcloud2_builder_writes_the_same_wire_bytes() -> None:
    msg, pts = _padded_big_endian_cloud()
    dt = np.dtype({"names": ["x", "y", "z", "intensity", "ring"], "formats": [">f4", ">f4", ">f4", ">f8", ">u2"],
                   "offsets": [0, 4, 8, 16, 24], "itemsize": 32})
    a = np.zeros((2, 3), dt)
    for i, n in enumerate(dt.names):
        a[n] = np.array([p[i] for p in pts]).reshape(2, 3)
    out = M.array_to_pointcloud2(a, 42, "lidar")
    assert (out.height, out.width, out.point_step, out.row_step) == (2, 3, 32, 96)
    assert out.is_bigendian and not out.is_dense
    assert [(f.name, f.offset, f.datatype, f.count) for f in out.fields] == \
        [(f.name, f.offset, f.datatype, f.count) for f in msg.fields]
    # same bytes as the hand-packed rows, minus the row-end padding (ours is tight)
    hand = bytes(msg.data)
    assert bytes(out.data) == hand[:96] + hand[104:200]
    # and back, also converted to little-endian, and through CDR
    little = M.array_to_pointcloud2(a, is_bigendian=False)
    assert not little.is_bigendian
    for m in (out, little, deserialize_message(serialize_message(out), PointCloud2)):
        back = M.pointcloud2_to_array(m, organized=True)
        for n in dt.names:
            np.testing.assert_array_equal(back[n], a[n])


def test_pointcloud2_little_endian_count_and_int_types() -> None:
    dt = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "u1", (3,)), ("t", "<f8"), ("id", "<i2")])
    a = np.zeros(1000, dt)
    for n in ("x", "y", "z", "t"):
        a[n] = RNG.normal(size=1000)
    a["rgb"] = RNG.integers(0, 256, (1000, 3))
    a["id"] = RNG.integers(-30000, 30000, 1000)
    msg = M.array_to_pointcloud2(a)
    assert msg.is_dense and not msg.is_bigendian
    assert [f.count for f in msg.fields] == [1, 1, 1, 3, 1, 1]
    back = M.pointcloud2_to_array(msg)
    for n in dt.names:
        np.testing.assert_array_equal(back[n], a[n])
    xyz = M.pointcloud2_fields(msg, ["x", "y", "z"])
    assert xyz.shape == (3, 1000) and xyz.dtype == np.float32
    np.testing.assert_array_equal(xyz[1], a["y"])
    with pytest.raises(MessageError, match="lacks fields"):
        M.pointcloud2_fields(msg, ["x", "vx_comp"])
    with pytest.raises(MessageError, match="count > 1"):
        M.pointcloud2_fields(msg, ["rgb"])


def test_radar_points_with_nuscenes_field_types() -> None:
    kinds = {("F", 4): "<f4", ("I", 1): "i1", ("I", 2): "<i2"}
    dt = np.dtype([(n, kinds[(t, s)]) for n, t, s in zip(RADAR_PCD_FIELDS, RADAR_PCD_TYPES, RADAR_PCD_SIZES)])
    a = np.zeros(125, dt)
    for n in RADAR_PCD_FIELDS:
        a[n] = RNG.integers(-100, 100, 125)
    msg = M.array_to_pointcloud2(a, 1, "RADAR_FRONT")
    assert msg.point_step == 43  # nuScenes' packed PCD layout
    pts = M.radar_points(msg)
    assert pts.shape == (18, 125) and pts.dtype == np.float32
    np.testing.assert_array_equal(pts, np.stack([a[n].astype(np.float32) for n in RADAR_PCD_FIELDS]))


def test_pointcloud2_truncated_and_malformed() -> None:
    msg, _ = _padded_big_endian_cloud()
    msg.data = bytes(msg.data)[:-1]
    with pytest.raises(MessageError, match=r"truncated: 207 bytes, expected height \* row_step = 2 \* 104 = 208"):
        M.pointcloud2_to_array(msg)
    msg, _ = _padded_big_endian_cloud()
    msg.data = bytes(msg.data) + b"\0"
    with pytest.raises(MessageError, match="1 bytes more"):
        M.pointcloud2_to_array(msg)
    msg, _ = _padded_big_endian_cloud()
    msg.row_step = 64
    with pytest.raises(MessageError, match="row_step 64 < width"):
        M.pointcloud2_to_array(msg)
    msg, _ = _padded_big_endian_cloud()
    msg.fields[4].offset = 31
    with pytest.raises(MessageError, match="'ring'.*extends beyond point_step 32"):
        M.pointcloud2_to_array(msg)
    msg, _ = _padded_big_endian_cloud()
    msg.fields[1].offset = 2
    with pytest.raises(MessageError, match="overlap"):
        M.pointcloud2_to_array(msg)
    msg, _ = _padded_big_endian_cloud()
    msg.fields[3].datatype = 9
    with pytest.raises(MessageError, match="unknown PointField datatype 9"):
        M.pointcloud2_to_array(msg)
    msg, _ = _padded_big_endian_cloud()
    msg.fields[1].name = "x"
    with pytest.raises(MessageError, match="appears twice"):
        M.pointcloud2_to_array(msg)
    with pytest.raises(MessageError, match="structured"):
        M.array_to_pointcloud2(np.zeros((4, 3), np.float32))


def test_pointcloud2_empty() -> None:
    dt = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4")])
    msg = M.array_to_pointcloud2(np.zeros(0, dt))
    assert (msg.width, len(msg.data), msg.is_dense) == (0, 0, True)
    assert M.pointcloud2_to_array(msg).shape == (0,)
    assert M.pointcloud2_fields(msg, ["x", "z"]).shape == (2, 0)


# ============================================================================ CameraInfo
def test_camera_info_round_trip_and_rescale() -> None:
    K = np.array([[1266.4, 0, 816.3], [0, 1266.4, 491.5], [0, 0, 1]])
    msg = M.K_to_camera_info(K, 1600, 900, 9, "CAM_FRONT")
    assert (msg.width, msg.height, msg.header.frame_id) == (1600, 900, "CAM_FRONT")
    np.testing.assert_array_equal(np.asarray(msg.p).reshape(3, 4)[:, :3], K)
    np.testing.assert_array_equal(M.camera_info_to_K(msg), K)
    np.testing.assert_array_equal(M.camera_info_to_K(msg, image_hw=(900, 1600)), K)
    np.testing.assert_allclose(M.camera_info_to_K(msg, image_hw=(450, 800)), scale_intrinsics(K, 0.5, 0.5))
    msg.k = np.zeros(9)
    with pytest.raises(MessageError, match="not a calibrated pinhole"):
        M.camera_info_to_K(msg)


# ============================================================================ rotations / TF
def random_rotations(n: int) -> np.ndarray:
    q = RNG.normal(size=(n, 4))
    return M.quaternion_to_matrix(q / np.linalg.norm(q, axis=1, keepdims=True))


def test_quaternion_matrix_round_trip_including_half_turns() -> None:
    R = np.concatenate([random_rotations(200), np.diag([1.0, -1, -1])[None], np.diag([-1.0, 1, -1])[None],
                        np.diag([-1.0, -1, 1])[None], np.eye(3)[None]])
    q = M.matrix_to_quaternion(R)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-12)
    assert (q[:, 3] >= 0).all()
    np.testing.assert_allclose(M.quaternion_to_matrix(q), R, atol=1e-12)
    # closed form: yaw about z (the yaw helpers themselves: test_geometry.py)
    yaw = np.linspace(-3.1, 3.1, 13)
    Rz = np.zeros((13, 3, 3))
    Rz[:, 0, 0], Rz[:, 0, 1], Rz[:, 1, 0], Rz[:, 1, 1], Rz[:, 2, 2] = (
        np.cos(yaw), -np.sin(yaw), np.sin(yaw), np.cos(yaw), 1)
    np.testing.assert_allclose(M.quaternion_to_matrix(yaw_to_quat_xyzw(yaw)), Rz, atol=1e-12)
    np.testing.assert_allclose(quat_xyzw_yaw(M.matrix_to_quaternion(Rz)), yaw, atol=1e-12)
    with pytest.raises(MessageError, match="zero"):
        M.quaternion_to_matrix(np.zeros(4))
    with pytest.raises(MessageError, match="4 components"):
        M.quaternion_to_matrix(np.zeros(3))
    with pytest.raises(MessageError, match=r"\(\.\.\., 3, 3\)"):
        M.matrix_to_quaternion(np.eye(4))


def test_transform_stamped_and_tf_message_round_trip() -> None:
    items = []
    for i, R in enumerate(random_rotations(5)):
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = R, RNG.normal(size=3) * 10
        items.append((f"parent{i}", f"child{i}", 1_000_000_000 * i + 17, T))
    ts = M.matrix_to_transform(items[0][3], "map", "base_link", 5)
    assert (ts.header.frame_id, ts.child_frame_id, M.stamp_to_ns(ts.header.stamp)) == ("map", "base_link", 5)
    np.testing.assert_allclose(M.transform_to_matrix(ts), items[0][3], atol=1e-12)
    np.testing.assert_allclose(M.transform_to_matrix(ts.transform), items[0][3], atol=1e-12)
    from tf2_msgs.msg import TFMessage

    msg = deserialize_message(serialize_message(M.transforms_to_tf_message(items)), TFMessage)
    back = M.tf_message_to_list(msg)
    assert [b[:3] for b in back] == [it[:3] for it in items]
    for b, it in zip(back, items):
        np.testing.assert_allclose(b[3], it[3], atol=1e-12)
    assert M.tf_message_to_list(TFMessage()) == []
    bad = np.eye(4)
    bad[0, 0] = 2.0
    with pytest.raises(MessageError, match="not a proper rotation"):
        M.matrix_to_transform(bad, "a", "b")
    bad = np.eye(4)
    bad[3, 0] = 1.0
    with pytest.raises(MessageError, match="last row"):
        M.matrix_to_transform(bad, "a", "b")


# ============================================================================ detections
def sample_detections() -> Detections:
    boxes = np.array([
        [10.0, 2.0, 0.9, 4.5, 1.9, 1.6, 0.3, 5.0, -1.0],    # car, moving
        [-5.0, -3.0, 1.1, 0.7, 0.6, 1.8, -2.9, 0.0, 0.0],   # pedestrian, static
        [20.0, 0.0, 1.5, 12.0, 2.9, 3.5, 3.1, 0.05, 0.0],   # bus, below arrow speed
        [0.0, 15.0, 0.5, 0.4, 0.4, 0.9, -math.pi + 1e-3, 0, 0],  # traffic cone
    ], dtype=np.float32)
    return Detections(boxes, [0.91, 0.55, 0.3, 0.12], [0, 8, 3, 9], stamp=1_533_151_603_547_590_000)


def test_detections_to_detection3darray_content() -> None:
    det = sample_detections()
    msg = M.detections_to_msg(det)
    assert msg.header.frame_id == "base_link" and M.stamp_to_ns(msg.header.stamp) == det.stamp
    assert len(msg.detections) == 4
    for i, d in enumerate(msg.detections):
        b = det.boxes[i].astype(np.float64)
        assert d.header.frame_id == "base_link" and M.stamp_to_ns(d.header.stamp) == det.stamp
        assert len(d.results) == 1
        hyp = d.results[0]
        assert hyp.hypothesis.class_id == CLASSES[det.labels[i]]
        assert hyp.hypothesis.score == pytest.approx(float(det.scores[i]))
        c, q, s = d.bbox.center.position, d.bbox.center.orientation, d.bbox.size
        assert (c.x, c.y, c.z) == pytest.approx(tuple(b[:3]))
        assert (s.x, s.y, s.z) == pytest.approx(tuple(b[3:6]))  # (l, w, h) on the box's x, y, z
        assert (q.x, q.y, q.z, q.w) == pytest.approx((0, 0, math.sin(b[6] / 2), math.cos(b[6] / 2)))
        assert hyp.pose.pose == d.bbox.center
        assert d.id == str(i)  # the box's index in the frame, as the companion's `id`
    assert M.detections_to_msg(det, "ego", 5).detections[0].header.frame_id == "ego"


def test_detection3darray_round_trip_through_cdr() -> None:
    det = sample_detections()
    wire = serialize_message(M.detections_to_msg(det))
    attributes = deserialize_message(serialize_message(M.detections_to_attributes(det)), PointCloud2)
    back = M.msg_to_detections(deserialize_message(wire, Detection3DArray), attributes)
    assert back.stamp == det.stamp
    np.testing.assert_array_equal(back.labels, det.labels)
    np.testing.assert_allclose(back.scores, det.scores, rtol=1e-7)
    np.testing.assert_allclose(back.boxes[:, [0, 1, 2, 3, 4, 5, 7, 8]], det.boxes[:, [0, 1, 2, 3, 4, 5, 7, 8]],
                               rtol=1e-6, atol=1e-6)
    dyaw = np.angle(np.exp(1j * (back.boxes[:, 6] - det.boxes[:, 6])))
    np.testing.assert_allclose(dyaw, 0, atol=1e-6)
    no_v = M.msg_to_detections(M.detections_to_msg(det))  # without the companion: velocity 0
    assert (no_v.boxes[:, 7:9] == 0).all()
    np.testing.assert_allclose(no_v.boxes[:, :6], back.boxes[:, :6])
    empty = M.msg_to_detections(M.detections_to_msg(Detections.empty(stamp=3)),
                                M.detections_to_attributes(Detections.empty(stamp=3)))
    assert len(empty) == 0 and empty.stamp == 3


def test_detection_attributes_fields_and_alignment() -> None:
    """The companion PointCloud2: one point per box in order, named fields any reader can use;
    msg_to_detections refuses attributes of another frame or out of alignment."""
    det = sample_detections()
    cloud = M.detections_to_attributes(det, "ego", 99)
    assert cloud.header.frame_id == "ego" and M.stamp_to_ns(cloud.header.stamp) == 99
    assert [f.name for f in cloud.fields] == ["x", "y", "z", "vx", "vy", "score", "id", "label"]
    arr = M.pointcloud2_to_array(cloud)  # a generic PointCloud2 reader, no imkd-specific code
    np.testing.assert_allclose(arr["vx"], det.boxes[:, 7], rtol=1e-7)
    np.testing.assert_allclose(arr["vy"], det.boxes[:, 8], rtol=1e-7)
    np.testing.assert_allclose(np.stack([arr["x"], arr["y"], arr["z"]], 1), det.boxes[:, :3], rtol=1e-7)
    assert arr["id"].tolist() == list(range(len(det))) and arr["label"].tolist() == det.labels.tolist()
    np.testing.assert_allclose(arr["score"], det.scores)
    msg = M.detections_to_msg(det, "ego", 99)
    with pytest.raises(MessageError, match="stamped"):
        M.msg_to_detections(msg, M.detections_to_attributes(det, "ego", 98))
    short = Detections(det.boxes[:2], det.scores[:2], det.labels[:2], stamp=99)
    with pytest.raises(MessageError, match="not aligned"):
        M.msg_to_detections(msg, M.detections_to_attributes(short, "ego", 99))
    with pytest.raises(MessageError, match="lack fields"):
        M.msg_to_detections(msg, M.array_to_pointcloud2(np.zeros(4, [("x", "<f4")]), 99, "ego"))


@pytest.mark.parametrize("frame_id", ["", "a", "ego", "base_link", "base_link_x"])  # every string alignment
def test_detections_to_cdr_equals_rclpy_serialisation(frame_id: str) -> None:
    """The node's direct CDR writer gives the message detections_to_msg builds, as rclpy reads it
    (padding bytes are not compared: rclpy leaves them uninitialised)."""
    rng = np.random.default_rng(len(frame_id))
    for n in (0, 1, 4, 37):
        boxes = (rng.normal(size=(n, 9)) * 10).astype(np.float32)
        det = Detections(boxes, rng.random(n), rng.integers(0, len(CLASSES), n), stamp=int(rng.integers(1, 2**60)))
        ref = M.detections_to_msg(det, frame_id)
        wire = M.detections_to_cdr(det, frame_id)
        assert deserialize_message(wire, Detection3DArray) == ref
        assert len(wire) == len(serialize_message(ref))
    assert M.msg_to_detections(deserialize_message(M.detections_to_cdr(sample_detections(), "x", 7),
                                                   Detection3DArray)).stamp == 7
    bad = sample_detections()
    bad.boxes[0, 0] = np.nan
    with pytest.raises(M.MessageError, match="NaN"):
        M.detections_to_cdr(bad)


def test_detection3darray_best_hypothesis_and_errors() -> None:
    msg = M.detections_to_msg(sample_detections())
    truck = ObjectHypothesisWithPose(hypothesis=ObjectHypothesis(class_id="truck", score=0.99))
    msg.detections[0].results.append(truck)
    assert M.msg_to_detections(msg).labels[0] == CLASSES.index("truck")
    msg.detections[1].results[0].hypothesis.class_id = "unicorn"
    with pytest.raises(MessageError, match="'unicorn' is not a nuScenes class"):
        M.msg_to_detections(msg)
    msg = M.detections_to_msg(sample_detections())
    msg.detections[2].results = []
    with pytest.raises(MessageError, match="detection 2 has no hypotheses"):
        M.msg_to_detections(msg)
    bad = sample_detections()
    bad.boxes[0, 0] = np.nan
    with pytest.raises(MessageError, match="NaN"):
        M.detections_to_msg(bad)
    bad = sample_detections()
    bad.labels[0] = 10
    with pytest.raises(MessageError, match="labels must index CLASSES"):
        M.detections_to_markers(bad)


def test_markers_content() -> None:
    from visualization_msgs.msg import Marker

    det = sample_detections()
    arr = M.detections_to_markers(det, lifetime_s=0.25)
    mk = arr.markers
    assert mk[0].action == Marker.DELETEALL
    boxes = [m for m in mk if m.type == Marker.LINE_LIST]
    arrows = [m for m in mk if m.type == Marker.ARROW and m.action == Marker.ADD]
    assert len(boxes) == 4 and [m.id for m in boxes] == [0, 1, 2, 3]
    assert [m.id for m in arrows] == [0]  # only the car moves faster than min_speed
    for m, b, label in zip(boxes, det.boxes.astype(np.float64), det.labels):
        assert m.header.frame_id == "base_link" and M.stamp_to_ns(m.header.stamp) == det.stamp
        assert (m.lifetime.sec, m.lifetime.nanosec) == (0, 250_000_000)
        assert (m.color.r, m.color.g, m.color.b) == pytest.approx(tuple(M.CLASS_COLORS[label]))
        p = np.array([(q.x, q.y, q.z) for q in m.points])
        assert p.shape == (24, 3)
        # every vertex is a box corner: in the box frame |coords| == half size
        c, s = math.cos(b[6]), math.sin(b[6])
        local = (p - b[:3]) @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
        np.testing.assert_allclose(np.abs(local), np.broadcast_to(b[3:6] / 2, local.shape), atol=1e-5)
        # 12 edges: 4 of each length l, w, h
        lengths = np.sort(np.linalg.norm(p[1::2] - p[0::2], axis=1))
        np.testing.assert_allclose(lengths, np.sort(np.repeat(b[3:6], 4)), atol=1e-5)
    a = arrows[0]
    start, end = (np.array([q.x, q.y, q.z]) for q in a.points)
    np.testing.assert_allclose(start, det.boxes[0, :3], atol=1e-6)
    np.testing.assert_allclose(end - start, [5.0, -1.0, 0.0], atol=1e-6)
    assert len(M.detections_to_markers(Detections.empty()).markers) == 1
    kept = M.detections_to_markers(det, min_score=0.5).markers
    assert [m.id for m in kept if m.type == Marker.LINE_LIST] == [0, 1]


# ============================================================================ interface packages
# RIHS01 type hashes of the upstream ROS 2 Jazzy packages (vision_msgs 4.1.x, tf2_msgs), as found
# in generated code of real installs: our rebuilt packages must match them to interoperate.
UPSTREAM_TYPE_HASHES = {
    "vision_msgs/msg/Detection3DArray": "793f5eab9595ac1c0da07873cc859db42eae51f0ee76056db8562515d830e018",
    "vision_msgs/msg/Detection3D": "ddd703be132ab0b69d33121f1bb034132bfbb3b0ac5f9fb1516005ba1c8a265b",
    "vision_msgs/msg/BoundingBox3D": "bbb73a65c163d7f9bb29009c7bde9f7faa576bd2d23299c4511d19230dab4698",
    "vision_msgs/msg/ObjectHypothesis": "51da43cec11c01957a64d1e05a24acd18aae7745ec30b74348ad5f6d634f7f90",
    "vision_msgs/msg/ObjectHypothesisWithPose": "41c12344c0396c48b81df12467c192d99b2a0eb1463c5c37194e4223251c80bc",
    "vision_msgs/msg/Detection2DArray": "214274120007f4a683866481336b70310268cfa107aebe9d594a6acf75bda968",
    "vision_msgs/msg/Detection2D": "0d12b69df5c593b3455b7346fac8205437a7d4bcb09b9e0e0b2dde787ded38ea",
    "vision_msgs/msg/BoundingBox2D": "008eacbb0cf8f26e83795547bed013eec3675485ef386ec056d80eaaf1c1ce2f",
    "vision_msgs/msg/Pose2D": "b0b5d1d7b4c20dd4fcde3ed1d4b289a919290572007d67a97043814db25d3648",
    "vision_msgs/msg/Point2D": "eab0e83f44ab4de92ceaf76dd7d0e7638f2bdd1d16ffbe16c7a136c48e407247",
    "vision_msgs/msg/LabelInfo": "3d37df4015cdf660cc851c51897f2acd957e1ca6205ba0a99aebffb9406b0783",
    "vision_msgs/msg/VisionClass": "1e4a11f0fed50b5623cb8ff26ca0e37952a48a9c074d16f804b44e9164c2037a",
    "vision_msgs/msg/VisionInfo": "95d3116a17484ad91c9a2686e1d54890bbfc3ff6c6a2de137738c4950d45d284",
    "tf2_msgs/msg/TFMessage": "e369d0f05a23ae52508854b66f6aa0437f3449d652e8cbf22d5abe85d020f087",
}


def test_interface_type_hashes_match_upstream() -> None:
    found = {}
    for path in Path(sys.prefix, "share").glob("*_msgs/msg/*.json"):
        if path.parts[-3] in ("vision_msgs", "tf2_msgs"):
            for th in json.loads(path.read_text())["type_hashes"]:
                found[th["type_name"]] = th["hash_string"]
    if not found:
        pytest.skip(f"no generated type descriptions under {sys.prefix}/share (interfaces come from elsewhere)")
    for name, digest in UPSTREAM_TYPE_HASHES.items():
        assert found.get(name) == "RIHS01_" + digest, name


def test_rosbags_reads_rclpy_detection3darray(repo_root: Path) -> None:
    """The converter's typestore (rosbags, types from tools/interfaces) and rclpy agree on the wire."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_JAZZY)
    types = {}
    for p in sorted((repo_root / "tools" / "interfaces").glob("*/msg/*.msg")):
        types.update(get_types_from_msg(p.read_text(), f"{p.parts[-3]}/msg/{p.stem}"))
    store.register(types)
    det = sample_detections()
    wire = serialize_message(M.detections_to_msg(det))
    rb = store.deserialize_cdr(wire, "vision_msgs/msg/Detection3DArray")
    back = M.msg_to_detections(rb)  # readers are duck-typed
    np.testing.assert_array_equal(back.labels, det.labels)
    np.testing.assert_allclose(back.boxes[:, :6], det.boxes[:, :6], rtol=1e-6)
    again = deserialize_message(bytes(store.serialize_cdr(rb, "vision_msgs/msg/Detection3DArray")), Detection3DArray)
    np.testing.assert_allclose(M.msg_to_detections(again).boxes, back.boxes)
