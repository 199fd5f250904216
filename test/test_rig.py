"""Rig files: the shipped rigs load, the nuScenes rig is the one imkd_core.frame and the topic table
describe, bad files give one-line errors (exit 2 in the command-line tools)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from imkd_core.data.synthetic.config import RIG as SYNTHETIC_RIG
from imkd_core.frame import CAMERAS, LIDAR, RADARS
from imkd_core.radar import RADAR_FIELD_INDEX, RADAR_PCD_FIELDS, canonical_radar, radar_filter_mask
from imkd_core.rig import RIG_DIR, RigError, load_rig, rig_from_dict, rig_mismatch

REPO = Path(__file__).resolve().parents[1]


def test_nuscenes_rig_is_the_frame_order_and_the_topic_table() -> None:
    from imkd_ros import topics

    rig = load_rig("nuscenes")
    assert rig.camera_names == CAMERAS and rig.radar_names == RADARS and rig.lidar.name == LIDAR
    assert rig.reference_camera == "CAM_FRONT" and (rig.radar_sweeps, rig.lidar_sweeps) == (6, 10)
    assert tuple(c.topic for c in rig.cameras) == topics.IMAGE_TOPICS
    assert tuple(c.info_topic for c in rig.cameras) == topics.CAMERA_INFO_TOPICS
    assert tuple(r.topic for r in rig.radars) == topics.RADAR_TOPICS
    assert [c.frame for c in rig.cameras] == [topics.sensor_frame(c) for c in CAMERAS]
    assert all(r.nuscenes_layout for r in rig.radars)
    for c in rig.cameras:  # the generator's calibration, float for float
        assert (c.translation, c.rotation, c.intrinsic) == SYNTHETIC_RIG[c.name]
    assert [c.sync_offset for c in rig.cameras] == [0.0, 0.0, 0.0, 0.0, 0.0, -0.01]


def test_config_rigs_is_the_package_copy() -> None:
    assert (REPO / "config" / "rigs").resolve() == RIG_DIR
    assert {p.name for p in RIG_DIR.glob("*.yaml")} >= {"nuscenes.yaml", "compact4.yaml"}


def test_compact4_rig() -> None:
    rig = load_rig("compact4")
    assert len(rig.cameras) == 4 and len(rig.radars) == 2
    assert len({c.image_size for c in rig.cameras}) == 3
    front = rig.cameras[0]
    K, T = rig.calibration((front.image_size[1], front.image_size[0]))
    fov = 2 * np.degrees(np.arctan(front.image_size[0] / 2 / K[0, 0, 0]))
    assert fov == pytest.approx(120.0)
    assert T[0][:3, 2] @ np.array([1.0, 0.0, 0.0]) > 0.99     # optical z looks forward
    assert T[1][:3, 2] @ np.array([0.0, -1.0, 0.0]) > 0.99    # CAM_RIGHT looks right
    assert T[0][:3, 1] @ np.array([0.0, 0.0, -1.0]) > 0.99    # optical y points down
    for r in rig.radars:
        assert set(r.source_fields) == {"x", "y", "z", "rcs", "vx", "vy"} and not r.nuscenes_layout
    assert load_rig(REPO / "config" / "rigs" / "compact4.yaml") == rig


def test_rig_mismatch_names_both_rigs() -> None:
    nus, c4 = load_rig("nuscenes"), load_rig("compact4")
    assert rig_mismatch(nus, nus) is None and rig_mismatch(c4, c4.signature()) is None
    msg = rig_mismatch(c4, nus)
    assert "'compact4' (4 cameras" in msg and "'nuscenes' (6 cameras" in msg and "\n" not in msg


def test_canonical_radar_keeps_filters_only_where_fields_exist() -> None:
    cols = {"x": np.array([1.0, 2.0]), "y": np.zeros(2), "z": np.zeros(2), "rcs": np.array([3.0, 4.0]),
            "vx": np.array([0.5, 0.0]), "vy": np.zeros(2)}
    fields = {"x": "x", "y": "y", "z": "z", "rcs": "rcs", "vx_comp": "vx", "vy_comp": "vy"}
    pts = canonical_radar(cols, fields, 2)
    assert pts.shape == (len(RADAR_PCD_FIELDS), 2)
    assert radar_filter_mask(pts).all()  # no state fields: no state rule drops anything
    assert pts[RADAR_FIELD_INDEX["vx_comp"], 0] == 0.5 and pts[RADAR_FIELD_INDEX["rcs"], 1] == 4.0
    cols["ambig_state"] = np.array([3.0, 1.0])  # a radar that does publish the Doppler state
    assert radar_filter_mask(canonical_radar(cols, {**fields, "ambig_state": "ambig_state"}, 2)).tolist() == [True,
                                                                                                              False]


def _minimal() -> dict:
    return {"name": "r", "cameras": [{"name": "C", "image_size": [64, 32], "fov_deg": 90, "translation": [0, 0, 1],
                                      "yaw_deg": 0}],
            "radars": [{"name": "R", "fields": {"x": "x", "y": "y", "z": "z", "rcs": "rcs", "vx_comp": "vx",
                                                "vy_comp": "vy"}, "translation": [0, 0, 0], "yaw_deg": 0}]}


@pytest.mark.parametrize("edit, match", [
    (lambda d: d.pop("cameras"), "'cameras' must be a non-empty list"),
    (lambda d: d["cameras"][0].pop("fov_deg"), "needs 'intrinsic'"),
    (lambda d: d["radars"][0]["fields"].pop("rcs"), r"lacks rcs \(needed by the model\)"),
    (lambda d: d["radars"][0]["fields"].update(speed="v"), "unknown column"),
    (lambda d: d["cameras"][0].update(colour="red"), "unknown key"),
    (lambda d: d["cameras"].append(dict(d["cameras"][0])), "names must be distinct"),
    (lambda d: (d["cameras"][0].pop("yaw_deg"), d["cameras"][0].update(rotation=[1, 1, 0, 0])), "unit quaternion"),
    (lambda d: d.update(radar_sweeps=0), "radar_sweeps must be an integer >= 1"),
    (lambda d: d["cameras"][0].update(input_size=[100, 64]), "multiples of 32"),
])
def test_bad_rig_is_one_line(edit, match) -> None:
    d = _minimal()
    rig_from_dict(d)  # the untouched one is fine
    edit(d)
    with pytest.raises(RigError, match=match) as e:
        rig_from_dict(d, "my.yaml")
    assert "\n" not in str(e.value) and "my.yaml" in str(e.value)


def test_unknown_and_unreadable_rig_files(tmp_path: Path) -> None:
    with pytest.raises(RigError, match="unknown rig 'nope'; shipped rigs: compact4, nuscenes"):
        load_rig("nope")
    with pytest.raises(RigError, match="No such file"):
        load_rig(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(RigError, match="not YAML"):
        load_rig(bad)
    bad.write_text(yaml.safe_dump(_minimal()))
    assert load_rig(bad).camera_names == ("C",)


def test_synthetic_world_of_compact4_reads_back(tmp_path: Path) -> None:
    """The generator renders the rig (sizes, fields); the reader builds 4-camera frames from it,
    the smaller cameras resized to the reference camera's size with K scaled to match."""
    from imkd_core.data.nuscenes import NuScenesReader, load_nuscenes
    from imkd_core.data.synthetic import SyntheticConfig, generate
    from imkd_core.pcd import parse_pcd

    generate(tmp_path, SyntheticConfig(scenes=1, samples_per_scene=2, seed=3, image_size=(320, 180), sweeps=False,
                                       lidar_azimuth_steps=90, val_fraction=0.0, rig="compact4"))
    nusc = load_nuscenes(str(tmp_path), "v1.0-synth")
    sizes = {sd["channel"]: (sd["width"], sd["height"]) for sd in nusc.sample_data if sd["width"]}
    assert sizes == {"CAM_FRONT_WIDE": (320, 180), "CAM_RIGHT": (240, 150), "CAM_LEFT": (240, 150),
                     "CAM_REAR": (200, 150)}
    radar_sd = next(sd for sd in nusc.sample_data if sd["channel"] == "RADAR_REAR")
    assert parse_pcd((tmp_path / radar_sd["filename"]).read_bytes()).dtype.names == ("x", "y", "z", "rcs", "vx", "vy")
    assert {s["channel"] for s in nusc.sensor} == {"CAM_FRONT_WIDE", "CAM_RIGHT", "CAM_REAR", "CAM_LEFT",
                                                   "RADAR_FRONT", "RADAR_REAR", "LIDAR_TOP"}
    reader = NuScenesReader(tmp_path, "v1.0-synth", rig="compact4", nusc=nusc, input_size=(64, 160))
    frame, gt = reader[0]
    frame.validate(4)
    assert frame.images.shape == (4, 90, 160, 3) and frame.camera_mask.all() and len(gt) > 0
    assert len(frame.radar) > 0 and np.isfinite(frame.radar).all()
    # CAM_RIGHT: decoded at full size (240 x 150 >= 160 x 64 only at reduction 1), resized to 160 x 90
    cs = nusc.get("calibrated_sensor", nusc.get("sample_data", nusc.sample[0]["data"]["CAM_RIGHT"])
                  ["calibrated_sensor_token"])
    K = np.asarray(cs["camera_intrinsic"])
    assert frame.intrinsics[1][0, 0] == pytest.approx(K[0, 0] * 160 / 240)
    assert frame.intrinsics[1][1, 1] == pytest.approx(K[1, 1] * 90 / 150)
    with pytest.raises(Exception, match="4"):
        frame.validate(6)


@pytest.mark.parametrize("tool", ["make_synthetic", "nuscenes_to_bag", "train"])
def test_tools_refuse_a_bad_rig_in_one_line(tool: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "van.yaml"
    radar = {"name": "R", "fields": {"x": "x"}, "translation": [0, 0, 0], "yaw_deg": 0}
    bad.write_text(yaml.safe_dump({**_minimal(), "radars": [radar]}))
    out = tmp_path / "out"
    if tool == "make_synthetic":
        from train.make_synthetic import main
        argv = ["--out", str(out), "--rig", str(bad)]
    elif tool == "nuscenes_to_bag":
        from imkd_ros.nuscenes_to_bag import main
        argv = ["--dataroot", str(tmp_path), "--out", str(out), "--rig", str(bad), "--no-gt"]
    else:
        from train.train import main
        argv = ["--model", "student", "--dataroot", str(tmp_path), "--train-scenes", "x", "--out", str(out),
                "--rig", str(bad), "--device", "cpu"]
    try:
        rc = main(argv)
    except SystemExit as e:
        rc = e.code
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert "van.yaml" in err[0] and "lacks y, z, rcs, vx_comp, vy_comp" in err[0]
    assert not (out.exists() and any(out.iterdir()))  # nothing written


def test_checkpoint_config_records_the_rig_so_another_folder_finds_it(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A shipped rig is recorded by name, a rig file by absolute path (the node may start
    elsewhere); a config without a rig (an older checkpoint's) reads as nuScenes."""
    import types

    from imkd_core.config import IMKDConfig, get_config
    from train.run_config import build_config

    (tmp_path / "myvan.yaml").write_text((RIG_DIR / "compact4.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    ns = types.SimpleNamespace(config="tiny", overrides=[], kd=None, rig="myvan.yaml")
    assert build_config(ns).data.rig == str(tmp_path.resolve() / "myvan.yaml")
    assert build_config(types.SimpleNamespace(config="tiny", overrides=[], kd=None, rig="compact4")).data.rig \
        == "compact4"
    d = get_config("tiny").to_dict()
    del d["data"]["rig"]
    assert IMKDConfig.from_dict(d).data.rig == "nuscenes"
