"""examples/long_tail_digits.py still runs end to end (a tiny configuration:
one seed, one imbalance, 3 epochs: LDAM-DRW switches its weights on at
epoch 2), writing its figure and table elsewhere."""

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

from server_process import SERVER_BINARY

_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir, os.pardir))
EXAMPLE = os.path.join(_ROOT, "examples", "long_tail_digits.py")


class LongTailDigitsExampleTest(unittest.TestCase):

    def test_tiny_run_writes_figure_and_table(self):
        for module in ("sklearn", "matplotlib"):
            if importlib.util.find_spec(module) is None:
                self.fail("%s is not installed (python3-%s)"
                              % (module, "sklearn" if module == "sklearn" else "matplotlib"))
        docs = tempfile.mkdtemp(prefix="cbloss-demo-docs-")
        self.addCleanup(shutil.rmtree, docs, True)
        run = subprocess.run(
            [sys.executable, EXAMPLE, "--server", SERVER_BINARY, "--seeds", "1",
             "--epochs", "3", "--imbalances", "100", "--docs", docs],
            capture_output=True, text=True, timeout=240)
        self.assertEqual(run.returncode, 0, run.stdout + run.stderr)
        self.assertGreater(os.path.getsize(os.path.join(docs, "long_tail_digits.png")), 10000)
        with open(os.path.join(docs, "LONG_TAIL_DEMO.md")) as f:
            text = f.read()
        for loss in ("CE (softmax)", "CB softmax", "CB focal", "Balanced softmax", "LDAM-DRW"):
            self.assertIn("| 100 | 294 | %s |" % loss, text)
        self.assertIn("effective number, beta 0.9999", text)


if __name__ == "__main__":
    unittest.main()
