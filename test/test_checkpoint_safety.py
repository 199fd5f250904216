"""Checkpoint safety: a save that fails midway (an exception, or the process dying mid-write) leaves
the previous last.pt intact and loadable; a corrupt, truncated or empty checkpoint gives a clear
CheckpointError naming the file; train.py --resume on such a file stops with that message."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from imkd_core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from test.train_support import REPO, VERSION, micro_config, micro_config_yaml, synthetic_dataroot, train_env


def _payload(step: int) -> dict:
    """A training-style payload (model, optimizer, scheduler, RNG state) of the micro teacher."""
    from imkd_core.models.detector import Teacher
    from train.distributed import rng_state
    from train.loop import lr_factor

    cfg = micro_config()
    torch.manual_seed(step)
    model = Teacher(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, 10, 2))
    return {"kind": "teacher", "config": cfg.to_dict(), "model": model.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(), "step": step, "rng": [rng_state()]}


def _same_model(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_failed_save_keeps_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    last = tmp_path / "last.pt"
    good = _payload(1)
    save_checkpoint(last, good)
    before = last.read_bytes()

    real_save = torch.save

    def crashing_save(obj, f, *args, **kwargs):  # writes part of the file, then the disk "fills up"
        import io

        buf = io.BytesIO()
        real_save(obj, buf, *args, **kwargs)
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", crashing_save)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(last, _payload(2))
    monkeypatch.undo()

    assert last.read_bytes() == before
    loaded = load_checkpoint(last)
    assert loaded["step"] == 1 and _same_model(loaded["model"], good["model"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # the partial temp file was removed


def test_process_killed_mid_save_keeps_previous_checkpoint(tmp_path: Path) -> None:
    """A real crash: a child process writes last.pt (step 1), then dies (os._exit) halfway through
    writing step 2. last.pt still holds step 1; only a hidden *.partial temp file is left over."""
    script = textwrap.dedent(f"""
        import io, os, torch
        from imkd_core.checkpoint import save_checkpoint
        from test.test_checkpoint_safety import _payload
        save_checkpoint({str(tmp_path / 'last.pt')!r}, _payload(1))
        real_save = torch.save
        def dying_save(obj, f, *a, **k):
            buf = io.BytesIO(); real_save(obj, buf, *a, **k)
            f.write(buf.getvalue()[: len(buf.getvalue()) // 2]); f.flush()
            os._exit(9)  # no cleanup, no exception handlers: like SIGKILL or a power cut
        torch.save = dying_save
        save_checkpoint({str(tmp_path / 'last.pt')!r}, _payload(2))
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=train_env(), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 9, proc.stderr
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 1
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "last.pt"]
    assert len(leftovers) == 1 and leftovers[0].startswith(".last.pt.") and leftovers[0].endswith(".partial")


@pytest.mark.parametrize("damage", ["truncated", "corrupt", "empty"])
def test_damaged_checkpoint_gives_clear_error(tmp_path: Path, damage: str) -> None:
    good = tmp_path / "last.pt"
    save_checkpoint(good, _payload(1))
    bad = tmp_path / "bad.pt"
    data = good.read_bytes()
    if damage == "truncated":
        bad.write_bytes(data[: len(data) * 2 // 3])
    elif damage == "corrupt":
        mid = len(data) // 2
        bad.write_bytes(data[:mid] + bytes(b ^ 0xFF for b in data[mid:mid + 4096]) + data[mid + 4096:])
    else:
        bad.write_bytes(b"")
    # load_checkpoint (also train.py's resume, teacher and slim loader) verifies the zip CRCs: torch.load
    # does not, so a bit flip inside tensor data would otherwise load silently
    with pytest.raises(CheckpointError, match="bad.pt") as info:
        load_checkpoint(bad)
    msg = str(info.value)
    assert "corrupt" in msg or "truncated" in msg, msg
    assert load_checkpoint(good)["step"] == 1  # the good one is untouched


def test_not_a_checkpoint_and_missing(tmp_path: Path) -> None:
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not an IMKD checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")


def test_resume_from_truncated_checkpoint_fails_clearly(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory,
                                                        capsys: pytest.CaptureFixture) -> None:
    from train.train import main as train_main

    run = tmp_path / "run"
    run.mkdir()
    save_checkpoint(run / "last.pt", _payload(1))
    data = (run / "last.pt").read_bytes()
    (run / "last.pt").write_bytes(data[: len(data) // 2])
    args = ["--model", "teacher", "--config", str(micro_config_yaml(tmp_path_factory)),
            "--dataroot", str(synthetic_dataroot(tmp_path_factory)), "--version", VERSION,
            "--train-scenes", "synth-train-*", "--max-steps", "2", "--batch-size", "2", "--num-workers", "0",
            "--no-progress", "--out", str(run), "--resume"]
    threads = torch.get_num_threads()
    try:
        with pytest.raises(SystemExit) as info:
            train_main(args)
        assert info.value.code == 2
        assert re.search(r"^train\.py: error: checkpoint \S+last\.pt is corrupt, truncated", capsys.readouterr().err)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(False)
