#!/usr/bin/python3
"""Long-tailed digits: plain cross-entropy vs count-aware losses from cbloss.

A small, honest replay of the experiment of Cui et al. (CVPR 2019) on a data
set that ships with scikit-learn (8x8 digits, no download):

- Test split: 50 images per class (500, balanced), the same for every run.
- Training split: from the remaining images, class of frequency rank i
  (i = 0..9) keeps n_i = floor(120 * (1/imbalance)^(i/9)) images, for
  imbalance 10, 50 and 100 (120 down to 12, 2 and 1). Which digit gets which
  rank is a random permutation drawn per seed, so no digit is always the tail.
- Model: MLP 64-64-10 (ReLU, float32), Adam (lr 3e-3, weight decay 1e-4),
  60 epochs of mini-batches of 32, inputs standardised on the training split.
- Losses: F.cross_entropy (the baseline), and through the service
  (cbloss.torch.ClassBalancedLoss with the training split's class counts):
  CB softmax (beta 0.9999) and CB focal (beta 0.9999, gamma 1, output bias
  initialised to -log(9) as the paper does for its sigmoid-based losses),
  and two losses of LOSS.md section 9: balanced softmax (Ren et al. 2020,
  no class weights) and LDAM-DRW (Cao et al. 2019: LDAM with max_margin 0.5
  and scale 2, class weights 1 for epochs 0-47 of 60 (80%), effective-number
  weights with beta 0.9999 from epoch 48 on; the module's `epoch` attribute
  is set at the start of every epoch).
- 5 seeds; reports mean +- std of balanced accuracy (= accuracy on the
  balanced test split), top-1 error, and accuracy of the 3 most frequent
  (head) and 3 rarest (tail) classes.

Writes docs/long_tail_digits.png and the results section of
docs/LONG_TAIL_DEMO.md (between the <!-- results --> markers; the rest of the
file is kept).

Run (from the repository root, after `cmake --build build`):

    PYTHONPATH=build/python /usr/bin/python3 examples/long_tail_digits.py

It starts its own cbloss-server (--server, default build/bin/cbloss-server)
on a free port with a temporary data dir, or uses --target HOST:PORT.
Needs scikit-learn and matplotlib (Debian: python3-sklearn,
python3-matplotlib). About three minutes on 2 cores.
"""

import argparse
import contextlib
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
try:
    import cbloss
except ImportError:  # not installed: use the build tree of this checkout
    sys.path.insert(0, os.path.join(ROOT, "build", "python"))
    import cbloss
from cbloss.torch import ClassBalancedLoss  # noqa: E402

IMBALANCES = (10, 50, 100)
N_MAX = 120
TEST_PER_CLASS = 50
NUM_CLASSES = 10
BETA = 0.9999
GAMMA = 1.0
EPOCHS = 60
BATCH = 32
LR = 3e-3
WEIGHT_DECAY = 1e-4
HEAD = 3  # the 3 most frequent classes ...
TAIL = 3  # ... and the 3 rarest
LOSSES = ("CE (softmax)", "CB softmax", "CB focal", "Balanced softmax", "LDAM-DRW")
SERVICE_LOSSES = LOSSES[1:]
# LDAM on an MLP's unnormalised logits. Cao et al.'s scale 30 is meant for
# cosine logits in [-1, 1]; here the logits are free, so the scale acts as an
# inverse softmax temperature: it sets how large the raw logit gaps need to
# get before the loss saturates, and so how much the margins (at most
# LDAM_MAX_MARGIN raw logit units) still matter late in training. 2 keeps
# the saturated gaps a few units wide, so the margins stay a sizeable part
# of them, without the near-hard-max softmax of large scales. A pilot on
# held-out training-pool images (not the test split; docs/LONG_TAIL_DEMO.md)
# found 1, 2, 5 and 30 within noise of each other.
LDAM_MAX_MARGIN = 0.5
LDAM_SCALE = 2.0
DRW_FRACTION = 0.8  # deferred re-weighting starts after 80% of the epochs

# Cui et al. 2019, Table 2: CIFAR-10-LT, imbalance 100, ResNet-32, top-1 error.
PAPER = {"CE (softmax)": 29.64, "CB focal": 25.43}


@contextlib.contextmanager
def service(args):
    """Yields a cbloss.Client: to --target, or to a server started here."""
    if args.target:
        with cbloss.Client(args.target, timeout=30) as client:
            client.wait_until_serving(timeout=10)
            yield client
        return
    tmp = tempfile.mkdtemp(prefix="cbloss-demo-")
    port_file = os.path.join(tmp, "port")
    log = open(os.path.join(tmp, "server.log"), "wb")
    proc = subprocess.Popen([args.server, "--listen=127.0.0.1:0", "--port_file=" + port_file,
                             "--data_dir=" + os.path.join(tmp, "data"), "--compute_threads=2"],
                            stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not (os.path.exists(port_file) and open(port_file).read().strip()):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("cbloss-server did not start; see %s" % log.name)
            time.sleep(0.02)
        target = "127.0.0.1:%s" % open(port_file).read().strip()
        with cbloss.Client(target, timeout=30) as client:
            client.wait_until_serving(timeout=10)
            yield client
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


def rank_counts(imbalance):
    """n_i = floor(N_MAX * (1/imbalance)^(i/9)) for frequency ranks i = 0..9."""
    return [int(math.floor(N_MAX * (1.0 / imbalance) ** (i / 9.0))) for i in range(NUM_CLASSES)]


def splits(seed, imbalance):
    """(x_train, y_train, x_test, y_test, counts by class, classes by rank)."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    x, y = digits.data.astype(np.float32), digits.target.astype(np.int64)
    # The test split does not depend on the seed: the first 50 of each class
    # in a fixed shuffle.
    order = np.random.default_rng(2019).permutation(len(y))
    test_idx, pool = [], {}
    for c in range(NUM_CLASSES):
        idx = order[y[order] == c]
        test_idx.extend(idx[:TEST_PER_CLASS])
        pool[c] = idx[TEST_PER_CLASS:]
    rng = np.random.default_rng(seed)
    by_rank = rng.permutation(NUM_CLASSES)  # by_rank[i] = digit of rank i
    counts = np.zeros(NUM_CLASSES, dtype=np.int64)
    train_idx = []
    for c, n in zip(by_rank, rank_counts(imbalance)):
        counts[c] = n
        train_idx.extend(rng.permutation(pool[c])[:n])
    train_idx, test_idx = np.array(train_idx), np.array(test_idx)
    mean = x[train_idx].mean(axis=0)
    std = x[train_idx].std(axis=0) + 1.0  # +1: some pixels are always 0
    scale = lambda a: (a - mean) / std  # noqa: E731
    return (scale(x[train_idx]), y[train_idx], scale(x[test_idx]), y[test_idx], counts,
            by_rank)


def drw_start_epoch():
    """First epoch (0-based) with class weights under LDAM-DRW."""
    return int(round(DRW_FRACTION * EPOCHS))


def make_criterion(loss_name, client, counts, model):
    if loss_name == "CE (softmax)":
        return F.cross_entropy
    if loss_name == "CB softmax":
        return ClassBalancedLoss(client, class_counts=counts, loss_type="softmax", beta=BETA)
    if loss_name == "CB focal":
        with torch.no_grad():  # prior 0.1 per class, as the paper does for sigmoid losses
            model[-1].bias.fill_(-math.log((1 - 0.1) / 0.1))
        return ClassBalancedLoss(client, class_counts=counts, loss_type="focal", beta=BETA,
                                 gamma=GAMMA)
    if loss_name == "Balanced softmax":
        # Softmax on z + log n_j, every class weight 1 (Ren et al. use no
        # re-weighting on top of the logit shift).
        return ClassBalancedLoss(client, class_counts=counts, loss_type="balanced_softmax",
                                 weighting="none")
    if loss_name == "LDAM-DRW":
        return ClassBalancedLoss(client, class_counts=counts, loss_type="ldam",
                                 max_margin=LDAM_MAX_MARGIN, scale=LDAM_SCALE, beta=BETA,
                                 weighting="effective_number",
                                 drw_start_epoch=drw_start_epoch())
    raise ValueError(loss_name)


def train_and_test(loss_name, seed, data, client):
    x_tr, y_tr, x_te, y_te, counts, _ = data
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, NUM_CLASSES))
    criterion = make_criterion(loss_name, client, counts, model)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    x_tr, y_tr = torch.from_numpy(x_tr), torch.from_numpy(y_tr)
    generator = torch.Generator().manual_seed(seed)
    for epoch in range(EPOCHS):
        if isinstance(criterion, ClassBalancedLoss):
            criterion.epoch = epoch  # only LDAM-DRW has a drw_start_epoch
        perm = torch.randperm(len(y_tr), generator=generator)
        for start in range(0, len(y_tr), BATCH):
            batch = perm[start:start + BATCH]
            optimizer.zero_grad()
            loss = criterion(model(x_tr[batch]), y_tr[batch])
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        predicted = model(torch.from_numpy(x_te)).argmax(dim=1).numpy()
    return np.array([(predicted[y_te == c] == c).mean() for c in range(NUM_CLASSES)])


def run(client, seeds):
    """results[imbalance][loss] = array [seeds, 10] of per-class accuracy,
    classes in frequency-rank order (0 = most frequent)."""
    results = {}
    for imbalance in IMBALANCES:
        results[imbalance] = {name: [] for name in LOSSES}
        for seed in seeds:
            data = splits(seed, imbalance)
            by_rank = data[5]
            for name in LOSSES:
                per_class = train_and_test(name, seed, data, client)
                results[imbalance][name].append(per_class[by_rank])
            print("imbalance %3d seed %d: %s (train %d images)" % (
                imbalance, seed, "  ".join("%s %.3f" % (n, results[imbalance][n][-1].mean())
                                           for n in LOSSES), len(data[1])), flush=True)
        for name in LOSSES:
            results[imbalance][name] = np.array(results[imbalance][name])
    return results


def pm(values, percent=True):
    k = 100.0 if percent else 1.0
    return "%.1f ± %.1f" % (k * np.mean(values), k * np.std(values))


def markdown(results, seeds, seconds, weights):
    lines = [
        "| imbalance | train images | loss | balanced accuracy % | top-1 error % "
        "| head-3 accuracy % | tail-3 accuracy % |",
        "|---:|---:|---|---:|---:|---:|---:|",
    ]
    for imbalance in IMBALANCES:
        n_train = sum(rank_counts(imbalance))
        for name in LOSSES:
            acc = results[imbalance][name]  # [seeds, 10]
            balanced = acc.mean(axis=1)
            lines.append("| %d | %d | %s | %s | %s | %s | %s |" % (
                imbalance, n_train, name, pm(balanced), pm(1 - balanced),
                pm(acc[:, :HEAD].mean(axis=1)), pm(acc[:, -TAIL:].mean(axis=1))))
    lines.append("")
    lines.append("Mean ± standard deviation over %d seeds (%s); %d runs in %.0f s."
                 % (len(seeds), ", ".join(map(str, seeds)),
                    len(seeds) * len(IMBALANCES) * len(LOSSES), seconds))
    lines.append("")
    lines.append("Against cross-entropy, paired by seed (same split, same initialisation): "
                 "gain in balanced accuracy (points, mean ± std over seeds), seeds where "
                 "the loss is better (ties count as not better), and relative change of "
                 "the top-1 error:")
    lines.append("")
    lines.append("| data | imbalance | CE error %% | %s |" % " | ".join(SERVICE_LOSSES))
    lines.append("|---|---:|---:|%s" % ("---|" * len(SERVICE_LOSSES)))
    for imbalance in IMBALANCES:
        ce_runs = results[imbalance]["CE (softmax)"].mean(axis=1)
        ce = 1 - ce_runs.mean()
        cells = []
        for n in SERVICE_LOSSES:
            runs = results[imbalance][n].mean(axis=1)
            gain = runs - ce_runs
            cells.append("%s pts, %d/%d, error %+.0f%%" % (
                pm(gain), int(np.sum(gain > 1e-9)), len(gain),
                100 * ((1 - runs.mean()) - ce) / ce))
        lines.append("| digits-LT (this demo) | %d | %.1f | %s |"
                     % (imbalance, 100 * ce, " | ".join(cells)))
    paper_change = 100 * (PAPER["CB focal"] - PAPER["CE (softmax)"]) / PAPER["CE (softmax)"]
    paper = {n: "(not quoted)" for n in SERVICE_LOSSES}
    paper["CB focal"] = "error %.2f%%, %+.0f%%" % (PAPER["CB focal"], paper_change)
    lines.append("| CIFAR-10-LT, ResNet-32 (Cui et al., Table 2) | 100 | %.2f | %s |"
                 % (PAPER["CE (softmax)"], " | ".join(paper[n] for n in SERVICE_LOSSES)))
    lines.append("")
    lines.append("Class weights the service computed for the imbalance-%d counts "
                 "(GetClassWeights, most to least frequent class):" % IMBALANCES[-1])
    lines.append("")
    for label, w in weights:
        lines.append("- %s: %s" % (label, " ".join("%.3f" % v for v in w)))
    return "\n".join(lines)


def plot(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    colors = {"CE (softmax)": "#777777", "CB softmax": "#1f77b4", "CB focal": "#d62728",
              "Balanced softmax": "#2ca02c", "LDAM-DRW": "#9467bd"}
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.6))
    for k, name in enumerate(LOSSES):
        dodge = (k - (len(LOSSES) - 1) / 2.0) * 0.08  # side by side, so the bars stay legible
        means = [100 * results[i][name].mean() for i in IMBALANCES]
        stds = [100 * results[i][name].mean(axis=1).std() for i in IMBALANCES]
        left.errorbar([i * math.exp(0.4 * dodge) for i in IMBALANCES], means, yerr=stds,
                      marker="o", ms=4, capsize=3, label=name, color=colors[name])
        acc = results[IMBALANCES[-1]][name]
        right.errorbar(np.arange(NUM_CLASSES) + dodge, 100 * acc.mean(axis=0),
                       yerr=100 * acc.std(axis=0), marker="o", ms=3, capsize=2, lw=1,
                       label=name, color=colors[name])
    left.set_xscale("log")
    left.set_xticks(IMBALANCES)
    left.set_xticklabels([str(i) for i in IMBALANCES])
    left.set_xlabel("imbalance (n_max / n_min)")
    left.set_ylabel("balanced test accuracy %")
    left.set_title("Digits-LT, MLP 64-64-10")
    left.legend()
    left.grid(alpha=0.3)
    counts = rank_counts(IMBALANCES[-1])
    right.set_xticks(np.arange(NUM_CLASSES))
    right.set_xticklabels(["%d\n(n=%d)" % (i, n) for i, n in enumerate(counts)], fontsize=8)
    right.set_xlabel("class by training frequency rank (imbalance %d)" % IMBALANCES[-1])
    right.set_ylabel("test accuracy %")
    right.set_title("Per-class accuracy, imbalance %d" % IMBALANCES[-1])
    right.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def write_results(path, table):
    block = "%s\n%s\n%s" % (BEGIN, table, END)
    if os.path.exists(path):
        text = open(path).read()
        if BEGIN in text and END in text:
            text = text[:text.index(BEGIN)] + block + text[text.index(END) + len(END):]
        else:
            text = text.rstrip("\n") + "\n\n" + block + "\n"
    else:
        text = "# Long-tailed digits demo\n\n" + block + "\n"
    with open(path, "w") as f:
        f.write(text)


def main():
    global EPOCHS, IMBALANCES, LDAM_SCALE
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--server", default=os.path.join(ROOT, "build", "bin", "cbloss-server"),
                        help="cbloss-server binary to start (default: %(default)s)")
    parser.add_argument("--target", help="use a running server at HOST:PORT instead")
    parser.add_argument("--seeds", type=int, default=5, help="number of seeds (default 5)")
    parser.add_argument("--epochs", type=int, default=EPOCHS,
                        help="training epochs (default %(default)s)")
    parser.add_argument("--imbalances", default=",".join(map(str, IMBALANCES)),
                        help="comma-separated imbalance factors (default %(default)s)")
    parser.add_argument("--ldam-scale", type=float, default=LDAM_SCALE,
                        help="LDAM logit scale (default %(default)s)")
    parser.add_argument("--docs", default=os.path.join(ROOT, "docs"),
                        help="where to write long_tail_digits.png and LONG_TAIL_DEMO.md")
    args = parser.parse_args()
    EPOCHS = args.epochs
    LDAM_SCALE = args.ldam_scale
    IMBALANCES = tuple(int(i) for i in args.imbalances.split(","))
    torch.set_num_threads(1)
    seeds = list(range(args.seeds))
    start = time.monotonic()
    with service(args) as client:
        results = run(client, seeds)
        seconds = time.monotonic() - start
        counts = rank_counts(IMBALANCES[-1])
        weights = [("effective number, beta %g" % BETA,
                    client.class_weights(class_counts=counts, beta=BETA)),
                   ("inverse frequency",
                    client.class_weights(class_counts=counts, weighting="inverse_frequency"))]
    table = markdown(results, seeds, seconds, weights)
    print(table)
    os.makedirs(args.docs, exist_ok=True)
    plot(results, os.path.join(args.docs, "long_tail_digits.png"))
    write_results(os.path.join(args.docs, "LONG_TAIL_DEMO.md"), table)
    print("wrote %s/long_tail_digits.png and LONG_TAIL_DEMO.md" % args.docs)


if __name__ == "__main__":
    main()
