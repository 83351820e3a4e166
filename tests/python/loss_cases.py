"""Random loss cases and the LOSS.md section 7 tolerances, shared by the
module and streaming tests."""

import numpy as np
import torch

import reference_loss

# The stored dataset the "dataset" cases use. Its defaults (beta, gamma) are
# not LOSS.md's, so a case that leaves them unset checks the fallback.
DATASET_NAME = "py-ref"
DATASET_COUNTS = [60, 25, 9, 4, 1, 0]
DATASET_DEFAULTS = dict(beta=0.99, gamma=1.5)

LOSS_TYPES = ["softmax", "sigmoid", "focal", "softmax_bce"]
REDUCTIONS = ["mean", "sum", "element_mean", "weighted_mean", "none"]


def random_case(rng, loss_type, mode, reduction, source):
    """Inputs of one computation plus the module and reference arguments."""
    if source == "dataset":
        counts = list(DATASET_COUNTS)
        beta, gamma = DATASET_DEFAULTS["beta"], DATASET_DEFAULTS["gamma"]
        params = {}
    else:
        c = int(rng.integers(2, 9))
        counts = rng.integers(0, 40, c)
        counts[rng.integers(0, c)] = int(rng.integers(1, 200))  # at least one > 0
        counts = [int(n) for n in counts]
        beta = float(rng.choice([0.0, 0.5, 0.9, 0.99, 0.9999, 1.0]))
        gamma = float(rng.choice([0.0, 0.5, 1.0, 2.0, 3.5]))
        params = dict(beta=beta, gamma=gamma)
    c = len(counts)
    b = int(rng.integers(1, 13))
    logits = rng.normal(0.0, 2.5, (b, c))
    if rng.random() < 0.3:  # a few far-out logits (LOSS.md 7: finite everywhere)
        logits[rng.integers(0, b), rng.integers(0, c)] = float(rng.choice([-60.0, 45.0]))
    logits = logits.astype(np.float32)
    case = dict(loss_type=loss_type, reduction=reduction, counts=counts, beta=beta,
                gamma=gamma, params=params, logits=logits, ignore_index=-100)
    if mode == "labels":
        if rng.random() < 0.5:
            case["ignore_index"] = 255
            params["ignore_index"] = 255
        labels = rng.integers(0, c, b)
        ignored = rng.random(b) < 0.2
        labels[ignored] = case["ignore_index"]
        case["labels"] = labels.astype(np.int64)
    else:
        targets = (rng.random((b, c)) < 0.35).astype(np.float32)
        soft = rng.random(b) < 0.4
        targets[soft] = rng.random((int(soft.sum()), c)).astype(np.float32)
        case["targets"] = targets
    if rng.random() < 0.5:
        case["sample_weights"] = rng.uniform(0.0, 2.0, b).astype(np.float32)
    if reduction == "none":
        case["grad_output"] = rng.normal(0.0, 1.5, b).astype(np.float32)
    return case


def reference_of(case):
    """(loss value or per-sample vector, gradient) in float64 for a case; for
    reduction "none" the gradient is that of sum_i grad_output_i * l_i."""
    z, total, per = reference_loss.reference(
        case["logits"], case["counts"], labels=case.get("labels"),
        targets=case.get("targets"), loss_type=case["loss_type"],
        reduction=case["reduction"], beta=case["beta"], gamma=case["gamma"],
        ignore_index=case["ignore_index"], sample_weights=case.get("sample_weights"),
        upstream=case.get("grad_output"))
    grad = reference_loss.gradient(z, total)
    value = per if case["reduction"] == "none" else total
    return value.detach().numpy(), grad.numpy()


def run_module(module, case, dtype=torch.float32):
    """(output values, logits gradient) of `module` on a case, backward with
    the case's grad_output (reduction "none") or 1."""
    logits = torch.tensor(case["logits"], dtype=dtype, requires_grad=True)
    y = torch.from_numpy(case["labels"]) if "labels" in case else torch.from_numpy(
        case["targets"])
    sw = None if "sample_weights" not in case else torch.from_numpy(case["sample_weights"])
    out = module(logits, y, sw)
    if case["reduction"] == "none":
        out.backward(torch.from_numpy(case["grad_output"]))
    else:
        out.backward()
    return out.detach(), logits.grad


def describe(case):
    keys = ("loss_type", "reduction", "counts", "beta", "gamma", "ignore_index")
    text = ", ".join("%s=%s" % (k, case[k]) for k in keys)
    return text + ", B=%d, %s" % (len(case["logits"]), "labels" if "labels" in case else
                                  "targets")


def assert_loss_close(test, got, ref, what="loss"):
    """LOSS.md 7: |got - ref| <= 1e-5 |ref| + 1e-6 (elementwise for vectors)."""
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    test.assertEqual(got.shape, ref.shape, what)
    test.assertTrue(np.all(np.isfinite(got)), "%s not finite: %s" % (what, got))
    bad = np.abs(got - ref) > 1e-5 * np.abs(ref) + 1e-6
    if np.any(bad):
        i = np.argmax(bad)
        test.fail("%s: got %r, want %r (first bad index %d)"
                  % (what, got.ravel()[i], ref.ravel()[i], i))


def assert_gradient_close(test, got, ref, what="gradient", rel_elem=0.0):
    """LOSS.md 7: each element within 1e-5 max|G_ref| + 1e-7 (plus
    rel_elem * |G_ref| for 16-bit gradients)."""
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    test.assertEqual(got.shape, ref.shape, what)
    test.assertTrue(np.all(np.isfinite(got)), "%s not finite" % what)
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    tol = 1e-5 * scale + 1e-7 + rel_elem * np.abs(ref)
    err = np.abs(got - ref)
    if np.any(err > tol):
        i = np.unravel_index(np.argmax(err - tol), err.shape)
        test.fail("%s%s: got %.9g, want %.9g (max|G_ref| %.3g)"
                  % (what, list(i), got[i], ref[i], scale))
