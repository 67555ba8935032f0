"""The command line: one command per pipeline stage, in pipeline order.

python -m pipeline --help
"""

import functools
import importlib
import logging
import sys
import warnings

import torch
import typer

from pipeline.errors import PipelineError

# torch.ao.quantization warns on import, on each call and on each quantized tensor it makes. The eager flow is a
# deliberate choice (README, "Backends"), so the stage logs keep only what the stages themselves say.
warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated")
warnings.filterwarnings("ignore", module=r"torch(\.|$)")
warnings.filterwarnings("ignore", module=r"torchao(\.|$)")
# torchao registers a type that torch now handles natively, and torch logs a deprecation notice about it.
logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
# torch warns once per process, from C++, that quantized tensors are deprecated. Raised inside a TorchScript file
# (eager int8), the warning bypasses Python's filters and lands before `predict`'s output; raised once here, from
# Python, it is dropped, and torch does not raise it again.
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    torch.quantize_per_tensor(torch.zeros(1), 1.0, 0, torch.quint8)

# The stages in pipeline order, then the commands that are not stages. Each is the module pipeline/stages/<name>.py.
STAGES = (
    *("download", "prepare", "train", "export", "dynamic", "static", "qat"),
    *("evaluate", "layers", "sensitivity", "draws", "report"),
)
COMMANDS = (*STAGES, "bench", "predict", "results")


def one_line_errors(command):
    """Show a PipelineError as one line on stderr and exit 1; anything else is a bug and keeps its traceback."""

    @functools.wraps(command)
    def run(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except PipelineError as error:
            typer.secho(f"error: {error}", err=True, fg=typer.colors.RED)
            raise typer.Exit(1) from None

    return run


def command_line(names=COMMANDS) -> typer.Typer:
    """The commands `names`, each imported from its stage module."""
    app = typer.Typer(
        help="Quantization lab: each command is one DVC stage.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    app.callback()(lambda: None)  # commands stay subcommands even when only one is loaded
    for name in names:
        app.command(name)(one_line_errors(importlib.import_module(f"pipeline.stages.{name}").command))
    return app


def __getattr__(name: str):
    """`from pipeline.__main__ import app`: every command (the tests run them through Typer's CliRunner)."""
    if name == "app":
        return command_line()
    raise AttributeError(name)


if __name__ == "__main__":
    # Only the command asked for is imported: a stage process does not pay for every other stage's libraries
    # (torchvision, ONNX, OpenVINO), seconds each time DVC starts one.
    asked = sys.argv[1] if len(sys.argv) > 1 else None
    command_line([asked] if asked in COMMANDS else COMMANDS)()
