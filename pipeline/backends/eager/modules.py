"""Eager-mode int8 transforms (torch.ao.quantization): dynamic, static with calibration and fusion, and QAT.

Pure functions: a model in, a new int8 model out (`pipeline.backends.eager.backend` writes the files). The recipe
a model file records says how it was quantized, so the same int8 structure can be rebuilt to load its weights.
"""

import copy
import warnings

import torch
from torch import nn
from torch.ao import quantization as tq

from pipeline.backends.interface import torch_weight_range
from pipeline.backends.observers import observer_options, range_searches
from pipeline.backends.recipes import DynamicRecipe, Recipe, StaticRecipe
from pipeline.data.prepared import AnyImages, in_parts
from pipeline.errors import PipelineError
from pipeline.models.architectures import build

ACTIVATION_OBSERVERS = {
    "minmax": tq.MinMaxObserver,
    "moving_average_minmax": tq.MovingAverageMinMaxObserver,
    "histogram": tq.HistogramObserver,
    **range_searches(tq.HistogramObserver),
}


def use_engine(engine: str) -> None:
    """Select the kernels int8 modules pack their weights for; it must be set before quantizing or loading."""
    torch.backends.quantized.engine = engine


def quantize_dynamic(model: nn.Module, per_channel: bool = False) -> nn.Module:
    """int8 weights for every Linear; activations are quantized on the fly per batch."""
    qconfig = tq.per_channel_dynamic_qconfig if per_channel else tq.default_dynamic_qconfig
    return tq.quantize_dynamic(copy.deepcopy(model).eval(), {nn.Linear: qconfig}, dtype=torch.qint8)


def activation_quant_max(engine: str) -> int:
    """The largest activation integer for the engine. x86/fbgemm kernels can overflow their 16-bit intermediate sums
    on CPUs without VNNI; 7-bit activations (quant_max 127) avoid it, as PyTorch's own default qconfig for these
    engines does."""
    return 127 if engine in ("x86", "fbgemm") else 255


def static_qconfig(
    observer: str,
    per_channel: bool,
    engine: str,
    symmetric_activations: bool = False,
    percentile: float | None = None,
    weight_bits: int = 8,
) -> tq.QConfig:
    activation = ACTIVATION_OBSERVERS[observer].with_args(
        dtype=torch.quint8,
        qscheme=torch.per_tensor_symmetric if symmetric_activations else torch.per_tensor_affine,
        quant_min=0,
        quant_max=activation_quant_max(engine),
        **observer_options(observer, percentile),
    )
    # fewer bits: the same int8 storage and kernels, the weights on fewer of its integers
    narrower = dict(zip(("quant_min", "quant_max"), torch_weight_range(weight_bits))) if weight_bits != 8 else {}
    if per_channel:
        weight = tq.PerChannelMinMaxObserver.with_args(
            dtype=torch.qint8, qscheme=torch.per_channel_symmetric, **narrower
        )
    else:
        weight = tq.MinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric, **narrower)
    return tq.QConfig(activation=activation, weight=weight)


def recipe_qconfig(recipe: StaticRecipe) -> tq.QConfig:
    """The qconfig of a static recipe, for its engine."""
    return static_qconfig(
        recipe.observer,
        recipe.per_channel,
        recipe.engine,
        recipe.symmetric_activations,
        recipe.percentile,
        recipe.bits(),
    )


def has_eager_twin(model: nn.Module) -> bool:
    """Eager static quantization and QAT need a model made for them: QuantStub and DeQuantStub at its edges, and a
    way to fuse (the built-in models' `fusion_groups`, torchvision's quantizable twins' `fuse_model`)."""
    return hasattr(model, "fusion_groups") or hasattr(model, "fuse_model")


def require_eager(model: nn.Module) -> None:
    if not has_eager_twin(model):
        raise PipelineError(
            f"the eager backend cannot quantize {type(model).__name__} statically or with QAT (torch.ao's eager "
            "modules need a quantizable twin); use quantize.backend: pt2e, onnxruntime or openvino"
        )


def require_modules(model: nn.Module) -> None:
    """torch.ao's dynamic int8 swaps nn.Linear modules: an exported graph has none, and would be saved as it is."""
    if isinstance(model, torch.fx.GraphModule):
        raise PipelineError(
            "the eager backend cannot quantize an exported graph (torch.ao's int8 swaps nn.Linear modules, and a "
            "graph has none); use quantize.backend: pt2e, onnxruntime or openvino"
        )


def fuse(model: nn.Module) -> nn.Module:
    """Fold Conv+BN(+ReLU) and Linear+ReLU into single modules, so int8 runs one kernel per group."""
    require_eager(model)
    if hasattr(model, "fuse_model"):  # torchvision's quantizable twins know their own groups
        model.fuse_model(is_qat=model.training)
        return model
    fuse_groups = tq.fuse_modules_qat if model.training else tq.fuse_modules
    return fuse_groups(model, model.fusion_groups(), inplace=True)


def float_twin(model: nn.Module, fused: bool) -> nn.Module:
    """An eval-mode copy of the FP32 model, fused if asked: what static quantization starts from."""
    require_eager(model)
    model = copy.deepcopy(model).eval()
    return fuse(model) if fused else model


def float_weight(module: nn.Module) -> torch.Tensor:
    """The FP32 weight of a plain or fused module (after fusion, BN is already folded into it)."""
    return (module.weight if isinstance(getattr(module, "weight", None), torch.Tensor) else module[0].weight).detach()


@torch.no_grad()
def calibrate(model: nn.Module, images: AnyImages, batches: int) -> None:
    """Run the calibration images through a prepared model, in `batches` batches, so observers record ranges."""
    for batch in in_parts(images, batches):
        model(batch)


QUANTIZABLE = (nn.Linear, nn.Conv2d, torch.ao.nn.intrinsic._FusedModule)


def quantizable_layers(model: nn.Module) -> list[str]:
    """Names of the layers static quantization turns into int8 kernels: Linear, Conv, and fused groups of them."""
    names = []
    for name, module in model.named_modules():
        if isinstance(module, QUANTIZABLE) and not any(name.startswith(f"{kept}.") for kept in names):
            names.append(name)
    return names


def replace_layer(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def keep_float(model: nn.Module, names: list[str]) -> None:
    """Leave the named layers in FP32 inside an int8 model: dequantize before each, quantize again after it."""
    allowed = quantizable_layers(model)
    unknown = [name for name in names if name not in allowed]
    if unknown:
        raise PipelineError(f"static.skip_layers: unknown layer(s) {unknown}; the quantizable layers are {allowed}")
    for name in names:
        layer = model.get_submodule(name)
        layer.qconfig = None  # no observers, no conversion: this layer computes in float
        replace_layer(model, name, nn.Sequential(tq.DeQuantStub(), layer, tq.QuantStub()))


def quantize_static(
    model: nn.Module, qconfig: tq.QConfig, images: torch.Tensor, batches: int, fused: bool, skip_layers=()
) -> nn.Module:
    """Fuse, observe the calibration images, convert; the `skip_layers` stay FP32."""
    model = float_twin(model, fused)
    model.qconfig = qconfig
    keep_float(model, list(skip_layers))
    tq.prepare(model, inplace=True)
    calibrate(model, images, batches)
    return tq.convert(model)


def quantize_only(model: nn.Module, name: str, qconfig: tq.QConfig, images: torch.Tensor, batches: int, fused: bool):
    """The FP32 model with a single int8 layer, quantized and dequantized around it."""
    model = float_twin(model, fused)
    model.qconfig = None
    wrapper = tq.QuantWrapper(model.get_submodule(name))
    wrapper.qconfig = qconfig
    replace_layer(model, name, wrapper)
    tq.prepare(model, inplace=True)
    calibrate(model, images, batches)
    return tq.convert(model)


def prepare_qat(model: nn.Module, engine: str, per_channel: bool) -> nn.Module:
    """A fused copy with fake quantization in place, ready to fine-tune: PyTorch's QAT recipe for the engine,
    with the weight granularity asked for (its default for x86 is per-channel)."""
    model = fuse(copy.deepcopy(model).train())
    weight = tq.default_fused_per_channel_wt_fake_quant if per_channel else tq.default_fused_wt_fake_quant
    model.qconfig = tq.get_default_qat_qconfig(engine)._replace(weight=weight)
    return tq.prepare_qat(model)


def freeze_qat(model: nn.Module) -> None:
    """Stop observers and BN statistics from updating: later epochs fine-tune against fixed ranges."""
    model.apply(tq.disable_observer)
    model.apply(torch.ao.nn.intrinsic.qat.freeze_bn_stats)


def convert_qat(model: nn.Module) -> nn.Module:
    return tq.convert(copy.deepcopy(model).eval())


def empty_int8(arch: dict, recipe: Recipe) -> nn.Module:
    """The int8 module structure `recipe` produces, with placeholder weights for `load_state_dict` to replace."""
    use_engine(recipe.engine)
    model = build(arch).eval()
    if isinstance(recipe, DynamicRecipe):
        return quantize_dynamic(model)
    if recipe.fused:
        fuse(model)
    model.qconfig = tq.default_qconfig  # any qconfig gives the same modules; scales come from the state dict
    keep_float(model, list(getattr(recipe, "skip_layers", ())))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # observers that saw no data warn; their placeholder values are replaced
        tq.prepare(model, inplace=True)
        return tq.convert(model)
