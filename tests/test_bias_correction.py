"""The project's own bias correction (eager, onnxruntime): the shift it takes off a small layer is the one computed
by hand, a batch norm's running mean carries it where one follows, and what it cannot do is refused in one line."""

from pathlib import Path

import pytest
import torch
from torch import nn

from pipeline.backends.adaround import Grid
from pipeline.backends.bias_correction import correct_biases
from pipeline.backends.registry import planned
from pipeline.errors import PipelineError
from pipeline.params import Params
from tests.conftest import tiny_params
from tests.test_adaround import cnn_with_statistics

# On the grid [-7, 7] each row's scale is max |w| / 7: 0.1 and 0.2.
#   row 0: w / 0.1 = [7, 3.6, -1.2] rounds to [7, 4, -1]: int8 weights [0.7, 0.4, -0.1], error [0, 0.04, 0.02]
#   row 1: w / 0.2 = [-7, 2.2, 0.25] rounds to [-7, 2, 0]: int8 weights [-1.4, 0.4, 0], error [0, -0.04, -0.05]
# The inputs' mean is [1, 2, 3], so the shifts are 0.04 * 2 + 0.02 * 3 = 0.14 and -0.04 * 2 - 0.05 * 3 = -0.23,
# and the biases [0.1, -0.2] become [0.1 - 0.14, -0.2 + 0.23] = [-0.04, 0.03].
WEIGHT = [[0.7, 0.36, -0.12], [-1.4, 0.44, 0.05]]
BIAS = [0.1, -0.2]
INPUTS = [[0.0, 1.0, 2.0], [2.0, 3.0, 4.0]]


def small_layer() -> nn.Module:
    layer = nn.Linear(3, 2)
    layer.weight.data, layer.bias.data = torch.tensor(WEIGHT), torch.tensor(BIAS)
    return nn.Sequential(layer)


@pytest.mark.parametrize("mode", ["fast", "full"])
def test_a_small_layer_s_bias_loses_the_shift_computed_by_hand(mode):
    corrected, shifts = correct_biases(small_layer(), torch.tensor(INPUTS), Grid(-7, 7), mode)
    assert torch.allclose(shifts["0"], torch.tensor([0.14, -0.23]), atol=1e-6)
    assert torch.allclose(corrected[0].bias, torch.tensor([-0.04, 0.03]), atol=1e-6)
    assert torch.equal(corrected[0].weight, torch.tensor(WEIGHT))  # the backend rounds the weights itself


def rounded_weights(model: nn.Module, grid: Grid) -> nn.Module:
    """The model with every Conv2d and Linear weight as the backend's int8 weights compute (activations FP32)."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            module.weight.data = grid.nearest(module.weight) * grid.scales(module.weight)
    return model


@torch.no_grad()
def test_the_batch_norm_after_a_layer_carries_its_shift_and_full_leaves_the_least():
    model, grid, images = cnn_with_statistics(), Grid(-8, 7), torch.rand(64, 1, 28, 28)
    reference = model(images).mean(0)
    fast, shifts = correct_biases(model, images, grid, "fast")
    # the first convolution has no bias: its batch norm's running mean moved by the shift
    assert model.features[0].bias is None and fast.features[0].bias is None
    assert torch.allclose(fast.features[1].running_mean - model.features[1].running_mean, shifts["features.0"])
    full, _ = correct_biases(model, images, grid, "full")
    left = {
        name: (rounded_weights(version, grid)(images).mean(0) - reference).abs().mean().item()
        for name, version in {"none": model, "fast": fast, "full": full}.items()
    }
    assert left["full"] < left["none"] and left["full"] < 0.1 * left["none"], left


def test_per_tensor_weights_are_refused_in_one_line():
    params = Params(**tiny_params(Path("unused"), **{"static.bias_correction": "fast"}))
    with pytest.raises(PipelineError, match=r"^static.bias_correction: fast needs each output channel's int8 weights"):
        planned(params, "static")
