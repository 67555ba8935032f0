"""Forms that cannot run a model: an ONNX file is written with a free batch size or not at all, a form that fails
is left out of evaluation with the reason, and only a model that no form runs stops it."""

import shutil

import onnx
import pytest
import torch
from torchvision.models import VisionTransformer

from pipeline.errors import PipelineError
from pipeline.formats.onnx import export_onnx, require_free_batch
from pipeline.measure.variants import load_variant
from pipeline.runtimes import onnxruntime_runnable


def fix_batch(path) -> None:
    """Pin an ONNX file's batch dimension to 1, as an exporter that specialized it would have."""
    graph = onnx.load(path)
    for value in (*graph.graph.input, *graph.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = 1
    onnx.save(graph, path)


def test_a_vision_transformer_graph_keeps_its_free_batch(tmp_path):
    """torch.export specializes a dimension of size 1: exported from a batch of one, this graph's ONNX file took
    batch 1 alone, and ONNX Runtime refused every other size."""
    torch.manual_seed(0)
    model = VisionTransformer(8, 4, num_layers=1, num_heads=2, hidden_dim=8, mlp_dim=16, num_classes=3).eval()
    images = torch.rand(3, 3, 8, 8)
    program = torch.export.export(model, (images,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    export_onnx(program.module(), images[:1], {}, tmp_path / "model.onnx")
    run = onnxruntime_runnable(tmp_path / "model.onnx", 1)
    for size in (1, 3):
        torch.testing.assert_close(run(images[:size]), model(images[:size]), atol=1e-4, rtol=1e-4)


def test_an_onnx_file_with_a_fixed_batch_is_refused_by_name(trained, tmp_path):
    path = shutil.copy(trained / "models/fp32/model.onnx", tmp_path / "model.onnx")
    require_free_batch(onnx.load(path), path)
    fix_batch(path)
    with pytest.raises(PipelineError, match=r"model\.onnx: the ONNX exporter fixed the batch size at 1; it must be"):
        require_free_batch(onnx.load(path), path)


def test_a_form_that_fails_is_left_out_with_why(trained, tmp_path):
    folder = shutil.copytree(trained / "models/int8_static", tmp_path / "static")
    fix_batch(folder / "model.onnx")
    probe = torch.rand(16, 1, 28, 28)
    variant = load_variant(folder, 1, probe)
    assert "onnxruntime" not in variant.forms and {"eager", "torchscript"} <= variant.forms.keys()
    assert "fails on a batch of 16" in variant.left_out["onnxruntime"]
    assert "Got: 16 Expected: 1" in variant.left_out["onnxruntime"]
    assert variant.scored is variant.forms["eager"]


def test_a_model_no_form_runs_is_refused_in_one_line(trained, tmp_path):
    folder = tmp_path / "dynamic"
    folder.mkdir()
    shutil.copy(trained / "models/int8_dynamic/model.onnx", folder)  # a runtime backend's folder: its file alone
    fix_batch(folder / "model.onnx")
    with pytest.raises(PipelineError, match=r"dynamic: no form of this model runs \(onnxruntime: not measured: fails"):
        load_variant(folder, 1, torch.rand(16, 1, 28, 28))
