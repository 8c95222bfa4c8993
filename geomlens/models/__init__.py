"""Models: offline GGUF zoo -> HookedTransformer, micro-LLaMA configs for training."""

from geomlens.models.load import load_model, load_tokenizer, model_info
from geomlens.models.micro import MICRO_SIZES, micro_config
from geomlens.models.zoo import OFFLINE_MODELS

__all__ = ["load_model", "load_tokenizer", "model_info", "micro_config", "MICRO_SIZES", "OFFLINE_MODELS"]
