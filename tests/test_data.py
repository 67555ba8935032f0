"""Facts about the data travel from the prepared data into every model: nothing assumes 28x28 or 10 classes."""

import json

import pytest
import torch

from pipeline.backends.eager.modules import quantize_static, static_qconfig, use_engine
from pipeline.backends.loading import load_module
from pipeline.data.prepared import read_info
from pipeline.data.published import registry
from pipeline.errors import PipelineError
from pipeline.models.architectures import build


def test_prepare_records_image_size_and_class_names(trained):
    info = read_info(trained / "data/prepared")
    assert (info.dataset, info.input_shape) == ("fashion-mnist", [1, 28, 28])
    assert info.classes == registry()["fashion-mnist"].classes and info.classes[0] == "T-shirt/top"
    arch = load_module(trained / "models/fp32/model.pt")[1]["arch"]
    assert (arch["input"], arch["classes"]) == ([1, 28, 28], 10)


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_models_take_the_shape_and_classes_their_arch_names(name):
    """Three channels, a non-square image and five classes, through FP32 and static int8."""
    widths = {"hidden": [16]} if name == "mlp" else {"channels": [4, 8]}
    torch.manual_seed(0)
    model = build({"name": name, **widths, "input": [3, 20, 12], "classes": 5}).eval()
    images = torch.rand(8, 3, 20, 12)
    use_engine("x86")
    int8 = quantize_static(model, static_qconfig("minmax", False, "x86"), images, 2, fused=True)
    assert model(images).shape == int8(images).shape == (8, 5)


def test_a_damaged_description_is_named(tmp_path):
    (tmp_path / "dataset.json").write_text(json.dumps({"dataset": "x", "channels": 1}))
    with pytest.raises(PipelineError, match="dataset.json: missing key 'height'; missing key 'width'; missing key 'cl"):
        read_info(tmp_path)
    (tmp_path / "dataset.json").write_text(json.dumps([1, 28, 28]))
    with pytest.raises(PipelineError, match="dataset.json: not a description of prepared data"):
        read_info(tmp_path)
