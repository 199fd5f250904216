"""Export parity of the (micro) student: TorchScript and ONNX (opset 18, run through onnxruntime)
against the PyTorch Student on two frames (the second with another calibration, a missing camera
and another radar count: the graphs are not specialised to the tracing frame). Max abs diff < 1e-4."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


def test_student_export_parity(tmp_path: Path) -> None:
    from imkd_core.checkpoint import save_checkpoint
    from imkd_core.models.detector import Student
    from test.train_support import micro_config
    from train.export import main as export_main

    # a checkpoint with non-trivial heads: perturb the random init so heatmaps are not all at the prior
    cfg = micro_config()
    torch.manual_seed(0)
    student = Student(cfg, load_pretrained=False)
    with torch.no_grad():
        for name, p in student.named_parameters():
            if name.startswith("head.") and name.endswith("bias"):
                p.add_(torch.randn_like(p))
    ckpt = save_checkpoint(tmp_path / "student.pt", {"kind": "student", "config": cfg.to_dict(),
                                                     "model": student.state_dict()})
    grad = torch.is_grad_enabled()
    try:
        report = export_main(["--checkpoint", str(ckpt), "--out", str(tmp_path / "export"), "--opset", "18"])
    finally:
        torch.set_grad_enabled(grad)
    assert report["ok"]
    for kind in ("torchscript", "onnx"):
        r = report[kind]
        assert Path(r["path"]).stat().st_size > 10_000
        assert r["max_abs_diff"] < 1e-4, (kind, r)
        assert len(r["max_abs_diff_per_frame"]) == 2
        assert r["detections"]["same_labels"] and r["detections"]["n_ref"] > 0
        assert r["detections"]["max_box_diff"] < 1e-3
    assert report["radar_points"][0] != report["radar_points"][1]
    assert report["frustum_cells"][0] != report["frustum_cells"][1]
    assert report["onnx"]["opset"] >= 17
    assert len(report["onnx"]["graph_inputs"]) == 9  # images ... radar_mask + the three pool-index vectors
