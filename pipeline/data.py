"""The prepared data: what the `prepare` stage writes and every later stage reads.

data/prepared/ holds `train.pt`, `test.pt` and `calib.pt`, each {"images": uint8, "labels": int64} with images
(N, H, W) for one channel or (N, C, H, W), and `dataset.json`: the facts about the data that models are built
from (channels, height, width, class names), so that no stage assumes them.
"""

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from pipeline.artifacts import load_json, load_torch, save_json
from pipeline.errors import PipelineError

INFO_FILE = "dataset.json"


@dataclass(frozen=True)
class DataInfo:
    dataset: str
    channels: int
    height: int
    width: int
    classes: tuple[str, ...]  # class names, in label order

    @property
    def input_shape(self) -> list[int]:
        """One image as a model takes it: [channels, height, width]."""
        return [self.channels, self.height, self.width]


def write_info(info: DataInfo, folder: Path) -> None:
    save_json(asdict(info), folder / INFO_FILE)


def read_info(folder: Path) -> DataInfo:
    path = folder / INFO_FILE
    raw = load_json(path)
    try:
        info = DataInfo(**{**raw, "classes": tuple(raw["classes"])})
    except (TypeError, KeyError) as error:
        raise PipelineError(f"{path}: not a description of prepared data ({error})") from None
    if min(info.channels, info.height, info.width, len(info.classes)) < 1:
        raise PipelineError(f"{path}: channels, height, width and classes must be positive ({json.dumps(raw)})")
    return info


def load_split(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """A prepared split as model inputs: float images (N, C, H, W) in [0, 1] and int64 labels."""
    split = load_torch(path)
    images, labels = split.get("images"), split.get("labels")
    if not isinstance(images, torch.Tensor) or not isinstance(labels, torch.Tensor) or images.dtype != torch.uint8:
        raise PipelineError(f"{path}: not a prepared split (expected uint8 'images' and 'labels' tensors)")
    if images.ndim not in (3, 4):
        raise PipelineError(f"{path}: images of shape {tuple(images.shape)}; expected (N, H, W) or (N, C, H, W)")
    if len(images) == 0 or len(images) != len(labels):
        raise PipelineError(f"{path}: {len(images)} images and {len(labels)} labels; expected equal and non-zero")
    if images.ndim == 3:  # one channel, stored without its axis
        images = images.unsqueeze(1)
    return images.float().div(255), labels
