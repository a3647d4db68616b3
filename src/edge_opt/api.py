"""The Python entry points: ``optimize`` (the whole study from a notebook, on a model and data already in memory)
and ``import_vendor_log`` (``edge-opt import-bench``: a vendor tool's report read into a finished study as a row of
a named target, then the study's tables and report rebuilt, nothing re-run)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from torch import nn

from .config import BudgetSettings, ConfigError, config_from_dict
from .deploy import vendor_row
from .device import VendorLogError, read_vendor_log
from .inputs import read_in_memory, read_in_memory_calibration
from .measure import ConfigPoint, target_kind
from .pipeline import StudyResult, rebuild_report, run_study
from .study import VENDOR_KIND, StudyStore, VendorRow, load_stored_study

__all__ = ["import_vendor_log", "optimize", "parse_point"]

IN_MEMORY = "python"


def _model_key(model: Any) -> dict[str, Any]:
    if isinstance(model, nn.Module):
        return {"python": type(model).__name__}
    if isinstance(model, (str, Path)):
        suffix = Path(model).suffix.lower()
        if suffix == ".onnx":
            return {"onnx": str(model)}
        if suffix in (".pt2", ".ep"):
            return {"exported": str(model)}
    raise ConfigError(
        [f"The 'model' parameter must be a torch.nn.Module, an .onnx path or a .pt2 path. Got {model!r} instead."]
    )


def optimize(
    model: nn.Module | str | Path,
    val_data: Any,
    train_data: Any = None,
    calibration_data: Any = None,
    output_dir: str | Path = "outputs",
    **config_overrides: Any,
) -> StudyResult:
    """Run a study on your model and data and return its typed result.

    Args:
        model: a trained ``torch.nn.Module``, or the path of an ``.onnx`` file or a ``.pt2`` exported program.
        val_data: ``(x, y)`` arrays/tensors (images NCHW, NHWC or NHW, uint8 or float; integer labels) or a
            dataset of ``(image, label)`` items — what accuracy is measured on. A dataset needs ``__len__``: a
            map-style one is read by index over ``range(len(ds))``, an iterable one must yield ``len(ds)`` items;
            one without ``__len__`` (a generator) is refused (``list(...)`` it). uint8 images are scaled by 1/255,
            float ones taken as they are; other integer dtypes are refused.
        train_data: the same for fine-tuning after pruning (optional; without it pruned models are not
            fine-tuned, with a warning).
        calibration_data: images (or a dataset) for int8 calibration, scaled by their own dtype and of the data's
            (C, H, W); default the training data, else val_data.
        output_dir: where every output goes (the same files as ``edge-opt run``).
        **config_overrides: any study config key (``pruning_levels=[0, 0.5]``, ``backends=[...]``,
            ``preprocess={"scale": 1/255}`` …).
    Returns:
        The ``StudyResult``: ``recommendation``, ``frontier``, ``sweep`` (the table), ``summary``, ``paths``.
    Raises:
        ConfigError: a bad key or value (one message per problem). DataError: data that does not fit or cannot
            be read, naming what was given and what is expected (a dataset's code failing or exiting included).
    """
    layout = str(config_overrides.get("layout", "auto"))
    cfg = config_from_dict(
        {"dataset": IN_MEMORY, "output_dir": str(output_dir), **config_overrides, "model": _model_key(model)}
    )
    raw = read_in_memory(val_data, train_data, layout, target_kind(cfg.part(BudgetSettings)))
    calibration = None if calibration_data is None else read_in_memory_calibration(calibration_data, raw, layout)
    return run_study(
        cfg,
        module=model if isinstance(model, nn.Module) else None,
        raw_data=raw,
        calibration_images=calibration,
        command=["edge_opt.optimize"],
    )


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def parse_point(text: str) -> ConfigPoint:
    """``backend=…,precision=…,pruning_level=…[,calibration=…]`` → a config point (ConfigError naming the key)."""
    fields: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or key.strip() not in ("backend", "precision", "pruning_level", "calibration"):
            raise ConfigError(
                [f"--point: {part.strip()[:40]!r} is not one of backend=, precision=, pruning_level=, calibration="]
            )
        fields[key.strip()] = value.strip()
    missing = [k for k in ("backend", "precision") if k not in fields]
    if missing:
        raise ConfigError([f"--point must give {missing}; got {text[:80]!r}"])
    try:
        level = float(fields.get("pruning_level", "0"))
    except ValueError:
        raise ConfigError([f"--point pruning_level must be a number; got {fields['pruning_level'][:20]!r}"]) from None
    return ConfigPoint(level, fields["precision"], fields["backend"], fields.get("calibration", ""))


def import_vendor_log(study_dir: str | Path, file: str | Path, target: str, point_text: str) -> VendorRow:
    """Store the report's measurement as a row of ``target`` for the point and rebuild the study's outputs.

    Returns:
        The imported row (its table row is ``row.row()``; the study store keeps ``row.to_dict()``).
    Raises:
        ConfigError: one message per problem of the arguments and the report (all checked before the study is
            read), then a study that cannot be read or has not measured the point.
    """
    errors: list[str] = []
    if not _NAME.match(target) or target == "host":
        errors.append(f"--target must be a name of letters, digits, . _ - (not 'host'); got {target[:40]!r}")
    try:
        point = parse_point(point_text)
    except ConfigError as exc:
        errors += exc.errors
    try:
        measurement = read_vendor_log(file)
    except VendorLogError as exc:
        errors.append(str(exc))
    if errors:
        raise ConfigError(errors)
    study = load_stored_study(study_dir)
    host = next((r for r in study.results if r.point == point and r.ok and r.metrics is not None), None)
    if host is None:
        have = sorted(
            {
                f"backend={r.point.backend},precision={r.point.precision},pruning_level={r.point.pruning_level:g}"
                for r in study.results
                if r.ok
            }
        )[:6]
        raise ConfigError([f"--point {point_text[:80]!r} is not a measured point of the study; measured: {have}"])
    row = vendor_row(study.cfg, host, measurement, target)

    def store_row() -> None:  # under the folder's lock: a running study refuses the import, nothing written
        with StudyStore(Path(study_dir) / "study.sqlite") as store:
            store.put(row.key, row.to_dict(), kind=VENDOR_KIND)

    rebuild_report(study_dir, before=store_row)
    return row
