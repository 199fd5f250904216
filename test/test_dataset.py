"""DetectionDataset: augmentations keep image, point, box and extrinsic geometry consistent.

Sources are parametrised (SOURCES): a procedurally textured toy rig that needs no data, the real
nuScenes subset when present, and a small synthetic dataset (test/datasets.py).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from imkd_core.config import AugConfig, DataConfig
from imkd_core.data.dataset import DetectionDataset, sample_image_aug
from imkd_core.frame import CAMERAS, GroundTruth, SensorFrame
from imkd_core.preprocess import IMAGENET_MEAN, IMAGENET_STD, collate, jpeg_reduction, transform_boxes

from . import datasets

# Sweep files of the real subset are absent by design: the reader warns once (tested explicitly).
pytestmark = pytest.mark.filterwarnings("ignore:nuScenes sweep files missing:RuntimeWarning")

IMAGE_SIZE = (256, 704)
STRONG_AUG = AugConfig(resize_lim=(0.8, 1.25), crop_jitter=1.0, image_flip=True, rot_lim=(-0.8, 0.8),
                       scale_lim=(0.9, 1.1), flip_x_prob=0.5, flip_y_prob=0.5)


# ----------------------------------------------------------------------------- sources
class ToyReader:
    """Six cameras around the ego (nuScenes yaw layout), textured images, LiDAR on a ring of walls and
    the ground, radar near a few boxes. Any image/point pair is consistent by construction."""

    def __init__(self, n: int = 3, hw: tuple[int, int] = (450, 800)) -> None:
        self.hw = hw
        self.sample_tokens = [f"toy-{i}" for i in range(n)]

    def __len__(self) -> int:
        return len(self.sample_tokens)

    def __getitem__(self, index: int) -> tuple[SensorFrame, GroundTruth]:
        rng = np.random.default_rng(index)
        H, W = self.hw
        f = 0.78 * W
        K = np.array([[f, 0, W / 2 - 0.5], [0, f, H / 2 - 0.5], [0, 0, 1.0]])
        yaws = np.radians([0, -55, -110, 180, 110, 55])
        c2e = np.tile(np.eye(4), (6, 1, 1))
        opt = np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0]], dtype=np.float64)  # optical -> x fwd, y left, z up
        for c, yaw in enumerate(yaws):
            Rz = np.array([[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]])
            c2e[c, :3, :3] = Rz @ opt
            c2e[c, :3, 3] = [1.0 * np.cos(yaw), 1.0 * np.sin(yaw), 1.6]
        noise = rng.integers(0, 256, (6, H // 8, W // 8, 3), dtype=np.uint8)
        images = np.stack([cv2.resize(im, (W, H), interpolation=cv2.INTER_CUBIC) for im in noise])
        ang = rng.uniform(-np.pi, np.pi, 40000)
        r = rng.uniform(4, 25, 40000)
        z = np.where(rng.random(40000) < 0.5, 0.0, rng.uniform(0, 3, 40000))
        lidar = np.stack([r * np.cos(ang), r * np.sin(ang), z, rng.uniform(0, 100, 40000), np.zeros(40000)], 1)
        boxes = np.array([[10, 2, 0.8, 4.5, 1.9, 1.6, 0.4, 2.0, 0.5], [-8, -5, 0.9, 4.2, 1.8, 1.7, 2.0, 0.0, 0.0],
                          [3, 12, 0.9, 0.6, 0.6, 1.8, -1.0, 1.0, 1.0], [60, 60, 1, 4, 2, 2, 0, 0, 0]], np.float32)
        radar = np.concatenate([np.c_[b[:3] + rng.normal(0, 0.3, (5, 3)), np.full((5, 1), 5.0),
                                      np.tile(b[7:9], (5, 1)), np.zeros((5, 1))] for b in boxes]).astype(np.float32)
        frame = SensorFrame(stamp=index, images=images, intrinsics=np.tile(K, (6, 1, 1)), cam_to_ego=c2e,
                            camera_mask=np.ones(6, bool), radar=radar, lidar=lidar.astype(np.float32),
                            token=self.sample_tokens[index])
        gt = GroundTruth(boxes, np.array([0, 0, 8, 0]), ["", "", "", ""], np.array([10, 0, 3, 5]),
                         np.array([1, 0, 0, 0]), ["a", "b", "c", "d"])
        return frame, gt


def _dataset_reader(name: str):
    from imkd_core.data.nuscenes import NuScenesReader

    spec = datasets.get(name)
    return NuScenesReader(spec.root, spec.version, scenes=[spec.eval_scenes[0]], lidar_sweeps=1, radar_sweeps=6,
                          image_reduction=jpeg_reduction(spec.image_hw, IMAGE_SIZE))


_CACHE: dict[str, object] = {}


def make_reader(name: str):
    if name not in _CACHE:
        _CACHE[name] = ToyReader() if name == "toy" else _dataset_reader(name)
    return _CACHE[name]


SOURCES = [pytest.param("toy", id="toy"), *datasets.params("real", "synthetic")]


# ----------------------------------------------------------------------------- helpers
def denorm(img_chw: np.ndarray) -> np.ndarray:
    return img_chw.transpose(1, 2, 0) * IMAGENET_STD + IMAGENET_MEAN


def project(points_ego: np.ndarray, K: np.ndarray, cam_to_ego: np.ndarray, hw: tuple[int, int]):
    """(N, 3) ego points -> (N, 2) pixels and a visibility mask for one camera."""
    T = np.linalg.inv(cam_to_ego.astype(np.float64))
    pc = points_ego.astype(np.float64) @ T[:3, :3].T + T[:3, 3]
    uvw = pc @ K.astype(np.float64).T
    z = uvw[:, 2]
    uv = uvw[:, :2] / np.maximum(z, 1e-6)[:, None]
    ok = (z > 1.0) & (uv[:, 0] >= 2) & (uv[:, 0] <= hw[1] - 3) & (uv[:, 1] >= 2) & (uv[:, 1] <= hw[0] - 3)
    return uv, ok


def sample(img: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear colour at sub-pixel positions (pixel-centre convention)."""
    m = cv2.remap(img.astype(np.float32), uv[:, 0].astype(np.float32).reshape(-1, 1),
                  uv[:, 1].astype(np.float32).reshape(-1, 1), cv2.INTER_LINEAR)
    return m.reshape(-1, 3)


def colour_agreement(ref: dict, aug: dict, lidar_ref: np.ndarray, lidar_aug: np.ndarray,
                     blur: float = 1.5) -> tuple[float, int]:
    """Median absolute colour difference between the eval image at each LiDAR point's projection and
    the augmented image at the augmented point's projection (with the augmented K and cam_to_ego)."""
    diffs = []
    for c in range(len(CAMERAS)):
        hw = ref["images"].shape[2:]
        uv0, ok0 = project(lidar_ref, ref["intrinsics"][c], ref["cam_to_ego"][c], hw)
        uv1, ok1 = project(lidar_aug, aug["intrinsics"][c], aug["cam_to_ego"][c], hw)
        ok = ok0 & ok1
        if ok.sum() < 20:
            continue
        a = cv2.GaussianBlur(denorm(ref["images"][c]).astype(np.float32), (0, 0), blur)
        b = cv2.GaussianBlur(denorm(aug["images"][c]).astype(np.float32), (0, 0), blur)
        diffs.append(np.abs(sample(a, uv0[ok]) - sample(b, uv1[ok])).mean(axis=1))
    d = np.concatenate(diffs)
    return float(np.median(d)), len(d)


# ----------------------------------------------------------------------------- tests
@pytest.mark.parametrize("source", SOURCES)
def test_augmented_projection_lands_on_same_content(source: str) -> None:
    reader = make_reader(source)
    cfg = DataConfig(image_size=IMAGE_SIZE, aug=STRONG_AUG)
    ref_ds = DetectionDataset(reader, cfg, train=False)
    aug_ds = DetectionDataset(reader, cfg, train=True, seed=3)
    ref = ref_ds[0]
    flips = 0
    for epoch in range(3):
        aug_ds.set_epoch(epoch)
        aug = aug_ds[0]
        augs, bev = aug_ds.draw_augmentation(0, reader[0][0].image_size)
        flips += sum(a.flip for a in augs)
        assert not np.allclose(bev, np.eye(4))
        assert np.allclose(aug["bev_aug"], bev, atol=1e-6)
        med, n = colour_agreement(ref, aug, ref["lidar"][:, :3], aug["lidar"][:, :3])
        assert n > 500
        # controls: the augmented image read with the un-augmented geometry, or with K off by 1 px
        bad = dict(aug, intrinsics=ref["intrinsics"], cam_to_ego=ref["cam_to_ego"])
        med_bad, _ = colour_agreement(ref, bad, ref["lidar"][:, :3], ref["lidar"][:, :3])
        K1 = aug["intrinsics"].copy()
        K1[:, 0, 2] += 1.0
        med_1px, _ = colour_agreement(ref, dict(aug, intrinsics=K1), ref["lidar"][:, :3], aug["lidar"][:, :3])
        print(f"{source} epoch {epoch}: median colour difference {med:.2f} over {n} points "
              f"(K off by 1 px: {med_1px:.2f}; un-augmented geometry: {med_bad:.2f})")
        assert med < 3.5, f"epoch {epoch}: colours at projected LiDAR points differ by {med:.1f}"
        assert med_1px > 2.0 * med and med_bad > 5.0 * med, (med, med_1px, med_bad)
    assert flips > 0  # flipped cameras were exercised


@pytest.mark.parametrize("source", SOURCES)
def test_boxes_radar_lidar_move_with_bev_matrix(source: str) -> None:
    reader = make_reader(source)
    cfg = DataConfig(image_size=IMAGE_SIZE, aug=STRONG_AUG)
    frame, gt = reader[0]
    ds = DetectionDataset(reader, cfg, x_range=(-1e3, 1e3), y_range=(-1e3, 1e3), train=True, seed=7)
    out = ds[0]
    M = out["bev_aug"].astype(np.float64)
    keep = (gt.num_lidar_pts + gt.num_radar_pts) > 0
    assert len(out["gt_boxes"]) == keep.sum()
    expected = transform_boxes(gt.boxes[keep].astype(np.float64), M)
    assert np.allclose(out["gt_boxes"], expected, atol=1e-4)
    assert np.allclose(out["radar"][:, :3], frame.radar[:, :3] @ M[:3, :3].T.astype(np.float32), atol=1e-3)
    assert np.allclose(out["radar"][:, 4:6], frame.radar[:, 4:6] @ M[:2, :2].T.astype(np.float32), atol=1e-4)
    assert np.allclose(out["radar"][:, [3, 6]], frame.radar[:, [3, 6]])
    assert np.allclose(out["lidar"][:, 3:], frame.lidar[:, 3:])

    def inside(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        d = points[None, :, :3] - boxes[:, None, :3]
        c, s = np.cos(boxes[:, 6:7]), np.sin(boxes[:, 6:7])
        lx, ly = c * d[..., 0] + s * d[..., 1], -s * d[..., 0] + c * d[..., 1]
        b = boxes[:, None]
        return (np.abs(lx) <= b[..., 3] / 2) & (np.abs(ly) <= b[..., 4] / 2) & (np.abs(d[..., 2]) <= b[..., 5] / 2)

    # the same LiDAR and radar points fall in the same boxes before and after augmentation
    before, after = inside(frame.lidar, gt.boxes[keep]), inside(out["lidar"], out["gt_boxes"])
    assert before.sum() > 0
    assert (before != after).sum() <= 1e-3 * before.sum() + 2
    grown = gt.boxes[keep].copy()
    grown[:, 3:5] += 2.0
    grown_aug = transform_boxes(grown.astype(np.float64), M)
    assert np.array_equal(inside(frame.radar, grown), inside(out["radar"], grown_aug.astype(np.float32)))
    # velocity keeps its angle to the heading (up to the mirror) and scales with the BEV scale
    scale = np.cbrt(abs(np.linalg.det(M[:3, :3])))
    v0, v1 = gt.boxes[keep, 7:9], out["gt_boxes"][:, 7:9]
    assert np.allclose(np.linalg.norm(v1, axis=1), scale * np.linalg.norm(v0, axis=1), atol=1e-4)
    rel0 = np.arctan2(v0[:, 1], v0[:, 0]) - gt.boxes[keep, 6]
    rel1 = np.arctan2(v1[:, 1], v1[:, 0]) - out["gt_boxes"][:, 6]
    mirrored = np.linalg.det(M[:2, :2]) < 0
    moving = np.linalg.norm(v0, axis=1) > 0.1
    assert np.allclose(np.cos(rel1[moving]), np.cos(rel0[moving]), atol=1e-4)
    assert np.allclose(np.sin(rel1[moving]), (-1 if mirrored else 1) * np.sin(rel0[moving]), atol=1e-4)


@pytest.mark.parametrize("source", SOURCES)
def test_gt_filtering(source: str) -> None:
    reader = make_reader(source)
    cfg = DataConfig(image_size=IMAGE_SIZE, aug=STRONG_AUG)
    frame, gt = reader[0]
    train = DetectionDataset(reader, cfg, x_range=(-30, 30), y_range=(-30, 30), train=True)[0]
    assert np.all(np.abs(train["gt_boxes"][:, :2]) < 30)
    val = DetectionDataset(reader, cfg, x_range=(-30, 30), y_range=(-30, 30), train=False)[0]
    in_range = np.all(np.abs(gt.boxes[:, :2]) < 30, axis=1)
    assert len(val["gt_boxes"]) == in_range.sum()  # evaluation keeps point-less boxes in range
    n_pts = gt.num_lidar_pts + gt.num_radar_pts
    assert len(train["gt_boxes"]) <= (n_pts > 0).sum()


@pytest.mark.parametrize("source", SOURCES)
def test_deterministic_per_seed_epoch_index(source: str) -> None:
    reader = make_reader(source)
    cfg = DataConfig(image_size=IMAGE_SIZE)
    a = DetectionDataset(reader, cfg, train=True, seed=11)
    b = DetectionDataset(reader, cfg, train=True, seed=11)
    a.set_epoch(2)
    b.set_epoch(2)
    _ = b[1]  # access order does not matter
    xa, xb = a[0], b[0]
    for k in xa:
        assert np.array_equal(xa[k], xb[k]), k
    b.set_epoch(3)
    assert not np.array_equal(b[0]["bev_aug"], xa["bev_aug"])
    c = DetectionDataset(reader, cfg, train=True, seed=12)
    c.set_epoch(2)
    assert not np.array_equal(c[0]["bev_aug"], xa["bev_aug"])
    # evaluation transform is the identity BEV and the default crop
    e = DetectionDataset(reader, cfg, train=False)[0]
    assert np.array_equal(e["bev_aug"], np.eye(4, dtype=np.float32))


def test_image_aug_ranges() -> None:
    rng = np.random.default_rng(0)
    cfg = AugConfig()
    src, dst = (900, 1600), (256, 704)
    fit = max(dst[1] / src[1], dst[0] / src[0])
    for _ in range(200):
        a = sample_image_aug(rng, src, dst, cfg)
        assert cfg.resize_lim[0] * fit - 1e-9 <= a.scale <= cfg.resize_lim[1] * fit + 1e-9
        new_h, new_w = round(src[0] * a.scale), round(src[1] * a.scale)
        assert 0 <= a.top <= max(new_h - dst[0], 0) and 0 <= a.left <= max(new_w - dst[1], 0)


@pytest.mark.parametrize("source", SOURCES)
def test_collate_with_dataloader(source: str) -> None:
    reader = make_reader(source)
    ds = DetectionDataset(reader, DataConfig(image_size=(128, 352)), train=True, seed=0)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, shuffle=False, num_workers=0, collate_fn=ds.collate)
    batch = next(iter(loader))
    assert batch["images"].shape == (2, 6, 3, 128, 352) and batch["images"].dtype == torch.float32
    assert batch["intrinsics"].shape == (2, 6, 3, 3) and batch["cam_to_ego"].shape == (2, 6, 4, 4)
    assert batch["radar"].shape[0] == 2 and batch["radar"].shape[2] == 7 and batch["radar_mask"].any()
    assert batch["lidar"].shape[2] == 5
    assert batch["gt_boxes"].shape[0] == 2 and batch["gt_boxes"].shape[2] == 9
    n0 = len(ds[0]["gt_labels"])
    assert (batch["gt_labels"][0] >= 0).sum() == n0
    # the dataset's collate is preprocess.collate
    direct = collate([ds[0], ds[1]])
    assert all(torch.equal(direct[k], batch[k]) for k in direct)
