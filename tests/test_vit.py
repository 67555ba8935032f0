"""train.arch: vit, torchvision's VisionTransformer, through the backends that can quantize it, and refused in one
line by the one that cannot."""

import contextlib
from dataclasses import replace

import pytest
import torch

from pipeline.errors import PipelineError
from pipeline.measure.variants import load_variant
from pipeline.models.architectures import build
from tests.conftest import tiny_params, whole_split, write_dataset, write_params
from tests.test_cli import assert_clean_failure, run

TINY_VIT = {"patch_size": 7, "depth": 1, "heads": 2, "width": 16, "mlp_width": 32}


@pytest.fixture(scope="module")
def vit(tmp_path_factory):
    """A project where a tiny ViT has been trained and exported (shared, read-only for tests)."""
    base = tmp_path_factory.mktemp("vit")
    work = base / "work"
    work.mkdir()
    write_params(work / "params.yaml", vit_params(base))
    with contextlib.chdir(work):
        for stage in ("download", "prepare", "train", "export"):
            result = run(stage)
            assert result.exit_code == 0, result.output
    return work


def vit_params(base, backend: str = "eager") -> dict:
    params = tiny_params(base / "idx" if (base / "idx").exists() else write_dataset(base / "idx"))
    params["train"].update(arch="vit", vit=TINY_VIT)
    params["quantize"]["backend"] = backend
    return params


def test_the_vit_is_sized_by_params_and_checks_its_sizes():
    arch = {"name": "vit", **TINY_VIT, "input": [1, 28, 28], "classes": 10}
    model = build(arch)
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
    assert model.conv_proj.in_channels == 1 and len(model.encoder.layers) == 1
    with pytest.raises(PipelineError, match=r"^train.vit.patch_size: 5 must divide the side of the images, 28$"):
        build({**arch, "patch_size": 5})
    with pytest.raises(PipelineError, match=r"^train.arch: vit takes square images, but they are 20x28 \(set data"):
        build({**arch, "input": [1, 20, 28]})
    with pytest.raises(PipelineError, match=r"train.vit.heads: 3 must divide train.vit.width \(16\)"):
        build({**arch, "heads": 3})


def test_eager_quantizes_its_linear_layers_dynamically_and_names_the_backends_for_the_rest(vit, tmp_path, monkeypatch):
    monkeypatch.chdir(vit)
    assert run("dynamic", "--out", str(tmp_path / "dynamic")).exit_code == 0
    assert "DynamicQuantizedLinear" in str(load_variant(tmp_path / "dynamic", 1, torch.rand(2, 1, 28, 28)).model)
    for method in ("static", "qat"):
        assert_clean_failure(
            run(method, "--out", str(tmp_path / method)),
            "the eager backend cannot quantize VisionTransformer statically or with QAT",
        )
        assert not (tmp_path / method).exists()


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_a_runtime_backend_quantizes_it_and_fine_tunes_it_through_pt2e(vit, tmp_path, monkeypatch, backend):
    """The runtimes' quantizers make its dynamic and static int8 (NNCF with its transformer scheme); its QAT,
    which they do not do, is pt2e's, since the model has no eager twin."""
    monkeypatch.chdir(vit)
    params = vit_params(vit.parent, backend)
    params["openvino"]["model_type"] = "transformer"
    params = str(write_params(tmp_path / "params.yaml", params))
    for method in ("dynamic", "static", "qat"):
        assert run(method, "--params", params, "--out", str(tmp_path / method)).exit_code == 0
        variant = load_variant(tmp_path / method, 1, torch.rand(2, 1, 28, 28))
        assert backend in variant.forms and not variant.left_out, variant.left_out
        if method == "static" and backend == "openvino":
            assert variant.recipe.options.model_type == "transformer"
    assert (tmp_path / "qat/model.pt2").is_file() and variant.recipe.per_channel


def test_pt2e_quantizes_every_weight_attention_included():
    """X86InductorQuantizer alone, and torchao's quantize_ for dynamic int8, left nn.MultiheadAttention's
    projections in FP32 (47% of the default ViT)."""
    from pipeline.backends import pt2e

    torch.manual_seed(0)
    model = build({"name": "vit", **TINY_VIT, "input": [1, 28, 28], "classes": 10}).eval()
    static = pt2e.quantize_static(model, pt2e.static_config("minmax", False), torch.rand(32, 1, 28, 28), 2)
    dynamic = pt2e.quantize_dynamic(model, [1, 28, 28])
    for int8 in (static, dynamic):
        weights = [node.args[1] for node in int8.graph.nodes if node.target == torch.ops.aten.linear.default]
        assert len(weights) == 5 and all("dequantize_per_channel" in str(weight.target) for weight in weights)
    assert "encoder.layers.encoder_layer_0.self_attention" in pt2e.quantizable_layers(model)


def test_pt2e_qat_keeps_each_dropout_rate():
    """torchao's train/eval switch rewrites every dropout with rate 0.5: the ViT's, of rate 0, then dropped half
    its activations under QAT."""
    from pipeline.backends import pt2e

    model = build({"name": "vit", **TINY_VIT, "input": [1, 28, 28], "classes": 10})
    prepared = pt2e.prepare_qat(model, [1, 28, 28])
    for training in (True, False, True):
        prepared.train(training)
        rates = [node.args[1:] for node in prepared.graph.nodes if node.target == torch.ops.aten.dropout.default]
        assert rates and all(args == (0.0, training) for args in rates), rates


def test_openvino_keeps_the_inputs_of_the_op_types_it_is_told_in_fp32(vit, tmp_path):
    """NNCF's default scheme quantizes the inputs of the ViT's adds, its residuals among them (they cost the ViT
    most of its loss); `openvino.ignored_types` keeps them in FP32, and an op type the model lacks is named before
    any work."""
    import openvino as ov

    from pipeline.backends.interface import Calibration
    from pipeline.backends.openvino import OpenVino, OpenVinoStatic
    from pipeline.backends.recipes import StaticRecipe
    from pipeline.data.prepared import read_info
    from pipeline.formats.fp32 import read_fp32

    fp32, data = read_fp32(vit / "models/fp32"), read_info(vit / "data/prepared")
    options = OpenVinoStatic("performance", "default", "first_layer_only")
    recipe = StaticRecipe("openvino", None, None, "minmax", True, None, options=options)
    calibration = Calibration(torch.rand(16, 1, 28, 28), 1)
    kept = replace(recipe, options=replace(options, ignored_types=("Add",)))
    OpenVino().static(fp32, kept, calibration, tmp_path / "kept", data)
    ops = ov.Core().read_model(str(tmp_path / "kept/model.xml")).get_ops()
    quantized = {
        op.get_type_name()
        for op in ops
        if any(port.get_source_output().get_node().get_type_name() == "FakeQuantize" for port in op.inputs())
    }
    assert "MatMul" in quantized and "Add" not in quantized  # the default scheme quantizes 2 of these adds
    with pytest.raises(PipelineError, match=r"^openvino.ignored_types: the model has no op of type Conv2D; its op "):
        unknown = replace(recipe, options=replace(options, ignored_types=("Conv2D",)))
        OpenVino().static(fp32, unknown, calibration, tmp_path / "unknown", data)
    assert not (tmp_path / "unknown").exists()


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_a_runtime_ranks_the_op_types_its_static_int8_quantizes(vit, tmp_path, backend):
    """`sensitivity` keeps each op type the runtime's static int8 quantizes in FP32 in turn: the compute ops
    (attention's matmuls, the adds, the norms), never those that only move int8 values along (reshapes,
    transposes, OpenVINO's shape reads), and each conversion differs from the variant's by that type alone."""
    from pipeline.backends.interface import Calibration
    from pipeline.backends.onnxruntime_quantizer import OnnxRuntimeStatic
    from pipeline.backends.openvino import OpenVinoStatic
    from pipeline.backends.recipes import StaticRecipe
    from pipeline.backends.registry import backend_named
    from pipeline.data.prepared import read_info
    from pipeline.formats.fp32 import read_fp32
    from pipeline.measure.sensitivity import StaticVariant, op_type_sensitivity

    fp32, data = read_fp32(vit / "models/fp32"), read_info(vit / "data/prepared")
    options = {
        "openvino": OpenVinoStatic("performance", "default", "first_layer_only"),
        "onnxruntime": OnnxRuntimeStatic("qdq", "int8", "int8", False),
    }[backend]
    recipe = StaticRecipe(backend, None, None, "minmax", True, backend == "onnxruntime" or None, options=options)
    runtime = backend_named(backend)
    calibration = Calibration(torch.rand(16, 1, 28, 28), 1)
    runtime.static(fp32, recipe, calibration, tmp_path / "static", data)

    quantized = runtime.quantized_op_types(tmp_path / "static", recipe)
    assert {"MatMul", "Add"} <= set(quantized) and not {"Reshape", "Transpose", "ShapeOf"} & set(quantized)
    assert {"onnxruntime": "LayerNormalization", "openvino": "MVN"}[backend] in quantized
    kept = runtime.with_float_op_type(recipe, "MatMul")
    if backend == "openvino":
        assert kept.options.ignored_types == ("MatMul",)
    else:  # everything ONNX Runtime quantized before, reshapes included, but MatMul
        assert "MatMul" not in kept.options.op_types and {"Reshape", "Conv", "Add"} <= set(kept.options.op_types)

    if backend == "openvino":  # the ranking itself is the backends' common code: once is enough
        return
    images, labels = whole_split(vit / "data/prepared", "test")
    variant = StaticVariant(tmp_path / "static", recipe, fp32, calibration, data, images[:64], labels[:64])
    rows = op_type_sensitivity(variant)
    assert [row["op_type"] for row in rows] != [] and {row["op_type"] for row in rows} == set(quantized)
    assert [row["won_back"] for row in rows] == sorted((row["won_back"] for row in rows), reverse=True)
