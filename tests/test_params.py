"""params.yaml is read strictly: each mistake is one line that names the key."""

import pytest

from pipeline.errors import PipelineError
from pipeline.params import load_params
from tests.conftest import ROOT


def test_repository_params_load():
    params = load_params(ROOT / "params.yaml")
    assert params.train.hidden == [50, 80, 30] and params.data.dataset == "fashion-mnist"


def edited(tmp_path, old: str, new: str):
    text = (ROOT / "params.yaml").read_text()
    assert old in text, old
    path = tmp_path / "params.yaml"
    path.write_text(text.replace(old, new, 1))
    return path


@pytest.mark.parametrize(
    "old, new, message",
    [
        ("  epochs: 10", "  epoch: 10", "unknown key 'train.epoch'"),
        ("  epochs: 2\n", "", "missing key 'qat.epochs'"),
        ("  epochs: 10", "  epochs: '10'", "train.epochs: Input should be a valid integer"),
        ("  epochs: 10", "  epochs: -1", "train.epochs: Input should be greater than or equal to 0"),
        ("  epochs: 2", "  epochs: -1", "qat.epochs: Input should be greater than or equal to 0"),
        ("  batch_size: 64", "  batch_size: -8", "train.batch_size: Input should be greater than 0"),
        ("  lr: 0.001", "  lr: [0.001]", "train.lr: Input should be a valid number"),
        (
            "dataset: fashion-mnist",
            "dataset: cifar10",
            "data.dataset: Input should be 'fashion-mnist', 'mnist', 'imagefolder' or 'tensors'",
        ),
        (
            "observer: minmax",
            "observer: kl",
            "static.observer: Input should be 'minmax', 'moving_average_minmax', 'histogram', 'percentile', 'entropy' "
            "or 'mse'",
        ),
        (
            "engine: auto",
            "engine: tpu",
            "quantize.engine: Input should be 'auto', 'x86', 'fbgemm', 'qnnpack' or 'onednn'",
        ),
        (
            "backend: eager",
            "backend: fx",
            "quantize.backend: Input should be 'eager', 'pt2e', 'onnxruntime' or 'openvino'",
        ),
        ("calibration:", "calibraton:", "unknown key 'calibraton'"),
        ("  mean: null", "  mean: [.nan]", "data.mean.0: Input should be a finite number (got nan)"),
        ("  std: null", "  std: [.inf]", "data.std.0: Input should be a finite number (got inf)"),
        ("  lr: 0.001", "  lr: .inf", "train.lr: Input should be a finite number (got inf)"),
        ("seed: 42", "seed: 1180591620717411303424", "seed: Input should be less than 4294967296"),
        ("seed: 42", "seed: -1", "seed: Input should be greater than or equal to 0"),
        ("hidden: [50, 80, 30]", "hidden: [1000000000]", "train.hidden.0: Input should be less than or equal to 16384"),
        (
            "image_size: null",
            "image_size: [100000, 28]",
            "data.image_size.0: Input should be less than or equal to 4096",
        ),
        ("  size: 1000", "  size: 10000000000", "calibration.size: Input should be less than or equal to 1000000"),
        ("batch_sizes: [1, 256]", "batch_sizes: [1, 1000000]", "evaluate.batch_sizes.1: Input should be less than"),
        ("  lr: 0.001", "  lr: [0.001", "not valid YAML"),
        (
            "  op_types: null",
            "  op_types: []",
            "onnxruntime.op_types: List should have at least 1 item after validation",
        ),
    ],
)
def test_mistakes_are_named(tmp_path, old, new, message):
    with pytest.raises(PipelineError) as error:
        load_params(edited(tmp_path, old, new))
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_exponent_floats_read_as_dvc_reads_them(tmp_path):
    # YAML 1.1 readers (PyYAML) take 1e-3 for a string; DVC and this loader take it for a number.
    assert load_params(edited(tmp_path, "  lr: 0.001", "  lr: 1e-3")).train.lr == 0.001


def test_missing_file(tmp_path):
    with pytest.raises(PipelineError, match="cannot read"):
        load_params(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    "arch, engine, resolved", [("mlp", "auto", "x86"), ("cnn", "auto", "onednn"), ("cnn", "fbgemm", "fbgemm")]
)
def test_auto_engine_follows_the_architecture(tmp_path, arch, engine, resolved):
    path = edited(tmp_path, "  arch: mlp", f"  arch: {arch}")
    path.write_text(path.read_text().replace("  engine: auto", f"  engine: {engine}", 1))
    assert load_params(path).engine == resolved
