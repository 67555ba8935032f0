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

METRICS_FILE = Path("reports/metrics.json")  # evaluate: the headline figures DVC lists (`dvc exp show`, `metrics diff`)
DETAILS_FILE = Path("reports/details.json")  # evaluate -> report: every figure measured, and what it was measured on
DRAWS_FILE = Path("reports/draws.json")  # draws -> report: static int8's accuracy over calibration subsets
CONVERSION_FILE = Path("reports/conversion.json")  # static -> results tables: the seconds making static int8 took

# The plot data: train, evaluate, layers, sensitivity and draws -> report, and DVC's plots (dvc.yaml). One file per
# plot, named inside PLOTS_DIR; every row of a file has the same fields.
PLOTS_DIR = Path("reports/plots")
TRAINING_PLOT = "training.json"  # loss and accuracy per epoch
VARIANTS_PLOT = "variants.json"  # accuracy and size per model
CHANGES_PLOT = "accuracy_change.json"  # each int8 variant's accuracy change from FP32, with its interval
LATENCY_PLOT = "latency.json"  # per model, form and batch size
CONFUSION_PLOTS = {name: f"confusion_{name}.json" for name in ("fp32", "best_int8")}  # a row per test image
LAYERS_PLOT = "layers.json"  # per quantized layer: ranges and scales, PyTorch's beside recomputed
WEIGHTS_PLOT = "weight_histograms.json"  # per layer: FP32 and int8 weights on the same bins
SENSITIVITY_PLOT = "sensitivity.json"  # per layer: the accuracy it costs in int8
STEPS_PLOT = "steps.json"  # per recovery step the static variant took: what leaving it out loses
OP_TYPES_PLOT = "op_types.json"  # per op type of a runtime's quantizer: what keeping it in FP32 wins back
DRAWS_PLOT = "draws.json"  # per calibration draw: static int8's accuracy
