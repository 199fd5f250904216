"""IMKD `Teacher` (LiDAR, training only) and `Student` (camera + radar, run time).

Batches are the dicts of `imkd_core.preprocess.collate` (tensors already on the model's
device). Student stages are separate methods so the benchmark can time them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from imkd_core.config import DistillConfig, IMKDConfig
from imkd_core.models import distill as kd
from imkd_core.models.bev_encoder import BEVEncoder
from imkd_core.models.depth import DepthNet, camera_params, lidar_depth_target, radar_depth_image
from imkd_core.models.fusion import IntensityFusion
from imkd_core.models.head import CenterHead, build_targets
from imkd_core.models.lidar_encoder import LidarEncoder
from imkd_core.models.lift_splat import LiftSplat, PoolIndices, bev_pool
from imkd_core.models.neck import OUT_STRIDE, SecondFPN
from imkd_core.models.radar_encoder import RadarEncoder
from imkd_core.models.resnet import ResNet

Batch = dict[str, torch.Tensor]
Detection = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class StageTimer:
    """Records time per named stage in ms into `timings` (None = off); syncs CUDA.
    `clock` defaults to wall time (time.perf_counter)."""

    def __init__(self, timings: dict[str, float] | None, device: torch.device,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.timings = timings
        self.cuda = device.type == "cuda"
        self.clock = clock

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        if self.timings is None:
            yield
            return
        if self.cuda:
            torch.cuda.synchronize()
        t0 = self.clock()
        yield
        if self.cuda:
            torch.cuda.synchronize()
        self.timings[name] = self.timings.get(name, 0.0) + (self.clock() - t0) * 1e3


def batch_to(batch: Batch, device: torch.device | str) -> Batch:
    """Move every tensor of a batch to `device`."""
    return {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


def _det_losses(head: CenterHead, heads: list[dict[str, torch.Tensor]], batch: Batch, cfg: IMKDConfig
                ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    m = cfg.model
    targets = build_targets(batch["gt_boxes"], batch["gt_labels"], cfg.grid, m.gaussian_overlap, m.min_radius)
    return head.loss(heads, targets, m.code_weights, m.hm_weight, m.bbox_weight), targets


class Teacher(nn.Module):
    """LiDAR pillars -> F_L -> BEV encoder -> CenterPoint head. Also yields I_L."""

    def __init__(self, cfg: IMKDConfig) -> None:
        super().__init__()
        self.cfg = cfg
        m = cfg.model
        self.lidar_encoder = LidarEncoder(cfg.grid, m.lidar_pillar_channels, m.bev_channels, m.pillar_mlp_layers)
        self.bev_encoder = BEVEncoder(m.bev_channels, m.bev_encoder_channels, m.bev_encoder_blocks,
                                      m.bev_encoder_strides, m.bev_fpn_channels)
        self.head = CenterHead(self.bev_encoder.out_channels, m.head_channels, m.task_groups, cfg.grid,
                               m.head_task_convs)

    def freeze(self) -> Teacher:
        """Eval mode and no gradients (the teacher is trained first, then frozen)."""
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)
        return self

    def forward(self, batch: Batch) -> dict:
        """-> {'F_L' (B, C, H, W), 'X_L' (its BEV encoder output), 'heads' (per task {'hm', 'box'}),
        'I_L' (B, 1, H, W)}."""
        f_l = self.lidar_encoder(batch["lidar"], batch["lidar_mask"])
        x_l = self.bev_encoder(f_l)
        dc = self.cfg.distill
        i_l = kd.intensity_map(batch["lidar"], batch["lidar_mask"], self.cfg.grid, dc.intensity_sigma,
                               dc.intensity_ground_z, dc.intensity_scale)
        return {"F_L": f_l, "X_L": x_l, "heads": self.head(x_l), "I_L": i_l}

    def loss(self, batch: Batch, out: dict) -> dict[str, torch.Tensor]:
        losses, _ = _det_losses(self.head, out["heads"], batch, self.cfg)
        losses["det"] = losses["det_hm"] + losses["det_bbox"]
        losses["total"] = losses["det"]
        return losses

    def decode(self, out: dict) -> list[Detection]:
        m = self.cfg.model
        return self.head.decode(out["heads"], m.max_detections, m.score_threshold, m.nms_radius)


class Student(nn.Module):
    """Camera + radar detector with IMKD intensity-guided fusion; adapters A_R, A_M for KD."""

    def __init__(self, cfg: IMKDConfig, load_pretrained: bool = True) -> None:
        super().__init__()
        self.cfg = cfg
        m = cfg.model
        H, W = cfg.data.image_size
        self.feat_size = (H // OUT_STRIDE, W // OUT_STRIDE)
        self.backbone = ResNet(m.backbone_depth, m.backbone_width, m.neck_levels)
        self.pretrained_report: dict[str, list[str]] | None = None
        if m.pretrained and load_pretrained:
            self.pretrained_report = self.backbone.load_pretrained(m.pretrained)
        self.neck = SecondFPN(self.backbone.out_channels, m.neck_levels, m.neck_channels)
        self.depth_net = DepthNet(self.neck.out_channels, m.depth_channels, m.context_channels, m.num_depth_bins,
                                  radar_input=m.radar_depth_input, n_blocks=m.depth_blocks)
        self.lift_splat = LiftSplat(cfg.grid, (H, W), self.feat_size, m.depth_bins, m.pool_cache_size)
        self.radar_encoder = RadarEncoder(cfg.grid, m.radar_pillar_channels, m.radar_channels, m.pillar_mlp_layers)
        fusion_radar = m.bev_channels if m.radar_adapter_in_path else m.radar_channels
        self.fusion = IntensityFusion(m.context_channels, fusion_radar, m.bev_channels, m.fusion_hidden,
                                      offset=m.fusion_offset, gate=m.fusion_gate)
        self.bev_encoder = BEVEncoder(m.bev_channels, m.bev_encoder_channels, m.bev_encoder_blocks,
                                      m.bev_encoder_strides, m.bev_fpn_channels)
        self.head = CenterHead(self.bev_encoder.out_channels, m.head_channels, m.task_groups, cfg.grid,
                               m.head_task_convs)
        self.adapter_r = nn.Conv2d(m.radar_channels, m.bev_channels, 1)   # A_R (L1)
        self.adapter_m = nn.Conv2d(m.bev_channels, m.bev_channels, 1)     # A_M (L2)
        # NHWC weights/activations: markedly faster oneDNN (CPU) and cuDNN (fp16) convolutions;
        # the BEV pool already produces NHWC-contiguous F_C.
        self.to(memory_format=torch.channels_last)
        self.stage_clock: Callable[[], float] = time.perf_counter  # clock of forward(timings=...)

    @torch.no_grad()
    def inherit_from(self, teacher: Teacher) -> None:
        """KD by initialisation ('init'): start the BEV encoder and head from the trained
        teacher's (same architecture on the same grid) and freeze A_M at the identity, so that L2
        can only fall by moving F_M itself towards F_L, the input those inherited layers were
        trained on (a trainable A_M would absorb it)."""
        self.bev_encoder.load_state_dict(teacher.bev_encoder.state_dict())
        self.head.load_state_dict(teacher.head.state_dict())
        c = self.adapter_m.weight.shape[0]
        self.adapter_m.weight.copy_(torch.eye(c, dtype=self.adapter_m.weight.dtype).view(c, c, 1, 1))
        self.adapter_m.bias.zero_()
        self.adapter_m.requires_grad_(False)

    def inherited_parameters(self) -> list[nn.Parameter]:
        """The parameters 'init' takes from the teacher (trained at distill.init_lr_scale)."""
        return [*self.bev_encoder.parameters(), *self.head.parameters()]

    # ------------------------------------------------------------------ stages
    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, N, 3, H, W) -> neck features (B*N, C, H/16, W/16)."""
        return self.neck(self.backbone(images.flatten(0, 1).contiguous(memory_format=torch.channels_last)))

    def depth(self, feat: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Depth net -> depth logits (B, N, D, h, w), context (B, N, h, w, C) channels-last."""
        B, N = batch["intrinsics"].shape[:2]
        m = self.cfg.model
        radar_img = None
        if m.radar_depth_input:
            radar_img = radar_depth_image(batch["radar"], batch["radar_mask"], batch["intrinsics"], batch["cam_to_ego"],
                                          batch["camera_mask"], self.cfg.data.image_size, self.feat_size,
                                          m.radar_depth_heights, m.depth_bins[1]).flatten(0, 1)
        cam = camera_params(batch["intrinsics"], batch["cam_to_ego"], self.cfg.data.image_size).flatten(0, 1)
        logits, context = self.depth_net(feat, cam, radar_img)
        h, w = logits.shape[-2:]
        return logits.view(B, N, -1, h, w), context.view(B, N, -1, h, w).permute(0, 1, 3, 4, 2)

    def bev_pool(self, depth: torch.Tensor, context: torch.Tensor, batch: Batch, cached: bool = True,
                 pool_indices: PoolIndices | None = None) -> torch.Tensor:
        """Depth probabilities x context -> F_C (B, C, H, W); indices cached per calibration
        (or given, e.g. as inputs of an exported graph)."""
        if pool_indices is not None:
            return bev_pool(depth, context, pool_indices, self.cfg.grid.shape)
        return self.lift_splat(depth, context, batch["intrinsics"], batch["cam_to_ego"], batch["camera_mask"], cached)

    def radar_bev(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """-> F_R (B, C_R, H, W; A_R(F_R) with C of F_M when model.radar_adapter_in_path), RCS
        raster (B, 2, H, W)."""
        f_r, rcs = self.radar_encoder(batch["radar"], batch["radar_mask"])
        if self.cfg.model.radar_adapter_in_path:
            f_r = self.adapter_r(f_r)
        return f_r, rcs

    def fuse(self, f_c: torch.Tensor, f_r: torch.Tensor, rcs: torch.Tensor) -> dict[str, torch.Tensor]:
        """Intensity-guided fusion -> {'F_M', 'I_hat', 'I_hat_logits', 'F_R_aligned', 'offset'?}."""
        return self.fusion(f_c, f_r, rcs)

    def bev_encode(self, f_m: torch.Tensor) -> torch.Tensor:
        return self.bev_encoder(f_m)

    def heads(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        return self.head(x)

    def forward(self, batch: Batch, timings: dict[str, float] | None = None,
                pool_indices: PoolIndices | None = None) -> dict:
        """-> {'heads', 'X' (BEV encoder output), 'F_C', 'F_R', 'F_M', 'I_hat', 'I_hat_logits', 'depth',
        'depth_logits', ...}.

        `timings` (optional dict) receives per-stage ms; `pool_indices` bypasses the cache.
        """
        t = StageTimer(timings, batch["images"].device, self.stage_clock)
        with t("backbone"):
            feat = self.image_features(batch["images"])
        with t("depth"):
            depth_logits, context = self.depth(feat, batch)
            depth = depth_logits.softmax(2)
        with t("bev_pool"):
            f_c = self.bev_pool(depth, context, batch, pool_indices=pool_indices)
        with t("radar"):
            f_r, rcs = self.radar_bev(batch)
        with t("fusion"):
            fused = self.fuse(f_c, f_r, rcs)
        with t("bev_encoder"):
            x = self.bev_encode(fused["F_M"])
        with t("head"):
            heads = self.heads(x)
        return {"heads": heads, "X": x, "F_C": f_c, "F_R": f_r, "rcs_raster": rcs, "depth": depth,
                "depth_logits": depth_logits, **fused}

    def decode(self, out: dict) -> list[Detection]:
        """Per sample (boxes (K, 9), scores, labels) in the batch's (augmented) ego frame."""
        m = self.cfg.model
        return self.head.decode(out["heads"], m.max_detections, m.score_threshold, m.nms_radius)

    # ------------------------------------------------------------------ losses
    def depth_loss(self, batch: Batch, out: dict) -> torch.Tensor:
        """BEVDepth depth supervision: CE of the depth logits vs the nearest key-sweep LiDAR bin."""
        target = lidar_depth_target(batch["lidar"], batch["lidar_mask"], batch["intrinsics"], batch["cam_to_ego"],
                                    batch["camera_mask"], self.cfg.data.image_size, self.feat_size,
                                    self.cfg.model.depth_bins)
        logits = out["depth_logits"].permute(0, 1, 3, 4, 2)                   # (B, N, h, w, D)
        valid = target >= 0
        if not bool(valid.any()):
            return logits.sum() * 0.0
        return F.cross_entropy(logits[valid].float(), target[valid])

    def loss(self, batch: Batch, out: dict, teacher_out: dict | None = None,
             distill_cfg: DistillConfig | None = None) -> dict[str, torch.Tensor]:
        """Detection loss ('det_hm', 'det_bbox', ['det_depth'], 'det') + enabled KD terms
        (unweighted: 'l1'; 'l2' with 'bev'; 'resp' with 'resp_box'; 'l3') and the weighted 'total'.

        L1/L2/resp need `teacher_out` (Teacher.forward); L3 on I_L takes it from there or, without
        a teacher, from the batch's LiDAR; L3 on objectness needs the teacher.
        """
        dc = distill_cfg or self.cfg.distill
        m = self.cfg.model
        losses, targets = _det_losses(self.head, out["heads"], batch, self.cfg)
        if m.depth_supervision and "lidar" in batch:
            losses["det_depth"] = m.depth_loss_weight * self.depth_loss(batch, out)
        det = sum(losses.values())
        losses["det"] = det
        total = det
        if (dc.l1 or dc.l2 or dc.resp) and teacher_out is None:  # 'init' acts before training
            raise ValueError("distillation terms l1/l2/resp are enabled but no teacher_out was given "
                             "(pass Teacher.forward(batch) or switch them off in DistillConfig)")
        i_l = None
        if dc.l1 or (dc.l3 and dc.l3_target == "intensity"):
            if teacher_out is not None:
                i_l = teacher_out["I_L"]
            elif "lidar" in batch:
                i_l = kd.intensity_map(batch["lidar"], batch["lidar_mask"], self.cfg.grid, dc.intensity_sigma,
                                       dc.intensity_ground_z, dc.intensity_scale)
            else:
                raise ValueError("L3 needs the LiDAR intensity map: give teacher_out or lidar in the batch")
        if dc.l3 and dc.l3_target == "objectness" and teacher_out is None:
            raise ValueError("L3 on the teacher's objectness needs teacher_out")
        t_logits = s_logits = None
        if teacher_out is not None and (dc.l2 or dc.resp or (dc.l3 and dc.l3_target == "objectness")):
            s_logits = self.head.all_class_logits(out["heads"])
            t_logits = self.head.all_class_logits(teacher_out["heads"]).detach()
        if dc.l1:
            a_r = out["F_R"] if m.radar_adapter_in_path else self.adapter_r(out["F_R"])
            w1 = kd.l1_weights(i_l, targets["heatmap"].amax(1, keepdim=True),
                               kd.radar_active(out["rcs_raster"][:, 1:2], dc.l1_dilation), dc.alpha)
            losses["l1"] = kd.l1_radar_distill(a_r, teacher_out["F_L"], w1, dc.normalise)
            total = total + dc.l1_weight * losses["l1"]
        if dc.l2:
            w2 = kd.selective_weights(teacher_out["F_L"], torch.sigmoid(t_logits), torch.sigmoid(s_logits),
                                      targets["heatmap"], dc.tau)
            losses["l2"] = kd.l2_fused_distill(self.adapter_m(out["F_M"]), teacher_out["F_L"], w2, dc.normalise)
            total = total + dc.l2_weight * losses["l2"]
            if dc.bev_weight > 0:
                losses["bev"] = kd.masked_feature_distill(out["X"], teacher_out["X_L"],
                                                          kd.teacher_objectness(t_logits), dc.normalise)
                total = total + dc.bev_weight * losses["bev"]
        if dc.resp:
            losses["resp"] = kd.response_distill(s_logits, t_logits)
            total = total + dc.resp_weight * losses["resp"]
            if dc.resp_box_weight > 0:
                losses["resp_box"] = kd.box_response_distill(out["heads"], teacher_out["heads"], m.code_weights,
                                                               dc.resp_box_min_prob)
                total = total + dc.resp_box_weight * losses["resp_box"]
        if dc.l3:
            target = kd.teacher_objectness(t_logits) if dc.l3_target == "objectness" else i_l
            losses["l3"] = kd.l3_intensity_bce(out["I_hat_logits"], target)
            total = total + dc.l3_weight * losses["l3"]
        losses["total"] = total
        return losses
