"""IMKD's distillation signals (our concrete reading, see docs/design.md).

Feature terms compare features that are each standardised per channel on the weighted cells (so
a term's size does not depend on either network's activation scale) and average
the per-cell mean over channels of the squared difference under a weight map. Weight maps are
built from teacher/GT/radar quantities only and carry no gradient; `weight_maps` builds all of
them in one place so that the loss and the probes (train/probes.py) see the same maps.

- intensity_map: I_L (B, 1, H, W), mean reflectance of the non-ground LiDAR returns of a cell
  on a fixed scale (0 where a cell has no non-ground return).
- L1 (LiDAR -> radar): W1 = radar-active cells (dilated) * (I_L + alpha * H_gt).
- L2 (LiDAR -> fused): W2 = softmax_spatial(||F_L|| / tau) * max_c(H_teacher) * [teacher beats student].
- response: Bernoulli KL of the student heatmaps to the teacher's, plus an L1 on the box code at
  the teacher's confident cells; both weighted by teacher objectness.
- BEV term: the BEV encoder's output against the teacher's on object cells (teacher objectness).
- L3: BCE(I_hat, target) minus the target's entropy; the target is I_L or the teacher's objectness.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from imkd_core.config import DistillConfig, GridConfig
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
def intensity_map(lidar: torch.Tensor, lidar_mask: torch.Tensor, grid: GridConfig, sigma: float = 0.7,
                  ground_z: float = 0.3, scale: float = 255.0) -> torch.Tensor:
    """I_L (B, 1, H, W): per BEV cell the mean reflectance of its LiDAR returns above `ground_z`
    (ego frame, metres: road returns would otherwise dominate every cell), divided by the fixed
    `scale` (no per-sample maximum: one retro-reflector must not dim every car), smoothed by a
    normalised Gaussian (empty neighbours do not darken a cell), exactly 0 where a cell has no
    such return."""
    B = lidar.shape[0]
    H, W = grid.shape
    keep = lidar_mask.bool() & (lidar[..., 2] > ground_z)
    idx, valid = pillar_index(lidar[..., :3], keep, grid)
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
    return (mean * occ / scale).clamp(0, 1)


@torch.no_grad()
def radar_active(radar_count: torch.Tensor, dilation: int = 1) -> torch.Tensor:
    """(B, 1, H, W) 0/1: cells with a radar point (radar_count > 0, e.g. the RCS raster's count
    channel), grown by `dilation` cells (a return marks an object a few cells wide)."""
    occ = (radar_count > 0).float()
    if dilation > 0:
        occ = F.max_pool2d(occ, 2 * dilation + 1, stride=1, padding=dilation)
    return occ


def teacher_objectness(teacher_logits: torch.Tensor) -> torch.Tensor:
    """max over classes of the teacher's heatmap probability, (B, 1, H, W), no gradient."""
    return torch.sigmoid(teacher_logits.detach()).amax(1, keepdim=True)


def _standardise(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """x minus its per-channel mean, over its per-channel std, both taken on the weighted cells
    (PKD, Cao et al. 2022: the squared difference of two such maps is 2 (1 - Pearson r) per
    channel, so neither network's activation scale sets the size of the term)."""
    x = x.float()
    ws = w.sum().clamp(min=_EPS)
    mu = (x * w).sum(dim=(0, 2, 3), keepdim=True) / ws
    var = ((x - mu).pow(2) * w).sum(dim=(0, 2, 3), keepdim=True) / ws
    return (x - mu) / (var + 1e-6).sqrt()


def feature_error(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Per-cell mean over channels of the squared difference: (B, 1, H, W)."""
    return (student - teacher.detach()).pow(2).mean(1, keepdim=True)


def _weighted_mean(err: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    w = w.detach()
    return (w * err).sum() / w.sum().clamp(min=_EPS)


def masked_feature_distill(student: torch.Tensor, teacher: torch.Tensor, w: torch.Tensor,
                           normalise: bool = True) -> torch.Tensor:
    """sum(w * ||s - t||^2 / C) / sum(w), each map standardised per channel on the weighted cells."""
    if normalise:
        w = w.detach().float()
        student, teacher = _standardise(student, w), _standardise(teacher.detach(), w)
    return _weighted_mean(feature_error(student, teacher), w)


def l1_weights(i_l: torch.Tensor, h_gt: torch.Tensor, active: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """W1 = radar-active cells * (I_L + alpha * H_gt): where radar has something to say and
    LiDAR shows an object (reflectance or a labelled box)."""
    return active * (i_l + alpha * h_gt)


def l1_radar_distill(f_r_adapted: torch.Tensor, f_l: torch.Tensor, w1: torch.Tensor,
                     normalise: bool = True) -> torch.Tensor:
    """L1 = sum(W1 * ||A_R(F_R) - F_L||^2) / sum(W1)."""
    return masked_feature_distill(f_r_adapted, f_l, w1, normalise)


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


def l2_fused_distill(f_m_adapted: torch.Tensor, f_l: torch.Tensor, w2: torch.Tensor,
                     normalise: bool = True) -> torch.Tensor:
    """L2 = sum(W2 * ||A_M(F_M) - F_L||^2) / sum(W2) (0 where the teacher never knows better)."""
    return masked_feature_distill(f_m_adapted, f_l, w2, normalise)


def response_distill(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Bernoulli KL(teacher || student) per class, summed over classes, averaged over cells with
    weight max_c teacher probability. Inputs (B, 10, H, W) logits."""
    t = torch.sigmoid(teacher_logits.detach())
    kl = (F.binary_cross_entropy_with_logits(student_logits, t, reduction="none")
          - F.binary_cross_entropy_with_logits(teacher_logits.detach(), t, reduction="none"))
    return _weighted_mean(kl.sum(1, keepdim=True), t.amax(1, keepdim=True))


def box_response_distill(student_heads: list[dict[str, torch.Tensor]], teacher_heads: list[dict[str, torch.Tensor]],
                         code_weights: tuple[float, ...], min_prob: float = 0.3) -> torch.Tensor:
    """Box-level response term: per task, the weighted L1 between the student's and the teacher's
    box codes (B, 10, H, W) at cells where the teacher's objectness of that task exceeds
    `min_prob`, weighted by that objectness; averaged over tasks that have such cells."""
    cw = torch.tensor(code_weights, device=student_heads[0]["box"].device, dtype=torch.float32).view(1, -1, 1, 1)
    means, present = [], []
    for s, t in zip(student_heads, teacher_heads):   # no host sync: tasks without such cells weigh 0
        p = torch.sigmoid(t["hm"].detach().float()).amax(1, keepdim=True)
        w = p * (p > min_prob)
        err = ((s["box"].float() - t["box"].detach().float()).abs() * cw).sum(1, keepdim=True) / cw.sum()
        means.append(_weighted_mean(err, w))
        present.append((w.sum() > 0).float())
    return torch.stack(means).sum() / torch.stack(present).sum().clamp(min=1.0)


def binary_entropy(p: torch.Tensor) -> torch.Tensor:
    return -(torch.xlogy(p, p) + torch.xlogy(1 - p, 1 - p))


def l3_intensity_bce(i_hat_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L3 = mean over the grid of BCE(I_hat, target) - H(target) (a KL: same gradient as the
    BCE, 0 when I_hat = target)."""
    t = target.detach()
    return (F.binary_cross_entropy_with_logits(i_hat_logits, t, reduction="none") - binary_entropy(t)).mean()


@torch.no_grad()
def weight_maps(dc: DistillConfig, i_l: torch.Tensor, h_gt: torch.Tensor, radar_count: torch.Tensor,
                f_l: torch.Tensor, teacher_logits: torch.Tensor, student_logits: torch.Tensor,
                gt_heatmap: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every distillation weight map and the L3 target, (B, 1, H, W) each: the one definition
    the probes read. h_gt: max over classes of the GT heatmap; radar_count (B, 1, H, W)."""
    t_prob = torch.sigmoid(teacher_logits.detach())
    obj = t_prob.amax(1, keepdim=True)
    return {
        "W1_l1": l1_weights(i_l, h_gt, radar_active(radar_count, dc.l1_dilation), dc.alpha),
        "W2_l2": selective_weights(f_l, t_prob, torch.sigmoid(student_logits.detach()), gt_heatmap, dc.tau),
        "W_resp": obj,
        "W_bev": obj,
        "L3_target": obj if dc.l3_target == "objectness" else i_l,
    }
