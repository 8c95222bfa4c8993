"""Models: offline GGUF zoo -> HookedTransformer, micro-LLaMA configs, training runs as models."""

from geomlens.models.load import load_model, load_tokenizer, model_info
from geomlens.models.micro import MICRO_SIZES, micro_config
from geomlens.models.run_model import is_run_dir, load_run_model
from geomlens.models.token_map import TokenMap, token_map
from geomlens.models.zoo import OFFLINE_MODELS

__all__ = [
    "load_model", "load_tokenizer", "model_info", "micro_config", "MICRO_SIZES", "OFFLINE_MODELS",
    "load_run_model", "is_run_dir", "TokenMap", "token_map",
]
