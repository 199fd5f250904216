"""CenterPoint head: task-grouped heatmaps + box regression, targets, losses, decoding.

Box code per BEV cell (10 channels): dx, dy (centre offset inside the cell, in cells), z (m),
log l, log w, log h, sin yaw, cos yaw, vx, vy (m/s). Boxes are BOX_COLUMNS rows
(x, y, z, l, w, h, yaw, vx, vy) in the (augmented) ego frame.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from imkd_core.config import GridConfig
from imkd_core.frame import CLASSES

CODE_SIZE = 10
HM_PRIOR_BIAS = -2.19  # sigmoid = 0.1 (CenterPoint)


# ----------------------------------------------------------------------------- box coding
def encode_boxes(boxes: torch.Tensor, grid: GridConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(..., 9) boxes -> (code (..., 10), col (...) long, row (...) long) of their centre cell."""
    xg = (boxes[..., 0] - grid.x_bound[0]) / grid.cell
    yg = (boxes[..., 1] - grid.y_bound[0]) / grid.cell
    col, row = torch.floor(xg), torch.floor(yg)
    size = boxes[..., 3:6].clamp(min=1e-3).log()
    yaw = boxes[..., 6]
    code = torch.cat([(xg - col)[..., None], (yg - row)[..., None], boxes[..., 2:3], size,
                      torch.sin(yaw)[..., None], torch.cos(yaw)[..., None], boxes[..., 7:9]], -1)
    return code, col.long(), row.long()


def decode_boxes(code: torch.Tensor, col: torch.Tensor, row: torch.Tensor, grid: GridConfig) -> torch.Tensor:
    """Inverse of encode_boxes: (..., 10) codes at cells (col, row) -> (..., 9) boxes."""
    x = (col.to(code.dtype) + code[..., 0]) * grid.cell + grid.x_bound[0]
    y = (row.to(code.dtype) + code[..., 1]) * grid.cell + grid.y_bound[0]
    size = code[..., 3:6].clamp(max=10.0).exp()
    yaw = torch.atan2(code[..., 6], code[..., 7])
    return torch.cat([x[..., None], y[..., None], code[..., 2:3], size, yaw[..., None], code[..., 8:10]], -1)


# ----------------------------------------------------------------------------- targets
def gaussian_radius(height: torch.Tensor, width: torch.Tensor, min_overlap: float = 0.1) -> torch.Tensor:
    """CenterNet/CenterPoint Gaussian radius for a (height, width) box in cells (elementwise)."""
    b1 = height + width
    c1 = width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + torch.sqrt((b1**2 - 4 * c1).clamp(min=0))) / 2
    b2 = 2 * (height + width)
    c2 = (1 - min_overlap) * width * height
    r2 = (b2 + torch.sqrt((b2**2 - 16 * c2).clamp(min=0))) / 2
    a3 = 4 * min_overlap
    b3 = -2 * min_overlap * (height + width)
    c3 = (min_overlap - 1) * width * height
    r3 = (b3 + torch.sqrt((b3**2 - 4 * a3 * c3).clamp(min=0))) / 2
    return torch.minimum(torch.minimum(r1, r2), r3)


def task_layout(task_groups: tuple[tuple[str, ...], ...]) -> tuple[list[list[int]], torch.Tensor, torch.Tensor]:
    """Global class ids per task, and per global class its task and index within the task."""
    ids = [[CLASSES.index(c) for c in g] for g in task_groups]
    task_of = torch.zeros(len(CLASSES), dtype=torch.long)
    local_of = torch.zeros(len(CLASSES), dtype=torch.long)
    for t, g in enumerate(ids):
        for j, c in enumerate(g):
            task_of[c], local_of[c] = t, j
    return ids, task_of, local_of


def build_targets(gt_boxes: torch.Tensor, gt_labels: torch.Tensor, grid: GridConfig,
                  gaussian_overlap: float = 0.1, min_radius: int = 2) -> dict[str, torch.Tensor]:
    """Dense CenterPoint targets for all 10 classes (vectorised over batch and objects).

    gt_boxes (B, G, 9), gt_labels (B, G) with -1 padding. Returns heatmap (B, 10, H, W),
    code (B, G, 10), ind (B, G) flat centre cell, mask (B, G) (valid and centre in the grid).
    """
    B, G = gt_labels.shape
    H, W = grid.shape
    dev = gt_boxes.device
    code, col, row = encode_boxes(gt_boxes.float(), grid)
    mask = (gt_labels >= 0) & (col >= 0) & (col < W) & (row >= 0) & (row < H)
    mask &= torch.isfinite(gt_boxes).all(-1)
    length = gt_boxes[..., 3] / grid.cell
    width = gt_boxes[..., 4] / grid.cell
    radius = torch.floor(gaussian_radius(length, width, gaussian_overlap)).clamp(min=min_radius)
    sigma = (2 * radius + 1) / 6
    dx = torch.arange(W, device=dev, dtype=torch.float32)[None, None, None, :] - col[..., None, None]
    dy = torch.arange(H, device=dev, dtype=torch.float32)[None, None, :, None] - row[..., None, None]
    r = radius[..., None, None]
    g = torch.exp(-(dx**2 + dy**2) / (2 * sigma[..., None, None] ** 2))
    g = g * ((dx.abs() <= r) & (dy.abs() <= r) & mask[..., None, None])            # (B, G, H, W)
    labels = gt_labels.clamp(min=0)
    heat = torch.zeros(B, len(CLASSES), H * W, device=dev).scatter_reduce(
        1, labels[..., None].expand(B, G, H * W), g.reshape(B, G, H * W), "amax")
    ind = (row.clamp(0, H - 1) * W + col.clamp(0, W - 1)).long()
    return {"heatmap": heat.view(B, len(CLASSES), H, W), "code": torch.nan_to_num(code), "ind": ind,
            "mask": mask, "labels": labels}


# ----------------------------------------------------------------------------- losses
def gaussian_focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 2.0,
                        gamma: float = 4.0) -> torch.Tensor:
    """CenterNet focal loss summed over the map and divided by the number of peaks (>= 1)."""
    pos = target.eq(1).float()
    p = torch.sigmoid(logits)
    pos_loss = -F.logsigmoid(logits) * (1 - p) ** alpha * pos
    neg_loss = -F.logsigmoid(-logits) * p**alpha * (1 - target) ** gamma * (1 - pos)
    return (pos_loss.sum() + neg_loss.sum()) / pos.sum().clamp(min=1)


def gather_cells(x: torch.Tensor, ind: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) map, (B, K) flat cells -> (B, K, C)."""
    B, C = x.shape[:2]
    return x.flatten(2).gather(2, ind[:, None, :].expand(B, C, ind.shape[1])).transpose(1, 2)


# ----------------------------------------------------------------------------- module
class TaskHead(nn.Module):
    """One task group: `n_convs` 3x3 conv layers -> heatmap logits (n_cls) and box code (10)."""

    def __init__(self, channels: int, n_classes: int, n_convs: int = 1) -> None:
        super().__init__()
        self.trunk = nn.Sequential(*[nn.Sequential(nn.Conv2d(channels, channels, 3, 1, 1, bias=False),
                                                   nn.BatchNorm2d(channels), nn.ReLU(inplace=True))
                                     for _ in range(n_convs)])
        self.hm = nn.Conv2d(channels, n_classes, 3, 1, 1)
        self.box = nn.Conv2d(channels, CODE_SIZE, 3, 1, 1)
        nn.init.constant_(self.hm.bias, HM_PRIOR_BIAS)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.trunk(x)
        return {"hm": self.hm(x), "box": self.box(x)}


class CenterHead(nn.Module):
    """Shared conv + one TaskHead per task group; losses and decoding."""

    def __init__(self, in_channels: int, channels: int, task_groups: tuple[tuple[str, ...], ...],
                 grid: GridConfig, task_convs: int = 1) -> None:
        super().__init__()
        self.grid = grid
        self.task_ids, task_of, local_of = task_layout(task_groups)
        self.register_buffer("task_of", task_of, persistent=False)
        self.register_buffer("local_of", local_of, persistent=False)
        self.shared = nn.Sequential(nn.Conv2d(in_channels, channels, 3, 1, 1, bias=False), nn.BatchNorm2d(channels),
                                    nn.ReLU(inplace=True))
        self.tasks = nn.ModuleList([TaskHead(channels, len(ids), task_convs) for ids in self.task_ids])

    def forward(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        x = self.shared(x)
        return [t(x) for t in self.tasks]

    def all_class_logits(self, heads: list[dict[str, torch.Tensor]]) -> torch.Tensor:
        """Heatmap logits of all tasks reordered to CLASSES order: (B, 10, H, W)."""
        cat = torch.cat([h["hm"] for h in heads], 1)
        order = [c for ids in self.task_ids for c in ids]
        inv = [order.index(c) for c in range(len(CLASSES))]
        return cat[:, inv]

    def loss(self, heads: list[dict[str, torch.Tensor]], targets: dict[str, torch.Tensor],
             code_weights: tuple[float, ...], hm_weight: float = 1.0,
             bbox_weight: float = 0.25) -> dict[str, torch.Tensor]:
        """Focal heatmap loss + weighted L1 box loss, summed over tasks (CenterPoint)."""
        cw = torch.tensor(code_weights, device=targets["code"].device)
        hm_loss = heads[0]["hm"].new_zeros(())
        box_loss = heads[0]["hm"].new_zeros(())
        task = self.task_of[targets["labels"]]
        for t, (ids, out) in enumerate(zip(self.task_ids, heads)):
            hm_loss = hm_loss + gaussian_focal_loss(out["hm"], targets["heatmap"][:, ids])
            m = (targets["mask"] & (task == t)).float()
            pred = gather_cells(out["box"], targets["ind"])
            l1 = (pred - targets["code"]).abs() * cw * m[..., None]
            box_loss = box_loss + l1.sum() / (m.sum() + 1e-4)
        return {"det_hm": hm_weight * hm_loss, "det_bbox": bbox_weight * box_loss}

    @torch.no_grad()
    def decode(self, heads: list[dict[str, torch.Tensor]], max_detections: int, score_threshold: float,
               nms_radius: tuple[float, ...]) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Top-K per task, score threshold, circle NMS per class, best `max_detections`.

        -> per sample (boxes (K, 9), scores (K,), labels (K,) into CLASSES), score-sorted.
        """
        B, _, H, W = heads[0]["hm"].shape
        all_boxes, all_scores, all_labels = [], [], []
        for ids, out in zip(self.task_ids, heads):
            n = len(ids)
            prob = torch.sigmoid(out["hm"].float()).reshape(B, n * H * W)
            k = min(max_detections, n * H * W)
            scores, inds = prob.topk(k, dim=1)
            local = torch.div(inds, H * W, rounding_mode="floor")
            cell = inds % (H * W)
            code = gather_cells(out["box"].float(), cell)
            boxes = decode_boxes(code, cell % W, torch.div(cell, W, rounding_mode="floor"), self.grid)
            all_boxes.append(boxes)
            all_scores.append(scores)
            all_labels.append(torch.tensor(ids, device=inds.device)[local])
        boxes, scores, labels = torch.cat(all_boxes, 1), torch.cat(all_scores, 1), torch.cat(all_labels, 1)
        radius = torch.tensor(nms_radius, device=boxes.device, dtype=boxes.dtype)
        results = []
        for b in range(B):
            keep = scores[b] > score_threshold
            bx, sc, lb = boxes[b][keep], scores[b][keep], labels[b][keep]
            sel = circle_nms(bx[:, :2], sc, lb, radius)[:max_detections]
            results.append((bx[sel], sc[sel], lb[sel]))
        return results


def circle_nms(xy: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """Greedy per-class circle NMS, vectorised: indices of kept boxes, score-descending.

    A box is suppressed by a kept, higher-scoring box of the same class closer than
    radius[class]. Exactly the sequential greedy result, computed in rounds (greedy maximal
    independent set, Blelloch et al. 2012): each round drops every undecided box that a kept box
    suppresses, then keeps every undecided box with no undecided higher-scoring neighbour.
    Each round decides at least one box; in practice a handful of rounds suffice.
    """
    order = torch.argsort(scores, descending=True, stable=True)
    n = order.numel()
    if n <= 1:
        return order
    p, lb = xy[order], labels[order]
    dx = p[:, None, 0] - p[None, :, 0]
    dy = p[:, None, 1] - p[None, :, 1]
    d2 = dx * dx + dy * dy
    r = radius[lb]
    later = torch.ones(n, n, dtype=torch.bool, device=p.device).triu(1)
    S = ((lb[:, None] == lb[None, :]) & (d2 < (r**2)[:, None]) & later).to(p.dtype)  # S[i, j]: i may suppress j
    undecided = torch.ones(n, dtype=torch.bool, device=p.device)
    kept = torch.zeros(n, dtype=torch.bool, device=p.device)
    for _ in range(n):
        undecided &= (kept.to(p.dtype) @ S) == 0
        new = undecided & ((undecided.to(p.dtype) @ S) == 0)
        kept |= new
        undecided &= ~new
        if not bool(undecided.any()):
            break
    return order[kept]


def angle_diff(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Smallest signed difference of two angles."""
    return torch.remainder(a - b + math.pi, 2 * math.pi) - math.pi
