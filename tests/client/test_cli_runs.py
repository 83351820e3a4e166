"""`cbloss runs ...` and `cbloss loss --run R [--accumulate]` (API.md section
5.2, LOSS.md section 11) against a real cbloss-server: seen counts checked
against counts of the labels the test sent, EQL v2's P and Q against a float64
reference of LOSS.md section 10 written here.

    /usr/bin/python3 -m unittest -v test_cli_runs      (from tests/client/)
"""

import json
import os
import shutil
import tempfile
import unittest

import numpy as np

import cli_support as cs

IGNORE = -100
GOLDEN_SECTION10 = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "golden",
                                "golden_cases_section10.json")


def eqlv2_step(p, q, updates, z, y, gamma=12.0, mu=0.8, alpha=4.0):
    """LOSS.md section 10, EQL_V2, float64: the weights from the statistics
    before the batch, the batch's MEAN loss (D: rows not ignored, background
    included) and the new P, Q."""
    z = np.asarray(z, np.float64)
    c = z.shape[1]
    r = np.full(c, 100.0) if updates == 0 else p / (q + 1e-10)
    neg_w = 1.0 / (1.0 + np.exp(-gamma * (r - mu)))
    pos_w = 1.0 + alpha * (1.0 - neg_w)
    keep = y != IGNORE
    zk, yk = z[keep], y[keep]
    t = np.zeros_like(zk)
    fg = yk < c
    t[np.nonzero(fg)[0], yk[fg]] = 1.0
    e = pos_w[None, :] * t + neg_w[None, :] * (1 - t)
    softplus = np.maximum(zk, 0) + np.log1p(np.exp(-np.abs(zk)))
    loss = (e * (softplus - t * zk)).sum() / max(len(yk), 1)
    g = np.abs(1.0 / (1.0 + np.exp(-zk)) - t)
    return loss, p + (e * g * t).sum(axis=0), q + (e * g * (1 - t)).sum(axis=0)


def parse_table(stdout):
    """`runs get` text: ({header key: value}, [row fields])."""
    lines = stdout.splitlines()
    header, i = {}, 0
    while ":" in lines[i]:
        key, value = lines[i].split(":", 1)
        header[key.strip()] = value.strip()
        i += 1
    columns = lines[i].split()
    rows = [line.split() for line in lines[i + 1:]]
    return header, columns, rows


class RunsCliTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.server = cs.Server().start()
        cls.dir = tempfile.mkdtemp(prefix="cbloss-cli-runs-")

    @classmethod
    def tearDownClass(cls):
        cls.server.close()
        shutil.rmtree(cls.dir, ignore_errors=True)

    def path(self, name):
        return os.path.join(self.dir, name)

    def cli(self, *args):
        return cs.run_cli(list(args), target=self.server.target)

    def ok(self, *args):
        r = self.cli(*args)
        self.assertEqual(r.returncode, 0, "cbloss %s\nstderr: %s" % (" ".join(args), r.stderr))
        self.assertEqual(r.stderr, "")
        return r.stdout

    def ok_json(self, *args):
        return json.loads(self.ok("--json", *args))

    def batch(self, name, rng, rows, cols, background=False):
        """Random logits and labels (about 15% ignored) as .npy files."""
        z = rng.normal(0, 2, size=(rows, cols)).astype(np.float32)
        y = rng.integers(0, cols + 1 if background else cols, size=rows)
        y[rng.random(rows) < 0.15] = IGNORE
        np.save(self.path(name + "-z.npy"), z)
        np.save(self.path(name + "-y.npy"), y.astype(np.int64))
        return z, y, self.path(name + "-z.npy"), self.path(name + "-y.npy")

    def test_create_with_dataset_or_classes(self):
        run = self.ok_json("runs", "create", "cr-a", "--dataset", "cifar10-lt")
        self.assertEqual((run["name"], run["dataset"], run["num_classes"], run["version"]),
                         ("cr-a", "cifar10-lt", 10, 1))
        self.assertEqual(run["statistics"], {
            "seen_counts": [0] * 10, "background_seen": 0, "positive_gradient": [0.0] * 10,
            "negative_gradient": [0.0] * 10, "eqlv2_updates": 0})
        run = self.ok_json("runs", "create", "cr-b", "--classes", "4", "--loss", "seesaw",
                           "--seesaw-p", "0.5")
        self.assertEqual((run["num_classes"], run["version"]), (4, 1))
        self.assertNotIn("dataset", run)
        self.assertEqual(run["defaults"], {"loss_type": "LOSS_TYPE_SEESAW", "seesaw_p": 0.5})
        self.assertEqual(run["statistics"]["seen_counts"], [0] * 4)

        # Usage errors: neither, both.
        r = self.cli("runs", "create", "cr-c")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("give --dataset or --classes", r.stderr)
        r = self.cli("runs", "create", "cr-c", "--dataset", "cifar10-lt", "--classes", "10")
        self.assertNotEqual(r.returncode, 0)
        # Server errors: code + 1, one line on stderr.
        r = self.cli("runs", "create", "cr-a", "--classes", "3")
        self.assertEqual(r.returncode, 7)  # ALREADY_EXISTS
        self.assertEqual(r.stderr, "cbloss: ALREADY_EXISTS: run 'cr-a' already exists\n")
        r = self.cli("runs", "create", "cr-c", "--dataset", "no-such")
        self.assertEqual(r.returncode, 6)
        self.assertEqual(r.stderr, "cbloss: NOT_FOUND: dataset 'no-such' not found\n")
        r = self.cli("runs", "create", "cr-c", "--classes", "0")
        self.assertEqual(r.returncode, 4)
        self.assertEqual(r.stderr, "cbloss: INVALID_ARGUMENT: run.num_classes = 0: give "
                                   "run.dataset or run.num_classes >= 1\n")

    def test_get_shows_header_and_per_class_table(self):
        self.ok("runs", "create", "get-a", "--dataset", "cifar10-lt")
        header, columns, rows = parse_table(self.ok("runs", "get", "get-a"))
        self.assertEqual(header["name"], "get-a")
        self.assertEqual(header["dataset"], "cifar10-lt")
        self.assertEqual(header["classes"], "10")
        self.assertEqual(header["version"], "1")
        self.assertEqual(header["updates"], "0")
        self.assertEqual(columns, ["class", "name", "seen"])
        self.assertEqual([row[1] for row in rows][:3], ["airplane", "automobile", "bird"])
        self.assertEqual(rows, [[str(j), name, "0"] for j, name in enumerate(
            ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
             "truck"])])
        # No class names: no name column.
        self.ok("runs", "create", "get-b", "--dataset", "cifar100-lt")
        header, columns, rows = parse_table(self.ok("runs", "get", "get-b"))
        self.assertEqual(columns, ["class", "seen"])
        self.assertEqual(len(rows), 100)
        r = self.cli("runs", "get", "no-such")
        self.assertEqual(r.returncode, 6)
        self.assertEqual(r.stderr, "cbloss: NOT_FOUND: run 'no-such' not found\n")

    def test_list_with_dataset_filter(self):
        self.ok("datasets", "put", "ls-data", "--counts", "50,30,10,5,1")
        self.ok("runs", "create", "ls-1", "--dataset", "cifar100-lt")
        self.ok("runs", "create", "ls-2", "--dataset", "ls-data")
        self.ok("runs", "create", "ls-3", "--classes", "3")
        names = [r["name"] for r in self.ok_json("runs", "list")["runs"]]
        self.assertEqual(names, sorted(names))
        self.assertTrue({"ls-1", "ls-2", "ls-3"} <= set(names))
        only = self.ok_json("runs", "list", "--dataset", "ls-data")["runs"]
        self.assertEqual([r["name"] for r in only], ["ls-2"])
        self.assertEqual(only[0]["num_classes"], 5)
        self.assertEqual(self.ok_json("runs", "list", "--dataset", "no-such"), {"runs": []})
        lines = self.ok("runs", "list", "--dataset", "ls-data").splitlines()
        self.assertEqual(lines[0].split(), ["name", "dataset", "version", "classes", "defaults"])
        self.assertEqual(lines[1].split()[:4], ["ls-2", "ls-data", "1", "5"])
        self.assertEqual(len(lines), 2)

    def test_delete(self):
        self.ok("runs", "create", "del-a", "--classes", "2")
        r = self.cli("runs", "delete", "del-a", "--expected_version", "3")
        self.assertEqual(r.returncode, 11)  # ABORTED
        self.assertEqual(r.stderr,
                         "cbloss: ABORTED: run 'del-a' is at version 1, not expected_version 3\n")
        self.assertEqual(self.ok_json("runs", "delete", "del-a", "--expected-version", "1"),
                         {"deleted": "del-a"})
        r = self.cli("runs", "delete", "del-a")
        self.assertEqual(r.returncode, 6)  # NOT_FOUND
        self.assertEqual(r.stderr, "cbloss: NOT_FOUND: run 'del-a' not found\n")
        self.ok("runs", "create", "del-b", "--classes", "2")
        self.assertEqual(self.ok("runs", "delete", "del-b"), "deleted del-b\n")

    def test_loss_accumulate_then_get_shows_the_counts(self):
        self.ok("runs", "create", "acc", "--dataset", "cifar10-lt")
        rng = np.random.default_rng(3)
        seen = np.zeros(10, np.int64)
        version = 1
        for step in range(4):
            z, y, zp, yp = self.batch("acc%d" % step, rng, 40, 10)
            accumulate = step != 1  # one plain call in between: counts nothing
            out = self.ok_json("loss", "--run", "acc", "--logits", zp, "--labels", yp,
                               *(["--accumulate"] if accumulate else []))
            if accumulate:
                version += 1
                seen += np.bincount(y[y != IGNORE], minlength=10)
            self.assertEqual(out["run_version"], version)
            self.assertEqual(out["dataset_version"], 1)
        # With --dataset too (the run's dataset), text output.
        z, y, zp, yp = self.batch("acc-text", rng, 8, 10)
        text = self.ok("loss", "--dataset", "cifar10-lt", "--run", "acc", "--accumulate",
                       "--logits", zp, "--labels", yp)
        version += 1
        seen += np.bincount(y[y != IGNORE], minlength=10)
        self.assertIn("run_version  %d (accumulated)\n" % version, text)

        header, columns, rows = parse_table(self.ok("runs", "get", "acc"))
        self.assertEqual(header["version"], str(version))
        self.assertEqual(header["updates"], str(version - 1))
        self.assertEqual(columns, ["class", "name", "seen"])
        self.assertEqual([int(row[2]) for row in rows], seen.tolist())
        run = self.ok_json("runs", "get", "acc")
        self.assertEqual(run["statistics"]["seen_counts"], seen.tolist())
        self.assertEqual(run["version"], version)

        # Errors: exit code + 1, nothing changes.
        _, _, zp5, yp5 = self.batch("acc-bad", rng, 4, 5)
        r = self.cli("loss", "--run", "acc", "--accumulate", "--logits", zp5, "--labels", yp5)
        self.assertEqual(r.returncode, 4)
        self.assertEqual(r.stderr, "cbloss: INVALID_ARGUMENT: logits.shape[1] = 5 but run "
                                   "'acc' has 10 classes\n")
        r = self.cli("loss", "--dataset", "cifar10-lt", "--accumulate", "--logits", zp,
                     "--labels", yp)
        self.assertEqual(r.returncode, 4)
        self.assertEqual(r.stderr, "cbloss: INVALID_ARGUMENT: accumulate needs run: name the "
                                   "run whose statistics this request updates\n")
        r = self.cli("loss", "--run", "no-such", "--logits", zp, "--labels", yp)
        self.assertEqual(r.returncode, 6)
        self.assertEqual(r.stderr, "cbloss: NOT_FOUND: run 'no-such' not found\n")
        self.assertEqual(self.ok_json("runs", "get", "acc")["version"], version)

    def test_eqlv2_table_matches_the_float64_reference(self):
        c = 5
        self.ok("runs", "create", "eq", "--classes", str(c))
        rng = np.random.default_rng(11)
        p, q, updates = np.zeros(c), np.zeros(c), 0
        seen, background = np.zeros(c, np.int64), 0
        for step in range(4):
            z, y, zp, yp = self.batch("eq%d" % step, rng, 30, c, background=True)
            out = self.ok_json("loss", "--loss", "eql_v2", "--run", "eq", "--accumulate",
                               "--logits", zp, "--labels", yp)
            want, p, q = eqlv2_step(p, q, updates, z, y)
            updates += 1
            cs.assert_loss_close(self, out["loss"], want, "step %d loss" % step)
            self.assertEqual(out["run_version"], step + 2)
            fg = (y != IGNORE) & (y < c)
            seen += np.bincount(y[fg], minlength=c)
            background += int((y == c).sum())

        header, columns, rows = parse_table(self.ok("runs", "get", "eq"))
        self.assertEqual(header["dataset"], "(none)")
        self.assertEqual(header["background"], str(background))
        self.assertEqual(header["eqlv2"], "%d updates" % updates)
        self.assertEqual(columns, ["class", "seen", "P", "Q", "P/Q"])
        self.assertEqual(len(rows), c)
        got = np.array([[float(v) for v in row[1:]] for row in rows])
        self.assertEqual(got[:, 0].astype(np.int64).tolist(), seen.tolist())
        np.testing.assert_allclose(got[:, 1], p, rtol=1e-6)
        np.testing.assert_allclose(got[:, 2], q, rtol=1e-6)
        np.testing.assert_allclose(got[:, 3], p / (q + 1e-10), rtol=1e-6)
        run = self.ok_json("runs", "get", "eq")
        np.testing.assert_allclose(run["statistics"]["positive_gradient"], p, rtol=1e-6)
        np.testing.assert_allclose(run["statistics"]["negative_gradient"], q, rtol=1e-6)
        self.assertEqual(run["statistics"]["eqlv2_updates"], updates)

    def test_seesaw_with_a_run_counts_this_requests_labels_first(self):
        """LOSS.md section 10: with a run and accumulate, SEESAW's n are the
        run's seen counts including the request's own labels. The run first
        gets the golden case's counts minus the case's own foreground labels;
        the case then sees exactly its class_counts, and must give its
        golden numbers (tests/golden/golden_cases_section10.json)."""
        with open(GOLDEN_SECTION10) as f:
            cases = {c["name"]: c for c in json.load(f)["cases"]}
        for name in ("seesaw_mean", "seesaw_mean_background", "seesaw_sum"):
            case = cases[name]
            with self.subTest(case=name):
                c, counts = case["cols"], np.array(case["class_counts"], np.int64)
                y = np.array(case["labels"], np.int64)
                own = np.bincount(y[(y >= 0) & (y < c)], minlength=c)
                before = counts - own
                self.assertTrue((before >= 0).all())
                run = "seesaw-" + name.replace("_", "-")
                self.ok("runs", "create", run, "--classes", str(c), "--loss", "seesaw")
                labels = np.repeat(np.arange(c), before)
                np.save(self.path(run + "-pre-y.npy"), labels)
                np.save(self.path(run + "-pre-z.npy"), np.zeros((len(labels), c), np.float32))
                self.ok("loss", "--run", run, "--accumulate", "--reduction", "sum",
                        "--logits", self.path(run + "-pre-z.npy"),
                        "--labels", self.path(run + "-pre-y.npy"))
                z = np.asarray(case["logits"], np.float32).reshape(case["rows"], c)
                np.save(self.path(run + "-z.npy"), z)
                np.save(self.path(run + "-y.npy"), y)
                gradient_path = self.path(run + "-g.npy")
                out = self.ok_json(
                    "loss", "--run", run, "--accumulate", "--seesaw-p", "0.8",
                    "--seesaw-q", "2", "--reduction", case["reduction"].lower(),
                    "--logits", self.path(run + "-z.npy"), "--labels", self.path(run + "-y.npy"),
                    "--per-sample", "--gradient-out", gradient_path)
                self.assertEqual((case["seesaw_p"], case["seesaw_q"], case["seesaw_eps"]),
                                 (0.8, 2.0, 0.01))
                want = case["expected"]
                cs.assert_loss_close(self, out["loss"], want["loss"])
                np.testing.assert_allclose(out["per_sample_losses"], want["per_sample_losses"],
                                           rtol=1e-5, atol=1e-6)
                cs.assert_gradient_close(self, np.load(gradient_path).reshape(-1),
                                         np.asarray(want["gradient"], np.float64).reshape(-1))
                self.assertEqual(out["run_version"], 3)
                stats = self.ok_json("runs", "get", run)["statistics"]
                self.assertEqual(stats["seen_counts"], counts.tolist())
                self.assertEqual(stats["background_seen"], int((y == c).sum()))


class RunsTokenCliTest(unittest.TestCase):
    """docs/spec/API.md section 5.2 access rules through the CLI: CreateRun
    and DeleteRun need the admin token; an accumulating loss needs the
    compute or admin token, even when only an admin token is configured."""

    def token_server(self, tokens):
        flags = []
        for kind, token in tokens.items():
            path = os.path.join(self.dir, kind + "-token")
            with open(path, "w") as f:
                f.write(token + "\n")
            flags.append("--%s_token_file=%s" % (kind, path))
        server = cs.ServerProcess(extra_flags=flags + ["--shutdown_grace_seconds=5"],
                                  name="cli-runs-tokens").start()
        self.addCleanup(server.close)
        return server

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="cbloss-cli-runs-tokens-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        z = np.zeros((3, 4), np.float32)
        self.z = os.path.join(self.dir, "z.npy")
        np.save(self.z, z)

    def cli(self, server, token, *args):
        return cs.run_cli((["--token_file", os.path.join(self.dir, token + "-token")]
                           if token else []) + list(args), target=server.target)

    def test_admin_and_compute_tokens(self):
        server = self.token_server({"admin": "admin-secret", "compute": "compute-secret"})
        r = self.cli(server, "compute", "runs", "create", "t", "--classes", "4")
        self.assertEqual(r.returncode, 8, r.stderr)  # PERMISSION_DENIED
        self.assertTrue(r.stderr.startswith("cbloss: PERMISSION_DENIED: "), r.stderr)
        r = self.cli(server, "admin", "runs", "create", "t", "--classes", "4")
        self.assertEqual(r.returncode, 0, r.stderr)
        r = self.cli(server, "compute", "--json", "loss", "--run", "t", "--accumulate",
                     "--loss", "seesaw", "--logits", self.z, "--labels", "0,1,1")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout)["run_version"], 2)
        r = self.cli(server, "compute", "--json", "runs", "get", "t")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout)["statistics"]["seen_counts"], [1, 2, 0, 0])
        r = self.cli(server, None, "runs", "get", "t")
        self.assertEqual(r.returncode, 17, r.stderr)  # UNAUTHENTICATED
        r = self.cli(server, "compute", "runs", "delete", "t")
        self.assertEqual(r.returncode, 8, r.stderr)
        r = self.cli(server, "admin", "runs", "delete", "t")
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_accumulating_needs_a_token_when_only_admin_is_configured(self):
        server = self.token_server({"admin": "admin-secret"})
        r = self.cli(server, "admin", "runs", "create", "t", "--classes", "4")
        self.assertEqual(r.returncode, 0, r.stderr)
        r = self.cli(server, None, "--json", "loss", "--run", "t", "--loss", "seesaw",
                     "--logits", self.z, "--labels", "0,1,1")
        self.assertEqual(r.returncode, 0, r.stderr)  # reading is open
        self.assertEqual(json.loads(r.stdout)["run_version"], 1)
        r = self.cli(server, None, "loss", "--run", "t", "--accumulate", "--loss", "seesaw",
                     "--logits", self.z, "--labels", "0,1,1")
        self.assertEqual(r.returncode, 17, r.stderr)  # UNAUTHENTICATED
        r = self.cli(server, "admin", "--json", "runs", "get", "t")
        self.assertEqual(json.loads(r.stdout)["version"], 1)


if __name__ == "__main__":
    unittest.main()
