"""Three replicas on one PostgreSQL store behave as one service.

Each test starts its own throwaway PostgreSQL (tests/store/pg_server.py:
initdb in a temp dir, loopback only, an unprivileged user) and three
cbloss-server processes with --store=postgresql://... . Writes go through
one replica; GetDataset and ComputeLoss (naming the dataset, with
expected_dataset_version) on the others must see them within one second
(the measured propagation times are printed). expected_version holds across
replicas, concurrent AddClassCounts through different replicas lose
nothing, a SIGKILLed replica restarts on the shared data, and a database
restart under load yields only correct answers or UNAVAILABLE, then
recovers.
"""

import os
import sys
import threading
import time
import unittest

import grpc
import numpy as np

from server_fixture import RPC_TIMEOUT_S, ServerTestCase, pb, tensor_f32

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "store"))
from pg_server import PgServer  # noqa: E402

PROPAGATION_BOUND_S = 1.0  # the bound
POLL_TIMEOUT_S = 10.0  # generous overall bound of each wait
T = RPC_TIMEOUT_S
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE

LOGITS = np.array([[2.0, -1.0, 0.5], [0.1, 0.2, 0.3], [-1.0, 3.0, 0.0],
                   [0.0, 0.0, 1.0]], dtype=np.float32)
LABELS = [0, 1, 2, 1]


def compute_request(**kwargs):
    return pb.ComputeLossRequest(logits=tensor_f32(LOGITS), labels=LABELS, **kwargs)


class PgReplicasTest(ServerTestCase):
    def setUp(self):
        super().setUp()
        self.pg = PgServer()
        self.addCleanup(self.pg.destroy)
        self.dsn = self.pg.start()

    def start_replicas(self, n=3, flags=()):
        replicas = []
        for _ in range(n):
            server = self.new_server(extra_flags=["--store=" + self.dsn] + list(flags))
            server.start()
            replicas.append(server)
        return replicas

    def wait_for(self, what, predicate):
        """Polls predicate() until true; returns the seconds it took."""
        start = time.monotonic()
        while True:
            if predicate():
                return time.monotonic() - start
            if time.monotonic() - start > POLL_TIMEOUT_S:
                self.fail("%s: not after %.0f s" % (what, POLL_TIMEOUT_S))
            time.sleep(0.002)

    def sees_version(self, server, name, version):
        try:
            return server.stub.GetDataset(pb.GetDatasetRequest(name=name),
                                          timeout=T).version == version
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                return False
            raise

    def computes_with_version(self, server, name, version):
        try:
            resp = server.stub.ComputeLoss(
                compute_request(dataset=name, expected_dataset_version=version), timeout=T)
        except grpc.RpcError as e:
            if e.code() in (grpc.StatusCode.ABORTED, grpc.StatusCode.NOT_FOUND):
                return False
            raise
        return resp.dataset_version == version

    def test_writes_through_one_replica_are_used_by_the_others(self):
        a, b, c = self.start_replicas()
        put = a.stub.PutDataset(pb.PutDatasetRequest(
            dataset=pb.Dataset(name="shared", class_counts=[100, 10, 1]), expected_version=0),
            timeout=T)
        self.assertEqual(put.version, 1)
        times = []
        for s in (b, c):
            times.append(self.wait_for("GetDataset v1 on another replica",
                                       lambda s=s: self.sees_version(s, "shared", 1)))

        added = b.stub.AddClassCounts(pb.AddClassCountsRequest(
            name="shared", deltas=[0, 90, 99]), timeout=T)
        self.assertEqual(added.version, 2)
        self.assertEqual(list(added.class_counts), [100, 100, 100])
        for s in (a, c):
            times.append(self.wait_for("ComputeLoss with v2 on another replica",
                                       lambda s=s: self.computes_with_version(s, "shared", 2)))
        # The loss is the one of the new counts, on every replica.
        inline = a.stub.ComputeLoss(compute_request(
            class_counts=pb.ClassCounts(counts=[100, 100, 100])), timeout=T).loss
        for s in (a, b, c):
            resp = s.stub.ComputeLoss(compute_request(dataset="shared"), timeout=T)
            self.assertEqual(resp.dataset_version, 2)
            self.assertEqual(resp.loss, inline)
            got = s.stub.GetDataset(pb.GetDatasetRequest(name="shared"), timeout=T)
            self.assertEqual(list(got.class_counts), [100, 100, 100])
            listed = s.stub.ListDatasets(pb.ListDatasetsRequest(), timeout=T)
            self.assertEqual([(d.name, d.version) for d in listed.datasets], [("shared", 2)])

        # expected_version holds across replicas: c's view is version 2.
        self.assertRpcError(grpc.StatusCode.ABORTED, c.stub.PutDataset, pb.PutDatasetRequest(
            dataset=pb.Dataset(name="shared", class_counts=[1, 1, 1]), expected_version=1),
            contains="is at version 2")
        self.assertRpcError(grpc.StatusCode.ABORTED, a.stub.PutDataset, pb.PutDatasetRequest(
            dataset=pb.Dataset(name="shared", class_counts=[1, 1, 1]), expected_version=0),
            contains="already exists at version 2")
        v3 = c.stub.PutDataset(pb.PutDatasetRequest(
            dataset=pb.Dataset(name="shared", class_counts=[5, 6, 7]), expected_version=2),
            timeout=T)
        self.assertEqual(v3.version, 3)
        times.append(self.wait_for("GetDataset v3 on a",
                                   lambda: self.sees_version(a, "shared", 3)))

        # Deletes propagate too.
        b.stub.DeleteDataset(pb.DeleteDatasetRequest(name="shared", expected_version=3),
                             timeout=T)

        def gone(s):
            try:
                s.stub.GetDataset(pb.GetDatasetRequest(name="shared"), timeout=T)
                return False
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.NOT_FOUND:
                    raise
                return True
        for s in (a, c):
            times.append(self.wait_for("delete seen", lambda s=s: gone(s)))
        sys.stderr.write("propagation times (s): %s; max %.4f\n"
                         % (", ".join("%.4f" % t for t in times), max(times)))
        for t in times:
            self.assertLess(t, PROPAGATION_BOUND_S)

    def test_concurrent_add_class_counts_on_three_replicas_lose_nothing(self):
        replicas = self.start_replicas()
        replicas[0].stub.PutDataset(pb.PutDatasetRequest(
            dataset=pb.Dataset(name="counts", class_counts=[0, 0])), timeout=T)
        calls = 40
        errors = []

        def work(server, label):
            stub = server.stub
            for _ in range(calls):
                try:
                    stub.AddClassCounts(pb.AddClassCountsRequest(
                        name="counts", labels=[label], deltas=[1, 0]), timeout=T)
                except grpc.RpcError as e:  # any failure fails the test
                    errors.append("%s: %s" % (e.code(), e.details()))
        threads = [threading.Thread(target=work, args=(s, i % 2))
                   for i, s in enumerate(replicas + replicas)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        n = len(threads) * calls
        label1 = sum(calls for i in range(len(threads)) if i % 2 == 1)
        for s in replicas:
            self.wait_for("final version everywhere",
                          lambda s=s: self.sees_version(s, "counts", 1 + n))
            got = s.stub.GetDataset(pb.GetDatasetRequest(name="counts"), timeout=T)
            self.assertEqual(list(got.class_counts), [n + (n - label1), label1])

    def test_killed_replica_restarts_on_the_shared_store(self):
        a, b, c = self.start_replicas()
        a.stub.PutDataset(pb.PutDatasetRequest(
            dataset=pb.Dataset(name="d", class_counts=[3, 4])), timeout=T)
        b.kill()
        c.stub.AddClassCounts(pb.AddClassCountsRequest(name="d", labels=[1, 1]), timeout=T)
        b.start()
        got = b.stub.GetDataset(pb.GetDatasetRequest(name="d"), timeout=T)
        self.assertEqual((got.version, list(got.class_counts)), (2, [3, 6]))
        # The restarted replica writes, the others see it.
        b.stub.AddClassCounts(pb.AddClassCountsRequest(name="d", labels=[0]), timeout=T)
        for s in (a, c):
            self.wait_for("b's write", lambda s=s: self.sees_version(s, "d", 3))

    def test_password_is_never_logged(self):
        # Local connections are trusted, so any password works; it must not
        # appear in the logs. --store_file keeps it off the command line.
        dsn = self.dsn.replace("postgres@", "postgres:s3cret-pw@")
        store_file = os.path.join(self.tmpdir(), "store-dsn")
        with open(store_file, "w") as f:
            f.write(dsn + "\n")
        s = self.new_server(extra_flags=["--store_file=" + store_file])
        s.start()
        s.stub.PutDataset(pb.PutDatasetRequest(
            dataset=pb.Dataset(name="p", class_counts=[1])), timeout=T)
        s.stop()
        self.assertNotIn("s3cret-pw", s.all_stderr())
        self.assertIn("postgres:***@127.0.0.1", s.all_stderr())
        # Both flags at once is a usage error.
        bad = self.new_server(extra_flags=["--store_file=" + store_file,
                                           "--store=" + self.dsn])
        bad.launch()
        self.assertEqual(bad.wait_exit(20), 2)

    def test_database_restart_under_load(self):
        replicas = self.start_replicas()
        replicas[0].stub.PutDataset(pb.PutDatasetRequest(
            dataset=pb.Dataset(name="load", class_counts=[0, 5, 5])), timeout=T)
        for s in replicas:
            self.wait_for("dataset everywhere", lambda s=s: self.sees_version(s, "load", 1))
        stop = threading.Event()
        lock = threading.Lock()
        stats = {"acked": 0, "failed_writes": 0, "ok_reads": 0, "unavailable": 0}
        wrong = []

        # Each AddClassCounts adds one to class 0, so every correct answer
        # has class_counts == [version - 1, 5, 5].
        def check(d, where):
            if list(d.class_counts) != [d.version - 1, 5, 5]:
                wrong.append("%s: version %d counts %s" % (where, d.version,
                                                           list(d.class_counts)))

        def writer():
            while not stop.is_set():
                try:
                    d = replicas[0].stub.AddClassCounts(
                        pb.AddClassCountsRequest(name="load", labels=[0]), timeout=T)
                    check(d, "AddClassCounts")
                    with lock:
                        stats["acked"] += 1
                except grpc.RpcError as e:
                    with lock:
                        stats["failed_writes"] += 1
                    if e.code() != UNAVAILABLE:
                        wrong.append("AddClassCounts: %s %s" % (e.code(), e.details()))
                    time.sleep(0.01)

        def reader(server):
            while not stop.is_set():
                try:
                    d = server.stub.GetDataset(pb.GetDatasetRequest(name="load"), timeout=T)
                    check(d, "GetDataset")
                    resp = server.stub.ComputeLoss(compute_request(
                        dataset="load", expected_dataset_version=d.version), timeout=T)
                    # ABORTED would mean a newer version arrived meanwhile.
                    with lock:
                        stats["ok_reads"] += 1
                    del resp
                except grpc.RpcError as e:
                    if e.code() == UNAVAILABLE:
                        with lock:
                            stats["unavailable"] += 1
                        time.sleep(0.01)
                    elif e.code() != grpc.StatusCode.ABORTED:
                        wrong.append("read: %s %s" % (e.code(), e.details()))

        threads = [threading.Thread(target=writer)] + [
            threading.Thread(target=reader, args=(s,)) for s in replicas]
        for t in threads:
            t.start()
        try:
            # Some writes acknowledged, and some refused while PostgreSQL is
            # down, however slow a loaded machine makes the threads.
            time.sleep(1.0)
            self.wait_for("writes before the stop", lambda: stats["acked"] > 0)
            before = stats["acked"]
            self.pg.stop(mode="fast")
            time.sleep(1.5)
            self.wait_for("refusals while PostgreSQL is down",
                          lambda: stats["unavailable"] + stats["failed_writes"] > 0)
            during = dict(stats)
            self.pg.start()
            # Recovers: writes succeed again.
            self.wait_for("a write after the restart",
                          lambda: stats["acked"] > during["acked"] + 5)
            time.sleep(0.5)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=60)
        sys.stderr.write("restart under load: %s (acked before stop %d)\n" % (stats, before))
        self.assertEqual(wrong, [])
        self.assertGreater(before, 0)
        self.assertGreater(stats["unavailable"] + stats["failed_writes"], 0)
        # Every replica recovers (reads stop being UNAVAILABLE).
        def reads_ok(s):
            try:
                s.stub.GetDataset(pb.GetDatasetRequest(name="load"), timeout=T)
                return True
            except grpc.RpcError as e:
                if e.code() != UNAVAILABLE:
                    raise
                return False
        for s in replicas:
            took = self.wait_for("reads recover", lambda s=s: reads_ok(s))
            sys.stderr.write("reads recovered %.3f s after the load stopped\n" % took)
        # Every acknowledged write is there; an UNAVAILABLE one may or may
        # not have committed. All replicas agree.
        final = replicas[0].stub.GetDataset(pb.GetDatasetRequest(name="load"), timeout=T)
        self.assertGreaterEqual(final.version - 1, stats["acked"])
        self.assertLessEqual(final.version - 1, stats["acked"] + stats["failed_writes"])
        for s in replicas[1:]:
            self.wait_for("replicas agree after the restart",
                          lambda s=s: self.sees_version(s, "load", final.version))


if __name__ == "__main__":
    unittest.main()
