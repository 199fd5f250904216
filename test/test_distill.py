"""IMKD distillation terms: I_L, L1, L2 (+ selectivity), response, L3, switching."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from imkd_core.config import DistillConfig, tiny
from imkd_core.data.synthetic.frames import synthetic_batch
from imkd_core.models import Student, Teacher
from imkd_core.models import distill as kd

B, C, H, W = 2, 8, 16, 16


def _feats(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    f_l = torch.randn(B, C, H, W, generator=g)
    i_l = torch.rand(B, 1, H, W, generator=g) * (torch.rand(B, 1, H, W, generator=g) > 0.5)
    h_gt = torch.zeros(B, 10, H, W)
    h_gt[:, 0, 4, 4] = 1.0
    h_gt[:, 3, 10, 12] = 1.0
    return f_l, i_l, h_gt


def test_intensity_map() -> None:
    grid = tiny().grid
    # two points in one cell (mean 30), one bright point elsewhere, one outside the grid
    pts = torch.tensor([[[1.0, 1.0, 0.0, 20.0, 0.0], [1.2, 1.1, 0.0, 40.0, 0.0], [20.0, -10.0, 0.5, 90.0, 0.0],
                         [500.0, 0.0, 0.0, 255.0, 0.0], [0.0, 0.0, 0.0, 255.0, 0.0]]])
    mask = torch.tensor([[True, True, True, True, False]])
    i_l = kd.intensity_map(pts, mask, grid, sigma=0.0)
    assert i_l.shape == (1, 1, 64, 64)
    cell = lambda x, y: (int((y + 51.2) // 1.6), int((x + 51.2) // 1.6))
    assert i_l[0, 0][cell(20.0, -10.0)] == 1.0                       # the per-sample maximum
    torch.testing.assert_close(i_l[0, 0][cell(1.0, 1.0)], torch.tensor(30.0 / 90.0))
    assert int((i_l > 0).sum()) == 2                                  # 0 where empty (and the padded point)
    smooth = kd.intensity_map(pts, mask, grid, sigma=0.7)
    assert int((smooth > 0).sum()) == 2 and float(smooth.max()) == 1.0
    assert float(smooth.min()) >= 0.0


def test_l1_zero_when_equal_positive_otherwise() -> None:
    f_l, i_l, h_gt = _feats()
    h = h_gt.amax(1, keepdim=True)
    assert float(kd.l1_radar_distill(f_l.clone(), f_l, i_l, h)) == 0.0
    assert float(kd.l1_radar_distill(f_l + 0.1, f_l, i_l, h)) == pytest.approx(0.01, rel=1e-4)
    # only cells with LiDAR returns count
    far = f_l.clone()
    far[(i_l == 0).expand_as(far)] += 100.0
    assert float(kd.l1_radar_distill(far, f_l, i_l, h)) == 0.0


def test_l2_selective() -> None:
    f_l, _, h_gt = _feats()
    teacher_p = h_gt * 0.9 + 0.05           # close to the GT
    student_p = torch.full_like(h_gt, 0.5)  # far from it
    w2 = kd.selective_weights(f_l, teacher_p, student_p, h_gt, tau=0.5)
    assert float(w2.sum()) > 0
    assert float(kd.l2_fused_distill(f_l.clone(), f_l, w2)) == 0.0
    assert float(kd.l2_fused_distill(f_l + 1.0, f_l, w2)) == pytest.approx(1.0, rel=1e-4)
    # where the student already beats the teacher nothing is distilled
    w_none = kd.selective_weights(f_l, student_p, teacher_p, h_gt)
    assert float(w_none.sum()) == 0.0 and float(kd.l2_fused_distill(f_l + 1.0, f_l, w_none)) == 0.0
    # W2 follows the teacher's feature norm
    f_big = f_l.clone()
    f_big[:, :, 7, 7] *= 10
    w_big = kd.selective_weights(f_big, teacher_p, student_p, h_gt)
    assert bool((w_big[:, 0, 7, 7] > w2[:, 0, 7, 7]).all())


def test_response_and_l3() -> None:
    g = torch.Generator().manual_seed(1)
    t_logits = torch.randn(B, 10, H, W, generator=g)
    assert abs(float(kd.response_distill(t_logits.clone(), t_logits))) < 1e-6
    assert float(kd.response_distill(t_logits + 1.0, t_logits)) > 1e-3
    _, i_l, _ = _feats()
    perfect = torch.logit(i_l.clamp(1e-6, 1 - 1e-6))
    assert abs(float(kd.l3_intensity_bce(perfect, i_l))) < 1e-4
    assert float(kd.l3_intensity_bce(torch.zeros_like(i_l), i_l)) > 1e-2


@pytest.fixture(scope="module")
def kd_setup():
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    cfg = tiny()
    torch.manual_seed(0)
    student, teacher = Student(cfg).train(), Teacher(cfg).freeze()
    batch = synthetic_batch(cfg, 1, n_lidar=5000)
    with torch.no_grad():
        return cfg, student, batch, student(batch), teacher(batch)


@torch.no_grad()
def test_switching_terms(kd_setup) -> None:
    cfg, student, batch, out, t_out = kd_setup
    full = student.loss(batch, out, t_out, cfg.distill)
    terms = {"l1": "l1_weight", "l2": "l2_weight", "l3": "l3_weight", "resp": "resp_weight"}
    weighted = {t: float(getattr(cfg.distill, w)) * float(full[t]) for t, w in terms.items()}
    assert all(float(full[t]) > 0 for t in terms)
    torch.testing.assert_close(full["total"], full["det"] + sum(weighted.values()))
    for t in terms:
        dc = dataclasses.replace(cfg.distill, **{t: False})
        less = student.loss(batch, out, t_out, dc)
        assert t not in less
        torch.testing.assert_close(less["total"], full["total"] - weighted[t])
    none = student.loss(batch, out, None, DistillConfig(l1=False, l2=False, l3=False, resp=False))
    assert not ({"l1", "l2", "l3", "resp"} & set(none)) and torch.equal(none["total"], none["det"])
    # L3 alone needs no teacher network (I_L from the batch's LiDAR)
    only_l3 = student.loss(batch, out, None, DistillConfig(l1=False, l2=False, l3=True, resp=False))
    torch.testing.assert_close(only_l3["l3"], full["l3"])
    with pytest.raises(ValueError, match="teacher_out"):
        student.loss(batch, out, None, DistillConfig())


@torch.no_grad()
def test_student_terms_vanish_when_adapted_features_match(kd_setup) -> None:
    """Model level: with A_R(F_R) and A_M(F_M) replaced by F_L itself, L1 and L2 are 0."""
    cfg, student, batch, out, t_out = kd_setup
    f_l = t_out["F_L"]
    h_gt = torch.zeros_like(t_out["I_L"])
    assert float(kd.l1_radar_distill(f_l, f_l, t_out["I_L"], h_gt)) == 0.0
    assert float(kd.l1_radar_distill(student.adapter_r(out["F_R"]), f_l, t_out["I_L"], h_gt)) > 0
    w2 = torch.ones_like(h_gt)
    assert float(kd.l2_fused_distill(f_l, f_l, w2)) == 0.0
    assert float(kd.l2_fused_distill(student.adapter_m(out["F_M"]), f_l, w2)) > 0


@torch.no_grad()
def test_init_inherits_teacher_bev_encoder_and_head() -> None:
    """'init': the student's BEV encoder and head become the teacher's, A_M the identity, so the
    student's head on F_L reproduces the teacher's heatmaps; nothing else changes."""
    cfg = tiny()
    torch.manual_seed(0)
    teacher = Teacher(cfg).freeze()
    torch.manual_seed(1)
    student = Student(cfg).eval()
    backbone_before = {k: v.clone() for k, v in student.backbone.state_dict().items()}
    f_l = torch.randn(1, cfg.model.bev_channels, *cfg.grid.shape)
    t_heads = teacher.head(teacher.bev_encoder(f_l))
    assert not torch.allclose(student.heads(student.bev_encode(f_l))[0]["hm"], t_heads[0]["hm"])
    student.inherit_from(teacher)
    for mine, theirs in ((student.bev_encoder, teacher.bev_encoder), (student.head, teacher.head)):
        for (k, a), (_, b) in zip(mine.state_dict().items(), theirs.state_dict().items()):
            assert torch.equal(a, b), k
    torch.testing.assert_close(student.adapter_m(f_l), f_l)
    s_heads = student.heads(student.bev_encode(f_l))
    for s, t in zip(s_heads, t_heads):
        torch.testing.assert_close(s["hm"], t["hm"], rtol=1e-4, atol=1e-4)
    assert all(torch.equal(v, student.backbone.state_dict()[k]) for k, v in backbone_before.items())
    assert any(p.requires_grad for p in student.head.parameters())   # still trainable
