"""A small CNN of the user's own (not from edge_opt's registry): the factory of the ``factory`` route."""

from __future__ import annotations

import torch
from torch import nn


class TinyNet(nn.Module):
    """conv–BN–ReLU ×2 with a residual add, global average pool, linear classifier."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 16) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        self.block = nn.Sequential(nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.stem(x)
        return self.head(y + self.block(y))


def build(input_shape: tuple[int, int, int], num_classes: int, width: int = 16) -> TinyNet:
    """The factory: edge_opt passes ``input_shape`` and ``num_classes`` because the signature asks for them."""
    return TinyNet(input_shape[0], num_classes, width)
