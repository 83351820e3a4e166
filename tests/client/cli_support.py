"""Shared pieces of the CLI tests: a real cbloss-server child process (the
launcher of tests/server/server_fixture.py), a runner for the `cbloss`
binary, and the float64 reference of the seed's CB focal loss (LOSS.md
sections 2-6, written in torch, autograd gradient).

Environment (set by tests/client/CMakeLists.txt; the defaults assume the
build tree at ../../build):

  CBLOSS_SERVER           cbloss-server binary
  CBLOSS_CLI              cbloss binary
  CBLOSS_QUICKSTART       the quick-start example binary
  CBLOSS_SAMPLE_DATASETS  datasets/sample_datasets.json
  CBLOSS_SEED             tests/golden/seed_example.json
  CBLOSS_DOCS             docs/

Run with /usr/bin/python3 (numpy and torch).
"""

import json
import os
import subprocess
import sys

import numpy as np
import torch

_HERE = os.path.dirname(os.path.abspath(__file__))
_SOURCE = os.path.abspath(os.path.join(_HERE, "..", ".."))
_BIN = os.path.join(_SOURCE, "build", "bin")

sys.path.insert(0, os.path.join(_SOURCE, "tests", "server"))
from server_fixture import SERVER_BINARY as SERVER, ServerProcess  # noqa: E402

CLI = os.environ.get("CBLOSS_CLI", os.path.join(_BIN, "cbloss"))
QUICKSTART = os.environ.get(
    "CBLOSS_QUICKSTART",
    os.path.join(_BIN, "cbloss_quickstart_example"))
SAMPLE_DATASETS = os.environ.get(
    "CBLOSS_SAMPLE_DATASETS", os.path.join(_SOURCE, "datasets", "sample_datasets.json"))
SEED = os.environ.get(
    "CBLOSS_SEED", os.path.join(_SOURCE, "tests", "golden", "seed_example.json"))
DOCS = os.environ.get("CBLOSS_DOCS", os.path.join(_SOURCE, "docs"))

SEED_LOSS = 1.9582863


class Server(ServerProcess):
    """A cbloss-server on 127.0.0.1, port 0, in a temporary folder of its own
    (the launcher of tests/server/server_fixture.py), with the sample
    datasets unless sample_datasets=False. start() returns it once it is
    SERVING; close() stops it and removes its folder."""

    def __init__(self, sample_datasets=True):
        super().__init__(datasets_file=SAMPLE_DATASETS if sample_datasets else None,
                         extra_flags=["--shutdown_grace_seconds=5"], name="cli-server")


def run_cli(args, target=None, env_target=None, timeout=60, cwd=None):
    """Runs `cbloss [--target T] ARGS`; returns the CompletedProcess (text).

    target: passed as --target. env_target: put in $CBLOSS_TARGET (else the
    variable is removed, so a developer's setting cannot leak in).
    """
    env = dict(os.environ)
    env.pop("CBLOSS_TARGET", None)
    if env_target is not None:
        env["CBLOSS_TARGET"] = env_target
    cmd = [CLI] + (["--target", target] if target is not None else []) + list(args)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=cwd, stdin=subprocess.DEVNULL)


def free_port():
    """A loopback port nothing listens on (bound, then released)."""
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------
# The seed example and a float64 reference of LOSS.md (torch).


def load_seed():
    with open(SEED) as f:
        seed = json.load(f)
    z = np.array(seed["logits"], dtype=np.float32)
    y = np.array(seed["labels"], dtype=np.int64)
    counts = list(seed["class_counts"])
    return seed, z, y, counts


def class_weights(counts, beta=0.9999, scheme="effective_number"):
    """LOSS.md section 2, float64."""
    n = torch.tensor(counts, dtype=torch.float64)
    has = n >= 1
    if scheme == "effective_number":
        if beta < 1:
            r = (1 - beta) / -torch.expm1(n * torch.log1p(torch.tensor(beta - 1.0,
                                                                       dtype=torch.float64)))
        else:
            r = 1 / n
    elif scheme == "inverse_frequency":
        r = 1 / n
    elif scheme == "inverse_sqrt_frequency":
        r = 1 / torch.sqrt(n)
    else:
        r = torch.ones_like(n)
        has = torch.ones_like(has)
    r = torch.where(has, r, torch.zeros_like(r))
    k = int((r > 0).sum())
    return k * r / r.sum()


def focal_loss(z, t, omega, gamma, reduction="mean", upstream=None):
    """LOSS.md section 4 FOCAL and section 5; z, t, omega float64 [B, C].

    Returns (scalar, per-sample losses).
    """
    sp = torch.nn.functional.softplus
    b = sp(z) - t * z
    m = torch.exp(-gamma * (t * z + sp(-z)))
    per_sample = (omega * m * b).sum(dim=1)
    if reduction == "mean":
        d = t.sum()
        scalar = per_sample.sum() / d if d > 0 else per_sample.sum() * 0
    elif reduction == "sum":
        scalar = per_sample.sum()
    elif reduction == "none":
        u = upstream if upstream is not None else torch.ones_like(per_sample)
        scalar = (u * per_sample).sum()
    else:
        raise ValueError(reduction)
    return scalar, per_sample


def focal_reference(z32, labels, counts, beta=0.9999, gamma=2.0, reduction="mean",
                    sample_weights=None, upstream=None):
    """Loss, per-sample losses and autograd gradient (float64) of the CB focal
    loss in labels mode on the float32 values `z32`."""
    z = torch.tensor(np.asarray(z32, dtype=np.float64), requires_grad=True)
    y = torch.tensor(np.asarray(labels, dtype=np.int64))
    c = z.shape[1]
    t = torch.nn.functional.one_hot(y, c).to(torch.float64)
    w = class_weights(counts, beta)
    s = (torch.tensor(sample_weights, dtype=torch.float64) if sample_weights is not None
         else torch.ones(z.shape[0], dtype=torch.float64))
    omega = (s * w[y])[:, None].expand(-1, c)
    u = torch.tensor(upstream, dtype=torch.float64) if upstream is not None else None
    scalar, per_sample = focal_loss(z, t, omega, gamma, reduction, u)
    scalar.backward()
    return float(scalar), per_sample.detach().numpy(), z.grad.numpy()


def shifted_softmax_reference(z32, labels, counts, loss, beta=0.9999, tau=1.0,
                              max_margin=0.5, scale=30.0, weights=None):
    """MEAN loss (D = N) of LOSS.md section 9's BALANCED_SOFTMAX,
    LOGIT_ADJUSTED or LDAM (or plain SOFTMAX), float64: the row weight
    w_{y_i} times cross-entropy on the shifted logits z'."""
    z = torch.tensor(np.asarray(z32, dtype=np.float64))
    y = torch.tensor(np.asarray(labels, dtype=np.int64))
    n = torch.tensor(counts, dtype=torch.float64)
    if loss == "balanced_softmax":
        z = z + torch.log(n)[None, :]
    elif loss == "logit_adjusted":
        z = z + tau * torch.log(n / n.sum())[None, :]
    elif loss == "ldam":
        delta = max_margin * n ** -0.25 / (n ** -0.25).max()
        onehot = torch.nn.functional.one_hot(y, z.shape[1]).to(torch.float64)
        z = scale * (z - onehot * delta[None, :])
    w = class_weights(counts, beta) if weights is None else torch.tensor(
        weights, dtype=torch.float64)
    ce = torch.nn.functional.cross_entropy(z, y, reduction="none")
    return float((w[y] * ce).sum() / len(labels))


def assert_loss_close(test, got, ref, what="loss"):
    """LOSS.md section 7: within 1e-5 * |ref| + 1e-6."""
    test.assertLessEqual(abs(got - ref), 1e-5 * abs(ref) + 1e-6,
                         "%s: got %.10g, reference %.10g" % (what, got, ref))


def assert_gradient_close(test, got, ref):
    """LOSS.md section 7: each element within 1e-5 * max|G_ref| + 1e-7."""
    got = np.asarray(got, dtype=np.float64)
    test.assertEqual(got.shape, ref.shape)
    tol = 1e-5 * np.abs(ref).max() + 1e-7
    err = np.abs(got - ref)
    worst = np.unravel_index(np.argmax(err), err.shape)
    test.assertLessEqual(err.max(), tol, "gradient%s = %r, reference %r, tolerance %g"
                         % (list(worst), got[worst], ref[worst], tol))
