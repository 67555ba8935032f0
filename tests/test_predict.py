"""`predict` on the built-in models and IDX data: image files in, class names of the data set out."""

import json
import shutil

import numpy
import pytest
import torch
from PIL import Image

from pipeline.backends.loading import load_module
from pipeline.formats.openvino import onnx_to_openvino
from tests.conftest import png_claiming, whole_split
from tests.test_cli import assert_clean_failure, run


def write_pngs(images: torch.Tensor, folder):
    folder.mkdir()
    for index, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{index:03d}.png")
    return folder


def test_predict_reads_png_pixels_the_way_the_model_was_trained(trained, tmp_path, monkeypatch):
    """Raw 0-255 PNG pixels: `predict` applies the recorded scaling, so its classes are the int8 model's own on
    the prepared images, and the names are the data set's."""
    monkeypatch.chdir(trained)
    stored = numpy.load(trained / "data/prepared/test/images.npy")[:20, 0]
    folder = write_pngs(stored, tmp_path / "pngs")
    result = run("predict", "models/int8_static", str(folder))
    assert result.exit_code == 0, result.output
    names = [line.split("\t")[1] for line in result.output.strip().splitlines()]
    model, _ = load_module(trained / "models/int8_static")
    images, _ = whole_split(trained / "data/prepared", "test")
    classes = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    with torch.inference_mode():
        assert names == [classes[label] for label in model(images[:20]).argmax(1)]


def test_predict_names_what_it_cannot_read(trained, tmp_path, monkeypatch):
    monkeypatch.chdir(trained)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    assert_clean_failure(
        run("predict", "models/fp32/model.pt", str(broken)), f"{broken}: not a readable PNG or JPEG image"
    )
    (tmp_path / "empty").mkdir()
    assert_clean_failure(run("predict", "models/fp32/model.pt", str(tmp_path / "empty")), "no PNG or JPEG image in")
    assert_clean_failure(
        run("predict", "models/fp32/model.pt", str(tmp_path / "absent.png")), "absent.png: no such file"
    )
    stray = tmp_path / "stray.ts"
    stray.write_bytes((trained / "models/fp32/model.ts").read_bytes())
    assert_clean_failure(run("predict", str(stray), str(broken)), "stray.json: no input contract beside stray.ts")
    many = write_pngs(numpy.zeros((301, 28, 28), dtype=numpy.uint8), tmp_path / "many")
    shutil.copyfile(broken, many / "zzz.png")  # read last, after a full batch of 256 has been scored
    assert_clean_failure(run("predict", "models/fp32/model.pt", str(many)), "zzz.png: not a readable PNG or JPEG image")


@pytest.mark.parametrize("runtime_file", ["model.onnx", "model.xml"])
def test_predict_runs_a_runtime_file(trained, tmp_path, monkeypatch, runtime_file):
    """The ONNX file (ONNX Runtime) or OpenVINO's file, named directly, reads its contract and predicts as the
    PyTorch int8 model does."""
    monkeypatch.chdir(trained)
    folder = tmp_path / "variant"
    shutil.copytree(trained / "models/int8_static", folder)
    if runtime_file == "model.xml":
        onnx_to_openvino(folder / "model.onnx", {}, folder / "model.xml")
    stored = numpy.load(trained / "data/prepared/test/images.npy")[:20, 0]
    pngs = write_pngs(stored, tmp_path / "pngs")
    pytorch, runtime = (run("predict", str(model), str(pngs)) for model in (folder, folder / runtime_file))
    assert runtime.exit_code == 0, runtime.output
    assert runtime.output.count("\n") == 20
    classes = [[line.split("\t")[1] for line in result.output.strip().splitlines()] for result in (pytorch, runtime)]
    assert classes[0] == classes[1]


def contract_edited(trained, tmp_path, change) -> str:
    """A copy of the static int8 folder whose model.json was edited by `change(contract)`."""
    folder = shutil.copytree(trained / "models/int8_static", tmp_path / "variant")
    contract = json.loads((folder / "model.json").read_text())
    change(contract)
    (folder / "model.json").write_text(json.dumps(contract))
    return str(folder)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c["data"].update(classes=list("abcde")), "model.json: names 5 classes, but the model gives [10]"),
        (
            lambda c: c["data"].update(classes=list("abcdefghijkl")),
            "names 12 classes, but the model gives [10] outputs",
        ),
        (lambda c: c["data"].update(channels=3), "model.json: the model does not take the images it describes"),
        (lambda c: c["data"].update(height=32, width=32), "does not take the images it describes, [N, 1, 32, 32]"),
        (
            lambda c: c.update(quantized_engine="bogus"),
            "model.json: quantized_engine 'bogus' is not one of this torch's",
        ),
        (lambda c: c["data"].update(mean=[0.5], std=[0.0]), "model.json: std.0: Input should be greater than 0"),
        (
            lambda c: c["data"].update(mean=[0.5]),
            "model.json: mean and std: both null, or both one value per channel (channels: 1)",
        ),
        (lambda c: c["data"].update(classes="0123456789"), "model.json: classes: Input should be a valid list"),
        (lambda c: c["data"].update(height="28"), "model.json: height: Input should be a valid integer (got '28')"),
        (lambda c: c.update(data=[1, 28, 28]), "model.json: not an input contract of this pipeline"),
        (lambda c: c["data"].update(channels=2), "model.json: the model takes images of 2 channels, but PNG and JPEG"),
    ],
)
def test_predict_checks_the_contract_against_the_model(trained, tmp_path, monkeypatch, change, message):
    monkeypatch.chdir(trained)
    image = tmp_path / "image.png"
    Image.new("L", (28, 28)).save(image)
    assert_clean_failure(run("predict", contract_edited(trained, tmp_path, change), str(image)), message)


def test_predict_prints_each_image_on_one_line_whatever_the_names(trained, tmp_path, monkeypatch):
    monkeypatch.chdir(trained)
    classes = [f"class\t{index}\nfake line" for index in range(10)]
    folder = contract_edited(trained, tmp_path, lambda c: c["data"].update(classes=classes))
    images = write_pngs(numpy.zeros((3, 28, 28), dtype=numpy.uint8), tmp_path / "pngs")
    (images / "odd\tname.png").write_bytes((images / "000.png").read_bytes())
    result = run("predict", folder, str(images))
    assert result.exit_code == 0, result.output
    lines = result.output.strip().split("\n")
    assert len(lines) == 4 and all(line.count("\t") == 2 for line in lines)
    assert "class\\t" in lines[0] and "\\nfake line" in lines[0] and "odd\\tname.png" in result.output


def test_predict_refuses_a_huge_image_and_a_missing_model(trained, tmp_path, monkeypatch):
    monkeypatch.chdir(trained)
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_claiming(20_000, 20_000))
    assert_clean_failure(run("predict", "models/int8_static", str(bomb)), "bomb.png: more than 67,108,864 pixels")
    assert_clean_failure(run("predict", "models/absent", str(bomb)), "models/absent: no such model file or folder")
