"""The prepared data: what the `prepare` stage writes and every later stage reads.

data/prepared/ holds `train.pt`, `test.pt` and `calib.pt`, each {"images", "labels": int64} with images (N, H, W)
for one channel or (N, C, H, W), and `dataset.json`: the facts about the data that models are built from
(channels, height, width, class names) and the normalization they expect, so that no stage assumes them.

Images are uint8 pixels where the source is 8-bit (a quarter of the float size) or float32 model inputs where the
source gave floats. `model_inputs` turns them into what a model takes: pixels / 255, then (x - mean) / std per
channel where a normalization is set. Every stage and `predict` go through it.
"""

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from pipeline.errors import PipelineError
from pipeline.safe_io import load_json, load_torch, save_json

INFO_FILE = "dataset.json"
PREPARED_TYPES = (torch.uint8, torch.float32)


@dataclass(frozen=True)
class DataInfo:
    dataset: str
    channels: int
    height: int
    width: int
    classes: tuple[str, ...]  # class names, in label order
    mean: tuple[float, ...] | None = None  # per channel, subtracted after scaling pixels to [0, 1]
    std: tuple[float, ...] | None = None  # per channel, divided by after the mean
    resize: int | None = None  # the shorter side images were resized to before the centre crop to height x width

    def record(self) -> dict:
        """As dataset.json and every input contract record it: `resize` only where it was set, so that data
        prepared without one keeps the bytes it had."""
        recorded = asdict(self)
        if self.resize is None:
            del recorded["resize"]
        return recorded

    @property
    def input_shape(self) -> list[int]:
        """One image as a model takes it: [channels, height, width]."""
        return [self.channels, self.height, self.width]


def write_info(info: DataInfo, folder: Path) -> None:
    save_json(info.record(), folder / INFO_FILE)


def read_info(folder: Path) -> DataInfo:
    path = folder / INFO_FILE
    return info_from(load_json(path), path)


def info_from(raw: dict, path: Path) -> DataInfo:
    """A DataInfo from its JSON form; anything else is an error naming `path`."""
    try:
        tuples = {key: tuple(raw[key]) for key in ("classes", "mean", "std") if raw.get(key) is not None}
        info = DataInfo(**{**raw, **tuples})
    except (TypeError, KeyError, AttributeError) as error:
        raise PipelineError(f"{path}: not a description of prepared data ({error})") from None
    if min(info.channels, info.height, info.width, len(info.classes)) < 1:
        raise PipelineError(f"{path}: channels, height, width and classes must be positive ({json.dumps(raw)})")
    return info


def model_inputs(images: torch.Tensor, info: DataInfo) -> torch.Tensor:
    """Images (N, C, H, W) as the model takes them: uint8 pixels scaled to [0, 1], then normalized if set."""
    inputs = images.float().div(255) if images.dtype == torch.uint8 else images.float()
    if info.mean is not None:
        shape = (1, len(info.mean), 1, 1)
        inputs = (inputs - torch.tensor(info.mean).view(shape)) / torch.tensor(info.std).view(shape)
    return inputs


def load_split(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """A prepared split as model inputs (`model_inputs`, with the description in its folder) and int64 labels."""
    split = load_torch(path)
    images, labels = split.get("images"), split.get("labels")
    if (
        not isinstance(images, torch.Tensor)
        or not isinstance(labels, torch.Tensor)
        or images.dtype not in PREPARED_TYPES
    ):
        raise PipelineError(f"{path}: not a prepared split (expected uint8 or float32 'images' and 'labels' tensors)")
    if images.ndim not in (3, 4):
        raise PipelineError(f"{path}: images of shape {tuple(images.shape)}; expected (N, H, W) or (N, C, H, W)")
    if len(images) == 0 or len(images) != len(labels):
        raise PipelineError(f"{path}: {len(images)} images and {len(labels)} labels; expected equal and non-zero")
    if images.ndim == 3:  # one channel, stored without its axis
        images = images.unsqueeze(1)
    return model_inputs(images, read_info(path.parent)), labels


def draw_calibration(train: dict[str, torch.Tensor], size: int, seed: int) -> dict[str, torch.Tensor]:
    """A fixed random subset of the training split, the same for every run with the same seed."""
    if size > len(train["labels"]):
        raise PipelineError(f"calibration.size: {size} is more than the {len(train['labels'])} training images")
    index = torch.randperm(len(train["labels"]), generator=torch.Generator().manual_seed(seed))[:size]
    return {name: tensor[index] for name, tensor in train.items()}
