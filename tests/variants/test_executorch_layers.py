"""ExecuTorch int8 rows say per layer what runs int8 (int8_mac_fraction, float layers), read from the quantized PT2E
graph that XNNPACK lowers: the delegation table counts ops by type only."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from edge_opt.variants import BuildContext, build_variant

pytestmark = pytest.mark.skipif(importlib.util.find_spec("executorch") is None, reason="edge-opt[executorch] missing")


def test_an_int8_program_reports_every_layer_int8_with_its_macs(trained_small, digits8, tmp_path):
    from edge_opt.variants import torch_layers

    x = next(iter(digits8.train_loader))[0]
    ctx = BuildContext(calibration=[x], example_input=x[:2], workdir=tmp_path)
    v = build_variant("executorch", trained_small, "int8", ctx)
    assert v.metadata["int8_mac_fraction"] == 1.0 and v.metadata["float_layers"] == []
    expected = sorted(layer.macs for layer in torch_layers(trained_small, x[:1]))
    assert sorted(v.metadata["layer_macs"].values()) == expected  # per sample, from the graph's shapes
    assert set(v.metadata["layer_precisions"].values()) == {"int8"}


def test_a_float_graph_reads_as_float_layers(trained_small, digits8):
    from edge_opt.variants.executorch_backend import pt2e_layer_report

    x = next(iter(digits8.train_loader))[0][:2]
    graph = torch.export.export(trained_small.eval(), (x,)).module()
    report = pt2e_layer_report(graph)
    assert report["int8_mac_fraction"] == 0.0 and len(report["float_layers"]) == len(report["layer_macs"]) > 0
    assert pt2e_layer_report(trained_small) == {}  # not a graph: nothing read
