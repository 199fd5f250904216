"""Detection3DArray serialised straight to CDR, without building message objects.

One writer for the two places that emit many boxes: the node's `~/detections` (on its latency
path, through `msgs.detections_to_cdr`) and the bag converter's ground truth. Needs neither
rclpy nor a rosbags typestore; the bytes equal rosbags' serialiser (zero padding) and read back
with rclpy (tests in test_msgs.py and test_converter.py).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence

import numpy as np

CDR_HEADER = b"\x00\x01\x00\x00"  # encapsulation: plain CDR, little endian
_NS = 1_000_000_000
# per detection, contiguous float64 after hypothesis.class_id: score, results[0].pose.pose (7),
# its covariance (36), bbox.center (7), bbox.size (3)
_F64_PER_DET = 1 + 7 + 36 + 7 + 3
_ONE = struct.pack("<I", 1)


def _string(s: str) -> bytes:
    b = s.encode() + b"\0"
    return struct.pack("<I", len(b)) + b


def detection_array_cdr(stamp_ns: int, boxes: np.ndarray, class_names: Sequence[str],
                        scores: Sequence[float] | None = None, ids: Sequence[str] | None = None,
                        frame_id: str = "base_link") -> bytes:
    """CDR bytes of a vision_msgs/Detection3DArray from (N, 9) boxes (x y z l w h yaw vx vy):
    per box one hypothesis (class_names[i], scores[i] or 1.0) whose pose equals the bbox centre
    (yaw as a quaternion about +z), bbox.size = (l, w, h), id = ids[i] or ""; every header
    carries `stamp_ns` and `frame_id`."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 9)
    n = len(boxes)
    sec, nsec = divmod(int(stamp_ns), _NS)
    header = struct.pack("<iI", sec, nsec) + _string(str(frame_id))
    f64 = np.zeros((n, _F64_PER_DET), dtype="<f8")
    f64[:, 0] = 1.0 if scores is None else np.asarray(scores, np.float64)
    yaw = boxes[:, 6].tolist()
    pose = np.zeros((n, 7))
    pose[:, :3] = boxes[:, :3]
    pose[:, 5] = [math.sin(y / 2) for y in yaw]  # math, not numpy: the same bits as rosbags' messages
    pose[:, 6] = [math.cos(y / 2) for y in yaw]
    f64[:, 1:8] = pose
    f64[:, 44:51] = pose
    f64[:, 51:54] = boxes[:, 3:6]
    rows = f64.tobytes()
    step = 8 * _F64_PER_DET
    parts = [header]
    off = len(header)  # offset in the payload: CDR aligns relative to its start

    def put(b: bytes, align: int) -> None:
        nonlocal off
        pad = -off % align
        if pad:
            parts.append(b"\0" * pad)
        parts.append(b)
        off += pad + len(b)

    put(struct.pack("<I", n), 4)                    # detections[] length
    for i in range(n):
        put(header, 4)                              # Detection3D.header
        put(_ONE, 4)                                # results[] length
        put(_string(str(class_names[i])), 4)        # hypothesis.class_id
        put(rows[i * step:(i + 1) * step], 8)       # score, pose, covariance, bbox
        put(_string("" if ids is None else str(ids[i])), 4)  # id
    return CDR_HEADER + b"".join(parts)
