#!/usr/bin/env python3
"""A throwaway PostgreSQL server for the tests, on 127.0.0.1 only.

    pg_server.py start STATE_FILE   # initdb + start; writes STATE_FILE (JSON)
    pg_server.py stop STATE_FILE    # stop and delete everything

Or from Python: `server = PgServer(); server.start(); ...; server.stop()`.
The cluster lives in a fresh directory under $TMPDIR (or /tmp), runs as an
unprivileged user (`postgres` through runuser when we are root; ourselves
otherwise), listens on a free loopback port and on a Unix socket inside its
directory, trusts local connections (loopback only) and runs with
fsync=off (throwaway data). A missing PostgreSQL is an error, never a skip.
"""

import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time

PG_BIN = os.environ.get("CBLOSS_PG_BIN", "/usr/lib/postgresql/15/bin")


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_pg_user(cmd):
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--"] + cmd
    return cmd


class PgServer:
    def __init__(self, base=None, port=None):
        self.base = base
        self.port = port

    @property
    def data(self):
        return os.path.join(self.base, "data")

    @property
    def log(self):
        return os.path.join(self.base, "postgres.log")

    def dsn(self, dbname="postgres"):
        return "postgresql://postgres@127.0.0.1:%d/%s" % (self.port, dbname)

    def _run(self, cmd, timeout=120):
        proc = subprocess.run(_as_pg_user(cmd), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=timeout,
                              cwd=self.base)
        if proc.returncode != 0:
            log = ""
            if os.path.exists(self.log):
                with open(self.log, errors="replace") as f:
                    log = f.read()[-4000:]
            raise RuntimeError("%s failed (%d):\n%s\n%s" % (
                " ".join(cmd), proc.returncode,
                proc.stdout.decode(errors="replace"), log))

    def start(self):
        """initdb (first time) and start; returns the DSN of db postgres."""
        for tool in ("initdb", "pg_ctl", "postgres"):
            if not os.access(os.path.join(PG_BIN, tool), os.X_OK):
                raise RuntimeError(
                    "PostgreSQL is not installed: no %s in %s (install "
                    "Debian's postgresql, scripts/install-deps.sh)" %
                    (tool, PG_BIN))
        if self.base is None:
            self.base = tempfile.mkdtemp(prefix="cbloss-pg-")
            os.chmod(self.base, 0o700)
            if os.geteuid() == 0:
                pw = pwd.getpwnam("postgres")
                os.chown(self.base, pw.pw_uid, pw.pw_gid)
            self._run([os.path.join(PG_BIN, "initdb"), "-D", self.data,
                       "-U", "postgres", "-A", "trust", "-E", "UTF8",
                       "--locale=C", "--no-sync"])
        last = None
        for _ in range(5):
            port = self.port or _free_port()
            options = ("-c listen_addresses=127.0.0.1 -p %d "
                       "-c unix_socket_directories=%s -c fsync=off "
                       "-c full_page_writes=off -c max_connections=300" %
                       (port, self.base))
            try:
                self._run([os.path.join(PG_BIN, "pg_ctl"), "-D", self.data,
                           "-l", self.log, "-w", "-t", "60", "-o", options,
                           "start"])
                self.port = port
                return self.dsn()
            except RuntimeError as e:  # port taken meanwhile: try another
                last = e
                if self.port:
                    time.sleep(0.5)
        raise last

    def stop(self, mode="fast"):
        self._run([os.path.join(PG_BIN, "pg_ctl"), "-D", self.data, "-m",
                   mode, "-w", "-t", "60", "stop"])

    def kill(self):
        """SIGKILL-free hard stop: immediate mode (no checkpoint)."""
        self.stop(mode="immediate")

    def destroy(self):
        if self.base and os.path.isdir(self.base):
            try:
                if os.path.exists(os.path.join(self.data, "postmaster.pid")):
                    self.stop(mode="immediate")
            finally:
                shutil.rmtree(self.base, ignore_errors=True)

    def state(self):
        return {"base": self.base, "port": self.port, "dsn": self.dsn(),
                "dsn_prefix": "postgresql://postgres@127.0.0.1:%d/" %
                self.port}


def main(argv):
    if len(argv) != 3 or argv[1] not in ("start", "stop"):
        sys.stderr.write(__doc__)
        return 2
    state_file = argv[2]
    if os.path.exists(state_file):  # left over from an interrupted run
        with open(state_file) as f:
            old = json.load(f)
        PgServer(old["base"], old["port"]).destroy()
        os.unlink(state_file)
    if argv[1] == "stop":
        return 0
    server = PgServer()
    try:
        server.start()
    except Exception:
        server.destroy()
        raise
    os.makedirs(os.path.dirname(os.path.abspath(state_file)), exist_ok=True)
    with open(state_file + ".tmp", "w") as f:
        json.dump(server.state(), f)
    os.rename(state_file + ".tmp", state_file)
    with open(os.path.join(os.path.dirname(os.path.abspath(state_file)),
                           "dsn_prefix"), "w") as f:
        f.write(server.state()["dsn_prefix"])
    print("PostgreSQL on %s (%s)" % (server.dsn(), server.base))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
