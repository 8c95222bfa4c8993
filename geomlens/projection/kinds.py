"""Which parameters are projected, as residual-stream vectors, and through which token matrix.

Every kind is one entry of `KINDS` (the only place a kind's name is written). Vector kinds give
a set of d_model vectors per layer; pair kinds give one vocab x vocab bilinear map per head.

    kind      vectors per layer                              reads/writes  default through
    mlp_in    column n of W_in   (d_mlp of them)             read          W_E
    mlp_gate  column n of W_gate (gated MLPs only)           read          W_E
    mlp_out   row n of W_out                                 write         W_U
    q         column i of W_Q[h] (n_heads x d_head)          read          W_E
    k, v      column i of W_K[h], W_V[h] (per *KV* head)     read          W_E
    o         row i of W_O[h]                                write         W_U
    ov        E_src W_V[h] W_O[h] E_outᵀ, token x token      pair          src W_E, out W_U
    qk        E_q W_Q[h] W_K[h]ᵀ E_kᵀ, token x token         pair          both W_E

Gated MLPs (SmolLM2, Gemma): neuron n computes act(x · w_gate,n) · (x · w_in,n), so it reads the
residual stream along *two* directions, w_gate,n (through the nonlinearity) and w_in,n (linearly);
both are projected. Dar et al. project FFN keys (W_in columns) and values (W_out rows) of
ungated GPT-2/BERT; the gate is the extra read direction of the gated form.

q/k/v/o vectors are the raw d_head coordinates (``neuron`` = coordinate i within the head), as
the paper projects them; that basis is only defined up to a rotation within the head (W_Q R with
W_K R, W_V R with Rᵀ W_O leave the model unchanged), so the basis-free views are ``ov``/``qk``.
With grouped-query attention k and v are listed once per key-value head (``head`` = KV head
index; query head h reads KV head h // (n_heads / n_key_value_heads)).

No layer norm is applied to parameters (as in the paper): the norms' weights and the MLP/attention
biases are left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from jaxtyping import Float
from torch import Tensor

from geomlens.backend import view_of
from geomlens.errors import InputError
from geomlens.registry import Registry

if TYPE_CHECKING:  # annotations only: TransformerLens 4 has no HookedTransformer
    from transformer_lens import HookedTransformer

#: the token matrices a vector can be read through (rows = tokens)
THROUGH: tuple[str, ...] = ("W_E", "W_U")


@dataclass(frozen=True, kw_only=True)
class Kind:
    name: str
    """The ``kind`` value in tables."""
    side: str
    """"read" (the parameter reads the residual stream), "write", or "pair" (token x token)."""
    through: str
    """Default token matrix for the ``token`` column (read: W_E, write: W_U)."""
    src_through: str | None = None
    """Pair kinds: default token matrix of the source (attended / key) side."""
    per_head: bool = False
    """One set of vectors (or one pair map) per attention head."""


KINDS: Registry[Kind] = Registry("parameter kind")
"""Every projectable kind by name: the choices of ``geomlens project --what``."""


def register_kind(kind: Kind, *, help: str) -> Kind:
    """Register a parameter kind (one call; the CLI, config and tables read `KINDS`)."""
    return KINDS.register(kind.name, kind, help=help)


register_kind(Kind(name="mlp_in", side="read", through="W_E"), help="columns of W_in (read)")
register_kind(Kind(name="mlp_gate", side="read", through="W_E"),
              help="columns of W_gate, gated MLPs (read, through the nonlinearity)")
register_kind(Kind(name="mlp_out", side="write", through="W_U"), help="rows of W_out (write)")
register_kind(Kind(name="ov", side="pair", through="W_U", src_through="W_E", per_head=True),
              help="E W_V W_O U: attended token -> output token, per head")
register_kind(Kind(name="qk", side="pair", through="W_E", src_through="W_E", per_head=True),
              help="E W_Q W_K^T E^T: query token x key token, per head")
register_kind(Kind(name="q", side="read", through="W_E", per_head=True), help="columns of W_Q[h] (read)")
register_kind(Kind(name="k", side="read", through="W_E", per_head=True), help="columns of W_K[h] per KV head (read)")
register_kind(Kind(name="v", side="read", through="W_E", per_head=True), help="columns of W_V[h] per KV head (read)")
register_kind(Kind(name="o", side="write", through="W_U", per_head=True), help="rows of W_O[h] (write)")
PAIR_KINDS = tuple(k for k in KINDS if KINDS[k].side == "pair")


@dataclass(kw_only=True)
class ParamVectors:
    """One layer's vectors of one kind, with their (head, neuron) labels."""

    vectors: Float[Tensor, "n d_model"]
    """The parameter vectors, in the residual stream."""
    head: np.ndarray | None
    """Head index of each vector (None for MLP kinds)."""
    neuron: np.ndarray
    """MLP neuron, or coordinate within the head for q/k/v/o."""


def available_kinds(model: HookedTransformer) -> list[str]:
    """Kinds the model has (``mlp_gate`` only for gated MLPs; MLP kinds not for attn-only)."""
    cfg = model.cfg
    out = []
    for name in KINDS:
        if name.startswith("mlp") and (cfg.attn_only or (cfg.num_experts or 0) > 0):
            continue
        if name == "mlp_gate" and not cfg.gated_mlp:
            continue
        out.append(name)
    return out


def n_heads_of(model: HookedTransformer, kind: str) -> int:
    """Heads a per-head kind is listed for (KV heads for k and v)."""
    if kind in ("k", "v"):
        return model.cfg.n_key_value_heads or model.cfg.n_heads
    return model.cfg.n_heads


def _head_vectors(W: Float[Tensor, "head d_model d_head"]) -> ParamVectors:
    n_heads, _, d_head = W.shape
    return ParamVectors(vectors=W.transpose(1, 2).reshape(n_heads * d_head, -1),
                        head=np.repeat(np.arange(n_heads), d_head),
                        neuron=np.tile(np.arange(d_head), n_heads))


def parameter_vectors(model: HookedTransformer, kind: str, layer: int) -> ParamVectors:
    """The d_model vectors of ``kind`` at ``layer`` (module doc for each kind)."""
    if kind not in available_kinds(model):
        raise InputError(f"kind {kind!r} is not available for this model "
                         f"(available: {', '.join(available_kinds(model))})")
    if kind in PAIR_KINDS:
        raise InputError(f"{kind!r} is a token-pair kind; it has no vectors")
    block = model.blocks[layer]
    if kind.startswith("mlp"):
        W = {"mlp_in": block.mlp.W_in.T, "mlp_gate": getattr(block.mlp, "W_gate", None),
             "mlp_out": block.mlp.W_out}[kind]
        W = W.T if kind == "mlp_gate" else W  # [d_mlp, d_model]
        return ParamVectors(vectors=W, head=None, neuron=np.arange(W.shape[0]))
    attn = block.attn
    if kind == "q":
        return _head_vectors(attn.W_Q)
    if kind in ("k", "v"):
        W = getattr(attn, f"_W_{kind.upper()}", None)  # GQA keeps the unrepeated KV weights
        return _head_vectors(W if W is not None else getattr(attn, f"W_{kind.upper()}"))
    return _head_vectors(attn.W_O.transpose(1, 2))  # o: rows of W_O [head, d_head, d_model]


def token_matrix(model: HookedTransformer, through: str) -> Float[Tensor, "d_vocab d_model"]:
    """Rows = tokens: ``W_E`` itself, or ``W_U`` transposed (heads without a W_U raise).

    TransformerLens's Gemma has W_E = √d_model · W_Uᵀ (the embedding scale is folded into W_E),
    so scores through W_E are √640 ≈ 25.3 times those through W_U there; the ranking is the same.
    """
    if through == "W_E":
        return view_of(model).W_E
    if through == "W_U":
        W_U = getattr(model.unembed, "W_U", None)
        if W_U is None:
            raise InputError(f"The model's LM head ({type(model.unembed).__name__}) has no W_U; "
                             "project through W_E.")
        return W_U.T
    raise InputError(f"through must be one of {THROUGH}, not {through!r}")
