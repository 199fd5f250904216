#!/usr/bin/env python3
"""The IMKD distillation ablation: one dataset, one budget, one seed.

    python train/ablate.py --dataroot /tmp/synth_default --version v1.0-synth \
        --train-scenes 'synth-train-*' --val-scenes 'synth-val-*' --config tiny \
        --steps 300 --batch-size 4 --seed 0 --time-budget-min 13 --out runs/ablation

Trains the LiDAR teacher once, then the camera + radar student five ways: no KD, +L1, +L1+L2,
+L1+L2+L3 (full), and the teacher initialisation alone (the L2 level's `init`), each from the
same initialisation (same seed) on the same data for the same number of optimiser steps,
distilled from the same frozen teacher (its best.pt by val NDS). Every run is `train/train.py` in
a subprocess (the exact command is recorded), validated with the devkit metrics on the val scenes
at the end of the run.

Budget: --steps fixes the LR schedule and the work of every run (reproducible); --time-budget-min
is a safety cap per run (training time; a run that hits it stops cleanly, checkpoints, validates,
and the table says so). Resumable: a run whose summary.json (final checkpoint + metrics) exists is
skipped; an interrupted one is continued with --resume.

Writes --md (default docs/ablation.md: a table of NDS, mAP, mATE, mASE, mAOE, mAVE, mAAE per run,
the command, dataset/budget/seed, wall time per run) and --json (default docs/ablation.json:
{"command": ..., "rows": [{"name": ..., "NDS": ..., ...}], ...}). The last line printed is the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from imkd_core.atomic import atomic_write_text  # noqa: E402
from imkd_core.errors import cli_main  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TRAIN = REPO / "train" / "train.py"
METRICS = ("NDS", "mAP", "mATE", "mASE", "mAOE", "mAVE", "mAAE")
# (row name, --model, --kd)
RUNS: tuple[tuple[str, str, str | None], ...] = (
    ("teacher", "teacher", None),
    ("student_nokd", "student", "none"),
    ("student_l1", "student", "l1"),
    # the LiDAR -> fused level: L2 with its response term and the teacher-initialised BEV encoder + head
    ("student_l1_l2", "student", "l1,l2,resp,init"),
    ("student_full", "student", "l1,l2,l3,resp,init"),
    ("student_init", "student", "init"),          # isolates the initialisation from the loss terms
)
LABELS = {"teacher": "LiDAR teacher", "student_nokd": "student, no KD", "student_l1": "student + L1",
          "student_l1_l2": "student + L1 + L2", "student_full": "student + L1 + L2 + L3 (full)",
          "student_init": "student + teacher init only"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataroot", required=True)
    p.add_argument("--version", default="v1.0-synth")
    p.add_argument("--train-scenes", nargs="+", default=["synth-train-*"])
    p.add_argument("--val-scenes", nargs="+", default=["synth-val-*"])
    p.add_argument("--config", default="tiny", help="preset or YAML (the same for teacher and students)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override passed to every run (train.py --set)")
    p.add_argument("--steps", type=int, default=300, help="optimiser steps of every run (defines the schedule)")
    p.add_argument("--teacher-steps", type=int, default=0, help="steps of the teacher run (default: --steps)")
    p.add_argument("--time-budget-min", type=float, default=13.0,
                   help="cap on each run's training time in minutes (0 = none); the final validation comes on top "
                        "(default 13: about 15 min per run with validation)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=None, help="peak lr (default: train.py's)")
    p.add_argument("--teacher-lr", type=float, default=None, help="peak lr of the teacher (default: --lr)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--val-limit", type=int, default=0, help="validate on the first N val samples (0 = all)")
    p.add_argument("--device", default="auto")
    p.add_argument("--runs", default=",".join(r[0] for r in RUNS),
                   help="comma list of the rows to run (the teacher is trained if a KD row needs it)")
    p.add_argument("--extra", default="", help="extra train.py arguments for every run (one shell-quoted string)")
    p.add_argument("--out", default="runs/ablation", help="folder of the runs")
    p.add_argument("--md", default=str(REPO / "docs" / "ablation.md"))
    p.add_argument("--json", default=str(REPO / "docs" / "ablation.json"))
    p.add_argument("--title", default="IMKD distillation ablation")
    p.add_argument("--dry-run", action="store_true", help="print the train.py commands only")
    args = p.parse_args(argv)
    known = {r[0] for r in RUNS}
    args.run_names = [r.strip() for r in args.runs.split(",") if r.strip()]
    bad = sorted(set(args.run_names) - known)
    if bad:
        p.error(f"--runs: unknown {bad}; known {sorted(known)}")
    return args


def this_command(argv: list[str] | None) -> str:
    argv = sys.argv[1:] if argv is None else argv
    return "python train/ablate.py " + " ".join(shlex.quote(a) for a in argv)


def run_command(args: argparse.Namespace, name: str, model: str, kd: str | None, teacher_ckpt: Path | None
                ) -> list[str]:
    steps = args.teacher_steps if (model == "teacher" and args.teacher_steps) else args.steps
    lr = args.teacher_lr if (model == "teacher" and args.teacher_lr is not None) else args.lr
    cmd = [sys.executable, str(TRAIN), "--model", model, "--config", args.config, "--dataroot", args.dataroot,
           "--version", args.version, "--train-scenes", *args.train_scenes, "--val-scenes", *args.val_scenes,
           "--max-steps", str(steps), "--batch-size", str(args.batch_size), "--seed", str(args.seed),
           "--num-workers", str(args.num_workers), "--val-every", "0", "--device", args.device,
           "--out", str(Path(args.out) / name), "--resume", "auto", "--no-progress"]
    for item in args.overrides:
        cmd += ["--set", item]
    if lr is not None:
        cmd += ["--lr", str(lr)]
    if args.time_budget_min:
        cmd += ["--time-budget-min", str(args.time_budget_min)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if args.val_limit:
        cmd += ["--val-limit", str(args.val_limit)]
    if kd is not None:
        cmd += ["--kd", kd]
        if kd != "none":
            cmd += ["--teacher", str(teacher_ckpt)]
    cmd += shlex.split(args.extra)
    return cmd


def _display(cmd: list[str]) -> str:
    """The command as one would type it from the repository root."""
    parts = ["python", "train/train.py"] + cmd[2:]
    return " ".join(shlex.quote(p) for p in parts)


def _load_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def execute(args: argparse.Namespace, name: str, cmd: list[str], state: dict[str, Any]) -> dict[str, Any]:
    """Run (or skip, when finished) one training run; returns its summary + wall time."""
    run_dir = Path(args.out) / name
    summary = _load_json(run_dir / "summary.json")
    if summary and summary.get("completed") and summary.get("final") and (run_dir / "last.pt").exists():
        print(f"[ablate] {name}: finished before, skipped ({run_dir / 'summary.json'})", file=sys.stderr, flush=True)
        return {**summary, "wall_seconds": state.get(name, {}).get("wall_seconds"), "skipped": True}
    print(f"[ablate] {name}: {_display(cmd)}", file=sys.stderr, flush=True)
    t0 = time.time()
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "stdout.txt", "a") as out:
        proc = subprocess.run(cmd, cwd=REPO, stdout=out, stderr=None, text=True)
    wall = time.time() - t0
    if proc.returncode != 0:
        raise SystemExit(f"[ablate] {name} failed (exit {proc.returncode}); see {run_dir / 'stdout.txt'} and the "
                         "output above. Re-run the same ablate command to resume.")
    summary = _load_json(run_dir / "summary.json") or {}
    prev = state.get(name, {}).get("wall_seconds") or 0.0  # an interrupted earlier attempt
    state[name] = {"wall_seconds": round(prev + wall, 1), "command": _display(cmd)}
    atomic_write_text(Path(args.out) / "ablation_state.json", json.dumps(state, indent=1) + "\n")
    print(f"[ablate] {name}: done in {wall:.0f} s: NDS {summary.get('final', {}).get('NDS')}", file=sys.stderr,
          flush=True)
    return {**summary, "wall_seconds": round(prev + wall, 1), "skipped": False}


def dataset_facts(args: argparse.Namespace) -> dict[str, Any]:
    """Sample/scene counts of the train and val selections (devkit tables only)."""
    try:
        from imkd_core.data.nuscenes import load_nuscenes, resolve_scenes

        nusc = load_nuscenes(args.dataroot, args.version)
        by_name = {s["name"]: s for s in nusc.scene}
        out = {}
        for split, spec in (("train", args.train_scenes), ("val", args.val_scenes)):
            names = resolve_scenes(nusc, spec)
            out[split] = {"scenes": len(names), "samples": sum(by_name[n]["nbr_samples"] for n in names),
                          "spec": list(spec)}
        meta = Path(args.dataroot) / "synthetic_meta.json"
        if meta.exists():
            out["synthetic_meta"] = (_load_json(meta) or {}).get("config")
        return out
    except Exception as e:  # facts are informative only
        return {"error": f"{type(e).__name__}: {e}"}


def _fmt(v: Any, nd: int = 4) -> str:
    return "n/a" if v is None else f"{v:.{nd}f}" if isinstance(v, float) else str(v)


def write_reports(args: argparse.Namespace, command: str, rows: list[dict[str, Any]], facts: dict[str, Any]) -> dict:
    import torch

    doc = {
        "command": command,
        "title": args.title,
        "dataset": {"dataroot": args.dataroot, "version": args.version, **facts},
        "budget": {"steps": args.steps, "teacher_steps": args.teacher_steps or args.steps,
                   "batch_size": args.batch_size, "time_budget_min_per_run": args.time_budget_min},
        "seed": args.seed,
        "config": args.config, "overrides": args.overrides,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": str(torch.__version__),
                    "device": rows[0].get("device") if rows else None},
        "rows": rows,
    }
    atomic_write_text(Path(args.json), json.dumps(doc, indent=1) + "\n")

    by = {r["name"]: r for r in rows}
    lines = [f"# {args.title}", "",
             "Produced by `train/ablate.py` (every row is one `train/train.py` run; the exact commands are "
             "listed below). Metrics: nuScenes devkit (`imkd_core.evaluate`, detection_cvpr_2019) on the "
             "validation scenes, at the end of each run. NDS and mAP average over all 10 classes, as the devkit does.",
             "", "Command:", "", "    " + command, ""]
    tr, va = facts.get("train", {}), facts.get("val", {})
    lines += [f"- dataset: `{args.dataroot}` version `{args.version}`; train {tr.get('spec')} "
              f"({tr.get('scenes')} scenes, {tr.get('samples')} samples), val {va.get('spec')} "
              f"({va.get('scenes')} scenes, {va.get('samples')} samples"
              + (f", first {args.val_limit} evaluated" if args.val_limit else "") + ")",
              f"- budget: {doc['budget']['teacher_steps']} teacher steps, {args.steps} steps per student, "
              f"batch {args.batch_size}, cap {args.time_budget_min:g} min of training per run; seed {args.seed}; "
              f"config `{args.config}`" + (f" with {', '.join('`' + o + '`' for o in args.overrides)}"
                                           if args.overrides else ""),
              f"- machine: {os.cpu_count()} CPU cores ({platform.machine()}), torch {torch.__version__}, "
              f"device {doc['machine']['device']}", ""]
    head = "| run | KD terms | " + " | ".join(METRICS) + " | steps | stopped | train s | wall s |"
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        m = {k: r.get(k) for k in METRICS}
        lines.append(f"| {r['name']} | {r.get('kd_label', '')} | " + " | ".join(_fmt(m.get(k)) for k in METRICS)
                     + f" | {r.get('steps')} | {r.get('stopped')} | {_fmt(r.get('seconds'), 0)} | "
                       f"{_fmt(r.get('wall_seconds'), 0)} |")
    lines.append("")
    base = by.get("student_nokd")
    if base and base.get("NDS") is not None:
        lines += ["Change against the no-KD student (positive NDS/mAP = better; the error metrics are "
                  "better when lower):", ""]
        for name in ("student_l1", "student_l1_l2", "student_full", "student_init"):
            m = by.get(name)
            if m and m.get("NDS") is not None:
                lines.append(f"- {LABELS[name]}: NDS {m['NDS'] - base['NDS']:+.4f}, mAP {m['mAP'] - base['mAP']:+.4f}")
        lines.append("")
    stopped = [r["name"] for r in rows if r.get("stopped") == "time_budget"]
    if stopped:
        lines += [f"Runs stopped by the time cap before their step budget: {', '.join(stopped)} "
                  "(their LR schedule did not finish; compare them with care).", ""]
    lines += ["Exact commands of the runs:", ""]
    for r in rows:
        lines += [f"- {r['name']}: `{r.get('command', '')}`"]
    lines += ["", "The L2 rows are the LiDAR -> fused level: L2, its response term (`resp`, teacher heatmaps as "
              "soft targets of the student head) and `init` (the student's BEV encoder and head start from the "
              "teacher's, A_M = identity); `student_init` has the initialisation alone, to show how much of the "
              "gain is the loss terms and how much the start. KD weights are the config's defaults "
              "(imkd_core/config.py DistillConfig, balanced by gradient norm: train/kd_gradients.py). "
              "`--extra` can pass other train.py options to all runs.", "",
              "Every number above is what these commands printed; none was edited. Students start from the "
              "same initialisation (same seed; `init` rows then replace the BEV encoder and head by the "
              "teacher's) and see the same batches; the only difference is the distillation terms. Small "
              "synthetic validation sets make differences of a few NDS points noisy.",
              ""]
    atomic_write_text(Path(args.md), "\n".join(lines))
    return doc


@cli_main(prog="ablate.py")
def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    command = this_command(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    state = _load_json(out / "ablation_state.json") or {}
    teacher_dir = out / "teacher"
    needs_teacher = any(kd not in (None, "none") for name, _, kd in RUNS if name in args.run_names)
    names = [n for n in args.run_names]
    if needs_teacher and "teacher" not in names:
        names.insert(0, "teacher")
    rows: list[dict[str, Any]] = []
    for name, model, kd in RUNS:
        if name not in names:
            continue
        teacher_ckpt = teacher_dir / "best.pt" if (teacher_dir / "best.pt").exists() else teacher_dir / "last.pt"
        cmd = run_command(args, name, model, kd, teacher_ckpt if model == "student" else None)
        if args.dry_run:
            print(_display(cmd))
            continue
        summary = execute(args, name, cmd, state)
        rows.append({"name": name, "kd_label": "-" if kd in (None, "none") else kd.upper().replace(",", "+"),
                     "command": state.get(name, {}).get("command", _display(cmd)),
                     **{k: (summary.get("final") or {}).get(k) for k in METRICS},
                     "steps": summary.get("steps"),
                     "stopped": summary.get("stopped"), "seconds": summary.get("seconds"),
                     "wall_seconds": summary.get("wall_seconds"), "samples_per_s": summary.get("samples_per_s"),
                     "best_nds": summary.get("best_nds"), "device": summary.get("device"),
                     "run_dir": str(out / name)})
    if args.dry_run:
        return {}
    doc = write_reports(args, command, rows, dataset_facts(args))
    print(json.dumps({"command": doc["command"], "rows": [{k: r[k] for k in ("name", *METRICS)} for r in rows],
                      "md": args.md, "json": args.json}))
    return doc


if __name__ == "__main__":
    main()
