"""The one CDR engine: messages serialised without building (rclpy or rosbags) message objects.

- `detection_array_cdr`: vision_msgs/Detection3DArray laid out by hand, the one writer for the
  node's `~/detections` (its latency path, through `msgs.detections_to_cdr`) and the bag
  converter's ground truth. Needs neither rclpy nor a rosbags typestore.
- Layouts compiled from a rosbags typestore (`cdr_layout`/`serialize_many`: N messages that
  differ only in numbers as one numpy fill; `CdrPacker`: one message shape as one struct
  format), for the converter's /tf, /odom and markers, whose definitions differ by distro.
- `with_payload`: a message whose byte payload is read straight into its final buffer.

The bytes equal rosbags' serialiser (zero padding) and read back with rclpy (test_msgs.py,
test_converter.py; the converter also checks its first message of each kind per bag).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

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


# ----------------------------------------------------------------------------------------------
# Layouts compiled from a rosbags typestore (the bag converter's /tf, /odom and markers)
# ----------------------------------------------------------------------------------------------

NUMPY_TYPES = {"bool": np.bool_, "byte": np.uint8, "octet": np.uint8, "char": np.uint8, "uint8": np.uint8,
            "int8": np.int8, "int16": np.int16, "uint16": np.uint16, "int32": np.int32,
            "uint32": np.uint32, "int64": np.int64, "uint64": np.uint64, "float32": np.float32,
            "float64": np.float64}
_STRUCT_CODES = {"bool": "?", "byte": "B", "octet": "B", "char": "B", "uint8": "B", "int8": "b", "int16": "h",
                 "uint16": "H", "int32": "i", "uint32": "I", "int64": "q", "uint64": "Q", "float32": "f",
                 "float64": "d"}
_STRINGS = ("string", "wstring")


class _Leaf(NamedTuple):
    """One wire item of a message: a sequence length ("len"), a string ("str") or a numeric
    scalar/array ("num", `count` values of `base`)."""

    kind: str
    path: str | None
    base: str
    value: Any
    count: int
    array: bool  # numeric: a fixed array or sequence (shape (count,)), not a scalar


def _leaves(ts: Any, typename: str, msg: Any) -> list[_Leaf]:
    """The wire items of `msg` in serialisation order (string and sequence lengths as in `msg`);
    paths as "header.stamp.sec", "points[1].x"."""
    out: list[_Leaf] = []

    def walk(obj: Any, typ: str, prefix: str) -> None:
        for name, (kind, sub) in ts.fielddefs[typ][1]:
            val, path, kind = getattr(obj, name), prefix + name, int(kind)
            if kind == 2:  # nested message
                walk(val, sub, path + ".")
            elif kind == 1:  # base type
                out.append(_Leaf("str", path, sub[0], val, 1, False) if sub[0] in _STRINGS
                           else _Leaf("num", path, sub[0], val, 1, False))
            else:  # 3 fixed array, 4 sequence
                (ekind, esub), n = sub[0], (len(val) if kind == 4 else sub[1])
                if kind == 4:
                    out.append(_Leaf("len", None, "uint32", n, 1, False))
                if int(ekind) == 2:
                    for i, item in enumerate(val):
                        walk(item, esub, f"{path}[{i}].")
                elif esub[0] in _STRINGS:
                    out.extend(_Leaf("str", f"{path}[{i}]", esub[0], item, 1, False) for i, item in enumerate(val))
                elif n:
                    out.append(_Leaf("num", path, esub[0], val, n, True))

    walk(msg, typename, "")
    return out


def _size(leaf: _Leaf) -> tuple[int, int]:
    """(alignment, bytes) of a leaf on the wire."""
    if leaf.kind == "str":
        return 4, 4 + len(leaf.value.encode()) + 1
    size = np.dtype(NUMPY_TYPES[leaf.base]).itemsize
    return min(size, 8), size * leaf.count


def cdr_layout(ts: Any, msg: Any, typename: str) -> tuple[int, dict[str, tuple[int, np.dtype, tuple[int, ...]]]]:
    """Byte layout of `msg` serialised as little-endian CDR (with its 4-byte encapsulation
    header): total size and, per numeric leaf path ("header.stamp.sec", "pose.covariance"),
    its (offset, dtype, shape). Strings and sequence lengths are taken from `msg` itself."""
    leaves: dict[str, tuple[int, np.dtype, tuple[int, ...]]] = {}
    pos = 0  # position in the payload (CDR alignment is relative to the payload start)
    for leaf in _leaves(ts, typename, msg):
        align, size = _size(leaf)
        pos += -pos % align
        if leaf.kind == "num":
            leaves[leaf.path] = (pos + 4, np.dtype(NUMPY_TYPES[leaf.base]).newbyteorder("<"),
                                 (leaf.count,) if leaf.array else ())
        pos += size
    return pos + 4, leaves


def serialize_many(ts: Any, template: Any, typename: str, columns: dict[str, np.ndarray]) -> np.ndarray:
    """CDR bytes of N messages that differ from `template` only in numeric fields, at once:
    (N, size) uint8, row i = the serialisation of `template` with columns[path][i] set. The
    layout is checked against rosbags' own serialiser of the template."""
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


class CdrPacker:
    """One message shape (its string and sequence lengths as in `template`) compiled into a
    single struct format, for a message starting at payload offset = `phase` (mod 8).
    pack_at(indices(paths), values) returns its CDR bytes with those numeric/string leaves
    replaced (strings must keep their compiled length)."""

    def __init__(self, ts: Any, typename: str, template: Any, phase: int) -> None:
        fmt: list[str] = []
        self.values: list[Any] = []
        self.index: dict[str, int] = {}
        pos = phase
        for leaf in _leaves(ts, typename, template):
            align, size = _size(leaf)
            if -pos % align:
                fmt.append(f"{-pos % align}x")
                pos += -pos % align
            if leaf.kind == "str":
                raw = leaf.value.encode() + b"\0"
                fmt += ["I", f"{len(raw)}s"]
                self.values.append(len(raw))
                self.index[leaf.path] = len(self.values)
                self.values.append(raw)
            else:
                if leaf.path is not None:
                    self.index[leaf.path] = len(self.values)
                code = _STRUCT_CODES[leaf.base]
                if leaf.array:
                    fmt.append(f"{leaf.count}{code}")
                    self.values += [v.item() for v in np.asarray(leaf.value).reshape(-1)]
                else:
                    fmt.append(code)
                    self.values.append(leaf.value.item() if hasattr(leaf.value, "item") else leaf.value)
            pos += size
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


def packer(ts: Any, typename: str, key: tuple, phase: int, template: Callable[[], Any]) -> CdrPacker:
    """Cached CdrPacker for (typestore, type, shape key, phase); `template()` builds a message."""
    k = (id(ts), typename, key, phase)
    if k not in _PACKERS:  # keep ts referenced so its id stays unique
        _PACKERS[k] = (CdrPacker(ts, typename, template(), phase), ts)
    return _PACKERS[k][0]


def sequence_start(parts: list[bytes], pos: int, n: int) -> int:
    """Append the (aligned) length of an n-element sequence at payload offset `pos`; the new offset."""
    k = -pos % 4
    parts.append(b"\0" * k + struct.pack("<I", n))
    return pos + k + 4


def with_payload(empty_cdr: bytes, tail: int, n: int) -> tuple[bytearray, int]:
    """CDR of a message whose last uint8[] field is empty (followed by `tail` bytes of other
    fields), grown by n payload bytes: (buffer, payload offset); the caller fills
    buffer[offset:offset + n] (one copy: a file can be read straight into it)."""
    head = len(empty_cdr) - tail
    out = bytearray(len(empty_cdr) + n)
    out[:head] = empty_cdr[:head]
    struct.pack_into("<I", out, head - 4, n)
    out[head + n:] = empty_cdr[head:]
    return out, head
