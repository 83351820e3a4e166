#!/usr/bin/python3
"""Independent float64 oracle for LOSS.md section 10 (docs: tests/golden/README.md,
"Section 10"; reference semantics: tests/golden/REFERENCE_FACTS_SECTION10.md).

Run as:  /usr/bin/python3 tests/golden/make_golden_section10.py
Writes:  tests/golden/golden_cases_section10.json, next to this script

SEESAW, EQL, EQL_V2, VS and `focal_alpha` for FOCAL and SIGMOID, computed
straight from docs/spec/LOSS.md section 10 (conventions of sections 1-7) in
PyTorch float64. Gradients come from autograd, with the factors the reference
implementations detach held constant: SEESAW's compensation factor (its
mitigation factor depends on the counts only), and the EQL / EQL_V2 weights e
(which depend on counts or run statistics only). Every case is cross-checked
against the closed-form gradients of section 10, formulations written the way
the reference implementations compute (mmdetection seesaw_ce_loss, eqlv2's EQL
and EQLv2 modules, VS-Loss's VSLoss, torchvision's sigmoid_focal_loss), the
check values of section 10, the reductions to simpler losses that section 10
lists (computed by make_golden.py's section 4/9 reference), and central finite
differences. Any disagreement aborts the script before anything is written.

Deterministic: every random case draws from a numpy PCG64 generator seeded with
crc32 of the case name (make_golden.rng_for).
"""

import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_golden as mg  # noqa: E402  (definitions only; its main() is guarded)

torch.set_default_dtype(torch.float64)
torch.use_deterministic_algorithms(True)

OUT10 = os.path.join(HERE, "golden_cases_section10.json")

DETECTION = ("SEESAW", "EQL", "EQL_V2")  # background label C, row weight s_i alone
LOSS_TYPES10 = DETECTION + ("VS", "FOCAL", "SIGMOID")
REDUCTIONS = mg.REDUCTIONS
SCHEMES = mg.SCHEMES
PARAMS = ("seesaw_p", "seesaw_q", "seesaw_eps", "eql_lambda", "eqlv2_gamma", "eqlv2_mu",
          "eqlv2_alpha", "vs_gamma", "tau", "focal_alpha")
DEFAULTS = {"seesaw_p": 0.8, "seesaw_q": 2.0, "seesaw_eps": 0.01, "eql_lambda": 0.00177,
            "eqlv2_gamma": 12.0, "eqlv2_mu": 0.8, "eqlv2_alpha": 4.0, "vs_gamma": 0.3,
            "tau": 1.0}
USES = {"SEESAW": ("seesaw_p", "seesaw_q", "seesaw_eps"), "EQL": ("eql_lambda",),
        "EQL_V2": ("eqlv2_gamma", "eqlv2_mu", "eqlv2_alpha"), "VS": ("vs_gamma", "tau"),
        "FOCAL": ("focal_alpha",), "SIGMOID": ("focal_alpha",)}
EQLV2_R0 = 100.0  # r_j while the run has had no EQL_V2 update
EQLV2_EPS = 1e-10

CHECKS = {}


def tick(name):
    CHECKS[name] = CHECKS.get(name, 0) + 1


close, grad_close, split = mg.close, mg.grad_close, mg.split


def stable_sigmoid(x):
    if x >= 0.0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


# ---------------------------------------------------------------------------
# Per-class terms of LOSS.md section 10 (float64, from counts / statistics only)
# ---------------------------------------------------------------------------

def eql_threshold(counts, lam):
    """T_j = [f_j < lambda], f_j = n_j / sum_k n_k (float64)."""
    total = float(sum(counts))
    return [1.0 if (n / total) < lam else 0.0 for n in counts]


def eqlv2_weights(case):
    """(r, q, p) per class: q_j negative weight, p_j positive weight."""
    g, mu, alpha = case["eqlv2_gamma"], case["eqlv2_mu"], case["eqlv2_alpha"]
    if case["eqlv2_updates"] == 0:
        r = [EQLV2_R0] * case["cols"]
    else:
        r = [pj / (qj + EQLV2_EPS) for pj, qj in zip(case["eqlv2_positive"], case["eqlv2_negative"])]
    q = [stable_sigmoid(g * (rj - mu)) for rj in r]
    p = [1.0 + alpha * (1.0 - qj) for qj in q]
    return r, q, p


def vs_terms(counts, vs_gamma, tau):
    """Delta_j = (max n / n_j)^vs_gamma, iota_j = tau * log(n_j / sum n) (counts >= 1)."""
    nmax = max(counts)
    total = float(sum(counts))
    delta = [math.exp(vs_gamma * (math.log(nmax) - math.log(n))) for n in counts]
    iota = [tau * math.log(n / total) for n in counts]
    return delta, iota


def class_weights10(case):
    if case["loss_type"] in DETECTION:
        return [1.0] * case["cols"]
    return mg.class_weights(case["class_counts"], case["scheme"], case["beta"])


# ---------------------------------------------------------------------------
# The reference: float64 + autograd, detached factors held constant
# ---------------------------------------------------------------------------

def prepare(case):
    B, C, lt = case["rows"], case["cols"], case["loss_type"]
    z = torch.tensor(case["logits"]).reshape(B, C)
    s = torch.tensor(case.get("sample_weights", [1.0] * B))
    u = torch.tensor(case.get("upstream", [1.0] * B))
    w = torch.tensor(case["_w"])
    p = dict(B=B, C=C, z=z, s=s, u=u, w=w)
    if "labels" in case:
        y = torch.tensor(case["labels"], dtype=torch.int64)
        valid = y != case["ignore_index"]
        fg = valid & (y != C) if lt in DETECTION else valid.clone()
        y_safe = torch.where(fg, y, torch.zeros_like(y))
        t = F.one_hot(y_safe, C).to(torch.float64) * fg[:, None].to(torch.float64)
        row_w = torch.where(fg, s * w[y_safe], torch.zeros_like(s))
        if lt in DETECTION:  # s_i alone; SEESAW background rows take no part (l_i = 0)
            row_w = torch.where(fg if lt == "SEESAW" else valid, s, torch.zeros_like(s))
        omega = row_w[:, None].expand(B, C).clone()
    else:
        y = y_safe = None
        valid = fg = torch.ones(B, dtype=torch.bool)
        t = torch.tensor(case["targets"]).reshape(B, C)
        row_w = None
        omega = s[:, None] * w[None, :]
    p.update(y=y, y_safe=y_safe, valid=valid, fg=fg, t=t, row_w=row_w, omega=omega)
    if lt in ("SEESAW", "VS", "EQL"):
        p["n"] = torch.tensor([float(n) for n in case["class_counts"]])
    if lt == "EQL":
        p["T"] = torch.tensor(eql_threshold(case["class_counts"], case["eql_lambda"]))
        E = fg.to(torch.float64)[:, None]
        p["e"] = 1.0 - E * p["T"][None, :] * (1.0 - t)
    if lt == "EQL_V2":
        r, q, pw = eqlv2_weights(case)
        p["r"], p["q"], p["pw"] = torch.tensor(r), torch.tensor(q), torch.tensor(pw)
        p["e"] = p["pw"][None, :] * t + p["q"][None, :] * (1.0 - t)
    if lt == "VS":
        delta, iota = vs_terms(case["class_counts"], case["vs_gamma"], case["tau"])
        p["delta"], p["iota"] = torch.tensor(delta), torch.tensor(iota)
    if lt in ("FOCAL", "SIGMOID"):
        a = case["focal_alpha"]
        p["a"] = torch.ones(B, C) if a is None else a * t + (1.0 - a) * (1.0 - t)
    return p


def seesaw_offsets(case, p, z):
    """log M + log S for j != y (0 at j = y), from a detached z (LOSS.md 10)."""
    z = z.detach()
    lN = torch.log(torch.clamp(p["n"], min=1.0))
    ys = p["y_safe"]
    log_m = case["seesaw_p"] * torch.clamp(lN[None, :] - lN[ys][:, None], max=0.0)
    ls = torch.log_softmax(z, dim=1)
    lsy = ls.gather(1, ys[:, None])
    log_s = case["seesaw_q"] * torch.clamp(ls - torch.clamp(lsy, min=math.log(case["seesaw_eps"])),
                                           min=0.0)
    onehot = F.one_hot(ys, p["C"]).to(torch.float64)
    return (log_m + log_s) * (1.0 - onehot), log_m, log_s


def per_sample(case, z, p, frozen=None):
    """Unreduced l_i before masking. frozen: SEESAW offsets to hold fixed (else from z)."""
    lt = case["loss_type"]
    t = p["t"]
    if lt == "SEESAW":
        off = frozen if frozen is not None else seesaw_offsets(case, p, z)[0]
        zs = z + off
        zy = z.gather(1, p["y_safe"][:, None]).squeeze(1)
        return p["row_w"] * (torch.logsumexp(zs, dim=1) - zy)
    if lt in ("EQL", "EQL_V2"):
        zp, _, l1 = split(z)
        b = (zp - t * z) + l1
        return p["row_w"] * (p["e"] * b).sum(dim=1)
    if lt == "VS":
        zv = z / p["delta"][None, :] + p["iota"][None, :]
        logp = torch.log_softmax(zv, dim=1)
        return -p["row_w"] * logp.gather(1, p["y_safe"][:, None]).squeeze(1)
    if lt in ("FOCAL", "SIGMOID"):
        zp, zn, l1 = split(z)
        b = (zp - t * z) + l1
        if lt == "SIGMOID":
            return (p["omega"] * p["a"] * b).sum(dim=1)
        m = torch.exp(-case["gamma"] * ((t * z - zn) + l1))
        return (p["omega"] * p["a"] * m * b).sum(dim=1)
    raise ValueError(lt)


def denominator(case, p):
    lt, red = case["loss_type"], case["reduction"]
    if red in ("SUM", "NONE"):
        return 1.0
    n = float(p["valid"].sum())
    if red == "MEAN":
        if lt == "SEESAW":
            return float(p["fg"].sum())
        if lt in ("EQL", "EQL_V2", "VS"):
            return n
        return float((p["t"] * p["valid"][:, None]).sum())  # FOCAL, SIGMOID: P
    if red == "ELEMENT_MEAN":
        return n * p["C"]
    if red == "WEIGHTED_MEAN":
        return float(p["row_w"].sum())
    raise ValueError(red)


def reduce(case, p, l, d):
    if case["reduction"] == "NONE":
        return (p["u"] * l).sum()
    if d == 0.0:
        return None
    return l.sum() / d


def reference(case, frozen=None):
    p = prepare(case)
    z = p["z"].clone().requires_grad_(True)
    raw = per_sample(case, z, p, frozen)
    l = torch.where(p["valid"], raw, torch.zeros_like(raw))
    d = denominator(case, p)
    L = reduce(case, p, l, d)
    if case["reduction"] == "NONE":
        dl = p["u"].clone()
    elif d == 0.0:
        dl = torch.zeros(p["B"])
    else:
        dl = torch.full((p["B"],), 1.0 / d)
    if L is None:
        loss, grad = 0.0, torch.zeros(p["B"], p["C"])
    else:
        L.backward()
        loss, grad = float(L), z.grad.detach().clone()
    res = dict(loss=loss, l=l.detach().clone(), grad=grad, D=d, dl=dl,
               num_samples=int(p["valid"].sum()))
    if case["loss_type"] == "EQL_V2":
        sig = torch.sigmoid(p["z"])
        g = torch.abs(sig - p["t"])
        sv = (p["s"] * p["valid"])[:, None]
        res["pos_delta"] = (sv * p["e"] * g * p["t"]).sum(dim=0)
        res["neg_delta"] = (sv * p["e"] * g * (1.0 - p["t"])).sum(dim=0)
    name = case["name"]
    assert math.isfinite(loss), name
    assert torch.all(torch.isfinite(res["l"])), name
    assert torch.all(torch.isfinite(grad)), name
    assert torch.all(grad[~p["valid"]] == 0) and torch.all(res["l"][~p["valid"]] == 0), name
    if case["loss_type"] == "SEESAW":
        bgr = p["valid"] & ~p["fg"]
        assert torch.all(grad[bgr] == 0) and torch.all(res["l"][bgr] == 0), name
    return p, res


# ---------------------------------------------------------------------------
# Cross-checks
# ---------------------------------------------------------------------------

def closed_form(case, p, res):
    """(a) the G formulas of LOSS.md 10 (and 6 for FOCAL/SIGMOID with alpha)."""
    z, t, dl, lt = p["z"], p["t"], res["dl"], case["loss_type"]
    if lt == "SEESAW":
        off = seesaw_offsets(case, p, z)[0]
        sm = torch.softmax(z + off, dim=1)
        g = (p["row_w"] * dl)[:, None] * (sm - t) * p["fg"][:, None]
    elif lt in ("EQL", "EQL_V2"):
        g = (p["row_w"] * dl)[:, None] * p["e"] * (torch.sigmoid(z) - t)
    elif lt == "VS":
        sm = torch.softmax(z / p["delta"][None, :] + p["iota"][None, :], dim=1)
        g = (p["row_w"] * dl)[:, None] * (sm - t) / p["delta"][None, :]
    elif lt == "SIGMOID":
        g = p["omega"] * p["a"] * dl[:, None] * (torch.sigmoid(z) - t)
    else:
        sig = torch.sigmoid(z)
        zp, zn, l1 = split(z)
        b = (zp - t * z) + l1
        gm = case["gamma"]
        m = torch.exp(-gm * ((t * z - zn) + l1))
        g = p["omega"] * p["a"] * dl[:, None] * m * ((sig - t) - gm * (sig + t - 1.0) * b)
    g = g * p["valid"][:, None]
    if res["D"] == 0.0 and case["reduction"] != "NONE":
        g = torch.zeros_like(g)
    return g


def same(r, r_ref, rtol, what, l_map=None, g_map=None):
    """loss, per-sample losses and gradient agree (relative to the largest element)."""
    assert abs(r["loss"] - r_ref["loss"]) <= rtol * abs(r_ref["loss"]) + 1e-300, \
        (what, r["loss"], r_ref["loss"])
    assert grad_close(r["l"], r_ref["l"], rtol), (what, "per-sample", r["l"], r_ref["l"])
    assert grad_close(r["grad"], r_ref["grad"], rtol), (what, "gradient",
                                                       (r["grad"] - r_ref["grad"]).abs().max())


def mg_case(case, loss_type, **changes):
    """The same request as a make_golden.py (sections 4/9) case, for its reference()."""
    c = {k: v for k, v in case.items() if k in (
        "name", "reduction", "beta", "gamma", "ignore_index", "class_counts", "rows", "cols",
        "logits", "labels", "targets", "sample_weights", "upstream")}
    c.update(loss_type=loss_type, scheme=case["scheme"], tau=mg.DEFAULT_TAU,
             max_margin=mg.DEFAULT_MAX_MARGIN, scale=mg.DEFAULT_SCALE)
    c.update(changes)
    c["expected_class_weights"] = mg.class_weights(c["class_counts"], c["scheme"], c["beta"])
    return c


def rows_subset(case, keep):
    """The case restricted to the rows in keep (list of indices)."""
    B, C = case["rows"], case["cols"]
    c = dict(case)
    c["rows"] = len(keep)
    c["logits"] = [case["logits"][i * C + j] for i in keep for j in range(C)]
    for k in ("labels", "sample_weights", "upstream"):
        if k in case:
            c[k] = [case[k][i] for i in keep]
    return c


def expand_rows(x, keep, B):
    """Scatter rows of a subset result back into B rows (zeros elsewhere)."""
    out = torch.zeros((B,) + tuple(x.shape[1:]))
    if keep:
        out[torch.tensor(keep)] = x
    return out


def check_reduction_arith(case, p, res):
    l, d = res["l"], res["D"]
    if case["reduction"] == "NONE":
        assert close(res["loss"], float((p["u"] * l).sum()), 1e-14, 1e-300), case["name"]
    elif d > 0:
        assert close(res["loss"], math.fsum(l.tolist()) / d, 1e-12, 1e-300), case["name"]
    else:
        assert res["loss"] == 0.0 and torch.all(res["grad"] == 0), case["name"]
    tick("scalar loss == reduction of per-sample losses with section 10's D")


# --- (b) formulations written the way the reference implementations compute ---

def seesaw_mmdet_style(case):
    """mmdetection seesaw_ce_loss semantics: only foreground rows enter (SeesawLoss.forward
    passes cls_score[pos_inds]); mitigation = (cum_j / cum_y)^p where that ratio < 1, from
    cum_samples clamped at 1; compensation = (score_j / max(score_y, eps))^q where that ratio
    > 1, scores = softmax(cls_score.detach()); cls_score + log(weights) * (1 - onehot);
    F.cross_entropy(reduction='none') * label_weights; weight_reduce_loss 'mean' without
    avg_factor = mean over the rows passed in. Returns None where the reference's own
    products would overflow/underflow (it multiplies, cbloss adds logs)."""
    B, C = case["rows"], case["cols"]
    y_all = case["labels"]
    keep = [i for i in range(B) if y_all[i] != case["ignore_index"] and y_all[i] != C]
    if not keep:
        return None
    z_all = torch.tensor(case["logits"]).reshape(B, C)
    cls_score = z_all[keep].clone().requires_grad_(True)
    labels = torch.tensor([y_all[i] for i in keep])
    lw = torch.tensor([case.get("sample_weights", [1.0] * B)[i] for i in keep])
    cum = torch.tensor([float(n) for n in case["class_counts"]])
    onehot = F.one_hot(labels, C)
    sw = torch.ones(len(keep), C)
    if case["seesaw_p"] > 0:
        ratio = cum[None, :].clamp(min=1) / cum[:, None].clamp(min=1)
        idx = (ratio < 1.0).double()
        sw = sw * (ratio.pow(case["seesaw_p"]) * idx + (1 - idx))[labels, :]
    if case["seesaw_q"] > 0:
        scores = F.softmax(cls_score.detach(), dim=1)
        self_scores = scores[torch.arange(len(keep)), labels]
        sm = scores / self_scores[:, None].clamp(min=case["seesaw_eps"])
        idx = (sm > 1.0).double()
        sw = sw * (sm.pow(case["seesaw_q"]) * idx + (1 - idx))
    if not (torch.all(torch.isfinite(sw)) and torch.all(sw > 0)):
        return None
    logits2 = cls_score + sw.log() * (1 - onehot)
    l = F.cross_entropy(logits2, labels, reduction="none") * lw
    red = case["reduction"]
    if red == "MEAN":
        L = l.mean()
    elif red == "SUM":
        L = l.sum()
    else:
        L = (torch.tensor([case.get("upstream", [1.0] * B)[i] for i in keep]) * l).sum()
    L.backward()
    return dict(loss=float(L), l=expand_rows(l.detach(), keep, B),
                grad=expand_rows(cls_score.grad, keep, B))


def eql_reference_style(case):
    """eqlv2 repo EQL.forward: target built over n_c + 1 columns (label n_c = background) and
    cut to n_c; eql_w = 1 - exclude * threshold * (1 - target), exclude = (label != n_c),
    threshold = (freq_info < lambda); BCE-with-logits * eql_w summed / n_i (all rows).
    freq_info here is n_j / sum n (LOSS.md's f; the reference loads image frequencies).
    The reference has no ignore_index and no sample weights: ignored rows are dropped and
    each row is multiplied by s_i, as LOSS.md does."""
    B, C = case["rows"], case["cols"]
    keep = [i for i in range(B) if case["labels"][i] != case["ignore_index"]]
    if not keep:
        return None
    n_i, n_c = len(keep), C
    score = torch.tensor(case["logits"]).reshape(B, C)[keep].clone().requires_grad_(True)
    label = torch.tensor([case["labels"][i] for i in keep])
    target = torch.zeros(n_i, n_c + 1)
    target[torch.arange(n_i), label] = 1
    target = target[:, :n_c]
    freq = torch.tensor([float(n) for n in case["class_counts"]])
    freq = freq / freq.sum()
    exclude = (label != n_c).double().view(n_i, 1).expand(n_i, n_c)
    thr = torch.zeros(n_c)
    thr[freq < case["eql_lambda"]] = 1
    eql_w = 1 - exclude * thr.view(1, n_c).expand(n_i, n_c) * (1 - target)
    s = torch.tensor([case.get("sample_weights", [1.0] * B)[i] for i in keep])
    bce = F.binary_cross_entropy_with_logits(score, target, reduction="none")
    l = (bce * eql_w).sum(dim=1) * s
    red = case["reduction"]
    if red == "MEAN":
        L = l.sum() / n_i
    elif red == "SUM":
        L = l.sum()
    else:
        L = (torch.tensor([case.get("upstream", [1.0] * B)[i] for i in keep]) * l).sum()
    L.backward()
    return dict(loss=float(L), l=expand_rows(l.detach(), keep, B),
                grad=expand_rows(score.grad, keep, B))


class EQLv2Module:
    """The eqlv2 repo's EQLv2 module as a state machine: C + 1 columns, the last one the
    objectness/background column (target 1 for label C, weights always 1); weights all 1
    before the first update (its _pos_grad is None); else neg_w = 1/(1+exp(-g(P/(Q+1e-10) -
    mu))), pos_w = 1 + alpha (1 - neg_w); loss = sum(BCE * weight) / n_i; collect_grad
    after the loss, with the same weights: |sigmoid - target| * target * weight summed over
    rows (objectness column dropped) added to P, likewise (1 - target) to Q.
    Generalised as LOSS.md does: ignored rows dropped, every row multiplied by s_i."""

    def __init__(self, C, gamma, mu, alpha):
        self.C, self.gamma, self.mu, self.alpha = C, gamma, mu, alpha
        self.pos = None
        self.neg = None

    def load(self, P, Q, updates):
        if updates > 0:
            self.pos, self.neg = torch.tensor(P), torch.tensor(Q)

    def weights(self, n_i):
        n_c = self.C + 1
        if self.pos is None:
            return torch.ones(n_i, n_c), torch.ones(n_i, n_c)
        pos_neg = self.pos / (self.neg + 1e-10)
        neg_w = torch.cat([1 / (1 + torch.exp(-self.gamma * (pos_neg - self.mu))), torch.ones(1)])
        pos_w = 1 + self.alpha * (1 - neg_w)
        return pos_w.view(1, -1).expand(n_i, n_c), neg_w.view(1, -1).expand(n_i, n_c)

    def forward(self, case, obj_logits, accumulate=True):
        B, C = case["rows"], case["cols"]
        keep = [i for i in range(B) if case["labels"][i] != case["ignore_index"]]
        if not keep:
            return None
        n_i = len(keep)
        z = torch.tensor(case["logits"]).reshape(B, C)[keep]
        score = torch.cat([z, obj_logits[keep][:, None]], dim=1).clone().requires_grad_(True)
        label = torch.tensor([case["labels"][i] for i in keep])
        target = torch.zeros(n_i, C + 1)
        target[torch.arange(n_i), label] = 1
        pos_w, neg_w = self.weights(n_i)
        weight = pos_w * target + neg_w * (1 - target)
        s = torch.tensor([case.get("sample_weights", [1.0] * B)[i] for i in keep])[:, None]
        bce = F.binary_cross_entropy_with_logits(score, target, reduction="none")
        # LOSS.md: the objectness column is not part of EQL_V2; drop its (plain BCE) term
        l = (bce * weight * s)[:, :C].sum(dim=1)
        obj = (bce * weight * s)[:, C]
        red = case["reduction"]
        if red == "MEAN":
            L, Lfull = l.sum() / n_i, (l.sum() + obj.sum()) / n_i
        elif red == "SUM":
            L, Lfull = l.sum(), l.sum() + obj.sum()
        else:
            u = torch.tensor([case.get("upstream", [1.0] * B)[i] for i in keep])
            L, Lfull = (u * l).sum(), (u * (l + obj)).sum()
        Lfull.backward()  # the reference's loss, objectness included
        prob = torch.sigmoid(score.detach())
        g = torch.abs(target * (prob - 1) + (1 - target) * prob)
        wd = weight.detach() * s
        pd = torch.sum(g * target * wd, dim=0)[:-1]
        nd = torch.sum(g * (1 - target) * wd, dim=0)[:-1]
        if accumulate:
            if self.pos is None:
                self.pos, self.neg = torch.zeros(C), torch.zeros(C)
            self.pos = self.pos + pd
            self.neg = self.neg + nd
        return dict(loss=float(L), l=expand_rows(l.detach(), keep, B),
                    grad=expand_rows(score.grad[:, :C], keep, B), pos_delta=pd, neg_delta=nd,
                    obj_weight_is_one=bool(torch.all(weight[:, C] == 1)))


def vs_reference_style(case):
    """VS-Loss VSLoss: cls_probs = n / sum n; temp = (1/n)^gamma / min((1/n)^gamma) (= Delta);
    iota = tau * log(cls_probs); output = x / Delta + iota; F.cross_entropy(weight=w)."""
    B, C = case["rows"], case["cols"]
    n = np.array(case["class_counts"], dtype=np.float64)
    temp = (1.0 / n) ** case["vs_gamma"]
    temp = temp / np.min(temp)
    iota = case["tau"] * np.log(n / n.sum())
    x = torch.tensor(case["logits"]).reshape(B, C).requires_grad_(True)
    out = x / torch.tensor(temp) + torch.tensor(iota)
    y = torch.tensor(case["labels"])
    w = torch.tensor(case["_w"])
    ce = F.cross_entropy(out, y, weight=w, ignore_index=case["ignore_index"], reduction="none")
    s = torch.tensor(case.get("sample_weights", [1.0] * B))
    return x, out, y, w, ce * s, temp


def cross_check(case, p, res):
    name, lt, red = case["name"], case["loss_type"], case["reduction"]
    z, t, valid = p["z"], p["t"], p["valid"]
    max_abs_z = float(torch.max(torch.abs(z)))

    # (a) closed forms
    g_an = closed_form(case, p, res)
    assert grad_close(res["grad"], g_an, 1e-9), (name, "closed form", (res["grad"] - g_an).abs().max())
    tick(f"{lt}: autograd gradient == closed-form G of LOSS.md 10")
    check_reduction_arith(case, p, res)

    if lt == "SEESAW":
        # (b) mmdetection seesaw_ce_loss semantics
        ref = seesaw_mmdet_style(case)
        if ref is not None:
            same(res, ref, 1e-10, (name, "mmdet seesaw"))
            tick("SEESAW == mmdetection seesaw_ce_loss semantics (foreground rows; loss, l_i, grad)")
        else:
            tick("SEESAW: mmdet-style multiplicative factors overflow/underflow or no foreground "
                 "(cbloss's log form is finite)")
        # (d) p = q = 0 -> SOFTMAX with weighting NONE, on the foreground rows
        v = dict(case, seesaw_p=0.0, seesaw_q=0.0)
        pv, rv = reference(v)
        keep = [i for i in range(p["B"]) if bool(p["fg"][i])]
        if keep:
            sub = rows_subset(case, keep)
            c_sm = mg_case(sub, "SOFTMAX", scheme="NONE")
            _, rs = mg.reference(c_sm)
            assert close(rv["loss"], rs["loss"], 1e-12, 1e-300), (name, "seesaw p=q=0")
            assert grad_close(rv["l"], expand_rows(rs["l"], keep, p["B"]), 1e-12), name
            assert grad_close(rv["grad"], expand_rows(rs["grad"], keep, p["B"]), 1e-12), name
            tick("SEESAW with p = q = 0 == SOFTMAX, weighting NONE (foreground rows; loss, l_i, grad)")
    elif lt == "EQL":
        ref = eql_reference_style(case)
        if ref is not None:
            same(res, ref, 1e-11, (name, "eql reference"))
            tick("EQL == eqlv2 repo EQL.forward semantics (loss, l_i, grad)")
        # (d) lambda = 0 -> SIGMOID weighting NONE, background rows as all-zero target rows
        v = dict(case, eql_lambda=0.0)
        _, rv = reference(v)
        B, C = p["B"], p["C"]
        tg = t.reshape(-1).tolist()
        c_sig = mg_case(case, "SIGMOID", scheme="NONE", reduction="SUM")
        del c_sig["labels"]
        c_sig["targets"] = tg
        c_sig.pop("upstream", None)
        c_sig["sample_weights"] = [float(x) for x in (p["s"] * valid)]
        _, rs = mg.reference(c_sig)
        assert grad_close(rv["l"], rs["l"], 1e-12), (name, "eql lambda=0 per-sample")
        scale = 1.0 if red == "SUM" else (1.0 / rv["D"] if red == "MEAN" and rv["D"] > 0 else None)
        if red == "NONE":
            assert close(rv["loss"], float((p["u"] * rs["l"]).sum()), 1e-12, 1e-300), name
            assert grad_close(rv["grad"], p["u"][:, None] * rs["grad"], 1e-12), name
        elif scale is not None:
            assert close(rv["loss"], rs["loss"] * scale, 1e-12, 1e-300), name
            assert grad_close(rv["grad"], rs["grad"] * scale, 1e-12), name
        tick("EQL with lambda = 0 == SIGMOID, weighting NONE, background rows all-zero targets")
    elif lt == "EQL_V2":
        B = p["B"]
        r = mg.rng_for(name + "/objectness")
        obj = torch.tensor(r.standard_normal(B) * 2.0)
        mod = EQLv2Module(p["C"], case["eqlv2_gamma"], case["eqlv2_mu"], case["eqlv2_alpha"])
        mod.load(case["eqlv2_positive"], case["eqlv2_negative"], case["eqlv2_updates"])
        ref = mod.forward(case, obj)
        fresh_equal = case["eqlv2_updates"] > 0 or all(x == 1.0 for x in p["q"].tolist())
        if ref is not None and fresh_equal:
            assert ref["obj_weight_is_one"], name
            same(res, ref, 1e-10, (name, "eqlv2 module"))
            assert grad_close(res["pos_delta"], ref["pos_delta"], 1e-12), (name, "P delta")
            assert grad_close(res["neg_delta"], ref["neg_delta"], 1e-12), (name, "Q delta")
            tick("EQL_V2 == eqlv2 repo EQLv2 module (objectness column removed; loss, l_i, grad, "
                 "P/Q deltas)")
        elif ref is not None:
            tick("EQL_V2: fresh run with q(100) != 1: LOSS.md's r = 100 differs from the "
                 "reference's all-ones first step (not compared)")
        # (d) a fresh run (r = 100) with g * (100 - mu) > 40 == EQL with lambda = 0
        if case["eqlv2_updates"] == 0 and case["eqlv2_gamma"] * (100.0 - case["eqlv2_mu"]) > 40:
            v = {k: x for k, x in case.items() if not k.startswith("eqlv2")}
            v.update(loss_type="EQL", eql_lambda=0.0)
            _, rv = reference(v)
            same(res, rv, 1e-13, (name, "fresh eqlv2 == eql lambda 0"))
            tick("EQL_V2 on a fresh run (q = 1, p = 1) == EQL with lambda = 0")
        # deltas: direct sum over rows, written out
        sig = torch.sigmoid(z).tolist()
        for j in range(p["C"]):
            pd = qd = 0.0
            for i in range(B):
                if not bool(valid[i]):
                    continue
                tij = float(t[i, j])
                gij = abs(sig[i][j] - tij)
                eij = float(p["e"][i, j])
                si = float(p["s"][i])
                pd += si * eij * gij * tij
                qd += si * eij * gij * (1.0 - tij)
            assert abs(pd - float(res["pos_delta"][j])) <= 1e-12 * abs(pd) + 1e-300, name
            assert abs(qd - float(res["neg_delta"][j])) <= 1e-12 * abs(qd) + 1e-300, name
        tick("EQL_V2 P/Q deltas == explicit loop over rows not ignored (background included)")
    elif lt == "VS":
        x, out, y, w, ce_s, temp = vs_reference_style(case)
        assert close(p["delta"], torch.tensor(temp), 1e-13, 1e-300), name
        assert close(res["l"], ce_s.detach(), 1e-12, 1e-300), (name, "VSLoss none")
        tick("VS l_i == s_i * VSLoss-style F.cross_entropy(x/Delta + iota, weight=w, 'none')")
        if torch.all(p["s"] == 1.0) and res["D"] > 0 and red == "WEIGHTED_MEAN":
            Lr = F.cross_entropy(out, y, weight=w, ignore_index=case["ignore_index"])
            Lr.backward()
            assert close(res["loss"], float(Lr), 1e-12, 1e-300), name
            assert grad_close(res["grad"], x.grad, 1e-10), name
            tick("VS WEIGHTED_MEAN (s = 1) == VSLoss.forward (F.cross_entropy(weight=w) mean)")
        # (d) vs_gamma = 0 -> LOGIT_ADJUSTED (make_golden's section 9 reference)
        v = dict(case, vs_gamma=0.0)
        _, rv = reference(v)
        _, rl = mg.reference(mg_case(case, "LOGIT_ADJUSTED", tau=case["tau"]))
        same(rv, rl, 1e-12, (name, "vs gamma 0 == logit adjusted"))
        tick("VS with vs_gamma = 0 == LOGIT_ADJUSTED (make_golden.py section 9 reference)")
        v = dict(case, vs_gamma=0.0, tau=0.0)
        _, rv = reference(v)
        _, rl = mg.reference(mg_case(case, "SOFTMAX"))
        same(rv, rl, 1e-12, (name, "vs gamma 0 tau 0 == softmax"))
        tick("VS with vs_gamma = 0, tau = 0 == SOFTMAX (make_golden.py reference)")
    else:  # FOCAL / SIGMOID with focal_alpha
        a = case["focal_alpha"]
        assert a is not None
        # (d) alpha = 0.5 is exactly half the unweighted loss of make_golden.py
        v = dict(case, focal_alpha=0.5)
        _, rv = reference(v)
        _, r0 = mg.reference(mg_case(case, lt))
        half = dict(loss=0.5 * r0["loss"], l=0.5 * r0["l"], grad=0.5 * r0["grad"])
        same(rv, half, 1e-12, (name, "alpha 0.5 == half"))
        tick(f"{lt} with focal_alpha = 0.5 == 0.5 * {lt} of make_golden.py")
        if lt == "FOCAL":
            _, r1 = reference(dict(case, gamma=0.0))
            _, r2 = reference(dict(case, loss_type="SIGMOID"))
            same(r1, r2, 1e-13, (name, "focal gamma 0 == sigmoid, alpha"))
            tick("FOCAL with gamma = 0 == SIGMOID, same focal_alpha")
        # (e) torchvision sigmoid_focal_loss semantics on hard targets, |z| <= 30
        hard = bool(torch.all((t == 0) | (t == 1)))
        if hard and max_abs_z <= 30.0:
            zz = z.clone().requires_grad_(True)
            prob = torch.sigmoid(zz)
            ce = F.binary_cross_entropy_with_logits(zz, t, reduction="none")
            p_t = prob * t + (1 - prob) * (1 - t)
            gm = case["gamma"] if lt == "FOCAL" else 0.0
            lv = ce * ((1 - p_t) ** gm) if gm > 0 else ce
            alpha_t = a * t + (1 - a) * (1 - t)
            lv = alpha_t * lv
            li = (p["omega"] * lv * valid[:, None]).sum(dim=1)
            assert close(res["l"], li.detach(), 1e-10, 1e-300), (name, "torchvision focal")
            if red == "NONE" or res["D"] > 0:
                (li * res["dl"]).sum().backward()
                assert grad_close(res["grad"], zz.grad, 1e-9), (name, "torchvision focal grad")
            tick(f"{lt}+alpha (hard targets, |z| <= 30) == omega * torchvision sigmoid_focal_loss "
                 "(alpha_t * (1-p_t)^gamma * BCE; loss and grad)")


def finite_differences(case, p, res):
    """(f) central differences of the float64 scalar, detached factors held constant."""
    if p["B"] * p["C"] > 64 or float(torch.max(torch.abs(p["z"]))) > 20.0:
        return
    frozen = seesaw_offsets(case, p, p["z"])[0] if case["loss_type"] == "SEESAW" else None
    d = res["D"]
    if case["reduction"] != "NONE" and d == 0.0:
        return

    def f(zz):
        c = dict(case, logits=zz.reshape(-1).tolist())
        pp = prepare(c)
        raw = per_sample(c, zz, pp, frozen)
        l = torch.where(pp["valid"], raw, torch.zeros_like(raw))
        return float(reduce(c, pp, l, d))

    h = 1e-5
    g_fd = torch.zeros(p["B"], p["C"])
    for i in range(p["B"]):
        for j in range(p["C"]):
            zp, zm = p["z"].clone(), p["z"].clone()
            zp[i, j] += h
            zm[i, j] -= h
            g_fd[i, j] = (f(zp) - f(zm)) / (2 * h)
    scale = float(torch.max(torch.abs(res["grad"])))
    err = float(torch.max(torch.abs(g_fd - res["grad"])))
    assert err <= 1e-6 * scale + 1e-9, (case["name"], "finite differences", err, scale)
    tick(f"{case['loss_type']}: central finite differences (h = 1e-5, detached factors fixed)")


# ---------------------------------------------------------------------------
# Case construction
# ---------------------------------------------------------------------------

CASES = []
INVALID = []
NAMES = set()


def validate(c):
    B, C, lt = c["rows"], c["cols"], c["loss_type"]
    assert lt in LOSS_TYPES10 and c["reduction"] in REDUCTIONS and c["scheme"] in SCHEMES
    assert B >= 1 and C >= 1 and len(c["logits"]) == B * C
    assert all(math.isfinite(v) for v in c["logits"])
    assert len(c["class_counts"]) == C and all(isinstance(n, int) and n >= 0 for n in c["class_counts"])
    assert 0.0 <= c["beta"] <= 1.0 and c["gamma"] >= 0.0
    for k in PARAMS:
        if k in USES[lt] and k != "focal_alpha":
            assert c[k] is not None, (c["name"], k)
        elif k not in USES[lt]:
            assert c[k] is None, (c["name"], k)
    if lt in DETECTION:
        assert "labels" in c and c["scheme"] == "NONE"
        assert c["reduction"] in ("MEAN", "SUM", "NONE")
        assert all(v == c["ignore_index"] or 0 <= v <= C for v in c["labels"])
        assert c["ignore_index"] != C
    elif lt == "VS":
        assert "labels" in c and min(c["class_counts"]) >= 1
        assert all(v == c["ignore_index"] or 0 <= v < C for v in c["labels"])
    else:
        assert ("labels" in c) != ("targets" in c)
        if "labels" in c:
            assert all(v == c["ignore_index"] or 0 <= v < C for v in c["labels"])
        else:
            assert c["reduction"] != "WEIGHTED_MEAN"
            assert all(0.0 <= v <= 1.0 for v in c["targets"])
        assert c["focal_alpha"] is not None and 0.0 <= c["focal_alpha"] <= 1.0
    if lt == "SEESAW":
        assert c["seesaw_p"] >= 0 and c["seesaw_q"] >= 0 and c["seesaw_eps"] > 0
    if lt == "EQL":
        assert 0.0 <= c["eql_lambda"] <= 1.0 and sum(c["class_counts"]) > 0
        total = float(sum(c["class_counts"]))
        for n in c["class_counts"]:  # no near-ties: T_j must not depend on rounding
            f = n / total
            assert f == c["eql_lambda"] or abs(f - c["eql_lambda"]) > 1e-6 * c["eql_lambda"], \
                (c["name"], f)
    if lt == "EQL_V2":
        assert c["eqlv2_gamma"] >= 0 and math.isfinite(c["eqlv2_mu"]) and c["eqlv2_alpha"] >= 0
        assert len(c["eqlv2_positive"]) == C and len(c["eqlv2_negative"]) == C
        assert all(x >= 0 for x in c["eqlv2_positive"] + c["eqlv2_negative"])
        assert isinstance(c["eqlv2_updates"], int) and c["eqlv2_updates"] >= 0
        if c["eqlv2_updates"] == 0:
            assert not any(c["eqlv2_positive"]) and not any(c["eqlv2_negative"])
    if lt == "VS":
        assert c["vs_gamma"] >= 0 and c["tau"] >= 0
    if "sample_weights" in c:
        assert len(c["sample_weights"]) == B and all(v >= 0 for v in c["sample_weights"])
    if "upstream" in c:
        assert c["reduction"] == "NONE" and len(c["upstream"]) == B
    for key in ("logits", "targets", "sample_weights", "upstream"):
        if key in c:
            arr = np.array(c[key], dtype=np.float64)
            assert np.array_equal(arr.astype(np.float32).astype(np.float64), arr), (c["name"], key)
    if c["scheme"] != "NONE":
        assert any(n > 0 for n in c["class_counts"])


def f32s(x):
    return [float(v) for v in np.asarray(x, dtype=np.float32).reshape(-1)]


def params_for(lt, given):
    out = {}
    for k in PARAMS:
        if k in USES[lt]:
            v = given.pop(k, None)
            if v is None and k != "focal_alpha":
                v = DEFAULTS[k]
            out[k] = None if v is None else float(v)  # doubles on the wire, kept exact
        else:
            assert given.pop(k, None) is None, k
            out[k] = None
    return out


def add(name, loss_type, reduction, logits, *, labels=None, targets=None, counts=None,
        scheme=None, beta=0.9999, gamma=2.0, ignore_index=-100, sample_weights=None,
        upstream=None, dtype="float32", eqlv2_stats=None, sequence=None, fd=True, **params):
    assert name not in NAMES, name
    NAMES.add(name)
    logits = np.asarray(logits, dtype=np.float32)
    B, C = logits.shape
    if scheme is None:
        scheme = "NONE" if loss_type in DETECTION else "EFFECTIVE_NUMBER"
    c = {"name": name, "loss_type": loss_type, "reduction": reduction, "scheme": scheme,
         "beta": float(beta), "gamma": float(gamma)}
    c.update(params_for(loss_type, params))
    assert not params, params
    c.update({"ignore_index": int(ignore_index), "class_counts": [int(n) for n in counts],
              "rows": int(B), "cols": int(C), "logits_dtype": dtype})
    if loss_type == "EQL_V2":
        P, Q, upd = eqlv2_stats if eqlv2_stats is not None else ([0.0] * C, [0.0] * C, 0)
        c["eqlv2_positive"] = [float(x) for x in P]
        c["eqlv2_negative"] = [float(x) for x in Q]
        c["eqlv2_updates"] = int(upd)
    if sequence is not None:
        c["sequence"] = sequence
    if dtype == "float32":
        c["logits"] = [float(v) for v in logits.reshape(-1)]
    else:
        bits, dec = mg.half_encode(logits, dtype)
        c["logits"] = [float(v) for v in dec.reshape(-1)]
        c["logits_bits"] = bits
    if labels is not None:
        c["labels"] = [int(v) for v in labels]
    if targets is not None:
        c["targets"] = f32s(targets)
    if sample_weights is not None:
        c["sample_weights"] = f32s(sample_weights)
    if upstream is not None:
        c["upstream"] = f32s(upstream)
    validate(c)

    w = class_weights10(c)
    if loss_type not in DETECTION:
        wd = mg.class_weights_decimal(c["class_counts"], scheme, c["beta"])
        assert close(w, wd, 1e-13, 1e-300), name
        tick("class weights (expm1/log1p form) == 60-digit decimal evaluation")
    c["_w"] = w
    p, res = reference(c)
    cross_check(c, p, res)
    if fd:
        finite_differences(c, p, res)
    del c["_w"]
    e = {}
    if loss_type not in DETECTION:
        e["class_weights"] = w
    e.update({"loss": res["loss"], "per_sample_losses": [float(v) for v in res["l"]],
              "gradient": [float(v) for v in res["grad"].reshape(-1)],
              "num_samples": res["num_samples"], "denominator": res["D"]})
    if loss_type == "EQL":
        e["eql_threshold"] = [float(v) for v in p["T"]]
    if loss_type == "EQL_V2":
        e["eqlv2_negative_weight"] = [float(v) for v in p["q"]]
        e["eqlv2_positive_weight"] = [float(v) for v in p["pw"]]
        e["positive_gradient_delta"] = [float(v) for v in res["pos_delta"]]
        e["negative_gradient_delta"] = [float(v) for v in res["neg_delta"]]
    if loss_type == "VS":
        e["vs_delta"] = [float(v) for v in p["delta"]]
    c["expected"] = e
    for v in json.loads(json.dumps(e, allow_nan=False)).values():
        assert all(math.isfinite(x) for x in (v if isinstance(v, list) else [v])), name
    CASES.append(c)
    return c


def counts_for(r, C, zeros=0, lo=1):
    counts = mg.long_tail_counts(r, C, lo=lo)
    for j in r.choice(C, size=zeros, replace=False).tolist() if zeros else []:
        counts[j] = 0
    return counts


def split_lambda(counts):
    """A float32 lambda between the sorted frequencies, about half the classes below it."""
    total = float(sum(counts))
    fs = sorted(set(n / total for n in counts))
    if len(fs) < 2:
        return 0.5
    k = max(1, len(fs) // 2)
    lo, hi = fs[k - 1], fs[k]
    return float(np.float32(math.sqrt(max(lo, 1e-30) * hi)))


def eqlv2_random_stats(r, C, mu=0.8):
    Q = r.uniform(10.0, 1000.0, size=C)
    ratio = r.uniform(0.0, 2.0 * max(mu, 0.5), size=C)
    P = np.asarray(ratio * Q, dtype=np.float32)
    return f32s(P), f32s(Q), int(r.integers(1, 500))


def rand(name, lt, red, *, B=None, C=None, mode="labels", sw=False, ign=0, bg=0,
         upstream=None, scale=2.0, counts=None, zeros=0, stats="random", **kw):
    """Random case; bg: background rows (label C, detection losses only)."""
    r = mg.rng_for(name)
    B = B if B is not None else int(r.integers(4, 13))
    C = C if C is not None else int(r.integers(2, 11))
    logits = (r.standard_normal((B, C)) * scale).astype(np.float32)
    if counts is None:
        counts = counts_for(r, C, zeros=zeros)
    args = dict(counts=counts, **kw)
    if lt == "EQL" and "eql_lambda" not in kw:
        args["eql_lambda"] = split_lambda(counts)
    if lt == "EQL_V2" and "eqlv2_stats" not in kw:
        if stats == "random":
            args["eqlv2_stats"] = eqlv2_random_stats(r, C, kw.get("eqlv2_mu", 0.8))
    if mode == "labels":
        labels = r.integers(0, C, size=B).tolist()
        idx = r.permutation(B).tolist()
        for i in idx[:ign]:
            labels[i] = kw.get("ignore_index", -100)
        for i in idx[ign:ign + bg]:
            labels[i] = C
        args["labels"] = labels
    elif mode == "multihot":
        tg = (r.uniform(size=(B, C)) < 0.3).astype(np.float32)
        tg[0, :] = 0.0
        if B > 1:
            tg[1, :] = 1.0
        args["targets"] = tg
    elif mode == "soft":
        tg = r.uniform(size=(B, C)).astype(np.float32)
        tg[r.uniform(size=(B, C)) < 0.15] = 0.0
        tg[r.uniform(size=(B, C)) < 0.15] = 1.0
        args["targets"] = tg
    if sw:
        s = r.uniform(0.0, 3.0, size=B).astype(np.float32)
        s[r.choice(B, size=max(1, B // 4), replace=False)] = 0.0
        args["sample_weights"] = s
    if upstream == "random":
        uu = r.uniform(-2.0, 2.0, size=B).astype(np.float32)
        uu[0] = 0.0
        args["upstream"] = uu
    return add(name, lt, red, logits, **args)


def lname(x):
    return x.lower()


def build_checks():
    """(c) the check values of LOSS.md 10."""
    c = {"rows": 3, "cols": 3, "labels": [0, 1, 2], "class_counts": [100, 10, 1],
         "seesaw_p": 0.8, "seesaw_q": 0.0, "seesaw_eps": 0.01, "ignore_index": -100}
    p = {"n": torch.tensor([100.0, 10.0, 1.0]), "y_safe": torch.tensor([0, 1, 2]), "C": 3}
    _, log_m, _ = seesaw_offsets(c, p, torch.zeros(3, 3))
    M = torch.exp(log_m)
    want = [[1, 0.15848932, 0.02511886], [1, 1, 0.15848932], [1, 1, 1]]
    assert torch.all(torch.abs(M - torch.tensor(want, dtype=torch.float64)) <= 1e-8), M
    tick("LOSS.md 10 check: SEESAW mitigation M for counts [100,10,1], p 0.8 (1e-8)")
    assert eql_threshold([900, 99, 1], 0.01) == [0.0, 0.0, 1.0]
    tick("LOSS.md 10 check: EQL T for counts [900,99,1], lambda 0.01")
    delta, _ = vs_terms([100, 10, 1], 0.3, 1.0)
    assert all(abs(a - b) <= 1e-8 for a, b in zip(delta, [1, 1.99526231, 3.98107171])), delta
    tick("LOSS.md 10 check: VS Delta for counts [100,10,1], vs_gamma 0.3 (1e-8)")
    # EQL_V2 at the defaults on a fresh run: q = 1 exactly, p = 1 exactly (float64)
    _, q, pw = eqlv2_weights({"eqlv2_gamma": 12.0, "eqlv2_mu": 0.8, "eqlv2_alpha": 4.0,
                              "eqlv2_updates": 0, "cols": 2})
    assert q == [1.0, 1.0] and pw == [1.0, 1.0]
    tick("EQL_V2 defaults, fresh run: q_j = 1 and p_j = 1 exactly in float64")
    # stable sigmoid vs math at moderate arguments; no overflow at huge ones
    for x in (-700.0, -30.0, -1.0, 0.0, 1.0, 30.0, 700.0):
        assert abs(stable_sigmoid(x) - 1.0 / (1.0 + math.exp(-x))) <= 1e-15
    assert stable_sigmoid(-1e300) == 0.0 and stable_sigmoid(1e300) == 1.0


def build_cases():
    build_checks()
    RED3 = ("MEAN", "SUM", "NONE")

    # 1. every detection loss x its reductions: plain, weighted (+ ignore, background,
    #    upstream), zero counts (SEESAW, EQL)
    for lt in DETECTION:
        for red in RED3:
            rand(f"{lname(lt)}_{lname(red)}", lt, red, B=7)
            rand(f"{lname(lt)}_{lname(red)}_weighted", lt, red, B=9, sw=True, ign=1, bg=2,
                 upstream="random" if red == "NONE" else None)
            rand(f"{lname(lt)}_{lname(red)}_background", lt, red, B=8, bg=3)
            if lt != "EQL_V2":
                rand(f"{lname(lt)}_{lname(red)}_zero_counts", lt, red, B=8, C=6, zeros=2, bg=1)
    # fresh EQL_V2 runs (no update yet: r = 100)
    for red in RED3:
        rand(f"eql_v2_{lname(red)}_fresh_run", "EQL_V2", red, B=8, bg=2, ign=1, stats="fresh",
             sw=True)
    # 2. VS: every reduction x every scheme, plain and weighted
    for red in REDUCTIONS:
        for sch in SCHEMES:
            rand(f"vs_{lname(red)}_{lname(sch)}", "VS", red, B=7, scheme=sch)
        rand(f"vs_{lname(red)}_weighted", "VS", red, B=9, sw=True, ign=2,
             upstream="random" if red == "NONE" else None)
    rand("vs_mean_beta_1", "VS", "MEAN", B=6, beta=1.0)
    rand("vs_sum_beta_0", "VS", "SUM", B=6, beta=0.0)
    # 3. focal_alpha: FOCAL and SIGMOID, labels and targets, several reductions and alphas
    for lt in ("FOCAL", "SIGMOID"):
        for mode in ("labels", "multihot", "soft"):
            for red in REDUCTIONS:
                if mode != "labels" and red == "WEIGHTED_MEAN":
                    continue
                rand(f"{lname(lt)}_alpha_{mode}_{lname(red)}", lt, red, mode=mode, B=7,
                     focal_alpha=0.25)
            rand(f"{lname(lt)}_alpha_{mode}_mean_weighted", lt, "MEAN", mode=mode, B=8, sw=True,
                 ign=1 if mode == "labels" else 0, focal_alpha=0.75)
            rand(f"{lname(lt)}_alpha_{mode}_none_weighted", lt, "NONE", mode=mode, B=8, sw=True,
                 upstream="random", focal_alpha=0.4)
        for a in (0.0, 1.0):
            for mode in ("labels", "multihot"):
                rand(f"{lname(lt)}_alpha_{int(a)}_{mode}_sum", lt, "SUM", mode=mode, B=6,
                     focal_alpha=a)
        rand(f"{lname(lt)}_alpha_scheme_none", lt, "MEAN", B=6, scheme="NONE", focal_alpha=0.25)
        rand(f"{lname(lt)}_alpha_inverse_frequency", lt, "ELEMENT_MEAN", B=6,
             scheme="INVERSE_FREQUENCY", focal_alpha=0.25)
    rand("focal_alpha_gamma_0", "FOCAL", "MEAN", B=6, gamma=0.0, focal_alpha=0.25)
    rand("focal_alpha_gamma_0_5", "FOCAL", "SUM", mode="multihot", B=6, gamma=0.5,
         focal_alpha=0.25)
    rand("focal_alpha_retinanet", "FOCAL", "SUM", mode="multihot", B=10, C=8, gamma=2.0,
         focal_alpha=0.25, counts=[1] * 8, scheme="NONE")

    # 4. D = 0
    for lt in DETECTION:
        for red in RED3:
            r = mg.rng_for(f"{lname(lt)}_{lname(red)}_all_ignored")
            z = r.standard_normal((4, 5)).astype(np.float32)
            add(f"{lname(lt)}_{lname(red)}_all_ignored", lt, red, z, labels=[-100] * 4,
                counts=[5, 4, 3, 2, 1])
    for red in RED3:
        r = mg.rng_for(f"seesaw_{lname(red)}_all_background")
        z = (r.standard_normal((5, 4)) * 3).astype(np.float32)
        add(f"seesaw_{lname(red)}_all_background", "SEESAW", red, z, labels=[4, 4, -100, 4, 4],
            counts=[3, 0, 7, 1], upstream=[1.0, -2.0, 0.5, 3.0, 1.0] if red == "NONE" else None)
    for red in ("MEAN", "SUM"):
        r = mg.rng_for(f"eql_{lname(red)}_all_background")
        z = (r.standard_normal((4, 4)) * 3).astype(np.float32)
        add(f"eql_{lname(red)}_all_background", "EQL", red, z, labels=[4, 4, 4, 4],
            counts=[30, 9, 2, 1], eql_lambda=0.1)
        add(f"eql_v2_{lname(red)}_all_background", "EQL_V2", red, z, labels=[4, 4, 4, 4],
            counts=[30, 9, 2, 1], eqlv2_stats=([1.0, 2.0, 0.5, 0.0], [3.0, 2.0, 8.0, 4.0], 3))
    for red in REDUCTIONS:
        r = mg.rng_for(f"vs_{lname(red)}_all_ignored")
        z = r.standard_normal((3, 4)).astype(np.float32)
        add(f"vs_{lname(red)}_all_ignored", "VS", red, z, labels=[-100] * 3, counts=[9, 5, 2, 1])
    add("focal_alpha_mean_no_positive", "FOCAL", "MEAN", np.ones((2, 3), np.float32),
        targets=np.zeros((2, 3), np.float32), counts=[3, 2, 1], focal_alpha=0.25)
    add("sigmoid_alpha_weighted_mean_zero_weights", "SIGMOID", "WEIGHTED_MEAN",
        np.ones((2, 3), np.float32), labels=[0, 1], sample_weights=[0.0, 0.0], counts=[3, 2, 1],
        focal_alpha=0.25)

    # 5. extreme logits: |z| up to 1e4 and 3e4; results finite
    ext = np.array([
        [1e4, -1e4, 0.0, 100.0, -100.0],
        [-1e4, 1e4, 88.8, -88.8, 0.0],
        [3e4, -3e4, 1e3, -1e3, 50.0],
        [-3e4, 3e4, 3e4, -3e4, 0.0],
        [0.0, 0.0, 0.0, 0.0, 0.0],
        [5.0, -5.0, 1e4, 1e4, -1e4],
    ], dtype=np.float32)
    ext_labels = [0, 0, 2, 0, 5, 3]  # row 4: background for the detection losses
    counts5 = [500, 50, 0, 5, 1]
    for lt in DETECTION:
        for red in RED3:
            kw = {}
            if lt == "EQL":
                kw["eql_lambda"] = 0.01
            if lt == "EQL_V2":
                kw["eqlv2_stats"] = ([10.0, 0.5, 0.0, 3.0, 40.0], [20.0, 100.0, 0.0, 3.0, 1.0], 7)
            add(f"{lname(lt)}_{lname(red)}_extreme", lt, red, ext, labels=ext_labels,
                counts=counts5, **kw)
    add("seesaw_sum_extreme_q_large", "SEESAW", "SUM", ext, labels=ext_labels, counts=counts5,
        seesaw_q=50.0)
    add("seesaw_mean_extreme_eps_tiny", "SEESAW", "MEAN", ext, labels=ext_labels,
        counts=counts5, seesaw_eps=1e-30, seesaw_q=3.0, seesaw_p=2.0)
    counts5p = [500, 50, 2, 5, 1]
    ext_vs = [0, 0, 2, 0, 1, 3]
    for red in REDUCTIONS:
        add(f"vs_{lname(red)}_extreme", "VS", red, ext, labels=ext_vs, counts=counts5p)
    for lt in ("FOCAL", "SIGMOID"):
        add(f"{lname(lt)}_alpha_sum_extreme", lt, "SUM", ext, labels=[0, 1, 2, 3, 4, 1],
            counts=counts5p, focal_alpha=0.25)
        add(f"{lname(lt)}_alpha_mean_extreme_targets", lt, "MEAN", ext,
            targets=(np.abs(ext) > 60).astype(np.float32), counts=counts5p, focal_alpha=0.25)

    # 6. extreme and special parameters
    rand("seesaw_mean_q_large", "SEESAW", "MEAN", B=8, bg=1, seesaw_q=40.0)
    rand("seesaw_sum_p_large", "SEESAW", "SUM", B=8, seesaw_p=10.0, zeros=1)
    rand("seesaw_mean_p0_q0", "SEESAW", "MEAN", B=8, bg=2, seesaw_p=0.0, seesaw_q=0.0)
    rand("seesaw_sum_p0", "SEESAW", "SUM", B=8, seesaw_p=0.0)
    rand("seesaw_sum_q0", "SEESAW", "SUM", B=8, seesaw_q=0.0)
    rand("seesaw_mean_eps_large", "SEESAW", "MEAN", B=7, seesaw_eps=2.0)
    rand("seesaw_mean_eps_tiny", "SEESAW", "MEAN", B=7, seesaw_eps=1e-30)
    rand("seesaw_mean_defaults_equal_counts", "SEESAW", "MEAN", B=7, counts=[10] * 5, C=5)
    rand("eql_mean_lambda_0", "EQL", "MEAN", B=8, bg=3, eql_lambda=0.0)
    rand("eql_sum_lambda_1", "EQL", "SUM", B=8, bg=2, eql_lambda=1.0)
    rand("eql_mean_default_lambda", "EQL", "MEAN", B=8, bg=2, eql_lambda=0.00177,
         counts=[5000, 800, 120, 9, 3, 1], C=6)
    add("eql_sum_lambda_tie", "EQL", "SUM", np.array([[1.0, -2.0], [0.5, 3.0], [-1.0, 0.25]],
        np.float32), labels=[1, 0, 2], counts=[1, 3], eql_lambda=0.25)  # f_0 == lambda: T_0 = 0
    rand("eql_v2_mean_gamma_r_huge", "EQL_V2", "MEAN", B=7, bg=1,
         eqlv2_stats=([1e6, 5.0, 0.0, 1e30], [0.0, 1e-3, 7.0, 1.0], 12), C=4)
    rand("eql_v2_sum_gamma_huge", "EQL_V2", "SUM", B=6, C=4, eqlv2_gamma=1e30,
         eqlv2_stats=([1.0, 2.0, 0.5, 0.0], [1.25, 2.0, 0.25, 5.0], 4))
    rand("eql_v2_mean_mu_negative", "EQL_V2", "MEAN", B=7, bg=2, eqlv2_mu=-2.5)
    rand("eql_v2_sum_mu_negative_huge", "EQL_V2", "SUM", B=6, eqlv2_mu=-1e30)
    rand("eql_v2_mean_mu_large", "EQL_V2", "MEAN", B=6, eqlv2_mu=1e30)
    rand("eql_v2_sum_gamma_0", "EQL_V2", "SUM", B=7, bg=1, eqlv2_gamma=0.0)
    rand("eql_v2_sum_alpha_0", "EQL_V2", "SUM", B=7, bg=1, eqlv2_alpha=0.0)
    rand("eql_v2_mean_fresh_small_gamma", "EQL_V2", "MEAN", B=6, bg=1, eqlv2_gamma=0.01,
         stats="fresh")
    rand("eql_v2_sum_zero_stats_updated", "EQL_V2", "SUM", B=6, bg=1, C=4,
         eqlv2_stats=([0.0] * 4, [0.0] * 4, 1))
    rand("vs_mean_gamma_0", "VS", "MEAN", B=7, vs_gamma=0.0)
    rand("vs_sum_gamma_0_tau_0", "VS", "SUM", B=7, vs_gamma=0.0, tau=0.0)
    rand("vs_weighted_mean_gamma_1", "VS", "WEIGHTED_MEAN", B=7, vs_gamma=1.0, tau=2.0)
    rand("vs_mean_tau_0", "VS", "MEAN", B=7, tau=0.0)
    rand("vs_sum_equal_counts", "VS", "SUM", B=7, C=4, counts=[7, 7, 7, 7])

    # 7. 16-bit logits
    for dt in ("float16", "bfloat16"):
        for lt in LOSS_TYPES10:
            kw = {"focal_alpha": 0.25} if lt in ("FOCAL", "SIGMOID") else {}
            rand(f"{lname(lt)}_mean_{dt}", lt, "MEAN", B=7, dtype=dt,
                 bg=2 if lt in DETECTION else 0, **kw)

    # 8. LVIS-like shapes: C = 1203, B = 16
    C = 1203
    for lt in ("SEESAW", "EQL", "EQL_V2", "VS"):
        name = f"{lname(lt)}_lvis_like"
        r = mg.rng_for(name)
        counts = mg.long_tail_counts(r, C, lo=0 if lt != "VS" else 1, hi=50000)
        counts = [max(int(n), 0 if lt != "VS" else 1) for n in counts]
        if lt != "VS":
            for j in r.choice(C, size=20, replace=False).tolist():
                counts[j] = 0
        z = (r.standard_normal((16, C)) * 2.0 - 3.0).astype(np.float32)
        labels = r.integers(0, C, size=16).tolist()
        kw = {}
        if lt in DETECTION:
            for i in (3, 7, 11, 12):
                labels[i] = C
            labels[5] = -100
            kw["sample_weights"] = r.uniform(0.5, 1.5, size=16).astype(np.float32)
        if lt == "EQL":
            kw["eql_lambda"] = 0.00177
        if lt == "EQL_V2":
            kw["eqlv2_stats"] = eqlv2_random_stats(r, C)
        add(name, lt, "MEAN" if lt != "VS" else "WEIGHTED_MEAN", z, labels=labels,
            counts=counts, fd=False, **kw)

    # 9. run sequences: EQL_V2 statistics and SEESAW seen counts step by step
    build_sequences()


def build_sequences():
    """EQL_V2: a fresh run, 4 accumulating requests; each case carries the statistics
    before it (P, Q as float64 sums of the previous expected deltas, in order). Checked
    against the EQLv2 module stepped through the same requests. SEESAW: class_counts are
    the run's seen counts including the request's own foreground labels."""
    C, B = 6, 10
    name0 = "eql_v2_sequence"
    r = mg.rng_for(name0)
    P, Q, upd = [0.0] * C, [0.0] * C, 0
    mod = EQLv2Module(C, 12.0, 0.8, 4.0)
    reds = ["MEAN", "SUM", "MEAN", "NONE"]
    for k, red in enumerate(reds):
        z = (r.standard_normal((B, C)) * 2.0 - 1.0).astype(np.float32)
        labels = r.integers(0, C + 1, size=B).tolist()  # C = background
        labels[0] = int(r.integers(0, 2))  # frequent classes dominate
        c = add(f"{name0}_step{k}", "EQL_V2", red, z, labels=labels, counts=[1] * C,
                eqlv2_stats=(list(P), list(Q), upd), sequence={"run": name0, "step": k})
        obj = torch.tensor(mg.rng_for(f"{name0}_step{k}/objectness").standard_normal(B) * 2.0)
        ref = mod.forward(dict(c, _w=[1.0] * C), obj, accumulate=True)
        e = c["expected"]
        assert abs(ref["loss"] - e["loss"]) <= 1e-10 * abs(e["loss"]), (k, ref["loss"], e["loss"])
        P = [a + b for a, b in zip(P, e["positive_gradient_delta"])]
        Q = [a + b for a, b in zip(Q, e["negative_gradient_delta"])]
        upd += 1
        assert grad_close(mod.pos, torch.tensor(P), 1e-12) and grad_close(mod.neg, torch.tensor(Q), 1e-12)
        tick("EQL_V2 sequence: run statistics == EQLv2 module stepped through the same requests")
    name1 = "seesaw_sequence"
    r = mg.rng_for(name1)
    seen = [0] * C
    for k, red in enumerate(["MEAN", "SUM", "MEAN"]):
        z = (r.standard_normal((B, C)) * 2.0).astype(np.float32)
        labels = r.integers(0, C + 1, size=B).tolist()
        labels[0] = 0
        for y in labels:
            if y < C:
                seen[y] += 1
        add(f"{name1}_step{k}", "SEESAW", red, z, labels=labels, counts=list(seen),
            sequence={"run": name1, "step": k})


# ---------------------------------------------------------------------------
# Invalid requests: the engine must reject them (status code, field named)
# ---------------------------------------------------------------------------

def invalid(name, status, field, loss_type, reduction="MEAN", *, labels=None, targets=None,
            counts=(5, 3, 1), scheme=None, rows=3, eqlv2_stats=True, **params):
    assert name not in NAMES, name
    NAMES.add(name)
    C = len(counts)
    r = mg.rng_for(name)
    z = (r.standard_normal((rows, C)) * 2.0).astype(np.float32)
    if scheme is None:
        scheme = "NONE" if loss_type in DETECTION else "EFFECTIVE_NUMBER"
    c = {"name": name, "loss_type": loss_type, "reduction": reduction, "scheme": scheme,
         "beta": 0.9999, "gamma": 2.0}
    for k in PARAMS:
        c[k] = None
    for k in USES.get(loss_type, ()):
        if k != "focal_alpha":
            c[k] = DEFAULTS[k]
    for k, v in params.items():
        assert k in PARAMS, k
        c[k] = v
    c.update({"ignore_index": -100, "class_counts": list(counts), "rows": rows, "cols": C,
              "logits_dtype": "float32", "logits": [float(v) for v in z.reshape(-1)]})
    if loss_type == "EQL_V2" and eqlv2_stats:
        c.update(eqlv2_positive=[0.0] * C, eqlv2_negative=[0.0] * C, eqlv2_updates=0)
    if targets is not None:
        c["targets"] = f32s(targets)
    else:
        c["labels"] = list(labels) if labels is not None else [0, 1, 2][:rows]
    c["expected_status"] = status
    c["field"] = field
    json.dumps(c, allow_nan=True)
    INVALID.append(c)


def build_invalid():
    IA, FP = "INVALID_ARGUMENT", "FAILED_PRECONDITION"
    tg = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32)
    for lt in ("SEESAW", "EQL", "EQL_V2", "VS"):
        invalid(f"{lname(lt)}_targets", IA, "targets", lt, targets=tg)
    for lt in DETECTION:
        for sch in ("EFFECTIVE_NUMBER", "INVERSE_FREQUENCY", "INVERSE_SQRT_FREQUENCY"):
            invalid(f"{lname(lt)}_weighting_{lname(sch)}", IA, "weighting", lt,
                    scheme=sch)
        for red in ("ELEMENT_MEAN", "WEIGHTED_MEAN"):
            invalid(f"{lname(lt)}_reduction_{lname(red)}", IA, "reduction", lt,
                    reduction=red)
        invalid(f"{lname(lt)}_label_c_plus_1", IA, "labels[1]", lt, labels=[0, 4, 3])
        invalid(f"{lname(lt)}_label_negative", IA, "labels[2]", lt, labels=[0, 3, -1])
    for lt in ("VS", "SOFTMAX", "SIGMOID", "FOCAL", "BALANCED_SOFTMAX"):
        invalid(f"{lname(lt)}_label_c", IA, "labels[1]", lt, labels=[0, 3, 1])
    invalid("vs_zero_count", FP, "class_counts[1]", "VS", counts=(5, 0, 1))
    invalid("vs_all_counts_zero", FP, "class_counts[0]", "VS", counts=(0, 0, 0), scheme="NONE")
    invalid("eql_all_counts_zero", FP, "class_counts", "EQL", counts=(0, 0, 0))
    invalid("eql_v2_without_run", IA, "run", "EQL_V2", eqlv2_stats=False)
    bad = [("seesaw_p", "SEESAW", [-0.5, -1e-30, float("nan"), float("inf")]),
           ("seesaw_q", "SEESAW", [-2.0, float("nan"), float("inf")]),
           ("seesaw_eps", "SEESAW", [0.0, -0.01, float("nan"), float("inf")]),
           ("eql_lambda", "EQL", [-0.001, 1.5, float("nan")]),
           ("eqlv2_gamma", "EQL_V2", [-1.0, float("nan"), float("inf")]),
           ("eqlv2_mu", "EQL_V2", [float("nan"), float("inf"), float("-inf")]),
           ("eqlv2_alpha", "EQL_V2", [-4.0, float("nan"), float("inf")]),
           ("vs_gamma", "VS", [-0.3, float("nan"), float("inf")]),
           ("tau", "VS", [-1.0, float("nan")]),
           ("focal_alpha", "FOCAL", [-0.25, 1.25, float("nan")]),
           ("focal_alpha", "SIGMOID", [-1.0, 2.0])]
    for key, lt, vals in bad:
        for v in vals:
            tag = "nan" if math.isnan(v) else ("inf" if v == float("inf") else
                                               "minus_inf" if v == float("-inf") else repr(v))
            tag = tag.replace("-", "minus_").replace(".", "_").replace("+", "")
            invalid(f"{lname(lt)}_{key}_{tag}", IA, key, lt, **{key: v})
            if v == float("inf") and key not in ("tau", "eqlv2_mu"):
                # LOSS.md 10 says ">= 0" but not "finite" for these: read as finite (as
                # section 7 and API.md say for gamma); marked so a test may treat it apart
                INVALID[-1]["reading"] = "'>= 0' read as finite and >= 0"


def to_json_value(c):
    """Non-finite parameters of invalid cases as strings ("NaN", "Infinity", "-Infinity")."""
    out = dict(c)
    for k in PARAMS:
        v = out.get(k)
        if isinstance(v, float) and not math.isfinite(v):
            out[k] = "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
    return out


def facts():
    """The hand-made cases of REFERENCE_FACTS_SECTION10.md (printed with --facts)."""
    def fmt(x):
        if isinstance(x, torch.Tensor):
            x = x.tolist()
        if isinstance(x, list):
            return "[" + ", ".join(fmt(v) for v in x) + "]"
        return f"{x:.10g}"

    def case(lt, red, logits, labels, counts, **kw):
        c = {"name": "fact", "loss_type": lt, "reduction": red, "scheme": kw.pop("scheme", "NONE"),
             "beta": 0.9999, "gamma": kw.pop("gamma", 2.0), "ignore_index": -100,
             "class_counts": counts, "rows": len(logits), "cols": len(logits[0]),
             "logits": [float(v) for row in logits for v in row], "labels": labels}
        c.update(params_for(lt, kw))
        if lt == "EQL_V2":
            P, Q, upd = kw.pop("stats")
            c.update(eqlv2_positive=P, eqlv2_negative=Q, eqlv2_updates=upd)
        if "sample_weights" in kw:
            c["sample_weights"] = kw.pop("sample_weights")
        c["_w"] = class_weights10(c)
        return c

    print("F1 SEESAW, counts [100, 10, 1], p 0.8, q 2, eps 0.01, labels [0, 1, 2, 3 (background)]")
    z1 = [[2.0, 1.0, 0.5], [0.0, 3.0, -1.0], [-2.0, 1.0, -4.0], [0.5, -0.5, 1.5]]
    c = case("SEESAW", "MEAN", z1, [0, 1, 2, 3], [100, 10, 1])
    p, res = reference(c)
    off, lm, ls = seesaw_offsets(c, p, p["z"])
    print("  M =", fmt(torch.exp(lm)), "\n  S =", fmt(torch.exp(ls)))
    print("  l_i =", fmt(res["l"]), " MEAN (D = 3) =", fmt(res["loss"]))
    print("  G =", fmt(res["grad"]))
    ref = seesaw_mmdet_style(c)
    print("  mmdet seesaw_ce_loss on the foreground rows, 'mean': ", fmt(ref["loss"]))
    print("  mmdet bbox-head avg_factor = 4 rows (background included):", fmt(sum(ref["l"].tolist()) / 4))
    z32 = torch.tensor(z1[:3], dtype=torch.float32)
    sc = torch.softmax(z32, dim=1)
    sy = sc[torch.arange(3), torch.tensor([0, 1, 2])]
    for q in (2.0, 20.0):
        sm = sc / sy[:, None].clamp(min=0.01)
        idx = (sm > 1.0).float()
        comp = sm.pow(q) * idx + (1 - idx)
        cq = case("SEESAW", "SUM", z1, [0, 1, 2, 3], [100, 10, 1], seesaw_q=q)
        _, rq = reference(cq)
        print(f"  q = {q}: float32 compensation factors row 2 =", fmt(comp[2]),
              " cbloss l_2 =", fmt(rq["l"][2]))
    print("F2 EQL, counts [900, 99, 1], lambda 0.01 (T = [0, 0, 1]), labels [0, 2, 3 (background)]")
    z2 = [[1.0, -1.0, 2.0], [0.5, 0.5, -3.0], [-1.0, 2.0, 0.0]]
    c = case("EQL", "MEAN", z2, [0, 2, 3], [900, 99, 1], eql_lambda=0.01)
    p, res = reference(c)
    print("  e =", fmt(p["e"]), "\n  l_i =", fmt(res["l"]), " MEAN (D = 3) =", fmt(res["loss"]))
    print("  G =", fmt(res["grad"]))
    ref = eql_reference_style(c)
    print("  eqlv2 EQL.forward:", fmt(ref["loss"]))
    print("F3 EQL_V2, gamma 12, mu 0.8, alpha 4, labels [0, 1, 3 (background)], C = 3")
    z3 = [[1.0, -1.0, 0.5], [-0.5, 2.0, -2.0], [0.0, 1.0, -1.0]]
    obj = torch.tensor([-1.0, -2.0, 1.5])
    mod = EQLv2Module(3, 12.0, 0.8, 4.0)
    P, Q, upd = [0.0] * 3, [0.0] * 3, 0
    for step in range(2):
        c = case("EQL_V2", "MEAN", z3, [0, 1, 3], [1, 1, 1], stats=(list(P), list(Q), upd))
        p, res = reference(c)
        ref = mod.forward(c, obj)
        print(f"  step {step}: stats before P = {fmt(P)}, Q = {fmt(Q)}, updates = {upd}")
        print("    q =", fmt(p["q"]), " p =", fmt(p["pw"]))
        print("    l_i =", fmt(res["l"]), " MEAN =", fmt(res["loss"]),
              " reference with its objectness column =",
              fmt(float(ref["loss"]) + float(sum(
                  F.binary_cross_entropy_with_logits(obj, torch.tensor([0.0, 0.0, 1.0]),
                                                     reduction="none")) / 3)))
        print("    P delta =", fmt(res["pos_delta"]), " Q delta =", fmt(res["neg_delta"]))
        P = [a + b for a, b in zip(P, res["pos_delta"].tolist())]
        Q = [a + b for a, b in zip(Q, res["neg_delta"].tolist())]
        upd += 1
    c = case("EQL_V2", "MEAN", z3, [0, 1, 3], [1, 1, 1], stats=([0.0] * 3, [0.0] * 3, 0),
             eqlv2_gamma=0.0)
    p, res = reference(c)
    print("  gamma 0, fresh run: LOSS.md q = 0.5, p = 3, MEAN =", fmt(res["loss"]),
          "; the reference's first step uses weights 1:",
          fmt(reference(case("EQL", "MEAN", z3, [0, 1, 3], [1, 1, 1], eql_lambda=0.0))[1]["loss"]))
    print("F4 VS, counts [100, 10, 1], vs_gamma 0.3, tau 1, labels [2, 0], weighting NONE")
    z4 = [[1.0, 2.0, 0.5], [3.0, -1.0, 0.0]]
    c = case("VS", "MEAN", z4, [2, 0], [100, 10, 1])
    p, res = reference(c)
    print("  Delta =", fmt(p["delta"]), " iota =", fmt(p["iota"]))
    print("  l_i =", fmt(res["l"]), " MEAN =", fmt(res["loss"]), "\n  G =", fmt(res["grad"]))
    c = case("VS", "MEAN", z4, [2, 0], [100, 10, 1], scheme="INVERSE_FREQUENCY")
    p, res = reference(c)
    cw = dict(c, reduction="WEIGHTED_MEAN")
    _, rw = reference(cw)
    print("  INVERSE_FREQUENCY w =", fmt(p["w"]), ": MEAN (/N) =", fmt(res["loss"]),
          " WEIGHTED_MEAN (= VSLoss(weight=w)) =", fmt(rw["loss"]))
    print("F5 focal_alpha 0.25, gamma 2, one sample, logits [2, -1], label 0, weighting NONE")
    c = case("FOCAL", "SUM", [[2.0, -1.0]], [0], [1, 1], focal_alpha=0.25)
    p, res = reference(c)
    print("  l =", fmt(res["l"]), " G =", fmt(res["grad"]))
    c = case("SIGMOID", "SUM", [[2.0, -1.0]], [0], [1, 1], focal_alpha=0.25)
    p, res = reference(c)
    print("  SIGMOID + alpha: l =", fmt(res["l"]), " G =", fmt(res["grad"]))


def main():
    if "--facts" in sys.argv:
        facts()
        return 0
    build_cases()
    build_invalid()
    doc = {"generator": "tests/golden/make_golden_section10.py", "torch_version": torch.__version__}
    head = json.dumps(doc, allow_nan=False)[:-1]
    parts = [head, ', "cases": [\n', ",\n".join(json.dumps(c, allow_nan=False) for c in CASES),
             '\n], "invalid": [\n',
             ",\n".join(json.dumps(to_json_value(c), allow_nan=False) for c in INVALID), "\n]}\n"]
    text = "".join(parts)
    back = json.loads(text)
    assert len(back["cases"]) == len(CASES) and len(back["invalid"]) == len(INVALID)
    for f in ("golden_cases.json", "golden_cases_section9.json"):
        other = json.load(open(os.path.join(HERE, f)))
        assert {c["name"] for c in other["cases"]}.isdisjoint(NAMES), f
    with open(OUT10, "w") as f:
        f.write(text)
    print(f"wrote {OUT10}: {len(CASES)} cases, {len(INVALID)} invalid, {len(text)} bytes")
    counts = {}
    for c in CASES:
        key = (c["loss_type"], c["reduction"])
        counts[key] = counts.get(key, 0) + 1
    print("cases per loss type / reduction:")
    for (lt, red), n in sorted(counts.items()):
        print(f"  {lt:8s} {red:14s} {n:4d}")
    print("cross-checks (cases):")
    for k, v in sorted(CHECKS.items()):
        print(f"  {v:5d}  {k}")
    for k, v in mg.CHECKS.items():
        print(f"  {v:5d}  {k}")


if __name__ == "__main__":
    sys.exit(main())
