"""`make bench`: the performance record of edge_opt on the machine it runs on.

Writes benchmarks/results/latest.json and prints a Markdown table. Every figure is a ratio or a
time measured in this one run, so machine noise partly cancels. Goals are checked and reported,
never hidden.
"""
from __future__ import annotations

import json
import math
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from edge_opt.data import load_data, load_study_data  # noqa: E402
from edge_opt.env import cpu_model, package_versions  # noqa: E402
from edge_opt.hardware import machine_calibration  # noqa: E402
from edge_opt.metrics import latency_samples, measure_variant  # noqa: E402
from edge_opt.models import create_model  # noqa: E402
from edge_opt.pipeline import load_study_config, run_study  # noqa: E402
from edge_opt.runner import ConfigPoint, Sweep, train_baseline  # noqa: E402
from edge_opt.variants.backends import BuildContext, build_variant  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
WORK = RESULTS / "tmp_bench"


def study_throughput(cfg) -> dict:
    t0 = time.perf_counter()
    res = run_study(cfg, fresh=True)
    wall = time.perf_counter() - t0
    tm = res.timings
    inference = tm.get("variants.measurement", 0) + tm.get("deployment", 0)
    training = tm.get("training", 0) + tm.get("variants.pruning_and_fine_tuning", 0)
    overhead = wall - inference - training
    return {"wall_s": wall, "stages_s": tm, "training_s": training, "timed_inference_s": inference,
            "overhead_s": overhead, "overhead_fraction": overhead / wall,
            "goal_overhead_fraction": 0.15, "goal_wall_s": 60.0,
            "met": overhead / wall <= 0.15 and wall <= 60.0}, res


def cached_rerun(cfg, first_wall: float) -> dict:
    t0 = time.perf_counter()
    res = run_study(cfg)
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "fraction_of_first": wall / first_wall, "reused": res.reused, "computed": res.computed,
            "goal_fraction": 0.10, "met": wall / first_wall <= 0.10}


def speedups(res) -> dict:
    s = res.summary
    rec, base = s.get("recommended") or {}, s["baseline"]
    df = res.sweep
    row = df[df["key"] == rec.get("key")].iloc[0] if rec else None
    out = {"recommended": {k: rec.get(k) for k in ("backend", "precision", "pruning_level")}}
    if row is not None:
        out.update({
            "batch1_speedup": base["latency_ms"] / row["latency_ms"],
            "batch128_speedup": base["batch_latency_ms"] / row["batch_latency_ms"],
            "accuracy_drop_points": 100 * (base["accuracy"] - row["accuracy"]),
            "baseline_latency_ms": base["latency_ms"], "recommended_latency_ms": row["latency_ms"],
            "baseline_batch128_ms": base["batch_latency_ms"], "recommended_batch128_ms": row["batch_latency_ms"],
        })
        out["goal"] = ">= 3x at <= 1 point accuracy drop"
        out["met"] = min(out["batch1_speedup"], out["batch128_speedup"]) >= 3 and out["accuracy_drop_points"] <= 1
    return out


def int8_wide_cnn(threads: int = 1) -> dict:
    data = load_data("digits", image_size=28, batch_size=128, dataloader_seed=0)
    torch.manual_seed(0)
    model = create_model("small_cnn", data.input_shape, data.num_classes, conv1_channels=64, conv2_channels=128)
    calib = data.calibration_batches(4)
    ctx = BuildContext(calibration=calib, example_input=calib[0][:2], workdir=WORK / "wide", parent_key="wide",
                       threads=threads)
    x128 = next(iter(data.val_loader))[0]
    out = {}
    torch.set_num_threads(threads)
    for backend in ("torch", "onnxruntime"):
        lat = {}
        for precision in ("fp32", "int8"):
            v = build_variant(backend, model, precision, ctx)
            for bs, x in (("batch1", x128[:1]), ("batch128", x128)):
                runs = 20 if bs == "batch1" else 2
                s = latency_samples(v.run, v.prepare(x), repeats=10, runs=runs, warmup=3, threads=threads)
                lat[(precision, bs)] = float(np.median(s))
        out[backend] = {f"{p}_{b}_ms": t for (p, b), t in lat.items()}
        out[backend]["int8_speedup_batch1"] = lat[("fp32", "batch1")] / lat[("int8", "batch1")]
        out[backend]["int8_speedup_batch128"] = lat[("fp32", "batch128")] / lat[("int8", "batch128")]
        out[backend]["int8_slower"] = min(out[backend]["int8_speedup_batch1"], out[backend]["int8_speedup_batch128"]) < 1
    best = max(max(v["int8_speedup_batch1"], v["int8_speedup_batch128"]) for v in out.values())
    return {"model": "small_cnn 64/128 global-pool, 28x28", "per_backend": out, "best_int8_speedup": best,
            "goal": ">= 2x on at least one backend", "met": best >= 2}


def measurement_quality(cfg, res) -> dict:
    df = res.sweep[res.sweep["error"].isna()]
    rel = (df["latency_ci95_ms"] / df["latency_ms"]).astype(float)
    worst = df.loc[rel.idxmax()]
    # back-to-back agreement: re-measure the unpruned variants twice in a row
    data = load_study_data(cfg)
    baseline, _ = train_baseline(cfg, data, Path(cfg.output_dir), "cpu", lambda kind, **info: None)  # the checkpoint
    sweep = Sweep(baseline, data, cfg, cfg.output_dir)
    diffs = []
    for p in [ConfigPoint(0.0, pr, b) for pr in cfg.precisions for b in cfg.backends]:
        v = build_variant(p.backend, sweep.baseline, p.precision, sweep.build_context(0.0, workdir=WORK / "b2b"))
        a = measure_variant(v, data.val_loader, benchmark_repeats=cfg.benchmark_repeats,
                            benchmark_trials=cfg.benchmark_trials, threads=cfg.threads,
                            min_sample_ms=cfg.benchmark_min_sample_ms).latency.median
        b = measure_variant(v, data.val_loader, benchmark_repeats=cfg.benchmark_repeats,
                            benchmark_trials=cfg.benchmark_trials, threads=cfg.threads,
                            min_sample_ms=cfg.benchmark_min_sample_ms).latency.median
        diffs.append({"variant": f"{p.backend} {p.precision} p0", "first_ms": a, "second_ms": b,
                      "rel_diff": abs(a - b) / min(a, b)})
    worst_b2b = max(diffs, key=lambda d: d["rel_diff"])
    return {"max_rel_ci95": float(rel.max()), "median_rel_ci95": float(rel.median()),
            "worst_ci_variant": f"{worst['backend']} {worst['precision']} p{worst['pruning_level']:g}",
            "back_to_back": diffs, "max_back_to_back_rel_diff": worst_b2b["rel_diff"],
            "worst_back_to_back_variant": worst_b2b["variant"], "goal_rel_ci95": 0.02, "goal_back_to_back": 0.05,
            "met": float(rel.max()) <= 0.02 and worst_b2b["rel_diff"] <= 0.05}


def mixed_precision_cost(cfg, plain_wall_s: float) -> dict:
    """The default study with int8_mixed added (sensitivity pass + greedy search), against the plain study."""
    c = cfg.model_copy(update={"precisions": [*cfg.precisions, "int8_mixed"], "output_dir": str(WORK / "mixed")})
    t0 = time.perf_counter()
    res = run_study(c, fresh=True)
    wall = time.perf_counter() - t0
    mixed = res.sweep[res.sweep["precision"] == "int8_mixed"]
    return {"wall_s": wall, "ratio_to_plain": wall / plain_wall_s, "rows": len(res.sweep),
            "errors": int(res.sweep["error"].notna().sum()), "mixed_float_layers": mixed["float_layers"].tolist(),
            "goal_ratio": 1.5, "met": wall / plain_wall_s <= 1.5}


def calibration_time(threads: int) -> dict:
    """How long measuring the machine's roofs takes (cached per host afterwards)."""
    folder = WORK / "calibration"
    t0 = time.perf_counter()
    machine_calibration(folder, threads)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    machine_calibration(folder, threads)
    cached = time.perf_counter() - t0
    return {"first_s": first, "cached_s": cached, "goal_first_s": 10.0, "met": first <= 10.0}


def scaling(cfg) -> dict:
    rows = []
    for n in (2, 4, 8):
        levels = [round(i / (n + 1), 3) for i in range(n)]
        c = cfg.model_copy(update={"pruning_levels": levels, "backends": ["onnxruntime"], "precisions": ["fp32", "int8"],
                                   "output_dir": str(WORK / f"scale_{n}"),
                                   "deployment": cfg.deployment.model_copy(update={"scenarios": ["batch"]})})
        t0 = time.perf_counter()
        res = run_study(c, fresh=True)
        wall = time.perf_counter() - t0
        sweep_s = res.timings.get("variants", 0)
        rows.append({"pruning_levels": n, "variants": len(res.sweep), "study_s": wall, "sweep_s": sweep_s,
                     "per_variant_s": sweep_s / len(res.sweep)})
    x = np.array([r["variants"] for r in rows], float)
    y = np.array([r["sweep_s"] for r in rows], float)
    slope, intercept = np.polyfit(x, y, 1)
    pred = slope * x + intercept
    r2 = 1 - ((y - pred) ** 2).sum() / ((y - y.mean()) ** 2).sum()
    return {"runs": rows, "slope_s_per_variant": slope, "intercept_s": intercept, "r2": r2, "linear": r2 >= 0.95}


def main() -> int:
    t_all = time.perf_counter()
    shutil.rmtree(WORK, ignore_errors=True)
    cfg = load_study_config(ROOT / "configs" / "default.yaml", {"output_dir": str(WORK / "default")})
    out: dict = {"machine": {"cpu_model": cpu_model(), "cores": __import__("os").cpu_count(),
                             "platform": platform.platform(), "python": platform.python_version(),
                             "versions": package_versions()},
                 "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    out["study_throughput"], res = study_throughput(cfg)
    out["speedups"] = speedups(res)
    hw = res.summary.get("hardware", {})
    rb = hw.get("recommended_batch", {})
    out["roofline"] = {"recommended_batch128_efficiency": rb.get("roofline_efficiency"),
                       "achieved_gmacs": rb.get("achieved_gmacs"), "peak_gmacs": rb.get("peak_compute_gmacs"),
                       "bound_regime": rb.get("bound_regime"),
                       "measured_bandwidth_gbps": hw.get("machine", {}).get("memory_bandwidth_gbps")}
    out["measurement_quality"] = measurement_quality(cfg, res)
    out["cached_rerun"] = cached_rerun(cfg, out["study_throughput"]["wall_s"])
    out["int8_wide_cnn"] = int8_wide_cnn(cfg.threads)
    out["scaling"] = scaling(cfg)
    out["machine_calibration"] = calibration_time(cfg.threads)
    out["mixed_precision"] = mixed_precision_cost(cfg, out["study_throughput"]["wall_s"])
    out["bench_wall_s"] = time.perf_counter() - t_all
    RESULTS.mkdir(parents=True, exist_ok=True)
    text = json.dumps(out, indent=2, default=lambda o: None if isinstance(o, float) and math.isnan(o) else str(o))
    (RESULTS / "latest.json").write_text(text + "\n", encoding="utf-8")
    shutil.rmtree(WORK, ignore_errors=True)
    print(markdown(out))
    return 0


def _ok(b) -> str:
    return "met" if b else "**missed**"


def markdown(o: dict) -> str:
    st, sp, iq, mq, cr, sc = (o["study_throughput"], o["speedups"], o["int8_wide_cnn"], o["measurement_quality"],
                              o["cached_rerun"], o["scaling"])
    pb = iq["per_backend"]
    per_variant = ", ".join(f"{r['per_variant_s']:.2f}" for r in sc["runs"])
    lines = [
        f"Machine: {o['machine']['cpu_model']} ({o['machine']['cores']} cores), {o['date']}",
        "",
        "| figure | value | goal | status |",
        "|---|---|---|---|",
        f"| default study wall time | {st['wall_s']:.1f} s | ≤ 60 s | {_ok(st['wall_s'] <= 60)} |",
        f"| overhead (not training, not timed inference) | {100 * st['overhead_fraction']:.1f} % | ≤ 15 % | {_ok(st['overhead_fraction'] <= 0.15)} |",
        f"| speed-up of recommended ({sp['recommended']['backend']} {sp['recommended']['precision']} p{sp['recommended']['pruning_level']}) vs torch fp32, batch 1 | {sp.get('batch1_speedup', float('nan')):.2f}× | ≥ 3× | {_ok(sp.get('batch1_speedup', 0) >= 3)} |",
        f"| same, batch 128 | {sp.get('batch128_speedup', float('nan')):.2f}× | ≥ 3× | {_ok(sp.get('batch128_speedup', 0) >= 3)} |",
        f"| accuracy drop of recommended | {sp.get('accuracy_drop_points', float('nan')):.2f} points | ≤ 1 | {_ok(sp.get('accuracy_drop_points', 9) <= 1)} |",
        f"| int8 vs fp32, wide CNN, torch (b1 / b128) | {pb['torch']['int8_speedup_batch1']:.2f}× / {pb['torch']['int8_speedup_batch128']:.2f}× | ≥ 2× on one backend | {_ok(iq['met'])} |",
        f"| int8 vs fp32, wide CNN, onnxruntime (b1 / b128) | {pb['onnxruntime']['int8_speedup_batch1']:.2f}× / {pb['onnxruntime']['int8_speedup_batch128']:.2f}× | | |",
        f"| worst relative 95 % CI of latency ({mq['worst_ci_variant']}) | {100 * mq['max_rel_ci95']:.2f} % (median {100 * mq['median_rel_ci95']:.2f} %) | ≤ 2 % | {_ok(mq['max_rel_ci95'] <= 0.02)} |",
        f"| worst back-to-back disagreement ({mq['worst_back_to_back_variant']}) | {100 * mq['max_back_to_back_rel_diff']:.2f} % | ≤ 5 % | {_ok(mq['max_back_to_back_rel_diff'] <= 0.05)} |",
        f"| roofline efficiency, recommended at batch 128 | {(o['roofline']['recommended_batch128_efficiency'] or float('nan')):.3f} ({o['roofline']['bound_regime']}) | — | — |",
        f"| cached re-run / first run | {100 * cr['fraction_of_first']:.1f} % ({cr['wall_s']:.1f} s) | ≤ 10 % | {_ok(cr['met'])} |",
        f"| scaling: sweep time per variant (2/4/8 levels) | {per_variant} s; R² {sc['r2']:.3f} | linear | {_ok(sc['linear'])} |",
        f"| machine calibration (first / cached) | {o['machine_calibration']['first_s']:.1f} s / {o['machine_calibration']['cached_s']:.3f} s | ≤ 10 s | {_ok(o['machine_calibration']['met'])} |",
        f"| default study + int8_mixed / without | {o['mixed_precision']['ratio_to_plain']:.2f}× ({o['mixed_precision']['wall_s']:.1f} s, {o['mixed_precision']['errors']} errors) | ≤ 1.5× | {_ok(o['mixed_precision']['met'])} |",
        f"| bench wall time | {o['bench_wall_s']:.0f} s | < 600 s | {_ok(o['bench_wall_s'] < 600)} |",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
