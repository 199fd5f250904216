"""BEV encoder: ResNet-style 2D stages + SECOND-FPN back to the grid resolution."""

from __future__ import annotations

import torch
from torch import nn

from imkd_core.models.resnet import BasicBlock


class BEVEncoder(nn.Module):
    """(B, C_in, H, W) -> (B, fpn_channels * n_stages, H, W) (output at grid resolution)."""

    def __init__(self, in_channels: int, channels: tuple[int, ...], blocks: tuple[int, ...],
                 strides: tuple[int, ...], fpn_channels: int) -> None:
        super().__init__()
        self.stages = nn.ModuleList()
        self.fpn = nn.ModuleList()
        cin, total = in_channels, 1
        for c, n, s in zip(channels, blocks, strides):
            down = None
            if s != 1 or cin != c:
                down = nn.Sequential(nn.Conv2d(cin, c, 1, s, bias=False), nn.BatchNorm2d(c))
            layers = [BasicBlock(cin, c, s, down)] + [BasicBlock(c, c) for _ in range(n - 1)]
            self.stages.append(nn.Sequential(*layers))
            total *= s
            up: nn.Module = (nn.Conv2d(c, fpn_channels, 1, bias=False) if total == 1
                             else nn.ConvTranspose2d(c, fpn_channels, total, total, bias=False))
            self.fpn.append(nn.Sequential(up, nn.BatchNorm2d(fpn_channels), nn.ReLU(inplace=True)))
            cin = c
        self.out_channels = fpn_channels * len(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        for stage, fpn in zip(self.stages, self.fpn):
            x = stage(x)
            outs.append(fpn(x))
        return torch.cat(outs, 1)
