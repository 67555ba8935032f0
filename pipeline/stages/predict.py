"""`python -m pipeline predict MODEL IMAGES...`: the class of each image, as a deployed model sees it.

    python -m pipeline predict models/int8_static photo.png more_photos/

Loads only the deployable file (TorchScript, a torch.export archive run under torch.compile, or, named directly
or alone in its folder, an ONNX file run by ONNX Runtime or OpenVINO's .xml) and its input contract beside it,
decodes each PNG or JPEG file to the channels and size the model was made for, applies the recorded scaling and
normalization (`pipeline.data.model_inputs`, as evaluation does), and prints each image's most likely class with
its probability. Not a DVC stage: it reads files you name and writes nothing.
"""

from pathlib import Path

import torch
import typer

from pipeline.data.decode import IMAGE_SUFFIXES, Preprocessing, read_image
from pipeline.data.prepared import DataInfo, model_inputs
from pipeline.errors import PipelineError
from pipeline.formats.deployables import deployable_path
from pipeline.formats.input_contract import contract_path, read_contract
from pipeline.measure.variants import deployable_runnable
from pipeline.safe_io import first_line

BATCH = 256


def image_paths(targets: list[Path]) -> list[Path]:
    """The image files named, and those under the folders named, in order."""
    paths = []
    for target in targets:
        if target.is_dir():
            paths += sorted(path for path in target.rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES)
        elif target.is_file():
            paths.append(target)
        else:
            raise PipelineError(f"{target}: no such file or folder")
    if not paths:
        raise PipelineError(f"no PNG or JPEG image in {', '.join(str(target) for target in targets)}")
    return paths


def probabilities(runnable, inputs: torch.Tensor, data: DataInfo, deployable: Path) -> torch.Tensor:
    """The runnable's class probabilities for a batch, checked against the contract: the model must take its
    input shape and give one output per class it names."""
    try:
        outputs = runnable(inputs)
    except Exception as error:  # each runtime raises its own classes; the model is the user's file
        raise PipelineError(
            f"{contract_path(deployable)}: the model does not take the images it describes, "
            f"[N, {', '.join(map(str, data.input_shape))}] ({first_line(error)})"
        ) from None
    if outputs.ndim != 2 or outputs.shape[1] != len(data.classes):
        raise PipelineError(
            f"{contract_path(deployable)}: names {len(data.classes)} classes, but the model gives "
            f"{list(outputs.shape[1:])} outputs per image"
        )
    return outputs.softmax(1)


def printable(text: str) -> str:
    """`text` with tabs, newlines and other control characters escaped, so each image is one line of 3 fields."""
    return text if text.isprintable() else repr(text)[1:-1]


@torch.inference_mode()
def command(
    model: Path = typer.Argument(
        ..., help="a deployable file (.ts, .pt2, .onnx, .xml), or a model file or variant folder beside one"
    ),
    images: list[Path] = typer.Argument(..., help="PNG or JPEG files, or folders of them"),
) -> None:
    """Print the most likely class of each image, and its probability."""
    if not model.exists():
        raise PipelineError(f"{model}: no such model file or folder")
    deployable = deployable_path(model)
    data, engine = read_contract(deployable)
    runnable = deployable_runnable(deployable, engine)
    paths = image_paths(images)
    if data.channels not in (1, 3):
        raise PipelineError(
            f"{contract_path(deployable)}: the model takes images of {data.channels} channels, but PNG and JPEG files "
            "are read as grey (1) or RGB (3)"
        )
    preprocessing = Preprocessing(data.channels, (data.height, data.width), data.resize)  # as prepare brought them
    lines = []  # printed once every image is read: an unreadable one stops the run before any result
    for start in range(0, len(paths), BATCH):
        batch = paths[start : start + BATCH]
        pixels = torch.stack([read_image(path, preprocessing) for path in batch])
        best = probabilities(runnable, model_inputs(pixels, data), data, deployable).max(1)
        for path, probability, label in zip(batch, *best):
            lines.append(f"{printable(str(path))}\t{printable(data.classes[label])}\t{probability:.4f}")
    typer.echo("\n".join(lines))
