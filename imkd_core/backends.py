"""Inference backends of the Predictor: eager torch, ONNX Runtime, TorchScript; fp32 / fp16 / bf16.

Every backend maps a collated batch (on the Predictor's device) to the Student's head outputs
(per task group {'hm', 'box'}, float32). What surrounds the network stays shared Python for all
of them: preprocessing (`frame_to_inputs` + `collate`), the BEV-pool indices of a calibration
(the Student's LRU cache, passed to exported graphs as inputs) and decoding (`Student.decode`:
top-K, threshold, circle NMS). So every backend turns one SensorFrame into Detections the same
way, and only the network in between differs.

- `torch`: the eager Student; fp16 (CUDA) / bf16 (CUDA where supported, CPU) by autocast.
- `onnxruntime`: the `StudentGraph` exported in memory at start-up from the loaded weights (no
  file to go stale), run by ONNX Runtime with the TensorRT/CUDA execution providers on CUDA
  where installed, else the CPU provider. fp32 only: the graph is exported in float32.
- `torchscript`: the same graph traced and frozen by torch.jit (weights pre-packed for oneDNN on
  CPU); fp32 only, no dependency beyond torch.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from imkd_core.config import ConfigError
from imkd_core.frame import Detections
from imkd_core.models.detector import Student
from imkd_core.models.export import INPUTS, StudentGraph, graph_inputs, onnx_bytes

BACKENDS = ("torch", "onnxruntime", "torchscript")
PRECISIONS = ("fp32", "fp16", "bf16")
AMP_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
Heads = list[dict[str, torch.Tensor]]


def unsupported(backend: str, precision: str, device: torch.device) -> str | None:
    """Why `backend` at `precision` cannot run on `device` (None = it can)."""
    if backend not in BACKENDS:
        return f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}"
    if precision not in PRECISIONS:
        return f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}"
    if backend == "onnxruntime":
        try:
            import onnxruntime as ort
        except ImportError:
            return "backend onnxruntime needs the onnxruntime package (pip install onnxruntime)"
        if device.type == "cuda" and not set(ort.get_available_providers()) & {"CUDAExecutionProvider",
                                                                             "TensorrtExecutionProvider"}:
            return (f"onnxruntime {ort.__version__} here has no CUDA/TensorRT execution provider "
                    "(install onnxruntime-gpu, or use device cpu)")
    if precision == "fp32":
        return None
    if backend != "torch":
        return f"backend {backend} runs fp32 only (its graph is exported in float32); use backend torch for {precision}"
    if precision == "fp16" and device.type != "cuda":
        return "fp16 needs a CUDA device (CPUs lack fast float16 kernels); use bf16 on CPU"
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return f"bf16 is not supported by {torch.cuda.get_device_name(device)}; use fp16"
    return None


@contextlib.contextmanager
def _stage(timings: dict[str, float] | None, name: str, device: torch.device) -> Iterator[None]:
    if timings is None:
        yield
        return
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    yield
    if device.type == "cuda":
        torch.cuda.synchronize()
    timings[name] = timings.get(name, 0.0) + (time.perf_counter() - t0) * 1e3


class TorchBackend:
    """The eager Student (or Teacher), optionally under autocast; per-stage timings as Student.forward."""

    name = "torch"

    def __init__(self, model: torch.nn.Module, precision: str, device: torch.device) -> None:
        self.model, self.precision, self.device = model, precision, device

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=AMP_DTYPES[self.precision])

    def __call__(self, batch: dict[str, torch.Tensor], timings: dict[str, float] | None = None) -> Heads:
        with self.autocast():  # a Teacher (training's validation) takes no timings
            out = self.model(batch) if timings is None else self.model(batch, timings=timings)
        return [{k: v.float() for k, v in h.items()} for h in out["heads"]]


class _GraphBackend:
    """Common part of the exported-graph backends: pool indices from the Student's cache as inputs;
    timings 'pool_indices' (cache lookup) and 'graph' (the network)."""

    name = ""

    def __init__(self, model: Student, device: torch.device) -> None:
        self.model, self.device = model, device
        self.n_tasks = len(model.head.tasks)

    def inputs(self, batch: dict[str, torch.Tensor], timings: dict[str, float] | None) -> tuple[torch.Tensor, ...]:
        with _stage(timings, "pool_indices", self.device):
            return graph_inputs(self.model, batch)

    def heads(self, outs: list[torch.Tensor]) -> Heads:
        return [{"hm": outs[2 * t], "box": outs[2 * t + 1]} for t in range(self.n_tasks)]


class OnnxRuntimeBackend(_GraphBackend):
    """The exported StudentGraph in an onnxruntime InferenceSession (threads = torch's on CPU)."""

    name = "onnxruntime"

    def __init__(self, model: Student, example: dict[str, torch.Tensor], device: torch.device,
                 threads: int | None = None) -> None:
        import onnxruntime as ort

        super().__init__(model, device)
        so = ort.SessionOptions()
        so.log_severity_level = 3  # the exporter's value_info shapes trip per-run "VerifyOutputSizes" warnings
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # no busy-waiting between runs: spinning threads took the cores from the torch work around
        # each run (decoding after a run took 2x as long on 2 cores), and gained the run nothing
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers: list[Any] = ["CPUExecutionProvider"]
        if device.type == "cuda":
            avail = ort.get_available_providers()
            opts = {"device_id": device.index or 0}
            providers = [(p, opts) for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in avail]
            providers.append("CPUExecutionProvider")
        else:
            so.intra_op_num_threads = threads or torch.get_num_threads()
            so.inter_op_num_threads = 1
        cpu_example = {k: v.cpu() for k, v in example.items()}
        with torch.inference_mode(False), torch.no_grad():
            data = onnx_bytes(model, cpu_example)
        self.session = ort.InferenceSession(data, so, providers=providers)
        self.providers = self.session.get_providers()
        self.input_names = {i.name for i in self.session.get_inputs()}  # the exporter drops unused inputs

    def __call__(self, batch: dict[str, torch.Tensor], timings: dict[str, float] | None = None) -> Heads:
        args = self.inputs(batch, timings)
        with _stage(timings, "graph", self.device):
            feed = {n: a.cpu().numpy() for n, a in zip(INPUTS, args) if n in self.input_names}
            outs = self.session.run(None, feed)
            outs = [torch.from_numpy(o).to(self.device) for o in outs]
        return self.heads(outs)


class TorchScriptBackend(_GraphBackend):
    """The StudentGraph traced and frozen by torch.jit on the Predictor's device."""

    name = "torchscript"

    def __init__(self, model: Student, example: dict[str, torch.Tensor], device: torch.device) -> None:
        super().__init__(model, device)
        graph = StudentGraph(model, batch_size=1).eval()
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")  # TracerWarnings (shapes are fixed per config) and the deprecation
            traced = torch.jit.trace(graph, graph_inputs(model, example), check_trace=False, strict=False)
            self.module = torch.jit.freeze(traced.eval())

    def __call__(self, batch: dict[str, torch.Tensor], timings: dict[str, float] | None = None) -> Heads:
        args = self.inputs(batch, timings)
        with _stage(timings, "graph", self.device):
            outs = self.module(*args)
        return self.heads(list(outs))


def make_backend(backend: str, precision: str, model: Student, device: torch.device,
                 example: dict[str, torch.Tensor] | None = None) -> TorchBackend | OnnxRuntimeBackend | \
        TorchScriptBackend:
    """Build a backend for an eval-mode Student; `example` (a collated batch on `device`) is what
    the graph backends trace with (any frame: the graphs take calibration and radar count as inputs)."""
    why = unsupported(backend, precision, device)
    if why:
        raise ConfigError(why)
    if backend == "torch":
        return TorchBackend(model, precision, device)
    if example is None:
        from imkd_core.data.synthetic.frames import synthetic_batch
        from imkd_core.models.detector import batch_to

        example = batch_to(synthetic_batch(model.cfg, 1, with_lidar=False, with_gt=False), device)
    if backend == "onnxruntime":
        return OnnxRuntimeBackend(model, example, device)
    return TorchScriptBackend(model, example, device)


def detection_parity(ref: Detections, got: Detections, threshold: float, score_tol: float = 0.0,
                       gate_m: float = 1.0, max_detections: int | None = None) -> dict[str, Any]:
    """How far `got` (a backend's Detections) is from `ref` (eager fp32) for one frame.

    Boxes are paired greedily, best reference score first, with the nearest unpaired box of the
    same label within `gate_m` (centre distance in BEV). A detection is 'marginal' when its score lies within
    `score_tol` of `threshold`: reduced precision may move it across the threshold, so
    `count_ok` allows the counts to differ by at most the number of marginal detections
    (score_tol 0: the counts must be equal) and `unpaired_firm` counts the detections outside
    that margin that found no partner. When `ref` holds `max_detections` boxes (the top-K cut
    decided), the cut is its lowest score instead of `threshold`. Distances are over the pairs.
    """
    n_r, n_g = len(ref), len(got)
    out: dict[str, Any] = {"n_ref": n_r, "n_got": n_g, "pairs": 0, "max_centre_m": 0.0, "max_size_m": 0.0,
                           "max_yaw_rad": 0.0, "max_velocity_ms": 0.0, "max_score": 0.0}
    used = np.zeros(n_g, bool)
    pairs = []
    for i in np.argsort(-ref.scores, kind="stable"):
        cand = np.flatnonzero(~used & (got.labels == ref.labels[i]))
        if not len(cand):
            continue
        d = np.linalg.norm(got.boxes[cand, :2] - ref.boxes[i, :2], axis=1)
        if d.min() > gate_m:
            continue
        j = int(cand[np.argmin(d)])
        used[j] = True
        pairs.append((int(i), j))
    if pairs:
        ri, gi = map(np.asarray, zip(*pairs))
        a, b = ref.boxes[ri].astype(np.float64), got.boxes[gi].astype(np.float64)
        dyaw = np.abs((a[:, 6] - b[:, 6] + np.pi) % (2 * np.pi) - np.pi)
        out.update(pairs=len(pairs), max_centre_m=float(np.linalg.norm(a[:, :3] - b[:, :3], axis=1).max()),
                   max_size_m=float(np.abs(a[:, 3:6] - b[:, 3:6]).max()), max_yaw_rad=float(dyaw.max()),
                   max_velocity_ms=float(np.abs(a[:, 7:9] - b[:, 7:9]).max()),
                   max_score=float(np.abs(ref.scores[ri] - got.scores[gi]).max()))
    cut = threshold
    if max_detections is not None and n_r >= max_detections and n_r:
        cut = max(threshold, float(ref.scores.min()))
    marginal_r = np.abs(ref.scores - cut) <= score_tol
    marginal_g = np.abs(got.scores - cut) <= score_tol
    paired_r = np.zeros(n_r, bool)
    paired_r[[i for i, _ in pairs]] = True
    out["marginal"] = int(marginal_r.sum() + marginal_g.sum())
    out["unpaired_firm"] = int((~paired_r & ~marginal_r).sum() + (~used & ~marginal_g).sum())
    out["count_ok"] = abs(n_r - n_g) <= (out["marginal"] if score_tol > 0 else 0)
    return out
