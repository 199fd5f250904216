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
    # two object points in one cell (mean 30), one bright point elsewhere, a road return (z below
    # ground_z), one point outside the grid and one padded point
    pts = torch.tensor([[[1.0, 1.0, 0.5, 20.0, 0.0], [1.2, 1.1, 0.8, 40.0, 0.0], [20.0, -10.0, 0.5, 90.0, 0.0],
                         [-10.0, 5.0, 0.05, 200.0, 0.0], [500.0, 0.0, 0.5, 255.0, 0.0],
                         [0.0, 0.0, 0.5, 255.0, 0.0]]])
    mask = torch.tensor([[True, True, True, True, True, False]])
    i_l = kd.intensity_map(pts, mask, grid, sigma=0.0, ground_z=0.3, scale=100.0)
    assert i_l.shape == (1, 1, 64, 64)
    cell = lambda x, y: (int((y + 51.2) // 1.6), int((x + 51.2) // 1.6))
    torch.testing.assert_close(i_l[0, 0][cell(20.0, -10.0)], torch.tensor(0.9))   # fixed scale, no max
    torch.testing.assert_close(i_l[0, 0][cell(1.0, 1.0)], torch.tensor(0.3))
    assert float(i_l[0, 0][cell(-10.0, 5.0)]) == 0.0                               # ground return
    assert int((i_l > 0).sum()) == 2
    bright = kd.intensity_map(pts * torch.tensor([1.0, 1, 1, 3, 1]), mask, grid, sigma=0.0, scale=100.0)
    assert float(bright.max()) == 1.0                                               # clipped
    smooth = kd.intensity_map(pts, mask, grid, sigma=0.7, scale=100.0)
    assert int((smooth > 0).sum()) == 2 and float(smooth.min()) >= 0.0


def test_radar_active_dilates() -> None:
    count = torch.zeros(1, 1, 9, 9)
    count[0, 0, 4, 4] = 2.0
    assert int(kd.radar_active(count, 0).sum()) == 1
    assert int(kd.radar_active(count, 1).sum()) == 9
    assert int(kd.radar_active(count, 2).sum()) == 25


def test_l1_zero_when_equal_positive_otherwise() -> None:
    f_l, i_l, h_gt = _feats()
    h = h_gt.amax(1, keepdim=True)
    active = torch.ones_like(i_l)
    w1 = kd.l1_weights(i_l, h, active)
    assert float(kd.l1_radar_distill(f_l.clone(), f_l, w1)) == 0.0
    assert float(kd.l1_radar_distill(f_l + 0.1, f_l, w1, normalise=False)) == pytest.approx(0.01, rel=1e-4)
    # only weighted cells count: no LiDAR object and no box -> nothing
    far = f_l.clone()
    far[(w1 == 0).expand_as(far)] += 100.0
    assert float(kd.l1_radar_distill(far, f_l, w1)) == 0.0
    # and only where radar saw something
    quiet = torch.zeros_like(i_l)
    quiet[:, :, :8] = 1.0
    w_q = kd.l1_weights(i_l, h, quiet)
    assert float(w_q[:, :, 8:].sum()) == 0.0 and float(w_q.sum()) > 0
    # standardised by the teacher's statistics: the term does not depend on the feature scale
    g = torch.Generator().manual_seed(3)
    s = f_l + 0.3 * torch.randn(f_l.shape, generator=g)
    torch.testing.assert_close(kd.l1_radar_distill(10 * s, 10 * f_l, w1), kd.l1_radar_distill(s, f_l, w1))


def test_box_response() -> None:
    g = torch.Generator().manual_seed(2)
    t_heads = [{"hm": torch.full((B, 2, H, W), -5.0), "box": torch.randn(B, 10, H, W, generator=g)}]
    t_heads[0]["hm"][:, 1, 3, 3] = 3.0                                  # one confident cell
    same = [{"hm": torch.zeros(B, 2, H, W), "box": t_heads[0]["box"].clone()}]
    cw = (1.0,) * 8 + (0.2, 0.2)
    assert float(kd.box_response_distill(same, t_heads, cw)) == 0.0
    off = [{"hm": torch.zeros(B, 2, H, W), "box": t_heads[0]["box"].clone()}]
    off[0]["box"][:, :, 10, 10] += 5.0                                  # wrong only where the teacher is unsure
    assert float(kd.box_response_distill(off, t_heads, cw)) == 0.0
    off[0]["box"][:, 0, 3, 3] += 1.0                                    # wrong at the confident cell
    assert float(kd.box_response_distill(off, t_heads, cw)) == pytest.approx(1.0 / sum(cw), rel=1e-4)
    unsure = [{"hm": torch.full((B, 2, H, W), -5.0), "box": t_heads[0]["box"]}]
    assert float(kd.box_response_distill(off, unsure, cw)) == 0.0


def test_l2_selective() -> None:
    f_l, _, h_gt = _feats()
    teacher_p = h_gt * 0.9 + 0.05           # close to the GT
    student_p = torch.full_like(h_gt, 0.5)  # far from it
    w2 = kd.selective_weights(f_l, teacher_p, student_p, h_gt, tau=0.5)
    assert float(w2.sum()) > 0
    assert float(kd.l2_fused_distill(f_l.clone(), f_l, w2)) == 0.0
    assert float(kd.l2_fused_distill(f_l + 1.0, f_l, w2, normalise=False)) == pytest.approx(1.0, rel=1e-4)
    # standardised per channel on the weighted cells: an offset costs nothing, anti-correlation
    # costs 2 (1 - r) = 4 per channel
    assert float(kd.l2_fused_distill(f_l + 1.0, f_l, w2)) == pytest.approx(0.0, abs=1e-5)
    assert float(kd.l2_fused_distill(-f_l, f_l, w2)) == pytest.approx(4.0, rel=1e-3)
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
    # an untrained teacher is nowhere confident: let the box response see its cells above 0.05
    cfg = dataclasses.replace(cfg, distill=dataclasses.replace(cfg.distill, resp_box_min_prob=0.05))
    torch.manual_seed(0)
    student, teacher = Student(cfg).train(), Teacher(cfg).freeze()
    batch = synthetic_batch(cfg, 1, n_lidar=5000)
    with torch.no_grad():
        return cfg, student, batch, student(batch), teacher(batch)


@torch.no_grad()
def test_switching_terms(kd_setup) -> None:
    cfg, student, batch, out, t_out = kd_setup
    full = student.loss(batch, out, t_out, cfg.distill)
    terms = {"l1": "l1_weight", "l2": "l2_weight", "l3": "l3_weight", "resp": "resp_weight",
             "bev": "bev_weight", "resp_box": "resp_box_weight"}
    weighted = {t: float(getattr(cfg.distill, w)) * float(full[t]) for t, w in terms.items()}
    assert all(float(full[t]) > 0 for t in terms), {t: float(full[t]) for t in terms}
    torch.testing.assert_close(full["total"], full["det"] + sum(weighted.values()))
    part_of = {"l2": ("l2", "bev"), "resp": ("resp", "resp_box")}   # a switch takes its parts along
    for t in ("l1", "l2", "l3", "resp"):
        dc = dataclasses.replace(cfg.distill, **{t: False})
        less = student.loss(batch, out, t_out, dc)
        gone = part_of.get(t, (t,))
        assert not set(gone) & set(less)
        torch.testing.assert_close(less["total"], full["total"] - sum(weighted[g] for g in gone))
    none = student.loss(batch, out, None, DistillConfig(l1=False, l2=False, l3=False, resp=False))
    assert not ({"l1", "l2", "l3", "resp", "bev", "resp_box"} & set(none))
    assert torch.equal(none["total"], none["det"])
    # L3 alone needs no teacher network (I_L from the batch's LiDAR)
    only_l3 = student.loss(batch, out, None, DistillConfig(l1=False, l2=False, l3=True, resp=False))
    torch.testing.assert_close(only_l3["l3"], full["l3"])
    with pytest.raises(ValueError, match="teacher_out"):
        student.loss(batch, out, None, DistillConfig())
    with pytest.raises(ValueError, match="teacher_out"):
        student.loss(batch, out, None, DistillConfig(l1=False, l2=False, resp=False, l3_target="objectness"))
    obj = student.loss(batch, out, t_out, dataclasses.replace(cfg.distill, l3_target="objectness"))
    assert float(obj["l3"]) > 0 and not torch.equal(obj["l3"], full["l3"])


@torch.no_grad()
def test_student_terms_vanish_when_adapted_features_match(kd_setup) -> None:
    """Model level: with A_R(F_R) and A_M(F_M) replaced by F_L itself, L1 and L2 are 0."""
    cfg, student, batch, out, t_out = kd_setup
    f_l = t_out["F_L"]
    w1 = torch.ones_like(t_out["I_L"])
    assert float(kd.l1_radar_distill(f_l, f_l, w1)) == 0.0
    assert float(kd.l1_radar_distill(student.adapter_r(out["F_R"]), f_l, w1)) > 0
    w2 = torch.ones_like(w1)
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
    assert not any(p.requires_grad for p in student.adapter_m.parameters())   # A_M stays the identity
    inherited = {id(p) for p in student.inherited_parameters()}
    assert inherited == {id(p) for m in (student.bev_encoder, student.head) for p in m.parameters()}


@torch.no_grad()
def test_strong_gate_spans_zero_to_two() -> None:
    """The 'strong' camera gate is 1 at the intensity prior, near 2 on a confident object cell
    and near 0 where the branch is sure a cell is empty; the 'soft' gate barely moves F_C."""
    from imkd_core.models.fusion import INTENSITY_PRIOR_BIAS, IntensityFusion

    torch.manual_seed(0)
    f_c, f_r, rcs = torch.rand(1, 8, 4, 4) + 0.5, torch.rand(1, 6, 4, 4), torch.rand(1, 2, 4, 4)
    gates = {}
    for gate in ("soft", "strong"):
        fus = IntensityFusion(8, 6, 8, hidden=4, offset=False, gate=gate).eval()
        seen = {}
        logits = torch.full((1, 1, 4, 4), INTENSITY_PRIOR_BIAS)
        logits[..., 0, 0], logits[..., 0, 1] = 6.0, -12.0                  # object / empty cell
        fus.intensity[-1].register_forward_hook(lambda _m, _i, _o, l=logits: l)
        fus.out.register_forward_hook(lambda _m, i, _o, seen=seen: seen.setdefault("x", i[0]))
        fus(f_c, f_r, rcs)
        gates[gate] = seen["x"][:, :8] / f_c                               # F_C' / F_C per channel
    strong, soft = gates["strong"], gates["soft"]
    torch.testing.assert_close(strong[..., 1:, :], torch.ones_like(strong[..., 1:, :]))
    assert float(strong[..., 0, 0].min()) > 1.9 and float(strong[..., 0, 1].max()) < 0.01
    contrast = lambda g: float((g[..., 0, 0] - g[..., 0, 1]).abs().mean())  # object vs empty cell
    assert contrast(strong) > 1.9 > contrast(soft)


def test_radar_adapter_in_path_feeds_fusion() -> None:
    """model.radar_adapter_in_path: F_R is A_R(radar encoder) with F_M's channels, so L1 distils
    exactly what the fusion reads; the loss uses it without another adapter."""
    cfg = tiny()
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, radar_adapter_in_path=True))
    torch.manual_seed(0)
    student, teacher = Student(cfg).eval(), Teacher(cfg).freeze()
    batch = synthetic_batch(cfg, 1, n_lidar=3000)
    with torch.no_grad():
        out = student(batch)
        t_out = teacher(batch)
    assert out["F_R"].shape[1] == cfg.model.bev_channels
    raw, _ = student.radar_encoder(batch["radar"], batch["radar_mask"])
    torch.testing.assert_close(out["F_R"], student.adapter_r(raw))
    losses = student.loss(batch, out, t_out)
    assert torch.isfinite(losses["l1"]) and float(losses["l1"]) > 0
