"""The dashboard at GET / of --http_listen (docs/spec/API.md section 5.4),
opened in headless Chromium (Debian's `chromium`, installed by
scripts/install-deps.sh --test-extras).

The page must render its plots from the server alone: every host but
127.0.0.1 is made unresolvable, so a request to another origin would fail
and show as an error. The test waits (virtual time) for the plots, checks
that no console message and no page error appeared, reads the dataset names
and the effective-number weights from the DOM and compares them with the
formula of LOSS.md section 2, and saves a screenshot under the build
directory (dashboard.png)."""

import html.parser
import os
import re
import shutil
import subprocess
import tempfile
import unittest

import numpy as np

from http_support import HttpServer
from server_fixture import SERVER_BINARY, ServerTestCase

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
BUILD_DIR = os.environ.get("CBLOSS_BUILD_DIR") or os.path.dirname(
    os.path.dirname(os.path.abspath(SERVER_BINARY)))
COUNTS = {"tail-b": [900, 300, 30, 3], "tail-a": [5000, 500, 50]}


class DomTables(html.parser.HTMLParser):
    """Options of <select id=dataset>, rows of <table id=weights_table>,
    the text of #error and body's data-rendered."""

    def __init__(self):
        super().__init__()
        self.options, self.rows, self.error, self.rendered = [], [], "", None
        self._in = None
        self._cell = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "body":
            self.rendered = a.get("data-rendered")
            self.resources = (a.get("data-resources") or "").split()
        if tag == "option":
            self.options.append(a.get("value"))
        if tag == "table" and a.get("id") == "weights_table":
            self._in = "weights"
        if tag == "div" and a.get("id") == "error":
            self._in = "error"
        if self._in == "weights" and tag == "tr":
            self.rows.append([])
        if self._in == "weights" and tag in ("td", "th"):
            self._cell = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append(self._cell.strip())
            self._cell = None
        if tag == "table" and self._in == "weights":
            self._in = None
        if tag == "div" and self._in == "error":
            self._in = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data
        elif self._in == "error":
            self.error += data


def chromium(url, *flags):
    profile = tempfile.mkdtemp(prefix="cbloss-chromium-")
    try:
        return subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
             "--user-data-dir=" + profile, "--no-first-run",
             "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
             "--enable-logging=stderr", "--v=0", "--virtual-time-budget=8000",
             "--window-size=1200,1300"] + list(flags) + [url],
            capture_output=True, timeout=120)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


class DashboardTest(ServerTestCase):
    def test_dashboard_in_chromium(self):
        self.assertIsNotNone(CHROMIUM, "chromium not found: scripts/install-deps.sh "
                                       "--test-extras installs it")
        server = self.new_server(HttpServer)
        server.start()
        for name, counts in COUNTS.items():
            self.assertEqual(server.call("PUT", "/v1/datasets/" + name,
                                         {"classCounts": counts,
                                          "classNames": ["c%d" % i for i in
                                                         range(len(counts))]})[0], 200)
        url = "http://127.0.0.1:%d/" % server.http_port
        # The page itself: no reference to another origin (the SVG namespace
        # is a name, not a fetch).
        status, page, _ = server.call("GET", "/")
        self.assertEqual(status, 200)
        refs = re.findall(r"""(?:src|href|fetch\()\s*=?\s*["']([^"']+)""", page)
        self.assertEqual([r for r in refs if "//" in r], [])

        dom = chromium(url, "--dump-dom")
        self.assertEqual(dom.returncode, 0, dom.stderr.decode(errors="replace")[-3000:])
        log = dom.stderr.decode(errors="replace")
        console = [l for l in log.splitlines() if "CONSOLE" in l or "Uncaught" in l]
        self.assertEqual(console, [])
        tables = DomTables()
        tables.feed(dom.stdout.decode())
        self.assertEqual(tables.error.strip(), "")
        self.assertEqual(tables.rendered, "1")  # showDataset finished once
        # Every request the page made (Resource Timing) went to the server.
        self.assertGreaterEqual(len(tables.resources), 6, tables.resources)
        for r in tables.resources:
            self.assertTrue(r.startswith(url), r)
        self.assertEqual(tables.options, ["tail-a", "tail-b"])
        # The first dataset (by name) at the page's beta 0.999, classes by
        # count: the effective-number row against the formula.
        counts = np.asarray(COUNTS["tail-a"], dtype=np.float64)
        beta = 0.999
        w = (1 - beta) / (1 - beta ** counts)
        w *= len(counts) / w.sum()
        order = np.argsort(-counts, kind="stable")
        header, rows = tables.rows[0], tables.rows[1:]
        self.assertEqual(header[1:], ["c%d" % i for i in order])
        effective = [r for r in rows if r[0] == "effective number"]
        self.assertEqual(len(effective), 1, rows)
        np.testing.assert_allclose([float(v) for v in effective[0][1:]], w[order],
                                   rtol=1e-5)
        self.assertEqual(len(rows), 4)  # one per scheme

        shot = os.path.join(BUILD_DIR, "dashboard.png")
        if os.path.exists(shot):
            os.unlink(shot)
        taken = chromium(url, "--screenshot=" + shot,
                         "--run-all-compositor-stages-before-draw")
        self.assertEqual(taken.returncode, 0)
        with open(shot, "rb") as f:
            self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
        self.assertGreater(os.path.getsize(shot), 10000)


if __name__ == "__main__":
    unittest.main()
