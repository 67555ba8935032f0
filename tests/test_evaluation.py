"""Evaluation: timing output that is sane, fidelity measures against hand computations, deployable twins."""

import math
import time

import pytest
import torch

from pipeline.affine import sqnr_db
from pipeline.backends.loading import load_module
from pipeline.formats.deployables import deployable_path
from pipeline.measure.accuracy import change_interval, confusion_matrix, per_class_accuracy
from pipeline.measure.latency import best_of, compiled_forms, time_calls
from pipeline.measure.sizes import floor_bytes
from pipeline.measure.variants import runtime_label, verdict
from pipeline.safe_io import load_json
from tests.conftest import whole_split
from tests.test_cli import run


def test_timing_on_a_tiny_model_is_sane():
    model = torch.nn.Linear(4, 2)
    timing = time_calls(model, torch.rand(3, 4), warmup=1, repeats=5)
    assert 0 < timing["median_ms"] <= timing["p90_ms"] and timing["calls"] == 5


def test_timing_stops_at_its_time_budget_after_ten_calls():
    def slow(batch):
        time.sleep(0.005)
        return batch

    assert time_calls(slow, torch.rand(1), warmup=0, repeats=100, max_seconds=0.02)["calls"] == 10
    assert time_calls(slow, torch.rand(1), warmup=0, repeats=12, max_seconds=10)["calls"] == 12


def test_best_form_is_the_fastest_per_batch_size():
    forms = {
        "eager": {"batch_1": {"median_ms": 2.0, "p90_ms": 3.0}, "batch_8": {"median_ms": 5.0, "p90_ms": 6.0}},
        "torchscript": {"batch_1": {"median_ms": 1.0, "p90_ms": 4.0}, "batch_8": {"median_ms": 7.0, "p90_ms": 8.0}},
    }
    best = best_of(forms)
    assert best["batch_1"] == {"form": "torchscript", "median_ms": 1.0, "p90_ms": 4.0}
    assert best["batch_8"]["form"] == "eager"


def test_sqnr_and_confusion_by_hand():
    assert sqnr_db(torch.tensor([3.0, 4.0]), torch.tensor([3.0, 3.0])) == pytest.approx(10 * math.log10(25), abs=0.01)
    confusion = confusion_matrix(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 2, 2]), classes=3)
    assert confusion[0, 0] == 1 and confusion[1, 1] == 1 and confusion[2, 1] == 1 and confusion[2, 2] == 1
    accuracy = per_class_accuracy(confusion)
    assert accuracy["0"] == 1.0 and accuracy["2"] == 0.5


def test_the_change_interval_is_the_paired_bootstrap_by_hand():
    """The interval from multinomial counts is the one resampling image indices gives (the textbook bootstrap)."""
    generator = torch.Generator().manual_seed(0)
    reference = torch.rand(2000, generator=generator) < 0.85
    correct = reference.clone()
    flipped = torch.rand(2000, generator=generator) < 0.05  # 5% of images change side, more of them to wrong
    correct[flipped] = torch.rand(int(flipped.sum()), generator=generator) < 0.3
    change = (correct.long() - reference.long()).double()
    indices = torch.randint(2000, (4000, 2000), generator=generator)
    by_hand = torch.quantile(change[indices].mean(1), torch.tensor([0.025, 0.975], dtype=torch.double)).tolist()
    low, high = change_interval(correct, reference, 10_000, seed=0)
    assert low == pytest.approx(by_hand[0], abs=0.0015) and high == pytest.approx(by_hand[1], abs=0.0015)
    assert high < 0 and verdict([low, high]) == "loses accuracy"
    assert change_interval(reference, reference, 1000, seed=0) == [0, 0]
    assert verdict([-0.001, 0.002]) == "no measurable change" and verdict([0.001, 0.002]) == "gains accuracy"


def test_floor_counts_int8_weights_float_biases_and_scales(trained):
    model = load_module(trained / "models/int8_static/model.pt")[0]
    linears = [module for module in model.modules() if hasattr(module, "weight") and callable(module.weight)]
    expected = (
        sum(m.weight().numel() + 4 * m.bias().numel() + 4 + 4 for m in linears) + 4
    )  # + weight and output scales, + input scale
    assert floor_bytes(model.state_dict()) == expected


@pytest.mark.parametrize("name", ["fp32", "int8_dynamic", "int8_static", "int8_qat"])
def test_every_form_computes_what_the_model_computes(trained, name):
    images, _ = whole_split(trained / "data/prepared", "test")
    location = trained / ("models/fp32/model.pt" if name == "fp32" else f"models/{name}")
    model = load_module(location)[0]
    forms = compiled_forms(model, deployable_path(location), "fp32" if name == "fp32" else "int8")
    assert {"eager", "torchscript"} <= forms.keys() and ("compiled" in forms) == (name == "fp32")
    with torch.inference_mode():
        expected = model(images)
        for form, runnable in forms.items():
            torch.testing.assert_close(runnable(images), expected, rtol=1e-4, atol=1e-4, msg=f"{form} differs")


def test_metrics_name_both_sides_and_every_form(trained, tmp_path, monkeypatch):
    monkeypatch.chdir(trained)
    options = ["--metrics", str(tmp_path / "m.json"), "--details", str(tmp_path / "d.json")]
    assert run("evaluate", *options, "--plots", str(tmp_path / "plots")).exit_code == 0
    metrics = load_json(tmp_path / "d.json")
    headline = load_json(tmp_path / "m.json")
    assert set(headline) == {"fp32", "dynamic", "static", "qat", "best_int8"}
    assert set(headline["static"]) == {"accuracy", "deploy_size_bytes", "latency_ms", "vs_fp32"}
    assert headline["static"]["vs_fp32"] == metrics["static"]["vs_fp32"]
    for name in ("dynamic", "static", "qat"):
        entry = metrics[name]
        assert 0.9 <= entry["agreement"] <= 1 and entry["logit_sqnr_db"] > 10
        assert entry["deploy_floor_ratio"] >= 1 and set(entry["per_class_accuracy"]) == {str(c) for c in range(10)}
        for key, form in entry["best_form"].items():
            assert entry["forms"][form][key]["median_ms"] == entry["latency_ms"][key] <= entry["latency_p90_ms"][key]
            fp32_form = metrics["fp32"]["best_form"][key]
            assert entry["vs_fp32"]["compared"][key] == f"int8 {runtime_label(form)} vs fp32 {runtime_label(fp32_form)}"
        # every form on every runtime, timed together; the ONNX file predicts as the PyTorch model does (static and
        # QAT are PyTorch's own int8 exported; dynamic's twin is ONNX Runtime's own dynamic int8 of the FP32 graph)
        assert {"eager", "torchscript", "onnxruntime", "openvino"} <= set(entry["forms"])
        least = 0.95 if name == "dynamic" else 0.99
        assert set(entry["runtime_agreement"]) == {"onnxruntime", "openvino"}
        assert min(entry["runtime_agreement"].values()) >= least, entry["runtime_agreement"]
        # the QDQ files, checked against their own arithmetic; dynamic's twin computes in integers: no reference
        assert set(entry["kernel_agreement"]) == (set() if name == "dynamic" else {"onnxruntime", "openvino"})
        assert set(entry["files"]) == {"torchscript", "onnx"}
        low, high = entry["vs_fp32"]["accuracy_change_ci95"]
        assert low <= entry["vs_fp32"]["accuracy_change"] <= high
        assert entry["vs_fp32"]["accuracy_verdict"] == verdict([low, high])
    assert metrics["best_int8"] in ("dynamic", "static", "qat") and metrics["fp32"]["kernel_agreement"] == {}
    assert isinstance(metrics["fp32_cuda"], dict) or metrics["fp32_cuda"].startswith("not measured")
    assert len(load_json(tmp_path / "plots/confusion_best_int8.json")) == 200


def test_missing_deployable_twin(trained, tmp_path, monkeypatch):
    monkeypatch.chdir(__import__("shutil").copytree(trained, tmp_path / "copy"))
    (tmp_path / "copy/models/int8_static/model.ts").unlink()
    result = run("evaluate")
    assert result.exit_code == 1 and "models/int8_static/model.ts: file not found" in result.output


def test_bench_prints_a_table_of_sane_figures(trained, monkeypatch):
    """A tiny run: the table has a row per arch, engine and batch size, with positive times; no speed threshold."""
    monkeypatch.chdir(trained)
    markdown, docs = trained.parent / "bench.md", trained.parent / "benchmark.md"
    docs.write_text("Before.\n<!-- results bench-28 -->\nold\n<!-- end results bench-28 -->\nAfter.\n")
    arguments = ("--engine", "x86", "--arch", "mlp", "--repeats", "3", "--markdown", str(markdown), "--docs", str(docs))
    result = run("bench", *arguments)
    assert result.exit_code == 0, result.output
    fp32_table, table = (part.strip().splitlines()[2:] for part in result.output.split("\n\n")[-3:-1])
    assert [row.split("|")[1:3] for row in fp32_table] == [[" mlp ", " 1 "], [" mlp ", " 16 "]]
    # batch sizes 1 and 16; eager x86 and pt2e on PyTorch and (their ONNX files) on both runtimes, the onnxruntime
    # backend on both runtimes, the openvino backend on OpenVINO
    assert len(table) == 2 * (3 + 3 + 2 + 1)
    written = markdown.read_text()
    assert "measured on " in written and table[0] in written
    # what to deploy at each batch size: the fastest int8, or FP32 where none beats it
    choices = result.output.split("What to deploy:\n")[1].strip().splitlines()
    assert [line.split(":")[0] for line in choices] == ["- mlp, batch 1", "- mlp, batch 16"]
    page = docs.read_text()
    assert page.startswith("Before.") and page.endswith("After.\n") and "old" not in page
    assert "Generated by `python -m pipeline bench --arch mlp " in page and "--engine x86 --batch 1 --batch 16" in page
    assert choices[0] in page and table[0] in page
    rows = {tuple(cell.strip() for cell in line.strip("|").split("|")[1:3]) for line in table}
    assert ("onnxruntime", "openvino") in rows and ("openvino", "openvino") in rows
    for line in table:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert float(cells[4].split()[0]) > 0 and float(cells[7]) > 0 and float(cells[8]) > 0


def test_bench_writes_what_it_left_out_and_why(trained, monkeypatch):
    monkeypatch.chdir(trained)
    docs = trained.parent / "left_out.md"
    docs.write_text("<!-- results bench-28 -->\n<!-- end results bench-28 -->\n")
    arguments = ("--arch", "vit", "--backend", "eager", "--engine", "x86", "--repeats", "3", "--batch", "1")
    result = run("bench", *arguments, "--docs", str(docs))
    assert result.exit_code == 0, result.output
    left_out = "- vit eager x86 static: the eager backend cannot quantize VisionTransformer statically or with QAT"
    assert f"Left out (a dash in the table):\n\n{left_out}" in docs.read_text()


def test_bench_rejects_an_unknown_engine(trained, monkeypatch):
    monkeypatch.chdir(trained)
    result = run("bench", "--engine", "tpu")
    assert result.exit_code != 0 and "not supported here" in result.output


def test_bench_names_an_unknown_architecture(trained, monkeypatch):
    monkeypatch.chdir(trained)
    result = run("bench", "--arch", "vgg11")
    assert (
        result.exit_code == 1
        and "unknown architecture 'vgg11'; expected one of ['mlp', 'cnn', 'vit', 'resnet18'" in result.output
    )
