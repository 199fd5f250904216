"""SensorFrame -> model inputs: the one preprocessing path of training, evaluation and the node.

Image geometry is carried as a 3x3 "image augmentation" matrix applied after K (resize, crop,
flip), BEV geometry as a 4x4 matrix applied to everything in the ego frame (rotation, scale,
flip), so points, boxes, velocities and extrinsics can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from imkd_core.frame import BOX_COLUMNS, GroundTruth, SensorFrame

IMAGENET_MEAN = np.array([123.675, 116.28, 103.53], dtype=np.float32)
IMAGENET_STD = np.array([58.395, 57.12, 57.375], dtype=np.float32)
_REDUCED_FLAGS = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
                  8: cv2.IMREAD_REDUCED_COLOR_8}


# ----------------------------------------------------------------------------- images
def jpeg_reduction(src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> int:
    """Largest JPEG DCT reduction (1, 2, 4, 8) that still leaves the image at least as large
    as the model input, so decoding at reduced scale loses nothing the resize would keep."""
    best = 1
    for f in (2, 4, 8):
        if src_hw[0] / f >= dst_hw[0] and src_hw[1] / f >= dst_hw[1]:
            best = f
    return best


def decode_image(data: bytes | np.ndarray, reduction: int = 1) -> np.ndarray:
    """JPEG/PNG bytes -> H x W x 3 uint8 RGB, optionally decoded at 1/reduction scale."""
    if reduction not in _REDUCED_FLAGS:
        raise ValueError(f"reduction must be one of {sorted(_REDUCED_FLAGS)}, got {reduction}")
    buf = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data.reshape(-1)
    if buf.size == 0:
        raise ValueError("empty image buffer")
    bgr = cv2.imdecode(buf, _REDUCED_FLAGS[reduction])
    if bgr is None:
        raise ValueError("image bytes could not be decoded (corrupt or unsupported format)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def scale_intrinsics(K: np.ndarray, sx: float, sy: float) -> np.ndarray:
    """K of an image resized by (sx, sy) (pixel-centre convention)."""
    S = np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1]], dtype=np.float64)
    return S @ np.asarray(K, dtype=np.float64)


def resize_with_intrinsics(image: np.ndarray, K: np.ndarray, H: int, W: int) -> tuple[np.ndarray, np.ndarray]:
    """Resize an (h, w, 3) image to (H, W) and scale its K to match: how a camera of another size
    joins a SensorFrame (the offline reader and the node's assembler use this one function)."""
    h, w = image.shape[:2]
    interp = cv2.INTER_AREA if h * w > H * W else cv2.INTER_LINEAR
    return cv2.resize(image, (W, H), interpolation=interp), scale_intrinsics(K, W / w, H / h)


def reduced_intrinsics(K: np.ndarray, src_hw: tuple[int, int], decoded_hw: tuple[int, int],
                       reduction: int) -> np.ndarray:
    """K of an image decoded with JPEG DCT reduction `reduction`.

    libjpeg scales every 8x8 block by exactly 1/reduction and rounds the image size up
    (ceil(H / r) x ceil(W / r), the last row/column partial), so the scale is exactly 1/r, not
    decoded/src (1 % off for H = 198, r = 4). Other decoders (PNG is resized by OpenCV) or an
    unknown source size fall back to the decoded/src ratio.
    """
    src_h, src_w = src_hw
    h, w = decoded_hw
    if (src_h, src_w) == (h, w) or (reduction == 1 and not src_h):
        return np.asarray(K, dtype=np.float64)
    if not src_h or not src_w:
        return scale_intrinsics(K, 1.0 / reduction, 1.0 / reduction)
    if (h, w) == (-(-src_h // reduction), -(-src_w // reduction)):
        return scale_intrinsics(K, 1.0 / reduction, 1.0 / reduction)
    return scale_intrinsics(K, w / src_w, h / src_h)


@dataclass(frozen=True)
class ImageAug:
    """Resize by `scale`, crop a dst-size window at (top, left), then optionally mirror."""

    scale: float
    top: int
    left: int
    flip: bool = False


def default_image_aug(src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> ImageAug:
    """The evaluation-time transform: fit the width, keep the bottom rows (the road)."""
    scale = max(dst_hw[1] / src_hw[1], dst_hw[0] / src_hw[0])
    new_h = int(round(src_hw[0] * scale))
    new_w = int(round(src_hw[1] * scale))
    return ImageAug(scale=scale, top=max(new_h - dst_hw[0], 0), left=max((new_w - dst_hw[1]) // 2, 0))


def image_aug_matrix(aug: ImageAug, src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> np.ndarray:
    """3x3 matrix taking source pixel coordinates to augmented-image pixel coordinates."""
    new_h = int(round(src_hw[0] * aug.scale))
    new_w = int(round(src_hw[1] * aug.scale))
    sx, sy = new_w / src_hw[1], new_h / src_hw[0]
    M = np.array([[sx, 0, 0.5 * sx - 0.5 - aug.left], [0, sy, 0.5 * sy - 0.5 - aug.top], [0, 0, 1]])
    if aug.flip:
        M = np.array([[-1, 0, dst_hw[1] - 1], [0, 1, 0], [0, 0, 1]], dtype=np.float64) @ M
    return M


def apply_image_aug(img: np.ndarray, aug: ImageAug, dst_hw: tuple[int, int]) -> np.ndarray:
    """Resize/crop/flip one H x W x 3 image to dst_hw (zero-padded where the crop leaves it)."""
    new_h = int(round(img.shape[0] * aug.scale))
    new_w = int(round(img.shape[1] * aug.scale))
    interp = cv2.INTER_AREA if aug.scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(img, (new_w, new_h), interpolation=interp)
    out = np.zeros((dst_hw[0], dst_hw[1], 3), dtype=np.uint8)
    crop = resized[aug.top:aug.top + dst_hw[0], aug.left:aug.left + dst_hw[1]]
    out[:crop.shape[0], :crop.shape[1]] = crop
    if aug.flip:
        out = out[:, ::-1]
    return out


# ----------------------------------------------------------------------------- BEV geometry
def bev_aug_matrix(rot: float = 0.0, scale: float = 1.0, flip_x: bool = False, flip_y: bool = False) -> np.ndarray:
    """4x4 ego-frame augmentation: rotate about z by `rot`, scale, mirror x and/or y."""
    c, s = np.cos(rot), np.sin(rot)
    A = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) * scale
    F = np.diag([-1.0 if flip_x else 1.0, -1.0 if flip_y else 1.0, 1.0])
    M = np.eye(4)
    M[:3, :3] = F @ A
    return M


def transform_points(points: np.ndarray, M: np.ndarray, velocity_cols: tuple[int, int] | None = None) -> np.ndarray:
    """Apply a 4x4 to the xyz columns (and rotate/scale a 2D velocity) of an (N, C) array."""
    out = points.copy()
    out[:, :3] = points[:, :3] @ M[:3, :3].T + M[:3, 3]
    if velocity_cols is not None:
        i, j = velocity_cols
        v = np.stack([points[:, i], points[:, j], np.zeros(len(points), points.dtype)], 1) @ M[:3, :3].T
        out[:, i], out[:, j] = v[:, 0], v[:, 1]
    return out


def transform_boxes(boxes: np.ndarray, M: np.ndarray) -> np.ndarray:
    """Apply a 4x4 similarity (rotation/scale/mirror about z) to (N, 9) BOX_COLUMNS boxes."""
    out = transform_points(boxes, M, velocity_cols=(7, 8))
    scale = float(np.cbrt(abs(np.linalg.det(M[:3, :3]))))
    out[:, 3:6] = boxes[:, 3:6] * scale
    heading = np.stack([np.cos(boxes[:, 6]), np.sin(boxes[:, 6]), np.zeros(len(boxes))], 1) @ M[:3, :3].T
    out[:, 6] = np.arctan2(heading[:, 1], heading[:, 0])
    return out


# ----------------------------------------------------------------------------- frame -> inputs
def frame_to_inputs(
    frame: SensorFrame,
    image_size: tuple[int, int],
    image_augs: list[ImageAug] | None = None,
    bev_aug: np.ndarray | None = None,
    gt: GroundTruth | None = None,
) -> dict[str, np.ndarray]:
    """One SensorFrame (+ optional GT) -> unbatched numpy model inputs.

    Keys: images (N, 3, h, w) float32 normalised (N cameras of the frame's rig); intrinsics
    (N, 3, 3) = aug @ K; cam_to_ego (N, 4, 4) = bev_aug @ cam_to_ego; camera_mask (N,); radar (P, 7);
    lidar (M, 5) if present; bev_aug (4, 4); gt_boxes (G, 9) / gt_labels (G,) if gt given.
    """
    n = int(frame.images.shape[0])
    src_hw = frame.image_size
    augs = image_augs or [default_image_aug(src_hw, image_size)] * n
    imgs = np.empty((n, 3, image_size[0], image_size[1]), dtype=np.float32)
    Ks = np.empty((n, 3, 3), dtype=np.float32)
    for i in range(n):
        img = apply_image_aug(frame.images[i], augs[i], image_size).astype(np.float32)
        imgs[i] = ((img - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)
        Ks[i] = image_aug_matrix(augs[i], src_hw, image_size) @ frame.intrinsics[i]
    imgs[~frame.camera_mask] = 0.0
    M = np.eye(4) if bev_aug is None else np.asarray(bev_aug, dtype=np.float64)
    Ks[~frame.camera_mask] = np.eye(3, dtype=np.float32)
    c2e = np.einsum("ij,njk->nik", M, frame.cam_to_ego).astype(np.float32)
    c2e[~frame.camera_mask] = np.eye(4, dtype=np.float32)
    out: dict[str, np.ndarray] = {
        "images": imgs,
        "intrinsics": Ks,
        "cam_to_ego": c2e,
        "camera_mask": frame.camera_mask.copy(),
        "radar": transform_points(frame.radar, M, velocity_cols=(4, 5)).astype(np.float32),
        "bev_aug": M.astype(np.float32),
    }
    if frame.lidar is not None:
        out["lidar"] = transform_points(frame.lidar, M).astype(np.float32)
    if gt is not None:
        out["gt_boxes"] = transform_boxes(gt.boxes.astype(np.float64), M).astype(np.float32)
        out["gt_labels"] = gt.labels.astype(np.int64)
    return out


def _pad(arrays: list[np.ndarray], cols: int, fill: float, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    n = max([len(a) for a in arrays] + [1])
    out = np.full((len(arrays), n, cols) if cols else (len(arrays), n), fill, dtype=dtype)
    mask = np.zeros((len(arrays), n), dtype=bool)
    for b, a in enumerate(arrays):
        out[b, :len(a)] = a
        mask[b, :len(a)] = True
    return torch.from_numpy(out), torch.from_numpy(mask)


def collate(samples: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    """Stack unbatched inputs; variable-length radar/lidar/GT become padded + `*_mask`.

    gt_labels are padded with -1.
    """
    batch: dict[str, torch.Tensor] = {}
    for key in ("images", "intrinsics", "cam_to_ego", "camera_mask", "bev_aug"):
        batch[key] = torch.from_numpy(np.stack([s[key] for s in samples]))
    batch["radar"], batch["radar_mask"] = _pad([s["radar"] for s in samples], 7, 0.0, np.float32)
    if all("lidar" in s for s in samples):
        batch["lidar"], batch["lidar_mask"] = _pad([s["lidar"] for s in samples], 5, 0.0, np.float32)
    if all("gt_boxes" in s for s in samples):
        batch["gt_boxes"], _ = _pad([s["gt_boxes"] for s in samples], len(BOX_COLUMNS), 0.0, np.float32)
        batch["gt_labels"], _ = _pad([s["gt_labels"] for s in samples], 0, -1, np.int64)
    return batch
