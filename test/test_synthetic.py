"""Synthetic nuScenes-format generator: devkit loading, table integrity, sensor geometry, determinism.

A small dataset (2 scenes x 3 samples, 256x144 images, sweeps included) is generated once per
module into a temporary directory.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from pyquaternion import Quaternion

from imkd_core.data.synthetic import RIG, SceneWorld, SyntheticConfig, generate, n_val_scenes, split_scene_names
from imkd_core.frame import CAMERAS, CLASSES, LIDAR, RADARS
from imkd_core.radar import RADAR_PCD_FIELDS, RADAR_PCD_SIZES, RADAR_PCD_TYPES

nuscenes = pytest.importorskip("nuscenes")
from nuscenes import NuScenes  # noqa: E402
from nuscenes.eval.detection.utils import category_to_detection_name, detection_name_to_rel_attributes  # noqa: E402
from nuscenes.utils.data_classes import LidarPointCloud, RadarPointCloud  # noqa: E402
from nuscenes.utils.geometry_utils import BoxVisibility, points_in_box, view_points  # noqa: E402

CFG = SyntheticConfig(scenes=2, samples_per_scene=3, image_size=(256, 144), seed=7)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("synth") / "data"
    summary = generate(root, CFG)
    return root, summary


@pytest.fixture(scope="module")
def nusc(dataset: tuple[Path, dict]) -> NuScenes:
    return NuScenes(CFG.version, str(dataset[0]), verbose=False)


def _hash_tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _global_from_sensor(nusc: NuScenes, sd_token: str) -> np.ndarray:
    sd = nusc.get("sample_data", sd_token)
    cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
    ep = nusc.get("ego_pose", sd["ego_pose_token"])
    t_es = np.eye(4)
    t_es[:3, :3], t_es[:3, 3] = Quaternion(cs["rotation"]).rotation_matrix, cs["translation"]
    t_ge = np.eye(4)
    t_ge[:3, :3], t_ge[:3, 3] = Quaternion(ep["rotation"]).rotation_matrix, ep["translation"]
    return t_ge @ t_es


def _box_local(points: np.ndarray, ann: dict) -> np.ndarray:
    """Global points (N, 3) -> |coordinates| in the annotation box frame (x along length)."""
    q = Quaternion(ann["rotation"])
    return np.abs((points - np.array(ann["translation"])) @ q.rotation_matrix)


def test_summary_and_files(dataset: tuple[Path, dict]) -> None:
    root, summary = dataset
    assert summary["scenes"] == 2 and summary["samples"] == 6
    assert summary["train_scenes"] == 1 and summary["val_scenes"] == 1
    for name in ("attribute", "calibrated_sensor", "category", "ego_pose", "instance", "log", "map", "sample",
                 "sample_annotation", "sample_data", "scene", "sensor", "visibility"):
        assert (root / CFG.version / f"{name}.json").is_file(), name
    # every detection class is present
    assert all(summary["class_counts"][c] > 0 for c in CLASSES), summary["class_counts"]


def test_tables_resolve_and_chains_are_consistent(nusc: NuScenes, dataset: tuple[Path, dict]) -> None:
    root = dataset[0]
    for scene in nusc.scene:
        log = nusc.get("log", scene["log_token"])
        assert (root / nusc.get("map", log["map_token"])["filename"]).is_file()
        # sample chain
        tok, n, prev_ts = scene["first_sample_token"], 0, -1
        while tok:
            s = nusc.get("sample", tok)
            assert s["scene_token"] == scene["token"] and s["timestamp"] > prev_ts
            assert set(s["data"]) == {*CAMERAS, LIDAR, *RADARS}
            prev_ts, last, tok, n = s["timestamp"], tok, s["next"], n + 1
        assert n == scene["nbr_samples"] and last == scene["last_sample_token"]
    # sample_data chains per (scene, channel): time-ordered, keyframes = sample data, sweeps -> next sample
    for scene in nusc.scene:
        first = nusc.get("sample", scene["first_sample_token"])
        for ch, sd_tok in first["data"].items():
            sd = nusc.get("sample_data", sd_tok)
            assert sd["prev"] == "" and sd["is_key_frame"]
            prev_ts, n_key = -1, 0
            while True:
                sample = nusc.get("sample", sd["sample_token"])
                assert sample["scene_token"] == scene["token"]
                assert sd["timestamp"] > prev_ts
                if sd["is_key_frame"]:
                    assert sample["data"][ch] == sd["token"]
                    assert abs(sd["timestamp"] - sample["timestamp"]) <= 50_000  # cameras/radars fire near the sweep
                    n_key += 1
                else:
                    assert sd["timestamp"] < sample["timestamp"]
                    assert nusc.get("sample", sample["prev"])["timestamp"] < sd["timestamp"]
                assert (root / sd["filename"]).is_file()
                assert sd["filename"].startswith(("samples/" if sd["is_key_frame"] else "sweeps/") + ch + "/")
                ep = nusc.get("ego_pose", sd["ego_pose_token"])
                assert ep["timestamp"] == sd["timestamp"]
                prev_ts = sd["timestamp"]
                if not sd["next"]:
                    break
                nxt = nusc.get("sample_data", sd["next"])
                assert nxt["prev"] == sd["token"]
                sd = nxt
            assert n_key == scene["nbr_samples"]
    # sensor rates over one keyframe interval: cameras 12 Hz, LiDAR 20 Hz, radar ~13 Hz
    counts: dict[str, int] = {}
    s1 = nusc.get("sample", nusc.scene[0]["first_sample_token"])["next"]
    for sd in nusc.sample_data:
        if sd["sample_token"] == s1:
            counts[sd["channel"]] = counts.get(sd["channel"], 0) + 1
    assert all(counts[c] == 6 for c in CAMERAS) and counts[LIDAR] == 10
    assert all(6 <= counts[r] <= 7 for r in RADARS), counts
    # annotations: chains, instances, attributes, visibility
    for inst in nusc.instance:
        tok, n = inst["first_annotation_token"], 0
        while tok:
            ann = nusc.get("sample_annotation", tok)
            assert ann["instance_token"] == inst["token"]
            last, tok, n = tok, ann["next"], n + 1
            if tok:
                assert nusc.get("sample_annotation", tok)["prev"] == last
        assert n == inst["nbr_annotations"] and last == inst["last_annotation_token"]
    detection_names = set()
    for ann in nusc.sample_annotation:
        nusc.get("visibility", ann["visibility_token"])
        name = category_to_detection_name(ann["category_name"])
        if name is None:
            assert ann["category_name"] == "movable_object.pushable_pullable"
            continue
        detection_names.add(name)
        attrs = [nusc.get("attribute", a)["name"] for a in ann["attribute_tokens"]]
        rel = detection_name_to_rel_attributes(name)
        assert len(attrs) == (1 if rel else 0) and set(attrs) <= set(rel), (name, attrs)
        v = nusc.box_velocity(ann["token"])[:2]
        if not np.all(np.isfinite(v)):  # a single annotation has no velocity
            continue
        if "vehicle.moving" in attrs or "pedestrian.moving" in attrs:
            assert np.linalg.norm(v) > 0.15, (name, v)
        if "vehicle.parked" in attrs or "pedestrian.standing" in attrs:
            assert np.linalg.norm(v) < 0.05, (name, v)
    assert detection_names == set(CLASSES)


def test_calibration_is_the_nuscenes_rig(nusc: NuScenes, dataset: tuple[Path, dict]) -> None:
    sample = nusc.sample[0]
    for ch in CAMERAS:
        sd = nusc.get("sample_data", sample["data"][ch])
        cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
        k = np.array(cs["camera_intrinsic"])
        assert (sd["width"], sd["height"]) == CFG.image_size
        full = np.array(RIG[ch][2])  # the real rig at 1600x900, scaled to the image size
        np.testing.assert_allclose(k[0], full[0] * CFG.image_size[0] / 1600.0)
        np.testing.assert_allclose(k[1], full[1] * CFG.image_size[1] / 900.0)
        assert cs["translation"] == list(RIG[ch][0]) and cs["rotation"] == list(RIG[ch][1])
        img = cv2.imread(str(dataset[0] / sd["filename"]))
        assert img.shape == (CFG.image_size[1], CFG.image_size[0], 3)
    lid = nusc.get("calibrated_sensor", nusc.get("sample_data", sample["data"][LIDAR])["calibrated_sensor_token"])
    assert abs(lid["translation"][2] - 1.84) < 0.01


def test_split_scene_names(nusc: NuScenes, dataset: tuple[Path, dict]) -> None:
    expected = {"train": ["synth-train-0000"], "val": ["synth-val-0001"]}
    assert split_scene_names(nusc) == expected
    assert split_scene_names(dataset[0]) == expected
    assert split_scene_names(dataset[0] / CFG.version) == expected
    assert n_val_scenes(SyntheticConfig(scenes=10)) == 2
    assert n_val_scenes(SyntheticConfig(scenes=2)) == 1
    assert n_val_scenes(SyntheticConfig(scenes=1)) == 0


def test_lidar_counts_match_devkit_and_points_lie_on_boxes(nusc: NuScenes, dataset: tuple[Path, dict]) -> None:
    root = dataset[0]
    for scene_idx, scene in enumerate(nusc.scene):
        world = SceneWorld(CFG, scene_idx)
        tok = scene["first_sample_token"]
        while tok:
            sample = nusc.get("sample", tok)
            lid_tok = sample["data"][LIDAR]
            path, boxes, _ = nusc.get_sample_data(lid_tok)
            pc = LidarPointCloud.from_file(path)
            raw = np.fromfile(path, dtype=np.float32).reshape(-1, 5)
            assert raw.shape[0] > 10_000 and set(np.unique(raw[:, 4])) <= set(range(32))
            assert raw[:, 3].min() >= 0 and raw[:, 3].max() <= 255
            for box, ann_tok in zip(boxes, sample["anns"]):
                ann = nusc.get("sample_annotation", ann_tok)
                assert int(points_in_box(box, pc.points[:3]).sum()) == ann["num_lidar_pts"], ann["category_name"]
            # non-ground points lie on an annotated object or on the scene's static clutter
            g = (_global_from_sensor(nusc, lid_tok) @ np.vstack([pc.points[:3], np.ones(pc.nbr_points())]))[:3].T
            above = g[g[:, 2] > 0.15]
            near = np.zeros(len(above), bool)
            t = float((sample["timestamp"] - world.t0_us) / 1e6)
            cen, yaw, size = world.all_boxes(t)
            anns = [nusc.get("sample_annotation", a) for a in sample["anns"]]
            for ann in anns:
                w, l, h = ann["size"]
                near |= (_box_local(above, ann) <= np.array([l, w, h]) / 2 + 0.5).all(1)
            for c, y, s in zip(cen[world.n_objects:], yaw[world.n_objects:], size[world.n_objects:]):
                loc = np.abs((above - c) @ np.array([[np.cos(y), -np.sin(y), 0], [np.sin(y), np.cos(y), 0],
                                                     [0, 0, 1]]))
                near |= (loc <= s / 2 + 0.5).all(1)
            assert near.mean() > 0.99, near.mean()
            # objects close to the ego and unoccluded have points
            ego = np.array(nusc.get("ego_pose", nusc.get("sample_data", lid_tok)["ego_pose_token"])["translation"])
            close = [a for a in anns if np.linalg.norm(np.array(a["translation"][:2]) - ego[:2]) < 30
                     and a["visibility_token"] == "4"]
            assert close and all(a["num_lidar_pts"] > 0 for a in close)
            tok = sample["next"]
    assert root.is_dir()


def test_radar_pcd_fields_filters_and_doppler(nusc: NuScenes, dataset: tuple[Path, dict]) -> None:
    root = dataset[0]
    n_all = n_def = n_moving = 0
    vehicle_hits = []
    for sample in nusc.sample:
        anns = [nusc.get("sample_annotation", a) for a in sample["anns"]]
        for ch in RADARS:
            sd_tok = sample["data"][ch]
            path = root / nusc.get("sample_data", sd_tok)["filename"]
            header = path.read_bytes().split(b"DATA binary\n")[0].decode().splitlines()
            assert header[1] == "VERSION 0.7"
            assert header[2].split()[1:] == list(RADAR_PCD_FIELDS)
            assert header[3].split()[1:] == [str(s) for s in RADAR_PCD_SIZES]
            assert header[4].split()[1:] == list(RADAR_PCD_TYPES)
            everything = RadarPointCloud.from_file(str(path), invalid_states=list(range(18)),
                                                   dynprop_states=list(range(8)), ambig_states=list(range(5)))
            default = RadarPointCloud.from_file(str(path))
            assert everything.points.shape[0] == 18 and everything.nbr_points() > 0
            assert np.all(everything.points[2] == 0.0)  # the ARS408 has no elevation
            n_all += everything.nbr_points()
            n_def += default.nbr_points()
            p = default.points
            mov = (np.hypot(p[8], p[9]) > 1.0) & (np.hypot(p[0], p[1]) < 55.0)  # boxes are annotated to 70 m
            if not mov.any():
                continue
            t_gs = _global_from_sensor(nusc, sd_tok)
            g = (t_gs @ np.vstack([p[:3, mov], np.ones(mov.sum())]))[:3].T
            v_g = (t_gs[:3, :3] @ np.vstack([p[8:10, mov], np.zeros(mov.sum())]))[:2].T
            for gp, vg in zip(g, v_g):
                n_moving += 1
                dists = []
                for ann in anns:
                    w, l, h = ann["size"]
                    excess = np.maximum(_box_local(gp[None], ann)[0, :2] - np.array([l, w]) / 2, 0.0)
                    dists.append((np.linalg.norm(excess), ann))
                d, ann = min(dists, key=lambda x: x[0])
                assert d < 1.5, f"moving radar return {d:.2f} m from the nearest box"
                # compensated Doppler = radial component of the box velocity
                u = (gp[:2] - t_gs[:2, 3]) / np.linalg.norm(gp[:2] - t_gs[:2, 3])
                v_box = nusc.box_velocity(ann["token"])[:2]
                if np.all(np.isfinite(v_box)):
                    assert abs(float(vg @ u) - float(v_box @ u)) < 1.0
        for ann in anns:
            if category_to_detection_name(ann["category_name"]) in ("car", "truck", "bus", "trailer"):
                ego = nusc.get("ego_pose", nusc.get("sample_data", sample["data"][LIDAR])["ego_pose_token"])
                if np.linalg.norm(np.array(ann["translation"][:2]) - ego["translation"][:2]) < 30:
                    vehicle_hits.append(ann["num_radar_pts"] > 0)
    assert n_def < n_all, "some returns must be invalid/ambiguous so the default filters matter"
    assert n_def > 0.5 * n_all
    assert n_moving > 0
    assert np.mean(vehicle_hits) > 0.4, np.mean(vehicle_hits)


def test_radar_binary_matches_numpy_layout(dataset: tuple[Path, dict], nusc: NuScenes) -> None:
    sd = nusc.get("sample_data", nusc.sample[0]["data"]["RADAR_FRONT"])
    data = (dataset[0] / sd["filename"]).read_bytes()
    head, body = data.split(b"DATA binary\n")
    n = int([ln for ln in head.decode().splitlines() if ln.startswith("POINTS")][0].split()[1])
    lut = {("F", 4): "<f4", ("I", 1): "i1", ("I", 2): "<i2"}
    dt = np.dtype([(f, lut[(t, s)]) for f, t, s in zip(RADAR_PCD_FIELDS, RADAR_PCD_TYPES, RADAR_PCD_SIZES)])
    arr = np.frombuffer(body[: n * dt.itemsize], dtype=dt)
    pc = RadarPointCloud.from_file(str(dataset[0] / sd["filename"]), invalid_states=list(range(18)),
                                   dynprop_states=list(range(8)), ambig_states=list(range(5)))
    np.testing.assert_allclose(pc.points, np.stack([arr[f].astype(np.float64) for f in RADAR_PCD_FIELDS]))
    assert np.array_equal(arr["id"], np.arange(n))
    assert set(np.unique(arr["dyn_prop"])) <= set(range(8)) and set(np.unique(arr["ambig_state"])) <= set(range(5))


def test_camera_boxes_change_pixels(nusc: NuScenes, dataset: tuple[Path, dict]) -> None:
    """Every well-visible box in a keyframe image changes the pixels inside its projection.

    The stored JPEG is re-rendered from the scene model; hiding one object must change a good part
    of the pixels inside the projection of its annotated box (so boxes and pixels agree).
    """
    world = SceneWorld(CFG, 0)
    inst_to_obj = {world.instance_token(i): i for i in range(world.n_objects)}
    w_img, h_img = CFG.image_size
    changed_all = []
    tok = nusc.scene[0]["first_sample_token"]
    while tok:
        sample = nusc.get("sample", tok)
        for ch in CAMERAS:
            sd = nusc.get("sample_data", sample["data"][ch])
            t = (sd["timestamp"] - world.t0_us) / 1e6
            full = world.render_camera(ch, t)
            stored = cv2.imread(str(dataset[0] / sd["filename"]))
            assert np.abs(stored.astype(np.int16) - full).mean() < 4.0  # the file is this render (JPEG noise)
            _, boxes, k = nusc.get_sample_data(sd["token"], box_vis_level=BoxVisibility.ALL)
            for box in boxes:
                ann = nusc.get("sample_annotation", box.token)
                if ann["visibility_token"] != "4" or np.linalg.norm(box.center) > 35:
                    continue
                corners = view_points(box.corners(), k, normalize=True)[:2].T
                mask = np.zeros((h_img, w_img), np.uint8)
                cv2.fillConvexPoly(mask, cv2.convexHull(np.round(corners).astype(np.int32)), 1)
                if mask.sum() < 30:
                    continue
                hidden = world.render_camera(ch, t, hidden=[inst_to_obj[ann["instance_token"]]])
                diff = np.abs(hidden.astype(np.int16) - full).max(-1)
                changed = float((diff[mask > 0] > 10).mean())
                assert changed > 0.3, (ch, ann["category_name"], changed)
                changed_all.append(changed)
        tok = sample["next"]
    assert len(changed_all) >= 20 and np.median(changed_all) > 0.7


def test_painter_order_handles_long_boxes() -> None:
    """A pedestrian behind a long trailer is drawn before it although its centre is nearer."""
    from imkd_core.data.synthetic.appearance import _UNIT_CORNERS
    from imkd_core.data.synthetic.camera import _painter_rank

    centres = np.array([[6.0, -4.25, 1.9], [0.0, -6.5, 0.9]])  # trailer, pedestrian right behind it
    sizes = np.array([[16.0, 2.5, 3.8], [0.7, 0.7, 1.8]])  # camera at (0, 0, 1.5) looking at -y
    corners = _UNIT_CORNERS[None] * sizes[:, None] + centres[:, None]
    dist = np.linalg.norm(centres, axis=1)
    assert dist[1] < dist[0]
    z = np.zeros((2, 8))
    rank = _painter_rank(corners, z, z, np.zeros(2, bool), np.ones(2), np.zeros(2), centres, sizes,
                         np.array([0.0, 0.0, 1.5]), dist)
    assert rank[1] < rank[0]  # pedestrian first, trailer painted over it
    # and a pedestrian between the camera and the trailer is painted last
    centres[1] = [0.0, -1.5, 0.9]
    corners = _UNIT_CORNERS[None] * sizes[:, None] + centres[:, None]
    rank = _painter_rank(corners, z, z, np.zeros(2, bool), np.ones(2), np.zeros(2), centres, sizes,
                         np.array([0.0, 0.0, 1.5]), np.linalg.norm(centres, axis=1))
    assert rank[1] > rank[0]


def test_same_seed_same_bytes_for_any_jobs(dataset: tuple[Path, dict], tmp_path: Path) -> None:
    root = dataset[0]
    again = tmp_path / "again"
    generate(again, SyntheticConfig(**{**CFG.__dict__, "jobs": 2}))
    a, b = _hash_tree(root), _hash_tree(again)
    assert a.keys() == b.keys()
    differ = [k for k in a if a[k] != b[k]]
    assert not differ, differ[:5]
    other = tmp_path / "other"
    generate(other, SyntheticConfig(scenes=1, samples_per_scene=2, image_size=(256, 144), seed=8, sweeps=False))
    cam = sorted((other / "samples" / "CAM_FRONT").iterdir())[0].read_bytes()
    assert hashlib.sha256(cam).hexdigest() not in set(a.values())


def test_config_errors_and_existing_output(tmp_path: Path, dataset: tuple[Path, dict]) -> None:
    for bad in (dict(scenes=0), dict(samples_per_scene=0), dict(image_size=(8, 8)), dict(version="a/b"),
                dict(val_fraction=1.0), dict(jobs=0)):
        with pytest.raises(ValueError):
            SyntheticConfig(**bad)
    with pytest.raises(FileExistsError):
        generate(dataset[0], CFG)


def test_cli_writes_atomically_and_prints_json(tmp_path: Path, repo_root: Path) -> None:
    out = tmp_path / "cli"
    proc = subprocess.run([sys.executable, "-m", "train.make_synthetic", "--out", str(out),
                           "--scenes", "1", "--samples-per-scene", "2", "--image-size", "96x54", "--jobs", "1"],
                          capture_output=True, text=True, timeout=300, cwd=repo_root)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["scenes"] == 1 and summary["samples"] == 2 and summary["files"] > 0 and summary["seconds"] > 0
    assert out.is_dir() and not (tmp_path / "cli.partial").exists()
    nusc = NuScenes("v1.0-synth", str(out), verbose=False)
    assert len(nusc.sample) == 2
    proc = subprocess.run([sys.executable, "-m", "train.make_synthetic", "--out", str(out)],
                          capture_output=True, text=True, timeout=60, cwd=repo_root)
    assert proc.returncode == 2 and "exists" in proc.stderr


@pytest.mark.parametrize("classes", [("car", "truck", "bus", "trailer", "construction_vehicle"),
                                     ("bicycle", "motorcycle")], ids=["vehicles", "cycles"])
def test_vehicles_and_cycles_have_a_front_and_a_back_in_lidar(classes: tuple[str, ...]) -> None:
    """Orientation is learnable from LiDAR: returns on a vehicle's or cycle's back (plate, rear
    reflectors) are brighter than on its front (windscreen, grille, fork); a box with equal ends
    would leave 180 deg open."""
    from imkd_core.data.synthetic.config import _sensor_to_ego

    world = SceneWorld(SyntheticConfig(scenes=2, samples_per_scene=4, seed=3, sweeps=False), 0)
    wanted = np.array([c in classes for c in world.obj_cls], bool)
    front, back = [], []
    for t in np.arange(0.5, 8.0, 0.5):
        pts, hid, _ = world.cast_lidar(float(t), np.random.default_rng(0))
        T = world.ego_transform(float(t)) @ _sensor_to_ego(LIDAR)
        g = pts[:, :3] @ T[:3, :3].T + T[:3, 3]
        cen, yaw, size = world.all_boxes(float(t))
        sel = (hid >= 0) & (hid < world.n_objects)
        sel[sel] = wanted[hid[sel]]
        i = hid[sel]
        d = g[sel, :2] - cen[i, :2]
        u = (d[:, 0] * np.cos(yaw[i]) + d[:, 1] * np.sin(yaw[i])) / (size[i, 0] / 2)  # +1 front, -1 back
        front.append(pts[sel, 3][u > 0.9])
        back.append(pts[sel, 3][u < -0.9])
    front, back = np.concatenate(front), np.concatenate(back)
    assert front.size > 30 and back.size > 30
    assert np.median(back) > 2.5 * np.median(front)


def test_people_standing_beside_the_road_face_it() -> None:
    """A still person's heading must be learnable: standing and sitting people face the road
    (within 0.6 rad), so their yaw follows from where they are; walkers face where they go."""
    world = SceneWorld(SyntheticConfig(scenes=2, samples_per_scene=4, seed=3, sweeps=False), 0)
    cen, yaw, vel = world.object_states(1.0)
    _, _, h = world.road.pose(world.obj_s0, world.obj_d)
    ped = np.array([c == "pedestrian" for c in world.obj_cls], bool)
    still = ped & (world.obj_mode != 1) & (world.obj_v == 0)
    walking = ped & (np.linalg.norm(vel, axis=1) > 0.5)
    assert still.sum() >= 5 and walking.sum() >= 5
    to_road = h[still] - np.sign(world.obj_d[still]) * np.pi / 2
    err = np.abs(np.angle(np.exp(1j * (yaw[still] - to_road))))
    assert err.max() <= 0.6 + 1e-6
    heading = np.arctan2(vel[walking, 1], vel[walking, 0])
    assert np.abs(np.angle(np.exp(1j * (yaw[walking] - heading)))).max() < 0.1


def test_bench_preset_resolves_the_benchmark() -> None:
    from imkd_core.data.synthetic import preset, scene_name

    cfg = preset("bench", jobs=2)
    n_val = n_val_scenes(cfg)
    assert n_val >= 12 and n_val * cfg.samples_per_scene >= 240 and cfg.jobs == 2
    assert sum(scene_name(cfg, i).startswith("synth-val-") for i in range(cfg.scenes)) == n_val
    assert preset("bench") == preset("bench")   # one fixed world
    with pytest.raises(ValueError, match="unknown synthetic preset"):
        preset("nope")
