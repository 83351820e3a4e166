#!/usr/bin/python3
"""Training with cbloss-server beside the trainer, over a Unix socket and
shared memory (docs/SHARED_MEMORY.md).

The training loop is an ordinary PyTorch one; the only thing that decides
the transport is the target. With a `unix:` target (and a server started
with --allow_shared_memory) the cbloss client puts the logits in a POSIX
shared-memory region registered with the server and the server writes the
gradient back into it: no tensor bytes go through the socket. With a
HOST:PORT target the same code sends bytes over TCP.

Start a server on a socket, then train against it:

    build/bin/cbloss-server --listen=unix:/tmp/cbloss.sock --allow_shared_memory &
    PYTHONPATH=build/python /usr/bin/python3 examples/colocated_training.py \\
        --target unix:/tmp/cbloss.sock

or set CBLOSS_TARGET=unix:/tmp/cbloss.sock instead of --target (the pod of
deploy/k8s/sidecar does). The data are synthetic and long-tailed: C classes
of Gaussian clusters in D dimensions, class i (i = 0..C-1) with
floor(n_max * (1/imbalance)^(i/(C-1))) training points (at least 1), a
balanced test set of 20 per class; the model is an MLP D-128-C trained with
SGD and class-balanced focal loss (effective-number weights, beta 0.9999,
gamma 1; Cui et al., CVPR 2019). It prints the loss every --log_every steps
and the balanced test accuracy at the end.
"""

import argparse
import os
import sys
import time

import numpy as np
import torch
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
try:
    from cbloss.torch import ClassBalancedLoss
except ImportError:  # not installed: use the build tree of this checkout
    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "build", "python"))
    from cbloss.torch import ClassBalancedLoss

TEST_PER_CLASS = 20


def long_tailed_counts(classes, n_max, imbalance):
    """n_i = floor(n_max * (1/imbalance)^(i/(C-1))), at least 1."""
    if classes == 1:
        return [n_max]
    return [max(1, int(n_max * (1.0 / imbalance) ** (i / (classes - 1))))
            for i in range(classes)]


def make_data(classes, features, counts, seed):
    """(x_train, y_train, x_test, y_test): Gaussian clusters, one per class."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 1.0, size=(classes, features)).astype(np.float32)

    def draw(per_class):
        y = np.repeat(np.arange(classes), per_class)
        x = centres[y] + rng.normal(0.0, 0.8, size=(len(y), features)).astype(np.float32)
        return torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))

    x_train, y_train = draw(counts)
    x_test, y_test = draw([TEST_PER_CLASS] * classes)
    return x_train, y_train, x_test, y_test


def balanced_accuracy(model, x, y, classes):
    with torch.no_grad():
        predicted = model(x).argmax(dim=1)
    per_class = [(predicted[y == c] == c).float().mean().item() for c in range(classes)]
    return float(np.mean(per_class))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", default=None,
                        help="cbloss-server address: unix:/path or HOST:PORT "
                             "(default $CBLOSS_TARGET, else 127.0.0.1:50051)")
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--n_max", type=int, default=500,
                        help="training points of the most frequent class")
    parser.add_argument("--imbalance", type=float, default=100.0)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--log_every", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    counts = long_tailed_counts(args.classes, args.n_max, args.imbalance)
    x_train, y_train, x_test, y_test = make_data(args.classes, args.features, counts,
                                                 args.seed)
    model = nn.Sequential(nn.Linear(args.features, 128), nn.ReLU(),
                          nn.Linear(128, args.classes))
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    # The one line that involves cbloss; the target picks the transport.
    criterion = ClassBalancedLoss(target=args.target, class_counts=counts,
                                  loss_type="focal", beta=0.9999, gamma=1.0)

    generator = torch.Generator().manual_seed(args.seed)
    start = time.monotonic()
    for step in range(1, args.steps + 1):
        index = torch.randint(len(y_train), (args.batch,), generator=generator)
        loss = criterion(model(x_train[index]), y_train[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % args.log_every == 0 or step == args.steps:
            print("step %d loss %.6f" % (step, loss.item()), flush=True)
    elapsed = time.monotonic() - start
    print("%d steps of %dx%d in %.2f s (%.2f ms per step)"
          % (args.steps, args.batch, args.classes, elapsed, 1000 * elapsed / args.steps))
    print("balanced test accuracy %.4f"
          % balanced_accuracy(model, x_test, y_test, args.classes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
