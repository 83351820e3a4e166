"""Dataset RPCs of cbloss-server: PutDataset, GetDataset, ListDatasets,
DeleteDataset, AddClassCounts (API.md section 1)."""

import threading
import time
import unittest

import grpc
from google.protobuf.internal import encoder, wire_format

from server_fixture import SharedServerTestCase, RPC_TIMEOUT_S, ServerTestCase, pb

T = RPC_TIMEOUT_S
INVALID = grpc.StatusCode.INVALID_ARGUMENT


def dataset(name, counts, names=(), defaults=None):
    d = pb.Dataset(name=name, class_counts=list(counts), class_names=list(names))
    if defaults is not None:
        d.defaults.CopyFrom(defaults)
    return d


def put_req(ds, expected_version=None):
    req = pb.PutDatasetRequest(dataset=ds)
    if expected_version is not None:
        req.expected_version = expected_version
    return req


class DatasetsTest(SharedServerTestCase):

    def put(self, ds, expected_version=None):
        return self.stub.PutDataset(put_req(ds, expected_version), timeout=T)

    def get(self, name, timeout=T):
        return self.stub.GetDataset(pb.GetDatasetRequest(name=name), timeout=timeout)

    def add(self, name, deltas=(), labels=(), timeout=T):
        return self.stub.AddClassCounts(
            pb.AddClassCountsRequest(name=name, deltas=list(deltas), labels=list(labels)),
            timeout=timeout)

    def assertTimestampRecent(self, ts, what):
        self.assertTrue(ts.seconds > 0 or ts.nanos > 0, "%s is not set" % what)
        self.assertLess(abs(ts.seconds - time.time()), 300, "%s = %s is not now" % (what, ts))

    # -- PutDataset / GetDataset --------------------------------------------

    def test_put_create_and_get(self):
        defaults = pb.LossConfig(loss_type=pb.LOSS_TYPE_FOCAL, beta=0.99, gamma=1.5,
                                 reduction=pb.REDUCTION_SUM)
        ds = dataset("create-a", [5, 3, 0], names=["cat", "dog", "eel"], defaults=defaults)
        ds.version = 77  # ignored on input
        ds.create_time.seconds = 12345  # ignored on input
        got = self.put(ds)
        self.assertEqual(got.name, "create-a")
        self.assertEqual(list(got.class_counts), [5, 3, 0])
        self.assertEqual(list(got.class_names), ["cat", "dog", "eel"])
        self.assertEqual(got.defaults.loss_type, pb.LOSS_TYPE_FOCAL)
        self.assertEqual(got.defaults.reduction, pb.REDUCTION_SUM)
        self.assertTrue(got.defaults.HasField("beta"))
        self.assertEqual(got.defaults.beta, 0.99)
        self.assertEqual(got.defaults.gamma, 1.5)
        self.assertFalse(got.defaults.HasField("ignore_index"))
        self.assertEqual(got.version, 1)
        self.assertTimestampRecent(got.create_time, "create_time")
        self.assertTimestampRecent(got.update_time, "update_time")
        fetched = self.get("create-a")
        self.assertEqual(fetched, got)

    def test_put_replace_keeps_create_time(self):
        first = self.put(dataset("replace-a", [1, 2]))
        self.assertEqual(first.version, 1)
        time.sleep(0.01)
        second = self.put(dataset("replace-a", [4, 5, 6], names=["x", "y", "z"]))
        self.assertEqual(second.version, 2)
        self.assertEqual(list(second.class_counts), [4, 5, 6])
        self.assertEqual(list(second.class_names), ["x", "y", "z"])
        self.assertEqual(second.create_time, first.create_time)
        self.assertGreaterEqual(
            (second.update_time.seconds, second.update_time.nanos),
            (first.update_time.seconds, first.update_time.nanos))
        self.assertEqual(self.get("replace-a"), second)

    def test_put_expected_version(self):
        # 0 = must not exist yet: creates when absent.
        created = self.put(dataset("ev-a", [1, 1]), expected_version=0)
        self.assertEqual(created.version, 1)
        # 0 on an existing dataset: ABORTED, nothing changes.
        self.assertRpcError(grpc.StatusCode.ABORTED, self.stub.PutDataset,
                            put_req(dataset("ev-a", [9, 9]), 0))
        # Wrong N: ABORTED.
        self.assertRpcError(grpc.StatusCode.ABORTED, self.stub.PutDataset,
                            put_req(dataset("ev-a", [9, 9]), 2))
        self.assertRpcError(grpc.StatusCode.ABORTED, self.stub.PutDataset,
                            put_req(dataset("ev-a", [9, 9]), 7))
        unchanged = self.get("ev-a")
        self.assertEqual(unchanged.version, 1)
        self.assertEqual(list(unchanged.class_counts), [1, 1])
        # Right N: OK.
        replaced = self.put(dataset("ev-a", [2, 3]), expected_version=1)
        self.assertEqual(replaced.version, 2)
        self.assertEqual(list(replaced.class_counts), [2, 3])
        replaced = self.put(dataset("ev-a", [2, 4]), expected_version=2)
        self.assertEqual(replaced.version, 3)
        # N >= 1 on a dataset that does not exist: ABORTED.
        self.assertRpcError(grpc.StatusCode.ABORTED, self.stub.PutDataset,
                            put_req(dataset("ev-absent", [1]), 1))
        self.assertRpcError(grpc.StatusCode.NOT_FOUND, self.get, "ev-absent")

    def test_get_not_found(self):
        self.assertRpcError(grpc.StatusCode.NOT_FOUND, self.get, "no-such-dataset")

    def test_a_name_no_dataset_can_have_is_invalid_everywhere(self):
        # Not NOT_FOUND: the caller's name breaks [a-z0-9][a-z0-9._-]{0,127}.
        for bad in ("", "Bad Name", "-x", "x" * 129):
            with self.subTest(name=bad):
                self.assertRpcError(INVALID, self.stub.GetDataset,
                                    pb.GetDatasetRequest(name=bad), contains="name")
                self.assertRpcError(INVALID, self.stub.DeleteDataset,
                                    pb.DeleteDatasetRequest(name=bad), contains="name")
                self.assertRpcError(INVALID, self.stub.AddClassCounts,
                                    pb.AddClassCountsRequest(name=bad, labels=[0]),
                                    contains="name")
                self.assertRpcError(INVALID, self.stub.GetClassWeights,
                                    pb.GetClassWeightsRequest(dataset=bad), contains="dataset")

    def test_valid_names(self):
        for name in ["a", "0", "a.b_c-d", "x" * 128, "9lives", "a" + "-" * 127]:
            with self.subTest(name=name):
                got = self.put(dataset(name, [1]))
                self.assertEqual(got.name, name)
                self.assertEqual(self.get(name).name, name)

    def test_invalid_names(self):
        bad = ["Bad Name", "", "-x", "x" * 129, "ABC", "a/b", ".hidden", "_a", "a b",
               "caf\u00e9", "a\n"]
        for name in bad:
            with self.subTest(name=name):
                self.assertRpcError(INVALID, self.stub.PutDataset,
                                    put_req(dataset(name, [1, 2])), contains="dataset.name")
                self.assertRpcError(INVALID, self.stub.PutDataset,
                                    put_req(dataset(name, [1, 2]), 0), contains="dataset.name")

    def test_class_names_wrong_length(self):
        self.assertRpcError(INVALID, self.stub.PutDataset,
                            put_req(dataset("names-bad", [1, 2, 3], names=["a", "b"])),
                            contains="class_names")
        self.assertRpcError(INVALID, self.stub.PutDataset,
                            put_req(dataset("names-bad", [1, 2], names=["a", "b", "c"])),
                            contains="class_names")
        self.assertRpcError(grpc.StatusCode.NOT_FOUND, self.get, "names-bad")

    def test_negative_count(self):
        self.assertRpcError(INVALID, self.stub.PutDataset,
                            put_req(dataset("neg-count", [3, -1, 2, -5])),
                            contains="class_counts[1]")
        self.assertRpcError(grpc.StatusCode.NOT_FOUND, self.get, "neg-count")

    def test_zero_counts_are_storable(self):
        got = self.put(dataset("all-zero", [0, 0, 0]))
        self.assertEqual(list(got.class_counts), [0, 0, 0])

    def test_invalid_defaults(self):
        cases = [
            ("beta 2", pb.LossConfig(beta=2.0), "beta"),
            ("beta -0.5", pb.LossConfig(beta=-0.5), "beta"),
            ("beta nan", pb.LossConfig(beta=float("nan")), "beta"),
            ("gamma -1", pb.LossConfig(gamma=-1.0), "gamma"),
            ("gamma inf", pb.LossConfig(gamma=float("inf")), "gamma"),
            ("loss_type 99", pb.LossConfig(loss_type=99), "loss_type"),
            ("reduction 42", pb.LossConfig(reduction=42), "reduction"),
            ("weighting 42", pb.LossConfig(weighting=42), "weighting"),
        ]
        for label, cfg, needle in cases:
            with self.subTest(defaults=label):
                self.assertRpcError(INVALID, self.stub.PutDataset,
                                    put_req(dataset("bad-defaults", [1, 2], defaults=cfg)),
                                    contains=needle)
        self.assertRpcError(grpc.StatusCode.NOT_FOUND, self.get, "bad-defaults")

    def test_enum_out_of_range_via_raw_field(self):
        # Set loss_type=99 on the wire by hand-splicing the field into the
        # serialized LossConfig, independent of the Python enum checks.
        ds = dataset("raw-enum", [1, 2])
        loss_type = pb.LossConfig.DESCRIPTOR.fields_by_name["loss_type"].number
        raw_cfg = (encoder.TagBytes(loss_type, wire_format.WIRETYPE_VARINT)
                   + encoder._VarintBytes(99))
        ds.defaults.MergeFromString(raw_cfg)
        self.assertEqual(ds.defaults.loss_type, 99)
        self.assertRpcError(INVALID, self.stub.PutDataset, put_req(ds))
        self.assertRpcError(grpc.StatusCode.NOT_FOUND, self.get, "raw-enum")

    # -- DeleteDataset ------------------------------------------------------

    def test_delete(self):
        self.put(dataset("del-a", [1, 2]))
        self.stub.DeleteDataset(pb.DeleteDatasetRequest(name="del-a"), timeout=T)
        self.assertRpcError(grpc.StatusCode.NOT_FOUND, self.get, "del-a")
        self.assertRpcError(grpc.StatusCode.NOT_FOUND, self.stub.DeleteDataset,
                            pb.DeleteDatasetRequest(name="del-a"))
        self.assertRpcError(grpc.StatusCode.NOT_FOUND, self.stub.DeleteDataset,
                            pb.DeleteDatasetRequest(name="never-existed"))

    def test_delete_expected_version(self):
        self.put(dataset("del-b", [1, 2]))
        self.add("del-b", deltas=[1, 1])  # version 2
        self.assertRpcError(grpc.StatusCode.ABORTED, self.stub.DeleteDataset,
                            pb.DeleteDatasetRequest(name="del-b", expected_version=1))
        self.assertRpcError(grpc.StatusCode.ABORTED, self.stub.DeleteDataset,
                            pb.DeleteDatasetRequest(name="del-b", expected_version=3))
        self.assertEqual(self.get("del-b").version, 2)
        self.stub.DeleteDataset(pb.DeleteDatasetRequest(name="del-b", expected_version=2),
                                timeout=T)
        self.assertRpcError(grpc.StatusCode.NOT_FOUND, self.get, "del-b")

    # -- AddClassCounts -----------------------------------------------------

    def test_add_deltas(self):
        self.put(dataset("add-d", [5, 0, 2]))
        got = self.add("add-d", deltas=[1, 4, -2])
        self.assertEqual(list(got.class_counts), [6, 4, 0])
        self.assertEqual(got.version, 2)
        self.assertEqual(self.get("add-d"), got)

    def test_add_labels(self):
        self.put(dataset("add-l", [0, 0, 0, 0]))
        got = self.add("add-l", labels=[3, 0, 3, 3, 1])
        self.assertEqual(list(got.class_counts), [1, 1, 0, 3])
        self.assertEqual(got.version, 2)

    def test_add_both(self):
        first = self.put(dataset("add-b", [1, 1, 1], names=["a", "b", "c"]))
        got = self.add("add-b", deltas=[10, 20, 30], labels=[2, 2, 0])
        self.assertEqual(list(got.class_counts), [12, 21, 33])
        self.assertEqual(list(got.class_names), ["a", "b", "c"])
        self.assertEqual(got.version, 2)
        self.assertEqual(got.create_time, first.create_time)

    def test_add_below_zero(self):
        self.put(dataset("add-neg", [2, 1, 0]))
        self.assertRpcError(grpc.StatusCode.FAILED_PRECONDITION, self.add, "add-neg",
                            deltas=[5, -2, 0])
        # A label may not save a delta that goes negative either way round:
        # nothing at all is applied.
        self.assertRpcError(grpc.StatusCode.FAILED_PRECONDITION, self.add, "add-neg",
                            deltas=[1, 0, -1], labels=[0])
        after = self.get("add-neg")
        self.assertEqual(list(after.class_counts), [2, 1, 0])
        self.assertEqual(after.version, 1)
        # Going exactly to zero is fine.
        got = self.add("add-neg", deltas=[-2, -1, 0])
        self.assertEqual(list(got.class_counts), [0, 0, 0])

    def test_add_invalid(self):
        self.put(dataset("add-bad", [1, 2, 3]))
        self.assertRpcError(INVALID, self.add, "add-bad", deltas=[1, 2], contains="deltas")
        self.assertRpcError(INVALID, self.add, "add-bad", deltas=[1, 2, 3, 4],
                            contains="deltas")
        self.assertRpcError(INVALID, self.add, "add-bad", labels=[0, 3, 1],
                            contains="labels[1]")
        self.assertRpcError(INVALID, self.add, "add-bad", labels=[0, 1, 2, -1],
                            contains="labels[3]")
        self.assertRpcError(INVALID, self.add, "add-bad")  # neither deltas nor labels
        after = self.get("add-bad")
        self.assertEqual(list(after.class_counts), [1, 2, 3])
        self.assertEqual(after.version, 1)

    def test_add_overflow(self):
        self.put(dataset("add-big", [2 ** 62, 1]))
        with self.assertRaises(grpc.RpcError) as cm:
            self.add("add-big", deltas=[2 ** 62, 0])
        self.assertIn(cm.exception.code(), (grpc.StatusCode.OUT_OF_RANGE,
                                            grpc.StatusCode.FAILED_PRECONDITION,
                                            INVALID))
        after = self.get("add-big")
        self.assertEqual(list(after.class_counts), [2 ** 62, 1])
        self.assertEqual(after.version, 1)

    def test_add_updates_update_time(self):
        first = self.put(dataset("add-time", [1, 1]))
        time.sleep(0.01)
        got = self.add("add-time", labels=[1])
        self.assertEqual(got.create_time, first.create_time)
        self.assertGreater((got.update_time.seconds, got.update_time.nanos),
                           (first.update_time.seconds, first.update_time.nanos))

    def test_no_classes(self):
        # LOSS.md 1: C >= 1.
        self.assertRpcError(INVALID, self.stub.PutDataset, put_req(dataset("no-classes", [])),
                            contains="class_counts")

    def test_add_unknown_dataset(self):
        self.assertRpcError(grpc.StatusCode.NOT_FOUND, self.add, "add-nobody", deltas=[1])
        self.assertRpcError(grpc.StatusCode.NOT_FOUND, self.add, "add-nobody", labels=[0])

    def test_add_concurrent(self):
        c = 4
        self.put(dataset("add-conc", [0] * c))
        threads, errors, versions = 8, [], []
        lock = threading.Lock()
        expected = [0] * c

        def plan(t):
            # 50 calls per thread: even calls deltas, odd calls labels.
            calls = []
            for i in range(50):
                if i % 2 == 0:
                    calls.append(("deltas", [(t + i + j) % 3 for j in range(c)]))
                else:
                    calls.append(("labels", [(t * 7 + i + k) % c for k in range(1 + i % 3)]))
            return calls

        plans = [plan(t) for t in range(threads)]
        for p in plans:
            for kind, values in p:
                if kind == "deltas":
                    for j, v in enumerate(values):
                        expected[j] += v
                else:
                    for label in values:
                        expected[label] += 1

        def worker(p):
            try:
                for kind, values in p:
                    if kind == "deltas":
                        got = self.add("add-conc", deltas=values)
                    else:
                        got = self.add("add-conc", labels=values)
                    with lock:
                        versions.append(got.version)
            except Exception as e:  # pragma: no cover - reported below
                with lock:
                    errors.append(repr(e))

        ts = [threading.Thread(target=worker, args=(p,)) for p in plans]
        for t in ts:
            t.start()
        for t in ts:
            t.join(120)
        self.assertFalse(any(t.is_alive() for t in ts), "workers hung")
        self.assertEqual(errors, [])
        final = self.get("add-conc")
        self.assertEqual(list(final.class_counts), expected)
        self.assertEqual(final.version, 1 + threads * 50)
        # Every acknowledged call saw its own version: no two share one.
        self.assertEqual(sorted(versions), list(range(2, 2 + threads * 50)))


class ListDatasetsTest(ServerTestCase):
    """Each test runs on a fresh server, so the listing is exactly what it put."""

    def list(self, stub, page_size=0, page_token=""):
        return stub.ListDatasets(pb.ListDatasetsRequest(page_size=page_size,
                                                        page_token=page_token), timeout=T)

    def test_empty(self):
        stub = self.start_server().stub
        got = self.list(stub)
        self.assertEqual(len(got.datasets), 0)
        self.assertEqual(got.next_page_token, "")

    def test_pagination(self):
        stub = self.start_server().stub
        names = ["delta", "alpha", "echo", "charlie", "bravo"]
        for i, n in enumerate(names):
            stub.PutDataset(put_req(dataset(n, [i + 1, 2])), timeout=T)
        ordered = sorted(names)

        # page_size 0 = server default (100): all five, no next page.
        full = self.list(stub)
        self.assertEqual([d.name for d in full.datasets], ordered)
        self.assertEqual(full.next_page_token, "")
        by_name = {d.name: d for d in full.datasets}
        self.assertEqual(list(by_name["delta"].class_counts), [1, 2])
        self.assertEqual(by_name["delta"].version, 1)

        # page_size 2: [alpha, bravo], [charlie, delta], [echo].
        pages, token = [], ""
        for _ in range(10):
            page = self.list(stub, page_size=2, page_token=token)
            pages.append([d.name for d in page.datasets])
            token = page.next_page_token
            if not token:
                break
        self.assertEqual(pages, [ordered[0:2], ordered[2:4], ordered[4:5]])

        # Page sizes above the maximum are clamped, not rejected.
        big = self.list(stub, page_size=5000)
        self.assertEqual([d.name for d in big.datasets], ordered)
        self.assertEqual(big.next_page_token, "")

        # page_size equal to the count.
        exact = self.list(stub, page_size=5)
        self.assertEqual([d.name for d in exact.datasets], ordered)
        if exact.next_page_token:
            rest = self.list(stub, page_size=5, page_token=exact.next_page_token)
            self.assertEqual(len(rest.datasets), 0)
            self.assertEqual(rest.next_page_token, "")

    def test_pagination_sees_deletes(self):
        stub = self.start_server().stub
        for n in ["a1", "a2", "a3", "a4"]:
            stub.PutDataset(put_req(dataset(n, [1])), timeout=T)
        first = self.list(stub, page_size=2)
        self.assertEqual([d.name for d in first.datasets], ["a1", "a2"])
        self.assertNotEqual(first.next_page_token, "")
        stub.DeleteDataset(pb.DeleteDatasetRequest(name="a3"), timeout=T)
        second = self.list(stub, page_size=2, page_token=first.next_page_token)
        self.assertEqual([d.name for d in second.datasets], ["a4"])
        self.assertEqual(second.next_page_token, "")

    def test_bad_requests(self):
        stub = self.start_server().stub
        stub.PutDataset(put_req(dataset("only", [1])), timeout=T)
        self.assertRpcError(INVALID, stub.ListDatasets, pb.ListDatasetsRequest(page_size=-1))
        self.assertRpcError(INVALID, stub.ListDatasets,
                            pb.ListDatasetsRequest(page_token="%%% not a token %%%"))


if __name__ == "__main__":
    unittest.main()
