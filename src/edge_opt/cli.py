"""Command line: ``edge-opt run | predict | status | report | bench``.

Exit codes: 0 ok; 1 the study ran but no configuration met every goal (a best-effort
model is still exported); 2 bad input (config, data, arguments); 130 interrupted by
SIGINT; 143 stopped by SIGTERM.
"""
from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__

__all__ = ["EXIT_BAD_INPUT", "EXIT_NO_RECOMMENDATION", "EXIT_OK", "EXIT_SIGINT", "EXIT_SIGTERM", "main"]

EXIT_OK, EXIT_NO_RECOMMENDATION, EXIT_BAD_INPUT = 0, 1, 2
EXIT_SIGINT, EXIT_SIGTERM = 130, 143

EPILOG = """examples:
  edge-opt run --config configs/default.yaml
  edge-opt run --config configs/default.yaml --fresh
  edge-opt status outputs
  edge-opt report outputs
  edge-opt compare outputs_a outputs_b
  edge-opt bench --repeats 5 --seed 42
  edge-opt predict --model outputs/model --input outputs/model/validation_inputs.npy

exit codes: 0 ok, 1 study ran but recommended nothing (best effort exported),
            2 bad input, 130 interrupted (SIGINT), 143 stopped (SIGTERM)"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edge-opt", description="Choose and export the compressed model to ship to an edge device.",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"edge-opt {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run (or resume) a study", epilog="example: edge-opt run --config configs/default.yaml",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("--config", required=True, help="YAML study config")
    r.add_argument("--output-dir", help="override the config's output_dir")
    r.add_argument("--fresh", action="store_true", help="discard stored points and cached checkpoints, start over")
    r.add_argument("--quiet", action="store_true", help="only errors and the final line")
    r.add_argument("--verbose", action="store_true", help="also show per-variant metrics under the progress bar")
    r.add_argument("--seeds", type=int, nargs="+", metavar="N",
                   help="run the whole study once per seed into OUTPUT_DIR/seed_<n>/ and aggregate "
                        "(summary_multi_seed.json/.csv)")

    b = sub.add_parser("bench", help="repeated-run statistics of an MLP per precision mode (seed 002)",
                       epilog="example: edge-opt bench --repeats 5 --seed 42 --precisions float32 int8",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("--repeats", type=int, default=5, help="runs per precision mode (seeds seed..seed+repeats-1)")
    b.add_argument("--seed", type=int, default=42)
    b.add_argument("--layers", type=int, nargs="+", default=[64, 32, 10], help="MLP layer sizes")
    b.add_argument("--activations", nargs="+", default=["relu", "relu", "softmax"])
    b.add_argument("--precisions", nargs="+", default=["float32", "float16", "int8"],
                   help="float32 float16 bfloat16 int8")
    b.add_argument("--epochs", type=int, default=2)
    b.add_argument("--batch-size", type=int, default=32)
    b.add_argument("--samples", type=int, default=256)
    b.add_argument("--output-dir", default="benchmarks/statistical")

    pr = sub.add_parser("predict", help="run an exported model with onnxruntime alone and print class ids",
                        epilog="example: edge-opt predict --model outputs/model --input images.npy")
    pr.add_argument("--model", required=True, help="folder with model.onnx and manifest.json")
    pr.add_argument("--input", required=True, help=".npy file of raw images in [0, 1], (N, C, H, W) or (N, H, W)")
    pr.add_argument("--labels", help="optional .npy of labels: also print the accuracy")

    rp = sub.add_parser("report", help="rebuild tables, plots and report.html of a finished study from its stored results (no re-run)",
                        epilog="example: edge-opt report outputs")
    rp.add_argument("output_dir")

    cp = sub.add_parser("compare", help="side-by-side comparison of two studies (matched config points)",
                        epilog="example: edge-opt compare outputs_a outputs_b")
    cp.add_argument("dir_a")
    cp.add_argument("dir_b")
    cp.add_argument("--output", help="folder for comparison.csv/.html (default: DIR_B/compare)")

    st = sub.add_parser("status", help="list finished and missing points of a study",
                        epilog="example: edge-opt status outputs")
    st.add_argument("output_dir")
    st.add_argument("--config", help="config to compare against (default: the one recorded in the folder)")
    return p


def _cmd_bench(args: argparse.Namespace) -> int:
    import pandas as pd

    from .benchmark import PRECISION_MODES
    from .statistics import run_repeated_benchmarks

    bad = [p for p in args.precisions if p not in PRECISION_MODES]
    if bad or args.repeats < 1 or args.epochs < 1 or args.batch_size < 1 or args.samples < 8:
        msg = (f"The '--precisions' parameter must contain names from {list(PRECISION_MODES)}. Got {bad} instead."
               if bad else "--repeats, --epochs and --batch-size must be >= 1 and --samples >= 8.")
        print(f"error: {msg}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        rows = run_repeated_benchmarks(
            args.layers, args.activations, args.precisions, args.batch_size, args.samples, args.epochs, args.repeats,
            args.seed, args.output_dir,
            on_run=lambda mode, repeat, row: print(f"{mode} repeat {repeat + 1}/{args.repeats}: "
                                                   f"accuracy={row['accuracy']:.4f} latency={row['latency'] * 1e6:.2f} us/sample",
                                                   flush=True))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    cols = ["precision_mode", "repeats", "accuracy_mean", "accuracy_ci95", "latency_mean", "latency_ci95",
            "memory_mean", "energy_mean", "train_time_mean", "on_pareto_frontier"]
    print(pd.DataFrame(rows)[cols].to_string(index=False))
    print(f"written to {args.output_dir} (95 % CIs use Student t)")
    return EXIT_OK


def _cmd_run_seeds(args: argparse.Namespace) -> int:
    from . import atomic
    from .config import ConfigError
    from .pipeline import load_study_config, run_study
    from .progress import Reporter
    from .statistics import aggregate_multi_seed

    try:
        base = load_study_config(args.config, {"output_dir": args.output_dir} if args.output_dir else None)
    except ConfigError as exc:
        for line in exc.errors:
            print(f"error: {line}", file=sys.stderr)
        return EXIT_BAD_INPUT
    root = Path(base.output_dir)
    frames = {}
    for seed in args.seeds:
        cfg = base.model_copy(update={"seed": seed, "output_dir": str(root / f"seed_{seed}")})
        print(f"== seed {seed} -> {cfg.output_dir}", flush=True)
        res = run_study(cfg, fresh=args.fresh, on_event=Reporter(quiet=args.quiet, verbose=args.verbose))
        frames[seed] = res.sweep
    agg = aggregate_multi_seed(frames)
    atomic.write_with(root / "summary_multi_seed.csv", lambda t: agg.to_csv(t, index=False, encoding="utf-8"))
    atomic.write_json(root / "summary_multi_seed.json", {"seeds": list(args.seeds),
                                                          "ci_method": "Student t, 95 %", "rows": agg.to_dict("records")})
    print(agg[["pruning_level", "precision", "backend", "accuracy_mean", "accuracy_ci95", "latency_ms_mean",
               "latency_ms_ci95"]].to_string(index=False))
    return EXIT_OK


class _StopSignals:
    """SIGINT/SIGTERM ask the study to stop after the current variant; a second signal aborts at once."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._old: dict[int, Any] = {}

    def _handler(self, signum: int, _frame: Any) -> None:
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signum
        print(f"\n{signal.Signals(signum).name} received: stopping after the current variant or stage "
              "(send again to abort now)", file=sys.stderr, flush=True)

    def __enter__(self) -> _StopSignals:
        self._old = {s: signal.signal(s, self._handler) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


def _print_errors(lines: Sequence[str]) -> int:
    for line in lines:
        print(f"error: {line}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _interrupted(args: argparse.Namespace, out: str, exc: Exception, signum: int | None) -> int:
    res = exc.args[0] if exc.args else None
    done = f"{res.summary.get('finished_points')} of {res.summary.get('total_points')}" if res is not None else "some"
    print(f"interrupted: {done} points finished and written to {out}. Resume with: edge-opt run --config "
          f"{args.config}" + (f" --output-dir {args.output_dir}" if args.output_dir else ""), file=sys.stderr)
    return EXIT_SIGTERM if signum == signal.SIGTERM else EXIT_SIGINT


def _cmd_run(args: argparse.Namespace) -> int:
    if args.seeds:
        return _cmd_run_seeds(args)
    from .config import ConfigError
    from .data import DataError
    from .pipeline import load_study_config, run_study
    from .progress import Reporter
    from .runner import StudyInterrupted

    try:
        cfg = load_study_config(args.config, {"output_dir": args.output_dir} if args.output_dir else None)
    except ConfigError as exc:
        return _print_errors(exc.errors)
    reporter = Reporter(quiet=args.quiet, verbose=args.verbose)
    with _StopSignals() as stop:
        try:
            result = run_study(cfg, fresh=args.fresh, on_event=reporter, should_stop=lambda: stop.signal is not None,
                               command=["edge-opt", *sys.argv[1:]])
        except ConfigError as exc:
            reporter.close()
            return _print_errors(exc.errors)
        except DataError as exc:
            reporter.close()
            return _print_errors([str(exc)])
        except StudyInterrupted as exc:
            reporter.close()
            return _interrupted(args, cfg.output_dir, exc, stop.signal)
        except KeyboardInterrupt:  # a second signal: stop at once; finished points are in the store
            reporter.close()
            print(f"aborted: finished points are kept in {cfg.output_dir}/study.sqlite. Resume with: edge-opt run "
                  f"--config {args.config}" + (f" --output-dir {args.output_dir}" if args.output_dir else ""),
                  file=sys.stderr)
            return EXIT_SIGTERM if stop.signal == signal.SIGTERM else EXIT_SIGINT
    reporter.close()
    return _report_result(args, result)


def _report_result(args: argparse.Namespace, result: Any) -> int:
    rec = result.summary.get("recommended")
    if not args.quiet:
        for w in result.warnings:
            print(f"warning: {w}")
    print(f"reused {result.reused} stored points, computed {result.computed}; outputs in {result.output_dir}")
    if rec:
        state = "recommended" if rec["goals_met"] else "best effort (goals not met: " + "; ".join(rec["failed_goals"]) + ")"
        print(f"{state}: {rec['backend']} {rec['precision']} pruning={rec['pruning_level']:g} "
              f"accuracy={rec['accuracy']:.4f} latency={rec['latency_ms']:.4f} ms memory={rec['memory_mb']:.3f} MB "
              f"-> {result.output_dir / 'model' / 'model.onnx'}")
    return EXIT_OK if result.recommended else EXIT_NO_RECOMMENDATION


def _cmd_predict(args: argparse.Namespace) -> int:
    import numpy as np

    from .runtime import ArtifactError, predict

    try:
        x = np.load(args.input, allow_pickle=False)
        ids = predict(args.model, x)
    except (ArtifactError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(" ".join(str(int(i)) for i in ids))
    if args.labels:
        y = np.load(args.labels, allow_pickle=False)
        if y.shape != ids.shape:
            print(f"error: labels must have shape {ids.shape}. Got {y.shape} instead.", file=sys.stderr)
            return EXIT_BAD_INPUT
        print(f"accuracy: {float((ids == y).mean()):.6f}", file=sys.stderr)
    return EXIT_OK


def _cmd_status(args: argparse.Namespace) -> int:
    import json

    from .config import ConfigError, config_from_dict
    from .pipeline import load_study_config
    from .runner import stored_results, sweep_points
    from .store import StoreFormatError, StudyStore

    out = Path(args.output_dir)
    db = out / "study.sqlite"
    if not db.is_file():
        print(f"error: no study in {str(out)!r} (study.sqlite not found).", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        if args.config:
            cfg = load_study_config(args.config)
        else:
            rep = json.loads((out / "reproducibility.json").read_text(encoding="utf-8"))
            cfg = config_from_dict(rep["config"])
    except (ConfigError, OSError, KeyError, ValueError) as exc:
        print(f"error: cannot tell which config the study used: {exc}; pass --config.", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        store = StudyStore(db)
    except StoreFormatError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    with store:
        points = sweep_points(cfg)
        found = {r.point: r for r in stored_results(store, cfg, points)[0]}
        for p in points:
            hit = found.get(p)
            state = "missing" if hit is None else ("skipped" if hit.skipped else "error" if hit.error else "finished")
            why = f"  ({hit.skipped})" if hit is not None and hit.skipped else ""
            print(f"{state:8s} {p.backend:20s} {p.precision:5s} pruning={p.pruning_level:g}{why}")
        done = len(found)
    print(f"{done} of {len(points)} points finished")
    return EXIT_OK


def _cmd_report(args: argparse.Namespace) -> int:
    from .config import ConfigError
    from .pipeline import rebuild_report

    try:
        path = rebuild_report(args.output_dir)
    except ConfigError as exc:
        for line in exc.errors:
            print(f"error: {line}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"rebuilt {path}")
    return EXIT_OK


def _cmd_compare(args: argparse.Namespace) -> int:
    from .compare import compare_studies
    from .config import ConfigError

    try:
        table = compare_studies(args.dir_a, args.dir_b, args.output)
    except ConfigError as exc:
        for line in exc.errors:
            print(f"error: {line}", file=sys.stderr)
        return EXIT_BAD_INPUT
    cols = ["pruning_level", "precision", "backend", "accuracy_a", "accuracy_b", "latency_ratio_b_over_a", "significant"]
    print(table[cols].to_string(index=False) if len(table) else "no common config points")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``edge-opt`` console script."""
    args = _parser().parse_args(argv)
    handlers = {"run": _cmd_run, "predict": _cmd_predict, "status": _cmd_status, "bench": _cmd_bench, "report": _cmd_report,
                "compare": _cmd_compare}
    return handlers[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
