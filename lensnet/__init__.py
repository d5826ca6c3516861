"""lensnet: lens-finding networks, their preprocessing, simulations, training and metrics.

Usable on its own (no Dask needed): build a model with :func:`create_model`, load a
trained one with :func:`load_model`.
"""

from lensnet.checkpoint import LoadedModel, ModelConfig, load_config, load_model, save_checkpoint
from lensnet.models import create_model, list_models, model_spec, register_model

__all__ = [
    "LoadedModel",
    "ModelConfig",
    "create_model",
    "list_models",
    "load_config",
    "load_model",
    "model_spec",
    "register_model",
    "save_checkpoint",
]
