"""BEVDepth-style camera-aware depth net with a radar-assisted depth input.

Per feature pixel: a softmax over D depth bins and C context channels. Both branches are gated
(SE style) by an MLP of the camera parameters (normalised intrinsics incl. image augmentation,
cam_to_ego incl. BEV augmentation). Radar points, lifted to a few heights and projected into
every image, give a sparse (nearness, RCS, count) image at feature resolution that is
concatenated to the image features. `lidar_depth_target` gives the BEVDepth depth supervision.
"""

from __future__ import annotations

import torch
from torch import nn

from imkd_core.models.ops import scatter_sum
from imkd_core.models.resnet import BasicBlock

N_CAM_PARAMS = 16
RADAR_IMAGE_CHANNELS = 3


def camera_params(intrinsics: torch.Tensor, cam_to_ego: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """(B, N, 16): fx/W, fy/H, cx/W, cy/H and the 3x4 cam_to_ego."""
    H, W = image_size
    k = torch.stack([intrinsics[..., 0, 0] / W, intrinsics[..., 1, 1] / H,
                     intrinsics[..., 0, 2] / W, intrinsics[..., 1, 2] / H], -1)
    return torch.cat([k, cam_to_ego[..., :3, :].flatten(-2)], -1).float()


def project_to_cells(points: torch.Tensor, valid: torch.Tensor, intrinsics: torch.Tensor,
                     cam_to_ego: torch.Tensor, camera_mask: torch.Tensor, image_size: tuple[int, int],
                     feat_size: tuple[int, int], min_depth: float = 0.1
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Project ego points (B, P, 3) into all N cameras.

    Returns flat cell index into (B, N, h, w), the camera depth, and a validity mask, each
    (B, N, P): valid = point valid, camera present, in front of it and inside the image.
    """
    H, W = image_size
    h, w = feat_size
    B, N = intrinsics.shape[:2]
    # float32 geometry also under autocast: half precision would misplace points by whole pixels
    with torch.autocast(points.device.type, enabled=False):
        R = cam_to_ego[..., :3, :3].float()
        t = cam_to_ego[..., :3, 3].float()
        p = points[:, None, :, :3].float() - t[:, :, None, :]           # (B, N, P, 3)
        pc = torch.einsum("bnji,bnpj->bnpi", R, p)                      # R^T (p - t)
        uvw = torch.einsum("bnij,bnpj->bnpi", intrinsics.float(), pc)
    z = uvw[..., 2]
    zs = z.clamp(min=1e-6)
    u = uvw[..., 0] / zs
    v = uvw[..., 1] / zs
    ok = valid[:, None, :] & camera_mask.bool()[:, :, None] & (z > min_depth)
    ok = ok & (u > -0.5) & (u < W - 0.5) & (v > -0.5) & (v < H - 0.5)
    col = torch.floor((u + 0.5) * (w / W)).clamp(0, w - 1).long()
    row = torch.floor((v + 0.5) * (h / H)).clamp(0, h - 1).long()
    bn = torch.arange(B * N, device=points.device).view(B, N, 1)
    cell = (bn * h + row) * w + col
    return cell, z, ok


def radar_depth_image(radar: torch.Tensor, radar_mask: torch.Tensor, intrinsics: torch.Tensor,
                      cam_to_ego: torch.Tensor, camera_mask: torch.Tensor, image_size: tuple[int, int],
                      feat_size: tuple[int, int], heights: tuple[float, ...], d_max: float) -> torch.Tensor:
    """Sparse radar image (B, N, 3, h, w): max nearness 1 - d/d_max, max RCS (scaled), log1p count.

    Radar returns carry no reliable height, so each point is lifted to every z in `heights`.
    """
    B, N = intrinsics.shape[:2]
    h, w = feat_size
    M = radar.shape[1]
    K = len(heights)
    # built with cat, not an in-place write: torch.jit.trace keeps the radar count dynamic
    z = torch.tensor(heights, dtype=radar.dtype, device=radar.device).view(1, 1, K, 1)
    xyz = torch.cat([radar[:, :, None, :2].expand(B, M, K, 2), z.expand(B, M, K, 1)], -1)
    valid = radar_mask[:, :, None].expand(B, M, K).reshape(B, M * K)
    cell, z, ok = project_to_cells(xyz.reshape(B, M * K, 3), valid, intrinsics, cam_to_ego, camera_mask,
                                   image_size, feat_size)
    rcs = radar[:, None, :, None, 3].expand(B, N, M, K).reshape(B, N, M * K)
    cell, z, rcs = cell[ok], z[ok], rcs[ok]
    n = B * N * h * w
    near = torch.zeros(n, device=radar.device).scatter_reduce(0, cell, (1.0 - z / d_max).clamp(0, 1), "amax")
    rcs_img = torch.zeros(n, device=radar.device).scatter_reduce(0, cell, ((rcs + 10.0) / 50.0).clamp(0.01, 1), "amax")
    count = scatter_sum(torch.ones_like(z), cell, n)
    img = torch.stack([near, rcs_img, torch.log1p(count)], 0).view(3, B, N, h, w)
    return img.permute(1, 2, 0, 3, 4)


def lidar_depth_target(lidar: torch.Tensor, lidar_mask: torch.Tensor, intrinsics: torch.Tensor,
                       cam_to_ego: torch.Tensor, camera_mask: torch.Tensor, image_size: tuple[int, int],
                       feat_size: tuple[int, int], depth_bins: tuple[float, float, float],
                       key_sweep_window: float = 0.025) -> torch.Tensor:
    """BEVDepth target: per feature cell the depth bin of the nearest LiDAR return, -1 if none.

    Only the key sweep is used (points with dt within `key_sweep_window` s of the sample's
    smallest dt) so multi-sweep motion smear does not corrupt the target. -> (B, N, h, w) long.
    """
    B, N = intrinsics.shape[:2]
    h, w = feat_size
    dt = lidar[..., 4]
    dt_min = torch.where(lidar_mask, dt, torch.full_like(dt, float("inf"))).amin(1, keepdim=True)
    valid = lidar_mask & (dt <= dt_min + key_sweep_window)
    # compact the key-sweep points to the front (stable) so only those are projected
    k = max(int(valid.sum(1).max()), 1)
    order = torch.argsort((~valid).to(torch.int8), dim=1, stable=True)[:, :k]
    pts = lidar[..., :3].gather(1, order[..., None].expand(B, k, 3))
    valid = valid.gather(1, order)
    cell, z, ok = project_to_cells(pts, valid, intrinsics, cam_to_ego, camera_mask, image_size, feat_size)
    n = B * N * h * w
    dmin = torch.full((n,), float("inf"), device=lidar.device).scatter_reduce(0, cell[ok], z[ok], "amin")
    lo, hi, step = depth_bins
    bins = torch.floor((dmin - lo) / step)
    D = round((hi - lo) / step)
    good = torch.isfinite(dmin) & (bins >= 0) & (bins < D)
    return torch.where(good, bins, torch.full_like(bins, -1)).long().view(B, N, h, w)


class SELayer(nn.Module):
    """x * sigmoid(MLP(camera embedding)) per channel."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.reduce = nn.Linear(channels, channels)
        self.expand = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.expand(torch.relu(self.reduce(emb))))
        return x * gate[:, :, None, None]


class DepthNet(nn.Module):
    """(BN, Cin, h, w) features [+ radar image] + camera params -> depth logits (BN, D, h, w),
    context (BN, C, h, w)."""

    def __init__(self, in_channels: int, mid_channels: int, context_channels: int, depth_bins: int,
                 radar_input: bool = True, n_blocks: int = 2) -> None:
        super().__init__()
        self.radar_input = radar_input
        cin = in_channels + (RADAR_IMAGE_CHANNELS if radar_input else 0)
        self.reduce = nn.Sequential(nn.Conv2d(cin, mid_channels, 3, 1, 1, bias=False),
                                    nn.BatchNorm2d(mid_channels), nn.ReLU(inplace=True))
        self.cam_bn = nn.BatchNorm1d(N_CAM_PARAMS)
        self.cam_mlp = nn.Sequential(nn.Linear(N_CAM_PARAMS, mid_channels), nn.ReLU(inplace=True),
                                     nn.Linear(mid_channels, mid_channels), nn.ReLU(inplace=True))
        self.context_se = SELayer(mid_channels)
        self.depth_se = SELayer(mid_channels)
        self.context_conv = nn.Conv2d(mid_channels, context_channels, 1)
        self.depth_blocks = nn.Sequential(*[BasicBlock(mid_channels, mid_channels) for _ in range(n_blocks)])
        self.depth_conv = nn.Conv2d(mid_channels, depth_bins, 1)

    def forward(self, feat: torch.Tensor, cam_params: torch.Tensor,
                radar_img: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.radar_input:
            if radar_img is None:
                radar_img = feat.new_zeros(feat.shape[0], RADAR_IMAGE_CHANNELS, *feat.shape[2:])
            feat = torch.cat([feat, radar_img], 1)
        x = self.reduce(feat)
        emb = self.cam_mlp(self.cam_bn(cam_params))
        context = self.context_conv(self.context_se(x, emb))
        depth = self.depth_conv(self.depth_blocks(self.depth_se(x, emb)))
        return depth, context
