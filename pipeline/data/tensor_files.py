"""The tensor-file source (`data.dataset: tensors`): `train.pt` and `test.pt`, each {"images": uint8 or float
(N, C, H, W), "labels": int64 (N,)}, optionally with "classes": a list of class names. Read with
`weights_only=True`: a file holding anything but tensors and plain values is refused, and no code in it runs.
uint8 images are pixels (0-255); float images are taken as model inputs as they are.
"""

from pathlib import Path

import torch

from pipeline.data.decode import Preprocessing, SourceSplit, in_memory
from pipeline.errors import PipelineError
from pipeline.safe_io import load_torch

SPLIT_FILES = {"train": "train.pt", "test": "test.pt"}
IMAGE_TYPES = (torch.uint8, torch.float16, torch.bfloat16, torch.float32, torch.float64)


def read_split(path: Path) -> dict:
    split = load_torch(path)
    images, labels = split.get("images"), split.get("labels")
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.dtype not in IMAGE_TYPES:
        found = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, torch.Tensor) else type(images).__name__
        raise PipelineError(f"{path}: 'images' must be a uint8 or float (N, C, H, W) tensor, found {found}")
    if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64 or labels.shape != images.shape[:1]:
        found = f"{labels.dtype} {tuple(labels.shape)}" if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise PipelineError(f"{path}: 'labels' must be an int64 tensor of {len(images)} labels, found {found}")
    if len(labels) == 0 or labels.min() < 0:
        raise PipelineError(f"{path}: labels must be non-empty and count from 0")
    if images.is_floating_point():
        images = images.float()
        if not images.isfinite().all():  # NaN pixels train to a NaN loss and give NaN ranges to every quantizer
            count = int((~images.isfinite()).flatten(1).any(1).sum())
            raise PipelineError(f"{path}: {count} of the {len(images)} images hold NaN or infinite values")
    return {"images": images, "labels": labels, "classes": split.get("classes")}


def class_names(splits: dict, root: Path) -> tuple[str, ...]:
    """The names the files give, or the label numbers as names."""
    count = max(int(split["labels"].max()) + 1 for split in splits.values())
    named = [split["classes"] for split in splits.values() if split["classes"] is not None]
    if not named:
        return tuple(str(label) for label in range(count))
    names = named[0]
    if any(other != names for other in named) or not all(isinstance(name, str) for name in names):
        raise PipelineError(f"{root}: 'classes' must be one list of names, the same in train.pt and test.pt")
    if len(names) < count:
        raise PipelineError(f"{root}: {len(names)} class names for labels up to {count - 1}")
    return tuple(names)


def read_tensor_files(root: Path, preprocessing: Preprocessing) -> tuple[dict[str, SourceSplit], tuple[str, ...]]:
    """The train and test splits of a tensor-file folder, and its class names."""
    splits = {name: read_split(root / file) for name, file in SPLIT_FILES.items()}
    classes = class_names(splits, root)
    return {name: in_memory(s["images"], s["labels"], preprocessing) for name, s in splits.items()}, classes
