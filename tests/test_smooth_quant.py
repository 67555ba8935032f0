"""SmoothQuant: the ViT computes what it did, each LayerNorm's outlier channels move into the weights that take them,
every backend that quantizes the ViT quantizes the smoothed one, and a model with nothing to smooth is refused."""

from pathlib import Path

import pytest
import torch

from pipeline.backends.interface import Calibration
from pipeline.backends.layer_graph import layer_outputs_max
from pipeline.backends.registry import planned
from pipeline.backends.smooth_quant import smooth, smoothable
from pipeline.backends.steps import steps_applied
from pipeline.errors import PipelineError
from pipeline.formats.fp32 import read_fp32, save_trained
from pipeline.formats.fp32_export import export_fp32
from pipeline.models.architectures import build
from pipeline.params import Params
from tests.conftest import IDX_INFO, tiny_params
from tests.test_vit import TINY_VIT

ARCH = {"name": "vit", **TINY_VIT, "depth": 2, "input": [1, 28, 28], "classes": 10}


def vit_with_outliers() -> torch.nn.Module:
    """The tiny ViT with a head (torchvision starts it at zero) and LayerNorms as training leaves them: a few
    channels far larger than the rest."""
    torch.manual_seed(0)
    model = build(ARCH).eval()
    torch.nn.init.normal_(model.heads.head.weight)
    for module in model.modules():
        if isinstance(module, torch.nn.LayerNorm):
            module.weight.data[:2] = 20.0
    return model


def spread(ranges: torch.Tensor) -> float:
    return (ranges.max() / ranges.median()).item()


def test_smoothing_keeps_the_function_and_flattens_each_layer_norm_s_channels():
    model, images = vit_with_outliers(), torch.rand(16, 1, 28, 28)
    blocks = [f"encoder.layers.encoder_layer_{i}" for i in range(2)]
    assert smoothable(model) == {
        **{f"{block}.ln_1": [f"{block}.self_attention"] for block in blocks},
        **{f"{block}.ln_2": [f"{block}.mlp.0"] for block in blocks},
    }
    smoothed, _ = smooth(model, images, 0.5)
    with torch.no_grad():
        assert torch.allclose(smoothed(images), model(images), atol=1e-4)
    norms = list(smoothable(model))
    before, after = layer_outputs_max(model, norms, images), layer_outputs_max(smoothed, norms, images)
    assert all(spread(after[name]) < 0.5 * spread(before[name]) for name in norms)


def test_a_model_without_a_layer_norm_into_linear_layers_is_refused():
    model = build({"name": "mlp", "hidden": [8], "input": [1, 28, 28], "classes": 10})
    with pytest.raises(PipelineError, match=r"^static.smooth_quant: MLP has no LayerNorm whose output only Linear"):
        smooth(model, torch.rand(4, 1, 28, 28), 0.5)


@pytest.mark.parametrize("backend_name", ["pt2e", "onnxruntime", "openvino"])
def test_every_backend_quantizes_the_smoothed_vit_and_records_it(tmp_path, backend_name):
    save_trained(vit_with_outliers(), ARCH, tmp_path / "trained")
    export_fp32(tmp_path / "trained", tmp_path / "fp32", IDX_INFO)
    fp32 = read_fp32(tmp_path / "fp32")
    settings = {"quantize.backend": backend_name, "static.smooth_quant": 0.5}
    backend, recipe = planned(Params(**tiny_params(Path("unused"), **settings)), "static")
    assert recipe.settings()["smooth_quant"] == 0.5 and recipe.recovery_steps() == ["SmoothQuant (alpha 0.5)"]
    calibration = Calibration(torch.rand(16, 1, 28, 28), 2)
    with steps_applied(fp32, recipe, IDX_INFO, calibration, backend) as model:
        norm = model.module.get_submodule("encoder.layers.encoder_layer_0.ln_1")
        assert norm.weight.max() < 20.0  # smoothed: the outlier channels divided down
        backend.static(model, recipe, calibration, tmp_path / "int8", IDX_INFO)
    assert any((tmp_path / "int8").iterdir())
