"""The real-size registry model ``mobilenetv2`` (MobileNetV2 as in the paper, the bench's yardstick)."""

import pytest
import torch

from edge_opt.inputs.models import create_model


def _params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_mobilenetv2_has_the_papers_size_and_runs_at_224():
    torch.manual_seed(0)
    m = create_model("mobilenetv2", (3, 224, 224), 10)
    assert 2.2e6 <= _params(m) <= 2.25e6  # 2.24 M for 10 classes at width 1.0
    # the paper's 1000-class network: 3.50 M parameters (3,504,872)
    assert _params(create_model("mobilenetv2", (3, 224, 224), 1000)) == 3_504_872
    convs = [c for c in m.modules() if isinstance(c, torch.nn.Conv2d)]
    assert sum(c.groups > 1 for c in convs) == 17  # one depthwise convolution per inverted residual block
    with torch.no_grad():
        assert m(torch.rand(2, 3, 224, 224)).shape == (2, 10)


def test_mobilenetv2_width_scales_channels_and_any_input_size_runs():
    narrow = create_model("mobilenetv2", (1, 64, 48), 4, width=0.5)
    assert _params(narrow) < _params(create_model("mobilenetv2", (1, 64, 48), 4)) / 2
    with torch.no_grad():
        assert narrow(torch.rand(3, 1, 64, 48)).shape == (3, 4)


@pytest.mark.parametrize("params", [{"width": 0}, {"width": True}, {"width": "1"}, {"dropout": 1.0}])
def test_mobilenetv2_refuses_bad_parameters(params):
    with pytest.raises(ValueError, match=next(iter(params))):
        create_model("mobilenetv2", (3, 32, 32), 10, **params)
