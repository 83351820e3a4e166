"""`cbloss datasets put NAME --from-labels FILE` (a .npy or CSV of labels, or
a folder in torchvision's ImageFolder layout) and `cbloss weights --beta
B1,B2,...` (one column per beta), run as a user runs them against a real
cbloss-server on 127.0.0.1. Expected counts are np.bincount of the labels
written (or the files made per class folder); expected weights come from the
float64 reference of LOSS.md section 2 (cli_support.class_weights).

    /usr/bin/python3 -m unittest -v test_cli_from_labels   (from tests/client/)
"""

import os
import shutil
import tempfile

import numpy as np

import cli_support as cs
from test_cli import CliTestBase

BETAS = (0.9, 0.99, 0.999, 0.9999)


class FromLabelsTest(CliTestBase):

    def setUp(self):
        super().setUp()
        self.labels = np.random.default_rng(7).integers(0, 6, size=500)
        self.labels[:3] = 6  # class 6 has 3, and the largest label sets C = 7
        self.expected = np.bincount(self.labels).tolist()

    def test_npy_int64_and_int32(self):
        for dtype in (np.int64, np.int32):
            path = self.path("labels-%s.npy" % np.dtype(dtype).name)
            np.save(path, self.labels.astype(dtype))
            out = self.ok_json("datasets", "put", "from-npy-" + np.dtype(dtype).name,
                               "--from-labels", path)
            self.assertEqual(out["class_counts"], self.expected)
            self.assertNotIn("class_names", out)

    def test_csv(self):
        path = self.path("labels.csv")
        with open(path, "w") as f:
            f.write("\n".join(str(int(v)) for v in self.labels) + "\n")
        out = self.ok_json("datasets", "put", "from-csv", "--from-labels", path,
                           "--loss", "focal", "--names", "a,b,c,d,e,f,g")
        self.assertEqual(out["class_counts"], self.expected)
        self.assertEqual(out["class_names"], list("abcdefg"))
        self.assertEqual(out["defaults"]["loss_type"], "LOSS_TYPE_FOCAL")
        got = self.ok_json("datasets", "get", "from-csv")
        self.assertEqual(got["class_counts"], self.expected)

    def test_image_folder(self):
        root = tempfile.mkdtemp(prefix="cbloss-imagefolder-")
        self.addCleanup(shutil.rmtree, root, True)
        # Folder names sort to the class order; files that are not images do
        # not count; sub-folders count (torchvision walks them).
        files = {"cat": ["a.jpg", "b.PNG", "c.jpeg", "notes.txt"],
                 "ant": ["x.png"],
                 "dog": ["1.bmp", "2.webp", "sub/3.tif", "sub/4.txt"],
                 "bee": []}
        for cls, names in files.items():
            os.makedirs(os.path.join(root, cls, "sub"))
            for n in names:
                open(os.path.join(root, cls, n), "wb").close()
        open(os.path.join(root, "README.txt"), "w").close()  # not a class
        out = self.ok_json("datasets", "put", "from-folder", "--from-labels", root)
        self.assertEqual(out["class_names"], ["ant", "bee", "cat", "dog"])
        self.assertEqual(out["class_counts"], [1, 0, 3, 3])

    def test_counts_and_from_labels_exclude_each_other(self):
        path = self.path("l.npy")
        np.save(path, self.labels)
        r = self.cli("datasets", "put", "both", "--counts", "1,2", "--from-labels", path)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("--counts excludes --from-labels", r.stderr)
        r = self.cli("datasets", "put", "neither")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("--counts is required", r.stderr)

    def test_bad_inputs(self):
        self.assert_fails(self.cli("datasets", "put", "missing", "--from-labels",
                                   self.path("no-such-file.npy")), "NOT_FOUND")
        path = self.path("negative.csv")
        with open(path, "w") as f:
            f.write("0\n1\n-1\n")
        line = self.assert_fails(self.cli("datasets", "put", "neg", "--from-labels", path),
                                 "INVALID_ARGUMENT")
        self.assertIn("label -1 is negative", line)
        empty = tempfile.mkdtemp(prefix="cbloss-empty-folder-")
        self.addCleanup(shutil.rmtree, empty, True)
        line = self.assert_fails(self.cli("datasets", "put", "empty", "--from-labels", empty),
                                 "INVALID_ARGUMENT")
        self.assertIn("no class folders", line)


class WeightsPerBetaTest(CliTestBase):

    counts = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]

    def test_json_one_column_per_beta(self):
        out = self.ok_json("weights", "--counts", ",".join(map(str, self.counts)),
                           "--beta", ",".join(map(str, BETAS)))
        self.assertEqual(out["betas"], list(BETAS))
        self.assertEqual(len(out["weights"]), len(BETAS))
        for beta, column in zip(BETAS, out["weights"]):
            np.testing.assert_allclose(column, cs.class_weights(self.counts, beta).numpy(),
                                       rtol=1e-9)

    def test_text_table(self):
        r = self.cli("weights", "--counts", "2,3,1", "--beta", "0.9,0.9999")
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.splitlines()
        self.assertEqual(lines[0].split(), ["class", "beta=0.9", "beta=0.9999"])
        self.assertEqual(len(lines), 4)
        for j, line in enumerate(lines[1:]):
            cells = line.split()
            self.assertEqual(int(cells[0]), j)
            for k, beta in enumerate((0.9, 0.9999)):
                self.assertAlmostEqual(float(cells[1 + k]),
                                       float(cs.class_weights([2, 3, 1], beta)[j]), places=7)

    def test_with_dataset_adds_its_version(self):
        self.ok_json("datasets", "put", "per-beta", "--counts", "10,5,1")
        out = self.ok_json("weights", "--dataset", "per-beta", "--beta", "0.5,0.99")
        self.assertEqual(out["dataset_version"], 1)
        np.testing.assert_allclose(out["weights"][1], cs.class_weights([10, 5, 1], 0.99).numpy(),
                                   rtol=1e-9)

    def test_one_beta_prints_as_before(self):
        out = self.ok_json("weights", "--counts", "2,3,1,2,2", "--beta", "0.9999")
        self.assertEqual(sorted(out), ["weights"])
        np.testing.assert_allclose(out["weights"],
                                   cs.class_weights([2, 3, 1, 2, 2], 0.9999).numpy(), rtol=1e-9)

    def test_a_later_beta_that_is_not_a_number(self):
        line = self.assert_fails(self.cli("weights", "--counts", "2,3", "--beta", "0.9,x"),
                                 "INVALID_ARGUMENT")
        self.assertIn("--beta 'x' is not a number", line)


if __name__ == "__main__":
    import unittest
    unittest.main()
