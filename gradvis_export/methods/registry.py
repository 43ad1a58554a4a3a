"""The method registry: one public name per method, the same in the class (`method`), the CLI,
the artifact's contract, the benchmarks and the tests.  A method joins it with `@register` in
its own file; everything that lists methods reads `METHODS`."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from types import MappingProxyType

from torch import nn

from gradvis_export.core.explainer import Explainer
from gradvis_export.errors import GradvisError

_REGISTERED: dict[str, type[Explainer]] = {}
#: public name -> explainer class, in the order the methods were registered (read-only)
METHODS = MappingProxyType(_REGISTERED)


def register(cls: type[Explainer]) -> type[Explainer]:
    """Class decorator: add `cls` under its own `method` name."""
    name = cls.__dict__.get("method")
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls.__name__} needs its own `method = '<public name>'` to register")
    if name in _REGISTERED and _REGISTERED[name] is not cls:
        raise ValueError(f"the method name {name!r} is taken by {_REGISTERED[name].__name__}")
    _REGISTERED[name] = cls
    return cls


def method_class(name: str) -> type[Explainer]:
    """The class registered as `name`; an unknown name is a GradvisError with the closest."""
    if name in METHODS:
        return METHODS[name]
    close = difflib.get_close_matches(name, list(METHODS), n=3, cutoff=0.5)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise GradvisError(f"unknown method {name!r}{hint}; choose one of {', '.join(METHODS)}")


def make_explainer(
    name: str,
    model: nn.Module,
    target_layer: str | Iterable[str] | None = None,
    *,
    activations: str | Iterable[str] | None = None,
    **options: object,
) -> Explainer:
    """The explainer registered as `name` for `model`: one verb for every method.

    `target_layer` goes to the methods that read a layer (the CAM family, guided Grad-CAM),
    `activations` to the guided ones; each is refused by a method that takes no such thing.
    `options` are the class's own keyword arguments (`normalize`, `chunk_size`, `target`...)."""
    cls = method_class(name)
    if target_layer is not None:
        if not cls.takes_layer:
            raise GradvisError(f"{name} reads no layer (it explains the input): drop the layer")
        options["target_layer"] = target_layer
    if activations is not None:
        if not cls.takes_activations:
            raise GradvisError(f"{name} guides no activations: drop activations")
        options["activations"] = activations
    return cls(model, **options)
