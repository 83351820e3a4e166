"""Three replicas behind client-side round robin; one dies mid-run.

Three cbloss-server processes on 127.0.0.1 load the same datasets file.
`cbloss bench` drives ComputeLoss at ipv4:127.0.0.1:a,127.0.0.1:b,127.0.0.1:c
(round_robin, retries on UNAVAILABLE). Once every replica has served calls,
one is SIGKILLed; the bench must finish with zero failed calls, and the two
survivors must share the calls made after the kill (each replica's
cbloss_requests_total from its /metrics endpoint).

Batches are small (16 x 10 floats), far below gRPC's 256 KiB retry buffer, so
a call cut by the kill is retried on a survivor. The Python client gets the
same test, and --max_connection_age_ms (how clients rebalance after a
scale-up) one of its own.
"""

import json
import os
import queue
import subprocess
import time
import unittest

import grpc
import numpy as np

from prod_support import CLI_BINARY, ProdServer, parse_metrics, sample
from server_fixture import (RPC_TIMEOUT_S, SAMPLE_DATASETS_FILE, ServerTestCase, pb,
                            tensor_f32)

BENCH_SECONDS = 12
PHASE_TIMEOUT_S = 20  # bound on each wait below; the test stays < 60 s
CALLS_BEFORE_KILL = 30  # per replica
CALLS_AFTER_KILL = 60  # on the survivors together


def computed(server):
    m = parse_metrics(server.scrape()[0])
    return int(sample(m, "cbloss_requests_total", method="ComputeLoss", code="OK"))


def start_replicas(test, prefix, count=3):
    """`count` started replicas with metrics and the sample datasets, killed
    after the test."""
    return [test.new_server(ProdServer, name="%s%d" % (prefix, i), metrics=True,
                            datasets_file=SAMPLE_DATASETS_FILE).start()
            for i in range(count)]


class ReplicasTest(ServerTestCase):
    def wait_until(self, what, predicate, bench):
        deadline = time.monotonic() + PHASE_TIMEOUT_S
        while not predicate():
            if bench.poll() is not None:
                self.fail("the bench ended before %s:\n%s" % (what, bench.stderr.read()))
            if time.monotonic() > deadline:
                self.fail("no %s after %d s" % (what, PHASE_TIMEOUT_S))
            time.sleep(0.05)

    def test_survivors_take_over_without_failed_calls(self):
        if not CLI_BINARY or not os.path.exists(CLI_BINARY):
            raise RuntimeError("CBLOSS_CLI must name the cbloss binary (got %r)" % CLI_BINARY)
        replicas = start_replicas(self, "replica")
        target = "ipv4:" + ",".join(s.target for s in replicas)
        bench = subprocess.Popen(
            [CLI_BINARY, "--target", target, "--timeout", "10", "--json", "bench",
             "--duration", str(BENCH_SECONDS), "--concurrency", "4",
             "--dataset", "cifar10-lt", "--batch", "16"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            self.wait_until("calls on every replica",
                            lambda: all(computed(s) >= CALLS_BEFORE_KILL for s in replicas),
                            bench)
            victim, survivors = replicas[1], [replicas[0], replicas[2]]
            victim.kill()
            at_kill = [computed(s) for s in survivors]
            self.wait_until(
                "calls on the survivors after the kill",
                lambda: sum(computed(s) for s in survivors) - sum(at_kill) >= CALLS_AFTER_KILL,
                bench)
            out, err = bench.communicate(timeout=BENCH_SECONDS + 30)
        finally:
            if bench.poll() is None:
                bench.kill()
                bench.wait()
        self.assertEqual(bench.returncode, 0, err)
        report = json.loads(out)
        self.assertEqual(report["errors"], 0, report["error_samples"])
        self.assertGreater(report["requests"], 3 * CALLS_BEFORE_KILL + CALLS_AFTER_KILL)
        after = [computed(s) - k for s, k in zip(survivors, at_kill)]
        # Round robin over two live replicas: each gets about half; a quarter
        # each is the bar for "shared".
        for i, n in enumerate(after):
            self.assertGreaterEqual(n, sum(after) // 4,
                                    "survivor %d took %d of %d calls after the kill"
                                    % (i, n, sum(after)))
        for s in survivors:
            m = parse_metrics(s.scrape()[0])
            failed = {dict(l)["code"]: v for (name, l), v in m.items()
                      if name == "cbloss_requests_total" and dict(l)["code"] != "OK"}
            self.assertEqual(failed, {})


class PythonClientReplicasTest(ServerTestCase):
    """The same with the Python client's defaults (round robin, retries)."""

    def test_python_client_survives_a_dead_replica(self):
        import cbloss  # build/python, on PYTHONPATH
        replicas = start_replicas(self, "py")
        client = cbloss.Client("ipv4:" + ",".join(s.target for s in replicas), timeout=10)
        self.addCleanup(client.close)
        rng = np.random.default_rng(7)
        logits = rng.standard_normal((8, 10)).astype(np.float32)
        labels = list(range(8))
        failures = []
        for _ in range(60):
            client.compute_loss(logits, labels, dataset="cifar10-lt")
        self.assertEqual([computed(s) > 0 for s in replicas], [True, True, True])
        victim, survivors = replicas[0], replicas[1:]
        victim.kill()
        at_kill = [computed(s) for s in survivors]
        for _ in range(90):
            try:
                client.compute_loss(logits, labels, dataset="cifar10-lt")
            except cbloss.CblossError as e:
                failures.append(str(e))
        self.assertEqual(failures, [])
        after = [computed(s) - k for s, k in zip(survivors, at_kill)]
        self.assertEqual(sum(after), 90)
        for n in after:
            self.assertGreaterEqual(n, 90 // 4)


class ConnectionAgeTest(ServerTestCase):
    """--max_connection_age_ms: connections are closed (GOAWAY) after that
    age, so clients reconnect and re-resolve; a stream older than age +
    grace is cut with UNAVAILABLE and unary calls go on over a new
    connection."""

    def test_old_stream_is_cut_and_new_calls_reconnect(self):
        server = self.start_server(extra_flags=["--max_connection_age_ms=300",
                                                "--max_connection_age_grace_ms=300"])
        self.assertIn("max_connection_age_ms=300", server.stderr())
        counts = pb.ClassCounts(counts=[5, 3, 1])
        weights = pb.GetClassWeightsRequest(class_counts=counts)
        server.stub.GetClassWeights(weights, timeout=RPC_TIMEOUT_S)
        requests, end = queue.Queue(), object()
        stream = server.stub.StreamLoss(iter(requests.get, end), timeout=RPC_TIMEOUT_S)
        requests.put(pb.ComputeLossRequest(
            class_counts=counts, logits=tensor_f32(np.zeros((1, 3), np.float32)), labels=[0]))
        self.assertEqual(next(stream).error_code, 0)
        # No more requests: the stream stays open until the server cuts it.
        with self.assertRaises(grpc.RpcError) as e:
            next(stream)
        self.assertEqual(e.exception.code(), grpc.StatusCode.UNAVAILABLE)
        requests.put(end)
        # The channel reconnects for new calls.
        server.stub.GetClassWeights(weights, timeout=RPC_TIMEOUT_S)

    def test_negative_age_is_refused(self):
        for flag in ("--max_connection_age_ms=-1", "--max_connection_age_grace_ms=-5",
                     "--max_connection_age_ms=4294967296"):
            with self.subTest(flag):
                server = self.new_server(extra_flags=[flag])
                self.assertEqual(server.launch().wait(timeout=30), 2, server.stderr())


if __name__ == "__main__":
    unittest.main()
