"""examples/ddp_seesaw.py with 2 gloo processes against a real cbloss-server:
with --stats shared the one run's seen counts are exactly the label counts
of both workers' batches (one epoch of the Fashion-MNIST-LT split at
imbalance 100: the split's class counts, worked out by hand); with
--stats per-worker each worker's run holds exactly its own shard's counts."""

import json
import os
import subprocess
import sys
import unittest

from server_process import ServerTestCase

_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir, os.pardir))
EXAMPLE = os.path.join(_ROOT, "examples", "ddp_seesaw.py")
DATA = "/usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz"
COUNTS_100 = [6000, 3596, 2156, 1292, 774, 464, 278, 166, 100, 60]  # 14886, even
BATCH = 64


class DdpSeesawTest(ServerTestCase):

    def ddp(self, stats):
        if not os.path.exists(DATA):
            self.fail("%s is missing: install dataset-fashion-mnist "
                      "(scripts/install-deps.sh --test-extras)" % DATA)
        run = subprocess.run(
            [sys.executable, EXAMPLE, "--target", self.server.target, "--stats", stats,
             "--world-size", "2", "--epochs", "1", "--batch", str(BATCH),
             "--run", "ddp-" + stats], capture_output=True, text=True, timeout=240)
        self.assertEqual(run.returncode, 0, run.stdout + run.stderr)
        lines = [l for l in run.stdout.splitlines() if l.startswith("{")]
        self.assertEqual(len(lines), 1, run.stdout)
        return json.loads(lines[0])

    def test_shared_run_sees_the_global_label_counts(self):
        out = self.ddp("shared")
        workers = out["worker_label_counts"]
        self.assertEqual(len(workers), 2)
        global_counts = [a + b for a, b in zip(*workers)]
        self.assertEqual(global_counts, COUNTS_100)
        run = self.client.get_run("ddp-shared")
        self.assertEqual(run.statistics.seen_counts, global_counts)
        self.assertEqual(run.statistics.background_seen, 0)
        # One accumulating request per batch of each worker (7443 rows each).
        self.assertEqual(run.version, 1 + 2 * ((sum(COUNTS_100) // 2 + BATCH - 1) // BATCH))
        self.assertEqual(out["runs"]["ddp-shared"]["seen_counts"], COUNTS_100)

    def test_per_worker_runs_each_see_only_their_shard(self):
        out = self.ddp("per-worker")
        workers = out["worker_label_counts"]
        self.assertEqual([a + b for a, b in zip(*workers)], COUNTS_100)
        for rank in range(2):
            run = self.client.get_run("ddp-per-worker-w%d" % rank)
            self.assertEqual(run.statistics.seen_counts, workers[rank])
            self.assertEqual(sum(run.statistics.seen_counts), sum(COUNTS_100) // 2)
            self.assertNotEqual(run.statistics.seen_counts, COUNTS_100)


if __name__ == "__main__":
    unittest.main()
