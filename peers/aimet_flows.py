"""AIMET's own flows on a lab workspace's FP32 model, beside the lab's static int8 of it.

AIMET (aimet-torch 2.42) simulates quantization (QuantSim): weights at `--bits` per output channel, symmetric
(its default_config_per_channel.json), activations at 8 bits, ranges by min/max (post_training_tf), batch norms
folded; calibrated on the workspace's calibration images and scored on its test images against FP32, with the
lab's paired bootstrap. Methods: nearest (rounding to nearest), equalize (`equalize_model`: batch-norm folding,
cross-layer scaling, high-bias absorption), adaround (`Adaround.apply_adaround`, then QuantSim with its encodings
frozen).

AIMET and what it imports, beside the project's virtualenv (its declared dependencies would replace torch):
    .venv/bin/pip install --target <aimet site> --no-deps aimet-torch==2.42.0 'bokeh<=3.6.3' cvxpy holoviews \
        hvplot osqp pybind11 tensorboard tornado xyzservices panel param pyviz_comms colorcet pandas
A workspace: the project's checkout with `dvc repro evaluate` run on the settings to compare, then
    PYTHONPATH=<project>:<aimet site> .venv/bin/python peers/aimet_flows.py <workspace> --bits 4 --iterations 1000
"""

import argparse
import copy
import tempfile
import time
from pathlib import Path

import aimet_torch
import torch
from aimet_common.defs import QuantScheme
from aimet_torch.adaround.adaround_weight import Adaround, AdaroundParameters
from aimet_torch.batch_norm_fold import fold_all_batch_norms
from aimet_torch.cross_layer_equalization import equalize_model
from aimet_torch.quantsim import QuantizationSimModel
from torch import nn
from torch.ao.quantization import DeQuantStub, QuantStub

from peers.scored import change_line, test_split
from pipeline.data.prepared import load_split
from pipeline.formats.fp32 import read_fp32
from pipeline.measure.accuracy import logits

CONFIG = str(Path(aimet_torch.__file__).parent / "common/quantsim_config/default_config_per_channel.json")


def without_stubs(model: nn.Module) -> nn.Module:
    """The model with its QuantStub/DeQuantStub (identities in FP32) made nn.Identity, which AIMET leaves alone."""
    model = copy.deepcopy(model)
    for name, module in list(model.named_modules()):
        if isinstance(module, QuantStub | DeQuantStub):
            parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
            setattr(parent, name.rpartition(".")[2], nn.Identity())
    return model


def simulated(model: nn.Module, method: str, batches: list, bits: int, iterations: int, workdir: Path):
    dummy = batches[0][:1]
    if method == "equalize":
        equalize_model(model, dummy_input=dummy)
    else:
        fold_all_batch_norms(model, input_shapes=None, dummy_input=dummy)
    encodings = None
    if method == "adaround":
        params = AdaroundParameters(data_loader=batches, num_batches=len(batches), default_num_iterations=iterations)
        model = Adaround.apply_adaround(
            model,
            dummy,
            params,
            str(workdir),
            "adaround",
            default_param_bw=bits,
            default_quant_scheme=QuantScheme.post_training_tf,
            default_config_file=CONFIG,
        )
        encodings = workdir / "adaround.encodings"
    sim = QuantizationSimModel(
        model,
        dummy,
        quant_scheme=QuantScheme.post_training_tf,
        default_output_bw=8,
        default_param_bw=bits,
        config_file=CONFIG,
    )
    if encodings is not None:
        sim.set_and_freeze_param_encodings(encoding_path=str(encodings))

    def calibrate(simulated_model, _):
        with torch.no_grad():
            for batch in batches:
                simulated_model(batch)

    sim.compute_encodings(calibrate, None)
    return sim.model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("workspace", type=Path)
    parser.add_argument("--bits", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--methods", default="nearest,equalize,adaround")
    parser.add_argument("--test-images", type=int, default=0, help="0: all")
    args = parser.parse_args()
    torch.manual_seed(0)
    fp32 = read_fp32(args.workspace / "models/fp32")
    calibration, _ = load_split(args.workspace / "data/prepared", "calib")
    test, labels = test_split(args.workspace, args.test_images)
    batches = list(calibration[:].split(32))
    reference = logits(fp32.module, test).argmax(1) == labels
    print(f"fp32 {reference.float().mean().item():.4f}", flush=True)
    for method in args.methods.split(","):
        with tempfile.TemporaryDirectory() as workdir:
            started = time.perf_counter()
            model = simulated(without_stubs(fp32.module), method, batches, args.bits, args.iterations, Path(workdir))
            seconds = time.perf_counter() - started
        correct = logits(model, test).argmax(1) == labels
        print(change_line(f"aimet W{args.bits}A8 {method}", correct, reference, seconds), flush=True)


if __name__ == "__main__":
    main()
