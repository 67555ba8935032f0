"""Markdown the commands write: tables, and an accuracy change with its interval."""


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table's lines."""
    return [row_line(header), "|" + "---|" * len(header), *(row_line(row) for row in rows)]


def row_line(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def change_cell(ratios: dict) -> str:
    """The accuracy change in points, its 95% interval, and what it amounts to."""
    low, high = (end * 100 for end in ratios["accuracy_change_ci95"])
    return f"{ratios['accuracy_change'] * 100:+.2f} [{low:+.2f}, {high:+.2f}]: {ratios['accuracy_verdict']}"
