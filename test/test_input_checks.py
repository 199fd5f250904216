"""The node's cheap input checks, without DDS: image sizes from JPEG/PNG headers, the size a
CameraInfo describes (ROI, binning), and the params-file / command-line checks."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from imkd_ros import msgs as M
from imkd_ros.image_header import ImageHeaderError, check_image_size, image_size
from imkd_ros.param_files import check_args, check_value_against, key_matches, node_fqn
from imkd_ros.params import PARAM_SPECS, default_params, validate_params
from imkd_ros.topics import NODE_NAME

CHECK = check_value_against(default_params(), validate_params)


# ------------------------------------------------------------------------------------- image headers
@pytest.mark.parametrize("ext, flags", [(".jpg", []), (".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
                                        (".png", [])])
@pytest.mark.parametrize("hw", [(1, 1), (99, 176), (900, 1600), (1201, 77)])
def test_header_size_equals_decoded_size(ext: str, flags: list, hw: tuple[int, int]) -> None:
    img = np.random.default_rng(hw[0]).integers(0, 255, (*hw, 3), np.uint8)
    ok, enc = cv2.imencode(ext, img, flags)
    assert image_size(enc) == hw == cv2.imdecode(enc, cv2.IMREAD_COLOR).shape[:2]
    assert image_size(enc.tobytes()) == hw


def test_header_size_of_a_hostile_jpeg_without_decoding() -> None:
    from test.node_support import huge_jpeg, huge_png

    data = huge_jpeg()
    assert len(data) < 1000
    t0 = time.perf_counter()
    assert image_size(data) == (60000, 60000)  # read, not decoded (a decode takes seconds and GB)
    assert time.perf_counter() - t0 < 1.0
    assert image_size(huge_png()) == (100000, 100000)
    assert check_image_size((60000, 60000), (4096, 4096)) == "60000 x 60000 pixels > max_image_size 4096 x 4096"
    assert check_image_size((900, 1600), (4096, 4096)) is None
    assert check_image_size((0, 10), (4096, 4096)) == "declares 10 x 0 pixels"


@pytest.mark.parametrize("data, why", [
    (b"", "neither a JPEG nor a PNG"),
    (b"GIF89a....", "neither a JPEG nor a PNG"),
    (b"\xff\xd8\xff\xe0\x00\x10JFIF", "ends before a frame header"),
    (b"\xff\xd8\xff\xda\x00\x08" + b"\0" * 8, "scan data before its frame header"),
    (b"\xff\xd8\xff\xe0\x00\x01", "has length 1"),
    (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDX" + b"\0" * 8, "not a PNG with an IHDR chunk"),
])
def test_unreadable_headers_are_clear_errors(data: bytes, why: str) -> None:
    with pytest.raises(ImageHeaderError, match=why):
        image_size(data)
    msg = M.bytes_to_compressed(np.frombuffer(data, np.uint8) if data else np.zeros(0, np.uint8), 1, "cam")
    with pytest.raises(M.MessageError, match="CompressedImage"):
        M.image_dimensions(msg)


def test_image_dimensions_of_messages() -> None:
    ok, enc = cv2.imencode(".jpg", np.zeros((45, 80, 3), np.uint8))
    assert M.image_dimensions(M.bytes_to_compressed(enc, 1, "cam")) == (45, 80)
    assert M.image_dimensions(M.rgb_to_image(np.zeros((7, 9, 3), np.uint8), 1, "cam")) == (7, 9)
    with pytest.raises(M.MessageError, match="unsupported CompressedImage format"):
        M.image_dimensions(M.bytes_to_compressed(enc, 1, "cam", fmt="bmp"))


# ------------------------------------------------------------------------------------- CameraInfo size
def test_camera_info_roi_and_binning() -> None:
    K = np.array([[1200.0, 0, 800], [0, 1200, 450], [0, 0, 1]])
    info = M.K_to_camera_info(K, 1600, 900)
    assert M.camera_info_image_size(info) == (900, 1600)
    np.testing.assert_array_equal(M.camera_info_to_K(info), K)  # no ROI / binning: as calibrated
    info.binning_x = info.binning_y = 2
    assert M.camera_info_image_size(info) == (450, 800)
    np.testing.assert_allclose(M.camera_info_to_K(info), [[600, 0, 400], [0, 600, 225], [0, 0, 1]])
    info.binning_x = info.binning_y = 0
    info.roi.x_offset, info.roi.y_offset, info.roi.width, info.roi.height = 100, 50, 640, 480
    assert M.camera_info_image_size(info) == (480, 640)
    np.testing.assert_allclose(M.camera_info_to_K(info), [[1200, 0, 700], [0, 1200, 400], [0, 0, 1]])
    # decoded at 1/4 scale: K follows the ROI image, then the reduction (pixel-centre convention)
    from imkd_core.preprocess import scale_intrinsics

    np.testing.assert_allclose(M.camera_info_to_K(info, image_hw=(120, 160)),
                               scale_intrinsics(np.array([[1200.0, 0, 700], [0, 1200, 400], [0, 0, 1]]), 0.25, 0.25))


# ------------------------------------------------------------------------------------- params files
@pytest.mark.parametrize("key, fqn, match", [
    (f"/**/{NODE_NAME}", "/imkd_detector", True), (f"/**/{NODE_NAME}", "/perception/imkd_detector", True),
    (NODE_NAME, "/imkd_detector", True), (NODE_NAME, "/perception/imkd_detector", False),
    ("/**", "/a/b/imkd_detector", True), ("/*/imkd_detector", "/perception/imkd_detector", True),
    ("/*/imkd_detector", "/imkd_detector", False), ("imkd_detectr", "/imkd_detector", False),
    ("/perception/imkd_detector", "/perception/imkd_detector", True),
])
def test_node_key_matching_follows_rcl(key: str, fqn: str, match: bool) -> None:
    assert key_matches(key, fqn) is match


def test_node_fqn_follows_remaps() -> None:
    assert node_fqn(["x"], NODE_NAME) == "/imkd_detector"
    assert node_fqn(["x", "--ros-args", "-r", "__ns:=/perception"], NODE_NAME) == "/perception/imkd_detector"
    assert node_fqn(["x", "--ros-args", "-r", "__node:=det", "-r", "__ns:=car"], NODE_NAME) == "/car/det"


def _write(tmp: Path, name: str, doc: object) -> str:
    p = tmp / name
    p.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
    return str(p)


def test_every_params_file_is_checked_alike(tmp_path: Path) -> None:
    good = _write(tmp_path, "good.yaml", {f"/**/{NODE_NAME}": {"ros__parameters": {"camera_timeout": 0.2}}})
    second = _write(tmp_path, "second.yaml", {f"/**/{NODE_NAME}": {"ros__parameters": {
        "camera_timeout": "abc", "sync_windw": 0.1, "use_sim_time": True}}})
    other = _write(tmp_path, "other.yaml", {"imkd_detectr": {"ros__parameters": {"camera_timeout": 5.0}},
                                            "/**": {"ros__parameters": {"max_detections": 10}}})
    r = check_args(["x", "--ros-args", "--params-file", good, "--params-file", second, "--params-file", other,
                    "-p", "sync_window:=0.07", "-p", "score_treshold:=0.5", "-p", "other_node:score_threshold:=9"],
                   NODE_NAME, PARAM_SPECS, CHECK)
    assert r.errors == [f"params file {second}: camera_timeout = 'abc': expected a double (like 0.1)"]
    assert f"params file {second}: unknown parameter 'sync_windw' ignored (did you mean 'sync_window'?)" in r.warnings
    assert any("node key 'imkd_detectr' does not match this node (/imkd_detector)" in w for w in r.warnings)
    assert "-p score_treshold:=0.5: unknown parameter 'score_treshold' ignored (did you mean 'score_threshold'?)" \
        in r.warnings
    assert len(r.warnings) == 3 and r.files == [good, second, other]


@pytest.mark.parametrize("args, error", [
    (["-p", "sync_window:=.inf"], "-p sync_window:=.inf: sync_window = inf: must be finite"),
    (["-p", "sync_window:=1e300"], "sync_window = 1e+300: must be finite (|v| <= 1e+06)"),
    (["-p", "camera_offsets:=[0.0, 0.0, 0.0, 0.0, 0.0, .nan]"], "camera_offsets = [0.0, 0.0, 0.0, 0.0, 0.0, nan]"),
    (["-p", "use_sim_time:=maybe"], "use_sim_time must be true or false"),
    (["-p", "diagnostics_period:=0.000001"], "diagnostics_period = 1e-06: must be [0.01, 3600]"),
    (["-p", "diagnostics_period:=1e-6"], "diagnostics_period = 1e-06: must be [0.01, 3600]"),  # a double, as rcl
    (["-p", "max_image_size:=[4096]"], "max_image_size = [4096]: must be 2 values >= 1"),
    (["-p", "device:="], "no value"),
    (["--params-file"], "--params-file needs a file name"),
    (["--params-file", "/nonexistent/x.yaml"], "cannot read it"),
])
def test_bad_values_are_errors(args: list[str], error: str) -> None:
    r = check_args(["x", "--ros-args", *args], NODE_NAME, PARAM_SPECS, CHECK)
    assert len(r.errors) == 1 and error in r.errors[0], r.errors


@pytest.mark.parametrize("text, error", [
    ("a: [1, 2\n", "YAML syntax error at line 2, column 1"),
    ("- 1\n- 2\n", "got a YAML list"),
    (f"/**/{NODE_NAME}:\n  parameters: {{}}\n", "has no 'ros__parameters' mapping"),
    (f"/**/{NODE_NAME}:\n  ros__parameters: [1]\n", "ros__parameters must be a mapping"),
    (f"/**/{NODE_NAME}:\n  ros__parameters:\n    use_sim_time: maybe\n", "use_sim_time = 'maybe'"),
])
def test_bad_files_are_errors(text: str, error: str, tmp_path: Path) -> None:
    path = _write(tmp_path, "p.yaml", text)
    r = check_args(["x", "--ros-args", "--params-file", path], NODE_NAME, PARAM_SPECS, CHECK)
    assert len(r.errors) == 1 and error in r.errors[0], r.errors


def test_shipped_params_file_is_clean() -> None:
    from imkd_ros.params import default_params_file

    r = check_args(["x", "--ros-args", "--params-file", str(default_params_file())], NODE_NAME, PARAM_SPECS, CHECK)
    assert r.errors == [] and r.warnings == []
