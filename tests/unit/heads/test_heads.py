"""LM heads: reference formulas, hooks, parameter counts (thesis eqs 5.12-5.15), edge cases."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import build_cfg, build_model
from transformer_lens.components import Embed

from geomlens.errors import InputError
from geomlens.heads import (
    build_head,
    distances,
    install_head,
    list_heads,
    register_head,
    sq_distances,
)
from geomlens.heads.base import Head

pytestmark = pytest.mark.usefixtures("one_thread")

ALL_HEADS = [
    "linear", "tied", "neg_dist", "sigma", "linear_scale", "hybrid", "gaussian", "context_mlp",
    "sq_dist_bias",
]


def test_all_spec_heads_registered():
    assert set(ALL_HEADS) <= set(list_heads())


def test_register_duplicate_raises():
    with pytest.raises(ValueError, match="already registered"):
        register_head("linear", Head)


def test_unknown_head_raises_input_error(tiny_model):
    with pytest.raises(InputError, match="(?i)unknown head"):
        install_head(tiny_model, "no_such_head")


def test_sq_distances_match_cdist():
    h = torch.randn(3, 5, 16)
    E = torch.randn(40, 16)
    ref = torch.cdist(h.reshape(-1, 16).double(), E.double()).reshape(3, 5, 40)
    torch.testing.assert_close(sq_distances(h, E).double(), ref**2, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(distances(h, E).double(), ref, atol=1e-3, rtol=1e-5)
    # properties: non-negative, zero exactly on an embedding row
    assert (sq_distances(h, E) >= 0).all()
    on_row = E[7].reshape(1, 1, 16)
    assert sq_distances(on_row, E)[0, 0, 7] == pytest.approx(0.0, abs=1e-4)


def test_distance_gradients_match_autograd_of_the_direct_formula():
    """The hand-written backward against autograd through the broadcast formula (float64)."""
    h = torch.randn(2, 3, 8, dtype=torch.float64, requires_grad=True)
    E = torch.randn(11, 8, dtype=torch.float64, requires_grad=True)
    g = torch.randn(2, 3, 11, dtype=torch.float64)
    diff = h[:, :, None, :] - E[None, None]
    for fn, ref in ((distances, (diff**2).sum(-1).add(1e-6).sqrt()), (sq_distances, (diff**2).sum(-1))):
        got = torch.autograd.grad((fn(h, E) * g).sum(), (h, E))
        want = torch.autograd.grad((ref * g).sum(), (h, E), retain_graph=True)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, atol=1e-8, rtol=1e-6)
    assert torch.autograd.gradcheck(distances, (h, E))
    assert torch.autograd.gradcheck(sq_distances, (h, E))


def test_gradient_finite_at_zero_distance():
    E = torch.randn(10, 8, requires_grad=True)
    h = E.detach()[3].clone().reshape(1, 1, 8).requires_grad_(True)
    d = distances(h, E)
    d.sum().backward()
    assert torch.isfinite(h.grad).all() and torch.isfinite(E.grad).all()


@pytest.mark.parametrize("name", ["neg_dist", "sigma", "linear_scale", "hybrid", "gaussian", "context_mlp", "sq_dist_bias"])
def test_head_gradient_finite_when_h_is_an_embedding_row(name):
    model = build_model()
    head = install_head(model, name)
    h = model.embed.W_E.detach()[5].clone().reshape(1, 1, -1).requires_grad_(True)
    head(h).sum().backward()
    assert torch.isfinite(h.grad).all()
    assert torch.isfinite(model.embed.W_E.grad).all()


def _randomise(head: Head) -> None:
    """Move every head parameter off its init so that the reference formulas are exercised."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in head.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))


def _reference_logits(name: str, head, h, E) -> torch.Tensor:
    """Logits by direct broadcasting over [batch, pos, vocab, d_model] (independent of the head)."""
    d = (h[:, :, None, :] - E[None, None]).norm(dim=-1)
    if name == "linear":
        return h @ head.W_U + head.b_U
    if name == "tied":
        return torch.einsum("bpd,vd->bpv", h, E)
    if name == "neg_dist":
        return -d
    if name == "sigma":
        return -d * F.softplus(head.token_scale.rho)
    if name == "linear_scale":
        return -d * F.softplus(h @ head.f.w + head.f.b)[..., None]
    if name == "hybrid":
        return -d * F.softplus(head.token_scale.rho) * F.softplus(h @ head.f.w + head.f.b)[..., None]
    if name == "gaussian":
        return -(d**2) / (2 * F.softplus(head.token_scale.rho) ** 2)
    if name == "context_mlp":
        z = F.silu(h @ head.fc_in.weight.T + head.fc_in.bias) @ head.fc_out.weight.T + head.fc_out.bias
        return -d * F.softplus(z)
    if name == "sq_dist_bias":
        return -(d**2) + head.b_v
    raise AssertionError(name)


@pytest.mark.parametrize("name", ALL_HEADS)
def test_head_matches_reference_formula(name):
    model = build_model()
    head = install_head(model, name)
    _randomise(head)
    h = torch.randn(2, 3, model.cfg.d_model) * 2
    with torch.no_grad():
        got = head(h)
        ref = _reference_logits(name, head, h, model.embed.W_E)
    assert got.shape == (2, 3, model.cfg.d_vocab)
    torch.testing.assert_close(got.float(), ref.float(), atol=2e-3, rtol=1e-4)


@pytest.mark.parametrize("name", ALL_HEADS)
def test_head_keeps_hooks_and_run_with_cache(name):
    model = build_model()
    install_head(model, name)
    tokens = torch.randint(0, model.cfg.d_vocab, (2, 6))
    logits, cache = model.run_with_cache(tokens)
    assert "unembed.hook_in" in cache and "unembed.hook_out" in cache
    torch.testing.assert_close(cache["unembed.hook_out"], logits)
    assert cache["unembed.hook_in"].shape == (2, 6, model.cfg.d_model)

    def bump(tensor, *, hook):
        return tensor + torch.arange(tensor.shape[-1], dtype=tensor.dtype)

    hooked = model.run_with_hooks(tokens, fwd_hooks=[("unembed.hook_out", bump)])
    assert not torch.allclose(hooked, logits)
    torch.testing.assert_close(hooked, logits + torch.arange(model.cfg.d_vocab, dtype=logits.dtype))


@pytest.mark.parametrize("name", ALL_HEADS)
def test_head_trains_end_to_end(name):
    """A backward pass reaches W_E (shared) and every head parameter, all finite."""
    model = build_model()
    head = install_head(model, name)
    model.train()
    tokens = torch.randint(0, model.cfg.d_vocab, (2, 8))
    loss = model(tokens, return_type="loss")
    loss.backward()
    assert torch.isfinite(loss)
    assert model.embed.W_E.grad is not None and torch.isfinite(model.embed.W_E.grad).all()
    for n, p in head.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), n


def test_w_e_is_shared_not_copied():
    model = build_model()
    head = install_head(model, "hybrid")
    assert head.W_E is model.embed.W_E
    names = [n for n, _ in model.named_parameters()]
    assert names.count("embed.W_E") == 1 and not any(n.startswith("unembed.") and "W_E" in n for n in names)
    assert "unembed.W_E" not in model.state_dict()
    with torch.no_grad():
        model.embed.W_E[0].add_(1.0)
    assert torch.equal(head.W_E[0], model.embed.W_E[0])


def _count_cfg():
    return build_cfg(d_vocab=50_000, d_model=768, d_head=64, n_heads=12, n_key_value_heads=None, rotary_dim=64)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("linear", 38_450_000),  # |V|·d + |V|  (eq. 5.12)
        ("tied", 0),
        ("neg_dist", 0),
        ("sigma", 50_000),  # |V| σ_v       (eq. 5.13)
        ("linear_scale", 769),  # d + 1     (eq. 5.14)
        ("hybrid", 50_769),  # |V| + d + 1  (eq. 5.15)
        ("gaussian", 50_000),
        ("sq_dist_bias", 50_000),
        ("context_mlp", 768 * 64 + 64 + 64 + 1),  # d·H + H (W₁, b₁) + H + 1 (W₂, b₂), H = 64
    ],
)
def test_param_counts_thesis(name, expected):
    cfg = _count_cfg()
    with torch.device("meta"):
        embed = Embed(cfg)
        head = build_head(name, cfg, embed)
    assert head.n_params() == expected
    assert head.n_params() == sum(p.numel() for p in head.parameters())


def test_sq_dist_bias_with_norm_bias_equals_tied_at_twice_the_scale():
    model = build_model()
    tied = build_head("tied", model.cfg, model.embed)
    sq = build_head("sq_dist_bias", model.cfg, model.embed)
    with torch.no_grad():
        sq.b_v.copy_((model.embed.W_E**2).sum(-1))
    h = torch.randn(2, 4, model.cfg.d_model) * 3
    with torch.no_grad():
        p_sq = torch.softmax(sq(h).double(), -1)
        p_tied2 = torch.softmax(2 * tied(h).double(), -1)
    torch.testing.assert_close(p_sq, p_tied2, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ["sigma", "hybrid", "gaussian"])
def test_set_token_prior_gives_unigram_at_typical_distance(name):
    """With W_E = 0 every distance is ‖h‖ = sqrt(d_model) = the typical distance, so the head's
    softmax must equal softmax(log_prior) exactly (reference: torch.distributions)."""
    model = build_model()
    with torch.no_grad():
        model.embed.W_E.zero_()
    head = install_head(model, name)
    log_prior = torch.log_softmax(torch.randn(model.cfg.d_vocab) * 2, -1)
    log_prior = log_prior - log_prior.mean()
    assert head.set_token_prior(log_prior)
    h = torch.randn(1, 2, model.cfg.d_model)
    h = h / h.norm(dim=-1, keepdim=True) * math.sqrt(model.cfg.d_model)
    with torch.no_grad():
        got = torch.distributions.Categorical(logits=head(h)).probs
    ref = torch.distributions.Categorical(logits=log_prior).probs.expand_as(got)
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-3)
    # -d·σ heads: frequent tokens get a smaller σ; Gaussian -d²/2σ²: a wider (larger) σ
    sig = head.sigma()
    assert (sig > 0).all()
    corr = torch.corrcoef(torch.stack([sig, log_prior]))[0, 1]
    assert corr > 0.99 if name == "gaussian" else corr < -0.99


@pytest.mark.parametrize("name", ["linear", "tied", "neg_dist", "linear_scale", "context_mlp", "sq_dist_bias"])
def test_set_token_prior_is_noop_without_token_scales(name):
    model = build_model()
    head = install_head(model, name)
    before = {k: v.clone() for k, v in head.state_dict().items()}
    assert head.set_token_prior(torch.zeros(model.cfg.d_vocab)) is False
    for k, v in head.state_dict().items():
        assert torch.equal(v, before[k])


@pytest.mark.parametrize("name", ["linear_scale", "hybrid", "context_mlp"])
def test_context_scale_starts_constant_sqrt_d_model(name):
    model = build_model()
    head = install_head(model, name)
    neg = install_head(build_model(), "neg_dist")
    h = torch.randn(2, 5, model.cfg.d_model)
    with torch.no_grad():
        ratio = head(h) / neg(h)
    torch.testing.assert_close(ratio, torch.full_like(ratio, math.sqrt(model.cfg.d_model)), rtol=1e-4, atol=1e-4)


def test_kernel_parameter_groups():
    model = build_model()
    assert install_head(model, "linear").kernel_parameters() == []
    head = install_head(model, "hybrid")
    assert {id(p) for p in head.kernel_parameters()} == {id(p) for p in head.parameters()}
    assert len(head.kernel_parameters()) == 3


def test_tied_head_exposes_w_e_transposed_as_w_u():
    """A tied run's ``model.W_U`` is W_Eᵀ (what its logits use) and b_U is 0, so the analysis
    treats it like a pretrained tied model: W_U aliased to W_E, logits reused as h·e."""
    from geomlens.analysis.scoring import is_unembedding, target_matrices

    model = build_model(d_vocab=50)
    install_head(model, "tied")
    assert torch.equal(model.W_U, model.W_E.T) and torch.equal(model.b_U, torch.zeros(50))
    h = torch.randn(2, 3, model.cfg.d_model)
    assert torch.allclose(model.unembed(h), h @ model.W_U + model.b_U)
    mats, alias = target_matrices(model, ["W_E", "W_U"])
    assert alias == {"W_E": "W_E", "W_U": "W_E"} and list(mats) == ["W_E"]
    assert is_unembedding(model, mats["W_E"])
    assert "W_U" not in dict(model.named_parameters())  # a view, not a parameter
