"""The H100 diagnosis behind README § KNN heads (GPU): train micro-70m with one head for 80 steps
(16 x 256 tokens of train_gpu) and print the loss every 20 steps.

    python diag_compile.py HEAD VARIANT COMPILE AUTOCAST [DEVICE] [MODEL]

VARIANT old = the package as it was (dynamo traced the distance op), dis = the op wrapped in
torch.compiler.disable (the fix now in the package), new = explicit float32 with autocast off
(did not help). Runs after `source scripts/gpu_env.sh`, on the package as of 505e202 (the op
has since moved to geomlens/heads/distance_op.py with another signature: check 505e202 out to
rerun this)."""
import sys
import time

import torch
import torch.nn.functional as F
from transformer_lens import HookedTransformer

import geomlens.heads.distance as dist
from geomlens.heads import install_head
from geomlens.models.micro import micro_config
from geomlens.models.tokens import load_token_stream


def new_apply(h, W_E, a, c, b, *, squared, negate):
    """explicit float32, autocast off (candidate fix)"""
    batch, pos, d_model = h.shape
    with torch.autocast(h.device.type, enabled=False):
        h, W_E, a, c, b = (None if t is None else t.float() for t in (h, W_E, a, c, b))
        a = None if a is None else a.reshape(batch * pos, 1)
        backward = torch.is_grad_enabled() and any(x is not None and x.requires_grad for x in (h, W_E, a, c, b))
        out = dist._DistanceOp.apply(h.reshape(batch * pos, d_model), W_E, a, c, b, squared, dist.SQRT_EPS, negate, backward)
    return out.reshape(batch, pos, -1)

head, variant, comp, ac = sys.argv[1], sys.argv[2], sys.argv[3] == "1", sys.argv[4] == "1"
if variant == "new":
    dist._apply = new_apply
if variant == "dis":
    dist._apply = torch.compiler.disable(dist._apply)
dev = sys.argv[5] if len(sys.argv) > 5 else "cuda"
torch.manual_seed(0)
cfg = micro_config(sys.argv[6] if len(sys.argv) > 6 else "micro-70m", seed=0, device=dev)
m = HookedTransformer(cfg)
install_head(m, head)
m.train()
f = torch.compile(m) if comp else m
opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
s = load_token_stream("train_gpu")
g = torch.Generator().manual_seed(0)
t0 = time.time()
out = []
for step in range(61):
    i = torch.randint(0, len(s) - 257, (16,), generator=g)
    x = torch.stack([s[j:j+257] for j in i.tolist()]).to(dev)
    with torch.autocast(dev, dtype=torch.bfloat16, enabled=ac):
        logits = f(x[:, :-1])
    loss = F.cross_entropy(logits.float().flatten(0, 1), x[:, 1:].flatten())
    loss.backward()
    opt.step()
    opt.zero_grad()
    if step % 20 == 0:
        out.append(f"{step}:{loss.item():.3f}")
print(f"{head:12s} {variant} compile={comp:d} autocast={ac:d} dtype={logits.dtype} {' '.join(out)} ({time.time()-t0:.0f}s)", flush=True)
