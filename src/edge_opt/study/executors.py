"""Executors: where config points are built and measured.

Both executors map the same ``Sweep.run_point`` steps over the points: ``lookup`` in the
store, ``compute`` (build + measure), ``commit`` (metadata file, store, timings).

``local`` (default, ``edge_opt.study.runner.LocalExecutor``) runs one point at a time in this
process, so measurements never share cores. ``ray`` runs ``compute`` as one Ray task per
config point; each task reserves ``cpus_per_task`` CPUs (default: a node's CPU count) so no
two timed tasks share a node's cores, loads the data through ``load_study_data`` and the
parent from the checkpoint sent with it, and returns the result; the driver ``commit``s it as
it arrives, so resume works across executors. A task whose worker dies is retried by Ray
(``max_retries``) and then becomes an ``error`` result. Pruning and fine-tuning of parents
stay on the driver.
"""

from __future__ import annotations

import io
import os
import tempfile
import traceback
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from ..config import BudgetSettings, InputSettings, StudyConfig, config_from_dict
from ..inputs import ModelSource, load_model_source, normalise_source, onnx_model_files, with_onnx_conversion
from ..measure import ConfigPoint, VariantResult, target_kind, torch_threads
from .runner import PruningUnsupported, StudyInterrupted, Sweep, point_key

__all__ = ["FILE_KEYS", "PID_DIR_ENV", "RayExecutor", "compute_point_task", "node_cpus", "shipped_files"]

PID_DIR_ENV = "EDGE_OPT_RAY_PID_DIR"  # tests: tasks record their worker PID here so one can be killed


def _checkpoint_bytes(model: torch.nn.Module) -> bytes:
    from ..variants import layer_shapes

    buf = io.BytesIO()
    torch.save({"state_dict": model.state_dict(), "layer_shapes": layer_shapes(model)}, buf)
    return buf.getvalue()


def _parent_from_blob(source: ModelSource, blob_bytes: bytes | None) -> torch.nn.Module | None:
    """The float parent sent by the driver, rebuilt through the model's own source (None for an ONNX model)."""
    from ..variants import apply_layer_shapes

    if blob_bytes is None or source.rebuild is None:
        return None
    blob = torch.load(io.BytesIO(blob_bytes), weights_only=True, map_location="cpu")
    model = apply_layer_shapes(source.rebuild(), blob["layer_shapes"])
    model.load_state_dict(blob["state_dict"])
    return model.eval()


def _record_pid(key: str) -> None:
    pid_dir = os.environ.get(PID_DIR_ENV)
    if pid_dir:
        Path(pid_dir).mkdir(parents=True, exist_ok=True)
        (Path(pid_dir) / f"{key}.pid").write_text(str(os.getpid()))


# The files a study reads by path (model and data); they travel with the tasks, so workers need no shared disk.
FILE_KEYS = ("model.onnx", "model.exported", "model.weights", "data_path", "calibration_data_path")
ONNX_DATA = "model.onnx:data:"  # shipped_files' key prefix of an ONNX model's external data files


def shipped_files(cfg: StudyConfig) -> dict[str, tuple[str, bytes]]:
    """{config key: (file name, bytes)} of every file the config names."""
    d = cfg.model_dump()
    out = {}
    for key in FILE_KEYS:
        section, _, name = key.rpartition(".")
        value = (d[section] if section else d).get(name)
        if value and Path(value).is_file():
            out[key] = (Path(value).name, Path(value).read_bytes())
            if key == "model.onnx":  # its external data files travel with it, under the names it gives them
                for extra in onnx_model_files(value)[1:]:
                    rel = extra.relative_to(Path(value).resolve().parent).as_posix()
                    out[f"{ONNX_DATA}{rel}"] = (rel, extra.read_bytes())
    return out


def _materialise(cfg_dict: dict[str, Any], files: dict[str, tuple[str, bytes]], folder: Path) -> dict[str, Any]:
    """The config with each shipped file written under ``folder`` and its key pointing there."""
    d = {**cfg_dict, "model": dict(cfg_dict["model"])}
    for key, (name, blob) in files.items():
        if key.startswith(ONNX_DATA) or key == "model.onnx":  # the ONNX model and its data files side by side
            target = folder / "onnx_model" / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(blob)
            if key == "model.onnx":
                d["model"]["onnx"] = str(target)
            continue
        section, _, field = key.rpartition(".")
        target = folder / f"{field}_{name}"
        target.write_bytes(blob)
        (d[section] if section else d)[field] = str(target)
    return d


def compute_point_task(
    cfg_dict: dict[str, Any],
    point: dict[str, Any],
    parent_blob: bytes | None,
    files: dict[str, tuple[str, bytes]] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Body of one Ray task: ``Sweep.compute`` of one point on a worker (the model's and data's files arrive
    with it). The driver re-keys the result with its own config (file paths differ here).

    Returns:
        (the result's document, its metadata document)
    """
    p = ConfigPoint(**point)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = config_from_dict(_materialise(cfg_dict, files or {}, Path(tmp)))
        key = point_key(cfg, p)
        _record_pid(key)
        try:
            with torch_threads(max(cfg.threads, 1)):  # the worker process runs other tasks after this one
                result, meta = _compute_on_worker(cfg, p, parent_blob, Path(tmp))
        except Exception as exc:  # noqa: BLE001 — a failing point is an error result, like the local executor
            result, meta = (
                VariantResult.failed(p, key, f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc(limit=8)),
                {},
            )
    import ray

    result = result.with_info(node_id=ray.get_runtime_context().get_node_id())
    return result.to_dict(), meta


def _compute_on_worker(
    cfg: StudyConfig, p: ConfigPoint, parent_blob: bytes | None, tmp: Path
) -> tuple[VariantResult, dict[str, Any]]:
    from ..inputs import load_study_data

    inputs = cfg.part(InputSettings)
    data = load_study_data(inputs, targets=target_kind(cfg.part(BudgetSettings)))
    source = with_onnx_conversion(load_model_source(inputs, data.input_shape, data.num_classes, seed=cfg.seed), data)
    sample = next(iter(data.val_loader))[0]  # the driver's check images: the same graph as the driver's
    source = normalise_source(source, cfg.model.simplify_graph, tmp / "work" / "onnx", sample)
    model = _parent_from_blob(source, parent_blob)
    sweep = Sweep(model, data, cfg, tmp / "work", source=source)
    sweep.adopt_parent(p.pruning_level, model)
    return sweep.compute(p)


def _ray_init(cfg: StudyConfig) -> None:
    import ray

    if ray.is_initialized():
        return
    if cfg.ray.address == "local":
        ray.init(num_cpus=cfg.ray.num_cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
    else:
        # user code (a model factory, a data set callable) reaches the workers with the config's folder
        user_code = cfg.model.factory is not None or ":" in cfg.dataset
        env = {"working_dir": cfg.config_dir} if user_code and cfg.config_dir else None
        ray.init(address=cfg.ray.address, log_to_driver=False, configure_logging=False, runtime_env=env)


def node_cpus() -> int:
    """The smallest CPU count among the cluster's alive nodes."""
    import ray

    cpus = [int(n["Resources"].get("CPU", 1)) for n in ray.nodes() if n.get("Alive")]
    return max(1, min(cpus)) if cpus else 1


class RayExecutor:
    """One Ray task per point not yet stored; results committed on the driver as they arrive."""

    def map(self, sweep: Sweep, points: Sequence[ConfigPoint]) -> list[VariantResult]:
        """Run the points; stops (cancelling pending tasks) when ``sweep.should_stop()``."""
        import ray

        cfg = sweep.cfg
        _ray_init(cfg)
        task = ray.remote(num_cpus=cfg.ray.cpus_per_task or node_cpus(), max_retries=cfg.ray.max_retries)(
            compute_point_task
        )
        done: dict[ConfigPoint, VariantResult] = {}
        pending: dict[Any, ConfigPoint] = {}
        blobs: dict[float, Any] = {}
        files = ray.put(shipped_files(cfg))
        for p in points:
            hit = sweep.lookup(p)
            if hit is None and sweep.skip_reason(p) is not None:
                hit = sweep.commit(*sweep.compute(p))  # not applicable: recorded on the driver, no task
            if hit is None and p.pruning_level not in blobs:
                try:
                    parent = sweep.parent(p.pruning_level)
                    blobs[p.pruning_level] = ray.put(_checkpoint_bytes(parent)) if parent is not None else None
                except PruningUnsupported:
                    hit = sweep.commit(*sweep.compute(p))
            if hit is not None:
                done[p] = hit
                continue
            pending[task.remote(cfg.model_dump(), asdict(p), blobs[p.pruning_level], files)] = p
        self._collect(sweep, pending, done)
        return [done[p] for p in points]

    def _collect(self, sweep: Sweep, pending: dict[Any, ConfigPoint], done: dict[ConfigPoint, VariantResult]) -> None:
        import ray

        total, finished = len(pending), 0
        while pending:
            if sweep.should_stop():
                for ref in pending:
                    ray.cancel(ref, force=True)
                raise StudyInterrupted(f"stopped with {len(pending)} of {total} Ray tasks unfinished")
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            for ref in ready:
                p = pending.pop(ref)
                try:
                    doc, meta = ray.get(ref)
                    result = VariantResult.from_dict(doc).with_info(
                        key=point_key(sweep.cfg, p),
                        model_source=sweep.model_source,
                        model_sha256=sweep.model_sha256,
                        graph_transform=sweep.graph_transform,
                    )
                except Exception as exc:  # noqa: BLE001 — retries exhausted (worker or node lost): an error result
                    result, meta = (
                        VariantResult.failed(
                            p,
                            point_key(sweep.cfg, p),
                            f"Ray task failed after {sweep.cfg.ray.max_retries} retries: "
                            f"{type(exc).__name__}: {str(exc)[:500]}",
                        ),
                        {},
                    )
                done[p] = sweep.commit(result, meta)
                finished += 1
                sweep.on_event("variant_done", index=finished, total=total, point=p, row=done[p].row())
