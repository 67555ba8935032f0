"""The real `dvc repro` in a temporary copy of the repository, on tiny synthetic data."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, tiny_params, write_dataset, write_params

BIN = Path(sys.executable).parent


def sh(*args, cwd):
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A git + DVC copy of the repository's pipeline, params shrunk to seconds."""
    base = tmp_path_factory.mktemp("e2e")
    repo = base / "repo"
    repo.mkdir()
    for name in ("pipeline", "dvc.yaml", ".dvcignore", ".gitignore"):
        source = ROOT / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, repo / name)
    shutil.rmtree(repo / "pipeline/__pycache__", ignore_errors=True)
    write_params(repo / "params.yaml", tiny_params(write_dataset(base / "idx")))
    sh("git", "init", "-q", cwd=repo)
    sh("dvc", "init", "-q", cwd=repo)
    sh("dvc", "config", "core.analytics", "false", cwd=repo)
    sh("git", "add", "-A", cwd=repo)
    sh("git", "-c", "user.name=test", "-c", "user.email=test@localhost", "commit", "-qm", "pipeline", cwd=repo)
    return repo


def test_repro_runs_every_stage_then_nothing(repo):
    log = sh("dvc", "repro", cwd=repo)
    for stage in ("download", "prepare", "train", "dynamic", "static", "qat", "evaluate", "report"):
        assert f"Running stage '{stage}'" in log
    metrics = json.loads((repo / "reports/metrics.json").read_text())
    for variant in ("fp32", "dynamic", "static", "qat"):
        entry = metrics[variant]
        assert entry["accuracy"] > 0.5 and entry["size_bytes"] > 0
        assert set(entry["latency_ms"]) == {"batch_1", "batch_16"} and min(entry["latency_ms"].values()) > 0
    assert metrics["static"]["vs_fp32"]["size_ratio"] < 0.5
    assert (repo / "reports/figures/accuracy_vs_size.png").stat().st_size > 1000
    assert "Data and pipelines are up to date" in sh("dvc", "repro", cwd=repo)


def test_experiment_reruns_only_what_the_param_touches(repo):
    sh("git", "add", "-A", cwd=repo)
    sh("git", "-c", "user.name=test", "-c", "user.email=test@localhost", "commit", "-qm", "baseline", cwd=repo)
    log = sh("dvc", "exp", "run", "-S", "static.observer=histogram", cwd=repo)
    ran = {line.split("'")[1] for line in log.splitlines() if line.startswith("Running stage")}
    assert ran == {"static", "evaluate", "report"}
    diff = json.loads(sh("dvc", "metrics", "diff", "--json", cwd=repo))
    changed = diff["reports/metrics.json"]
    assert "fp32.accuracy" not in changed or changed["fp32.accuracy"]["diff"] == 0
    assert "static.accuracy" in sh("dvc", "exp", "show", "--md", "--no-pager", cwd=repo)
