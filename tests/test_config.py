"""Config validation, round trips, overrides and the example configs."""
from __future__ import annotations

from pathlib import Path

import pytest

from workbench.config import (
    DATASET_CHOICES,
    MODEL_CHOICES,
    OPTIMIZER_CHOICES,
    DataConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    ScheduleConfig,
    TrainConfig,
)
from workbench.presets import quickstart_config

REPO = Path(__file__).resolve().parents[1]


def test_defaults_are_valid_and_round_trip(tmp_path):
    cfg = RunConfig()
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    assert RunConfig.from_json(cfg.to_json()) == cfg
    assert RunConfig.from_yaml(cfg.to_yaml()) == cfg
    for suffix in (".json", ".yaml"):
        p = tmp_path / f"c{suffix}"
        cfg.save(p)
        assert RunConfig.load(p) == cfg


def test_dotted_overrides_parse_types():
    cfg = RunConfig().with_overrides(["optim.name=sam", "optim.rho=0.1", "optim.lr=1e-3", "train.epochs=3",
                                      "schedule.name=multistep", "schedule.milestones=[1, 2]", "optim.m=null",
                                      "data.classes=[0, 8]", "optim.nesterov=true"])
    assert cfg.optim.name == "sam" and cfg.optim.rho == 0.1 and cfg.optim.lr == 1e-3
    assert cfg.train.epochs == 3 and cfg.schedule.milestones == [1, 2] and cfg.optim.m is None
    assert cfg.data.classes == [0, 8] and cfg.optim.nesterov is True
    assert RunConfig.from_yaml(cfg.to_yaml()) == cfg
    # mapping form
    assert RunConfig().with_overrides({"optim.rho": 0.2}).optim.rho == 0.2


def test_yaml_reads_exponent_floats():
    cfg = RunConfig.from_yaml("optim:\n  lr: 1e-3\n  weight_decay: 5e-4\n")
    assert cfg.optim.lr == pytest.approx(1e-3) and isinstance(cfg.optim.lr, float)


@pytest.mark.parametrize("override, field, words", [
    ("data.name=imagenet", "data.name", ["digits", "mnist", "cifar10"]),
    ("model.name=vgg", "model.name", ["lenet5", "resnet18", "wide_resnet"]),
    ("optim.name=rmsprop", "optim.name", ["sgd", "sam", "asam", "adam"]),
    ("optim.lr=0", "optim.lr", ["> 0"]),
    ("optim.lr=-0.1", "optim.lr", ["> 0"]),
    ("train.batch_size=0", "train.batch_size", ["> 0"]),
    ("train.batch_size=-4", "train.batch_size", ["> 0"]),
    ("train.epochs=0", "train.epochs", ["> 0"]),
    ("optim.rho=-0.05", "optim.rho", [">= 0"]),
    ("optim.momentum=1.5", "optim.momentum", ["[0, 1)"]),
    ("train.device=tpu", "train.device", ["auto", "cpu", "cuda"]),
    ("optim.bn_policy=whatever", "optim.bn_policy", ["freeze", "update", "eval"]),
])
def test_bad_values_name_field_and_range(override, field, words):
    with pytest.raises(ValueError) as e:
        RunConfig().with_overrides([override])
    msg = str(e.value)
    assert msg.startswith(field), msg
    for w in words:
        assert w in msg, msg


def test_m_must_divide_batch_size():
    with pytest.raises(ValueError, match=r"optim\.m=5 .*must divide train\.batch_size=64"):
        RunConfig().with_overrides({"optim.name": "sam", "optim.m": 5})
    ok = RunConfig().with_overrides({"optim.name": "sam", "optim.m": 16})
    assert ok.optim.m == 16


def test_unknown_keys_rejected():
    with pytest.raises(ValueError, match="unknown key"):
        RunConfig().with_overrides(["optim.rhoo=0.1"])
    with pytest.raises(ValueError, match="unknown key"):
        RunConfig.from_dict({"optim": {"lr": 0.1, "foo": 1}})
    with pytest.raises(ValueError, match="key=value"):
        RunConfig().with_overrides(["optim.rho"])


def test_section_validation_direct():
    with pytest.raises(ValueError, match="data.val_fraction"):
        DataConfig(val_fraction=0.6, test_fraction=0.5)
    with pytest.raises(ValueError, match="data.classes"):
        DataConfig(classes=[3])
    with pytest.raises(ValueError, match="model.depth"):
        ModelConfig(name="wide_resnet", depth=27)
    with pytest.raises(ValueError, match="schedule.milestones"):
        ScheduleConfig(name="multistep")
    with pytest.raises(ValueError, match="train.label_smoothing"):
        TrainConfig(label_smoothing=1.0)
    assert OptimConfig(name="asam").adaptive is True


def test_choices_match_registries():
    from workbench.data import DATASET_REGISTRY
    from workbench.models import MODEL_REGISTRY

    assert tuple(DATASET_REGISTRY) == DATASET_CHOICES
    assert tuple(MODEL_REGISTRY) == MODEL_CHOICES
    assert set(OPTIMIZER_CHOICES) == {"sgd", "sam", "asam", "adam"}


def test_example_configs_load_and_quickstart_matches_presets():
    files = sorted((REPO / "configs").glob("*.yaml"))
    assert len(files) >= 5
    for f in files:
        RunConfig.load(f)  # validates
    for opt in ("sgd", "sam"):
        on_disk = RunConfig.load(REPO / "configs" / f"quickstart_{opt}.yaml")
        assert on_disk == quickstart_config(opt)
