"""Teacher outputs cached per optimiser step, shared by the distillation runs of one seed.

Runs of one seed see the same batches in the same order (data order and augmentation are
functions of the seed), so the frozen teacher's outputs (F_L, I_L, heatmaps and boxes) of step k
are the same in every KD arm: the first run writes them, the others read them instead of running
the teacher. Each entry holds a fingerprint of its batch (sums of the LiDAR points and GT boxes);
a batch that does not match is recomputed (and counted), never silently used. Entries are
stored in float16 and every run, the writing one included, uses the stored values, so all arms
distil from bit-identical targets.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from imkd_core.atomic import atomic_write_text
from imkd_core.errors import UserError


def _fingerprint(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    lid = batch["lidar"][..., :4].double() * batch["lidar_mask"][..., None].double()
    return torch.stack([lid.sum(), lid.abs().sum(), batch["gt_boxes"].double().abs().sum(),
                        (batch["gt_labels"].double() + 2).sum()]).cpu()


def _teacher_id(path: str) -> str:
    """Checkpoint identity: size and a hash of its bytes (a retrained teacher is a new cache)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def _map(x: Any, fn) -> Any:
    if isinstance(x, torch.Tensor):
        return fn(x)
    if isinstance(x, dict):
        return {k: _map(v, fn) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_map(v, fn) for v in x]
    return x


class TeacherCache:
    """DIR/<teacher id>-seed<S>-bs<B>/<step>.pt; get() -> outputs or None, put() -> stored outputs."""

    def __init__(self, root: str | os.PathLike, teacher_path: str, seed: int, batch_size: int,
                 device: torch.device) -> None:
        self.dir = Path(root) / f"{_teacher_id(teacher_path)}-seed{seed}-bs{batch_size}"
        self.dir.mkdir(parents=True, exist_ok=True)
        meta = self.dir / "meta.json"
        if not meta.exists():
            atomic_write_text(meta, json.dumps({"teacher": str(teacher_path), "seed": seed,
                                                "batch_size": batch_size}) + "\n")
        self.device = device
        self.hits = self.misses = self.mismatches = 0

    def _path(self, step: int) -> Path:
        return self.dir / f"{step:07d}.pt"

    def get(self, step: int, batch: dict[str, torch.Tensor]) -> dict | None:
        p = self._path(step)
        if not p.exists():
            self.misses += 1
            return None
        try:
            entry = torch.load(p, map_location="cpu", weights_only=True)
        except Exception:  # a torn or foreign file: recompute
            self.mismatches += 1
            return None
        if not torch.allclose(entry["fingerprint"], _fingerprint(batch), rtol=1e-6, atol=1e-3):
            self.mismatches += 1
            return None
        self.hits += 1
        return _map(entry["out"], lambda t: t.to(self.device, torch.float32) if t.is_floating_point()
                    else t.to(self.device))

    def put(self, step: int, batch: dict[str, torch.Tensor], out: dict) -> dict:
        stored = _map(out, lambda t: t.detach().to("cpu", torch.float16) if t.is_floating_point()
                      else t.detach().cpu())
        p = self._path(step)
        tmp = p.with_name(p.name + f".tmp{os.getpid()}")
        torch.save({"fingerprint": _fingerprint(batch), "out": stored}, tmp)
        os.replace(tmp, p)
        return _map(stored, lambda t: t.to(self.device, torch.float32) if t.is_floating_point()
                    else t.to(self.device))

    def stats(self) -> dict[str, int | str]:
        return {"dir": str(self.dir), "hits": self.hits, "misses": self.misses, "mismatches": self.mismatches}


def check_usable(world_size: int) -> None:
    if world_size > 1:
        raise UserError("--teacher-cache works with one process only (the cache is keyed by global step)")
