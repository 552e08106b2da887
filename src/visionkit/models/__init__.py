"""visionkit.models: whole models and the flat model registry.

Build models by name with :func:`create_model`, list them with :func:`list_models`, register new
builders with :func:`register_model`. Classification backbones live in
:mod:`visionkit.models.backbones` and all share the feature contract documented there
(``forward_features(x) -> dict[str, Tensor]`` with keys ``"c2"``..``"c5"``, plus ``out_channels``
and ``strides``).
"""

from visionkit.models.registry import create_model, get_model_builder, list_models, register_model

__all__ = ["create_model", "get_model_builder", "list_models", "register_model"]
