import pytest
import torch

from edge_opt.core.registry import Registry, UnknownNameError
from edge_opt.inputs.models import create_model, list_models
from edge_opt.variants.prune import layer_shapes, load_checkpoint, prune_model, save_checkpoint

SHAPE = (1, 16, 16)
# the real-size network at a quarter width: the same layers, a tenth of the cost (its full size: test_mobilenetv2.py)
SMALL = {"mobilenetv2": {"width": 0.25}}


@pytest.mark.parametrize("name", list_models())
def test_every_model_builds_runs_prunes_and_reloads(name, tmp_path):
    torch.manual_seed(0)
    m = create_model(name, SHAPE, 10, **SMALL.get(name, {}))
    x = torch.randn(4, *SHAPE)
    assert m(x).shape == (4, 10)
    pruned = prune_model(m, 0.5, x)
    n_before = sum(p.numel() for p in m.parameters())
    n_after = sum(p.numel() for p in pruned.parameters())
    assert n_after < n_before
    assert pruned(x).shape == (4, 10)  # output layer keeps every class
    save_checkpoint(pruned, tmp_path / "p.pt")
    reloaded, _ = load_checkpoint(
        tmp_path / "p.pt", create_model(name, SHAPE, 10, **SMALL.get(name, {}))
    )  # weights_only=True inside
    assert layer_shapes(reloaded) == layer_shapes(pruned)
    torch.testing.assert_close(reloaded(x), pruned(x))


@pytest.mark.parametrize("name", list_models())
def test_level_zero_is_equivalent_copy(name):
    m = create_model(name, SHAPE, 10, **SMALL.get(name, {}))
    x = torch.randn(3, *SHAPE)
    p = prune_model(m, 0.0, x)
    assert p is not m
    torch.testing.assert_close(p(x), m(x))


def test_pruning_removes_channels_physically():
    m = create_model("small_cnn", (1, 28, 28), 10, conv1_channels=32, conv2_channels=64, hidden_units=256)
    p = prune_model(m, 0.5, torch.randn(2, 1, 28, 28))
    assert p.conv1.out_channels == 16 and p.conv2.out_channels == 32
    assert p.classifier[1].in_features == 32 * 7 * 7 and p.classifier[3].out_features == 10


def test_bad_level():
    m = create_model("mlp", (1, 8, 8), 10)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        prune_model(m, 1.0, torch.randn(2, 1, 8, 8))


def test_unknown_model_and_param():
    with pytest.raises(UnknownNameError) as info:
        create_model("resnet", SHAPE, 10)
    assert "small_cnn" in str(info.value) and "'resnet'" in str(info.value)
    with pytest.raises(ValueError, match="depth"):
        create_model("small_cnn", SHAPE, 10, depth=3)


def test_mlp_seed_layout_drops_final_softmax():
    m = create_model("mlp", (1, 8, 8), 10, layer_sizes=[64, 32, 10], activations=["relu", "relu", "softmax"])
    linears = [layer for layer in m if isinstance(layer, torch.nn.Linear)]
    assert [lin.in_features for lin in linears] == [64, 64, 32] and linears[-1].out_features == 10
    assert not isinstance(list(m)[-1], torch.nn.Softmax)


def test_registry_duplicate_and_listing():
    r: Registry[int] = Registry("thing", "things")
    r.register("a")(1)
    with pytest.raises(ValueError):
        r.register("a")(2)
    assert r.names() == ["a"] and r.get("a") == 1


def test_resolve_device_falls_back_with_warning():
    import warnings

    from edge_opt.inputs.training import resolve_device

    assert resolve_device("cpu") == (torch.device("cpu"), None)
    if not torch.cuda.is_available():
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            dev, msg = resolve_device("cuda")
        assert dev.type == "cpu" and "'cuda'" in msg
        assert not w  # returned for the study's warnings list, never printed as a raw Python warning


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
@pytest.mark.parametrize("name", list_models())
def test_every_model_quantizes_to_int8_on_both_backends(name, backend, tmp_path):
    from edge_opt.variants import BuildContext, build_variant

    torch.manual_seed(0)
    m = create_model(name, SHAPE, 10, **SMALL.get(name, {}))
    calib = [torch.randn(8, *SHAPE) for _ in range(2)]
    v = build_variant(backend, m, "int8", BuildContext(calibration=calib, example_input=calib[0][:2], workdir=tmp_path))
    assert v.kernel_precision == "int8"
    out = v.predict(torch.randn(3, *SHAPE))
    assert out.shape == (3, 10) and torch.isfinite(torch.from_numpy(out)).all()
