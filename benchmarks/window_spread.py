"""How far a latency row moves between measuring windows, next to its CI inside one window.

Runs the default study once (into ``benchmarks/results/tmp_window``), rebuilds its 24 variants from the
study's parents, then times them together ``--windows`` times in one process, as a study does (interleaved
rounds, fresh instances per window). One extra instance of each torch row is kept across all windows: if it
moves with the fresh ones, the movement is the machine's, not the instances'. Prints, per row, each
window's mean relative to the row's mean over all windows, its range, the median within-window relative CI,
and the correlation of the kept instance with the fresh ones. Usage::

    python benchmarks/window_spread.py --windows 8
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from edge_opt.inputs.data import load_data  # noqa: E402
from edge_opt.measure.metrics import measure_variants  # noqa: E402
from edge_opt.pipeline import load_study_config, run_study  # noqa: E402
from edge_opt.study.runner import baseline_fingerprint, benchmark_settings, model_factory, parent_key  # noqa: E402
from edge_opt.variants import BuildContext, build_variant  # noqa: E402
from edge_opt.variants.prune import load_checkpoint  # noqa: E402

WORK = ROOT / "benchmarks" / "results" / "tmp_window"


def built_variants(cfg) -> tuple[list, list[str], object]:
    """The default study's 24 variants, built from the parents it stored."""
    data = load_data(cfg.dataset, image_size=cfg.image_size, batch_size=cfg.batch_size)
    calib = data.calibration_batches(cfg.quantization.batches)
    out, names = [], []
    fresh = model_factory(cfg, data)
    assert fresh is not None  # the default study's model is a built-in network
    for level in cfg.pruning_levels:
        key = parent_key(cfg, level)
        name = f"baseline_{baseline_fingerprint(cfg)}" if level == 0 else f"pruned_{key}"
        model = load_checkpoint(WORK / "checkpoints" / f"{name}.pt", fresh())[0]
        ctx = BuildContext(
            calibration=calib,
            example_input=calib[0][:2],
            workdir=WORK / "window_onnx",
            parent_key=key,
            threads=cfg.threads,
            quantization=cfg.quantization,
        )
        for backend in cfg.backends:
            for precision in cfg.precisions:
                out.append(build_variant(backend, model, precision, ctx))
                names.append(f"{backend} {precision} p{level:g}")
    return out, names, data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=8)
    args = parser.parse_args()
    cfg = load_study_config(ROOT / "configs" / "default.yaml").model_copy(update={"output_dir": str(WORK)})
    run_study(cfg, fresh=True)
    variants, names, data = built_variants(cfg)
    torch_rows = [i for i, v in enumerate(variants) if v.backend == "torch"]
    kept = [dataclasses.replace(variants[i], run=variants[i].replicas(), replicate=None) for i in torch_rows]
    s = benchmark_settings(cfg)
    means, cis, kept_means = [], [], []
    for w in range(args.windows):
        recs = measure_variants(variants + kept, data.val_loader, s)
        means.append([r.latency.mean for r in recs[: len(variants)]])
        cis.append([r.latency.ci95 / r.latency.mean for r in recs[: len(variants)]])
        kept_means.append([r.latency.mean for r in recs[len(variants) :]])
        print(f"window {w + 1}/{args.windows} done {time.strftime('%X')}", flush=True)
    rel = np.array(means) / np.mean(means, axis=0)
    kept_rel = np.array(kept_means) / np.mean(kept_means, axis=0)
    for j, name in enumerate(names):
        r = rel[:, j]
        corr = ""
        if j in torch_rows:
            k = kept_rel[:, torch_rows.index(j)]
            corr = f"  kept instance r={np.corrcoef(r, k)[0, 1]:.2f}"
        print(
            f"{name:26s} {np.round(r, 3)}  range {100 * (r.max() - r.min()):.1f} %  "
            f"CI {100 * np.median(np.array(cis)[:, j]):.1f} %{corr}"
        )
    sd = 100 * rel.std(axis=0, ddof=1)
    print(
        f"between-window sd: median {np.median(sd):.2f} %, max {sd.max():.2f} %; "
        f"within-window relative CI: median {100 * np.median(cis):.2f} %"
    )


if __name__ == "__main__":
    main()
