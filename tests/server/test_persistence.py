"""Durability and lifecycle of cbloss-server: acknowledged writes survive
SIGKILL, SIGTERM drains in-flight calls and exits 0, --datasets_file loading."""

import json
import math
import os
import signal
import sys
import threading
import time
import unittest

import grpc
import numpy as np
from google.protobuf import json_format

from server_fixture import (HEALTH_SERVING, RPC_TIMEOUT_S, SAMPLE_DATASETS_FILE,
                            ServerTestCase, health_check, pb, tensor_f32)

T = RPC_TIMEOUT_S

BASE = [3, 1, 4]
STEP = [1, 2, 3]


def counts_at(version):
    """Counts of the dataset "main" at `version`: every write keeps
    counts == BASE + (version - 1) * STEP, so a torn write shows."""
    return [b + (version - 1) * s for b, s in zip(BASE, STEP)]


class Writer(threading.Thread):
    """Sequential writes, recording every acknowledged response. Stops at the
    first error once `killing` is set; an error before that is a failure."""

    def __init__(self, stub, main_version, round_index):
        super().__init__(daemon=True)
        self.stub = stub
        self.main_version = main_version
        self.round = round_index
        self.killing = threading.Event()
        self.stop_now = threading.Event()
        self.acked_main = None  # last acknowledged (version, counts) of "main"
        self.created = {}  # name -> acknowledged Dataset
        self.deleted = set()  # acknowledged deletions
        # A deletion in flight at the kill may or may not have committed.
        self.delete_in_flight = None
        self.unexpected = []
        self.acks = 0

    def run(self):
        i = 0
        while not self.stop_now.is_set():
            op = i % 5
            try:
                if op in (0, 2):
                    got = self.stub.AddClassCounts(
                        pb.AddClassCountsRequest(name="main", deltas=STEP), timeout=5)
                    self._ack_main(got)
                elif op == 1:
                    labels = [j for j, s in enumerate(STEP) for _ in range(s)]
                    got = self.stub.AddClassCounts(
                        pb.AddClassCountsRequest(name="main", labels=labels), timeout=5)
                    self._ack_main(got)
                elif op == 3:
                    v = self.main_version
                    got = self.stub.PutDataset(pb.PutDatasetRequest(
                        dataset=pb.Dataset(name="main", class_counts=counts_at(v + 1)),
                        expected_version=v), timeout=5)
                    self._ack_main(got)
                else:
                    name = "r%d-n%05d" % (self.round, i)
                    got = self.stub.PutDataset(pb.PutDatasetRequest(
                        dataset=pb.Dataset(name=name, class_counts=[i, i + 1]),
                        expected_version=0), timeout=5)
                    if list(got.class_counts) != [i, i + 1] or got.version != 1:
                        self.unexpected.append("bad create response %s" % got)
                    self.created[name] = got
                    self.acks += 1
                    # Delete every other created dataset, also acknowledged.
                    if (i // 5) % 2 == 1:
                        self.delete_in_flight = name
                        self.stub.DeleteDataset(pb.DeleteDatasetRequest(name=name), timeout=5)
                        self.delete_in_flight = None
                        self.deleted.add(name)
                        self.acks += 1
            except grpc.RpcError as e:
                if not self.killing.is_set():
                    self.unexpected.append("op %d failed before the kill: %s %s"
                                           % (i, e.code(), e.details()))
                return
            i += 1

    def _ack_main(self, got):
        if got.version != self.main_version + 1:
            self.unexpected.append("main version %d after %d" % (got.version, self.main_version))
        if list(got.class_counts) != counts_at(got.version):
            self.unexpected.append("main counts %s at version %d" % (list(got.class_counts),
                                                                      got.version))
        self.main_version = got.version
        self.acked_main = (got.version, list(got.class_counts))
        self.acks += 1


def cifar_lt_counts(c, imbalance=100, n_max=5000):
    return [int(math.floor(n_max * (1.0 / imbalance) ** (i / (c - 1)))) for i in range(c)]


class DurabilityTest(ServerTestCase):

    def test_acknowledged_writes_survive_sigkill(self):
        server = self.new_server()
        server.start()
        first = server.stub.PutDataset(pb.PutDatasetRequest(
            dataset=pb.Dataset(name="main", class_counts=counts_at(1))), timeout=T)
        self.assertEqual(first.version, 1)

        all_created, all_deleted, maybe_deleted = {}, set(), set()
        main_version = 1
        for round_index, delay in enumerate([0.25, 0.6, 1.1]):
            writer = Writer(server.stub, main_version, round_index)
            writer.start()
            time.sleep(delay)
            # A loaded machine may have acknowledged few writes by then: the
            # kill comes once there are some to check, not at a fixed time.
            deadline = time.monotonic() + 30
            while writer.acks <= 3 and writer.is_alive() and time.monotonic() < deadline:
                time.sleep(0.01)
            writer.killing.set()
            server.kill()
            writer.join(30)
            self.assertFalse(writer.is_alive(), "writer hung after SIGKILL")
            self.assertEqual(writer.unexpected, [])
            self.assertGreater(writer.acks, 3, "round %d: too few writes were acknowledged "
                               "before the kill" % round_index)
            print("round %d: %d acknowledged writes before SIGKILL at %.2f s"
                  % (round_index, writer.acks, delay), file=sys.stderr)
            all_created.update(writer.created)
            all_deleted |= writer.deleted
            if writer.delete_in_flight is not None:
                maybe_deleted.add(writer.delete_in_flight)

            server.start()
            stub = server.stub
            main = stub.GetDataset(pb.GetDatasetRequest(name="main"), timeout=T)
            if writer.acked_main is not None:
                acked_version, acked_counts = writer.acked_main
                self.assertGreaterEqual(main.version, acked_version,
                                        "round %d: acknowledged version lost" % round_index)
                self.assertTrue(all(s >= a for s, a in zip(main.class_counts, acked_counts)),
                                "round %d: stored counts %s below acknowledged %s"
                                % (round_index, list(main.class_counts), acked_counts))
                # At most the one in-flight write may have landed unacknowledged.
                self.assertLessEqual(main.version, acked_version + 1)
            self.assertEqual(list(main.class_counts), counts_at(main.version),
                             "round %d: torn write in 'main'" % round_index)
            main_version = main.version

            for name, acked in all_created.items():
                if name in maybe_deleted:
                    # Unacknowledged delete: either outcome is correct, but
                    # not a torn one.
                    try:
                        got = stub.GetDataset(pb.GetDatasetRequest(name=name), timeout=T)
                        self.assertEqual(list(got.class_counts), list(acked.class_counts))
                    except grpc.RpcError as e:
                        self.assertEqual(e.code(), grpc.StatusCode.NOT_FOUND)
                elif name in all_deleted:
                    self.assertRpcError(grpc.StatusCode.NOT_FOUND, stub.GetDataset,
                                        pb.GetDatasetRequest(name=name))
                else:
                    got = stub.GetDataset(pb.GetDatasetRequest(name=name), timeout=T)
                    self.assertEqual(list(got.class_counts), list(acked.class_counts))
                    self.assertEqual(got.version, 1)
                    self.assertEqual(got.create_time, acked.create_time)

        # The restarted server still takes writes, and a clean stop exits 0.
        got = server.stub.AddClassCounts(pb.AddClassCountsRequest(name="main", deltas=STEP),
                                         timeout=T)
        self.assertEqual(got.version, main_version + 1)
        self.assertEqual(server.stop(), 0)
        server.start()
        self.assertEqual(server.stub.GetDataset(pb.GetDatasetRequest(name="main"),
                                                timeout=T).version, main_version + 1)


class ShutdownTest(ServerTestCase):

    def test_sigterm_idle_exits_zero(self):
        server = self.start_server()
        self.assertEqual(server.stop(), 0)

    def test_sigterm_drains_in_flight_compute(self):
        server = self.start_server()
        rng = np.random.default_rng(7)
        b, c = 4096, 1000
        logits = rng.standard_normal((b, c), dtype=np.float32) * 3
        labels = rng.integers(0, c, size=b)
        req = pb.ComputeLossRequest(
            class_counts=pb.ClassCounts(counts=list(range(1, c + 1))),
            config=pb.LossConfig(loss_type=pb.LOSS_TYPE_FOCAL),
            logits=tensor_f32(logits), labels=labels.tolist(), want_gradient=True)
        # Warm-up: the round-trip time of this request on this machine.
        t0 = time.monotonic()
        warm = server.stub.ComputeLoss(req, timeout=120)
        rtt = time.monotonic() - t0
        self.assertEqual(len(warm.gradient.data), 4 * b * c)

        print("round trip of the large call: %.3f s" % rtt, file=sys.stderr)
        # SIGTERM mid-call (received, computing or replying). A loaded machine
        # can stall this process past the call's end: then try again with a
        # shorter wait rather than skip.
        wait = max(0.005, rtt / 3)
        for _ in range(8):
            future = server.stub.ComputeLoss.future(req, timeout=120)
            time.sleep(wait)
            if not future.done():
                break
            future.result(timeout=120)
            wait /= 2
        else:
            self.fail("every call finished before SIGTERM could be sent (rtt %.3f s)" % rtt)
        server.proc.send_signal(signal.SIGTERM)
        got = future.result(timeout=120)
        self.assertAlmostEqual(got.loss, warm.loss, delta=1e-9 * abs(warm.loss))
        self.assertEqual(got.gradient.data, warm.gradient.data)
        code = server.wait_exit(60)
        self.assertEqual(code, 0, "exit code after SIGTERM with a call in flight")


class DatasetsFileTest(ServerTestCase):

    def write_file(self, name, text):
        path = os.path.join(self.tmpdir(), name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_sample_datasets_file(self):
        self.assertTrue(os.path.exists(SAMPLE_DATASETS_FILE),
                        "sample datasets file %s is missing" % SAMPLE_DATASETS_FILE)
        server = self.new_server(datasets_file=SAMPLE_DATASETS_FILE)
        server.start()
        versions = {}
        for name, c in [("cifar10-lt", 10), ("cifar100-lt", 100)]:
            got = server.stub.GetDataset(pb.GetDatasetRequest(name=name), timeout=T)
            self.assertEqual(list(got.class_counts), cifar_lt_counts(c), name)
            versions[name] = got.version
        self.assertEqual(cifar_lt_counts(10),
                         [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50])
        self.assertEqual(server.stop(), 0)
        server.start()
        for name, version in versions.items():
            got = server.stub.GetDataset(pb.GetDatasetRequest(name=name), timeout=T)
            self.assertEqual(got.version, version, "%s re-put on restart" % name)

    def test_datasets_file_loading(self):
        listing = pb.ListDatasetsResponse(datasets=[
            pb.Dataset(name="file-a", class_counts=[10, 5, 1], class_names=["x", "y", "z"],
                       defaults=pb.LossConfig(loss_type=pb.LOSS_TYPE_FOCAL, beta=0.99,
                                              gamma=1.0)),
            pb.Dataset(name="file-b", class_counts=[7, 0]),
        ])
        path = self.write_file("datasets.json", json_format.MessageToJson(listing))
        server = self.new_server(datasets_file=path)
        server.start()
        stub = server.stub
        a = stub.GetDataset(pb.GetDatasetRequest(name="file-a"), timeout=T)
        self.assertEqual(list(a.class_counts), [10, 5, 1])
        self.assertEqual(list(a.class_names), ["x", "y", "z"])
        self.assertEqual(a.defaults.loss_type, pb.LOSS_TYPE_FOCAL)
        self.assertEqual(a.defaults.beta, 0.99)
        self.assertEqual(a.version, 1)
        b = stub.GetDataset(pb.GetDatasetRequest(name="file-b"), timeout=T)
        self.assertEqual(list(b.class_counts), [7, 0])
        # Change file-a; keep file-b as in the file.
        stub.AddClassCounts(pb.AddClassCountsRequest(name="file-a", labels=[0]), timeout=T)
        self.assertEqual(server.stop(), 0)

        # Restart with the same file: file-b is equal (not re-put); file-a
        # differs and is put again (version 3, counts back to the file's).
        server.start()
        stub = server.stub
        b2 = stub.GetDataset(pb.GetDatasetRequest(name="file-b"), timeout=T)
        self.assertEqual(b2.version, 1)
        self.assertEqual(b2.update_time, b.update_time)
        a2 = stub.GetDataset(pb.GetDatasetRequest(name="file-a"), timeout=T)
        self.assertEqual(list(a2.class_counts), [10, 5, 1])
        self.assertEqual(a2.version, 3)
        self.assertEqual(a2.create_time, a.create_time)

    def assertStartFails(self, path):
        server = self.new_server(datasets_file=path)
        server.launch()
        code = server.wait_exit(20)
        self.assertIsNotNone(code, "server with a bad --datasets_file did not exit")
        self.assertNotEqual(code, 0)
        err = server.stderr()
        out = server.stdout()
        self.assertTrue(err.strip(), "no message on stderr (stdout has: %r)" % out[-2000:])
        self.assertTrue(os.path.basename(path) in err or "datasets" in err,
                        "stderr does not name the datasets file: %r" % err[-2000:])

    def test_malformed_datasets_file(self):
        self.assertStartFails(self.write_file("broken.json", '{"datasets": [ {"name": '))

    def test_datasets_file_wrong_types(self):
        self.assertStartFails(self.write_file("wrongtype.json",
                                              '{"datasets": [{"name": "x", '
                                              '"classCounts": "many"}]}'))

    def test_missing_datasets_file(self):
        self.assertStartFails(os.path.join(self.tmpdir(), "does-not-exist.json"))

    def test_datasets_file_with_invalid_dataset(self):
        self.assertStartFails(self.write_file("invalid.json", json.dumps(
            {"datasets": [{"name": "Bad Name", "classCounts": ["1", "2"]}]})))


class HealthAfterRestartTest(ServerTestCase):

    def test_restart_serving(self):
        server = self.start_server()
        server.kill()
        server.start()
        self.assertEqual(health_check(server.channel, ""), HEALTH_SERVING)


if __name__ == "__main__":
    unittest.main()
