"""Shared memory in the Python client and cbloss.torch (API.md section 5.3),
against a real cbloss-server listening on a Unix socket (and on 127.0.0.1,
to compare with the bytes path) with --allow_shared_memory.

What must hold: a Client with a unix: target uses one region by itself
(listed by ListSharedMemory, counted by the cbloss_shared_memory_regions
gauge, its object unlinked from /dev/shm); the gradient is a numpy view of
the region; results are bit-identical to bytes over TCP (and within LOSS.md
section 7 of the float64 reference); the region grows for a bigger batch;
a server without shared memory gets bytes silently; after a server restart
the client registers again; a torch training step over shared memory equals
the TCP module's loss and parameter gradients exactly.
"""

import os
import re
import shutil
import tempfile
import time
import unittest
import urllib.request

import grpc
import numpy as np
import torch

import cbloss
from cbloss.torch import ClassBalancedLoss, StreamingClassBalancedLoss
from server_process import RPC_TIMEOUT_S, START_TIMEOUT_S, ServerProcess

import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "server"))
from server_fixture import assert_close_gradient, assert_close_loss, ref_loss  # noqa: E402

COUNTS = [500, 200, 90, 40, 17, 8, 3]
OFF_MESSAGE = "shared memory is off on this server (start it with --allow_shared_memory)"


class UnixServer(ServerProcess):
    """A cbloss-server on 127.0.0.1:0 and on unix:<its folder>/cbloss.sock,
    with a metrics port."""

    def __init__(self, allow_shared_memory=True):
        workdir = tempfile.mkdtemp(prefix="cbloss-shm-")
        self.socket_path = os.path.join(workdir, "cbloss.sock")
        self.metrics_port_file = os.path.join(workdir, "metrics.port")
        flags = ["--listen=unix:" + self.socket_path, "--shutdown_grace_seconds=1",
                 "--metrics_listen=127.0.0.1:0",
                 "--metrics_port_file=" + self.metrics_port_file]
        if allow_shared_memory:
            flags.append("--allow_shared_memory")
        super().__init__(workdir=workdir, extra_flags=flags, name="shm")

    @property
    def unix_target(self):
        return "unix:" + self.socket_path

    def metric(self, name):
        port = self.wait_port_file(self.metrics_port_file, time.monotonic() + START_TIMEOUT_S)
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10) as r:
            text = r.read().decode()
        match = re.search(r"^%s(?:\{[^}]*\})? (\S+)$" % re.escape(name), text, re.M)
        if match is None:
            raise AssertionError("no metric %s in:\n%s" % (name, text))
        return float(match.group(1))

    def close(self):
        code = super().close()
        shutil.rmtree(self.workdir, ignore_errors=True)
        return code


def batch(rows, cols, seed):
    rng = np.random.default_rng(seed)
    z = (rng.standard_normal((rows, cols)) * 3).astype(np.float32)
    y = rng.integers(0, cols, rows).astype(np.int64)
    return z, y


def counts(cols):
    return [1 + 1000 // (j + 1) for j in range(cols)]


def assert_bits_equal(test, a, b, what="gradient"):
    a, b = np.asarray(a), np.asarray(b)
    test.assertEqual(a.shape, b.shape, what)
    test.assertEqual(a.dtype, b.dtype, what)
    test.assertTrue(np.array_equal(a.view(np.uint8), b.view(np.uint8)),
                    "%s differs from the bytes path" % what)


def region_names(client):
    return [r.name for r in client.list_shared_memory()]


class ServerCase(unittest.TestCase):
    server_allows = True

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.server = UnixServer(allow_shared_memory=cls.server_allows)
        try:
            cls.server.start()
        except BaseException:
            cls.server.close()
            raise
        cls.tcp = cbloss.Client(cls.server.target, timeout=RPC_TIMEOUT_S)

    @classmethod
    def tearDownClass(cls):
        cls.tcp.close()
        cls.server.close()
        super().tearDownClass()

    def unix_client(self, **kwargs):
        client = cbloss.Client(self.server.unix_target, timeout=RPC_TIMEOUT_S, **kwargs)
        self.addCleanup(client.close)
        return client


class AutoModeTest(ServerCase):

    def test_engages_by_itself_and_lists_one_unlinked_region(self):
        client = self.unix_client()
        self.assertIsNone(client.shared_memory_region, "made on first use")
        z, y = batch(10, 7, 1)
        r = client.compute_loss(z, y, class_counts=COUNTS, loss_type="focal")
        self.assertTrue(r.shared_memory)
        name = client.shared_memory_region
        self.assertIsNotNone(name)
        regions = {region.name: region for region in client.list_shared_memory()}
        self.assertIn(name, regions)
        key = regions[name].key
        self.assertEqual(key, "/" + name)
        self.assertTrue(key.startswith("/cbloss-%d-" % os.getpid()), key)
        self.assertEqual(regions[name].offset, 0)
        self.assertGreaterEqual(regions[name].byte_size, 10 * 7 * 8)
        self.assertFalse(os.path.exists("/dev/shm" + key), "unlinked after registering")
        self.assertGreaterEqual(self.server.metric("cbloss_shared_memory_regions"), 1)
        self.assertGreaterEqual(self.server.metric("cbloss_shared_memory_mapped_bytes"),
                                regions[name].byte_size)
        # The same region serves the next calls.
        client.compute_loss(z, y, class_counts=COUNTS)
        self.assertEqual(client.shared_memory_region, name)
        client.close()
        self.assertNotIn(name, region_names(self.unix_client(shared_memory=False)))

    def test_results_are_bit_identical_to_bytes_over_tcp(self):
        client = self.unix_client()
        cases = [
            dict(loss_type="focal", beta=0.9999, gamma=2.0),
            dict(loss_type="softmax", reduction="sum"),
            dict(loss_type="sigmoid", gradient_dtype="f16"),
            dict(loss_type="softmax", gradient_dtype="bf16"),
            dict(loss_type="focal", reduction="none", want_per_sample_losses=True,
                 upstream=np.linspace(0.5, 2.0, 33)),
        ]
        z, y = batch(33, 7, 2)
        for kwargs in cases:
            with self.subTest(**{k: v for k, v in kwargs.items() if k != "upstream"}):
                got = client.compute_loss(z, y, class_counts=COUNTS, **kwargs)
                want = self.tcp.compute_loss(z, y, class_counts=COUNTS, **kwargs)
                self.assertEqual(got.shared_memory, kwargs.get("gradient_dtype") != "bf16")
                self.assertEqual(got.loss, want.loss)
                self.assertEqual(got.gradient_dtype, want.gradient_dtype)
                assert_bits_equal(self, got.gradient, want.gradient)
                if want.per_sample_losses is not None:
                    assert_bits_equal(self, got.per_sample_losses, want.per_sample_losses,
                                      "per_sample_losses")
                np.testing.assert_array_equal(got.class_weights, want.class_weights)
        # And against the float64 reference (LOSS.md section 7).
        got = client.compute_loss(z, y, class_counts=COUNTS, loss_type="focal", beta=0.9999,
                                  gamma=2.0)
        loss, _, gradient, _, _ = ref_loss(z, y, COUNTS, "FOCAL", 0.9999, 2.0)
        assert_close_loss(self, got.loss, loss)
        assert_close_gradient(self, got.gradient, gradient)

    def test_16_bit_and_float64_logits(self):
        client = self.unix_client()
        z, y = batch(12, 7, 3)
        for logits, gradient_dtype in ((z.astype(np.float16), "f16"),
                                       (torch.from_numpy(z).to(torch.bfloat16), "bf16"),
                                       (z.astype(np.float64), None),
                                       (torch.from_numpy(z.astype(np.float64)), None)):
            with self.subTest(dtype=str(logits.dtype)):
                got = client.compute_loss(logits, y, class_counts=COUNTS,
                                          gradient_dtype=gradient_dtype)
                want = self.tcp.compute_loss(logits, y, class_counts=COUNTS,
                                             gradient_dtype=gradient_dtype)
                self.assertEqual(got.loss, want.loss)
                assert_bits_equal(self, got.gradient, want.gradient)

    def test_gradient_is_a_view_of_the_region_until_the_next_call(self):
        client = self.unix_client()
        z1, y1 = batch(16, 7, 4)
        z2, y2 = batch(16, 7, 5)
        r1 = client.compute_loss(z1, y1, class_counts=COUNTS)
        area = client._shm_slot.area
        region_bytes = np.frombuffer(area.map, dtype=np.uint8)
        self.assertTrue(np.shares_memory(r1.gradient, region_bytes))
        self.assertFalse(r1.gradient.flags.owndata)
        kept = r1.gradient.copy()
        r2 = client.compute_loss(z2, y2, class_counts=COUNTS)
        # Documented: the next call reuses the region.
        np.testing.assert_array_equal(r1.gradient, r2.gradient)
        self.assertFalse(np.array_equal(kept, r2.gradient))
        assert_bits_equal(self, kept, self.tcp.compute_loss(z1, y1,
                                                            class_counts=COUNTS).gradient)

    def test_grows_for_a_bigger_batch(self):
        client = self.unix_client()
        z, y = batch(4, 7, 6)
        client.compute_loss(z, y, class_counts=COUNTS)
        small = client.shared_memory_region
        small_size = client._shm_slot.area.byte_size
        z, y = batch(2000, 300, 7)
        got = client.compute_loss(z, y, class_counts=counts(300), loss_type="focal")
        big = client.shared_memory_region
        self.assertNotEqual(big, small)
        self.assertGreaterEqual(client._shm_slot.area.byte_size, 2000 * 300 * 8)
        self.assertGreater(client._shm_slot.area.byte_size, small_size)
        names = region_names(client)
        self.assertIn(big, names)
        self.assertNotIn(small, names, "the outgrown region is unregistered")
        want = self.tcp.compute_loss(z, y, class_counts=counts(300), loss_type="focal")
        self.assertEqual(got.loss, want.loss)
        assert_bits_equal(self, got.gradient, want.gradient)
        # A smaller batch fits the big region.
        z, y = batch(3, 7, 8)
        client.compute_loss(z, y, class_counts=COUNTS)
        self.assertEqual(client.shared_memory_region, big)

    def test_streams_use_the_clients_region(self):
        client = self.unix_client()
        z, y = batch(9, 7, 9)
        with client.stream_loss() as stream:
            got = stream.compute_loss(z, y, class_counts=COUNTS, loss_type="focal")
            self.assertTrue(got.shared_memory)
            self.assertIn(client.shared_memory_region, region_names(client))
            want = self.tcp.compute_loss(z, y, class_counts=COUNTS, loss_type="focal")
            self.assertEqual(got.loss, want.loss)
            assert_bits_equal(self, got.gradient, want.gradient)

    def test_shared_memory_false_sends_bytes(self):
        client = self.unix_client(shared_memory=False)
        z, y = batch(5, 7, 10)
        r = client.compute_loss(z, y, class_counts=COUNTS)
        self.assertFalse(r.shared_memory)
        self.assertIsNone(client.shared_memory_region)
        self.assertTrue(r.gradient.flags.owndata or r.gradient.base is not None)

    def test_tcp_targets_send_bytes_unless_told(self):
        z, y = batch(5, 7, 11)
        self.assertFalse(self.tcp.compute_loss(z, y, class_counts=COUNTS).shared_memory)
        forced = cbloss.Client(self.server.target, shared_memory=True, timeout=RPC_TIMEOUT_S)
        self.addCleanup(forced.close)
        with self.assertRaises(cbloss.CblossError) as e:
            forced.compute_loss(z, y, class_counts=COUNTS)
        self.assertEqual(e.exception.code, grpc.StatusCode.PERMISSION_DENIED)
        self.assertEqual(e.exception.details, "shared memory needs a Unix domain socket "
                                              "connection (a unix: target)")

    def test_register_list_unregister(self):
        client = self.unix_client(shared_memory=False)
        with self.assertRaises(cbloss.CblossError) as e:
            client.register_shared_memory("nope", "/cbloss-%d-absent" % os.getpid(), 64)
        self.assertEqual(e.exception.code, grpc.StatusCode.NOT_FOUND)
        with self.assertRaises(cbloss.CblossError) as e:
            client.unregister_shared_memory("never-registered")
        self.assertEqual(e.exception.code, grpc.StatusCode.NOT_FOUND)
        with self.assertRaises(ValueError):
            cbloss.Client(self.server.unix_target, shared_memory="yes")


class ServerWithoutSharedMemoryTest(ServerCase):
    server_allows = False

    def test_auto_mode_falls_back_to_bytes_silently(self):
        client = self.unix_client()
        z, y = batch(20, 7, 12)
        got = client.compute_loss(z, y, class_counts=COUNTS, loss_type="focal")
        self.assertFalse(got.shared_memory)
        self.assertIsNone(client.shared_memory_region)
        self.assertEqual(client._shm_refusal.code, grpc.StatusCode.FAILED_PRECONDITION)
        want = self.tcp.compute_loss(z, y, class_counts=COUNTS, loss_type="focal")
        self.assertEqual(got.loss, want.loss)
        assert_bits_equal(self, got.gradient, want.gradient)
        # Remembered: no second attempt.
        client.compute_loss(z, y, class_counts=COUNTS)
        self.assertEqual(self.server.metric("cbloss_shared_memory_regions"), 0)
        # No object left behind.
        self.assertEqual([f for f in os.listdir("/dev/shm")
                          if f.startswith("cbloss-%d-" % os.getpid())], [])

    def test_required_shared_memory_raises(self):
        client = self.unix_client(shared_memory=True)
        z, y = batch(4, 7, 13)
        with self.assertRaises(cbloss.CblossError) as e:
            client.compute_loss(z, y, class_counts=COUNTS)
        self.assertEqual(e.exception.code, grpc.StatusCode.FAILED_PRECONDITION)
        self.assertEqual(e.exception.details, OFF_MESSAGE)

    def test_torch_module_falls_back_too(self):
        z, y = batch(8, 7, 14)
        module = ClassBalancedLoss(target=self.server.unix_target, class_counts=COUNTS)
        self.addCleanup(module.client.close)
        logits = torch.from_numpy(z).requires_grad_()
        module(logits, torch.from_numpy(y)).backward()
        self.assertFalse(module.last_result.shared_memory)
        want = self.tcp.compute_loss(z, y, class_counts=COUNTS)
        assert_bits_equal(self, logits.grad.numpy(), want.gradient)


class RestartTest(unittest.TestCase):

    def test_registers_again_after_a_server_restart(self):
        server = UnixServer()
        self.addCleanup(server.close)
        server.start()
        client = cbloss.Client(server.unix_target, timeout=RPC_TIMEOUT_S)
        self.addCleanup(client.close)
        module = ClassBalancedLoss(client, class_counts=COUNTS, loss_type="focal")
        z, y = batch(10, 7, 15)
        first = client.compute_loss(z, y, class_counts=COUNTS)
        module(torch.from_numpy(z).requires_grad_(), torch.from_numpy(y))
        before = client.shared_memory_region
        module_before = module._shm_slot.area.region
        server.stop()
        server.start()
        again = client.compute_loss(z, y, class_counts=COUNTS)
        self.assertTrue(again.shared_memory)
        self.assertNotEqual(client.shared_memory_region, before)
        self.assertEqual(again.loss, first.loss)
        logits = torch.from_numpy(z).requires_grad_()
        module(logits, torch.from_numpy(y)).backward()
        self.assertTrue(module.last_result.shared_memory)
        self.assertNotEqual(module._shm_slot.area.region, module_before)
        self.assertEqual(sorted(region_names(client)),
                         sorted([client.shared_memory_region, module._shm_slot.area.region]))


class TorchModuleTest(ServerCase):

    def step(self, criterion, dtype, seed, reduction_sum=False, accumulate=False):
        """(loss, parameter gradients) of one step of a small model."""
        torch.manual_seed(seed)
        model = torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.Tanh(),
                                    torch.nn.Linear(16, len(COUNTS)))
        x = torch.randn(24, 12)
        y = torch.randint(0, len(COUNTS), (24,))
        logits = model(x).to(dtype)
        if accumulate:  # two forwards of one module, one backward
            loss = criterion(logits[:12], y[:12]) + criterion(logits[12:], y[12:])
        else:
            loss = criterion(logits, y)
        if reduction_sum:
            loss = (loss * torch.linspace(0.5, 1.5, loss.numel()).to(loss.dtype)).sum()
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    def check_equal(self, dtype, module_class=ClassBalancedLoss, accumulate=False, **kwargs):
        over_shm = module_class(target=self.server.unix_target, class_counts=COUNTS, **kwargs)
        over_tcp = module_class(self.tcp, class_counts=COUNTS, **kwargs)
        self.addCleanup(over_shm.client.close)
        if hasattr(over_tcp, "close") and module_class is StreamingClassBalancedLoss:
            self.addCleanup(over_tcp.close)
        per_sample = kwargs.get("reduction") == "none"
        for seed in (1, 2):
            a_loss, a_grads = self.step(over_shm, dtype, seed, per_sample, accumulate)
            b_loss, b_grads = self.step(over_tcp, dtype, seed, per_sample, accumulate)
            self.assertTrue(over_shm.last_result.shared_memory
                            or dtype == torch.bfloat16)
            self.assertIsNotNone(over_shm._shm_slot.area)
            self.assertIn(over_shm._shm_slot.area.region, region_names(over_shm.client))
            self.assertTrue(torch.equal(a_loss, b_loss), "%r != %r" % (a_loss, b_loss))
            for a, b in zip(a_grads, b_grads):
                self.assertTrue(torch.equal(a, b), "parameter gradients differ")

    def test_float32_focal_step_equals_tcp(self):
        self.check_equal(torch.float32, loss_type="focal", beta=0.9999, gamma=2.0)

    def test_bfloat16_and_float16_steps_equal_tcp(self):
        self.check_equal(torch.bfloat16, loss_type="softmax")
        self.check_equal(torch.float16, loss_type="sigmoid")

    def test_reduction_none_step_equals_tcp(self):
        self.check_equal(torch.float32, loss_type="focal", reduction="none")

    def test_two_forwards_before_backward_equal_tcp(self):
        # The second forward reuses the module's region: the first graph's
        # gradient must not change under it.
        self.check_equal(torch.float32, accumulate=True, loss_type="focal")

    def test_streaming_module_equals_tcp(self):
        self.check_equal(torch.float32, StreamingClassBalancedLoss, loss_type="focal")

    def test_module_region_is_its_own_and_holds_the_gradient(self):
        client = self.unix_client()
        module = ClassBalancedLoss(client, class_counts=COUNTS)
        z, y = batch(6, 7, 16)
        client.compute_loss(z, y, class_counts=COUNTS)
        logits = torch.from_numpy(z).requires_grad_()
        module(logits, torch.from_numpy(y)).backward()
        area = module._shm_slot.area
        self.assertNotEqual(area.region, client.shared_memory_region)
        self.assertTrue(np.shares_memory(module.last_result.gradient,
                                         np.frombuffer(area.map, dtype=np.uint8)))
        # logits.grad is the module's own tensor, not the region.
        self.assertFalse(np.shares_memory(logits.grad.numpy(),
                                          np.frombuffer(area.map, dtype=np.uint8)))
        assert_bits_equal(self, logits.grad.numpy(), module.last_result.gradient)
        module.close()
        self.assertNotIn(area.region, region_names(client))


if __name__ == "__main__":
    unittest.main()
