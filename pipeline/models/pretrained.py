"""Weights you already have for an architecture (`train.weights`): a state_dict file on disk, such as torchvision's
weights saved with `torch.save(model.state_dict(), path)`, read so that it runs no code (`weights_only`) and
checked to fit the model built for the data. Nothing is downloaded."""

from pathlib import Path

from torch import nn

from pipeline.errors import PipelineError
from pipeline.safe_io import first_line, load_torch


def load_pretrained(model: nn.Module, path: Path) -> nn.Module:
    """`model` holding the weights of the file at `path`: a dict of tensors, or a checkpoint holding one under
    `state_dict`; every weight must fit by name and shape, each named in one line where it does not."""
    weights = load_torch(path)
    weights = weights.get("state_dict", weights)
    try:
        model.load_state_dict(weights)
    except (RuntimeError, TypeError, AttributeError) as error:
        raise PipelineError(
            f"train.weights: {path} does not fit the {type(model).__name__} built for the data ({first_line(error)})"
        ) from None
    return model
