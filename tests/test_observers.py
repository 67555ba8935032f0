"""Each observer choice is a real PyTorch observer: its scale and zero point match a hand computation."""

import numpy as np
import pytest
import torch

from pipeline.backends.eager.modules import freeze_qat, prepare_qat, quantize_static, static_qconfig, use_engine
from pipeline.backends.ranges import ENTROPY_BINS, entropy_range, mse_range, percentile_range
from pipeline.models.architectures import CNN, MLP
from tests.conftest import IDX_SHAPE
from tests.test_cli import assert_clean_failure, run


def input_qparams(
    batches: list[torch.Tensor], observer: str, symmetric: bool = False, percentile: float | None = None
) -> tuple[float, int]:
    """Scale and zero point the input QuantStub gets from calibrating on `batches` (x86: activations 0..127)."""
    use_engine("x86")
    qconfig = static_qconfig(observer, False, "x86", symmetric_activations=symmetric, percentile=percentile)
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


def test_percentile_ranges():
    # Central 98% of [0, 3] holding 1, 98 and 1 values per unit: 1% is cut from each end, the middle bin kept.
    assert percentile_range(np.array([1.0, 98, 1]), 0, 3, 98, symmetric=False) == (1, 2)
    # Symmetric: magnitudes of bins centred at -1.5, -0.5, 0.5, 1.5 are 0.5 (97 values) and 1.5 (3 values); 97%
    # of them are at most 1, the top of the bin holding 0.5 on [0, 2] in four bins.
    assert percentile_range(np.array([1.0, 48, 49, 2]), -2, 2, 97, symmetric=True) == (-1, 1)


def test_percentile_observer():
    # Uniform on [-1, 3]: its central 90% is [-0.8, 2.8], so scale 3.6 / 127 and zero point round(0.8 / scale) = 28.
    scale, zero_point = input_qparams([images_spanning(-1, 3)], "percentile", percentile=90)
    assert scale == pytest.approx(3.6 / 127, rel=2e-3) and zero_point == 28


def test_entropy_range_ends_where_the_values_end():
    # 1,000 values in each of the first 300 of 2048 bins on [0, 16]. A threshold below bin 300 folds the rest into
    # its last bin, which 128 levels cannot show (KL above 0); at bin 300, 128 levels of 2 bins (the last: 46)
    # hold equal counts, as the bins do (KL 0), and no later threshold does better: 16 * 300 / 2048 = 2.34375.
    counts = np.zeros(ENTROPY_BINS)
    counts[:300] = 1000
    assert entropy_range(counts, 0, 16, symmetric=False) == (0, 2.34375)


def test_mse_range_trades_an_outlier_for_the_bulk():
    # Values at 0.5 (100) and 3.5 (1) on 0..1 (two levels: 0 and the scale). With range [0, 4b] the error is
    # 100 (0.5 - q(0.5))^2 + (3.5 - 4b)^2: 25.25 at b = 1; at b = 0.14 (scale 0.56), 100 * 0.06^2 + 2.94^2 = 9.00,
    # the least over b = 0.02, 0.04, ..., 1 (b = 0.12: 9.16; 0.16: 10.14).
    low, high = mse_range(np.array([100.0, 0, 0, 1]), 0, 4, quant_min=0, quant_max=1, symmetric=False)
    assert (low, high) == (0, pytest.approx(0.56))


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


@pytest.mark.parametrize("symmetric", [False, True])
def test_percentile_is_onnx_runtimes_percentile(tmp_path, symmetric):
    """The name means one method: ONNX Runtime's Percentile calibration, on the same skewed values with an outlier,
    finds the same range to within two of its histogram's bins (its bins span [-max |x|, max |x|], ours [min, max])."""
    onnx, calibrate = pytest.importorskip("onnx"), pytest.importorskip("onnxruntime.quantization.calibrate")
    rng = np.random.default_rng(0)
    values = np.append(rng.gamma(2.0, 1.0, 49_999) - 1, 30).astype(np.float32).reshape(50, 1000)
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Add", ["x", "x"], ["y"])],
        "twice",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [None, 1000])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [None, 1000])],
    )
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), tmp_path / "twice.onnx")
    calibrator = calibrate.create_calibrator(
        tmp_path / "twice.onnx",
        augmented_model_path=str(tmp_path / "augmented.onnx"),
        calibrate_method=calibrate.CalibrationMethod.Percentile,
        extra_options={"percentile": 99.9, "symmetric": symmetric},
    )
    calibrator.collect_data(Rows(values))
    onnx_runtime_range = [float(end) for end in calibrator.compute_data()["x"].range_value]
    counts, edges = np.histogram(values, 2048)
    ours = percentile_range(counts.astype(float), float(edges[0]), float(edges[-1]), 99.9, symmetric)
    assert ours == pytest.approx(onnx_runtime_range, abs=2 * 2 * 30 / 2048)


class Rows:
    """ONNX Runtime's calibration data reader: one row of values per call."""

    def __init__(self, values: np.ndarray):
        self.rows = iter(values)

    def get_next(self):
        row = next(self.rows, None)
        return None if row is None else {"x": row[None]}
