"""Variants stage: structured pruning, precision (quantization), runtime backends."""
