"""The real-size bench row's study (benchmarks/mobilenetv2_224.yaml): issue 34's 12-point yardstick, as configured."""

from pathlib import Path

from edge_opt.inputs import load_study_data
from edge_opt.pipeline import load_study_config

CONFIG = Path(__file__).resolve().parents[2] / "benchmarks" / "mobilenetv2_224.yaml"


def test_real_size_row_is_the_12_point_mobilenetv2_study_on_fixed_224_images():
    cfg = load_study_config(CONFIG)
    assert cfg.model.name == "mobilenetv2" and cfg.model.params == {"width": 1.0}
    assert len(cfg.pruning_levels) * len(cfg.precisions) * len(cfg.backends) == 12
    assert set(cfg.backends) == {"torch", "onnxruntime", "openvino"} and set(cfg.precisions) == {"fp32", "int8"}
    assert cfg.train_epochs == 0 and cfg.fine_tune_epochs == 0 and cfg.batch_size == 32  # nothing is trained
    data = load_study_data(cfg)
    assert (data.n_val, data.input_shape, data.num_classes) == (192, (3, 224, 224), 10)
    again = load_study_data(cfg)  # fixed images: the same pixels every time
    assert next(iter(again.val_loader))[0].equal(next(iter(data.val_loader))[0])
