#!/usr/bin/env python3
"""Per-module latency of the IMKD student, parameter count, the cached vs uncached BEV pool, and
every inference backend side by side.

    python -m train.bench_model --config tiny|paper_r50_256x704 [--device cpu|cuda] [--fp16]
                                [--iters N] [--threads T] [--train-step] [--clock wall|process]
                                [--backends all|none|torch_fp32,onnxruntime_fp32,...]

Random weights on a synthetic nuScenes-like frame (batch 1; the cost does not depend on the
weights). Warm-up iterations first; on CUDA every stage boundary is synchronised. The cached
BEV pool (indices from the calibration LRU) and the pool recomputing its indices every call
are timed side by side, interleaved, on the same depth/context tensors. --fp16 runs under
autocast (float16 on CUDA, bfloat16 on CPU). --train-step also times one tiny-style training
step (teacher forward + student forward/backward with every KD term, batch 2).
--clock process measures this process's CPU time instead of wall time: on a shared, busy CPU
run it with --threads 1 for a steady number (with more threads it sums their CPU time).
Backends (imkd_core.backends; every backend/precision the device supports) run the same batch
in rounds (each round: every backend in turn, one untimed call, then a block of timed calls;
alternating single calls would time torch's and onnxruntime's thread pools spinning against
each other, which a deployed node never does). `ms_p50`/`ms_p95` time the backend call (the
network, incl. the pool-index lookup and host/device copies), `ratio` = ms_p50 / torch_fp32's;
decoding, shared Python for all, is timed apart (`decode_ms_p50`; `ratio_with_decode` compares
network + decoding). Each also reports how far its outputs are from torch_fp32's (max abs
diff of the head outputs; detections paired by imkd_core.backends.detection_parity).
Prints tables and, as its LAST line, one JSON object (`backends`: {name: {ms_p50, ms_p95, ratio, ...}}).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time

import numpy as np
import torch

from imkd_core.backends import BACKENDS, PRECISIONS, detection_parity, make_backend, unsupported
from imkd_core.config import get_config
from imkd_core.data.synthetic.frames import synthetic_batch
from imkd_core.frame import Detections
from imkd_core.models.detector import Student, Teacher, batch_to

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
    p.add_argument("--backends", default="all",
                   help="backends to compare: all (every one this device supports), none, or names such as "
                        "torch_fp32,onnxruntime_fp32")
    return p.parse_args(argv)


def backend_names(device: torch.device, wanted: str = "all") -> list[str]:
    """`<backend>_<precision>` names to benchmark on `device`; torch_fp32 (the reference) first."""
    if wanted == "none":
        return []
    names = [f"{b}_{p}" for b in BACKENDS for p in PRECISIONS if unsupported(b, p, device) is None]
    if wanted != "all":
        asked = [n.strip() for n in wanted.split(",") if n.strip()]
        bad = [n for n in asked if n not in names]
        if bad:
            raise SystemExit(f"--backends: {', '.join(bad)} not available on {device.type} (available: "
                             f"{', '.join(names)})")
        names = [n for n in names if n in asked]
    return ["torch_fp32"] + [n for n in names if n != "torch_fp32"]


def _dets(model: Student, heads: list) -> Detections:
    boxes, scores, labels = model.decode({"heads": heads})[0]
    return Detections(boxes=boxes.float().cpu().numpy(), scores=scores.float().cpu().numpy(),
                      labels=labels.cpu().numpy())


def time_backends(model: Student, batch: dict, device: torch.device, names: list[str], iters: int, warmup: int,
                  stages: bool = False) -> dict[str, dict]:
    """Every backend in `names` on the same batch, in rounds of blocks (module docstring): p50/p95
    ms of the backend call and of decoding, ratios to torch_fp32, output differences; with
    `stages` also the median per-stage split (a separate pass: stage boundaries synchronise CUDA)."""
    runners, out = {}, {}
    for name in names:
        backend, precision = name.rsplit("_", 1)
        t0 = time.perf_counter()
        runners[name] = make_backend(backend, precision, model, device, example=batch)
        out[name] = {"build_s": round(time.perf_counter() - t0, 2)}
    times: dict[str, list[float]] = {n: [] for n in names}
    dec: dict[str, list[float]] = {n: [] for n in names}
    with torch.inference_mode():
        results = {n: r(batch) for n, r in runners.items()}
        ref_heads = results["torch_fp32"]
        ref_dets = _dets(model, ref_heads)
        m = model.cfg.model
        for n, heads in results.items():
            diff = max(float((a[k].float() - b[k].float()).abs().max()) for a, b in zip(heads, ref_heads)
                       for k in ("hm", "box"))
            c = detection_parity(ref_dets, _dets(model, heads), m.score_threshold, 0.02 if n.endswith("16") else 0.0,
                                   max_detections=m.max_detections)
            out[n].update(max_abs_diff=diff, detections={k: c[k] for k in ("n_ref", "n_got", "pairs", "count_ok",
                                                                            "max_centre_m", "max_score")})
        for _ in range(warmup):
            for r in runners.values():
                model.decode({"heads": r(batch)})
        rounds = max(1, min(5, iters // 2))
        for k in range(rounds):
            for n, r in runners.items():
                r(batch)
                for _ in range(iters // rounds + (k < iters % rounds)):
                    got: list = []
                    times[n].append(_timed(lambda r=r, got=got: got.append(r(batch)), device))
                    dec[n].append(_timed(lambda got=got: model.decode({"heads": got[0]}), device))
        if stages:
            for n, r in runners.items():
                split: dict[str, list[float]] = {}
                for _ in range(iters):
                    tm: dict[str, float] = {}
                    heads = r(batch, tm)
                    tm["decode"] = _timed(lambda h=heads: model.decode({"heads": h}), device)
                    for k, v in tm.items():
                        split.setdefault(k, []).append(v)
                out[n]["stage_ms"] = {k: round(statistics.median(v), 3) for k, v in split.items()}
    ref = statistics.median(times["torch_fp32"])
    ref_all = ref + statistics.median(dec["torch_fp32"])
    for n in names:
        p50, d50 = statistics.median(times[n]), statistics.median(dec[n])
        out[n] = {"ms_p50": round(p50, 3), "ms_p95": round(float(np.percentile(times[n], 95)), 3),
                  "ratio": round(p50 / ref, 3), "decode_ms_p50": round(d50, 3),
                  "ratio_with_decode": round((p50 + d50) / ref_all, 3), **out[n]}
    return out


def print_backends(table: dict[str, dict]) -> None:
    print(f"{'backend':<20}{'p50 ms':>10}{'p95 ms':>10}{'ratio':>8}{'+decode':>10}{'ratio':>8}{'max|diff|':>11}"
          f"{'dets ref/got':>14}{'build s':>9}")
    for n, r in table.items():
        d = r["detections"]
        print(f"{n:<20}{r['ms_p50']:>10.2f}{r['ms_p95']:>10.2f}{r['ratio']:>8.3f}"
              f"{r['ms_p50'] + r['decode_ms_p50']:>10.2f}{r['ratio_with_decode']:>8.3f}{r['max_abs_diff']:>11.2e}"
              f"{d['n_ref']:>7}/{d['n_got']:<6}{r['build_s']:>9.2f}")


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
    names = backend_names(device, args.backends)  # refuse an unavailable name before any timing
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
    if names:
        result["backends"] = time_backends(model, batch, device, names, iters, warmup)

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
    if names:
        print(f"backends ({iters} calls each in rounds of blocks; ratio = p50 / torch_fp32 p50; +decode: with "
              "the shared decoding):")
        print_backends(result["backends"])
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
