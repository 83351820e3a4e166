"""The C++ quick start of docs/CPP_CLIENT.md: the doc shows exactly
quickstart_example.cc, and the built example trains against a live server.

    /usr/bin/python3 -m unittest -v test_quickstart      (from tests/client/)
"""

import os
import re
import subprocess
import unittest

import cli_support as cs

_HERE = os.path.dirname(os.path.abspath(__file__))


def cpp_blocks(markdown):
    return re.findall(r"```cpp\n(.*?)```", markdown, flags=re.S)


class QuickstartTest(unittest.TestCase):

    def test_doc_shows_the_tested_example(self):
        with open(os.path.join(_HERE, "quickstart_example.cc")) as f:
            example = f.read()
        with open(os.path.join(cs.DOCS, "CPP_CLIENT.md")) as f:
            doc = f.read()
        self.assertIn(example, cpp_blocks(doc),
                      "docs/CPP_CLIENT.md must hold tests/client/quickstart_example.cc "
                      "verbatim in a ```cpp block")

    def test_example_trains_against_a_live_server(self):
        server = cs.Server(sample_datasets=False).start()
        try:
            r = subprocess.run([cs.QUICKSTART, server.target], capture_output=True,
                               text=True, timeout=60)
            # And through $CBLOSS_TARGET, as the doc says.
            env = dict(os.environ, CBLOSS_TARGET=server.target)
            r_env = subprocess.run([cs.QUICKSTART], capture_output=True, text=True,
                                   timeout=60, env=env)
        finally:
            server.close()
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("dataset version 1, class weights", r.stdout)
        m = re.search(r"final loss (\S+) \(first (\S+)\)", r.stdout)
        self.assertIsNotNone(m, r.stdout)
        self.assertLess(float(m.group(1)), float(m.group(2)))
        self.assertEqual(r_env.returncode, 0, r_env.stdout + r_env.stderr)
        self.assertIn("dataset version 2", r_env.stdout)  # the put replaced it

    def test_example_reports_an_unreachable_server(self):
        r = subprocess.run([cs.QUICKSTART, "127.0.0.1:%d" % cs.free_port()],
                           capture_output=True, text=True, timeout=60)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("UNAVAILABLE", r.stderr)


if __name__ == "__main__":
    unittest.main()
