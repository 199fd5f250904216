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


@pytest.mark.slow
@pytest.mark.parametrize("config", ["tiny", "paper_r50_256x704"])
def test_both_configs_export_with_their_config(tmp_path: Path, config: str) -> None:
    """Random weights of each preset: the files export, match PyTorch on a second frame with a
    camera masked (dynamic camera mask), and carry the config they were made from. (The paper
    config exports ONNX only here, to keep the suite fast; TorchScript traces the same graph.)"""
    import json

    import onnx

    from imkd_core.config import IMKDConfig, get_config
    from train.export import main as export_main

    grad = torch.is_grad_enabled()
    try:
        report = export_main(["--config", config, "--out", str(tmp_path)]
                             + (["--no-torchscript"] if config != "tiny" else []))
    finally:
        torch.set_grad_enabled(grad)
    assert report["ok"] and report["config"] == config
    assert report["camera_masks"][0] != report["camera_masks"][1]
    kinds = ("torchscript", "onnx") if config == "tiny" else ("onnx",)
    for kind in kinds:
        assert report[kind]["max_abs_diff"] < 1e-4, (kind, report[kind])
        assert report[kind]["detections"]["same_labels"]
    meta = {p.key: p.value for p in onnx.load(report["onnx"]["path"], load_external_data=False).metadata_props}
    assert IMKDConfig.from_dict(json.loads(meta["imkd_config"])).to_dict() == get_config(config).to_dict()
    assert json.loads(meta["imkd_outputs"])[-1] == "I_hat"
    if "torchscript" in report:
        extra = {"imkd.json": ""}
        torch.jit.load(report["torchscript"]["path"], _extra_files=extra)
        assert json.loads(json.loads(extra["imkd.json"])["imkd_config"])["name"] == config
    assert not list(tmp_path.glob("*.partial"))
