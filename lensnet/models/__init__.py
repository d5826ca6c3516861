"""Lens-finder architectures, one family per module, registered by name."""

from lensnet.models.registry import ModelSpec, create_model, list_models, model_spec, register_model

# Family modules register their entry points on import.
from lensnet.models import (  # noqa: E402,F401
    deeplens,
    efficientnet,
    lens_detector,
    lensresnet,
    lexactum,
    ou,
)

__all__ = ["ModelSpec", "create_model", "list_models", "model_spec", "register_model"]
