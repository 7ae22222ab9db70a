"""Tests of the model zoo ``workbench.models``: sizes, shapes, errors, gradients."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from workbench.config import MODEL_CHOICES, ModelConfig
from workbench.models import (
    MLP,
    MODEL_REGISTRY,
    DenseNet,
    LeNet5,
    LogisticRegression,
    ResNet18,
    WideResNet,
    build_model,
    count_parameters,
)

IMAGE_SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]

# Small configurations of every model, so forward/backward tests stay fast on a CPU.
SMALL = {
    "lenet5": ModelConfig(name="lenet5"),
    "mlp": ModelConfig(name="mlp", hidden_sizes=[16, 8]),
    "resnet18": ModelConfig(name="resnet18", width=0.125),
    "wide_resnet": ModelConfig(name="wide_resnet", depth=16, widen_factor=1),
    "densenet": ModelConfig(name="densenet", depth=10, growth_rate=4),
    "logistic_regression": ModelConfig(name="logistic_regression"),
}
SMALL_EXTRA = {
    "densenet-bc": ModelConfig(name="densenet", depth=10, growth_rate=4, bottleneck=True),
    "wide_resnet-dropout": ModelConfig(name="wide_resnet", depth=10, widen_factor=1, dropout=0.3),
    "densenet-dropout": ModelConfig(name="densenet", depth=10, growth_rate=4, dropout=0.2),
    "mlp-dropout": ModelConfig(name="mlp", hidden_sizes=[16], dropout=0.5),
}
CONV_MODELS = ("lenet5", "resnet18", "wide_resnet", "densenet")


def _within(n: int, target: float, rel: float) -> bool:
    return abs(n - target) <= rel * target


# ----------------------------------------------------------------------------- registry


def test_registry_keys_equal_model_choices():
    assert tuple(MODEL_REGISTRY) == MODEL_CHOICES
    assert set(SMALL) == set(MODEL_CHOICES)


# ----------------------------------------------------------------------------- parameter counts


def test_resnet18_cifar_parameter_count():
    n = count_parameters(build_model(ModelConfig(name="resnet18"), (3, 32, 32), 10))
    assert n == 11_173_962
    assert _within(n, 11.17e6, 0.005)


def test_wide_resnet_parameter_counts():
    n = count_parameters(build_model(ModelConfig(name="wide_resnet", depth=28, widen_factor=10), (3, 32, 32), 10))
    assert n == 36_479_194
    assert _within(n, 36.5e6, 0.005)
    n = count_parameters(WideResNet(3, 10, depth=16, widen_factor=8))
    assert _within(n, 11.0e6, 0.005), n


def test_densenet_parameter_counts():
    n = count_parameters(build_model(ModelConfig(name="densenet", depth=40, growth_rate=12), (3, 32, 32), 10))
    assert _within(n, 1.0e6, 0.10), n
    n_bc = count_parameters(build_model(
        ModelConfig(name="densenet", depth=100, growth_rate=12, bottleneck=True), (3, 32, 32), 10))
    assert _within(n_bc, 0.8e6, 0.10), n_bc


def test_lenet5_and_mlp_parameter_counts():
    assert count_parameters(build_model(ModelConfig(name="lenet5"), (1, 28, 28), 10)) == 61_706
    # Classic LeNet-5 on 32x32 (no padding) has the same count.
    assert count_parameters(build_model(ModelConfig(name="lenet5"), (1, 32, 32), 10)) == 61_706
    mlp = build_model(ModelConfig(name="mlp", hidden_sizes=[512, 512]), (1, 28, 28), 10)
    assert count_parameters(mlp) == 669_706
    logreg = build_model(ModelConfig(name="logistic_regression"), (1, 28, 28), 10)
    assert count_parameters(logreg) == 785 * 10


def test_count_parameters_trainable_only():
    model = build_model(ModelConfig(name="mlp", hidden_sizes=[4]), (3,), 2)
    assert count_parameters(model) == (3 * 4 + 4) + (4 * 2 + 2)
    model.net[1].weight.requires_grad_(False)
    assert count_parameters(model) == 4 + 4 * 2 + 2
    assert count_parameters(model, trainable_only=False) == (3 * 4 + 4) + (4 * 2 + 2)


def test_width_multiplier_scales_channels():
    small = ResNet18(3, 10, width=0.125)
    assert small.conv1.out_channels == 8 and small.fc.in_features == 64
    assert count_parameters(small) < count_parameters(ResNet18(3, 10)) / 50
    tiny = LeNet5(1, 28, 10, width=0.01)
    convs = [m for m in tiny.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [1, 1]
    assert [c.out_channels for c in (m for m in LeNet5(1, 28, 10, width=2).modules()
                                     if isinstance(m, nn.Conv2d))] == [12, 32]


# ----------------------------------------------------------------------------- forward shapes


@pytest.mark.parametrize("shape", IMAGE_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", list(SMALL) + list(SMALL_EXTRA))
def test_forward_shape_images(name, shape):
    torch.manual_seed(0)
    cfg = SMALL.get(name) or SMALL_EXTRA[name]
    model = build_model(cfg, shape, 7)
    x = torch.randn(3, *shape)
    out = model(x)
    assert out.shape == (3, 7)
    assert torch.isfinite(out).all()
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (3, 7)


@pytest.mark.parametrize("name", ["mlp", "logistic_regression", "mlp-dropout"])
def test_forward_shape_vectors(name):
    cfg = SMALL.get(name) or SMALL_EXTRA[name]
    model = build_model(cfg, (2,), 2)
    out = model(torch.randn(5, 2))
    assert out.shape == (5, 2)


def test_lenet5_adapts_padding_to_input_size():
    def pads(m):
        return [c.padding[0] for c in m.modules() if isinstance(c, nn.Conv2d)]

    assert pads(LeNet5(1, 28, 10)) == [2, 0]
    assert pads(LeNet5(3, 32, 10)) == [0, 0]
    assert pads(LeNet5(1, 8, 10)) == [2, 2]
    assert LeNet5(1, 8, 10).classifier[0].in_features == 16 * 2 * 2
    assert LeNet5(1, 28, 10).classifier[0].in_features == 16 * 5 * 5
    # Non-square and larger inputs work too.
    assert LeNet5(1, (20, 28), 4)(torch.randn(2, 1, 20, 28)).shape == (2, 4)
    assert LeNet5(3, 64, 4)(torch.randn(2, 3, 64, 64)).shape == (2, 4)


def test_dropout_active_in_train_only():
    torch.manual_seed(0)
    model = build_model(SMALL_EXTRA["wide_resnet-dropout"], (3, 32, 32), 10)
    x = torch.randn(4, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
    mlp = build_model(SMALL_EXTRA["mlp-dropout"], (2,), 2)
    assert any(isinstance(m, nn.Dropout) for m in mlp.modules())
    assert not any(isinstance(m, nn.Dropout) for m in build_model(SMALL["mlp"], (2,), 2).modules())
    mlp.train()
    x = torch.randn(64, 2)
    assert not torch.equal(mlp(x), mlp(x))


# ----------------------------------------------------------------------------- errors


def test_unknown_model_name_lists_choices():
    cfg = ModelConfig(name="mlp")
    cfg.name = "vgg16"  # bypass the config's own validation
    with pytest.raises(ValueError) as err:
        build_model(cfg, (1, 28, 28), 10)
    msg = str(err.value)
    assert "vgg16" in msg
    for choice in MODEL_CHOICES:
        assert choice in msg


@pytest.mark.parametrize("name", CONV_MODELS)
def test_conv_model_rejects_vector_input(name):
    with pytest.raises(ValueError) as err:
        build_model(SMALL[name], (2,), 2)
    msg = str(err.value)
    assert name in msg and "(C, H, W)" in msg
    assert "mlp" in msg and "logistic_regression" in msg


@pytest.mark.parametrize("name", CONV_MODELS)
def test_conv_model_rejects_tiny_images(name):
    with pytest.raises(ValueError, match="at least 4"):
        build_model(SMALL[name], (1, 3, 3), 2)


@pytest.mark.parametrize("num_classes", [1, 0, -3])
def test_num_classes_below_two_rejected(num_classes):
    for name in ("mlp", "lenet5"):
        with pytest.raises(ValueError, match="num_classes"):
            build_model(SMALL[name], (1, 8, 8), num_classes)


def test_bad_input_shape_and_direct_constructor_errors():
    with pytest.raises(ValueError, match="input_shape"):
        build_model(SMALL["mlp"], (), 2)
    with pytest.raises(ValueError, match="input_shape"):
        build_model(SMALL["mlp"], (0, 3), 2)
    with pytest.raises(ValueError, match="depth"):
        WideResNet(3, 10, depth=27)
    with pytest.raises(ValueError, match="depth"):
        DenseNet(3, 10, depth=31, bottleneck=True)  # 27 is not a multiple of 6
    with pytest.raises(ValueError, match="too small"):
        LeNet5(1, 3, 10)
    with pytest.raises(ValueError, match="width"):
        ResNet18(3, 10, width=0)
    with pytest.raises(ValueError, match="num_classes"):
        LogisticRegression(4, 1)


# ----------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 32, 32)], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", list(SMALL) + ["densenet-bc", "wide_resnet-dropout"])
def test_gradient_reaches_every_parameter(name, shape):
    torch.manual_seed(0)
    cfg = SMALL.get(name) or SMALL_EXTRA[name]
    model = build_model(cfg, shape, 5)
    x = torch.randn(8, *shape)
    y = torch.randint(0, 5, (8,))
    F.cross_entropy(model(x), y).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}: no gradient for {pname} (unused parameter)"
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, f"{name}: zero gradient for {pname}"


def test_init_follows_reference_code():
    model = WideResNet(3, 10, depth=10, widen_factor=1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
        elif isinstance(m, nn.Linear):
            assert torch.all(m.bias == 0)
    conv = model.block3[0].conv1  # 32 -> 64 channels, 3x3: He-normal std sqrt(2 / (9 * 64))
    assert abs(conv.weight.std().item() - (2 / (9 * 64)) ** 0.5) < 0.01


# ----------------------------------------------------------------------------- hygiene


def test_builders_are_documented():
    for cls in (LeNet5, MLP, LogisticRegression, ResNet18, WideResNet, DenseNet):
        doc = cls.__doc__ or ""
        assert "Source" in doc and "Shapes" in doc, cls.__name__
        assert "arameter count" in doc, cls.__name__
    assert build_model.__doc__ and count_parameters.__doc__


def test_no_ui_imports():
    code = ("import sys, workbench.models\n"
            "bad = [m for m in ('ipywidgets', 'plotly', 'IPython') if m in sys.modules]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True)
