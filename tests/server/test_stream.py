"""StreamLoss (one response per request, in order, errors in-band), the
health service and server reflection."""

import queue
import signal
import threading
import time
import unittest

import grpc
import numpy as np
import torch
import torch.nn.functional as F

from server_fixture import (SharedServerTestCase, HEALTH_SERVING, RPC_TIMEOUT_S,
                            ServerTestCase, health_check, pb, ref_class_weights,
                            reflection_file_containing_symbol, reflection_list_services,
                            tensor_f32)

T = RPC_TIMEOUT_S
COUNTS = [500, 120, 40, 9, 3, 1]
C = len(COUNTS)


def torch_softmax_mean(z, y, counts, beta=0.9999):
    """SOFTMAX, MEAN: F.cross_entropy(weight=w, reduction='sum') / N in float64,
    with w from the effective-number formula computed in numpy."""
    n = np.asarray(counts, dtype=np.float64)
    r = (1.0 - beta) / (1.0 - np.power(beta, n))
    w = len(counts) * r / r.sum()
    zt = torch.from_numpy(np.asarray(z, dtype=np.float32).astype(np.float64))
    yt = torch.from_numpy(np.asarray(y, dtype=np.int64))
    total = F.cross_entropy(zt, yt, weight=torch.from_numpy(w), reduction="sum")
    return float(total) / len(y)


def valid_request(i):
    rng = np.random.default_rng(100 + i)
    b = 3 + i  # a different batch size per request: order shows in num_samples
    z = (rng.standard_normal((b, C)) * 2).astype(np.float32)
    y = rng.integers(0, C, size=b)
    req = pb.ComputeLossRequest(class_counts=pb.ClassCounts(counts=COUNTS),
                                logits=tensor_f32(z), labels=y.tolist())
    return req, torch_softmax_mean(z, y, COUNTS), b


def invalid_request(i):
    """(request, expected error code, message substring)."""
    req, _, b = valid_request(i)
    kind = i % 4
    if kind == 0:
        z = np.frombuffer(req.logits.data, dtype="<f4").reshape(b, C).copy()
        z[1, 2] = np.nan
        req.logits.data = z.tobytes()
        return req, grpc.StatusCode.INVALID_ARGUMENT, "logits[1][2] is NaN"
    if kind == 1:
        req.labels[0] = 9
        return req, grpc.StatusCode.INVALID_ARGUMENT, "labels[0] = 9 is outside [0, 6)"
    if kind == 2:
        req.config.beta = 1.5
        return req, grpc.StatusCode.INVALID_ARGUMENT, "config.beta"
    req.logits.shape[:] = [b]
    return req, grpc.StatusCode.INVALID_ARGUMENT, "logits.shape"


class StreamTest(SharedServerTestCase):

    def check_valid(self, resp, want_loss, b, where):
        self.assertEqual(resp.error_code, 0, "%s: error %r" % (where, resp.error_message))
        self.assertEqual(resp.error_message, "", where)
        self.assertEqual(resp.num_samples, b, where)
        self.assertLessEqual(abs(resp.loss - want_loss), 1e-5 * abs(want_loss) + 1e-6,
                             "%s: loss %.10g, want %.10g" % (where, resp.loss, want_loss))
        np.testing.assert_allclose(list(resp.class_weights), ref_class_weights(COUNTS),
                                   rtol=1e-9)

    def test_mixed_stream(self):
        plan = []  # (request, kind, expectation)
        invalid_at = {1, 2, 5, 8, 9, 13, 17, 19}
        for i in range(20):
            if i in invalid_at:
                req, code, needle = invalid_request(i)
                plan.append((req, "invalid", (code, needle)))
            else:
                req, loss, b = valid_request(i)
                plan.append((req, "valid", (loss, b)))
        # One request naming an unknown dataset: NOT_FOUND in-band.
        req, _, _ = valid_request(20)
        req.dataset = "stream-nobody"
        plan.append((req, "invalid", (grpc.StatusCode.NOT_FOUND, "")))

        responses = list(self.stub.StreamLoss(iter([p[0] for p in plan]), timeout=T))
        self.assertEqual(len(responses), len(plan), "one response per request")
        for i, (resp, (req, kind, exp)) in enumerate(zip(responses, plan)):
            with self.subTest(request=i, kind=kind):
                if kind == "valid":
                    self.check_valid(resp, exp[0], exp[1], "response %d" % i)
                else:
                    code, needle = exp
                    self.assertEqual(resp.error_code, code.value[0],
                                     "response %d: error_code %d (%r)"
                                     % (i, resp.error_code, resp.error_message))
                    self.assertNotEqual(resp.error_message, "")
                    self.assertIn(needle, resp.error_message)

    def test_stream_is_interactive(self):
        # Ping-pong: each response must arrive before the next request is
        # sent (the server may not wait for the client to half-close).
        requests = queue.Queue()

        def gen():
            while True:
                item = requests.get()
                if item is None:
                    return
                yield item

        call = self.stub.StreamLoss(gen(), timeout=T)
        results = queue.Queue()

        def reader():
            try:
                for r in call:
                    results.put(r)
                results.put(None)
            except grpc.RpcError as e:
                results.put(e)

        th = threading.Thread(target=reader, daemon=True)
        th.start()
        try:
            for i in range(6):
                if i % 3 == 2:
                    req, code, needle = invalid_request(i)
                else:
                    req, loss, b = valid_request(i)
                requests.put(req)
                try:
                    resp = results.get(timeout=10)
                except queue.Empty:
                    self.fail("no response to stream request %d before the next request" % i)
                self.assertIsInstance(resp, pb.ComputeLossResponse, repr(resp))
                if i % 3 == 2:
                    self.assertEqual(resp.error_code, code.value[0])
                    self.assertIn(needle, resp.error_message)
                else:
                    self.check_valid(resp, loss, b, "request %d" % i)
        finally:
            requests.put(None)
        end = results.get(timeout=10)
        self.assertIsNone(end, "stream did not end OK: %r" % (end,))
        self.assertEqual(call.code(), grpc.StatusCode.OK)
        th.join(10)

    def test_malformed_message_in_stream(self):
        # [valid, undecodable bytes, valid]: the bad message must not be
        # dropped silently. Either the stream fails with an error status, or
        # every message gets its response (the bad one with an error_code).
        raw = self.server.channel.stream_stream(
            "/cbloss.v1.LossService/StreamLoss",
            request_serializer=lambda b: b, response_deserializer=lambda b: b)
        first, loss0, b0 = valid_request(0)
        third, loss2, b2 = valid_request(2)
        call = raw(iter([first.SerializeToString(), b"\xff\xff\xff garbage",
                         third.SerializeToString()]), timeout=T)
        responses, status = [], None
        try:
            for r in call:
                responses.append(pb.ComputeLossResponse.FromString(r))
            status = call.code()
        except grpc.RpcError as e:
            status = e.code()
        if status == grpc.StatusCode.OK:
            self.assertEqual(len(responses), 3,
                             "stream ended OK with %d responses to 3 messages: the "
                             "undecodable message (and what followed) was dropped silently"
                             % len(responses))
            self.check_valid(responses[0], loss0, b0, "response 0")
            self.assertNotEqual(responses[1].error_code, 0)
            self.check_valid(responses[2], loss2, b2, "response 2")
        else:
            self.assertIn(status, (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.INTERNAL))
            if responses:
                self.check_valid(responses[0], loss0, b0, "response 0")
        self.assertTrue(self.server.running())
        self.assertEqual(health_check(self.server.channel, ""), HEALTH_SERVING)

    def test_long_pipelined_stream(self):
        # 300 requests sent without waiting: all answered, in order.
        reqs, wants = [], []
        for i in range(300):
            if i % 7 == 3:
                req, code, needle = invalid_request(i)
                reqs.append(req)
                wants.append(None)
            else:
                req, loss, b = valid_request(i % 40)
                reqs.append(req)
                wants.append((loss, b))
        responses = list(self.stub.StreamLoss(iter(reqs), timeout=120))
        self.assertEqual(len(responses), len(reqs))
        for i, (resp, want) in enumerate(zip(responses, wants)):
            if want is None:
                self.assertEqual(resp.error_code, 3, "response %d" % i)
            else:
                self.check_valid(resp, want[0], want[1], "response %d" % i)

    def test_empty_stream(self):
        self.assertEqual(list(self.stub.StreamLoss(iter([]), timeout=T)), [])

    def test_stream_with_dataset(self):
        stored = self.stub.PutDataset(pb.PutDatasetRequest(dataset=pb.Dataset(
            name="stream-ds", class_counts=COUNTS)), timeout=T)
        reqs, wants = [], []
        for i in range(4):
            req, loss, b = valid_request(i)
            req.dataset = "stream-ds"
            reqs.append(req)
            wants.append((loss, b))
        responses = list(self.stub.StreamLoss(iter(reqs), timeout=T))
        self.assertEqual(len(responses), 4)
        for i, (resp, (loss, b)) in enumerate(zip(responses, wants)):
            self.check_valid(resp, loss, b, "response %d" % i)
            self.assertEqual(resp.dataset_version, stored.version)

    # -- health / reflection ------------------------------------------------

    def test_health(self):
        ch = self.server.channel
        self.assertEqual(health_check(ch, ""), HEALTH_SERVING)
        self.assertEqual(health_check(ch, "cbloss.v1.LossService"), HEALTH_SERVING)
        with self.assertRaises(grpc.RpcError) as cm:
            health_check(ch, "no.such.Service")
        self.assertEqual(cm.exception.code(), grpc.StatusCode.NOT_FOUND)

    def test_reflection(self):
        names, raw = reflection_list_services(self.server.channel)
        self.assertIn(b"cbloss.v1.LossService", raw)
        self.assertIn("cbloss.v1.LossService", names)
        self.assertIn("grpc.health.v1.Health", names)
        files, raw = reflection_file_containing_symbol(self.server.channel,
                                                       "cbloss.v1.LossService")
        self.assertTrue(files, "no file descriptor for cbloss.v1.LossService: %r" % raw[:200])
        self.assertTrue(any(b"cbloss/v1/cbloss.proto" in f for f in files))


class DrainingHealthTest(ServerTestCase):

    def test_not_serving_while_draining(self):
        # An open stream keeps the server draining after SIGTERM; meanwhile the
        # health check must not say SERVING, and the open stream still works.
        server = self.start_server(extra_flags=["--shutdown_grace_seconds=10"])
        requests = queue.Queue()

        def gen():
            while True:
                item = requests.get()
                if item is None:
                    return
                yield item

        call = server.stub.StreamLoss(gen(), timeout=T)
        it = iter(call)
        req, loss, b = valid_request(0)
        requests.put(req)
        first = next(it)
        self.assertEqual(first.error_code, 0)
        watcher = server.new_channel()
        try:
            server.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 5
            status = HEALTH_SERVING
            while time.monotonic() < deadline:
                try:
                    status = health_check(watcher, "", timeout=1)
                except grpc.RpcError:
                    status = None  # not accepting calls any more is also fine
                if status != HEALTH_SERVING:
                    break
                time.sleep(0.05)
            self.assertNotEqual(status, HEALTH_SERVING, "still SERVING 5 s after SIGTERM")
            req, loss, b = valid_request(1)
            requests.put(req)
            second = next(it)
            self.check_valid_loss(second, loss, b)
        finally:
            requests.put(None)
            watcher.close()
        self.assertEqual(list(it), [])
        self.assertEqual(server.wait_exit(30), 0)

    def check_valid_loss(self, resp, want, b):
        self.assertEqual(resp.error_code, 0, resp.error_message)
        self.assertEqual(resp.num_samples, b)
        self.assertLessEqual(abs(resp.loss - want), 1e-5 * abs(want) + 1e-6)


if __name__ == "__main__":
    unittest.main()
