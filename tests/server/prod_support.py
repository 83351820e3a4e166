"""Helpers for the production tests (TLS, tokens, metrics, replicas).

Certificates are made at test time with the `openssl` command: a CA, a server
certificate for IP:127.0.0.1 and DNS:localhost, a client certificate, and a
client certificate from a second ("rogue") CA the server does not trust.

ProdServer is a ServerProcess that may serve TLS (its readiness check then
uses TLS too) and may serve metrics on a port of its own.
"""

import os
import re
import shutil
import subprocess
import time
import urllib.request

import grpc

from server_fixture import (CHANNEL_OPTIONS, HEALTH_SERVING, STARTUP_TIMEOUT_S, ServerError,
                            ServerProcess, health_check, pb_grpc)

CLI_BINARY = os.environ.get("CBLOSS_CLI", "")


def require_openssl():
    path = shutil.which("openssl")
    if path is None:
        raise RuntimeError("the openssl command is required (scripts/install-deps.sh)")
    return path


def _run(args, cwd):
    subprocess.run(args, cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE, timeout=60)


def _ca(openssl, directory, name):
    _run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
          "-nodes", "-keyout", name + ".key", "-out", name + ".pem", "-days", "2",
          "-subj", "/CN=" + name,
          "-addext", "basicConstraints=critical,CA:TRUE",
          "-addext", "keyUsage=critical,keyCertSign,cRLSign"], directory)


def _leaf(openssl, directory, name, ca, extensions):
    ext_path = os.path.join(directory, name + ".ext")
    with open(ext_path, "w") as f:
        f.write(extensions)
    _run([openssl, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
          "-nodes", "-keyout", name + ".key", "-out", name + ".csr", "-subj", "/CN=" + name],
         directory)
    _run([openssl, "x509", "-req", "-in", name + ".csr", "-CA", ca + ".pem",
          "-CAkey", ca + ".key", "-CAcreateserial", "-out", name + ".pem", "-days", "2",
          "-extfile", ext_path], directory)


def make_certificates(directory):
    """Writes ca, server, client, rogue-ca and rogue-client .pem/.key files
    into `directory`; returns {name: path of its .pem / .key}."""
    openssl = require_openssl()
    _ca(openssl, directory, "ca")
    _ca(openssl, directory, "rogue-ca")
    _leaf(openssl, directory, "server", "ca",
          "basicConstraints=CA:FALSE\n"
          "keyUsage=critical,digitalSignature,keyEncipherment\n"
          "extendedKeyUsage=serverAuth\n"
          "subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    client_ext = ("basicConstraints=CA:FALSE\n"
                  "keyUsage=critical,digitalSignature,keyEncipherment\n"
                  "extendedKeyUsage=clientAuth\n")
    _leaf(openssl, directory, "client", "ca", client_ext)
    _leaf(openssl, directory, "rogue-client", "rogue-ca", client_ext)
    paths = {}
    for name in ("ca", "server", "client", "rogue-ca", "rogue-client"):
        paths[name] = os.path.join(directory, name + ".pem")
        paths[name + ".key"] = os.path.join(directory, name + ".key")
    return paths


def read(path):
    with open(path, "rb") as f:
        return f.read()


def channel_credentials(certs, client=None):
    """TLS credentials trusting the test CA; `client` ("client" or
    "rogue-client") adds that client certificate."""
    if client is None:
        return grpc.ssl_channel_credentials(root_certificates=read(certs["ca"]))
    return grpc.ssl_channel_credentials(root_certificates=read(certs["ca"]),
                                        private_key=read(certs[client + ".key"]),
                                        certificate_chain=read(certs[client]))


def write_token(path, token):
    """A token file as operators write them: the token and a newline."""
    with open(path, "w") as f:
        f.write(token + "\n")
    os.chmod(path, 0o600)
    return path


def bearer(token):
    return (("authorization", "Bearer " + token),)


class ProdServer(ServerProcess):
    """A ServerProcess that may serve TLS and metrics.

    credentials: grpc.ChannelCredentials of the fixture's own channel (None:
      plaintext); metrics: serve metrics on 127.0.0.1:0."""

    def __init__(self, workdir, credentials=None, metrics=False, **kwargs):
        super().__init__(workdir, **kwargs)
        self.credentials = credentials
        self.metrics = metrics
        self.metrics_port_file = os.path.join(workdir, "%s.metrics_port" % self.name)
        self.metrics_port = None

    def command(self):
        cmd = super().command()
        if self.metrics:
            cmd += ["--metrics_listen=127.0.0.1:0",
                    "--metrics_port_file=%s" % self.metrics_port_file]
        return cmd

    def launch(self):
        if os.path.exists(self.metrics_port_file):
            os.unlink(self.metrics_port_file)
        return super().launch()

    def open_channel(self, credentials=None):
        if credentials is None:
            return grpc.insecure_channel(self.target, options=CHANNEL_OPTIONS)
        return grpc.secure_channel(self.target, credentials, options=CHANNEL_OPTIONS)

    def wait_ready(self, timeout=STARTUP_TIMEOUT_S):
        if self.credentials is None:
            super().wait_ready(timeout)
        else:
            self._wait_ready_tls(timeout)
        if self.metrics:
            self.metrics_port = self._wait_port_file(self.metrics_port_file,
                                                     time.monotonic() + timeout)

    def _wait_port_file(self, path, deadline):
        while True:
            if self.proc.poll() is not None:
                raise ServerError("cbloss-server exited with code %s:\n%s"
                                  % (self.proc.returncode, self.stderr()))
            try:
                with open(path) as f:
                    text = f.read().strip()
                if text:
                    return int(text)
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise ServerError("no port in %s:\n%s" % (path, self.stderr()))
            time.sleep(0.02)

    def _wait_ready_tls(self, timeout):
        deadline = time.monotonic() + timeout
        self.port = self._wait_port_file(self.port_file, deadline)
        self.channel = self.open_channel(self.credentials)
        self.stub = pb_grpc.LossServiceStub(self.channel)
        last_error = None
        while True:
            if self.proc.poll() is not None:
                raise ServerError("cbloss-server exited with code %s while starting:\n%s"
                                  % (self.proc.returncode, self.stderr()))
            try:
                if health_check(self.channel, "", timeout=1.0) == HEALTH_SERVING:
                    return
            except grpc.RpcError as e:
                last_error = "%s: %s" % (e.code(), e.details())
            if time.monotonic() > deadline:
                raise ServerError("server not SERVING over TLS (last: %s):\n%s"
                                  % (last_error, self.stderr()))
            time.sleep(0.05)

    def scrape(self):
        """The /metrics text."""
        url = "http://127.0.0.1:%d/metrics" % self.metrics_port
        with urllib.request.urlopen(url, timeout=10) as response:
            if response.status != 200:
                raise AssertionError("GET /metrics: HTTP %d" % response.status)
            return response.read().decode("utf-8"), response.headers.get("Content-Type")


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})? (\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text):
    """Prometheus text -> {(name, frozenset of (label, value)): float}.
    Raises on a line that is neither a comment nor a sample."""
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if m is None:
            raise AssertionError("not a Prometheus sample line: %r" % line)
        labels = frozenset(_LABEL.findall(m.group(3) or ""))
        key = (m.group(1), labels)
        if key in samples:
            raise AssertionError("duplicate sample %r" % line)
        samples[key] = float(m.group(4))
    return samples


def sample(samples, name, **labels):
    """The value of one sample; 0 if absent (counters not yet touched)."""
    return samples.get((name, frozenset(labels.items())), 0.0)
