"""`Predictor`: one SensorFrame in, ego-frame Detections out (the run-time entry point).

Uses exactly the training preprocessing (frame_to_inputs + collate, no augmentation), the
Student's calibration-keyed BEV-pool index cache, torch.inference_mode, and a weights_only
checkpoint load. Deterministic on CPU: the same frame gives identical output.
The network runs through a backend (imkd_core.backends: eager torch, ONNX Runtime, TorchScript)
at a precision (fp32, fp16, bf16); preprocessing, pool indices and decoding are the same for all.
`predict_batch` runs a collated batch of evaluation-preprocessed samples (a DetectionDataset with
train=False); `Predictor.for_model` wraps a model in memory, so training validates the same way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from imkd_core.backends import TorchBackend, make_backend, unsupported
from imkd_core.checkpoint import CheckpointError, load_checkpoint
from imkd_core.config import ConfigError, IMKDConfig, get_config
from imkd_core.device import resolve_device
from imkd_core.frame import Detections, SensorFrame
from imkd_core.models.detector import Student, batch_to
from imkd_core.models.lift_splat import PoolIndexCache
from imkd_core.preprocess import collate, frame_to_inputs, transform_boxes

log = logging.getLogger(__name__)
Batch = dict[str, torch.Tensor]


def decode_batch(model: torch.nn.Module, heads: list[dict[str, torch.Tensor]], bev_aug: np.ndarray,
                 stamps: Sequence[int], tokens: Sequence[str]) -> list[Detections]:
    """Head outputs of a batch -> one Detections per sample in base_link at its stamp: the model's
    decode (top-K, threshold, NMS), then boxes back through the inverse of the sample's BEV matrix."""
    out = []
    for j, (boxes, scores, labels) in enumerate(model.decode({"heads": heads})):
        b, s, lab = boxes.float().cpu().numpy(), scores.float().cpu().numpy(), labels.cpu().numpy()
        aug = np.asarray(bev_aug[j], dtype=np.float64)
        if not np.allclose(aug, np.eye(4)):
            b = transform_boxes(b.astype(np.float64), np.linalg.inv(aug)).astype(np.float32)
        out.append(Detections(boxes=b, scores=s, labels=lab, stamp=int(stamps[j]), token=tokens[j]))
    return out


class Predictor:
    """Student inference on SensorFrames.

    config: IMKDConfig, preset name or YAML path; None = the checkpoint's config.
    checkpoint: a student checkpoint (imkd_core.checkpoint format). Without one, a randomly
    initialised model is built, which is allowed only with an explicit config (benchmarks).
    backend: torch | onnxruntime | torchscript; precision: fp32 | fp16 | bf16 where the backend
    and device support it (imkd_core.backends.unsupported says why not: ConfigError).
    """

    def __init__(self, config: IMKDConfig | str | None = None, checkpoint: str | Path | None = None,
                 device: str | torch.device = "auto", backend: str = "torch", precision: str = "fp32") -> None:
        self.device = resolve_device(device)
        why = unsupported(backend, precision, self.device)
        if why:  # before the checkpoint is read: a wrong choice costs nothing
            raise ConfigError(why)
        self.backend_name, self.precision = backend, precision
        payload = None
        if checkpoint is not None:
            payload = load_checkpoint(checkpoint)
            if payload["kind"] != "student":
                raise CheckpointError(f"{checkpoint}: a Predictor needs a student checkpoint, got kind "
                                      f"{payload['kind']!r}")
        if config is None:
            if payload is None:
                raise ConfigError("Predictor needs a config or a checkpoint (a random-init model requires an "
                                  "explicit config)")
            cfg = IMKDConfig.from_dict(payload["config"])
        else:
            cfg = config if isinstance(config, IMKDConfig) else get_config(config)
        self.config = cfg
        self.model = Student(cfg, load_pretrained=False)
        if payload is not None:
            try:
                self.model.load_state_dict(payload["model"])
            except RuntimeError as e:
                raise CheckpointError(f"{checkpoint}: weights do not fit config {cfg.name!r}: {e}") from e
        else:
            log.warning("Predictor: no checkpoint, using randomly initialised weights (benchmark only)")
        self.model.to(self.device).eval()
        t0 = time.perf_counter()
        self.backend = make_backend(backend, precision, self.model, self.device)
        if backend != "torch":
            log.info("Predictor: %s backend ready in %.1f s", backend, time.perf_counter() - t0)
        self.last_timing: dict[str, float] = {}

    @property
    def cache(self) -> PoolIndexCache:
        """The BEV-pool index cache (hits/misses for diagnostics)."""
        return self.model.lift_splat.cache

    @classmethod
    def for_model(cls, model: torch.nn.Module, device: str | torch.device, precision: str = "fp32") -> Predictor:
        """A Predictor around a model in memory (training's validation: the live Student, or a Teacher,
        which reads LiDAR), eager torch backend. Its gradient mode is no_grad, not inference_mode:
        tensors it caches (BEV-pool indices) are used again by training steps."""
        self = cls.__new__(cls)
        self.device = torch.device(device)
        self.backend_name, self.precision = "torch", precision
        self.config = model.cfg
        self.model = model
        self.backend = TorchBackend(model, precision, self.device)
        self.last_timing = {}
        self._grad_mode = torch.no_grad
        return self

    _grad_mode = torch.inference_mode

    def predict(self, frame: SensorFrame) -> Detections:
        """Detect objects in one frame -> Detections in base_link at frame.stamp."""
        cuda = self.device.type == "cuda"
        t0 = time.perf_counter()
        frame.validate()
        inputs = frame_to_inputs(frame, self.config.data.image_size)
        inputs.pop("lidar", None)  # run time: camera + radar only
        batch = batch_to(collate([inputs]), self.device)
        if cuda:
            torch.cuda.synchronize()
        timing: dict[str, float] = {"preprocess": (time.perf_counter() - t0) * 1e3}
        with self._grad_mode():
            heads = self.backend(batch, timing)
            t1 = time.perf_counter()
            dets = decode_batch(self.model, heads, inputs["bev_aug"][None], [frame.stamp], [frame.token])[0]
        timing["decode"] = (time.perf_counter() - t1) * 1e3
        timing["total"] = (time.perf_counter() - t0) * 1e3
        self.last_timing = timing
        return dets

    def predict_batch(self, batch: Batch, stamps: Sequence[int], tokens: Sequence[str]) -> list[Detections]:
        """Detect objects in a collated batch of frame_to_inputs samples (CPU or device tensors) -> one
        Detections per sample. A Student sees no LiDAR (run time: camera + radar only)."""
        if isinstance(self.model, Student):
            batch = {k: v for k, v in batch.items() if k not in ("lidar", "lidar_mask")}
        bev_aug = batch["bev_aug"].cpu().numpy()
        batch = batch_to(batch, self.device)
        with self._grad_mode():
            heads = self.backend(batch, None)
            return decode_batch(self.model, heads, bev_aug, stamps, tokens)

    __call__ = predict
