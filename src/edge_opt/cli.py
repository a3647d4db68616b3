"""Command line: ``edge-opt run | predict | status | report | bench``.

Exit codes: 0 ok; 1 the study ran but no configuration met every goal (a best-effort
model is still exported); 2 bad input (config, data, arguments); 130 interrupted by
SIGINT; 143 stopped by SIGTERM.
"""

from __future__ import annotations

import argparse
import os
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
    p = argparse.ArgumentParser(
        prog="edge-opt",
        description="Choose and export the compressed model to ship to an edge device.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"edge-opt {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    _run_command(sub)
    _bench_command(sub)
    _predict_command(sub)
    _study_commands(sub)
    _device_commands(sub)
    return p


def _run_command(sub: Any) -> None:
    """The ``run`` sub-command: run (or resume) a study, once or once per seed."""
    r = sub.add_parser(
        "run",
        help="run (or resume) a study",
        epilog="example: edge-opt run --config configs/default.yaml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    r.add_argument("--config", required=True, help="YAML study config")
    r.add_argument("--output-dir", help="override the config's output_dir")
    r.add_argument(
        "--fresh",
        action="store_true",
        help="delete what an earlier study wrote in the output folder (store, caches, outputs) and start "
        "over; refused in a folder that holds no study",
    )
    r.add_argument(
        "--wait",
        action="store_true",
        help="wait for another run that holds the output folder's lock instead of refusing",
    )
    r.add_argument("--quiet", action="store_true", help="only errors and the final line")
    r.add_argument("--verbose", action="store_true", help="also show per-variant metrics under the progress bar")
    r.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        metavar="N",
        help="run the whole study once per seed into OUTPUT_DIR/seed_<n>/ and aggregate (summary_multi_seed.json/.csv)",
    )


def _bench_command(sub: Any) -> None:
    """The ``bench`` sub-command: repeated-run statistics of a small MLP per precision mode."""
    b = sub.add_parser(
        "bench",
        help="repeated-run statistics of a small MLP per precision mode (float32, float16, bfloat16, int8)",
        epilog="example: edge-opt bench --repeats 5 --seed 42 --precisions float32 int8",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    b.add_argument("--repeats", type=int, default=5, help="runs per precision mode (seeds seed..seed+repeats-1)")
    b.add_argument("--seed", type=int, default=42)
    b.add_argument("--layers", type=int, nargs="+", default=[64, 32, 10], help="MLP layer sizes")
    b.add_argument("--activations", nargs="+", default=["relu", "relu", "softmax"])
    b.add_argument(
        "--precisions", nargs="+", default=["float32", "float16", "int8"], help="float32 float16 bfloat16 int8"
    )
    b.add_argument("--epochs", type=int, default=2)
    b.add_argument("--batch-size", type=int, default=32)
    b.add_argument("--samples", type=int, default=256)
    b.add_argument("--output-dir", default="benchmarks/statistical")


def _predict_command(sub: Any) -> None:
    """The ``predict`` sub-command: run an exported model with onnxruntime alone."""
    pr = sub.add_parser(
        "predict",
        help="run an exported model with its runtime alone: print class ids, or write its outputs to .npy",
        epilog="examples: edge-opt predict --model outputs/model --input images.npy | "
        "edge-opt predict --model outputs/model --input ids=ids.npy --input mask=mask.npy --output out.npy",
    )
    pr.add_argument(
        "--model",
        required=True,
        help="folder with manifest.json and the model it names (model.onnx and its data files, model.xml + .bin, "
        "model.pte), or that model file; every file is checked against the manifest's SHA-256 first",
    )
    pr.add_argument(
        "--input",
        required=True,
        action="append",
        help=".npy file of raw images in [0, 1], (N, C, H, W) or (N, H, W); for a model with several inputs give "
        "it once per input as NAME=FILE.npy (the names the model's inputs have)",
    )
    pr.add_argument("--labels", help="optional .npy of labels: also print the accuracy (classifiers)")
    pr.add_argument(
        "--output",
        help="write the model's outputs to this .npy file (needed when the model is not a classifier: its manifest's "
        "metric is not top1, or its output is not (N, classes)); with several outputs one file per output, "
        "OUTPUT's stem + '.' + the output's name + '.npy' (out.npy -> out.boxes.npy, out.scores.npy)",
    )
    pr.add_argument(
        "--scale",
        type=float,
        help="multiply integer inputs by this first (e.g. 1/255 for 0-255 pixels, if the model was "
        "trained on [0, 1] values); integer inputs are refused without it",
    )


def _study_commands(sub: Any) -> None:
    """The ``report`` and ``compare`` sub-commands over finished studies."""
    rp = sub.add_parser(
        "report",
        help="rebuild tables, plots and report.html of a finished study from its stored results (no re-run)",
        epilog="example: edge-opt report outputs",
    )
    rp.add_argument("output_dir")

    cp = sub.add_parser(
        "compare",
        help="side-by-side comparison of two studies (matched config points)",
        epilog="example: edge-opt compare outputs_a outputs_b",
    )
    cp.add_argument("dir_a")
    cp.add_argument("dir_b")
    cp.add_argument("--output", help="folder for comparison.csv/.html (default: DIR_B/compare)")


def _device_commands(sub: Any) -> None:
    """The ``status``, ``import-bench`` and ``agent`` sub-commands."""
    st = sub.add_parser(
        "status", help="list finished and missing points of a study", epilog="example: edge-opt status outputs"
    )
    st.add_argument("output_dir")
    st.add_argument("--config", help="config to compare against (default: the one recorded in the folder)")

    ib = sub.add_parser(
        "import-bench",
        help="add a vendor tool's measurement (OpenVINO benchmark_app JSON report, "
        "LiteRT benchmark_model log) to a study as a row of a named target",
        epilog="example: edge-opt import-bench benchmark_report.json --study outputs --target board "
        "--point backend=openvino,precision=int8,pruning_level=0.5",
    )
    ib.add_argument("file")
    ib.add_argument("--study", required=True, help="the study folder")
    ib.add_argument("--target", required=True, help="the device the tool ran on (the rows' measured_on)")
    ib.add_argument(
        "--point",
        required=True,
        help="the config point the artifact was: backend=…,precision=…,pruning_level=…[,calibration=…]",
    )

    ag = sub.add_parser(
        "agent",
        help="serve measurements on this device (runs with a runtime alone, no torch "
        "for ONNX Runtime / OpenVINO artifacts)",
        epilog="example: edge-opt agent --port 8765 --token-file ~/.edge_opt_token "
        "(reach it through: ssh -L 8765:127.0.0.1:8765 device)",
    )
    ag.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1: reach it by SSH tunnel; another address is warned about: "
        "reachable from the network, token-protected, plain HTTP)",
    )
    ag.add_argument("--port", type=int, default=8765)
    ag.add_argument(
        "--token-file",
        required=True,
        help="file whose first line is the token clients must send as 'Authorization: Bearer <token>'; "
        "refused when group or others may read or write it (chmod 600 FILE)",
    )
    ag.add_argument("--cache-dir", default=None, help="where sent artifacts are kept (default ~/.cache/edge_opt/agent)")
    ag.add_argument("--max-artifact-mb", type=float, default=512.0, help="largest file accepted (MB)")
    ag.add_argument("--cores", default=None, help="pin the agent to these cores, e.g. 1 or 2,3")
    ag.add_argument(
        "--max-request-s",
        type=float,
        default=600.0,
        help="wall time one measurement may take (default 600): a request planned longer is refused (422), "
        "a running one is stopped at the limit",
    )


def _cmd_import_bench(args: argparse.Namespace) -> int:
    from .api import import_vendor_log
    from .config import ConfigError

    try:
        row = import_vendor_log(args.study, args.file, args.target, args.point)
    except ConfigError as exc:
        return _print_errors(exc.errors)
    print(
        f"imported {row.source} on {args.target}: {row.point.backend} {row.point.precision} "
        f"pruning={row.point.pruning_level:g} latency={row.latency_ms:.4f} ms -> {args.study}"
    )
    return EXIT_OK


def _bind_errors(host: str, port: int) -> list[str]:
    """Whether the agent could listen at host:port (an address in use or not of this machine is an error)."""
    import socket

    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
    except OSError as exc:
        return [f"--host/--port: cannot listen on {host}:{port} ({exc.strerror or exc})"]
    return []


def _agent_token(path: str) -> tuple[str, list[str]]:
    """The token in ``path`` and what is wrong with it: unreadable, short, or — like an ssh private key — open to
    group or others (POSIX modes)."""
    import shlex
    import stat

    try:
        token = Path(path).read_text(encoding="utf-8").splitlines()[0].strip()
    except (OSError, IndexError, UnicodeDecodeError) as exc:
        return "", [f"--token-file {path!r} is not readable or empty ({type(exc).__name__})"]
    errors = []
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if os.name == "posix" and mode & 0o077:
        errors.append(
            f"--token-file {path} has mode {mode:04o}: group or others may read or write the token; "
            f"make it private with: chmod 600 {shlex.quote(path)}"
        )
    if len(token) < 16:
        errors.append("--token-file: the token must be at least 16 characters")
    return token, errors


def _loopback(host: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _cmd_agent(args: argparse.Namespace) -> int:
    from .device import serve

    token, errors = _agent_token(args.token_file)
    if not 1 <= args.port <= 65535:
        errors.append(f"--port must be in [1, 65535]; got {args.port}")
    if not 0 < args.max_artifact_mb <= 65536:
        errors.append(f"--max-artifact-mb must be in (0, 65536]; got {args.max_artifact_mb}")
    if not 0 < args.max_request_s <= 86400:
        errors.append(f"--max-request-s must be in (0, 86400]; got {args.max_request_s}")
    cores = None
    if args.cores:
        try:
            cores = [int(c) for c in args.cores.split(",")]
        except ValueError:
            errors.append(f"--cores must be core numbers separated by commas; got {args.cores!r}")
        allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        if cores is not None and allowed is not None and not set(cores) <= set(allowed):
            errors.append(f"--cores must be among the cores this process may use {allowed}; got {args.cores!r}")
    if not errors:
        errors += _bind_errors(args.host, args.port)
    if errors:
        return _print_errors(errors)
    if not _loopback(args.host):
        print(
            f"warning: --host {args.host} is not a loopback address: the agent is reachable from the network, "
            "protected by the token alone, over plain HTTP (token and artifacts unencrypted); prefer 127.0.0.1 "
            "and an SSH tunnel",
            file=sys.stderr,
        )
    cache = Path(args.cache_dir) if args.cache_dir else Path.home() / ".cache" / "edge_opt" / "agent"
    print(f"edge-opt agent on http://{args.host}:{args.port} (cache {cache})", flush=True)
    serve(args.host, args.port, token, cache, args.max_artifact_mb, cores, max_request_s=args.max_request_s)
    return EXIT_OK


def _cmd_bench(args: argparse.Namespace) -> int:
    import pandas as pd

    from .bench import PRECISION_MODES, run_repeated_benchmarks

    bad = [p for p in args.precisions if p not in PRECISION_MODES]
    if bad or args.repeats < 1 or args.epochs < 1 or args.batch_size < 1 or args.samples < 8:
        msg = (
            f"The '--precisions' parameter must contain names from {list(PRECISION_MODES)}. Got {bad} instead."
            if bad
            else "--repeats, --epochs and --batch-size must be >= 1 and --samples >= 8."
        )
        print(f"error: {msg}", file=sys.stderr)
        return EXIT_BAD_INPUT
    from .config import ConfigError
    from .pipeline import check_output_dir

    try:
        check_output_dir(args.output_dir, create=False)  # before any training
    except ConfigError as exc:
        return _print_errors([e.replace("'output_dir'", "'--output-dir'") for e in exc.errors])
    try:
        rows = run_repeated_benchmarks(
            args.layers,
            args.activations,
            args.precisions,
            args.batch_size,
            args.samples,
            args.epochs,
            args.repeats,
            args.seed,
            args.output_dir,
            on_run=lambda mode, repeat, row: print(
                f"{mode} repeat {repeat + 1}/{args.repeats}: "
                f"accuracy={row['accuracy']:.4f} latency={row['latency'] * 1e6:.2f} us/sample",
                flush=True,
            ),
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    cols = [
        "precision_mode",
        "repeats",
        "accuracy_mean",
        "accuracy_ci95",
        "latency_mean",
        "latency_ci95",
        "memory_mean",
        "energy_mean",
        "train_time_mean",
        "on_pareto_frontier",
    ]
    print(pd.DataFrame(rows)[cols].to_string(index=False))
    print(f"written to {args.output_dir} (95 % CIs use Student t)")
    return EXIT_OK


MAX_SEED = 2**32 - 1


def _seed_errors(seeds: Sequence[int]) -> list[str]:
    bad = [x for x in seeds if not 0 <= x <= MAX_SEED]
    errors = [f"The '--seeds' parameter must hold integers in [0, {MAX_SEED}]. Got {bad[:5]} instead."] if bad else []
    if len(set(seeds)) != len(seeds):
        errors.append(f"The '--seeds' parameter must not repeat a seed. Got {list(seeds)[:20]} instead.")
    return errors


def _seeds_root(root: Path) -> list[str]:
    """Errors for the root folder of a multi-seed run (checked before any seed runs; nothing written)."""
    from .config import ConfigError
    from .core import foreign_entries
    from .pipeline import check_output_dir

    try:
        check_output_dir(root, create=False)
    except ConfigError as exc:
        return exc.errors
    foreign = [f for f in foreign_entries(root, limit=50) if not f.startswith("summary_multi_seed.")]
    if foreign:
        return [
            f"The 'output_dir' folder {str(root)!r} holds files that no edge_opt study wrote "
            f"({', '.join(repr(f) for f in foreign[:3])}); give another output_dir for the per-seed studies."
        ]
    return []


def _option_named(errors: list[str], args: argparse.Namespace) -> list[str]:
    """A config's errors, the output folder's own line naming the ``--output-dir`` option when that gave it
    (an unknown key's list of allowed keys still says ``output_dir``)."""
    mine = "The 'output_dir' parameter"
    return (
        [e.replace(mine, "The '--output-dir' parameter", 1) if e.startswith(mine) else e for e in errors]
        if args.output_dir
        else errors
    )


def _cmd_run_seeds(args: argparse.Namespace) -> int:
    from .config import ConfigError
    from .pipeline import load_study_config

    try:
        base = load_study_config(args.config, {"output_dir": args.output_dir} if args.output_dir else None)
    except ConfigError as exc:
        return _print_errors(_option_named(exc.errors, args))
    root = Path(base.output_dir)
    errors = _seed_errors(args.seeds) or _seeds_root(root)
    if errors:
        return _print_errors(errors)
    with _StopSignals() as stop:
        return _run_seeds(args, base, root, stop)


def _run_seeds(args: argparse.Namespace, base: Any, root: Path, stop: _StopSignals) -> int:
    from .bench import aggregate_multi_seed
    from .config import ConfigError
    from .core import atomic
    from .inputs import DataError
    from .pipeline import run_study
    from .report import Reporter
    from .study import StudyInterrupted

    frames = {}
    for seed in args.seeds:
        cfg = base.model_copy(update={"seed": seed, "output_dir": str(root / f"seed_{seed}")})
        print(f"== seed {seed} -> {cfg.output_dir}", flush=True)
        reporter = Reporter(quiet=args.quiet, verbose=args.verbose)
        try:
            res = run_study(
                cfg,
                fresh=args.fresh,
                on_event=reporter,
                should_stop=lambda: stop.signal is not None,
                command=["edge-opt", *sys.argv[1:]],
                wait=args.wait,
            )
        except (ConfigError, DataError) as exc:
            reporter.close()
            return _print_errors(exc.errors if isinstance(exc, ConfigError) else [str(exc)])
        except (StudyInterrupted, KeyboardInterrupt):
            reporter.close()
            print(
                f"interrupted during seed {seed}: the seeds before it are complete in {root}, its finished points "
                f"are kept. Resume with: {_resume_command(args)}",
                file=sys.stderr,
            )
            return EXIT_SIGTERM if stop.signal == signal.SIGTERM else EXIT_SIGINT
        reporter.close()
        frames[seed] = res.sweep
    agg = aggregate_multi_seed(frames)
    atomic.write_with(root / "summary_multi_seed.csv", lambda t: agg.to_csv(t, index=False, encoding="utf-8"))
    atomic.write_json(
        root / "summary_multi_seed.json",
        {"seeds": list(args.seeds), "ci_method": "Student t, 95 %", "rows": agg.to_dict("records")},
    )
    print(
        agg[
            [
                "pruning_level",
                "precision",
                "backend",
                "accuracy_mean",
                "accuracy_ci95",
                "latency_ms_mean",
                "latency_ms_ci95",
            ]
        ].to_string(index=False)
    )
    return EXIT_OK


def _resume_command(args: argparse.Namespace) -> str:
    cmd = f"edge-opt run --config {args.config}"
    if args.output_dir:
        cmd += f" --output-dir {args.output_dir}"
    if args.seeds:
        cmd += " --seeds " + " ".join(str(x) for x in args.seeds)
    return cmd


class _StopSignals:
    """SIGINT/SIGTERM ask the study to stop after the current variant; a second signal aborts at once."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._old: dict[int, Any] = {}

    def _handler(self, signum: int, _frame: Any) -> None:
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signum
        print(
            f"\n{signal.Signals(signum).name} received: stopping after the current variant or stage "
            "(send again to abort now)",
            file=sys.stderr,
            flush=True,
        )

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
    done = f"{res.finished_points} of {res.total_points}" if res is not None else "some"
    print(
        f"interrupted: {done} points finished and written to {out}. Resume with: {_resume_command(args)}",
        file=sys.stderr,
    )
    return EXIT_SIGTERM if signum == signal.SIGTERM else EXIT_SIGINT


def _cmd_run(args: argparse.Namespace) -> int:
    if args.seeds:
        return _cmd_run_seeds(args)
    from .config import ConfigError
    from .inputs import DataError
    from .pipeline import load_study_config, run_study
    from .report import Reporter
    from .study import StudyInterrupted

    try:
        cfg = load_study_config(args.config, {"output_dir": args.output_dir} if args.output_dir else None)
    except ConfigError as exc:
        return _print_errors(_option_named(exc.errors, args))
    reporter = Reporter(quiet=args.quiet, verbose=args.verbose)
    with _StopSignals() as stop:
        try:
            result = run_study(
                cfg,
                fresh=args.fresh,
                on_event=reporter,
                should_stop=lambda: stop.signal is not None,
                command=["edge-opt", *sys.argv[1:]],
                wait=args.wait,
            )
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
            print(
                f"aborted: finished points are kept in {cfg.output_dir}/study.sqlite. Resume with: "
                f"{_resume_command(args)}",
                file=sys.stderr,
            )
            return EXIT_SIGTERM if stop.signal == signal.SIGTERM else EXIT_SIGINT
    reporter.close()
    return _report_result(args, result)


def _report_result(args: argparse.Namespace, result: Any) -> int:
    rec = result.recommendation
    artifact = result.outcome.artifact if result.outcome is not None else None
    failed = artifact.error if artifact is not None else None  # the chosen model cannot be shipped: an error
    if not args.quiet:
        for w in result.warnings:
            if w != failed:
                print(f"warning: {w}")
    total = result.total_points
    extra = result.reused + result.computed - total
    grid = f"{total} config points" + (" + the fp32 baseline the grid does not list" if extra > 0 else "")
    print(
        f"reused {result.reused} stored points, computed {result.computed} (of {grid}); outputs in {result.output_dir}"
    )
    if rec is not None:
        state = "recommended" if rec.goals_met else "best effort (goals not met: " + "; ".join(rec.failed_goals) + ")"
        print(
            f"{state}: {rec.backend} {rec.precision} pruning={rec.pruning_level:g} "
            f"accuracy={rec.accuracy:.4f} latency={rec.latency_ms:.4f} ms memory={rec.memory_mb:.3f} MB "
            f"-> {result.output_dir / (rec.artifact or 'model')}"
        )
    if failed:  # not exit 1: that says the goals were not met
        return _print_errors([f"{failed} (the other outputs are in {result.output_dir}; no model/ folder)"])
    return EXIT_OK if result.goals_met else EXIT_NO_RECOMMENDATION


def _cmd_predict(args: argparse.Namespace) -> int:
    from .core import ArtifactError, class_ids, class_scores, predict_outputs

    try:
        x = _predict_inputs(args.input)
        y = _load_npy(args.labels, "--labels") if args.labels else None  # every input checked before output
        outputs, manifest = predict_outputs(args.model, x, scale=args.scale)
        arrays = list(outputs.values())
        recorded = manifest.get("metric")
        metric = str(recorded.get("name", "top1")) if isinstance(recorded, dict) else "top1"
        classifier = metric == "top1" and len(arrays) == 1 and class_scores(arrays[0]).ndim == 2  # (N, C[, 1, 1])
        ids = class_ids(arrays[0], y, f"The '--labels' file {args.labels!r}") if classifier else None
        if not classifier and (y is not None or not args.output):
            raise ValueError(
                f"The model is not a classifier (metric {metric!r}, outputs "
                f"{ {k: v.shape for k, v in outputs.items()} }): pass --output FILE.npy to write its outputs"
                + ("; --labels applies to classifiers only." if y is not None else ".")
            )
        written = _write_outputs(outputs, args.output) if args.output else []
    except (ArtifactError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    for name, path, array in written:
        print(f"{name}: {path} {tuple(array.shape)} {array.dtype}", file=sys.stderr if ids is not None else sys.stdout)
    if ids is not None:
        print(" ".join(str(int(i)) for i in ids))
    if ids is not None and y is not None:
        print(f"accuracy: {float((ids == y).mean()):.6f}", file=sys.stderr)
    return EXIT_OK


def _predict_inputs(values: Sequence[str]) -> Any:
    """``--input``: one .npy file (a one-input model), or NAME=FILE.npy once per model input (a mapping)."""
    named = [v for v in values if "=" in v and not Path(v).is_file()]
    if not named and len(values) == 1:
        return _load_npy(values[0], "--input")
    if len(named) != len(values):
        raise ValueError(
            "The '--input' parameter must be one .npy file, or NAME=FILE.npy once per model input. Got "
            f"{list(values)} instead."
        )
    pairs = [v.split("=", 1) for v in values]
    names = [n for n, _ in pairs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice or not all(names):
        raise ValueError(f"The '--input' parameter must name each model input once. Got {names} instead.")
    return {name: _load_npy(path, f"--input {name}") for name, path in pairs}


def _write_outputs(outputs: dict[str, Any], target: str) -> list[tuple[str, Path, Any]]:
    """The outputs as ``.npy``: to ``target`` for one output, else one file per output named by the output's name
    (``out.npy`` → ``out.<name>.npy``, the name's unsafe characters as ``_``)."""
    import re

    import numpy as np

    path = Path(target)
    if path.suffix != ".npy":
        raise ValueError(f"The '--output' parameter must name a .npy file. Got {target!r} instead.")
    if len(outputs) == 1:
        files = [(name, path, array) for name, array in outputs.items()]
    else:
        safe = {name: re.sub(r"[^A-Za-z0-9_.-]", "_", name) for name in outputs}
        if len(set(safe.values())) != len(safe):
            raise ValueError(f"The model's output names {list(outputs)} do not give one file name each.")
        files = [(name, path.with_name(f"{path.stem}.{safe[name]}.npy"), array) for name, array in outputs.items()]
    for _, file, array in files:
        np.save(file, array)
    return files


def _load_npy(path: str, flag: str) -> Any:
    """The array in a ``.npy`` file given to ``predict`` (no pickles); a ValueError naming the flag and file if not."""
    import numpy as np

    what = f"The '{flag}' parameter must name a .npy file holding one array. Got {path!r}"
    if Path(path).is_file() and Path(path).stat().st_size == 0:
        raise ValueError(f"{what}, which is empty (0 bytes).")
    try:
        data = np.load(path, allow_pickle=False)
    except OSError as exc:
        raise ValueError(f"{what}, which cannot be read ({exc.strerror or exc}).") from None
    except (EOFError, ValueError) as exc:
        why = "it is not a .npy file, or holds Python objects" if "pickle" in str(exc) else str(exc)
        raise ValueError(f"{what}, which is not a readable .npy array of numbers ({why}).") from None
    if not isinstance(data, np.ndarray):
        data.close()
        raise ValueError(f"{what}, which is an .npz archive of several arrays.")
    return data


def _cmd_status(args: argparse.Namespace) -> int:
    from .config import ConfigError, VariantSettings
    from .pipeline import load_study_config
    from .study import StudyStore, load_search, load_stored_study, stored_results, sweep_points

    out = Path(args.output_dir)
    try:
        study = load_stored_study(out)  # the config of the folder's last run, from its store
        cfg = load_study_config(args.config) if args.config else study.cfg
        search = study.search if not args.config else load_search(cfg, out)
    except ConfigError as exc:
        return _print_errors(exc.errors)
    with StudyStore(out / "study.sqlite") as store:
        points = search.points if search is not None else sweep_points(cfg.part(VariantSettings))
        found = {r.point: r for r in stored_results(store, cfg, points, untimed=search is not None)[0]}
    for p in points:
        hit = found.get(p)
        state = "missing" if hit is None else ("skipped" if hit.skipped else "error" if hit.error else "finished")
        why = f"  ({hit.skipped})" if hit is not None and hit.skipped else ""
        print(f"{state:8s} {p.backend:20s} {p.precision:5s} pruning={p.pruning_level:g}{why}")
    if search is None:
        print(f"{len(found)} of {len(points)} points finished")
        return EXIT_OK
    print(_search_status(search))
    return EXIT_OK


def _search_status(search: Any) -> str:
    budget = f"{search.n_trials}" if search.n_trials is not None else "no n_trials"
    best = search.best
    best_text = (
        "best so far: none meets every budget"
        if best is None
        else f"best so far: trial {best.number} {best.point.backend} {best.point.precision} "
        f"pruning={best.point.pruning_level:g} accuracy={best.accuracy:.4f} "
        f"device latency={best.latency_ms:.4f} ms"
    )
    return (
        f"search {search.strategy}: {len(search.trials)} trials done, {len(search.points)} of {budget} distinct "
        f"points (space: {search.space_size} points; timeout_s={search.timeout_s}); {best_text}"
    )


def _cmd_report(args: argparse.Namespace) -> int:
    from .config import ConfigError
    from .pipeline import rebuild_report

    try:
        path = rebuild_report(args.output_dir)
    except ConfigError as exc:
        return _print_errors(exc.errors)
    print(f"rebuilt {path}")
    return EXIT_OK


def _cmd_compare(args: argparse.Namespace) -> int:
    from .config import ConfigError
    from .report import compare_studies

    try:
        table, warnings = compare_studies(args.dir_a, args.dir_b, args.output, with_warnings=True)
    except ConfigError as exc:
        return _print_errors(exc.errors)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    metric = table.attrs.get("metric")
    scores = ["accuracy_a", "accuracy_b"] if metric is None else ["metric_a", "metric_b", "metric_drop_b_vs_a"]
    cols = ["pruning_level", "precision", "backend", *scores, "latency_ratio_b_over_a", "significant"]
    if metric is not None:
        way = "higher" if metric["higher_is_better"] else "lower"
        print(f"metric: {metric.get('display_name') or metric['name']} ({way} is better)")
    print(table[cols].to_string(index=False) if len(table) else "no common config points")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``edge-opt`` console script."""
    args = _parser().parse_args(argv)
    handlers = {
        "run": _cmd_run,
        "predict": _cmd_predict,
        "status": _cmd_status,
        "bench": _cmd_bench,
        "report": _cmd_report,
        "compare": _cmd_compare,
        "agent": _cmd_agent,
        "import-bench": _cmd_import_bench,
    }
    return handlers[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
