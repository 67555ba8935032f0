"""The real `dvc repro` in a temporary copy of the repository, on tiny synthetic data."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from pipeline.__main__ import STAGES
from tests.conftest import AWS_ENV, ROOT, tiny_params, write_dataset, write_params

BIN = Path(sys.executable).parent


def sh(*args, cwd, check=True, **env):
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", **env}
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout
    return result


def commit(repo, message):
    sh("git", "add", "-A", cwd=repo)
    sh(
        "git",
        "-c",
        "user.name=test",
        "-c",
        "user.email=test@localhost",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        message,
        cwd=repo,
    )


# What a clone of the repository holds that the pipeline needs: its code, dvc.yaml, models/own (a dep of train), and
# the templates of its plots.
REPOSITORY = ("pipeline", "dvc.yaml", ".dvcignore", ".gitignore", "models/own")
PLOT_TEMPLATES = Path(".dvc/plots")


def make_repo(repo: Path, params: dict) -> Path:
    """A git + DVC copy of the repository's pipeline at `repo`, with these params, committed."""
    for name in REPOSITORY:
        source = ROOT / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, repo / name)
    shutil.rmtree(repo / "pipeline/__pycache__", ignore_errors=True)
    write_params(repo / "params.yaml", params)
    sh("git", "init", "-q", cwd=repo)
    sh("dvc", "init", "-q", cwd=repo)
    sh("dvc", "config", "core.analytics", "false", cwd=repo)
    shutil.copytree(ROOT / PLOT_TEMPLATES, repo / PLOT_TEMPLATES)
    commit(repo, "pipeline")
    return repo


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A git + DVC copy of the repository's pipeline, params shrunk to seconds."""
    base = tmp_path_factory.mktemp("e2e")
    # One batch size: each evaluation compiles every model once per size, and these tests time nothing.
    return make_repo(base / "repo", tiny_params(write_dataset(base / "idx"), **{"evaluate.batch_sizes": [16]}))


def test_repro_runs_every_stage_then_nothing(repo):
    log = sh("dvc", "repro", cwd=repo)
    for stage in STAGES:
        assert f"Running stage '{stage}'" in log
    metrics = json.loads((repo / "reports/metrics.json").read_text())
    for variant in ("fp32", "dynamic", "static", "qat"):
        entry = metrics[variant]
        assert entry["accuracy"] > 0.5 and entry["deploy_size_bytes"] > 0
        assert set(entry["latency_ms"]) == {"batch_16"} and min(entry["latency_ms"].values()) > 0
    assert metrics["static"]["vs_fp32"]["size_ratio"] < 0.5
    details = json.loads((repo / "reports/details.json").read_text())
    assert details["static"]["fusion"]["unfused_vs_fused"]["batch_16"] > 0  # eager int8, fused and not
    assert (repo / "reports/figures/accuracy_vs_size.png").stat().st_size > 1000
    assert json.loads((repo / "reports/affine.json").read_text())["weight_int8_diff"] == 0
    assert json.loads((repo / "reports/conversion.json").read_text())["static"]["seconds"] > 0
    draws = json.loads((repo / "reports/draws.json").read_text())["static"]  # tiny params: two draws
    assert draws["draws"] == 2 and draws["accuracy"]["min"] <= draws["accuracy"]["mean"] <= draws["accuracy"]["max"]
    assert "other draws of the calibration images" in (repo / "reports/summary.md").read_text()
    assert "Data and pipelines are up to date" in sh("dvc", "repro", cwd=repo)


def test_training_met_before_is_restored_not_run_again(repo):
    """DVC's run-cache keeps the train stage (its history is a plot output, which the run-cache allows, unlike a
    plain uncached one): settings trained before restore their model instead of training it again, as the
    experiments of a results set that share one model do."""
    original = (repo / "params.yaml").read_text()
    params = YAML(typ="safe").load(original)
    params["train"]["epochs"] += 1
    write_params(repo / "params.yaml", params)
    assert "Running stage 'train'" in sh("dvc", "repro", "train", cwd=repo)
    (repo / "params.yaml").write_text(original)
    log = sh("dvc", "repro", "train", cwd=repo)
    assert "Stage 'train' is cached - skipping run" in log and "Running stage 'train'" not in log
    assert "Data and pipelines are up to date" in sh("dvc", "status", cwd=repo)


def pipeline_outputs(repo) -> dict[str, str]:
    """Every cached output file of the pipeline, by path, with its MD5."""
    outputs = {}
    for folder in ("data/raw", "data/prepared", "models", "reports/figures"):
        for path in sorted((repo / folder).rglob("*")):
            if path.is_file() and path.name != ".gitignore":
                outputs[str(path.relative_to(repo))] = hashlib.md5(path.read_bytes()).hexdigest()
    return outputs


def assert_clone_pulls_everything(repo, clone, remote, **env):
    """Push from `repo`, clone it, pull: the clone has every output and has nothing to reproduce."""
    sh("dvc", "push", "-r", remote, cwd=repo, **env)
    sh("git", "clone", "-q", str(repo), str(clone), cwd=repo)
    sh("dvc", "pull", "-r", remote, cwd=clone, **env)
    assert pipeline_outputs(clone) == pipeline_outputs(repo) and len(pipeline_outputs(repo)) >= 10
    assert "Data and pipelines are up to date" in sh("dvc", "status", cwd=clone)
    assert "Running stage" not in sh("dvc", "repro", cwd=clone)


def test_s3_remote_round_trip(repo, s3_endpoint, tmp_path):
    sh("dvc", "remote", "add", "s3", "s3://quantlab/store", cwd=repo)
    sh("dvc", "remote", "modify", "s3", "endpointurl", s3_endpoint, cwd=repo)
    commit(repo, "s3 remote")
    assert "testing" not in (repo / ".dvc/config").read_text()
    assert_clone_pulls_everything(repo, tmp_path / "clone", "s3", **AWS_ENV)


def test_local_remote_round_trip(repo, tmp_path):
    sh("dvc", "remote", "add", "shared", str(tmp_path / "storage"), cwd=repo)
    commit(repo, "local remote")
    assert_clone_pulls_everything(repo, tmp_path / "clone", "shared")


def test_push_to_unreachable_endpoint_fails_and_keeps_the_cache(repo):
    sh("dvc", "remote", "add", "--local", "dead", "s3://quantlab/store", cwd=repo)
    sh("dvc", "remote", "modify", "--local", "dead", "endpointurl", "http://127.0.0.1:9", cwd=repo)
    cache = sorted(str(path) for path in (repo / ".dvc/cache").rglob("*") if path.is_file())
    result = sh("dvc", "push", "-r", "dead", cwd=repo, check=False, **AWS_ENV)
    assert result.returncode != 0
    assert "ERROR" in result.stderr and "127.0.0.1:9" in result.stderr
    assert sorted(str(path) for path in (repo / ".dvc/cache").rglob("*") if path.is_file()) == cache
    assert "Data and pipelines are up to date" in sh("dvc", "status", cwd=repo)


# openvino takes the same path through the stages; its files are tested stage by stage (test_runtimes, test_vit).
# pt2e's every stage is run by the exported model's test (test_own_model), which adopts a model on that backend.
# Each keeps this file, the suite's longest, minutes shorter on 2 cores.
@pytest.mark.parametrize("backend", ["onnxruntime"])
def test_runtime_backend_runs_the_conversions_again_only(repo, backend):
    """`-S quantize.backend=onnxruntime` re-runs the conversions and what follows, not training: dynamic and static
    are the runtime's own int8 files, QAT is PyTorch's exported; the metrics keep their keys, compared with the
    baseline's by `dvc metrics diff` and `dvc exp show`."""
    commit(repo, "baseline")
    baseline = json.loads((repo / "reports/details.json").read_text())
    log = sh("dvc", "exp", "run", "-S", f"quantize.backend={backend}", cwd=repo)
    ran = {line.split("'")[1] for line in log.splitlines() if line.startswith("Running stage")}
    # sensitivity ranks layers with the backend's own static recipe: it runs again too
    assert ran == {"dynamic", "static", "qat", "evaluate", "sensitivity", "draws", "report"}
    metrics = json.loads((repo / "reports/details.json").read_text())
    assert metrics["environment"]["backend"] == backend
    own_file = {"onnxruntime": "model.onnx", "openvino": "model.xml"}[backend]
    for variant in ("dynamic", "static"):
        assert sorted(path.name for path in (repo / f"models/int8_{variant}").iterdir()) == sorted(
            [own_file, "model.json"] + (["model.bin"] if backend == "openvino" else [])
        )
        assert set(metrics[variant]["forms"]) <= {"onnxruntime", "openvino"}
    assert {"torchscript", backend} <= set(metrics["qat"]["forms"])
    assert min(metrics["qat"]["runtime_agreement"].values()) >= 0.99
    for variant in ("dynamic", "static", "qat"):
        assert set(metrics[variant]) >= set(baseline[variant]) - {"fusion"}
        assert abs(metrics[variant]["accuracy"] - baseline[variant]["accuracy"]) <= 0.03  # 200 test images: 6
    changed = json.loads(sh("dvc", "metrics", "diff", "--json", cwd=repo))["reports/metrics.json"]
    assert "fp32.accuracy" not in changed or changed["fp32.accuracy"]["diff"] == 0
    shown = sh("dvc", "exp", "show", "--md", "--no-pager", "--keep", "quantize.backend|static.accuracy", cwd=repo)
    assert backend in shown and "eager" in shown and "static.accuracy" in shown


def rendered_plots(shown: dict) -> dict[str, list]:
    """`dvc plots show/diff --json`: each plot DVC drew as a Vega spec, with the rows it drew."""
    return {
        name: entry["content"]["data"]["values"]
        for name, entries in shown["data"].items()
        for entry in entries
        if entry["type"] == "vega" and entry["content"]
    }


def test_every_plot_renders_and_diffs_across_experiments(repo):
    """Every plot dvc.yaml defines renders in `dvc plots show`, and in `dvc plots diff` between the eager baseline
    (HEAD) and the onnxruntime experiment of the test above (the workspace), with the rows of both revisions; DVC
    lists no error. A plot file with rows of two shapes, say, makes DVC fail to render it and list an error."""
    pipeline = YAML(typ="safe").load((repo / "dvc.yaml").read_text())
    drawn = [next(iter(plot)) for plot in pipeline["plots"] if isinstance(plot, dict)]  # the rest: the report's PNGs
    drawn += [next(iter(plot)) for stage in pipeline["stages"].values() for plot in stage.get("plots", [])]
    shown = json.loads(sh("dvc", "plots", "show", "--json", cwd=repo))
    assert not shown.get("errors") and set(drawn) <= set(rendered_plots(shown))
    diff = json.loads(sh("dvc", "plots", "diff", "HEAD", "--json", cwd=repo))
    assert not diff.get("errors")
    for name, rows in rendered_plots(diff).items():
        assert {row["rev"] for row in rows} == {"HEAD", "workspace"}, name
    assert set(drawn) <= set(rendered_plots(diff))
