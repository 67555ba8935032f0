"""How a model is made int8, as types: one frozen recipe per method, made once from params.yaml.

A recipe is written into every int8 model's files (`settings()`) and read back typed (`recipe_from`), so that
evaluation and the report show what made a model from the model itself. Fields a backend does not use are None
and are not written. `pipeline.backends.registry` makes them from params.yaml.
"""

from dataclasses import asdict, dataclass, fields
from typing import ClassVar

from pipeline.errors import PipelineError


@dataclass(frozen=True)
class Recipe:
    method: ClassVar[str]
    backend: str
    engine: str  # PyTorch's quantized engine, or the runtime whose kernels run the int8 model

    def settings(self) -> dict:
        """What the model's files record: the method, then every field the backend uses, lists as lists."""
        used = {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}
        return {"method": self.method, **{key: value for key, value in used.items() if value is not None}}


@dataclass(frozen=True)
class DynamicRecipe(Recipe):
    method: ClassVar[str] = "dynamic"
    per_channel: bool
    # ONNX Runtime's dynamic quantizer, which writes the ONNX file of every dynamic variant but OpenVINO's
    weight_type: str | None = None
    reduce_range: bool | None = None
    preset: str | None = None  # openvino: NNCF's weight compression, symmetric (performance) or not (mixed)


@dataclass(frozen=True)
class StaticRecipe(Recipe):
    method: ClassVar[str] = "static"
    fused: bool | None  # None: the runtime's quantizer decides
    observer: str
    per_channel: bool
    symmetric_activations: bool | None  # None: the runtime's preset decides
    skip_layers: tuple[str, ...] = ()
    max_accuracy_drop: float | None = None  # points; skip_layers then holds what the search kept in FP32
    preset: str | None = None  # openvino
    model_type: str | None = None  # openvino: default | transformer (NNCF's ModelType.TRANSFORMER)
    ignored_types: tuple[str, ...] | None = None  # openvino: op types whose inputs NNCF leaves in FP32
    overflow_fix: str | None = None  # openvino: which weights take 7 bits (NNCF's OverflowFix)
    format: str | None = None  # onnxruntime: qdq | qoperator
    activation_type: str | None = None  # onnxruntime: int8 | uint8
    weight_type: str | None = None  # onnxruntime
    reduce_range: bool | None = None  # onnxruntime
    op_types: tuple[str, ...] | None = None  # onnxruntime: the ONNX op types quantized; None: all it can
    percentile: float | None = None  # the percentile observer's share of activations, in %


@dataclass(frozen=True)
class QatRecipe(Recipe):
    method: ClassVar[str] = "qat"
    fused: bool
    per_channel: bool
    freeze_after: int


RECIPES = {recipe.method: recipe for recipe in (DynamicRecipe, StaticRecipe, QatRecipe)}


def recipe_from(settings: dict, source: object) -> Recipe:
    """The typed recipe a model file recorded; `source` names the file in the error."""
    kind = RECIPES.get(settings.get("method"))
    names = {field.name for field in fields(kind)} if kind else set()
    if kind is None or not names >= set(settings) - {"method"}:
        raise PipelineError(f"{source}: records a recipe this pipeline does not know ({settings})")
    values = {key: tuple(value) if isinstance(value, list) else value for key, value in settings.items()}
    # a field that may be None was left out of the file for being None
    unwritten = {field.name: None for field in fields(kind) if field.name not in values and "None" in str(field.type)}
    try:
        return kind(**unwritten, **{key: value for key, value in values.items() if key != "method"})
    except TypeError as error:
        raise PipelineError(f"{source}: records an incomplete recipe ({error})") from None
