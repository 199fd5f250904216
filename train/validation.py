"""Validation of a run: the val scenes through the batched Predictor (evaluation preprocessing,
the student without LiDAR, the Predictor's decode) and scored by the nuScenes devkit."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from imkd_core.config import IMKDConfig
from imkd_core.predict import Predictor
from train.data import Indexed, collate_indexed, make_dataset


@torch.no_grad()
def predict_dataset(model: torch.nn.Module, reader: Any, cfg: IMKDConfig, device: torch.device,
                    batch_size: int = 1, num_workers: int = 0, limit: int = 0, precision: str = "fp32",
                    progress: bool = False, transform: Callable[[dict], dict] | None = None
                    ) -> tuple[dict[str, Any], list[str]]:
    """Detections of every sample of `reader` (the first `limit`; 0 = all) by `model` through
    Predictor.for_model -> (devkit results, tokens). `transform(batch) -> batch` (optional) alters
    each batch on the device before the model (probes)."""
    from tqdm import tqdm

    from imkd_core.evaluate import detections_to_results
    from imkd_core.models.detector import batch_to

    ds = make_dataset(reader, cfg, train=False, seed=0)
    n = len(ds) if not limit else min(limit, len(ds))
    sub = torch.utils.data.Subset(Indexed(ds), list(range(n)))
    loader = DataLoader(sub, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=collate_indexed, generator=torch.Generator().manual_seed(0))
    predictor = Predictor.for_model(model, device, precision)
    was_training = model.training
    model.eval()
    dets, poses = {}, {}
    try:
        for idx, batch in tqdm(loader, desc="val", unit="batch", disable=not progress, leave=False):
            if transform is not None:
                batch = transform(batch_to(batch, device))
            tokens = [reader.sample_tokens[i] for i in idx]
            stamps = [0] * len(idx)  # devkit results are keyed by token; poses come from the reader
            for i, token, d in zip(idx, tokens, predictor.predict_batch(batch, stamps, tokens)):
                dets[token] = d
                poses[token] = reader.ego_to_global(i)
    finally:
        model.train(was_training)
    return detections_to_results(dets, poses), list(reader.sample_tokens[:n])


def validate(model: torch.nn.Module, reader: Any, cfg: IMKDConfig, device: torch.device, out_dir: Path,
             batch_size: int = 1, num_workers: int = 0, limit: int = 0, precision: str = "fp32",
             progress: bool = False) -> dict[str, Any]:
    """Devkit metrics of the model on the val reader (files in out_dir)."""
    from imkd_core.evaluate import evaluate

    t0 = time.time()
    results, tokens = predict_dataset(model, reader, cfg, device, batch_size, num_workers, limit, precision,
                                      progress)
    with contextlib.redirect_stdout(sys.stderr):
        m = evaluate(reader.nusc, reader.version, results, tokens, out_dir, verbose=False)
    keys = ("NDS", "mAP", "mATE", "mASE", "mAOE", "mAVE", "mAAE", "NDS_present", "mAP_present")
    out = {k: float(m[k]) for k in keys if k in m}
    out["per_class_AP"] = m.get("per_class_AP", {})
    out["num_samples"] = len(tokens)
    out["val_seconds"] = round(time.time() - t0, 2)
    return out
