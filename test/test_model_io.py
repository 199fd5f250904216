"""Checkpoints (atomic, weights_only, clear errors), Predictor round trip, ResNet weights."""

from __future__ import annotations

import logging
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from imkd_core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from imkd_core.config import ConfigError, tiny
from imkd_core.data.synthetic.frames import synthetic_frame
from imkd_core.frame import Detections
from imkd_core.models import Teacher
from imkd_core.models.resnet import ResNet
from imkd_core.predict import Predictor


def _payload(model: torch.nn.Module, kind: str = "student") -> dict:
    return {"kind": kind, "config": tiny().to_dict(), "model": model.state_dict(), "step": 3,
            "optimizer": {"lr": 1e-3, "betas": (0.9, 0.999)}}


def test_checkpoint_round_trip_and_atomicity(tmp_path) -> None:
    model = torch.nn.Linear(3, 2)
    path = save_checkpoint(tmp_path / "sub" / "a.pt", _payload(model))
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.pt"]  # no temp file left
    back = load_checkpoint(path)
    assert back["format"] == "imkd-v1" and back["kind"] == "student" and back["step"] == 3
    assert back["optimizer"]["betas"] == (0.9, 0.999)
    assert all(torch.equal(back["model"][k], v) for k, v in model.state_dict().items())


def test_checkpoint_errors_name_the_file(tmp_path) -> None:
    good = save_checkpoint(tmp_path / "good.pt", _payload(torch.nn.Linear(30, 20)))
    with pytest.raises(CheckpointError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")
    data = good.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated.pt"):
        load_checkpoint(truncated)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(CheckpointError, match="corrupt.pt"):
        load_checkpoint(corrupt)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty.pt"):
        load_checkpoint(empty)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="foreign.pt.*format"):
        load_checkpoint(foreign)
    pickled = tmp_path / "pickled.pt"
    torch.save({"format": "imkd-v1", "kind": "student", "config": {}, "model": {}, "x": Detections.empty()}, pickled)
    with pytest.raises(CheckpointError, match="pickled.pt.*weights_only"):
        load_checkpoint(pickled)


def test_checkpoint_rejects_bad_payloads(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="weights_only"):
        save_checkpoint(tmp_path / "x.pt", {**_payload(torch.nn.Linear(2, 2)), "extra": np.zeros(3)})
    with pytest.raises(CheckpointError, match="kind"):
        save_checkpoint(tmp_path / "x.pt", {**_payload(torch.nn.Linear(2, 2)), "kind": "other"})

    # subclasses of the plain types pickle as their own class, which weights_only loading rejects:
    # refused at save, naming the key path and the type
    class MyTensor(torch.Tensor):
        pass

    subclassed = {
        "['meta']['torch']": ({"meta": {"torch": torch.__version__}}, "TorchVersion (a subclass of str)"),
        "['meta']['nds'][1]": ({"meta": {"nds": [0.5, np.float64(0.25)]}}, "float64 (a subclass of float)"),
        "['meta']['n']": ({"meta": {"n": np.int64(3)}}, "int64"),
        "['extra']": ({"extra": torch.zeros(2).as_subclass(MyTensor)}, "MyTensor (a subclass of Tensor)"),
    }
    for where, (extra, type_desc) in subclassed.items():
        with pytest.raises(CheckpointError) as info:
            save_checkpoint(tmp_path / "x.pt", {**_payload(torch.nn.Linear(2, 2)), **extra})
        msg = str(info.value)
        assert f"payload{where}" in msg and type_desc in msg and "weights_only" in msg, msg
    with pytest.raises(CheckpointError, match=r"payload\['meta'\].*defaultdict"):
        from collections import defaultdict

        save_checkpoint(tmp_path / "x.pt", {**_payload(torch.nn.Linear(2, 2)), "meta": defaultdict(int)})
    assert not list(tmp_path.iterdir())
    # the exact types load: str(torch.__version__), Parameters, torch.Size, dtypes, OrderedDict
    ok = {**_payload(torch.nn.Linear(2, 2)), "meta": {"torch": str(torch.__version__), "nds": float(np.float64(0.5)),
                                                     "p": torch.nn.Parameter(torch.ones(2)), "size": torch.Size([2]),
                                                     "dtype": torch.float16}}
    back = load_checkpoint(save_checkpoint(tmp_path / "ok.pt", ok))["meta"]
    assert back["torch"] == torch.__version__ and back["size"] == torch.Size([2]) and back["dtype"] is torch.float16


def _flip_byte_in_tensor_data(src: Path, dst: Path) -> str:
    """Copy checkpoint src to dst with one bit flipped in the middle of its largest tensor's data
    record (the zip stays structurally valid); returns that record's name."""
    data = bytearray(src.read_bytes())
    with zipfile.ZipFile(src) as zf:
        info = max((i for i in zf.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    assert info.compress_type == zipfile.ZIP_STORED
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26:info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len  # after the local file header
    data[start + info.file_size // 2] ^= 0x10
    dst.write_bytes(bytes(data))
    return info.filename


def test_flipped_byte_in_tensor_data_is_refused(tmp_path) -> None:
    """torch.load does not check the zip CRCs: one flipped bit inside tensor data loads silently as
    a wrong weight. load_checkpoint (and so the Predictor and the node) verifies them first."""
    torch.manual_seed(0)
    good = save_checkpoint(tmp_path / "good.pt", {"kind": "student", "config": tiny().to_dict(),
                                                  "model": torch.nn.Linear(64, 32).state_dict()})
    bad = tmp_path / "flipped.pt"
    record = _flip_byte_in_tensor_data(good, bad)
    silently = torch.load(bad, weights_only=True)  # what load_checkpoint would return without the check
    assert not torch.equal(silently["model"]["weight"], load_checkpoint(good)["model"]["weight"])
    with pytest.raises(CheckpointError, match=r"flipped\.pt is corrupt.*CRC") as info:
        load_checkpoint(bad)
    assert record in str(info.value)
    with pytest.raises(CheckpointError, match=r"flipped\.pt is corrupt.*CRC"):
        Predictor(checkpoint=bad, device="cpu")


def test_predictor_round_trip(tmp_path) -> None:
    torch.manual_seed(0)
    cfg = tiny()
    cfg.model.score_threshold = 0.12
    p1 = Predictor(cfg, device="cpu")
    frame, _ = synthetic_frame(seed=5, with_lidar=False)
    d1 = p1(frame)
    assert isinstance(d1, Detections) and d1.stamp == frame.stamp and d1.token == frame.token
    assert bool((d1.scores > 0.12).all()) and d1.boxes.shape[1] == 9
    assert {"preprocess", "backbone", "depth", "bev_pool", "radar", "fusion", "bev_encoder", "head", "decode",
            "total"} <= set(p1.last_timing)
    d1b = p1.predict(frame)  # deterministic, and the second call hits the calibration cache
    assert np.array_equal(d1.boxes, d1b.boxes) and np.array_equal(d1.scores, d1b.scores)
    assert p1.cache.hits >= 1
    path = save_checkpoint(tmp_path / "student.pt", {"kind": "student", "config": cfg.to_dict(),
                                                     "model": p1.model.state_dict()})
    p2 = Predictor(checkpoint=path, device="cpu")          # config taken from the checkpoint
    assert p2.config == cfg
    d2 = p2(frame)
    assert np.array_equal(d1.boxes, d2.boxes) and np.array_equal(d1.scores, d2.scores)
    assert np.array_equal(d1.labels, d2.labels)


def test_predictor_refuses_wrong_inputs(tmp_path) -> None:
    with pytest.raises(ConfigError, match="config or a checkpoint"):
        Predictor()
    path = save_checkpoint(tmp_path / "teacher.pt", _payload(Teacher(tiny()), kind="teacher"))
    with pytest.raises(CheckpointError, match="student"):
        Predictor(checkpoint=path, device="cpu")
    with pytest.raises(CheckpointError, match="nope.pt"):
        Predictor(checkpoint=tmp_path / "nope.pt")


@pytest.mark.parametrize("depth,n_params", [(18, 11_689_512), (50, 25_557_032)])
def test_resnet_matches_torchvision_layout(depth: int, n_params: int) -> None:
    """Same parameter count and key names as torchvision's resnetXX (with fc)."""
    net = ResNet(depth, out_levels=(1, 2, 3, 4), with_fc=True)
    assert sum(p.numel() for p in net.parameters()) == n_params
    keys = set(net.state_dict())
    assert {"conv1.weight", "bn1.running_var", "layer1.0.conv1.weight", "layer2.0.downsample.0.weight",
            "layer2.0.downsample.1.num_batches_tracked", "layer4.1.bn2.bias", "fc.weight", "fc.bias"} <= keys
    if depth == 50:
        assert {"layer1.0.conv3.weight", "layer1.0.downsample.0.weight", "layer3.5.bn3.weight"} <= keys


def test_resnet_pretrained_loading_report(tmp_path, caplog) -> None:
    torch.manual_seed(0)
    src = ResNet(18, out_levels=(1, 2, 3, 4), with_fc=True).state_dict()  # a "torchvision" file
    src = {k: v for k, v in src.items() if k != "layer1.0.bn1.weight"}   # one key absent from the file
    src["extra.head.weight"] = torch.zeros(3)
    path = tmp_path / "resnet18-imagenet.pth"
    torch.save(src, path)
    net = ResNet(18, out_levels=(2, 3, 4))
    with caplog.at_level(logging.INFO, logger="imkd_core.models.resnet"):
        report = net.load_pretrained(path)
    assert report["missing"] == ["layer1.0.bn1.weight"]
    assert report["unexpected"] == ["extra.head.weight", "fc.bias", "fc.weight"]
    assert report["mismatched"] == []
    assert torch.equal(net.state_dict()["layer3.1.conv2.weight"], src["layer3.1.conv2.weight"])
    assert "missing 1, unexpected 3" in caplog.text
    # a reduced-width model cannot take the ImageNet tensors: reported, not crashed
    narrow = ResNet(18, width=0.25, out_levels=(2, 3, 4)).load_pretrained(path)
    assert "conv1.weight" in narrow["mismatched"]
    with pytest.raises(FileNotFoundError, match="absent.pth"):
        net.load_pretrained(tmp_path / "absent.pth")
