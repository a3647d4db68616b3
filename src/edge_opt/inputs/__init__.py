"""Inputs stage: data sets (registry and readers of the user's files), model sources (registry models, ONNX
files, factories, exported programs) and training.
"""

from __future__ import annotations

from .data import (
    DATASETS,
    DataBundle,
    digits_dataset,
    list_datasets,
    load_data,
    load_study_data,
    make_loaders,
    register_dataset,
    synthetic_dataset,
)
from .models import MODELS, create_model, list_models, model_param_errors, register_model
from .onnx_convert import ONNX_CONVERTER, OnnxConversion, convert_onnx
from .onnx_files import GraphTransform, MissingExternalData, onnx_model_files, onnx_weight_bytes, onnxslim_label
from .raw import TARGET_KINDS, DataError, RawDataset
from .readers import (
    call_dataset,
    dataset_arrays,
    images_from_array,
    labels_from_array,
    read_image_folder,
    read_in_memory,
    read_in_memory_calibration,
    read_npz,
)
from .sources import (
    ModelSource,
    ModelSourceError,
    check_model_fits,
    file_sha256,
    load_model_source,
    normalise_source,
    onnx_input_spec,
    source_digest,
    state_dict_sha256,
    with_onnx_conversion,
)
from .training import StopRequested, resolve_device, set_deterministic, train_model

__all__ = [
    "DATASETS",
    "DataBundle",
    "DataError",
    "GraphTransform",
    "MODELS",
    "MissingExternalData",
    "ONNX_CONVERTER",
    "ModelSource",
    "ModelSourceError",
    "OnnxConversion",
    "RawDataset",
    "StopRequested",
    "TARGET_KINDS",
    "call_dataset",
    "check_model_fits",
    "convert_onnx",
    "create_model",
    "dataset_arrays",
    "digits_dataset",
    "file_sha256",
    "images_from_array",
    "labels_from_array",
    "list_datasets",
    "list_models",
    "load_data",
    "load_model_source",
    "load_study_data",
    "make_loaders",
    "model_param_errors",
    "normalise_source",
    "onnx_input_spec",
    "onnx_model_files",
    "onnx_weight_bytes",
    "onnxslim_label",
    "read_image_folder",
    "read_in_memory",
    "read_in_memory_calibration",
    "read_npz",
    "register_dataset",
    "register_model",
    "resolve_device",
    "set_deterministic",
    "source_digest",
    "state_dict_sha256",
    "synthetic_dataset",
    "train_model",
    "with_onnx_conversion",
]
