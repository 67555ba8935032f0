"""The torchao backend: int8 graphs that agree with the eager backend, save and load whole, and compile."""

import subprocess
import sys
import zipfile

import pytest
import torch

from pipeline.backends import pt2e
from pipeline.backends.eager.modules import quantize_static, static_qconfig, use_engine
from pipeline.backends.loading import load_module
from pipeline.backends.recipes import StaticRecipe
from pipeline.formats.fp32 import Fp32Model
from pipeline.formats.torch_export import load_archive, write_archive
from pipeline.measure.latency import compiled
from pipeline.measure.sizes import floor_bytes
from pipeline.models.architectures import CNN, accuracy, predict
from pipeline.models.training import fit
from tests.conftest import IDX_ARCH, IDX_INFO, IDX_SHAPE, ROOT, whole_split

RECIPE = StaticRecipe("pt2e", "x86", fused=True, observer="minmax", per_channel=True, symmetric_activations=False)


def save_variant(graph, arch: dict, folder) -> None:
    """The pt2e backend's folder of a static int8 graph."""
    pt2e.Pt2e().save(graph, Fp32Model(graph, arch, folder), RECIPE, folder, IDX_INFO)


@pytest.fixture(scope="module")
def data(trained):
    return whole_split(trained / "data/prepared", "calib"), whole_split(trained / "data/prepared", "test")


@pytest.fixture(scope="module")
def fp32(trained):
    return load_module(trained / "models/fp32/model.pt", expect="fp32")


def int8_weights(state_dict: dict) -> int:
    return sum(1 for value in state_dict.values() if value.dtype == torch.int8)


@pytest.mark.parametrize("observer", ["minmax", "histogram"])
def test_static_agrees_with_the_eager_backend(fp32, data, observer):
    (calibration, _), (images, labels) = data
    model = fp32[0]
    use_engine("onednn")  # full 8-bit activations, as the pt2e config uses
    eager = quantize_static(model, static_qconfig(observer, True, "onednn"), calibration, 2, fused=True)
    graph = pt2e.quantize_static(model, pt2e.static_config(observer, False), calibration, 2)
    agreement = (predict(eager, images) == predict(graph, images)).float().mean().item()
    assert agreement >= 0.97
    assert abs(accuracy(eager, images, labels) - accuracy(graph, images, labels)) <= 0.02


def test_compiled_graph_computes_what_the_graph_computes(fp32, data):
    (calibration, _), (images, _) = data
    graph = pt2e.quantize_static(fp32[0], pt2e.static_config("minmax", False), calibration, 2)
    with torch.inference_mode():
        expected, got = graph(images), compiled(graph)(images)
    # int8 kernels round once per op where the graph rounds through FP32: a quantization step, not more.
    assert (expected.argmax(1) == got.argmax(1)).float().mean().item() >= 0.99
    assert (expected - got).abs().max().item() < 0.1 * expected.abs().max().item()


def test_saved_archive_loads_whole(fp32, data, tmp_path):
    (calibration, _), (images, _) = data
    model, info = fp32
    graph = pt2e.quantize_static(model, pt2e.static_config("minmax", False), calibration, 2)
    save_variant(graph, info["arch"], tmp_path / "int8_static")
    loaded, settings = load_module(tmp_path / "int8_static", expect="int8")
    assert settings == {"kind": "int8", "arch": info["arch"], "recipe": RECIPE.settings()}
    with torch.inference_mode():
        torch.testing.assert_close(loaded(images), graph(images))
    # Four Linear layers: int8 weights, FP32 per-channel scales and biases; the FP32 weights are gone.
    widths = [784, *info["arch"]["hidden"], 10]
    expected = sum(i * o + 4 * o + 4 * o for i, o in zip(widths, widths[1:]))
    assert int8_weights(loaded.state_dict()) == 4 and floor_bytes(loaded.state_dict()) == expected


def test_saving_twice_gives_the_same_bytes_without_the_checkout_path(fp32, data, tmp_path):
    (calibration, _), _ = data
    model, info = fp32
    graph = pt2e.quantize_static(model, pt2e.static_config("minmax", False), calibration, 2)
    for copy in ("a", "b"):
        save_variant(graph, info["arch"], tmp_path / copy)
    archive = (tmp_path / "a/model.pt2").read_bytes()
    assert archive == (tmp_path / "b/model.pt2").read_bytes()
    with zipfile.ZipFile(tmp_path / "a/model.pt2") as records:
        assert str(ROOT).encode() not in b"".join(records.read(name) for name in records.namelist())
    # nor does its ONNX file, which the dynamo exporter writes with each node's stack trace
    assert (tmp_path / "a/model.onnx").read_bytes() == (tmp_path / "b/model.onnx").read_bytes()
    assert str(ROOT).encode() not in (tmp_path / "a/model.onnx").read_bytes()


@pytest.mark.parametrize("method", ["static", "dynamic"])
def test_reading_an_archive_registers_what_torchao_adds(fp32, data, tmp_path, method):
    """A fresh process that reads a pt2e file gets torchao's Inductor passes (without them torch.compile would run
    the graph's quantize/dequantize pairs in FP32) and its weight types (dynamic int8's weights are torchao tensors,
    which a restricted load refuses until torchao registers them), and computes what the saved model computed."""
    (calibration, _), _ = data
    model, info = fp32
    if method == "static":
        graph = pt2e.quantize_static(model, pt2e.static_config("minmax", False), calibration, 2)
    else:
        graph = pt2e.quantize_dynamic(model, IDX_ARCH["input"])
    # the archive alone: the variant's other files (ONNX) are not what is read here
    write_archive(
        pt2e.export(graph, IDX_ARCH["input"]), {"kind": "int8", "arch": info["arch"]}, tmp_path / "int8/model.pt2"
    )
    torch.save(calibration[:8], tmp_path / "images.pt")
    code = (
        "import sys; from pathlib import Path; import torch; import torch._inductor.config as config; "
        "from pipeline.backends.loading import load_module; model = load_module(Path(sys.argv[1]))[0]; "
        "print(type(config.pre_grad_custom_pass).__name__); "
        "torch.save(model(torch.load(sys.argv[2])), sys.argv[3])"
    )
    arguments = [str(tmp_path / "int8"), str(tmp_path / "images.pt"), str(tmp_path / "logits.pt")]
    result = subprocess.run([sys.executable, "-c", code, *arguments], cwd=ROOT, capture_output=True, text=True)
    assert result.stdout.strip() == "QuantLiftUp", result.stderr
    with torch.no_grad():
        assert torch.equal(torch.load(tmp_path / "logits.pt"), graph(calibration[:8]))


def test_skip_layers_stay_float(fp32, data):
    (calibration, _), _ = data
    config = pt2e.static_config("minmax", False)
    assert int8_weights(pt2e.quantize_static(fp32[0], config, calibration, 2, ["layers.2"]).state_dict()) == 3
    with pytest.raises(Exception, match=r"unknown layer\(s\) \['layers.1'\]; the quantizable layers are \['layers.0'"):
        pt2e.quantize_static(fp32[0], config, calibration, 2, ["layers.1"])


def test_dynamic_quantizes_every_linear(fp32, data):
    _, (images, labels) = data
    model = fp32[0]
    int8 = pt2e.quantize_dynamic(model, [1, 28, 28])
    assert abs(accuracy(int8, images, labels) - accuracy(model, images, labels)) <= 0.02
    assert all(type(layer.weight).__name__ == "Int8Tensor" for layer in int8.layers if hasattr(layer, "weight"))


def test_qat_on_a_cnn_folds_bn_and_freezes_it(trained):
    images, labels = (tensor[:192] for tensor in whole_split(trained / "data/prepared", "train"))
    torch.manual_seed(0)
    model = CNN([4, 8], *IDX_SHAPE)
    fit(model, images, labels, epochs=1, batch_size=32, lr=0.01, seed=0)
    prepared = pt2e.prepare_qat(model, [1, 28, 28])

    def bn_training(graph) -> list[bool]:
        return [node.args[5] for node in graph.graph.nodes if "batch_norm" in str(node.target)]

    assert bn_training(prepared) == [True, True]  # exported in training mode: batch statistics
    fit(
        prepared,
        images,
        labels,
        epochs=2,
        batch_size=32,
        lr=0.001,
        seed=0,
        after_epoch=lambda epoch: pt2e.freeze_qat(prepared),
    )
    assert bn_training(prepared) == [False, False]  # frozen: running statistics, though fit() called train()
    int8 = pt2e.convert_qat(prepared)
    assert int8_weights(int8.state_dict()) == 3  # two convolutions (BN folded in) and the classifier
    assert accuracy(int8, images, labels) >= accuracy(model.eval(), images, labels) - 0.05


class Residual(torch.nn.Module):
    """A ResNet block as torchvision writes one: conv, BN, ReLU, conv, BN, the input added, then the same ReLU
    again, in place."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = torch.nn.Conv2d(4, 4, 3, padding=1), torch.nn.Conv2d(4, 4, 3, padding=1)
        self.bn1, self.bn2 = torch.nn.BatchNorm2d(4), torch.nn.BatchNorm2d(4)
        self.relu = torch.nn.ReLU(inplace=True)
        self.head = torch.nn.Linear(4 * 8 * 8, 3)

    def forward(self, images):
        out = self.relu(self.bn1(self.conv1(images)))
        out = self.bn2(self.conv2(out))
        out += images
        return self.head(self.relu(out).flatten(1))


@pytest.mark.parametrize("exported", [False, True], ids=["module", "exported archive"])
def test_a_module_called_twice_is_quantized_call_by_call(tmp_path, exported):
    """X86InductorQuantizer fuses conv + add + ReLU by the nodes each module's call became; torch.export gave both
    calls of a block's one ReLU one source, and the quantizer refused it ("Input partition has more than one output
    node"), for a torchvision ResNet built or exported alike. Each call now has its own, and the int8 model keeps
    the FP32 model's classes."""
    torch.manual_seed(0)
    model, images = Residual().eval(), torch.rand(64, 4, 8, 8)
    if exported:
        program = torch.export.export(model, (images[:2],), dynamic_shapes=({0: torch.export.Dim("batch")},))
        torch.export.save(program, tmp_path / "model.pt2")
        model = load_archive(tmp_path / "model.pt2")[0].module()
    graph = pt2e.for_quantizer(pt2e.export(model, [4, 8, 8]))
    relus = [node for node in graph.graph.nodes if node.target == torch.ops.aten.relu_.default]
    assert [list(node.meta["nn_module_stack"].values())[-1][0] for node in relus] == ["relu", "relu:1"]
    for int8 in (
        pt2e.quantize_static(model, pt2e.static_config("minmax", False), images, 2),
        pt2e.quantize_dynamic(model, [4, 8, 8]),
    ):
        with torch.no_grad():
            assert (int8(images).argmax(1) == model(images).argmax(1)).float().mean() >= 0.9
