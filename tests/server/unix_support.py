"""cbloss-server on Unix domain sockets, and POSIX shared-memory objects made
from Python, for the end-to-end tests of API.md section 5.3
(test_unix_socket.py, test_shared_memory.py).

UnixServer is a ServerProcess whose --listen list is chosen by the test:
unix:PATH (a socket in a short temporary folder: socket paths have at most
107 bytes), optionally with 127.0.0.1:0 too. Its `channel` / `stub` talk over
the Unix socket; `tcp_channel()` over TCP when there is one.

SharedMemoryObject is a POSIX shared-memory object created the way a client
would (shm_open is open() under /dev/shm on Linux): os.open + os.ftruncate +
mmap, removed on close().
"""

import itertools
import os
import re
import shutil
import tempfile
import mmap

import grpc

from server_fixture import CHANNEL_OPTIONS, ServerError, ServerProcess

# A channel of its own connection: grpcio shares subchannels (connections)
# between channels with the same target and options unless told not to, and
# these tests close connections on purpose.
UNIX_CHANNEL_OPTIONS = CHANNEL_OPTIONS + [("grpc.use_local_subchannel_pool", 1)]


def unix_channel(path):
    return grpc.insecure_channel("unix:" + path, options=UNIX_CHANNEL_OPTIONS)


class UnixServer(ServerProcess):
    """A cbloss-server serving on a Unix socket (and on TCP if `tcp`).

    ServerProcess.wait_ready waits for the port file (the TCP port, or 0) and
    then for SERVING on new_channel(), which is the Unix socket here.

    `socket_path` defaults to <a short temporary folder>/cbloss.sock; the
    folder is removed by close_socket_dir() (ServerTestCase's cleanup does not
    know it: call it from the test's cleanup)."""

    def __init__(self, workdir=None, socket_path=None, tcp=True, listen=None, **kwargs):
        super().__init__(workdir, **kwargs)
        self._socket_dir = None
        if socket_path is None:
            self._socket_dir = tempfile.mkdtemp(prefix="cbl-", dir="/tmp")
            socket_path = os.path.join(self._socket_dir, "cbloss.sock")
        self.socket_path = socket_path
        self.tcp = tcp
        # The --listen flags, replacing the fixture's --listen=127.0.0.1:0.
        if listen is None:
            listen = ["--listen=unix:%s" % socket_path]
            if tcp:
                listen.append("--listen=127.0.0.1:0")
        self.listen = list(listen)
        self.port_may_be_zero = True

    def command(self):
        cmd = super().command()
        i = cmd.index("--listen=127.0.0.1:0")
        return cmd[:i] + self.listen + cmd[i + 1:]

    @property
    def target(self):
        return "unix:" + self.socket_path

    def new_channel(self):
        return unix_channel(self.socket_path)

    def tcp_channel(self):
        if not self.port:
            raise ServerError("this server has no TCP port")
        return grpc.insecure_channel("127.0.0.1:%d" % self.port, options=UNIX_CHANNEL_OPTIONS)

    def close_socket_dir(self):
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)


def serving_ports(log):
    """The TCP ports of the start-up line "serving on A, B (port N), ...",
    in order."""
    m = re.search(r"serving on (.*?); store=", log)
    if not m:
        raise AssertionError("no start-up line in the log:\n" + log[-4000:])
    return [int(p) for p in re.findall(r"\(port (\d+)\)", m.group(1))], m.group(1)


_counter = itertools.count()


class SharedMemoryObject:
    """A POSIX shared-memory object of `size` bytes, mapped read-write.

    `key` is its shm_open name ("/cbloss-test-<pid>-<n>"); `buf` the mapping
    (an mmap, usable with numpy.frombuffer)."""

    def __init__(self, size, prefix="/cbloss-test-"):
        self.key = "%s%d-%d" % (prefix, os.getpid(), next(_counter))
        self.path = "/dev/shm/" + self.key[1:]
        self.size = size
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        try:
            os.ftruncate(fd, size)
            self.buf = mmap.mmap(fd, size)
        finally:
            os.close(fd)

    def write(self, offset, data):
        self.buf[offset:offset + len(data)] = bytes(data)

    def read(self, offset, size):
        return bytes(self.buf[offset:offset + size])

    def truncate(self, size):
        """Shrinks (or grows) the object under every mapping of it."""
        fd = os.open(self.path, os.O_RDWR)
        try:
            os.ftruncate(fd, size)
        finally:
            os.close(fd)

    def close(self):
        try:
            self.buf.close()
        except (BufferError, ValueError):
            pass
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
