"""Teacher / Student forward shapes, KD gradients, and a small overfitting check."""

from __future__ import annotations

import pytest
import torch

from imkd_core.config import DistillConfig, paper_r50_256x704, tiny
from imkd_core.data.synthetic.frames import synthetic_batch
from imkd_core.frame import CLASSES
from imkd_core.models import Student, Teacher


@pytest.fixture(autouse=True)
def _threads():
    n = torch.get_num_threads()
    torch.set_num_threads(min(n, 2))
    yield
    torch.set_num_threads(n)


def _check_student_out(out: dict, cfg, B: int) -> None:
    m = cfg.model
    H, W = cfg.grid.shape
    h, w = cfg.data.image_size[0] // 16, cfg.data.image_size[1] // 16
    assert out["F_C"].shape == (B, m.context_channels, H, W)
    assert out["F_R"].shape == (B, m.radar_channels, H, W)
    assert out["F_M"].shape == (B, m.bev_channels, H, W)
    assert out["I_hat"].shape == (B, 1, H, W) and 0 <= float(out["I_hat"].min()) <= float(out["I_hat"].max()) <= 1
    assert out["depth"].shape == (B, 6, m.num_depth_bins, h, w)
    torch.testing.assert_close(out["depth"].sum(2), torch.ones(B, 6, h, w))
    assert len(out["heads"]) == len(m.task_groups)
    for group, head in zip(m.task_groups, out["heads"]):
        assert head["hm"].shape == (B, len(group), H, W) and head["box"].shape == (B, 10, H, W)
    for k in ("F_C", "F_R", "F_M", "I_hat"):
        assert torch.isfinite(out[k]).all(), k


def test_tiny_forward_shapes_and_decode() -> None:
    cfg = tiny()
    torch.manual_seed(0)
    student, teacher = Student(cfg).eval(), Teacher(cfg).eval()
    batch = synthetic_batch(cfg, 2)
    with torch.no_grad():
        out = student(batch)
        t_out = teacher(batch)
    _check_student_out(out, cfg, 2)
    assert t_out["F_L"].shape == (2, cfg.model.bev_channels, 64, 64)
    # I_L: box returns (raw 40-120) on the fixed 100 scale; the ground returns (raw < 15) are left out
    i_l = t_out["I_L"]
    assert i_l.shape == (2, 1, 64, 64) and 0.4 < float(i_l.max()) <= 1.0
    assert float((i_l > 0).float().mean()) < 0.1
    dets = student.decode(out)
    assert len(dets) == 2
    for boxes, scores, labels in dets:
        assert boxes.shape[1] == 9 and len(boxes) == len(scores) == len(labels) <= cfg.model.max_detections
        assert bool((scores > cfg.model.score_threshold).all()) and bool((labels < len(CLASSES)).all())


@pytest.mark.slow
def test_paper_forward_shapes_batch1() -> None:
    cfg = paper_r50_256x704()
    torch.manual_seed(0)
    student = Student(cfg).eval()
    with torch.no_grad():
        out = student(synthetic_batch(cfg, 1, with_lidar=False, with_gt=False))
    _check_student_out(out, cfg, 1)
    assert out["F_C"].shape[-2:] == (128, 128) and out["depth"].shape[2] == 118


def test_all_kd_terms_reach_every_student_parameter_and_no_teacher_parameter() -> None:
    cfg = tiny()
    cfg.distill = DistillConfig(l1=True, l2=True, l3=True, resp=True)
    torch.manual_seed(0)
    student = Student(cfg).train()
    teacher = Teacher(cfg).freeze()
    for p in teacher.parameters():  # even if someone forgets to freeze, nothing may flow back
        p.requires_grad_(True)
    batch = synthetic_batch(cfg, 2, n_boxes=12)
    t_out = teacher(batch)
    losses = student.loss(batch, student(batch), t_out)
    assert {"det", "det_hm", "det_bbox", "det_depth", "l1", "l2", "l3", "resp", "total"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())
    losses["total"].backward()
    bad = [n for n, p in student.named_parameters()
           if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0)]
    assert not bad, f"parameters without a finite non-zero gradient: {bad}"
    assert all(p.grad is None for p in teacher.parameters())


@pytest.mark.slow
def test_tiny_student_overfits_one_batch() -> None:
    """One fixed synthetic batch (noise images, planted boxes of every class, radar returns on
    the boxes): the detection loss must fall >= 5x, its box-regression part too."""
    cfg = tiny()
    cfg.distill = DistillConfig(l1=False, l2=False, l3=False, resp=False)
    torch.manual_seed(0)
    student = Student(cfg).train()
    batch = synthetic_batch(cfg, 1, seed=0, with_lidar=False)
    opt = torch.optim.AdamW(student.parameters(), lr=2e-3, weight_decay=0.0)
    hist = []
    for _ in range(40):
        losses = student.loss(batch, student(batch))
        opt.zero_grad(set_to_none=True)
        losses["total"].backward()
        opt.step()
        hist.append({k: float(v.detach()) for k, v in losses.items()})
    first = hist[0]
    last = {k: sum(h[k] for h in hist[-5:]) / 5 for k in first}
    assert last["det"] * 5 <= first["det"], (first, last)
    assert last["det_bbox"] * 5 <= first["det_bbox"], (first, last)


def test_degenerate_inputs_stay_finite() -> None:
    """No radar returns, no GT boxes, no LiDAR in range, one camera missing: finite losses."""
    cfg = tiny()
    torch.manual_seed(0)
    student, teacher = Student(cfg).train(), Teacher(cfg).freeze()
    batch = synthetic_batch(cfg, 2)
    batch["radar_mask"][:] = False
    batch["gt_labels"][:] = -1
    batch["lidar"][1, :, :2] += 500.0            # sample 1: every LiDAR point outside the grid
    batch["camera_mask"][0, 2] = False
    batch["images"][0, 2] = 0.0
    batch["intrinsics"][0, 2] = torch.eye(3)
    batch["cam_to_ego"][0, 2] = torch.eye(4)
    out = student(batch)
    losses = student.loss(batch, out, teacher(batch))
    assert all(torch.isfinite(v) for v in losses.values()), losses
    losses["total"].backward()
    assert all(torch.isfinite(p.grad).all() for p in student.parameters() if p.grad is not None)
    assert float(teacher(batch)["I_L"][1].abs().sum()) == 0.0
