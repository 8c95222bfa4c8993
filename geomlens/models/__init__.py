"""Models: offline GGUF zoo -> HookedTransformer, micro-LLaMA configs, trained models of run
directories (safetensors + JSON)."""

from geomlens.data.token_map import TokenMap, token_map
from geomlens.models.load import load_model, model_info
from geomlens.models.micro import MICRO_SIZES, micro_config
from geomlens.models.tokenizer import load_tokenizer
from geomlens.models.trained import is_trained, load_trained, save_trained
from geomlens.models.zoo import OFFLINE_MODELS

__all__ = [
    "load_model", "load_tokenizer", "model_info", "micro_config", "MICRO_SIZES", "OFFLINE_MODELS",
    "load_trained", "save_trained", "is_trained", "TokenMap", "token_map",
]
