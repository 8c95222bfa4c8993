"""Hook-level ablations of attention/MLP outputs and their effect on loss and geometry."""

from geomlens.ablation.ablate import (
    COMPONENTS,
    METHODS,
    ablation_hooks,
    derangement,
    patch_activation,
    register_component,
    register_setter,
)
from geomlens.ablation.config import AblateConfig
from geomlens.ablation.sweep import Condition, ablation_table, sweep_conditions

__all__ = [
    "COMPONENTS",
    "METHODS",
    "AblateConfig",
    "Condition",
    "ablation_hooks",
    "ablation_table",
    "derangement",
    "patch_activation",
    "register_component",
    "register_setter",
    "sweep_conditions",
]
