"""The heads' fused distance op (`geomlens.heads.distance_op`): values and hand-written gradients
against autograd through the direct broadcast formula, the package's readable reference and
gradcheck (float64), for every combination of row scale, column scale, column bias and φ; the
compiled elementwise steps against the eager ones; the backend as a property of each head."""

from __future__ import annotations

import itertools

import pytest
import torch
from helpers import build_model

from geomlens.heads import build_head
from geomlens.heads import distance as head_distance
from geomlens.heads.distance_op import DistanceOp, _apply

pytestmark = pytest.mark.usefixtures("one_thread")

COMBOS = list(itertools.product([False, True], repeat=3))  # (row_scale, col_scale, col_bias)


def _inputs(n_batch=2, n_pos=3, d_vocab=11, d_model=6, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n_batch, n_pos, d_model, generator=g, dtype=dtype) * 2
    W_E = torch.randn(d_vocab, d_model, generator=g, dtype=dtype)
    a = torch.rand(n_batch, n_pos, 1, generator=g, dtype=dtype) + 0.5
    c = torch.rand(d_vocab, generator=g, dtype=dtype) + 0.5
    b = torch.randn(d_vocab, generator=g, dtype=dtype)
    return h, W_E, a, c, b


def _reference(h, W_E, a, c, b, squared):
    """b − a·c·φ by broadcasting over [batch, pos, d_vocab, d_model] (no matmul identity)."""
    sq = (h[:, :, None, :] - W_E[None, None]).pow(2).sum(-1)
    phi = sq if squared else (sq + head_distance.SQRT_EPS).sqrt()
    out = -phi
    if c is not None:
        out = out * c
    if a is not None:
        out = out * a
    return out + b if b is not None else out


def _call(squared, use, backend="eager"):
    def fn(h, W_E, *scales):
        it = iter(scales)
        a, c, b = (next(it) if u else None for u in use)
        kw = dict(squared=squared, row_scale=a, col_scale=c, col_bias=b)
        if backend == "reference":
            return head_distance.reference_distance_logits(h, W_E, **kw)
        return head_distance.distance_logits(h, W_E, op=DistanceOp(backend), **kw)
    return fn


@pytest.mark.parametrize("squared", [False, True])
@pytest.mark.parametrize("use", COMBOS, ids=lambda u: "abc" if u is None else "".join(
    n if x else "-" for n, x in zip("acb", u)))
def test_distance_logits_match_direct_formula_and_gradcheck(squared, use):
    h, W_E, a, c, b = _inputs()
    extra = [x for x, u in zip((a, c, b), use) if u]
    inputs = [x.requires_grad_(True) for x in (h, W_E, *extra)]
    fn = _call(squared, use)
    got = fn(*inputs)
    ref = _reference(*(x if u else None for x, u in zip((h, W_E, a, c, b), (1, 1, *use))),
                     squared=squared)
    readable = _call(squared, use, "reference")(*inputs)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(readable, ref, rtol=1e-10, atol=1e-10)
    weights = torch.randn(ref.shape, dtype=ref.dtype, generator=torch.Generator().manual_seed(1))
    g_got = torch.autograd.grad((got * weights).sum(), inputs)
    g_ref = torch.autograd.grad((ref * weights).sum(), inputs)
    g_readable = torch.autograd.grad((readable * weights).sum(), inputs)
    for x, y, z in zip(g_got, g_ref, g_readable):
        torch.testing.assert_close(x, y, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(z, y, rtol=1e-9, atol=1e-9)
    assert torch.autograd.gradcheck(fn, tuple(inputs))
    # each input alone (the backward skips the matmuls nobody asked for)
    for i in range(len(inputs)):
        alone = [x.detach().requires_grad_(j == i) for j, x in enumerate(inputs)]
        assert torch.autograd.gradcheck(fn, tuple(alone))


def _run_both(squared, use, dtype=torch.float32):
    """(logits, grads) with the compiled and with the eager elementwise steps."""
    h, W_E, a, c, b = _inputs(n_batch=2, n_pos=24, d_vocab=96, d_model=16, dtype=dtype, seed=2)
    extra = [x for x, u in zip((a, c, b), use) if u]
    weights = torch.randn(2, 24, 96, dtype=dtype, generator=torch.Generator().manual_seed(3))
    results = []
    for backend in ("compile", "eager"):
        inputs = [x.detach().clone().requires_grad_(True) for x in (h, W_E, *extra)]
        out = _call(squared, use, backend)(*inputs)
        grads = torch.autograd.grad((out * weights).sum(), inputs)
        results.append((out.detach(), grads))
    return results


@pytest.mark.parametrize("squared, use", [(False, (True, True, False)), (False, (False, False, False)),
                                          (True, (False, True, False)), (True, (False, False, True))])
def test_compiled_steps_give_the_eager_numbers(squared, use):
    """Equal up to the last bit of a square root (inductor's vector sqrt vs ATen's) and the
    summation order of the reductions."""
    (out_c, grads_c), (out_e, grads_e) = _run_both(squared, use)
    if squared:
        assert torch.equal(out_c, out_e)
    torch.testing.assert_close(out_c, out_e, rtol=1e-6, atol=1e-6)
    for x, y in zip(grads_c, grads_e):  # sums of terms of both signs: tolerance from the scale
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5 * float(y.abs().max()))


def test_compiled_backward_gradcheck():
    h, W_E, a, c, _ = _inputs()
    inputs = tuple(x.requires_grad_(True) for x in (h, W_E, a, c))
    assert torch.autograd.gradcheck(_call(False, (True, True, False), "compile"), inputs)


@pytest.mark.parametrize("name", ["hybrid", "gaussian"])
def test_backend_is_a_property_of_the_head(name):
    """Two heads in one process keep their own backends; every backend gives the reference's
    logits; an unknown backend is refused."""
    model = build_model()
    cfg = model.cfg
    first, second = build_head(name, cfg, model.embed), build_head(name, cfg, model.embed)
    first.backend = "eager"
    assert (first.backend, second.backend) == ("eager", head_distance.default_backend())
    assert first.distance_op is not second.distance_op
    h = torch.randn(2, 3, cfg.d_model)
    want = _with_backend(first, "reference").logits(h)
    for backend in ("eager", "compile", "auto"):
        torch.testing.assert_close(_with_backend(first, backend).logits(h), want,
                                   rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="backend"):
        first.backend = "fast"


def _with_backend(head, backend):
    head.backend = backend
    return head


def test_op_is_a_graph_break_in_a_compiled_model():
    """Dynamo must not trace the op (traced, the squared heads trained nothing on an H100); a
    compiled caller still gets the eager logits and gradients."""
    assert _apply._torchdynamo_disable
    torch.manual_seed(0)
    h = torch.randn(2, 5, 16, requires_grad=True)
    W_E = torch.randn(40, 16, requires_grad=True)
    c = torch.full((40,), 0.5)

    def loss(h, W_E):
        logits = _apply(DistanceOp("eager"), h, W_E, None, c, None, squared=True, negate=True,
                        eps=head_distance.SQRT_EPS)
        return logits.logsumexp(-1).sum()

    eager = torch.autograd.grad(loss(h, W_E), (h, W_E))
    compiled = torch.autograd.grad(torch.compile(loss, backend="eager")(h, W_E), (h, W_E))
    for a, b in zip(eager, compiled):
        torch.testing.assert_close(a, b)
