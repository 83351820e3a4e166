#!/usr/bin/python3
"""PyTorch CPU baseline for `cbloss-bench kernels` (docs/PERFORMANCE.md).

Loss + backward (gradient w.r.t. the logits) in float32 on the batches the
kernel bench uses, written the way the seed's PyTorch port writes them:

  softmax  per-sample cross-entropy times w[y], mean
  sigmoid  binary_cross_entropy_with_logits on one-hot targets, weight w[y]
  focal    the port's focal loss: BCE * exp(-g t z - g log(1 + exp(-z))),
           weighted by w[y], divided by the number of positives

and the LOSS.md section 10 losses at 4096x1000 and the LVIS-shaped 8192x1204,
each as its reference computes it:

  seesaw   mmdetection seesaw_ce_loss: mitigation from the cumulative counts
           (a C x C ratio matrix), compensation from the detached softmax,
           log of the weights added to the non-label logits, cross_entropy
  eql      tztztztztz/eqlv2 EQL: BCE times 1 - E * T * (1 - t), / rows
  eql_v2   tztztztztz/eqlv2 EQLv2: BCE times pos/neg weights from P/Q, / rows
           (the reference's collect_grad, which updates P/Q, is not timed:
           cbloss-bench kernels does not compute the deltas either)
  vs       orparask/VS-Loss VSLoss: cross_entropy(z / Delta + tau log prior,
           weight=w)
  focal_a0.25  torchvision sigmoid_focal_loss (alpha 0.25, gamma 2) weighted
           by w[y], divided by the number of positives

Run as:  /usr/bin/python3 bench/torch_baseline.py [--json] [--quick]
Prints one record per (loss, batch, classes) with threads = 2 (and 1 with
--threads 1,2): keys loss, batch, classes, threads, ms, ns_per_element.
"""

import argparse
import json
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

SHAPES = [(256, 1000), (4096, 1000), (1024, 100), (32, 10)]
SECTION10_SHAPES = [(4096, 1000), (8192, 1204)]
BETA, GAMMA = 0.9999, 2.0
# LOSS.md section 10 defaults.
SEESAW_P, SEESAW_Q, SEESAW_EPS = 0.8, 2.0, 0.01
EQL_LAMBDA = 0.00177
EQLV2_GAMMA, EQLV2_MU, EQLV2_ALPHA = 12.0, 0.8, 4.0
VS_GAMMA, TAU = 0.3, 1.0
FOCAL_ALPHA = 0.25


def class_weights(counts):
    eff = 1.0 - np.power(BETA, counts)
    w = (1.0 - BETA) / eff
    return torch.tensor(w / w.sum() * len(counts), dtype=torch.float32)


def softmax_loss(z, y, w):
    return (F.cross_entropy(z, y, reduction="none") * w[y]).mean()


def sigmoid_loss(z, y, w):
    t = F.one_hot(y, z.shape[1]).float()
    omega = w[y].unsqueeze(1).expand_as(z)
    return F.binary_cross_entropy_with_logits(z, t, weight=omega, reduction="sum") / t.sum()


def focal_loss(z, y, w):
    t = F.one_hot(y, z.shape[1]).float()
    bce = F.binary_cross_entropy_with_logits(z, t, reduction="none")
    modulator = torch.exp(-GAMMA * t * z - GAMMA * torch.log1p(torch.exp(-z)))
    alpha = w[y].unsqueeze(1)
    return torch.sum(alpha * modulator * bce) / torch.sum(t)


LOSSES = {"softmax": softmax_loss, "sigmoid": sigmoid_loss, "focal": focal_loss}


class Section10Terms:
    """What each section 10 reference keeps in its module: counts, EQL's
    frequencies, EQLv2's accumulated gradients, VS's Delta and iota."""

    def __init__(self, counts, rng):
        c = len(counts)
        self.w = class_weights(counts)
        self.cum_samples = torch.tensor(counts, dtype=torch.float32)
        self.freq_info = torch.tensor(counts / counts.sum(), dtype=torch.float32)
        self.pos_grad = torch.tensor(rng.uniform(1, 100, c), dtype=torch.float32)
        self.neg_grad = torch.tensor(10 * rng.uniform(1, 100, c), dtype=torch.float32)
        temp = (1.0 / counts) ** VS_GAMMA
        self.delta = torch.tensor(temp / temp.min(), dtype=torch.float32)
        self.iota = torch.tensor(TAU * np.log(counts / counts.sum()), dtype=torch.float32)


def seesaw_loss(z, y, terms):
    num_classes = z.shape[1]
    onehot = F.one_hot(y, num_classes)
    seesaw_weights = z.new_ones(onehot.size())
    cum = terms.cum_samples
    ratio = cum[None, :].clamp(min=1) / cum[:, None].clamp(min=1)
    index = (ratio < 1.0).float()
    sample_weights = ratio.pow(SEESAW_P) * index + (1 - index)
    seesaw_weights = seesaw_weights * sample_weights[y, :]
    scores = F.softmax(z.detach(), dim=1)
    self_scores = scores[torch.arange(0, len(scores)), y]
    score_matrix = scores / self_scores[:, None].clamp(min=SEESAW_EPS)
    index = (score_matrix > 1.0).float()
    seesaw_weights = seesaw_weights * (score_matrix.pow(SEESAW_Q) * index + (1 - index))
    z = z + seesaw_weights.log() * (1 - onehot)
    return F.cross_entropy(z, y, reduction="none").mean()


def eql_target(z, y):
    n_i, n_c = z.shape
    target = z.new_zeros(n_i, n_c + 1)  # label n_c is background
    target[torch.arange(n_i), y] = 1
    return target[:, :n_c]


def eql_loss(z, y, terms):
    n_i, n_c = z.shape
    target = eql_target(z, y)
    exclude = (y != n_c).float().view(n_i, 1).expand(n_i, n_c)
    threshold = z.new_zeros(n_c)
    threshold[terms.freq_info < EQL_LAMBDA] = 1
    threshold = threshold.view(1, n_c).expand(n_i, n_c)
    eql_w = 1 - exclude * threshold * (1 - target)
    loss = F.binary_cross_entropy_with_logits(z, target, reduction="none")
    return torch.sum(loss * eql_w) / n_i


def eqlv2_loss(z, y, terms):
    n_i, n_c = z.shape
    target = eql_target(z, y)
    ratio = terms.pos_grad / (terms.neg_grad + 1e-10)
    neg_w = 1 / (1 + torch.exp(-EQLV2_GAMMA * (ratio - EQLV2_MU)))
    pos_w = 1 + EQLV2_ALPHA * (1 - neg_w)
    weight = pos_w.view(1, -1).expand(n_i, n_c) * target + \
        neg_w.view(1, -1).expand(n_i, n_c) * (1 - target)
    loss = F.binary_cross_entropy_with_logits(z, target, reduction="none")
    return torch.sum(loss * weight) / n_i


def vs_loss(z, y, terms):
    return F.cross_entropy(z / terms.delta + terms.iota, y, weight=terms.w)


def focal_alpha_loss(z, y, terms):
    t = F.one_hot(y, z.shape[1]).float()
    p = torch.sigmoid(z)
    ce = F.binary_cross_entropy_with_logits(z, t, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    loss = ce * ((1 - p_t) ** GAMMA)
    alpha_t = FOCAL_ALPHA * t + (1 - FOCAL_ALPHA) * (1 - t)
    loss = alpha_t * loss * terms.w[y].unsqueeze(1)
    return torch.sum(loss) / torch.sum(t)


SECTION10_LOSSES = {"seesaw": seesaw_loss, "eql": eql_loss, "eql_v2": eqlv2_loss,
                    "vs": vs_loss, "focal_a0.25": focal_alpha_loss}


def time_ms(fn, reps, min_s):
    fn()
    times = []
    start = time.perf_counter()
    while len(times) < reps or time.perf_counter() - start < min_s:
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
        if len(times) >= 2000:
            break
    # The fastest, as cbloss-bench reports (the machine is shared).
    return min(times), statistics.median(times)


def time_losses(losses, z0, y, terms, threads, quick):
    """One record per loss: loss + backward on a fresh leaf copy of z0."""
    batch, classes = z0.shape
    records = []
    for name, loss_fn in losses.items():
        z = z0.clone().requires_grad_(True)

        def step():
            z.grad = None
            loss_fn(z, y, terms).backward()

        ms, median_ms = time_ms(step, 2 if quick else 10, 0.0 if quick else 0.5)
        records.append({"loss": name, "batch": batch, "classes": classes,
                        "threads": threads, "ms": ms,
                        "ns_per_element": ms * 1e6 / (batch * classes),
                        "median_ns_per_element": median_ms * 1e6 / (batch * classes),
                        "torch": torch.__version__})
    return records


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", default="2")
    ap.add_argument("--only", choices=["base", "section10"],
                    help="run one group of losses (default: both)")
    args = ap.parse_args()
    rng = np.random.default_rng(5)
    records = []
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        if args.only != "section10":
            for batch, classes in SHAPES:
                z0 = torch.tensor(rng.normal(0, 3, (batch, classes)), dtype=torch.float32)
                y = torch.tensor(rng.integers(0, classes, batch))
                w = class_weights(rng.integers(1, 5001, classes).astype(np.float64))
                records += time_losses(LOSSES, z0, y, w, threads, args.quick)
        if args.only != "base":
            for batch, classes in SECTION10_SHAPES:
                z0 = torch.tensor(rng.normal(0, 3, (batch, classes)), dtype=torch.float32)
                y = torch.tensor(rng.integers(0, classes, batch))
                terms = Section10Terms(rng.integers(1, 5001, classes).astype(np.float64), rng)
                records += time_losses(SECTION10_LOSSES, z0, y, terms, threads, args.quick)
    if args.json:
        print(json.dumps(records, indent=1))
    else:
        for r in records:
            print(f"{r['loss']:11s} {r['batch']:5d} {r['classes']:5d} t={r['threads']} "
                  f"{r['ms']:9.3f} ms {r['ns_per_element']:8.3f} ns/elem")


if __name__ == "__main__":
    main()
