"""Sensitivity and mixed precision: the layer that hurts is found, and exactly it is kept in FP32."""

import copy
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from pipeline.backends.eager.modules import quantize_static, static_qconfig, use_engine
from pipeline.backends.interface import Calibration
from pipeline.backends.loading import load_module
from pipeline.backends.mixed_precision import fewest_float_layers
from pipeline.backends.registry import backend_named, conversion_recipe, planned
from pipeline.backends.steps import steps_applied
from pipeline.errors import PipelineError
from pipeline.formats.fp32 import read_fp32
from pipeline.measure.sensitivity import StaticVariant, layer_sensitivity, step_sensitivity
from pipeline.measure.summary import steps_ranking_line
from pipeline.measure.variants import accuracy_of
from pipeline.models.architectures import accuracy
from pipeline.params import Params
from pipeline.safe_io import load_json
from tests.conftest import IDX_ARCH, IDX_INFO, eager_static_recipe, save_eager, tiny_params, whole_split, write_params
from tests.test_cli import run


@pytest.fixture
def fragile(trained):
    """The trained MLP with layers.2 made extremely sensitive to per-tensor int8, its FP32 function intact.

    Hidden unit 0 of layers.0 is made dead (always 0 after ReLU), so the weights leaving it never matter in FP32;
    setting them to 1000 makes layers.2's per-tensor scale so coarse that all its other weights round to zero.
    """
    model = copy.deepcopy(load_module(trained / "models/fp32/model.pt")[0])
    with torch.no_grad():
        model.layers[0].weight[0] = 0
        model.layers[0].bias[0] = -1
        model.layers[2].weight[:, 0] = 1000
    use_engine("x86")
    return model, static_qconfig("minmax", False, "x86"), whole_split(trained / "data/prepared", "calib")


def recipe(fragile, backend="eager"):
    """params.yaml's static recipe (minmax, per tensor, fused, x86, 2 batches) on the fragile model."""
    model, _, (images, _) = fragile
    params = Params(**tiny_params(Path("unused"), **{"quantize.backend": backend}))
    calibration = Calibration(images, params.calibration.batches)
    return backend_named(backend).conversion(model, conversion_recipe(params), calibration)


def test_exactly_the_fragile_layer_is_kept_in_fp32(fragile):
    model, qconfig, (images, labels) = fragile
    assert accuracy(quantize_static(model, qconfig, images, 2, True), images, labels) < 0.5  # int8 everywhere fails
    kept = fewest_float_layers(recipe(fragile), labels, [], budget=0.2)
    assert kept == ["layers.2"]
    mixed = quantize_static(model, qconfig, images, 2, True, skip_layers=kept)
    assert (accuracy(model, images, labels) - accuracy(mixed, images, labels)) * 100 <= 0.2


def test_sensitivity_ranks_the_fragile_layer_first(fragile):
    _, _, (images, labels) = fragile
    rows = layer_sensitivity(recipe(fragile), images, labels)
    assert [row["layer"] for row in rows][0] == "layers.2" and len(rows) == 4
    fragile_row, first_layer = rows[0], next(row for row in rows if row["layer"] == "layers.0")
    assert fragile_row["drop_only_this_int8"] > 40
    # Weight SQNR is dominated by the huge weights, which quantize well: it looks fine. The layer's output does not.
    assert (
        fragile_row["weight_sqnr_db"] > 30
        and fragile_row["activation_sqnr_db"] < 10 < first_layer["activation_sqnr_db"]
    )
    assert all(row["drop_all_but_this_int8"] > 40 for row in rows[1:])  # with layers.2 in int8, all else fails


def test_pt2e_sensitivity_and_mixed_precision_find_the_fragile_layer(fragile):
    """The same questions through torchao: layer names are the model's own modules; no SQNR without modules."""
    _, _, (images, labels) = fragile
    rows = layer_sensitivity(recipe(fragile, "pt2e"), images, labels)
    assert [row["layer"] for row in rows][0] == "layers.2" and rows[0]["drop_only_this_int8"] > 40
    assert "weight_sqnr_db" not in rows[0]
    assert fewest_float_layers(recipe(fragile, "pt2e"), labels, [], budget=0.2) == ["layers.2"]


def test_mixed_model_file_loads_back_exactly(fragile, tmp_path):
    model, qconfig, (images, _) = fragile
    mixed = quantize_static(model, qconfig, images, 2, True, skip_layers=["layers.2"])
    arch = {"name": "mlp", "hidden": [50, 80, 30], **IDX_ARCH}
    save_eager(mixed, arch, replace(eager_static_recipe(), skip_layers=("layers.2",)), tmp_path / "m")
    assert torch.equal(load_module(tmp_path / "m")[0](images), mixed(images))


def test_unknown_layer_lists_the_allowed_ones(fragile):
    model, qconfig, (images, _) = fragile
    with pytest.raises(
        PipelineError, match=r"unknown layer\(s\) \['layers.9'\]; the quantizable layers are \['layers.0', "
    ):
        quantize_static(model, qconfig, images, 2, True, skip_layers=["layers.9"])


def test_stages_record_the_float_layers(trained, tmp_path, monkeypatch):
    work = shutil.copytree(trained, tmp_path / "work")
    monkeypatch.chdir(work)
    write_params(work / "params.yaml", tiny_params(tmp_path, **{"static.skip_layers": ["layers.0"]}))
    for stage in ("static", "sensitivity", "evaluate"):
        assert run(stage).exit_code == 0, stage
    metrics = load_json(work / "reports/details.json")
    assert metrics["static"]["float_layers"] == {"count": 1, "names": "layers.0"}
    assert {row["layer"] for row in load_json(work / "reports/plots/sensitivity.json")} == {
        "layers.0",
        "layers.2",
        "layers.4",
        "layers.6",
    }


def test_each_recovery_step_is_ranked_by_what_leaving_it_out_loses(trained, tmp_path):
    """Each step the static variant took, left out in turn and the rest of its recipe made again, as `static` makes
    a variant: the points it wins are the variant's accuracy less that one's."""
    fp32 = read_fp32(trained / "models/fp32")
    images, labels = whole_split(trained / "data/prepared", "test")
    calibration = Calibration(whole_split(trained / "data/prepared", "calib")[0], 2)
    settings = {"quantize.per_channel": True, "static.equalize": True, "static.bias_correction": "fast"}
    backend, chosen = planned(Params(**tiny_params(Path("unused"), **settings)), "static")

    def made(recipe, folder: Path) -> float:
        with steps_applied(fp32, recipe, IDX_INFO, calibration, backend) as model:
            backend.static(model, recipe, calibration, folder, IDX_INFO)
        return accuracy_of(folder, images, labels)

    variant = made(chosen, tmp_path / "static")
    rows = step_sensitivity(StaticVariant(tmp_path / "static", chosen, fp32, calibration, IDX_INFO, images, labels))
    assert sorted(row["step"] for row in rows) == ["bias correction fast", "cross-layer equalization"]
    for number, row in enumerate(rows):
        without = made(replace(chosen, **chosen.step_removals()[row["step"]]), tmp_path / str(number))
        assert abs(row["wins"] - (variant - without) * 100) < 1e-3, row
    plain = replace(chosen, equalize=None, bias_correction=None)
    assert (
        step_sensitivity(StaticVariant(tmp_path / "static", plain, fp32, calibration, IDX_INFO, images, labels)) == []
    )
    assert steps_ranking_line(rows).startswith("\nStatic int8's recovery steps, points each wins (left out, the rest")
