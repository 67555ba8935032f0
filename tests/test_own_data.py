"""Your own data: an image folder or tensor files, through prepare and through the real `dvc repro`."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from pipeline.__main__ import STAGES
from pipeline.backends.eager.modules import use_engine
from pipeline.data.prepared import load_split, read_info
from pipeline.formats.files import deployable_path
from pipeline.formats.input_contract import read_contract
from tests.conftest import png_claiming, tiny_params, write_image_folder, write_params, write_tensor_files
from tests.test_cli import assert_clean_failure, run
from tests.test_pipeline import commit, make_repo, sh

OWN = {"imagefolder": write_image_folder, "tensors": write_tensor_files}


def own_params(source, dataset, **overrides):
    return tiny_params(source, **{"data.dataset": dataset, "calibration.size": 60, **overrides})


@pytest.fixture
def own(tmp_path, monkeypatch):
    """A working folder and a function that writes params.yaml for an own-data source."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return lambda source, dataset, **overrides: write_params(
        work / "params.yaml", own_params(source, dataset, **overrides)
    )


@pytest.mark.parametrize("dataset", sorted(OWN))
def test_prepare_describes_the_data(own, tmp_path, dataset):
    own(OWN[dataset](tmp_path / "source"), dataset)
    assert run("download").exit_code == 0 and run("prepare").exit_code == 0
    info = read_info(tmp_path / "work/data/prepared")
    assert (info.dataset, info.input_shape, info.classes) == (dataset, [3, 12, 12], ("blue", "green", "red"))
    images, labels = load_split(tmp_path / "work/data/prepared/train.pt")
    assert images.shape == (90, 3, 12, 12) and images.max() <= 1 and set(labels.tolist()) == {0, 1, 2}


def test_channels_size_and_normalization_are_applied_and_recorded(own, tmp_path):
    own(
        write_image_folder(tmp_path / "source"),
        "imagefolder",
        **{"data.channels": 1, "data.image_size": [8, 6], "data.mean": [0.5], "data.std": [0.25]},
    )
    assert run("download").exit_code == 0 and run("prepare").exit_code == 0
    prepared = tmp_path / "work/data/prepared"
    stored = torch.load(prepared / "test.pt", weights_only=True)["images"]
    assert stored.dtype == torch.uint8 and stored.shape == (45, 8, 6)  # one channel, stored without its axis
    info = read_info(prepared)
    assert (info.input_shape, info.mean, info.std) == ([1, 8, 6], (0.5,), (0.25,))
    images, _ = load_split(prepared / "test.pt")
    assert torch.allclose(images, (stored.unsqueeze(1).float() / 255 - 0.5) / 0.25)


def damage_classes(source):
    (source / "test/red").rename(source / "test/crimson")


def empty_class(source):
    (source / "train/yellow").mkdir()
    (source / "test/yellow").mkdir()


def truncate_image(source):
    image = source / "train/green/0000.png"
    image.write_bytes(image.read_bytes()[:60])


def odd_size(source):
    Image.new("RGB", (10, 12)).save(source / "train/blue/odd.png")


def bomb(source):
    (source / "train/green/bomb.png").write_bytes(png_claiming(20_000, 20_000))


@pytest.mark.parametrize(
    "damage, message",
    [
        (bomb, "train/green/bomb.png: more than 67,108,864 pixels, which is more than an image may have"),
        (odd_size, "train/blue/odd.png: image of [3, 12, 10] (channels, height, width), but 0003.png is [3, 12, 12]"),
        (damage_classes, "train and test name different classes (only in train: ['red']; only in test: ['crimson'])"),
        (empty_class, "train/yellow: class folder holds no PNG or JPEG image"),
        (truncate_image, "imagefolder/train/green/0000.png: not a readable PNG or JPEG image, truncated or corrupt"),
    ],
)
def test_bad_image_folder_is_named_and_nothing_written(own, tmp_path, damage, message):
    source = write_image_folder(tmp_path / "source")
    damage(source)
    own(source, "imagefolder")
    assert run("download").exit_code == 0
    assert_clean_failure(run("prepare"), message)
    assert not (tmp_path / "work/data/prepared").exists()


def linked_class(source, tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (source / "train/evil").symlink_to(tmp_path / "elsewhere")
    return "train/evil"


def linked_image(source, tmp_path):
    (source / "train/red/evil.png").symlink_to("/etc/passwd")
    return "train/red/evil.png"


def linked_tensors(source, tmp_path):
    (source / "train.pt").rename(tmp_path / "train.pt")
    (source / "train.pt").symlink_to(tmp_path / "train.pt")
    return "train.pt"


@pytest.mark.parametrize("link", [linked_class, linked_image, linked_tensors])
def test_a_symbolic_link_in_your_data_is_refused(own, tmp_path, link):
    """What download copies is cached and pushed: a link out of data.local_dir must not carry a file along."""
    dataset = "tensors" if link is linked_tensors else "imagefolder"
    source = OWN[dataset](tmp_path / "source")
    where = link(source, tmp_path)
    own(source, dataset)
    assert_clean_failure(run("download"), f"{source / where}: a symbolic link; data.local_dir must hold your data")
    assert not (tmp_path / "work/data").exists()


def test_files_that_are_not_images_are_left_out_and_counted(own, tmp_path):
    source = write_image_folder(tmp_path / "source")
    (source / "train/red/notes.txt").write_text("not an image")
    (source / "test/.DS_Store").write_bytes(b"\0")
    own(source, "imagefolder")
    result = run("download")
    assert result.exit_code == 0 and "left out 2 files that are not PNG or JPEG images" in result.output
    copied = sorted(path.name for path in (tmp_path / "work/data/raw/imagefolder").rglob("*") if path.is_file())
    assert copied == sorted(path.name for path in source.rglob("*.png"))


class Planted:
    """A class that unpickling would have to import: what `weights_only` refuses."""


@pytest.mark.parametrize(
    "content, message",
    [
        ({"images": [[0, 1]], "labels": torch.zeros(1, dtype=torch.long)}, "'images' must be a uint8 or float"),
        ({"images": torch.zeros(2, 3, 4, 4), "labels": torch.zeros(2)}, "'labels' must be an int64 tensor of 2"),
        ({"images": Planted(), "labels": None}, "refused to load: it needs full unpickling"),
    ],
)
def test_tensor_file_with_anything_but_tensors_is_refused(own, tmp_path, content, message):
    source = write_tensor_files(tmp_path / "source")
    torch.save(content, source / "train.pt")
    own(source, "tensors")
    assert run("download").exit_code == 0
    assert_clean_failure(run("prepare"), f"train.pt: {message}")
    assert not (tmp_path / "work/data/prepared").exists()


def test_normalization_must_fit_the_channels(own, tmp_path):
    own(write_image_folder(tmp_path / "source"), "imagefolder", **{"data.mean": [0.5], "data.std": [0.25]})
    assert run("download").exit_code == 0
    assert_clean_failure(run("prepare"), "data.mean and data.std: need 3 values each, one per channel")


def test_missing_source_folder_is_named(own, tmp_path):
    own(tmp_path / "nowhere", "imagefolder")
    assert_clean_failure(run("download"), f"data.local_dir: {tmp_path / 'nowhere'} holds no train or test")


@pytest.fixture(scope="module")
def own_repo(tmp_path_factory):
    """A git + DVC copy of the pipeline whose data is an image folder outside the repository; a small CNN."""
    base = tmp_path_factory.mktemp("own")
    params = own_params(
        write_image_folder(base / "images"),
        "imagefolder",
        **{"train.arch": "cnn", "train.channels": [8, 16], "evaluate.batch_sizes": [16]},
    )
    return make_repo(base / "repo", params)


def repro_every_stage(repo) -> dict:
    """`dvc repro` runs every stage, and every variant tells the three colours apart; the metrics."""
    log = sh("dvc", "repro", cwd=repo)
    for stage in STAGES[:-1]:  # all but report
        assert f"Running stage '{stage}'" in log
    metrics = json.loads((repo / "reports/details.json").read_text())
    for variant in ("fp32", "dynamic", "static", "qat"):
        assert metrics[variant]["accuracy"] > 0.8, variant  # three classes: chance is 0.33
    return metrics


def test_image_folder_runs_every_stage(own_repo):
    metrics = repro_every_stage(own_repo)
    for variant in ("fp32", "dynamic", "static", "qat"):
        assert set(metrics[variant]["per_class_accuracy"]) == {"0", "1", "2"}
    layers = [row["layer"] for row in json.loads((own_repo / "reports/plots/sensitivity.json").read_text())]
    assert sorted(layers) == ["classifier", "features.0", "features.4"]


def test_a_changed_image_reruns_the_data_stages(own_repo):
    commit(own_repo, "first run")
    red = own_repo.parent / "images/train/red"
    shutil.copy(sorted(red.iterdir())[0], red / "added.png")  # one training image more
    status = sh("dvc", "status", cwd=own_repo)
    assert "download:" in status and "prepare:" not in status  # what download copies has not changed yet
    log = sh("dvc", "repro", "prepare", cwd=own_repo)  # the data stages only: what follows is status's to name
    assert "Running stage 'download'" in log and "Running stage 'prepare'" in log
    assert len(load_split(own_repo / "data/prepared/train.pt")[1]) == 91
    assert "train:" in sh("dvc", "status", cwd=own_repo)


def predictions(output: str) -> list[tuple[str, str, float]]:
    rows = [line.split("\t") for line in output.strip().splitlines()]
    return [(Path(path).name, name, float(probability)) for path, name, probability in rows]


@pytest.mark.parametrize("variant", ["models/fp32/model.pt", "models/int8_static"])
def test_predict_feeds_the_deployable_as_evaluation_does(own_repo, variant):
    """`predict` on the test images' PNG files gives the classes that the deployable file gives on the prepared
    test split, image for image: the same decoding, scaling and class names."""
    output = sh("python", "-m", "pipeline", "predict", variant, str(own_repo.parent / "images/test"), cwd=own_repo)
    rows = predictions(output)
    deployable = deployable_path(own_repo / variant)
    data, engine = read_contract(deployable)
    if engine is not None:
        use_engine(engine)
    images, labels = load_split(own_repo / "data/prepared/test.pt")
    with torch.inference_mode():
        expected = torch.jit.load(str(deployable))(images).argmax(1)
    assert [name for _, name, _ in rows] == [data.classes[label] for label in expected]
    assert sum(name == data.classes[label] for (_, name, _), label in zip(rows, labels)) / len(rows) > 0.8
    assert all(1 / 3 <= probability <= 1 for _, _, probability in rows)
