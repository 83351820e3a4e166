"""The `cbloss loss` command with the LOSS.md section 10 losses, against a
real cbloss-server: numbers from tests/golden/golden_cases_section10.json,
within the tolerances of LOSS.md section 7.

    /usr/bin/python3 -m unittest -v test_cli_section10      (from tests/client/)
"""

import json
import os
import shutil
import tempfile
import unittest

import numpy as np

import cli_support as cs

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "golden",
                      "golden_cases_section10.json")
with open(GOLDEN) as f:
    CASES = {case["name"]: case for case in json.load(f)["cases"]}


def csv(values):
    return ",".join(str(v) for v in values)


class Section10CliTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.server = cs.Server(sample_datasets=False).start()
        cls.dir = tempfile.mkdtemp(prefix="cbloss-cli-s10-")

    @classmethod
    def tearDownClass(cls):
        cls.server.close()
        shutil.rmtree(cls.dir, ignore_errors=True)

    def path(self, name):
        return os.path.join(self.dir, name)

    def cli(self, *args):
        return cs.run_cli(list(args), target=self.server.target)

    def ok_json(self, *args):
        r = self.cli("--json", *args)
        self.assertEqual(r.returncode, 0, "cbloss %s\nstderr: %s" % (" ".join(args), r.stderr))
        self.assertEqual(r.stderr, "")
        return json.loads(r.stdout)

    def case_files(self, case):
        """Writes the case's logits as <name>.npy; returns its path."""
        z = np.asarray(case["logits"], np.float32).reshape(case["rows"], case["cols"])
        path = self.path(case["name"] + ".npy")
        np.save(path, z)
        return path

    def test_seesaw_matches_golden(self):
        for name in ("seesaw_mean", "seesaw_mean_background", "seesaw_sum_zero_counts"):
            case = CASES[name]
            with self.subTest(case=name):
                gradient_path = self.path(name + "-grad.npy")
                out = self.ok_json(
                    "loss", "--counts", csv(case["class_counts"]), "--loss", "seesaw",
                    "--seesaw-p", "0.8", "--seesaw-q", "2",
                    "--reduction", case["reduction"].lower(),
                    "--logits", self.case_files(case), "--labels", csv(case["labels"]),
                    "--per-sample", "--gradient-out", gradient_path)
                self.assertEqual((case["seesaw_p"], case["seesaw_q"]), (0.8, 2.0))
                want = case["expected"]
                cs.assert_loss_close(self, out["loss"], want["loss"])
                self.assertEqual(out["num_samples"], want["num_samples"])
                config = out["resolved_config"]
                self.assertEqual((config["seesaw_p"], config["seesaw_q"], config["seesaw_eps"]),
                                 (0.8, 2.0, 0.01))
                np.testing.assert_allclose(out["per_sample_losses"], want["per_sample_losses"],
                                           rtol=1e-5, atol=1e-6)
                gradient = np.load(gradient_path)
                cs.assert_gradient_close(
                    self, gradient,
                    np.asarray(want["gradient"]).reshape(case["rows"], case["cols"]))

    def test_vs_and_focal_alpha_match_golden(self):
        for name, flags in (
                ("vs_mean_effective_number", ["--loss", "vs", "--vs-gamma", None, "--tau", None]),
                ("focal_alpha_labels_sum", ["--loss", "focal", "--focal-alpha", None,
                                            "--gamma", None])):
            case = CASES[name]
            args = []
            for flag, value in zip(flags[::2], flags[1::2]):
                if value is None:
                    value = repr(case[flag[2:].replace("-", "_")])
                args += [flag, value]
            with self.subTest(case=name):
                out = self.ok_json(
                    "loss", "--counts", csv(case["class_counts"]), "--beta", repr(case["beta"]),
                    "--scheme", case["scheme"].lower(), "--reduction", case["reduction"].lower(),
                    "--logits", self.case_files(case), "--labels", csv(case["labels"]), *args)
                cs.assert_loss_close(self, out["loss"], case["expected"]["loss"])

    def test_eql_v2_is_invalid_argument(self):
        case = CASES["eql_v2_mean"]
        r = self.cli("loss", "--counts", csv(case["class_counts"]), "--loss", "eql_v2",
                     "--logits", self.case_files(case), "--labels", csv(case["labels"]))
        self.assertNotEqual(r.returncode, 0, r.stdout)
        self.assertEqual(r.stdout, "")
        self.assertIn("INVALID_ARGUMENT", r.stderr)
        self.assertIn("run", r.stderr)


if __name__ == "__main__":
    unittest.main()
