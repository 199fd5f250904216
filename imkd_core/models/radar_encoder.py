"""Pillar encoders on the BEV grid (shared by radar and the LiDAR teacher) and the radar
encoder F_R.

Per point: an MLP of its features plus offsets to the pillar centre and to the pillar's point
mean, max-reduced per pillar with `scatter_reduce(amax)` (fully vectorised, no point cap),
then a small 2D CNN. Empty pillars are 0.
"""

from __future__ import annotations

import torch
from torch import nn

from imkd_core.config import GridConfig
from imkd_core.models.ops import scatter_sum
from imkd_core.models.resnet import BasicBlock

N_OFFSETS = 5  # dx, dy to pillar centre; dx, dy, dz to pillar mean
RADAR_RASTER_CHANNELS = 2


def pillar_index(xyz: torch.Tensor, mask: torch.Tensor, grid: GridConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat BEV cell index (b * ny * nx + row * nx + col) and in-grid validity, both (B, P)."""
    B = xyz.shape[0]
    ny, nx = grid.shape
    ix = torch.floor((xyz[..., 0] - grid.x_bound[0]) / grid.cell)
    iy = torch.floor((xyz[..., 1] - grid.y_bound[0]) / grid.cell)
    z = xyz[..., 2]
    valid = mask.bool() & (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny) & (z >= grid.z_bound[0]) & (z < grid.z_bound[1])
    b = torch.arange(B, device=xyz.device).view(B, 1)
    idx = b * (ny * nx) + iy.clamp(0, ny - 1).long() * nx + ix.clamp(0, nx - 1).long()
    return idx, valid


def pillar_offsets(xyz: torch.Tensor, idx: torch.Tensor, grid: GridConfig, n_cells: int) -> torch.Tensor:
    """(P, 5) offsets of valid points (already gathered, flat) to pillar centre and pillar mean."""
    nx = grid.nx
    local = idx % (grid.ny * nx)
    cx = grid.x_bound[0] + (local % nx + 0.5) * grid.cell
    cy = grid.y_bound[0] + (torch.div(local, nx, rounding_mode="floor") + 0.5) * grid.cell
    ones = torch.ones_like(xyz[:, :1])
    sums = scatter_sum(torch.cat([xyz, ones], 1), idx, n_cells)
    mean = sums[:, :3] / sums[:, 3:].clamp(min=1)
    return torch.cat([(xyz[:, 0:1] - cx[:, None]) / grid.cell, (xyz[:, 1:2] - cy[:, None]) / grid.cell,
                      (xyz - mean[idx]) / grid.cell], 1)


class BevCNN(nn.Module):
    """Small 2D CNN on a sparse pillar raster: full-res block + half-res block, summed."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        c = out_channels
        self.stem = nn.Sequential(nn.Conv2d(in_channels, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c),
                                  nn.ReLU(inplace=True))
        self.block1 = BasicBlock(c, c)
        self.down = nn.Sequential(nn.Conv2d(c, c, 3, 2, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True))
        self.block2 = BasicBlock(c, c)
        self.up = nn.Sequential(nn.ConvTranspose2d(c, c, 2, 2, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.block1(self.stem(x))
        return x1 + self.up(self.block2(self.down(x1)))


class PillarEncoder(nn.Module):
    """Points (B, P, F) + mask -> pillar raster (B, C, ny, nx) (PointNet + amax scatter).

    `scale` divides the raw point features before the MLP (conditioning only); `layers` is the
    MLP depth (1 = PointPillars' single linear layer; the cost is per point).
    """

    def __init__(self, grid: GridConfig, in_features: int, channels: int, scale: tuple[float, ...],
                 layers: int = 2) -> None:
        super().__init__()
        self.grid = grid
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32), persistent=False)
        mods: list[nn.Module] = []
        for i in range(layers):
            mods += [nn.Linear(in_features + N_OFFSETS if i == 0 else channels, channels), nn.ReLU(inplace=True)]
        self.mlp = nn.Sequential(*mods)
        self.channels = channels

    def forward(self, points: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> raster (B, C, ny, nx), flat cell index (P,) and the gathered valid points (P, F)."""
        B = points.shape[0]
        ny, nx = self.grid.shape
        n_cells = B * ny * nx
        idx, valid = pillar_index(points[..., :3], mask, self.grid)
        pts = points[valid]
        idx = idx[valid]
        feat = torch.cat([pts / self.scale, pillar_offsets(pts[:, :3], idx, self.grid, n_cells)], 1)
        feat = self.mlp(feat)
        out = feat.new_zeros(n_cells, self.channels).scatter_reduce(
            0, idx[:, None].expand(-1, self.channels), feat, "amax")
        return out.view(B, ny, nx, self.channels).permute(0, 3, 1, 2), idx, pts


class RadarEncoder(nn.Module):
    """Radar (B, N, 7: x, y, z, rcs, vx, vy, dt) -> F_R (B, C_R, ny, nx) and the RCS raster
    (B, 2, ny, nx: max scaled RCS, log1p point count)."""

    def __init__(self, grid: GridConfig, pillar_channels: int, out_channels: int, mlp_layers: int = 2) -> None:
        super().__init__()
        self.pillars = PillarEncoder(grid, 7, pillar_channels, scale=(50.0, 50.0, 3.0, 20.0, 10.0, 10.0, 1.0),
                                     layers=mlp_layers)
        self.cnn = BevCNN(pillar_channels + RADAR_RASTER_CHANNELS, out_channels)

    def forward(self, radar: torch.Tensor, radar_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raster, idx, pts = self.pillars(radar, radar_mask)
        B, _, ny, nx = raster.shape
        n = B * ny * nx
        # float32 like pts (raster is half precision under autocast)
        rcs = pts.new_zeros(n).scatter_reduce(0, idx, ((pts[:, 3] + 10.0) / 50.0).clamp(0.01, 1.0), "amax")
        count = scatter_sum(torch.ones_like(pts[:, 0]), idx, n)
        rcs_raster = torch.stack([rcs, torch.log1p(count)], 0).view(2, B, ny, nx).permute(1, 0, 2, 3)
        return self.cnn(torch.cat([raster, rcs_raster], 1)), rcs_raster
