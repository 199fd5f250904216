#!/usr/bin/env python3
"""The IMKD distillation ablation: arms x paired seeds, with 95 % intervals.

    python -m train.ablate --dataroot /tmp/imkd_bench --version v1.0-synth --config tiny \
        --set data.lidar_sweeps=10 --seeds 0,1,2 --teacher-steps 1000 --steps 600 --batch-size 4 \
        --time-budget-min 15 --total-budget-min 150 --probes --out runs/ablation --git-commit

Trains the LiDAR teacher once (seed = the first of --seeds), then for every seed the camera +
radar student arms: `nokd`; `l1`; `l1_l2` (L1 + L2 + its response term); `full` (L1 + L2 + L3 +
response, no init); `init` (the teacher initialisation of the BEV encoder and head alone);
`full_init` (full + init); `nokd_nodepth` / `full_init_nodepth`, that pair without BEVDepth's
LiDAR depth supervision (part of what LiDAR teaches is in every other row). Arms of one seed
share initialisation and data order (train.py --seed), so arm - baseline differences are paired
per seed. Every run is `python -m train.train` in a subprocess
(the exact command is recorded), validated with the devkit at its end; its predictions are then
scored once more:
AP at each distance threshold, AP by ego-distance band, and the metrics of each val scene (for
the scene bootstrap). With --probes, the runs of --probe-seeds (default: the first seed) and
--probe-arms (default: all) are also evaluated with radar zeroed, the predicted intensity map held
constant and the cameras masked, with the depth head's accuracy against LiDAR, plus the coverage
of the distillation weight maps (train/probes.py).

Report (train/ablation_stats.py): per arm the mean over seeds; per comparison (COMPARISONS) the
paired difference with a t interval over seeds (`ci95`) and a bootstrap over val scenes
(`ci95_scene`). Resumable: a run whose summary.json and scores.json exist is skipped; an
interrupted one continues with --resume. Runs go seed by seed, so a stopped ablation (the
--total-budget-min cap, a kill) already has complete paired seeds. The reports are rewritten
after every run (and committed with --git-commit), so a long ablation records as it goes.

Writes --md (default docs/ablation.md) and --json (default docs/ablation.json:
{"val_samples", "val_scenes", "seeds", "rows": [{"name", "seed", "NDS", ...}],
"comparisons": [{"arm", "baseline", "metric", "diff", "ci95", "ci95_scene"}], ...}).
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from imkd_core.atomic import atomic_write_text
from imkd_core.errors import cli_main
from train import ablation_stats as st

REPO = Path(__file__).resolve().parents[1]
TRAIN = "train.train"  # run as `python -m` from REPO
PROBES = "train.probes"
METRICS = ("NDS", "mAP", "mATE", "mASE", "mAOE", "mAVE", "mAAE")
AP_THR = tuple(f"AP@{t:.1f}" for t in st.DIST_THRESHOLDS)
RANGE_KEYS = tuple(st.range_key(b) for b in st.RANGE_BANDS)
COMPARED = ("NDS", "mAP", "mATE", "mAOE", "mAVE", *AP_THR, *RANGE_KEYS)
# arm -> (--model, --kd, extra --set items of that arm)
ARMS: dict[str, tuple[str, str | None, tuple[str, ...]]] = {
    "teacher": ("teacher", None, ()),
    "nokd": ("student", "none", ()),
    "l1": ("student", "l1", ()),
    "l1_l2": ("student", "l1,l2,resp", ()),      # the LiDAR -> fused level: L2 with its response term
    "full": ("student", "l1,l2,l3,resp", ()),    # every IMKD loss term, no initialisation
    "init": ("student", "init", ()),             # the teacher initialisation alone
    "full_init": ("student", "l1,l2,l3,resp,init", ()),
    # the same pair without BEVDepth's LiDAR depth supervision (which every other row has)
    "nokd_nodepth": ("student", "none", ("model.depth_supervision=false",)),
    "full_init_nodepth": ("student", "l1,l2,l3,resp,init", ("model.depth_supervision=false",)),
}
LABELS = {"teacher": "LiDAR teacher", "nokd": "student, no KD", "l1": "student + L1",
          "l1_l2": "student + L1 + L2", "full": "student + L1 + L2 + L3 (full)", "init": "student + teacher init",
          "full_init": "student + full + init", "nokd_nodepth": "student, no KD, no depth supervision",
          "full_init_nodepth": "student + full + init, no depth supervision"}
# (arm, baseline): each stage's marginal gain, and each arm against no KD
COMPARISONS: tuple[tuple[str, str], ...] = (
    ("l1", "nokd"), ("l1_l2", "l1"), ("full", "l1_l2"), ("full", "nokd"),
    ("init", "nokd"), ("full_init", "init"), ("full_init", "nokd"), ("full_init_nodepth", "nokd_nodepth"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataroot", required=True)
    p.add_argument("--version", default="v1.0-synth")
    p.add_argument("--train-scenes", nargs="+", default=["synth-train-*"])
    p.add_argument("--val-scenes", nargs="+", default=["synth-val-*"])
    p.add_argument("--config", default="tiny", help="preset or YAML (the same for teacher and students)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override passed to every run (train.py --set)")
    p.add_argument("--steps", type=int, default=300, help="optimiser steps of every student run (the schedule)")
    p.add_argument("--teacher-steps", type=int, default=0, help="steps of the teacher run (default: --steps)")
    p.add_argument("--time-budget-min", type=float, default=13.0,
                   help="cap on each run's training time in minutes (0 = none); validation comes on top")
    p.add_argument("--total-budget-min", type=float, default=0.0,
                   help="start no new run once the ablation's wall time passes this (0 = no cap)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=None, help="peak lr (default: train.py's)")
    p.add_argument("--teacher-lr", type=float, default=None, help="peak lr of the teacher (default: --lr)")
    p.add_argument("--seeds", default="0", help="comma list of seeds; every arm runs once per seed (paired)")
    p.add_argument("--seed", type=int, default=None, help=argparse.SUPPRESS)  # one seed, the old spelling
    p.add_argument("--num-workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--val-limit", type=int, default=0, help="validate on the first N val samples (0 = all)")
    p.add_argument("--device", default="auto")
    p.add_argument("--arms", "--runs", dest="arms", default=",".join(a for a in ARMS if a != "teacher"),
                   help="comma list of arms (the teacher is trained when an arm needs it)")
    p.add_argument("--no-scene-scores", action="store_true", help="skip the per-scene scores (no ci95_scene)")
    p.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples of the scene interval")
    p.add_argument("--no-teacher-cache", action="store_true",
                   help="run the teacher in every KD step instead of caching its outputs per step and seed")
    p.add_argument("--keep-teacher-cache", action="store_true",
                   help="keep a seed's cached teacher outputs after its last arm (default: removed)")
    p.add_argument("--probes", action="store_true", help="run train/probes.py on every student run")
    p.add_argument("--probe-limit", type=int, default=0, help="probes on the first N val samples (0 = all)")
    p.add_argument("--probe-seeds", default=None,
                   help="comma list of the seeds whose runs are probed (default: the first of --seeds; 'all')")
    p.add_argument("--probe-arms", default=None,
                   help="comma list of the arms whose runs are probed (default: every student arm)")
    p.add_argument("--extra", default="", help="extra train.py arguments for every run (one shell-quoted string)")
    p.add_argument("--out", default="runs/ablation", help="folder of the runs")
    p.add_argument("--md", default=str(REPO / "docs" / "ablation.md"))
    p.add_argument("--json", default=str(REPO / "docs" / "ablation.json"))
    p.add_argument("--git-commit", action="store_true", help="git-commit --md/--json after every finished run")
    p.add_argument("--title", default="IMKD distillation ablation")
    p.add_argument("--dry-run", action="store_true", help="print the train.py commands only")
    args = p.parse_args(argv)
    try:
        args.seed_list = [int(x) for x in args.seeds.split(",") if x.strip()]
    except ValueError:
        p.error(f"--seeds: comma list of integers, got {args.seeds!r}")
    if args.seed is not None:
        args.seed_list = [args.seed]
    if not args.seed_list or len(set(args.seed_list)) != len(args.seed_list):
        p.error(f"--seeds: distinct seeds needed, got {args.seeds!r}")
    if args.probe_seeds in (None, ""):
        args.probe_seed_list = args.seed_list[:1]
    elif args.probe_seeds == "all":
        args.probe_seed_list = list(args.seed_list)
    else:
        try:
            args.probe_seed_list = [int(x) for x in args.probe_seeds.split(",") if x.strip()]
        except ValueError:
            p.error(f"--probe-seeds: comma list of integers or 'all', got {args.probe_seeds!r}")
    args.arm_names = [r.strip() for r in args.arms.split(",") if r.strip()]
    args.probe_arm_list = ([r.strip() for r in args.probe_arms.split(",") if r.strip()]
                           if args.probe_arms else list(ARMS))
    for flag, names in (("--arms", args.arm_names), ("--probe-arms", args.probe_arm_list)):
        bad = sorted(set(names) - set(ARMS))
        if bad:
            p.error(f"{flag}: unknown {bad}; known {list(ARMS)}")
    return args


def this_command(argv: list[str] | None) -> str:
    argv = sys.argv[1:] if argv is None else argv
    return "python -m train.ablate " + " ".join(shlex.quote(a) for a in argv)


def run_dir(args: argparse.Namespace, name: str, seed: int) -> Path:
    return Path(args.out) / "teacher" if name == "teacher" else Path(args.out) / f"seed{seed}" / name


def run_command(args: argparse.Namespace, name: str, seed: int, teacher_ckpt: Path | None) -> list[str]:
    model, kd, arm_sets = ARMS[name]
    steps = args.teacher_steps if (model == "teacher" and args.teacher_steps) else args.steps
    lr = args.teacher_lr if (model == "teacher" and args.teacher_lr is not None) else args.lr
    cmd = [sys.executable, "-m", TRAIN, "--model", model, "--config", args.config, "--dataroot", args.dataroot,
           "--version", args.version, "--train-scenes", *args.train_scenes, "--val-scenes", *args.val_scenes,
           "--max-steps", str(steps), "--batch-size", str(args.batch_size), "--seed", str(seed),
           "--num-workers", str(args.num_workers), "--val-every", "0", "--device", args.device,
           "--out", str(run_dir(args, name, seed)), "--resume", "auto", "--no-progress"]
    for item in (*args.overrides, *arm_sets):
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
        if kd not in ("none", "init") and not args.no_teacher_cache:
            cmd += ["--teacher-cache", str(Path(args.out) / "teacher_cache")]
    cmd += shlex.split(args.extra)
    return cmd


def _display(cmd: list[str]) -> str:
    """The command as one would type it from the repository root."""
    parts = ["python", *cmd[1:]]
    return " ".join(shlex.quote(p) for p in parts)


def _load_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _finished(rdir: Path) -> dict[str, Any] | None:
    summary = _load_json(rdir / "summary.json")
    if summary and summary.get("completed") and summary.get("final") and (rdir / "last.pt").exists():
        return summary
    return None


def execute(args: argparse.Namespace, key: str, rdir: Path, cmd: list[str], state: dict[str, Any]
            ) -> dict[str, Any]:
    """Run (or skip, when finished) one training run; returns its summary + wall time."""
    summary = _finished(rdir)
    if summary:
        print(f"[ablate] {key}: finished before, skipped ({rdir / 'summary.json'})", file=sys.stderr, flush=True)
        return {**summary, "wall_seconds": state.get(key, {}).get("wall_seconds"), "skipped": True}
    print(f"[ablate] {key}: {_display(cmd)}", file=sys.stderr, flush=True)
    t0 = time.time()
    rdir.mkdir(parents=True, exist_ok=True)
    with open(rdir / "stdout.txt", "a") as out:
        proc = subprocess.run(cmd, cwd=REPO, stdout=out, stderr=None, text=True)
    wall = time.time() - t0
    if proc.returncode != 0:
        raise SystemExit(f"[ablate] {key} failed (exit {proc.returncode}); see {rdir / 'stdout.txt'} and the "
                         "output above. Re-run the same ablate command to resume.")
    summary = _load_json(rdir / "summary.json") or {}
    prev = state.get(key, {}).get("wall_seconds") or 0.0  # an interrupted earlier attempt
    state[key] = {"wall_seconds": round(prev + wall, 1), "command": _display(cmd)}
    atomic_write_text(Path(args.out) / "ablation_state.json", json.dumps(state, indent=1) + "\n")
    print(f"[ablate] {key}: done in {wall:.0f} s: NDS {summary.get('final', {}).get('NDS')}", file=sys.stderr,
          flush=True)
    return {**summary, "wall_seconds": round(prev + wall, 1), "skipped": False}


class ValSet:
    """The val selection's devkit tables: tokens in order and the scene of each."""

    def __init__(self, args: argparse.Namespace) -> None:
        from imkd_core.data.nuscenes import load_nuscenes, resolve_scenes

        self.nusc = load_nuscenes(args.dataroot, args.version)
        by_name = {s["name"]: s for s in self.nusc.scene}
        self.scenes = resolve_scenes(self.nusc, args.val_scenes)
        self.tokens_by_scene: dict[str, list[str]] = {}
        for name in self.scenes:
            tok, toks = by_name[name]["first_sample_token"], []
            while tok:
                toks.append(tok)
                tok = self.nusc.get("sample", tok)["next"]
            self.tokens_by_scene[name] = toks
        self.train_facts = {"scenes": len(resolve_scenes(self.nusc, args.train_scenes)),
                            "samples": sum(by_name[n]["nbr_samples"] for n in resolve_scenes(self.nusc,
                                                                                          args.train_scenes)),
                            "spec": list(args.train_scenes)}

    @property
    def n_samples(self) -> int:
        return sum(len(v) for v in self.tokens_by_scene.values())


def score_run(val: ValSet, rdir: Path, scene_scores: bool) -> dict[str, Any]:
    """Devkit scores of a finished run's final val predictions: the headline metrics, AP at each
    distance threshold, AP by range band and (scene_scores) the same per val scene.
    Cached in rdir/scores.json (predictions do not change once a run is finished)."""
    from imkd_core.evaluate import evaluate

    cached = _load_json(rdir / "scores.json")
    if cached and (cached.get("scenes") or not scene_scores):
        return cached
    res_path = rdir / "val" / "results_nusc.json"
    results = _load_json(res_path)
    if results is None:
        raise SystemExit(f"[ablate] {rdir}: no final predictions at {res_path}")
    evaluated = set(results.get("results", {}))
    tokens = [t for toks in val.tokens_by_scene.values() for t in toks if t in evaluated]
    keep = (*METRICS, *AP_THR)
    tmp = rdir / "scoring"
    m = evaluate(val.nusc, None, results, tokens, tmp, verbose=False)
    out: dict[str, Any] = {k: m[k] for k in keep}
    for band, key in zip(st.RANGE_BANDS, RANGE_KEYS):
        out[key] = evaluate(val.nusc, None, results, tokens, tmp, verbose=False, ego_band=band)["mAP"]
    out["samples"] = len(tokens)
    out["scenes"] = {}
    if scene_scores:
        for name, toks in val.tokens_by_scene.items():
            toks = [t for t in toks if t in evaluated]
            if toks:
                ms = evaluate(val.nusc, None, results, toks, tmp, verbose=False)
                out["scenes"][name] = {k: ms[k] for k in keep}
    atomic_write_text(rdir / "scores.json", json.dumps(out, indent=1) + "\n")
    return out


def run_probes(args: argparse.Namespace, rdir: Path, teacher_ckpt: Path) -> dict[str, Any] | None:
    """train/probes.py on a finished student run (cached in rdir/probes.json)."""
    cached = _load_json(rdir / "probes.json")
    if cached:
        return cached
    ckpt = rdir / "last.pt"
    cmd = [sys.executable, "-m", PROBES, "--checkpoint", str(ckpt), "--teacher", str(teacher_ckpt),
           "--dataroot", args.dataroot, "--version", args.version, "--val-scenes", *args.val_scenes,
           "--out", str(rdir / "probes.json"), "--device", args.device]
    if args.probe_limit:
        cmd += ["--limit", str(args.probe_limit)]
    print(f"[ablate] probes: {_display(cmd)}", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=None, text=True)
    if proc.returncode != 0:
        print(f"[ablate] probes of {rdir} failed (exit {proc.returncode}); the row has none", file=sys.stderr)
        return None
    return _load_json(rdir / "probes.json")


def _fmt(v: Any, nd: int = 4) -> str:
    return "n/a" if v is None else f"{v:.{nd}f}" if isinstance(v, float) else str(v)


def _ci(ci: Any) -> str:
    if not ci or ci[0] is None:
        return "n/a"
    return f"[{ci[0]:+.4f}, {ci[1]:+.4f}]"


def comparisons(rows: list[dict[str, Any]], n_boot: int) -> list[dict[str, Any]]:
    """Every COMPARISONS pair x COMPARED metric that has paired seeds."""
    by: dict[str, dict[int, dict]] = {}
    for r in rows:
        by.setdefault(r["name"], {})[r["seed"]] = r
    out = []
    for arm, base in COMPARISONS:
        if arm not in by or base not in by:
            continue
        a_sc = {s: r.get("scenes") or {} for s, r in by[arm].items()}
        b_sc = {s: r.get("scenes") or {} for s, r in by[base].items()}
        for metric in COMPARED:
            c = st.paired_comparison(by[arm], by[base], metric, a_sc, b_sc, n_boot=n_boot)
            if c is not None:
                out.append({"arm": arm, "baseline": base, **c})
    return out


def write_reports(args: argparse.Namespace, command: str, rows: list[dict[str, Any]], val: ValSet,
                  meta: dict[str, Any]) -> dict:
    import torch

    comps = comparisons(rows, args.n_boot)
    doc = {
        "command": command,
        "title": args.title,
        "val_samples": val.n_samples,
        "val_scenes": len(val.scenes),
        "seeds": args.seed_list,
        "dataset": {"dataroot": args.dataroot, "version": args.version, "train": val.train_facts,
                    "val": {"scenes": len(val.scenes), "samples": val.n_samples, "spec": list(args.val_scenes)},
                    "synthetic_meta": (_load_json(Path(args.dataroot) / "synthetic_meta.json") or {}).get("config")},
        "budget": {"steps": args.steps, "teacher_steps": args.teacher_steps or args.steps,
                   "batch_size": args.batch_size, "time_budget_min_per_run": args.time_budget_min,
                   "total_budget_min": args.total_budget_min},
        "config": args.config, "overrides": args.overrides,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": str(torch.__version__),
                    "device": rows[0].get("device") if rows else None},
        **meta,
        "arms": {name: {"model": ARMS[name][0], "kd": ARMS[name][1], "set": list(ARMS[name][2])}
                 for name in dict.fromkeys(r["name"] for r in rows)},
        "means": st.arm_means(rows, (*METRICS, *AP_THR, *RANGE_KEYS)),
        "rows": rows,
        "comparisons": comps,
    }
    atomic_write_text(Path(args.json), json.dumps(doc, indent=1) + "\n")

    lines = [f"# {args.title}", "",
             "Produced by `train/ablate.py` (every row is one `python -m train.train` run; the exact commands are in "
             f"{os.path.basename(args.json)}). Metrics: nuScenes devkit (`imkd_core.evaluate`, "
             "detection_cvpr_2019) on the validation scenes at the end of each run; NDS and mAP average over "
             "all 10 classes, as the devkit does.", "", "Command:", "", "    " + command, "",
             f"- val: {val.n_samples} samples from {len(val.scenes)} scenes ({' '.join(args.val_scenes)}); train: "
             f"{val.train_facts['samples']} samples from {val.train_facts['scenes']} scenes",
             f"- seeds {args.seed_list} (arms of one seed share initialisation and data order); "
             f"{doc['budget']['teacher_steps']} teacher steps, {args.steps} steps per student, batch "
             f"{args.batch_size}; config `{args.config}`"
             + (f" with {', '.join('`' + o + '`' for o in args.overrides)}" if args.overrides else ""),
             f"- machine: {os.cpu_count()} CPU cores ({platform.machine()}), torch {torch.__version__}, "
             f"device {doc['machine']['device']}", "",
             "Mean over seeds (95 % t interval over seeds in the JSON):", ""]
    cols = (*METRICS, *AP_THR)
    head = "| arm | seeds | " + " | ".join(cols) + " | train s / run |"
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    for name, ms in doc["means"].items():
        secs = [r.get("seconds") for r in rows if r["name"] == name and r.get("seconds") is not None]
        n = ms.get("NDS", {}).get("n", 0)
        lines.append(f"| {name} | {n} | " + " | ".join(_fmt(ms.get(k, {}).get("mean")) for k in cols)
                     + f" | {_fmt(sum(secs) / len(secs), 0) if secs else 'n/a'} |")
    lines += ["", "Paired differences, arm - baseline (mean over seeds; `ci95`: t interval over seeds; "
              "`ci95_scene`: bootstrap over val scenes of the per-scene difference). A difference is a "
              "finding only where its interval excludes 0 (marked *).", "",
              "| arm | baseline | metric | diff | ci95 (seeds) | ci95 (scenes) |", "|---|---|---|---|---|---|"]
    for c in comps:
        if c["metric"] in ("NDS", "mAP", "mATE", "mAOE", "mAVE"):
            mark = " *" if st.excludes_zero(c["ci95"]) else ""
            lines.append(f"| {c['arm']} | {c['baseline']} | {c['metric']} | {c['diff']:+.4f}{mark} | "
                         f"{_ci(c['ci95'])} | {_ci(c.get('ci95_scene'))} |")
    probe_rows = [r for r in rows if r.get("probes")]
    if probe_rows:
        lines += ["", "Probes (train/probes.py; NDS with an input removed, depth head vs LiDAR):", "",
                  "| arm | seed | NDS | radar zeroed | intensity const | cameras masked | depth bin acc | "
                  "depth abs err m |", "|---|---|---|---|---|---|---|---|"]
        for r in probe_rows:
            p = r["probes"]
            lines.append(f"| {r['name']} | {r['seed']} | {_fmt(p.get('NDS'))} | {_fmt(p.get('radar_zeroed_NDS'))} | "
                         f"{_fmt(p.get('intensity_const_NDS'))} | {_fmt(p.get('cameras_masked_NDS'))} | "
                         f"{_fmt(p.get('depth_bin_acc'))} | {_fmt(p.get('depth_abs_err_m'))} |")
    cov = meta.get("weight_coverage")
    if cov:
        lines += ["", "Coverage of the distillation weight maps on val (train/probes.py; the teacher, W2 with an "
                  "all-zero student):", "", "| map | fraction of cells | weight on GT boxes | weight on radar cells |",
                  "|---|---|---|---|"]
        lines += [f"| {k} | {_fmt(v.get('frac_cells'))} | {_fmt(v.get('frac_weight_on_gt_boxes'))} | "
                  f"{_fmt(v.get('frac_weight_on_radar_cells'))} |" for k, v in cov.items() if k != "grid"]
        g = cov.get("grid", {})
        lines += ["", f"GT boxes cover {_fmt(g.get('frac_cells_in_gt_boxes'))} of the cells, radar returns "
                  f"{_fmt(g.get('frac_cells_radar_active'))}."]
    stopped = sorted({f"{r['name']}/seed{r['seed']}" for r in rows if r.get("stopped") == "time_budget"})
    if stopped:
        lines += ["", f"Runs stopped by the time cap before their step budget: {', '.join(stopped)}."]
    if meta.get("stopped_by_total_budget"):
        lines += ["", f"The ablation stopped at its total budget; not run: {', '.join(meta['not_run'])}."]
    lines += ["", "Every number above is what the recorded commands produced; none was edited.", ""]
    atomic_write_text(Path(args.md), "\n".join(lines))
    return doc


def git_commit(paths: list[str], message: str) -> None:
    """Commit the reports (the ablation records as it goes); a failure is reported, not fatal."""
    try:
        subprocess.run(["git", "add", "--", *paths], cwd=REPO, check=True, capture_output=True)
        if subprocess.run(["git", "diff", "--cached", "--quiet", "--", *paths], cwd=REPO).returncode:
            subprocess.run(["git", "commit", "-q", "-m", message, "--", *paths], cwd=REPO, check=True,
                           capture_output=True)
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"[ablate] git commit failed: {e}", file=sys.stderr)


def _row(name: str, seed: int, summary: dict, scores: dict, state_cmd: str | None, cmd: list[str], rdir: Path
         ) -> dict[str, Any]:
    kd = ARMS[name][1]
    row = {"name": name, "seed": seed, "kd": "-" if kd in (None, "none") else kd,
           **{k: scores.get(k, (summary.get("final") or {}).get(k)) for k in (*METRICS, *AP_THR, *RANGE_KEYS)},
           "steps": summary.get("steps"), "stopped": summary.get("stopped"), "seconds": summary.get("seconds"),
           "wall_seconds": summary.get("wall_seconds"), "samples_per_s": summary.get("samples_per_s"),
           "device": summary.get("device"), "run_dir": str(rdir), "command": state_cmd or _display(cmd)}
    if scores.get("scenes"):
        row["scenes"] = scores["scenes"]
    return row


@cli_main(prog="ablate.py")
def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    command = this_command(argv)
    out = Path(args.out)
    teacher_dir = run_dir(args, "teacher", args.seed_list[0])
    needs_teacher = "teacher" in args.arm_names or any(ARMS[a][1] not in (None, "none") for a in args.arm_names)
    plan = [("teacher", args.seed_list[0])] if needs_teacher else []
    plan += [(a, s) for s in args.seed_list for a in args.arm_names if a != "teacher"]
    if args.dry_run:
        for name, seed in plan:
            print(_display(run_command(args, name, seed, teacher_dir / "best.pt")))
        return {}
    out.mkdir(parents=True, exist_ok=True)
    state = _load_json(out / "ablation_state.json") or {}
    val = ValSet(args)
    rows: list[dict[str, Any]] = []
    meta: dict[str, Any] = {}
    t_start = time.time()
    for k, (name, seed) in enumerate(plan):
        rdir = run_dir(args, name, seed)
        if (args.total_budget_min and time.time() - t_start > 60 * args.total_budget_min
                and not _finished(rdir)):
            # past the budget: start nothing new, but still report every run finished before
            meta["stopped_by_total_budget"] = True
            meta.setdefault("not_run", []).append(f"{name}/seed{seed}")
            print(f"[ablate] total budget of {args.total_budget_min:g} min reached; not run: {name}/seed{seed}",
                  file=sys.stderr)
            continue
        teacher_ckpt = teacher_dir / "best.pt" if (teacher_dir / "best.pt").exists() else teacher_dir / "last.pt"
        cmd = run_command(args, name, seed, teacher_ckpt if name != "teacher" else None)
        key = "teacher" if name == "teacher" else f"seed{seed}/{name}"
        summary = execute(args, key, rdir, cmd, state)
        scores = score_run(val, rdir, not args.no_scene_scores)
        row = _row(name, seed, summary, scores, state.get(key, {}).get("command"), cmd, rdir)
        if name == "teacher" and args.probes and "weight_coverage" not in meta:
            cov = _load_json(rdir / "weight_coverage.json")
            if cov is None:
                cmd_c = [sys.executable, "-m", PROBES, "--coverage-only", "--teacher", str(teacher_ckpt),
                         "--dataroot", args.dataroot, "--version", args.version, "--val-scenes",
                         *args.val_scenes, "--out", str(rdir / "weight_coverage.json"), "--device", args.device]
                if args.probe_limit:
                    cmd_c += ["--limit", str(args.probe_limit)]
                subprocess.run(cmd_c, cwd=REPO, stdout=subprocess.DEVNULL, text=True)
                cov = _load_json(rdir / "weight_coverage.json")
            meta["weight_coverage"] = (cov or {}).get("weight_coverage")
        if name != "teacher" and args.probes and seed in args.probe_seed_list and name in args.probe_arm_list:
            row["probes"] = run_probes(args, rdir, teacher_ckpt)
        rows.append(row)
        last_of_seed = name != "teacher" and all(s != seed for _, s in plan[k + 1:])
        if last_of_seed and not args.keep_teacher_cache:
            for d in (Path(args.out) / "teacher_cache").glob(f"*-seed{seed}-bs*"):
                shutil.rmtree(d, ignore_errors=True)
        write_reports(args, command, rows, val, meta)
        if args.git_commit and not summary.get("skipped"):
            git_commit([args.json, args.md], f"Ablation: {key} finished (NDS {row.get('NDS')})")
    doc = write_reports(args, command, rows, val, meta)
    if args.git_commit:
        git_commit([args.json, args.md], "Ablation: reports of the finished runs")
    print(json.dumps({"command": doc["command"], "val_samples": doc["val_samples"], "val_scenes": doc["val_scenes"],
                      "seeds": doc["seeds"],
                      "rows": [{k: r.get(k) for k in ("name", "seed", *METRICS)} for r in rows],
                      "comparisons": [{k: c[k] for k in ("arm", "baseline", "metric", "diff", "ci95")}
                                      for c in doc["comparisons"] if c["metric"] == "NDS"],
                      "md": args.md, "json": args.json}))
    return doc


if __name__ == "__main__":
    main()
