"""Affine quantization from scratch: where every int8 number in a converted model comes from.

    x_int = clamp(round(x / scale) + zero_point, q_min, q_max)        x ~ (x_int - zero_point) * scale

The range [min, max] an observer saw is first widened to include 0, so that zero is exactly representable.
Affine: scale = (max - min) / (q_max - q_min), zero_point = q_min - round(min / scale).
Symmetric: scale = max(|min|, |max|) / ((q_max - q_min) / 2), zero_point = 0 (signed) or, unsigned, the middle
of the range rounded down, (q_min + q_max) // 2, which PyTorch uses whenever the range is set explicitly, as here.
A moving-average observer takes the first batch's min and max, then moves each 1% of the way to every later
batch's: m = m + 0.01 (m_batch - m).
Arithmetic is in float32, as in PyTorch's observers and kernels, so the results match them bit for bit.
What quantization loses is measured as the signal-to-quantization-noise ratio (`sqnr_db`).

Plain math on tensors, below every layer: the backends' range searches and the measurements both use it.
"""

import math

import torch

EPS = torch.finfo(torch.float32).eps  # PyTorch's observers never let a scale fall below this
AVERAGING_CONSTANT = 0.01  # of the moving-average observer


def moving_average(values: list[float], updates_per_value: int = 1) -> float:
    """The moving-average observer's running value after seeing `values`, one per batch, in float32.

    The first value sets it; each value is then applied `updates_per_value` times (see `layers.observer_calls`).
    """
    running = torch.tensor(values[0], dtype=torch.float32)
    for value in [values[0]] * (updates_per_value - 1) + [v for v in values[1:] for _ in range(updates_per_value)]:
        running = running + AVERAGING_CONSTANT * (torch.tensor(value, dtype=torch.float32) - running)
    return running.item()


def qparams(
    min_val: torch.Tensor, max_val: torch.Tensor, q_min: int, q_max: int, symmetric: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point for observed ranges (a scalar, or one per channel)."""
    min_neg = torch.minimum(min_val.float(), torch.zeros_like(min_val.float()))
    max_pos = torch.maximum(max_val.float(), torch.zeros_like(max_val.float()))
    if symmetric:
        bound = torch.maximum(-min_neg, max_pos)
        scale = torch.clamp(bound / ((q_max - q_min) / 2), min=EPS)
        zero_point = torch.full_like(scale, 0 if q_min < 0 else (q_min + q_max) // 2, dtype=torch.int64)
    else:
        scale = torch.clamp((max_pos - min_neg) / (q_max - q_min), min=EPS)
        zero_point = torch.clamp(q_min - torch.round(min_neg / scale).to(torch.int64), q_min, q_max)
    return scale, zero_point


def quantize(
    x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, q_min: int, q_max: int, axis: int = 0
) -> torch.Tensor:
    """Integer values of `x`; per-channel when `scale` has one entry per slice along `axis`.

    The kernels multiply by the float32 inverse of the scale rather than dividing: a tie (exactly x.5 after
    division) can round the other way, so this does the same.
    """
    shape = [1] * x.dim()
    if scale.numel() > 1:
        shape[axis] = -1
    inverse = (1.0 / scale.double()).float().reshape(shape) if scale.numel() > 1 else (1.0 / scale.double()).float()
    return torch.clamp(
        torch.round(x * inverse) + zero_point.reshape(shape if scale.numel() > 1 else ()), q_min, q_max
    ).to(torch.int64)


def sqnr_db(reference: torch.Tensor, approximation: torch.Tensor) -> float | None:
    """Signal-to-quantization-noise ratio in dB: 10 log10(|reference|^2 / |reference - approximation|^2)."""
    return decibels(*energies(reference, approximation))


def energies(reference: torch.Tensor, approximation: torch.Tensor) -> tuple[float, float]:
    """|reference|^2 and |reference - approximation|^2: summed over batches, they give the SQNR of all."""
    return reference.double().pow(2).sum().item(), (reference - approximation).double().pow(2).sum().item()


def decibels(signal: float, noise: float) -> float | None:
    """None where there is no signal (a model whose outputs are all zero, e.g. torchvision's ViT head at its
    initialization): no ratio to give."""
    if signal == 0:
        return None
    return round(10 * math.log10(signal / max(noise, 1e-300)), 2)
