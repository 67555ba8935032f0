"""Where the files one stage writes and another reads lie, as dvc.yaml declares them (relative to the repository
root). Files only one stage touches are named in that stage's module."""

from pathlib import Path

RAW_DIR = Path("data/raw")  # download -> prepare: data/raw/<dataset>/
PREPARED_DIR = Path("data/prepared")  # prepare -> every later stage: train/test/calib.pt and dataset.json

OWN_MODEL = Path("models/own/model.pt2")  # your exported FP32 model, which train adopts (train.arch: exported)
TRAINED_MODEL = Path("models/trained")  # train -> export: the FP32 model's file alone
FP32_MODEL = Path("models/fp32")  # export -> quantization stages, evaluate, layers, sensitivity
INT8_MODELS = {method: Path(f"models/int8_{method}") for method in ("dynamic", "static", "qat")}
VARIANTS = {"fp32": FP32_MODEL, **INT8_MODELS}  # every model evaluate measures

TRAINING_HISTORY = Path("reports/plots/training.json")  # train -> report
METRICS_FILE = Path("reports/metrics.json")  # evaluate: the headline figures DVC lists (`dvc exp show`, `metrics diff`)
DETAILS_FILE = Path("reports/details.json")  # evaluate -> report: every figure measured, and what it was measured on
PLOTS_DIR = Path("reports/plots")  # evaluate, layers, sensitivity, draws -> report
DRAWS_FILE = Path("reports/draws.json")  # draws -> report: static int8's accuracy over calibration subsets
