"""Which layer, and which op type, costs accuracy when it is quantized: the rankings `sensitivity` writes.

Layers: for each quantizable layer of a backend's `Conversion` of the static recipe, the accuracy drop (points, test
set) when only that layer is int8 and when every layer but that one is int8, and where the backend can tell (eager)
the SQNR of its weights and of its output activations in the full int8 model against FP32; most sensitive first.

Op types: a runtime's quantizer works on op types as well as layers. Each op type whose inputs the static variant
holds in int8 is kept in FP32 in turn (`Backend.with_float_op_type`: `onnxruntime.op_types`,
`openvino.ignored_types`), the variant's own recipe converted again and scored on its runtime; most won back first.
"""

from pathlib import Path

import torch
from tqdm import tqdm

from pipeline.backends.interface import Calibration, Conversion
from pipeline.backends.mixed_precision import points
from pipeline.backends.recipes import StaticRecipe
from pipeline.backends.registry import backend_of
from pipeline.data.prepared import DataInfo, first
from pipeline.formats.fp32 import Fp32Model
from pipeline.measure.variants import accuracy_of, static_accuracy
from pipeline.models.architectures import accuracy

ACTIVATION_IMAGES = 1000  # enough for a stable SQNR, few enough to stay fast


def layer_sensitivity(recipe: Conversion, images: torch.Tensor, labels: torch.Tensor) -> list[dict]:
    """One row per quantizable layer, most sensitive first (largest drop when only it is int8)."""
    baseline = accuracy(recipe.model, images, labels)
    names = recipe.layers()
    noise = recipe.noise(names, first(images, ACTIVATION_IMAGES))
    rows = [
        {
            "layer": name,
            "drop_only_this_int8": points(baseline, accuracy(recipe.only_int8(name), images, labels)),
            "drop_all_but_this_int8": points(baseline, accuracy(recipe.with_float([name]), images, labels)),
            **noise.get(name, {}),
        }
        for name in tqdm(names, desc="layers", leave=False, disable=None)
    ]
    return sorted(rows, key=lambda row: row["drop_only_this_int8"], reverse=True)


def op_type_sensitivity(
    fp32: Fp32Model,
    static_folder: Path,
    recipe: StaticRecipe,
    calibration: Calibration,
    data: DataInfo,
    images: torch.Tensor,
    labels: torch.Tensor,
) -> list[dict]:
    """One row per op type the static variant quantizes, most harmful first: the accuracy drop from FP32 with that
    type kept in FP32 by the quantizer's op-type option (`Backend.with_float_op_type`; all else as the variant,
    made with `recipe`), and the points that wins back."""
    backend = backend_of(recipe)
    quantized = backend.quantized_op_types(static_folder, recipe)
    if len(quantized) < 2:  # with its only type kept in FP32, a model is its FP32 self: nothing to rank
        return []
    reference = accuracy(fp32.module, images, labels)
    int8_drop = points(reference, accuracy_of(static_folder, images, labels))
    rows = []
    for op_type in tqdm(quantized, desc="op types", leave=False, disable=None):
        kept = backend.with_float_op_type(recipe, op_type)
        drop = points(reference, static_accuracy(backend, fp32, kept, calibration, data, images, labels))
        rows.append({"op_type": op_type, "drop_with_it_fp32": drop, "won_back": round(int8_drop - drop, 3)})
    return sorted(rows, key=lambda row: row["won_back"], reverse=True)
