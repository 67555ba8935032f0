"""The architectures, built from a small settings dict that every checkpoint carries.

Both models hold QuantStub/DeQuantStub at their edges (identities in FP32) and name the layer groups that eager
static quantization fuses, so one definition serves FP32 training and every int8 conversion.
"""

import torch
from torch import nn
from torch.ao.quantization import DeQuantStub, QuantStub

from pipeline.errors import PipelineError
from pipeline.params import TrainParams
from pipeline.prepare import IMAGE_SIDE, NUM_CLASSES


class MLP(nn.Module):
    """Linear-ReLU layers of the given widths, then a Linear classifier (the seed model: 784-50-80-30-10)."""

    def __init__(self, hidden: list[int]):
        super().__init__()
        widths = [IMAGE_SIDE * IMAGE_SIDE, *hidden]
        layers = []
        for width_in, width_out in zip(widths, widths[1:]):
            layers += [nn.Linear(width_in, width_out), nn.ReLU()]
        self.quant = QuantStub()
        self.layers = nn.Sequential(*layers, nn.Linear(widths[-1], NUM_CLASSES))
        self.dequant = DeQuantStub()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.dequant(self.layers(self.quant(images.flatten(1))))

    def fusion_groups(self) -> list[list[str]]:
        return [[f"layers.{i}", f"layers.{i + 1}"] for i in range(0, len(self.layers) - 1, 2)]


class CNN(nn.Module):
    """Conv-BN-ReLU-MaxPool blocks of the given widths, then a Linear classifier."""

    def __init__(self, channels: list[int]):
        super().__init__()
        blocks, width_in = [], 1
        for width in channels:
            blocks += [
                nn.Conv2d(width_in, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
            width_in = width
        side = IMAGE_SIDE // 2 ** len(channels)
        if side < 1:
            raise PipelineError(
                f"train.channels: {len(channels)} blocks pool a 28x28 image below one pixel; use at most 4"
            )
        self.quant = QuantStub()
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Linear(width_in * side * side, NUM_CLASSES)
        self.dequant = DeQuantStub()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.dequant(self.classifier(self.features(self.quant(images)).flatten(1)))

    def fusion_groups(self) -> list[list[str]]:
        return [[f"features.{i}", f"features.{i + 1}", f"features.{i + 2}"] for i in range(0, len(self.features), 4)]


def architecture(params: TrainParams) -> dict:
    """The settings that rebuild the model: what a checkpoint stores beside its weights."""
    if params.arch == "mlp":
        return {"name": "mlp", "hidden": list(params.hidden)}
    return {"name": "cnn", "channels": list(params.channels)}


def build(arch: dict) -> nn.Module:
    if arch.get("name") == "mlp":
        return MLP(arch["hidden"])
    if arch.get("name") == "cnn":
        return CNN(arch["channels"])
    raise PipelineError(f"unknown architecture {arch.get('name')!r}; expected 'mlp' or 'cnn'")


@torch.inference_mode()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Predicted class for each image, in batches to bound memory."""
    device = next(model.parameters(), torch.empty(0)).device
    return torch.cat([model(batch.to(device)).argmax(1).cpu() for batch in images.split(batch_size)])


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    return (predict(model, images) == labels).sum().item() / len(labels)
