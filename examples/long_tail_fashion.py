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
against training count) and docs/long_tail_fashion_curves.png (balanced
accuracy per epoch on 2,000 test images), and the table into docs/LONG_TAIL_DEMO.md between the
<!-- fashion:begin --> and <!-- fashion:end --> markers.

Run (from the repository root, after `cmake --build build`):

    PYTHONPATH=build/python nice /usr/bin/python3 examples/long_tail_fashion.py

It starts its own cbloss-server (--server) or uses --target HOST:PORT. Models
train in --jobs worker processes (default 2, one torch thread each: on 2 cores
that is 1.4x the throughput of one process with two threads). The training
curves are measured on a fixed balanced 2,000-image subset of the test set
(the first 200 test images of each class), a fifth of the cost of the whole
10,000, on which every figure of the table is measured. --results FILE keeps every
finished model as a JSON line and reuses it when the same command is run
again, so an interrupted run resumes.
"""

import argparse
import json
import math
import multiprocessing
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
CURVE_PER_CLASS = 200


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


def curve_subset(y_test):
    """The first CURVE_PER_CLASS test images of each class, in test order."""
    y = y_test.numpy()
    return torch.from_numpy(np.sort(np.concatenate(
        [np.flatnonzero(y == c)[:CURVE_PER_CLASS] for c in range(NUM_CLASSES)])))


def train_and_test(name, seed, data, counts, client, epochs, imbalance):
    x_tr, y_tr, x_te, y_te = data
    subset = curve_subset(y_te)
    x_curve, y_curve = x_te[subset], y_te[subset]
    torch.manual_seed(seed)
    model = fashion_lt.small_cnn(channels_last=True)
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
        curve.append(fashion_lt.per_class_accuracy(model, x_curve, y_curve).mean())
    return fashion_lt.per_class_accuracy(model, x_te, y_te), np.array(curve)


# One worker process's state: its client and the splits it has loaded.
_WORKER = {}


def _worker_init(target, data_dir, threads):
    torch.set_num_threads(threads)
    _WORKER.update(client=cbloss.Client(target, timeout=30), data_dir=data_dir, data={})


def _worker_run(task):
    imbalance, name, seed, epochs, _ = task
    data = _WORKER["data"]
    if imbalance not in data:
        data[imbalance] = fashion_lt.lt_dataset(imbalance, _WORKER["data_dir"])
    t = time.monotonic()
    acc, curve = train_and_test(name, seed, data[imbalance], fashion_lt.lt_counts(imbalance),
                                _WORKER["client"], epochs, imbalance)
    return {"imbalance": imbalance, "loss": name, "seed": seed, "epochs": epochs,
            "recipe": RECIPE, "per_class_accuracy": acc.tolist(), "curve": curve.tolist(),
            "seconds": time.monotonic() - t}


# Changes when a change to this script changes its results: --results files of
# another recipe are not reused.
RECIPE = 2


def _key(record):
    return (record["imbalance"], record["loss"], record["seed"], record["epochs"],
            record.get("recipe"))


def load_results(path):
    """Finished models of an earlier run with --results, by (imbalance, loss, seed, epochs)."""
    done = {}
    if path and os.path.exists(path):
        with open(path) as f:
            for line in f:
                if line.strip():
                    record = json.loads(line)
                    done[_key(record)] = record
    return done


def run_models(tasks, target, args, done):
    """Trains every task not in `done`, in args.jobs processes, and yields the
    records of all tasks (reused ones first) as they finish."""
    # The largest splits first, so that no long model starts last.
    todo = sorted((t for t in tasks if t not in done),
                  key=lambda t: -sum(fashion_lt.lt_counts(t[0])))
    for t in tasks:
        if t in done:
            yield done[t], True
    if not todo:
        return
    threads = args.threads or (1 if args.jobs > 1 else 2)
    if args.jobs <= 1:
        _worker_init(target, args.data_dir, threads)
        for t in todo:
            yield _worker_run(t), False
        _WORKER["client"].close()
        return
    # spawn, not fork: the parent has torch's thread pools, which fork would copy half-made.
    with multiprocessing.get_context("spawn").Pool(
            args.jobs, _worker_init, (target, args.data_dir, threads)) as pool:
        for record in pool.imap_unordered(_worker_run, todo):
            yield record, False


def pm(values):
    return "%.1f ± %.1f" % (100 * np.mean(values), 100 * np.std(values))


def markdown(results, imbalances, losses, seeds, epochs, seconds, jobs, reused):
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
    total = len(seeds) * len(imbalances) * len(losses)
    lines += ["", "Mean ± standard deviation over %d seed(s) (%s), %d epochs; %d models "
              "trained in %.0f s of wall time on %d cores with --jobs %d%s."
              % (len(seeds), ", ".join(map(str, seeds)), epochs, total - reused, seconds,
                 os.cpu_count(), jobs,
                 "" if not reused else " (%d more reused from --results)" % reused), "",
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
        ax.set_ylabel("balanced accuracy %% (%d test images)" % (CURVE_PER_CLASS * NUM_CLASSES))
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
    parser.add_argument("--jobs", type=int, default=2,
                        help="worker processes training models side by side")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads per worker (default 1 with --jobs > 1, else 2)")
    parser.add_argument("--results", help="JSON-lines file of finished models: appended to, "
                        "and reused when the same command runs again")
    parser.add_argument("--docs", default=os.path.join(ROOT, "docs"),
                        help="where to write the figures and LONG_TAIL_DEMO.md")
    args = parser.parse_args()
    imbalances = [int(i) for i in args.imbalances.split(",")]
    losses = [n for n in args.losses.split(",") if n]
    for n in losses:
        if n not in LOSSES:
            parser.error("unknown loss %r" % n)
    seeds = list(range(args.seeds))
    tasks = [(imbalance, name, seed, args.epochs, RECIPE)
             for imbalance in imbalances for name in losses for seed in seeds]
    done = load_results(args.results)
    start = time.monotonic()
    records = {}
    reused = 0
    with fashion_lt.service(args.server, args.target) as target:
        for record, old in run_models(tasks, target, args, done):
            records[_key(record)] = record
            reused += old
            if not old and args.results:
                with open(args.results, "a") as f:
                    f.write(json.dumps(record) + "\n")
            acc = np.array(record["per_class_accuracy"])
            print("imbalance %d %-16s seed %d: balanced %.3f tail-3 %.3f (%.0f s%s)"
                  % (record["imbalance"], record["loss"], record["seed"], acc.mean(),
                     acc[-TAIL:].mean(), record["seconds"], ", from --results" if old else ""),
                  flush=True)
    results = {imbalance: {name: (
        np.array([records[(imbalance, name, s, args.epochs, RECIPE)]["per_class_accuracy"]
                  for s in seeds]),
        np.array([records[(imbalance, name, s, args.epochs, RECIPE)]["curve"] for s in seeds]))
        for name in losses} for imbalance in imbalances}
    seconds = time.monotonic() - start
    table = markdown(results, imbalances, losses, seeds, args.epochs, seconds, args.jobs,
                     reused)
    print(table)
    os.makedirs(args.docs, exist_ok=True)
    plot(results, imbalances, losses, args.docs)
    write_results(os.path.join(args.docs, "LONG_TAIL_DEMO.md"), table)
    print("wrote %s/long_tail_fashion.png, long_tail_fashion_curves.png and LONG_TAIL_DEMO.md"
          % args.docs)


if __name__ == "__main__":
    main()
