"""Stage `draws`: how much static int8's accuracy owes to the calibration images drawn.

    python -m pipeline draws

The static variant's own recipe (read from its files, with any layers a search kept in FP32) is calibrated again
on `calibration.draws` independent subsets of the training split, each of `calibration.size` images drawn by
`seed` + 1, + 2, ... (`prepare` drew the variant's own with `seed`), converted by the same backend, and scored
on the test set. Writes the spread of accuracy and of its change from FP32 (mean, min, max) to
reports/draws.json, a metrics file, and each draw's figures to reports/plots/draws.json.
"""

import statistics
from pathlib import Path

import typer
from tqdm import tqdm

from pipeline.backends.interface import Calibration
from pipeline.backends.registry import backend_of
from pipeline.data.prepared import draw_calibration, load_split, read_info, test_subset
from pipeline.formats.deployables import read_runtime_settings
from pipeline.formats.fp32 import read_fp32, require_kind
from pipeline.measure.variants import accuracy_of, recipe_of, static_accuracy
from pipeline.params import PARAMS_FILE, ParamsOption, load_params
from pipeline.paths import DRAWS_FILE, DRAWS_PLOT, FP32_MODEL, INT8_MODELS, PLOTS_DIR, PREPARED_DIR
from pipeline.safe_io import save_jsons

PLOT_FILE = PLOTS_DIR / DRAWS_PLOT


def spread(values: list[float]) -> dict:
    return {"mean": round(statistics.fmean(values), 4), "min": min(values), "max": max(values)}


def command(
    params_file: ParamsOption = PARAMS_FILE,
    fp32_folder: Path = typer.Option(FP32_MODEL, "--fp32", help="the FP32 model folder"),
    static_folder: Path = typer.Option(INT8_MODELS["static"], "--static", help="the static int8 variant's folder"),
    data_dir: Path = typer.Option(PREPARED_DIR, "--data", help="the prepared data"),
    out: Path = typer.Option(DRAWS_FILE, "--out", help="the spread over the draws (metrics JSON)"),
    plot_out: Path = typer.Option(PLOT_FILE, "--plot", help="each draw's accuracy (plot JSON)"),
) -> None:
    """Calibrate static int8 again on other subsets of the training split, and measure the spread."""
    params = load_params(params_file)
    calibration = params.calibration
    settings = read_runtime_settings(static_folder)
    require_kind(settings, "int8", static_folder)
    recipe, data = recipe_of(settings, static_folder), read_info(data_dir)
    backend, fp32 = backend_of(recipe), read_fp32(fp32_folder)
    train = load_split(data_dir, "train")[0]
    images, labels = test_subset(*load_split(data_dir, "test"), calibration.draw_test_images, params.seed)
    reference = accuracy_of(fp32_folder, images, labels)
    rows = []
    for draw in tqdm(range(1, calibration.draws + 1), desc="draws", disable=None):
        subset = train.subset(draw_calibration(len(train), calibration.size, params.seed + draw))
        drawn = Calibration(subset, calibration.batches)
        accuracy = static_accuracy(backend, fp32, recipe, drawn, data, images, labels)
        rows.append({"draw": draw, "accuracy": accuracy, "accuracy_change": round(accuracy - reference, 4)})
    found = {"accuracy": spread([row["accuracy"] for row in rows])} if rows else {}
    if rows:
        found["accuracy_change"] = spread([row["accuracy_change"] for row in rows])
    save_jsons({out: {"static": {"draws": len(rows), "fp32_accuracy": reference, **found}}, plot_out: rows})
    if rows:
        typer.echo(f"static int8 over {len(rows)} calibration draws: accuracy {found['accuracy']}")
