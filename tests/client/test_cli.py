"""The `cbloss` CLI (API.md section 4) run as a user runs it: a subprocess
against a real cbloss-server on 127.0.0.1, inputs written by NumPy, numbers
checked against a float64 torch reference of LOSS.md.

    /usr/bin/python3 -m unittest -v test_cli      (from tests/client/)
"""

import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import unittest

import numpy as np
import torch

import cli_support as cs


class CliTestBase(unittest.TestCase):
    """One server (with the sample datasets) and a work directory holding the
    seed example as z.npy (float32), y.npy (int64), z.csv, z16.npy."""

    @classmethod
    def setUpClass(cls):
        cls.server = cs.Server().start()
        cls.dir = tempfile.mkdtemp(prefix="cbloss-cli-files-")
        cls.seed, cls.z, cls.y, cls.counts = cs.load_seed()
        np.save(cls.path("z.npy"), cls.z)
        np.save(cls.path("y.npy"), cls.y)
        np.save(cls.path("y32.npy"), cls.y.astype(np.int32))
        np.savetxt(cls.path("z.csv"), cls.z.astype(np.float64), delimiter=",", fmt="%.9g")
        np.save(cls.path("z16.npy"), cls.z.astype(np.float16))
        np.save(cls.path("z64.npy"), cls.z.astype(np.float64))
        cls.labels_list = ",".join(str(int(v)) for v in cls.y)
        cls.counts_list = ",".join(str(n) for n in cls.counts)

    @classmethod
    def tearDownClass(cls):
        cls.server.close()
        shutil.rmtree(cls.dir, ignore_errors=True)

    @classmethod
    def path(cls, name):
        return os.path.join(cls.dir, name)

    def setUp(self):
        self._log_at_start = len(self.server.log())

    def cli(self, *args, **kwargs):
        kwargs.setdefault("target", self.server.target)
        return cs.run_cli(list(args), **kwargs)

    def ok_json(self, *args, **kwargs):
        """Runs with --json; asserts exit 0, nothing on stderr, and exactly one
        JSON document on stdout, which it returns."""
        r = self.cli("--json", *args, **kwargs)
        self.assertEqual(r.returncode, 0, "cbloss %s\nstderr: %s\nserver log:\n%s"
                         % (" ".join(args), r.stderr, self.server.log()[self._log_at_start:]))
        self.assertEqual(r.stderr, "")
        self.assertEqual(r.stdout.count("\n"), 1, r.stdout)
        return json.loads(r.stdout)

    def assert_fails(self, r, code_name):
        """A failed command: non-zero exit, nothing on stdout, one line on
        stderr naming the status code."""
        self.assertNotEqual(r.returncode, 0, r.stdout)
        self.assertEqual(r.stdout, "")
        lines = r.stderr.splitlines()
        self.assertEqual(len(lines), 1, r.stderr)
        self.assertIn(code_name, lines[0])
        return lines[0]

    def seed_loss_args(self, logits="z.npy", labels="y.npy"):
        return ["loss", "--counts", self.counts_list, "--beta", "0.9999", "--gamma", "2",
                "--loss", "focal", "--logits", self.path(logits),
                "--labels", self.path(labels) if labels.endswith((".npy", ".csv")) else labels]


class LossCommandTest(CliTestBase):

    def test_seed_example_from_npy(self):
        out = self.ok_json(*self.seed_loss_args())
        self.assertAlmostEqual(out["loss"], cs.SEED_LOSS, delta=1e-5)
        self.assertEqual(out["num_samples"], 10)
        np.testing.assert_allclose(out["class_weights"],
                                   self.seed["expected"]["class_weights"], atol=1e-8)
        self.assertEqual(out["resolved_config"]["loss_type"], "LOSS_TYPE_FOCAL")
        self.assertNotIn("dataset_version", out)  # inline counts

    def test_target_from_environment(self):
        out = self.ok_json(*self.seed_loss_args(), target=None,
                           env_target=self.server.target)
        self.assertAlmostEqual(out["loss"], cs.SEED_LOSS, delta=1e-5)

    def test_target_flag_wins_over_environment(self):
        dead = "127.0.0.1:%d" % cs.free_port()
        out = self.ok_json(*self.seed_loss_args(), target=self.server.target,
                           env_target=dead)
        self.assertAlmostEqual(out["loss"], cs.SEED_LOSS, delta=1e-5)

    def test_seed_example_from_csv_and_a_label_list(self):
        out = self.ok_json(*self.seed_loss_args("z.csv", self.labels_list))
        self.assertAlmostEqual(out["loss"], cs.SEED_LOSS, delta=1e-5)

    def test_int32_labels_file(self):
        out = self.ok_json(*self.seed_loss_args(labels="y32.npy"))
        self.assertAlmostEqual(out["loss"], cs.SEED_LOSS, delta=1e-5)

    def test_float16_logits(self):
        # The reference uses the float16 values actually sent.
        z16 = np.load(self.path("z16.npy")).astype(np.float32)
        ref, _, _ = cs.focal_reference(z16, self.y, self.counts)
        out = self.ok_json(*self.seed_loss_args("z16.npy"))
        cs.assert_loss_close(self, out["loss"], ref)
        self.assertNotAlmostEqual(out["loss"], cs.SEED_LOSS, delta=1e-6,
                                  msg="float16 rounding should show")

    def test_gradient_out_matches_torch_autograd(self):
        g_path = self.path("g.npy")
        out = self.ok_json(*self.seed_loss_args(), "--gradient-out", g_path)
        self.assertEqual(out["gradient_out"], g_path)
        g = np.load(g_path)
        self.assertEqual(g.dtype, np.float32)
        self.assertEqual(g.shape, (10, 5))
        ref_loss, _, ref_grad = cs.focal_reference(self.z, self.y, self.counts)
        cs.assert_loss_close(self, out["loss"], ref_loss)
        cs.assert_gradient_close(self, g, ref_grad)

    def test_gradient_out_csv(self):
        g_path = self.path("g.csv")
        self.ok_json(*self.seed_loss_args(), "--gradient-out", g_path)
        g = np.loadtxt(g_path, delimiter=",", ndmin=2)
        _, _, ref_grad = cs.focal_reference(self.z, self.y, self.counts)
        cs.assert_gradient_close(self, g, ref_grad)

    def test_gradient_dtype_f16_and_bf16(self):
        # The service rounds the float32 gradient to nearest even; NumPy's
        # float16 and torch's bfloat16 conversions are the independent check.
        f32_path, f16_path, bf16_path = self.path("g32.npy"), self.path("g16.npy"), self.path("gbf.npy")
        self.ok_json(*self.seed_loss_args(), "--gradient-out", f32_path)
        self.ok_json(*self.seed_loss_args(), "--gradient-out", f16_path, "--gradient-dtype", "f16")
        self.ok_json(*self.seed_loss_args(), "--gradient-out", bf16_path, "--gradient-dtype", "bf16")
        g32 = np.load(f32_path)
        g16 = np.load(f16_path)
        self.assertEqual(g16.dtype, np.float16)
        np.testing.assert_array_equal(g16, g32.astype(np.float16))
        gbf = np.load(bf16_path)
        self.assertEqual(gbf.dtype, np.float32)
        import torch
        want = torch.from_numpy(g32).to(torch.bfloat16).to(torch.float32).numpy()
        np.testing.assert_array_equal(gbf, want)

    def test_reduction_none_with_per_sample_losses_and_sample_weights(self):
        weights = [1.0, 0.5, 2.0, 0.0, 1.0, 1.5, 1.0, 0.25, 3.0, 1.0]
        out = self.ok_json(*self.seed_loss_args(), "--reduction", "none", "--per-sample",
                           "--sample-weights", ",".join(str(w) for w in weights))
        ref, ref_per_sample, _ = cs.focal_reference(self.z, self.y, self.counts,
                                                    reduction="none",
                                                    sample_weights=weights)
        cs.assert_loss_close(self, out["loss"], ref)
        self.assertEqual(len(out["per_sample_losses"]), 10)
        for i, (got, want) in enumerate(zip(out["per_sample_losses"], ref_per_sample)):
            cs.assert_loss_close(self, got, want, "per_sample_losses[%d]" % i)

    def test_ignore_index(self):
        y = self.y.copy()
        y[[1, 6]] = 7
        np.save(self.path("y_ignore.npy"), y)
        out = self.ok_json(*self.seed_loss_args(labels="y_ignore.npy"), "--ignore-index", "7")
        keep = np.array([i for i in range(10) if i not in (1, 6)])
        ref, _, _ = cs.focal_reference(self.z[keep], self.y[keep], self.counts)
        cs.assert_loss_close(self, out["loss"], ref)
        self.assertEqual(out["num_samples"], 8)

    def test_multi_hot_targets_with_sigmoid(self):
        rng = np.random.default_rng(5)
        t = (rng.random((10, 5)) < 0.3).astype(np.float32)
        np.save(self.path("t.npy"), t)
        out = self.ok_json("loss", "--counts", self.counts_list, "--loss", "sigmoid",
                           "--logits", self.path("z.npy"), "--targets", self.path("t.npy"))
        z = torch.tensor(self.z.astype(np.float64))
        tt = torch.tensor(t.astype(np.float64))
        w = cs.class_weights(self.counts)
        omega = w[None, :].expand(10, -1)  # targets mode: class-wise weights
        l = (omega * (torch.nn.functional.softplus(z) - tt * z)).sum()
        cs.assert_loss_close(self, out["loss"], float(l / tt.sum()))

    def test_loss_from_a_stored_dataset(self):
        self.ok_json("datasets", "put", "seed-example", "--counts", self.counts_list,
                     "--loss", "focal", "--beta", "0.9999", "--gamma", "2")
        out = self.ok_json("loss", "--dataset", "seed-example",
                           "--logits", self.path("z.npy"), "--labels", self.path("y.npy"))
        self.assertAlmostEqual(out["loss"], cs.SEED_LOSS, delta=1e-5)
        self.assertGreaterEqual(out["dataset_version"], 1)

    def test_section_9_losses(self):
        for loss, flags, params in (
                ("balanced_softmax", [], {}),
                ("logit_adjusted", ["--tau", "1.5"], {"tau": 1.5}),
                ("ldam", ["--max-margin", "0.3", "--scale", "10"],
                 {"max_margin": 0.3, "scale": 10.0})):
            with self.subTest(loss=loss):
                out = self.ok_json("loss", "--counts", self.counts_list, "--loss", loss,
                                   "--logits", self.path("z.npy"),
                                   "--labels", self.path("y.npy"), *flags)
                ref = cs.shifted_softmax_reference(self.z, self.y, self.counts, loss,
                                                   **params)
                cs.assert_loss_close(self, out["loss"], ref)
                for key, value in params.items():
                    self.assertEqual(out["resolved_config"][key], value)

    def test_deferred_reweighting_by_epoch(self):
        self.ok_json("datasets", "put", "drw", "--counts", self.counts_list,
                     "--loss", "softmax", "--drw-start-epoch", "3")
        args = ["loss", "--dataset", "drw", "--logits", self.path("z.npy"),
                "--labels", self.path("y.npy")]
        before = self.ok_json(*args, "--epoch", "2")
        self.assertEqual(before["class_weights"], [1.0] * 5)
        cs.assert_loss_close(self, before["loss"], cs.shifted_softmax_reference(
            self.z, self.y, self.counts, "softmax", weights=[1.0] * 5))
        for extra in (["--epoch", "3"], []):  # from the start epoch, or no epoch
            with self.subTest(extra=extra):
                after = self.ok_json(*args, *extra)
                np.testing.assert_allclose(after["class_weights"],
                                           self.seed["expected"]["class_weights"],
                                           atol=1e-8)
                cs.assert_loss_close(self, after["loss"], cs.shifted_softmax_reference(
                    self.z, self.y, self.counts, "softmax"))

    def test_text_output(self):
        r = self.cli(*self.seed_loss_args())
        self.assertEqual(r.returncode, 0, r.stderr)
        first = r.stdout.splitlines()[0].split()
        self.assertEqual(first[0], "loss")
        self.assertAlmostEqual(float(first[1]), cs.SEED_LOSS, delta=1e-5)


class DatasetCommandsTest(CliTestBase):

    def test_put_get_list_add_counts_delete(self):
        put = self.ok_json("datasets", "put", "pets", "--counts", "50,30,2",
                           "--names", "cat,dog,axolotl", "--loss", "focal",
                           "--reduction", "sum", "--beta", "0.99", "--gamma", "0.5",
                           "--scheme", "inverse_sqrt_frequency", "--ignore-index", "-1")
        self.assertEqual(put["name"], "pets")
        self.assertEqual(put["version"], 1)
        self.assertEqual(put["class_counts"], [50, 30, 2])
        self.assertEqual(put["class_names"], ["cat", "dog", "axolotl"])
        self.assertEqual(put["defaults"], {
            "loss_type": "LOSS_TYPE_FOCAL", "reduction": "REDUCTION_SUM", "beta": 0.99,
            "gamma": 0.5, "weighting": "WEIGHTING_SCHEME_INVERSE_SQRT_FREQUENCY",
            "ignore_index": -1})

        got = self.ok_json("datasets", "get", "pets")
        self.assertEqual(got["class_counts"], [50, 30, 2])
        self.assertEqual(got["version"], 1)

        listed = self.ok_json("datasets", "list")
        names = [d["name"] for d in listed["datasets"]]
        self.assertIn("pets", names)
        self.assertIn("cifar10-lt", names)  # from --datasets_file
        self.assertEqual(names, sorted(names))

        added = self.ok_json("datasets", "add-counts", "pets", "--deltas", "-10,0,3")
        self.assertEqual(added["class_counts"], [40, 30, 5])
        self.assertEqual(added["version"], 2)
        added = self.ok_json("datasets", "add-counts", "pets", "--labels", "2,2,0")
        self.assertEqual(added["class_counts"], [41, 30, 7])
        np.save(self.path("new_labels.npy"), np.array([1, 1, 1], dtype=np.int64))
        added = self.ok_json("datasets", "add-counts", "pets",
                             "--labels", self.path("new_labels.npy"))
        self.assertEqual(added["class_counts"], [41, 33, 7])
        both = self.ok_json("datasets", "add-counts", "pets", "--deltas", "1,1,1",
                            "--labels", "0")
        self.assertEqual(both["class_counts"], [43, 34, 8])
        self.assertEqual(both["version"], 5)

        deleted = self.ok_json("datasets", "delete", "pets")
        self.assertEqual(deleted, {"deleted": "pets"})
        self.assert_fails(self.cli("--json", "datasets", "get", "pets"), "NOT_FOUND")

    def test_expected_version(self):
        self.ok_json("datasets", "put", "guarded", "--counts", "1,2",
                     "--expected-version", "0")
        line = self.assert_fails(
            self.cli("--json", "datasets", "put", "guarded", "--counts", "1,2",
                     "--expected-version", "0"), "ABORTED")
        self.assertIn("cbloss:", line)
        self.ok_json("datasets", "put", "guarded", "--counts", "1,3",
                     "--expected-version", "1")
        self.assert_fails(self.cli("--json", "datasets", "delete", "guarded",
                                   "--expected-version", "1"), "ABORTED")
        self.ok_json("datasets", "delete", "guarded", "--expected-version", "2")

    def test_add_counts_needs_deltas_or_labels(self):
        self.ok_json("datasets", "put", "needs", "--counts", "1,2")
        r = self.cli("--json", "datasets", "add-counts", "needs")
        self.assertNotEqual(r.returncode, 0)
        self.assertEqual(r.stdout, "")

    def test_add_counts_below_zero_is_refused(self):
        self.ok_json("datasets", "put", "floor", "--counts", "1,2")
        r = self.cli("--json", "datasets", "add-counts", "floor", "--deltas", "-2,0")
        self.assertNotEqual(r.returncode, 0)
        self.assertEqual(r.stdout, "")
        self.assertIn("class_counts[0]", r.stderr)
        self.assertEqual(self.ok_json("datasets", "get", "floor")["class_counts"], [1, 2])

    def test_text_output_of_get(self):
        r = self.cli("datasets", "get", "cifar10-lt")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("name:     cifar10-lt", r.stdout)
        self.assertIn("airplane", r.stdout)


class WeightsCommandTest(CliTestBase):

    def test_weights_from_counts(self):
        out = self.ok_json("weights", "--counts", "2,3,1,2,2", "--beta", "0.9999")
        np.testing.assert_allclose(out["weights"],
                                   [0.88236332, 0.58827163, 1.76463841, 0.88236332,
                                    0.88236332], atol=1e-8)
        self.assertNotIn("dataset_version", out)

    def test_weights_scheme(self):
        out = self.ok_json("weights", "--counts", "10,1,0,4", "--scheme", "inverse_frequency")
        ref = cs.class_weights([10, 1, 0, 4], scheme="inverse_frequency").numpy()
        np.testing.assert_allclose(out["weights"], ref, rtol=1e-12)
        self.assertEqual(out["weights"][2], 0.0)

    def test_weights_from_a_dataset(self):
        out = self.ok_json("weights", "--dataset", "cifar10-lt")
        with open(cs.SAMPLE_DATASETS) as f:
            sample = json.load(f)["datasets"][0]
        counts = [int(n) for n in sample["classCounts"]]
        ref = cs.class_weights(counts, beta=sample["defaults"]["beta"]).numpy()
        np.testing.assert_allclose(out["weights"], ref, rtol=1e-10)
        self.assertGreaterEqual(out["dataset_version"], 1)
        # A request override of beta.
        out = self.ok_json("weights", "--dataset", "cifar10-lt", "--beta", "0")
        np.testing.assert_allclose(out["weights"], np.ones(10), rtol=1e-12)


class HealthAndBenchTest(CliTestBase):

    def test_health(self):
        self.assertEqual(self.ok_json("health"), {"status": "SERVING"})
        r = self.cli("health")
        self.assertEqual((r.returncode, r.stdout), (0, "SERVING\n"))

    def test_bench_on_a_healthy_server(self):
        start = time.monotonic()
        out = self.ok_json("bench", "--duration", "1.5", "--concurrency", "2",
                           "--counts", "2,3,1,2,2", "--batch", "64")
        elapsed = time.monotonic() - start
        for key in ("requests", "errors", "rps", "p50_us", "p90_us", "p99_us"):
            self.assertIn(key, out)
        self.assertEqual(out["errors"], 0, out.get("error_samples"))
        self.assertGreater(out["requests"], 10)
        self.assertGreater(out["rps"], 0)
        self.assertLessEqual(out["p50_us"], out["p90_us"])
        self.assertLessEqual(out["p90_us"], out["p99_us"])
        self.assertGreater(out["p50_us"], 0)
        self.assertLess(elapsed, 10)

    def test_bench_with_a_dataset_and_bf16(self):
        out = self.ok_json("bench", "--duration", "0.5", "--concurrency", "1",
                           "--dataset", "cifar10-lt", "--dtype", "bf16", "--batch", "16")
        self.assertEqual(out["errors"], 0, out.get("error_samples"))
        self.assertGreater(out["requests"], 0)


class HelpTest(unittest.TestCase):

    COMMANDS = [[], ["health"], ["datasets"], ["datasets", "put"], ["datasets", "get"],
                ["datasets", "list"], ["datasets", "delete"], ["datasets", "add-counts"],
                ["weights"], ["loss"], ["bench"]]

    def test_every_help_exits_zero(self):
        for command in self.COMMANDS:
            with self.subTest(command=command):
                r = cs.run_cli(command + ["--help"], timeout=10)
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertIn("Usage:", r.stdout)

    def test_no_command_is_a_usage_error(self):
        r = cs.run_cli([], timeout=10)
        self.assertNotEqual(r.returncode, 0)


class ErrorsTest(CliTestBase):

    def test_unknown_dataset(self):
        for args in (["datasets", "get", "no-such"], ["datasets", "delete", "no-such"],
                     ["weights", "--dataset", "no-such"],
                     ["loss", "--dataset", "no-such", "--logits", self.path("z.npy"),
                      "--labels", self.path("y.npy")]):
            with self.subTest(args=args):
                r = self.cli("--json", *args)
                line = self.assert_fails(r, "NOT_FOUND")
                self.assertIn("no-such", line)
                self.assertEqual(r.returncode, 6)  # NOT_FOUND (5) + 1

    def test_float64_logits_name_the_dtype(self):
        r = self.cli("--json", *self.seed_loss_args("z64.npy"))
        line = self.assert_fails(r, "INVALID_ARGUMENT")
        self.assertTrue("<f8" in line or "float64" in line, line)

    def test_missing_logits_file(self):
        r = self.cli("--json", *self.seed_loss_args("does_not_exist.npy"))
        line = self.assert_fails(r, "NOT_FOUND")
        self.assertIn("does_not_exist.npy", line)

    def test_invalid_input_names_the_index(self):
        y = self.y.copy()
        y[4] = 9
        np.save(self.path("y_bad.npy"), y)
        line = self.assert_fails(self.cli("--json", *self.seed_loss_args(labels="y_bad.npy")),
                                 "INVALID_ARGUMENT")
        self.assertIn("labels[4]", line)

    def test_batch_and_class_mismatch(self):
        line = self.assert_fails(self.cli("--json", *self.seed_loss_args(labels="0,1,2")),
                                 "INVALID_ARGUMENT")
        self.assertIn("labels", line)

    def test_unknown_enum_names(self):
        line = self.assert_fails(self.cli("--json", *self.seed_loss_args(), "--reduction",
                                          "median"), "INVALID_ARGUMENT")
        self.assertIn("median", line)
        self.assert_fails(self.cli("--json", "weights", "--counts", "1,2", "--scheme",
                                   "magic"), "INVALID_ARGUMENT")

    def test_usage_errors_exit_non_zero(self):
        for args in (["loss", "--counts", "1,2", "--labels", "0"],  # no --logits
                     ["loss", "--counts", "1,2", "--logits", self.path("z.npy")],  # no labels
                     ["loss", "--dataset", "a", "--counts", "1,2", "--logits",
                      self.path("z.npy"), "--labels", "0"],
                     ["weights"], ["datasets", "put", "x"], ["frobnicate"]):
            with self.subTest(args=args):
                r = self.cli("--json", *args)
                self.assertNotEqual(r.returncode, 0)
                self.assertEqual(r.stdout, "")

    def test_server_down_fails_within_the_timeout(self):
        dead = "127.0.0.1:%d" % cs.free_port()
        for args in (["health"], ["datasets", "list"], ["datasets", "put", "x", "--counts", "1"],
                     self.seed_loss_args()):
            with self.subTest(args=args):
                start = time.monotonic()
                r = cs.run_cli(["--timeout", "2", "--json"] + args, target=dead, timeout=30)
                elapsed = time.monotonic() - start
                self.assertNotEqual(r.returncode, 0)
                self.assertIn("UNAVAILABLE", r.stderr)
                self.assertLess(elapsed, 6)


class HungServerTest(unittest.TestCase):
    """A server that accepts connections and never answers (SIGSTOP):
    --timeout bounds every command."""

    def setUp(self):
        self.server = cs.Server(sample_datasets=False).start()
        self.server.pause()

    def tearDown(self):
        self.server.close()

    def check_bounded(self, args):
        start = time.monotonic()
        r = cs.run_cli(["--timeout", "1", "--json"] + args, target=self.server.target,
                       timeout=30)
        elapsed = time.monotonic() - start
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("DEADLINE_EXCEEDED", r.stderr)
        self.assertLess(elapsed, 3, "--timeout 1 took %.1f s" % elapsed)

    def test_datasets_get(self):
        self.check_bounded(["datasets", "get", "x"])

    def test_health(self):
        self.check_bounded(["health"])


class BenchAgainstADyingServerTest(unittest.TestCase):

    def test_bench_survives_the_server_being_killed(self):
        server = cs.Server(sample_datasets=False).start()
        try:
            duration = 4.0
            killer = threading.Timer(1.5, server.kill)
            start = time.monotonic()
            killer.start()
            r = cs.run_cli(["--json", "bench", "--duration", str(duration),
                            "--concurrency", "2", "--counts", "5,3,1", "--batch", "16"],
                           target=server.target, timeout=60)
            elapsed = time.monotonic() - start
            killer.join()
        finally:
            server.close()
        self.assertEqual(r.returncode, 0, r.stderr)
        out = json.loads(r.stdout)
        self.assertGreater(out["errors"], 0)
        self.assertGreater(out["requests"], out["errors"], "calls before the kill succeed")
        self.assertGreaterEqual(elapsed, duration - 0.1)
        # Ends at --duration plus at most one per-call deadline (5 s).
        self.assertLess(elapsed, duration + 6.5)
        self.assertTrue(out["error_samples"])
        self.assertTrue(any("UNAVAILABLE" in e for e in out["error_samples"]),
                        out["error_samples"])


if __name__ == "__main__":
    unittest.main()
