"""torchvision's architectures by name, and weights you already have on disk (`train.weights`): nothing is
downloaded, and a weights file runs no code."""

from pathlib import Path

import pytest
import torch

from pipeline.backends.loading import load_module
from pipeline.data.prepared import read_info
from pipeline.models.architectures import architecture, build
from pipeline.models.torchvision_zoo import ARCHITECTURES
from pipeline.params import load_params
from tests.conftest import tiny_params, write_params
from tests.test_cli import assert_clean_failure, run


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_every_torchvision_architecture_takes_the_data_it_is_built_for(name):
    """Grey images of 32x32 and five classes: the stem takes one channel, the classifier gives five outputs, and
    vit_b_16 cuts 32x32 into its 16x16 patches."""
    model = build({"name": name, "input": [1, 32, 32], "classes": 5}).eval()
    with torch.no_grad():
        assert model(torch.rand(2, 1, 32, 32)).shape == (2, 5)


def weights_for(arch: dict, path: Path, seed: int) -> dict:
    torch.manual_seed(seed)
    state = build(arch).state_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return state


def test_train_adopts_your_weights_as_they_are(project, raw_dir):
    for stage in ("download", "prepare"):
        assert run(stage).exit_code == 0
    params = tiny_params(raw_dir, **{"train.arch": "cnn", "train.epochs": 0, "train.weights": "models/own/cnn.pt"})
    write_params(Path("params.yaml"), params)
    state = weights_for(
        architecture(load_params().train, read_info(Path("data/prepared"))), Path("models/own/cnn.pt"), 1
    )
    result = run("train")
    assert result.exit_code == 0, result.output
    assert "adopted without training: test accuracy" in result.output
    trained = load_module(Path("models/trained"))[0].state_dict()
    assert trained.keys() == state.keys() and all(torch.equal(trained[key], state[key]) for key in state)
    assert Path("reports/plots/training.json").read_text().strip() == "[]"


def test_weights_that_do_not_fit_are_named_and_nothing_is_written(project, raw_dir):
    for stage in ("download", "prepare"):
        assert run(stage).exit_code == 0
    weights_for({"name": "mlp", "hidden": [8], "input": [1, 28, 28], "classes": 10}, Path("models/own/mlp.pt"), 1)
    write_params(
        Path("params.yaml"), tiny_params(raw_dir, **{"train.arch": "cnn", "train.weights": "models/own/mlp.pt"})
    )
    assert_clean_failure(run("train"), "train.weights: models/own/mlp.pt does not fit the CNN built for the data")
    assert not Path("models/trained").exists()
