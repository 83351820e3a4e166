"""Shared-memory tensors over a Unix socket (API.md section 5.3), end to end:
results bit-identical to the same requests sent with bytes, every bad
reference with its exact status code (and the server still up after it),
regions unregistered while in use, ownership, the prefix, limits, shared
memory off, TCP and HTTP callers, tokens, and regions released when their
connection closes.

Real cbloss-server processes (server_fixture.py, unix_support.py);
shared-memory objects are made from Python (os.open under /dev/shm +
os.ftruncate + mmap) as a client would make them."""

import http.client
import json
import os
import subprocess
import threading
import time
import unittest
import urllib.request

import grpc
import numpy as np

from server_fixture import (HEALTH_SERVING, RPC_TIMEOUT_S, ServerTestCase, assert_close_gradient,
                            assert_close_loss, assert_close_per_sample, health_check, pb,
                            pb_grpc, ref_loss, tensor_bits16, tensor_f32)
from unix_support import SharedMemoryObject, UnixServer, unix_channel

OFF = "shared memory is off on this server (start it with --allow_shared_memory)"
NOT_UNIX = "shared memory needs a Unix domain socket connection (a unix: target)"
PAGE = 4096


def ref(region, offset, size):
    return pb.SharedMemoryRef(region=region, offset=offset, byte_size=size)


def f32_to_bf16_bits(values):
    """Round-to-nearest-even bfloat16 bit patterns of float32 `values`."""
    bits = np.asarray(values, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)


def softplus(x):
    return np.maximum(x, 0.0) + np.log1p(np.exp(-np.abs(x)))


class SharedMemoryTestCase(ServerTestCase):
    """Helpers: objects removed after the test, servers on a Unix socket."""

    def new_object(self, size):
        obj = SharedMemoryObject(size)
        self.addCleanup(obj.close)
        return obj

    def new_unix_server(self, allow=True, extra_flags=(), **kwargs):
        flags = ["--allow_shared_memory"] if allow else []
        server = self.new_server(server_class=UnixServer, extra_flags=flags + list(extra_flags),
                                 **kwargs)
        self.addCleanup(server.close_socket_dir)
        return server

    def register(self, stub, name, obj, offset=0, size=None, **kwargs):
        size = obj.size - offset if size is None else size
        return stub.RegisterSharedMemory(
            pb.RegisterSharedMemoryRequest(name=name, key=obj.key, offset=offset, byte_size=size),
            timeout=RPC_TIMEOUT_S, **kwargs)

    def assertStillServing(self, server, stub=None):
        """Health SERVING and a small computation right after an error."""
        self.assertEqual(health_check(server.channel), HEALTH_SERVING)
        logits = np.array([[1.0, -1.0], [0.5, 2.0]], dtype=np.float32)
        response = (stub or server.stub).ComputeLoss(
            pb.ComputeLossRequest(class_counts=pb.ClassCounts(counts=[1, 1]),
                                  logits=tensor_f32(logits), labels=[0, 1],
                                  config=pb.LossConfig(weighting=pb.WEIGHTING_SCHEME_NONE)),
            timeout=RPC_TIMEOUT_S)
        loss, _, _, _, _ = ref_loss(logits, [0, 1], [1, 1])
        assert_close_loss(self, response.loss, loss)


class ClassServerTestCase(SharedMemoryTestCase):
    """One server per class: --allow_shared_memory on unix: and TCP, HTTP."""

    extra_flags = ()

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        import tempfile
        cls._class_tmp = tempfile.mkdtemp(prefix="cbloss-e2e-%s-" % cls.__name__)
        cls.http_port_file = os.path.join(cls._class_tmp, "http.port")
        cls.server = UnixServer(cls._class_tmp, name="class0", extra_flags=[
            "--allow_shared_memory", "--http_listen=127.0.0.1:0",
            "--http_port_file=" + cls.http_port_file] + list(cls.extra_flags))
        cls._class_servers = [cls.server]
        try:
            cls.server.start()
        except Exception:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.server.close_socket_dir()
        super().tearDownClass()

    def setUp(self):
        super().setUp()
        self.stub = self.server.stub
        # Regions belong to the uid: start every test with none.
        self.stub.UnregisterSharedMemory(pb.UnregisterSharedMemoryRequest(),
                                         timeout=RPC_TIMEOUT_S)


# ---------------------------------------------------------------------------
# Bit-identical results
# ---------------------------------------------------------------------------


class BitIdenticalTest(ClassServerTestCase):
    """The same request with bytes and with shared memory: the same loss,
    per-sample losses and gradient bits (same engine, same views); and
    close to an independent float64 reference."""

    def labels_case(self, b=8, c=5, seed=1):
        rng = np.random.RandomState(seed)
        logits = (rng.randn(b, c) * 2).astype(np.float32)
        labels = rng.randint(0, c, size=b).tolist()
        counts = [int(x) for x in rng.randint(1, 500, size=c)]
        return logits, labels, counts

    def bytes_request(self, logits, labels, counts, **fields):
        return pb.ComputeLossRequest(class_counts=pb.ClassCounts(counts=counts),
                                     logits=tensor_f32(logits), labels=labels,
                                     want_gradient=True, want_per_sample_losses=True, **fields)

    def shm_request(self, bytes_request, logits_ref, gradient_ref):
        request = pb.ComputeLossRequest()
        request.CopyFrom(bytes_request)
        request.logits.ClearField("data")
        request.logits.shm.CopyFrom(logits_ref)
        request.gradient_shm.CopyFrom(gradient_ref)
        request.want_gradient = False  # gradient_shm implies it
        return request

    def check_identical(self, with_bytes, with_shm, gradient_bytes):
        self.assertEqual(with_shm.loss, with_bytes.loss)
        self.assertEqual(list(with_shm.per_sample_losses), list(with_bytes.per_sample_losses))
        self.assertEqual(list(with_shm.class_weights), list(with_bytes.class_weights))
        self.assertEqual(with_shm.resolved_config, with_bytes.resolved_config)
        # The gradient went to shared memory, not into the response.
        self.assertFalse(with_shm.HasField("gradient"))
        self.assertEqual(gradient_bytes, with_bytes.gradient.data)

    def test_labels_float32_gradient(self):
        logits, labels, counts = self.labels_case()
        obj = self.new_object(PAGE)
        self.register(self.stub, "io", obj)
        n = logits.nbytes
        obj.write(0, logits.tobytes())
        with_bytes = self.stub.ComputeLoss(self.bytes_request(logits, labels, counts),
                                           timeout=RPC_TIMEOUT_S)
        with_shm = self.stub.ComputeLoss(
            self.shm_request(self.bytes_request(logits, labels, counts), ref("io", 0, n),
                             ref("io", 1024, n)), timeout=RPC_TIMEOUT_S)
        self.check_identical(with_bytes, with_shm, obj.read(1024, n))
        loss, per_sample, gradient, _, _ = ref_loss(logits, labels, counts)
        assert_close_loss(self, with_shm.loss, loss)
        assert_close_per_sample(self, with_shm.per_sample_losses, per_sample)
        assert_close_gradient(self, np.frombuffer(obj.read(1024, n), "<f4").reshape(logits.shape),
                              gradient)

    def test_bfloat16_gradient_and_focal(self):
        logits, labels, counts = self.labels_case(b=16, c=7, seed=2)
        fields = dict(gradient_dtype=pb.DTYPE_BFLOAT16,
                      config=pb.LossConfig(loss_type=pb.LOSS_TYPE_FOCAL, gamma=2.0))
        obj = self.new_object(2 * PAGE)
        self.register(self.stub, "bf", obj)
        obj.write(0, logits.tobytes())
        n, g = logits.nbytes, logits.size * 2
        with_bytes = self.stub.ComputeLoss(self.bytes_request(logits, labels, counts, **fields),
                                           timeout=RPC_TIMEOUT_S)
        self.assertEqual(with_bytes.gradient.dtype, pb.DTYPE_BFLOAT16)
        with_shm = self.stub.ComputeLoss(
            self.shm_request(self.bytes_request(logits, labels, counts, **fields),
                             ref("bf", 0, n), ref("bf", PAGE, g)), timeout=RPC_TIMEOUT_S)
        self.check_identical(with_bytes, with_shm, obj.read(PAGE, g))
        loss, _, gradient, _, _ = ref_loss(logits, labels, counts, loss_type="FOCAL")
        assert_close_loss(self, with_shm.loss, loss)
        # bfloat16 keeps 8 bits: within one rounding of the reference.
        got = (np.frombuffer(obj.read(PAGE, g), "<u2").astype(np.uint32) << 16).view(np.float32)
        np.testing.assert_allclose(got.reshape(logits.shape), gradient, rtol=2 ** -8,
                                   atol=1e-6 * np.abs(gradient).max())

    def test_bfloat16_logits_in_shared_memory(self):
        logits, labels, counts = self.labels_case(b=6, c=4, seed=3)
        bits = f32_to_bf16_bits(logits)
        obj = self.new_object(PAGE)
        self.register(self.stub, "bl", obj)
        obj.write(0, bits.tobytes())
        base = pb.ComputeLossRequest(
            class_counts=pb.ClassCounts(counts=counts),
            logits=tensor_bits16(bits, logits.shape, pb.DTYPE_BFLOAT16), labels=labels,
            want_gradient=True, want_per_sample_losses=True)
        with_bytes = self.stub.ComputeLoss(base, timeout=RPC_TIMEOUT_S)
        n = logits.size * 4
        with_shm = self.stub.ComputeLoss(
            self.shm_request(base, ref("bl", 0, bits.nbytes), ref("bl", 512, n)),
            timeout=RPC_TIMEOUT_S)
        self.check_identical(with_bytes, with_shm, obj.read(512, n))
        decoded = (bits.astype(np.uint32) << 16).view(np.float32).reshape(logits.shape)
        loss, _, _, _, _ = ref_loss(decoded, labels, counts)
        assert_close_loss(self, with_shm.loss, loss)

    def test_targets_mode_with_targets_in_shared_memory(self):
        rng = np.random.RandomState(4)
        b, c = 10, 6
        logits = rng.randn(b, c).astype(np.float32)
        targets = (rng.rand(b, c) < 0.3).astype(np.float32)
        config = pb.LossConfig(loss_type=pb.LOSS_TYPE_SIGMOID, reduction=pb.REDUCTION_SUM,
                               weighting=pb.WEIGHTING_SCHEME_NONE)
        base = pb.ComputeLossRequest(class_counts=pb.ClassCounts(counts=[5] * c),
                                     logits=tensor_f32(logits), targets=tensor_f32(targets),
                                     config=config, want_gradient=True,
                                     want_per_sample_losses=True)
        obj = self.new_object(PAGE)
        self.register(self.stub, "tg", obj)
        n = logits.nbytes
        obj.write(0, logits.tobytes())
        obj.write(n, targets.tobytes())
        with_bytes = self.stub.ComputeLoss(base, timeout=RPC_TIMEOUT_S)
        request = self.shm_request(base, ref("tg", 0, n), ref("tg", 2 * n, n))
        request.targets.ClearField("data")
        request.targets.shm.CopyFrom(ref("tg", n, n))
        with_shm = self.stub.ComputeLoss(request, timeout=RPC_TIMEOUT_S)
        self.check_identical(with_bytes, with_shm, obj.read(2 * n, n))
        # Independent float64: unweighted BCE summed, gradient sigmoid(z) - t.
        z = logits.astype(np.float64)
        assert_close_loss(self, with_shm.loss, float((softplus(z) - targets * z).sum()))
        assert_close_gradient(self, np.frombuffer(obj.read(2 * n, n), "<f4").reshape(b, c),
                              1.0 / (1.0 + np.exp(-z)) - targets)

    def test_unaligned_references_are_served(self):
        logits, labels, counts = self.labels_case(b=5, c=3, seed=5)
        obj = self.new_object(PAGE)
        self.register(self.stub, "odd", obj, offset=1, size=PAGE - 1)
        n = logits.nbytes
        obj.write(1 + 3, logits.tobytes())  # region offset 3: object offset 4
        with_bytes = self.stub.ComputeLoss(self.bytes_request(logits, labels, counts),
                                           timeout=RPC_TIMEOUT_S)
        with_shm = self.stub.ComputeLoss(
            self.shm_request(self.bytes_request(logits, labels, counts), ref("odd", 3, n),
                             ref("odd", 1001, n)), timeout=RPC_TIMEOUT_S)
        self.check_identical(with_bytes, with_shm, obj.read(1 + 1001, n))

    def test_a_large_batch_on_the_compute_pool(self):
        # More than the 16384 elements computed inline.
        logits, labels, counts = self.labels_case(b=512, c=100, seed=6)
        n = logits.nbytes
        obj = self.new_object(2 * n)
        self.register(self.stub, "big", obj)
        obj.write(0, logits.tobytes())
        with_bytes = self.stub.ComputeLoss(self.bytes_request(logits, labels, counts),
                                           timeout=RPC_TIMEOUT_S)
        with_shm = self.stub.ComputeLoss(
            self.shm_request(self.bytes_request(logits, labels, counts), ref("big", 0, n),
                             ref("big", n, n)), timeout=RPC_TIMEOUT_S)
        self.check_identical(with_bytes, with_shm, obj.read(n, n))

    def test_stream_loss(self):
        obj = self.new_object(4 * PAGE)
        self.register(self.stub, "st", obj)
        cases = [self.labels_case(b=4, c=3, seed=10 + i) for i in range(3)]
        requests, expected = [], []
        for i, (logits, labels, counts) in enumerate(cases):
            n = logits.nbytes
            obj.write(i * PAGE, logits.tobytes())
            base = self.bytes_request(logits, labels, counts)
            expected.append(self.stub.ComputeLoss(base, timeout=RPC_TIMEOUT_S))
            requests.append(self.shm_request(base, ref("st", i * PAGE, n),
                                             ref("st", i * PAGE + 2048, n)))
        responses = list(self.stub.StreamLoss(iter(requests), timeout=RPC_TIMEOUT_S))
        self.assertEqual(len(responses), 3)
        for i, (response, with_bytes) in enumerate(zip(responses, expected)):
            self.assertEqual(response.error_code, 0, response.error_message)
            n = cases[i][0].nbytes
            self.check_identical(with_bytes, response, obj.read(i * PAGE + 2048, n))


# ---------------------------------------------------------------------------
# Bad references and registrations
# ---------------------------------------------------------------------------


class BadReferenceTest(ClassServerTestCase):
    def setUp(self):
        super().setUp()
        self.obj = self.new_object(PAGE)
        self.register(self.stub, "r", self.obj)
        self.logits = np.arange(6, dtype=np.float32).reshape(2, 3) / 4
        self.obj.write(0, self.logits.tobytes())

    def request(self, logits_ref=None, gradient_ref=None):
        request = pb.ComputeLossRequest(class_counts=pb.ClassCounts(counts=[3, 2, 1]),
                                        labels=[0, 2], want_gradient=True)
        request.logits.dtype = pb.DTYPE_FLOAT32
        request.logits.shape.extend([2, 3])
        request.logits.shm.CopyFrom(logits_ref or ref("r", 0, 24))
        if gradient_ref is not None:
            request.gradient_shm.CopyFrom(gradient_ref)
        return request

    def compute_error(self, code, request, contains):
        self.assertRpcError(code, self.stub.ComputeLoss, request, contains=contains)
        self.assertStillServing(self.server)

    def test_unknown_region(self):
        self.compute_error(grpc.StatusCode.FAILED_PRECONDITION, self.request(ref("nope", 0, 24)),
                           "logits.shm: no shared-memory region 'nope' (register it first)")
        self.compute_error(grpc.StatusCode.FAILED_PRECONDITION,
                           self.request(gradient_ref=ref("gone", 0, 24)),
                           "gradient_shm: no shared-memory region 'gone' (register it first)")

    def test_offset_or_size_beyond_the_region(self):
        self.compute_error(grpc.StatusCode.INVALID_ARGUMENT, self.request(ref("r", PAGE - 8, 24)),
                           "logits.shm.byte_size")
        self.compute_error(grpc.StatusCode.INVALID_ARGUMENT, self.request(ref("r", PAGE + 1, 0)),
                           "logits.shm.byte_size")
        self.compute_error(grpc.StatusCode.INVALID_ARGUMENT,
                           self.request(ref("r", 2 ** 64 - 8, 24)), "logits.shm.byte_size")
        self.compute_error(grpc.StatusCode.INVALID_ARGUMENT,
                           self.request(gradient_ref=ref("r", PAGE - 23, 24)),
                           "gradient_shm.byte_size")

    def test_byte_size_not_the_tensors(self):
        self.compute_error(grpc.StatusCode.INVALID_ARGUMENT, self.request(ref("r", 0, 20)),
                           "logits")
        self.compute_error(grpc.StatusCode.INVALID_ARGUMENT,
                           self.request(gradient_ref=ref("r", 100, 28)), "gradient_shm")

    def test_shm_together_with_data(self):
        request = self.request()
        request.logits.data = self.logits.tobytes()
        self.compute_error(grpc.StatusCode.INVALID_ARGUMENT, request,
                           "exactly one of data, float_data and shm must be set")

    def test_gradient_overlapping_the_logits(self):
        self.compute_error(grpc.StatusCode.INVALID_ARGUMENT,
                           self.request(ref("r", 0, 24), ref("r", 20, 24)),
                           "gradient_shm overlaps logits.shm")
        # Through another region of the same object, whatever its name.
        self.register(self.stub, "alias", self.obj, offset=16, size=256)
        self.compute_error(grpc.StatusCode.INVALID_ARGUMENT,
                           self.request(ref("r", 0, 24), ref("alias", 0, 24)),
                           "gradient_shm overlaps logits.shm")
        # Adjacent is fine.
        response = self.stub.ComputeLoss(self.request(ref("r", 0, 24), ref("r", 24, 24)),
                                         timeout=RPC_TIMEOUT_S)
        loss, _, gradient, _, _ = ref_loss(self.logits, [0, 2], [3, 2, 1])
        assert_close_loss(self, response.loss, loss)
        assert_close_gradient(self, np.frombuffer(self.obj.read(24, 24), "<f4").reshape(2, 3),
                              gradient)

    def test_gradient_overlapping_the_targets(self):
        request = pb.ComputeLossRequest(
            class_counts=pb.ClassCounts(counts=[3, 2, 1]),
            config=pb.LossConfig(loss_type=pb.LOSS_TYPE_SIGMOID))
        request.logits.CopyFrom(tensor_f32(self.logits))
        request.targets.dtype = pb.DTYPE_FLOAT32
        request.targets.shape.extend([2, 3])
        request.targets.shm.CopyFrom(ref("r", 512, 24))
        request.gradient_shm.CopyFrom(ref("r", 520, 24))
        self.compute_error(grpc.StatusCode.INVALID_ARGUMENT, request,
                           "gradient_shm overlaps targets.shm")

    def test_a_region_of_an_object_that_shrank(self):
        big = self.new_object(16 * PAGE)
        self.register(self.stub, "shrinks", big)
        big.write(8 * PAGE, self.logits.tobytes())
        big.truncate(PAGE)  # the test's own mapping is not touched past it
        self.compute_error(grpc.StatusCode.FAILED_PRECONDITION,
                           self.request(ref("shrinks", 8 * PAGE, 24)), "shrinks")
        # Broken for every later reference too, until registered again.
        self.compute_error(grpc.StatusCode.FAILED_PRECONDITION,
                           self.request(ref("shrinks", 0, 24)), "shrinks")
        self.stub.UnregisterSharedMemory(pb.UnregisterSharedMemoryRequest(name="shrinks"),
                                         timeout=RPC_TIMEOUT_S)
        big.truncate(16 * PAGE)
        big.write(0, self.logits.tobytes())
        self.register(self.stub, "shrinks", big)
        response = self.stub.ComputeLoss(self.request(ref("shrinks", 0, 24)),
                                         timeout=RPC_TIMEOUT_S)
        loss, _, _, _, _ = ref_loss(self.logits, [0, 2], [3, 2, 1])
        assert_close_loss(self, response.loss, loss)

    def register_error(self, code, contains, name="x", key=None, offset=0, size=8):
        self.assertRpcError(code, self.stub.RegisterSharedMemory, pb.RegisterSharedMemoryRequest(
            name=name, key=self.obj.key if key is None else key, offset=offset, byte_size=size),
            contains=contains)
        self.assertStillServing(self.server)

    def test_registration_errors(self):
        code = grpc.StatusCode
        self.register_error(code.PERMISSION_DENIED,
                            "key '/x' is outside the shared-memory prefix '/cbloss-'", key="/x")
        self.register_error(code.INVALID_ARGUMENT, "key", key="cbloss-no-slash")
        self.register_error(code.INVALID_ARGUMENT, "key", key="/cbloss-a/b")
        self.register_error(code.INVALID_ARGUMENT, "key", key="/" + "c" * 255)
        self.register_error(code.NOT_FOUND, "key",
                            key="/cbloss-test-missing-%d" % os.getpid())
        self.register_error(code.INVALID_ARGUMENT, "name", name="a b")
        self.register_error(code.INVALID_ARGUMENT, "name", name="")
        self.register_error(code.INVALID_ARGUMENT, "name", name="n" * 129)
        self.register_error(code.INVALID_ARGUMENT, "byte_size", size=0)
        self.register_error(code.INVALID_ARGUMENT, "byte_size", offset=PAGE - 4, size=8)
        self.register_error(code.INVALID_ARGUMENT, "byte_size", offset=2 ** 64 - 4, size=8)
        self.register_error(code.ALREADY_EXISTS, "'r'", name="r")

    def test_not_a_regular_object(self):
        path = "/dev/shm/cbloss-test-fifo-%d" % os.getpid()
        os.mkfifo(path, 0o600)
        self.addCleanup(os.unlink, path)
        self.register_error(grpc.StatusCode.INVALID_ARGUMENT, "not a regular shared-memory object",
                            key="/" + os.path.basename(path))

    def test_an_object_of_another_uid(self):
        # Giving an object to another uid needs root: as an ordinary user the
        # test uses its sudo (the README's test command assumes one, as
        # scripts/test-as-user.sh sets up), and sudo removes it again.
        other = self.new_object(PAGE)
        as_root = os.geteuid() == 0
        def privileged(*argv):
            if not as_root:
                argv = ("sudo", "-n") + argv
            done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
            self.assertEqual(done.returncode, 0, "%s: %s (needs root or password-less sudo)"
                             % (" ".join(argv), done.stderr.strip()))
        os.chmod(other.path, 0o666)  # the server (an ordinary user too) can open it
        privileged("chown", "65534:65534", other.path)
        self.addCleanup(privileged, "rm", "-f", other.path)
        self.register_error(grpc.StatusCode.PERMISSION_DENIED,
                            "is owned by uid 65534, not by the caller's uid %d" % os.geteuid(),
                            key=other.key)

    def test_unregister(self):
        self.assertRpcError(grpc.StatusCode.NOT_FOUND, self.stub.UnregisterSharedMemory,
                            pb.UnregisterSharedMemoryRequest(name="never"), contains="never")
        self.register(self.stub, "second", self.obj)
        listed = self.stub.ListSharedMemory(pb.ListSharedMemoryRequest(), timeout=RPC_TIMEOUT_S)
        self.assertEqual([r.name for r in listed.regions], ["r", "second"])
        self.assertEqual(listed.regions[0].key, self.obj.key)
        self.assertEqual(listed.regions[0].byte_size, PAGE)
        self.stub.UnregisterSharedMemory(pb.UnregisterSharedMemoryRequest(name="r"),
                                         timeout=RPC_TIMEOUT_S)
        self.compute_error(grpc.StatusCode.FAILED_PRECONDITION, self.request(ref("r", 0, 24)),
                           "logits.shm: no shared-memory region 'r' (register it first)")
        # An empty name: all of them.
        self.stub.UnregisterSharedMemory(pb.UnregisterSharedMemoryRequest(),
                                         timeout=RPC_TIMEOUT_S)
        self.assertEqual(len(self.stub.ListSharedMemory(pb.ListSharedMemoryRequest(),
                                                        timeout=RPC_TIMEOUT_S).regions), 0)


class UnregisterWhileInUseTest(ClassServerTestCase):
    def test_a_stream_keeps_going_after_its_region_is_unregistered(self):
        obj = self.new_object(PAGE)
        self.register(self.stub, "s", obj)
        logits = np.array([[0.5, -0.5, 1.0]], dtype=np.float32)
        obj.write(0, logits.tobytes())
        request = pb.ComputeLossRequest(class_counts=pb.ClassCounts(counts=[1, 2, 3]),
                                        labels=[1])
        request.logits.dtype = pb.DTYPE_FLOAT32
        request.logits.shape.extend([1, 3])
        request.logits.shm.CopyFrom(ref("s", 0, 12))
        gate = threading.Event()

        def requests():
            yield request
            gate.wait(RPC_TIMEOUT_S)
            yield request

        stream = self.stub.StreamLoss(requests(), timeout=RPC_TIMEOUT_S)
        first = next(stream)
        self.assertEqual(first.error_code, 0, first.error_message)
        loss, _, _, _, _ = ref_loss(logits, [1], [1, 2, 3])
        assert_close_loss(self, first.loss, loss)
        other = unix_channel(self.server.socket_path)
        self.addCleanup(other.close)
        pb_grpc.LossServiceStub(other).UnregisterSharedMemory(
            pb.UnregisterSharedMemoryRequest(name="s"), timeout=RPC_TIMEOUT_S)
        gate.set()
        second = next(stream)
        self.assertEqual(second.error_code, grpc.StatusCode.FAILED_PRECONDITION.value[0])
        self.assertIn("logits.shm: no shared-memory region 's' (register it first)",
                      second.error_message)
        self.assertEqual(list(stream), [])
        self.assertStillServing(self.server)

    def test_a_large_request_racing_an_unregister(self):
        rng = np.random.RandomState(9)
        b, c = 2048, 512  # a million elements: on the compute pool, some ms
        logits = rng.randn(b, c).astype(np.float32)
        labels = rng.randint(0, c, size=b).tolist()
        counts = [int(x) for x in rng.randint(1, 100, size=c)]
        n = logits.nbytes
        with_bytes = self.stub.ComputeLoss(
            pb.ComputeLossRequest(class_counts=pb.ClassCounts(counts=counts),
                                  logits=tensor_f32(logits), labels=labels, want_gradient=True),
            timeout=RPC_TIMEOUT_S)
        obj = self.new_object(2 * n)
        obj.write(0, logits.tobytes())
        other = pb_grpc.LossServiceStub(self.server.new_channel())
        outcomes = []
        for attempt in range(4):
            self.register(self.stub, "race", obj)
            request = pb.ComputeLossRequest(class_counts=pb.ClassCounts(counts=counts),
                                            labels=labels, gradient_shm=ref("race", n, n))
            request.logits.dtype = pb.DTYPE_FLOAT32
            request.logits.shape.extend([b, c])
            request.logits.shm.CopyFrom(ref("race", 0, n))
            future = self.stub.ComputeLoss.future(request, timeout=RPC_TIMEOUT_S)
            time.sleep(0.002 * attempt)
            other.UnregisterSharedMemory(pb.UnregisterSharedMemoryRequest(name="race"),
                                         timeout=RPC_TIMEOUT_S)
            try:
                response = future.result()
                self.assertEqual(response.loss, with_bytes.loss)
                self.assertEqual(obj.read(n, n), with_bytes.gradient.data)
                outcomes.append("OK")
            except grpc.RpcError as e:
                self.assertEqual(e.code(), grpc.StatusCode.FAILED_PRECONDITION, e.details())
                self.assertIn("no shared-memory region 'race'", e.details())
                outcomes.append("FAILED_PRECONDITION")
            # Later calls: unknown region.
            self.assertRpcError(grpc.StatusCode.FAILED_PRECONDITION, self.stub.ComputeLoss,
                                request, contains="no shared-memory region 'race'")
            obj.write(n, bytes(n))
        self.assertStillServing(self.server)


# ---------------------------------------------------------------------------
# Who may use shared memory
# ---------------------------------------------------------------------------


class CallersTest(ClassServerTestCase):
    def shm_compute(self):
        request = pb.ComputeLossRequest(class_counts=pb.ClassCounts(counts=[1, 1]), labels=[0])
        request.logits.dtype = pb.DTYPE_FLOAT32
        request.logits.shape.extend([1, 2])
        request.logits.shm.CopyFrom(ref("t", 0, 8))
        return request

    def test_tcp_callers_are_refused(self):
        obj = self.new_object(PAGE)
        self.register(self.stub, "t", obj)  # over the Unix socket: fine
        channel = self.server.tcp_channel()
        self.addCleanup(channel.close)
        tcp = pb_grpc.LossServiceStub(channel)
        for call, request in ((tcp.RegisterSharedMemory, pb.RegisterSharedMemoryRequest(
                name="u", key=obj.key, byte_size=8)),
                              (tcp.ListSharedMemory, pb.ListSharedMemoryRequest()),
                              (tcp.UnregisterSharedMemory,
                               pb.UnregisterSharedMemoryRequest(name="t")),
                              (tcp.ComputeLoss, self.shm_compute())):
            self.assertRpcError(grpc.StatusCode.PERMISSION_DENIED, call, request,
                                contains=NOT_UNIX)
        # StreamLoss answers in-band.
        [response] = list(tcp.StreamLoss(iter([self.shm_compute()]), timeout=RPC_TIMEOUT_S))
        self.assertEqual(response.error_code, grpc.StatusCode.PERMISSION_DENIED.value[0])
        self.assertEqual(response.error_message, NOT_UNIX)
        # The region is still there for the Unix caller.
        self.assertEqual([r.name for r in self.stub.ListSharedMemory(
            pb.ListSharedMemoryRequest(), timeout=RPC_TIMEOUT_S).regions], ["t"])
        self.assertStillServing(self.server, tcp)

    def test_http_callers_are_refused(self):
        with open(self.http_port_file) as f:
            port = int(f.read())
        body = {"classCounts": {"counts": ["1", "1"]}, "labels": [0],
                "logits": {"dtype": "DTYPE_FLOAT32", "shape": ["1", "2"],
                           "shm": {"region": "t", "offset": "0", "byteSize": "8"}}}
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=RPC_TIMEOUT_S)
        self.addCleanup(conn.close)
        conn.request("POST", "/v1/loss", body=json.dumps(body),
                     headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        error = json.loads(response.read())
        self.assertEqual(response.status, 403)
        self.assertEqual(error["status"], "PERMISSION_DENIED")
        self.assertEqual(error["message"], NOT_UNIX)


class OffTest(SharedMemoryTestCase):
    def test_shared_memory_off(self):
        server = self.new_unix_server(allow=False).start()
        obj = self.new_object(PAGE)
        stub = server.stub
        code = grpc.StatusCode.FAILED_PRECONDITION
        self.assertRpcError(code, stub.RegisterSharedMemory, pb.RegisterSharedMemoryRequest(
            name="r", key=obj.key, byte_size=8), contains=OFF)
        self.assertRpcError(code, stub.ListSharedMemory, pb.ListSharedMemoryRequest(),
                            contains=OFF)
        self.assertRpcError(code, stub.UnregisterSharedMemory,
                            pb.UnregisterSharedMemoryRequest(), contains=OFF)
        request = pb.ComputeLossRequest(class_counts=pb.ClassCounts(counts=[1, 1]), labels=[0])
        request.logits.dtype = pb.DTYPE_FLOAT32
        request.logits.shape.extend([1, 2])
        request.logits.shm.CopyFrom(ref("r", 0, 8))
        self.assertRpcError(code, stub.ComputeLoss, request, contains=OFF)
        with_gradient = pb.ComputeLossRequest(class_counts=pb.ClassCounts(counts=[1, 1]),
                                              labels=[0], logits=tensor_f32([[1.0, 2.0]]),
                                              gradient_shm=ref("r", 0, 8))
        self.assertRpcError(code, stub.ComputeLoss, with_gradient, contains=OFF)
        self.assertStillServing(server)


class TokensTest(SharedMemoryTestCase):
    def test_tokens_apply_to_the_shared_memory_rpcs(self):
        tokens = {}
        for kind in ("admin", "compute"):
            path = os.path.join(self.tmpdir(), kind + ".token")
            tokens[kind] = "shm-%s-token" % kind
            with open(path, "w") as f:
                f.write(tokens[kind] + "\n")
        server = self.new_unix_server(extra_flags=[
            "--admin_token_file=" + os.path.join(self.tmpdir(), "admin.token"),
            "--compute_token_file=" + os.path.join(self.tmpdir(), "compute.token")]).start()
        stub = server.stub
        obj = self.new_object(PAGE)
        register = pb.RegisterSharedMemoryRequest(name="tok", key=obj.key, byte_size=PAGE)
        for call, request in ((stub.RegisterSharedMemory, register),
                              (stub.ListSharedMemory, pb.ListSharedMemoryRequest()),
                              (stub.UnregisterSharedMemory,
                               pb.UnregisterSharedMemoryRequest(name="tok"))):
            self.assertRpcError(grpc.StatusCode.UNAUTHENTICATED, call, request)
            self.assertRpcError(grpc.StatusCode.UNAUTHENTICATED, call, request,
                                metadata=[("authorization", "Bearer wrong")])
        compute = [("authorization", "Bearer " + tokens["compute"])]
        admin = [("authorization", "Bearer " + tokens["admin"])]
        self.assertEqual(stub.RegisterSharedMemory(register, metadata=compute,
                                                   timeout=RPC_TIMEOUT_S).name, "tok")
        listed = stub.ListSharedMemory(pb.ListSharedMemoryRequest(), metadata=admin,
                                       timeout=RPC_TIMEOUT_S)
        self.assertEqual([r.name for r in listed.regions], ["tok"])
        stub.UnregisterSharedMemory(pb.UnregisterSharedMemoryRequest(name="tok"),
                                    metadata=compute, timeout=RPC_TIMEOUT_S)


class LimitsTest(SharedMemoryTestCase):
    def test_region_and_byte_limits(self):
        server = self.new_unix_server(extra_flags=["--max_shared_memory_regions=2",
                                                   "--max_shared_memory_mb=1"]).start()
        stub = server.stub
        small = self.new_object(PAGE)
        big = self.new_object(2 << 20)
        self.assertRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, stub.RegisterSharedMemory,
                            pb.RegisterSharedMemoryRequest(name="big", key=big.key,
                                                           byte_size=big.size),
                            contains="--max_shared_memory_mb")
        self.register(stub, "a", small)
        self.register(stub, "b", small)
        self.assertRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, stub.RegisterSharedMemory,
                            pb.RegisterSharedMemoryRequest(name="c", key=small.key,
                                                           byte_size=PAGE),
                            contains="--max_shared_memory_regions")
        stub.UnregisterSharedMemory(pb.UnregisterSharedMemoryRequest(name="a"),
                                    timeout=RPC_TIMEOUT_S)
        self.register(stub, "c", small)
        self.assertStillServing(server)


# ---------------------------------------------------------------------------
# Connections
# ---------------------------------------------------------------------------


def scrape(port):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port,
                                timeout=RPC_TIMEOUT_S) as r:
        samples = {}
        for line in r.read().decode().splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                samples[name] = float(value)
        return samples


class ConnectionCloseTest(SharedMemoryTestCase):
    def wait_for(self, predicate, what, timeout=10.0):
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                self.fail("after %.0f s: %s" % (timeout, what))
            time.sleep(0.02)

    def test_closing_a_connection_releases_its_regions(self):
        metrics_port_file = os.path.join(self.tmpdir(), "metrics.port")
        server = self.new_unix_server(extra_flags=[
            "--metrics_listen=127.0.0.1:0", "--metrics_port_file=" + metrics_port_file]).start()
        with open(metrics_port_file) as f:
            metrics_port = int(f.read())
        obj = self.new_object(4 * PAGE)
        self.assertEqual(scrape(metrics_port)["cbloss_unix_connections"], 1)  # the fixture's

        first = unix_channel(server.socket_path)
        a = pb_grpc.LossServiceStub(first)
        self.register(a, "of-a", obj, size=PAGE)
        self.register(a, "of-a-too", obj, offset=PAGE, size=PAGE)
        # A region of the fixture's connection, which stays open.
        self.register(server.stub, "of-b", obj, offset=2 * PAGE, size=PAGE)
        samples = scrape(metrics_port)
        self.assertEqual(samples["cbloss_shared_memory_regions"], 3)
        self.assertEqual(samples["cbloss_shared_memory_mapped_bytes"], 3 * PAGE)
        self.assertEqual(samples["cbloss_unix_connections"], 2)
        names = lambda: [r.name for r in server.stub.ListSharedMemory(  # noqa: E731
            pb.ListSharedMemoryRequest(), timeout=RPC_TIMEOUT_S).regions]
        # Regions belong to the uid: the other connection sees them.
        self.assertEqual(names(), ["of-a", "of-a-too", "of-b"])

        first.close()
        self.wait_for(lambda: names() == ["of-b"], "the closed connection's regions are listed")
        self.wait_for(lambda: scrape(metrics_port)["cbloss_unix_connections"] == 1,
                      "cbloss_unix_connections is not back to 1")
        samples = scrape(metrics_port)
        self.assertEqual(samples["cbloss_shared_memory_regions"], 1)
        self.assertEqual(samples["cbloss_shared_memory_mapped_bytes"], PAGE)

        server.stub.UnregisterSharedMemory(pb.UnregisterSharedMemoryRequest(),
                                           timeout=RPC_TIMEOUT_S)
        samples = scrape(metrics_port)
        self.assertEqual(samples["cbloss_shared_memory_regions"], 0)
        self.assertEqual(samples["cbloss_shared_memory_mapped_bytes"], 0)

    def test_many_short_connections_release_only_their_own(self):
        # Connections come and go (their fd numbers are reused); a region of
        # a connection that stays open stays.
        metrics_port_file = os.path.join(self.tmpdir(), "metrics.port")
        server = self.new_unix_server(extra_flags=[
            "--metrics_listen=127.0.0.1:0", "--metrics_port_file=" + metrics_port_file]).start()
        with open(metrics_port_file) as f:
            metrics_port = int(f.read())
        obj = self.new_object(PAGE)
        self.register(server.stub, "keep", obj)
        for i in range(30):
            channel = unix_channel(server.socket_path)
            try:
                self.register(pb_grpc.LossServiceStub(channel), "short-%d" % i, obj)
            finally:
                channel.close()
        names = lambda: [r.name for r in server.stub.ListSharedMemory(  # noqa: E731
            pb.ListSharedMemoryRequest(), timeout=RPC_TIMEOUT_S).regions]
        self.wait_for(lambda: names() == ["keep"], "regions other than 'keep' are still listed")
        self.wait_for(lambda: scrape(metrics_port)["cbloss_unix_connections"] == 1,
                      "cbloss_unix_connections is not back to 1")
        self.assertEqual(scrape(metrics_port)["cbloss_shared_memory_regions"], 1)
        self.assertStillServing(server)


if __name__ == "__main__":
    unittest.main()
