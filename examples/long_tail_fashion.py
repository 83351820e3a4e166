#!/usr/bin/python3
"""Fashion-MNIST-LT: cross-entropy vs the count-aware losses of cbloss.

The CIFAR-10-LT protocol of Cui et al. (CVPR 2019) on Fashion-MNIST
(examples/fashion_lt.py): class i keeps int(6000 * imbalance^(-i/9)) training
images (imbalance 100: 6000 down to 60; imbalance 10: 6000 down to 600), the
balanced 10,000-image test set. A small CNN, Adam (lr 1e-3), mini-batches of
128, --epochs epochs (default 10). Losses: F.cross_entropy (the baseline) and,
through cbloss.torch.ClassBalancedLoss with the split's class counts:
CB softmax, CB sigmoid and CB focal (beta 0.9999; focal gamma 1.0, the
paper's best CIFAR-10-LT setting; sigmoid losses start with output bias
-log(9) as the paper does), balanced softmax, logit adjustment (tau 1),
LDAM-DRW (max_margin 0.5, scale 2 on free logits, effective-number weights
from 80% of the epochs), VS (vs_gamma 0.3, tau 1) and Seesaw with a run (its
seen counts accumulate in the service as training goes).

Reports mean +- std over seeds of balanced accuracy and the accuracy of the
three rarest classes; writes docs/long_tail_fashion.png (per-class accuracy
against training count) and docs/long_tail_fashion_curves.png (balanced test
accuracy per epoch), and the table into docs/LONG_TAIL_DEMO.md between the
<!-- fashion:begin --> and <!-- fashion:end --> markers.

Run (from the repository root, after `cmake --build build`):

    PYTHONPATH=build/python nice /usr/bin/python3 examples/long_tail_fashion.py

It starts its own cbloss-server (--server) or uses --target HOST:PORT.
"""

import argparse
import math
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

import fashion_lt
from fashion_lt import NUM_CLASSES, ROOT, cbloss
from cbloss.torch import ClassBalancedLoss

LOSSES = ("CE", "CB softmax", "CB sigmoid", "CB focal", "Balanced softmax",
          "Logit adjusted", "LDAM-DRW", "VS", "Seesaw (run)")
BETA = 0.9999
GAMMA = 1.0
LR = 1e-3
BATCH = 128
TAIL = 3
# Cui et al. 2019, Table 2: CIFAR-10-LT, ResNet-32, top-1 error %.
PAPER = {100: {"CE": 29.64, "CB focal": 25.43}}


def make_criterion(name, client, counts, model, epochs, run_name):
    if name == "CE":
        return F.cross_entropy
    if name in ("CB sigmoid", "CB focal"):
        with torch.no_grad():  # prior 0.1 per class, as the paper does
            model[-1].bias.fill_(-math.log(9.0))
    if name == "CB softmax":
        return ClassBalancedLoss(client, class_counts=counts, loss_type="softmax", beta=BETA)
    if name == "CB sigmoid":
        return ClassBalancedLoss(client, class_counts=counts, loss_type="sigmoid", beta=BETA)
    if name == "CB focal":
        return ClassBalancedLoss(client, class_counts=counts, loss_type="focal", beta=BETA,
                                 gamma=GAMMA)
    if name == "Balanced softmax":
        return ClassBalancedLoss(client, class_counts=counts, loss_type="balanced_softmax",
                                 weighting="none")
    if name == "Logit adjusted":
        return ClassBalancedLoss(client, class_counts=counts, loss_type="logit_adjusted",
                                 tau=1.0, weighting="none")
    if name == "LDAM-DRW":
        return ClassBalancedLoss(client, class_counts=counts, loss_type="ldam", max_margin=0.5,
                                 scale=2.0, beta=BETA, weighting="effective_number",
                                 drw_start_epoch=int(round(0.8 * epochs)))
    if name == "VS":
        return ClassBalancedLoss(client, class_counts=counts, loss_type="vs", vs_gamma=0.3,
                                 tau=1.0, weighting="none")
    if name == "Seesaw (run)":
        client.create_run(run_name, num_classes=NUM_CLASSES, loss_type="seesaw")
        return ClassBalancedLoss(client, run=run_name, loss_type=None)
    raise ValueError(name)


def train_and_test(name, seed, data, counts, client, epochs, imbalance):
    x_tr, y_tr, x_te, y_te = data
    torch.manual_seed(seed)
    model = fashion_lt.small_cnn()
    criterion = make_criterion(name, client, counts, model, epochs,
                               "fashion-seesaw-%d-%d-%d" % (imbalance, seed, time.time_ns()))
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    generator = torch.Generator().manual_seed(seed)
    curve = []
    for epoch in range(epochs):
        if isinstance(criterion, ClassBalancedLoss):
            criterion.epoch = epoch
        perm = torch.randperm(len(y_tr), generator=generator)
        for start in range(0, len(y_tr), BATCH):
            batch = perm[start:start + BATCH]
            optimizer.zero_grad()
            loss = criterion(model(x_tr[batch]), y_tr[batch])
            loss.backward()
            optimizer.step()
        curve.append(fashion_lt.per_class_accuracy(model, x_te, y_te).mean())
    return fashion_lt.per_class_accuracy(model, x_te, y_te), np.array(curve)


def pm(values):
    return "%.1f ± %.1f" % (100 * np.mean(values), 100 * np.std(values))


def markdown(results, imbalances, losses, seeds, epochs, seconds):
    lines = ["| imbalance | train images | loss | balanced accuracy % | top-1 error % "
             "| tail-3 accuracy % | vs CE (pts, seeds better) |",
             "|---:|---:|---|---:|---:|---:|---:|"]
    for imbalance in imbalances:
        n_train = sum(fashion_lt.lt_counts(imbalance))
        ce = results[imbalance]["CE"][0].mean(axis=1) if "CE" in losses else None
        for name in losses:
            acc = results[imbalance][name][0]
            balanced = acc.mean(axis=1)
            versus = "" if ce is None or name == "CE" else "%+.1f, %d/%d" % (
                100 * np.mean(balanced - ce), int(np.sum(balanced > ce)), len(balanced))
            lines.append("| %d | %d | %s | %s | %s | %s | %s |" % (
                imbalance, n_train, name, pm(balanced), pm(1 - balanced),
                pm(acc[:, -TAIL:].mean(axis=1)), versus))
    lines += ["", "Mean ± standard deviation over %d seed(s) (%s), %d epochs; %d models "
              "trained in %.0f s of wall time on this machine (2 cores, shared)."
              % (len(seeds), ", ".join(map(str, seeds)), epochs,
                 len(seeds) * len(imbalances) * len(losses), seconds), "",
              "Paper (Cui et al. 2019, Table 2, CIFAR-10-LT, ResNet-32, 200 epochs), "
              "top-1 error %:", ""]
    for imbalance in sorted(PAPER, reverse=True):
        p = PAPER[imbalance]
        lines.append("- imbalance %d: softmax CE %.2f, CB focal %.2f (%+.0f%% relative)"
                     % (imbalance, p["CE"], p["CB focal"],
                        100 * (p["CB focal"] - p["CE"]) / p["CE"]))
    return "\n".join(lines)


def plot(results, imbalances, losses, docs):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(imbalances), figsize=(6 * len(imbalances), 4.6),
                             squeeze=False)
    for ax, imbalance in zip(axes[0], imbalances):
        counts = fashion_lt.lt_counts(imbalance)
        ranked = sorted(losses, key=lambda n: -results[imbalance][n][0].mean())
        shown = [n for n in ranked[:3] if n != "CE"] + (["CE"] if "CE" in losses else [])
        for name in shown:
            acc = results[imbalance][name][0]
            ax.errorbar(counts, 100 * acc.mean(axis=0), yerr=100 * acc.std(axis=0),
                        marker="o", ms=3, capsize=2, lw=1, label=name)
        ax.set_xscale("log")
        ax.set_xlabel("training images of the class")
        ax.set_ylabel("test accuracy of the class %")
        ax.set_title("Fashion-MNIST-LT, imbalance %d" % imbalance)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(docs, "long_tail_fashion.png"), dpi=100)
    plt.close(fig)
    fig, axes = plt.subplots(1, len(imbalances), figsize=(6 * len(imbalances), 4.2),
                             squeeze=False)
    for ax, imbalance in zip(axes[0], imbalances):
        for name in losses:
            curves = results[imbalance][name][1]
            ax.plot(np.arange(1, curves.shape[1] + 1), 100 * curves.mean(axis=0), lw=1,
                    label=name)
        ax.set_xlabel("epoch")
        ax.set_ylabel("balanced test accuracy %")
        ax.set_title("Training curves, imbalance %d" % imbalance)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(docs, "long_tail_fashion_curves.png"), dpi=100)
    plt.close(fig)


BEGIN, END = "<!-- fashion:begin -->", "<!-- fashion:end -->"


def write_results(path, table):
    block = "%s\n%s\n%s" % (BEGIN, table, END)
    text = open(path).read() if os.path.exists(path) else "# Long-tail demos\n"
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + block + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    with open(path, "w") as f:
        f.write(text)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--server", default=os.path.join(ROOT, "build", "bin", "cbloss-server"))
    parser.add_argument("--target", help="use a running server at HOST:PORT instead")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--imbalances", default="100,10")
    parser.add_argument("--losses", default=",".join(LOSSES),
                        help="comma-separated subset of: %s" % ", ".join(LOSSES))
    parser.add_argument("--data-dir", default=fashion_lt.DATA_DIR)
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--docs", default=os.path.join(ROOT, "docs"),
                        help="where to write the figures and LONG_TAIL_DEMO.md")
    args = parser.parse_args()
    imbalances = [int(i) for i in args.imbalances.split(",")]
    losses = [n for n in args.losses.split(",") if n]
    for n in losses:
        if n not in LOSSES:
            parser.error("unknown loss %r" % n)
    torch.set_num_threads(args.threads)
    seeds = list(range(args.seeds))
    start = time.monotonic()
    results = {}
    with fashion_lt.service(args.server, args.target) as target, \
            cbloss.Client(target, timeout=30) as client:
        for imbalance in imbalances:
            data = fashion_lt.lt_dataset(imbalance, args.data_dir)
            counts = fashion_lt.lt_counts(imbalance)
            results[imbalance] = {}
            for name in losses:
                accs, curves = [], []
                for seed in seeds:
                    t = time.monotonic()
                    acc, curve = train_and_test(name, seed, data, counts, client, args.epochs,
                                                imbalance)
                    accs.append(acc)
                    curves.append(curve)
                    print("imbalance %d %-16s seed %d: balanced %.3f tail-3 %.3f (%.0f s)"
                          % (imbalance, name, seed, acc.mean(), acc[-TAIL:].mean(),
                             time.monotonic() - t), flush=True)
                results[imbalance][name] = (np.array(accs), np.array(curves))
    seconds = time.monotonic() - start
    table = markdown(results, imbalances, losses, seeds, args.epochs, seconds)
    print(table)
    os.makedirs(args.docs, exist_ok=True)
    plot(results, imbalances, losses, args.docs)
    write_results(os.path.join(args.docs, "LONG_TAIL_DEMO.md"), table)
    print("wrote %s/long_tail_fashion.png, long_tail_fashion_curves.png and LONG_TAIL_DEMO.md"
          % args.docs)


if __name__ == "__main__":
    main()
