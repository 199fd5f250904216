"""IMKD's three distillation signals (our concrete reading, see docs/design.md) + response term.

All feature terms use the per-cell mean over channels of the squared difference (the design's
||.||^2 divided by C, so weights do not depend on channel counts). Weights are built from
teacher/GT quantities only and carry no gradient.

- intensity_map: LiDAR intensity map I_L (B, 1, H, W).
- l1_radar_distill: W1 = I_L * (1 + alpha * H_gt) on cells with LiDAR returns.
- l2_fused_distill: W2 = softmax_spatial(||F_L|| / tau) * max_c(H_teacher) * [teacher beats student].
- response_distill: Bernoulli KL of the student heatmaps to the teacher's, weighted by teacher objectness.
- l3_intensity_bce: BCE(I_hat, I_L) minus the target's entropy (same gradient, 0 at the optimum).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from imkd_core.config import GridConfig
from imkd_core.models.ops import scatter_sum
from imkd_core.models.radar_encoder import pillar_index

_EPS = 1e-12


def _gaussian_kernel(sigma: float, device: torch.device) -> torch.Tensor:
    r = max(1, math.ceil(2 * sigma))
    x = torch.arange(-r, r + 1, device=device, dtype=torch.float32)
    k = torch.exp(-(x**2) / (2 * sigma**2))
    k2 = k[:, None] * k[None, :]
    return (k2 / k2.sum())[None, None]


@torch.no_grad()
def intensity_map(lidar: torch.Tensor, lidar_mask: torch.Tensor, grid: GridConfig, sigma: float = 0.7) -> torch.Tensor:
    """I_L (B, 1, H, W): per BEV cell the mean LiDAR intensity of its points, smoothed by a
    normalised Gaussian convolution (empty neighbours do not darken a cell), divided by the
    per-sample maximum (-> [0, 1]) and exactly 0 where a cell has no return."""
    B = lidar.shape[0]
    H, W = grid.shape
    idx, valid = pillar_index(lidar[..., :3], lidar_mask, grid)
    idx, val = idx[valid], lidar[..., 3][valid].float().clamp(min=0)
    n = B * H * W
    s = scatter_sum(val, idx, n)
    c = scatter_sum(torch.ones_like(val), idx, n)
    occ = (c > 0).float().view(B, 1, H, W)
    mean = (s / c.clamp(min=1)).view(B, 1, H, W)
    if sigma > 0:
        k = _gaussian_kernel(sigma, lidar.device)
        pad = k.shape[-1] // 2
        num = F.conv2d(mean * occ, k, padding=pad)
        den = F.conv2d(occ, k, padding=pad)
        mean = num / den.clamp(min=1e-6)
    mean = mean * occ
    peak = mean.flatten(1).amax(1).clamp(min=_EPS).view(B, 1, 1, 1)
    return (mean / peak).clamp(0, 1)


def feature_error(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Per-cell mean over channels of the squared difference: (B, 1, H, W)."""
    return (student - teacher.detach()).pow(2).mean(1, keepdim=True)


def _weighted_mean(err: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    w = w.detach()
    return (w * err).sum() / w.sum().clamp(min=_EPS)


def l1_radar_distill(f_r_adapted: torch.Tensor, f_l: torch.Tensor, i_l: torch.Tensor, h_gt: torch.Tensor,
                     alpha: float = 1.0) -> torch.Tensor:
    """L1 = sum(W1 * ||A_R(F_R) - F_L||^2) / sum(W1), W1 = I_L * (1 + alpha * H_gt) where I_L > 0."""
    w1 = i_l * (1 + alpha * h_gt) * (i_l > 0)
    return _weighted_mean(feature_error(f_r_adapted, f_l), w1)


def selective_weights(f_l: torch.Tensor, teacher_prob: torch.Tensor, student_prob: torch.Tensor,
                      gt_heatmap: torch.Tensor, tau: float = 0.5) -> torch.Tensor:
    """W2 (B, 1, H, W) = softmax over cells of (||F_L|| / mean ||F_L||) / tau
    * max_c teacher heatmap * [sum_c |H_t - H_gt| < sum_c |H_s - H_gt|] (teacher knows better)."""
    B = f_l.shape[0]
    norm = f_l.detach().norm(dim=1, keepdim=True)                               # (B, 1, H, W)
    norm = norm / norm.flatten(1).mean(1).clamp(min=_EPS).view(B, 1, 1, 1)
    att = torch.softmax((norm / tau).flatten(1), dim=1).view_as(norm)
    t_err = (teacher_prob.detach() - gt_heatmap).abs().sum(1, keepdim=True)
    s_err = (student_prob.detach() - gt_heatmap).abs().sum(1, keepdim=True)
    better = (t_err < s_err).float()
    return att * teacher_prob.detach().amax(1, keepdim=True) * better


def l2_fused_distill(f_m_adapted: torch.Tensor, f_l: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """L2 = sum(W2 * ||A_M(F_M) - F_L||^2) / sum(W2) (0 where the teacher never knows better)."""
    return _weighted_mean(feature_error(f_m_adapted, f_l), w2)


def response_distill(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Bernoulli KL(teacher || student) per class, summed over classes, averaged over cells with
    weight max_c teacher probability. Inputs (B, 10, H, W) logits."""
    t = torch.sigmoid(teacher_logits.detach())
    kl = (F.binary_cross_entropy_with_logits(student_logits, t, reduction="none")
          - F.binary_cross_entropy_with_logits(teacher_logits.detach(), t, reduction="none"))
    return _weighted_mean(kl.sum(1, keepdim=True), t.amax(1, keepdim=True))


def binary_entropy(p: torch.Tensor) -> torch.Tensor:
    return -(torch.xlogy(p, p) + torch.xlogy(1 - p, 1 - p))


def l3_intensity_bce(i_hat_logits: torch.Tensor, i_l: torch.Tensor) -> torch.Tensor:
    """L3 = mean over the grid of BCE(I_hat, I_L) - H(I_L) (a KL: same gradient as the BCE,
    0 when I_hat = I_L)."""
    t = i_l.detach()
    return (F.binary_cross_entropy_with_logits(i_hat_logits, t, reduction="none") - binary_entropy(t)).mean()
