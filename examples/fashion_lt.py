"""Fashion-MNIST-LT: the data, the long-tailed split and the model shared by
examples/long_tail_fashion.py and examples/ddp_seesaw.py.

- Data: Debian's dataset-fashion-mnist (/usr/share/datasets/fashion-mnist,
  the four idx files as gzip: 60,000 training images, 6,000 per class, and
  10,000 test images, 1,000 per class, 28x28 uint8).
- Split: the protocol of Cui et al.'s CIFAR-10-LT (CVPR 2019): class i keeps
  n_i = int(6000 * imbalance^(-i/9)) training images (class 0 the most
  frequent, class 9 the rarest), chosen by a fixed shuffle of that class's
  images; the test set stays the balanced 10,000.
- Model: a small CNN (two 5x5 convolutions, 16 and 32 channels, each with
  ReLU and 2x2 max pooling, then 512 -> 64 -> 10).
"""

import contextlib
import gzip
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
try:
    import cbloss
except ImportError:  # not installed: use the build tree of this checkout
    sys.path.insert(0, os.path.join(ROOT, "build", "python"))
    import cbloss

DATA_DIR = "/usr/share/datasets/fashion-mnist"
NUM_CLASSES = 10
N_MAX = 6000
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
               "Sneaker", "Bag", "Ankle boot")
SPLIT_SEED = 0  # the shuffle that picks each class's n_i images
MEAN, STD = 0.2860, 0.3530  # of the full Fashion-MNIST training images


def _read_idx(path, magic, dims):
    with gzip.open(path, "rb") as f:
        data = f.read()
    header = np.frombuffer(data, dtype=">u4", count=1 + dims)
    if int(header[0]) != magic:
        raise ValueError("%s: not an idx file (magic %#x)" % (path, int(header[0])))
    shape = tuple(int(n) for n in header[1:])
    return np.frombuffer(data, dtype=np.uint8, offset=4 * (1 + dims)).reshape(shape)


def load(data_dir=DATA_DIR):
    """(train images [60000, 28, 28] uint8, train labels [60000] int64,
    test images [10000, 28, 28], test labels [10000])."""
    def path(name):
        p = os.path.join(data_dir, name)
        if not os.path.exists(p):
            raise FileNotFoundError("%s is missing: install Debian's dataset-fashion-mnist "
                                    "(scripts/install-deps.sh --test-extras)" % p)
        return p
    x_train = _read_idx(path("train-images-idx3-ubyte.gz"), 0x803, 3)
    y_train = _read_idx(path("train-labels-idx1-ubyte.gz"), 0x801, 1).astype(np.int64)
    x_test = _read_idx(path("t10k-images-idx3-ubyte.gz"), 0x803, 3)
    y_test = _read_idx(path("t10k-labels-idx1-ubyte.gz"), 0x801, 1).astype(np.int64)
    return x_train, y_train, x_test, y_test


def lt_counts(imbalance):
    """n_i = int(6000 * imbalance^(-i/9)) for classes i = 0..9."""
    return [int(N_MAX * float(imbalance) ** (-i / (NUM_CLASSES - 1.0)))
            for i in range(NUM_CLASSES)]


def lt_indices(y_train, imbalance, seed=SPLIT_SEED):
    """Indices into the training set of the long-tailed split, sorted."""
    rng = np.random.default_rng(seed)
    picked = []
    for c, n in enumerate(lt_counts(imbalance)):
        idx = np.flatnonzero(y_train == c)
        if len(idx) < n:
            raise ValueError("class %d has %d images, the split needs %d" % (c, len(idx), n))
        picked.append(rng.permutation(idx)[:n])
    return np.sort(np.concatenate(picked))


def to_tensor(images):
    """uint8 [N, 28, 28] -> float32 [N, 1, 28, 28], standardised."""
    x = torch.from_numpy(images.astype(np.float32) / 255.0)
    return ((x - MEAN) / STD).unsqueeze(1)


def lt_dataset(imbalance, data_dir=DATA_DIR):
    """(x_train, y_train, x_test, y_test) tensors of the long-tailed split."""
    x_tr, y_tr, x_te, y_te = load(data_dir)
    idx = lt_indices(y_tr, imbalance)
    return (to_tensor(x_tr[idx]), torch.from_numpy(y_tr[idx]), to_tensor(x_te),
            torch.from_numpy(y_te))


def small_cnn(channels_last=False):
    """conv 5x5 16, max-pool 2, ReLU, conv 5x5 32, max-pool 2, ReLU, 512 -> 64 -> 10.
    Pooling before ReLU is the same function as after (ReLU is monotone, so it
    commutes with max) on a quarter of the values. channels_last=True stores
    the weights NHWC, which makes PyTorch's CPU convolutions and pooling
    produce NHWC activations: 1.7x faster training here with the pool order."""
    model = nn.Sequential(
        nn.Conv2d(1, 16, 5), nn.MaxPool2d(2), nn.ReLU(),   # 16 x 12 x 12
        nn.Conv2d(16, 32, 5), nn.MaxPool2d(2), nn.ReLU(),  # 32 x 4 x 4
        nn.Flatten(), nn.Linear(512, 64), nn.ReLU(), nn.Linear(64, NUM_CLASSES))
    return model.to(memory_format=torch.channels_last) if channels_last else model


def per_class_accuracy(model, x_test, y_test, batch=2000):
    model.eval()
    with torch.no_grad():
        predicted = torch.cat([model(x_test[i:i + batch]).argmax(dim=1)
                               for i in range(0, len(y_test), batch)])
    model.train()
    y = y_test.numpy()
    p = predicted.numpy()
    return np.array([(p[y == c] == c).mean() for c in range(NUM_CLASSES)])


@contextlib.contextmanager
def service(server=None, target=None):
    """Yields the target HOST:PORT of a serving cbloss-server: `target`, or a
    server started here (binary `server`) on 127.0.0.1, a free port and a
    temporary data dir, stopped with SIGTERM on exit."""
    if target:
        with cbloss.Client(target, timeout=30) as client:
            client.wait_until_serving(timeout=10)
        yield target
        return
    tmp = tempfile.mkdtemp(prefix="cbloss-fashion-")
    port_file = os.path.join(tmp, "port")
    log = open(os.path.join(tmp, "server.log"), "wb")
    proc = subprocess.Popen([server, "--listen=127.0.0.1:0", "--port_file=" + port_file,
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
        yield target
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)
