"""Your own trained model: a torch.export archive of an FP32 classifier, which the train stage adopts in place of
training (`train.arch: exported`), once it has been checked against the prepared data.

Only an exported graph is taken, never a pickled module: unpickling a `.pt` of a whole module runs whatever code
the file names, and needs the class's source besides.
"""

from pathlib import Path

import torch

from pipeline.data.prepared import DataInfo
from pipeline.errors import PipelineError
from pipeline.formats.torch_export import load_archive
from pipeline.safe_io import first_line


def how_to_export(path: Path) -> str:
    return (
        "export it in your own code with: program = torch.export.export(model.eval(), (example,), "
        f"dynamic_shapes=({{0: torch.export.Dim('batch')}},)); torch.export.save(program, '{path}')"
    )


PICKLED = (".pt", ".pth", ".pkl")


def input_shape(program: torch.export.ExportedProgram) -> list:
    """The shape of the program's image input, the batch dimension symbolic where export made it dynamic."""
    inputs = [node for node in program.graph.nodes if node.op == "placeholder"]
    user_inputs = program.graph_signature.user_inputs
    image = next(node for node in inputs if node.name in user_inputs)
    return list(image.meta["val"].shape)


def shown(shape: list) -> str:
    """A shape as a user reads it: a free batch size as N (export names it by a symbol such as s77)."""
    return "[" + ", ".join(str(size) if isinstance(size, int) else "N" for size in shape) + "]"


def check_inputs(program: torch.export.ExportedProgram, path: Path) -> None:
    """One tensor input, a batch of images: the only input the stages and every runtime feed."""
    names = list(program.graph_signature.user_inputs)
    if len(names) != 1:
        took = f"{len(names)} inputs ({', '.join(names)})" if names else "no input"
        raise PipelineError(
            f"{path}: the model takes {took}, but it must take one, a batch of images; {how_to_export(path)}"
        )


def check_weights(program: torch.export.ExportedProgram, path: Path) -> None:
    """Finite weights: a NaN in one makes every output NaN and no quantizer can find a range for it."""
    for name, tensor in program.state_dict.items():
        if tensor.is_floating_point() and not tensor.isfinite().all():
            raise PipelineError(f"{path}: its weight {name} holds NaN or infinite values")


def check_outputs(outputs, data: DataInfo, path: Path) -> None:
    """One tensor of logits, one per class, finite."""
    if not isinstance(outputs, torch.Tensor):
        raise PipelineError(
            f"{path}: the model returns a {type(outputs).__name__}, but it must return one tensor of logits "
            f"(N, {len(data.classes)}); export a model whose forward returns the logits alone"
        )
    if outputs.ndim != 2 or outputs.shape[1] != len(data.classes):
        raise PipelineError(
            f"{path}: the model gives {list(outputs.shape[1:])} outputs per image, but the data has "
            f"{len(data.classes)} classes ({', '.join(data.classes)})"
        )
    if not outputs.isfinite().all():
        raise PipelineError(f"{path}: the model gives NaN or infinite outputs on two prepared images")


def adopt(path: Path, data: DataInfo, images: torch.Tensor) -> tuple[torch.export.ExportedProgram, dict]:
    """The exported model at `path`, checked to take the data's images and give one output per class; and the
    arch a checkpoint records for it."""
    if not path.is_file():
        pickled = [other for other in sorted(path.parent.glob("*")) if other.suffix in PICKLED]
        found = f"found {pickled[0].name}, a pickled module, which is refused; " if pickled else "no such file; "
        raise PipelineError(f"{path}: {found}{how_to_export(path)}")
    program, _ = load_archive(path)
    check_inputs(program, path)
    check_weights(program, path)
    shape = input_shape(program)
    if len(shape) != 4 or [str(size) for size in shape[1:]] != [str(size) for size in data.input_shape]:
        raise PipelineError(
            f"{path}: the model takes images of shape {shown(shape)}, but the prepared images are "
            f"[N, {', '.join(map(str, data.input_shape))}] (set data.channels and data.image_size, or export anew)"
        )
    if isinstance(shape[0], int):
        raise PipelineError(f"{path}: its batch size is fixed at {shape[0]}; {how_to_export(path)}")
    try:
        with torch.inference_mode():
            outputs = program.module()(images[:2])
    except (RuntimeError, ValueError, TypeError) as error:
        raise PipelineError(f"{path}: the model fails on two prepared images ({first_line(error)})") from None
    check_outputs(outputs, data, path)
    return program, {"name": "exported", "input": data.input_shape, "classes": len(data.classes)}
