"""ResNet-18/34/50/101 in plain torch with torchvision-compatible parameter names.

A user-supplied ImageNet checkpoint (torchvision `resnet50-*.pth`) loads with
`load_pretrained(path)`; nothing is ever downloaded. `width` scales all channel counts (the
tiny config runs at 1/4 width; torchvision weights then no longer fit and are reported).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

_LAYERS: dict[int, tuple[str, tuple[int, int, int, int]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
}


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + idt)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)  # stride on 3x3 (torchvision v1.5)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + idt)


class ResNet(nn.Module):
    """ResNet trunk returning the outputs of the requested stages (1..4 = strides 4..32).

    Only the stages up to max(out_levels) are built; `fc` exists only with `with_fc=True`.
    """

    def __init__(self, depth: int = 50, width: float = 1.0, out_levels: tuple[int, ...] = (2, 3, 4),
                 with_fc: bool = False, num_classes: int = 1000) -> None:
        super().__init__()
        if depth not in _LAYERS:
            raise ValueError(f"ResNet depth must be one of {sorted(_LAYERS)}, got {depth}")
        kind, layers = _LAYERS[depth]
        block = BasicBlock if kind == "basic" else Bottleneck
        base = max(8, round(64 * width))
        self.out_levels = tuple(sorted(out_levels))
        self.inplanes = base
        self.conv1 = nn.Conv2d(3, base, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(base)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.out_channels: list[int] = []
        n_stages = 4 if with_fc else max(self.out_levels)
        for i in range(n_stages):
            setattr(self, f"layer{i + 1}", self._make_layer(block, base * 2**i, layers[i], 1 if i == 0 else 2))
        self.stage_channels = [base * 2**i * block.expansion for i in range(4)]
        self.out_channels = [self.stage_channels[lv - 1] for lv in self.out_levels]
        self.fc = nn.Linear(self.stage_channels[3], num_classes) if with_fc else None
        self.n_stages = n_stages
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        # zero-init of the last BN of each block would starve earlier layers of gradient at init
        # (a test demands non-zero gradients everywhere), so the default BN init is kept.

    def _make_layer(self, block: type[nn.Module], planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        mods = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        mods += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        outs = []
        for i in range(1, max(self.out_levels) + 1):
            x = getattr(self, f"layer{i}")(x)
            if i in self.out_levels:
                outs.append(x)
        return outs

    def load_pretrained(self, path: str | Path, strict_shapes: bool = False) -> dict[str, list[str]]:
        """Load a torchvision-named state dict from a local file (weights_only, never a download).

        Accepts a bare state dict or one wrapped under 'state_dict'/'model'. Keys whose shape
        does not match (e.g. reduced width) are skipped and reported as 'mismatched'. Returns
        {'missing', 'unexpected', 'mismatched'} key lists and logs a summary.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"pretrained backbone weights not found: {path}")
        sd = torch.load(path, map_location="cpu", weights_only=True)
        for key in ("state_dict", "model"):
            if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
                sd = sd[key]
        if not isinstance(sd, dict):
            raise ValueError(f"{path} does not hold a state dict")
        sd = {k.removeprefix("module.").removeprefix("backbone."): v for k, v in sd.items()}
        own = self.state_dict()
        mismatched = sorted(k for k, v in sd.items() if k in own and tuple(own[k].shape) != tuple(v.shape))
        if mismatched and strict_shapes:
            raise ValueError(f"{path}: shape mismatch for {mismatched[:5]}...")
        usable = {k: v for k, v in sd.items() if k in own and k not in mismatched}
        unexpected = sorted(k for k in sd if k not in own)
        missing = sorted(k for k in own if k not in usable)
        self.load_state_dict(usable, strict=False)
        log.info("loaded %d/%d backbone tensors from %s (missing %d, unexpected %d, mismatched %d)",
                 len(usable), len(own), path, len(missing), len(unexpected), len(mismatched))
        if missing:
            log.warning("backbone keys missing from %s: %s%s", path, missing[:10], " ..." if len(missing) > 10 else "")
        return {"missing": missing, "unexpected": unexpected, "mismatched": mismatched}
