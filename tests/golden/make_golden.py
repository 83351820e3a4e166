#!/usr/bin/python3
"""Independent float64 oracle for cbloss (docs: tests/golden/README.md).

Run as:  /usr/bin/python3 tests/golden/make_golden.py
Writes:  tests/golden/golden_cases.json (next to this script)

Everything is computed straight from shared/spec/LOSS.md sections 2-6 in
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

LOSS_TYPES = ["SOFTMAX", "SIGMOID", "FOCAL", "SOFTMAX_BCE"]
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
    return dict(B=B, C=C, z=z, w=w, s=s, u=u, y=y, y_safe=y_safe, valid=valid,
                t=t, row_w=row_w, omega=omega)


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
    raise ValueError(loss_type)


def denominator(case, p):
    lt, red = case["loss_type"], case["reduction"]
    n = float(p["valid"].sum())
    if red == "MEAN":
        if lt in ("SOFTMAX", "SOFTMAX_BCE"):
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
    if lt == "SOFTMAX_BCE":
        prob = torch.softmax(z, dim=1)
        alt = -(t * torch.clamp(torch.log(prob), min=-100.0)
                + (1.0 - t) * torch.clamp(torch.log(1.0 - prob), min=-100.0))
        alt = (omega * alt * valid[:, None]).sum(dim=1)
        assert close(l, alt, 1e-10, 1e-12), (name, "softmax_bce formula", l, alt)
        tick("SOFTMAX_BCE l_i == LOSS.md 4 formula with clamped logs")


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
    assert c["loss_type"] in LOSS_TYPES and c["reduction"] in REDUCTIONS and c["scheme"] in SCHEMES
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


CASES = []
NAMES = set()


def add(name, loss_type, reduction, logits, *, labels=None, targets=None, counts=None,
        scheme="EFFECTIVE_NUMBER", beta=0.9999, gamma=2.0, ignore_index=-100,
        sample_weights=None, upstream=None, dtype="float32"):
    assert name not in NAMES, name
    NAMES.add(name)
    logits = f32(logits)
    B, C = logits.shape
    c = {"name": name, "loss_type": loss_type, "reduction": reduction, "scheme": scheme,
         "beta": float(beta), "gamma": float(gamma), "ignore_index": int(ignore_index),
         "class_counts": [int(n) for n in counts], "rows": int(B), "cols": int(C),
         "logits_dtype": dtype}
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

    cw = class_weights(c["class_counts"], scheme, c["beta"])
    cw_dec = class_weights_decimal(c["class_counts"], scheme, c["beta"])
    assert close(cw, cw_dec, 1e-13, 1e-300), (name, cw, cw_dec)
    tick("class weights (expm1/log1p form) == 60-digit decimal evaluation")
    k = sum(1 for x in cw if x > 0)
    assert abs(math.fsum(cw) - k) <= 1e-12 * k, name
    tick("class weights sum to K (classes with raw weight > 0)")
    c["expected_class_weights"] = cw

    p, res = reference(c)
    cross_check(c, p, res)
    port_check(c, p, res)
    del c["expected_class_weights"]
    c["expected"] = {"class_weights": cw, "loss": res["loss"],
                     "per_sample_losses": [float(v) for v in res["l"]],
                     "gradient": [float(v) for v in res["grad"].reshape(-1)],
                     "num_samples": res["num_samples"]}
    CASES.append(c)
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
    seed = json.load(open(os.path.join(HERE, "..", "..", "..", "shared", "spec", "vectors",
                                       "seed_example.json"))) if os.path.exists(
        os.path.join(HERE, "..", "..", "..", "shared", "spec", "vectors", "seed_example.json")) else None
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
    if seed is not None:  # the spec file, when present, must agree with the copy here
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

def main():
    build_cases()
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
    with open(OUT, "w") as f:
        f.write(text)
    print(f"wrote {OUT}: {len(CASES)} cases, {len(conv['float32_bits'])} conversions, "
          f"{len(text)} bytes")
    print("cross-checks (cases):")
    for k, v in CHECKS.items():
        print(f"  {v:5d}  {k}")


if __name__ == "__main__":
    sys.exit(main())
