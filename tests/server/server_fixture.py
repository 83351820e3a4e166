"""End-to-end test fixture for cbloss-server, and the one launcher of
cbloss-server for every Python test (tests/server, tests/python through
server_process.py, tests/client through cli_support.py, tests/deploy).

Starts the real `cbloss-server` binary on 127.0.0.1 with a free port
(`--listen=127.0.0.1:0 --port_file=...`), waits (bounded) until the port file
is written and the gRPC health check answers SERVING, and hands out a channel
and a `LossService` stub; stops it with SIGTERM, then SIGKILL if it does not
exit in time. Every process a test starts is killed when the test (or its
class) ends, whatever happened; when a test fails, the server's stderr is
printed.

Environment (set by the tests' CMakeLists.txt; defaults assume the source
tree at ../.. and the build tree at ../../build, or the build tree holding
$CBLOSS_SERVER):

  CBLOSS_SERVER           path of the cbloss-server binary
  CBLOSS_PROTO_PY         directory holding cbloss/v1/cbloss_pb2.py
  CBLOSS_GOLDEN           tests/golden/golden_cases.json
  CBLOSS_SAMPLE_DATASETS  datasets/sample_datasets.json

Only the standard library, grpcio, protobuf and numpy are needed here.
"""

import atexit
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import grpc
import numpy as np
from google.protobuf import (descriptor_pb2, descriptor_pool, empty_pb2, message_factory,
                             unknown_fields)
from google.protobuf.internal import encoder, wire_format

_HERE = os.path.dirname(os.path.abspath(__file__))
_SOURCE_ROOT = os.path.abspath(os.path.join(_HERE, "..", ".."))
_BUILD_ROOT = os.path.join(_SOURCE_ROOT, "build")

SERVER_BINARY = os.environ.get("CBLOSS_SERVER") or os.path.join(
    _BUILD_ROOT, "bin", "cbloss-server")
if os.environ.get("CBLOSS_SERVER"):
    # build/bin/cbloss-server: the stubs are in the same build tree.
    _BUILD_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(SERVER_BINARY)))
PROTO_PY = os.environ.get("CBLOSS_PROTO_PY") or os.path.join(
    _BUILD_ROOT, "python", "cbloss", "_proto")
GOLDEN_FILE = os.environ.get(
    "CBLOSS_GOLDEN", os.path.join(_SOURCE_ROOT, "tests", "golden", "golden_cases.json"))
SAMPLE_DATASETS_FILE = os.environ.get(
    "CBLOSS_SAMPLE_DATASETS",
    os.path.join(_SOURCE_ROOT, "datasets", "sample_datasets.json"))
SEED_EXAMPLE_FILE = os.path.join(_SOURCE_ROOT, "tests", "golden", "seed_example.json")

if PROTO_PY not in sys.path:
    sys.path.insert(0, PROTO_PY)

from cbloss.v1 import cbloss_pb2 as pb  # noqa: E402
from cbloss.v1 import cbloss_pb2_grpc as pb_grpc  # noqa: E402

STARTUP_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 30.0  # > the server's default --shutdown_grace_seconds (10)
RPC_TIMEOUT_S = 30.0

# Client channel options: no client-side size limits (the server's are
# under test) and no reconnect back-off surprises.
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_send_message_length", -1),
    ("grpc.enable_retries", 0),
]

# ---------------------------------------------------------------------------
# The health and reflection services' messages. Their .proto files ship with
# neither Debian's grpcio nor its protobuf, so the messages (the fields these
# tests use, numbered as in grpc/health/v1/health.proto and
# grpc/reflection/v1alpha/reflection.proto) are declared here with
# descriptor_pb2, in a pool of their own.
# ---------------------------------------------------------------------------

_F = descriptor_pb2.FieldDescriptorProto


def _add_message(file, name, fields):
    """Adds message `name` with fields [(name, number, type, type_name or None,
    label)] to the FileDescriptorProto `file`."""
    message = file.message_type.add(name=name)
    for field_name, number, field_type, type_name, label in fields:
        field = message.field.add(name=field_name, number=number, type=field_type, label=label)
        if type_name:
            field.type_name = "." + file.package + "." + type_name
    return message


def _health_file():
    file = descriptor_pb2.FileDescriptorProto(
        name="grpc/health/v1/health.proto", package="grpc.health.v1", syntax="proto3")
    _add_message(file, "HealthCheckRequest", [
        ("service", 1, _F.TYPE_STRING, None, _F.LABEL_OPTIONAL)])
    response = _add_message(file, "HealthCheckResponse", [
        ("status", 1, _F.TYPE_ENUM, "HealthCheckResponse.ServingStatus", _F.LABEL_OPTIONAL)])
    status = response.enum_type.add(name="ServingStatus")
    for number, name in enumerate(("UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN")):
        status.value.add(name=name, number=number)
    return file


def _reflection_file():
    file = descriptor_pb2.FileDescriptorProto(
        name="grpc/reflection/v1alpha/reflection.proto", package="grpc.reflection.v1alpha",
        syntax="proto3")
    optional, repeated = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED
    _add_message(file, "ServerReflectionRequest", [
        ("host", 1, _F.TYPE_STRING, None, optional),
        ("file_containing_symbol", 4, _F.TYPE_STRING, None, optional),
        ("list_services", 7, _F.TYPE_STRING, None, optional)])
    _add_message(file, "ServerReflectionResponse", [
        ("valid_host", 1, _F.TYPE_STRING, None, optional),
        ("file_descriptor_response", 4, _F.TYPE_MESSAGE, "FileDescriptorResponse", optional),
        ("list_services_response", 6, _F.TYPE_MESSAGE, "ListServiceResponse", optional),
        ("error_response", 7, _F.TYPE_MESSAGE, "ErrorResponse", optional)])
    _add_message(file, "FileDescriptorResponse", [
        ("file_descriptor_proto", 1, _F.TYPE_BYTES, None, repeated)])
    _add_message(file, "ListServiceResponse", [
        ("service", 1, _F.TYPE_MESSAGE, "ServiceResponse", repeated)])
    _add_message(file, "ServiceResponse", [("name", 1, _F.TYPE_STRING, None, optional)])
    _add_message(file, "ErrorResponse", [
        ("error_code", 1, _F.TYPE_INT32, None, optional),
        ("error_message", 2, _F.TYPE_STRING, None, optional)])
    return file


def _message_classes(*files):
    """{message name: class} of every top-level message of `files`."""
    pool = descriptor_pool.DescriptorPool()
    get_class = getattr(message_factory, "GetMessageClass", None)  # protobuf >= 4.22
    if get_class is None:
        get_class = message_factory.MessageFactory(pool).GetPrototype
    classes = {}
    for file in files:
        pool.Add(file)
        for message in file.message_type:
            classes[message.name] = get_class(
                pool.FindMessageTypeByName(file.package + "." + message.name))
    return classes


_MESSAGES = _message_classes(_health_file(), _reflection_file())
HealthCheckRequest = _MESSAGES["HealthCheckRequest"]
HealthCheckResponse = _MESSAGES["HealthCheckResponse"]
ServerReflectionRequest = _MESSAGES["ServerReflectionRequest"]
ServerReflectionResponse = _MESSAGES["ServerReflectionResponse"]


def encode_varint(value):
    """The protobuf varint of `value` (for tests that splice raw fields)."""
    return encoder._VarintBytes(value)


def encode_string_field(field_number, text):
    """The wire bytes of one length-delimited (string) field."""
    data = text.encode("utf-8")
    return (encoder.TagBytes(field_number, wire_format.WIRETYPE_LENGTH_DELIMITED)
            + encoder._VarintBytes(len(data)) + data)


def decode_fields(data):
    """Decodes one protobuf message level into [(field_number, wire_type, value)]:
    protobuf parses `data` as an empty message, every field an unknown one.

    value is an int for varints/fixed, bytes for length-delimited fields.
    """
    message = empty_pb2.Empty.FromString(bytes(data))
    return [(f.field_number, f.wire_type, f.data)
            for f in unknown_fields.UnknownFieldSet(message)]


HEALTH_UNKNOWN, HEALTH_SERVING, HEALTH_NOT_SERVING, HEALTH_SERVICE_UNKNOWN = 0, 1, 2, 3


def health_check(channel, service="", timeout=2.0):
    """grpc.health.v1.Health/Check; returns the status enum value (int)."""
    call = channel.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=HealthCheckRequest.SerializeToString,
        response_deserializer=HealthCheckResponse.FromString)
    return call(HealthCheckRequest(service=service), timeout=timeout).status


def _reflection_call(channel, request, timeout=5.0):
    """(responses, their raw bytes) of one ServerReflectionInfo exchange."""
    call = channel.stream_stream(
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        request_serializer=ServerReflectionRequest.SerializeToString,
        response_deserializer=lambda raw: raw)
    raw = list(call(iter([request]), timeout=timeout))
    return [ServerReflectionResponse.FromString(r) for r in raw], b"".join(raw)


def reflection_list_services(channel, timeout=5.0):
    """Returns (service names, raw response bytes) from the v1alpha reflection
    service's list_services request."""
    responses, raw = _reflection_call(channel, ServerReflectionRequest(list_services="*"),
                                      timeout)
    names = [service.name for r in responses
             for service in r.list_services_response.service]
    return names, raw


def reflection_file_containing_symbol(channel, symbol, timeout=5.0):
    """Returns the serialized FileDescriptorProtos answering
    file_containing_symbol, plus the raw response bytes."""
    responses, raw = _reflection_call(
        channel, ServerReflectionRequest(file_containing_symbol=symbol), timeout)
    files = [f for r in responses for f in r.file_descriptor_response.file_descriptor_proto]
    return files, raw


# ---------------------------------------------------------------------------
# Tensors
# ---------------------------------------------------------------------------


def tensor_f32(array):
    """A FLOAT32 Tensor with raw little-endian `data`."""
    a = np.ascontiguousarray(np.asarray(array, dtype="<f4"))
    return pb.Tensor(dtype=pb.DTYPE_FLOAT32, shape=list(a.shape), data=a.tobytes())


def tensor_float_data(array):
    """A FLOAT32 Tensor using `float_data`."""
    a = np.asarray(array, dtype=np.float32)
    return pb.Tensor(dtype=pb.DTYPE_FLOAT32, shape=list(a.shape),
                     float_data=a.ravel().tolist())


def tensor_bits16(bits, shape, dtype):
    """A FLOAT16 / BFLOAT16 Tensor from 16-bit patterns."""
    b = np.asarray(bits, dtype="<u2")
    return pb.Tensor(dtype=dtype, shape=list(shape), data=b.tobytes())


def bf16_bits_to_f32(bits):
    return (np.asarray(bits, dtype=np.uint32) << 16).view(np.float32)


def decode_tensor(t):
    """Decodes a response Tensor into a float32 numpy array of its shape."""
    shape = tuple(t.shape)
    if len(t.float_data) > 0:
        values = np.asarray(t.float_data, dtype=np.float32)
    elif t.dtype in (pb.DTYPE_FLOAT32, pb.DTYPE_UNSPECIFIED):
        values = np.frombuffer(t.data, dtype="<f4").astype(np.float32)
    elif t.dtype == pb.DTYPE_FLOAT16:
        values = np.frombuffer(t.data, dtype="<f2").astype(np.float32)
    elif t.dtype == pb.DTYPE_BFLOAT16:
        values = bf16_bits_to_f32(np.frombuffer(t.data, dtype="<u2"))
    else:
        raise AssertionError("unexpected tensor dtype %d" % t.dtype)
    return values.reshape(shape)


# ---------------------------------------------------------------------------
# Server process
# ---------------------------------------------------------------------------

_LIVE_PROCESSES = set()
_LIVE_LOCK = threading.Lock()


def _kill_leftovers():
    with _LIVE_LOCK:
        procs = list(_LIVE_PROCESSES)
    for p in procs:
        if p.poll() is None:
            try:
                p.kill()
                p.wait(timeout=5)
            except Exception:  # pragma: no cover - best effort at exit
                pass


atexit.register(_kill_leftovers)


class ServerError(Exception):
    pass


class ServerProcess:
    """One cbloss-server on 127.0.0.1, in `workdir`.

    The data directory (`workdir`/data) survives stop()/kill(), so start()
    again is a restart on the same store. With workdir=None the process gets
    a temporary folder of its own, which close() removes.

    Example::

        server = ServerProcess(extra_flags=["--shutdown_grace_seconds=5"]).start()
        try:
            server.stub.GetClassWeights(request, timeout=RPC_TIMEOUT_S)
        finally:
            server.close()
    """

    def __init__(self, workdir=None, datasets_file=None, compute_threads=2,
                 extra_flags=(), name="server", preexec_fn=None):
        self._owns_workdir = workdir is None
        if workdir is None:
            workdir = tempfile.mkdtemp(prefix="cbloss-%s-" % name)
        self.workdir = workdir
        self.data_dir = os.path.join(workdir, "data")
        self.port_file = os.path.join(workdir, "%s.port" % name)
        self.datasets_file = datasets_file
        self.compute_threads = compute_threads
        self.extra_flags = list(extra_flags)
        self.preexec_fn = preexec_fn  # run in the child before exec (limits, uid)
        self.name = name
        self.proc = None
        self.port = None
        self.channel = None
        self.stub = None
        self.starts = 0
        self.stderr_paths = []
        self.paused = False

    # -- lifecycle ----------------------------------------------------------

    def command(self):
        cmd = [SERVER_BINARY,
               "--listen=127.0.0.1:0",
               "--port_file=%s" % self.port_file,
               "--data_dir=%s" % self.data_dir]
        if self.datasets_file:
            cmd.append("--datasets_file=%s" % self.datasets_file)
        if self.compute_threads:
            cmd.append("--compute_threads=%d" % self.compute_threads)
        cmd.extend(self.extra_flags)
        return cmd

    def launch(self):
        """Starts the process without waiting for readiness."""
        if self.proc is not None and self.proc.poll() is None:
            raise ServerError("server already running")
        if not os.path.exists(SERVER_BINARY):
            raise ServerError("cbloss-server binary not found at %s" % SERVER_BINARY)
        self._close_channel()
        if os.path.exists(self.port_file):
            os.unlink(self.port_file)
        self.starts += 1
        stderr_path = os.path.join(self.workdir, "%s.%d.stderr" % (self.name, self.starts))
        stdout_path = os.path.join(self.workdir, "%s.%d.stdout" % (self.name, self.starts))
        self.stderr_paths.append(stderr_path)
        with open(stderr_path, "wb") as err, open(stdout_path, "wb") as out:
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=err, cwd=self.workdir,
                                         preexec_fn=self.preexec_fn)
        with _LIVE_LOCK:
            _LIVE_PROCESSES.add(self.proc)
        return self.proc

    # A server without a TCP listener writes port 0 to its --port_file.
    port_may_be_zero = False

    def start(self, timeout=STARTUP_TIMEOUT_S):
        """Starts the process and waits until it is SERVING."""
        self.launch()
        self.wait_ready(timeout)
        return self

    def wait_port_file(self, path, deadline):
        """The port the server writes to `path` (its --port_file, or another
        port file flag), waiting until time.monotonic() `deadline`."""
        started = time.monotonic()
        while True:
            if self.proc.poll() is not None:
                raise ServerError("cbloss-server exited with code %s before writing "
                                  "%s:\n%s%s" % (self.proc.returncode, path, self.stderr(),
                                                 self.stdout()))
            try:
                with open(path) as f:
                    text = f.read().strip()
                if text:
                    port = int(text)
                    if not (0 if self.port_may_be_zero else 1) <= port < 65536:
                        raise ServerError("bad port %d in %s" % (port, path))
                    return port
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise ServerError("no port in %s after %.0f s:\n%s"
                                  % (path, time.monotonic() - started, self.stderr()))
            time.sleep(0.02)

    def wait_ready(self, timeout=STARTUP_TIMEOUT_S):
        """Waits (up to `timeout` s in all) for the port file, then until the
        health check answers SERVING on the fixture's channel."""
        deadline = time.monotonic() + timeout
        self.port = self.wait_port_file(self.port_file, deadline)
        self.channel = self.new_channel()
        self.stub = pb_grpc.LossServiceStub(self.channel)
        last_error = None
        while True:
            if self.proc.poll() is not None:
                raise ServerError("cbloss-server exited with code %s while starting:\n%s"
                                  % (self.proc.returncode, self.stderr()))
            try:
                status = health_check(self.channel, "", timeout=1.0)
                if status == HEALTH_SERVING:
                    return
                last_error = "health status %d" % status
            except grpc.RpcError as e:
                last_error = "%s: %s" % (e.code(), e.details())
            if time.monotonic() > deadline:
                raise ServerError("server not SERVING on %s after %.0f s (last: %s):\n%s"
                                  % (self.target, timeout, last_error, self.stderr()))
            time.sleep(0.05)

    @property
    def target(self):
        return "127.0.0.1:%d" % self.port

    @property
    def pid(self):
        return self.proc.pid

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=STOP_TIMEOUT_S, close_channel_first=True):
        """SIGTERM, then wait (bounded). Returns the exit code; kills the
        process and raises if it does not exit in time.

        By default the fixture's own (idle) channel is closed first: with an
        idle client connection still open the server waits up to ~5 s (or the
        grace period) before it exits, which only slows the tests down."""
        if self.proc is None:
            return None
        if close_channel_first:
            self._close_channel()
        if self.proc.poll() is None:
            if self.paused:
                self.resume()
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            raise ServerError("server did not exit within %.0f s of SIGTERM:\n%s"
                              % (timeout, self.stderr()))
        finally:
            self._close_channel()
        return code

    def kill(self):
        """SIGKILL, and reap."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        code = self.proc.wait(timeout=10)
        self._close_channel()
        return code

    def pause(self):
        """SIGSTOP, and wait (up to 5 s) until every thread has stopped (the
        signal is asynchronous): the server then accepts connections and
        answers nothing."""
        self.proc.send_signal(signal.SIGSTOP)
        self.paused = True
        tasks = "/proc/%d/task" % self.proc.pid
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            states = []
            for tid in os.listdir(tasks):
                try:
                    with open(os.path.join(tasks, tid, "stat")) as f:
                        states.append(f.read().rsplit(")", 1)[1].split()[0])
                except (OSError, IndexError):
                    pass
            if states and all(s in ("T", "t") for s in states):
                return
            time.sleep(0.001)

    def resume(self):
        """SIGCONT after pause()."""
        self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    def close(self):
        """Stops the server (SIGTERM; SIGKILL if it ignores that for
        STOP_TIMEOUT_S), writes its log to stderr if it exited with a code
        other than 0, and removes the workdir if this object made it. Never
        raises; returns the exit code (None if it never started)."""
        code = None
        try:
            code = self.stop()
        except ServerError as e:  # killed after ignoring SIGTERM
            sys.stderr.write("%s\n" % e)
            code = self.proc.returncode
        except Exception as e:  # pragma: no cover - best effort
            sys.stderr.write("stopping cbloss-server: %r\n" % e)
        if code not in (0, None):
            sys.stderr.write("cbloss-server exited with %s:\n%s\n" % (code, self.all_stderr()))
        self.cleanup()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        return code

    def restart(self, timeout=STARTUP_TIMEOUT_S):
        if self.running():
            self.kill()
        return self.start(timeout)

    def wait_exit(self, timeout):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def cleanup(self):
        """Kills the process if it still runs. Never raises."""
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(timeout=10)
        except Exception:
            pass
        self._close_channel()
        with _LIVE_LOCK:
            if self.proc is not None:
                _LIVE_PROCESSES.discard(self.proc)

    def _close_channel(self):
        if self.channel is not None:
            try:
                self.channel.close()
            except Exception:
                pass
        self.channel = None
        self.stub = None

    def new_channel(self):
        return grpc.insecure_channel(self.target, options=CHANNEL_OPTIONS)

    # -- diagnostics --------------------------------------------------------

    def _read_log(self, path, limit):
        try:
            with open(path, "rb") as f:
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return ""
        if limit is not None and len(text) > limit:
            text = "...\n" + text[-limit:]
        return text

    def stderr(self, which=-1, limit=20000):
        """What the server wrote to stderr in start number `which`."""
        if not self.stderr_paths:
            return ""
        return self._read_log(self.stderr_paths[which], limit)

    def stdout(self, which=-1, limit=20000):
        if not self.stderr_paths:
            return ""
        return self._read_log(self.stderr_paths[which][:-len("stderr")] + "stdout", limit)

    def log(self):
        """Everything the latest start wrote to stderr, then stdout (the
        server logs to stderr), untruncated: it only grows while the server
        runs."""
        return self.stderr(limit=None) + self.stdout(limit=None)

    def all_stderr(self):
        """stderr (and stdout) of every start, for failure reports."""
        parts = []
        for i, path in enumerate(self.stderr_paths):
            parts.append("----- %s start %d: %s -----\n[stderr]\n%s[stdout]\n%s"
                         % (self.name, i + 1, " ".join(self.command()), self.stderr(i),
                            self.stdout(i)))
        return "\n".join(parts)


class ServerTestCase(unittest.TestCase):
    """Base class. Servers from start_server() in a test are killed after the
    test; servers from start_class_server() in setUpClass after the class.
    On a failing test, the stderr of every server involved is printed."""

    _class_servers = ()
    _class_tmp = None

    @classmethod
    def start_class_server(cls, **kwargs):
        if cls._class_tmp is None:
            cls._class_tmp = tempfile.mkdtemp(prefix="cbloss-e2e-%s-" % cls.__name__)
        if not cls._class_servers:
            cls._class_servers = []
        server = ServerProcess(cls._class_tmp, name="class%d" % len(cls._class_servers),
                               **kwargs)
        cls._class_servers.append(server)
        try:
            server.start()
        except Exception:
            sys.stderr.write(server.all_stderr() + "\n")
            cls.tearDownClass()
            raise
        return server

    @classmethod
    def tearDownClass(cls):
        for s in cls._class_servers or ():
            s.cleanup()
        cls._class_servers = []
        if cls._class_tmp is not None:
            shutil.rmtree(cls._class_tmp, ignore_errors=True)
            cls._class_tmp = None
        super().tearDownClass()

    def setUp(self):
        super().setUp()
        self._servers = []
        self._tmp = None

    def tmpdir(self):
        if self._tmp is None:
            self._tmp = tempfile.mkdtemp(prefix="cbloss-e2e-%s-" % self._testMethodName)
        return self._tmp

    def new_server(self, server_class=None, **kwargs):
        """A ServerProcess (or `server_class`, a subclass taking the same
        arguments) in this test's temp dir, not yet started; killed after the
        test."""
        kwargs.setdefault("name", "s%d" % len(self._servers))
        server = (server_class or ServerProcess)(self.tmpdir(), **kwargs)
        self._servers.append(server)
        return server

    def start_server(self, **kwargs):
        return self.new_server(**kwargs).start()

    def tearDown(self):
        for s in self._servers:
            s.cleanup()
        super().tearDown()

    def run(self, result=None):
        if result is None:
            result = self.defaultTestResult()
        before = len(result.failures) + len(result.errors)
        outcome = super().run(result)
        after = len(result.failures) + len(result.errors)
        try:
            if after > before:
                servers = list(getattr(self, "_servers", [])) + list(
                    type(self)._class_servers or [])
                for s in servers:
                    sys.stderr.write("\n===== stderr of cbloss-server for %s =====\n%s\n"
                                     % (self.id(), s.all_stderr()))
        finally:
            if getattr(self, "_tmp", None) is not None:
                for s in getattr(self, "_servers", []):
                    s.cleanup()
                shutil.rmtree(self._tmp, ignore_errors=True)
                self._tmp = None
        return outcome

    # -- assertion helpers --------------------------------------------------

    def assertRpcError(self, code, fn, *args, contains=(), **kwargs):
        """Calls fn(*args, **kwargs), expects a grpc.RpcError with `code` whose
        details contain every string of `contains`. Returns the details."""
        kwargs.setdefault("timeout", RPC_TIMEOUT_S)
        try:
            response = fn(*args, **kwargs)
        except grpc.RpcError as e:
            details = e.details() or ""
            self.assertEqual(e.code(), code,
                             "expected %s, got %s: %r" % (code, e.code(), details))
            if isinstance(contains, str):
                needles = [contains]
            else:
                needles = list(contains)
            for needle in needles:
                self.assertIn(needle, details,
                              "status %s message %r does not contain %r"
                              % (e.code(), details, needle))
            return details
        self.fail("expected %s, got OK: %s" % (code, str(response)[:2000]))


class SharedServerTestCase(ServerTestCase):
    """A ServerTestCase whose tests share one server, started once per class
    (with the keyword arguments in `server_options`)."""

    server_options = {}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.server = cls.start_class_server(**cls.server_options)

    @property
    def stub(self):
        return self.server.stub


def load_golden(name=None):
    """The golden cases of sections 1-8, or of another file beside them
    (e.g. name="golden_cases_section9.json")."""
    import json
    path = GOLDEN_FILE if name is None else os.path.join(os.path.dirname(GOLDEN_FILE), name)
    with open(path) as f:
        return json.load(f)


LOSS_TYPE = {
    "SOFTMAX": pb.LOSS_TYPE_SOFTMAX,
    "SIGMOID": pb.LOSS_TYPE_SIGMOID,
    "FOCAL": pb.LOSS_TYPE_FOCAL,
    "SOFTMAX_BCE": pb.LOSS_TYPE_SOFTMAX_BCE,
    "BALANCED_SOFTMAX": pb.LOSS_TYPE_BALANCED_SOFTMAX,
    "LOGIT_ADJUSTED": pb.LOSS_TYPE_LOGIT_ADJUSTED,
    "LDAM": pb.LOSS_TYPE_LDAM,
    "SOFTMAX_FOCAL": pb.LOSS_TYPE_SOFTMAX_FOCAL,
}
REDUCTION = {
    "MEAN": pb.REDUCTION_MEAN,
    "SUM": pb.REDUCTION_SUM,
    "ELEMENT_MEAN": pb.REDUCTION_ELEMENT_MEAN,
    "WEIGHTED_MEAN": pb.REDUCTION_WEIGHTED_MEAN,
    "NONE": pb.REDUCTION_NONE,
}
WEIGHTING = {
    "EFFECTIVE_NUMBER": pb.WEIGHTING_SCHEME_EFFECTIVE_NUMBER,
    "INVERSE_FREQUENCY": pb.WEIGHTING_SCHEME_INVERSE_FREQUENCY,
    "INVERSE_SQRT_FREQUENCY": pb.WEIGHTING_SCHEME_INVERSE_SQRT_FREQUENCY,
    "NONE": pb.WEIGHTING_SCHEME_NONE,
}
DTYPE = {
    "float32": pb.DTYPE_FLOAT32,
    "float16": pb.DTYPE_FLOAT16,
    "bfloat16": pb.DTYPE_BFLOAT16,
}


def golden_config(case):
    config = pb.LossConfig(loss_type=LOSS_TYPE[case["loss_type"]],
                           weighting=WEIGHTING[case["scheme"]],
                           beta=case["beta"], gamma=case["gamma"],
                           reduction=REDUCTION[case["reduction"]],
                           ignore_index=case["ignore_index"])
    # LOSS.md section 9 parameters and deferred re-weighting.
    for key in ("tau", "max_margin", "scale", "drw_start_epoch"):
        if key in case:
            setattr(config, key, case[key])
    return config


def golden_request(case, use_float_data=False, config=True, inline_counts=True):
    """ComputeLossRequest for one golden case, asking for gradient and
    per-sample losses."""
    req = pb.ComputeLossRequest(want_gradient=True, want_per_sample_losses=True)
    if inline_counts:
        req.class_counts.counts.extend(case["class_counts"])
    if config:
        req.config.CopyFrom(golden_config(case))
    shape = (case["rows"], case["cols"])
    if case["logits_dtype"] == "float32":
        logits = np.asarray(case["logits"], dtype=np.float32).reshape(shape)
        req.logits.CopyFrom(tensor_float_data(logits) if use_float_data else tensor_f32(logits))
    else:
        if use_float_data:
            raise ValueError("16-bit case cannot use float_data")
        req.logits.CopyFrom(tensor_bits16(case["logits_bits"], shape, DTYPE[case["logits_dtype"]]))
    if "labels" in case:
        req.labels.extend(case["labels"])
    else:
        req.targets.CopyFrom(tensor_f32(np.asarray(case["targets"], dtype=np.float32).reshape(shape)))
    if "sample_weights" in case:
        req.sample_weights.extend(case["sample_weights"])
    if "upstream" in case:
        req.upstream.extend(case["upstream"])
    if "epoch" in case:
        req.epoch = case["epoch"]
    return req


# ---------------------------------------------------------------------------
# Float64 references (LOSS.md sections 2-6), used where the golden file has no
# case: class weights and the SOFTMAX / SIGMOID / FOCAL losses in labels mode.
# ---------------------------------------------------------------------------


def ref_class_weights(counts, beta=0.9999, scheme="EFFECTIVE_NUMBER"):
    n = np.asarray(counts, dtype=np.float64)
    r = np.zeros_like(n)
    pos = n >= 1
    if scheme == "NONE":
        r[:] = 1.0
    elif scheme == "INVERSE_FREQUENCY" or (scheme == "EFFECTIVE_NUMBER" and beta == 1.0):
        r[pos] = 1.0 / n[pos]
    elif scheme == "INVERSE_SQRT_FREQUENCY":
        r[pos] = 1.0 / np.sqrt(n[pos])
    else:
        if beta == 0.0:
            r[pos] = 1.0
        else:
            r[pos] = (1.0 - beta) / -np.expm1(n[pos] * np.log1p(beta - 1.0))
    k = np.count_nonzero(r > 0)
    return k * r / r.sum()


def _softplus(x):
    return np.maximum(x, 0.0) + np.log1p(np.exp(-np.abs(x)))


def ref_loss(logits, labels, counts, loss_type="SOFTMAX", beta=0.9999, gamma=2.0,
             reduction="MEAN", ignore_index=-100, sample_weights=None):
    """Float64 loss, per-sample losses and gradient, labels mode,
    SOFTMAX / SIGMOID / FOCAL, reductions MEAN / SUM."""
    z = np.asarray(logits, dtype=np.float32).astype(np.float64)
    b, c = z.shape
    y = np.asarray(labels)
    w = ref_class_weights(counts, beta)
    s = np.ones(b) if sample_weights is None else np.asarray(sample_weights, np.float64)
    keep = y != ignore_index
    yk = np.where(keep, y, 0)
    t = np.zeros_like(z)
    t[np.arange(b), yk] = 1.0
    t[~keep] = 0.0
    roww = np.where(keep, s * w[yk], 0.0)
    omega = roww[:, None] * np.ones((1, c))
    if loss_type == "SOFTMAX":
        m = z.max(axis=1, keepdims=True)
        lse = (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True)))[:, 0]
        per = roww * (lse - z[np.arange(b), yk])
        p = np.exp(z - lse[:, None])
        g = roww[:, None] * (p - t)
    else:
        bce = _softplus(z) - t * z
        sig = np.where(z >= 0, 1.0 / (1.0 + np.exp(-np.abs(z))),
                       np.exp(-np.abs(z)) / (1.0 + np.exp(-np.abs(z))))
        if loss_type == "SIGMOID":
            per = (omega * bce).sum(axis=1)
            g = omega * (sig - t)
        elif loss_type == "FOCAL":
            mod = np.exp(-gamma * (t * z + _softplus(-z)))
            per = (omega * mod * bce).sum(axis=1)
            g = omega * mod * ((sig - t) - gamma * (sig + t - 1.0) * bce)
        else:
            raise ValueError(loss_type)
    per = np.where(keep, per, 0.0)
    g[~keep] = 0.0
    n = int(keep.sum())
    if reduction == "SUM":
        d = 1.0
    elif reduction == "MEAN":
        d = float(n) if loss_type == "SOFTMAX" else float(t.sum())
    else:
        raise ValueError(reduction)
    if d == 0:
        return 0.0, per, np.zeros_like(z), w, n
    return per.sum() / d, per, g / d, w, n


def assert_close_loss(test, got, ref, what="loss"):
    tol = 1e-5 * abs(ref) + 1e-6
    test.assertTrue(np.isfinite(got), "%s is not finite: %r" % (what, got))
    test.assertLessEqual(abs(got - ref), tol,
                         "%s: got %.10g, want %.10g (tol %.3g)" % (what, got, ref, tol))


def assert_close_gradient(test, got, ref, what="gradient"):
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    test.assertEqual(got.shape, ref.shape, "%s shape" % what)
    test.assertTrue(np.all(np.isfinite(got)), "%s has non-finite values" % what)
    tol = 1e-5 * (np.max(np.abs(ref)) if ref.size else 0.0) + 1e-7
    err = np.abs(got - ref)
    if err.size and err.max() > tol:
        idx = np.unravel_index(np.argmax(err), err.shape)
        test.fail("%s%s: got %.10g, want %.10g (max err %.3g > tol %.3g)"
                  % (what, list(idx), got[idx], ref[idx], err.max(), tol))


def assert_close_per_sample(test, got, ref, what="per_sample_losses"):
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    test.assertEqual(got.shape, ref.shape, "%s length" % what)
    tol = 1e-5 * np.abs(ref) + 1e-6
    bad = np.nonzero(np.abs(got - ref) > tol)[0]
    if bad.size:
        i = bad[0]
        test.fail("%s[%d]: got %.10g, want %.10g" % (what, i, got[i], ref[i]))
