#!/usr/bin/python3
"""Independent float64 oracle for cbloss (docs: tests/golden/README.md).

Run as:  /usr/bin/python3 tests/golden/make_golden.py
Writes:  tests/golden/golden_cases.json (LOSS.md sections 1-8) and
         tests/golden/golden_cases_section9.json (the count-aware losses and
         deferred re-weighting of LOSS.md section 9), next to this script

Everything is computed straight from docs/spec/LOSS.md sections 2-6 and 9 in
PyTorch float64; gradients come from autograd (loss.backward() w.r.t. the
logits). Every case is cross-checked against independent formulations
(torch built-ins, the closed-form gradients of LOSS.md 6, a re-implementation
of the seed's PyTorch port, exact decimal class weights); any disagreement
aborts the script before anything is written.

The script is deterministic: every random case draws from a numpy PCG64
generator seeded with crc32 of the case name.
"""

import decimal
import json
import math
import os
import struct
import sys
import zlib

import numpy as np
import torch
import torch.nn.functional as F

torch.set_default_dtype(torch.float64)
torch.use_deterministic_algorithms(True)

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "golden_cases.json")
OUT9 = os.path.join(HERE, "golden_cases_section9.json")

LOSS_TYPES = ["SOFTMAX", "SIGMOID", "FOCAL", "SOFTMAX_BCE"]
# LOSS.md 9: labels mode only; the first three are SOFTMAX on shifted logits z'
SECTION9_TYPES = ["BALANCED_SOFTMAX", "LOGIT_ADJUSTED", "LDAM", "SOFTMAX_FOCAL"]
SHIFTED_TYPES = ("BALANCED_SOFTMAX", "LOGIT_ADJUSTED", "LDAM")
SOFTMAX_LIKE = ("SOFTMAX", "SOFTMAX_BCE") + tuple(SECTION9_TYPES)  # MEAN divides by N
NEEDS_COUNTS = ("BALANCED_SOFTMAX", "LOGIT_ADJUSTED", "LDAM", "SOFTMAX_FOCAL")  # n_j >= 1 for every class
DEFAULT_TAU, DEFAULT_MAX_MARGIN, DEFAULT_SCALE = 1.0, 0.5, 30.0
REDUCTIONS = ["MEAN", "SUM", "ELEMENT_MEAN", "WEIGHTED_MEAN", "NONE"]
SCHEMES = ["EFFECTIVE_NUMBER", "INVERSE_FREQUENCY", "INVERSE_SQRT_FREQUENCY", "NONE"]

CHECKS = {}  # cross-check name -> number of cases it ran on


def tick(name):
    CHECKS[name] = CHECKS.get(name, 0) + 1


def close(a, b, rtol, atol=0.0):
    a = torch.as_tensor(a, dtype=torch.float64)
    b = torch.as_tensor(b, dtype=torch.float64)
    return bool(torch.all(torch.abs(a - b) <= atol + rtol * torch.abs(b)))


def grad_close(g, g_ref, rtol=1e-10):
    """Gradient agreement in the style of LOSS.md 7, but far tighter."""
    scale = float(torch.max(torch.abs(g_ref))) if g_ref.numel() else 0.0
    return bool(torch.all(torch.abs(g - g_ref) <= rtol * scale + 1e-300))


# ---------------------------------------------------------------------------
# LOSS.md 2: class weights
# ---------------------------------------------------------------------------

def one_minus_beta_pow(beta, n):
    """1 - beta^n as -expm1(n * log1p(beta - 1)), for n >= 1, beta in [0, 1)."""
    if beta == 0.0:
        return 1.0  # 0^n = 0 for n >= 1; log1p(-1) = -inf would give the same
    return -math.expm1(n * math.log1p(beta - 1.0))


def class_weights(counts, scheme, beta):
    if scheme == "NONE":
        return [1.0] * len(counts)
    raw = []
    for n in counts:
        if n == 0:
            raw.append(0.0)
        elif scheme == "INVERSE_FREQUENCY" or (scheme == "EFFECTIVE_NUMBER" and beta == 1.0):
            raw.append(1.0 / n)
        elif scheme == "INVERSE_SQRT_FREQUENCY":
            raw.append(1.0 / math.sqrt(n))
        elif scheme == "EFFECTIVE_NUMBER":
            raw.append((1.0 - beta) / one_minus_beta_pow(beta, n))
        else:
            raise ValueError(scheme)
    k = sum(1 for r in raw if r > 0.0)
    if k == 0:
        raise ValueError("every count is 0: FAILED_PRECONDITION")
    total = math.fsum(raw)
    return [k * r / total for r in raw]


def class_weights_decimal(counts, scheme, beta):
    """Same weights with 60-digit decimal arithmetic (no expm1 tricks)."""
    ctx = decimal.Context(prec=60)
    D = decimal.Decimal
    if scheme == "NONE":
        return [1.0] * len(counts)
    b = D(beta)  # exact value of the float64
    raw = []
    for n in counts:
        if n == 0:
            raw.append(D(0))
        elif scheme == "INVERSE_FREQUENCY" or (scheme == "EFFECTIVE_NUMBER" and beta == 1.0):
            raw.append(ctx.divide(D(1), D(n)))
        elif scheme == "INVERSE_SQRT_FREQUENCY":
            raw.append(ctx.divide(D(1), ctx.sqrt(D(n))))
        else:
            raw.append(ctx.divide(ctx.subtract(D(1), b), ctx.subtract(D(1), ctx.power(b, n))))
    k = sum(1 for r in raw if r > 0)
    total = sum(raw, D(0))
    return [float(ctx.divide(ctx.multiply(D(k), r), total)) for r in raw]


def ldam_margins(counts, max_margin):
    """LOSS.md 9: Delta_j = max_margin * n_j^(-1/4) / max_k n_k^(-1/4) (counts >= 1)."""
    q = [float(n) ** -0.25 for n in counts]
    qmax = max(q)
    return [max_margin * x / qmax for x in q]


def weights_used(case):
    """(configured weights of LOSS.md 2, weights actually applied). Deferred
    re-weighting (LOSS.md 9): for epoch < drw_start_epoch every weight is 1."""
    cw = class_weights(case["class_counts"], case["scheme"], case["beta"])
    if "drw_start_epoch" in case and case["epoch"] < case["drw_start_epoch"]:
        return cw, [1.0] * len(cw)
    return cw, cw


# ---------------------------------------------------------------------------
# LOSS.md 4-6: the reference, float64 + autograd
# ---------------------------------------------------------------------------

def split(z):
    """zp = max(z,0), zn = min(z,0), L1 = log1p(exp(-|z|)), written with
    torch.where on safe inputs so that autograd is exact everywhere
    (d/dz sp(z) = 0.5 at z = 0, no inf*0 in unused branches)."""
    pos = z >= 0
    zero = torch.zeros_like(z)
    zp = torch.where(pos, z, zero)
    zn = torch.where(pos, zero, z)
    neg_abs = torch.where(pos, -zp, zn)  # -|z|
    l1 = torch.log1p(torch.exp(neg_abs))
    return zp, zn, l1


def softplus(z):
    zp, _, l1 = split(z)
    return zp + l1


def prepare(case):
    """Tensors shared by the reference and by the cross-checks."""
    B, C = case["rows"], case["cols"]
    z = torch.tensor(case["logits"], dtype=torch.float64).reshape(B, C)
    w = torch.tensor(case["expected_class_weights"], dtype=torch.float64)
    s = torch.tensor(case.get("sample_weights", [1.0] * B), dtype=torch.float64)
    u = torch.tensor(case.get("upstream", [1.0] * B), dtype=torch.float64)
    if "labels" in case:
        y = torch.tensor(case["labels"], dtype=torch.int64)
        valid = y != case["ignore_index"]
        y_safe = torch.where(valid, y, torch.zeros_like(y))
        t = F.one_hot(y_safe, C).to(torch.float64) * valid[:, None].to(torch.float64)
        row_w = torch.where(valid, s * w[y_safe], torch.zeros_like(s))
        omega = row_w[:, None].expand(B, C).clone()
    else:
        y = y_safe = None
        valid = torch.ones(B, dtype=torch.bool)
        t = torch.tensor(case["targets"], dtype=torch.float64).reshape(B, C)
        row_w = None
        omega = s[:, None] * w[None, :]
    p = dict(B=B, C=C, z=z, w=w, s=s, u=u, y=y, y_safe=y_safe, valid=valid,
             t=t, row_w=row_w, omega=omega)
    if case["loss_type"] in SECTION9_TYPES:
        p["n"] = torch.tensor([float(n) for n in case["class_counts"]], dtype=torch.float64)
        p["tau"] = case["tau"]
        p["max_margin"] = case["max_margin"]
        p["ldam_scale"] = case["scale"]
        if case["loss_type"] == "LDAM":
            p["margins"] = torch.tensor(ldam_margins(case["class_counts"], case["max_margin"]),
                                        dtype=torch.float64)
    return p


def shifted_logits(loss_type, z, p):
    """z' of LOSS.md 9 (differentiable in z). Ignored rows have t = 0 (masked later)."""
    n = p["n"]
    if loss_type == "BALANCED_SOFTMAX":
        return z + torch.log(n)[None, :]
    if loss_type == "LOGIT_ADJUSTED":
        return z + (p["tau"] * torch.log(n / n.sum()))[None, :]
    if loss_type == "LDAM":
        return p["ldam_scale"] * (z - p["t"] * p["margins"][None, :])
    raise ValueError(loss_type)


def softmax_focal_factor(lp, gamma):
    """(1 - p_t)^gamma * (-log p_t) from lp = log p_t, with 1 - p_t = -expm1(lp).
    Where p_t rounds to exactly 1 (lp == 0) and gamma > 0 the value is 0 and so
    is the derivative (the limit: (1-p_t)^(gamma-1) * (-log p_t) ~ (1-p_t)^gamma);
    the naive pow would give 0 * inf = NaN there, so that branch is fed a safe
    input and discarded by torch.where."""
    if gamma == 0.0:
        return -lp
    one = lp == 0.0
    lp_safe = torch.where(one, torch.full_like(lp, -1.0), lp)
    val = torch.pow(-torch.expm1(lp_safe), gamma) * (-lp_safe)
    return torch.where(one, torch.zeros_like(lp), val)


def per_sample(loss_type, z, p, gamma):
    """Unreduced l_i (LOSS.md 4), before masking ignored rows."""
    t, omega = p["t"], p["omega"]
    if loss_type == "SOFTMAX":
        logp = torch.log_softmax(z, dim=1)
        return -p["row_w"] * logp.gather(1, p["y_safe"][:, None]).squeeze(1)
    if loss_type in ("SIGMOID", "FOCAL"):
        zp, zn, l1 = split(z)
        b = (zp - t * z) + l1  # sp(z) - t*z, grouped to avoid cancellation
        if loss_type == "SIGMOID":
            return (omega * b).sum(dim=1)
        m = torch.exp(-gamma * ((t * z - zn) + l1))  # exp(-gamma*(t*z + sp(-z)))
        return (omega * m * b).sum(dim=1)
    if loss_type == "SOFTMAX_BCE":
        prob = torch.softmax(z, dim=1)
        return F.binary_cross_entropy(prob, t, weight=omega, reduction="none").sum(dim=1)
    if loss_type in SHIFTED_TYPES:
        logp = torch.log_softmax(shifted_logits(loss_type, z, p), dim=1)
        return -p["row_w"] * logp.gather(1, p["y_safe"][:, None]).squeeze(1)
    if loss_type == "SOFTMAX_FOCAL":
        lp = torch.log_softmax(z, dim=1).gather(1, p["y_safe"][:, None]).squeeze(1)
        return p["row_w"] * softmax_focal_factor(lp, gamma)
    raise ValueError(loss_type)


def denominator(case, p):
    lt, red = case["loss_type"], case["reduction"]
    n = float(p["valid"].sum())
    if red == "MEAN":
        if lt in SOFTMAX_LIKE:
            return n
        return float((p["t"] * p["valid"][:, None]).sum())  # P
    if red in ("SUM", "NONE"):
        return 1.0
    if red == "ELEMENT_MEAN":
        return n * p["C"]
    if red == "WEIGHTED_MEAN":
        return float(p["row_w"].sum())
    raise ValueError(red)


def reference(case):
    p = prepare(case)
    z = p["z"].clone().requires_grad_(True)
    raw = per_sample(case["loss_type"], z, p, case["gamma"])
    l = torch.where(p["valid"], raw, torch.zeros_like(raw))
    d = denominator(case, p)
    if case["reduction"] == "NONE":
        L = (p["u"] * l).sum()
        dl = p["u"].clone()
    elif d == 0.0:
        L = None
        dl = torch.zeros(p["B"])
    else:
        L = l.sum() / d
        dl = torch.full((p["B"],), 1.0 / d)
    if L is None:
        loss = 0.0
        grad = torch.zeros(p["B"], p["C"])
    else:
        L.backward()
        loss = float(L)
        grad = z.grad.detach().clone()
    res = dict(loss=loss, l=l.detach().clone(), grad=grad, D=d, dl=dl,
               num_samples=int(p["valid"].sum()))
    assert math.isfinite(loss), case["name"]
    assert torch.all(torch.isfinite(res["l"])), case["name"]
    assert torch.all(torch.isfinite(grad)), case["name"]
    assert torch.all(grad[~p["valid"]] == 0), case["name"]
    assert torch.all(res["l"][~p["valid"]] == 0), case["name"]
    return p, res


# ---------------------------------------------------------------------------
# Cross-checks
# ---------------------------------------------------------------------------

def analytic_gradient(case, p, res):
    """LOSS.md 6 closed forms, G_ij = dl_i-scale * (...)."""
    z, t, omega, dl = p["z"], p["t"], p["omega"], res["dl"]
    lt, gamma = case["loss_type"], case["gamma"]
    if lt == "SOFTMAX":
        sm = torch.softmax(z, dim=1)
        g = (p["row_w"] * dl)[:, None] * (sm - t)
    elif lt == "SIGMOID":
        g = omega * dl[:, None] * (torch.sigmoid(z) - t)
    elif lt == "FOCAL":
        sig = torch.sigmoid(z)
        zp, zn, l1 = split(z)
        b = (zp - t * z) + l1
        m = torch.exp(-gamma * ((t * z - zn) + l1))
        g = omega * dl[:, None] * m * ((sig - t) - gamma * (sig + t - 1.0) * b)
    elif lt == "SOFTMAX_BCE":
        prob = torch.softmax(z, dim=1)
        # torch's BCE backward: (p - t) / max(p (1 - p), EPSILON), where EPSILON is the
        # float32 constant 1e-12 = 9.999999960041972e-13 even for float64 tensors
        eps = float(np.float32(1e-12))
        gp = omega * dl[:, None] * (prob - t) / torch.clamp(prob * (1.0 - prob), min=eps)
        g = prob * (gp - (gp * prob).sum(dim=1, keepdim=True))
    elif lt in SHIFTED_TYPES:
        # softmax CE on z': (row_w/D) (softmax(z') - t) dz'/dz, dz'/dz = scale for LDAM, 1 else
        sm = torch.softmax(shifted_logits(lt, z, p), dim=1)
        g = (p["row_w"] * dl)[:, None] * (sm - t)
        if lt == "LDAM":
            g = g * p["ldam_scale"]
    elif lt == "SOFTMAX_FOCAL":
        # l = r x^g b with lp = log p_t, x = 1 - p_t = -expm1(lp), b = -lp:
        # dl/dlp = -r x^g (1 + g p_t q), q = b/x = lp/expm1(lp) (-> 1 at lp = 0),
        # dlp/dz_j = t_j - p_j, so G_ij = (r/D) x^g (1 + g p_t q) (p_ij - t_ij)
        sm = torch.softmax(z, dim=1)
        lp = torch.log_softmax(z, dim=1).gather(1, p["y_safe"][:, None]).squeeze(1)
        pt = torch.exp(lp)
        x = -torch.expm1(lp)
        q = torch.where(lp == 0.0, torch.ones_like(lp), lp / torch.expm1(lp))
        coef = torch.pow(x, gamma) * (1.0 + gamma * pt * q)  # 0^0 = 1
        g = (p["row_w"] * dl * coef)[:, None] * (sm - t)
    g = g * p["valid"][:, None]
    if res["D"] == 0.0 and case["reduction"] != "NONE":
        g = torch.zeros_like(g)
    return g


def cross_check(case, p, res):
    name, lt, red = case["name"], case["loss_type"], case["reduction"]
    z, t, omega, valid = p["z"], p["t"], p["omega"], p["valid"]
    l, grad, d = res["l"], res["grad"], res["D"]
    max_abs_z = float(torch.max(torch.abs(z)))

    # (a) autograd vs the closed-form gradients of LOSS.md 6
    g_an = analytic_gradient(case, p, res)
    assert grad_close(grad, g_an, 1e-9), (name, "analytic gradient", (grad - g_an).abs().max())
    tick("autograd gradient == closed-form gradient of LOSS.md 6")

    # (b) reduction arithmetic: scalar == sum(l)/D or sum(u*l)
    if red == "NONE":
        assert close(res["loss"], float((p["u"] * l).sum()), 1e-14, 1e-300), name
    elif d > 0:
        assert close(res["loss"], math.fsum(l.tolist()) / d, 1e-12, 1e-300), name
    else:
        assert res["loss"] == 0.0 and torch.all(grad == 0), name
    tick("scalar loss == reduction of per-sample losses (LOSS.md 5)")

    # (c) per-loss built-in cross-checks
    if lt == "SOFTMAX":
        ce_none = F.cross_entropy(z, p["y"], weight=p["w"], ignore_index=case["ignore_index"],
                                  reduction="none")
        assert close(l, p["s"] * ce_none, 1e-12, 1e-300), (name, "cross_entropy none")
        tick("SOFTMAX l_i == s_i * F.cross_entropy(weight=w, reduction='none')")
        if torch.all(p["s"] == 1.0):
            zz = z.clone().requires_grad_(True)
            if red == "SUM":
                Lc = F.cross_entropy(zz, p["y"], weight=p["w"], ignore_index=case["ignore_index"],
                                     reduction="sum")
            elif red == "WEIGHTED_MEAN" and d > 0:
                Lc = F.cross_entropy(zz, p["y"], weight=p["w"], ignore_index=case["ignore_index"],
                                     reduction="mean")
            elif red == "MEAN" and d > 0:
                Lc = F.cross_entropy(zz, p["y"], weight=p["w"], ignore_index=case["ignore_index"],
                                     reduction="sum") / d
            elif red == "ELEMENT_MEAN" and d > 0:
                Lc = F.cross_entropy(zz, p["y"], weight=p["w"], ignore_index=case["ignore_index"],
                                     reduction="sum") / d
            elif red == "NONE":
                Lc = (p["u"] * F.cross_entropy(zz, p["y"], weight=p["w"],
                                               ignore_index=case["ignore_index"],
                                               reduction="none")).sum()
            else:
                Lc = None
            if Lc is not None:
                Lc.backward()
                assert close(res["loss"], float(Lc), 1e-12, 1e-300), (name, "cross_entropy", float(Lc))
                assert grad_close(grad, zz.grad), (name, "cross_entropy grad")
                tick("SOFTMAX loss+grad == F.cross_entropy(weight=w, reduction=sum/mean/none) (s = 1)")
        # weighted cross_entropy with weight = w*s-like semantics for WEIGHTED_MEAN:
        # with sample weights, torch has no per-sample weight; check D directly.
        if red == "WEIGHTED_MEAN":
            dd = math.fsum(float(p["s"][i] * p["w"][p["y"][i]]) for i in range(p["B"]) if valid[i])
            assert close(d, dd, 1e-14, 1e-300), name
    if lt in ("SIGMOID", "FOCAL"):
        bce = F.binary_cross_entropy_with_logits(z, t, weight=omega, reduction="none")
        bce = (bce * valid[:, None]).sum(dim=1)
        if lt == "SIGMOID":
            assert close(l, bce, 1e-12, 1e-290), (name, "bce_with_logits", l, bce)
            zz = z.clone().requires_grad_(True)
            e = F.binary_cross_entropy_with_logits(zz, t, weight=omega, reduction="none")
            if red == "NONE" or d > 0:
                (((e * valid[:, None]).sum(dim=1)) * res["dl"]).sum().backward()
                assert grad_close(grad, zz.grad), (name, "bce_with_logits grad")
            tick("SIGMOID l_i and grad == F.binary_cross_entropy_with_logits(weight=omega)")
            if red == "ELEMENT_MEAN" and bool(torch.all(valid)):
                ref = float(F.binary_cross_entropy_with_logits(z, t, weight=omega, reduction="mean"))
                assert close(res["loss"], ref, 1e-12, 1e-300), name
                tick("SIGMOID ELEMENT_MEAN == F.binary_cross_entropy_with_logits(weight=omega, 'mean')")
        else:
            # FOCAL, gamma = 0 -> SIGMOID
            c0 = dict(case, gamma=0.0, loss_type="SIGMOID")
            _, r0 = reference(c0)
            c1 = dict(case, gamma=0.0)
            _, r1 = reference(c1)
            assert close(r1["l"], r0["l"], 1e-13, 1e-300) and close(r1["loss"], r0["loss"], 1e-13, 1e-300), name
            assert grad_close(r1["grad"], r0["grad"], 1e-12), name
            tick("FOCAL with gamma = 0 == SIGMOID (loss, per-sample, grad)")
            # FOCAL on hard targets, moderate logits: (1 - p_t)^gamma * BCE
            hard = bool(torch.all((t == 0) | (t == 1)))
            if hard and max_abs_z <= 30.0:
                zz = z.clone().requires_grad_(True)
                pr = torch.sigmoid(zz)
                pt = torch.where(t == 1, pr, 1.0 - pr)
                e = F.binary_cross_entropy_with_logits(zz, t, reduction="none")
                alt = (omega * torch.pow(1.0 - pt, case["gamma"]) * e * valid[:, None]).sum(dim=1)
                assert close(l, alt.detach(), 1e-10, 1e-300), (name, "pow focal", l, alt)
                if red == "NONE" or d > 0:
                    (alt * res["dl"]).sum().backward()
                    assert grad_close(grad, zz.grad, 1e-9), (name, "pow focal grad")
                tick("FOCAL (hard targets, |z| <= 30) == omega*(1-p_t)^gamma*BCE (loss and grad)")
    if lt in SECTION9_TYPES:
        cross_check9(case, p, res)
    if "drw_start_epoch" in case:
        drw_check(case, res)
    if lt == "SOFTMAX_BCE":
        prob = torch.softmax(z, dim=1)
        alt = -(t * torch.clamp(torch.log(prob), min=-100.0)
                + (1.0 - t) * torch.clamp(torch.log(1.0 - prob), min=-100.0))
        alt = (omega * alt * valid[:, None]).sum(dim=1)
        assert close(l, alt, 1e-10, 1e-12), (name, "softmax_bce formula", l, alt)
        tick("SOFTMAX_BCE l_i == LOSS.md 4 formula with clamped logs")


def variant(case, drop=(), **changes):
    """A copy of a case with some inputs changed (class weights recomputed)."""
    v = {k: x for k, x in case.items() if k not in drop and k != "expected_class_weights"}
    v.update(changes)
    v["expected_class_weights"] = weights_used(v)[1]
    return v


def same_result(r, r_ref, rtol, what):
    """loss, per-sample losses and gradient agree (relative to the largest element)."""
    assert abs(r["loss"] - r_ref["loss"]) <= rtol * abs(r_ref["loss"]), (what, r["loss"], r_ref["loss"])
    assert grad_close(r["l"], r_ref["l"], rtol), (what, "per-sample", r["l"], r_ref["l"])
    assert grad_close(r["grad"], r_ref["grad"], rtol), (what, "gradient",
                                                        (r["grad"] - r_ref["grad"]).abs().max())


def ce_check9(case, p, res):
    """BALANCED_SOFTMAX / LOGIT_ADJUSTED / LDAM against F.cross_entropy on shifted logits
    built independently of shifted_logits() (other formulas for the same shift)."""
    name, lt, red = case["name"], case["loss_type"], case["reduction"]
    counts, C = case["class_counts"], p["C"]
    if lt == "BALANCED_SOFTMAX":
        shift = torch.tensor([math.log(n) for n in counts])
        zfun = lambda zz: zz + shift  # noqa: E731
    elif lt == "LOGIT_ADJUSTED":
        total = sum(counts)  # exact (python int)
        shift = torch.tensor([case["tau"] * (math.log(n) - math.log(total)) for n in counts])
        zfun = lambda zz: zz + shift  # noqa: E731
    else:
        nmin = min(counts)  # max_k n_k^(-1/4) = nmin^(-1/4)
        marg = torch.tensor([case["max_margin"] * (nmin / n) ** 0.25 for n in counts])
        assert close(marg, p["margins"], 1e-14, 1e-300), (name, "margins", marg, p["margins"])
        tick("LDAM margins == max_margin * (min n / n_j)^(1/4) (1e-14)")
        onehot = F.one_hot(p["y_safe"], C).to(torch.float64)
        zfun = lambda zz: case["scale"] * (zz - onehot * marg[None, :])  # noqa: E731
    ii = case["ignore_index"]
    ce_none = F.cross_entropy(zfun(p["z"]), p["y"], weight=p["w"], ignore_index=ii, reduction="none")
    assert grad_close(res["l"], p["s"] * ce_none, 1e-10), (name, "cross_entropy none", res["l"], ce_none)
    tick(f"{lt} l_i == s_i * F.cross_entropy(z', weight=w, reduction='none')")
    if not bool(torch.all(p["s"] == 1.0)):
        return
    d = res["D"]
    zz = p["z"].clone().requires_grad_(True)
    kw = dict(weight=p["w"], ignore_index=ii)
    if red == "SUM":
        Lc = F.cross_entropy(zfun(zz), p["y"], reduction="sum", **kw)
    elif red == "WEIGHTED_MEAN" and d > 0:
        Lc = F.cross_entropy(zfun(zz), p["y"], reduction="mean", **kw)
    elif red in ("MEAN", "ELEMENT_MEAN") and d > 0:
        Lc = F.cross_entropy(zfun(zz), p["y"], reduction="sum", **kw) / d
    elif red == "NONE":
        Lc = (p["u"] * F.cross_entropy(zfun(zz), p["y"], reduction="none", **kw)).sum()
    else:
        return
    Lc.backward()
    assert close(res["loss"], float(Lc), 1e-10, 1e-300), (name, "cross_entropy", res["loss"], float(Lc))
    assert grad_close(res["grad"], zz.grad, 1e-10), (name, "cross_entropy grad")
    tick(f"{lt} loss+grad (w.r.t. original z) == F.cross_entropy(z', weight=w) (s = 1)")


def cross_check9(case, p, res):
    name, lt = case["name"], case["loss_type"]
    z, valid = p["z"], p["valid"]
    if lt in SHIFTED_TYPES:
        ce_check9(case, p, res)
    if lt in ("BALANCED_SOFTMAX", "LOGIT_ADJUSTED"):
        # tau = 1 shifts by log n_j - log sum_k n_k: the same loss as BALANCED_SOFTMAX
        _, r_bs = reference(variant(case, loss_type="BALANCED_SOFTMAX"))
        _, r_la1 = reference(variant(case, loss_type="LOGIT_ADJUSTED", tau=1.0))
        same_result(r_la1, r_bs, 1e-10, (name, "LOGIT_ADJUSTED tau=1 vs BALANCED_SOFTMAX"))
        tick("LOGIT_ADJUSTED with tau = 1 == BALANCED_SOFTMAX (loss, per-sample, grad)")
        # tau = 0: plain SOFTMAX
        _, r_sm = reference(variant(case, loss_type="SOFTMAX"))
        _, r_la0 = reference(variant(case, loss_type="LOGIT_ADJUSTED", tau=0.0))
        same_result(r_la0, r_sm, 1e-14, (name, "LOGIT_ADJUSTED tau=0 vs SOFTMAX"))
        tick("LOGIT_ADJUSTED with tau = 0 == SOFTMAX (loss, per-sample, grad)")
        if len(set(case["class_counts"])) == 1:  # equal counts: a constant shift
            same_result(res, r_sm, 1e-12, (name, "equal counts vs SOFTMAX"))
            tick("BALANCED_SOFTMAX / LOGIT_ADJUSTED with equal counts == SOFTMAX")
    if lt == "LDAM":
        m = p["margins"]
        assert abs(float(m.max()) - case["max_margin"]) <= 1e-15 * case["max_margin"], name
        assert bool(torch.all(m > 0)), name
        # max_margin -> 0 with scale 1 approaches SOFTMAX
        _, r_sm = reference(variant(case, loss_type="SOFTMAX"))
        _, r_ld = reference(variant(case, max_margin=1e-12, scale=1.0))
        same_result(r_ld, r_sm, 1e-9, (name, "LDAM max_margin 1e-12 scale 1 vs SOFTMAX"))
        tick("LDAM with max_margin = 1e-12, scale = 1 == SOFTMAX to 1e-9")
    if lt == "SOFTMAX_FOCAL":
        gamma = case["gamma"]
        _, r_sm = reference(variant(case, loss_type="SOFTMAX"))
        _, r_f0 = reference(variant(case, gamma=0.0))
        same_result(r_f0, r_sm, 1e-13, (name, "SOFTMAX_FOCAL gamma=0 vs SOFTMAX"))
        tick("SOFTMAX_FOCAL with gamma = 0 == SOFTMAX (loss, per-sample, grad)")
        lp = torch.log_softmax(z, dim=1).gather(1, p["y_safe"][:, None]).squeeze(1)
        x = -torch.expm1(lp)
        # rows where p_t rounds to exactly 1: l_i = 0 and a zero gradient row for gamma > 0
        one = valid & (lp == 0.0)
        if gamma > 0 and bool(one.any()):
            assert bool(torch.all(res["l"][one] == 0.0)), name
            assert bool(torch.all(res["grad"][one] == 0.0)), name
            tick("SOFTMAX_FOCAL rows with p_t == 1 exactly: l_i = 0, gradient row 0 (no NaN)")
        # the naive form (1 - softmax_t)^gamma * CE, where it is well conditioned
        if float(torch.max(torch.abs(z))) <= 30.0 and bool(torch.all(x[valid] > 1e-6)):
            zz = z.clone().requires_grad_(True)
            ce = F.cross_entropy(zz, p["y_safe"], reduction="none")
            pt = torch.softmax(zz, dim=1).gather(1, p["y_safe"][:, None]).squeeze(1)
            alt = p["row_w"] * torch.pow(1.0 - pt, gamma) * ce * valid
            assert grad_close(res["l"], alt.detach(), 1e-9), (name, "pow softmax focal", res["l"], alt)
            if case["reduction"] == "NONE" or res["D"] > 0:
                (alt * res["dl"]).sum().backward()
                assert grad_close(res["grad"], zz.grad, 1e-8), (name, "pow softmax focal grad")
            tick("SOFTMAX_FOCAL (|z| <= 30) == w (1 - softmax_t)^gamma * F.cross_entropy (loss and grad)")


def drw_check(case, res):
    """Deferred re-weighting: before the start epoch, the same as scheme NONE (w = 1);
    from it on, the same as the request without DRW."""
    base = variant(case, drop=("drw_start_epoch", "epoch"))
    if case["epoch"] < case["drw_start_epoch"]:
        assert case["expected_class_weights"] == [1.0] * case["cols"], case["name"]
        base = variant(base, scheme="NONE")
        tick("DRW epoch < start == scheme NONE without DRW (exactly)")
    else:
        tick("DRW epoch >= start == configured weights without DRW (exactly)")
    _, r = reference(base)
    assert r["loss"] == res["loss"] and torch.equal(r["l"], res["l"]), case["name"]
    assert torch.equal(r["grad"], res["grad"]), case["name"]


def port_cb_loss(labels, logits, counts, C, loss_type, beta, gamma):
    """The seed's PyTorch port (float64, `weights=` typo fixed)."""
    effective_num = 1.0 - np.power(beta, np.array(counts, dtype=np.float64))
    weights = (1.0 - beta) / np.array(effective_num)
    weights = weights / np.sum(weights) * C
    labels_one_hot = F.one_hot(labels, C).double()
    weights = torch.tensor(weights).double().unsqueeze(0)
    weights = weights.repeat(labels_one_hot.shape[0], 1) * labels_one_hot
    weights = weights.sum(1).unsqueeze(1).repeat(1, C)
    if loss_type == "focal":
        bc = F.binary_cross_entropy_with_logits(logits, labels_one_hot, reduction="none")
        modulator = 1.0 if gamma == 0.0 else torch.exp(
            -gamma * labels_one_hot * logits - gamma * torch.log(1 + torch.exp(-1.0 * logits)))
        return torch.sum(weights * modulator * bc) / torch.sum(labels_one_hot)
    if loss_type == "sigmoid":
        return F.binary_cross_entropy_with_logits(logits, labels_one_hot, weight=weights)
    if loss_type == "softmax":
        return F.binary_cross_entropy(logits.softmax(dim=1), labels_one_hot, weight=weights)
    raise ValueError(loss_type)


PORT_MAP = {("FOCAL", "MEAN"): "focal", ("SIGMOID", "ELEMENT_MEAN"): "sigmoid",
            ("SOFTMAX_BCE", "ELEMENT_MEAN"): "softmax"}


def port_check(case, p, res):
    key = (case["loss_type"], case["reduction"])
    if key not in PORT_MAP or "labels" not in case:
        return
    if (case["scheme"] != "EFFECTIVE_NUMBER" or not (0.0 < case["beta"] < 1.0)
            or min(case["class_counts"]) < 1 or not bool(torch.all(p["valid"]))
            or not bool(torch.all(p["s"] == 1.0)) or float(torch.max(torch.abs(p["z"]))) > 30.0):
        return
    zz = p["z"].clone().requires_grad_(True)
    Lp = port_cb_loss(p["y"], zz, case["class_counts"], p["C"], PORT_MAP[key],
                      case["beta"], case["gamma"])
    Lp.backward()
    assert close(res["loss"], float(Lp), 1e-9), (case["name"], "port", res["loss"], float(Lp))
    assert grad_close(res["grad"], zz.grad, 1e-9), (case["name"], "port grad")
    tick("FOCAL MEAN / SIGMOID ELEMENT_MEAN / SOFTMAX_BCE ELEMENT_MEAN == seed's PyTorch port (loss and grad)")


# ---------------------------------------------------------------------------
# Case construction
# ---------------------------------------------------------------------------

def f32(x):
    return np.asarray(x, dtype=np.float32)


def half_encode(logits32, dtype_name):
    tdt = {"float16": torch.float16, "bfloat16": torch.bfloat16}[dtype_name]
    h = torch.from_numpy(np.ascontiguousarray(logits32)).to(tdt)
    bits = (h.view(torch.int16).to(torch.int32) & 0xFFFF).reshape(-1).tolist()
    dec = h.to(torch.float32).numpy()
    # independent decode of the bit patterns
    ub = np.array(bits, dtype=np.uint16)
    if dtype_name == "float16":
        dec2 = ub.view(np.float16).astype(np.float32)
    else:
        dec2 = (ub.astype(np.uint32) << 16).view(np.float32)
    assert np.array_equal(dec.reshape(-1), dec2), "half decode"
    assert np.all(np.isfinite(dec)), "half overflow in logits"
    tick("16-bit logits: torch decode == bit-level decode (numpy)")
    return bits, dec


def validate(c):
    B, C = c["rows"], c["cols"]
    assert B >= 1 and C >= 1
    assert len(c["logits"]) == B * C and all(math.isfinite(v) for v in c["logits"])
    assert len(c["class_counts"]) == C and all(isinstance(n, int) and n >= 0 for n in c["class_counts"])
    assert 0.0 <= c["beta"] <= 1.0 and c["gamma"] >= 0.0 and math.isfinite(c["gamma"])
    assert c["loss_type"] in LOSS_TYPES + SECTION9_TYPES
    assert c["reduction"] in REDUCTIONS and c["scheme"] in SCHEMES
    if c["loss_type"] in SECTION9_TYPES:
        assert "labels" in c, "LOSS.md 9 losses are labels mode only"
    if c["loss_type"] in NEEDS_COUNTS:
        assert min(c["class_counts"]) >= 1, "FAILED_PRECONDITION: a class with n_j = 0"
    if "tau" in c:
        assert math.isfinite(c["tau"]) and c["tau"] >= 0.0
        assert math.isfinite(c["max_margin"]) and c["max_margin"] > 0.0
        assert math.isfinite(c["scale"]) and c["scale"] > 0.0
    if "drw_start_epoch" in c:
        assert isinstance(c["drw_start_epoch"], int) and isinstance(c["epoch"], int)
        assert 0 <= c["drw_start_epoch"] < 2 ** 31 and 0 <= c["epoch"] < 2 ** 31
    assert ("labels" in c) != ("targets" in c)
    if "labels" in c:
        assert len(c["labels"]) == B
        assert all(v == c["ignore_index"] or 0 <= v < C for v in c["labels"])
    else:
        assert c["loss_type"] in ("SIGMOID", "FOCAL") and c["reduction"] != "WEIGHTED_MEAN"
        assert len(c["targets"]) == B * C and all(0.0 <= v <= 1.0 for v in c["targets"])
    if "sample_weights" in c:
        assert len(c["sample_weights"]) == B
        assert all(math.isfinite(v) and v >= 0.0 for v in c["sample_weights"])
    if "upstream" in c:
        assert c["reduction"] == "NONE" and len(c["upstream"]) == B
    for key in ("logits", "targets", "sample_weights", "upstream"):
        if key in c:
            arr = np.array(c[key], dtype=np.float64)
            assert np.array_equal(arr.astype(np.float32).astype(np.float64), arr), (c["name"], key)
    if c["scheme"] != "NONE":
        assert any(n > 0 for n in c["class_counts"])


CASES = []  # -> golden_cases.json (LOSS.md 1-8)
CASES9 = []  # -> golden_cases_section9.json (LOSS.md 9 losses, DRW)
NAMES = set()
IN_SECTION9 = [False]  # set while build_cases9 runs


def add(name, loss_type, reduction, logits, *, labels=None, targets=None, counts=None,
        scheme="EFFECTIVE_NUMBER", beta=0.9999, gamma=2.0, ignore_index=-100,
        sample_weights=None, upstream=None, dtype="float32", tau=None, max_margin=None,
        ldam_scale=None, drw_start_epoch=None, epoch=None):
    assert name not in NAMES, name
    NAMES.add(name)
    file9 = loss_type in SECTION9_TYPES or drw_start_epoch is not None
    assert file9 == IN_SECTION9[0], name
    logits = f32(logits)
    B, C = logits.shape
    c = {"name": name, "loss_type": loss_type, "reduction": reduction, "scheme": scheme,
         "beta": float(beta), "gamma": float(gamma)}
    if file9:  # always all three, defaults when not relevant
        c["tau"] = float(DEFAULT_TAU if tau is None else tau)
        c["max_margin"] = float(DEFAULT_MAX_MARGIN if max_margin is None else max_margin)
        c["scale"] = float(DEFAULT_SCALE if ldam_scale is None else ldam_scale)
        if drw_start_epoch is not None:
            c["drw_start_epoch"] = int(drw_start_epoch)
            c["epoch"] = int(epoch)
    else:
        assert tau is None and max_margin is None and ldam_scale is None and epoch is None
    c.update({"ignore_index": int(ignore_index),
              "class_counts": [int(n) for n in counts], "rows": int(B), "cols": int(C),
              "logits_dtype": dtype})
    if dtype == "float32":
        c["logits"] = [float(v) for v in logits.reshape(-1)]
    else:
        bits, dec = half_encode(logits, dtype)
        c["logits"] = [float(v) for v in dec.reshape(-1)]
        c["logits_bits"] = bits
    if labels is not None:
        c["labels"] = [int(v) for v in labels]
    if targets is not None:
        c["targets"] = [float(v) for v in f32(targets).reshape(-1)]
    if sample_weights is not None:
        c["sample_weights"] = [float(v) for v in f32(sample_weights)]
    if upstream is not None:
        c["upstream"] = [float(v) for v in f32(upstream)]
    validate(c)

    cw, cw_used = weights_used(c)
    cw_dec = class_weights_decimal(c["class_counts"], scheme, c["beta"])
    assert close(cw, cw_dec, 1e-13, 1e-300), (name, cw, cw_dec)
    tick("class weights (expm1/log1p form) == 60-digit decimal evaluation")
    k = sum(1 for x in cw if x > 0)
    assert abs(math.fsum(cw) - k) <= 1e-12 * k, name
    tick("class weights sum to K (classes with raw weight > 0)")
    c["expected_class_weights"] = cw_used

    p, res = reference(c)
    cross_check(c, p, res)
    port_check(c, p, res)
    del c["expected_class_weights"]
    c["expected"] = {"class_weights": cw_used}
    if loss_type == "LDAM":
        c["expected"]["margins"] = [float(v) for v in p["margins"]]
    c["expected"].update({"loss": res["loss"],
                          "per_sample_losses": [float(v) for v in res["l"]],
                          "gradient": [float(v) for v in res["grad"].reshape(-1)],
                          "num_samples": res["num_samples"]})
    (CASES9 if file9 else CASES).append(c)
    return c


def rng_for(name):
    return np.random.default_rng(zlib.crc32(name.encode()))


def long_tail_counts(rng, C, lo=1, hi=5000):
    nmax = int(rng.integers(max(lo, 20), hi + 1))
    ratio = float(rng.uniform(5, 200))
    counts = [max(lo, int(round(nmax * ratio ** (-j / max(C - 1, 1))))) for j in range(C)]
    rng.shuffle(counts)
    return counts


def rand(name, loss_type, reduction, *, B=None, C=None, mode="labels", sw=False, ign=0,
         upstream=None, scale=2.0, counts=None, dtype="float32", ignore_index=-100,
         sw_zero=True, **kw):
    """Random case. mode: labels | multihot | soft. ign: number of ignored rows."""
    r = rng_for(name)
    B = B if B is not None else int(r.integers(3, 13))
    C = C if C is not None else int(r.integers(2, 13))
    logits = (r.standard_normal((B, C)) * scale).astype(np.float32)
    if counts is None:
        counts = long_tail_counts(r, C)
    args = dict(counts=counts, dtype=dtype, ignore_index=ignore_index, **kw)
    if mode == "labels":
        allowed = [j for j in range(C) if j != ignore_index]
        labels = r.choice(allowed, size=B).tolist()
        for i in r.choice(B, size=ign, replace=False).tolist() if ign else []:
            labels[i] = ignore_index
        args["labels"] = labels
    elif mode == "multihot":
        tg = (r.uniform(size=(B, C)) < 0.3).astype(np.float32)
        tg[0, :] = 0.0  # a row with no positive label
        if B > 1:
            tg[1, :] = 1.0  # a row with every label
        args["targets"] = tg
    elif mode == "soft":
        tg = r.uniform(size=(B, C)).astype(np.float32)
        tg[r.uniform(size=(B, C)) < 0.15] = 0.0
        tg[r.uniform(size=(B, C)) < 0.15] = 1.0
        args["targets"] = tg
    else:
        raise ValueError(mode)
    if sw:
        s = r.uniform(0.0, 3.0, size=B).astype(np.float32)
        if sw_zero:
            s[r.choice(B, size=max(1, B // 4), replace=False)] = 0.0
        args["sample_weights"] = s
    if isinstance(upstream, str) and upstream == "random":
        uu = r.uniform(-2.0, 2.0, size=B).astype(np.float32)
        uu[0] = 0.0
        args["upstream"] = uu
    elif upstream is not None:
        args["upstream"] = upstream
    return add(name, loss_type, reduction, logits, **args)


def modes_for(loss_type):
    return ["labels"] if loss_type in ("SOFTMAX", "SOFTMAX_BCE") else ["labels", "multihot", "soft"]


def lname(x):
    return x.lower()


# ---------------------------------------------------------------------------
# The cases
# ---------------------------------------------------------------------------

def build_cases():
    # 0. the seed example (and its two port reproductions)
    seed = json.load(open(os.path.join(HERE, "seed_example.json")))
    seed_logits = [
        [0.1505, 0.9621, 0.8622, 0.0237, 0.0270],
        [0.6218, 0.2745, 0.3015, 0.1501, 0.1728],
        [0.3590, 0.1760, 0.0807, 0.7440, 0.6973],
        [0.9401, 0.7118, 0.1725, 0.1843, 0.3226],
        [0.4655, 0.8319, 0.4336, 0.8718, 0.5842],
        [0.9423, 0.3339, 0.1081, 0.4718, 0.4329],
        [0.5122, 0.7010, 0.1736, 0.5903, 0.0712],
        [0.6442, 0.1365, 0.1391, 0.8278, 0.5986],
        [0.1245, 0.5662, 0.9571, 0.8515, 0.9883],
        [0.4654, 0.8924, 0.0224, 0.9056, 0.4517]]
    seed_labels = [0, 3, 4, 2, 2, 1, 4, 0, 1, 2]
    seed_counts = [2, 3, 1, 2, 2]
    # the seed document's vector (tests/golden/seed_example.json) must agree with the copy here
    assert seed["logits"] == seed_logits and seed["labels"] == seed_labels
    assert seed["class_counts"] == seed_counts
    c = add("seed_example", "FOCAL", "MEAN", seed_logits, labels=seed_labels,
            counts=seed_counts, beta=0.9999, gamma=2.0)
    assert abs(c["expected"]["loss"] - 1.9582863) <= 1e-6, c["expected"]["loss"]
    want = [0.88236332, 0.58827163, 1.76463841, 0.88236332, 0.88236332]
    assert all(abs(a - b) <= 5e-9 for a, b in zip(c["expected"]["class_weights"], want))
    tick("seed example: FOCAL MEAN loss 1.9582863 (1e-6), class weights of LOSS.md 2 (5e-9)")
    # the same numbers from the unrounded float64 seed logits (not float32): still 1.9582863
    z64 = torch.tensor(seed_logits, dtype=torch.float64)
    L64 = float(port_cb_loss(torch.tensor(seed_labels), z64, seed_counts, 5, "focal", 0.9999, 2.0))
    assert abs(L64 - 1.9582863) <= 1e-6, L64
    add("seed_softmax_bce_element_mean", "SOFTMAX_BCE", "ELEMENT_MEAN", seed_logits,
        labels=seed_labels, counts=seed_counts)
    add("seed_sigmoid_element_mean", "SIGMOID", "ELEMENT_MEAN", seed_logits,
        labels=seed_labels, counts=seed_counts)
    add("seed_softmax_mean", "SOFTMAX", "MEAN", seed_logits, labels=seed_labels, counts=seed_counts)

    # section 2 check on its own (also exercised through the seed)
    cw = class_weights([2, 3, 1, 2, 2], "EFFECTIVE_NUMBER", 0.9999)
    assert all(abs(a - b) <= 5e-9 for a, b in zip(cw, want)), cw
    assert class_weights([3, 1, 4], "EFFECTIVE_NUMBER", 1.0) == class_weights([3, 1, 4], "INVERSE_FREQUENCY", 0.5)
    assert class_weights([3, 0, 4], "EFFECTIVE_NUMBER", 0.0) == [1.0, 0.0, 1.0]
    assert close(class_weights([10, 1000], "EFFECTIVE_NUMBER", 1.0 - 1e-12),
                 class_weights([10, 1000], "INVERSE_FREQUENCY", 0.0), 1e-8)
    tick("LOSS.md 2 check [2,3,1,2,2] beta .9999; beta=1 == INVERSE_FREQUENCY; beta=0 -> 1; beta->1 limit")

    # 1. full matrix: loss type x reduction x mode, plain
    for lt in LOSS_TYPES:
        for mode in modes_for(lt):
            for red in REDUCTIONS:
                if red == "WEIGHTED_MEAN" and mode != "labels":
                    continue
                rand(f"{lname(lt)}_{mode}_{lname(red)}", lt, red, mode=mode)
    # 2. same matrix with sample weights (with zeros), ignored rows, upstream for NONE
    for lt in LOSS_TYPES:
        for mode in modes_for(lt):
            for red in REDUCTIONS:
                if red == "WEIGHTED_MEAN" and mode != "labels":
                    continue
                rand(f"{lname(lt)}_{mode}_{lname(red)}_weighted", lt, red, mode=mode, sw=True,
                     ign=2 if mode == "labels" else 0, B=8,
                     upstream="random" if red == "NONE" else None)

    # 3. 16-bit logits for each loss type
    for k, lt in enumerate(LOSS_TYPES):
        for dt in ("float16", "bfloat16"):
            rand(f"{lname(lt)}_{dt}_mean", lt, "MEAN", dtype=dt, scale=3.0)
        dt = ("float16", "bfloat16")[k % 2]
        rand(f"{lname(lt)}_{dt}_none_weighted", lt, "NONE", dtype=dt, scale=3.0, sw=True, ign=1,
             B=6, upstream="random")
        if lt in ("SIGMOID", "FOCAL"):
            rand(f"{lname(lt)}_float16_soft_sum", lt, "SUM", dtype="float16", mode="soft")
            rand(f"{lname(lt)}_bfloat16_multihot_element_mean", lt, "ELEMENT_MEAN",
                 dtype="bfloat16", mode="multihot")
    ext16 = f32([[1000.0, -1000.0, 0.0, 100.0], [-100.0, 88.8, -88.8, 0.1],
                 [65504.0, -65504.0, 3.0, -3.0]])
    for k, lt in enumerate(LOSS_TYPES):
        dt = ("bfloat16", "float16")[k % 2]
        add(f"{lname(lt)}_{dt}_extreme_sum", lt, "SUM", ext16, labels=[1, 0, 1],
            counts=[5, 50, 500, 1], dtype=dt)

    # 4. extreme logits
    ext = f32([
        [1000.0, -1000.0, 0.0, 100.0, -100.0],
        [-1000.0, 1000.0, 88.8, -88.8, 0.0],
        [88.8, 88.8, 88.8, 88.8, 88.8],
        [-88.8, -88.8, -88.8, -88.8, -88.8],
        [0.0, 0.0, 0.0, 0.0, 0.0],
        [10000.0, -10000.0, 1000.0, -1000.0, 50.0],
        [-1000.0, -1000.0, -1000.0, -1000.0, -1000.0],
        [1000.0, 1000.0, -100.0, -100.0, 1000.0],
        [-30.0, 30.0, -17.5, 17.5, 1e-3],
    ])
    ext_labels = [1, 0, 2, 3, 4, 1, 0, 2, 0]
    ext_counts = [10, 1, 300, 7, 42]
    for lt in LOSS_TYPES:
        for red in ("MEAN", "SUM", "NONE", "WEIGHTED_MEAN"):
            add(f"{lname(lt)}_extreme_{lname(red)}", lt, red, ext, labels=ext_labels, counts=ext_counts)
    ext_t = f32([[1, 0, 1, 0, 1], [0, 1, 1, 0, 1], [1, 1, 0, 0, 0], [0, 0, 1, 1, 0],
                 [1, 0, 0, 0, 1], [0, 1, 0, 1, 0], [1, 1, 1, 1, 1], [0, 0, 1, 1, 0],
                 [1, 0, 1, 0, 0.5]])
    ext_soft = f32(rng_for("ext_soft").uniform(size=ext.shape))
    for lt in ("SIGMOID", "FOCAL"):
        add(f"{lname(lt)}_extreme_multihot_sum", lt, "SUM", ext, targets=ext_t, counts=ext_counts)
        add(f"{lname(lt)}_extreme_soft_mean", lt, "MEAN", ext, targets=ext_soft, counts=ext_counts)
    # FOCAL positive at z = -1000: modulator ~1, loss ~1000*omega; gamma 2 and 0.5
    hard = f32([[-1000.0, 0.5, -2.0], [1000.0, -1000.0, 0.0], [-100.0, 1000.0, 88.8]])
    for g in (2.0, 0.5):
        gn = str(g).replace(".", "p")
        add(f"focal_positive_at_minus_1000_gamma_{gn}", "FOCAL", "SUM", hard, labels=[0, 0, 1],
            counts=[3, 3, 3], gamma=g)
        add(f"focal_positive_at_minus_1000_gamma_{gn}_targets", "FOCAL", "SUM", hard,
            targets=f32([[1, 0, 1], [1, 1, 0.5], [1, 0, 0]]), counts=[3, 3, 3], gamma=g)
    c = CASES[-4]
    assert abs(c["expected"]["per_sample_losses"][0] - 1000.0 * c["expected"]["class_weights"][0]) < 1.0

    # 5. zero counts
    for lt in LOSS_TYPES:
        # class 2 has count 0; labels avoid it
        r = rng_for(f"zero_count_avoid_{lt}")
        z = (r.standard_normal((7, 5)) * 2).astype(np.float32)
        labels = r.choice([0, 1, 3, 4], size=7).tolist()
        add(f"{lname(lt)}_zero_count_labels_avoid", lt, "MEAN", z, labels=labels,
            counts=[40, 9, 0, 120, 3])
        # labels hit the zero-count class
        labels_hit = list(labels)
        labels_hit[0] = labels_hit[3] = 2
        add(f"{lname(lt)}_zero_count_labels_hit", lt, "WEIGHTED_MEAN", z, labels=labels_hit,
            counts=[40, 9, 0, 120, 3])
        add(f"{lname(lt)}_zero_count_labels_hit_sum", lt, "SUM", z, labels=labels_hit,
            counts=[40, 9, 0, 120, 3], beta=1.0)
    for lt in ("SIGMOID", "FOCAL"):
        rand(f"{lname(lt)}_zero_count_targets", lt, "MEAN", mode="multihot", B=6, C=5,
             counts=[0, 12, 0, 7, 1000])
    # every label on a zero-count class: WEIGHTED_MEAN denominator 0
    z = (rng_for("all_on_zero").standard_normal((4, 3)) * 2).astype(np.float32)
    for lt in LOSS_TYPES:
        add(f"{lname(lt)}_all_labels_on_zero_count_weighted_mean", lt, "WEIGHTED_MEAN", z,
            labels=[1, 1, 1, 1], counts=[5, 0, 8])

    # 6. beta values and schemes
    for beta in (0.0, 0.5, 0.9999, 1.0):
        bn = str(beta).replace(".", "p")
        for lt in ("SOFTMAX", "FOCAL"):
            rand(f"{lname(lt)}_beta_{bn}", lt, "SUM", counts=[1, 2, 7, 100, 3000, 0, 12], C=7, B=9,
                 beta=beta)
    rand("softmax_beta_0p999999_large_counts", "SOFTMAX", "SUM", C=6, B=8, beta=0.999999,
         counts=[1, 10, 1000, 100000, 10000000, 2000000000])
    for scheme in SCHEMES:
        sn = lname(scheme)
        for lt in LOSS_TYPES:
            rand(f"{lname(lt)}_scheme_{sn}", lt, "MEAN", scheme=scheme, beta=0.99, C=6,
                 counts=[1, 4, 0, 250, 33, 9] if scheme != "EFFECTIVE_NUMBER" or lt != "SOFTMAX"
                 else [1, 4, 16, 250, 33, 9])
    rand("sigmoid_scheme_none_all_counts_zero", "SIGMOID", "SUM", scheme="NONE", C=4,
         counts=[0, 0, 0, 0], mode="soft")

    # 7. all ignored (N = 0) for every loss type x reduction (labels mode)
    for lt in LOSS_TYPES:
        for red in REDUCTIONS:
            r = rng_for(f"all_ignored_{lt}_{red}")
            z = (r.standard_normal((3, 4)) * 2).astype(np.float32)
            c = add(f"{lname(lt)}_all_ignored_{lname(red)}", lt, red, z, labels=[-100] * 3,
                    counts=[3, 5, 7, 11], upstream=f32([1.0, -2.0, 0.5]) if red == "NONE" else None)
            assert c["expected"]["loss"] == 0.0 and not any(c["expected"]["gradient"])
            assert c["expected"]["num_samples"] == 0

    # 8. sample weights all zero (WEIGHTED_MEAN D = 0; MEAN still divides by N)
    for lt in ("SOFTMAX", "FOCAL", "SIGMOID", "SOFTMAX_BCE"):
        for red in ("WEIGHTED_MEAN", "MEAN"):
            rand(f"{lname(lt)}_sample_weights_all_zero_{lname(red)}", lt, red, B=4,
                 sample_weights=f32([0, 0, 0, 0]))
    rand("focal_soft_sample_weights_mean", "FOCAL", "MEAN", mode="soft", sw=True, B=7)

    # 9. custom ignore_index
    for lt in LOSS_TYPES:
        for red in ("MEAN", "WEIGHTED_MEAN"):
            r = rng_for(f"ignore3_{lt}_{red}")
            z = (r.standard_normal((8, 5)) * 2).astype(np.float32)
            labels = r.integers(0, 5, size=8).tolist()
            labels[1] = 3
            labels[5] = 3
            add(f"{lname(lt)}_ignore_index_3_{lname(red)}", lt, red, z, labels=labels,
                counts=[10, 20, 30, 40, 50], ignore_index=3)
        rand(f"{lname(lt)}_ignore_index_minus_1", lt, "ELEMENT_MEAN", ignore_index=-1, ign=3, B=9,
             sw=True)

    # 10. NONE with upstream (extra: zeros, negatives, large)
    for lt in LOSS_TYPES:
        rand(f"{lname(lt)}_none_upstream", lt, "NONE", B=6, ign=1,
             upstream=f32([0.0, -1.5, 2.25, 1e3, -3e-4, 1.0]))
    for lt in ("SIGMOID", "FOCAL"):
        rand(f"{lname(lt)}_soft_none_upstream", lt, "NONE", B=5, mode="soft",
             upstream=f32([1.0, -1.0, 0.0, 0.125, 7.0]))

    # 11. focal gamma sweep
    for g in (0.0, 0.5, 1.0, 2.0, 5.0):
        gn = str(g).replace(".", "p")
        rand(f"focal_gamma_{gn}_labels", "FOCAL", "MEAN", gamma=g, B=10, C=6, scale=3.0)
        rand(f"focal_gamma_{gn}_soft", "FOCAL", "SUM", gamma=g, B=6, C=6, mode="soft", scale=3.0)
        rand(f"focal_gamma_{gn}_multihot_sw", "FOCAL", "ELEMENT_MEAN", gamma=g, B=6, C=6,
             mode="multihot", sw=True)

    # 12. targets all zero with MEAN: P = 0 -> loss 0 (per-sample losses still nonzero)
    for lt in ("SIGMOID", "FOCAL"):
        z = (rng_for(f"zero_targets_{lt}").standard_normal((4, 3)) * 2).astype(np.float32)
        zt = np.zeros((4, 3), dtype=np.float32)
        c = add(f"{lname(lt)}_targets_all_zero_mean", lt, "MEAN", z, targets=zt, counts=[1, 2, 3])
        assert c["expected"]["loss"] == 0.0 and not any(c["expected"]["gradient"])
        assert all(v > 0 for v in c["expected"]["per_sample_losses"])
        add(f"{lname(lt)}_targets_all_zero_sum", lt, "SUM", z, targets=zt, counts=[1, 2, 3])

    # 13. 1 x 1
    for lt in LOSS_TYPES:
        add(f"{lname(lt)}_1x1", lt, "MEAN", [[0.75]], labels=[0], counts=[17])
    for lt in ("SIGMOID", "FOCAL"):
        add(f"{lname(lt)}_1x1_soft", lt, "NONE", [[-1.25]], targets=[[0.25]], counts=[0],
            scheme="NONE", upstream=[2.0])

    # 14. one ~64 x 40 random case per loss type
    rand("softmax_large_64x40_mean", "SOFTMAX", "MEAN", B=64, C=40, ign=5, sw=True)
    rand("softmax_bce_large_64x40_element_mean", "SOFTMAX_BCE", "ELEMENT_MEAN", B=64, C=40, ign=3)
    rand("sigmoid_large_64x40_multihot_mean", "SIGMOID", "MEAN", B=64, C=40, mode="multihot",
         sw=True)
    rand("focal_large_64x40_weighted_mean", "FOCAL", "WEIGHTED_MEAN", B=64, C=40, ign=4, sw=True,
         scale=4.0)


def build_cases9():
    """LOSS.md 9: BALANCED_SOFTMAX, LOGIT_ADJUSTED, LDAM, SOFTMAX_FOCAL; deferred re-weighting."""
    IN_SECTION9[0] = True
    T9 = SECTION9_TYPES

    # LOSS.md 9 check: LDAM margins of [2,3,1,2,2] with max_margin 0.5
    want = [0.42044821, 0.37991784, 0.5, 0.42044821, 0.42044821]
    m = ldam_margins([2, 3, 1, 2, 2], 0.5)
    assert all(abs(a - b) <= 1e-8 for a, b in zip(m, want)), m
    n = torch.tensor([2.0, 3.0, 1.0, 2.0, 2.0])
    mt = 0.5 * n.pow(-0.25) / n.pow(-0.25).max()
    assert close(mt, m, 1e-15, 1e-300), (mt, m)
    tick("LOSS.md 9 check: LDAM margins [2,3,1,2,2], max_margin 0.5 (1e-8)")

    # 1. every loss type x every reduction, plain (s = 1: the F.cross_entropy checks apply)
    # (LDAM logits are typically cosine similarities times scale: draw them small so that
    # scale 30 does not saturate every softmax)
    for lt in T9:
        for red in REDUCTIONS:
            rand(f"{lname(lt)}_{lname(red)}", lt, red, B=7, scale=0.3 if lt == "LDAM" else 2.0)
    # 2. the same with sample weights (a zero among them), one ignored label, upstream for NONE
    for lt in T9:
        for red in REDUCTIONS:
            rand(f"{lname(lt)}_{lname(red)}_weighted", lt, red, B=8, sw=True, ign=1,
                 upstream="random" if red == "NONE" else None,
                 scale=0.3 if lt == "LDAM" else 2.0)

    # 3. extreme logits: +-1000 and +-1e4 mixed, ties, p_t == 1 exactly, p_t = 1 - 2.4e-15
    ext = f32([
        [1000.0, -1000.0, 0.0, 100.0, -100.0],
        [-1000.0, 1000.0, 88.8, -88.8, 0.0],
        [10000.0, -10000.0, 1000.0, -1000.0, 50.0],
        [10000.0, -10000.0, 1000.0, -1000.0, 50.0],
        [1000.0, 1000.0, -100.0, -100.0, 1000.0],
        [-1000.0, -1000.0, -1000.0, -1000.0, -1000.0],
        [-10000.0, 10000.0, -10000.0, 10000.0, 0.0],
        [36.0, 0.0, -5.0, 1.0, 2.0],
        [-30.0, 30.0, -17.5, 17.5, 1e-3],
        [0.0, 0.0, 0.0, 0.0, 0.0],
    ])
    ext_labels = [0, 1, 0, 1, 4, 2, 3, 0, 2, 1]
    ext_counts = [10, 1, 300, 7, 42]
    for lt in SHIFTED_TYPES:
        for red in ("SUM", "NONE"):
            add(f"{lname(lt)}_extreme_{lname(red)}", lt, red, ext, labels=ext_labels,
                counts=ext_counts, upstream=f32([1, -2, 0.5, 1, 3, -1, 1, 2, 1, 0.25])
                if red == "NONE" else None)
    add("ldam_extreme_margin_0p3_scale_10_weighted_mean", "LDAM", "WEIGHTED_MEAN", ext,
        labels=ext_labels, counts=ext_counts, max_margin=0.3, ldam_scale=10.0)
    add("logit_adjusted_extreme_tau_2_mean", "LOGIT_ADJUSTED", "MEAN", ext, labels=ext_labels,
        counts=ext_counts, tau=2.0)
    for g, red in ((0.5, "SUM"), (2.0, "MEAN"), (0.0, "SUM"), (5.0, "NONE")):
        gn = str(g).replace(".", "p")
        c = add(f"softmax_focal_extreme_gamma_{gn}_{lname(red)}", "SOFTMAX_FOCAL", red, ext,
                labels=ext_labels, counts=ext_counts, gamma=g,
                upstream=f32([1, -2, 0.5, 1, 3, -1, 1, 2, 1, 0.25]) if red == "NONE" else None)
        gr = c["expected"]["gradient"]
        for i in (0, 1, 2):  # p_t == 1 exactly in float64: l_i = 0, gradient row exactly 0
            assert c["expected"]["per_sample_losses"][i] == 0.0
            assert all(v == 0.0 for v in gr[5 * i:5 * i + 5]), (c["name"], i)
        assert c["expected"]["per_sample_losses"][7] > 0.0  # 1 - p_t ~ 2.4e-15, kept by expm1
        if g > 0:
            tick("SOFTMAX_FOCAL extreme gamma > 0: p_t == 1 rows give l = 0 and gradient 0")
    c = CASES9[-3]  # gamma 2: the p_t = 1 - 2.4e-15 row is x^2 * x ~ 1.4e-44 * w
    assert 0.0 < c["expected"]["per_sample_losses"][7] < 1e-40

    # 4. parameter sweeps: gamma, tau, (max_margin, scale)
    for g, red in ((0.0, "MEAN"), (0.5, "SUM"), (2.0, "WEIGHTED_MEAN"), (5.0, "NONE")):
        gn = str(g).replace(".", "p")
        rand(f"softmax_focal_gamma_{gn}_{lname(red)}", "SOFTMAX_FOCAL", red, B=10, C=6, scale=3.0,
             gamma=g, sw=True, ign=1, upstream="random" if red == "NONE" else None)
    for tau, red in ((0.0, "MEAN"), (0.5, "SUM"), (1.0, "WEIGHTED_MEAN"), (2.0, "ELEMENT_MEAN")):
        tn = str(tau).replace(".", "p")
        rand(f"logit_adjusted_tau_{tn}_{lname(red)}", "LOGIT_ADJUSTED", red, B=10, C=6, scale=3.0,
             tau=tau, ign=1)
    for mm, sc, red in ((0.5, 30.0, "MEAN"), (0.3, 10.0, "SUM"), (1.0, 1.0, "WEIGHTED_MEAN")):
        nm = f"ldam_margin_{str(mm).replace('.', 'p')}_scale_{int(sc)}_{lname(red)}"
        rand(nm, "LDAM", red, B=10, C=6, max_margin=mm, ldam_scale=sc, sw=True, ign=1)

    # 5. beta 0 and 1 for each type (0.9999 is the default everywhere else), weighting schemes
    for beta in (0.0, 1.0):
        bn = str(beta).replace(".", "p")
        for lt in T9:
            rand(f"{lname(lt)}_beta_{bn}", lt, "SUM", C=7, B=9, beta=beta,
                 counts=[1, 2, 7, 100, 3000, 5, 12])
    for k, scheme in enumerate(("INVERSE_FREQUENCY", "INVERSE_SQRT_FREQUENCY", "NONE")):
        for lt in (T9[k], T9[k + 1]):
            rand(f"{lname(lt)}_scheme_{lname(scheme)}", lt, "MEAN", scheme=scheme, beta=0.99, C=6,
                 counts=[1, 4, 16, 250, 33, 9])

    # 6. 16-bit logits, once per dtype and type
    for lt in T9:
        rand(f"{lname(lt)}_float16_mean", lt, "MEAN", dtype="float16", scale=3.0)
        rand(f"{lname(lt)}_bfloat16_none_weighted", lt, "NONE", dtype="bfloat16", scale=50.0,
             sw=True, ign=1, B=6, upstream="random")

    # 7. one ~48 x 30 random case per type
    rand("balanced_softmax_large_48x30_mean", "BALANCED_SOFTMAX", "MEAN", B=48, C=30, ign=4,
         sw=True)
    rand("logit_adjusted_large_48x30_weighted_mean", "LOGIT_ADJUSTED", "WEIGHTED_MEAN", B=48,
         C=30, ign=3, sw=True, tau=1.5)
    rand("ldam_large_48x30_sum", "LDAM", "SUM", B=48, C=30, ign=2)
    rand("softmax_focal_large_48x30_none", "SOFTMAX_FOCAL", "NONE", B=48, C=30, ign=3, sw=True,
         scale=4.0, upstream="random")

    # 8. custom ignore_index
    for lt, ii, red in (("BALANCED_SOFTMAX", 3, "MEAN"), ("LOGIT_ADJUSTED", -1, "WEIGHTED_MEAN"),
                        ("LDAM", 3, "SUM"), ("SOFTMAX_FOCAL", -1, "ELEMENT_MEAN")):
        rand(f"{lname(lt)}_ignore_index_{str(ii).replace('-', 'minus_')}", lt, red, B=9, C=5,
             ignore_index=ii, ign=2, sw=True)

    # 9. deferred re-weighting (start epoch 5): before / at / after
    r = rng_for("drw")
    z = (r.standard_normal((8, 5)) * 2).astype(np.float32)
    labels = r.integers(0, 5, size=8).tolist()
    labels[6] = -100
    sw = f32(r.uniform(0.0, 2.0, size=8))
    dcounts = [500, 3, 60, 1, 12]
    for ep in (4, 5, 12):
        add(f"softmax_drw_start_5_epoch_{ep}_weighted_mean", "SOFTMAX", "WEIGHTED_MEAN", z,
            labels=labels, counts=dcounts, sample_weights=sw, drw_start_epoch=5, epoch=ep)
    for ep in (0, 5, 6):
        add(f"ldam_drw_start_5_epoch_{ep}_mean", "LDAM", "MEAN", z, labels=labels,
            counts=dcounts, drw_start_epoch=5, epoch=ep)
    add("balanced_softmax_drw_start_5_epoch_3_sum", "BALANCED_SOFTMAX", "SUM", z, labels=labels,
        counts=dcounts, sample_weights=sw, drw_start_epoch=5, epoch=3)
    add("softmax_focal_drw_start_5_epoch_7_none", "SOFTMAX_FOCAL", "NONE", z, labels=labels,
        counts=dcounts, drw_start_epoch=5, epoch=7, upstream=f32([1, 2, -1, 0.5, 0, 1, 3, 1]))
    assert CASES9[-8]["expected"]["class_weights"] == [1.0] * 5
    assert CASES9[-7]["expected"]["class_weights"] != [1.0] * 5

    # 10. (none) LOSS.md section 9: "for each, classes with n_j = 0 are
    # FAILED_PRECONDITION unless stated", and nothing is stated for
    # SOFTMAX_FOCAL, so it has no zero-count case either (an error case;
    # the C++ and server tests assert the status).

    # 11. D = 0: every label ignored; all sample weights zero
    for lt, red in zip(T9, ("MEAN", "WEIGHTED_MEAN", "ELEMENT_MEAN", "NONE")):
        z = (rng_for(f"all_ignored_{lt}").standard_normal((3, 4)) * 2).astype(np.float32)
        c = add(f"{lname(lt)}_all_ignored_{lname(red)}", lt, red, z, labels=[-100] * 3,
                counts=[3, 5, 7, 11], upstream=f32([1.0, -2.0, 0.5]) if red == "NONE" else None)
        assert c["expected"]["loss"] == 0.0 and not any(c["expected"]["gradient"])
        assert c["expected"]["num_samples"] == 0
    c = rand("balanced_softmax_sample_weights_all_zero_weighted_mean", "BALANCED_SOFTMAX",
             "WEIGHTED_MEAN", B=4, sample_weights=f32([0, 0, 0, 0]))
    assert c["expected"]["loss"] == 0.0 and not any(c["expected"]["gradient"])
    rand("softmax_focal_sample_weights_all_zero_mean", "SOFTMAX_FOCAL", "MEAN", B=4,
         sample_weights=f32([0, 0, 0, 0]))

    # 12. 1 x 1 (one class: every loss is 0), equal counts, very large counts
    for lt in T9:
        c = add(f"{lname(lt)}_1x1", lt, "MEAN", [[0.75]], labels=[0], counts=[17])
        assert c["expected"]["loss"] == 0.0 and c["expected"]["gradient"] == [0.0]
    for lt in ("BALANCED_SOFTMAX", "LOGIT_ADJUSTED"):
        rand(f"{lname(lt)}_equal_counts", lt, "SUM", C=4, B=6, counts=[7, 7, 7, 7])
        rand(f"{lname(lt)}_large_counts", lt, "MEAN", C=6, B=8, beta=0.999999, tau=0.5,
             counts=[1, 10, 1000, 100000, 10000000, 2000000000]) if lt == "LOGIT_ADJUSTED" else \
            rand(f"{lname(lt)}_large_counts", lt, "MEAN", C=6, B=8, beta=0.999999,
                 counts=[1, 10, 1000, 100000, 10000000, 2000000000])
    rand("ldam_large_counts", "LDAM", "SUM", C=6, B=8, counts=[1, 10, 1000, 100000, 10000000,
                                                               2000000000])
    IN_SECTION9[0] = False


# ---------------------------------------------------------------------------
# float32 -> float16 / bfloat16 conversion vectors
# ---------------------------------------------------------------------------

def bits_to_f32(b):
    return struct.unpack("<f", struct.pack("<I", b))[0]


def f32_bits(x):
    return struct.unpack("<I", struct.pack("<f", x))[0]


def bf16_rne(b):
    """Independent float32 bits -> bfloat16 bits, round to nearest even (finite inputs)."""
    upper, lower = b >> 16, b & 0xFFFF
    if lower > 0x8000 or (lower == 0x8000 and (upper & 1)):
        upper += 1
    return upper & 0xFFFF


def conversions():
    vals = set()

    def addb(b):
        b &= 0xFFFFFFFF
        assert (b >> 23) & 0xFF != 0xFF or (b & 0x7FFFFF) == 0, "no NaN"
        assert (b >> 23) & 0xFF != 0xFF, "no inf input"
        vals.add(b)

    def addf(x, both_signs=True):
        b = f32_bits(x)
        addb(b)
        if both_signs:
            addb(b ^ 0x80000000)

    one = 0x3F800000
    for x in (0.0, 1.0, 0.5, 2.0, 3.14159265, 0.1, 1e-3, 100.0, 1000.0, 1e4, 88.8, 65504.0,
              1e-4, 0.333333343, 12345.678, 7.0e-5):
        addf(x)
    # float16 subnormal range and below
    for k in range(14, 27):
        addf(2.0 ** -k)
    for m in (1, 2, 3, 5, 7, 1023):
        addf(m * 2.0 ** -25)  # odd multiples of 2^-25 are ties between fp16 subnormals
    for x in (6e-8, 5.9e-8, 3e-8, 2.98e-8, 2.99e-8, 1e-5, 1e-6, 1e-7, 6.1e-5, 6.103e-5):
        addf(x)
    addf(2.0 ** -14 - 2.0 ** -24)  # largest fp16 subnormal
    addb(f32_bits(2.0 ** -25) + 1)  # just above the tie -> min subnormal
    addb(f32_bits(2.0 ** -25) - 1)  # just below -> 0
    # float16 ties around 1 and 2048 (both directions), and neighbours
    for base_bits, half_ulp_bits in ((one, 1 << 12), (f32_bits(2048.0), 1 << 12),
                                      (f32_bits(0.75), 1 << 12), (f32_bits(1000.0), 1 << 12)):
        for k in (1, 3, 5, 7):  # odd multiples of half an fp16 ulp: ties
            t = base_bits + k * half_ulp_bits
            for d in (-1, 0, 1):
                addb(t + d)
                addb((t + d) | 0x80000000)
    # bfloat16 ties: low 16 bits 0x8000 with even and odd upper half, and neighbours
    for upper in (0x3F80, 0x3F81, 0x4049, 0x404A, 0xC2C8, 0xC2C9, 0x0001, 0x0000, 0x7F7E, 0x7F7F,
                  0x0080, 0x007F, 0x3300, 0x3301):
        for lower in (0x8000, 0x7FFF, 0x8001, 0xFFFF, 0x0001):
            addb((upper << 16) | lower)
    # float16 overflow / near max
    for x in (65504.0, 65505.0, 65519.0, 65519.99609375, 65520.0, 65520.01, 65536.0, 1e5, 1e10,
              1e38, 3.4028234663852886e38, 3.3895313892515355e38, 3.3961775292304546e38):
        addf(x)
    addb(0x7F7FFFFF)  # float32 max
    addb(0xFF7FFFFF)
    addb(0x7F7F0000)  # bfloat16 max exactly
    # float32 subnormals
    for b in (0x00000001, 0x00008000, 0x00018000, 0x00017FFF, 0x007FFFFF, 0x00400000, 0x00010000):
        addb(b)
        addb(b | 0x80000000)
    # random: normals over the whole exponent range and random bit patterns
    r = np.random.default_rng(20190616)
    for _ in range(40):
        addf(float(np.float32(r.standard_normal() * 10.0 ** r.uniform(-9, 6))), both_signs=False)
    for _ in range(30):
        b = int(r.integers(0, 2 ** 32))
        if (b >> 23) & 0xFF == 0xFF:
            b ^= 0x40000000
        addb(b)
    bits = sorted(vals, key=lambda b: (bits_to_f32(b), b))
    arr = np.array(bits, dtype=np.uint32).view(np.float32)
    t32 = torch.from_numpy(arr.copy())
    h16 = (t32.to(torch.float16).view(torch.int16).to(torch.int32) & 0xFFFF).tolist()
    b16 = (t32.to(torch.bfloat16).view(torch.int16).to(torch.int32) & 0xFFFF).tolist()
    with np.errstate(over="ignore"):  # overflow to inf is one of the things tested
        np16 = arr.astype(np.float16).view(np.uint16).astype(int).tolist()
    assert h16 == np16, "torch vs numpy float16 RNE"
    tick("conversions: torch float16 == numpy astype(float16) (RNE)")
    mine = [bf16_rne(b) for b in bits]
    assert b16 == mine, [(hex(b), hex(x), hex(y)) for b, x, y in zip(bits, b16, mine) if x != y]
    tick("conversions: torch bfloat16 == bit-level round-to-nearest-even")
    # the set must really contain what it claims
    assert 0x7C00 in h16 and 0xFC00 in h16, "fp16 overflow to inf"
    assert any(0 < (h & 0x7FFF) < 0x0400 for h in h16), "fp16 subnormal"
    assert 0x7F80 in b16, "bf16 overflow to inf"
    return {"float32_bits": bits, "float16_bits": h16, "bfloat16_bits": b16}


# ---------------------------------------------------------------------------

def write_json(path, text):
    with open(path, "w") as f:
        f.write(text)


def main():
    build_cases()
    build_cases9()
    conv = conversions()
    doc = {"generator": "tests/golden/make_golden.py", "torch_version": torch.__version__}
    head = json.dumps(doc, allow_nan=False)[:-1]
    parts = [head, ', "cases": [\n']
    parts.append(",\n".join(json.dumps(c, allow_nan=False) for c in CASES))
    parts.append('\n], "conversions": ')
    parts.append(json.dumps(conv, allow_nan=False))
    parts.append("}\n")
    text = "".join(parts)
    back = json.loads(text)  # round trip
    assert len(back["cases"]) == len(CASES)
    assert back["cases"][0]["expected"]["loss"] == CASES[0]["expected"]["loss"]
    # section 9: same top level, no conversions
    parts9 = [head, ', "cases": [\n', ",\n".join(json.dumps(c, allow_nan=False) for c in CASES9),
              "\n]}\n"]
    text9 = "".join(parts9)
    back9 = json.loads(text9)
    assert len(back9["cases"]) == len(CASES9)
    assert {c["name"] for c in back9["cases"]}.isdisjoint({c["name"] for c in back["cases"]})
    write_json(OUT, text)  # only after every case of both files passed
    write_json(OUT9, text9)
    print(f"wrote {OUT}: {len(CASES)} cases, {len(conv['float32_bits'])} conversions, "
          f"{len(text)} bytes")
    print(f"wrote {OUT9}: {len(CASES9)} cases, {len(text9)} bytes")
    print("cross-checks (cases):")
    for k, v in CHECKS.items():
        print(f"  {v:5d}  {k}")


if __name__ == "__main__":
    sys.exit(main())
