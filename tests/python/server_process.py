"""A real cbloss-server for the Python client tests.

ServerTestCase starts one server per test class with the launcher of
tests/server/server_fixture.py (127.0.0.1, port 0 and `--port_file`, a
temporary `--data_dir`, bounded waits until it is SERVING) and stops it with
SIGTERM in tearDownClass (SIGKILL as the last resort). The binary is
$CBLOSS_SERVER (set by CMakeLists.txt), else build/bin/cbloss-server of this
checkout.
"""

import os
import sys
import unittest

import cbloss

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "server"))

from server_fixture import (RPC_TIMEOUT_S, SERVER_BINARY, STOP_TIMEOUT_S,  # noqa: E402,F401
                            STARTUP_TIMEOUT_S as START_TIMEOUT_S, ServerProcess)


class ServerTestCase(unittest.TestCase):
    """Gives each test class `cls.server` (a server_fixture.ServerProcess,
    started with `server_flags`) and a `cls.client` bound to it."""

    server_flags = ()

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.server = ServerProcess(extra_flags=cls.server_flags, name="pytest")
        try:
            cls.server.start()
        except BaseException:  # the error names the server's stderr
            cls.server.close()
            raise
        cls.client = cbloss.Client(cls.server.target, timeout=RPC_TIMEOUT_S)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        cls.server.close()
        super().tearDownClass()
