"""HookedTransformer logits vs the transformers model loaded from the same GGUF, on real text."""

import pytest
import torch

from geomlens.data import tokenize_segments
from geomlens.models.convert import CONVERTERS
from geomlens.models.gguf import load_hf_from_gguf
from geomlens.models.zoo import get_offline_model

pytestmark = pytest.mark.integration


def _parity(model, name, texts, max_tokens=64):
    spec = get_offline_model(name)
    hf, tok = load_hf_from_gguf(spec.locate())
    assert sum(p.numel() for p in hf.parameters()) == spec.n_params  # tied: counted once
    seqs = tokenize_segments(tok, texts, max_tokens=max_tokens)
    worst, scale = 0.0, 0.0
    with torch.no_grad():
        for s in seqs:
            ours = model(s[None])
            ref = hf(s[None]).logits
            worst = max(worst, (ours - ref).abs().max().item())
            scale = max(scale, ref.abs().max().item())
    return worst, scale


def test_smollm2_logits_match_transformers(smollm2, eval_texts):
    worst, scale = _parity(smollm2, "smollm2-135m", eval_texts)
    print(f"smollm2-135m parity: max|dlogit|={worst:.2e} on logits up to {scale:.1f}")
    assert worst <= 1e-3


def test_gemma3_logits_match_transformers(gemma3, eval_texts):
    worst, scale = _parity(gemma3, "gemma3-270m", eval_texts)
    print(f"gemma3-270m parity: max|dlogit|={worst:.2e} on logits up to {scale:.1f}")
    assert worst <= 1e-3


def test_cache_roundtrip_is_exact(smollm2):
    """The safetensors cache returns bit-identical weights to a fresh GGUF conversion."""
    spec = get_offline_model("smollm2-135m")
    hf, tok = load_hf_from_gguf(spec.locate())
    fresh = CONVERTERS[spec.family](hf, tok, name=spec.name)
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, smollm2.state_dict()[key]), key


def test_raw_embeddings_and_tied(smollm2):
    from geomlens.models import model_info

    info = model_info(smollm2)
    assert info["tied_embeddings"] is True
    assert info["processing"] == {
        "fold_ln": False, "center_writing_weights": False, "center_unembed": False
    }
    # unprocessed: W_U is exactly W_E^T (tied), not centred
    assert torch.equal(smollm2.W_U, smollm2.W_E.T)


def test_tokenizers_bos_conventions(smollm2, gemma3):
    assert smollm2.tokenizer("Hello")["input_ids"][0] != smollm2.tokenizer.bos_token_id
    assert gemma3.tokenizer("Hello")["input_ids"][0] == 2  # Gemma prepends <bos>


def test_gemma3_embedding_scale_is_documented(gemma3):
    """TL folds Gemma's sqrt(d_model) embedding multiplier into W_E: W_E = sqrt(d) * W_U.T."""
    from geomlens.models import model_info

    ratio = gemma3.W_E.norm(dim=-1) / gemma3.W_U.T.norm(dim=-1)
    assert torch.allclose(ratio, torch.full_like(ratio, 640**0.5), rtol=1e-4)
    assert "sqrt" in model_info(gemma3)["tying_note"]
