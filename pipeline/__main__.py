"""The command line: one command per pipeline stage, in pipeline order.

python -m pipeline --help
"""

import functools
import logging
import warnings

import torch
import typer

from pipeline.errors import PipelineError
from pipeline.stages import (
    bench,
    download,
    dynamic,
    evaluate,
    layers,
    predict,
    prepare,
    qat,
    report,
    sensitivity,
    static,
    train,
)

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

STAGES = {
    "download": download,
    "prepare": prepare,
    "train": train,
    "dynamic": dynamic,
    "static": static,
    "qat": qat,
    "evaluate": evaluate,
    "layers": layers,
    "sensitivity": sensitivity,
    "report": report,
}

app = typer.Typer(
    help="Quantization lab: each command is one DVC stage.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


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


for name, module in STAGES.items():
    app.command(name)(one_line_errors(module.command))
app.command("bench")(one_line_errors(bench.command))
app.command("predict")(one_line_errors(predict.command))

if __name__ == "__main__":
    app()
