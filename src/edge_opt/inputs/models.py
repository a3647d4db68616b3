"""Model stage: a registry of compact networks (timm-style ``register_model`` / ``create_model``).

Every factory takes ``input_shape`` (C, H, W) and ``num_classes`` from the data,
plus its own keyword parameters from the config's ``model.params``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ..config import short_repr
from ..core import Registry

__all__ = [
    "MODELS",
    "SmallCNN",
    "create_model",
    "ds_cnn",
    "list_models",
    "mlp",
    "mobilenetv2",
    "mobilenetv2_tiny",
    "model_param_errors",
    "register_model",
    "resnet8",
    "small_cnn",
]

ModelFactory = Callable[..., nn.Module]
MODELS: Registry[ModelFactory] = Registry("model", "model.name")
register_model = MODELS.register


def list_models() -> list[str]:
    """Names of the registered models."""
    return MODELS.names()


def model_param_errors(name: str, params: dict[str, Any]) -> list[str]:
    """Messages for unknown parameters of a registered model (empty when all are known)."""
    sig = inspect.signature(MODELS.get(name))
    allowed = [p for p in sig.parameters if p not in ("input_shape", "num_classes")]
    return [
        f"Unknown key 'model.params.{str(k)[:80]}' for model {name!r}. Allowed keys: {allowed}. Got "
        f"{short_repr(params[k])}."
        for k in params
        if k not in allowed
    ]


def create_model(name: str, input_shape: Sequence[int], num_classes: int, **params: Any) -> nn.Module:
    """Build a registered model.

    Args:
        name: registered model name (see ``list_models()``).
        input_shape: (C, H, W) of one sample.
        num_classes: number of output logits.
        **params: the model's own parameters.
    Returns:
        The model in eval mode, fp32.
    Raises:
        UnknownNameError: unknown model. ValueError: unknown or invalid parameters.
    """
    factory = MODELS.get(name)
    errors = model_param_errors(name, params)
    if errors:
        raise ValueError("; ".join(errors))
    model = factory(input_shape=tuple(input_shape), num_classes=int(num_classes), **params)
    return model.eval()


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"The {name!r} parameter must be a positive integer. Got {value!r} instead.")
    return value


class SmallCNN(nn.Module):
    """conv3×3(c1)–ReLU–maxpool2–conv3×3(c2)–ReLU–maxpool2–head (``small_cnn``, the default study's CNN).

    ``hidden_units=None`` (the default) gives a global-average-pool + linear head; an
    integer gives flatten + linear(hidden_units) + ReLU + linear, which carries most
    of the parameters and makes memory budgets and int8 matter.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        conv1_channels: int,
        conv2_channels: int,
        hidden_units: int | None,
        spatial: int,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, conv1_channels, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(conv1_channels, conv2_channels, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        if hidden_units is None:
            self.classifier = nn.Sequential(
                nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(conv2_channels, num_classes)
            )
        else:
            self.classifier = nn.Sequential(
                nn.Flatten(),
                nn.Linear(conv2_channels * spatial * spatial, hidden_units),
                nn.ReLU(),
                nn.Linear(hidden_units, num_classes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        return self.classifier(x)


@register_model("small_cnn")
def small_cnn(
    input_shape: tuple[int, ...],
    num_classes: int,
    conv1_channels: int = 16,
    conv2_channels: int = 32,
    hidden_units: int | None = None,
) -> nn.Module:
    """``small_cnn``: the two-conv CNN of ``SmallCNN``; channel widths and head are parameters."""
    c, h, w = input_shape
    if h < 4 or w < 4 or h != w:
        raise ValueError(f"small_cnn needs square inputs of side >= 4. Got input_shape {input_shape} instead.")
    _positive_int("conv1_channels", conv1_channels)
    _positive_int("conv2_channels", conv2_channels)
    if hidden_units is not None:
        _positive_int("hidden_units", hidden_units)
    return SmallCNN(c, num_classes, conv1_channels, conv2_channels, hidden_units, h // 4)


_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
    "identity": nn.Identity,
    "linear": nn.Identity,
}


@register_model("mlp")
def mlp(
    input_shape: tuple[int, ...],
    num_classes: int,
    layer_sizes: Sequence[int] = (64, 32),
    activations: Sequence[str] = ("relu", "relu"),
) -> nn.Module:
    """Flatten + one Linear per entry of ``layer_sizes``, each followed by its activation (the ``edge-opt bench`` MLP).

    A last layer whose size differs from ``num_classes`` gets a Linear head added. A final
    ``softmax`` is dropped from the module: the model returns logits (training uses
    cross-entropy on logits, and argmax — hence accuracy — is unchanged).
    """
    sizes = [
        _positive_int("layer_sizes", int(s)) if not isinstance(s, bool) else _positive_int("layer_sizes", s)
        for s in layer_sizes
    ]
    acts = list(activations)
    if len(acts) != len(sizes):
        raise ValueError(
            f"The 'activations' parameter must have one entry per layer size ({len(sizes)}). Got {len(acts)} instead."
        )
    allowed = sorted([*_ACTIVATIONS, "softmax"])
    for a in acts:
        if a not in allowed:
            raise ValueError(f"The 'activations' parameter must contain names from {allowed}. Got {a!r} instead.")
    in_features = 1
    for s in input_shape:
        in_features *= int(s)
    layers: list[nn.Module] = [nn.Flatten()]
    prev = in_features
    for i, (size, act) in enumerate(zip(sizes, acts)):
        layers.append(nn.Linear(prev, size))
        last = i == len(sizes) - 1
        if act == "softmax":
            if not last:
                raise ValueError("The 'activations' parameter may use 'softmax' only for the last layer.")
        else:
            layers.append(_ACTIVATIONS[act]())
        prev = size
    if prev != num_classes:
        layers.append(nn.Linear(prev, num_classes))
    return nn.Sequential(*layers)


@register_model("ds_cnn")
def ds_cnn(input_shape: tuple[int, ...], num_classes: int, channels: int = 32, blocks: int = 2) -> nn.Module:
    """Depthwise-separable CNN (MobileNet-style): conv–BN–ReLU stem, then depthwise+pointwise blocks."""
    _positive_int("channels", channels)
    _positive_int("blocks", blocks)
    c = input_shape[0]
    layers: list[nn.Module] = [nn.Conv2d(c, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU()]
    for _ in range(blocks):
        layers += [
            nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.MaxPool2d(2),
        ]
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes)]
    return nn.Sequential(*layers)


class _ResidualBlock(nn.Module):
    """ResNet basic block: conv–BN–ReLU–conv–BN plus the (1×1-projected when shapes change) input, then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else nn.Identity()
        )
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(y + self.shortcut(x))


@register_model("resnet8")
def resnet8(input_shape: tuple[int, ...], num_classes: int, width: int = 16) -> nn.Module:
    """MLPerf Tiny's image-classification reference (ResNet-8 for 3×32×32 CIFAR-10): a 3×3 stem and three
    residual stacks of ``width``, 2·``width``, 4·``width`` channels (strides 1, 2, 2), global average pool, dense."""
    _positive_int("width", width)
    w = width
    return nn.Sequential(
        nn.Conv2d(input_shape[0], w, 3, padding=1, bias=False),
        nn.BatchNorm2d(w),
        nn.ReLU(),
        _ResidualBlock(w, w, 1),
        _ResidualBlock(w, 2 * w, 2),
        _ResidualBlock(2 * w, 4 * w, 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4 * w, num_classes),
    )


class _SqueezeExcite(nn.Module):
    """Squeeze-and-excitation: global pool, 1×1 reduce–ReLU–1×1 expand, hard-sigmoid gate on the channels."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        hidden = max(8, channels // reduction)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, hidden, 1)
        self.relu = nn.ReLU()
        self.expand = nn.Conv2d(hidden, channels, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.expand(self.relu(self.reduce(self.pool(x)))))


class _InvertedResidual(nn.Module):
    """MobileNetV2 block: 1×1 expand–BN–ReLU6, 3×3 depthwise–BN–ReLU6, optional SE, 1×1 project–BN (+ input);
    ``relu6=False``: ReLU instead of ReLU6."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int, se: bool, relu6: bool = True) -> None:
        super().__init__()
        hidden = cin * expand
        act = nn.ReLU6 if relu6 else nn.ReLU
        layers: list[nn.Module] = [
            nn.Conv2d(cin, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            act(),
            nn.Conv2d(hidden, hidden, 3, stride=stride, padding=1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            act(),
        ]
        if se:
            layers.append(_SqueezeExcite(hidden))
        layers += [nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.residual else y


@register_model("mobilenetv2_tiny")
def mobilenetv2_tiny(
    input_shape: tuple[int, ...],
    num_classes: int,
    width: int = 16,
    expand: int = 4,
    se: bool = True,
    relu6: bool = True,
) -> nn.Module:
    """A small MobileNetV2-style network: stride-2 stem, inverted residual blocks (depthwise convolutions,
    ReLU6 — ReLU with ``relu6=False`` —, residual adds, squeeze-and-excitation when ``se``), a hardswish 1×1 head,
    global average pool."""
    _positive_int("width", width)
    _positive_int("expand", expand)
    w = width
    blocks = [
        (w, w, 1),
        (w, int(1.5 * w), 2),
        (int(1.5 * w), int(1.5 * w), 1),
        (int(1.5 * w), 2 * w, 2),
        (2 * w, 2 * w, 1),
    ]
    head = 4 * w
    return nn.Sequential(
        nn.Conv2d(input_shape[0], w, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(w),
        nn.ReLU6() if relu6 else nn.ReLU(),
        *[_InvertedResidual(a, b, s, expand, se and i % 2 == 1, relu6) for i, (a, b, s) in enumerate(blocks)],
        nn.Conv2d(2 * w, head, 1, bias=False),
        nn.BatchNorm2d(head),
        nn.Hardswish(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(head, num_classes),
    )


# MobileNetV2 (Sandler et al. 2018, table 2): (expansion t, output channels c, repeats n, first stride s) per stage
_MOBILENETV2_STAGES = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def _make_divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count to a multiple of ``divisor``, never below 90 % of ``value`` (the paper's width rule)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class _MobileNetV2Block(nn.Module):
    """MobileNetV2 inverted residual: [1×1 expand–BN–ReLU6,] 3×3 depthwise–BN–ReLU6, 1×1 linear project–BN,
    plus the input when the stride is 1 and the channels match (no 1×1 expand when the expansion is 1)."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6()]
        layers += [
            nn.Conv2d(hidden, hidden, 3, stride=stride, padding=1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.residual else y


@register_model("mobilenetv2")
def mobilenetv2(input_shape: tuple[int, ...], num_classes: int, width: float = 1.0, dropout: float = 0.2) -> nn.Module:
    """MobileNetV2 as in the paper (a real-size network: 2.2 M parameters at ``width`` 1.0 with 10 classes): a
    stride-2 3×3 stem of 32 channels, the 17 inverted residual blocks of its table 2, a 1×1 head of 1280 channels
    (scaled by ``width`` above 1), global average pool, dropout and a linear classifier. Any input size (224×224
    in the paper); weights start from a seeded init (Kaiming for convolutions, as torchvision's recipe)."""
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not 0 < width <= 4:
        raise ValueError(f"The 'width' parameter must be a number in (0, 4]. Got {width!r} instead.")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ValueError(f"The 'dropout' parameter must be a number in [0, 1). Got {dropout!r} instead.")
    cin = _make_divisible(32 * width)
    head = _make_divisible(1280 * max(1.0, width))
    layers: list[nn.Module] = [
        nn.Conv2d(input_shape[0], cin, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(cin),
        nn.ReLU6(),
    ]
    for t, c, n, s in _MOBILENETV2_STAGES:
        cout = _make_divisible(c * width)
        for i in range(n):
            layers.append(_MobileNetV2Block(cin, cout, s if i == 0 else 1, t))
            cin = cout
    layers += [nn.Conv2d(cin, head, 1, bias=False), nn.BatchNorm2d(head), nn.ReLU6()]
    model = nn.Sequential(
        *layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(float(dropout)), nn.Linear(head, num_classes)
    )
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
    return model
