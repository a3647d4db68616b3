"""The training loss (`loss:`): the built-ins on the shapes each reads, a loss callable, and what they refuse."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from edge_opt.config import ConfigError, config_from_dict
from edge_opt.core import CallableImportError, UserCodeError
from edge_opt.inputs import LossError, check_loss, make_loss, train_model


def test_cross_entropy_reads_dense_logits_against_masks_and_skips_void_pixels():
    torch.manual_seed(0)
    logits, masks = torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 4, 4))
    ce = make_loss("cross_entropy")
    assert float(ce(logits, masks)) == pytest.approx(float(F.cross_entropy(logits, masks)))
    void = masks.clone()
    void[:, 0] = 255  # VOC / Cityscapes void label: no class
    assert float(ce(logits, void.to(torch.uint8))) == pytest.approx(
        float(F.cross_entropy(logits, void, ignore_index=255))
    )


def test_cross_entropy_reads_caffe2_style_scores_as_class_scores():
    torch.manual_seed(0)
    scores, ids = torch.randn(5, 4), torch.tensor([0, 1, 2, 3, 1])
    ce = make_loss("cross_entropy")
    assert float(ce(scores.reshape(5, 4, 1, 1), ids)) == pytest.approx(float(F.cross_entropy(scores, ids)))


def test_mse_and_bce_read_targets_of_the_output_shape():
    out = torch.tensor([[0.5], [2.0]])
    assert float(make_loss("mse")(out, torch.tensor([1, 2]))) == pytest.approx((0.25 + 0.0) / 2)
    assert float(make_loss("bce")(out, torch.tensor([1, 0]))) == pytest.approx(
        float(F.binary_cross_entropy_with_logits(out, torch.tensor([[1.0], [0.0]])))
    )
    with pytest.raises(LossError, match=r"'mse' needs targets of the output's shape \(2, 3\); got \(2,\)"):
        make_loss("mse")(torch.zeros(2, 3), torch.zeros(2))
    with pytest.raises(LossError, match="'bce' needs 0/1 targets"):
        make_loss("bce")(out, torch.tensor([3, 0]))


def test_built_ins_need_one_output_and_a_callable_gets_the_tuple(tmp_path):
    outs = (torch.ones(2, 3), torch.full((2,), 2.0))
    with pytest.raises(LossError, match="'mse' reads one model output; the model gives 2"):
        make_loss("mse")(outs, torch.zeros(2, 3))
    (tmp_path / "twoloss.py").write_text(
        "def both(outputs, targets):\n    a, b = outputs\n    return a.mean() + b.mean() + 0 * targets.sum()\n"
    )
    assert float(make_loss("twoloss:both", [tmp_path])(outs, torch.zeros(2))) == pytest.approx(3.0)


def test_a_loss_callable_that_fails_is_an_error_naming_loss(tmp_path):
    (tmp_path / "badloss.py").write_text(
        "import numpy as np\n"
        "def as_numpy(outputs, targets):\n    return np.float32(1.0)\n"
        "def raises(outputs, targets):\n    raise RuntimeError('nope')\n"
    )
    with pytest.raises(LossError, match=r"The 'loss' callable 'badloss:as_numpy' must return a scalar float torch"):
        make_loss("badloss:as_numpy", [tmp_path])(torch.zeros(2), torch.zeros(2))
    with pytest.raises(UserCodeError, match=r"The 'loss' callable 'badloss:raises' failed: RuntimeError: nope"):
        make_loss("badloss:raises", [tmp_path])(torch.zeros(2), torch.zeros(2))
    with pytest.raises(CallableImportError, match=r"The 'loss' callable 'nosuchmod:f'"):
        make_loss("nosuchmod:f", [tmp_path])
    with pytest.raises(LossError, match=r"must be one of \['cross_entropy', 'mse', 'bce'\]"):
        make_loss("xent")


@pytest.mark.parametrize("value", ["xent", "a:b:c", "mod:"])
def test_config_refuses_a_bad_loss_naming_the_key_the_choices_and_the_value(value):
    with pytest.raises(ConfigError) as err:
        config_from_dict({"loss": value})
    text = str(err.value)
    assert "'loss'" in text and "cross_entropy, mse, bce or package.module:function" in text and repr(value) in text


def _loader() -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 4, generator=g), torch.randint(0, 3, (32,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=8)


def test_default_loss_trains_a_classifier_as_explicit_cross_entropy():
    """The default (loss None) is today's cross-entropy on class ids, step for step."""
    weights = []
    for loss in (None, make_loss("cross_entropy")):
        torch.manual_seed(0)
        model = nn.Linear(4, 3)
        result = train_model(model, _loader(), epochs=2, learning_rate=0.05, seed=0, loss=loss)
        weights.append(model.weight.detach().clone())
        assert 0 <= result.train_accuracy <= 1
    assert torch.equal(weights[0], weights[1])


def test_check_loss_refuses_a_loss_that_cannot_train_the_model():
    model = nn.Linear(4, 3)
    before = model.weight.detach().clone()
    assert check_loss(model, _loader(), make_loss("cross_entropy"), "cross_entropy") > 0
    assert torch.equal(model.weight, before)  # no step taken
    with pytest.raises(LossError, match=r"'mse' needs targets of the output's shape \(8, 3\)"):
        check_loss(model, _loader(), make_loss("mse"), "mse")
    with pytest.raises(LossError, match="has no gradient"):
        check_loss(model, _loader(), lambda out, y: out.detach().mean(), "m:f")
