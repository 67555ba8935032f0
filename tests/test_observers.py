"""Each observer choice is a real PyTorch observer: its scale and zero point match a hand computation."""

import pytest
import torch

from pipeline.backends.eager.modules import freeze_qat, prepare_qat, quantize_static, static_qconfig, use_engine
from pipeline.models.architectures import CNN, MLP
from tests.conftest import IDX_SHAPE
from tests.test_cli import assert_clean_failure, run


def input_qparams(batches: list[torch.Tensor], observer: str, symmetric: bool = False) -> tuple[float, int]:
    """Scale and zero point the input QuantStub gets from calibrating on `batches` (x86: activations 0..127)."""
    use_engine("x86")
    qconfig = static_qconfig(observer, False, "x86", symmetric_activations=symmetric)
    int8 = quantize_static(MLP([4], *IDX_SHAPE).eval(), qconfig, torch.cat(batches), len(batches), fused=True)
    return int8.quant.scale.item(), int8.quant.zero_point.item()


def images_spanning(low: float, high: float, count: int = 8) -> torch.Tensor:
    values = torch.linspace(low, high, count * 784)
    return values[torch.randperm(len(values), generator=torch.Generator().manual_seed(0))].reshape(count, 1, 28, 28)


def test_minmax_affine():
    # Range [-1, 3] on 0..127: scale 4/127; zero point 0 - round(-1 / scale) = round(31.75) = 32.
    scale, zero_point = input_qparams([images_spanning(-1, 3)], "minmax")
    assert scale == pytest.approx(4 / 127, rel=1e-6) and zero_point == 32


def test_minmax_symmetric():
    # Symmetric: bound max(|-1|, 3) = 3, scale 3 / (127 / 2); zero point the middle of 0..127, rounded down: 63.
    scale, zero_point = input_qparams([images_spanning(-1, 3)], "minmax", symmetric=True)
    assert scale == pytest.approx(3 / 63.5, rel=1e-6) and zero_point == 63


def test_moving_average_minmax():
    # First batch sets [0, 2]; the second, [-1, 4], moves each end 1% of the way: [-0.01, 2.02].
    # Scale 2.03 / 127; zero point 0 - round(-0.01 / scale) = round(0.6256) = 1.
    scale, zero_point = input_qparams([images_spanning(0, 2), images_spanning(-1, 4)], "moving_average_minmax")
    assert scale == pytest.approx(2.03 / 127, rel=1e-5) and zero_point == 1
    assert input_qparams([images_spanning(0, 2), images_spanning(-1, 4)], "minmax")[0] == pytest.approx(5 / 127)


def test_histogram_is_pytorchs_histogram_observer():
    """No closed form here (it searches for the range with the least L2 error): the pipeline's choice must give
    what torch's HistogramObserver gives on the same data, and on a long tail a narrower range than minmax."""
    data = torch.empty(8, 1, 28, 28).exponential_(1.0, generator=torch.Generator().manual_seed(0))
    observer = torch.ao.quantization.HistogramObserver(quant_min=0, quant_max=127, dtype=torch.quint8)
    observer(data)
    expected_scale, expected_zero_point = observer.calculate_qparams()
    scale, zero_point = input_qparams([data], "histogram")
    assert scale == expected_scale.item() and zero_point == expected_zero_point.item() == 0
    assert scale < input_qparams([data], "minmax")[0] == pytest.approx(data.max().item() / 127, rel=1e-6)


def test_qat_freeze_stops_observers_and_batch_norm():
    model = prepare_qat(CNN([4], *IDX_SHAPE), "x86", per_channel=True)
    freeze_qat(model)
    fake_quants = [m for m in model.modules() if hasattr(m, "observer_enabled")]
    assert fake_quants and all(m.observer_enabled.item() == 0 for m in fake_quants)
    assert all(m.freeze_bn for m in model.modules() if hasattr(m, "freeze_bn"))
    before = model.features[0].bn.running_mean.clone()
    model.train()(torch.rand(4, 1, 28, 28))
    assert torch.equal(model.features[0].bn.running_mean, before)


def test_more_calibration_batches_than_images(trained, tmp_path, monkeypatch):
    import shutil

    from tests.conftest import tiny_params, write_params

    work = shutil.copytree(trained, tmp_path / "work")
    monkeypatch.chdir(work)
    write_params(work / "params.yaml", tiny_params(tmp_path, **{"calibration.batches": 1000}))
    before = (work / "models/int8_static/model.pt").read_bytes()
    assert_clean_failure(run("static"), "calibration.batches: 1000 batches cannot be made of 100 calibration images")
    assert (work / "models/int8_static/model.pt").read_bytes() == before
