"""What every backend does, and what it is given.

A backend is one way of making int8 from the FP32 model: PyTorch's eager modules, torchao's pt2e graphs, or a
runtime's own quantizer (ONNX Runtime, OpenVINO). Each is a module under `pipeline/backends/` holding one subclass
of `Backend`; `pipeline.backends.registry` finds it by `quantize.backend`. Stages look a backend up once and call
it; only the backends and the file formats (`pipeline/formats/`) know a backend's name or a file's suffix.
"""

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Protocol

from torch import nn

from pipeline.backends.recipes import DynamicRecipe, Options, QatRecipe, Recipe, StaticRecipe
from pipeline.data.prepared import AnyImages, DataInfo, in_batches
from pipeline.errors import PipelineError
from pipeline.formats.fp32 import Fp32Model

# The params.yaml key behind each recipe field a backend may overrule, for the line that says it did.
PARAMS_KEYS = {"per_channel": "quantize.per_channel", "fused": "static.fuse", "observer": "static.observer"}


@dataclass(frozen=True)
class Calibration:
    """The images static quantization observes, fed in `batches` batches (read from their file batch by batch)."""

    images: AnyImages
    batches: int


class OneByOne:
    """The calibration images one a call (a batch of one, made an input by `as_input`), as NNCF's statistics assume,
    read from their file a batch at a time each time they are gone through."""

    def __init__(self, images: AnyImages, as_input=lambda image: image):
        self.images, self.as_input = images, as_input

    def __len__(self) -> int:
        return len(self.images)

    def __iter__(self):
        for batch in in_batches(self.images, description="calibration"):
            yield from (self.as_input(image[None]) for image in batch)


class Conversion(Protocol):
    """A static recipe applied to one FP32 model with some layers kept in FP32: what sensitivity ranks layers
    with and what the `static.max_accuracy_drop` search tries (`pipeline.backends.mixed_precision`)."""

    model: nn.Module
    images: AnyImages

    def layers(self) -> list[str]: ...

    def with_float(self, kept: list[str]) -> nn.Module: ...

    def only_int8(self, name: str) -> nn.Module: ...

    def noise(self, names: list[str], images: AnyImages) -> dict[str, dict]:
        """Per layer, what the int8 model's weights and outputs lose against FP32 (SQNR), where it can tell."""


class Backend:
    """One way of making int8. The recipe methods check a recipe before any work: they return it as this backend
    will carry it out (for example with per-channel weights where it has no other kind), or refuse it in one
    line naming the params key. The conversions write a whole int8 variant's folder."""

    name: str
    requires: tuple[str, ...] = ()  # packages it imports; missing ones stop the stage before any work
    # per method, the type of the backend's own options its recipes carry (made from its params.yaml section)
    options: dict[str, type[Options]] = {}
    overrules: str = ""  # why it overrules a recipe field, for the line that says so
    uses_engine: bool = False  # whether its int8 runs on PyTorch's quantized engine (quantize.engine)
    bias_corrections: tuple[str, ...] = ()  # the values of static.bias_correction it carries out (null: its default)

    def dynamic_recipe(self, recipe: DynamicRecipe) -> DynamicRecipe:
        return recipe

    def static_recipe(self, recipe: StaticRecipe) -> StaticRecipe:
        return recipe

    def qat_recipe(self, recipe: QatRecipe) -> QatRecipe:
        return recipe

    def weight_range(self, recipe: StaticRecipe) -> tuple[int, int]:
        """The least and greatest integer the static recipe's weights take (`recipe.bits()` wide), each scale being
        max |w| over half the range's width: the grid learned rounding must land on. A backend that cannot make
        such weights, or does not say which integers it makes, refuses in one line."""
        raise PipelineError(
            f"static.weight_bits, static.rounding: the {self.name} backend makes 8-bit weights on a grid it does not "
            "state; use quantize.backend: eager, pt2e or onnxruntime"
        )

    def projects_correction(self, recipe: StaticRecipe) -> str | None:
        """The bias correction (fast or full) the project's own steps carry out before this backend quantizes
        (`pipeline.backends.bias_correction`): one the recipe asks for that the backend's quantizer does not."""
        correction = recipe.bias_correction
        return correction if correction in ("fast", "full") and correction not in self.bias_corrections else None

    def dynamic(self, fp32: Fp32Model, recipe: DynamicRecipe, folder: Path, data: DataInfo) -> None:
        raise NotImplementedError

    def static(
        self, fp32: Fp32Model, recipe: StaticRecipe, calibration: Calibration, folder: Path, data: DataInfo
    ) -> None:
        """The recipe's conversion, its `skip_layers` kept in FP32, saved as the backend saves int8 models."""
        self.save(self.static_module(fp32, recipe, calibration), fp32, recipe, folder, data)

    def static_module(self, fp32: Fp32Model, recipe: StaticRecipe, calibration: Calibration) -> nn.Module | None:
        """The int8 module `static` saves, in memory, for a stage that only scores it (`draws`); None where static
        int8 is a runtime's file, which only `static` writes."""
        return self.conversion(fp32.module, recipe, calibration).with_float(list(recipe.skip_layers))

    def save(self, int8: nn.Module, fp32: Fp32Model, recipe: Recipe, folder: Path, data: DataInfo, extra=None) -> None:
        """Write an int8 PyTorch model's variant folder, with any `extra` writers ({file name: Writer}; one of a
        file the backend writes writes that file instead)."""
        raise NotImplementedError

    def conversion(self, model: nn.Module, recipe: StaticRecipe, calibration: Calibration) -> Conversion:
        raise PipelineError(f"the {self.name} backend keeps no layers in FP32 by search")

    def quantized_op_types(self, static_folder: Path, recipe: StaticRecipe) -> list[str]:
        """The op types whose inputs the static int8 in `static_folder` (made with `recipe`) holds in int8, each of
        which `with_float_op_type` can keep in FP32: what `sensitivity` ranks besides layers. None here: PyTorch's
        backends keep layers in FP32, not op types."""
        return []

    def with_float_op_type(self, recipe: StaticRecipe, op_type: str) -> StaticRecipe:
        """The static recipe with `op_type` (one of `quantized_op_types`) kept in FP32 as far as the quantizer's
        own option for op types does it, all else as before."""
        raise NotImplementedError

    def prepare_qat(self, fp32: Fp32Model, recipe: QatRecipe) -> nn.Module:
        raise NotImplementedError

    def freeze_qat(self, prepared: nn.Module) -> None:
        raise NotImplementedError

    def converted_qat(self, prepared: nn.Module) -> nn.Module:
        """The fine-tuned model converted to int8."""
        raise NotImplementedError

    def save_qat(self, prepared: nn.Module, fp32: Fp32Model, recipe: QatRecipe, folder: Path, data: DataInfo) -> None:
        self.save(self.converted_qat(prepared), fp32, recipe, folder, data)

    def fusion_counterpart(self, fp32: nn.Module, recipe: StaticRecipe, calibration: Calibration) -> nn.Module | None:
        """The static recipe converted with layer fusion the other way, to time what fusion buys; None where the
        backend always fuses (Inductor, the runtimes)."""
        return None

    def label(self) -> str:
        """The backend and the version of what does its work, as the report names it."""
        return self.name

    def kernels(self) -> str:
        """What runs its int8 ops."""
        return "none (the runtime's own kernels)"


def overruled(asked: Recipe, carried: Recipe, backend: Backend) -> list[str]:
    """One line per params key whose value the backend carries out otherwise (None: leaves it to the runtime)."""
    return [
        f"{PARAMS_KEYS[field.name]}: {getattr(asked, field.name)} is not how the {backend.name} backend works; it uses "
        f"{getattr(carried, field.name)} ({backend.overrules})"
        for field in fields(asked)
        if field.name in PARAMS_KEYS and getattr(carried, field.name) not in (None, getattr(asked, field.name))
    ]


def torch_weight_range(bits: int) -> tuple[int, int]:
    """The integers of torch.ao's and torchao's symmetric weight observers for `bits` bits: the whole signed range."""
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
