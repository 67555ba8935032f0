"""The line each peer script prints for one int8 model: its accuracy and its change against FP32 on the same
test images, with the lab's paired bootstrap interval (10,000 resamples, seed 0), and the seconds it took to
make."""

from pathlib import Path

import torch

from pipeline.data.prepared import AnyImages, first, load_split
from pipeline.measure.accuracy import change_interval


def test_split(workspace: Path, count: int) -> tuple[AnyImages, torch.Tensor]:
    """The workspace's test images and labels: its first `count`, or all where `count` is 0."""
    images, labels = load_split(workspace / "data/prepared", "test")
    return (first(images, count), labels[:count]) if count else (images, labels)


def change_line(name: str, correct: torch.Tensor, reference: torch.Tensor, seconds: float) -> str:
    low, high = change_interval(correct, reference, 10000, 0)
    accuracy, change = correct.float().mean().item(), (correct.float().mean() - reference.float().mean()).item()
    return f"{name}: {accuracy:.4f}, {100 * change:+.2f} [{100 * low:+.2f}, {100 * high:+.2f}], {seconds:.0f} s"
