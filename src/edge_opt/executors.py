"""Executors: where config points are built and measured.

``local`` (default) runs one point at a time in this process, so measurements never share
cores. ``ray`` submits one Ray task per config point; each task reserves ``cpus_per_task``
CPUs (default: a node's CPU count) so no two timed tasks share a node's cores, rebuilds the
variant from the parent checkpoint sent with it, measures it and returns the row and raw
samples. Results are committed to the study store as they arrive, so resume works across
executors. A task whose worker dies is retried by Ray (``max_retries``) and then becomes an
``error`` row. Pruning and fine-tuning of parents stay on the driver.
"""
from __future__ import annotations

import io
import json
import os
import tempfile
import traceback
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import pandas as pd
import torch

from . import atomic
from .config import StudyConfig, config_from_dict
from .sweep import ConfigPoint, StudyInterrupted, Sweep, _error_row, measure_point, parent_key, point_key

PID_DIR_ENV = "EDGE_OPT_RAY_PID_DIR"  # tests: tasks record their worker PID here so one can be killed


def _checkpoint_bytes(model: torch.nn.Module) -> bytes:
    from .variants.prune import layer_shapes

    buf = io.BytesIO()
    torch.save({"state_dict": model.state_dict(), "layer_shapes": layer_shapes(model)}, buf)
    return buf.getvalue()


def measure_point_task(cfg_dict: dict[str, Any], point: dict[str, Any], parent_blob: bytes) -> tuple[dict, dict, dict]:
    """Body of one Ray task: rebuild data and the parent, build the variant, measure it.

    Returns:
        (row, raw record, variant metadata document)
    """
    pid_dir = os.environ.get(PID_DIR_ENV)
    cfg = config_from_dict(cfg_dict)
    p = ConfigPoint(**point)
    key = point_key(cfg, p)
    if pid_dir:
        Path(pid_dir).mkdir(parents=True, exist_ok=True)
        (Path(pid_dir) / f"{key}.pid").write_text(str(os.getpid()))
    from .data import load_data
    from .models import create_model
    from .variants.backends import BuildContext, build_variant
    from .variants.prune import apply_layer_shapes

    torch.set_num_threads(max(cfg.threads, 1))
    try:
        data = load_data(cfg.dataset, data_dir=cfg.data_dir, image_size=cfg.image_size, batch_size=cfg.batch_size,
                         dataloader_seed=cfg.dataloader_seed, val_fraction=cfg.val_fraction,
                         train_subset=cfg.train_subset, val_subset=cfg.val_subset)
        blob = torch.load(io.BytesIO(parent_blob), weights_only=True, map_location="cpu")
        model = apply_layer_shapes(create_model(cfg.model.name, data.input_shape, data.num_classes, **cfg.model.params),
                                   blob["layer_shapes"])
        model.load_state_dict(blob["state_dict"])
        model.eval()
        calib = data.calibration_batches(cfg.calibration_batches)
        with tempfile.TemporaryDirectory() as tmp:
            ctx = BuildContext(calibration=calib, example_input=next(iter(data.val_loader))[0][:2],
                               workdir=Path(tmp) / "onnx", parent_key=parent_key(cfg, p.pruning_level),
                               quantization_backend=cfg.quantization_backend,
                               calibration_method=cfg.calibration_method, threads=cfg.threads)
            variant = build_variant(p.backend, model, p.precision, ctx)
            row, record = measure_point(variant, p, key, data, cfg, Path(tmp) / "variants")
            meta_files = list((Path(tmp) / "variants").glob("*.json"))
            meta = json.loads(meta_files[0].read_text()) if meta_files else {}
    except Exception as exc:  # noqa: BLE001 — a failing point is an error row, like the local executor
        row = _error_row(p, key, f"{type(exc).__name__}: {exc}"[:2000])
        record, meta = {"traceback": traceback.format_exc(limit=8)}, {}
    import ray

    ctx_ = ray.get_runtime_context()
    row["node_id"] = ctx_.get_node_id()
    return row, record, meta


def _ray_init(cfg: StudyConfig) -> None:
    import ray

    if ray.is_initialized():
        return
    if cfg.ray.address == "local":
        ray.init(num_cpus=cfg.ray.num_cpus, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    else:
        ray.init(address=cfg.ray.address, log_to_driver=False, configure_logging=False)


def node_cpus() -> int:
    """The smallest CPU count among the cluster's alive nodes."""
    import ray

    cpus = [int(n["Resources"].get("CPU", 1)) for n in ray.nodes() if n.get("Alive")]
    return max(1, min(cpus)) if cpus else 1


def run_points_ray(sweep: Sweep, points: Sequence[ConfigPoint],
                   on_event: Optional[Callable[..., None]] = None) -> pd.DataFrame:
    """Run the points not yet in the store as Ray tasks; commit each result as it arrives."""
    import ray

    cfg = sweep.cfg
    on_event = on_event or (lambda kind, **info: None)
    _ray_init(cfg)
    cpus = cfg.ray.cpus_per_task or node_cpus()
    task = ray.remote(num_cpus=cpus, max_retries=cfg.ray.max_retries)(measure_point_task)
    rows: dict[str, dict] = {}
    pending: dict[Any, tuple[ConfigPoint, str]] = {}
    blobs: dict[float, Any] = {}
    cfg_dict = cfg.model_dump()
    for p in points:
        key = point_key(cfg, p)
        hit = sweep.store.get(key) if sweep.store is not None else None
        if hit is not None:
            sweep.reused += 1
            rows[key] = hit
            continue
        if p.pruning_level not in blobs:
            blobs[p.pruning_level] = ray.put(_checkpoint_bytes(sweep.parent(p.pruning_level)))
        ref = task.remote(cfg_dict, {"pruning_level": p.pruning_level, "precision": p.precision,
                                     "backend": p.backend}, blobs[p.pruning_level])
        pending[ref] = (p, key)
    done = 0
    total = len(pending)
    while pending:
        if sweep.should_stop():
            for ref in pending:
                ray.cancel(ref, force=True)
            raise StudyInterrupted(f"stopped with {len(pending)} of {total} Ray tasks unfinished")
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
        for ref in ready:
            p, key = pending.pop(ref)
            try:
                row, record, meta = ray.get(ref)
            except Exception as exc:  # noqa: BLE001 — retries exhausted (worker or node lost): an error row
                row, record, meta = _error_row(p, key, f"Ray task failed after {cfg.ray.max_retries} retries: "
                                                      f"{type(exc).__name__}: {str(exc)[:500]}"), {}, {}
            if meta:
                name = f"{p.backend}_{p.precision}_p{p.pruning_level:g}.json"
                atomic.write_json(sweep.workdir / "variants" / name, meta)
                row["metadata_file"] = str(Path("variants") / name)
            sweep.computed += 1
            if sweep.store is not None:
                sweep.store.put(key, row, record)
            rows[key] = row
            done += 1
            on_event("variant_done", index=done, total=total, point=p, row=row)
    return pd.DataFrame([rows[point_key(cfg, p)] for p in points])
