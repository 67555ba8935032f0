"""Command `results`: a docs/ page's results tables, rendered from DVC experiments (not a DVC stage).

python -m pipeline results backends --run
"""

import typer

from pipeline.measure.result_tables import (
    SETS_FILE,
    load_set,
    newest_refs,
    read_experiment,
    render,
    replace_block,
    run_experiments,
)
from pipeline.safe_io import save_text


def command(
    name: str = typer.Argument(..., help=f"a results set of {SETS_FILE}"),
    run: bool = typer.Option(False, "--run", help="run the set's experiments first (dvc exp run, one at a time)"),
) -> None:
    """Rewrite a page's tables from the newest experiment of each of the set's runs."""
    results = load_set(name)
    if run:
        run_experiments(results)
    refs = newest_refs()
    experiments = {run_name: read_experiment(results, run_name, refs) for run_name in results.runs}
    block = render(results, experiments)
    save_text(replace_block(results.page.read_text(), name, block, results.page), results.page)
    typer.echo(f"{results.page}: {name} tables rewritten from {len(experiments)} experiments")
