#!/usr/bin/env python3
"""The GPU check, prepared to run as is on a CUDA machine (`make bench-gpu`, < 8 minutes):

    python -m train.bench_gpu [--config paper_r50_256x704] [--iters 50] [--budget-s 450]
    python -m train.bench_gpu --device cpu --config tiny --iters 2 --warmup 0 --node-frames 2 \
        --node-hw 198 352 --train-batch 1 --train-iters 1     # dry run on CPU (the tests use a micro config)

Three sections, each printed as a table; the LAST line printed is one JSON object with all of them:
1. latency: the model config at batch 1 through every backend/precision the device supports
   (train/bench_model.time_backends: p50/p95 of the network, the shared decoding, per-stage
   split); `whole_model_ms` = network + decoding p50, against the 25 ms target for fp16. Combinations
   the device cannot run are listed with the reason (e.g. onnxruntime without a CUDA provider).
2. node: the node's model time: Predictor.predict (preprocessing, network, decoding; what the
   node's ~/timing reports as `total`) on nuScenes-sized synthetic frames (4 calibrations,
   cycled: the pool-index cache hits as on a rig with static extrinsics), for the node's default
   model (the shipped demo checkpoint) and the model config, per precision of the torch backend.
3. train: training samples/s of one optimiser step (frozen teacher forward, student forward
   with every KD term, backward, AdamW) in float32 and under autocast (fp16 with GradScaler as
   train/train.py --amp does, bf16 where supported).
A time budget (--budget-s) is checked before every section; a section that would not fit is
skipped and says so. Without CUDA it stops with one line unless --device cpu (the dry run).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from typing import Any

import numpy as np
import torch

from imkd_core.backends import AMP_DTYPES, BACKENDS, PRECISIONS, unsupported
from imkd_core.config import get_config
from imkd_core.data.synthetic.frames import synthetic_batch, synthetic_frame
from imkd_core.models.detector import Student, Teacher, batch_to
from train.bench_model import _timed, backend_names, print_backends, time_backends

TARGET_MS = 25.0  # paper config, whole model, fp16, batch 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu for a dry run")
    p.add_argument("--config", default="paper_r50_256x704", help="model config of the latency section")
    p.add_argument("--iters", type=int, default=50, help="timed calls per backend")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--node-frames", type=int, default=40, help="Predictor.predict calls per model/precision")
    p.add_argument("--node-hw", type=int, nargs=2, default=(900, 1600), metavar=("H", "W"),
                   help="source image size of the node section's frames (default nuScenes' 900 1600)")
    p.add_argument("--train-config", default=None, help="config of the training section (default: --config)")
    p.add_argument("--train-batch", type=int, default=4)
    p.add_argument("--train-iters", type=int, default=20)
    p.add_argument("--budget-s", type=float, default=450.0, help="stop starting sections after this (s)")
    return p.parse_args(argv)


def _pct(v: list[float], q: float) -> float:
    return round(float(np.percentile(v, q)), 3)


# ------------------------------------------------------------------------------------ sections
def latency(cfg_name: str, device: torch.device, iters: int, warmup: int) -> dict[str, Any]:
    cfg = get_config(cfg_name)
    torch.manual_seed(0)
    model = Student(cfg, load_pretrained=False).to(device).eval()
    batch = batch_to(synthetic_batch(cfg, 1, with_lidar=False, with_gt=False), device)
    names = backend_names(device)
    skipped = {f"{b}_{p}": why for b in BACKENDS for p in PRECISIONS
               if (why := unsupported(b, p, device)) is not None}
    table = time_backends(model, batch, device, names, iters, warmup, stages=True)
    for row in table.values():
        row["whole_model_ms"] = round(row["ms_p50"] + row["decode_ms_p50"], 3)
    half = "torch_fp16" if "torch_fp16" in table else None
    params_m = round(sum(p.numel() for p in model.parameters()) / 1e6, 3)
    out: dict[str, Any] = {"config": cfg.name, "batch": 1, "iters": iters, "backends": table, "skipped": skipped,
                           "target_ms": TARGET_MS, "params_m": params_m}
    if half:
        out["fp16_whole_model_ms"] = table[half]["whole_model_ms"]
        out["target_met"] = bool(table[half]["whole_model_ms"] <= TARGET_MS)
    fastest = min(table, key=lambda n: table[n]["whole_model_ms"])
    out["fastest"] = {"name": fastest, "whole_model_ms": table[fastest]["whole_model_ms"]}
    return out


def _frames(hw: tuple[int, int], n: int = 4) -> list:
    """Synthetic frames of source size `hw` (nuScenes: 900 x 1600), one calibration each (the rig jittered)."""
    frames = []
    for k in range(n):
        f = synthetic_frame(seed=100 + k, with_lidar=False, src_hw=hw)[0]
        f.cam_to_ego = f.cam_to_ego.copy()
        f.cam_to_ego[:, 0, 3] += 0.01 * k
        frames.append(f)
    return frames


def node_model_time(cfg_name: str, device: torch.device, n_frames: int, warmup: int,
                    hw: tuple[int, int] = (900, 1600)) -> dict[str, Any]:
    from imkd_core.predict import Predictor
    from imkd_core.weights import DEMO_CHECKPOINT

    frames = _frames(hw)
    precisions = [p for p in PRECISIONS if unsupported("torch", p, device) is None]
    models = {"demo_checkpoint": {"checkpoint": DEMO_CHECKPOINT}, get_config(cfg_name).name: {"config": cfg_name}}
    out: dict[str, Any] = {"frames": n_frames, "source_hw": list(hw), "runs": {}}
    for label, kw in models.items():
        for prec in precisions:
            torch.manual_seed(0)
            pred = Predictor(device=device, precision=prec, **kw)
            pred.config.model.score_threshold, pred.config.model.max_detections = 0.3, 100  # the node's defaults
            for k in range(max(warmup, len(frames))):
                pred.predict(frames[k % len(frames)])
            totals, stages = [], {}
            for k in range(n_frames):
                pred.predict(frames[k % len(frames)])
                totals.append(pred.last_timing["total"])
                for s, v in pred.last_timing.items():
                    stages.setdefault(s, []).append(v)
            out["runs"][f"{label}/torch_{prec}"] = {
                "config": pred.config.name, "ms_p50": round(statistics.median(totals), 3), "ms_p95": _pct(totals, 95),
                "stage_ms": {s: round(statistics.median(v), 3) for s, v in stages.items() if s != "total"},
                "cache_hits": pred.cache.hits, "cache_misses": pred.cache.misses}
            del pred
    return out


def train_throughput(cfg_name: str, device: torch.device, batch_size: int, iters: int, warmup: int
                     ) -> dict[str, Any]:
    cfg = get_config(cfg_name)
    batch = batch_to(synthetic_batch(cfg, batch_size, seed=1), device)
    modes = ["fp32"] + [p for p in ("fp16", "bf16") if unsupported("torch", p, device) is None]
    out: dict[str, Any] = {"config": cfg.name, "batch": batch_size, "iters": iters, "modes": {}}
    for mode in modes:
        torch.manual_seed(0)
        student = Student(cfg, load_pretrained=False).to(device).train()
        teacher = Teacher(cfg).to(device).freeze()
        step = _train_step(student, teacher, batch, device, mode)
        for _ in range(max(warmup, 1)):
            step()
        times = [_timed(step, device) for _ in range(iters)]
        ms = statistics.median(times)
        out["modes"][mode] = {"step_ms_p50": round(ms, 2), "samples_per_s": round(batch_size * 1e3 / ms, 2)}
        if device.type == "cuda":
            out["modes"][mode]["max_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
            torch.cuda.reset_peak_memory_stats(device)
        del student, teacher, step
    base = out["modes"]["fp32"]["samples_per_s"]
    for row in out["modes"].values():
        row["speedup"] = round(row["samples_per_s"] / base, 3)
    return out


def _train_step(student: Student, teacher: Teacher, batch: dict, device: torch.device, mode: str):
    """One optimiser step as train/train.py takes it (fp16: GradScaler; bf16: autocast only)."""
    opt = torch.optim.AdamW(student.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=mode == "fp16")

    def amp() -> contextlib.AbstractContextManager:
        return torch.autocast(device.type, dtype=AMP_DTYPES[mode]) if mode != "fp32" else contextlib.nullcontext()

    def step() -> None:
        with amp():
            with torch.no_grad():
                t_out = teacher(batch)
            loss = student.loss(batch, student(batch), t_out)["total"]
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    return step


# ------------------------------------------------------------------------------------ driver
def _print_node(sec: dict) -> None:
    print(f"{'model/backend':<36}{'p50 ms':>10}{'p95 ms':>10}  stages (p50 ms)")
    for name, r in sec["runs"].items():
        st = ", ".join(f"{k} {v:.1f}" for k, v in r["stage_ms"].items())
        print(f"{name:<36}{r['ms_p50']:>10.2f}{r['ms_p95']:>10.2f}  {st}")


def _print_train(sec: dict) -> None:
    print(f"{'mode':<8}{'step ms':>10}{'samples/s':>11}{'speed-up':>10}")
    for mode, r in sec["modes"].items():
        print(f"{mode:<8}{r['step_ms_p50']:>10.1f}{r['samples_per_s']:>11.2f}{r['speedup']:>10.3f}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    t_start = time.perf_counter()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"bench_gpu: CUDA is not available to torch {torch.__version__} here "
                         "(--device cpu runs the dry run)")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    try:
        import onnxruntime as ort

        ort_info = {"version": ort.__version__, "providers": ort.get_available_providers()}
    except ImportError:
        ort_info = None
    result: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "cuda": torch.version.cuda, "onnxruntime": ort_info,
        "threads": torch.get_num_threads(), "budget_s": args.budget_s, "skipped_sections": {},
        "tf32": {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32}}
    print(f"IMKD GPU check on {result['device']} (torch {torch.__version__}, CUDA {torch.version.cuda}, "
          f"onnxruntime {ort_info})")
    sections = [
        ("latency", lambda: latency(args.config, device, args.iters, args.warmup), 0.35),
        ("node", lambda: node_model_time(args.config, device, args.node_frames, args.warmup, tuple(args.node_hw)),
         0.6),
        ("train", lambda: train_throughput(args.train_config or args.config, device, args.train_batch,
                                           args.train_iters, args.warmup), 0.75),
    ]
    printers = {"latency": lambda s: print_backends(s["backends"]), "node": _print_node, "train": _print_train}
    for name, run, share in sections:
        used = time.perf_counter() - t_start
        if used > share * args.budget_s:  # leave the later sections their share of the budget
            result["skipped_sections"][name] = f"budget: {used:.0f} s used of {args.budget_s:.0f}"
            print(f"\n[{name}] skipped: {result['skipped_sections'][name]}")
            continue
        t0 = time.perf_counter()
        sec = run()
        sec["seconds"] = round(time.perf_counter() - t0, 1)
        result[name] = sec
        print(f"\n[{name}] ({sec['seconds']} s)")
        printers[name](sec)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    lat = result.get("latency", {})
    if lat:
        for n, why in lat["skipped"].items():
            print(f"  not run: {n}: {why}")
        if "target_met" in lat:
            print(f"paper-config target: fp16 whole model {lat['fp16_whole_model_ms']:.2f} ms vs <= {TARGET_MS} ms: "
                  f"{'met' if lat['target_met'] else 'missed'}")
    result["seconds"] = round(time.perf_counter() - t_start, 1)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
