"""The from-scratch affine quantization reproduces PyTorch's numbers exactly, layer by layer."""

import copy
import shutil

import pytest
import torch

from pipeline.affine import qparams, quantize, sqnr_db
from pipeline.backends.eager.modules import float_weight, fuse, quantize_static, static_qconfig, use_engine
from pipeline.measure.layers import quantized_layers, weight_row
from pipeline.models.architectures import CNN
from pipeline.safe_io import load_json
from tests.conftest import IDX_SHAPE, tiny_params, write_params
from tests.test_cli import run

KEYS = (
    "weight_scale_diff",
    "weight_zero_point_diff",
    "weight_int8_diff",
    "activation_scale_diff",
    "activation_zero_point_diff",
)


def test_hand_computed_affine_parameters():
    # Range [-1, 3] on 0..255: scale 4/255, zero point 0 - round(-1 / scale) = 64 (63.75 rounded).
    scale, zero_point = qparams(torch.tensor(-1.0), torch.tensor(3.0), 0, 255, symmetric=False)
    assert scale.item() == pytest.approx(4 / 255) and zero_point.item() == 64
    # Symmetric int8: scale max(|min|, |max|) / 127.5, zero point 0; ranges always include 0.
    scale, zero_point = qparams(torch.tensor(0.5), torch.tensor(2.0), -128, 127, symmetric=True)
    assert scale.item() == pytest.approx(2 / 127.5) and zero_point.item() == 0
    assert quantize(torch.tensor([2.0, -5.0]), scale, zero_point, -128, 127).tolist() == [127, -128]


@pytest.mark.parametrize("observer, symmetric", [("minmax", False), ("minmax", True), ("moving_average_minmax", False)])
def test_stage_finds_no_difference(trained, monkeypatch, tmp_path, observer, symmetric):
    work = shutil.copytree(trained, tmp_path / "copy")
    monkeypatch.chdir(work)
    overrides = {"static.observer": observer, "static.symmetric_activations": symmetric, "calibration.batches": 5}
    write_params(work / "params.yaml", tiny_params(tmp_path, **overrides))
    assert run("static").exit_code == 0 and run("layers").exit_code == 0
    summary = load_json(work / "reports/affine.json")
    assert summary["activations_recomputed"] and summary["layers"] == 4
    for key in KEYS:
        assert summary[key] == 0, key


@pytest.mark.parametrize("observer", ["minmax", "histogram"])
def test_per_channel_conv_weights_match(observer):
    torch.manual_seed(0)
    model = CNN([4, 8], *IDX_SHAPE).eval()
    model.features[1].running_mean.uniform_(-0.5, 0.5)  # BN statistics that fusion must fold into the weights
    model.features[1].running_var.uniform_(0.5, 2.0)
    use_engine("x86")
    int8 = quantize_static(model, static_qconfig(observer, True, "x86"), torch.rand(32, 1, 28, 28), 2, fused=True)
    fused = dict(fuse(copy.deepcopy(model)).named_modules())
    for name, module in quantized_layers(int8).items():
        row = weight_row(name, float_weight(fused[name]), module.weight(), 8)
        assert row["weight_scale_diff"] == 0 and row["weight_zero_point_diff"] == 0 and row["weight_int8_diff"] == 0, (
            name
        )


def test_sqnr_of_no_signal_is_none_not_an_error():
    """torchvision's ViT starts with a zero head: all-zero FP32 logits have no ratio to give."""
    assert sqnr_db(torch.zeros(4, 3), torch.ones(4, 3)) is None
