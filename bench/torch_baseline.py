#!/usr/bin/python3
"""PyTorch CPU baseline for `cbloss-bench kernels` (docs/PERFORMANCE.md).

Loss + backward (gradient w.r.t. the logits) in float32 on the batches the
kernel bench uses, written the way the seed's PyTorch port writes them:

  softmax  per-sample cross-entropy times w[y], mean
  sigmoid  binary_cross_entropy_with_logits on one-hot targets, weight w[y]
  focal    the port's focal loss: BCE * exp(-g t z - g log(1 + exp(-z))),
           weighted by w[y], divided by the number of positives

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
BETA, GAMMA = 0.9999, 2.0


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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", default="2")
    args = ap.parse_args()
    rng = np.random.default_rng(5)
    records = []
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        for batch, classes in SHAPES:
            z0 = torch.tensor(rng.normal(0, 3, (batch, classes)), dtype=torch.float32)
            y = torch.tensor(rng.integers(0, classes, batch))
            w = class_weights(rng.integers(1, 5001, classes).astype(np.float64))
            for name, loss_fn in LOSSES.items():
                z = z0.clone().requires_grad_(True)

                def step():
                    z.grad = None
                    loss_fn(z, y, w).backward()

                ms, median_ms = time_ms(step, 2 if args.quick else 10,
                                        0.0 if args.quick else 0.5)
                records.append({"loss": name, "batch": batch, "classes": classes,
                                "threads": threads, "ms": ms,
                                "ns_per_element": ms * 1e6 / (batch * classes),
                                "median_ns_per_element": median_ms * 1e6 / (batch * classes),
                                "torch": torch.__version__})
    if args.json:
        print(json.dumps(records, indent=1))
    else:
        for r in records:
            print(f"{r['loss']:8s} {r['batch']:5d} {r['classes']:5d} t={r['threads']} "
                  f"{r['ms']:9.3f} ms {r['ns_per_element']:8.3f} ns/elem")


if __name__ == "__main__":
    main()
