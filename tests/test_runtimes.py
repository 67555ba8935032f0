"""ONNX export and the runtimes: round trips of small models, the runtimes' own quantizers, and one-line errors
for a runtime that is missing or a file that is damaged."""

import json
import subprocess
import sys
from dataclasses import replace

import onnx
import pytest
import torch
from onnx.reference import ReferenceEvaluator

from pipeline.backends.eager.modules import quantize_static, static_qconfig, use_engine
from pipeline.backends.interface import Calibration
from pipeline.backends.onnxruntime import OnnxRuntime
from pipeline.backends.onnxruntime_quantizer import OnnxRuntimeDynamic, OnnxRuntimeStatic
from pipeline.backends.openvino import OpenVino, OpenVinoDynamic, OpenVinoStatic
from pipeline.backends.recipes import DynamicRecipe, StaticRecipe
from pipeline.data.prepared import DataInfo
from pipeline.errors import PipelineError
from pipeline.formats.deployables import read_runtime_settings
from pipeline.formats.fp32 import Fp32Model
from pipeline.formats.onnx import export_onnx, holds_qdq_only, onnx_floor_bytes
from pipeline.formats.openvino import onnx_to_openvino, openvino_floor_bytes, read_openvino
from pipeline.measure.accuracy import agreement
from pipeline.models.architectures import architecture, build, example_input
from pipeline.params import load_params
from pipeline.runtimes import onnxruntime_runnable, openvino_runnable, runtime_forms
from tests.conftest import ROOT

DATA = DataInfo("test", 1, 12, 12, tuple(str(label) for label in range(4)))
ORT_OPTIONS = OnnxRuntimeStatic("qdq", "int8", "int8", False)
ORT_STATIC = StaticRecipe("onnxruntime", None, None, "minmax", True, False, ("features.0",), options=ORT_OPTIONS)
OV_OPTIONS = OpenVinoStatic("performance", "default", "first_layer_only")
OV_STATIC = StaticRecipe("openvino", None, None, "minmax", True, None, ("features.0",), options=OV_OPTIONS)


def fp32_folder(model: torch.nn.Module, arch: dict, folder) -> Fp32Model:
    """The FP32 model with its ONNX file in `folder`, where the runtimes' quantizers start from."""
    export_onnx(model, example_input(arch), {}, folder / "model.onnx")
    return Fp32Model(model, arch, folder)


def small_model(name: str) -> tuple[torch.nn.Module, dict]:
    train = load_params(ROOT / "params.yaml").train.model_copy(update={"arch": name, "hidden": [32], "channels": [8]})
    arch = architecture(train, DATA)
    torch.manual_seed(0)
    return build(arch).eval(), arch


def images(count: int = 512) -> torch.Tensor:
    return torch.rand(count, 1, 12, 12, generator=torch.Generator().manual_seed(1))


def runtimes(path, threads=1):
    return {"onnxruntime": onnxruntime_runnable(path, threads), "openvino": openvino_runnable(path, threads)}


@torch.inference_mode()
def predictions(runnable, batch):
    return runnable(batch).argmax(1)


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_fp32_export_computes_the_same_logits_on_both_runtimes(name, tmp_path):
    model, arch = small_model(name)
    export_onnx(model, example_input(arch), {"kind": "fp32", "arch": arch}, tmp_path / "model.onnx")
    batch = images(64)
    with torch.inference_mode():
        expected = model(batch)
    for runtime, run in runtimes(tmp_path / "model.onnx").items():
        assert torch.allclose(run(batch), expected, atol=1e-4), runtime
    assert read_runtime_settings(tmp_path) == {"kind": "fp32", "arch": arch}
    floor = onnx_floor_bytes(tmp_path / "model.onnx")
    if name == "mlp":
        assert floor == sum(p.numel() * 4 for p in model.state_dict().values())
    else:  # batch norm is folded into the convolution before it, which gains a bias (8 channels)
        kept = sum(p.numel() * 4 for key, p in model.state_dict().items() if "features.1" not in key)
        assert floor == kept + 8 * 4


@pytest.mark.parametrize("name", ["mlp", "cnn"])
@pytest.mark.parametrize("engine", ["x86", "onednn"])
def test_eager_int8_export_predicts_as_pytorch_int8(name, engine, tmp_path):
    """The exported QDQ graph carries PyTorch's own int8 weights and scales: both runtimes predict as it does."""
    model, arch = small_model(name)
    use_engine(engine)
    int8 = quantize_static(model, static_qconfig("minmax", False, engine), images(), 2, fused=True)
    export_onnx(int8, example_input(arch), {}, tmp_path / "model.onnx")
    batch = images(1000)
    expected = predictions(int8, batch)
    for runtime, run in runtimes(tmp_path / "model.onnx").items():
        assert agreement(predictions(run, batch), expected) >= 0.99, runtime
    floor = onnx_floor_bytes(tmp_path / "model.onnx")
    assert floor < sum(p.numel() for p in model.parameters()) * 1.3  # weights at one byte, not four


def test_pt2e_int8_export_predicts_as_the_compiled_graph(tmp_path):
    from pipeline.backends import pt2e

    model, arch = small_model("cnn")
    int8 = pt2e.quantize_static(model, pt2e.static_config("minmax", False), images(), 2)
    export_onnx(int8, example_input(arch), {}, tmp_path / "model.onnx")
    batch = images(1000)
    expected = predictions(int8, batch)  # uncompiled: the same quantize/dequantize arithmetic, in FP32
    for runtime, run in runtimes(tmp_path / "model.onnx").items():
        assert agreement(predictions(run, batch), expected) >= 0.99, runtime


def test_runtime_quantizers_write_int8_files_that_follow_fp32(tmp_path):
    model, arch = small_model("cnn")
    fp32 = fp32_folder(model, arch, tmp_path / "fp32")
    batch = images(1000)
    expected = predictions(model, batch)
    ort, ov = OnnxRuntime(), OpenVino()
    ort_dynamic = DynamicRecipe("onnxruntime", None, False, options=OnnxRuntimeDynamic("int8", False))
    ov_dynamic = DynamicRecipe("openvino", None, True, options=OpenVinoDynamic("performance"))
    variants = {
        "ort_dynamic": (ort_dynamic, lambda folder: ort.dynamic(fp32, ort_dynamic, folder, DATA)),
        "ort_static": (ORT_STATIC, lambda folder: ort.static(fp32, ORT_STATIC, Calibration(images(), 2), folder, DATA)),
        "ov_dynamic": (ov_dynamic, lambda folder: ov.dynamic(fp32, ov_dynamic, folder, DATA)),
        "ov_static": (OV_STATIC, lambda folder: ov.static(fp32, OV_STATIC, Calibration(images(100), 1), folder, DATA)),
    }
    for name, (recipe, make) in variants.items():
        make(tmp_path / name)
        forms, left_out = runtime_forms(tmp_path / name, 1)
        assert forms and not left_out
        for runtime, run in forms.items():
            assert agreement(predictions(run, batch), expected) >= 0.9, (name, runtime)
        assert read_runtime_settings(tmp_path / name) == {"kind": "int8", "arch": arch, "recipe": recipe.settings()}
    # a layer kept in FP32 is left unquantized: its Conv nodes take float weights
    graph = onnx.load(tmp_path / "ort_static/model.onnx").graph
    quantized_inputs = {name for node in graph.node if node.op_type == "DequantizeLinear" for name in node.output}
    convs = {node.name: node.input[1] in quantized_inputs for node in graph.node if node.op_type == "Conv"}
    assert convs and not any(quantized for name, quantized in convs.items() if name.startswith("/features.0/"))
    assert any(convs.values()) or len(convs) == 1
    assert openvino_floor_bytes(tmp_path / "ov_dynamic/model.xml") < onnx_floor_bytes(fp32.onnx_file) / 2


@pytest.mark.parametrize(
    "overflow_fix, widest", [("first_layer_only", [63, 127]), ("enable", [63, 63]), ("disable", [127, 127])]
)
def test_openvino_overflow_fix_halves_the_weights_it_names(overflow_fix, widest, tmp_path):
    """NNCF's OverflowFix: the int8 weights of the first convolution, of every layer, or of none use 7 bits of the
    8, so that the 16-bit sums of int8 kernels on CPUs without VNNI cannot saturate."""
    model, arch = small_model("cnn")  # a convolution, then the classifier's matmul
    recipe = replace(OV_STATIC, skip_layers=(), options=replace(OV_OPTIONS, overflow_fix=overflow_fix))
    OpenVino().static(fp32_folder(model, arch, tmp_path), recipe, Calibration(images(100), 1), tmp_path / "ov", DATA)
    ops = read_openvino(tmp_path / "ov/model.xml").get_ops()
    constants = [op.get_data() for op in ops if op.get_type_name() == "Constant"]
    weights = [weight.astype(int) for weight in constants if weight.dtype == "int8"]
    assert sorted(int(abs(weight).max()) for weight in weights) == widest


def test_openvino_file_round_trip(tmp_path):
    model, arch = small_model("mlp")
    export_onnx(model, example_input(arch), {}, tmp_path / "model.onnx")
    onnx_to_openvino(tmp_path / "model.onnx", {"kind": "fp32"}, tmp_path / "ir" / "model.xml")
    assert read_runtime_settings(tmp_path / "ir") == {"kind": "fp32"}
    batch = images(64)
    with torch.inference_mode():
        assert torch.allclose(openvino_runnable(tmp_path / "ir/model.xml", 1)(batch), model(batch), atol=1e-4)
    assert openvino_floor_bytes(tmp_path / "ir/model.xml") == pytest.approx(
        onnx_floor_bytes(tmp_path / "model.onnx"), 0.01
    )


@pytest.fixture
def onnx_and_ir(tmp_path):
    model, arch = small_model("mlp")
    export_onnx(model, example_input(arch), {}, tmp_path / "model.onnx")
    onnx_to_openvino(tmp_path / "model.onnx", {}, tmp_path / "model.xml")
    return tmp_path


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_a_damaged_onnx_file_is_named(onnx_and_ir):
    truncate(onnx_and_ir / "model.onnx")
    with pytest.raises(PipelineError, match=r"model\.onnx: ONNX Runtime cannot load it") as error:
        onnxruntime_runnable(onnx_and_ir / "model.onnx", 1)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("damaged", ["model.xml", "model.bin"])
def test_a_damaged_openvino_file_is_named(onnx_and_ir, damaged):
    truncate(onnx_and_ir / damaged)
    with pytest.raises(PipelineError, match=r"model\.xml and model\.bin: OpenVINO cannot") as error:
        openvino_runnable(onnx_and_ir / "model.xml", 1)
    assert "\n" not in str(error.value)


def without(module: str, tmp_path) -> dict:
    """An environment for a subprocess in which importing `module` fails, as where it is not installed."""
    blocker = tmp_path / "blocked"
    blocker.mkdir()
    (blocker / f"{module}.py").write_text(f"raise ImportError({f'No module named {module!r}'!r})\n")
    return {"PYTHONPATH": f"{blocker}:{ROOT}", "PATH": "/usr/bin"}


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_a_missing_runtime_is_one_line(runtime, tmp_path):
    """With the runtime's import blocked, the backend's stage fails in one line saying what to install."""
    params = load_params(ROOT / "params.yaml").model_dump()
    params["quantize"]["backend"] = runtime
    from tests.conftest import write_params

    write_params(tmp_path / "params.yaml", params)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "static",
            "--params",
            str(tmp_path / "params.yaml"),
            "--model",
            str(tmp_path / "none"),
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=without(runtime, tmp_path),
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"{runtime} is not installed" in result.stderr and "pip install" in result.stderr
    assert not (tmp_path / "out").exists()


def test_evaluation_without_a_runtime_times_the_others_and_says_so(trained, tmp_path):
    """Where ONNX Runtime is not installed, evaluation still times PyTorch and OpenVINO, and records why ONNX
    Runtime is missing from the table."""
    metrics = tmp_path / "details.json"
    options = ["--metrics", str(tmp_path / "metrics.json"), "--details", str(metrics), "--plots", str(tmp_path / "p")]
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "evaluate", *options],
        capture_output=True,
        text=True,
        cwd=trained,
        env=without("onnxruntime", tmp_path),
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(metrics.read_text())
    for name in ("fp32", "dynamic", "static", "qat"):
        assert "openvino" in report[name]["forms"] and "onnxruntime" not in report[name]["forms"]
        assert "onnxruntime is not installed" in report["forms_left_out"][name]["onnxruntime"]
        assert report[name]["kernel_agreement"] == {}  # its reference is ONNX Runtime's
    assert report["environment"]["onnxruntime"] == "not installed"


def test_a_layer_the_graph_lacks_is_named_with_the_layers_it_has(tmp_path):
    model, arch = small_model("cnn")
    fp32 = fp32_folder(model, arch, tmp_path / "fp32")
    calibration = Calibration(images(8), 1)
    for backend, recipe, folder in ((OnnxRuntime(), ORT_STATIC, "o"), (OpenVino(), OV_STATIC, "v")):
        with pytest.raises(PipelineError, match=r"fp32/model\.onnx belongs to 'nope' \(layers: \[.*'features\.0'"):
            backend.static(fp32, replace(recipe, skip_layers=("nope",)), calibration, tmp_path / folder, DATA)
    assert not (tmp_path / "o").exists() and not (tmp_path / "v").exists()


def test_the_reference_session_computes_the_onnx_file_as_written(tmp_path):
    """ONNX Runtime without graph optimizations, what `kernel_agreement` checks a runtime's int8 kernels against,
    computes a QDQ file as ONNX's own reference implementation does (numpy, op by op). A file whose own ops compute
    in integers (ONNX Runtime's dynamic int8) or that holds no int8 (FP32) has no such reference."""
    model, arch = small_model("cnn")
    fp32 = fp32_folder(model, arch, tmp_path / "fp32")
    static, dynamic = tmp_path / "static", tmp_path / "dynamic"
    OnnxRuntime().static(fp32, ORT_STATIC, Calibration(images(), 2), static, DATA)
    OnnxRuntime().dynamic(
        fp32, DynamicRecipe("onnxruntime", None, False, options=OnnxRuntimeDynamic("int8", False)), dynamic, DATA
    )
    assert holds_qdq_only(static / "model.onnx")
    assert not holds_qdq_only(dynamic / "model.onnx") and not holds_qdq_only(fp32.onnx_file)
    batch = images(64)
    graph = onnx.version_converter.convert_version(onnx.load(static / "model.onnx"), 19)  # the oldest it implements
    expected = ReferenceEvaluator(graph).run(None, {"images": batch.numpy()})[0]
    found = onnxruntime_runnable(static / "model.onnx", 1, optimized=False)(batch).numpy()
    assert abs(found - expected).max() < 1e-5  # 0.0 on an AVX2 EPYC, where the int8 kernels differ by 0.027
