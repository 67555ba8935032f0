"""The line each peer script prints for one int8 model: its accuracy and its change against FP32 on the same
test images, with the lab's paired bootstrap interval, and the seconds it took to make."""

import torch

from pipeline.measure.accuracy import change_interval


def change_line(name: str, correct: torch.Tensor, reference: torch.Tensor, seconds: float) -> str:
    low, high = change_interval(correct, reference, 10000, 0)
    accuracy, change = correct.float().mean().item(), (correct.float().mean() - reference.float().mean()).item()
    return f"{name}: {accuracy:.4f}, {100 * change:+.2f} [{100 * low:+.2f}, {100 * high:+.2f}], {seconds:.0f} s"
