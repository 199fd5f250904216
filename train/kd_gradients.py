"""Gradient norm of each loss term (det, L1, L2 + bev, resp + resp_box, L3) on a student's parameters.

    python -m train.kd_gradients --dataroot D --version V --train-scenes 'synth-train-*' \
        --teacher runs/ablation/teacher/best.pt [--set data.lidar_sweeps=10 ...] \
        [--student runs/ablation/seed0/nokd/last.pt] [--batches 3]

How the distillation weights in imkd_core/config.py (DistillConfig) are chosen: a KD term whose
gradient rivals the detection loss's pulls the shared features away from detection at short
budgets; one a hundred times weaker does nothing. Prints, per term at weight 1, the mean norm of
d(term)/d(trainable student parameters) and the term's value over a few training batches, for the
students a distillation run starts from: random init (`random`), the teacher-initialised student
of `--kd ...,init` (`inherited`: BEV encoder and head from the teacher, A_M frozen at identity, as
train.py does) and, with --student, a trained checkpoint; as its LAST line one JSON object.
--set applies the same config overrides as train.py, so the measured student is the one trained.
"""

from __future__ import annotations

import argparse
import json
import types

import torch

from imkd_core.checkpoint import load_checkpoint
from imkd_core.errors import cli_main
from imkd_core.models.detector import Student
from imkd_core.preprocess import collate
from train.checkpoints import load_teacher
from train.data import build_readers, make_dataset
from train.run_config import build_config

TERMS = ("det", "l1", "l2", "bev", "resp", "resp_box", "l3")  # bev is part of L2, resp_box of resp


def gradient_norms(student: Student, teacher: torch.nn.Module, batches: list[dict]) -> dict[str, dict[str, float]]:
    """{term: {"grad_norm", "value"}} averaged over batches (every term enabled, weight 1)."""
    params = [p for p in student.parameters() if p.requires_grad]
    acc: dict[str, list[tuple[float, float]]] = {k: [] for k in TERMS}
    student.train()
    for b in batches:
        with torch.no_grad():
            tout = teacher(b)
        losses = student.loss(b, student(b), tout)
        for k in TERMS:
            grads = torch.autograd.grad(losses[k], params, retain_graph=True, allow_unused=True)
            norm = torch.sqrt(sum((g.float() ** 2).sum() for g in grads if g is not None)).item()
            acc[k].append((norm, losses[k].item()))
    return {k: {"grad_norm": sum(n for n, _ in v) / len(v), "value": sum(x for _, x in v) / len(v)}
            for k, v in acc.items()}


@cli_main(prog="kd_gradients.py")
def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataroot", required=True)
    p.add_argument("--version", default="v1.0-synth")
    p.add_argument("--train-scenes", nargs="+", default=["synth-train-*"])
    p.add_argument("--config", default="tiny")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override as in train.py (repeatable)")
    p.add_argument("--teacher", required=True, help="teacher checkpoint")
    p.add_argument("--student", default=None, help="student checkpoint to measure besides random init")
    p.add_argument("--batches", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    torch.manual_seed(args.seed)
    # every distillation term on, as in the config's DistillConfig
    cfg = build_config(types.SimpleNamespace(config=args.config, overrides=args.overrides, kd=None))
    ns = types.SimpleNamespace(dataroot=args.dataroot, version=args.version, train_scenes=args.train_scenes,
                               val_scenes=[], model="student")
    reader, _ = build_readers(ns, cfg)
    ds = make_dataset(reader, cfg, train=True, seed=args.seed)
    step = max(1, len(ds) // args.batches)
    batches = [collate([ds[(j * step + i) % len(ds)] for i in range(args.batch_size)]) for j in range(args.batches)]
    teacher = load_teacher(args.teacher, cfg, torch.device("cpu"))
    result = {}
    for name in ("random", "inherited", "student"):
        if name == "student" and args.student is None:
            continue
        torch.manual_seed(args.seed)
        student = Student(cfg, load_pretrained=False)
        if name == "inherited":
            student.inherit_from(teacher)
        elif name == "student":
            student.load_state_dict(load_checkpoint(args.student)["model"], strict=False)  # KD adapters may be absent
        result[name] = gradient_norms(student, teacher, batches)
        det = result[name]["det"]["grad_norm"]
        print(f"{name}: " + ", ".join(f"{k} |grad| {v['grad_norm']:.2f} ({v['grad_norm'] / det:.1%} of det), "
                                      f"value {v['value']:.3f}" for k, v in result[name].items()), flush=True)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
