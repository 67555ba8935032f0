"""Learned rounding and narrower weights: AdaRound beats rounding to nearest on a layer's output, every backend that
can serve it lands on the learned integers, and what cannot be done is refused in one line."""

import shutil

import onnx
import pytest
import torch
from onnx import numpy_helper

from pipeline.__main__ import app
from pipeline.backends.adaround import Grid, adaround, largest_per_channel, learned_integers
from pipeline.backends.interface import Calibration
from pipeline.backends.layer_graph import apply
from pipeline.backends.loading import load_module
from pipeline.backends.registry import planned
from pipeline.errors import PipelineError
from pipeline.formats.files import ONNX_FILE
from pipeline.formats.fp32 import read_fp32, save_trained
from pipeline.formats.fp32_export import export_fp32
from pipeline.measure.summary import steps_line
from pipeline.models.architectures import build
from pipeline.params import Params
from pipeline.safe_io import load_json
from tests.conftest import IDX_INFO, CliRunner, tiny_params, write_params


def output_error(layer, inputs, integers, grid):
    weight = layer.weight.detach()
    with torch.no_grad():
        return (apply(layer, inputs, integers * grid.scales(weight)) - layer(inputs)).pow(2).mean().item()


def test_learned_rounding_brings_a_layer_s_output_closer_than_nearest_at_4_bits():
    torch.manual_seed(0)
    layer = torch.nn.Linear(32, 16)
    inputs = torch.randn(512, 8) @ torch.randn(8, 32)  # correlated inputs: where rounding errors add up
    grid = Grid(-8, 7)
    learned = learned_integers(layer, inputs, inputs, grid, steps=500, seed=0)
    nearest = grid.nearest(layer.weight.detach())
    below = torch.floor(layer.weight.detach() / grid.scales(layer.weight.detach()))
    assert ((learned == below) | (learned == below + 1) | (learned == nearest)).all()  # up or down, nothing else
    assert not torch.equal(learned, nearest)
    assert output_error(layer, inputs, learned, grid) < 0.6 * output_error(layer, inputs, nearest, grid)


def cnn_with_statistics() -> torch.nn.Module:
    """The CNN with batch norms as training leaves them (positive scales: a negative one would negate its channel's
    integers, which the grid's clamp to +-7 keeps exact too, but this test compares them as they are)."""
    torch.manual_seed(1)
    model = build({"name": "cnn", "channels": [4, 8], "input": [1, 28, 28], "classes": 10}).eval()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.weight.data = torch.rand_like(module.weight) + 0.5
            module.running_var = torch.rand_like(module.running_var) * 3 + 0.1
            module.running_mean = torch.randn_like(module.running_mean)
    return model


def int8_weights(backend, fp32, recipe, calibration, folder) -> list[torch.Tensor]:
    """Every int8 weight tensor of the backend's static int8, as its own quantizer made it."""
    module = backend.static_module(fp32, recipe, calibration)
    if module is None:  # a runtime's file
        backend.static(fp32, recipe, calibration, folder, IDX_INFO)
        initializers = onnx.load(str(folder / ONNX_FILE)).graph.initializer
        return [
            torch.from_numpy(numpy_helper.to_array(item).astype("int64"))
            for item in initializers
            if item.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.INT4) and len(item.dims) > 1
        ]
    if isinstance(module, torch.fx.GraphModule):  # pt2e: int8 constants of the graph
        return [
            value for _, value in [*module.named_buffers(), *module.named_parameters()] if value.dtype == torch.int8
        ]
    return [m.weight().int_repr() for m in module.modules() if callable(getattr(m, "weight", None))]


@pytest.mark.parametrize(("backend_name", "bits"), [("eager", 4), ("pt2e", 4), ("onnxruntime", 4), ("onnxruntime", 8)])
def test_every_backend_s_own_quantizer_lands_on_the_learned_integers(tmp_path, backend_name, bits):
    params = Params(
        **tiny_params(
            tmp_path,
            **{
                "quantize.backend": backend_name,
                "quantize.per_channel": True,
                "static.weight_bits": bits,
                "static.rounding": "adaround",
                "static.adaround_iterations": 30,
            },
        )
    )
    backend, recipe = planned(params, "static")
    calibration = Calibration(torch.rand(32, 1, 28, 28), 2)
    low, high = backend.weight_range(recipe)
    rounded, learned = adaround(cnn_with_statistics(), calibration.images, Grid(low, high), 30)
    assert sorted(learned) == ["classifier", "features.0", "features.4"]
    save_trained(rounded, {"name": "cnn", "channels": [4, 8], "input": [1, 28, 28], "classes": 10}, tmp_path / "t")
    export_fp32(tmp_path / "t", tmp_path / "fp32", IDX_INFO)
    made = int8_weights(backend, read_fp32(tmp_path / "fp32"), recipe, calibration, tmp_path / "int8")
    assert len(made) == 3
    for name, integers in learned.items():
        # each channel's largest weight keeps its FP32 value, half a step past torch's grids' last integer (7.5):
        # which way float rounding takes it is the backend's, as without learned rounding
        learned_part = ~largest_per_channel(rounded.get_submodule(name).weight)
        assert any(
            weight.shape == integers.shape and torch.equal(weight.long()[learned_part], integers.long()[learned_part])
            for weight in made
        ), name
    assert min(int(weight.min()) for weight in made) >= low and max(int(weight.max()) for weight in made) <= high


def test_the_recipe_records_the_width_and_the_rounding(tmp_path):
    params = Params(
        **tiny_params(tmp_path, **{"quantize.backend": "pt2e", "static.weight_bits": 4, "static.rounding": "adaround"})
    )
    _, recipe = planned(params, "static")
    assert (
        recipe.settings() | {"weight_bits": 4, "rounding": "adaround", "adaround_iterations": 1000} == recipe.settings()
    )
    assert recipe.recovery_steps() == ["AdaRound (1000 steps a layer)"]
    assert steps_line({"static": {"weight_bits": 4, "recovery_steps": recipe.recovery_steps()}}) == (
        " Static int8's weights take 4 bits (16 levels). Static int8 won accuracy back with: AdaRound (1000 steps a "
        "layer)."
    )
    _, plain = planned(Params(**tiny_params(tmp_path, **{"quantize.backend": "pt2e"})), "static")
    assert not {"weight_bits", "rounding", "adaround_iterations"} & set(plain.settings())  # 8-bit files as before


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"quantize.backend": "openvino", "static.weight_bits": 4},
            r"^static.weight_bits, static.rounding: NNCF makes",
        ),
        (
            {"quantize.backend": "openvino", "static.rounding": "adaround"},
            r"^static.weight_bits, static.rounding: NNCF",
        ),
        (
            {"quantize.backend": "eager", "static.rounding": "adaround"},
            r"^static.rounding: adaround needs each output channel's int8 weights",
        ),
        (
            {"quantize.backend": "pt2e", "static.weight_bits": 4, "static.bias_correction": "fast"},
            r"^static.bias_correction: NNCF's pt2e flow makes 8-bit weights whatever the quantizer asks",
        ),
        (
            {"quantize.backend": "onnxruntime", "static.weight_bits": 4, "onnxruntime.format": "qoperator"},
            r"^static.weight_bits: ONNX Runtime makes 4-bit weights signed \(int4\) and in QDQ format only",
        ),
        (
            {
                "quantize.backend": "onnxruntime",
                "quantize.per_channel": True,
                "static.rounding": "adaround",
                "onnxruntime.weight_type": "uint8",
            },
            r"^static.rounding: adaround rounds on a grid symmetric around zero",
        ),
    ],
)
def test_what_a_backend_cannot_do_is_refused_in_one_line(tmp_path, settings, message):
    with pytest.raises(PipelineError, match=message):
        planned(Params(**tiny_params(tmp_path, **settings)), "static")


def test_static_records_the_rounding_and_layers_finds_torch_ao_on_the_learned_integers(trained, tmp_path, monkeypatch):
    """Through the stages: `static` learns the rounding and records it; `layers` transforms the FP32 model the same
    way and recomputes every int8 weight torch.ao makes of it: none differs."""
    monkeypatch.chdir(shutil.copytree(trained, tmp_path / "copy"))
    settings = {
        "quantize.per_channel": True,
        "static.weight_bits": 4,
        "static.rounding": "adaround",
        "static.adaround_iterations": 20,
    }
    write_params(tmp_path / "copy/params.yaml", tiny_params(tmp_path / "idx", **settings))
    for stage in ("static", "layers"):
        result = CliRunner().invoke(app, [stage])
        assert result.exit_code == 0, result.output
    recipe = load_module(tmp_path / "copy/models/int8_static")[1]["recipe"]
    assert {key: recipe[key] for key in ("weight_bits", "rounding", "adaround_iterations")} == {
        "weight_bits": 4,
        "rounding": "adaround",
        "adaround_iterations": 20,
    }
    affine = load_json(tmp_path / "copy/reports/affine.json")
    assert affine["layers"] == 4 and affine["weight_int8_diff"] == 0 and affine["weight_scale_diff"] == 0
    weights = load_json(tmp_path / "copy/reports/plots/layers.json")
    assert all(row["weight_scale"] > 0 for row in weights)
