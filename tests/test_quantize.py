"""int8 transforms against FP32 as the reference, and int8 files that load to the very same model."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import pipeline
from pipeline.backends.eager.backend import Eager
from pipeline.backends.eager.modules import (
    convert_qat,
    prepare_qat,
    quantize_dynamic,
    quantize_static,
    static_qconfig,
    use_engine,
)
from pipeline.backends.loading import load_module
from pipeline.backends.onnxruntime_quantizer import OnnxRuntimeDynamic
from pipeline.backends.recipes import DynamicRecipe, QatRecipe
from pipeline.formats.fp32 import Fp32Model, save_trained
from pipeline.formats.fp32_export import export_fp32
from pipeline.formats.torchscript import load_deployable
from pipeline.measure.sizes import measure_size
from pipeline.models.architectures import CNN, MLP, accuracy, predict
from pipeline.models.training import fit
from tests.conftest import IDX_ARCH, IDX_INFO, IDX_SHAPE, eager_static_recipe, save_eager, whole_split


@pytest.fixture(scope="module")
def data(trained):
    return whole_split(trained / "data/prepared", "train"), whole_split(trained / "data/prepared", "test")


def test_fp32_model_learns(trained, data):
    model = load_module(trained / "models/fp32/model.pt")[0]
    assert accuracy(model, *data[1]) > 0.8  # ten classes: chance is 0.1


@pytest.mark.parametrize("method", ["dynamic", "static", "qat"])
def test_int8_agrees_with_fp32(trained, data, method):
    fp32 = load_module(trained / "models/fp32/model.pt")[0]
    int8 = load_module(trained / f"models/int8_{method}")[0]
    images, labels = data[1]
    agreement = (predict(fp32, images) == predict(int8, images)).float().mean().item()
    assert agreement > 0.9
    assert abs(accuracy(int8, images, labels) - accuracy(fp32, images, labels)) < 0.1


def static_int8(model, images, observer="minmax", per_channel=False, fused=True):
    use_engine("x86")
    return quantize_static(model, static_qconfig(observer, per_channel, "x86"), images, 4, fused)


@pytest.mark.parametrize("observer", ["minmax", "histogram"])
@pytest.mark.parametrize("per_channel", [False, True])
def test_file_round_trip_is_exact(trained, data, tmp_path, observer, per_channel):
    fp32, settings = load_module(trained / "models/fp32/model.pt")
    arch = settings["arch"]
    images = data[0][0][:200]
    int8 = static_int8(fp32, images, observer, per_channel)
    save_eager(int8, arch, eager_static_recipe(per_channel, observer), tmp_path / "int8")
    assert torch.equal(load_module(tmp_path / "int8")[0](images), int8(images))


def test_input_scale_matches_hand_computation(trained, data):
    """QuantStub's min/max observer over [0, xmax] with 7-bit activations (x86): scale = xmax / 127, zero point 0."""
    fp32 = load_module(trained / "models/fp32/model.pt")[0]
    images = data[0][0][:200]
    int8 = static_int8(fp32, images)
    assert int8.quant.scale.item() == pytest.approx(images.max().item() / 127, rel=1e-6)
    assert int8.quant.zero_point.item() == 0


def test_weight_scale_matches_hand_computation(trained, data):
    """Symmetric per-tensor int8 weights: scale = max|w| / 127.5, values = round(w * (1 / scale)) in [-128, 127].

    PyTorch multiplies by the float32 inverse of the scale; dividing by the scale instead can round a tie
    (w / scale exactly x.5 in float32) the other way.
    """
    fp32 = load_module(trained / "models/fp32/model.pt")[0]
    int8 = static_int8(fp32, data[0][0][:200], fused=False)
    weight, quantized = fp32.layers[0].weight.detach(), int8.layers[0].weight()
    scale = weight.abs().max().item() / 127.5
    assert quantized.q_scale() == pytest.approx(scale, rel=1e-6)
    inverse_scale = torch.tensor(1 / quantized.q_scale(), dtype=torch.float32)
    expected = torch.clamp(torch.round(weight * inverse_scale), -128, 127).to(torch.int8)
    assert torch.equal(quantized.int_repr(), expected)


def test_classic_mlp_file_sizes(tmp_path):
    """The seed model 784-50-80-30-10: about 187 KB in FP32, under 31% of that as int8, and the TorchScript file a
    user deploys within 10% of the floor (int8 weights, float32 biases and scales). Size is structure only."""
    torch.manual_seed(0)
    model = MLP([50, 80, 30], *IDX_SHAPE).eval()
    arch = {"name": "mlp", "hidden": [50, 80, 30], **IDX_ARCH}
    images = torch.rand(64, 1, 28, 28)
    qat = prepare_qat(model, "x86", per_channel=False)
    qat(images)  # one training-mode pass, so the fake quantizers have ranges to convert with
    save_trained(model, arch, tmp_path / "trained")
    export_fp32(tmp_path / "trained", tmp_path / "fp32", IDX_INFO)
    fp32_size = (tmp_path / "fp32/model.pt").stat().st_size
    assert 180_000 < fp32_size < 195_000
    # PyTorch cannot export dynamic int8 to ONNX: its ONNX file is ONNX Runtime's dynamic int8 of FP32's
    dynamic = DynamicRecipe("eager", "x86", False, options=OnnxRuntimeDynamic("int8", False))
    Eager().dynamic(Fp32Model(model, arch, tmp_path / "fp32"), dynamic, tmp_path / "dynamic", IDX_INFO)
    save_eager(static_int8(model, images), arch, eager_static_recipe(), tmp_path / "static")
    save_eager(convert_qat(qat), arch, QatRecipe("eager", "x86", True, False, 1), tmp_path / "qat")
    for name in ("dynamic", "static", "qat"):
        size = measure_size(load_module(tmp_path / name)[0], tmp_path / name)
        assert size["size_bytes"] < 0.31 * fp32_size
        assert 1 < size["deploy_floor_ratio"] <= 1.10, name
        assert 1 < size["files"]["onnx"]["floor_ratio"] <= 1.25, name


@pytest.mark.parametrize("per_channel", [False, True])
def test_weight_granularity_is_alike_for_every_method(per_channel):
    """quantize.per_channel applies to dynamic, static and QAT, so they differ only in how ranges are found."""
    torch.manual_seed(0)
    model = MLP([8], *IDX_SHAPE).eval()
    images = torch.rand(16, 1, 28, 28)
    qat = prepare_qat(model, "x86", per_channel)
    qat(images)
    variants = {
        "dynamic": quantize_dynamic(model, per_channel),
        "static": static_int8(model, images, per_channel=per_channel),
        "qat": convert_qat(qat),
    }
    channel_schemes = {torch.per_channel_affine, torch.per_channel_symmetric}
    for name, int8 in variants.items():
        assert (int8.layers[0].weight().qscheme() in channel_schemes) == per_channel, name


SAVE_DEPLOYABLE = """
import os, sys, torch
from pathlib import Path
import pipeline
from pipeline.models.architectures import MLP
from pipeline.formats.torchscript import save_deployable
assert pipeline.__file__.startswith(os.getcwd()), pipeline.__file__
torch.manual_seed(0)
save_deployable(MLP([8], [1, 28, 28], 10).eval(), torch.zeros(1, 1, 28, 28), Path(sys.argv[1]))
"""


def test_deployable_file_is_the_same_from_any_checkout(tmp_path):
    """TorchScript's debug records hold the checkout's path, and its serialization id a checksum of them: both are
    left out, so every clone writes the same bytes and reproduces dvc.lock's hashes. Each copy saves in a fresh
    process, as a stage does: TorchScript numbers the classes it traces within a process."""
    files = []
    for copy in (tmp_path / "a", tmp_path / "b"):
        shutil.copytree(Path(pipeline.__file__).parent, copy / "pipeline")
        files.append(copy / "model.ts")
        subprocess.run([sys.executable, "-c", SAVE_DEPLOYABLE, str(files[-1])], cwd=copy, check=True)
    assert files[0].read_bytes() == files[1].read_bytes()
    torch.manual_seed(0)
    model = MLP([8], *IDX_SHAPE).eval()
    images = torch.rand(5, 1, 28, 28)
    assert torch.equal(load_deployable(files[0])(images), model(images))


def test_cnn_static_and_qat_load_back_exactly(data, tmp_path):
    torch.manual_seed(0)
    (images, labels), _ = data
    images, labels = images[:256], labels[:256]
    model, arch = CNN([4, 8], *IDX_SHAPE), {"name": "cnn", "channels": [4, 8], **IDX_ARCH}
    fit(model, images, labels, epochs=1, batch_size=64, lr=0.01, seed=0)
    static = static_int8(model, images)
    qat = prepare_qat(model, "x86", per_channel=True)
    fit(qat, images, labels, epochs=1, batch_size=64, lr=0.001, seed=0)
    qat = convert_qat(qat)
    recipes = {"static": eager_static_recipe(), "qat": QatRecipe("eager", "x86", True, True, 1)}
    for name, int8 in {"static": static, "qat": qat}.items():
        save_eager(int8, arch, recipes[name], tmp_path / name)
        assert torch.equal(load_module(tmp_path / name)[0](images), int8(images))
