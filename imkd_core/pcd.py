"""Binary PCD v0.7 files (the nuScenes radar format): one parser and one writer.

The parser reads the header and views the payload without copying it (the bag converter puts it
into a PointCloud2 byte for byte; the reader decodes it with one `np.frombuffer`). The writer
produces what the real RADAR_* files hold (the synthetic generator writes with it).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from imkd_core.radar import RADAR_PCD_FIELDS, RADAR_PCD_SIZES, RADAR_PCD_TYPES

# PCD (TYPE, SIZE) -> little-endian numpy type
PCD_NUMPY_TYPES: dict[tuple[str, int], str] = {
    ("F", 2): "<f2", ("F", 4): "<f4", ("F", 8): "<f8",
    ("I", 1): "i1", ("I", 2): "<i2", ("I", 4): "<i4", ("I", 8): "<i8",
    ("U", 1): "u1", ("U", 2): "<u2", ("U", 4): "<u4", ("U", 8): "<u8",
}
_PCD_KIND = {"f": "F", "i": "I", "u": "U"}

# One nuScenes radar point as stored in its PCD file (18 fields, packed, 43 bytes).
RADAR_PCD_DTYPE = np.dtype([(n, PCD_NUMPY_TYPES[(t, s)])
                            for n, t, s in zip(RADAR_PCD_FIELDS, RADAR_PCD_TYPES, RADAR_PCD_SIZES)])
# The devkit's reader needs bytes after the last point; the real files have them too.
RADAR_PCD_PAD = b"\x00" * 7


class PcdError(ValueError):
    """Bytes that are not a readable binary PCD file (`reason` says why)."""


class PcdTruncatedError(PcdError):
    """A PCD file whose payload is shorter than its header announces."""


class PcdUnsupportedError(PcdError):
    """A well-formed PCD file in a layout this parser does not decode (ascii data, odd types)."""


class PcdCloud(NamedTuple):
    """A parsed binary PCD file: a packed structured dtype of one point and the payload."""

    dtype: np.dtype  # packed, little endian; a field with COUNT > 1 is a sub-array
    width: int
    height: int
    data: memoryview  # exactly width * height * dtype.itemsize bytes, a view of the input

    @property
    def point_step(self) -> int:
        return self.dtype.itemsize

    def array(self) -> np.ndarray:
        """Structured (width * height,) view of the points (no copy)."""
        return np.frombuffer(self.data, dtype=self.dtype)


def parse_pcd(raw: bytes | bytearray) -> PcdCloud:
    """Parse a binary PCD v0.7 file without copying its payload; PcdError (or a subclass) on
    anything else."""
    idx = raw.find(b"\nDATA ")
    if not raw.startswith((b"#", b"VERSION")) or idx < 0:
        raise PcdError("not a PCD file (no header / DATA line)")
    eol = raw.find(b"\n", idx + 1)
    if eol < 0:
        raise PcdError("truncated PCD header")
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
        raise PcdError(f"malformed PCD header ({exc!r})") from None
    if not (len(names) == len(sizes) == len(types) == len(counts)):
        raise PcdError("malformed PCD header (FIELDS/SIZE/TYPE/COUNT lengths differ)")
    if data_kind != "binary":
        raise PcdUnsupportedError(f"unsupported PCD DATA {data_kind!r} (only binary)")
    if points != width * height:
        raise PcdError(f"malformed PCD header (POINTS {points} != WIDTH*HEIGHT)")
    fields = []
    for name, size, typ, count in zip(names, sizes, types, counts):
        if (typ, size) not in PCD_NUMPY_TYPES:
            raise PcdUnsupportedError(f"unsupported PCD field type {typ}{size} of {name!r}")
        np_type = PCD_NUMPY_TYPES[(typ, size)]
        fields.append((name, np_type, (count,)) if count > 1 else (name, np_type))
    dtype = np.dtype(fields)
    need = points * dtype.itemsize
    payload = memoryview(raw)[eol + 1:]
    if len(payload) < need:
        raise PcdTruncatedError(f"truncated PCD ({len(payload)} of {need} payload bytes)")
    return PcdCloud(dtype, width, height, payload[:need])


def pcd_bytes(points: np.ndarray, pad: bytes = b"") -> bytes:
    """Binary PCD v0.7 of a structured (N,) array (one field per dtype field, in order), followed
    by `pad`."""
    dt = points.dtype
    if dt.names is None:
        raise ValueError(f"pcd_bytes needs a structured array, got dtype {dt}")
    types, sizes, counts = [], [], []
    for name in dt.names:
        ft = dt.fields[name][0]
        base = ft.base
        if (_PCD_KIND.get(base.kind), base.itemsize) not in PCD_NUMPY_TYPES:
            raise ValueError(f"field {name!r}: dtype {base} has no PCD type")
        types.append(_PCD_KIND[base.kind])
        sizes.append(str(base.itemsize))
        counts.append(str(int(np.prod(ft.shape)) if ft.shape else 1))
    packed = np.dtype([(n, dt[n].base.newbyteorder("<"), dt[n].shape) if dt[n].shape
                       else (n, dt[n].base.newbyteorder("<")) for n in dt.names])
    n = len(points)
    header = "\n".join([
        "# .PCD v0.7 - Point Cloud Data file format",
        "VERSION 0.7",
        "FIELDS " + " ".join(dt.names),
        "SIZE " + " ".join(sizes),
        "TYPE " + " ".join(types),
        "COUNT " + " ".join(counts),
        f"WIDTH {n}",
        "HEIGHT 1",
        "VIEWPOINT 0 0 0 1 0 0 0",
        f"POINTS {n}",
        "DATA binary",
    ]) + "\n"
    body = points.tobytes() if dt == packed else points.astype(packed).tobytes()
    return header.encode("ascii") + body + pad


def radar_pcd_bytes(points: np.ndarray) -> bytes:
    """A nuScenes radar PCD file (the 18 RADAR_PCD_FIELDS, and the real files' trailing pad) of
    an (N,) RADAR_PCD_DTYPE array."""
    if points.dtype != RADAR_PCD_DTYPE:
        raise ValueError(f"radar points must have dtype {RADAR_PCD_DTYPE}, got {points.dtype}")
    return pcd_bytes(points, RADAR_PCD_PAD)
