"""How well a model classifies, and how closely an int8 model follows its FP32 original."""

import numpy as np
import torch
from torch import nn

from pipeline.affine import sqnr_db
from pipeline.data.prepared import AnyImages, outputs_in_batches


@torch.inference_mode()
def logits(model: nn.Module, images: AnyImages) -> torch.Tensor:
    """The model's outputs for `images` (a tensor or a prepared split's `Images`), a batch at a time."""
    return outputs_in_batches(model, images)


def confusion_matrix(predicted: torch.Tensor, labels: torch.Tensor, classes: int) -> torch.Tensor:
    """Counts indexed [true class, predicted class]."""
    return torch.bincount(labels * classes + predicted, minlength=classes**2).reshape(classes, classes)


def per_class_accuracy(confusion: torch.Tensor) -> dict[str, float]:
    totals = confusion.sum(1).clamp(min=1)
    return {str(c): round(confusion[c, c].item() / totals[c].item(), 4) for c in range(len(confusion))}


def agreement(predicted: torch.Tensor, reference: torch.Tensor) -> float:
    """Share of images where two models predict the same class."""
    return (predicted == reference).sum().item() / len(predicted)


def score(model_logits: torch.Tensor, labels: torch.Tensor, reference_logits: torch.Tensor | None = None) -> dict:
    """Accuracy, per-class accuracy and, against a reference, agreement and logit SQNR."""
    predicted = model_logits.argmax(1)
    confusion = confusion_matrix(predicted, labels, model_logits.shape[1])
    result = {"accuracy": confusion.trace().item() / len(labels), "per_class_accuracy": per_class_accuracy(confusion)}
    if reference_logits is not None:
        result["agreement"] = agreement(predicted, reference_logits.argmax(1))
        result["logit_sqnr_db"] = sqnr_db(reference_logits, model_logits)
    return result


def change_interval(correct: torch.Tensor, reference_correct: torch.Tensor, resamples: int, seed: int) -> list[float]:
    """The 95% interval of the accuracy change from a reference model to a model, by a paired bootstrap over the
    test images: each resample draws the images with replacement and both models are scored on the same draw.

    Per image the change is +1 (only the model is right), -1 (only the reference is) or 0, so a resample's mean
    change depends only on how many of each it draws: one multinomial draw of those counts is exactly one
    bootstrap resample, and 10,000 of them take milliseconds where resampling index arrays would take seconds."""
    change = correct.long() - reference_correct.long()
    images = len(change)
    shares = [(change == 1).sum().item() / images, (change == -1).sum().item() / images]
    counts = np.random.default_rng(seed).multinomial(images, [*shares, 1 - sum(shares)], size=resamples)
    means = (counts[:, 0] - counts[:, 1]) / images
    low, high = np.quantile(means, [0.025, 0.975])
    return [round(float(low), 4), round(float(high), 4)]
