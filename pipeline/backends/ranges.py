"""Activation ranges chosen from a histogram of the calibration activations, for the observers `static.observer`
names that PyTorch does not have: percentile, entropy and mse.

Each takes the histogram as counts over equal bins between `low` and `high` (the smallest and largest activation
seen) and returns the range [min, max] to quantize to; values outside it are clipped. `symmetric` says the range
will be made symmetric about zero (symmetric activations), so the search is on magnitudes.

- percentile: the central `percentile`% of the activations, cutting half the rest from each end; or, symmetric,
  the `percentile`-th percentile of their magnitudes. ONNX Runtime's Percentile calibration is this definition.
- entropy: TensorRT's calibration: of the thresholds at bins 128 to 2048 of the magnitudes' 2048-bin histogram, the
  one whose clipped histogram (values beyond it in its last bin) loses the least information (KL divergence) when
  merged into 128 levels.
- mse: the range [a * low, b * high], a and b in (0, 1] in steps of 1/50 (a = b if symmetric), whose quantization
  grid (the observer's integer range) gives the smallest squared error over the activations, clipping included;
  bin centres stand for their values.
"""

import numpy as np
import torch

from pipeline.affine import qparams, quantize

ENTROPY_BINS = 2048
ENTROPY_LEVELS = 128
MSE_STEPS = 50


def magnitudes(counts: np.ndarray, low: float, high: float, bins: int) -> tuple[np.ndarray, float]:
    """The histogram of |x| in `bins` equal bins from 0 to the largest magnitude, each bin's count moved to the bin
    of its centre's magnitude."""
    width = (high - low) / len(counts)
    centres = np.abs(low + width * (np.arange(len(counts)) + 0.5))
    top = max(abs(low), abs(high))
    index = np.minimum((centres / top * bins).astype(int), bins - 1)
    return np.bincount(index, weights=counts, minlength=bins), top


def percentile_range(counts: np.ndarray, low: float, high: float, percentile: float, symmetric: bool):
    """The range holding `percentile`% of the activations: bin edges where the cumulative share reaches it."""
    if symmetric:
        folded, top = magnitudes(counts, low, high, len(counts))
        share = np.cumsum(folded) / folded.sum()
        threshold = top * (np.searchsorted(share, percentile / 100) + 1) / len(folded)
        return max(low, -threshold), min(high, threshold)
    cut = (100 - percentile) / 200
    share = np.cumsum(counts) / counts.sum()
    width = (high - low) / len(counts)
    first = np.searchsorted(share, cut, side="right")  # the first bin not wholly cut from below
    last = np.searchsorted(share, 1 - cut)  # the bin where the share reaches what is kept
    return low + width * first, low + width * (min(last, len(counts) - 1) + 1)


def entropy_range(counts: np.ndarray, low: float, high: float, symmetric: bool):
    """TensorRT's KL-divergence threshold on the magnitudes; `symmetric` does not change the search."""
    folded, top = magnitudes(counts, low, high, ENTROPY_BINS)
    best, threshold = np.inf, top
    for end in range(ENTROPY_LEVELS, ENTROPY_BINS + 1):
        reference = folded[:end].copy()
        reference[-1] += folded[end:].sum()  # clipped values land in the last bin
        divergence = kl_divergence(smoothed(reference), smoothed(quantized(folded[:end])))
        if divergence < best:
            best, threshold = divergence, top * end / ENTROPY_BINS
    return max(low, -threshold), min(high, threshold)


def quantized(histogram: np.ndarray) -> np.ndarray:
    """The histogram merged into ENTROPY_LEVELS levels of len // ENTROPY_LEVELS bins each (the last level takes
    the rest), each level's count spread back evenly over the bins of it that held any values."""
    merged = len(histogram) // ENTROPY_LEVELS
    level = np.minimum(np.arange(len(histogram)) // merged, ENTROPY_LEVELS - 1)
    held = histogram > 0
    per_level = np.bincount(level, histogram) / np.maximum(np.bincount(level, held), 1)
    return np.where(held, per_level[level], 0.0)


def smoothed(histogram: np.ndarray, eps: float = 1e-4) -> np.ndarray:
    """Empty bins given eps, taken evenly from the others, so that the divergence stays finite (as TensorRT's
    calibration, MXNet's and ONNX Runtime's do)."""
    empty = histogram == 0
    if empty.all():
        return histogram
    return histogram + eps * empty - eps * empty.sum() / (~empty).sum() * ~empty


def kl_divergence(reference: np.ndarray, candidate: np.ndarray) -> float:
    """KL(p || q) of two histograms, each normalized to a distribution."""
    p, q = reference / reference.sum(), candidate / candidate.sum()
    held = p > 0
    return float(np.sum(p[held] * np.log(p[held] / q[held])))


def mse_range(counts: np.ndarray, low: float, high: float, quant_min: int, quant_max: int, symmetric: bool):
    """The range, each end shrunk towards zero in MSE_STEPS steps (both ends alike if symmetric), whose quantization
    grid (PyTorch's scale and zero point for it, `pipeline.affine`) gives the least squared error over the
    histogram. All candidates are quantized at once, one per row, as a per-channel tensor."""
    width = (high - low) / len(counts)
    values = torch.tensor(low + width * (np.arange(len(counts)) + 0.5), dtype=torch.float32)
    steps = torch.arange(1, MSE_STEPS + 1, dtype=torch.float64) / MSE_STEPS
    shrink_low, shrink_high = (steps, steps) if symmetric else torch.cartesian_prod(steps, steps).T
    scale, zero_point = qparams(low * shrink_low, high * shrink_high, quant_min, quant_max, symmetric)
    grid = quantize(values.expand(len(scale), -1), scale, zero_point, quant_min, quant_max)
    restored = (grid - zero_point[:, None]) * scale[:, None]
    errors = (torch.from_numpy(counts) * (values - restored) ** 2).sum(dim=1)
    best = int(errors.argmin())
    return low * float(shrink_low[best]), high * float(shrink_high[best])
