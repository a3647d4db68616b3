"""Variants stage: structured pruning, precision (quantization), runtime backends."""

__all__: list[str] = []
