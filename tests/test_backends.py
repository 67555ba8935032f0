"""The backends behind one interface: found by name, recipes checked before any work, recipes saved and read back
typed."""

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from pipeline.backends.interface import Calibration
from pipeline.backends.loading import load_module
from pipeline.backends.onnxruntime_quantizer import OnnxRuntimeDynamic, OnnxRuntimeStatic
from pipeline.backends.openvino import OpenVinoDynamic, OpenVinoStatic
from pipeline.backends.recipes import DynamicRecipe, QatRecipe, StaticRecipe
from pipeline.backends.registry import BACKENDS, backend_named, planned, recipe_from
from pipeline.backends.steps import steps_applied
from pipeline.errors import PipelineError
from pipeline.formats.fp32 import read_fp32
from pipeline.params import Params
from tests.conftest import IDX_INFO, tiny_params, whole_split, write_params
from tests.test_cli import assert_clean_failure, run

RECIPES = [
    DynamicRecipe("eager", "x86", False, options=OnnxRuntimeDynamic("int8", False)),
    DynamicRecipe("openvino", None, True, options=OpenVinoDynamic("mixed")),
    StaticRecipe("eager", "onednn", True, "histogram", True, False, ("layers.0",)),
    StaticRecipe(
        "onnxruntime", None, None, "minmax", False, True, options=OnnxRuntimeStatic("qdq", "uint8", "int8", True)
    ),
    StaticRecipe(
        "openvino", None, None, "minmax", True, None, options=OpenVinoStatic("mixed", "transformer", "enable", ("Add",))
    ),
    QatRecipe("pt2e", "x86", True, True, 1),
]


def params(**overrides) -> Params:
    return Params(**tiny_params(Path("unused"), **overrides))


def test_every_backend_is_found_by_its_name():
    assert list(BACKENDS) == ["eager", "pt2e", "onnxruntime", "openvino"]
    assert all(backend_named(name).name == name for name in BACKENDS)


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda recipe: f"{recipe.method}-{recipe.backend}")
def test_a_recipe_is_read_back_as_it_was_saved(recipe):
    settings = recipe.settings()
    assert settings["method"] == recipe.method and None not in settings.values()
    assert recipe_from(settings, "model.pt") == recipe


def test_a_recipe_this_pipeline_does_not_know_is_named():
    with pytest.raises(PipelineError, match=r"model.pt: records a recipe this pipeline does not know"):
        recipe_from({"method": "static", "backend": "eager", "colour": "red"}, "model.pt")
    with pytest.raises(PipelineError, match=r"model.pt: records a recipe of a backend this pipeline does not know"):
        recipe_from({"method": "static", "backend": "tflite"}, "model.pt")


def test_an_option_read_back_is_held_to_what_params_allow():
    """A recipe in a file is checked as params.yaml is: one line naming the key and the values it may take."""
    settings = {**RECIPES[3].settings(), "format": "qdx"}
    with pytest.raises(PipelineError, match=r"^model.onnx: onnxruntime.format: Input should be 'qdq' or 'qoperator'"):
        recipe_from(settings, "model.onnx")
    with pytest.raises(PipelineError, match=r"^openvino.overflow_fix: Input should be 'first_layer_only', 'enable'"):
        OpenVinoStatic("performance", "default", "always")


def test_the_default_recipes_are_written_as_before():
    """The eager backend's recipes lay out their settings as the default run's model files record them: the same
    keys in the same order, so those files keep their bytes."""
    assert list(RECIPES[0].settings()) == ["method", "backend", "engine", "per_channel", "weight_type", "reduce_range"]
    static = ["method", "backend", "engine", "fused", "observer", "per_channel", "symmetric_activations", "skip_layers"]
    assert list(RECIPES[2].settings()) == static
    assert list(RECIPES[5].settings()) == ["method", "backend", "engine", "fused", "per_channel", "freeze_after"]


def test_the_eager_recipe_is_what_params_ask():
    _, recipe = planned(params(**{"static.observer": "histogram"}), "static")
    assert recipe == StaticRecipe("eager", "x86", True, "histogram", False, False)


def test_a_backend_that_forces_per_channel_weights_says_so(capsys):
    _, recipe = planned(params(**{"quantize.backend": "pt2e"}), "static")
    assert recipe.per_channel and recipe.fused
    assert "quantize.per_channel: False is not how the pt2e backend works; it uses True" in capsys.readouterr().err


def test_a_runtime_backend_records_its_own_options():
    _, recipe = planned(params(**{"quantize.backend": "onnxruntime", "onnxruntime.format": "qoperator"}), "static")
    assert (recipe.engine, recipe.fused) == (None, None)
    assert recipe.options == OnnxRuntimeStatic("qoperator", "int8", "int8", False, None)
    _, chosen = planned(params(**{"quantize.backend": "onnxruntime", "onnxruntime.op_types": ["MatMul"]}), "static")
    assert chosen.options.op_types == ("MatMul",) and chosen.settings()["op_types"] == ["MatMul"]
    _, dynamic = planned(params(**{"quantize.backend": "openvino"}), "dynamic")
    assert dynamic == DynamicRecipe("openvino", None, True, options=OpenVinoDynamic("performance"))
    _, static = planned(params(**{"quantize.backend": "openvino", "openvino.model_type": "transformer"}), "static")
    assert static.options == OpenVinoStatic("performance", "transformer", "first_layer_only", None)  # NNCF's default
    _, halved = planned(params(**{"quantize.backend": "openvino", "openvino.overflow_fix": "enable"}), "static")
    assert halved.options.overflow_fix == "enable" and halved.settings()["overflow_fix"] == "enable"
    _, kept = planned(params(**{"quantize.backend": "openvino", "openvino.ignored_types": ["Add", "MVN"]}), "static")
    assert kept.options.ignored_types == ("Add", "MVN") and kept.settings()["ignored_types"] == ["Add", "MVN"]
    _, eager = planned(params(), "dynamic")
    assert eager.options == OnnxRuntimeDynamic("int8", False)  # its ONNX file is ONNX Runtime's dynamic int8
    assert planned(params(), "static")[1].options is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"static.observer": "histogram"}, "static.observer: histogram: ONNX Runtime has no counterpart of PyTorch's"),
        ({"static.observer": "mse"}, "static.observer: mse: ONNX Runtime has no MSE calibration; use minmax, "),
        (
            {"onnxruntime.op_types": ["MatMul", "Linear"]},
            "onnxruntime.op_types: ONNX Runtime quantizes no op type Linear;",
        ),
        ({"static.max_accuracy_drop": 0.5}, "static.max_accuracy_drop: searched with the eager and pt2e backends only"),
    ],
)
def test_a_recipe_the_backend_cannot_do_stops_before_any_work(project, overrides, message):
    """No data and no FP32 model in the project: the recipe is refused before either is read."""
    write_params(Path("params.yaml"), tiny_params(Path("unused"), **{"quantize.backend": "onnxruntime", **overrides}))
    assert_clean_failure(run("static"), message)
    assert not Path("models").exists()


def test_op_types_the_model_lacks_are_refused_not_left_in_fp32(trained, tmp_path):
    """ONNX Runtime asked to quantize only op types the MLP has none of would write an "int8" file of FP32 ops."""
    backend, recipe = planned(params(**{"quantize.backend": "onnxruntime", "onnxruntime.op_types": ["Conv"]}), "static")
    fp32, calibration = read_fp32(trained / "models/fp32"), Calibration(torch.rand(8, 1, 28, 28), 1)
    with pytest.raises(PipelineError, match=r"^onnxruntime.op_types: the model has no op of type Conv, so nothing "):
        backend.static(fp32, recipe, calibration, tmp_path / "int8", IDX_INFO)
    assert not (tmp_path / "int8").exists()


def test_overruled_keys_are_only_those_the_backend_changes():
    backend, recipe = planned(params(), "qat")
    assert replace(recipe) == QatRecipe("eager", "x86", True, False, 1)


def test_eager_refuses_an_exported_graph_before_any_work(tmp_path):
    """torch.ao's dynamic int8 swaps nn.Linear modules; an exported graph has none, and was saved as int8 unchanged."""
    import torch

    from pipeline.backends.eager.backend import Eager
    from pipeline.formats.fp32 import Fp32Model

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2)).eval()
    graph = torch.export.export(model, (torch.rand(2, 1, 2, 2),)).module()
    fp32 = Fp32Model(graph, {"name": "exported", "input": [1, 2, 2], "classes": 2}, tmp_path)
    with pytest.raises(PipelineError, match=r"^the eager backend cannot quantize an exported graph \(torch.ao's"):
        Eager().dynamic(fp32, RECIPES[0], tmp_path / "dynamic", None)
    assert not (tmp_path / "dynamic").exists()


@pytest.mark.parametrize("name", ["eager", "pt2e"])
def test_the_static_module_computes_what_the_saved_static_variant_does(trained, tmp_path, name):
    """`draws` scores PyTorch's static int8 in memory (`Backend.static_module`) instead of writing its files: the
    module and the variant `static` saves from it, a layer kept in FP32 included, give the same logits."""
    backend = backend_named(name)
    recipe = backend.static_recipe(StaticRecipe(name, "x86", True, "minmax", name == "pt2e", False, ("layers.0",)))
    fp32 = read_fp32(trained / "models/fp32")
    calibration = Calibration(whole_split(trained / "data/prepared", "calib")[0], 2)
    images = whole_split(trained / "data/prepared", "test")[0]
    module = backend.static_module(fp32, recipe, calibration)
    backend.static(fp32, recipe, calibration, tmp_path / "static", IDX_INFO)
    saved, settings = load_module(tmp_path / "static")
    assert settings["recipe"]["skip_layers"] == ["layers.0"]
    with torch.inference_mode():
        assert torch.equal(module(images), saved(images))


def outputs_of(folder: Path, images: torch.Tensor) -> torch.Tensor:
    """A static variant's outputs: OpenVINO's file on OpenVINO, ONNX Runtime's on ONNX Runtime, a PyTorch model as
    it is."""
    if (folder / "model.xml").is_file():
        import openvino as ov

        return torch.from_numpy(ov.Core().compile_model(str(folder / "model.xml"), "CPU")(images.numpy())[0])
    if not (folder / "model.pt").is_file():
        import onnxruntime as ort

        session = ort.InferenceSession(str(folder / "model.onnx"))
        return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: images.numpy()})[0])
    with torch.no_grad():
        return load_module(folder)[0](images)


@pytest.mark.parametrize("backend_name", ["openvino", "pt2e", "eager", "onnxruntime"])
def test_bias_correction_on_every_backend(trained, tmp_path, backend_name):
    """NNCF's three settings (on pt2e, through NNCF's pt2e flow), and the project's own on eager and onnxruntime,
    each make their own model, recorded in its files, and correcting leaves less mean shift of each output from
    FP32's on the calibration images than not."""
    fp32, calibration = read_fp32(trained / "models/fp32"), Calibration(torch.rand(32, 1, 28, 28), 2)
    outputs = {}
    for correction in ("none", "fast", "full"):
        overrides = {"quantize.backend": backend_name, "static.bias_correction": correction}
        backend, recipe = planned(params(**overrides, **{"quantize.per_channel": True}), "static")
        assert recipe.bias_correction == correction and recipe.settings()["bias_correction"] == correction
        with steps_applied(fp32, recipe, IDX_INFO, calibration, backend) as model:
            backend.static(model, recipe, calibration, tmp_path / correction, IDX_INFO)
        outputs[correction] = outputs_of(tmp_path / correction, calibration.images)
    assert not torch.equal(outputs["none"], outputs["fast"]) and not torch.equal(outputs["fast"], outputs["full"])
    with torch.no_grad():
        reference = fp32.module(calibration.images)
    shift = {name: (found - reference).mean(0).abs().mean().item() for name, found in outputs.items()}
    assert shift["fast"] < shift["none"] and shift["full"] < shift["none"], shift


def test_the_summary_names_the_recovery_steps_static_int8_took():
    from pipeline.measure.summary import steps_line

    _, recipe = planned(
        params(**{"quantize.backend": "openvino", "static.equalize": True, "static.bias_correction": "full"}), "static"
    )
    assert recipe.recovery_steps() == ["cross-layer equalization", "bias correction full"]
    assert steps_line({"static": {"recovery_steps": recipe.recovery_steps()}}) == (
        " Static int8 won accuracy back with: cross-layer equalization, bias correction full."
    )
    assert planned(params(), "static")[1].recovery_steps() == [] and steps_line({"static": {}}) == ""
