"""The distance op's reduced-precision matmuls (TF32, bf16 h·e with float32 norms): close to
float32 op by op, and a KNN head's training loss curve stays within the noise of float32."""

import pytest
import torch
import torch.nn.functional as F

from geomlens.heads import matmul_precision as MP
from geomlens.heads.distance import distance_logits
from geomlens.heads.distance_op import DistanceOp


def test_round_operand_matches_the_formats():
    x = torch.randn(10_000, generator=torch.Generator().manual_seed(0))
    assert torch.equal(MP.round_operand(x, "bf16"), x.bfloat16().float())
    t = MP.round_operand(x, "tf32")
    assert (t.view(torch.int32) & 0x1FFF).eq(0).all()  # 10 mantissa bits left
    assert ((t - x).abs() <= x.abs() * 2.0**-11).all()  # rounded to nearest
    assert torch.equal(MP.round_operand(x, "float32"), x)
    with pytest.raises(ValueError, match="matmul precision"):
        MP.set_matmul_precision("fp8")


@pytest.mark.parametrize("precision,tol", [("tf32", 2e-3), ("bf16", 2e-2)])
@pytest.mark.parametrize("squared", [False, True])
def test_op_close_to_float32(precision, tol, squared):
    g = torch.Generator().manual_seed(0)
    h = torch.randn(2, 16, 32, generator=g, requires_grad=True)
    E = torch.randn(100, 32, generator=g, requires_grad=True)
    c = (torch.rand(100, generator=g) + 0.5).requires_grad_()
    w = torch.randn(2, 16, 100, generator=g)
    outs = {}
    for p in ("float32", precision):
        with MP.use_matmul_precision(p):
            out = distance_logits(h, E, squared=squared, col_scale=c, op=DistanceOp("eager"))
            outs[p] = (out, *torch.autograd.grad((out * w).sum(), [h, E, c]))
    for ref, got in zip(outs["float32"], outs[precision]):
        assert not torch.equal(ref, got)  # the precision did change the arithmetic
        assert (got - ref).abs().max() <= tol * ref.abs().max()


def _loss_curve(precision: str, data_seed: int, steps: int = 150, vocab: int = 256,
                d_model: int = 32) -> torch.Tensor:
    """Train a neg_dist head's logits (an input embedding h and the head's W_E) on a bigram
    stream t[i+1] = t[i] + 7..9 (mod vocab): the distance op's forward and hand-written
    backward at ``precision``, everything else float32."""
    torch.manual_seed(0)  # the same initialization for every curve
    inp = torch.nn.Embedding(vocab, d_model)
    W_E = torch.nn.Parameter(torch.randn(vocab, d_model) * 0.5)
    opt = torch.optim.Adam([*inp.parameters(), W_E], lr=3e-2)
    g = torch.Generator().manual_seed(data_seed)
    op, losses = DistanceOp("eager"), []
    with MP.use_matmul_precision(precision):
        for _ in range(steps):
            x = torch.randint(0, vocab, (8, 32), generator=g)
            y = (x + 7 + torch.randint(0, 3, x.shape, generator=g)) % vocab
            logits = distance_logits(inp(x), W_E, squared=False, op=op)
            loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
            loss.backward()
            opt.step()
            opt.zero_grad()
            losses.append(loss.item())
    return torch.tensor(losses)


def test_knn_head_loss_curves_within_float32_noise():
    ref, other_data = _loss_curve("float32", 0), _loss_curve("float32", 1)
    assert ref[-10:].mean() < ref[:5].mean() - 1.0, ref  # it learned
    noise = (ref - other_data).abs()[10:].max()  # float32, same init, other batches
    for p in ("tf32", "bf16"):
        curve = _loss_curve(p, 0)
        diff = (curve - ref).abs()[10:].max()
        assert diff <= noise, (p, float(diff), float(noise))
