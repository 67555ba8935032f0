"""The pt2e backend (`quantize.backend: pt2e`): int8 on torch.export graphs, run through torch.compile.

This is the successor of the eager torch.ao flow (`pipeline.backends.eager`). The FP32 model is exported to an
ATen graph, X86InductorQuantizer marks what to quantize, observers (or fake quantizers, for QAT) are inserted
into the graph, and conversion leaves quantize/dequantize pairs around FP32 ops. Inductor (torch.compile) then
fuses each pair with its op into an int8 kernel. Dynamic quantization uses torchao's `quantize_`, which swaps each
Linear weight for an int8 tensor subclass, or for graphs and attention X86InductorQuantizer's dynamic recipe (see
`quantize_dynamic`). Every result is saved as a torch.export archive: one graph with its int8 weights, loadable
with `torch.export.load` without this code.
"""

import copy
from collections import defaultdict
from dataclasses import replace
from importlib.metadata import version
from pathlib import Path

import torch
from torch import nn
from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_
from torchao.quantization.pt2e import (
    HistogramObserver,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    PerChannelMinMaxObserver,
    disable_observer,
    move_exported_model_to_eval,
)
from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e, prepare_qat_pt2e
from torchao.quantization.pt2e.quantizer import QuantizationConfig, QuantizationSpec
from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
    X86InductorQuantizer,
    _skip_annotate,
    get_default_x86_inductor_quantization_config,
)

from pipeline.backends.eager.modules import calibrate
from pipeline.backends.interface import Backend, Calibration, OneByOne, torch_weight_range
from pipeline.backends.observers import observer_options, range_searches
from pipeline.backends.onnxruntime_quantizer import OnnxRuntimeDynamic, dynamic_twin
from pipeline.backends.recipes import DynamicRecipe, QatRecipe, StaticRecipe
from pipeline.data.prepared import DataInfo
from pipeline.errors import PipelineError
from pipeline.formats.files import EXPORTED_FILE, ONNX_FILE
from pipeline.formats.fp32 import Fp32Model
from pipeline.formats.torch_export import allow_train_eval, write_archive
from pipeline.formats.variants import int8_settings, onnx_writer, save_variant
from pipeline.optional import require

ACTIVATION_OBSERVERS = {
    "minmax": MinMaxObserver,
    "moving_average_minmax": MovingAverageMinMaxObserver,
    "histogram": HistogramObserver,
    **range_searches(HistogramObserver),
}
BATCH = torch.export.Dim("batch")


def export(model: nn.Module, input_shape: list[int]) -> torch.export.ExportedProgram:
    """One graph for every batch size: without a named dimension, export specializes the batch to the example's.
    The example has two images because export treats a dimension of size 1 as fixed."""
    return torch.export.export(model, (torch.zeros(2, *input_shape),), dynamic_shapes=({0: BATCH},))


def for_quantizer(program: torch.export.ExportedProgram) -> torch.fx.GraphModule:
    """The exported graph as X86InductorQuantizer reads it, each call of a module the graph calls more than once
    given a source of its own.

    The quantizer finds what to fuse (conv + add + ReLU, say) by source partitions: the nodes each module's call
    became. torch.export, as called here (non-strict), records only the module's name, so every call of one
    module fell into one partition: torchvision's ResNet blocks call their one ReLU two or three times, and the
    quantizer refused that partition ("Input partition has more than one output node"), for a ResNet built here and
    for one a user exported alike. A call is the nodes of a module connected to each other through their inputs
    (a batch norm and the item it returns, say). The nodes of a module's second call get an innermost module
    `<module>:1` inside the module itself, and so on, so that a filter by the module's name still finds them; a graph
    whose modules are each called once is left as it was."""
    graph = program.module()
    nodes_of = defaultdict(list)
    for node in graph.graph.nodes:
        if node.op == "call_function" and node.meta.get("nn_module_stack"):
            nodes_of[list(node.meta["nn_module_stack"].values())[-1][0]].append(node)
    for nodes in nodes_of.values():
        for number, call in enumerate(calls(nodes)):
            for node in call if number else ():
                stack = node.meta["nn_module_stack"]
                key, (name, kind) = list(stack.items())[-1]
                stack[f"{key}:{number}"] = (f"{name}:{number}", kind)  # within the module, as filters by name see it
    return graph


def calls(nodes: list[torch.fx.Node]) -> list[list[torch.fx.Node]]:
    """The nodes of one module, in graph order, as its calls: groups connected through their inputs."""
    group = {node: node for node in nodes}

    def root(node: torch.fx.Node) -> torch.fx.Node:
        while group[node] is not node:
            node = group[node]
        return node

    for node in nodes:
        for source in node.all_input_nodes:
            if source in group:
                group[root(source)] = root(node)
    found = defaultdict(list)
    for node in nodes:
        found[root(node)].append(node)
    return list(found.values())


def static_config(
    observer: str, symmetric_activations: bool, percentile: float | None = None, weight_bits: int = 8
) -> QuantizationConfig:
    """The static recipe of params.yaml in the quantizer's terms, with the same activation observers as the eager
    backend. Weights are always per output channel: Inductor lowers only those to int8 kernels (per-tensor
    weights stay dequantize + FP32 op, measured 3.5x slower than per-channel on the CNN)."""
    activation = QuantizationSpec(
        dtype=torch.uint8,
        quant_min=0,
        # 7 bits, as the eager x86 engine uses: on CPUs without VNNI, Inductor's int8 kernels saturate 16-bit
        # intermediate sums of full 8-bit activations (measured here: compiled logits up to 1.6 off the graph's,
        # 0.3% of predictions changed; with 7 bits, none changed).
        quant_max=127,
        qscheme=torch.per_tensor_symmetric if symmetric_activations else torch.per_tensor_affine,
        is_dynamic=False,
        observer_or_fake_quant_ctr=ACTIVATION_OBSERVERS[observer].with_args(
            eps=2**-12, **observer_options(observer, percentile)
        ),
    )
    low, high = torch_weight_range(weight_bits)  # fewer bits: int8 storage and kernels, fewer of its integers
    weight = QuantizationSpec(
        dtype=torch.int8,
        quant_min=low,
        quant_max=high,
        qscheme=torch.per_channel_symmetric,
        ch_axis=0,
        is_dynamic=False,
        observer_or_fake_quant_ctr=PerChannelMinMaxObserver.with_args(eps=2**-12),
    )
    return QuantizationConfig(activation, activation, weight, None, is_qat=False)


def recipe_config(recipe: StaticRecipe) -> QuantizationConfig:
    return static_config(recipe.observer, recipe.symmetric_activations, recipe.percentile, recipe.bits())


LAYER_OPS = (torch.ops.aten.linear.default, torch.ops.aten.conv2d.default)


class EveryLinear(X86InductorQuantizer):
    """X86InductorQuantizer, and the linear ops it leaves in FP32. It finds linear ops by the module that called
    them (nn.Linear, or F.linear directly), which misses those nn.MultiheadAttention computes with its own
    weights: its input and output projections, 47% of the default ViT's weights. Each of those is annotated as
    the quantizer annotates any other linear op, unless a filter (static.skip_layers) keeps it in FP32."""

    def _annotate_linear(self, graph: torch.fx.GraphModule, config: QuantizationConfig, filter_fn=None) -> None:
        super()._annotate_linear(graph, config, filter_fn)
        for node in graph.graph.nodes:
            weight = node.args[1] if node.target == torch.ops.aten.linear.default else None
            if (
                weight is not None
                and weight.op in ("get_attr", "placeholder")
                and not _skip_annotate([node], filter_fn)
            ):
                self._annotate_linear_node_helper(node, True, config)


def quantizable_layers(model: nn.Module) -> list[str]:
    """Names of the modules whose ops become int8 kernels: every Linear and Conv2d, and each
    nn.MultiheadAttention (its projections, which it computes itself). An exported graph has no such modules, but
    each of its ops remembers the module it was traced from."""
    if isinstance(model, torch.fx.GraphModule):
        stacks = [node.meta.get("nn_module_stack") for node in model.graph.nodes if node.target in LAYER_OPS]
        return list(dict.fromkeys(list(stack.values())[-1][0] for stack in stacks if stack))
    attention = [name for name, module in model.named_modules() if isinstance(module, nn.MultiheadAttention)]
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.MultiheadAttention)
        or isinstance(module, (nn.Linear, nn.Conv2d))
        and not any(name.startswith(f"{owner}.") for owner in attention)
    ]


def quantizer(config: QuantizationConfig, model: nn.Module, skip_layers=()) -> X86InductorQuantizer:
    """X86InductorQuantizer with `config` everywhere but the `skip_layers`, which stay FP32."""
    known = quantizable_layers(model)
    unknown = [name for name in skip_layers if name not in known]
    if unknown:
        raise PipelineError(f"static.skip_layers: unknown layer(s) {unknown}; the quantizable layers are {known}")
    chosen = EveryLinear().set_global(config)
    for name in skip_layers:
        chosen.set_module_name_qconfig(name, None)
    return chosen


def drop_unused_weights(graph: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Delete the FP32 weights that conversion replaced with int8 constants, so they are not saved too."""
    used = {node.target for node in graph.graph.nodes if node.op == "get_attr"}
    for name, _ in [*graph.named_parameters(), *graph.named_buffers()]:
        if name not in used:
            owner, _, attribute = name.rpartition(".")
            delattr(graph.get_submodule(owner) if owner else graph, attribute)
    return graph


def quantize_static(
    model: nn.Module, config: QuantizationConfig, images: torch.Tensor, batches: int, skip_layers=()
) -> torch.fx.GraphModule:
    """Export, insert observers, calibrate, convert to quantize/dequantize pairs; `skip_layers` stay FP32."""
    return convert_with(quantizer(config, model, skip_layers), model, images, batches)


def quantize_only(
    model: nn.Module, name: str, config: QuantizationConfig, images: torch.Tensor, batches: int
) -> torch.fx.GraphModule:
    """The FP32 graph with the single layer `name` in int8."""
    return convert_with(EveryLinear().set_module_name_qconfig(name, config), model, images, batches)


def convert_with(
    chosen: X86InductorQuantizer, model: nn.Module, images: torch.Tensor, batches: int
) -> torch.fx.GraphModule:
    """Export, insert the observers `chosen` asks for, calibrate, convert."""
    prepared = prepare_pt2e(for_quantizer(export(copy.deepcopy(model).eval(), list(images.shape[1:]))), chosen)
    calibrate(prepared, images, batches)
    return drop_unused_weights(convert_pt2e(prepared))


# static.bias_correction as NNCF's quantize_pt2e takes it: fast_bias_correction True, False (full) or None (none)
NNCF_BIAS_CORRECTION = {"fast": True, "full": False, "none": None}


def quantize_by_nncf(
    model: nn.Module, config: QuantizationConfig, calibration: Calibration, correction: str, skip_layers=()
) -> torch.fx.GraphModule:
    """The same quantizer on the same exported graph, through NNCF's pt2e flow instead of torchao's prepare and
    convert: NNCF calibrates with its own range estimators (on one image at a time, as the openvino backend feeds
    it) and adds its bias correction (`correction`: fast, full or none)."""
    require("nncf")
    from nncf import Dataset
    from nncf.experimental.torch.fx import quantize_pt2e

    graph = for_quantizer(export(copy.deepcopy(model).eval(), list(calibration.images.shape[1:])))
    samples = OneByOne(calibration.images)
    int8 = quantize_pt2e(
        graph,
        quantizer(config, model, skip_layers),
        Dataset(samples),
        subset_size=len(samples),
        fast_bias_correction=NNCF_BIAS_CORRECTION[correction],
    )
    return drop_unused_weights(int8)


def prepare_qat(model: nn.Module, input_shape: list[int]) -> torch.fx.GraphModule:
    """The exported training graph with fake quantizers in place (BN folded into each conv), ready to fine-tune."""
    config = get_default_x86_inductor_quantization_config(is_qat=True, reduce_range=True)  # 7 bits: static_config
    graph = for_quantizer(export(copy.deepcopy(model).train(), input_shape))
    prepared = prepare_qat_pt2e(graph, EveryLinear().set_global(config))
    # An exported graph has no train/eval of its own; this makes fit()'s model.train() switch its BN ops.
    return allow_train_eval(prepared)


def freeze_qat(prepared: torch.fx.GraphModule) -> None:
    """Stop observers and fix BN to its running statistics for the remaining epochs."""
    prepared.apply(disable_observer)
    prepared.eval()
    # fit() calls model.train() every epoch, which would switch BN back to batch statistics.
    prepared.train = lambda mode=True: prepared


def convert_qat(prepared: torch.fx.GraphModule) -> torch.fx.GraphModule:
    return drop_unused_weights(convert_pt2e(move_exported_model_to_eval(prepared)))


def quantize_dynamic(model: nn.Module, input_shape: list[int]) -> nn.Module:
    """int8 weights (per output channel) for every Linear; activations quantized at run time.

    A module of Linear layers gets torchao's `quantize_`, which swaps each Linear's weight for an int8 tensor. An
    exported graph has no Linear modules left to swap, and nn.MultiheadAttention computes its projections with
    its own weights (47% of the default ViT's), which `quantize_` leaves in FP32: those are exported, and
    X86InductorQuantizer marks their linear ops for dynamic quantization."""
    if isinstance(model, torch.fx.GraphModule) or computes_own_projections(model):
        config = get_default_x86_inductor_quantization_config(is_dynamic=True, reduce_range=True)
        return convert_with(EveryLinear().set_global(config), model, torch.zeros(2, *input_shape), 1)
    model = copy.deepcopy(model).eval()
    quantize_(model, Int8DynamicActivationInt8WeightConfig())
    return model


def computes_own_projections(model: nn.Module) -> bool:
    return any(isinstance(module, nn.MultiheadAttention) for module in model.modules())


class Pt2eConversion:
    """A static recipe through torchao on the exported graph. Its int8 graphs are scored as they are,
    quantize/dequantize pairs computed in FP32: the int8 arithmetic of the compiled kernels, without the compile
    that each of dozens of variants would otherwise pay."""

    def __init__(self, model: nn.Module, recipe: StaticRecipe, calibration: Calibration):
        self.model, self.images, self.batches = model, calibration.images, calibration.batches
        self.config = recipe_config(recipe)

    def layers(self) -> list[str]:
        return quantizable_layers(self.model)

    def with_float(self, kept: list[str]) -> nn.Module:
        return quantize_static(self.model, self.config, self.images, self.batches, kept)

    def only_int8(self, name: str) -> nn.Module:
        return quantize_only(self.model, name, self.config, self.images, self.batches)

    def noise(self, names: list[str], images: torch.Tensor) -> dict[str, dict]:
        """None measured: a graph keeps no modules to hook, so its rows have the accuracy drops alone."""
        return {}


class Pt2e(Backend):
    name = "pt2e"
    requires = ("torchao",)
    options = {"dynamic": OnnxRuntimeDynamic}  # its dynamic variant's ONNX file is ONNX Runtime's dynamic int8
    bias_corrections = tuple(NNCF_BIAS_CORRECTION)  # through NNCF's quantize_pt2e; null keeps torchao's own flow
    overrules = "Inductor fuses every op with its quantize/dequantize pair, and lowers only per-channel weights"

    def label(self) -> str:
        return f"pt2e (torchao {version('torchao')})"

    def kernels(self) -> str:
        return "none (Inductor's oneDNN)"

    def dynamic_recipe(self, recipe: DynamicRecipe) -> DynamicRecipe:
        return replace(recipe, per_channel=True)  # torchao's int8 weights have a scale per row

    def static_recipe(self, recipe: StaticRecipe) -> StaticRecipe:
        if recipe.weight_bits and recipe.bias_correction is not None:
            # measured: mobilenet_v3_small's static int8 with 4-bit weights through NNCF's flow scored 87.46%, with
            # the same interval as its 8-bit one (torchao's own flow: 86.14% at 4 bits)
            raise PipelineError(
                "static.bias_correction: NNCF's pt2e flow makes 8-bit weights whatever the quantizer asks, so "
                "static.weight_bits: 4 would be lost; set static.bias_correction: null on pt2e, or use "
                "quantize.backend: onnxruntime (the project's own correction)"
            )
        return replace(recipe, fused=True, per_channel=True)

    def qat_recipe(self, recipe: QatRecipe) -> QatRecipe:
        return replace(recipe, per_channel=True)

    def dynamic(self, fp32: Fp32Model, recipe: DynamicRecipe, folder: Path, data: DataInfo) -> None:
        int8 = quantize_dynamic(fp32.module, fp32.arch["input"])
        self.save(int8, fp32, recipe, folder, data, {ONNX_FILE: dynamic_twin(fp32.onnx_file, recipe)})

    def conversion(self, model: nn.Module, recipe: StaticRecipe, calibration: Calibration) -> Pt2eConversion:
        return Pt2eConversion(model, recipe, calibration)

    def static_module(self, fp32: Fp32Model, recipe: StaticRecipe, calibration: Calibration) -> nn.Module:
        if recipe.bias_correction is None:
            return super().static_module(fp32, recipe, calibration)
        return quantize_by_nncf(
            fp32.module, recipe_config(recipe), calibration, recipe.bias_correction, recipe.skip_layers
        )

    def weight_range(self, recipe: StaticRecipe) -> tuple[int, int]:
        return torch_weight_range(recipe.bits())

    def prepare_qat(self, fp32: Fp32Model, recipe: QatRecipe) -> nn.Module:
        return prepare_qat(fp32.module, fp32.arch["input"])

    def freeze_qat(self, prepared: nn.Module) -> None:
        freeze_qat(prepared)

    def converted_qat(self, prepared: nn.Module) -> nn.Module:
        return convert_qat(prepared)

    def save(self, int8: nn.Module, fp32: Fp32Model, recipe, folder: Path, data: DataInfo, extra=None) -> None:
        """The torch.export archive of the int8 graph, its ONNX file, and any `extra` writers."""
        arch = fp32.arch
        writers = {
            EXPORTED_FILE: lambda settings, path: write_archive(export(int8, arch["input"]), settings, path),
            ONNX_FILE: onnx_writer(int8, arch),
            **(extra or {}),
        }
        save_variant(folder, data, int8_settings(arch, recipe), writers, EXPORTED_FILE)
