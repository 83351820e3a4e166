"""Load and fault test (bounded, loopback only): 32 concurrent callers mix
valid computes (answers checked against a float64 reference), invalid
requests, 1 ms deadlines, cancelled calls and streams, 4096 x 1000 batches
and dataset writes, in three waves. Asserts zero wrong answers, zero
unexpected statuses, the server healthy afterwards, no lost count, and
resident memory flat from the second wave to the third.

CBLOSS_LOAD_SECONDS sets the total duration (default 60)."""

import os
import random
import threading
import time
import unittest

import grpc
import numpy as np

from server_fixture import (HEALTH_SERVING, RPC_TIMEOUT_S, ServerTestCase, health_check, pb,
                            ref_loss, tensor_f32)

SECONDS = float(os.environ.get("CBLOSS_LOAD_SECONDS", "60"))
CALLERS = 32
WAVES = 3
COUNTS = [500, 120, 40, 9, 3, 1, 0, 77, 15, 6]
C = len(COUNTS)
OK = grpc.StatusCode.OK


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class Caller(threading.Thread):
    """One client thread: random operations until `stop` is set."""

    def __init__(self, index, stub, stop, big_batch):
        super().__init__(daemon=True)
        self.rng = random.Random(index)
        self.np_rng = np.random.default_rng(index)
        self.index = index
        self.stub = stub
        self.stop = stop
        self.big_batch = big_batch
        self.ops = 0
        self.wrong = []        # wrong answers
        self.unexpected = []   # unexpected statuses
        self.added = np.zeros(C, dtype=np.int64)  # acknowledged AddClassCounts
        self.writes = 0

    def expect(self, what, code, allowed):
        if code not in allowed:
            self.unexpected.append("%s: %s" % (what, code))

    def valid_compute(self):
        # Against the dataset nobody writes to, or the same counts inline.
        b = self.rng.randint(1, 64)
        z = (self.np_rng.standard_normal((b, C)) * 3).astype(np.float32)
        y = self.np_rng.choice([0, 1, 2, 3, 4, 5, 7, 8, 9], size=b)
        req = pb.ComputeLossRequest(logits=tensor_f32(z), labels=y.tolist())
        if self.rng.random() < 0.5:
            req.dataset = "fixed"
        else:
            req.class_counts.counts.extend(COUNTS)
        try:
            resp = self.stub.ComputeLoss(req, timeout=RPC_TIMEOUT_S)
        except grpc.RpcError as e:
            # Admission control may refuse under load; nothing else.
            self.expect("valid compute", e.code(), {grpc.StatusCode.RESOURCE_EXHAUSTED})
            return
        want = ref_loss(z, y, COUNTS, "SOFTMAX")[0]
        if not abs(resp.loss - want) <= 1e-5 * abs(want) + 1e-6:
            self.wrong.append("loss %r, reference %r" % (resp.loss, want))

    def invalid_compute(self):
        z = np.zeros((2, C), dtype=np.float32)
        z[1, 3] = np.nan
        req = pb.ComputeLossRequest(dataset="load", logits=tensor_f32(z), labels=[0, 1])
        try:
            self.stub.ComputeLoss(req, timeout=RPC_TIMEOUT_S)
            self.wrong.append("a NaN logit was accepted")
        except grpc.RpcError as e:
            self.expect("invalid compute", e.code(), {grpc.StatusCode.INVALID_ARGUMENT})
            if e.code() == grpc.StatusCode.INVALID_ARGUMENT and "logits[1][3]" not in e.details():
                self.wrong.append("message %r" % e.details())

    def tiny_deadline(self):
        z = self.np_rng.standard_normal((512, C)).astype(np.float32)
        req = pb.ComputeLossRequest(dataset="load", logits=tensor_f32(z), labels=[0] * 512,
                                    want_gradient=True)
        try:
            self.stub.ComputeLoss(req, timeout=0.001)
        except grpc.RpcError as e:
            self.expect("1 ms deadline", e.code(), {grpc.StatusCode.DEADLINE_EXCEEDED,
                                                   grpc.StatusCode.RESOURCE_EXHAUSTED})

    def cancelled_call(self):
        z = self.np_rng.standard_normal((256, C)).astype(np.float32)
        req = pb.ComputeLossRequest(dataset="load", logits=tensor_f32(z), labels=[1] * 256)
        future = self.stub.ComputeLoss.future(req, timeout=RPC_TIMEOUT_S)
        future.cancel()
        try:
            future.result()
        except grpc.FutureCancelledError:
            pass
        except grpc.RpcError as e:
            self.expect("cancelled call", e.code(), {grpc.StatusCode.CANCELLED,
                                                    grpc.StatusCode.RESOURCE_EXHAUSTED})

    def stream(self):
        z = self.np_rng.standard_normal((8, C)).astype(np.float32)
        good = pb.ComputeLossRequest(class_counts=pb.ClassCounts(counts=[1] * C),
                                     logits=tensor_f32(z), labels=[2] * 8)
        bad = pb.ComputeLossRequest(class_counts=pb.ClassCounts(counts=[1] * C),
                                    logits=tensor_f32(z), labels=[99] * 8)
        cancel_early = self.rng.random() < 0.3
        call = self.stub.StreamLoss(iter([good, bad, good]), timeout=RPC_TIMEOUT_S)
        try:
            for i, resp in enumerate(call):
                if cancel_early:
                    call.cancel()
                    break
                if i == 1:
                    if resp.error_code != grpc.StatusCode.INVALID_ARGUMENT.value[0]:
                        self.wrong.append("stream: bad request answered %r" % resp.error_code)
                elif resp.error_code == 0:
                    want = float(np.log(np.exp(z.astype(np.float64)).sum(1)).mean()
                                 - z[:, 2].astype(np.float64).mean())
                    if not abs(resp.loss - want) <= 1e-5 * abs(want) + 1e-6:
                        self.wrong.append("stream loss %r, reference %r" % (resp.loss, want))
                elif resp.error_code != grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]:
                    self.unexpected.append("stream: error %d" % resp.error_code)
        except grpc.RpcError as e:
            self.expect("stream", e.code(), {grpc.StatusCode.CANCELLED})

    def big(self):
        z = self.big_batch
        req = pb.ComputeLossRequest(class_counts=pb.ClassCounts(counts=[3] * 1000),
                                    logits=tensor_f32(z), labels=[5] * z.shape[0],
                                    want_gradient=True)
        try:
            resp = self.stub.ComputeLoss(req, timeout=120)
        except grpc.RpcError as e:
            self.expect("4096 x 1000", e.code(), {grpc.StatusCode.RESOURCE_EXHAUSTED})
            return
        want = BIG_REFERENCE[0]
        if not abs(resp.loss - want) <= 1e-5 * abs(want) + 1e-6:
            self.wrong.append("4096 x 1000 loss %r, reference %r" % (resp.loss, want))

    def write(self):
        labels = [self.rng.randrange(C) for _ in range(self.rng.randint(1, 5))]
        try:
            self.stub.AddClassCounts(pb.AddClassCountsRequest(name="load", labels=labels),
                                     timeout=RPC_TIMEOUT_S)
        except grpc.RpcError as e:
            self.unexpected.append("write: %s %s" % (e.code(), e.details()))
            return
        for y in labels:
            self.added[y] += 1
        self.writes += 1

    def run(self):
        ops = [self.valid_compute] * 6 + [self.invalid_compute] * 2 + [self.tiny_deadline,
               self.cancelled_call, self.stream, self.write, self.write]
        while not self.stop.is_set():
            if self.index == 0 and self.ops % 20 == 0:
                op = self.big
            else:
                op = self.rng.choice(ops)
            try:
                op()
            except Exception as e:  # a bug in the test or a transport failure
                self.unexpected.append("%s raised %r" % (op.__name__, e))
            self.ops += 1


BIG_REFERENCE = [None]


class LoadTest(ServerTestCase):

    def test_mixed_load_in_waves(self):
        server = self.start_server(compute_threads=2)
        stub = server.stub
        # "load" takes the writes; "fixed" (same counts) the checked computes.
        for name in ("load", "fixed"):
            stub.PutDataset(pb.PutDatasetRequest(dataset=pb.Dataset(name=name,
                                                                    class_counts=COUNTS)),
                            timeout=RPC_TIMEOUT_S)
        rng = np.random.default_rng(0)
        big = rng.standard_normal((4096, 1000)).astype(np.float32)
        BIG_REFERENCE[0] = ref_loss(big, np.full(4096, 5), [3] * 1000, "SOFTMAX")[0]

        stop = threading.Event()
        callers = [Caller(i, stub, stop, big) for i in range(CALLERS)]
        for c in callers:
            c.start()
        rss = []
        for wave in range(WAVES):
            time.sleep(SECONDS / WAVES)
            rss.append(rss_kib(server.proc.pid))
        stop.set()
        for c in callers:
            c.join(180)
            self.assertFalse(c.is_alive(), "caller %d hung" % c.index)

        ops = sum(c.ops for c in callers)
        wrong = [w for c in callers for w in c.wrong]
        unexpected = [u for c in callers for u in c.unexpected]
        print("load: %d operations by %d callers in %.0f s; RSS per wave (KiB) %s"
              % (ops, CALLERS, SECONDS, rss))
        self.assertEqual(wrong, [])
        self.assertEqual(unexpected, [])
        self.assertGreater(ops, CALLERS * 10)
        # Memory flat: the third wave holds no more than the second, plus slack
        # for allocator noise (64 MiB, a few in-flight 4096 x 1000 batches).
        self.assertLess(rss[2] - rss[1], 64 * 1024, "RSS grew from %d to %d KiB" % (rss[1], rss[2]))

        # Healthy afterwards, correct answers, and no acknowledged count lost.
        self.assertEqual(health_check(server.channel, ""), HEALTH_SERVING)
        added = sum(c.added for c in callers)
        stored = stub.GetDataset(pb.GetDatasetRequest(name="load"), timeout=RPC_TIMEOUT_S)
        self.assertEqual(list(stored.class_counts), [int(n) for n in np.array(COUNTS) + added])
        self.assertEqual(stored.version, 1 + sum(c.writes for c in callers))


if __name__ == "__main__":
    unittest.main()
