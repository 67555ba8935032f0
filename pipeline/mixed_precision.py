"""Mixed precision: which layers to keep in FP32 so that an int8 model stays within an accuracy budget.

The search behind `static.max_accuracy_drop` (the static stage); the sensitivity stage ranks layers the same way.
"""

from pipeline.models import accuracy
from pipeline.quantize import float_twin, quantizable_layers, quantize_only, quantize_static


def points(reference: float, value: float) -> float:
    """Accuracy lost from `reference` to `value`, in percentage points."""
    return round((reference - value) * 100, 3)


def fewest_float_layers(model, qconfig, images, labels, batches, fused, start: list[str], budget: float) -> list[str]:
    """Keep layers in FP32, most harmful in int8 first, until accuracy on `images` is within `budget` points.

    Scored on the calibration images, never the test set, so the choice is not tuned on what evaluates it.
    """
    baseline = accuracy(model, images, labels)
    reference = float_twin(model, fused)
    candidates = [name for name in quantizable_layers(reference) if name not in start]
    only = {
        name: accuracy(quantize_only(model, name, qconfig, images, batches, fused), images, labels)
        for name in candidates
    }
    kept = list(start)
    for name in [None, *sorted(candidates, key=only.get)]:
        if name is not None:
            kept.append(name)
        int8 = quantize_static(model, qconfig, images, batches, fused, skip_layers=kept)
        if points(baseline, accuracy(int8, images, labels)) <= budget:
            break
    return kept
