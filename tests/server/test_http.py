"""--http_listen: every LossService RPC as JSON over HTTP/1.1
(docs/spec/API.md section 5.4, docs/HTTP.md), on a real cbloss-server.

Numbers are checked against float64 references written from LOSS.md's
formulas (effective-number weights, softmax cross-entropy); error bodies
against the status mapping of API.md section 5.4 and, for validation
messages and token refusals, against what the gRPC port answers for the
same request (the same handlers must give the same text)."""

import json
import re
import subprocess
import os
import signal
import threading
import time
import unittest

import grpc
import numpy as np
from google.protobuf import json_format

from http_support import HttpServer
from prod_support import write_token
from server_fixture import RPC_TIMEOUT_S as T, ServerTestCase, pb

COUNTS = [5000, 2000, 100, 10]


def effective_number_weights(counts, beta):
    """LOSS.md section 2: w_c = (1 - beta) / (1 - beta^n_c), scaled to sum C."""
    n = np.asarray(counts, dtype=np.float64)
    w = (1.0 - beta) / (1.0 - np.power(beta, n))
    return w * len(counts) / w.sum()


def softmax_ce_mean(logits, labels, weights):
    """Weighted softmax cross-entropy, REDUCTION_MEAN: sum_i w_{y_i} CE_i / B."""
    x = np.asarray(logits, dtype=np.float64)
    m = x.max(axis=1, keepdims=True)
    lse = (m + np.log(np.exp(x - m).sum(axis=1, keepdims=True)))[:, 0]
    ce = lse - x[np.arange(len(labels)), labels]
    return float((np.asarray(weights)[labels] * ce).sum() / len(labels))


class HttpRoutesTest(ServerTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.server = HttpServer(None, name="http")
        cls.server.start()
        cls._class_servers = [cls.server]

    def call(self, *args, **kwargs):
        return self.server.call(*args, **kwargs)

    def put(self, name, counts=COUNTS, **extra):
        body = {"classCounts": counts}
        body.update(extra)
        status, value, _ = self.call("PUT", "/v1/datasets/" + name, body)
        self.assertEqual(status, 200, value)
        return value

    def assert_error(self, got, http_status, code, status_name, message=None):
        status, body, headers = got
        self.assertEqual(status, http_status, body)
        self.assertTrue(headers["Content-Type"].startswith("application/json"))
        self.assertEqual(set(body), {"code", "status", "message"})
        self.assertEqual(body["code"], code)
        self.assertEqual(body["status"], status_name)
        if message is not None:
            self.assertEqual(body["message"], message)
        return body["message"]

    def test_health(self):
        self.assertEqual(self.call("GET", "/healthz")[0], 200)
        status, body, _ = self.call("GET", "/readyz")
        self.assertEqual((status, body), (200, {"status": "SERVING"}))

    def test_dataset_lifecycle(self):
        created = self.put("life", classNames=["a", "b", "c", "d"])
        self.assertEqual(created["version"], "1")
        self.assertEqual([int(c) for c in created["classCounts"]], COUNTS)
        status, got, _ = self.call("GET", "/v1/datasets/life")
        self.assertEqual(status, 200)
        self.assertEqual(got["classNames"], ["a", "b", "c", "d"])
        # expected_version: 1 is right, 7 is ABORTED (409), 0 on an existing one too.
        self.assertEqual(self.call("PUT", "/v1/datasets/life?expected_version=1",
                                   {"classCounts": [1, 2, 3, 4]})[1]["version"], "2")
        self.assert_error(self.call("PUT", "/v1/datasets/life?expected_version=7",
                                    {"classCounts": [1, 2, 3, 4]}), 409, 10, "ABORTED")
        self.assert_error(self.call("PUT", "/v1/datasets/life?expected_version=x",
                                    {"classCounts": [1]}), 400, 3, "INVALID_ARGUMENT",
                          "query parameter expected_version=x is not an integer")
        # addClassCounts: deltas and labels.
        status, got, _ = self.call("POST", "/v1/datasets/life:addClassCounts",
                                   {"deltas": [1, 0, 0, 0], "labels": [3, 3]})
        self.assertEqual(status, 200, got)
        self.assertEqual([int(c) for c in got["classCounts"]], [2, 2, 3, 6])
        self.assertEqual(got["version"], "3")
        self.assert_error(self.call("DELETE", "/v1/datasets/life?expected_version=2"),
                          409, 10, "ABORTED")
        status, got, _ = self.call("DELETE", "/v1/datasets/life?expected_version=3")
        self.assertEqual((status, got), (200, {}))
        self.assert_error(self.call("GET", "/v1/datasets/life"), 404, 5, "NOT_FOUND")
        self.assert_error(self.call("DELETE", "/v1/datasets/life"), 404, 5, "NOT_FOUND")

    def test_name_in_body_must_match_path(self):
        self.assert_error(self.call("PUT", "/v1/datasets/one", {"name": "two"}), 400, 3,
                          "INVALID_ARGUMENT",
                          'the body names dataset "two" but the path names "one"')

    def test_list_pages(self):
        for name in ("page-a", "page-b", "page-c"):
            self.put(name)
        names, token = [], ""
        for _ in range(10):
            status, got, _ = self.call(
                "GET", "/v1/datasets?page_size=1&page_token=" + token)
            self.assertEqual(status, 200, got)
            names += [d["name"] for d in got.get("datasets", [])]
            token = got.get("nextPageToken", "")
            if not token:
                break
        pages = [n for n in names if n.startswith("page-")]
        self.assertEqual(pages, ["page-a", "page-b", "page-c"])
        self.assertEqual(names, sorted(names))

    def test_weights_match_the_formula(self):
        self.put("weights")
        for beta in (0.9, 0.999, 0.9999):
            status, got, _ = self.call("POST", "/v1/weights",
                                       {"dataset": "weights", "config": {"beta": beta}})
            self.assertEqual(status, 200, got)
            np.testing.assert_allclose(got["weights"],
                                       effective_number_weights(COUNTS, beta), rtol=1e-12)
            self.assertEqual(got["datasetVersion"], "1")
        # Inline counts and the inverse-frequency scheme: w ~ 1/n, sum C.
        status, got, _ = self.call("POST", "/v1/weights", {
            "classCounts": {"counts": [1, 3]},
            "config": {"weighting": "WEIGHTING_SCHEME_INVERSE_FREQUENCY"}})
        self.assertEqual(status, 200, got)
        np.testing.assert_allclose(got["weights"], [1.5, 0.5], rtol=1e-12)

    def test_loss_and_gradient(self):
        self.put("loss")
        rng = np.random.default_rng(7)
        logits = rng.normal(size=(32, 4)).astype(np.float32)
        labels = rng.integers(0, 4, size=32)
        beta = 0.99
        request = {"dataset": "loss", "config": {"beta": beta},
                   "logits": {"shape": [32, 4], "floatData": logits.ravel().tolist()},
                   "labels": labels.tolist(), "wantGradient": True}
        status, got, _ = self.call("POST", "/v1/loss", request)
        self.assertEqual(status, 200, got)
        w = effective_number_weights(COUNTS, beta)
        self.assertAlmostEqual(got["loss"],
                               softmax_ce_mean(logits.astype(np.float64), labels, w),
                               delta=1e-5)
        self.assertEqual(got["numSamples"], "32")
        self.assertEqual(got["gradient"]["shape"], ["32", "4"])
        # Gradient of the mean: w_y (softmax - onehot) / B.
        x = logits.astype(np.float64)
        p = np.exp(x - x.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        p[np.arange(32), labels] -= 1
        expected = w[labels][:, None] * p / 32
        np.testing.assert_allclose(np.asarray(got["gradient"]["floatData"]).reshape(32, 4),
                                   expected, atol=1e-6)
        # The same request over gRPC gives the same answer.
        grpc_req = json_format.ParseDict(request, pb.ComputeLossRequest())
        grpc_resp = self.server.stub.ComputeLoss(grpc_req, timeout=T)
        self.assertEqual(json_format.ParseDict(got, pb.ComputeLossResponse()), grpc_resp)

    def test_validation_messages_match_grpc(self):
        self.put("valid")
        bad = [
            {"dataset": "valid", "logits": {"shape": [2, 3], "floatData": [0] * 6},
             "labels": [0, 1]},                         # C differs from the dataset's
            {"dataset": "valid", "logits": {"shape": [1, 4], "floatData": [0] * 4},
             "labels": [9]},                            # label out of range
            {"dataset": "nope", "logits": {"shape": [1, 4], "floatData": [0] * 4},
             "labels": [0]},                            # no such dataset
        ]
        for body in bad:
            status, got, _ = self.call("POST", "/v1/loss", body)
            with self.assertRaises(grpc.RpcError) as e:
                self.server.stub.ComputeLoss(
                    json_format.ParseDict(body, pb.ComputeLossRequest()), timeout=T)
            code = e.exception.code()
            self.assertEqual(got["code"], code.value[0], got)
            self.assertEqual(got["status"], code.name)
            self.assertEqual(got["message"], e.exception.details())
            self.assertEqual(status, {3: 400, 5: 404, 9: 400}[got["code"]])

    def test_malformed_json_names_the_position_or_field(self):
        message = self.assert_error(self.call("POST", "/v1/loss", raw=b'{"dataset": "x",'),
                                    400, 3, "INVALID_ARGUMENT")
        self.assertTrue(message.startswith(
            "the request body is not protobuf JSON of ComputeLossRequest: "), message)
        self.assertIn("^", message)  # the parser's pointer at the position
        message = self.assert_error(self.call("POST", "/v1/weights", {"nosuchField": 1}),
                                    400, 3, "INVALID_ARGUMENT")
        self.assertIn("nosuchField", message)
        message = self.assert_error(self.call("POST", "/v1/weights", {"config": {"beta": "x"}}),
                                    400, 3, "INVALID_ARGUMENT")
        self.assertIn("beta", message)

    def test_runs(self):
        self.put("runs-ds")
        status, run, _ = self.call("POST", "/v1/runs", {"name": "r1", "dataset": "runs-ds"})
        self.assertEqual(status, 200, run)
        self.assertEqual(run["version"], "1")
        self.assertEqual(run["numClasses"], 4)
        self.assert_error(self.call("POST", "/v1/runs", {"name": "r1", "dataset": "runs-ds"}),
                          409, 6, "ALREADY_EXISTS")
        self.assert_error(self.call("POST", "/v1/runs", {"name": "r2", "dataset": "none"}),
                          404, 5, "NOT_FOUND")
        # An accumulating request adds its labels to the run's seen counts.
        status, got, _ = self.call("POST", "/v1/loss", {
            "run": "r1", "accumulate": True,
            "logits": {"shape": [3, 4], "floatData": [0] * 12}, "labels": [0, 3, 3]})
        self.assertEqual(status, 200, got)
        status, run, _ = self.call("GET", "/v1/runs/r1")
        self.assertEqual(status, 200)
        self.assertEqual([int(c) for c in run["statistics"]["seenCounts"]], [1, 0, 0, 2])
        self.assertEqual(run["version"], "2")
        status, runs, _ = self.call("GET", "/v1/runs?dataset=runs-ds")
        self.assertEqual([r["name"] for r in runs["runs"]], ["r1"])
        self.assert_error(self.call("DELETE", "/v1/runs/r1?expected_version=1"),
                          409, 10, "ABORTED")
        self.assertEqual(self.call("DELETE", "/v1/runs/r1?expected_version=2")[0], 200)
        self.assert_error(self.call("GET", "/v1/runs/r1"), 404, 5, "NOT_FOUND")

    def test_unknown_route(self):
        self.assert_error(self.call("GET", "/v2/nothing"), 404, 5, "NOT_FOUND",
                          "no route for GET /v2/nothing")

    def test_keep_alive_and_concurrency(self):
        self.put("ka")
        conn = self.server.connection()
        try:
            for _ in range(20):  # one connection, many requests
                status, _, headers = self.call("GET", "/v1/datasets/ka", conn=conn)
                self.assertEqual(status, 200)
                self.assertNotEqual(headers.get("Connection"), "close")
        finally:
            conn.close()
        errors = []

        def worker():
            try:
                for _ in range(10):
                    status, got, _ = self.call(
                        "POST", "/v1/loss",
                        {"dataset": "ka", "logits": {"shape": [1, 4], "floatData": [0] * 4},
                         "labels": [1]})
                    if status != 200:
                        errors.append(got)
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(repr(e))
        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual(errors, [])

    def test_metrics_count_http_calls(self):
        self.call("GET", "/v1/datasets/metrics-none")
        self.call("GET", "/v1/datasets/metrics-none")
        status, text, _ = self.call("GET", "/metrics")
        self.assertEqual(status, 200)
        line = [l for l in text.splitlines()
                if l.startswith('cbloss_requests_total{method="GetDataset",code="NOT_FOUND"}')]
        self.assertEqual(len(line), 1, text)
        self.assertGreaterEqual(int(line[0].split()[-1]), 2)


class HttpLimitsTest(ServerTestCase):
    def test_body_limit(self):
        server = self.new_server(HttpServer, extra_flags=["--max_message_mb=1"])
        server.start()
        status, body, _ = server.call("POST", "/v1/loss", raw=b" " * (1024 * 1024 + 10))
        self.assertEqual(status, 413)
        self.assertEqual(body["status"], "RESOURCE_EXHAUSTED")
        self.assertEqual(body["code"], 8)
        status, _, _ = server.call("POST", "/v1/weights", raw=b"{}" + b" " * 1000)
        self.assertEqual(status, 400)  # no source: a validation error, not the limit

    def test_drain_on_sigterm(self):
        server = self.new_server(HttpServer)
        server.start()
        self.assertEqual(server.call("GET", "/readyz")[0], 200)
        server.proc.send_signal(signal.SIGTERM)
        self.assertEqual(server.proc.wait(30), 0)


class HttpTokensTest(ServerTestCase):
    def test_same_tokens_and_refusals_as_grpc(self):
        tmp = self.tmpdir()
        admin = write_token(os.path.join(tmp, "admin"), "admin-secret-4711")
        compute = write_token(os.path.join(tmp, "compute"), "compute-secret-0815")
        server = self.new_server(HttpServer, extra_flags=[
            "--admin_token_file=%s" % admin, "--compute_token_file=%s" % compute])
        server.start()
        body = {"classCounts": [3, 1]}
        status, got, _ = server.call("PUT", "/v1/datasets/tok", body)
        self.assertEqual((status, got["status"]), (401, "UNAUTHENTICATED"))
        with self.assertRaises(grpc.RpcError) as e:
            server.stub.PutDataset(pb.PutDatasetRequest(
                dataset=pb.Dataset(name="tok", class_counts=[3, 1])), timeout=T)
        self.assertEqual(got["message"], e.exception.details())
        status, got, _ = server.call("PUT", "/v1/datasets/tok", body,
                                     token="compute-secret-0815")
        self.assertEqual((status, got["status"], got["code"]), (403, "PERMISSION_DENIED", 7))
        status, got, _ = server.call("PUT", "/v1/datasets/tok", body, token="admin-secret-4711")
        self.assertEqual(status, 200, got)
        self.assertEqual(server.call("GET", "/v1/datasets/tok")[0], 401)
        self.assertEqual(server.call("GET", "/v1/datasets/tok", token="wrong")[0], 401)
        self.assertEqual(server.call("GET", "/v1/datasets/tok",
                                     token="compute-secret-0815")[0], 200)
        status, got, _ = server.call("POST", "/v1/weights", {"dataset": "tok"},
                                     token="compute-secret-0815")
        np.testing.assert_allclose(got["weights"],
                                   effective_number_weights([3, 1], 0.9999), rtol=1e-12)
        # Creating a run needs the admin token; accumulating the compute one.
        self.assertEqual(server.call("POST", "/v1/runs", {"name": "tr", "dataset": "tok"},
                                     token="compute-secret-0815")[0], 403)
        self.assertEqual(server.call("POST", "/v1/runs", {"name": "tr", "dataset": "tok"},
                                     token="admin-secret-4711")[0], 200)
        acc = {"run": "tr", "accumulate": True,
               "logits": {"shape": [1, 2], "floatData": [0, 0]}, "labels": [1]}
        self.assertEqual(server.call("POST", "/v1/loss", acc)[0], 401)
        self.assertEqual(server.call("POST", "/v1/loss", acc,
                                     token="compute-secret-0815")[0], 200)


if __name__ == "__main__":
    unittest.main()


class HttpDocsTest(ServerTestCase):
    """docs/HTTP.md's curl examples, replayed in order against a server."""

    def test_curl_examples(self):
        docs = os.environ.get("CBLOSS_DOCS") or os.path.join(
            os.path.dirname(os.path.abspath(__file__)), "..", "..", "docs")
        with open(os.path.join(docs, "HTTP.md")) as f:
            text = f.read()
        blocks = re.findall(r"```sh\n(.*?)```", text, re.S)
        self.assertGreaterEqual(len(blocks), 5)
        server = self.new_server(HttpServer)
        server.start()
        script = "set -euo pipefail\n" + "\necho\n".join(blocks)
        env = dict(os.environ, HTTP="http://127.0.0.1:%d" % server.http_port)
        done = subprocess.run(["bash", "-c", script], capture_output=True, env=env,
                              timeout=120)
        out = done.stdout.decode()
        self.assertEqual(done.returncode, 0, out + done.stderr.decode())
        self.assertIn('{"code":5,"status":"NOT_FOUND","message":"dataset \'nope\' not found"}'
                      '\n404\n', out)
        # The weights of the first example: effective number at beta 0.999
        # over the counts after addClassCounts (5000, 2000, 101, 12).
        weights = [json.loads(l) for l in out.splitlines()
                   if l.startswith('{"weights"')]
        self.assertEqual(len(weights), 2)
        np.testing.assert_allclose(weights[0]["weights"],
                                   effective_number_weights([5000, 2000, 101, 12], 0.999),
                                   rtol=1e-12)
        np.testing.assert_allclose(weights[1]["weights"], [2 / 11, 20 / 11], rtol=1e-12)
        runs = [json.loads(l) for l in out.splitlines() if '"name":"demo-run"' in l]
        self.assertEqual([int(c) for c in runs[-1]["statistics"]["seenCounts"]],
                         [0, 0, 0, 1])


class HttpTlsTest(ServerTestCase):
    """--tls_cert/--tls_key make the HTTP port HTTPS with the same
    certificate; --tls_client_ca requires a client certificate there too."""

    def test_https_and_mutual_tls(self):
        import http.client
        import ssl
        from prod_support import ProdServer, channel_credentials, make_certificates
        certs = make_certificates(self.tmpdir())
        http_port_file = os.path.join(self.tmpdir(), "tls.http_port")
        server = self.new_server(
            ProdServer, credentials=channel_credentials(certs, "client"),
            extra_flags=["--tls_cert=%s" % certs["server"],
                         "--tls_key=%s" % certs["server.key"],
                         "--tls_client_ca=%s" % certs["ca"],
                         "--http_listen=127.0.0.1:0",
                         "--http_port_file=%s" % http_port_file])
        server.start()
        port = server.wait_port_file(http_port_file, time.monotonic() + 20)

        def get(context):
            conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=20,
                                               context=context)
            try:
                conn.request("GET", "/readyz")
                return conn.getresponse().status
            finally:
                conn.close()
        context = ssl.create_default_context(cafile=certs["ca"])
        context.load_cert_chain(certs["client"], certs["client.key"])
        self.assertEqual(get(context), 200)
        no_client_cert = ssl.create_default_context(cafile=certs["ca"])
        with self.assertRaises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
            get(no_client_cert)
        # Plain HTTP to the HTTPS port gets no answer.
        plain = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        with self.assertRaises((ConnectionError, http.client.HTTPException, OSError)):
            plain.request("GET", "/readyz")
            plain.getresponse().read()
        plain.close()
