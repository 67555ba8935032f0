"""What a deployed model expects, written beside each deployable file (`model.ts` -> `model.json`).

A deployable file holds only the graph and its weights. The contract says what goes in and what comes out: the
input shape, how pixels become inputs (`pipeline.data.model_inputs`: pixels / 255, then the normalization), the
class names of the outputs, and for eager int8 the quantized engine to set before `torch.jit.load`. `predict`
reads it, as evaluation reads dataset.json, so both feed a model the same way.
"""

from pathlib import Path

import torch

from pipeline.data.prepared import DataInfo, info_from
from pipeline.errors import PipelineError
from pipeline.safe_io import load_json, save_json

INPUTS = (
    "float32 (N, channels, height, width): pixels / 255 for 8-bit images, then (x - mean) / std per channel "
    "where mean and std are set"
)


def contract_path(deployable: Path) -> Path:
    return deployable.with_suffix(".json")


def write_contract(deployable: Path, data: DataInfo, engine: str | None) -> None:
    contract = {"inputs": INPUTS, "data": data.record(), "quantized_engine": engine, "outputs": "logits, one per class"}
    save_json(contract, contract_path(deployable))


def read_contract(deployable: Path) -> tuple[DataInfo, str | None]:
    """The data the model was made for, and the quantized engine it needs (None: none)."""
    path = contract_path(deployable)
    if not path.is_file():
        raise PipelineError(f"{path}: no input contract beside {deployable.name} (run the stage that makes it)")
    contract = load_json(path)
    if not isinstance(contract, dict) or not isinstance(contract.get("data"), dict):
        raise PipelineError(f"{path}: not an input contract of this pipeline")
    engine = contract.get("quantized_engine")
    engines = [name for name in torch.backends.quantized.supported_engines if name != "none"]
    if engine is not None and engine not in engines:
        raise PipelineError(f"{path}: quantized_engine {engine!r} is not one of this torch's ({', '.join(engines)})")
    return info_from(contract["data"], path), engine
