"""ONNX Runtime's own SmoothQuant on a lab workspace's FP32 ONNX file, beside the lab's.

The lab's onnxruntime backend makes static int8 of the workspace's FP32 ONNX file with the workspace's recipe
(its own `quantize_static` call, calibration images and settings), once as it is and once with ONNX Runtime's
`extra_options={"SmoothQuant": True, "SmoothQuantAlpha": alpha}`, which runs neural-compressor's ORTSmoothQuant
(3.7.1 or older) before calibrating. Two things are changed around ONNX Runtime's call, not in it: the calibration
reader is a list (ONNX Runtime deep-copies the reader and iterates it, which the lab's generator-backed reader
cannot be), and with `--matmul-only` ORTSmoothQuant's op types are Gemm and MatMul (it smooths Conv too by
default). Each file is scored by ONNX Runtime on the workspace's test images against the FP32 ONNX file.

neural-compressor 3.7.1 and what its SmoothQuant imports, beside the project's virtualenv:
    .venv/bin/pip install --target <inc site> --no-deps neural-compressor==3.7.1 schema py-cpuinfo prettytable \
        'setuptools<81' opencv-python-headless deprecated pycocotools
A workspace: the project's checkout with `dvc repro evaluate` run on the settings to compare (onnxruntime), then
    PYTHONPATH=<project>:<inc site> .venv/bin/python peers/ort_smoothquant.py <workspace> --alpha 0.5 [--matmul-only]
"""

import argparse
import tempfile
import time
from functools import partialmethod
from pathlib import Path

import onnxruntime.quantization as quantization
from neural_compressor.adaptor.ox_utils.smooth_quant import ORTSmoothQuant

from peers.scored import change_line, test_split
from pipeline.backends.interface import Calibration
from pipeline.backends.onnxruntime_quantizer import quantize_static
from pipeline.backends.registry import planned
from pipeline.data.prepared import load_split, outputs_in_batches
from pipeline.formats.fp32 import read_fp32
from pipeline.params import load_params
from pipeline.runtimes import onnxruntime_runnable

ORT_QUANTIZE_STATIC = quantization.quantize_static


class ListReader:
    """A calibration reader ONNX Runtime can deep-copy and iterate: the batches, in a list."""

    def __init__(self, reader):
        self.batches = list(iter(reader.get_next, None))
        self.unread = iter(self.batches)

    def __iter__(self):
        return iter(self.batches)

    def get_next(self):
        return next(self.unread, None)


def with_smooth_quant(alpha: float):
    def call(model, output, reader, **options):
        extra = {**options.pop("extra_options"), "SmoothQuant": True, "SmoothQuantAlpha": alpha}
        # neural-compressor reads a path given as str only
        return ORT_QUANTIZE_STATIC(str(model), output, ListReader(reader), extra_options=extra, **options)

    return call


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("workspace", type=Path)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--matmul-only", action="store_true")
    parser.add_argument("--test-images", type=int, default=0, help="0: all")
    args = parser.parse_args()
    if args.matmul_only:
        ORTSmoothQuant.transform = partialmethod(ORTSmoothQuant.transform, op_types=["Gemm", "MatMul"])
    params = load_params(args.workspace / "params.yaml")
    _, recipe = planned(params, "static")
    fp32 = read_fp32(args.workspace / "models/fp32")
    images, _ = load_split(args.workspace / "data/prepared", "calib")
    test, labels = test_split(args.workspace, args.test_images)

    def correct(path: Path):
        return outputs_in_batches(onnxruntime_runnable(path, 2), test).argmax(1) == labels

    reference = correct(fp32.onnx_file)
    print(f"fp32 {reference.float().mean().item():.4f}", flush=True)
    with tempfile.TemporaryDirectory() as workdir:
        smoothed = f"smoothquant {args.alpha}{' (Gemm, MatMul)' if args.matmul_only else ''}"
        flows = [("naive", ORT_QUANTIZE_STATIC), (smoothed, with_smooth_quant(args.alpha))]
        for name, call in flows:
            quantization.quantize_static = call
            path = Path(workdir) / f"{name.split()[0]}.onnx"
            started = time.perf_counter()
            quantize_static(fp32.onnx_file, recipe, Calibration(images, params.calibration.batches), {}, path)
            seconds = time.perf_counter() - started
            print(change_line(f"onnxruntime {name}", correct(path), reference, seconds), flush=True)


if __name__ == "__main__":
    main()
