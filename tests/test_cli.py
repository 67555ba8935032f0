"""Every command through the CLI: a clean run, and for bad input one line, exit 1, and nothing left behind."""

import shutil

import pytest
import torch

from pipeline.__main__ import app
from pipeline.measure.summary import kernels_line
from pipeline.paths import VARIANTS
from pipeline.safe_io import load_json
from tests.conftest import CliRunner, tiny_params, write_params


def run(*args):
    return CliRunner().invoke(app, list(args))


def assert_clean_failure(result, message):
    assert result.exit_code == 1, result.output
    assert result.output.startswith("error: ") and message in result.output
    assert result.output.count("\n") == 1 and "Traceback" not in result.output


def files_under(folder):
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())


def test_help_lists_every_stage():
    result = run("--help")
    for stage in (
        "download",
        "prepare",
        "train",
        "export",
        "dynamic",
        "static",
        "qat",
        "evaluate",
        "layers",
        "sensitivity",
        "report",
        "bench",
    ):
        assert stage in result.output


def test_download_md5_mismatch_leaves_nothing(project, raw_dir):
    write_params(project / "params.yaml", tiny_params(raw_dir, **{"data.verify_md5": True}))
    assert_clean_failure(run("download"), "MD5")
    assert files_under(project) == ["params.yaml"]


def test_download_unknown_dataset(project, raw_dir):
    write_params(project / "params.yaml", tiny_params(raw_dir, **{"data.dataset": "cifar10"}))
    assert_clean_failure(
        run("download"), "data.dataset: Input should be 'fashion-mnist', 'mnist', 'imagefolder' or 'tensors'"
    )


def test_prepare_truncated_idx_leaves_nothing(project, raw_dir):
    assert run("download").exit_code == 0
    images = project / "data/raw/fashion-mnist/t10k-images-idx3-ubyte.gz"
    images.write_bytes(images.read_bytes()[:-200])
    assert_clean_failure(run("prepare"), "t10k-images-idx3-ubyte.gz: not a valid gzip file")
    assert not (project / "data/prepared").exists()


def test_prepare_missing_idx(project):
    assert_clean_failure(run("prepare"), "train-images-idx3-ubyte.gz: file not found")


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("train.epochs", -1, "train.epochs: Input should be greater than or equal to 0"),
        ("train.batch_size", 0, "train.batch_size: Input should be greater than 0"),
        ("train.epochs", "5", "train.epochs: Input should be a valid integer"),
    ],
)
def test_train_rejects_bad_params(trained, tmp_path, monkeypatch, key, value, message):
    monkeypatch.chdir(shutil.copytree(trained, tmp_path / "copy"))
    write_params(tmp_path / "copy/params.yaml", tiny_params(tmp_path / "idx", **{key: value}))
    before = (tmp_path / "copy/models/trained/model.pt").read_bytes()
    assert_clean_failure(run("train"), message)
    assert (tmp_path / "copy/models/trained/model.pt").read_bytes() == before


def test_misspelt_key(trained, tmp_path, monkeypatch):
    monkeypatch.chdir(shutil.copytree(trained, tmp_path / "copy"))
    params = tiny_params(tmp_path / "idx")
    params["static"]["observr"] = params["static"].pop("observer")
    write_params(tmp_path / "copy/params.yaml", params)
    assert_clean_failure(run("static"), "unknown key 'static.observr'; missing key 'static.observer'")


@pytest.mark.parametrize("stage", ["dynamic", "static", "qat"])
def test_quantizers_refuse_an_int8_model_as_input(trained, tmp_path, monkeypatch, stage):
    monkeypatch.chdir(trained)
    result = run(stage, "--model", "models/int8_static/model.pt", "--out", str(tmp_path / "out"))
    assert_clean_failure(
        result, "models/int8_static/model.pt: is an int8 static model, but an fp32 model is needed here"
    )
    assert not (tmp_path / "out").exists()


def test_draws_refuses_an_fp32_model_as_the_static_variant(trained, tmp_path, monkeypatch):
    monkeypatch.chdir(trained)
    result = run("draws", "--static", "models/fp32", "--out", str(tmp_path / "d.json"), "--plot", str(tmp_path / "p"))
    assert_clean_failure(result, "models/fp32: is an fp32 model, but an int8 model is needed here")
    assert not (tmp_path / "d.json").exists()


def test_truncated_model_file(trained, tmp_path, monkeypatch):
    monkeypatch.chdir(trained)
    cut = tmp_path / "cut.pt"
    cut.write_bytes((trained / "models/fp32/model.pt").read_bytes()[:5000])
    assert_clean_failure(run("dynamic", "--model", str(cut), "--out", str(tmp_path / "out")), "truncated or corrupt")
    assert not (tmp_path / "out").exists()


def test_model_file_that_would_run_code_is_refused(trained, tmp_path, monkeypatch):
    monkeypatch.chdir(trained)
    marker = tmp_path / "code-ran"
    torch.save({"kind": "fp32", "payload": Exploit(str(marker))}, tmp_path / "evil.pt")
    result = run("static", "--model", str(tmp_path / "evil.pt"), "--out", str(tmp_path / "out"))
    assert_clean_failure(result, "refused to load: it needs full unpickling")
    assert not marker.exists()


class Exploit:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_evaluate_and_report(trained, tmp_path, monkeypatch):
    monkeypatch.chdir(shutil.copytree(trained, tmp_path / "copy"))
    for stage in ("evaluate", "layers", "sensitivity", "draws", "report"):
        assert run(stage).exit_code == 0, stage
    figures = files_under(tmp_path / "copy/reports")
    for name in (
        "metrics.json",
        "details.json",
        "summary.md",
        "figures/training.png",
        "figures/latency.png",
        "figures/accuracy_vs_size.png",
        "figures/confusion.png",
        "figures/layers.png",
        "figures/weights.png",
        "figures/sensitivity.png",
        "figures/draws.png",
        "draws.json",
    ):
        assert name in figures
    # PyTorch's backends keep layers, not op types, in FP32: no op type is ranked or drawn
    assert load_json(tmp_path / "copy/reports/plots/op_types.json") == [] and "figures/op_types.png" not in figures
    # the default recipe takes no recovery step: none is ranked or drawn
    assert load_json(tmp_path / "copy/reports/plots/steps.json") == [] and "figures/steps.png" not in figures
    assert "static on onnxruntime" in (tmp_path / "copy/reports/summary.md").read_text()  # kernels against the file


def test_the_summary_says_where_int8_kernels_compute_otherwise_than_the_file():
    metrics = {name: {"kernel_agreement": {}} for name in VARIANTS}
    assert kernels_line(metrics) == ""  # no QDQ file, or no ONNX Runtime: nothing to say
    metrics["static"]["kernel_agreement"] = {"onnxruntime": 0.9587, "openvino": 0.9894}
    line = kernels_line(metrics)
    assert "static on onnxruntime 95.87%, static on openvino 98.94%." in line
    assert "Below 98%" in line and "`onnxruntime.reduce_range: true`" in line
    metrics["static"]["kernel_agreement"]["onnxruntime"] = 0.9999
    assert "static on onnxruntime 99.99%" in kernels_line(metrics) and "Below" not in kernels_line(metrics)


def test_evaluate_without_models(project, raw_dir):
    assert run("download").exit_code == 0 and run("prepare").exit_code == 0
    assert_clean_failure(run("evaluate"), "models/fp32: file not found")
    assert not (project / "reports").exists()


def test_report_without_metrics(project):
    assert_clean_failure(run("report"), "reports/details.json: file not found")
