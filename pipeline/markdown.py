"""Markdown the commands write: tables, an accuracy change with its interval, the machine a figure came from."""


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table's lines."""
    return [row_line(header), "|" + "---|" * len(header), *(row_line(row) for row in rows)]


def row_line(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def change_cell(ratios: dict) -> str:
    """The accuracy change in points, its 95% interval, and what it amounts to."""
    low, high = (end * 100 for end in ratios["accuracy_change_ci95"])
    return f"{ratios['accuracy_change'] * 100:+.2f} [{low:+.2f}, {high:+.2f}]: {ratios['accuracy_verdict']}"


def machine_line(environment: dict) -> str:
    """The CPU, threads and runtimes an evaluation ran on, as details.json records them."""
    runtimes = ", ".join(f"{name} {environment.get(name, 'not recorded')}" for name in ("onnxruntime", "openvino"))
    return (
        f"{environment['cpu_model']} ({environment['cpu_flags'] or 'no AVX2, AVX-512 or VNNI flags'}), "
        f"{environment['threads']} thread(s), torch {environment['torch']}, {runtimes}"
    )
