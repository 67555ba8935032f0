"""Your own model: an FP32 classifier with a residual add and a depthwise convolution, defined and trained here,
exported with torch.export, and adopted by the pipeline, through the real `dvc repro` on your own image folder;
and every way a model file can be wrong."""

import io
import json
import shutil
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from pipeline.__main__ import STAGES
from pipeline.data.prepared import DataInfo, model_inputs
from pipeline.formats.deployables import deployable_path
from pipeline.formats.input_contract import read_contract
from pipeline.measure.variants import deployable_runnable
from pipeline.models.training import fit
from tests.conftest import colour_images, whole_split, write_image_folder, write_params
from tests.test_cli import Exploit, assert_clean_failure, run
from tests.test_own_data import own_params
from tests.test_pipeline import commit, make_repo, sh

COLOURS = DataInfo("imagefolder", 3, 12, 12, ("blue", "green", "red"))


class Residual(nn.Module):
    """A stem, a depthwise-separable block added back to its input, and a linear head."""

    def __init__(self, classes: int = 3):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.pointwise = nn.Conv2d(8, 8, 1)
        self.head = nn.Linear(8, classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = torch.relu(self.stem(images))
        features = features + torch.relu(self.pointwise(self.depthwise(features)))
        return self.head(features.mean((2, 3)))


def export_trained(path, seed: int = 0, classes: int = 3, dynamic: bool = True):
    """Train a Residual briefly on the colour images and save it as the user would: torch.export, then save."""
    torch.manual_seed(seed)
    model = Residual(classes)
    pixels, labels = colour_images(90, 3)
    fit(model, model_inputs(pixels, COLOURS), labels, epochs=30, batch_size=16, lr=0.03, seed=seed)
    shapes = ({0: torch.export.Dim("batch")},) if dynamic else None
    program = torch.export.export(model.eval(), (torch.rand(2, 3, 12, 12),), dynamic_shapes=shapes)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, path)
    return path


@pytest.fixture
def own(tmp_path, monkeypatch):
    """A working folder where download and prepare have run on the colour images; train.arch: exported."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    params = own_params(write_image_folder(tmp_path / "images"), "imagefolder", **{"train.arch": "exported"})
    write_params(work / "params.yaml", params)
    assert run("download").exit_code == 0 and run("prepare").exit_code == 0
    return work


def test_adopted_model_is_checked_and_saved_with_its_contract(own):
    export_trained(own / "models/own/model.pt2")
    result = run("train")
    assert result.exit_code == 0, result.output
    assert "adopted models/own/model.pt2: test accuracy" in result.output
    assert (own / "models/trained/model.pt2").is_file()
    assert run("export").exit_code == 0
    assert (own / "models/fp32/model.pt2").is_file() and (own / "models/fp32/model.json").is_file()


def test_a_pickled_module_is_refused_with_the_lines_to_export_it(own):
    (own / "models/own").mkdir(parents=True)
    torch.save(Residual(), own / "models/own/model.pt")
    assert_clean_failure(run("train"), "found model.pt, a pickled module, which is refused; export it in your own code")
    assert not (own / "models/trained").exists()


def test_input_shape_that_does_not_fit_the_images_names_both(own):
    export_trained(own / "models/own/model.pt2")
    params = (own / "params.yaml").read_text().replace("image_size: null", "image_size: [10, 10]")
    (own / "params.yaml").write_text(params)
    assert run("prepare").exit_code == 0
    assert_clean_failure(run("train"), "takes images of shape [N, 3, 12, 12], but")
    assert "but the prepared images are [N, 3, 10, 10]" in run("train").output
    assert not (own / "models/trained").exists()


def test_outputs_that_do_not_match_the_classes_are_named(own):
    export_trained(own / "models/own/model.pt2", classes=5)
    assert_clean_failure(run("train"), "gives [5] outputs per image, but the data has 3 classes (blue, green, red)")


def test_a_fixed_batch_size_is_named(own):
    export_trained(own / "models/own/model.pt2", dynamic=False)
    assert_clean_failure(run("train"), "its batch size is fixed at 2; export it in your own code with")


class Pair(Residual):
    def forward(self, images):
        return super().forward(images), images.mean()


class Named(Residual):
    def forward(self, images):
        return {"logits": super().forward(images)}


class Constant(nn.Module):
    def __init__(self):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(2, 3))

    def forward(self):
        return self.logits * 2


class Scaled(Residual):
    def forward(self, images, scale):
        return super().forward(images) * scale


def with_nan_weight() -> nn.Module:
    model = Residual()
    with torch.no_grad():
        model.pointwise.weight[0, 0] = float("nan")
    return model


BATCH = {0: torch.export.Dim("batch")}


@pytest.mark.parametrize(
    "model, inputs, shapes, message",
    [
        (Pair(), (torch.rand(2, 3, 12, 12),), (BATCH,), "the model returns a tuple, but it must return one tensor of"),
        (Named(), (torch.rand(2, 3, 12, 12),), (BATCH,), "the model returns a dict, but it must return one tensor of"),
        (Constant(), (), None, "the model takes no input, but it must take one, a batch of images; export it"),
        (
            Scaled(),
            (torch.rand(2, 3, 12, 12), torch.tensor(2.0)),
            (BATCH, None),
            "the model takes 2 inputs (images, scale), but it must take one, a batch of images",
        ),
        (with_nan_weight(), (torch.rand(2, 3, 12, 12),), (BATCH,), "its weight pointwise.weight holds NaN or infinite"),
    ],
    ids=["tuple", "dict", "no-input", "two-inputs", "nan-weight"],
)
def test_a_model_that_is_not_one_images_to_logits_function_is_named(own, model, inputs, shapes, message):
    (own / "models/own").mkdir(parents=True)
    program = torch.export.export(model.eval(), inputs, dynamic_shapes=shapes)
    torch.export.save(program, own / "models/own/model.pt2")
    assert_clean_failure(run("train"), f"models/own/model.pt2: {message}")
    assert not (own / "models/trained").exists()


def test_a_planted_pickle_is_refused_and_does_not_run(own, tmp_path):
    """torch.export.load falls back to full unpickling for example inputs it cannot load restricted: a pickle
    planted there runs on loading. The pipeline refuses the archive before torch sees it."""
    good = export_trained(tmp_path / "good.pt2")
    marker = tmp_path / "ran"
    planted = io.BytesIO()
    torch.save((Exploit(str(marker)),), planted)
    target = own / "models/own/model.pt2"
    target.parent.mkdir(parents=True)
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(target, "w") as archive:
        for record in source.infolist():
            data = planted.getvalue() if "/sample_inputs/" in record.filename else source.read(record)
            archive.writestr(record, data)
    assert_clean_failure(run("train"), "refused to load: its example inputs is a pickle that can run code")
    assert not marker.exists() and not (own / "models/trained").exists()
    try:  # the plant is live: torch's own load runs it
        torch.export.load(target)
    except Exception:
        pass  # it may then trip over what the payload returned
    assert marker.exists()


@pytest.fixture(scope="module")
def exported_repo(tmp_path_factory):
    """A git + DVC copy of the pipeline whose data is an image folder outside the repository (tensor files go
    through download and prepare in test_own_data), and the exported Residual model, backend pt2e."""
    base = tmp_path_factory.mktemp("exported")
    # One batch size: every form of a pt2e model compiles once per size. One calibration draw: the test reads no
    # spread (the MLP repository's test does), and each draw quantizes again.
    overrides = {
        "train.arch": "exported",
        "quantize.backend": "pt2e",
        "evaluate.batch_sizes": [16],
        "calibration.draws": 1,
    }
    params = own_params(write_image_folder(base / "images"), "imagefolder", **overrides)
    export_trained(base / "model.pt2")
    repo = make_repo(base / "repo", params)
    (repo / "models/own/model.pt2").write_bytes((base / "model.pt2").read_bytes())
    commit(repo, "my model")
    return repo


def test_an_exported_model_goes_through_every_stage(exported_repo):
    """`dvc repro` runs every stage on the pt2e backend, and every variant tells the three colours apart; each
    int8 variant is a torch.export archive."""
    log = sh("dvc", "repro", cwd=exported_repo)
    for stage in STAGES[:-1]:  # all but report
        assert f"Running stage '{stage}'" in log
    metrics = json.loads((exported_repo / "reports/details.json").read_text())
    for variant in ("fp32", "dynamic", "static", "qat"):
        assert metrics[variant]["accuracy"] > 0.8, variant  # three classes: chance is 0.33
        assert set(metrics[variant]["per_class_accuracy"]) == {"0", "1", "2"}
        # the graph compiled by PyTorch, and its ONNX export run by both runtimes, which predict as it does
        assert set(metrics[variant]["forms"]) == {"compiled", "onnxruntime", "openvino"}
        assert min(metrics[variant]["runtime_agreement"].values()) >= 0.99, variant
    for variant in ("static", "qat"):  # QDQ files, checked against their own arithmetic
        assert set(metrics[variant]["kernel_agreement"]) == {"onnxruntime", "openvino"}
    for variant in ("dynamic", "static", "qat"):
        assert (exported_repo / f"models/int8_{variant}/model.pt2").is_file()
        assert not (exported_repo / f"models/int8_{variant}/model.pt").exists()
    assert metrics["static"]["fusion"].startswith("not measured")  # pt2e fuses as it lowers: no unfused twin
    layers = {row["layer"] for row in json.loads((exported_repo / "reports/plots/sensitivity.json").read_text())}
    assert layers == {"stem", "depthwise", "pointwise", "head"}
    assert "not_applicable" in json.loads((exported_repo / "reports/affine.json").read_text())


def predictions(output: str) -> list[tuple[str, str, float]]:
    rows = [line.split("\t") for line in output.strip().splitlines()]
    return [(Path(path).name, name, float(probability)) for path, name, probability in rows]


def test_predict_feeds_the_deployable_as_evaluation_does(exported_repo):
    """`predict` on the test images' PNG files gives the classes that the deployable file gives on the prepared
    test split, image for image: the same decoding, scaling and class names. (The FP32 folder's archive takes the
    same path; test_predict runs TorchScript files.)"""
    images_folder = str(exported_repo.parent / "images/test")
    rows = predictions(
        sh("python", "-m", "pipeline", "predict", "models/int8_static", images_folder, cwd=exported_repo)
    )
    deployable = deployable_path(exported_repo / "models/int8_static")
    data, engine = read_contract(deployable)
    images, labels = whole_split(exported_repo / "data/prepared", "test")
    with torch.inference_mode():
        expected = deployable_runnable(deployable, engine)(images).argmax(1)
    assert [name for _, name, _ in rows] == [data.classes[label] for label in expected]
    assert sum(name == data.classes[label] for (_, name, _), label in zip(rows, labels)) / len(rows) > 0.8
    assert all(1 / 3 <= probability <= 1 for _, _, probability in rows)


def test_a_new_model_file_reruns_what_follows_the_model_only(exported_repo):
    commit(exported_repo, "first run")
    export_trained(exported_repo / "models/own/model.pt2", seed=1)
    status = sh("dvc", "status", cwd=exported_repo)
    assert "train:" in status and "models/own" in status
    log = sh("dvc", "repro", "export", cwd=exported_repo)
    assert "Running stage 'train'" in log and "Running stage 'export'" in log
    assert "Running stage 'download'" not in log and "Running stage 'prepare'" not in log
    status = sh("dvc", "status", cwd=exported_repo).splitlines()
    stale = {line.rstrip(":") for line in status if line.endswith(":") and not line.startswith("\t")}
    assert stale == {"dynamic", "static", "qat", "evaluate", "layers", "sensitivity", "draws"}  # what reads it


def test_a_changed_image_reruns_the_data_stages(exported_repo):
    commit(exported_repo, "before the new image")
    red = exported_repo.parent / "images/train/red"
    shutil.copy(sorted(red.iterdir())[0], red / "added.png")  # one training image more
    status = sh("dvc", "status", cwd=exported_repo)
    assert "download:" in status and "prepare:" not in status  # what download copies has not changed yet
    log = sh("dvc", "repro", "prepare", cwd=exported_repo)  # the data stages only: what follows is status's to name
    assert "Running stage 'download'" in log and "Running stage 'prepare'" in log
    assert len(whole_split(exported_repo / "data/prepared", "train")[1]) == 91
    assert "train:" in sh("dvc", "status", cwd=exported_repo)
