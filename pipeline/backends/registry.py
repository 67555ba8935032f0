"""The backends by name (`quantize.backend`), and the recipes params.yaml asks of them.

Adding a backend: a module under `pipeline/backends/` with a `Backend` subclass, and a line in `BACKENDS`. Each
recipe reads only the params.yaml keys of its own method, and the backend's own section where it has one.
"""

from dataclasses import fields, replace

import typer

from pipeline.backends.interface import Backend, overruled, with_options
from pipeline.backends.recipes import DynamicRecipe, QatRecipe, Recipe, StaticRecipe
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


def asked_dynamic(params: Params) -> DynamicRecipe:
    onnxruntime = params.onnxruntime
    quantize = params.quantize
    return DynamicRecipe(
        quantize.backend, params.engine, quantize.per_channel, onnxruntime.weight_type, onnxruntime.reduce_range
    )


def conversion_recipe(params: Params) -> StaticRecipe:
    """The static recipe without the layers kept in FP32: what sensitivity ranks layers with."""
    static = params.static
    percentile = static.percentile  # read whatever the observer: dvc.yaml lists the key for when it is percentile
    return StaticRecipe(
        params.quantize.backend,
        params.engine,
        static.fuse,
        static.observer,
        params.quantize.per_channel,
        static.symmetric_activations,
        percentile=percentile if static.observer == "percentile" else None,
    )


def asked_static(params: Params) -> StaticRecipe:
    skip_layers, budget = tuple(params.static.skip_layers), params.static.max_accuracy_drop
    return replace(conversion_recipe(params), skip_layers=skip_layers, max_accuracy_drop=budget)


def asked_qat(params: Params) -> QatRecipe:
    return QatRecipe(params.quantize.backend, params.engine, True, params.quantize.per_channel, params.qat.freeze_after)


ASKED = {"dynamic": asked_dynamic, "static": asked_static, "qat": asked_qat}


def planned(params: Params, method: str) -> tuple[Backend, Recipe]:
    """quantize.backend, and the recipe of `method` as that backend carries it out; a line on stderr says each
    params key it overrules. A recipe it cannot carry out stops here, before any work, in one line naming the key."""
    backend = backend_named(params.quantize.backend)
    asked = ASKED[method](params)
    if backend.section is not None:
        section = getattr(params, backend.section)
        own = {field.name for field in fields(asked)} & set(type(section).model_fields)
        asked = with_options(asked, {name: getattr(section, name) for name in sorted(own)})
    carried = {"dynamic": backend.dynamic_recipe, "static": backend.static_recipe, "qat": backend.qat_recipe}[method]
    recipe = carried(asked)
    for line in overruled(asked, recipe, backend):
        typer.echo(line, err=True)
    return backend, recipe
