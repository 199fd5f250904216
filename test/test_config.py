"""Model configs: presets, validation messages, dict/YAML round trips."""

from __future__ import annotations

import pytest

from imkd_core.config import (
    ConfigError,
    DataConfig,
    DistillConfig,
    GridConfig,
    IMKDConfig,
    ModelConfig,
    get_config,
    paper_r50_256x704,
    tiny,
)


def test_presets() -> None:
    p = paper_r50_256x704()
    assert p.model.backbone_depth == 50 and p.data.image_size == (256, 704)
    assert p.grid.shape == (128, 128) and p.grid.cell == 0.8 and p.grid.x_bound == (-51.2, 51.2)
    assert p.model.depth_bins[:2] == (1.0, 60.0) and p.model.num_depth_bins == 118
    assert p.data.radar_sweeps == 6 and p.data.lidar_sweeps == 10
    t = tiny()
    assert t.model.backbone_depth == 18 and t.model.backbone_width < 1
    assert t.data.image_size == (128, 352) and t.grid.shape == (64, 64) and t.grid.cell == 1.6
    assert get_config("tiny") == t and get_config("paper_r50_256x704") == p


@pytest.mark.parametrize("make", [tiny, paper_r50_256x704])
def test_yaml_round_trip(tmp_path, make) -> None:
    cfg = make()
    cfg.model.pretrained = "/some/where/resnet.pth"
    assert IMKDConfig.from_dict(cfg.to_dict()) == cfg
    path = tmp_path / "cfg.yaml"
    cfg.save_yaml(path)
    back = IMKDConfig.load_yaml(path)
    assert back == cfg
    assert isinstance(back.model.task_groups, tuple) and all(isinstance(g, tuple) for g in back.model.task_groups)
    assert isinstance(back.grid.x_bound, tuple) and isinstance(back.data.aug.rot_lim, tuple)
    assert get_config(path) == cfg


def test_unknown_keys_are_named() -> None:
    d = tiny().to_dict()
    d["model"]["bogus_width"] = 3
    d["colour"] = "red"
    with pytest.raises(ConfigError, match="model.bogus_width") as e:
        IMKDConfig.from_dict(d)
    assert "colour" in str(e.value)


def test_type_errors() -> None:
    d = tiny().to_dict()
    d["model"]["bev_channels"] = "many"
    with pytest.raises(ConfigError, match="model.bev_channels"):
        IMKDConfig.from_dict(d)
    d = tiny().to_dict()
    d["grid"]["x_bound"] = [1.0, 2.0, 3.0]
    with pytest.raises(ConfigError, match="grid.x_bound"):
        IMKDConfig.from_dict(d)


def test_grid_validation() -> None:
    with pytest.raises(ConfigError, match="not a whole number"):
        GridConfig(x_bound=(-51.2, 51.2), cell=0.7)
    with pytest.raises(ConfigError, match="lo < hi"):
        GridConfig(z_bound=(3.0, -5.0))
    with pytest.raises(ConfigError, match="cell"):
        GridConfig(cell=0.0)
    g = GridConfig(x_bound=(-10.0, 30.0), y_bound=(-8.0, 8.0), cell=0.5)
    assert (g.nx, g.ny, g.shape) == (80, 32, (32, 80))
    # 50 cells do not divide by the BEV encoder's total stride 4
    with pytest.raises(ConfigError, match="total stride"):
        IMKDConfig(grid=GridConfig(x_bound=(-50.0, 50.0), y_bound=(-50.0, 50.0), cell=2.0))


def test_model_validation() -> None:
    with pytest.raises(ConfigError, match="depth_bins"):
        ModelConfig(depth_bins=(1.0, 1.0, 0.5))
    with pytest.raises(ConfigError, match="depth_bins"):
        ModelConfig(depth_bins=(1.0, 60.0, 0.7))
    with pytest.raises(ConfigError, match="backbone_depth"):
        ModelConfig(backbone_depth=42)
    with pytest.raises(ConfigError, match="missing"):
        ModelConfig(task_groups=(("car",), ("truck",)))
    with pytest.raises(ConfigError, match="unknown classes"):
        ModelConfig(task_groups=ModelConfig().task_groups + (("spaceship",),))
    with pytest.raises(ConfigError, match="exactly once"):
        ModelConfig(task_groups=ModelConfig().task_groups + (("car",),))
    with pytest.raises(ConfigError, match="nms_radius"):
        ModelConfig(nms_radius=(1.0,) * 3)
    with pytest.raises(ConfigError, match="tau"):
        DistillConfig(tau=0.0)
    with pytest.raises(ConfigError, match="fusion_gate"):
        ModelConfig(fusion_gate="hard")
    with pytest.raises(ConfigError, match="l3_target"):
        DistillConfig(l3_target="depth")
    with pytest.raises(ConfigError, match="intensity_scale"):
        DistillConfig(intensity_scale=0.0)
    with pytest.raises(ConfigError, match="resp_box_min_prob"):
        DistillConfig(resp_box_min_prob=1.0)


def test_image_size_must_divide_by_stride() -> None:
    with pytest.raises(ConfigError, match="image_size"):
        IMKDConfig(data=DataConfig(image_size=(120, 352)))


def test_get_config_errors(tmp_path) -> None:
    with pytest.raises(ConfigError, match="unknown config"):
        get_config("huge")
    with pytest.raises(ConfigError, match="not found"):
        get_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        get_config(bad)
