"""params.yaml, loaded strictly: an unknown, missing or wrongly typed key is an error naming that key.

Each section is a pydantic model with the same field names as the YAML section. Strict mode means no silent
coercion: `epochs: "5"` is rejected rather than turned into 5. Numbers must be finite (`.nan` and `.inf` are
refused), and every count and size has an upper bound, so a typo gives one line naming the key instead of an
overflow or an allocation of terabytes later.
"""

from pathlib import Path
from typing import Annotated, Literal

import typer
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from ruamel.yaml import YAML, YAMLError

from pipeline.errors import PipelineError

PARAMS_FILE = Path("params.yaml")
# The --params option every command takes: `params_file: ParamsOption = PARAMS_FILE`.
ParamsOption = Annotated[Path, typer.Option("--params", help="params.yaml to read")]


# Upper bounds far above any run this lab makes on a CPU, low enough that no value within them exhausts memory.
Size = Annotated[int, Field(gt=0, le=1_000_000)]  # image, batch and step counts
Width = Annotated[int, Field(gt=0, le=16_384)]  # layer widths and channels: 16,384 squared float32 weights are 1 GB
Pixels = Annotated[int, Field(gt=0, le=4_096)]  # image height and width
BatchSize = Annotated[int, Field(gt=0, le=65_536)]
Epochs = Annotated[int, Field(gt=0, le=10_000)]
Threads = Annotated[int, Field(gt=0, le=1_024)]
PositiveFloat = Annotated[float, Field(gt=0)]  # finite: every section refuses .nan and .inf
Points = Annotated[float, Field(gt=0, le=100)]  # of accuracy, in percent
Seconds = Annotated[float, Field(gt=0, le=3_600)]


class Schema(BaseModel):
    """A file's keys checked strictly: no key unknown, none coerced, numbers finite (params.yaml's sections, and
    the other files read here that a person may edit)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class Section(Schema):
    """A section of params.yaml."""


class DataParams(Section):
    # IDX data sets are downloaded; `imagefolder` and `tensors` are your own, read from local_dir
    dataset: Literal["fashion-mnist", "mnist", "imagefolder", "tensors"]
    # IDX: a folder tried first for the four gz files; imagefolder: train/ and test/, a folder per class inside
    # each; tensors: train.pt and test.pt. A DVC dependency of `download`, so changing what it holds re-runs it.
    local_dir: str
    verify_md5: bool  # false only for your own IDX files, which have no known checksum
    channels: Literal[1, 3] | None  # convert every image to grey (1) or RGB (3); null keeps the source's
    image_size: list[Pixels] | None = Field(min_length=2, max_length=2)  # [height, width]; null keeps it
    # the shorter side, resized to first (aspect ratio kept), then the centre cropped to image_size, as torchvision's
    # weights expect (256, then 224); null: images are resized to image_size as they are
    resize: Pixels | None
    mean: list[float] | None  # per channel: the model takes (pixels / 255 - mean) / std; null: pixels / 255
    std: list[PositiveFloat] | None
    # test images drawn by seed from the source's test split, decoded and scored (null: all); each accuracy change's
    # interval says how precise the figures are with this many
    test_images: Size | None


class CalibrationParams(Section):
    size: Size  # training images drawn by seed for static calibration
    batches: Size  # fed in this many batches: the moving-average observer updates once per batch
    draws: int = Field(ge=0, le=1_000)  # `draws`: static int8 calibrated again on this many other subsets
    draw_test_images: Size | None  # test images each draw is scored on, drawn by seed (null: all)


class VitParams(Section):
    """train.arch: vit, torchvision's VisionTransformer sized for the data."""

    patch_size: Pixels  # side of each square patch, in pixels: it must divide the image's side
    depth: Annotated[int, Field(gt=0, le=64)]  # encoder blocks
    heads: Annotated[int, Field(gt=0, le=64)]  # attention heads: they must divide width
    width: Width  # the token width (hidden_dim)
    mlp_width: Width  # the width inside each block's MLP (mlp_dim)


class TrainParams(Section):
    # the built-in MLP, CNN and ViT, or torchvision's architectures by name, trained from scratch or from `weights`
    # or `exported`: your own FP32 model, a torch.export archive at models/own/model.pt2, adopted without training
    arch: Literal[
        "mlp",
        "cnn",
        "vit",
        "resnet18",
        "resnet50",
        "mobilenet_v2",
        "mobilenet_v3_small",
        "mobilenet_v3_large",
        "shufflenet_v2_x0_5",
        "efficientnet_b0",
        "convnext_tiny",
        "vit_b_16",
        "exported",
    ]
    # a state_dict file you have for `arch` (e.g. torchvision's weights, saved with torch.save), loaded with
    # weights_only before training; with epochs 0 the model is adopted as it is. Keep it in models/own/, which the
    # train stage depends on, so that DVC sees it change.
    weights: str | None
    hidden: list[Width] = Field(min_length=1, max_length=64)  # mlp: widths of the hidden layers
    channels: list[Width] = Field(min_length=1, max_length=64)  # cnn: widths of the Conv-BN-ReLU blocks
    vit: VitParams
    epochs: int = Field(ge=0, le=10_000)  # 0: no training (a model from `weights`, or random for timing alone)
    batch_size: BatchSize
    lr: PositiveFloat
    lr_schedule: Literal["cosine", "constant"]
    device: Literal["auto", "cpu", "cuda"]
    threads: Threads  # CPU threads for training and QAT: float sums depend on how work is split


class QuantizeParams(Section):
    # torch.ao eager modules, torchao on torch.export graphs, or a runtime's own quantizer on the ONNX file
    backend: Literal["eager", "pt2e", "onnxruntime", "openvino"]
    engine: Literal["auto", "x86", "fbgemm", "qnnpack", "onednn"]  # the eager backend's int8 kernels
    per_channel: bool  # weight scales per output channel, for every method (pt2e: always)


# The engine `auto` picks, from `make bench` on an AVX2 CPU: x86 ran the MLP's int8 Linear layers fastest (1.6x
# FP32 at batch 256, onednn 1.0x); onednn ran the CNN's int8 convolutions fastest (2.7x FP32, x86 1.9x), and is
# taken for torchvision's convolutional architectures too.
AUTO_ENGINE = {"mlp": "x86", "cnn": "onednn", "vit": "x86"}


class OnnxRuntimeParams(Section):
    """ONNX Runtime's quantizer (quantize.backend: onnxruntime)."""

    format: Literal["qdq", "qoperator"]  # QuantizeLinear/DequantizeLinear pairs, or QLinear* operators
    activation_type: Literal["int8", "uint8"]
    weight_type: Literal["int8", "uint8"]
    reduce_range: bool  # 7-bit weights: int8 kernels of CPUs without VNNI can saturate (per-channel weights above all)
    # static: the ONNX op types to quantize; None: every one ONNX Runtime can (as an empty list would be to it)
    op_types: list[str] | None = Field(min_length=1)


class OpenVinoParams(Section):
    """NNCF, OpenVINO's quantizer (quantize.backend: openvino)."""

    # performance: symmetric weights and activations; mixed: asymmetric activations (and, for dynamic, weights)
    preset: Literal["performance", "mixed"]
    # static: NNCF's scheme for the model's kind; transformer is its ModelType.TRANSFORMER
    model_type: Literal["default", "transformer"]
    # static: OpenVINO op types whose inputs NNCF leaves in FP32 (its IgnoredScope types); None: none
    ignored_types: list[str] | None
    # static: 7-bit weights for the first convolution(s) only, for all convolutions and matmuls, or none (NNCF's
    # OverflowFix): int8 kernels of CPUs without VNNI can saturate their 16-bit sums with 8-bit weights
    overflow_fix: Literal["first_layer_only", "enable", "disable"]


class StaticParams(Section):
    fuse: bool
    observer: Literal["minmax", "moving_average_minmax", "histogram", "percentile", "entropy", "mse"]
    percentile: Annotated[float, Field(gt=50, lt=100)]  # the percentile observer's share of activations, in %
    symmetric_activations: bool
    skip_layers: list[str]  # layers kept in FP32, by name (`python -m pipeline sensitivity` lists them)
    max_accuracy_drop: Points | None  # points; if set, keep the fewest more layers in FP32 to stay within it
    # each bias corrected for the mean error int8 adds to its layer's output, by the backend's own algorithm where it
    # has one: none, fast (from the calibration images' statistics) or full (layer by layer, each seeing the
    # corrected layers before it); null: the backend's default
    bias_correction: Literal["none", "fast", "full"] | None
    # cross-layer equalization of the FP32 model before any backend quantizes it (docs/recovery.md)
    equalize: bool
    # SmoothQuant's alpha: each LayerNorm's outlier channels moved into the Linear weights that take them
    smooth_quant: Annotated[float, Field(gt=0, lt=1)] | None
    # weights on 2**bits levels: 4 is the case where rounding to nearest fails and learned rounding wins back
    weight_bits: Literal[8, 4]
    # nearest, or learned against the calibration images (AdaRound), before the backend quantizes
    rounding: Literal["nearest", "adaround"]
    adaround_iterations: int = Field(ge=1, le=1_000_000)  # optimizer steps per layer
    sensitivity_test_images: Size | None  # test images `sensitivity` scores each layer on, drawn by seed (null: all)


class QatParams(Section):
    epochs: int = Field(ge=0, le=10_000)  # 0: no QAT, its variant left out
    batch_size: BatchSize
    lr: PositiveFloat
    lr_schedule: Literal["cosine", "constant"]
    freeze_after: Epochs  # epochs after which BN statistics and observers stop updating (>= epochs: never)


class EvaluateParams(Section):
    batch_sizes: list[BatchSize] = Field(min_length=1)
    threads: Threads
    warmup: int = Field(ge=0, le=1_000_000)
    repeats: Size
    max_seconds: Seconds  # per form and batch size: timing stops early past it (at least 10 calls)
    resamples: int = Field(ge=100, le=1_000_000)  # paired bootstrap resamples for each accuracy change's interval


class Params(Section):
    seed: int = Field(ge=0, lt=2**32)  # the range every seeded generator here (torch, NumPy) takes
    data: DataParams
    calibration: CalibrationParams
    train: TrainParams
    quantize: QuantizeParams
    onnxruntime: OnnxRuntimeParams
    openvino: OpenVinoParams
    static: StaticParams
    qat: QatParams
    evaluate: EvaluateParams

    @property
    def engine(self) -> str:
        """The quantized engine to use: quantize.engine, with `auto` resolved for train.arch."""
        return AUTO_ENGINE.get(self.train.arch, "onednn") if self.quantize.engine == "auto" else self.quantize.engine


def load_yaml(path: Path):
    """What a YAML file holds (plain values only: the safe loader builds no objects), or one line naming the file
    and what is wrong with it."""
    try:
        return YAML(typ="safe").load(path.read_text())
    except OSError as error:
        raise PipelineError(f"{path}: cannot read ({error.strerror})") from None
    except YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        where = f"line {mark.line + 1}, " if mark is not None else ""
        raise PipelineError(f"{path}: not valid YAML ({where}{problem})") from None


def load_params(path: Path = PARAMS_FILE) -> Params:
    """Read and validate params.yaml; raise PipelineError naming every bad key."""
    raw = load_yaml(path)
    if not isinstance(raw, dict):
        raise PipelineError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
    try:
        return Params(**raw)
    except ValidationError as error:
        # A misspelt key is both unknown and missing: name unknown keys first, all on one line.
        errors = sorted(error.errors(), key=lambda item: item["type"] != "extra_forbidden")
        raise PipelineError(f"{path}: " + "; ".join(describe(item) for item in errors)) from None


def describe(error: dict, *within: str) -> str:
    """One line for one pydantic error: the dotted key (inside the keys `within`), then what is wrong with it."""
    key = ".".join(str(part) for part in (*within, *error["loc"]))
    if error["type"] == "extra_forbidden":
        return f"unknown key '{key}'"
    if error["type"] == "missing":
        return f"missing key '{key}'"
    return f"{key}: {error['msg']} (got {error['input']!r})"
