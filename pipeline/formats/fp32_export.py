"""The FP32 model's folder every later stage reads, written by `export` from the file `train` wrote.

It holds that file as it is (`model.pt`, or `model.pt2` for a model you exported); for an eager model its
TorchScript twin `model.ts`; the same model as `model.onnx`, which the runtimes' quantizers start from; and the
deployable file's input contract. Exporting is a stage of its own so that a change to export code re-exports the
model rather than re-training it.
"""

import shutil
from pathlib import Path

from pipeline.data.prepared import DataInfo
from pipeline.formats.deployables import deployable_path
from pipeline.formats.files import ONNX_FILE, is_exported, model_file
from pipeline.formats.fp32 import read_fp32
from pipeline.formats.input_contract import write_contract
from pipeline.formats.onnx import export_onnx
from pipeline.formats.torchscript import save_deployable
from pipeline.models.architectures import example_input
from pipeline.safe_io import atomic_dir


def export_fp32(trained: Path, folder: Path, data: DataInfo) -> None:
    """The FP32 folder, whole or not at all, made from the trained (or adopted) model's folder `trained`."""
    path, fp32 = model_file(trained), read_fp32(trained)
    example = example_input(fp32.arch)
    with atomic_dir(folder) as temporary:
        shutil.copyfile(path, temporary / path.name)
        if not is_exported(path):
            save_deployable(fp32.module, example, deployable_path(temporary))
        export_onnx(fp32.module, example, {"kind": "fp32", "arch": fp32.arch}, temporary / ONNX_FILE)
        write_contract(deployable_path(temporary), data, engine=None)
