"""The backends by name (`quantize.backend`), the recipes params.yaml asks of them, and recipes read back from files.

Adding a backend: a module under `pipeline/backends/` with a `Backend` subclass (and, where it has options of its
own, an `Options` type per method, named in its `options`), and a line in `BACKENDS`. Each recipe reads only the
params.yaml keys of its own method, and the backend's own section where it has one.
"""

from dataclasses import replace

import typer

from pipeline.backends.interface import Backend, overruled
from pipeline.backends.recipes import DynamicRecipe, QatRecipe, Recipe, StaticRecipe, typed_recipe
from pipeline.errors import PipelineError
from pipeline.optional import require
from pipeline.params import Params


def eager() -> Backend:
    from pipeline.backends.eager.backend import Eager

    return Eager()


def pt2e() -> Backend:
    from pipeline.backends.pt2e import Pt2e  # torchao takes seconds to import: only where it is used

    return Pt2e()


def onnxruntime() -> Backend:
    from pipeline.backends.onnxruntime import OnnxRuntime

    return OnnxRuntime()


def openvino() -> Backend:
    from pipeline.backends.openvino import OpenVino

    return OpenVino()


BACKENDS = {"eager": eager, "pt2e": pt2e, "onnxruntime": onnxruntime, "openvino": openvino}


def backend_of(recipe: Recipe) -> Backend:
    """The backend that made a model with `recipe`, to ask what it did (its packages need not be installed)."""
    return BACKENDS[recipe.backend]()


def backend_named(name: str) -> Backend:
    """The backend of that name, its packages checked to be installed before any work."""
    backend = BACKENDS[name]()
    for package in backend.requires:
        require(package)
    return backend


def recipe_from(settings: dict, source: object) -> Recipe:
    """The typed recipe a model file recorded, with the options of the backend that made it; `source` names the file
    in the error."""
    name = settings.get("backend")
    if name not in BACKENDS:
        raise PipelineError(f"{source}: records a recipe of a backend this pipeline does not know ({settings})")
    return typed_recipe(settings, BACKENDS[name]().options.get(settings.get("method")), source)


def asked_dynamic(params: Params) -> DynamicRecipe:
    return DynamicRecipe(params.quantize.backend, params.engine, params.quantize.per_channel)


def conversion_recipe(params: Params, backend: str | None = None) -> StaticRecipe:
    """The static recipe without the layers kept in FP32 and the recovery steps (what sensitivity ranks layers
    with), for `backend` (default quantize.backend)."""
    static = params.static
    percentile = static.percentile  # read whatever the observer: dvc.yaml lists the key for when it is percentile
    return StaticRecipe(
        backend or params.quantize.backend,
        params.engine,
        static.fuse,
        static.observer,
        params.quantize.per_channel,
        static.symmetric_activations,
        percentile=percentile if static.observer == "percentile" else None,
        weight_bits=static.weight_bits if static.weight_bits != 8 else None,
    )


def transform_steps(params: Params) -> dict:
    """The recipe fields of the steps that transform the FP32 model before it is quantized (None: not taken)."""
    static = params.static
    adaround = static.rounding == "adaround"
    iterations = static.adaround_iterations  # read whatever the rounding: dvc.yaml lists it for when it is adaround
    return {
        "equalize": static.equalize or None,
        "smooth_quant": static.smooth_quant,
        "rounding": static.rounding if adaround else None,
        "adaround_iterations": iterations if adaround else None,
    }


def asked_static(params: Params) -> StaticRecipe:
    static = params.static
    return replace(
        conversion_recipe(params),
        skip_layers=tuple(static.skip_layers),
        max_accuracy_drop=static.max_accuracy_drop,
        bias_correction=static.bias_correction,
        **transform_steps(params),
    )


def asked_qat(params: Params) -> QatRecipe:
    return QatRecipe(params.quantize.backend, params.engine, True, params.quantize.per_channel, params.qat.freeze_after)


ASKED = {"dynamic": asked_dynamic, "static": asked_static, "qat": asked_qat}


def planned(params: Params, method: str) -> tuple[Backend, Recipe]:
    """quantize.backend, and the recipe of `method` as that backend carries it out, with the backend's own options
    from its params.yaml section; a line on stderr says each params key it overrules. A recipe it cannot carry out
    stops here, before any work, in one line naming the key."""
    backend = backend_named(params.quantize.backend)
    options = backend.options.get(method)
    asked = replace(ASKED[method](params), options=options.from_params(params) if options else None)
    carried = {"dynamic": backend.dynamic_recipe, "static": backend.static_recipe, "qat": backend.qat_recipe}[method]
    recipe = carried(asked)
    for line in overruled(asked, recipe, backend):
        typer.echo(line, err=True)
    if isinstance(recipe, StaticRecipe):
        check_steps(backend, recipe)
    return backend, recipe


def check_steps(backend: Backend, recipe: StaticRecipe) -> None:
    """Refuse, in one line naming the key, a recovery step or weight width the backend cannot carry out."""
    own = backend.projects_correction(recipe)
    if recipe.weight_bits or recipe.rounding or own:
        backend.weight_range(recipe)  # refuses where the backend cannot make or state its weights' integers
    if (recipe.rounding or own) and not recipe.per_channel:
        key = "static.rounding" if recipe.rounding else "static.bias_correction"
        raise PipelineError(
            f"{key}: {getattr(recipe, key.split('.')[1])} needs each output channel's int8 weights on that "
            "channel's own scale, which batch-norm folding leaves as they were only for per-channel weights; set "
            "quantize.per_channel: true"
        )
