"""Images as tensors: decoding PNG and JPEG files, and bringing a batch to the channels and size a model takes.

Decoding is Pillow's (torchvision's own decoders are deprecated in favour of TorchCodec, which this project does
not need otherwise); resizing is torchvision's antialiased bilinear resize on the uint8 pixels, so prepared data
stays 8-bit. Where a shorter side is given (`data.resize`), images are resized to it, keeping their aspect ratio,
and their centre cropped to the size, as the `transforms()` of torchvision's weights do (resize 256, crop 224).
"""

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.transforms.v2 import functional as F

from pipeline.errors import PipelineError
from pipeline.safe_io import first_line

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# Larger images are refused before they are decoded: a few bytes of PNG can claim 20,000 x 20,000 pixels and take
# gigabytes to decode. Pillow checks the claim when it opens a file; this sets its limit to ours.
MAX_PIXELS = 8192 * 8192
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
GREY_MODES = ("1", "L", "I", "I;16", "F")  # Pillow's modes of one channel; every other mode is read as RGB
SIXTEEN_BIT_MODES = ("I", "I;16", "I;16B", "I;16L")  # how Pillow opens a 16-bit grey PNG


@dataclass(frozen=True)
class Preprocessing:
    """How images are brought to what a model takes: `channels` (1 grey, 3 RGB, None: their own), and `size`
    [height, width] (None: their own), reached by a resize to it or, where `resize` is set, by resizing the shorter
    side to `resize` and cropping the centre."""

    channels: int | None = None
    size: tuple[int, int] | None = None
    resize: int | None = None

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        """Images (..., C, H, W) brought to the channels and size."""
        if self.channels is not None and images.shape[-3] != self.channels:
            images = F.rgb_to_grayscale(images) if self.channels == 1 else F.grayscale_to_rgb(images)
        if self.size is None or list(images.shape[-2:]) == list(self.size):
            return images
        if self.resize is None:
            return F.resize(images, list(self.size), antialias=True)
        return F.center_crop(F.resize(images, self.resize, antialias=True), list(self.size))


@dataclass(frozen=True)
class SourceSplit:
    """One split of a source: its int64 labels, and `read(rows)`, the images of those rows (n, C, H, W) as uint8
    pixels or floats, preprocessed."""

    labels: torch.Tensor
    read: Callable[[torch.Tensor], torch.Tensor]

    def batches(self, rows: torch.Tensor, size: int):
        """The images of `rows`, `size` at a time."""
        return (self.read(batch) for batch in rows.split(size))


def in_memory(images: torch.Tensor, labels: torch.Tensor, preprocessing: Preprocessing) -> SourceSplit:
    """A split whose images a source decoded whole (IDX files, tensor files), preprocessed a batch at a time."""
    return SourceSplit(labels, lambda rows: preprocessing.apply(images[rows]))


def read_image(path: Path, preprocessing: Preprocessing) -> torch.Tensor:
    """One image file as uint8 (C, H, W), grey or RGB as `preprocessing.channels` says (None: the file's own), at
    its size."""
    channels = preprocessing.channels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # over MAX_PIXELS (an error past twice)
            with Image.open(path) as image:
                grey = channels == 1 or (channels is None and image.mode in GREY_MODES)
                pixels = eight_bit(image).convert("L" if grey else "RGB")  # decodes the file: truncation shows here
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise PipelineError(f"{path}: more than {MAX_PIXELS:,} pixels, which is more than an image may have") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise PipelineError(
            f"{path}: not a readable PNG or JPEG image, truncated or corrupt ({first_line(error)})"
        ) from None
    return preprocessing.apply(F.pil_to_tensor(pixels))


def eight_bit(image: Image.Image) -> Image.Image:
    """A 16-bit grey image scaled to 8 bits (65535 to 255), others as they are: Pillow's conversion to 8 bits clips
    16-bit pixels at 255 instead, which makes a typical 16-bit image nearly all white."""
    if image.mode not in SIXTEEN_BIT_MODES:
        return image
    pixels = np.asarray(image.convert("I"), dtype=np.int64).clip(0, 65535)
    return Image.fromarray(((pixels + 128) // 257).astype(np.uint8))


def stack(images: list[torch.Tensor], paths: list[Path], first: Path, shape: torch.Size) -> torch.Tensor:
    """Images of the shape of the split's first, `first`, as a batch; another shape is an error naming both files."""
    odd = next((index for index, image in enumerate(images) if image.shape != shape), None)
    if odd is not None:
        raise PipelineError(
            f"{paths[odd]}: image of {list(images[odd].shape)} (channels, height, width), but {first.name} is "
            f"{list(shape)}; set data.channels and data.image_size"
        )
    return torch.stack(images)
