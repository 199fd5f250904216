"""The training loop: one run of the teacher or the student from its parsed arguments.

`TrainingRun` builds the data, models, optimiser and schedule, restores a checkpoint on resume,
steps (AMP, gradient clipping, DDP), validates at epoch ends through the batched Predictor,
checkpoints atomically and writes the summary. `train(args)` runs it start to end.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from imkd_core.atomic import atomic_copy, atomic_write_text
from imkd_core.checkpoint import load_checkpoint, save_checkpoint
from imkd_core.errors import UserError, writable_dir
from imkd_core.models.detector import Student, Teacher, batch_to
from imkd_core.preprocess import collate
from train.checkpoints import apply_forced, check_run_dir, clear_run_dir, load_teacher, slim_checkpoint
from train.data import build_readers, make_dataset
from train.distributed import (
    DistEnv,
    ResumableDistributedSampler,
    all_reduce_mean,
    any_rank,
    barrier,
    gather_rng_states,
    init_distributed,
    seed_everything,
    set_deterministic,
    set_rng_state,
    worker_init,
)
from train.run_config import KD_TERMS, build_config, changed_flags, flag_name, plain_args
from train.runlog import LOG_NAME, SUMMARY_NAME, JsonlLog, jsonable, plot_curves, read_log
from train.validation import validate

AMP_PRECISION = {"float16": "fp16", "bfloat16": "bf16"}


# ============================================================================ schedule
def lr_factor(step: int, total: int, warmup: int, kind: str = "cosine", min_ratio: float = 0.01) -> float:
    """LR multiplier at optimiser step `step` (0-based) of `total`.

    cosine: linear warm-up from 1/warmup to 1, then cosine to min_ratio at the last step.
    onecycle: cosine warm-up from 1/25 to 1 over `warmup`, then cosine to min_ratio.
    constant: warm-up, then 1.
    """
    if warmup > 0 and step < warmup:
        if kind == "onecycle":
            return 1 / 25 + (1 - 1 / 25) * 0.5 * (1 - math.cos(math.pi * step / warmup))
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    p = min(1.0, (step - warmup) / max(1, total - warmup - 1))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * p))


def param_groups(model: torch.nn.Module, weight_decay: float, lr: float,
                 scaled: tuple[list[torch.nn.Parameter], float] | None = None) -> list[dict[str, Any]]:
    """No weight decay on norms and biases (1-d parameters); the parameters of `scaled`
    (params, factor), e.g. the layers 'init' inherits, train at factor x lr. Each group records
    its "decay" flag and "lr_scale" (what apply_forced re-applies)."""
    slow = {id(p) for p in scaled[0]} if scaled else set()
    factor = scaled[1] if scaled else 1.0
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for _, p in model.named_parameters():
        if p.requires_grad:
            groups.setdefault((p.ndim > 1, id(p) in slow), []).append(p)
    order = [(True, False), (False, False), (True, True), (False, True)]
    return [{"params": groups[k], "weight_decay": weight_decay if k[0] else 0.0, "decay": k[0],
             "lr_scale": factor if k[1] else 1.0, "lr": lr * (factor if k[1] else 1.0)}
            for k in order if groups.get(k)]


# ============================================================================ helpers of the loop
class StopFlag:
    """SIGTERM/SIGINT -> finish the current step, checkpoint, exit cleanly (preemption)."""

    def __init__(self) -> None:
        self.raised: str | None = None

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError):  # not in the main thread
                signal.signal(sig, self._handler)

    def _handler(self, signum: int, _frame: Any) -> None:
        if self.raised is not None:  # second signal: give up immediately
            raise KeyboardInterrupt
        self.raised = signal.Signals(signum).name


def loss_floats(losses: dict[str, torch.Tensor], env: DistEnv) -> dict[str, float]:
    """Every loss term as a float, averaged over the DDP processes."""
    keys = sorted(losses)
    vals = torch.stack([losses[k].detach().float() for k in keys])
    vals = all_reduce_mean(vals, env).cpu().tolist()
    return dict(zip(keys, vals))


# ============================================================================ the run
class TrainingRun:
    """One training job, built in the order that fixes its random draws (seed, data, init)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.t_start = time.time()
        self.out = Path(args.out)
        self.last_path, self.best_path = self.out / "last.pt", self.out / "best.pt"
        will_resume = check_run_dir(args, self.out)
        self.env = env = init_distributed(args.device)
        self.device = device = env.device
        if args.threads:
            torch.set_num_threads(args.threads)
        self.use_amp = bool(args.amp and device.type == "cuda")
        if args.amp and not self.use_amp:
            warnings.warn("--amp is for CUDA; training in float32 on CPU", stacklevel=2)
        self.amp_dtype = torch.float16 if args.amp_dtype == "float16" else torch.bfloat16
        self.val_precision = AMP_PRECISION[args.amp_dtype] if self.use_amp else "fp32"
        set_deterministic(args.deterministic == "on" or (args.deterministic == "auto" and device.type == "cpu"),
                          device)
        seed_everything(args.seed)
        self.cfg = cfg = build_config(args)
        self.needs_teacher = args.model == "student" and cfg.distill.needs_teacher
        if self.needs_teacher and not args.teacher:
            raise UserError(f"--model student with KD terms {[t for t in KD_TERMS if getattr(cfg.distill, t)]} "
                            "needs --teacher CKPT (or --kd none / --kd l3)")
        if env.is_main:
            writable_dir(self.out)
            if not will_resume and (gone := clear_run_dir(self.out)):
                print(f"--force: starting afresh in {self.out}; removed the earlier run's {', '.join(gone)}",
                      file=sys.stderr)
        barrier(env)
        self._build_data()
        self._build_models()
        self.step, self.epoch, self.step_in_epoch, self.elapsed_prev = 0, 0, 0, 0.0
        self.best: dict[str, Any] = {"NDS": None, "step": None}
        self.val_history: list[dict[str, Any]] = []
        self.forced: dict[str, list[Any]] = {}
        self.resumed = will_resume
        if will_resume:
            self._resume()
        if self.step_in_epoch >= self.steps_per_epoch:
            self.epoch, self.step_in_epoch = self.epoch + 1, 0

    def amp_ctx(self) -> contextlib.AbstractContextManager:
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype, enabled=self.use_amp)

    # ---------------------------------------------------------------- building
    def _build_data(self) -> None:
        args, cfg, env = self.args, self.cfg, self.env
        train_reader, self.val_reader = build_readers(args, cfg)
        self.train_ds = make_dataset(train_reader, cfg, train=True, seed=args.seed)
        self.sampler = ResumableDistributedSampler(self.train_ds, num_replicas=env.world_size, rank=env.rank,
                                                   shuffle=True, seed=args.seed)
        self.steps_per_epoch = self.sampler.num_samples // args.batch_size
        if self.steps_per_epoch < 1:
            raise UserError(f"{len(self.train_ds)} training samples cannot fill one batch of {args.batch_size} on "
                            f"each of {env.world_size} processes")
        self.total_steps = total = args.max_steps or args.epochs * self.steps_per_epoch
        warmup = args.warmup_steps if args.warmup_steps >= 0 else max(1, min(500, total // 20))
        self.warmup = min(warmup, max(0, total - 1))
        self.loader_gen = torch.Generator()
        self.loader = DataLoader(self.train_ds, batch_size=args.batch_size, sampler=self.sampler, drop_last=True,
                                 num_workers=args.num_workers, collate_fn=collate, worker_init_fn=worker_init,
                                 pin_memory=self.device.type == "cuda", generator=self.loader_gen)

    def _build_models(self) -> None:
        args, cfg, env, dc = self.args, self.cfg, self.env, self.cfg.distill
        torch.manual_seed(args.seed)  # identical initialisation on every rank
        self.teacher: Teacher | None = None
        if args.model == "teacher":
            model: torch.nn.Module = Teacher(cfg)
        else:
            model = Student(cfg, load_pretrained=True)
            # adapters that no enabled term uses would get no gradient (DDP requires one for every
            # trainable parameter): freeze them
            model.adapter_r.requires_grad_(dc.l1 or cfg.model.radar_adapter_in_path)  # in the path: always
            model.adapter_m.requires_grad_(dc.l2)
            if self.needs_teacher:
                self.teacher = load_teacher(args.teacher, cfg, self.device)
                if dc.init:  # before the optimiser exists; a resume overwrites it with its own weights
                    model.inherit_from(self.teacher)
            elif args.teacher and env.is_main:
                print(f"note: --teacher {args.teacher} unused: no enabled KD term needs it", file=sys.stderr)
        model.to(self.device)
        if env.enabled and args.sync_bn:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.raw = model
        scaled = None
        if args.model == "student" and dc.init and dc.init_lr_scale != 1.0:
            scaled = (model.inherited_parameters(), dc.init_lr_scale)
        self.opt = torch.optim.AdamW(param_groups(model, args.weight_decay, args.lr, scaled), lr=args.lr,
                                     betas=(0.9, 0.999))
        total, warmup = self.total_steps, self.warmup
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda s: lr_factor(s, total, warmup, args.schedule, args.min_lr_ratio))
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp and self.amp_dtype == torch.float16)
        self.trainable = [p for p in model.parameters() if p.requires_grad]

    def _resume(self) -> None:
        """Continue from last.pt: weights, optimiser, schedule, scaler, position, RNG (--force: new flags)."""
        args, env, last_path, total_steps = self.args, self.env, self.last_path, self.total_steps
        ck = load_checkpoint(last_path, map_location="cpu")
        if ck["kind"] != args.model:
            raise UserError(f"--resume: {last_path} is a {ck['kind']} checkpoint, not {args.model}")
        if ck["config"] != self.cfg.to_dict():
            raise UserError(f"--resume: the config of {last_path} differs from this run's config/--set/--kd")
        forced = changed_flags(ck.get("args"), args)
        if ck.get("total_steps") != total_steps:
            forced["total_steps"] = [ck.get("total_steps"), total_steps]
        if forced and not args.force:
            what = [f"{flag_name(k)} {new!r} (the run has {old!r})" for k, (old, new) in forced.items()
                    if k != "total_steps"] or [f"{total_steps} steps (the run has {ck.get('total_steps')})"]
            raise UserError(f"--resume: this command changes {', '.join(what)} of {last_path}; repeat the run's "
                            f"values, or pass --force to apply them from step {ck['step']} (recorded in {LOG_NAME})")
        self.raw.load_state_dict(ck["model"])
        self.opt.load_state_dict(ck["optimizer"])
        self.sched.load_state_dict(ck["scheduler"])
        if ck.get("scaler"):
            self.scaler.load_state_dict(ck["scaler"])
        self.step, self.epoch, self.step_in_epoch = int(ck["step"]), int(ck["epoch"]), int(ck["step_in_epoch"])
        self.elapsed_prev = float(ck.get("elapsed_s", 0.0))
        self.best = dict(ck.get("best", self.best))
        self.val_history = list(ck.get("val_history", []))
        if forced:  # --force: this command's optimisation flags from here on
            apply_forced(self.opt, self.sched, args, self.step)
            if "batch_size" in forced:  # keep the position in the epoch in samples
                self.step_in_epoch = self.step_in_epoch * int(forced["batch_size"][0]) // args.batch_size
        self.forced = forced
        rngs = ck.get("rng") or []
        if len(rngs) == env.world_size:
            set_rng_state(rngs[env.rank])
        elif env.is_main:
            print(f"warning: {last_path} holds RNG states of {len(rngs)} processes, this run has "
                  f"{env.world_size}: RNG reseeded", file=sys.stderr)
        if env.is_main:
            applied = [f"{flag_name(k)} {o!r} -> {n!r}" for k, (o, n) in forced.items() if k != "total_steps"]
            print(f"resumed {last_path}: step {self.step}/{total_steps}, epoch {self.epoch}"
                  + (f"; --force applied {', '.join(applied)}" if applied else ""), file=sys.stderr)

    # ---------------------------------------------------------------- checkpoints and validation
    def elapsed(self) -> float:
        return self.elapsed_prev + (time.time() - self.t_loop)

    def save_last(self) -> None:
        args, cfg, env = self.args, self.cfg, self.env
        rngs = gather_rng_states(env)  # collective: every rank calls save_last
        if env.is_main:
            save_checkpoint(self.last_path, {
                "kind": args.model, "config": cfg.to_dict(), "model": self.raw.state_dict(),
                "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
                "scaler": self.scaler.state_dict(), "step": self.step, "epoch": self.epoch,
                "step_in_epoch": self.step_in_epoch, "total_steps": self.total_steps,
                "steps_per_epoch": self.steps_per_epoch, "best": self.best, "val_history": self.val_history,
                "rng": rngs, "elapsed_s": self.elapsed(), "args": plain_args(args),
                "teacher": args.teacher if self.teacher is not None else None,
                "distill": dataclasses.asdict(cfg.distill), "world_size": env.world_size,
                "torch_version": str(torch.__version__),
            })

    def run_validation(self) -> tuple[dict[str, Any] | None, bool]:
        """Rank 0 validates (the others wait at the next collective). -> (metrics, is_new_best)."""
        args = self.args
        if not self.env.is_main or self.val_reader is None:
            return None, False
        metrics = validate(self.raw, self.val_reader, self.cfg, self.device, self.out / "val", args.val_batch_size,
                           min(args.num_workers, 2), args.val_limit, self.val_precision,
                           progress=not args.no_progress)
        rec = {"step": self.step, "epoch": self.epoch, **{k: v for k, v in metrics.items() if k != "per_class_AP"}}
        self.val_history.append(rec)
        self.log.write({"type": "val", **rec, "per_class_AP": metrics["per_class_AP"]})
        print(f"[val step {self.step}] NDS {metrics['NDS']:.4f} mAP {metrics['mAP']:.4f} "
              f"({metrics['val_seconds']:.0f} s)", file=sys.stderr)
        is_best = self.best["NDS"] is None or metrics["NDS"] > self.best["NDS"]
        if is_best:
            self.best = {"NDS": metrics["NDS"], "mAP": metrics["mAP"], "step": self.step, "epoch": self.epoch}
        return metrics, is_best

    def checkpoint(self, is_best: bool = False) -> None:
        self.save_last()
        if is_best and self.env.is_main:
            atomic_copy(self.last_path, self.best_path)
        barrier(self.env)

    # ---------------------------------------------------------------- steps
    def _start_loop(self) -> None:
        """Log, DDP wrapper, signal handler and teacher-output cache, just before the first step."""
        args, env, dc = self.args, self.env, self.cfg.distill
        self.ddp_model = self.raw
        if env.enabled:
            self.ddp_model = torch.nn.parallel.DistributedDataParallel(
                self.raw, device_ids=[env.local_rank] if self.device.type == "cuda" else None)
        self.log = (JsonlLog(self.out / LOG_NAME, truncate_after_step=self.step if self.resumed else None)
                    if env.is_main else None)
        if self.forced and self.log is not None:  # what --force changed, where the log can show it
            self.log.write({"type": "resume", "step": self.step, "epoch": self.epoch, "forced": self.forced})
        self.stop = StopFlag()
        self.stop.install()
        # teacher outputs are needed per step by the loss terms only ('init' acts before training)
        self.teacher_per_step = self.teacher is not None and (dc.l1 or dc.l2 or dc.resp or dc.l3)
        self.tcache = None
        if self.teacher_per_step and args.teacher_cache:
            from train.teacher_cache import TeacherCache, check_usable

            check_usable(env.world_size)
            self.tcache = TeacherCache(args.teacher_cache, args.teacher, args.seed, args.batch_size, self.device)

    def _teacher_out(self, batch: dict[str, torch.Tensor]) -> dict | None:
        if not self.teacher_per_step:
            return None
        t_out = self.tcache.get(self.step, batch) if self.tcache is not None else None
        if t_out is None:
            with torch.no_grad():
                t_out = self.teacher(batch)
            if self.tcache is not None:
                t_out = self.tcache.put(self.step, batch, t_out)
        return t_out

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        """One optimiser step -> the values its log record needs."""
        args, raw, opt = self.args, self.raw, self.opt
        batch = batch_to(batch, self.device)
        with self.amp_ctx():
            t_out = self._teacher_out(batch)
            pred = self.ddp_model(batch)
            if args.model == "student":
                losses = raw.loss(batch, pred, t_out, self.cfg.distill)
            else:
                losses = raw.loss(batch, pred)
        self.scaler.scale(losses["total"]).backward()
        self.scaler.unscale_(opt)
        gnorm = torch.nn.utils.clip_grad_norm_(self.trainable, args.clip_grad if args.clip_grad > 0 else math.inf)
        finite = bool(torch.isfinite(gnorm))  # identical on every rank (gradients are all-reduced)
        lr_now = opt.param_groups[0]["lr"]
        if self.scaler.is_enabled():
            self.scaler.step(opt)  # skips the update itself on inf/nan gradients
            self.scaler.update()
        elif finite:
            opt.step()
        opt.zero_grad(set_to_none=True)
        self.sched.step()
        self.step += 1
        self.step_in_epoch += 1
        return {"lr": lr_now, "grad_norm": float(gnorm), "skipped": not finite, "losses": loss_floats(losses, self.env)}

    def _log_step(self, rec: dict[str, Any]) -> None:
        """Rank 0: the step's JSONL record (every --log-every steps) and the progress bar."""
        self.win_n += self.args.batch_size * self.env.world_size
        if not self.env.is_main:
            return
        now = time.time()
        sps = self.win_n / max(now - self.win_t, 1e-9)
        vals = rec["losses"]
        if self.step % self.args.log_every == 0 or self.step == self.total_steps:
            self.log.write({"type": "train", "step": self.step, "epoch": self.epoch, "lr": rec["lr"],
                            "grad_norm": rec["grad_norm"], "skipped": rec["skipped"], "samples_per_s": round(sps, 3),
                            "time": round(self.elapsed_prev + now - self.t_loop, 3), **vals})
            self.win_t, self.win_n = now, 0
        self.pbar.update(1)
        self.pbar.set_postfix(loss=f"{vals['total']:.3f}", lr=f"{rec['lr']:.2e}", sps=f"{sps:.2f}")

    def _epoch(self) -> str | None:
        """Steps to the end of the epoch (or the run); -> why it stopped early, else None."""
        args = self.args
        self.train_ds.set_epoch(self.epoch)
        self.sampler.set_epoch(self.epoch)
        self.sampler.set_skip(self.step_in_epoch * args.batch_size)
        self.loader_gen.manual_seed(args.seed * 100003 + self.epoch)  # worker seeds: a function of (seed, epoch)
        budget_s = args.time_budget_min * 60.0
        for batch in self.loader:
            self._log_step(self.train_step(batch))
            over_budget = budget_s > 0 and self.elapsed() >= budget_s
            if any_rank(over_budget or self.stop.raised is not None, self.env):
                return "time_budget" if over_budget else f"signal:{self.stop.raised or 'peer'}"
            if self.step >= self.total_steps:
                break
            if args.ckpt_every and self.step % args.ckpt_every == 0 and self.step_in_epoch < self.steps_per_epoch:
                self.checkpoint()
        return None

    def loop(self) -> str:
        """Epochs until the step budget; validation + checkpoint at epoch ends -> how the loop stopped."""
        from tqdm import tqdm

        args = self.args
        self._start_loop()
        self.t_loop = time.time()
        self.pbar = tqdm(total=self.total_steps, initial=self.step, desc=f"train {args.model}", unit="step",
                         dynamic_ncols=True, disable=args.no_progress or not self.env.is_main, file=sys.stderr)
        stopped: str | None = None
        self.win_t, self.win_n = time.time(), 0
        self.raw.train()
        while self.step < self.total_steps and stopped is None:
            stopped = self._epoch()
            if self.step_in_epoch >= self.steps_per_epoch:  # an epoch ended
                self.epoch, self.step_in_epoch = self.epoch + 1, 0
                if stopped is None and self.step < self.total_steps:
                    is_best = False
                    if args.val_every and self.epoch % args.val_every == 0:
                        _, is_best = self.run_validation()
                    self.checkpoint(is_best)
                    if self.env.is_main:
                        plot_curves(self.out / LOG_NAME, self.out / "loss_curve.png", f"{args.model} ({self.cfg.name})")
        self.pbar.close()
        return stopped or "completed"

    # ---------------------------------------------------------------- the end
    def finish(self, stopped: str) -> dict[str, Any]:
        """Final validation and checkpoint, slim export, summary.json -> the summary (rank 0; {} elsewhere)."""
        args, env = self.args, self.env
        is_best = False
        if not stopped.startswith("signal") and (not self.val_history or self.val_history[-1]["step"] != self.step):
            _, is_best = self.run_validation()
        self.checkpoint(is_best)
        if args.debug_rank_dump:
            torch.save({k: v.detach().cpu() for k, v in self.raw.state_dict().items()},
                       self.out / f"rank{env.rank}_params.pt")
        summary: dict[str, Any] = {}
        if env.is_main:
            self.log.close()
            plot_curves(self.out / LOG_NAME, self.out / "loss_curve.png", f"{args.model} ({self.cfg.name})")
            if args.export_slim:
                slim_checkpoint(self.best_path if self.best_path.exists() else self.last_path, args.export_slim)
            summary = self.summary(stopped)
            atomic_write_text(self.out / SUMMARY_NAME, json.dumps(jsonable(summary), indent=1) + "\n")
        if env.enabled:
            barrier(env)
            dist.destroy_process_group()
        return summary

    def summary(self, stopped: str) -> dict[str, Any]:
        args, cfg = self.args, self.cfg
        final = dict(self.val_history[-1]) if self.val_history and self.val_history[-1]["step"] == self.step else None
        train_recs = [r for r in read_log(self.out / LOG_NAME) if r.get("type") == "train"]
        sps = [r["samples_per_s"] for r in train_recs[1:]] or [r["samples_per_s"] for r in train_recs]
        return {
            "model": args.model, "config": cfg.name, "out": str(self.out),
            "kd": [t for t in KD_TERMS if getattr(cfg.distill, t)] if args.model == "student" else None,
            "steps": self.step, "total_steps": self.total_steps, "epochs": self.epoch,
            "steps_per_epoch": self.steps_per_epoch,
            "stopped": stopped, "completed": stopped in ("completed", "time_budget"),
            "seconds": round(self.elapsed(), 2), "wall_seconds_this_process": round(time.time() - self.t_start, 2),
            "samples_per_s": round(float(np.median(sps)), 3) if sps else None,
            "final_loss": train_recs[-1]["total"] if train_recs else None,
            "final": final, "best_nds": self.best["NDS"], "best_step": self.best["step"],
            "world_size": self.env.world_size, "device": str(self.device), "amp": self.use_amp, "seed": args.seed,
            "last": str(self.last_path), "best": str(self.best_path) if self.best_path.exists() else None,
            "teacher_cache": self.tcache.stats() if self.tcache is not None else None,
        }


def train(args: argparse.Namespace) -> dict[str, Any]:
    """Run one training job; returns the summary (also printed as the last line by main)."""
    run = TrainingRun(args)
    return run.finish(run.loop())
