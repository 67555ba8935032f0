"""How a model is made int8, as types: one frozen recipe per method, made once from params.yaml.

A recipe holds what every backend shares (the method's own fields: per-channel weights, the observer, the layers
kept in FP32, ...) and, where the backend has options of its own, one typed `Options` object that the backend
owns (ONNX Runtime's format and op types, OpenVINO's preset, ...): one options type per backend and method, as
ONNX Runtime has a StaticQuantConfig and a DynamicQuantConfig. Options are checked where they are made, against
what params.yaml allows for their keys, so that a recipe read back from a file is held to the same values.

Transforms of the FP32 model that serve every backend (equalization, learned rounding) are shared fields too,
applied before any backend quantizes (`pipeline.backends.steps`); `recovery_steps()` names those taken.

A recipe is written into every int8 model's files (`settings()`: the method, the shared fields, then the
options' fields, all at one level, leaving out what is None) and read back typed
(`pipeline.backends.registry.recipe_from`), so that evaluation and the report show what made a model from the
model itself. `pipeline.backends.registry` makes recipes from params.yaml.
"""

from dataclasses import dataclass, field, fields
from typing import ClassVar

from pydantic import TypeAdapter, ValidationError

from pipeline.errors import PipelineError
from pipeline.params import Params, describe


def written(value):
    """A recipe value as a file records it: tuples as lists."""
    return list(value) if isinstance(value, tuple) else value


@dataclass(frozen=True)
class Options:
    """A backend's own options for one method: keys of its params.yaml section (`section`), each checked against
    the values that section allows, so that a bad value is refused in one line naming its key."""

    section: ClassVar[str]  # the params.yaml section the keys belong to

    def __post_init__(self):
        allowed = Params.model_fields[self.section].annotation.model_fields
        for name in self.names():
            value = getattr(self, name)
            try:
                TypeAdapter(allowed[name].annotation).validate_python(written(value), strict=True)
            except ValidationError as error:
                problem = error.errors()[0]
                raise PipelineError(describe({**problem, "loc": (self.section, name, *problem["loc"])})) from None

    @classmethod
    def names(cls) -> list[str]:
        return [option.name for option in fields(cls)]

    @classmethod
    def from_params(cls, params: Params) -> "Options":
        section = getattr(params, cls.section)
        return cls(**{name: tuple_of(getattr(section, name)) for name in cls.names()})

    def settings(self) -> dict:
        return {name: written(getattr(self, name)) for name in self.names()}


def tuple_of(value):
    return tuple(value) if isinstance(value, list) else value


@dataclass(frozen=True)
class Recipe:
    method: ClassVar[str]
    backend: str
    # PyTorch's quantized engine whose kernels its int8 modules are packed for (quantize.engine); None where no
    # torch.ao int8 module runs it (a runtime's own file)
    engine: str | None
    options: Options | None = field(default=None, kw_only=True)  # the backend's own, where it has any

    def settings(self) -> dict:
        """What the model's files record: the method, the shared fields, then the options' fields."""
        shared = {item.name: written(getattr(self, item.name)) for item in fields(self) if item.name != "options"}
        own = self.options.settings() if self.options is not None else {}
        return {"method": self.method, **{key: value for key, value in {**shared, **own}.items() if value is not None}}


@dataclass(frozen=True)
class DynamicRecipe(Recipe):
    method: ClassVar[str] = "dynamic"
    per_channel: bool


ADAROUND_FIELDS = ("rounding", "adaround_iterations")


@dataclass(frozen=True)
class StaticRecipe(Recipe):
    method: ClassVar[str] = "static"
    fused: bool | None  # None: the runtime's quantizer decides
    observer: str
    per_channel: bool
    symmetric_activations: bool | None  # None: the runtime's preset decides
    skip_layers: tuple[str, ...] = ()
    max_accuracy_drop: float | None = None  # points; skip_layers then holds what the search kept in FP32
    percentile: float | None = None  # the percentile observer's share of activations, in %
    bias_correction: str | None = None  # none, fast or full; None: the backend's default
    equalize: bool | None = None  # True: the FP32 model equalized first (None, not False, so files record it only then)
    smooth_quant: float | None = None  # SmoothQuant's alpha, where the FP32 model was smoothed first
    weight_bits: int | None = None  # 4: weights on 16 levels; None: the backend's 8 bits
    rounding: str | None = None  # adaround: weights rounded as learned on the calibration images; None: nearest
    adaround_iterations: int | None = None  # adaround: optimizer steps per layer

    def recovery_steps(self) -> list[str]:
        """The steps taken to win accuracy back, as the summary names them."""
        return list(self.step_removals())

    def step_removals(self) -> dict[str, dict]:
        """Each step taken, by the name the summary gives it, with the recipe fields that leave it out."""
        steps = {"cross-layer equalization": {"equalize": None}} if self.equalize else {}
        if self.smooth_quant:
            steps[f"SmoothQuant (alpha {self.smooth_quant})"] = {"smooth_quant": None}
        if self.rounding:
            steps[f"AdaRound ({self.adaround_iterations} steps a layer)"] = dict.fromkeys(ADAROUND_FIELDS)
        if self.bias_correction not in (None, "none"):
            # left out: none, not null, which is the backend's default (fast on openvino)
            steps[f"bias correction {self.bias_correction}"] = {"bias_correction": "none"}
        return steps

    def bits(self) -> int:
        """How many bits the weights are rounded to."""
        return self.weight_bits or 8


@dataclass(frozen=True)
class QatRecipe(Recipe):
    method: ClassVar[str] = "qat"
    fused: bool
    per_channel: bool
    freeze_after: int


RECIPES = {recipe.method: recipe for recipe in (DynamicRecipe, StaticRecipe, QatRecipe)}


def typed_recipe(settings: dict, options: type[Options] | None, source: object) -> Recipe:
    """The recipe a model file recorded (`Recipe.settings()`), its options' keys read as `options`; `source` names
    the file in the error."""
    kind = RECIPES.get(settings.get("method"))
    shared = {item.name for item in fields(kind) if item.name != "options"} if kind else set()
    own = set(options.names()) if options else set()
    if kind is None or not shared | own >= set(settings) - {"method"}:
        raise PipelineError(f"{source}: records a recipe this pipeline does not know ({settings})")
    values = {key: tuple_of(value) for key, value in settings.items() if key != "method"}
    # a field that may be None was left out of the file for being None
    unwritten = {item.name: None for item in fields(kind) if item.name not in values and "None" in str(item.type)}
    try:
        chosen = options(**{key: values.pop(key) for key in own & set(values)}) if options else None
        return kind(**{**unwritten, **values, "options": chosen})
    except TypeError as error:
        raise PipelineError(f"{source}: records an incomplete recipe ({error})") from None
    except PipelineError as error:
        raise PipelineError(f"{source}: {error}") from None
