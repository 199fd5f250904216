"""`Predictor`: one SensorFrame in, ego-frame Detections out (the run-time entry point).

Uses exactly the training preprocessing (frame_to_inputs + collate, no augmentation), the
Student's calibration-keyed BEV-pool index cache, torch.inference_mode, and a weights_only
checkpoint load. Deterministic on CPU: the same frame gives identical output.
The network runs through a backend (imkd_core.backends: eager torch, ONNX Runtime, TorchScript)
at a precision (fp32, fp16, bf16); preprocessing, pool indices and decoding are the same for all.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch

from imkd_core.backends import make_backend, unsupported
from imkd_core.checkpoint import CheckpointError, load_checkpoint
from imkd_core.config import ConfigError, IMKDConfig, get_config
from imkd_core.device import resolve_device
from imkd_core.frame import Detections, SensorFrame
from imkd_core.models.detector import Student, batch_to
from imkd_core.models.lift_splat import PoolIndexCache
from imkd_core.preprocess import collate, frame_to_inputs, transform_boxes

log = logging.getLogger(__name__)


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
        with torch.inference_mode():
            heads = self.backend(batch, timing)
            t1 = time.perf_counter()
            boxes, scores, labels = self.model.decode({"heads": heads})[0]
            boxes, scores, labels = boxes.cpu().numpy(), scores.cpu().numpy(), labels.cpu().numpy()
        timing["decode"] = (time.perf_counter() - t1) * 1e3
        bev_aug = inputs["bev_aug"].astype(np.float64)
        if not np.allclose(bev_aug, np.eye(4)):
            boxes = transform_boxes(boxes.astype(np.float64), np.linalg.inv(bev_aug)).astype(np.float32)
        timing["total"] = (time.perf_counter() - t0) * 1e3
        self.last_timing = timing
        return Detections(boxes=boxes, scores=scores, labels=labels, stamp=frame.stamp, token=frame.token)

    __call__ = predict
