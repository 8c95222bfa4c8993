"""What the threads ask of a model, whichever TransformerLens runs it: `ModelView`.

A view wraps a loaded model (a TransformerLens 3 ``HookedTransformer`` or a TransformerLens 4
``TransformerBridge``) and answers the questions geomlens asks: the full hook names of each block,
``ln_final`` as a function, ``W_E`` / ``W_U`` / ``b_U``, the logit soft-cap, the GQA layout,
qk-norm, each layer's rotary base and the config numbers. Only `geomlens.backend.tl3` and
`geomlens.backend.tl4` know which TransformerLens they talk to.

``W_E`` means one matrix on both backends: the token embedding *as it enters the residual
stream* (``hook_embed``). For Gemma that is √d_model times the stored embedding (TransformerLens 3
folds the factor into ``W_E``; the bridge's raw ``W_E`` lacks it and the view multiplies it in).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

from jaxtyping import Float
from torch import Tensor, nn


@dataclass(frozen=True)
class BlockHooks:
    """Full hook names of block ``layer``; the same strings on both backends (TransformerLens 4
    resolves them as aliases of its ``hook_in`` / ``hook_out`` names)."""

    layer: int

    @property
    def resid_pre(self) -> str:
        return f"blocks.{self.layer}.hook_resid_pre"

    @property
    def resid_mid(self) -> str:
        return f"blocks.{self.layer}.hook_resid_mid"

    @property
    def resid_post(self) -> str:
        return f"blocks.{self.layer}.hook_resid_post"

    @property
    def attn_out(self) -> str:
        return f"blocks.{self.layer}.hook_attn_out"

    @property
    def mlp_out(self) -> str:
        return f"blocks.{self.layer}.hook_mlp_out"

    @property
    def q(self) -> str:
        return f"blocks.{self.layer}.attn.hook_q"

    @property
    def k(self) -> str:
        return f"blocks.{self.layer}.attn.hook_k"

    @property
    def v(self) -> str:
        return f"blocks.{self.layer}.attn.hook_v"

    @property
    def z(self) -> str:
        return f"blocks.{self.layer}.attn.hook_z"

    @property
    def attn_scores(self) -> str:
        return f"blocks.{self.layer}.attn.hook_attn_scores"

    @property
    def pattern(self) -> str:
        return f"blocks.{self.layer}.attn.hook_pattern"

    def all(self) -> dict[str, str]:
        """Every name above, keyed by role."""
        roles = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "q", "k", "v",
                 "z", "attn_scores", "pattern")
        return {role: getattr(self, role) for role in roles}


class ModelView(ABC):
    """One loaded model seen through the questions geomlens asks (module docstring)."""

    backend: ClassVar[str]
    """``"tl3"`` or ``"tl4"``."""

    def __init__(self, model: Any):
        self.model = model
        self.cfg = model.cfg

    # config numbers -----------------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        return int(self.cfg.n_layers)

    @property
    def d_model(self) -> int:
        return int(self.cfg.d_model)

    @property
    def d_vocab(self) -> int:
        return int(self.cfg.d_vocab)

    @property
    def n_heads(self) -> int:
        return int(self.cfg.n_heads)

    @property
    def d_head(self) -> int:
        return int(self.cfg.d_head)

    @property
    def n_kv_heads(self) -> int:
        """Key/value heads (GQA); query head h reads KV head ``h // (n_heads // n_kv_heads)``."""
        return int(getattr(self.cfg, "n_key_value_heads", None) or self.cfg.n_heads)

    @property
    def softcap(self) -> float | None:
        """The final-logit soft-cap c (logits = c·tanh(x/c)), or None."""
        cap = getattr(self.cfg, "output_logits_soft_cap", -1.0)
        return float(cap) if cap is not None and cap > 0 else None

    def hooks(self, layer: int) -> BlockHooks:
        if not 0 <= layer < self.n_layers:
            raise IndexError(f"layer {layer} out of range for {self.n_layers} layers")
        return BlockHooks(layer)

    # what each backend answers ------------------------------------------------------------
    @property
    @abstractmethod
    def W_E(self) -> Float[Tensor, "d_vocab d_model"]:
        """Token embedding as it enters the residual stream (module docstring)."""

    @property
    @abstractmethod
    def embed_scale(self) -> float:
        """The factor between the stored embedding and `W_E` (Gemma: √d_model, else 1)."""

    def W_E_definition(self) -> str:
        """Which matrix `W_E` is, in words (recorded in every result)."""
        centred = bool(self.processing().get("center_writing_weights"))
        return (f"token embedding as added to the residual stream (hook_embed): the stored "
                f"embedding x {self.embed_scale:.6g}, {'centred' if centred else 'not centred'}")

    @property
    def W_U(self) -> Float[Tensor, "d_model d_vocab"]:
        """Unembedding (``model.W_U`` on both backends)."""
        return self.model.W_U

    @property
    def b_U(self) -> Float[Tensor, "d_vocab"]:
        """Unembedding bias (zeros where the model has none)."""
        return self.model.b_U

    def ln_final(self, resid: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        """The model's final norm, gain included (the input of the unembedding)."""
        return self.model.ln_final(resid)

    @property
    @abstractmethod
    def qk_norm(self) -> bool:
        """Whether queries and keys are normalised per head after ``hook_q`` / ``hook_k``."""

    @abstractmethod
    def k_norm(self, layer: int) -> nn.Module | None:
        """Block ``layer``'s per-head key norm (qk-norm models), else None. Its output is the key
        after the norm and before rotary, which no hook name shows on either backend."""

    @abstractmethod
    def q_norm(self, layer: int) -> nn.Module | None:
        """Block ``layer``'s per-head query norm (qk-norm models), else None."""

    @abstractmethod
    def normed_heads(self, x: Tensor, batch: int, pos: int) -> Float[Tensor, "batch pos head_index d_head"]:
        """A `k_norm` / `q_norm` output in the layout of ``hook_k`` / ``hook_q``."""

    @abstractmethod
    def attn_scale(self, layer: int) -> float:
        """The divisor of block ``layer``'s attention scores (√d_head, or the model's own)."""

    @property
    @abstractmethod
    def attn_softcap(self) -> float | None:
        """The attention-score soft-cap c (scores = c·tanh(s/c)), or None."""

    @property
    @abstractmethod
    def block_layout(self) -> str:
        """``"pre_norm"`` (Llama: a norm before each sublayer), ``"sandwich"`` (Gemma: a norm
        before and after each sublayer) or ``"other"`` (post-norm or parallel blocks)."""

    @abstractmethod
    def norm_gain(self, layer: int, name: str) -> Float[Tensor, "d_model"]:
        """The gain an RMSNorm ``blocks.{layer}.{name}`` multiplies by (Gemma's 1 + w included);
        an `InputError` for a LayerNorm (it has a bias and centres)."""

    def output_biases(self, layer: int) -> tuple[Float[Tensor, "d_model"], Float[Tensor, "d_model"]]:
        """(b_O, b_out) of block ``layer``; zeros where the model has none."""
        block = self.model.blocks[layer]
        out = []
        for b in (getattr(block.attn, "b_O", None), getattr(block.mlp, "b_out", None)):
            out.append(b if b is not None else self.W_U.new_zeros(self.d_model))
        return out[0], out[1]

    @abstractmethod
    def attn_types(self) -> list[str]:
        """Each layer's attention type: ``"local"`` (sliding window) or ``"global"``."""

    @abstractmethod
    def rotary_bases(self) -> list[float | None]:
        """Each layer's rotary base (None for a model without rotary embeddings)."""

    @abstractmethod
    def processing(self) -> dict[str, Any]:
        """The weight processing the loaded weights carry (recorded in every result)."""

    def describe(self) -> dict[str, Any]:
        """Backend, sizes, layout and processing: what a run records."""
        return {
            "backend": self.backend, "n_layers": self.n_layers, "d_model": self.d_model,
            "d_vocab": self.d_vocab, "n_heads": self.n_heads, "n_kv_heads": self.n_kv_heads,
            "d_head": self.d_head, "qk_norm": self.qk_norm, "softcap": self.softcap,
            "block_layout": self.block_layout,
            "rotary_bases": sorted({b for b in self.rotary_bases() if b is not None}),
            "processing": self.processing(),
            "W_E": self.W_E_definition(),
        }
