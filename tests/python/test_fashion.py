"""examples/fashion_lt.py on the real Fashion-MNIST files (Debian's
dataset-fashion-mnist) and one short run of examples/long_tail_fashion.py
through a real cbloss-server. No accuracy is asserted: the figures live in
docs/LONG_TAIL_DEMO.md."""

import gzip
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import numpy as np

from server_process import ServerTestCase

_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir, os.pardir))
sys.path.insert(0, os.path.join(_ROOT, "examples"))
import fashion_lt  # noqa: E402

EXAMPLE = os.path.join(_ROOT, "examples", "long_tail_fashion.py")

# n_i = int(6000 * imbalance^(-i/9)), worked out by hand from Cui et al.'s
# CIFAR-LT rule (img_max * (1/imbalance)^(i / (C - 1))).
COUNTS_100 = [6000, 3596, 2156, 1292, 774, 464, 278, 166, 100, 60]
COUNTS_10 = [6000, 4645, 3596, 2784, 2156, 1669, 1292, 1000, 774, 600]


def _need_dataset(test):
    if not os.path.exists(os.path.join(fashion_lt.DATA_DIR, "train-labels-idx1-ubyte.gz")):
        test.fail("%s is missing: install dataset-fashion-mnist "
                  "(scripts/install-deps.sh --test-extras)" % fashion_lt.DATA_DIR)


class FashionDataTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.data = fashion_lt.load() if os.path.exists(fashion_lt.DATA_DIR) else None

    def setUp(self):
        _need_dataset(self)

    def test_files_have_the_published_shapes_and_balanced_classes(self):
        x_tr, y_tr, x_te, y_te = self.data
        self.assertEqual(x_tr.shape, (60000, 28, 28))
        self.assertEqual(x_te.shape, (10000, 28, 28))
        self.assertEqual(np.bincount(y_tr).tolist(), [6000] * 10)
        self.assertEqual(np.bincount(y_te).tolist(), [1000] * 10)

    def test_labels_match_an_independent_reading_of_the_idx_file(self):
        with gzip.open(os.path.join(fashion_lt.DATA_DIR, "train-labels-idx1-ubyte.gz")) as f:
            raw = f.read()
        self.assertEqual(int.from_bytes(raw[0:4], "big"), 2049)
        self.assertEqual(int.from_bytes(raw[4:8], "big"), 60000)
        self.assertEqual(self.data[1].tolist(), list(raw[8:]))

    def test_lt_counts_follow_the_cifar_lt_rule(self):
        self.assertEqual(fashion_lt.lt_counts(100), COUNTS_100)
        self.assertEqual(fashion_lt.lt_counts(10), COUNTS_10)
        self.assertEqual(fashion_lt.lt_counts(1), [6000] * 10)

    def test_lt_split_has_exactly_those_counts_of_distinct_images(self):
        y_tr = self.data[1]
        for imbalance, counts in ((100, COUNTS_100), (10, COUNTS_10)):
            idx = fashion_lt.lt_indices(y_tr, imbalance)
            self.assertEqual(len(np.unique(idx)), sum(counts))
            self.assertEqual(np.bincount(y_tr[idx], minlength=10).tolist(), counts)
        # The same split every time (a fixed shuffle).
        np.testing.assert_array_equal(fashion_lt.lt_indices(y_tr, 100),
                                      fashion_lt.lt_indices(y_tr, 100))

    def test_lt_dataset_tensors(self):
        x_tr, y_tr, x_te, y_te = fashion_lt.lt_dataset(100)
        self.assertEqual(tuple(x_tr.shape), (sum(COUNTS_100), 1, 28, 28))
        self.assertEqual(tuple(x_te.shape), (10000, 1, 28, 28))
        self.assertEqual(np.bincount(y_tr.numpy()).tolist(), COUNTS_100)


class FashionExampleTest(ServerTestCase):

    def test_one_epoch_through_the_service_writes_table_and_figures(self):
        _need_dataset(self)
        docs = tempfile.mkdtemp(prefix="cbloss-fashion-docs-")
        self.addCleanup(shutil.rmtree, docs, True)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [os.path.join(_ROOT, "examples"), os.environ.get("PYTHONPATH", "")]))
        results = os.path.join(docs, "results.jsonl")
        command = [sys.executable, EXAMPLE, "--target", self.server.target, "--seeds", "1",
                   "--epochs", "1", "--imbalances", "100", "--losses",
                   "CE,CB focal,Seesaw (run)", "--docs", docs, "--results", results]
        run = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
        self.assertEqual(run.returncode, 0, run.stdout + run.stderr)
        self.assertNotIn("from --results", run.stdout)
        with open(results) as f:
            self.assertEqual(len(f.readlines()), 3)
        for name in ("long_tail_fashion.png", "long_tail_fashion_curves.png"):
            self.assertGreater(os.path.getsize(os.path.join(docs, name)), 10000)
        with open(os.path.join(docs, "LONG_TAIL_DEMO.md")) as f:
            text = f.read()
        for loss in ("CE", "CB focal", "Seesaw (run)"):
            self.assertIn("| 100 | 14886 | %s |" % loss, text)
        # The Seesaw run saw every training label of the one epoch once.
        runs = [r for r in self.client.list_runs() if r.name.startswith("fashion-seesaw-100-0-")]
        self.assertEqual(len(runs), 1)
        self.assertEqual(runs[0].statistics.seen_counts, COUNTS_100)
        self.assertEqual(runs[0].version, 1 + (sum(COUNTS_100) + 127) // 128)

        # The same command again reuses the three models of --results: no
        # training (so no second Seesaw run) and the same table.
        table = text[text.index("| 100 | 14886 | CE |"):text.index("Mean ±")]
        again = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
        self.assertEqual(again.returncode, 0, again.stdout + again.stderr)
        self.assertEqual(again.stdout.count(" s, from --results)"), 3, again.stdout)
        with open(os.path.join(docs, "LONG_TAIL_DEMO.md")) as f:
            text = f.read()
        self.assertIn(table, text)
        self.assertIn("0 models trained", text)
        self.assertIn("(3 more reused from --results)", text)
        self.assertEqual(len([r for r in self.client.list_runs()
                              if r.name.startswith("fashion-seesaw-100-0-")]), 1)


if __name__ == "__main__":
    unittest.main()
