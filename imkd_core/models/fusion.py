"""IMKD stage 3: intensity-guided camera-radar BEV fusion.

1. Radar BEV (F_R and the RCS raster) is re-aligned to the camera BEV by a learned offset
   field (one zero-initialised 3x3 conv on [F_C, F_R], applied with grid_sample), so at
   initialisation the warp is the identity.
2. An intensity map I_hat (B, 1, H, W, sigmoid) is predicted from [F_C, F_R, RCS raster]; in
   training it is supervised by the teacher's LiDAR intensity map I_L (L3).
3. Gating, F_R' = F_R * sigmoid(g_r([I_hat, F_C])) (g_r a 1x1 conv) and for the camera either
   "soft": F_C' = F_C * (1 + tanh(g_c(I_hat))) (g_c a per-channel affine map of I_hat), or
   "strong": F_C' = F_C * 2 sigmoid(g_c(logit(I_hat) - prior)) with g_c starting as the identity,
   so at the prior the gate is 1, on a confident object cell about 2 and on a cell the branch
   is sure is empty near 0 (the soft gate moves F_C by only about +-12 % at initialisation).
4. F_M = conv([F_C', F_R']).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from imkd_core.models.radar_encoder import RADAR_RASTER_CHANNELS

INTENSITY_PRIOR_BIAS = -2.0


def identity_grid(B: int, H: int, W: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """grid_sample grid (B, H, W, 2) hitting every cell centre (align_corners=False)."""
    xs = (2 * torch.arange(W, device=device, dtype=dtype) + 1) / W - 1
    ys = (2 * torch.arange(H, device=device, dtype=dtype) + 1) / H - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], -1).expand(B, H, W, 2)


class ChannelAffine(nn.Module):
    """(B, 1, H, W) -> (B, C, H, W): weight[c] * x + bias[c] (a 1x1 conv from one channel,
    written elementwise: oneDNN handles one-channel convs poorly in NHWC)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(1, channels, 1, 1).uniform_(-1.0, 1.0))
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight + self.bias


class IntensityFusion(nn.Module):
    """(F_C, F_R, RCS raster) -> F_M, I_hat (+ its logits and the offset field in cells)."""

    def __init__(self, cam_channels: int, radar_channels: int, out_channels: int, hidden: int = 32,
                 offset: bool = True, gate: str = "soft") -> None:
        super().__init__()
        if gate not in ("soft", "strong"):
            raise ValueError(f"gate must be 'soft' or 'strong', got {gate!r}")
        self.gate = gate
        cc, cr = cam_channels, radar_channels
        self.offset = nn.Conv2d(cc + cr, 2, 3, 1, 1) if offset else None
        if self.offset is not None:
            nn.init.zeros_(self.offset.weight)
            nn.init.zeros_(self.offset.bias)
        self.intensity = nn.Sequential(
            nn.Conv2d(cc + cr + RADAR_RASTER_CHANNELS, hidden, 3, 1, 1, bias=False), nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True), nn.Conv2d(hidden, 1, 3, 1, 1))
        nn.init.constant_(self.intensity[-1].bias, INTENSITY_PRIOR_BIAS)
        self.g_c = ChannelAffine(cc)
        if gate == "strong":
            nn.init.ones_(self.g_c.weight)
        self.g_r = nn.Conv2d(1 + cc, cr, 1)
        self.out = nn.Sequential(nn.Conv2d(cc + cr, out_channels, 3, 1, 1, bias=False),
                                 nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))

    def forward(self, f_c: torch.Tensor, f_r: torch.Tensor, rcs: torch.Tensor) -> dict[str, torch.Tensor]:
        B, _, H, W = f_c.shape
        out: dict[str, torch.Tensor] = {}
        if self.offset is not None:
            off = self.offset(torch.cat([f_c, f_r], 1))                       # (B, 2, H, W) cells (dx, dy)
            scale = torch.tensor([2.0 / W, 2.0 / H], device=f_c.device, dtype=f_c.dtype)
            grid = identity_grid(B, H, W, f_c.device, f_c.dtype) + off.permute(0, 2, 3, 1) * scale
            f_r = F.grid_sample(f_r, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            rcs = F.grid_sample(rcs, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            out["offset"] = off
        logits = self.intensity(torch.cat([f_c, f_r, rcs], 1))
        i_hat = torch.sigmoid(logits)
        if self.gate == "strong":
            f_c2 = f_c * (2 * torch.sigmoid(self.g_c(logits - INTENSITY_PRIOR_BIAS)))
        else:
            f_c2 = f_c * (1 + torch.tanh(self.g_c(i_hat)))
        f_r2 = f_r * torch.sigmoid(self.g_r(torch.cat([i_hat, f_c], 1)))
        out.update(F_M=self.out(torch.cat([f_c2, f_r2], 1)), I_hat=i_hat, I_hat_logits=logits, F_R_aligned=f_r)
        return out
