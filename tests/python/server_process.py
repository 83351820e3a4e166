"""A real cbloss-server for the Python client tests.

ServerTestCase starts one server per test class on 127.0.0.1, port 0
(`--port_file`), with a temporary `--data_dir`, waits until it is SERVING,
and stops it with SIGTERM in tearDownClass (bounded waits; SIGKILL as the
last resort). The binary is $CBLOSS_SERVER (set by CMakeLists.txt), else
build/bin/cbloss-server of this checkout.
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

import cbloss

_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir, os.pardir))
SERVER_BINARY = os.environ.get("CBLOSS_SERVER") or os.path.join(_ROOT, "build", "bin",
                                                                "cbloss-server")
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 30.0
RPC_TIMEOUT_S = 30.0


class ServerProcess:
    """One cbloss-server process with its own temporary folder."""

    def __init__(self, extra_flags=()):
        self.extra_flags = list(extra_flags)
        self.workdir = tempfile.mkdtemp(prefix="cbloss-pytest-")
        self.port_file = os.path.join(self.workdir, "port")
        self.log_path = os.path.join(self.workdir, "server.log")
        self.proc = None
        self.target = None

    def start(self):
        if not os.path.exists(SERVER_BINARY):
            # A missing server fails the tests; it never skips them.
            raise RuntimeError("cbloss-server not built at %s (cmake --build build)"
                               % SERVER_BINARY)
        cmd = [SERVER_BINARY, "--listen=127.0.0.1:0", "--port_file=" + self.port_file,
               "--data_dir=" + os.path.join(self.workdir, "data"), "--compute_threads=2",
               *self.extra_flags]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         cwd=self.workdir)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self):
        deadline = time.monotonic() + START_TIMEOUT_S
        port = None
        while port is None:
            if self.proc.poll() is not None:
                raise RuntimeError("cbloss-server exited with %s:\n%s"
                                   % (self.proc.returncode, self.log()))
            if time.monotonic() > deadline:
                raise RuntimeError("no port file after %.0f s" % START_TIMEOUT_S)
            try:
                with open(self.port_file) as f:
                    port = int(f.read().strip() or "0") or None
            except (OSError, ValueError):
                pass
            if port is None:
                time.sleep(0.02)
        self.target = "127.0.0.1:%d" % port
        with cbloss.Client(self.target) as client:
            client.wait_until_serving(timeout=max(1.0, deadline - time.monotonic()))

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")[-10000:]
        except OSError:
            return ""

    def stop(self):
        """SIGTERM and wait; SIGKILL if it does not exit in time. Returns the
        exit code."""
        code = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                code = self.proc.wait(timeout=10)
                sys.stderr.write("cbloss-server ignored SIGTERM for %.0f s; killed\n"
                                 % STOP_TIMEOUT_S)
            if code != 0:
                sys.stderr.write("cbloss-server exited with %s:\n%s\n" % (code, self.log()))
        shutil.rmtree(self.workdir, ignore_errors=True)
        return code


class ServerTestCase(unittest.TestCase):
    """Gives each test class `cls.server` and a `cls.client` bound to it."""

    server_flags = ()

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.server = ServerProcess(cls.server_flags).start()
        cls.client = cbloss.Client(cls.server.target, timeout=RPC_TIMEOUT_S)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        cls.server.stop()
        super().tearDownClass()
