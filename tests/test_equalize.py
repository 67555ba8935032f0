"""Cross-layer equalization: the model computes what it did, each pair's shared channels end with equal weight
ranges, what cannot be paired is left as it was, and every backend quantizes the equalized model."""

import copy

import pytest
import torch

from pipeline.backends.equalize import equalize, find_pairs, input_ranges, output_ranges
from pipeline.backends.interface import Calibration
from pipeline.backends.registry import planned
from pipeline.backends.steps import steps_applied
from pipeline.errors import PipelineError
from pipeline.formats.fp32 import read_fp32
from pipeline.models.architectures import build
from pipeline.params import Params
from tests.conftest import IDX_INFO, tiny_params


def with_batch_norm_statistics(model: torch.nn.Module) -> torch.nn.Module:
    """Batch norms as training leaves them: scales and statistics far from 1 and 0, so that folding them matters."""
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            for tensor, low, high in ((module.running_var, 0.1, 2), (module.weight.data, 0.1, 3)):
                tensor.copy_(torch.empty_like(tensor).uniform_(low, high, generator=generator))
            module.running_mean.copy_(torch.empty_like(module.running_mean).uniform_(-1, 1, generator=generator))
    return model


@pytest.mark.parametrize(
    "arch, pairs",
    [
        ({"name": "mlp", "hidden": [50, 80, 30]}, 3),
        ({"name": "cnn", "channels": [8, 16]}, 1),
        ({"name": "mobilenet_v3_small"}, 13),
    ],
)
def test_equalized_model_computes_the_same_with_equal_ranges(arch, pairs):
    torch.manual_seed(0)
    model = with_batch_norm_statistics(build({**arch, "input": [1, 28, 28], "classes": 10}).eval())
    images = torch.rand(8, 1, 28, 28)
    before = model(images)
    equalized, found, unpaired = equalize(copy.deepcopy(model))
    assert len(found) == pairs
    assert torch.allclose(equalized(images), before, atol=1e-5, rtol=1e-4)
    for pair in found:
        first, second = equalized.get_submodule(pair.first), equalized.get_submodule(pair.second)
        norm = equalized.get_submodule(pair.norm) if pair.norm else None
        assert torch.allclose(output_ranges(first, norm), input_ranges(second), rtol=1e-4)
    # the CNN's classifier takes the last block's channels through a flatten: no pair, left as it was
    assert arch["name"] != "cnn" or unpaired == ["classifier"]


def test_a_residual_or_a_non_relu_activation_breaks_a_pair():
    """A ReLU6 (clipped: not scale-free) or an output used twice (a residual) is no pair."""

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)
            self.clipped = torch.nn.ReLU6()

        def forward(self, x):
            hidden = torch.relu(self.a(x))
            return self.c(self.clipped(self.b(hidden)) + hidden)

    pairs, unpaired = find_pairs(Model())
    assert pairs == [] and unpaired == ["a", "b", "c"]


@pytest.mark.parametrize("backend_name", ["eager", "pt2e", "onnxruntime", "openvino"])
def test_every_backend_quantizes_the_equalized_model_and_records_it(trained, tmp_path, backend_name):
    fp32 = read_fp32(trained / "models/fp32")
    params = Params(**tiny_params(tmp_path, **{"quantize.backend": backend_name, "static.equalize": True}))
    backend, recipe = planned(params, "static")
    assert recipe.equalize is True and recipe.settings()["equalize"] is True
    calibration = Calibration(torch.rand(32, 1, 28, 28), 2)
    with steps_applied(fp32, recipe, IDX_INFO, calibration, backend) as model:
        assert not torch.equal(model.module.layers[0].weight, fp32.module.layers[0].weight)
        backend.static(model, recipe, calibration, tmp_path / "int8", IDX_INFO)
    assert (tmp_path / "int8").is_dir()


def test_a_model_with_nothing_to_pair_is_refused(trained, tmp_path):
    fp32 = read_fp32(trained / "models/fp32")
    graph = torch.export.export(fp32.module, (torch.rand(2, 1, 28, 28),)).module()
    params = Params(**tiny_params(tmp_path, **{"static.equalize": True}))
    backend, recipe = planned(params, "static")
    calibration = Calibration(torch.rand(8, 1, 28, 28), 2)
    with pytest.raises(PipelineError, match=r"^static.equalize: no Conv2d or Linear in GraphModule feeds another"):
        with steps_applied(type(fp32)(graph, fp32.arch, fp32.location), recipe, IDX_INFO, calibration, backend):
            pass


def test_with_torch_ao_s_range_it_lands_where_torch_ao_s_equalize_does(monkeypatch):
    """The peer's implementation (torch.ao's `_equalize.equalize`, Conv/Linear pairs without batch norm) measures a
    channel's range as max - min where this one takes max |w| (the backends' weights are symmetric): given the same
    definition, both reach the same weights."""
    from torch.ao.quantization._equalize import equalize as torch_ao_equalize

    import pipeline.backends.equalize as lab

    torch.manual_seed(0)
    model = build({"name": "mlp", "hidden": [50, 80, 30], "input": [1, 28, 28], "classes": 10}).eval()
    peer = torch_ao_equalize(
        copy.deepcopy(model),
        [["layers.0", "layers.2"], ["layers.2", "layers.4"], ["layers.4", "layers.6"]],
        1e-4,
        inplace=False,
    )
    spread = lambda weight: weight.amax(1) - weight.amin(1)  # noqa: E731
    monkeypatch.setattr(lab, "output_ranges", lambda first, norm: spread(first.weight.detach().flatten(1)))
    monkeypatch.setattr(lab, "input_ranges", lambda second: spread(second.weight.detach().transpose(0, 1).flatten(1)))
    ours, _, _ = lab.equalize(copy.deepcopy(model))
    theirs = dict(peer.named_parameters())
    assert max((found - theirs[name]).abs().max().item() for name, found in ours.named_parameters()) < 1e-4
