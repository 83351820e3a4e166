"""Float64 PyTorch reference of docs/spec/LOSS.md, for the Python tests.

Written from the specification's formulas (sections 2-6), independently
of the service's C++ engine and of tests/golden: values in float64, gradients
from torch.autograd. The losses of section 9 have their own reference in
test_section9.py. Inputs are taken as the float32 (or bf16/f16) values the
service actually receives, widened exactly to float64.
"""

import math

import torch
import torch.nn.functional as F

F64 = torch.float64


def class_weights(counts, beta=0.9999, scheme="effective_number"):
    """w of LOSS.md section 2, float64 [C]."""
    n = torch.as_tensor(counts, dtype=F64)
    present = n >= 1
    if scheme == "none":
        raw = torch.ones_like(n)
    elif scheme == "inverse_frequency" or (scheme == "effective_number" and beta == 1.0):
        raw = torch.where(present, 1.0 / n.clamp(min=1), torch.zeros_like(n))
    elif scheme == "inverse_sqrt_frequency":
        raw = torch.where(present, n.clamp(min=1).rsqrt(), torch.zeros_like(n))
    elif scheme == "effective_number":
        if beta == 0.0:
            effective = torch.ones_like(n)  # 1 - 0^n = 1 for n >= 1
        else:
            effective = -torch.expm1(n * math.log1p(beta - 1.0))
        raw = torch.where(present, (1.0 - beta) / effective, torch.zeros_like(n))
    else:
        raise ValueError(scheme)
    k = int((raw > 0).sum())
    return k * raw / raw.sum()


def _softplus(x):
    return x.clamp(min=0) + torch.log1p(torch.exp(-x.abs()))


def reference(logits, counts, labels=None, targets=None, *, loss_type="softmax",
              reduction="mean", beta=0.9999, gamma=2.0, scheme="effective_number",
              ignore_index=-100, sample_weights=None, upstream=None):
    """Returns (z, L, per_sample): z the float64 leaf (requires grad), L the
    reduced scalar of section 5 (for "none": sum_i u_i l_i), per_sample l_i."""
    z = torch.as_tensor(logits).detach().to(F64).clone().requires_grad_(True)
    b, c = z.shape
    w = class_weights(counts, beta, scheme)
    s = torch.ones(b, dtype=F64) if sample_weights is None else \
        torch.as_tensor(sample_weights).to(torch.float32).to(F64)
    if labels is not None:
        y = torch.as_tensor(labels, dtype=torch.int64)
        keep = y != ignore_index
        y0 = torch.where(keep, y, torch.zeros_like(y))
        t = F.one_hot(y0, c).to(F64) * keep[:, None]
        row_weight = torch.where(keep, s * w[y0], torch.zeros_like(s))
        omega = row_weight[:, None].expand(b, c)
    else:
        t = torch.as_tensor(targets).to(torch.float32).to(F64)
        keep = torch.ones(b, dtype=torch.bool)
        row_weight = None
        omega = s[:, None] * w[None, :]

    def cross_entropy(zz):
        lse = torch.logsumexp(zz, dim=1)
        return row_weight * (lse - (zz * t).sum(dim=1))

    if loss_type == "softmax":
        per = cross_entropy(z)
    elif loss_type == "sigmoid":
        per = (omega * (_softplus(z) - t * z)).sum(dim=1)
    elif loss_type == "focal":
        modulator = torch.exp(-gamma * (t * z + _softplus(-z)))
        per = (omega * modulator * (_softplus(z) - t * z)).sum(dim=1)
    elif loss_type == "softmax_bce":
        p = torch.softmax(z, dim=1)
        per = (omega * F.binary_cross_entropy(p, t, reduction="none")).sum(dim=1)
    else:
        raise ValueError(loss_type)
    per = torch.where(keep, per, torch.zeros_like(per))

    softmax_like = loss_type not in ("sigmoid", "focal")
    if reduction == "none":
        u = torch.ones(b, dtype=F64) if upstream is None else \
            torch.as_tensor(upstream).to(torch.float32).to(F64)
        return z, (u * per).sum(), per
    if reduction == "sum":
        d = 1.0
    elif reduction == "mean":
        d = float(keep.sum()) if softmax_like else float((t * keep[:, None]).sum())
    elif reduction == "element_mean":
        d = float(keep.sum()) * c
    elif reduction == "weighted_mean":
        d = float(row_weight.sum())
    else:
        raise ValueError(reduction)
    if d == 0.0:
        return z, per.sum() * 0.0, per
    return z, per.sum() / d, per


def gradient(z, output, grad_output=None):
    """d(output)/dz by autograd (grad_output for a vector output)."""
    (g,) = torch.autograd.grad(output, z, grad_outputs=grad_output, allow_unused=True)
    return torch.zeros_like(z) if g is None else g
