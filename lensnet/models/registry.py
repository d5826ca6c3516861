"""A registry of lens-finder architectures, addressed by name.

Each architecture family lives in its own module under ``lensnet.models`` and registers
small entry points with :func:`register_model`. An entry point takes ``bands`` (the
number of input channels) plus architecture keywords and returns a ``torch.nn.Module``
whose forward maps ``(batch, bands, H, W)`` to ``(batch,)`` logits; the lens probability
is ``sigmoid(logit)``. Two-branch models take a tuple of tensors (documented on the
entry point) and declare ``branches=2``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

EntryPoint = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelSpec:
    """What the pipeline must know about an architecture before it has a checkpoint.

    Attributes:
        name: registry name.
        entry_point: builds the module.
        input_size_px: default stamp side length (per branch for two-branch models).
        branches: 1 for single-resolution models, 2 for models fed a (high-res, low-res) pair.
        reference: the paper the architecture follows.
    """

    name: str
    entry_point: EntryPoint
    input_size_px: tuple[int, ...]
    branches: int = 1
    reference: str = ""


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(
    input_size_px: int | tuple[int, ...], branches: int = 1, reference: str = ""
) -> Callable[[EntryPoint], EntryPoint]:
    """Decorator registering ``fn`` under its function name (``_`` becomes ``-``)."""
    sizes = (input_size_px,) if isinstance(input_size_px, int) else tuple(input_size_px)
    if len(sizes) != branches:
        raise ValueError(f"{branches} branch(es) need {branches} input size(s), got {sizes}")

    def decorate(fn: EntryPoint) -> EntryPoint:
        name = fn.__name__.replace("_", "-")
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = ModelSpec(name, fn, sizes, branches, reference)
        return fn

    return decorate


def list_models() -> list[str]:
    """Names of every registered architecture, sorted."""
    _import_families()
    return sorted(_REGISTRY)


def model_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` registered as ``name``."""
    _import_families()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(
            f"no model named {name!r}; registered models are: {', '.join(sorted(_REGISTRY))}"
        ) from None


def create_model(name: str, bands: int = 3, **overrides) -> nn.Module:
    """Build the architecture ``name`` for ``bands`` input channels.

    Keyword overrides that are ``None`` are dropped, so each entry point keeps its own
    defaults unless a caller sets a value on purpose.
    """
    if bands < 1:
        raise ValueError(f"bands must be >= 1, got {bands}")
    kwargs = {key: value for key, value in overrides.items() if value is not None}
    return model_spec(name).entry_point(bands=bands, **kwargs)


def _import_families() -> None:
    # Importing the package runs every family module's decorators exactly once.
    import lensnet.models  # noqa: F401
