"""CenterPoint head: box coding, targets, decode + circle NMS."""

from __future__ import annotations

import math

import torch

from imkd_core.config import DEFAULT_NMS_RADIUS, tiny
from imkd_core.frame import CLASSES
from imkd_core.models.head import (
    CenterHead,
    angle_diff,
    build_targets,
    circle_nms,
    decode_boxes,
    encode_boxes,
    gather_cells,
    gaussian_focal_loss,
)


def _random_boxes(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * 100 - 50
    z = torch.rand(n, 1, generator=g, dtype=torch.float64) * 3 - 1
    size = torch.rand(n, 3, generator=g, dtype=torch.float64) * 10 + 0.2
    yaw = torch.rand(n, 1, generator=g, dtype=torch.float64) * 2 * math.pi - math.pi
    vel = torch.randn(n, 2, generator=g, dtype=torch.float64) * 5
    return torch.cat([xy, z, size, yaw, vel], 1)


def test_box_encoding_round_trips() -> None:
    grid = tiny().grid
    boxes = _random_boxes(500)
    code, col, row = encode_boxes(boxes, grid)
    assert ((code[:, :2] >= 0) & (code[:, :2] < 1)).all()
    back = decode_boxes(code, col, row, grid)
    torch.testing.assert_close(back[:, [0, 1, 2, 3, 4, 5, 7, 8]], boxes[:, [0, 1, 2, 3, 4, 5, 7, 8]])
    assert angle_diff(back[:, 6], boxes[:, 6]).abs().max() < 1e-9


def test_targets_peak_at_centres() -> None:
    grid = tiny().grid
    boxes = _random_boxes(6, seed=1).float()
    boxes[:, :2] = boxes[:, :2].clamp(-45, 45)
    labels = torch.arange(6)
    gt_boxes = torch.cat([boxes, torch.zeros(2, 9)])[None]
    gt_labels = torch.cat([labels, torch.full((2,), -1)])[None]
    t = build_targets(gt_boxes, gt_labels, grid)
    assert t["heatmap"].shape == (1, len(CLASSES), 64, 64)
    assert t["mask"][0].tolist() == [True] * 6 + [False] * 2
    hm = t["heatmap"][0].flatten(1)
    for i in range(6):
        assert hm[labels[i], t["ind"][0, i]] == 1.0
    assert int((t["heatmap"] == 1).sum()) == 6 and t["heatmap"].max() == 1 and t["heatmap"].min() == 0
    code, col, row = encode_boxes(boxes, grid)
    torch.testing.assert_close(decode_boxes(t["code"][0, :6], t["ind"][0, :6] % 64, t["ind"][0, :6] // 64, grid),
                               decode_boxes(code, col, row, grid))


def test_focal_loss_prefers_correct_heatmap() -> None:
    target = torch.zeros(1, 1, 8, 8)
    target[0, 0, 3, 4] = 1.0
    good = torch.full_like(target, -8.0)
    good[0, 0, 3, 4] = 8.0
    assert gaussian_focal_loss(good, target) < 1e-3 < gaussian_focal_loss(torch.zeros_like(target), target)


def test_decode_recovers_planted_boxes_exactly() -> None:
    cfg = tiny()
    grid = cfg.grid
    head = CenterHead(8, 8, cfg.model.task_groups, grid)
    H, W = grid.shape
    heads = [{"hm": torch.full((1, len(ids), H, W), -20.0), "box": torch.zeros(1, 10, H, W)} for ids in head.task_ids]
    # one box of every class, far apart, plus a weaker duplicate of the car 1.7 m away (NMS removes it)
    boxes = _random_boxes(len(CLASSES), seed=3).float()
    boxes[:, 0] = torch.linspace(-40, 40, len(CLASSES))
    boxes[:, 1] = torch.tensor([-30.0, 30.0] * 5)
    dup = boxes[0].clone()
    dup[0] += 1.7  # the next cell, inside the 2 m car radius
    planted = [(c, boxes[c], 0.9 - 0.05 * c) for c in range(len(CLASSES))] + [(0, dup, 0.5)]
    for c, box, score in planted:
        t, j = int(head.task_of[c]), int(head.local_of[c])
        code, col, row = encode_boxes(box[None], grid)
        heads[t]["hm"][0, j, row[0], col[0]] = math.log(score / (1 - score))
        heads[t]["box"][0, :, row[0], col[0]] = code[0]
    dets = head.decode(heads, max_detections=100, score_threshold=0.1, nms_radius=cfg.model.nms_radius)
    out_boxes, scores, labels = dets[0]
    assert labels.tolist() == list(range(len(CLASSES)))  # score-sorted, duplicate suppressed
    torch.testing.assert_close(scores, torch.tensor([0.9 - 0.05 * c for c in range(len(CLASSES))]))
    expect = boxes.clone()
    expect[:, 6] = torch.atan2(torch.sin(boxes[:, 6]), torch.cos(boxes[:, 6]))
    torch.testing.assert_close(out_boxes, expect, atol=1e-4, rtol=1e-5)
    # with the radius of cars set to 0 the duplicate survives
    radius = (0.0,) + tuple(DEFAULT_NMS_RADIUS[1:])
    _, _, labels2 = head.decode(heads, 100, 0.1, radius)[0]
    assert labels2.tolist().count(0) == 2


def _greedy_reference(xy, sc, lb, r) -> list[int]:
    keep: list[int] = []
    for i in sorted(range(len(sc)), key=lambda i: -float(sc[i])):
        if all(not (lb[j] == lb[i] and float(((xy[i] - xy[j]) ** 2).sum()) < float(r[lb[i]]) ** 2) for j in keep):
            keep.append(i)
    return keep


def test_circle_nms_matches_sequential_greedy() -> None:
    g = torch.Generator().manual_seed(0)
    for _ in range(30):
        n = int(torch.randint(0, 150, (1,), generator=g))
        xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * 15
        sc = torch.rand(n, generator=g, dtype=torch.float64)
        lb = torch.randint(0, 3, (n,), generator=g)
        r = torch.rand(10, generator=g, dtype=torch.float64) * 4
        assert circle_nms(xy, sc, lb, r).tolist() == _greedy_reference(xy, sc, lb, r)


def test_gather_cells() -> None:
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(2, 3, 4, 5)
    ind = torch.tensor([[0, 19], [7, 3]])
    out = gather_cells(x, ind)
    assert out.shape == (2, 2, 3)
    assert out[1, 0].tolist() == x[1, :, 1, 2].tolist()
