"""HTTP/JSON helpers for the tests of --http_listen (docs/HTTP.md): a
ServerProcess that also serves HTTP on a free port, and a small client on
http.client (the standard library only)."""

import http.client
import json
import os
import time

from server_fixture import ServerProcess

HTTP_TIMEOUT_S = 30.0


class HttpServer(ServerProcess):
    """A cbloss-server with --http_listen=127.0.0.1:0; `http_port` once
    started."""

    def __init__(self, *args, extra_flags=(), **kwargs):
        super().__init__(*args, extra_flags=list(extra_flags), **kwargs)
        self.http_port_file = os.path.join(self.workdir, "%s.http_port" % self.name)
        self.extra_flags += ["--http_listen=127.0.0.1:0",
                             "--http_port_file=%s" % self.http_port_file]
        self.http_port = None

    def launch(self):
        if os.path.exists(self.http_port_file):
            os.unlink(self.http_port_file)
        return super().launch()

    def wait_ready(self, timeout=20.0):
        super().wait_ready(timeout)
        self.http_port = self.wait_port_file(self.http_port_file,
                                             time.monotonic() + timeout)

    def connection(self):
        return http.client.HTTPConnection("127.0.0.1", self.http_port,
                                          timeout=HTTP_TIMEOUT_S)

    def call(self, method, path, body=None, token=None, raw=None, conn=None):
        """(HTTP status, parsed JSON body or text, headers)."""
        own = conn is None
        conn = conn or self.connection()
        headers = {}
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
        if data is not None:
            headers["Content-Type"] = "application/json"
        if token is not None:
            headers["Authorization"] = "Bearer " + token
        try:
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            text = resp.read().decode()
            ctype = resp.getheader("Content-Type", "")
            value = json.loads(text) if ctype.startswith("application/json") else text
            return resp.status, value, dict(resp.getheaders())
        finally:
            if own:
                conn.close()
