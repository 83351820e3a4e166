"""Shared-memory tensors for a server on the same host (API.md section 5.3).

A Client with a ``unix:`` target (or ``shared_memory=True``) keeps one
SharedMemoryArea: a POSIX shared-memory object of this process, mapped here
and registered on the server as one region. Each call copies the logits into
it once and sends references (Tensor.shm, ComputeLossRequest.gradient_shm)
instead of bytes; the server reads the logits and writes the gradient in
place, and the gradient comes back as a numpy view of the area, valid until
the next call that uses the area. cbloss.torch modules keep one area each.

The object is created with O_CREAT | O_EXCL, mode 0600, under the key
"/cbloss-<pid>-<n>", and unlinked as soon as the server has registered it:
the memory lives as long as both mappings, so a process that dies leaves
nothing in /dev/shm. A batch that does not fit gets a new, larger area (the
old region is unregistered; views of it stay valid memory).

Not thread-safe by itself: an area is used by one call at a time (the
callers hold `lock`).
"""

import itertools
import mmap
import os
import threading

import grpc
import numpy as np

from cbloss._proto import cbloss_pb2 as pb
from cbloss.errors import CblossError

try:  # CPython's binding of shm_open / shm_unlink (multiprocessing uses it)
    import _posixshmem
except ImportError:  # pragma: no cover - not CPython on Linux
    _posixshmem = None

DEFAULT_PREFIX = "/cbloss-"

# Codes of RegisterSharedMemory after which a client in auto mode sends bytes
# for good: shared memory off (FAILED_PRECONDITION), not a Unix socket or not
# our uid (PERMISSION_DENIED), a server without the RPC (UNIMPLEMENTED), and
# keys or limits the server will not take.
REFUSALS = (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.PERMISSION_DENIED,
            grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.NOT_FOUND)

_ALIGNMENT = 64
_MIN_BYTES = 1 << 16
_counter = itertools.count()
_counter_lock = threading.Lock()

# Wire dtype -> (numpy dtype of the elements in the area, bytes per element).
_ELEMENTS = {
    pb.DTYPE_FLOAT32: (np.dtype("<f4"), 4),
    pb.DTYPE_FLOAT16: (np.dtype("<f2"), 2),
    pb.DTYPE_BFLOAT16: (np.dtype("<u2"), 2),  # bit patterns
}


def _round_up(n, alignment):
    return (n + alignment - 1) // alignment * alignment


def _next_key(prefix):
    with _counter_lock:
        n = next(_counter)
    return "%s%d-%d" % (prefix, os.getpid(), n)


def _shm_open_exclusive(key):
    """fd of a new object `key` (O_CREAT | O_EXCL | O_RDWR, 0600)."""
    flags = os.O_CREAT | os.O_EXCL | os.O_RDWR
    if _posixshmem is not None:
        return _posixshmem.shm_open(key, flags, mode=0o600)
    return os.open("/dev/shm" + key, flags, 0o600)  # glibc's shm_open


def _shm_unlink(key):
    try:
        if _posixshmem is not None:
            _posixshmem.shm_unlink(key)
        else:
            os.unlink("/dev/shm" + key)
    except OSError:
        pass


class SharedMemoryArea:
    """One registered region: logits from offset 0, the gradient after them.

    Attributes:
      region: the region's name on the server ("cbloss-<pid>-<n>").
      key: the (unlinked) object's key.
      byte_size: the region's size.
      lock: held by the call using the area.
    """

    def __init__(self, register, unregister, byte_size, prefix=DEFAULT_PREFIX):
        """Creates, maps and registers an object of `byte_size` bytes.

        register(name, key, byte_size) and unregister(name) are the Client's
        RPCs; OSError if the object cannot be made, CblossError if the
        server refuses it.
        """
        self._unregister = unregister
        self.lock = threading.Lock()
        self.byte_size = int(byte_size)
        self.map = None
        for _ in range(8):
            key = _next_key(prefix)
            try:
                fd = _shm_open_exclusive(key)
            except FileExistsError:
                continue
            try:
                os.ftruncate(fd, self.byte_size)
                mapping = mmap.mmap(fd, self.byte_size, mmap.MAP_SHARED,
                                    mmap.PROT_READ | mmap.PROT_WRITE)
            except BaseException:
                _shm_unlink(key)
                raise
            finally:
                os.close(fd)
            name = key[1:]
            try:
                register(name, key, self.byte_size)
            except CblossError as e:
                if e.code == grpc.StatusCode.ALREADY_EXISTS:
                    continue  # the name is taken by this uid elsewhere
                raise
            finally:
                # The server has its own mapping now (or never will).
                _shm_unlink(key)
            self.map, self.key, self.region = mapping, key, name
            return
        raise CblossError(grpc.StatusCode.ALREADY_EXISTS,
                          "every shared-memory region name tried is taken")

    @staticmethod
    def size_for(rows, cols, logits_dtype, gradient_dtype):
        """Bytes an area needs for a [rows, cols] batch."""
        n = int(rows) * int(cols)
        return _round_up(n * _ELEMENTS[logits_dtype][1], _ALIGNMENT) + \
            n * _ELEMENTS[gradient_dtype][1]

    @staticmethod
    def grown_size(needed, current=0):
        """The size of a new area for `needed` bytes: at least double the
        current one, so a growing batch re-registers rarely."""
        return _round_up(max(needed, 2 * current, _MIN_BYTES), mmap.PAGESIZE)

    def logits_view(self, shape, wire_dtype):
        """numpy array [B, C] over the logits' bytes (bit patterns for
        bfloat16)."""
        dtype, _ = _ELEMENTS[wire_dtype]
        count = int(shape[0]) * int(shape[1])
        return np.frombuffer(self.map, dtype=dtype, count=count).reshape(shape)

    def gradient_offset(self, shape, logits_dtype):
        return _round_up(int(shape[0]) * int(shape[1]) * _ELEMENTS[logits_dtype][1],
                         _ALIGNMENT)

    def gradient_view(self, shape, logits_dtype, gradient_dtype):
        dtype, _ = _ELEMENTS[gradient_dtype]
        count = int(shape[0]) * int(shape[1])
        return np.frombuffer(self.map, dtype=dtype, count=count,
                             offset=self.gradient_offset(shape, logits_dtype)).reshape(shape)

    def logits_ref(self, shape, wire_dtype):
        count = int(shape[0]) * int(shape[1])
        return pb.SharedMemoryRef(region=self.region, offset=0,
                                  byte_size=count * _ELEMENTS[wire_dtype][1])

    def gradient_ref(self, shape, logits_dtype, gradient_dtype):
        count = int(shape[0]) * int(shape[1])
        return pb.SharedMemoryRef(region=self.region,
                                  offset=self.gradient_offset(shape, logits_dtype),
                                  byte_size=count * _ELEMENTS[gradient_dtype][1])

    def names_region_in(self, error):
        """True if CblossError `error` says the server lost this region."""
        return (error.code == grpc.StatusCode.FAILED_PRECONDITION
                and ("'%s'" % self.region) in (error.details or ""))

    def close(self, unregister=True):
        """Unregisters the region (errors ignored) and unmaps the area once
        no view of it is left (views keep it mapped until they go)."""
        if self.map is None:
            return
        if unregister:
            try:
                self._unregister(self.region)
            except Exception:  # the server or the channel may be gone
                pass
        try:
            self.map.close()
        except BufferError:
            pass  # numpy views exist: the mapping goes with the last one
        self.map = None


class SharedMemorySlot:
    """The one area of a Client or of a cbloss.torch module: empty until
    first use, replaced by a larger one when a batch does not fit.
    `lock` is held by the call using it."""

    def __init__(self):
        self.lock = threading.Lock()
        self.area = None

    def replace(self, area):
        if self.area is not None:
            self.area.close()
        self.area = area

    def close(self):
        with self.lock:
            self.replace(None)


def logits_layout(logits):
    """(shape, wire dtype, write) of [B, C] logits, where write(area) copies
    them into the area once, converted as tensors.encode_logits converts
    them for the wire (float32, float16 and bfloat16 as they are, other
    numbers to float32). ValueError / TypeError as encode_logits."""
    from cbloss import tensors
    if tensors.is_torch_tensor(logits):
        import torch
        t = logits.detach()
        if t.dim() != 2:
            raise ValueError("logits must have shape [B, C]; got shape %s" % (list(t.shape),))
        if t.is_complex():
            raise TypeError("logits: unsupported element type %s" % t.dtype)
        wire = {torch.float16: pb.DTYPE_FLOAT16,
                torch.bfloat16: pb.DTYPE_BFLOAT16}.get(t.dtype, pb.DTYPE_FLOAT32)
        element = {pb.DTYPE_FLOAT32: torch.float32, pb.DTYPE_FLOAT16: torch.float16,
                   pb.DTYPE_BFLOAT16: torch.bfloat16}[wire]
        shape = tuple(t.shape)

        def write(area):
            count = shape[0] * shape[1]
            if count:
                torch.frombuffer(area.map, dtype=element, count=count).view(shape).copy_(t)

        return shape, wire, write
    array, wire = tensors._as_numpy(logits)
    if array.ndim != 2:
        raise ValueError("logits must have shape [B, C]; got shape %s" % (list(array.shape),))
    if wire != pb.DTYPE_BFLOAT16:
        if array.dtype == np.float16:
            wire = pb.DTYPE_FLOAT16
        elif array.dtype.kind in "fiub":
            wire = pb.DTYPE_FLOAT32
        else:
            raise TypeError("logits: unsupported element type %s" % array.dtype)
    shape = tuple(array.shape)

    def write(area):
        np.copyto(area.logits_view(shape, wire), array, casting="unsafe")

    return shape, wire, write
