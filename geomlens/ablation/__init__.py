"""Hook-level ablations of attention/MLP outputs and their effect on loss and geometry.

In a notebook: ``geomlens.ablate(model, texts, ...)`` (`geomlens.ablation.api`) returns an
`AblationResult`; ``geomlens.ablation.ablate`` is the module of hooks and setters.
"""

from geomlens.ablation.ablate import (
    COMPONENTS,
    METHODS,
    ablation_hooks,
    derangement,
    patch_activation,
    register_component,
    register_setter,
)
from geomlens.ablation.api import ablate_tokens
from geomlens.ablation.config import AblateConfig
from geomlens.ablation.result import AblationResult
from geomlens.ablation.sweep import Condition, ablation_table, conditions_for, sweep_conditions

__all__ = [
    "COMPONENTS",
    "METHODS",
    "AblateConfig",
    "AblationResult",
    "Condition",
    "ablate_tokens",
    "ablation_hooks",
    "ablation_table",
    "conditions_for",
    "derangement",
    "patch_activation",
    "register_component",
    "register_setter",
    "sweep_conditions",
]
