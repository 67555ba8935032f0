"""The project's own error: a problem the user can fix, shown as one line and a non-zero exit."""


class PipelineError(Exception):
    """Bad input, a missing or corrupt file, a wrong setting. The message names what was wrong."""
