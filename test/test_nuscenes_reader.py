"""NuScenesReader on the real two-scene nuScenes subset (../shared/nuscenes; skipped when absent)
and on a small synthetic dataset (test/datasets.py).

Dataset-level checks are parametrised over DATASETS; the expectations specific to the real subset
(its scenes, its parked objects, its missing sweep files) live in the `real_only` tests.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from imkd_core.data.nuscenes import (
    NuScenesDataError,
    NuScenesReader,
    load_nuscenes,
    read_radar_pcd,
    resolve_scenes,
)
from imkd_core.frame import CAMERAS, CLASSES, RADARS

from . import datasets

# Sweep files of the real subset are absent by design: the reader warns once (tested explicitly).
pytestmark = pytest.mark.filterwarnings("ignore:nuScenes sweep files missing:RuntimeWarning")

REAL_ROOT, REAL_VERSION = datasets.REAL_ROOT, datasets.REAL_VERSION
DATASETS = datasets.params("real", "synthetic")


def real_only(fn):
    """Tests whose expectations are specific to the real two-scene subset."""
    fn = pytest.mark.skipif(not datasets.HAS_REAL, reason="real nuScenes subset absent")(fn)
    return pytest.mark.nuscenes(fn)


_NUSC: dict[tuple[str, str], object] = {}


def nusc_of(root: Path, version: str):
    """One devkit instance per dataset for the whole module (loading takes seconds)."""
    key = (str(root), version)
    if key not in _NUSC:
        _NUSC[key] = load_nuscenes(str(root), version)
    return _NUSC[key]


def reader_of(root: Path, version: str, **kw) -> NuScenesReader:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # missing sweeps: tested separately
        return NuScenesReader(root, version, nusc=nusc_of(root, version), **kw)


def to_global(frame, xyz: np.ndarray) -> np.ndarray:
    T = frame.ego_to_global
    return xyz.astype(np.float64) @ T[:3, :3].T + T[:3, 3]


def ann_box(nusc, ann_token: str):
    from nuscenes.utils.data_classes import Box
    from pyquaternion import Quaternion

    a = nusc.get("sample_annotation", ann_token)
    return Box(a["translation"], a["size"], Quaternion(a["rotation"]))


def project_all(frame, xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3) ego points -> per camera (6, N) in-image mask (depth > 0.5 m) and (6, N, 2) pixels."""
    H, W = frame.image_size
    ego_to_cam = np.linalg.inv(frame.cam_to_ego)
    pc = np.einsum("cij,nj->cni", ego_to_cam[:, :3, :3], xyz) + ego_to_cam[:, None, :3, 3]
    uvw = np.einsum("cij,cnj->cni", frame.intrinsics, pc)
    z = uvw[..., 2]
    uv = uvw[..., :2] / np.maximum(z[..., None], 1e-6)
    ok = (z > 0.5) & (uv[..., 0] >= 0) & (uv[..., 0] < W) & (uv[..., 1] >= 0) & (uv[..., 1] < H)
    return ok, uv


# ----------------------------------------------------------------------------- every dataset
@pytest.mark.parametrize("ds", DATASETS)
def test_all_frames_complete(ds) -> None:
    spec = datasets.get(ds)
    root, version, n_frames, hw = spec.root, spec.version, spec.n_frames, spec.image_hw
    reader = reader_of(root, version, radar_sweeps=6, lidar_sweeps=3, image_reduction=1)
    assert len(reader) == n_frames
    assert len(set(reader.sample_tokens)) == n_frames
    stamps = []
    for i in range(len(reader)):
        frame, gt = reader[i]
        frame.validate()
        assert frame.images.shape == (len(CAMERAS), hw[0], hw[1], 3)
        assert frame.camera_mask.all()
        assert len(frame.radar) > 0 and len(frame.lidar) > 0
        assert np.isfinite(frame.lidar).all()
        if spec.has_sweeps and reader.nusc.get("sample", frame.token)["prev"]:  # sweeps before the keyframe
            assert len(np.unique(frame.lidar[:, 4])) == 3 and np.unique(frame.radar[:, 6]).size > 5
            assert frame.lidar[:, 4].max() > 0.05 and frame.radar[:, 6].max() > 0.05
        assert frame.token == reader.sample_tokens[i]
        assert len(gt.boxes) == len(gt.labels) == len(gt.attributes) == len(gt.instance_tokens)
        assert np.isfinite(gt.boxes).all()
        stamps.append(frame.stamp)
        # rotation blocks are proper rotations; the camera z axis (optical) is roughly horizontal
        R = frame.cam_to_ego[:, :3, :3]
        assert np.allclose(R @ R.transpose(0, 2, 1), np.eye(3), atol=1e-6)
        assert np.all(np.abs(R[:, 2, 2]) < 0.2)
    assert all(isinstance(s, int) for s in stamps)


@pytest.mark.parametrize("ds", DATASETS)
def test_ground_truth_maps_back_to_annotations(ds) -> None:
    """GT in the reference ego frame, mapped with ego_to_global, is the devkit's annotation."""
    from nuscenes.eval.detection.utils import category_to_detection_name

    spec = datasets.get(ds)
    root, version, n_frames = spec.root, spec.version, spec.n_frames
    reader = reader_of(root, version, load_lidar=False, radar_sweeps=1, image_reduction=8)
    nusc = reader.nusc
    for i in np.linspace(0, n_frames - 1, 5).astype(int):
        gt = reader.ground_truth(int(i))
        T = reader.ego_to_global(int(i))
        sample = nusc.get("sample", reader.sample_tokens[i])
        anns = [nusc.get("sample_annotation", t) for t in sample["anns"]]
        anns = [a for a in anns if category_to_detection_name(a["category_name"]) is not None]
        assert len(anns) == len(gt) > 0
        for a, box, label, attr, inst in zip(anns, gt.boxes, gt.labels, gt.attributes, gt.instance_tokens):
            assert CLASSES[label] == category_to_detection_name(a["category_name"])
            assert inst == a["instance_token"]
            assert np.allclose(T[:3, :3] @ box[:3] + T[:3, 3], a["translation"], atol=1e-4)
            assert np.allclose(box[3:6], [a["size"][1], a["size"][0], a["size"][2]], atol=1e-5)
            heading = T[:3, :3] @ [np.cos(box[6]), np.sin(box[6]), 0.0]
            q = a["rotation"]
            yaw = np.arctan2(2 * (q[0] * q[3] + q[1] * q[2]), 1 - 2 * (q[2] ** 2 + q[3] ** 2))
            assert abs(np.sin(0.5 * (np.arctan2(heading[1], heading[0]) - yaw))) < 0.01
            v = np.nan_to_num(nusc.box_velocity(a["token"]))
            v_back = T[:3, :3] @ [box[7], box[8], 0.0]
            assert np.allclose(v_back[:2], v[:2], atol=0.05 + 0.05 * abs(v[2]) + 1e-3)
            names = [nusc.get("attribute", t)["name"] for t in a["attribute_tokens"]]
            assert attr == (names[0] if names else "")
        assert np.array_equal(gt.num_lidar_pts, [a["num_lidar_pts"] for a in anns])


@pytest.mark.parametrize("ds", DATASETS)
def test_reduced_decode_scales_intrinsics(ds) -> None:
    """A JPEG decoded at 1/4 scale with the scaled K projects points where the full image does."""
    spec = datasets.get(ds)
    root, version, hw = spec.root, spec.version, spec.image_hw
    full = reader_of(root, version, lidar_sweeps=1, image_reduction=1)[0][0]
    red = reader_of(root, version, lidar_sweeps=1, image_reduction=4)[0][0]
    assert red.images.shape[1:3] == (-(-hw[0] // 4), -(-hw[1] // 4))  # libjpeg rounds up
    assert np.allclose(full.cam_to_ego, red.cam_to_ego)
    p = np.array([2.0, 1.0, 10.0])  # a point in front of camera 0
    u_full = full.intrinsics[0] @ p
    u_red = red.intrinsics[0] @ p
    u_full, u_red = u_full[:2] / u_full[2], u_red[:2] / u_red[2]
    assert np.allclose((u_red + 0.5) * 4, u_full + 0.5, atol=1e-6)
    # the DCT-reduced decode is a 4x4 block mean on the pixel grid that scale_intrinsics(1/4) assumes
    import cv2

    h, w = red.images.shape[1:3]
    img = full.images[0].astype(np.float32)
    padded = np.pad(img, ((0, 4 * h - img.shape[0]), (0, 4 * w - img.shape[1]), (0, 0)), mode="edge")
    area = padded.reshape(h, 4, w, 4, 3).mean(axis=(1, 3))
    err = np.abs(area - red.images[0])[2:-2, 2:-2].mean()
    shifted = cv2.warpAffine(area, np.float32([[1, 0, 0.5], [0, 1, 0]]), (w, h))
    err_shifted = np.abs(shifted - red.images[0])[2:-2, 2:-2].mean()
    assert err < 1.0 and err_shifted > 2 * err, (err, err_shifted)


@pytest.mark.parametrize("ds", DATASETS)
def test_lidar_points_in_boxes_match_devkit(ds) -> None:
    """Keyframe sweep: points per GT box equal the devkit's points_in_box on its own load."""
    from nuscenes.utils.data_classes import LidarPointCloud
    from nuscenes.utils.geometry_utils import points_in_box

    spec = datasets.get(ds)
    root, version, n_frames = spec.root, spec.version, spec.n_frames
    reader = reader_of(root, version, lidar_sweeps=1, radar_sweeps=1, image_reduction=8)
    nusc = reader.nusc
    compared = 0
    for i in np.linspace(0, n_frames - 1, 6).astype(int):
        frame, gt = reader[int(i)]
        sample = nusc.get("sample", frame.token)
        sd = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
        pc = LidarPointCloud.from_file(str(root / sd["filename"]))
        cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
        ep = nusc.get("ego_pose", sd["ego_pose_token"])
        from pyquaternion import Quaternion

        pc.rotate(Quaternion(cs["rotation"]).rotation_matrix)
        pc.translate(np.array(cs["translation"]))
        pc.rotate(Quaternion(ep["rotation"]).rotation_matrix)
        pc.translate(np.array(ep["translation"]))
        ours = to_global(frame, frame.lidar[:, :3]).T
        for ann_token in sample["anns"]:
            box = ann_box(nusc, ann_token)
            expected = int(points_in_box(box, pc.points[:3]).sum())
            got = int(points_in_box(box, ours).sum())
            assert got == expected, f"sample {frame.token} annotation {ann_token}: {got} != devkit {expected}"
            compared += expected > 0
        # the reader's own ego-frame boxes (upright, yaw only: the ego frame tilts with the road, up
        # to ~5 deg here) hold nearly the same points in total
        devkit = {nusc.get("sample_annotation", t)["instance_token"]:
                  int(points_in_box(ann_box(nusc, t), pc.points[:3]).sum()) for t in sample["anns"]}
        d = frame.lidar[None, :, :3] - gt.boxes[:, None, :3]
        c, s = np.cos(gt.boxes[:, 6:7]), np.sin(gt.boxes[:, 6:7])
        lx, ly = c * d[..., 0] + s * d[..., 1], -s * d[..., 0] + c * d[..., 1]
        b = gt.boxes[:, None, :]
        inside = (np.abs(lx) <= b[..., 3] / 2) & (np.abs(ly) <= b[..., 4] / 2) & (np.abs(d[..., 2]) <= b[..., 5] / 2)
        ours_total = int(inside.sum())
        dev_total = sum(devkit[t] for t in gt.instance_tokens)
        assert abs(ours_total - dev_total) <= 0.05 * dev_total, (ours_total, dev_total)
    assert compared > 50


@pytest.mark.parametrize("ds", DATASETS)
def test_radar_near_boxes_inside_seeing_camera_frusta(ds) -> None:
    """Radar returns within 1 m of a GT box project into the image of a camera that sees that box."""
    spec = datasets.get(ds)
    root, version, n_frames = spec.root, spec.version, spec.n_frames
    reader = reader_of(root, version, lidar_sweeps=1, radar_sweeps=1, image_reduction=8)
    inside = total = 0
    for i in np.linspace(0, n_frames - 1, 8).astype(int):
        frame, gt = reader[int(i)]
        box_seen, _ = project_all(frame, gt.boxes[:, :3].astype(np.float64))
        for b, seen in zip(gt.boxes, box_seen.T):
            if not seen.any():
                continue
            d = frame.radar[:, :2] - b[:2]
            c, s = np.cos(b[6]), np.sin(b[6])
            lx, ly = c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1]
            near = (np.abs(lx) <= b[3] / 2 + 1.0) & (np.abs(ly) <= b[4] / 2 + 1.0)
            if not near.any():
                continue
            ok, _ = project_all(frame, frame.radar[near, :3].astype(np.float64))
            inside += int((ok & seen[:, None]).any(axis=0).sum())
            total += int(near.sum())
    print(f"radar points within 1 m of camera-visible GT boxes: {total}; inside a seeing camera: {inside / total:.3f}")
    assert total >= 20, f"too few radar points near boxes ({total})"
    assert inside / total >= 0.9, f"only {inside}/{total} radar points near boxes fall inside the seeing cameras"


@pytest.mark.parametrize("ds", DATASETS)
def test_radar_pcd_reader_equals_devkit(ds) -> None:
    """The vectorised PCD decoder returns exactly the devkit's RadarPointCloud (filters disabled)."""
    from nuscenes.utils.data_classes import RadarPointCloud

    spec = datasets.get(ds)
    root = spec.root
    files = sorted((root / "samples").glob("RADAR_*/*.pcd"))
    assert files
    for path in files:
        ours = read_radar_pcd(str(path))
        ref = RadarPointCloud.from_file(str(path), invalid_states=list(range(18)), dynprop_states=list(range(8)),
                                        ambig_states=list(range(5))).points
        assert ours.shape == ref.shape and np.array_equal(ours, ref), path


@pytest.mark.parametrize("ds", DATASETS)
def test_truncated_radar_file_named(ds, tmp_path: Path) -> None:
    spec = datasets.get(ds)
    src = sorted((spec.root / "samples").glob("RADAR_FRONT/*.pcd"))[0]
    data = src.read_bytes()
    bad = tmp_path / src.name
    header_end = data.index(b"DATA binary") + len(b"DATA binary\n")
    bad.write_bytes(data[: header_end + 43 * 3])  # 3 points (43 bytes each) where WIDTH says more
    with pytest.raises(NuScenesDataError, match=src.name):
        read_radar_pcd(str(bad))


# ----------------------------------------------------------------------------- real data
def _register_translation(a: np.ndarray, b: np.ndarray, iters: int = 15, keep: float = 0.5) -> np.ndarray:
    """Translation-only trimmed ICP: the offset t that moves cloud a (N, 3) onto cloud b (M, 3).

    The centroid of the points inside a box moves with the side the sensor sees (a car passed at
    7 m shows its rear, then its flank): registering the surfaces measures where the object is.
    """
    from scipy.spatial import cKDTree

    tree = cKDTree(b)
    t = np.zeros(3)
    for _ in range(iters):
        dist, nn = tree.query(a + t)
        sel = dist <= np.quantile(dist, keep)
        t = t + (b[nn[sel]] - (a[sel] + t)).mean(axis=0)
    return t


@real_only
def test_parked_object_lidar_lands_at_same_global_position() -> None:
    """Static objects seen in two consecutive keyframes: their LiDAR points, compensated into each
    frame's reference ego frame and mapped to global, land at the same place (0.3 m), while in the
    two ego frames they are metres apart (so the check is not trivially met)."""
    from nuscenes.utils.geometry_utils import points_in_box

    reader = reader_of(REAL_ROOT, REAL_VERSION, lidar_sweeps=1, radar_sweeps=1, image_reduction=8)
    nusc = reader.nusc
    frames: dict[int, object] = {}

    def frame(j: int):
        if j not in frames:
            frames[j] = reader[j][0]
        return frames[j]

    offsets, ego_offsets = [], []
    for i in range(len(reader) - 1):
        s1, s2 = (nusc.get("sample", reader.sample_tokens[j]) for j in (i, i + 1))
        if s1["scene_token"] != s2["scene_token"]:
            continue
        nxt = {nusc.get("sample_annotation", t)["instance_token"]: t for t in s2["anns"]}
        for t1 in s1["anns"]:
            a = nusc.get("sample_annotation", t1)
            t2 = nxt.get(a["instance_token"])
            if t2 is None:
                continue
            b = nusc.get("sample_annotation", t2)
            if (np.linalg.norm(np.subtract(a["translation"], b["translation"])) > 0.05
                    or min(a["num_lidar_pts"], b["num_lidar_pts"]) < 100):
                continue
            box = ann_box(nusc, t1)  # the parked object's box, used in both keyframes
            clouds, ego_clouds = [], []
            for j in (i, i + 1):
                f = frame(j)
                pts = to_global(f, f.lidar[:, :3])
                m = points_in_box(box, pts.T, wlh_factor=1.1)
                clouds.append(pts[m])
                ego_clouds.append(f.lidar[m, :3].astype(np.float64))
            offsets.append(float(np.linalg.norm(_register_translation(clouds[0], clouds[1]))))
            ego_offsets.append(float(np.linalg.norm(ego_clouds[0].mean(0) - ego_clouds[1].mean(0))))
    offsets_arr = np.array(offsets)
    print(f"static objects in consecutive keyframes: {len(offsets)}; global offset max {offsets_arr.max():.3f} "
          f"median {np.median(offsets_arr):.3f} m; same points in the two ego frames: median "
          f"{np.median(ego_offsets):.2f} m apart")
    assert len(offsets) >= 20
    assert offsets_arr.max() < 0.3
    assert np.median(ego_offsets) > 1.0


@real_only
def test_missing_sweeps_counted_and_warned_once() -> None:
    nusc = nusc_of(REAL_ROOT, REAL_VERSION)
    reader = NuScenesReader(REAL_ROOT, REAL_VERSION, nusc=nusc, radar_sweeps=3, lidar_sweeps=4, image_reduction=8)
    expected = 0
    rule = reader.radar_rule
    for i in (5, 6):
        sample = nusc.get("sample", reader.sample_tokens[i])
        # LiDAR: the keyframe's prev chain, lidar_sweeps records
        sd = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
        for _ in range(4 - 1):
            if not sd["prev"]:
                break
            sd = nusc.get("sample_data", sd["prev"])
            expected += not (REAL_ROOT / sd["filename"]).exists()
        # radar: every record of the radar's chain the sweep rule looks at (max_age back, timeout ahead)
        t_ns = nusc.get("sample_data", sample["data"]["CAM_FRONT"])["timestamp"] * 1000
        for chan in RADARS:
            key = nusc.get("sample_data", sample["data"][chan])
            for link, lo, hi in (("prev", t_ns - rule.max_age_ns, None), ("next", None, t_ns + rule.timeout_ns)):
                sd = key
                while sd[link]:
                    sd = nusc.get("sample_data", sd[link])
                    ts = sd["timestamp"] * 1000
                    if (lo is not None and ts < lo) or (hi is not None and ts > hi):
                        break
                    expected += not (REAL_ROOT / sd["filename"]).exists()
    assert expected > 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frames = [reader[5][0], reader[6][0]]
    missing_warnings = [w for w in caught if "missing" in str(w.message)]
    assert len(missing_warnings) == 1
    assert reader.missing_files == expected
    assert all(len(f.radar) > 0 and len(f.lidar) > 0 for f in frames)
    assert set(np.unique(frames[0].lidar[:, 4])) == {frames[0].lidar[0, 4]}  # only the keyframe sweep exists


@real_only
def test_radar_and_lidar_dt_and_velocity_columns() -> None:
    reader = reader_of(REAL_ROOT, REAL_VERSION, lidar_sweeps=1, radar_sweeps=1, image_reduction=8)
    frame, gt = reader[10]
    # keyframe sweeps are within a few tens of ms of the CAM_FRONT stamp (either side of it)
    assert np.all(np.abs(frame.radar[:, 6]) < 0.1) and np.all(np.abs(frame.lidar[:, 4]) < 0.1)
    # radar default filters applied (ambiguous / invalid points gone): fewer points than raw
    assert 0 < len(frame.radar) < 5 * 125
    assert set(np.unique(gt.labels)).issubset(set(range(10)))
    cars = gt.labels == 0  # l = wlh[1] lies along the heading: cars are longer than wide
    assert np.median(gt.boxes[cars, 3] / gt.boxes[cars, 4]) > 1.5


@real_only
def test_resolve_scenes() -> None:
    nusc = nusc_of(REAL_ROOT, REAL_VERSION)
    assert resolve_scenes(nusc, "all") == ["scene-0523", "scene-0916"]
    assert resolve_scenes(nusc, None) == ["scene-0523", "scene-0916"]
    assert resolve_scenes(nusc, ["scene-0916"]) == ["scene-0916"]
    assert resolve_scenes(nusc, "scene-09*") == ["scene-0916"]
    assert resolve_scenes(nusc, "scene-0916,scene-0523") == ["scene-0523", "scene-0916"]
    with pytest.raises(ValueError, match="scene-0001.*available: scene-0523, scene-0916"):
        resolve_scenes(nusc, ["scene-0001"])
    with pytest.raises(ValueError, match="synth-train-"):
        resolve_scenes(nusc, "synth-train-*")
    assert len(reader_of(REAL_ROOT, REAL_VERSION, scenes=["scene-0916"])) == 41


# ----------------------------------------------------------------------------- error paths
def _symlink_root(tmp_path: Path) -> Path:
    """A dataroot of symlinks to the real one (never modify the shared folder)."""
    root = tmp_path / "nuscenes"
    root.mkdir()
    for name in ("maps", "samples"):
        os.symlink(REAL_ROOT / name, root / name)
    (root / REAL_VERSION).mkdir()
    for table in (REAL_ROOT / REAL_VERSION).iterdir():
        os.symlink(table, root / REAL_VERSION / table.name)
    return root


@real_only
def test_missing_keyframe_file_names_it(tmp_path: Path) -> None:
    root = _symlink_root(tmp_path)
    os.unlink(root / "samples")
    (root / "samples").mkdir()
    for chan in (REAL_ROOT / "samples").iterdir():
        os.symlink(chan, root / "samples" / chan.name)
    os.unlink(root / "samples" / "CAM_BACK")
    (root / "samples" / "CAM_BACK").mkdir()
    victim = sorted((REAL_ROOT / "samples" / "CAM_BACK").iterdir())[3]
    for f in (REAL_ROOT / "samples" / "CAM_BACK").iterdir():
        if f != victim:
            os.symlink(f, root / "samples" / "CAM_BACK" / f.name)
    reader = NuScenesReader(root, REAL_VERSION, image_reduction=8, lidar_sweeps=1, radar_sweeps=1)
    nusc = reader.nusc
    token = next(t for t in reader.sample_tokens
                 if victim.name in nusc.get("sample_data", nusc.get("sample", t)["data"]["CAM_BACK"])["filename"])
    with pytest.raises(FileNotFoundError, match=victim.name):
        reader[reader.index_of(token)]


@real_only
def test_broken_tables_named(tmp_path: Path) -> None:
    root = _symlink_root(tmp_path)
    with pytest.raises(FileNotFoundError, match="v1.0-nope.*v1.0-mini"):
        NuScenesReader(root, "v1.0-nope")
    # unparsable JSON
    os.unlink(root / REAL_VERSION / "scene.json")
    (root / REAL_VERSION / "scene.json").write_text('[{"token": ')
    with pytest.raises(NuScenesDataError, match="scene.json"):
        NuScenesReader(root, REAL_VERSION)
    shutil.copy(REAL_ROOT / REAL_VERSION / "scene.json", root / REAL_VERSION / "scene.json")
    # a missing table
    os.unlink(root / REAL_VERSION / "visibility.json")
    with pytest.raises(FileNotFoundError, match="visibility.json"):
        NuScenesReader(root, REAL_VERSION)
    os.symlink(REAL_ROOT / REAL_VERSION / "visibility.json", root / REAL_VERSION / "visibility.json")
    # a dangling reference: an ego pose record removed -> reading that sample names table and token
    poses = json.loads((REAL_ROOT / REAL_VERSION / "ego_pose.json").read_text())
    nusc = nusc_of(REAL_ROOT, REAL_VERSION)
    first = nusc.get("sample", nusc.scene[0]["first_sample_token"])
    cam_pose = nusc.get("sample_data", first["data"]["CAM_FRONT"])["ego_pose_token"]
    os.unlink(root / REAL_VERSION / "ego_pose.json")
    (root / REAL_VERSION / "ego_pose.json").write_text(json.dumps([p for p in poses if p["token"] != cam_pose]))
    reader = NuScenesReader(root, REAL_VERSION, image_reduction=8)
    with pytest.raises(NuScenesDataError, match=f"ego_pose.json.*{cam_pose}"):
        reader[reader.index_of(first["token"])]
