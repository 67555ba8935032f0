"""Packages a stage needs only for some settings (the runtimes and their quantizers): imported where used, and
named in one line with how to install them where they are missing."""

import importlib
from types import ModuleType

from pipeline.errors import PipelineError
from pipeline.safe_io import first_line


def require(module: str) -> ModuleType:
    """Import a runtime, or say in one line that it is missing and how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise PipelineError(
            f"{module} is not installed in this environment ({first_line(error)}): `pip install {module}` "
            "or `make .venv/installed` installs it"
        ) from None


def missing(module: str) -> str | None:
    """Why `module` cannot be used here, or None if it can."""
    try:
        require(module)
    except PipelineError as error:
        return str(error)
    return None
