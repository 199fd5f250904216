"""Teacher LiDAR encoder: pillars with intensity on the student's BEV grid -> F_L."""

from __future__ import annotations

import torch
from torch import nn

from imkd_core.config import GridConfig
from imkd_core.models.radar_encoder import BevCNN, PillarEncoder


class LidarEncoder(nn.Module):
    """LiDAR (B, M, 5: x, y, z, intensity, dt) -> F_L (B, C, ny, nx); intensity is expected in
    the nuScenes 0-255 range (scaled by 1/255 before the MLP)."""

    def __init__(self, grid: GridConfig, pillar_channels: int, out_channels: int, mlp_layers: int = 2) -> None:
        super().__init__()
        self.pillars = PillarEncoder(grid, 5, pillar_channels, scale=(50.0, 50.0, 3.0, 255.0, 1.0), layers=mlp_layers)
        self.cnn = BevCNN(pillar_channels, out_channels)

    def forward(self, lidar: torch.Tensor, lidar_mask: torch.Tensor) -> torch.Tensor:
        raster, _, _ = self.pillars(lidar, lidar_mask)
        return self.cnn(raster)
