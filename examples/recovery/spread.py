"""The classic per-tensor int8 failure, built on purpose: a ReLU MobileNetV2-style network whose depthwise channels'
weight ranges span orders of magnitude (as they do in trained MobileNets), with the float function unchanged.

``build`` is the factory the study's config names; ``spread_depthwise`` makes the spread copy ``make_files.py``
saves: each depthwise BN's output channel scaled by c and the projecting 1×1 conv's input channel by 1/c (a ReLU
lets a positive scale through), c log-uniform over ``orders`` orders of magnitude.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from edge_opt.inputs.models import create_model


def build(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """The factory: registry ``mobilenetv2_tiny`` with ReLU (CLE moves scales through ReLU, not ReLU6) and no
    squeeze-and-excitation."""
    return create_model("mobilenetv2_tiny", input_shape, num_classes, width=16, se=False, relu6=False)


def spread_depthwise(model: nn.Module, orders: float = 3.0, seed: int = 0) -> nn.Module:
    """A copy of ``model`` computing the same float function with its depthwise channel ranges spread."""
    g = torch.Generator().manual_seed(seed)
    out = copy.deepcopy(model)
    for block in out.modules():
        if type(block).__name__ == "_InvertedResidual":
            bn, project = block.block[4], block.block[6]
            c = 10 ** ((torch.rand(bn.num_features, generator=g) - 0.5) * orders)
            with torch.no_grad():
                bn.weight.mul_(c)
                bn.bias.mul_(c)
                project.weight.div_(c.view(1, -1, 1, 1))
    return out
