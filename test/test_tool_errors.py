"""Bad input to the tools (train.py, evaluate.py, export.py, train.py --slim, imkd-nuscenes-to-bag):
each case ends in exactly one line on stderr, `<prog>: error: ...` with the words that say what
and where, exit status 2, no traceback, and the files that were there untouched. Also: NaN/Inf
checkpoints refused at load, a resume that would silently restart or change the optimisation
refused, and dataset paths and scene names confined to the dataroot and --out.

The tools run in-process (main(argv)), so a test takes milliseconds to a few seconds; one
parametrised group runs each tool as its own process to see what a user sees."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

from imkd_core.checkpoint import CheckpointError, check_finite, load_checkpoint, load_weights, save_checkpoint
from imkd_core.errors import UserError, cli_main, one_line, writable_dir
from test.train_support import REPO, VERSION, micro_config, micro_config_yaml, read_jsonl, run_train, synthetic_dataroot

SCENES = ("synth-train-0000", "synth-val-0001")


# ============================================================================ fixtures and helpers
@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic_dataroot(tmp_path_factory)


@pytest.fixture(scope="module")
def micro_yaml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return micro_config_yaml(tmp_path_factory)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A good micro student and teacher, and damaged checkpoints of every kind."""
    from imkd_core.models.detector import Student, Teacher

    root = tmp_path_factory.mktemp("ckpts")
    cfg = micro_config()
    torch.manual_seed(0)
    state = Student(cfg, load_pretrained=False).state_dict()
    paths = {"student": save_checkpoint(root / "student.pt", {"kind": "student", "config": cfg.to_dict(),
                                                               "model": state}),
             "teacher": save_checkpoint(root / "teacher.pt", {"kind": "teacher", "config": cfg.to_dict(),
                                                               "model": Teacher(cfg).state_dict()})}
    nan = {k: v.clone(memory_format=torch.contiguous_format) for k, v in state.items()}
    nan["backbone.conv1.weight"].view(-1)[:3] = float("nan")
    paths["nan"] = save_checkpoint(root / "nan.pt", {"kind": "student", "config": cfg.to_dict(), "model": nan})
    paths["inf_optimizer"] = save_checkpoint(root / "inf_optimizer.pt", {
        "kind": "student", "config": cfg.to_dict(), "model": state,
        "optimizer": {"state": {0: {"exp_avg": torch.tensor([0.0, float("inf")])}}}})
    (root / "junk.pt").write_bytes(b"not a checkpoint at all")
    paths["junk"] = root / "junk.pt"
    raw = paths["student"].read_bytes()
    (root / "truncated.pt").write_bytes(raw[: len(raw) // 2])
    paths["truncated"] = root / "truncated.pt"
    (root / "folder.pt").mkdir()
    paths["folder"] = root / "folder.pt"
    paths["missing"] = root / "missing.pt"
    return paths


@pytest.fixture(scope="module")
def base_run(tmp_path_factory: pytest.TempPathFactory, data: Path, micro_yaml: Path) -> tuple[Path, list[str]]:
    """A finished 2-step micro teacher run (last.pt, log.jsonl, summary.json) and its arguments."""
    args = ["--model", "teacher", "--config", str(micro_yaml), "--dataroot", str(data), "--version", VERSION,
            "--train-scenes", "synth-train-*", "--max-steps", "2", "--batch-size", "2", "--num-workers", "0",
            "--threads", "1", "--no-progress"]
    out = tmp_path_factory.mktemp("base") / "run"
    run_train([*args, "--out", str(out)])
    return out, args


@pytest.fixture
def torch_state() -> Any:
    """train.main in-process sets threads and deterministic algorithms: restore them."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(False)


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def user_error(capsys: pytest.CaptureFixture, main: Callable, argv: Sequence[Any], prog: str, *words: str,
               strict: bool = True) -> str:
    """Run main(argv): exit status 2 and one `<prog>: error:` line holding `words`, no traceback.
    strict: stderr is exactly that line (else: it is the last line; progress output may precede it)."""
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert info.value.code == 2, err
    assert "Traceback" not in err, err
    assert lines and lines[-1].startswith(f"{prog}: error: "), err
    if strict:
        assert len(lines) == 1, err
    assert sum(ln.startswith(f"{prog}: error:") for ln in lines) == 1, err
    for w in words:
        assert w in lines[-1], (w, lines[-1])
    return lines[-1]


def _train_main(argv: list[str]) -> Any:
    from train.train import main
    return main(argv)


def _evaluate_main(argv: list[str]) -> Any:
    from train.evaluate import main
    return main(argv)


def _export_main(argv: list[str]) -> Any:
    from train.export import main
    return main(argv)


def _convert_main(argv: list[str]) -> Any:
    from imkd_ros.nuscenes_to_bag import main
    return main(argv)


def broken_root(tmp: Path, data: Path, edit: Callable[[Path], None]) -> Path:
    """A dataroot whose tables are copies of `data`'s, changed by edit(table folder); files linked."""
    root = tmp / "root"
    root.mkdir()
    for item in data.iterdir():
        if item.name != VERSION:
            os.symlink(item, root / item.name)
    (root / VERSION).mkdir()
    for table in (data / VERSION).iterdir():
        shutil.copy(table, root / VERSION / table.name)
    edit(root / VERSION)
    return root


def _edit_table(folder: Path, name: str, change: Callable[[list[dict]], None]) -> None:
    rows = json.loads((folder / f"{name}.json").read_text())
    change(rows)
    (folder / f"{name}.json").write_text(json.dumps(rows))


def _first_keyframe(rows: list[dict], channel: str) -> dict:
    return next(r for r in rows if r["is_key_frame"] and r["filename"].startswith(f"samples/{channel}/"))


# ============================================================================ the shared mechanism
def test_cli_main_one_line_exit_2(capsys: pytest.CaptureFixture) -> None:
    @cli_main(prog="tool")
    def user(_argv: Any) -> None:
        raise UserError("first line\n  second line\n")

    @cli_main(prog="tool")
    def os_error(_argv: Any) -> None:
        open("/nonexistent-dir/x")  # noqa: SIM115

    @cli_main(prog="tool")
    def bug(_argv: Any) -> None:
        raise KeyError("a bug keeps its traceback")

    @cli_main(also=(KeyError,), prog="tool")
    def declared(_argv: Any) -> None:
        raise KeyError("declared")

    user_error(capsys, user, [], "tool", "first line; second line")
    user_error(capsys, os_error, [], "tool", "/nonexistent-dir/x: No such file or directory")
    with pytest.raises(KeyError):
        bug(None)
    user_error(capsys, declared, [], "tool", "declared")
    # a DataLoader worker re-raises as "Caught X in DataLoader worker ... Original Traceback ...": keep the cause
    wrapped = UserError("Caught NuScenesDataError in DataLoader worker process 0.\nOriginal Traceback (most recent "
                        "call last):\n  File \"x.py\", line 1, in f\nimkd_core.data.nuscenes.NuScenesDataError: "
                        "radar file a.pcd is truncated")
    assert one_line(wrapped) == "radar file a.pcd is truncated"


@pytest.mark.parametrize("kind", ["under_a_file", "is_a_file"])
def test_writable_dir(tmp_path: Path, kind: str) -> None:
    (tmp_path / "f").write_text("x")
    target = tmp_path / "f" / "out" if kind == "under_a_file" else tmp_path / "f"
    with pytest.raises(UserError, match=f"--out {target} is not a writable folder"):
        writable_dir(target)
    assert writable_dir(tmp_path / "new" / "out").is_dir()


@pytest.mark.parametrize("spec, words", [("tpu", "unknown device"), ("cuda:x", "unknown device"),
                                         ("cuda:7", "CUDA"), ("cpu", None), ("auto", None)])
def test_resolve_device(spec: str, words: str | None) -> None:
    from imkd_core.device import DeviceError, resolve_device

    if words is None:
        assert resolve_device(spec).type in ("cpu", "cuda")
    else:
        with pytest.raises(DeviceError, match=words):
            resolve_device(spec)


# ============================================================================ checkpoints
@pytest.mark.parametrize("name, where, what", [
    ("nan", "model['backbone.conv1.weight']", "3 NaN and 0 Inf"),
    ("inf_optimizer", "optimizer['state'][0]['exp_avg']", "0 NaN and 1 Inf")])
def test_nonfinite_checkpoint_refused_at_load(ckpts: dict[str, Path], name: str, where: str, what: str) -> None:
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(ckpts[name])
    assert str(info.value).startswith(f"{ckpts[name]}: tensor {where} ") and what in str(info.value)
    assert load_checkpoint(ckpts["student"])["kind"] == "student"
    check_finite({"model": {"w": torch.ones(2)}, "step": 1}, "ok")  # finite: no error


def test_load_weights_one_line_summary() -> None:
    lin = torch.nn.Linear(2, 3)
    with pytest.raises(CheckpointError) as info:
        load_weights(lin, {"weight": torch.zeros(4, 2), "extra": torch.zeros(1)}, "x.pt", "tiny")
    assert str(info.value) == ("x.pt: weights do not fit the model of config 'tiny': 1 missing (e.g. bias), "
                               "1 unexpected (e.g. extra), 1 of another shape (e.g. weight: [4, 2] in the file, "
                               "[3, 2] in the model)")


BAD_CKPT = {"missing": ["not found"], "folder": ["is a folder"], "junk": ["corrupt, truncated or not a torch archive"],
            "truncated": ["corrupt, truncated or not a torch archive"],
            "nan": ["model['backbone.conv1.weight']", "NaN", "refusing non-finite"],
            "inf_optimizer": ["optimizer[", "Inf"], "teacher": ["student checkpoint", "'teacher'"]}


# (--slim copies any kind, teachers too, and builds no model: no 'teacher' or 'mismatch' case for it)
@pytest.mark.parametrize("tool, damage", [(t, d) for t in ("evaluate", "export", "slim")
                                          for d in (*BAD_CKPT, "mismatch")
                                          if t != "slim" or d not in ("teacher", "mismatch")])
def test_bad_checkpoint_is_one_line(tool: str, damage: str, ckpts: dict[str, Path], data: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture) -> None:
    ckpt = ckpts["student" if damage == "mismatch" else damage]
    words = ["do not fit", "'tiny'"] if damage == "mismatch" else BAD_CKPT[damage]
    extra = ["--config", "tiny"] if damage == "mismatch" else []
    out = tmp_path / "out"
    if tool == "evaluate":
        user_error(capsys, _evaluate_main, ["--dataroot", data, "--version", VERSION, "--checkpoint", ckpt, *extra,
                                            "--quiet", "--out", out], "evaluate.py", str(ckpt), *words)
    elif tool == "export":
        user_error(capsys, _export_main, ["--checkpoint", ckpt, *extra, "--out", out, "--no-onnx"], "export.py",
                   str(ckpt), *words)
    else:
        user_error(capsys, _train_main, ["--slim", ckpt, out / "slim.pt"], "train.py", str(ckpt), *words)
    assert not out.exists() or not any(out.iterdir())  # nothing written


@pytest.mark.parametrize("tool", ["train", "evaluate", "export"])
def test_unknown_config_lists_the_presets(tool: str, data: Path, ckpts: dict[str, Path], tmp_path: Path,
                                          capsys: pytest.CaptureFixture, torch_state: Any) -> None:
    words = ("unknown config 'nope'", "paper_r50_256x704", "tiny")
    if tool == "train":
        user_error(capsys, _train_main, ["--model", "teacher", "--config", "nope", "--dataroot", data, "--version",
                                         VERSION, "--train-scenes", "all", "--out", tmp_path / "run"],
                   "train.py", *words)
    elif tool == "evaluate":
        user_error(capsys, _evaluate_main, ["--dataroot", data, "--version", VERSION, "--checkpoint",
                                            ckpts["student"], "--config", "nope", "--out", tmp_path / "ev"],
                   "evaluate.py", *words)
    else:
        user_error(capsys, _export_main, ["--config", "nope", "--out", tmp_path / "ex"], "export.py", *words)


@pytest.mark.parametrize("tool", ["train", "evaluate", "export", "convert", "slim"])
def test_unwritable_out_is_one_line(tool: str, data: Path, ckpts: dict[str, Path], micro_yaml: Path,
                                    tmp_path: Path, capsys: pytest.CaptureFixture, torch_state: Any) -> None:
    (tmp_path / "a_file").write_text("x")
    out = tmp_path / "a_file" / "out"
    words = (f"--out {out} is not a writable folder", "Not a directory")
    if tool == "train":
        user_error(capsys, _train_main, ["--model", "teacher", "--config", micro_yaml, "--dataroot", data,
                                         "--version", VERSION, "--train-scenes", "all", "--out", out],
                   "train.py", *words)
    elif tool == "evaluate":
        user_error(capsys, _evaluate_main, ["--dataroot", data, "--version", VERSION, "--gt-as-predictions",
                                            "--out", out], "evaluate.py", *words)
    elif tool == "export":
        user_error(capsys, _export_main, ["--checkpoint", ckpts["student"], "--out", out], "export.py", *words)
    elif tool == "convert":
        user_error(capsys, _convert_main, ["--dataroot", data, "--version", VERSION, "--out", out, "--no-progress"],
                   "imkd-nuscenes-to-bag", *words)
    else:
        user_error(capsys, _train_main, ["--slim", ckpts["student"], out / "slim.pt"], "train.py",
                   f"{out}: Not a directory")
    assert (tmp_path / "a_file").read_text() == "x"


@pytest.mark.parametrize("tool, device, words", [
    ("train", "tpu", "unknown device"), ("evaluate", "tpu", "unknown device"), ("train", "cuda:7", "CUDA")])
def test_unavailable_device_is_one_line(tool: str, device: str, words: str, data: Path, micro_yaml: Path,
                                        tmp_path: Path, capsys: pytest.CaptureFixture, torch_state: Any) -> None:
    out = tmp_path / "run"
    if tool == "train":
        user_error(capsys, _train_main, ["--model", "teacher", "--config", micro_yaml, "--dataroot", data,
                                         "--version", VERSION, "--train-scenes", "all", "--device", device,
                                         "--out", out], "train.py", f"--device {device}", words)
    else:
        user_error(capsys, _evaluate_main, ["--dataroot", data, "--version", VERSION, "--gt-as-predictions",
                                            "--device", device, "--out", out], "evaluate.py", f"--device {device}",
                   words)
    assert not out.exists()  # refused before anything was written


# ============================================================================ train.py: runs it must not overwrite
RUN_DIR_CASES = {
    # name: (files removed from a finished run, extra flags, words)
    "resume_without_last": (["last.pt"], ["--resume"], ["--resume:", "last.pt does not exist", "--resume auto"]),
    "resume_into_empty": (None, ["--resume"], ["last.pt does not exist"]),
    "fresh_over_earlier_log": (["last.pt"], [], ["earlier run", "log.jsonl", "summary.json", "--force"]),
    "fresh_over_last": ([], [], ["last.pt exists", "--resume", "--force"]),
    "auto_over_earlier_log": (["last.pt"], ["--resume", "auto"], ["earlier run", "log.jsonl", "--force"]),
}


@pytest.mark.slow  # trains or starts a tool process
@pytest.mark.parametrize("case", RUN_DIR_CASES)
def test_run_dir_never_silently_replaced(case: str, base_run: tuple[Path, list[str]], tmp_path: Path,
                                         capsys: pytest.CaptureFixture, torch_state: Any) -> None:
    removed, flags, words = RUN_DIR_CASES[case]
    src, args = base_run
    out = tmp_path / "run"
    if removed is None:
        out.mkdir()
    else:
        shutil.copytree(src, out)
        for name in removed:
            (out / name).unlink()
    before = _digest(out)
    user_error(capsys, _train_main, [*args, "--out", out, *flags], "train.py", *words)
    assert _digest(out) == before


@pytest.mark.slow  # trains or starts a tool process
def test_resume_auto_and_forced_fresh_start(base_run: tuple[Path, list[str]], tmp_path: Path) -> None:
    src, args = base_run
    summary = run_train([*args, "--out", tmp_path / "auto", "--resume", "auto"])  # nothing to continue: fresh
    assert summary["steps"] == 2 and summary["completed"]
    out = tmp_path / "forced"
    shutil.copytree(src, out)
    (out / "last.pt").unlink()
    (out / "log.jsonl").write_text(json.dumps({"type": "train", "step": 99}) + "\n")  # the earlier run's
    proc = subprocess.run([sys.executable, "-m", "train.train", *args, "--out", str(out), "--force"],
                          cwd=REPO, capture_output=True, text=True, timeout=240,
                          env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"--force: starting afresh in {out}; removed the earlier run's log.jsonl, summary.json" in proc.stderr
    assert [r["step"] for r in read_jsonl(out / "log.jsonl") if r["type"] == "train"] == [1, 2]


CHANGED = {"--lr": ("1e-4", 0.0001, 0.002), "--batch-size": ("1", 1, 2), "--seed": ("5", 5, 0),
           "--max-steps": ("3", 3, 2), "--weight-decay": ("0.5", 0.5, 0.01), "--schedule": ("constant",
                                                                                             "constant", "cosine"),
           "--train-scenes": ("synth-*", ["synth-*"], ["synth-train-*"])}


@pytest.mark.slow  # trains or starts a tool process
@pytest.mark.parametrize("flag", CHANGED)
def test_resume_refuses_changed_optimisation_flags(flag: str, base_run: tuple[Path, list[str]], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture, torch_state: Any) -> None:
    src, args = base_run
    value, new, old = CHANGED[flag]
    out = tmp_path / "run"
    shutil.copytree(src, out)
    before = _digest(out)
    argv = list(args)
    if flag in argv:
        argv[argv.index(flag) + 1] = value
    else:
        argv += [flag, value]
    user_error(capsys, _train_main, [*argv, "--out", out, "--resume"], "train.py",
               f"this command changes {flag} {new!r} (the run has {old!r})", "--force", strict=False)
    assert _digest(out) == before


@pytest.mark.slow  # trains or starts a tool process
def test_resume_force_applies_and_records(base_run: tuple[Path, list[str]], tmp_path: Path) -> None:
    from train.loop import lr_factor

    src, args = base_run
    out = tmp_path / "run"
    shutil.copytree(src, out)
    argv = list(args)
    argv[argv.index("--max-steps") + 1] = "3"
    summary = run_train([*argv, "--lr", "1e-4", "--out", out, "--resume", "--force"])
    assert summary["steps"] == 3
    recs = read_jsonl(out / "log.jsonl")
    assert [r for r in recs if r["type"] == "resume"] == [
        {"type": "resume", "step": 2, "epoch": 1,
         "forced": {"max_steps": [2, 3], "lr": [0.002, 0.0001], "total_steps": [2, 3]}}]
    lrs = {r["step"]: r["lr"] for r in recs if r["type"] == "train"}
    assert lrs[1] == pytest.approx(0.002 * lr_factor(0, 2, 1)) and lrs[3] == pytest.approx(1e-4 * lr_factor(2, 3, 1))


# ============================================================================ datasets
def _truncate_scene(folder: Path) -> None:
    text = (folder / "scene.json").read_text()
    (folder / "scene.json").write_text(text[: len(text) // 2])


@pytest.mark.parametrize("tool", ["evaluate", "convert"])
def test_truncated_table_named(tool: str, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = broken_root(tmp_path, data, _truncate_scene)
    words = (f"nuScenes table {root / VERSION / 'scene.json'} is not valid JSON",)
    if tool == "evaluate":
        user_error(capsys, _evaluate_main, ["--dataroot", root, "--version", VERSION, "--gt-as-predictions",
                                            "--out", tmp_path / "ev"], "evaluate.py", *words)
    else:
        user_error(capsys, _convert_main, ["--dataroot", root, "--version", VERSION, "--out", tmp_path / "bags",
                                           "--no-progress"], "imkd-nuscenes-to-bag", *words)


@pytest.mark.parametrize("name", ["/etc/hostname", "../outside.jpg", "samples/../../outside.jpg", "", None, "a\0b"])
def test_sample_data_path_refuses_unsafe_names(name: str | None) -> None:
    from imkd_core.data.nuscenes import NuScenesDataError, sample_data_path

    rec = {"token": "tok1"} if name is None else {"token": "tok1", "filename": name}
    with pytest.raises(NuScenesDataError, match=r"v1\.0-x/sample_data\.json: record 'tok1' has "):
        sample_data_path("/data", rec, "v1.0-x")
    assert sample_data_path("/data", {"filename": "samples/CAM_FRONT/a.jpg"}) == "/data/samples/CAM_FRONT/a.jpg"


def test_record_without_filename_is_named(data: Path, ckpts: dict[str, Path], tmp_path: Path,
                                          capsys: pytest.CaptureFixture) -> None:
    token = {}

    def drop(folder: Path) -> None:
        def change(rows: list[dict]) -> None:
            rec = _first_keyframe(rows, "CAM_FRONT")
            token["t"] = rec["token"]
            del rec["filename"]
        _edit_table(folder, "sample_data", change)

    root = broken_root(tmp_path, data, drop)
    user_error(capsys, _evaluate_main, ["--dataroot", root, "--version", VERSION, "--checkpoint", ckpts["student"],
                                        "--quiet", "--out", tmp_path / "ev"], "evaluate.py",
               f"{VERSION}/sample_data.json: record '{token['t']}' has no 'filename'", strict=False)


def _outside_name(root: Path, kind: str) -> str:
    outside = root.parent / "outside.pcd"
    return str(outside) if kind == "absolute" else "../outside.pcd"


@pytest.mark.parametrize("kind", ["absolute", "dotdot", "no_filename"])
def test_converter_skips_and_counts_unsafe_records(kind: str, data: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    """The record is refused (named, counted in the summary and ConversionStats.refused), the rest
    of the scene and the other scenes convert, exit 0; the file outside the dataroot is never read."""
    from imkd_ros import nuscenes_to_bag as n2b

    secret = b"outside the dataroot"
    (tmp_path / "outside.pcd").write_bytes(secret)
    hit = {}

    def edit(folder: Path) -> None:
        def change(rows: list[dict]) -> None:
            rec = _first_keyframe(rows, "RADAR_FRONT")
            hit["token"] = rec["token"]
            if kind == "no_filename":
                del rec["filename"]
            else:
                rec["filename"] = _outside_name(folder.parent, kind)
        _edit_table(folder, "sample_data", change)

    root = broken_root(tmp_path, data, edit)
    out = tmp_path / "bags"
    rc = n2b.main(["--dataroot", str(root), "--version", VERSION, "--out", str(out), "--no-progress",
                   "--no-lidar", "--no-fsync"])
    std = capsys.readouterr()
    assert rc == 0, std.err
    assert "Traceback" not in std.err and f"record '{hit['token']}'" in std.err
    assert "sample_data records skipped, no usable filename (1):" in std.out
    assert sorted(p.name for p in out.iterdir()) == sorted(SCENES)
    for bag in out.iterdir():
        assert all(secret not in f.read_bytes() for f in bag.rglob("*") if f.is_file())
    # counted per scene; the radar channel lost exactly that message
    nusc = n2b.load_nuscenes(root, VERSION)
    stats = n2b.convert_scene(nusc, SCENES[0], tmp_path / "api", n2b.ConvertOptions(lidar=False, progress=False,
                                                                                      fsync=False))
    ref = n2b.convert_scene(n2b.load_nuscenes(data, VERSION), SCENES[0], tmp_path / "ref",
                            n2b.ConvertOptions(lidar=False, progress=False, fsync=False))
    from imkd_ros.topics import points_topic

    topic = points_topic("RADAR_FRONT")
    assert len(stats.refused) == 1 and hit["token"] in stats.refused[0]
    assert stats.messages[topic] == ref.messages[topic] - 1
    # --on-corrupt stop: the run ends (exit 2) naming the record
    rc = n2b.main(["--dataroot", str(root), "--version", VERSION, "--out", str(tmp_path / "stop"), "--no-progress",
                   "--no-lidar", "--no-fsync", "--on-corrupt", "stop", "--scenes", SCENES[0]])
    assert rc == 2 and f"record '{hit['token']}'" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["../escaped", "a/b", "..", ".", "", "x\0y"])
def test_bag_dir_refuses_unsafe_scene_names(name: str, tmp_path: Path) -> None:
    from imkd_ros.nuscenes_to_bag import UnsafeSceneNameError, bag_dir

    with pytest.raises(UnsafeSceneNameError, match="not a plain folder name"):
        bag_dir(tmp_path, name)
    assert bag_dir(tmp_path, "scene-0001") == tmp_path / "scene-0001"


def test_converter_scene_name_stays_inside_out(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from imkd_ros import nuscenes_to_bag as n2b

    def edit(folder: Path) -> None:
        _edit_table(folder, "scene", lambda rows: rows[0].update(name="../escaped"))

    root = broken_root(tmp_path, data, edit)
    box = tmp_path / "box"
    out = box / "out"
    rc = n2b.main(["--dataroot", str(root), "--version", VERSION, "--out", str(out), "--no-progress", "--no-lidar",
                   "--no-fsync"])
    std = capsys.readouterr()
    assert rc == 1  # one scene failed, the other converted
    assert "../escaped failed: UnsafeSceneNameError: scene name '../escaped' in scene.json" in std.err
    assert "Traceback" not in std.err
    assert sorted(p.name for p in box.iterdir()) == ["out"] and sorted(p.name for p in out.iterdir()) == [SCENES[1]]


@pytest.mark.slow  # trains or starts a tool process
# ============================================================================ what a user sees
@pytest.mark.parametrize("case", ["train_device", "slim_missing", "evaluate_junk", "export_nan", "convert_out"])
def test_tool_process_prints_one_line(case: str, data: Path, ckpts: dict[str, Path], micro_yaml: Path,
                                      tmp_path: Path) -> None:
    (tmp_path / "a_file").write_text("x")
    cmd, prog, words = {
        "train_device": (["-m", "train.train", "--model", "teacher", "--config", micro_yaml, "--dataroot", data,
                          "--version", VERSION, "--train-scenes", "all", "--device", "tpu", "--out", tmp_path / "r"],
                         "train.py", "--device tpu: unknown device"),
        "slim_missing": (["-m", "train.train", "--slim", ckpts["missing"], tmp_path / "s.pt"], "train.py",
                         f"checkpoint not found: {ckpts['missing']}"),
        "evaluate_junk": (["-m", "train.evaluate", "--dataroot", data, "--version", VERSION, "--checkpoint",
                           ckpts["junk"], "--out", tmp_path / "e"], "evaluate.py", f"checkpoint {ckpts['junk']} is"),
        "export_nan": (["-m", "train.export", "--checkpoint", ckpts["nan"], "--out", tmp_path / "x"], "export.py",
                       "holds 3 NaN"),
        "convert_out": (["-m", "imkd_ros.nuscenes_to_bag", "--dataroot", data, "--version", VERSION, "--out",
                         tmp_path / "a_file" / "o"], "imkd-nuscenes-to-bag", "is not a writable folder"),
    }[case]
    proc = subprocess.run([sys.executable, *map(str, cmd)], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"{prog}: error: ") and words in lines[0], lines[0]
