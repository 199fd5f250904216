"""SECOND-FPN style neck: every backbone level brought to stride 16 and concatenated."""

from __future__ import annotations

import torch
from torch import nn

OUT_STRIDE = 16


class SecondFPN(nn.Module):
    """Per level: strided conv (stride < 16), 1x1 conv (16) or transposed conv (> 16), each
    to `channels` with BN+ReLU; the outputs are concatenated (len(levels) * channels)."""

    def __init__(self, in_channels: list[int], levels: tuple[int, ...], channels: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList()
        for c, lv in zip(in_channels, levels):
            stride = 2 ** (lv + 1)
            if stride < OUT_STRIDE:
                k = OUT_STRIDE // stride
                conv: nn.Module = nn.Conv2d(c, channels, k, k, bias=False)
            elif stride == OUT_STRIDE:
                conv = nn.Conv2d(c, channels, 1, bias=False)
            else:
                k = stride // OUT_STRIDE
                conv = nn.ConvTranspose2d(c, channels, k, k, bias=False)
            self.blocks.append(nn.Sequential(conv, nn.BatchNorm2d(channels), nn.ReLU(inplace=True)))
        self.out_channels = channels * len(levels)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([blk(f) for blk, f in zip(self.blocks, feats)], dim=1)
