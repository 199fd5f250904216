#!/usr/bin/env python3
"""Per-module latency of the IMKD student, parameter count, and the cached vs uncached BEV pool.

    python train/bench_model.py --config tiny|paper_r50_256x704 [--device cpu|cuda] [--fp16]
                                [--iters N] [--threads T] [--train-step] [--clock wall|process]

Random weights on a synthetic nuScenes-like frame (batch 1; the cost does not depend on the
weights). Warm-up iterations first; on CUDA every stage boundary is synchronised. The cached
BEV pool (indices from the calibration LRU) and the pool recomputing its indices every call
are timed side by side, interleaved, on the same depth/context tensors. --fp16 runs under
autocast (float16 on CUDA, bfloat16 on CPU). --train-step also times one tiny-style training
step (teacher forward + student forward/backward with every KD term, batch 2).
--clock process measures this process's CPU time instead of wall time: on a shared, busy CPU
run it with --threads 1 for a steady number (with more threads it sums their CPU time).
Prints a table and, as its LAST line, one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from imkd_core.config import get_config  # noqa: E402
from imkd_core.models.detector import Student, Teacher, batch_to  # noqa: E402
from imkd_core.models.synthetic import synthetic_batch  # noqa: E402

STAGES = ("backbone", "depth", "bev_pool", "radar", "fusion", "bev_encoder", "head", "decode")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="tiny", help="preset name or YAML path")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (cuda when available)")
    p.add_argument("--fp16", action="store_true", help="autocast (float16 on CUDA, bfloat16 on CPU)")
    p.add_argument("--iters", type=int, default=None, help="timed iterations (default 50 on CUDA, 10 on CPU)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up iterations (default 10 CUDA, 2 CPU)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--train-step", action="store_true", help="also time a training step (batch 2, all KD terms)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--clock", choices=("wall", "process"), default="wall",
                   help="wall time (default) or process CPU time (CPU only; steady under contention with --threads 1)")
    return p.parse_args(argv)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


_CLOCK = time.perf_counter


def _timed(fn, device: torch.device) -> float:
    _sync(device)
    t0 = _CLOCK()
    fn()
    _sync(device)
    return (_CLOCK() - t0) * 1e3


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    global _CLOCK
    _CLOCK = time.perf_counter
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if (args.device == "auto" and torch.cuda.is_available()) else
                          ("cpu" if args.device == "auto" else args.device))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda requested but CUDA is not available")
    if args.clock == "process":
        if device.type != "cpu":
            raise SystemExit("--clock process is for CPU runs only")
        _CLOCK = time.process_time
    iters = args.iters or (50 if device.type == "cuda" else 10)
    warmup = args.warmup if args.warmup is not None else (10 if device.type == "cuda" else 2)
    amp_dtype = (torch.float16 if device.type == "cuda" else torch.bfloat16) if args.fp16 else None
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    cfg = get_config(args.config)
    torch.manual_seed(args.seed)
    model = Student(cfg, load_pretrained=False).to(device).eval()
    model.stage_clock = _CLOCK
    params_m = sum(p.numel() for p in model.parameters()) / 1e6
    batch = batch_to(synthetic_batch(cfg, args.batch, seed=args.seed, with_lidar=False, with_gt=False), device)
    amp = (torch.autocast(device_type=device.type, dtype=amp_dtype) if amp_dtype is not None
           else contextlib.nullcontext())

    def full() -> None:
        with amp:
            model.decode(model(batch))

    stage_ms: dict[str, list[float]] = {s: [] for s in STAGES}
    totals: list[float] = []
    with torch.inference_mode():
        for _ in range(warmup):
            full()
        for _ in range(iters):  # end-to-end, one sync at the end
            totals.append(_timed(full, device))
        for _ in range(iters):  # per stage, synchronised at each boundary
            tm: dict[str, float] = {}
            with amp:
                out = model(batch, timings=tm)
                tm["decode"] = _timed(lambda: model.decode(out), device)  # noqa: B023
            for s in STAGES:
                stage_ms[s].append(tm[s])
        # cached vs uncached BEV pool on the same inputs, interleaved
        with amp:
            feat = model.image_features(batch["images"])
            logits, context = model.depth(feat, batch)
            depth = logits.softmax(2)
        cached, uncached = [], []
        for _ in range(warmup):
            model.bev_pool(depth, context, batch, cached=True)
            model.bev_pool(depth, context, batch, cached=False)
        n_pool = max(iters, 20)
        for _ in range(n_pool):
            cached.append(_timed(lambda: model.bev_pool(depth, context, batch, cached=True), device))
            uncached.append(_timed(lambda: model.bev_pool(depth, context, batch, cached=False), device))
        ref = model.bev_pool(depth, context, batch, cached=False)
        pool_err = float((model.bev_pool(depth, context, batch, cached=True) - ref).abs().max())
    n_frustum = len(model.lift_splat.indices(batch["intrinsics"], batch["cam_to_ego"], batch["camera_mask"]))

    med = {s: statistics.median(v) for s, v in stage_ms.items()}
    result = {
        "config": cfg.name,
        "device": device.type if device.type == "cpu" else torch.cuda.get_device_name(device),
        "dtype": str(amp_dtype or torch.float32).replace("torch.", ""),
        "batch": args.batch,
        "threads": torch.get_num_threads(),
        "iters": iters,
        "clock": args.clock,
        "total_ms": round(statistics.median(totals), 3),
        "total_min_ms": round(min(totals), 3),
        "stage_ms": {s: round(v, 3) for s, v in med.items()},
        "pool_cached_ms": round(statistics.median(cached), 4),
        "pool_uncached_ms": round(statistics.median(uncached), 4),
        "pool_speedup": round(statistics.median(uncached) / max(statistics.median(cached), 1e-9), 2),
        "pool_max_abs_diff": pool_err,
        "pool_points": n_frustum,
        "params_m": round(params_m, 3),
    }
    if args.train_step:
        result["train_step_ms"] = round(train_step_ms(cfg, device, iters, warmup, amp_dtype), 2)

    print(f"IMKD student benchmark: config={cfg.name} device={result['device']} dtype={result['dtype']} "
          f"batch={args.batch} threads={result['threads']} iters={iters} clock={args.clock}")
    print(f"{'stage':<14}{'median ms':>12}")
    for s in STAGES:
        print(f"{s:<14}{med[s]:>12.3f}")
    print(f"{'sum of stages':<14}{sum(med.values()):>12.3f}")
    print(f"{'end-to-end':<14}{result['total_ms']:>12.3f}   (min {result['total_min_ms']:.3f})")
    print(f"BEV pool: cached {result['pool_cached_ms']:.3f} ms, recomputing indices "
          f"{result['pool_uncached_ms']:.3f} ms -> x{result['pool_speedup']:.1f} "
          f"({n_frustum} frustum points, max |diff| {pool_err:.2e})")
    print(f"parameters: {params_m:.3f} M")
    if "train_step_ms" in result:
        print(f"train step (batch 2, teacher fwd + student fwd/bwd, all KD terms): {result['train_step_ms']:.1f} ms")
    print(json.dumps(result))
    return result


def train_step_ms(cfg, device: torch.device, iters: int, warmup: int, amp_dtype) -> float:
    """Median ms of one optimiser step: frozen teacher forward, student forward + every KD loss
    + backward + AdamW, batch 2 with LiDAR and GT."""
    torch.manual_seed(0)
    student = Student(cfg, load_pretrained=False).to(device).train()
    teacher = Teacher(cfg).to(device).freeze()
    opt = torch.optim.AdamW(student.parameters(), lr=1e-3, foreach=True)
    batch = batch_to(synthetic_batch(cfg, 2, seed=1), device)
    amp = (torch.autocast(device_type=device.type, dtype=amp_dtype) if amp_dtype is not None
           else contextlib.nullcontext())

    def step() -> None:
        with amp:
            with torch.no_grad():
                t_out = teacher(batch)
            out = student(batch)
            loss = student.loss(batch, out, t_out)["total"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(max(warmup, 2)):
        step()
    return statistics.median(_timed(step, device) for _ in range(iters))


if __name__ == "__main__":
    main()
