"""--log_format=json and --access_log (docs/spec/API.md section 5.5), on a
real cbloss-server: every stderr line of a JSON-logging server is one JSON
object with time (RFC 3339, UTC), level and message; the access log has one
line per call, gRPC and HTTP, with the fields; no token and no payload
appears in any log."""

import json
import os
import re
import subprocess
import unittest

import grpc

from http_support import HttpServer
from prod_support import bearer, write_token
from server_fixture import RPC_TIMEOUT_S as T, SERVER_BINARY, ServerTestCase, pb

RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
ADMIN = "admin-tok-9c1f2e7a"
COMPUTE = "compute-tok-55b0d3e1"
MARKER = 1234.5678  # a logit value no log may show


class LogsTest(ServerTestCase):
    def start(self, access_log, log_format="json"):
        tmp = self.tmpdir()
        admin = write_token(os.path.join(tmp, "admin"), ADMIN)
        compute = write_token(os.path.join(tmp, "compute"), COMPUTE)
        server = self.new_server(HttpServer, extra_flags=[
            "--log_format=%s" % log_format, "--access_log=%s" % access_log,
            "--admin_token_file=%s" % admin, "--compute_token_file=%s" % compute])
        server.start()
        return server

    def traffic(self, server):
        """Calls over both ports: successes, refusals, a validation error."""
        self.assertEqual(server.call("PUT", "/v1/datasets/logs",
                                     {"classCounts": [7, 3]}, token=ADMIN)[0], 200)
        loss = {"dataset": "logs", "logits": {"shape": [1, 2], "floatData": [MARKER, 0]},
                "labels": [0]}
        self.assertEqual(server.call("POST", "/v1/loss", loss, token=COMPUTE)[0], 200)
        self.assertEqual(server.call("POST", "/v1/loss", loss, token="wrong-" + ADMIN)[0], 401)
        self.assertEqual(server.call("PUT", "/v1/datasets/logs", {"classCounts": [1]},
                                     token=COMPUTE)[0], 403)
        self.assertEqual(server.call("POST", "/v1/loss", raw=b'{"x": %r' % MARKER,
                                     token=COMPUTE)[0], 400)
        server.stub.GetDataset(pb.GetDatasetRequest(name="logs"), timeout=T,
                               metadata=bearer(COMPUTE))
        with self.assertRaises(grpc.RpcError):
            server.stub.GetDataset(pb.GetDatasetRequest(name="absent"), timeout=T,
                                   metadata=bearer(COMPUTE))
        with self.assertRaises(grpc.RpcError):
            server.stub.PutDataset(pb.PutDatasetRequest(
                dataset=pb.Dataset(name="x", class_counts=[1])), timeout=T,
                metadata=bearer("bad-" + COMPUTE))

    def assert_clean(self, text):
        for secret in (ADMIN, COMPUTE, str(MARKER), "1234.56"):
            self.assertNotIn(secret, text)

    def test_json_logs_and_access_log_on_stderr(self):
        server = self.start("stderr")
        self.traffic(server)
        server.stop()
        text = server.stderr(limit=10 ** 7)
        self.assert_clean(text)
        lines = [l for l in text.splitlines() if l.strip()]
        records = [json.loads(l) for l in lines]  # every line parses
        for r in records:
            self.assertTrue(RFC3339_UTC.match(r["time"]), r)
            self.assertIn(r["level"], ("trace", "debug", "info", "warning", "error",
                                       "critical"))
            self.assertIsInstance(r["message"], str)
        self.assertTrue(any(r["message"].startswith("cbloss-server 0.1.0 serving")
                            for r in records))
        access = [r for r in records if r["message"] == "access"]
        http = [r for r in access if r["protocol"] == "http"]
        grpc_lines = [r for r in access if r["protocol"] == "grpc"]
        self.assertEqual(len(http), 5)
        self.assertEqual(len(grpc_lines), 3)
        for r in access:
            for field in ("method", "peer", "code", "status", "duration_ms", "elements",
                          "dataset", "run"):
                self.assertIn(field, r)
            self.assertTrue(r["peer"].startswith("ipv4:127.0.0.1:"), r)
            self.assertGreaterEqual(r["duration_ms"], 0)
        self.assertEqual([(r["method"], r["code"], r["http_status"]) for r in http],
                         [("PutDataset", 0, 200), ("ComputeLoss", 0, 200),
                          ("ComputeLoss", 16, 401), ("PutDataset", 7, 403),
                          ("ComputeLoss", 3, 400)])
        self.assertEqual(http[1]["elements"], 2)
        self.assertEqual(http[1]["dataset"], "logs")
        self.assertEqual([(r["method"], r["status"], r["dataset"]) for r in grpc_lines],
                         [("GetDataset", "OK", "logs"), ("GetDataset", "NOT_FOUND", "absent"),
                          ("PutDataset", "UNAUTHENTICATED", "x")])

    def test_access_log_file_in_text(self):
        path = os.path.join(self.tmpdir(), "access.log")
        server = self.start(path, log_format="text")
        self.traffic(server)
        server.stop()
        with open(path) as f:
            lines = f.read().splitlines()
        self.assert_clean("\n".join(lines) + server.stderr(limit=10 ** 7))
        self.assertEqual(len(lines), 8)
        for line in lines:
            self.assertRegex(line, r"^\S+Z access protocol=(http|grpc) method=\w+ "
                                   r"peer=ipv4:127\.0\.0\.1:\d+ code=[A-Z_]+ ")
        self.assertIn("method=ComputeLoss", lines[1])
        self.assertIn("elements=2 dataset=logs run=-", lines[1])

    def test_bad_log_format_is_a_flag_error(self):
        proc = subprocess.run([SERVER_BINARY, "--log_format=xml"], capture_output=True,
                              timeout=30)
        self.assertEqual(proc.returncode, 2)
        self.assertIn(b"--log_format=xml is not text or json", proc.stderr)


if __name__ == "__main__":
    unittest.main()
