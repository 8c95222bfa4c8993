"""GGUF -> dequantized Hugging Face model and tokenizer (transformers' GGUF loader)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from geomlens.errors import require

logger = logging.getLogger(__name__)


def load_hf_from_gguf(gguf: Path, *, dtype: torch.dtype = torch.float32):
    """Return ``(hf_model, tokenizer)`` dequantized from one GGUF file (float32 by default)."""
    require("gguf", "pip install gguf")
    from transformers import AutoModelForCausalLM

    logger.info("Dequantizing %s with transformers (first load only) ...", gguf.name)
    hf = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=dtype)
    hf.eval()
    return hf, load_tokenizer_from_gguf(gguf)


def load_tokenizer_from_gguf(gguf: Path):
    require("gguf", "pip install gguf")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
