"""ONNX export of the Student (inference graph).

The calibration-keyed pool-index cache lives in Python, so the exported graph takes the BEV
pool indices as inputs: compute them with `Student.lift_splat.indices(...)` once per
calibration (exactly what the run-time cache does) and feed them with every frame.
Uses the TorchScript exporter (opset 18: ScatterElements with max/min/add reductions).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import torch
from torch import nn

from imkd_core.models.detector import Student
from imkd_core.models.lift_splat import PoolIndices

INPUTS = ("images", "intrinsics", "cam_to_ego", "camera_mask", "radar", "radar_mask",
          "pool_depth_idx", "pool_ctx_idx", "pool_bev_idx")


class StudentGraph(nn.Module):
    """Student inference with explicit pool indices -> (hm_0, box_0, ..., hm_T, box_T, I_hat)."""

    def __init__(self, student: Student, batch_size: int = 1) -> None:
        super().__init__()
        self.student = student
        self.n_bev = batch_size * student.cfg.grid.ny * student.cfg.grid.nx

    def forward(self, images: torch.Tensor, intrinsics: torch.Tensor, cam_to_ego: torch.Tensor,
                camera_mask: torch.Tensor, radar: torch.Tensor, radar_mask: torch.Tensor,
                pool_depth_idx: torch.Tensor, pool_ctx_idx: torch.Tensor,
                pool_bev_idx: torch.Tensor) -> tuple[torch.Tensor, ...]:
        batch = {"images": images, "intrinsics": intrinsics, "cam_to_ego": cam_to_ego, "camera_mask": camera_mask,
                 "radar": radar, "radar_mask": radar_mask}
        idx = PoolIndices(pool_depth_idx, pool_ctx_idx, pool_bev_idx, self.n_bev)
        out = self.student(batch, pool_indices=idx)
        return tuple(t for h in out["heads"] for t in (h["hm"], h["box"])) + (out["I_hat"],)


def graph_inputs(student: Student, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """The exported graph's inputs for a collated batch (pool indices via the cache)."""
    idx = student.lift_splat.indices(batch["intrinsics"], batch["cam_to_ego"], batch["camera_mask"])
    return tuple(batch[k] for k in INPUTS[:6]) + (idx.depth, idx.ctx, idx.bev)


def output_names(student: Student) -> list[str]:
    n = len(student.cfg.model.task_groups)
    return [f"{k}_{t}" for t in range(n) for k in ("hm", "box")] + ["I_hat"]


def _export(student: Student, batch: dict[str, torch.Tensor], f: str | io.BytesIO, opset: int) -> None:
    graph = StudentGraph(student, batch["images"].shape[0]).eval()
    dyn = {"radar": {1: "n_radar"}, "radar_mask": {1: "n_radar"},
           **{k: {0: "n_pool"} for k in INPUTS[6:]}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(graph, graph_inputs(student, batch), f, dynamo=False, opset_version=opset,
                          input_names=list(INPUTS), output_names=output_names(student), dynamic_axes=dyn)


def export_onnx(student: Student, batch: dict[str, torch.Tensor], path: str | Path, opset: int = 18) -> Path:
    """Export `student` (eval) for batches shaped like `batch`; radar count and pool-index
    count (hence the camera mask's values) are dynamic."""
    path = Path(path)
    _export(student, batch, str(path), opset)
    return path


def onnx_bytes(student: Student, batch: dict[str, torch.Tensor], opset: int = 18) -> bytes:
    """The same export as `export_onnx`, in memory (what an onnxruntime InferenceSession loads)."""
    buf = io.BytesIO()
    _export(student, batch, buf, opset)
    return buf.getvalue()
