"""examples/colocated_training.py against a real cbloss-server on a Unix
socket with --allow_shared_memory (docs/SHARED_MEMORY.md): the unchanged
training loop, given only a `unix:` target, moves its tensors through shared
memory.

How the test knows. The server runs with --max_message_mb=1 and the batches
are 512 x 1000 float32 logits (2,048,000 bytes, and a gradient of the same
size): no such request or response fits in a message. The same command
against the server's TCP port therefore fails with RESOURCE_EXHAUSTED (shown
here, so the cap is known to bite), and over the socket it can only succeed
by sending references. The server's own counters confirm it: one
RegisterSharedMemory and one ComputeLoss per step, all OK, and once the
trainer has exited its region is gone (released with its connection).
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.abspath(os.path.join(_HERE, os.pardir, os.pardir))
sys.path.insert(0, os.path.join(_ROOT, "tests", "server"))

from prod_support import ProdServer, parse_metrics, sample  # noqa: E402

EXAMPLE = os.path.join(_ROOT, "examples", "colocated_training.py")
STEPS = 4
# 512 * 1000 * 4 bytes of logits: about twice --max_message_mb=1.
ARGS = ["--classes", "1000", "--batch", "512", "--steps", str(STEPS), "--log_every", "1",
        "--n_max", "60"]


class ColocatedTrainingExampleTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.workdir = tempfile.mkdtemp(prefix="cbloss-colocated-")
        # A short path: a socket path has at most 107 bytes.
        cls.socket_dir = tempfile.mkdtemp(prefix="cbl-")
        cls.socket = os.path.join(cls.socket_dir, "cbloss.sock")
        cls.server = ProdServer(cls.workdir, name="colocated", metrics=True, extra_flags=[
            "--listen=unix:" + cls.socket, "--allow_shared_memory", "--max_message_mb=1"])
        try:
            cls.server.start()
        except BaseException:
            cls.server.close()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.server.close()
        shutil.rmtree(cls.workdir, True)
        shutil.rmtree(cls.socket_dir, True)
        super().tearDownClass()

    def metrics(self):
        return parse_metrics(self.server.scrape()[0])

    def calls(self, samples, method, code="OK"):
        return sample(samples, "cbloss_requests_total", method=method, code=code)

    def run_example(self, extra_args, env_target=None):
        env = dict(os.environ)
        env.pop("CBLOSS_TARGET", None)
        if env_target is not None:
            env["CBLOSS_TARGET"] = env_target
        return subprocess.run([sys.executable, EXAMPLE] + ARGS + extra_args, env=env,
                              capture_output=True, text=True, timeout=180)

    def assert_trained(self, run):
        self.assertEqual(run.returncode, 0, run.stdout + run.stderr)
        losses = [float(x) for x in re.findall(r"^step \d+ loss (\S+)$", run.stdout, re.M)]
        self.assertEqual(len(losses), STEPS, run.stdout)
        self.assertRegex(run.stdout, r"balanced test accuracy \d\.\d{4}")

    def wait_released(self):
        """The trainer's region and connection, gone once it exited."""
        deadline = time.monotonic() + 10
        while True:
            m = self.metrics()
            if (sample(m, "cbloss_shared_memory_regions") == 0
                    and sample(m, "cbloss_unix_connections") == 0) or time.monotonic() > deadline:
                return m
            time.sleep(0.05)

    def test_unix_target_uses_shared_memory_and_tcp_hits_the_message_cap(self):
        before = self.metrics()
        # CBLOSS_TARGET, as in deploy/k8s/sidecar.
        run = self.run_example([], env_target="unix:" + self.socket)
        self.assert_trained(run)
        after = self.wait_released()
        self.assertEqual(self.calls(after, "ComputeLoss") - self.calls(before, "ComputeLoss"),
                         STEPS)
        self.assertEqual(self.calls(after, "RegisterSharedMemory")
                         - self.calls(before, "RegisterSharedMemory"), 1)
        self.assertEqual(sample(after, "cbloss_shared_memory_regions"), 0)
        self.assertEqual(sample(after, "cbloss_shared_memory_mapped_bytes"), 0)
        self.assertEqual(sample(after, "cbloss_unix_connections"), 0)

        # --target wins over the variable and works the same way.
        run = self.run_example(["--target", "unix:" + self.socket],
                               env_target="127.0.0.1:%d" % self.server.port)
        self.assert_trained(run)
        again = self.wait_released()
        self.assertEqual(self.calls(again, "ComputeLoss") - self.calls(after, "ComputeLoss"),
                         STEPS)

        # The same command over TCP sends bytes and meets the 1 MiB cap.
        run = self.run_example(["--target", "127.0.0.1:%d" % self.server.port])
        self.assertNotEqual(run.returncode, 0, run.stdout)
        self.assertIn("RESOURCE_EXHAUSTED", run.stderr)
        tcp = self.metrics()
        self.assertEqual(self.calls(tcp, "ComputeLoss"), self.calls(again, "ComputeLoss"))
        self.assertEqual(self.calls(tcp, "RegisterSharedMemory"),
                         self.calls(again, "RegisterSharedMemory"))


if __name__ == "__main__":
    unittest.main()
