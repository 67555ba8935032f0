"""The prepared data: what the `prepare` stage writes and every later stage reads, a batch at a time.

data/prepared/ holds a folder per split (`train`, `test`, `calib`), each with `images.npy` (N, C, H, W) and
`labels.npy` (int64), and `dataset.json`: the facts about the data that models are built from (channels, height,
width, class names), the preprocessing that made the pixels and the normalization the models expect, so that no
stage assumes them.

Images are uint8 pixels where the source is 8-bit (a quarter of the float size) or float32 model inputs where the
source gave floats. They are never read whole: `Images` reads the rows asked for from the file, so a stage's
memory is set by its batch size, not by the number of images (ImageNet's 50,000 validation images are 7.5 GB as
pixels, 30 GB as floats). `model_inputs` turns pixels into what a model takes: pixels / 255, then (x - mean) / std
per channel where a normalization is set. Every stage and `predict` go through it.

The files are NumPy's .npy (a header, then the array's bytes): read with `allow_pickle=False`, so no code in one
runs, and `numpy.load` opens them as they are.
"""

import copy
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from pydantic import Field, ValidationError
from tqdm import tqdm

from pipeline.errors import PipelineError
from pipeline.params import Pixels, PositiveFloat, Schema, Width, describe
from pipeline.safe_io import first_line, load_json, save_json, writing

INFO_FILE = "dataset.json"
IMAGES_FILE, LABELS_FILE = "images.npy", "labels.npy"
PREPARED_TYPES = (np.dtype(np.uint8), np.dtype(np.float32))
BATCH_BYTES = 32 << 20  # model inputs scored or written at once: 1024 images of 28x28, 55 of 224x224 RGB


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


class DataRecord(Schema):
    """dataset.json, and the "data" of every input contract, checked as params.yaml is: each key of its type."""

    dataset: str
    channels: Width
    height: Pixels
    width: Pixels
    classes: list[str] = Field(min_length=1)
    mean: list[float] | None = None
    std: list[PositiveFloat] | None = None  # a zero would divide every input by zero
    resize: Pixels | None = None


def info_from(raw, path: Path) -> DataInfo:
    """A DataInfo from its JSON form; anything else is an error naming `path` and the key."""
    if not isinstance(raw, dict):
        raise PipelineError(f"{path}: not a description of prepared data (a mapping of keys)")
    try:
        record = DataRecord.model_validate(raw)
    except ValidationError as error:
        raise PipelineError(f"{path}: " + "; ".join(describe(item) for item in error.errors())) from None
    normalization = [values for values in (record.mean, record.std) if values is not None]
    if normalization and (len(normalization) == 1 or {len(values) for values in normalization} != {record.channels}):
        raise PipelineError(
            f"{path}: mean and std: both null, or both one value per channel (channels: {record.channels})"
        )
    tuples = {key: tuple(values) for key, values in record.model_dump().items() if isinstance(values, list)}
    return DataInfo(**{**record.model_dump(), **tuples})


def model_inputs(images: torch.Tensor, info: DataInfo) -> torch.Tensor:
    """Images (N, C, H, W) as the model takes them: uint8 pixels scaled to [0, 1], then normalized if set."""
    inputs = images.float().div(255) if images.dtype == torch.uint8 else images.float()
    if info.mean is not None:
        shape = (1, len(info.mean), 1, 1)
        inputs = (inputs - torch.tensor(info.mean).view(shape)) / torch.tensor(info.std).view(shape)
    return inputs


def batch_size_for(shape) -> int:
    """How many model inputs of `shape` (one image's) make a batch of at most BATCH_BYTES, and at most 1,024."""
    return max(1, min(1024, BATCH_BYTES // (4 * int(np.prod(shape)))))


class Images:
    """The images of a prepared split, read from its file as model inputs only when asked for: indexed like a
    tensor (`images[10:20]`, `images[rows]` with a tensor of row numbers, `len(images)`, `images.shape`), each
    access reading just those rows. `subset` views some rows, in the order given, without reading them."""

    def __init__(self, path: Path, info: DataInfo, rows: torch.Tensor | None = None):
        self.path, self.info = path, info
        self.stored_shape, self.dtype, self.offset = read_header(path)
        self.rows = rows

    def __len__(self) -> int:
        return self.stored_shape[0] if self.rows is None else len(self.rows)

    @property
    def shape(self) -> torch.Size:
        return torch.Size([len(self), *self.stored_shape[1:]])

    def subset(self, rows: torch.Tensor) -> "Images":
        view = copy.copy(self)  # the same file and header
        view.rows = rows if self.rows is None else self.rows[rows]
        return view

    def __getitem__(self, key: slice | torch.Tensor) -> torch.Tensor:
        rows = torch.arange(*key.indices(len(self))) if isinstance(key, slice) else key
        return model_inputs(self.pixels(rows if self.rows is None else self.rows[rows]), self.info)

    def pixels(self, rows: torch.Tensor) -> torch.Tensor:
        """The stored rows `rows` of the file, as stored (uint8 pixels or float inputs): one read where they
        follow each other, else one a row."""
        row_bytes = self.dtype.itemsize * int(np.prod(self.stored_shape[1:]))
        found = np.empty((len(rows), *self.stored_shape[1:]), self.dtype)
        with open(self.path, "rb") as file:
            if len(rows) and bool((rows.diff() == 1).all()):
                file.seek(self.offset + int(rows[0]) * row_bytes)
                file.readinto(memoryview(found).cast("B"))
            else:
                for place, row in enumerate(rows.tolist()):
                    file.seek(self.offset + row * row_bytes)
                    file.readinto(memoryview(found[place]).cast("B"))
        return torch.from_numpy(found)


# What the scoring and calibration loops take: images in memory, or a prepared split's, read as they go.
AnyImages = torch.Tensor | Images


def read_header(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """The shape, type and data offset of a prepared images file; anything but one is an error naming it."""
    if not path.is_file():
        raise PipelineError(f"{path}: file not found (run the stage that makes it, e.g. `dvc repro`)")
    try:
        with open(path, "rb") as file:
            version = np.lib.format.read_magic(file)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran_order, dtype = read(file)
            offset = file.tell()
    except (ValueError, OSError, SyntaxError) as error:
        raise PipelineError(f"{path}: not a NumPy .npy file ({first_line(error)})") from None
    if dtype not in PREPARED_TYPES or fortran_order:
        raise PipelineError(f"{path}: {dtype} images; expected uint8 pixels or float32 inputs, in C order")
    if len(shape) != 4 or 0 in shape[1:]:
        raise PipelineError(f"{path}: images of shape {shape}; expected (N, C, H, W)")
    if shape[0] == 0:
        raise PipelineError(f"{path}: holds no images")
    if path.stat().st_size != offset + dtype.itemsize * int(np.prod(shape)):
        raise PipelineError(f"{path}: holds {path.stat().st_size - offset} bytes of images, not {shape} {dtype}")
    return tuple(shape), dtype, offset


def read_labels(path: Path) -> torch.Tensor:
    try:
        labels = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise PipelineError(f"{path}: file not found (run the stage that makes it, e.g. `dvc repro`)") from None
    except (ValueError, OSError, EOFError) as error:
        raise PipelineError(f"{path}: not a NumPy .npy file of labels ({first_line(error)})") from None
    if labels.dtype != np.int64 or labels.ndim != 1:
        raise PipelineError(f"{path}: {labels.dtype} labels of shape {labels.shape}; expected int64 (N,)")
    return torch.from_numpy(labels)


def load_split(folder: Path, name: str) -> tuple[Images, torch.Tensor]:
    """A prepared split: its images, read as model inputs when indexed, and its int64 labels."""
    images = Images(folder / name / IMAGES_FILE, read_info(folder))
    labels = read_labels(folder / name / LABELS_FILE)
    if len(images) != len(labels):
        raise PipelineError(f"{folder / name}: {len(images)} images and {len(labels)} labels; expected equal")
    return images, labels


def write_split(folder: Path, batches: Iterable[torch.Tensor], labels: torch.Tensor, description: str) -> None:
    """Write a split's images, a batch at a time as `batches` yields them (uint8 pixels or floats, (n, C, H, W)),
    and its labels, into `folder`. Floats are written as float32."""
    folder.mkdir(parents=True, exist_ok=True)
    with writing(folder / LABELS_FILE):
        np.save(folder / LABELS_FILE, labels.numpy(), allow_pickle=False)
    shape = None
    with writing(folder / IMAGES_FILE), open(folder / IMAGES_FILE, "wb") as file:
        progress = tqdm(total=len(labels), desc=description, unit="image", leave=False, disable=None)
        for batch in batches:
            batch = batch if batch.dtype == torch.uint8 else batch.float()
            if shape is None:
                shape = list(batch.shape[1:])
                header = {"descr": np.lib.format.dtype_to_descr(batch.numpy().dtype), "fortran_order": False}
                np.lib.format.write_array_header_1_0(file, {**header, "shape": (len(labels), *shape)})
            elif list(batch.shape[1:]) != shape:
                raise PipelineError(f"{description}: images of {list(batch.shape[1:])} after images of {shape}")
            file.write(batch.contiguous().numpy().tobytes())
            progress.update(len(batch))
        progress.close()


def first(images: AnyImages, count: int) -> AnyImages:
    """The first `count` of `images`: a view, unread, of a prepared split's; a slice of a tensor."""
    return images.subset(torch.arange(min(count, len(images)))) if isinstance(images, Images) else images[:count]


def in_batches(images: AnyImages, size: int | None = None, description: str = "scoring") -> Iterator[torch.Tensor]:
    """`images` (a tensor or `Images`) a batch at a time, in order: `size` images, or as many as make BATCH_BYTES
    of model inputs, with a progress bar."""
    size = size or batch_size_for(images.shape[1:])
    starts = range(0, len(images), size)
    for start in tqdm(starts, desc=description, unit="batch", leave=False, disable=None):
        yield images[start : start + size]


def outputs_in_batches(function: Callable[[torch.Tensor], torch.Tensor], images: AnyImages) -> torch.Tensor:
    """`function` of every image, a batch at a time (`in_batches`), gathered in one tensor made at the first batch.
    Kept batch by batch, each small output would pin the memory freed below it in the C library's heap: scoring
    3,200 images of 224x224 through ONNX Runtime grew a process from 1.0 to 2.4 GB that way, 0.7 to 0.9 GB so."""
    gathered, start = None, 0
    for batch in in_batches(images):
        found = function(batch)
        if gathered is None:
            gathered = torch.empty(len(images), *found.shape[1:], dtype=found.dtype)
        gathered[start : start + len(found)] = found
        start += len(found)
    return gathered


def in_parts(images: AnyImages, count: int, description: str = "calibration") -> Iterator[torch.Tensor]:
    """`images` in `count` batches, sized as `torch.tensor_split` sizes them (the calibration batches)."""
    for rows in tqdm(torch.arange(len(images)).tensor_split(count), desc=description, leave=False, disable=None):
        yield images[int(rows[0]) : int(rows[-1]) + 1] if len(rows) else images[:0]


def draw_rows(count: int, size: int, seed: int) -> torch.Tensor:
    """`size` of `count` rows drawn by `seed`, the same for every run with the same seed, in the order drawn."""
    return torch.randperm(count, generator=torch.Generator().manual_seed(seed))[:size]


def drawn_in_order(count: int, size: int, seed: int) -> torch.Tensor:
    """`size` of `count` rows drawn by `seed`, sorted: read in file order."""
    return draw_rows(count, size, seed).sort().values


def test_subset(images: Images, labels: torch.Tensor, size: int | None, seed: int) -> tuple[Images, torch.Tensor]:
    """`size` of the test images and their labels, drawn by seed and read in file order; all where `size` is None
    or not below their number."""
    if size is None or size >= len(labels):
        return images, labels
    rows = drawn_in_order(len(labels), size, seed)
    return images.subset(rows), labels[rows]


def draw_calibration(count: int, size: int, seed: int) -> torch.Tensor:
    """The rows of `count` training images that calibrate: `size` drawn by `seed`, in the order drawn."""
    if size > count:
        raise PipelineError(f"calibration.size: {size} is more than the {count} training images")
    return draw_rows(count, size, seed)
