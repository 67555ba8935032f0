"""Stage `download`: the raw data of `data.dataset` into data/raw/<dataset>/ (`pipeline.data.fetch`).

    python -m pipeline download

A published IDX data set's four gz files, each checked against its MD5; or your own data (`imagefolder`,
`tensors`), copied from `data.local_dir`.
"""

from pathlib import Path

import typer

from pipeline.data.fetch import OWN_SOURCES, copy_own_data, fetch_dataset
from pipeline.data.published import registry
from pipeline.params import PARAMS_FILE, ParamsOption, load_params
from pipeline.paths import RAW_DIR


def command(
    params_file: ParamsOption = PARAMS_FILE,
    out_dir: Path = typer.Option(RAW_DIR, "--out", help="folder that receives <dataset>/"),
) -> None:
    """Fetch and verify the raw IDX files of data.dataset, or copy your own data from data.local_dir."""
    params = load_params(params_file).data
    local_dir = Path(params.local_dir).expanduser()
    if params.dataset in OWN_SOURCES:
        skipped = copy_own_data(local_dir, OWN_SOURCES[params.dataset], out_dir / params.dataset)
        typer.echo(f"{params.dataset}: {local_dir}")
        if skipped:
            typer.echo(f"left out {skipped} files that are not PNG or JPEG images")
        return
    dataset = registry()[params.dataset]
    for source in fetch_dataset(dataset, out_dir / dataset.name, local_dir, params.verify_md5):
        typer.echo(f"{dataset.name}: {source}")
