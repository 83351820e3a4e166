"""`cbloss --target unix:/path` (API.md section 5.3): every command over a
Unix domain socket of a real cbloss-server (listening on 127.0.0.1 too, to
compare), with --allow_shared_memory on (the CLI sends bytes all the same).
Numbers against the float64 torch reference of cli_support.py; the gradient
file must be byte-identical to the one the TCP port gives.

    /usr/bin/python3 -m unittest -v test_cli_unix      (from tests/client/)
"""

import json
import os
import shutil
import tempfile
import unittest

import numpy as np

import cli_support as cs


class UnixServer(cs.ServerProcess):
    """cli_support.Server plus a Unix socket in its folder."""

    def __init__(self):
        workdir = tempfile.mkdtemp(prefix="cbloss-cli-unix-")
        self.socket_path = os.path.join(workdir, "cbloss.sock")
        super().__init__(workdir=workdir, datasets_file=cs.SAMPLE_DATASETS,
                         extra_flags=["--shutdown_grace_seconds=5",
                                      "--listen=unix:" + self.socket_path,
                                      "--allow_shared_memory"],
                         name="cli-unix")

    def close(self):
        super().close()
        shutil.rmtree(self.workdir, ignore_errors=True)


class CliOverUnixSocketTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.server = UnixServer().start()
        cls.unix = "unix:" + cls.server.socket_path
        cls.dir = tempfile.mkdtemp(prefix="cbloss-cli-unix-files-")
        cls.seed, cls.z, cls.y, cls.counts = cs.load_seed()
        np.save(cls.path("z.npy"), cls.z)
        np.save(cls.path("y.npy"), cls.y)

    @classmethod
    def tearDownClass(cls):
        cls.server.close()
        shutil.rmtree(cls.dir, ignore_errors=True)

    @classmethod
    def path(cls, name):
        return os.path.join(cls.dir, name)

    def run_ok(self, *args, target=None, env_target=None):
        r = cs.run_cli(list(args), target=target, env_target=env_target)
        self.assertEqual(r.returncode, 0, "cbloss %s: %s" % (" ".join(args), r.stderr))
        self.assertEqual(r.stderr, "")
        return r.stdout

    def json_ok(self, *args, target=None, env_target=None):
        return json.loads(self.run_ok("--json", *args, target=target, env_target=env_target))

    def test_health(self):
        self.assertEqual(self.run_ok("health", target=self.unix), "SERVING\n")
        self.assertEqual(self.json_ok("health", env_target=self.unix), {"status": "SERVING"})

    def test_datasets_put_get_list_delete(self):
        put = self.json_ok("datasets", "put", "unix-ds", "--counts", "50,30,20", "--loss",
                           "focal", target=self.unix)
        self.assertEqual(put["version"], 1)
        self.assertEqual(put["class_counts"], [50, 30, 20])
        got = self.json_ok("datasets", "get", "unix-ds", target=self.unix)
        self.assertEqual(got["class_counts"], [50, 30, 20])
        self.assertEqual(got["defaults"]["loss_type"], "LOSS_TYPE_FOCAL")
        # The same store answers on the TCP port.
        tcp = self.json_ok("datasets", "get", "unix-ds", target=self.server.target)
        self.assertEqual(tcp["class_counts"], [50, 30, 20])
        names = [d["name"] for d in self.json_ok("datasets", "list",
                                                 target=self.unix)["datasets"]]
        self.assertIn("unix-ds", names)
        self.run_ok("datasets", "delete", "unix-ds", target=self.unix)
        r = cs.run_cli(["datasets", "get", "unix-ds"], target=self.unix)
        self.assertEqual(r.returncode, 6, r.stderr)  # NOT_FOUND + 1

    def loss_args(self, gradient_out):
        return ["loss", "--counts", ",".join(str(n) for n in self.counts), "--loss", "focal",
                "--beta", "0.9999", "--gamma", "2", "--logits", self.path("z.npy"),
                "--labels", self.path("y.npy"), "--gradient-out", gradient_out]

    def test_loss_with_gradient_out(self):
        unix_path, tcp_path = self.path("g-unix.npy"), self.path("g-tcp.npy")
        out = self.json_ok(*self.loss_args(unix_path), target=self.unix)
        ref_loss, _, ref_grad = cs.focal_reference(self.z, self.y, self.counts)
        cs.assert_loss_close(self, out["loss"], ref_loss)
        g = np.load(unix_path)
        self.assertEqual(g.dtype, np.float32)
        cs.assert_gradient_close(self, g, ref_grad)
        tcp = self.json_ok(*self.loss_args(tcp_path), target=self.server.target)
        self.assertEqual(out["loss"], tcp["loss"])
        with open(unix_path, "rb") as a, open(tcp_path, "rb") as b:
            self.assertEqual(a.read(), b.read())

    def test_weights(self):
        out = self.json_ok("weights", "--counts", "2,3,1,2,2", "--beta", "0.9999",
                           target=self.unix)
        want = cs.class_weights([2, 3, 1, 2, 2], 0.9999).numpy()
        np.testing.assert_allclose(out["weights"], want, rtol=1e-7)

    def test_a_socket_nobody_listens_on_is_unavailable(self):
        r = cs.run_cli(["--timeout", "5", "health"],
                       target="unix:" + self.path("nobody.sock"))
        self.assertEqual(r.returncode, 15, r.stderr)  # UNAVAILABLE + 1
        self.assertIn("UNAVAILABLE", r.stderr)


if __name__ == "__main__":
    unittest.main()
