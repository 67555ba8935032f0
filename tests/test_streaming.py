"""Prepared data is read a batch at a time: what is read is what was written, no stage holds a split whole, the
test subsets are drawn as params.yaml says, and QAT can be left out."""

import shutil
from collections import defaultdict

import numpy
import pytest
import torch
from ruamel.yaml import YAML

import pipeline.data.prepared as prepared
from pipeline.data.prepared import DataInfo, Images, load_split, model_inputs, write_info, write_split
from pipeline.errors import PipelineError
from tests.conftest import write_params
from tests.test_cli import assert_clean_failure, run

INFO = DataInfo("tensors", 3, 4, 5, ("a", "b", "c"), mean=(0.5, 0.4, 0.3), std=(0.25, 0.2, 0.1))


@pytest.fixture
def written(tmp_path):
    """A split of 50 RGB images of 4x5 pixels, written in batches of 16, and the model inputs it should read as."""
    pixels = torch.randint(0, 256, (50, 3, 4, 5), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(50) % 3
    write_split(tmp_path / "test", pixels.split(16), labels, "test")
    write_info(INFO, tmp_path)
    return tmp_path, pixels, labels


def test_images_read_the_rows_asked_for(written):
    folder, pixels, labels = written
    images, read_labels = load_split(folder, "test")
    expected = model_inputs(pixels, INFO)
    assert len(images) == 50 and images.shape == (50, 3, 4, 5) and torch.equal(read_labels, labels)
    assert torch.equal(images[:], expected) and torch.equal(images[10:20], expected[10:20])
    rows = torch.tensor([7, 3, 3, 49])
    assert torch.equal(images[rows], expected[rows])
    subset = images.subset(torch.tensor([5, 1, 9]))
    assert len(subset) == 3 and torch.equal(subset[1:], expected[[1, 9]])
    assert numpy.array_equal(numpy.load(folder / "test/images.npy", allow_pickle=False), pixels.numpy())


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda path: path.write_bytes(path.read_bytes()[:-7]), "holds 2993 bytes of images, not (50, 3, 4, 5) uint8"),
        (lambda path: numpy.save(path, numpy.zeros((2, 3, 4, 5))), "float64 images; expected uint8 pixels"),
        (lambda path: numpy.save(path, numpy.zeros((2, 4, 5), numpy.uint8)), "images of shape (2, 4, 5)"),
        (lambda path: numpy.save(path, numpy.array([{}]), allow_pickle=True), "object images; expected uint8"),
        (lambda path: path.write_bytes(b"not numpy"), "not a NumPy .npy file"),
    ],
)
def test_a_damaged_images_file_is_named(written, damage, message):
    folder, _, _ = written
    damage(folder / "test/images.npy")
    with pytest.raises(PipelineError, match=r"test/images\.npy: ") as error:
        load_split(folder, "test")
    assert message in str(error.value)


@pytest.fixture
def reads(trained, tmp_path, monkeypatch):
    """A copy of the trained project where a batch is 8 images of 28x28 and every read of prepared images is
    recorded: {images file: [rows of each read]}. Its splits: 400 train, 200 test, 100 calibration images."""
    work = shutil.copytree(trained, tmp_path / "work")
    monkeypatch.chdir(work)
    monkeypatch.setattr(prepared, "BATCH_BYTES", 8 * 4 * 28 * 28)
    recorded, pixels = defaultdict(list), Images.pixels

    def spy(self, rows):
        recorded[self.path.parent.name].append(rows.tolist())
        return pixels(self, rows)

    monkeypatch.setattr(Images, "pixels", spy)
    return work, recorded


def test_no_stage_reads_a_split_whole(reads):
    """Training and QAT read their batches of 32, calibration its 2 batches of 50, scoring and timing 8 or 16 at a
    time: never one of the 400, 200 or 100 images of a split at once."""
    work, recorded = reads
    for stage in ("train", "static", "qat", "evaluate", "layers", "sensitivity", "draws"):
        result = run(stage)
        assert result.exit_code == 0, f"{stage}: {result.output}"
    assert set(recorded) == {"train", "test", "calib"}
    assert max(len(rows) for read in recorded.values() for rows in read) == 50


def test_draws_and_sensitivity_score_their_own_test_subsets(reads):
    work, recorded = reads
    params = YAML(typ="safe").load((work / "params.yaml").read_text())
    params["calibration"]["draw_test_images"] = 30
    params["static"]["sensitivity_test_images"] = 40
    write_params(work / "params.yaml", params)
    for stage, count in (("draws", 30), ("sensitivity", 40)):
        recorded.clear()
        assert run(stage).exit_code == 0
        scored = {row for rows in recorded["test"] for row in rows}
        assert len(scored) == count and scored < set(range(200))


def test_a_test_subset_is_drawn_by_seed_and_decoded_alone(project):
    params = YAML(typ="safe").load((project / "params.yaml").read_text())
    params["data"]["test_images"] = 50
    write_params(project / "params.yaml", params)
    assert run("download").exit_code == 0
    result = run("prepare")
    assert result.exit_code == 0 and "test: 50 images" in result.output
    images, labels = load_split(project / "data/prepared", "test")
    assert len(images) == len(labels) == 50
    params["data"]["test_images"] = 201
    write_params(project / "params.yaml", params)
    assert_clean_failure(run("prepare"), "data.test_images: 201 is more than the 200 test images")
    assert len(load_split(project / "data/prepared", "test")[1]) == 50  # the prepared data kept


def test_qat_left_out_is_said_not_failed(trained, tmp_path, monkeypatch):
    work = shutil.copytree(trained, tmp_path / "work")
    monkeypatch.chdir(work)
    params = YAML(typ="safe").load((work / "params.yaml").read_text())
    params["qat"]["epochs"] = 0
    write_params(work / "params.yaml", params)
    for stage in ("qat", "evaluate", "layers", "sensitivity", "draws", "report"):
        result = run(stage)
        assert result.exit_code == 0, f"{stage}: {result.output}"
    assert not (work / "models/int8_qat/model.pt").exists()
    metrics = YAML(typ="safe").load((work / "reports/metrics.json").read_text())
    assert "qat" not in metrics and {"fp32", "dynamic", "static"} <= metrics.keys()
    assert "qat: not made: qat.epochs is 0." in (work / "reports/summary.md").read_text()
