"""Every torchvision classification family that torch.export handles, exported as a user exports it and adopted,
goes through every backend that quantizes an exported model: dynamic, static and QAT int8, each file run by its
runtime.

Each family is built small (its own block types, one or two blocks a stage, a few channels) so that the graphs the
quantizers see have the family's patterns (conv + add + relu, squeeze-excitation, channel shuffle, shifted windows,
attention) at a fraction of the cost. `make test` runs dynamic and static int8 of three families whose patterns
differ most (a residual conv + add + relu, depthwise convolutions with squeeze-excitation and hardswish, shifted
window attention); `make test-slow` the other seven, and QAT of all ten: QAT's conversion costs about 15 s a model
whatever its size (torchao exports its conv + batch-norm patterns anew each time), too long for `make test`.
"""

import pytest
import torch
from torchvision import models
from torchvision.models.convnext import CNBlockConfig
from torchvision.models.efficientnet import MBConvConfig
from torchvision.models.mobilenetv3 import InvertedResidualConfig
from torchvision.models.regnet import BlockParams

from pipeline.backends.interface import Calibration
from pipeline.backends.loading import load_module
from pipeline.backends.registry import planned
from pipeline.data.prepared import DataInfo
from pipeline.formats.fp32 import read_fp32, save_trained
from pipeline.formats.fp32_export import export_fp32
from pipeline.measure.variants import failing
from pipeline.models.exported import adopt
from pipeline.params import load_params
from pipeline.runtimes import runtime_forms
from tests.conftest import ROOT

SIZE, CLASSES = 32, 3
DATA = DataInfo("families", 3, SIZE, SIZE, tuple(str(label) for label in range(CLASSES)))


def mobilenet_v3() -> torch.nn.Module:
    blocks = [  # one block of each kind of mobilenet_v3_small: ReLU + SE, ReLU, hardswish + SE with a residual
        InvertedResidualConfig(8, 3, 8, 8, True, "RE", 2, 1, 1),
        InvertedResidualConfig(8, 3, 24, 12, False, "RE", 2, 1, 1),
        InvertedResidualConfig(12, 5, 32, 12, True, "HS", 1, 1, 1),
    ]
    return models.MobileNetV3(blocks, last_channel=32, num_classes=CLASSES)


def efficientnet() -> torch.nn.Module:
    blocks = [MBConvConfig(1, 3, 1, 8, 8, 1), MBConvConfig(6, 3, 2, 8, 16, 2)]
    return models.EfficientNet(blocks, dropout=0.2, num_classes=CLASSES, last_channel=32)


FAMILIES = {
    "resnet": lambda: models.ResNet(models.resnet.BasicBlock, [1, 1, 1, 1], num_classes=CLASSES),
    "mobilenet_v2": lambda: models.MobileNetV2(CLASSES, inverted_residual_setting=[[1, 8, 1, 1], [6, 16, 2, 2]]),
    "mobilenet_v3": mobilenet_v3,
    "efficientnet": efficientnet,
    "regnet": lambda: models.RegNet(
        BlockParams.from_init_params(depth=2, w_0=8, w_a=8.0, w_m=2.0, group_width=8, se_ratio=0.25),
        num_classes=CLASSES,
    ),
    "shufflenet": lambda: models.ShuffleNetV2([1, 1, 1], [8, 16, 32, 64, 64], num_classes=CLASSES),
    "squeezenet": lambda: models.squeezenet1_1(num_classes=CLASSES),
    "convnext": lambda: models.ConvNeXt([CNBlockConfig(16, 32, 1), CNBlockConfig(32, None, 1)], num_classes=CLASSES),
    "swin": lambda: models.SwinTransformer(
        [4, 4], 16, [1, 1], [1, 2], [2, 2], stochastic_depth_prob=0.0, num_classes=CLASSES
    ),
    "vit": lambda: models.VisionTransformer(SIZE, 16, 1, 2, 16, 32, num_classes=CLASSES),
}
BACKENDS = ("pt2e", "onnxruntime", "openvino")
IN_MAKE_TEST = ("resnet", "mobilenet_v3", "swin")


@pytest.fixture(scope="module")
def images():
    return torch.rand(16, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))


def adopted(family: str, images: torch.Tensor, folder) -> None:
    """The family's model exported as a user would (a free batch size), adopted by `train`, exported by `export`."""
    torch.manual_seed(0)
    model = FAMILIES[family]().eval()
    program = torch.export.export(model, (images[:2],), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, folder / "own.pt2")
    program, arch = adopt(folder / "own.pt2", DATA, images)
    save_trained(program, arch, folder / "trained")
    export_fp32(folder / "trained", folder / "fp32", DATA)


def made(backend_name: str, methods: tuple[str, ...], folder, images: torch.Tensor) -> dict:
    """The int8 variants `backend_name` makes of the FP32 model in `folder` by `methods`: {method: its folder}."""
    params = load_params(ROOT / "params.yaml")
    params = params.model_copy(update={"quantize": params.quantize.model_copy(update={"backend": backend_name})})
    fp32, variants = read_fp32(folder / "fp32"), {}
    for method in methods:
        backend, recipe = planned(params, method)
        out = variants[method] = folder / f"{backend_name}_{method}"
        if method == "dynamic":
            backend.dynamic(fp32, recipe, out, DATA)
        elif method == "static":
            backend.static(fp32, recipe, Calibration(images, 2), out, DATA)
        else:  # one step of fake-quantized training is enough to convert what training would
            prepared = backend.prepare_qat(fp32, recipe)
            prepared.train()(images[:4]).sum().backward()
            backend.freeze_qat(prepared)
            backend.save_qat(prepared, fp32, recipe, out, DATA)
    return variants


def forms_failing(folder, images: torch.Tensor) -> dict[str, str]:
    """Why each form of a variant's files cannot run, if any: its runtimes' files, and its PyTorch graph uncompiled
    (evaluate compiles it; compiling every family here would take minutes)."""
    forms, reasons = runtime_forms(folder, 1)
    if (folder / "model.pt2").is_file():
        forms["pytorch"] = load_module(folder)[0]
    assert forms, f"{folder.name}: no file any runtime runs"
    for form, run in forms.items():
        reason = failing(run, [images[:3], images[:1]])
        if reason is not None:
            reasons[form] = reason
    return reasons


def assert_every_form_runs(family: str, methods: tuple[str, ...], images: torch.Tensor, folder) -> None:
    adopted(family, images, folder)
    left_out = {}
    for backend in BACKENDS:
        for method, made_in in made(backend, methods, folder, images).items():
            assert made_in.is_dir(), f"{backend} {method}: nothing written"
            for form, reason in forms_failing(made_in, images).items():
                left_out[f"{backend} {method} {form}"] = reason
    assert not left_out, "\n".join(f"{family}: {where}: {reason}" for where, reason in left_out.items())


@pytest.mark.parametrize(
    "family",
    [family if family in IN_MAKE_TEST else pytest.param(family, marks=pytest.mark.slow) for family in FAMILIES],
)
def test_every_family_goes_through_every_backend(family, images, tmp_path):
    assert_every_form_runs(family, ("dynamic", "static"), images, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_trains_with_fake_quantization_on_every_backend(family, images, tmp_path):
    assert_every_form_runs(family, ("qat",), images, tmp_path)
