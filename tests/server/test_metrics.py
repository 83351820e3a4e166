"""Prometheus metrics of cbloss-server (--metrics_listen, docs/DEPLOY.md).

A fresh server gets a known sequence of calls; the scraped counters must be
exactly what that sequence implies (counted here, from the calls made), and
the histogram must be a well-formed cumulative histogram of those calls.
"""

import json
import os
import queue
import time
import unittest
import urllib.error
import urllib.request

import grpc
import numpy as np

from prod_support import ProdServer, bearer, parse_metrics, sample, write_token
from server_fixture import (RPC_TIMEOUT_S as T, SAMPLE_DATASETS_FILE, ServerTestCase,
                            health_check, pb, tensor_f32)

ADMIN_TOKEN = "metrics-admin-3c9a1f0e7b2d4a65"
BUCKETS = ["0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25",
           "0.5", "1", "2.5", "5", "10", "+Inf"]


def request(rows, classes, labels):
    rng = np.random.default_rng(rows * 100 + classes)
    logits = rng.standard_normal((rows, classes)).astype(np.float32)
    return pb.ComputeLossRequest(class_counts=pb.ClassCounts(counts=list(range(10, 10 + classes))),
                                 config=pb.LossConfig(loss_type=pb.LOSS_TYPE_FOCAL),
                                 logits=tensor_f32(logits), labels=labels)


class MetricsTest(ServerTestCase):
    def setUp(self):
        super().setUp()
        token_file = write_token(os.path.join(self.tmpdir(), "admin"), ADMIN_TOKEN)
        self.server = ProdServer(self.tmpdir(), name="m", metrics=True,
                                 datasets_file=SAMPLE_DATASETS_FILE,
                                 extra_flags=["--admin_token_file=" + token_file])
        self._servers.append(self.server)
        self.server.start()
        self.stub = self.server.stub
        with open(SAMPLE_DATASETS_FILE) as f:
            self.sample_datasets = len(json.load(f)["datasets"])

    def scrape(self):
        text, content_type = self.server.scrape()
        self.assertTrue(content_type.startswith("text/plain; version=0.0.4"), content_type)
        return parse_metrics(text)

    def scrape_when_idle(self, timeout_s=10.0):
        """Scrapes once the in-flight gauge reads 0 (or the timeout passes).

        The fixture's readiness health check counts as in flight until the
        server has torn the call down, which can be just after the client has
        its answer; on a loaded machine a scrape can land in between."""
        deadline = time.monotonic() + timeout_s
        while True:
            m = self.scrape()
            if sample(m, "cbloss_in_flight_calls") == 0 or time.monotonic() > deadline:
                return m
            time.sleep(0.05)

    def test_fresh_server(self):
        m = self.scrape_when_idle()
        self.assertEqual(sample(m, "cbloss_build_info", version="0.1.0"), 1)
        self.assertEqual(sample(m, "cbloss_datasets"), self.sample_datasets)
        self.assertEqual(sample(m, "cbloss_in_flight_calls"), 0)
        self.assertEqual(sample(m, "cbloss_elements_computed_total"), 0)
        self.assertIn(("cbloss_elements_computed_total", frozenset()), m)
        # The readiness health checks are not LossService calls.
        self.assertEqual([k for k in m if k[0].startswith("cbloss_request")], [])

    def test_counts_after_a_known_sequence_of_calls(self):
        ok_elements = 0
        for rows in (2, 3, 5):  # 3 OK ComputeLoss calls, C = 4
            labels = [r % 4 for r in range(rows)]
            self.stub.ComputeLoss(request(rows, 4, labels), timeout=T)
            ok_elements += rows * 4
        for _ in range(2):  # label 7 is outside [0, 4): INVALID_ARGUMENT
            with self.assertRaises(grpc.RpcError) as e:
                self.stub.ComputeLoss(request(2, 4, [0, 7]), timeout=T)
            self.assertEqual(e.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.stub.GetDataset(pb.GetDatasetRequest(name="cifar10-lt"), timeout=T)
        with self.assertRaises(grpc.RpcError) as e:
            self.stub.GetDataset(pb.GetDatasetRequest(name="absent"), timeout=T)
        self.assertEqual(e.exception.code(), grpc.StatusCode.NOT_FOUND)
        ds = pb.PutDatasetRequest(dataset=pb.Dataset(name="metered", class_counts=[3, 2, 1]))
        with self.assertRaises(grpc.RpcError) as e:
            self.stub.PutDataset(ds, timeout=T)
        self.assertEqual(e.exception.code(), grpc.StatusCode.UNAUTHENTICATED)
        self.stub.PutDataset(ds, timeout=T, metadata=bearer(ADMIN_TOKEN))
        # One stream, two good requests (3 x 4 each) and one bad one (in-band).
        responses = list(self.stub.StreamLoss(
            iter([request(3, 4, [0, 1, 2]), request(3, 4, [0, 9, 2]),
                  request(3, 4, [3, 3, 3])]), timeout=T))
        self.assertEqual([r.error_code for r in responses], [0, 3, 0])
        ok_elements += 2 * 3 * 4
        health_check(self.server.channel)

        m = self.scrape_when_idle()
        expected = {
            ("ComputeLoss", "OK"): 3,
            ("ComputeLoss", "INVALID_ARGUMENT"): 2,
            ("GetDataset", "OK"): 1,
            ("GetDataset", "NOT_FOUND"): 1,
            ("PutDataset", "UNAUTHENTICATED"): 1,
            ("PutDataset", "OK"): 1,
            ("StreamLoss", "OK"): 1,
        }
        got = {(dict(labels)["method"], dict(labels)["code"]): value
               for (name, labels), value in m.items() if name == "cbloss_requests_total"}
        self.assertEqual(got, expected)
        self.assertEqual(sample(m, "cbloss_elements_computed_total"), ok_elements)
        self.assertEqual(sample(m, "cbloss_datasets"), self.sample_datasets + 1)
        self.assertEqual(sample(m, "cbloss_in_flight_calls"), 0)

        calls_per_method = {"ComputeLoss": 5, "GetDataset": 2, "PutDataset": 2, "StreamLoss": 1}
        for method, calls in calls_per_method.items():
            with self.subTest(method):
                buckets = [sample(m, "cbloss_request_duration_seconds_bucket",
                                  method=method, le=le) for le in BUCKETS]
                les = sorted(dict(labels)["le"] for (name, labels) in m
                             if name == "cbloss_request_duration_seconds_bucket"
                             and dict(labels)["method"] == method)
                self.assertEqual(les, sorted(BUCKETS))
                self.assertEqual(buckets[-1], calls)
                self.assertEqual(buckets, sorted(buckets))  # cumulative
                self.assertEqual(sample(m, "cbloss_request_duration_seconds_count",
                                        method=method), calls)
                self.assertGreater(sample(m, "cbloss_request_duration_seconds_sum",
                                          method=method), 0.0)
        methods = {dict(labels)["method"] for (name, labels) in m
                   if name == "cbloss_request_duration_seconds_count"}
        self.assertEqual(methods, set(calls_per_method))

    def test_open_stream_is_in_flight(self):
        requests = queue.Queue()
        end = object()
        stream = self.stub.StreamLoss(iter(requests.get, end), timeout=T)
        requests.put(request(2, 4, [0, 1]))
        self.assertEqual(next(stream).error_code, 0)
        m = self.scrape()
        self.assertEqual(sample(m, "cbloss_in_flight_calls"), 1)
        self.assertEqual(sample(m, "cbloss_elements_computed_total"), 8)
        requests.put(end)
        self.assertEqual(list(stream), [])
        m = self.scrape()
        self.assertEqual(sample(m, "cbloss_requests_total", method="StreamLoss", code="OK"), 1)

    def test_other_paths_are_404(self):
        url = "http://127.0.0.1:%d/nothing" % self.server.metrics_port
        with self.assertRaises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(url, timeout=10)
        self.assertEqual(e.exception.code, 404)


class MetricsFlagsTest(ServerTestCase):
    def test_bad_metrics_listen(self):
        for flag, code in (("--metrics_listen=no-port", 1), ("--metrics_listen=127.0.0.1:99999", 1),
                           ("--metrics_listen=203.0.113.1:0", 1)):
            with self.subTest(flag):
                server = self.new_server(extra_flags=[flag])
                proc = server.launch()
                self.assertEqual(proc.wait(timeout=30), code, server.stderr())
                self.assertIn("metrics_listen", server.stderr())

    def test_metrics_port_in_use(self):
        first = ProdServer(self.tmpdir(), name="first", metrics=True)
        self._servers.append(first)
        first.start()
        second = self.new_server(
            extra_flags=["--metrics_listen=127.0.0.1:%d" % first.metrics_port])
        proc = second.launch()
        self.assertEqual(proc.wait(timeout=30), 1, second.stderr())
        self.assertIn("cannot listen on --metrics_listen", second.stderr())


if __name__ == "__main__":
    unittest.main()
