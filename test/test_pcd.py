"""imkd_core.pcd: the writer's files read back by the parser, by the reader and by the devkit's
RadarPointCloud; corrupt bytes are named errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from imkd_core.data.nuscenes import NuScenesDataError, read_radar_pcd
from imkd_core.pcd import (
    RADAR_PCD_DTYPE,
    PcdError,
    PcdTruncatedError,
    PcdUnsupportedError,
    parse_pcd,
    pcd_bytes,
    radar_pcd_bytes,
)
from imkd_core.radar import RADAR_PCD_FIELDS


def radar_points(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pts = np.zeros(n, RADAR_PCD_DTYPE)
    for name in RADAR_PCD_FIELDS:
        kind = RADAR_PCD_DTYPE[name].kind
        pts[name] = rng.normal(size=n) * 20 if kind == "f" else rng.integers(0, 5, size=n)  # in every state filter
    return pts


@pytest.mark.parametrize("n", [1, 2, 125])
def test_radar_file_reads_back_everywhere(tmp_path: Path, n: int) -> None:
    from nuscenes.utils.data_classes import RadarPointCloud

    pts = radar_points(n)
    raw = radar_pcd_bytes(pts)
    cloud = parse_pcd(raw)
    assert (cloud.dtype, cloud.width, cloud.height, cloud.point_step) == (RADAR_PCD_DTYPE, n, 1, 43)
    np.testing.assert_array_equal(cloud.array(), pts)
    path = tmp_path / "radar.pcd"
    path.write_bytes(raw)
    ours = read_radar_pcd(str(path))
    assert ours.shape == (18, n)
    for i, name in enumerate(RADAR_PCD_FIELDS):
        np.testing.assert_array_equal(ours[i], pts[name].astype(np.float64))
    ref = RadarPointCloud.from_file(str(path), invalid_states=list(range(18)), dynprop_states=list(range(8)),
                                    ambig_states=list(range(5))).points
    np.testing.assert_array_equal(ours, ref)


def test_empty_radar_file_and_wrong_dtype(tmp_path: Path) -> None:
    raw = radar_pcd_bytes(np.zeros(0, RADAR_PCD_DTYPE))
    assert parse_pcd(raw).width == 0
    (tmp_path / "empty.pcd").write_bytes(raw)
    assert read_radar_pcd(str(tmp_path / "empty.pcd")).shape == (18, 0)
    with pytest.raises(ValueError, match="dtype"):
        radar_pcd_bytes(np.zeros(3, [("x", "<f4")]))


def test_generic_writer_packs_byte_order_and_sub_arrays() -> None:
    pts = np.zeros(4, dtype=[("x", ">f8"), ("rgb", "u1", (3,)), ("ring", "<u2")])
    pts["x"] = [1.5, -2.0, 3.25, 1e9]
    pts["rgb"] = np.arange(12).reshape(4, 3)
    pts["ring"] = [0, 1, 65535, 7]
    raw = pcd_bytes(pts)
    assert b"SIZE 8 1 2\nTYPE F U U\nCOUNT 1 3 1\n" in raw
    back = parse_pcd(raw).array()
    assert back.dtype.itemsize == 8 + 3 + 2
    for name in ("x", "rgb", "ring"):
        np.testing.assert_array_equal(back[name], pts[name])
    with pytest.raises(ValueError, match="structured"):
        pcd_bytes(np.zeros(3))


def test_corrupt_bytes_are_named_errors(tmp_path: Path) -> None:
    raw = radar_pcd_bytes(radar_points(10))
    body = raw.index(b"DATA binary\n") + len(b"DATA binary\n")
    with pytest.raises(PcdTruncatedError, match="truncated PCD"):
        parse_pcd(raw[: body + 43 * 3])
    with pytest.raises(PcdError, match="not a PCD"):
        parse_pcd(b"\x00" * 100)
    with pytest.raises(PcdError, match="malformed PCD header"):
        parse_pcd(raw.replace(b"WIDTH 10", b"WIDTH ten"))
    with pytest.raises(PcdError, match="POINTS"):
        parse_pcd(raw.replace(b"POINTS 10", b"POINTS 11"))
    with pytest.raises(PcdUnsupportedError, match="only binary"):
        parse_pcd(raw.replace(b"DATA binary", b"DATA ascii"))
    with pytest.raises(PcdUnsupportedError, match="F16"):
        parse_pcd(raw.replace(b"SIZE 4 4 4", b"SIZE 16 4 4"))
    bad = tmp_path / "bad.pcd"
    bad.write_bytes(raw[: body + 43 * 3])
    with pytest.raises(NuScenesDataError, match="bad.pcd"):  # the reader names the file
        read_radar_pcd(str(bad))
