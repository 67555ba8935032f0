"""Determinism, and artifacts that are wrong in ways a user can produce by accident."""

import contextlib
import shutil

import numpy
import torch

from pipeline.__main__ import app
from pipeline.paths import INT8_MODELS
from tests.conftest import IDX_ARCH, CliRunner
from tests.test_cli import assert_clean_failure, run

STAGES = ("train", "export", "dynamic", "static", "qat")


def same(a, b) -> bool:
    """Exact equality through state-dict values: tensors (quantized ones included), tuples, dtypes."""
    if isinstance(a, torch.Tensor):
        if a.is_quantized:
            return (
                b.is_quantized
                and a.qscheme() == b.qscheme()
                and torch.equal(a.int_repr(), b.int_repr())
                and torch.equal(a.dequantize(), b.dequantize())
            )
        return torch.equal(a, b)
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def state_dicts(work):
    return {
        path: torch.load(work / path, weights_only=True)["state_dict"]
        for path in ["models/fp32/model.pt", *(f"{folder}/model.pt" for folder in INT8_MODELS.values())]
    }


def test_stages_are_deterministic(trained, tmp_path):
    """Training and all three conversions, run again from the same data and params, give identical tensors."""
    work = shutil.copytree(trained, tmp_path / "again")
    torch.manual_seed(12345)  # a different global RNG state must not matter: every stage seeds what it uses
    with contextlib.chdir(work):
        for stage in STAGES:
            assert CliRunner().invoke(app, [stage]).exit_code == 0
    first, second = state_dicts(trained), state_dicts(work)
    for path, tensors in first.items():
        assert tensors.keys() == second[path].keys()
        for key, value in tensors.items():
            assert same(value, second[path][key]), f"{path}: {key} differs"


def test_checkpoint_whose_weights_do_not_fit_its_architecture(trained, tmp_path, monkeypatch):
    monkeypatch.chdir(trained)
    checkpoint = torch.load(trained / "models/fp32/model.pt", weights_only=True)
    checkpoint["arch"] = {"name": "mlp", "hidden": [64, 64], **IDX_ARCH}
    torch.save(checkpoint, tmp_path / "other.pt")
    result = run("static", "--model", str(tmp_path / "other.pt"), "--out", str(tmp_path / "out"))
    assert_clean_failure(result, "weights do not fit the model {'name': 'mlp', 'hidden': [64, 64], 'input'")
    assert not (tmp_path / "out").exists()


def test_empty_calibration_set_overwrites_nothing(trained, tmp_path, monkeypatch):
    work = shutil.copytree(trained, tmp_path / "work")
    monkeypatch.chdir(work)
    numpy.save(work / "data/prepared/calib/images.npy", numpy.zeros((0, 1, 28, 28), numpy.uint8))
    numpy.save(work / "data/prepared/calib/labels.npy", numpy.zeros(0, numpy.int64))
    before = (work / "models/int8_static/model.pt").read_bytes()
    assert_clean_failure(run("static"), "data/prepared/calib/images.npy: holds no images")
    assert (work / "models/int8_static/model.pt").read_bytes() == before
