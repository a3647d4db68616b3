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
from .raw import DataError, RawDataset
from .readers import call_dataset, dataset_arrays, images_from_array, labels_from_array, read_image_folder, read_npz
from .sources import (
    ModelSource,
    ModelSourceError,
    check_model_fits,
    file_sha256,
    load_model_source,
    onnx_input_spec,
    source_digest,
    state_dict_sha256,
)
from .training import StopRequested, resolve_device, set_deterministic, train_model

__all__ = [
    "DATASETS",
    "DataBundle",
    "DataError",
    "MODELS",
    "ModelSource",
    "ModelSourceError",
    "RawDataset",
    "StopRequested",
    "call_dataset",
    "check_model_fits",
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
    "onnx_input_spec",
    "read_image_folder",
    "read_npz",
    "register_dataset",
    "register_model",
    "resolve_device",
    "set_deterministic",
    "source_digest",
    "state_dict_sha256",
    "synthetic_dataset",
    "train_model",
]
