"""A run's configuration from its command line: the model config with --set overrides and --kd
applied, and the optimisation flags a resume must keep (or change only with --force)."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

import yaml

from imkd_core.config import ConfigError, IMKDConfig, get_config
from imkd_core.rig import RIG_DIR, load_rig, rig_path

KD_TERMS = ("l1", "l2", "l3", "resp", "init")
# Flags that decide the optimisation: a resume keeps the run's values unless --force says otherwise.
RESUME_FIXED = ("epochs", "max_steps", "batch_size", "lr", "weight_decay", "warmup_steps", "schedule",
                "min_lr_ratio", "clip_grad", "seed", "amp", "amp_dtype", "train_scenes")


def parse_kd(spec: str | None) -> set[str] | None:
    """'l1,l2' -> {'l1', 'l2'}; 'none' -> set(); None -> None (config default)."""
    if spec is None:
        return None
    items = {s.strip().lower() for s in spec.split(",") if s.strip()}
    if items in ({"none"}, set()):
        return set()
    unknown = items - set(KD_TERMS)
    if unknown:
        raise ValueError(f"--kd: unknown terms {sorted(unknown)}; use a comma list of {KD_TERMS} or 'none'")
    return items


def build_config(args: argparse.Namespace) -> IMKDConfig:
    """The preset/YAML with --rig, --set overrides and --kd applied (what the checkpoint will record).

    --rig sets data.rig and takes the rig file's sweep counts unless --set gives them."""
    cfg = get_config(args.config)
    rig_name = getattr(args, "rig", None)
    if rig_name:
        rig = load_rig(rig_name)
        given = {item.partition("=")[0].strip() for item in args.overrides}
        d = cfg.to_dict()
        # a shipped rig by name; a rig file by absolute path, so the node finds it from any folder
        path = rig_path(rig_name)
        d["data"]["rig"] = rig_name if path.parent == RIG_DIR else str(path.resolve())
        for key in ("radar_sweeps", "lidar_sweeps"):
            if f"data.{key}" not in given:
                d["data"][key] = getattr(rig, key)
        cfg = IMKDConfig.from_dict(d)
    if args.overrides:
        d = cfg.to_dict()
        for item in args.overrides:
            key, sep, value = item.partition("=")
            if not sep:
                raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
            node = d
            parts = key.strip().split(".")
            for part in parts[:-1]:
                if not isinstance(node.get(part), dict):
                    raise ConfigError(f"--set {key}: {part!r} is not a config section")
                node = node[part]
            if parts[-1] not in node:
                raise ConfigError(f"--set {key}: unknown key {parts[-1]!r}")
            node[parts[-1]] = yaml.safe_load(value)
        cfg = IMKDConfig.from_dict(d)
    sizes = {c.input_size for c in load_rig(cfg.data.rig).cameras if c.input_size is not None}
    if sizes and sizes != {tuple(cfg.data.image_size)}:
        raise ConfigError(f"rig {cfg.data.rig!r} asks for model input {sizes.pop()} (H, W) but data.image_size is "
                          f"{tuple(cfg.data.image_size)}")
    kd = parse_kd(args.kd)
    if kd is not None:
        cfg = dataclasses.replace(cfg, distill=dataclasses.replace(cfg.distill, **{t: t in kd for t in KD_TERMS}))
    return cfg


def changed_flags(saved: dict[str, Any] | None, args: argparse.Namespace) -> dict[str, list[Any]]:
    """{flag: [run's value, this command's value]} of the RESUME_FIXED flags that differ."""
    if not saved:  # a checkpoint without recorded arguments: nothing to compare
        return {}
    now = plain_args(args)
    return {k: [saved[k], now[k]] for k in RESUME_FIXED if k in saved and saved[k] != now.get(k)}


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def plain_args(args: argparse.Namespace) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items()}
