"""Model sources: where a study's model comes from, and what it can do.

``name`` (the registry), ``factory`` (the user's code, with optional ``weights``), ``exported`` (a
``torch.export`` program), ``onnx`` (a trained ONNX file), ``python`` (a module handed to
``edge_opt.optimize``). Each loads into a ``ModelSource``: the float module (None for ONNX), the ONNX
file (ONNX only), a ``rebuild`` that makes a fresh module of the same architecture (pruned checkpoints
reload into it), the SHA-256 that identifies the input model, and whether it arrives trained.
Every problem is a ``ModelSourceError`` naming the key and the file.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config import InputSettings, ModelConfig
from ..core import (
    CallableImportError,
    UserCodeError,
    batch_len,
    batch_map,
    batch_parts,
    call_user_code,
    import_callable,
    sha256_file,
)
from ..core import class_scores as as_class_scores
from .data import DataBundle
from .models import create_model
from .onnx_convert import CHECK_IMAGES, OnnxConversion, convert_onnx
from .onnx_files import (
    GraphTransform,
    MissingExternalData,
    batch_free,
    check_batch_free,
    fixed_batch,
    normalise_onnx,
    onnx_model_files,
)
from .raw import ModelInput, takes_images

__all__ = [
    "ExportedModule",
    "ModelSource",
    "ModelSourceError",
    "check_model_fits",
    "check_model_size",
    "file_sha256",
    "load_model_source",
    "normalise_source",
    "onnx_input_spec",
    "onnx_inputs",
    "source_digest",
    "state_dict_sha256",
    "with_onnx_conversion",
]


class ModelSourceError(ValueError):
    """The configured model cannot be loaded (names the key and the file)."""


@dataclass(frozen=True, eq=False)
class ModelSource:
    """A loaded input model and what it can do.

    Attributes:
        kind: name, factory, exported, onnx or python.
        label: ``model_source`` as rows and manifests show it (e.g. ``onnx:model.onnx``).
        module: the float PyTorch module as given (for an ONNX model: the module converted from it, or None).
        onnx_path: the ONNX file the variants are built from (ONNX models only: the input, or its normalised copy
            once ``normalise_source`` ran).
        rebuild: a fresh module of the same architecture (a copy of the converted one for ONNX, or None).
        trained: arrives trained (no baseline training unless ``epochs`` is set).
        file_sha256: SHA-256 of the model file (None for modules built by code).
    """

    kind: str
    label: str
    module: nn.Module | None
    onnx_path: Path | None
    rebuild: Callable[[], nn.Module] | None
    trained: bool
    file_sha256: str | None = None
    conversion: OnnxConversion | None = None  # ONNX: the file converted to PyTorch (module + check), or why not
    graph_transform: GraphTransform | None = None  # ONNX: the graph the variants are built from (model.simplify)

    @property
    def graph_label(self) -> str:
        """The rows' ``graph_transform``: ``onnxslim-<version>`` or ``none`` for an ONNX model, empty otherwise."""
        return self.graph_transform.label if self.graph_transform is not None else ""

    @property
    def torch_free(self) -> bool:
        """No PyTorch module: torch backends and pruning do not apply."""
        return self.module is None

    @property
    def why_torch_free(self) -> str:
        """Why there is no PyTorch module (the skip reasons of the points that need one)."""
        if self.conversion is not None and self.conversion.module is None:
            return f"the ONNX model could not be converted to PyTorch: {self.conversion.reason}"
        return "the model is an ONNX file"


@functools.lru_cache(maxsize=64)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(path)


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file (memoised by path, size and modification time)."""
    st = Path(path).stat()
    return _sha256_cached(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


def model_files_sha256(path: str | Path) -> str:
    """SHA-256 that identifies an ONNX model with its external data: the model file's own hash when it holds
    every weight, else one hash over each file's name and hash (so a changed ``.data`` file changes it)."""
    files = onnx_model_files(path)
    if len(files) == 1:
        return file_sha256(path)
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.name}:{file_sha256(f)}\n".encode())
    return h.hexdigest()


def state_dict_sha256(model: nn.Module) -> str:
    """SHA-256 over a module's state dict (names, dtypes, shapes and bytes, in order)."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        if isinstance(t, torch.Tensor):
            h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _file(key: str, path: str) -> Path:
    p = Path(path)
    if not p.is_file():
        what = "is a folder, not a file" if p.is_dir() else "does not exist"
        raise ModelSourceError(f"The 'model.{key}' file {path!r} {what}.")
    return p


def source_digest(m: ModelConfig) -> str | None:
    """SHA-256 of the model's file (onnx with its external data, exported, weights), or None: part of the
    baseline's key."""
    for key in ("onnx", "exported", "weights"):
        value = getattr(m, key)
        if value is not None and Path(value).is_file():
            return model_files_sha256(value) if key == "onnx" else file_sha256(value)
    return None


def _call_factory(
    fn: Callable[..., Any], params: dict[str, Any], input_shape: tuple[int, ...], num_classes: int, spec: str
) -> nn.Module:
    sig = inspect.signature(fn)
    kwargs = dict(params)
    for name, value in (("input_shape", tuple(input_shape)), ("num_classes", int(num_classes))):
        if name in sig.parameters and name not in kwargs:
            kwargs[name] = value
    try:
        model = call_user_code(f"The 'model.factory' callable {spec!r} (params {params!r})", fn, **kwargs)
    except UserCodeError as exc:
        raise ModelSourceError(str(exc)) from None
    if not isinstance(model, nn.Module):
        raise ModelSourceError(
            f"The 'model.factory' callable {spec!r} must return a torch.nn.Module. Got {type(model).__name__} instead."
        )
    return model.float().eval()


def _torch_load_problem(path: str, exc: Exception) -> str:
    """Why torch could not load ``path`` with ``weights_only=True``, without torch's advice to turn that off."""
    if isinstance(exc, pickle.UnpicklingError) or "weights_only" in str(exc):
        return (
            f"The 'model.weights' file {path!r} holds Python objects besides tensors (a pickled model or "
            "custom classes). edge_opt loads weights with weights_only=True and never runs pickled code: "
            "save the state dict instead, torch.save(model.state_dict(), path)."
        )
    first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    return (
        f"The 'model.weights' file {path!r} is not a state dict torch can read ({type(exc).__name__}: {first}); "
        "save it with torch.save(model.state_dict(), path)."
    )


def _shape_mismatches(own: dict[str, Any], state: dict[str, torch.Tensor]) -> list[str]:
    return [
        f"{k}: file {tuple(state[k].shape)}, model {tuple(own[k].shape)}"
        for k in own
        if isinstance(own[k], torch.Tensor) and tuple(state[k].shape) != tuple(own[k].shape)
    ]


def _load_weights(model: nn.Module, path: str) -> nn.Module:
    p = _file("weights", path)
    try:
        blob = torch.load(p, weights_only=True, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 — a file torch cannot read safely is a config error
        raise ModelSourceError(_torch_load_problem(path, exc)) from None
    state = blob.get("state_dict", blob) if isinstance(blob, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelSourceError(
            f"The 'model.weights' file {path!r} is not a state dict (a mapping of names to tensors)."
        )
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise ModelSourceError(
            f"The 'model.weights' file {path!r} does not fit the model: missing keys "
            f"{missing[:5]}{' …' if len(missing) > 5 else ''}, unexpected keys "
            f"{unexpected[:5]}{' …' if len(unexpected) > 5 else ''}."
        )
    wrong = _shape_mismatches(own, state)
    if wrong:
        raise ModelSourceError(
            f"The 'model.weights' file {path!r} does not fit the model: {len(wrong)} tensor"
            f"{'s have' if len(wrong) != 1 else ' has'} another shape ({'; '.join(wrong[:5])}"
            f"{' …' if len(wrong) > 5 else ''}). Check the factory's params."
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelSourceError(
            f"The 'model.weights' file {path!r} does not fit the model: {' '.join(str(exc).split())[:300]}"
        ) from None
    return model.eval()


class ExportedModule(nn.Module):
    """A ``torch.export`` program's module as an ordinary module: ``train()``/``eval()`` switch only this
    wrapper's flag (the exported graph refuses them; it already runs in the mode it was exported in)."""

    def __init__(self, graph_module: nn.Module) -> None:
        super().__init__()
        self.program = graph_module

    def train(self, mode: bool = True) -> ExportedModule:
        self.training = mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.program(x)


def _load_exported(path: str) -> nn.Module:
    p = _file("exported", path)
    try:
        return ExportedModule(torch.export.load(str(p)).module())
    except Exception as exc:  # noqa: BLE001 — anything torch.export cannot read is a config error
        raise ModelSourceError(
            f"The 'model.exported' file {path!r} is not a program saved with "
            f"torch.export.save ({type(exc).__name__}: {str(exc)[:200]})."
        ) from None


def onnx_input_spec(path: str | Path) -> tuple[str, tuple[int | None, ...]]:
    """(name, shape with None for dynamic dims) of an ONNX model's first input (read once per file version; its
    external data files, read beside it whatever the working folder, must be there at every call).

    Raises:
        ModelSourceError: not ONNX, or an external data file missing.
    """
    first = onnx_inputs(path)[0]
    return first.name, first.dims


def onnx_inputs(path: str | Path) -> tuple[ModelInput, ...]:
    """The inputs an ONNX model declares (``ModelInput``: name, NumPy dtype, dims with None where dynamic), in
    the graph's order; read once per file version, its external data files checked at every call.

    Raises:
        ModelSourceError: not ONNX, an external data file missing, no input, or an input of a type that is not a
            tensor of numbers.
    """
    p = Path(path)
    st = p.stat()
    inputs, files = _onnx_io(str(p.resolve()), st.st_size, st.st_mtime_ns)
    if not all(f.is_file() for f in files):  # a data file gone since the file was read: its error, naming it
        _checked_onnx(str(p.resolve()))
    return inputs


def _checked_onnx(path: str) -> tuple[Any, tuple[Path, ...]]:
    """The model of the ONNX file ``path`` (weights left in their external files) and the files it is made of,
    checked by onnx's checker on the file itself: external data is looked for beside the model file, whatever the
    working folder.

    Raises:
        ModelSourceError: not ONNX, or an external data file missing (naming the model, the file and where).
    """
    import onnx

    try:
        model = onnx.load(path, load_external_data=False)
        files = onnx_model_files(path)
        onnx.checker.check_model(path)
    except MissingExternalData as exc:
        raise ModelSourceError(
            f"The 'model.onnx' file {path!r} keeps its weights in the external data "
            f"file {exc.location!r}, expected at {str(exc.expected)!r} beside the model file, which does not exist: "
            "keep the data file beside the model."
        ) from None
    except Exception as exc:  # noqa: BLE001 — anything onnx cannot read is a config error
        raise ModelSourceError(
            f"The 'model.onnx' file {path!r} is not an ONNX model ({type(exc).__name__}: {str(exc)[:200]})."
        ) from None
    return model, files


@functools.lru_cache(maxsize=16)
def _onnx_io(path: str, size: int, mtime_ns: int) -> tuple[tuple[ModelInput, ...], tuple[Path, ...]]:
    """(the model's inputs, the files it is made of) of an ONNX file.

    Raises:
        ModelSourceError: not ONNX, an external data file missing, no input, or an input that is not a tensor of
            numbers.
    """
    import onnx
    from onnx.helper import tensor_dtype_to_np_dtype

    model, files = _checked_onnx(path)
    inits = {i.name for i in model.graph.initializer}
    graph_inputs = [i for i in model.graph.input if i.name not in inits]
    if not graph_inputs:
        raise ModelSourceError(f"The 'model.onnx' file {str(path)!r} has no input.")
    inputs = []
    for i in graph_inputs:
        tensor = i.type.tensor_type
        try:
            dtype = np.dtype(tensor_dtype_to_np_dtype(tensor.elem_type))
        except (KeyError, TypeError):
            dtype = np.dtype(object)
        if not (np.issubdtype(dtype, np.number) or dtype == np.bool_) or not i.type.HasField("tensor_type"):
            raise ModelSourceError(
                f"The 'model.onnx' file {str(path)!r} has input {i.name!r} of type "
                f"{onnx.TensorProto.DataType.Name(tensor.elem_type)}: inputs must be tensors of numbers."
            )
        dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tensor.shape.dim)
        inputs.append(ModelInput(i.name, dtype.name, dims))
    return tuple(inputs), files


def load_model_source(
    cfg: InputSettings,
    input_shape: tuple[int, ...],
    num_classes: int,
    module: nn.Module | None = None,
    seed: int = 0,
) -> ModelSource:
    """Load the configured model (``module``: the object handed to ``edge_opt.optimize``; ``seed``: the
    training seed, under which a factory builds its model once).

    Raises:
        ModelSourceError: a missing or unreadable file, a factory that does not import or does not return a
            module, weights that do not fit, an ONNX model that is not a one-input float image model.
    """
    m = cfg.model
    kind = m.kind
    if kind == "onnx":
        path = _file("onnx", str(m.onnx))
        onnx_inputs(path)
        return ModelSource("onnx", f"onnx:{m.onnx}", None, path, None, True, file_sha256(path))
    if kind == "exported":
        path = _file("exported", str(m.exported))
        first = _load_exported(str(path))
        return ModelSource(
            "exported",
            f"exported:{m.exported}",
            first,
            None,
            lambda: _load_exported(str(path)),
            True,
            file_sha256(path),
        )
    if kind == "python":
        if module is None:
            raise ModelSourceError("The 'model.python' source needs the module itself: use edge_opt.optimize.")
        pristine = _copy(module)
        return ModelSource("python", f"python:{m.python}", _copy(pristine), None, lambda: _copy(pristine), True)
    if kind == "factory":
        return _factory_source(m, cfg, input_shape, num_classes, seed)
    rebuild = _rebuild(m, input_shape, num_classes)
    check_model_size(rebuild, kind)
    try:
        model = rebuild()
    except (ValueError, TypeError) as exc:
        raise ModelSourceError(f"The 'model.params' parameter is invalid for {m.name!r}: {_short(exc)}") from None
    if m.weights is not None:
        model = _load_weights(model, m.weights)
    file_hash = file_sha256(m.weights) if m.weights is not None else None
    return ModelSource(kind, f"registry:{m.name}", model, None, rebuild, m.trained, file_hash)


def normalise_source(source: ModelSource, simplify: bool, cache_dir: str | Path, sample: torch.Tensor) -> ModelSource:
    """The source whose ONNX graph the study builds its variants from: with ``simplify`` (``model.simplify``),
    onnxslim's normalised copy of the file in ``cache_dir``, checked against it on ``sample`` (preprocessed
    validation images), else the file as given; ``graph_transform`` says which. ``label`` and ``file_sha256`` stay
    the input's. A source that is not an ONNX file comes back unchanged."""
    if source.kind != "onnx" or source.onnx_path is None:
        return source
    arrays = batch_map(sample, lambda t: t.detach().cpu().numpy())
    graph = normalise_onnx(source.onnx_path, cache_dir, arrays, simplify)
    return replace(source, onnx_path=graph.path, graph_transform=graph)


def _first_images(data: DataBundle, n: int) -> torch.Tensor:
    parts, have = [], 0
    for batch in data.val_loader:
        parts.append(batch[0][: n - have])
        have += len(parts[-1])
        if have >= n:
            break
    return torch.cat(parts).float()


def with_onnx_conversion(source: ModelSource, data: DataBundle, images: int = CHECK_IMAGES) -> ModelSource:
    """``source`` with the PyTorch module converted from its ONNX file as given (checked against ONNX Runtime on
    the first ``images`` validation images), or with the reason there is none; other sources come back unchanged.

    The ONNX file stays the model of the unpruned ONNX Runtime / OpenVINO points; the module serves the torch and
    ExecuTorch backends and pruning, ``rebuild`` gives fresh copies of it (pruned checkpoints reload into them).
    """
    if source.kind != "onnx" or source.onnx_path is None or source.conversion is not None:
        return source
    if not data.takes_images:
        why = (
            "the ONNX→PyTorch conversion takes a model with one float image input; this model takes "
            f"{data.source.split('(', 1)[-1].rstrip(')')}: it runs on onnxruntime and openvino, unpruned"
        )
        return replace(source, conversion=OnnxConversion(None, why))
    conversion = convert_onnx(source.onnx_path, _first_images(data, images).numpy())
    if conversion.module is None:
        return replace(source, conversion=conversion)
    pristine = conversion.module
    return replace(source, module=_copy(pristine), rebuild=lambda: _copy(pristine), conversion=conversion)


def _factory_source(
    m: ModelConfig, cfg: InputSettings, input_shape: tuple[int, ...], num_classes: int, seed: int
) -> ModelSource:
    """The user's factory, called once (seeded, so an untrained model starts from the same weights every
    run); the study's other fresh modules are copies of that first build."""
    spec = str(m.factory)
    try:
        fn = import_callable(spec, "model.factory", [cfg.config_dir])
    except CallableImportError as exc:
        raise ModelSourceError(str(exc)) from None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _call_factory(fn, m.params, input_shape, num_classes, spec)
    _check_trainable(sum(p.numel() for p in model.parameters()), "model.factory")
    pristine = _copy(model)
    if m.weights is not None:
        model = _load_weights(model, m.weights)
    file_hash = file_sha256(m.weights) if m.weights is not None else None
    return ModelSource("factory", f"factory:{spec}", model, None, lambda: _copy(pristine), m.trained, file_hash)


def _copy(module: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(module).float().eval()


def _short(exc: BaseException, limit: int = 300) -> str:
    text = str(exc)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _memory_bytes() -> int:
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 16 << 30


# Training holds weights, gradients and two Adam moments (4 × fp32 per parameter) besides activations.
TRAINING_BYTES_PER_PARAMETER = 16


def check_model_size(rebuild: Callable[[], nn.Module], kind: str) -> int:
    """Build a registry model on PyTorch's ``meta`` device (no memory) and refuse one that cannot be trained here.

    Returns:
        The parameter count (0 when the model could not be built on the meta device: the real build decides).
    Raises:
        ModelSourceError: invalid registry-model parameters, or a model whose training would need more
            than half of this machine's memory.
    """
    try:
        with torch.device("meta"):
            probe = rebuild()
    except (ValueError, TypeError) as exc:
        if kind == "name":
            raise ModelSourceError(f"The 'model.params' parameter is invalid: {_short(exc)}") from None
        return 0
    except Exception:  # noqa: BLE001 — a model that cannot be built on the meta device is built for real
        return 0
    n = sum(p.numel() for p in probe.parameters())
    _check_trainable(n)
    return n


def _check_trainable(n: int, key: str = "model.params") -> None:
    """Refuse a model of ``n`` parameters whose training would need more than half of this machine's memory.

    Raises:
        ModelSourceError: naming ``key``, the parameter count, the memory training needs and the machine's.
    """
    need, have = n * TRAINING_BYTES_PER_PARAMETER, _memory_bytes()
    if need > have // 2:
        raise ModelSourceError(
            f"The '{key}' parameter gives a model of {n:,} parameters ({n * 4 / 1e9:.1f} GB "
            f"fp32); training it needs about {need / 1e9:.1f} GB, more than half of this "
            f"machine's {have / 1e9:.1f} GB. Give smaller layers."
        )


def _rebuild(m: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> Callable[[], nn.Module]:
    name = str(m.name)
    return lambda: create_model(name, input_shape, num_classes, **m.params)


def check_model_fits(
    source: ModelSource, input_shape: tuple[int, ...], num_classes: int, sample: torch.Tensor, class_scores: bool = True
) -> int:
    """Run the model on ``sample`` (two preprocessed images) and check that the data fits it.

    ``class_scores``: the metric reads (N, classes) logits against class ids (top1, top5); False for any other
    metric, which judges the output's shape itself (only the input is checked here).

    Returns:
        The number of model outputs (logits); 0 when not ``class_scores`` and the output is not (N, classes).
    Raises:
        ModelSourceError: the data's image shape does not fit the model's input (both shapes named), or the
            labels reach beyond the model's outputs.
    """
    shape = tuple(int(s) for s in input_shape)
    if source.onnx_path is not None:
        inputs = onnx_inputs(source.onnx_path)
        want = inputs[0].dims[1:]
        if takes_images(inputs) and any(w is not None and w != s for w, s in zip(want, shape)):
            raise ModelSourceError(
                f"The data's images have shape {shape} (C, H, W) but the 'model.onnx' file "
                f"{str(source.onnx_path)!r} takes {tuple('?' if w is None else w for w in want)}."
            )
        outputs = _onnx_outputs(source.onnx_path, sample, class_scores)
    else:
        assert source.module is not None
        try:
            with torch.inference_mode():
                logits = call_user_code(f"The model ({source.label})", source.module.eval(), *_module_args(sample))
        except UserCodeError as exc:  # a shape the model cannot take is a data error naming both
            if not isinstance(exc.cause, Exception):
                raise ModelSourceError(str(exc)) from None
            raise ModelSourceError(
                f"The data's images have shape {shape} (C, H, W) but the model "
                f"({source.label}) does not take them: {type(exc.cause).__name__}: "
                f"{(str(exc.cause).splitlines() or [''])[0][:200]}"
            ) from None
        if isinstance(logits, torch.Tensor) and class_scores:
            logits = as_class_scores(logits)  # Caffe2-style (N, C, 1, 1) scores read as (N, C)
        if not isinstance(logits, torch.Tensor) or (class_scores and logits.ndim != 2):
            raise ModelSourceError(
                f"The model ({source.label}) must return (N, classes) logits. Got "
                f"{getattr(logits, 'shape', type(logits).__name__)}."
            )
        outputs = int(logits.shape[1]) if logits.ndim == 2 else 0
    if class_scores and num_classes > outputs:
        raise ModelSourceError(
            f"The labels must be integers in [0, {outputs}) (the model's {outputs} outputs). Got "
            f"labels up to {num_classes - 1}."
        )
    return outputs


def _module_args(sample: Any) -> tuple[torch.Tensor, ...]:
    """A batch as a module's positional arguments: one float image batch, or each input as given."""
    parts = batch_parts(sample)
    return (parts[0].float(),) if len(parts) == 1 and parts[0].is_floating_point() else parts


def _onnx_feed(sess: Any, sample: Any) -> dict[str, np.ndarray]:
    """An ORT session's feed of a batch (one tensor, or one per graph input in its order).

    Raises:
        ModelSourceError: the batch holds another number of inputs than the graph takes.
    """
    parts, names = batch_parts(sample), [i.name for i in sess.get_inputs()]
    if len(parts) != len(names):
        raise ModelSourceError(f"The model takes {len(names)} inputs {names}; the data gives {len(parts)}.")
    return {n: np.ascontiguousarray(p.numpy()) for n, p in zip(names, parts, strict=True)}


def _shapes(parts: tuple[Any, ...]) -> str:
    """``images (1, 8, 8)`` for one input, ``inputs [(24,), (24,)]`` for several: a batch's shapes per sample."""
    if len(parts) == 1:
        return f"images {tuple(parts[0].shape[1:])}"
    return f"inputs {[tuple(p.shape[1:]) for p in parts]}"


def _onnx_outputs(path: Path, sample: Any, class_scores: bool = True) -> int:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    model: Any = str(path)
    parts = batch_parts(sample)
    if fixed_batch(path) not in (None, batch_len(sample)):  # the study runs batches: the graph must take them
        try:
            if len(parts) != 1:
                raise ValueError(
                    f"The 'model.onnx' file {str(path)!r} has a fixed batch size and several inputs: export it "
                    "with a dynamic batch dimension (the study runs batches)."
                )
            free = batch_free(path)
            check_batch_free(free, parts[0].float().numpy(), f"The 'model.onnx' file {str(path)!r}")
        except ValueError as exc:
            raise ModelSourceError(str(exc)) from None
        model = free.SerializeToString()
    try:
        sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
        out = sess.run(None, _onnx_feed(sess, sample))[0]
    except Exception as exc:  # noqa: BLE001 — a model ORT cannot run on the data is a data error
        raise ModelSourceError(
            f"The 'model.onnx' file {str(path)!r} does not run on the data's {_shapes(parts)}: "
            f"{type(exc).__name__}: {str(exc)[:200]}"
        ) from None
    out = as_class_scores(out) if class_scores else out  # Caffe2-style (N, C, 1, 1) scores read as (N, C)
    if out.ndim != 2 and class_scores:
        raise ModelSourceError(
            f"The 'model.onnx' file {str(path)!r} must output (N, classes) logits (or (N, classes, 1, 1)). Got "
            f"shape {out.shape}."
        )
    return int(out.shape[1]) if out.ndim == 2 else 0
