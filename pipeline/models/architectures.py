"""The architectures, built from a small settings dict that every checkpoint carries: the layer widths, and the
input shape and class count of the data the model was made for.

Both models hold QuantStub/DeQuantStub at their edges (identities in FP32) and name the layer groups that eager
static quantization fuses, so one definition serves FP32 training and every int8 conversion.
"""

import math

import torch
from torch import nn
from torch.ao.quantization import DeQuantStub, QuantStub

from pipeline.data.prepared import AnyImages, DataInfo, outputs_in_batches
from pipeline.errors import PipelineError
from pipeline.models.torchvision_zoo import ARCHITECTURES, build_torchvision, build_vit
from pipeline.params import TrainParams

# TorchScript files name each traced class by its module path (`__torch__.pipeline.models.MLP`). These classes
# keep the path they had before this module moved into pipeline/models/, so deployed files keep their bytes.
TRACED_AS = "pipeline.models"


class MLP(nn.Module):
    """Linear-ReLU layers of the given widths, then a Linear classifier (the seed model: 784-50-80-30-10)."""

    __module__ = TRACED_AS

    def __init__(self, hidden: list[int], input_shape: list[int], classes: int):
        super().__init__()
        widths = [math.prod(input_shape), *hidden]
        layers = []
        for width_in, width_out in zip(widths, widths[1:]):
            layers += [nn.Linear(width_in, width_out), nn.ReLU()]
        self.quant = QuantStub()
        self.layers = nn.Sequential(*layers, nn.Linear(widths[-1], classes))
        self.dequant = DeQuantStub()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.dequant(self.layers(self.quant(images.flatten(1))))

    def fusion_groups(self) -> list[list[str]]:
        return [[f"layers.{i}", f"layers.{i + 1}"] for i in range(0, len(self.layers) - 1, 2)]


class CNN(nn.Module):
    """Conv-BN-ReLU-MaxPool blocks of the given widths, then a Linear classifier."""

    __module__ = TRACED_AS

    def __init__(self, channels: list[int], input_shape: list[int], classes: int):
        super().__init__()
        width_in, height, width = input_shape
        blocks = []
        for width_out in channels:
            blocks += [
                nn.Conv2d(width_in, width_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(width_out),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
            width_in = width_out
        shrink = 2 ** len(channels)
        if min(height, width) < shrink:
            raise PipelineError(
                f"train.channels: {len(channels)} blocks pool a {height}x{width} image below one pixel; use fewer"
            )
        self.quant = QuantStub()
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Linear(width_in * (height // shrink) * (width // shrink), classes)
        self.dequant = DeQuantStub()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.dequant(self.classifier(self.features(self.quant(images)).flatten(1)))

    def fusion_groups(self) -> list[list[str]]:
        return [[f"features.{i}", f"features.{i + 1}", f"features.{i + 2}"] for i in range(0, len(self.features), 4)]


def architecture(params: TrainParams, data: DataInfo) -> dict:
    """The settings that rebuild the model: what a checkpoint stores beside its weights."""
    widths = {
        "mlp": {"hidden": list(params.hidden)},
        "cnn": {"channels": list(params.channels)},
        "vit": params.vit.model_dump(),
    }.get(params.arch, {})
    return {"name": params.arch, **widths, "input": data.input_shape, "classes": len(data.classes)}


def build(arch: dict) -> nn.Module:
    if arch.get("name") == "mlp":
        return MLP(arch["hidden"], arch["input"], arch["classes"])
    if arch.get("name") == "cnn":
        return CNN(arch["channels"], arch["input"], arch["classes"])
    if arch.get("name") == "vit":
        return build_vit(arch)
    if arch.get("name") in ARCHITECTURES:
        return build_torchvision(arch["name"], arch["input"], arch["classes"])
    known = ["mlp", "cnn", "vit", *ARCHITECTURES]
    raise PipelineError(f"unknown architecture {arch.get('name')!r}; expected one of {known}")


def example_input(arch: dict, batch: int = 1) -> torch.Tensor:
    """A batch of blank images of the shape the model takes: what tracing and export need."""
    return torch.zeros(batch, *arch["input"])


@torch.inference_mode()
def predict(model: nn.Module, images: AnyImages) -> torch.Tensor:
    """Predicted class for each image (a tensor or a prepared split's `Images`), a batch at a time."""
    device = next(model.parameters(), torch.empty(0)).device
    return outputs_in_batches(lambda batch: model(batch.to(device)).argmax(1).cpu(), images)


def accuracy(model: nn.Module, images: AnyImages, labels: torch.Tensor) -> float:
    return (predict(model, images) == labels).sum().item() / len(labels)
