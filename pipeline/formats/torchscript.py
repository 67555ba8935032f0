"""The file a user deploys for an eager model: the model traced and frozen into TorchScript.

It holds one graph with the weights inlined and loads without this package (`torch.jit.load`).
"""

import io
import warnings
from pathlib import Path

import torch
from torch import nn

from pipeline.errors import PipelineError
from pipeline.safe_io import atomic_path, copy_zip, first_line


def save_deployable(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    """The model traced and frozen into TorchScript: one graph, weights inlined, loadable without this code."""
    with torch.inference_mode(), warnings.catch_warnings():
        # Tracing turns QuantStub's scale and zero point into constants, which is what freezing is for.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        frozen = torch.jit.freeze(torch.jit.trace(model.eval(), example))
    archive = io.BytesIO()
    torch.jit.save(frozen, archive)
    # Left out: the `.debug_pkl` records, which map the graph back to the Python lines it was traced from, for
    # error messages only. They cost the MLP's int8 file 2.4 KB (5% of its weights), and they hold the checkout's
    # path. Also left out: the serialization id, a checksum over every record, debug records included. With either,
    # each clone wrote other bytes. The file loads and computes the same without them.
    with atomic_path(path) as temporary:
        copy_zip(archive, temporary, keep=lambda name: not name.endswith((".debug_pkl", "serialization_id")))


def load_deployable(path: Path) -> torch.jit.ScriptModule:
    """Load a TorchScript file. For int8 the quantized engine must already be set: weights are packed for it."""
    if not path.is_file():
        raise PipelineError(f"{path}: file not found (run the stage that makes it, e.g. `dvc repro`)")
    try:
        return torch.jit.load(str(path), map_location="cpu").eval()
    except RuntimeError as error:
        raise PipelineError(f"{path}: not a readable TorchScript file ({first_line(error)})") from None
