"""TLS, mutual TLS and bearer tokens of cbloss-server (docs/DEPLOY.md).

Certificates come from openssl at test time (prod_support.make_certificates).
Status codes are the documented ones: no or an unknown token is
UNAUTHENTICATED; the compute token on a dataset write is PERMISSION_DENIED.
The CLI (--tls_ca, --tls_cert, --tls_key, --token_file, $CBLOSS_TOKEN) and
the Python client (tls_credentials, token=) are driven against the same
servers.
"""

import json
import os
import shutil
import subprocess
import tempfile
import unittest

import grpc
import numpy as np

from prod_support import (CLI_BINARY, ProdServer, bearer, channel_credentials,
                          make_certificates, write_token)
from server_fixture import (HEALTH_SERVING, RPC_TIMEOUT_S as T, SAMPLE_DATASETS_FILE,
                            ServerTestCase, health_check, pb, pb_grpc,
                            reflection_list_services, tensor_f32)

ADMIN_TOKEN = "adm-6f1c0e2a9b7d4c35a8e1f0b2c3d4e5f6"
COMPUTE_TOKEN = "cmp-0a1b2c3d4e5f60718293a4b5c6d7e8f9"
WRONG_TOKEN = "adm-00000000000000000000000000000000"  # same length as the admin one


def compute_request():
    logits = np.array([[2.0, -1.0, 0.5], [0.1, 0.2, 3.0]], dtype=np.float32)
    return pb.ComputeLossRequest(class_counts=pb.ClassCounts(counts=[100, 10, 1]),
                                 config=pb.LossConfig(loss_type=pb.LOSS_TYPE_SOFTMAX),
                                 logits=tensor_f32(logits), labels=[0, 2])


class Certificates:
    directory = None
    paths = None

    @classmethod
    def get(cls):
        if cls.paths is None:
            cls.directory = tempfile.mkdtemp(prefix="cbloss-certs-")
            cls.paths = make_certificates(cls.directory)
        return cls.paths


def tearDownModule():
    if Certificates.directory is not None:
        shutil.rmtree(Certificates.directory, ignore_errors=True)


class ProdTestCase(ServerTestCase):
    def new_prod_server(self, **kwargs):
        server = ProdServer(self.tmpdir(), name="s%d" % len(self._servers), **kwargs)
        self._servers.append(server)
        return server

    def token_file(self, name, token):
        return write_token(os.path.join(self.tmpdir(), name), token)

    def assertCode(self, code, fn, *args, **kwargs):
        kwargs.setdefault("timeout", T)
        try:
            fn(*args, **kwargs)
        except grpc.RpcError as e:
            self.assertEqual(e.code(), code, e.details())
            return e.details() or ""
        self.fail("expected %s, got OK" % code)


class TlsTest(ProdTestCase):
    def test_tls_serves_and_plaintext_client_fails(self):
        certs = Certificates.get()
        creds = channel_credentials(certs)
        server = self.new_prod_server(
            credentials=creds, datasets_file=SAMPLE_DATASETS_FILE,
            extra_flags=["--tls_cert=" + certs["server"], "--tls_key=" + certs["server.key"]])
        server.start()
        d = server.stub.GetDataset(pb.GetDatasetRequest(name="cifar10-lt"), timeout=T)
        self.assertEqual(len(d.class_counts), 10)
        self.assertEqual(health_check(server.channel), HEALTH_SERVING)
        names, _ = reflection_list_services(server.channel)
        self.assertIn("cbloss.v1.LossService", names)
        with server.open_channel(None) as plain:
            stub = pb_grpc.LossServiceStub(plain)
            self.assertCode(grpc.StatusCode.UNAVAILABLE, stub.GetDataset,
                            pb.GetDatasetRequest(name="cifar10-lt"), timeout=5)
        # A client that does not trust the server's CA cannot connect either.
        untrusting = grpc.ssl_channel_credentials(
            root_certificates=open(certs["rogue-ca"], "rb").read())
        with server.open_channel(untrusting) as ch:
            self.assertCode(grpc.StatusCode.UNAVAILABLE,
                            pb_grpc.LossServiceStub(ch).GetDataset,
                            pb.GetDatasetRequest(name="cifar10-lt"), timeout=5)

    def test_mutual_tls_requires_a_client_certificate_from_the_ca(self):
        certs = Certificates.get()
        server = self.new_prod_server(
            credentials=channel_credentials(certs, client="client"),
            extra_flags=["--tls_cert=" + certs["server"], "--tls_key=" + certs["server.key"],
                         "--tls_client_ca=" + certs["ca"]])
        server.start()
        resp = server.stub.ComputeLoss(compute_request(), timeout=T)
        self.assertGreater(resp.loss, 0.0)
        for creds in (channel_credentials(certs), channel_credentials(certs, "rogue-client")):
            with server.open_channel(creds) as ch:
                self.assertCode(grpc.StatusCode.UNAVAILABLE,
                                pb_grpc.LossServiceStub(ch).ComputeLoss, compute_request(),
                                timeout=5)
        self.assertIn("tls=mutual", server.stderr())

    def test_bad_tls_flags_exit_2(self):
        certs = Certificates.get()
        cases = {
            "key without cert": ["--tls_key=" + certs["server.key"]],
            "client ca without tls": ["--tls_client_ca=" + certs["ca"]],
            "missing cert file": ["--tls_cert=/nonexistent.pem",
                                  "--tls_key=" + certs["server.key"]],
            "not pem": ["--tls_cert=" + SAMPLE_DATASETS_FILE,
                        "--tls_key=" + certs["server.key"]],
        }
        for what, flags in cases.items():
            with self.subTest(what):
                server = self.new_prod_server(extra_flags=flags)
                proc = server.launch()
                self.assertEqual(proc.wait(timeout=30), 2, server.stderr())


class AdminTokenTest(ProdTestCase):
    """--admin_token_file only: writes need the admin token; reads and
    computations stay open."""

    def setUp(self):
        super().setUp()
        certs = Certificates.get()
        self.server = self.new_prod_server(
            credentials=channel_credentials(certs), datasets_file=SAMPLE_DATASETS_FILE,
            extra_flags=["--tls_cert=" + certs["server"], "--tls_key=" + certs["server.key"],
                         "--admin_token_file=" + self.token_file("admin", ADMIN_TOKEN),
                         "--log_level=trace"])
        self.server.start()
        self.stub = self.server.stub

    def writes(self):
        ds = pb.Dataset(name="guarded", class_counts=[5, 3, 1])
        return [
            ("PutDataset", self.stub.PutDataset, pb.PutDatasetRequest(dataset=ds)),
            ("AddClassCounts", self.stub.AddClassCounts,
             pb.AddClassCountsRequest(name="guarded", deltas=[1, 1, 1])),
            ("DeleteDataset", self.stub.DeleteDataset, pb.DeleteDatasetRequest(name="guarded")),
        ]

    def test_writes_need_the_admin_token(self):
        for method, call, request in self.writes():
            with self.subTest(method):
                self.assertCode(grpc.StatusCode.UNAUTHENTICATED, call, request)
                self.assertCode(grpc.StatusCode.UNAUTHENTICATED, call, request,
                                metadata=bearer(WRONG_TOKEN))
                self.assertCode(grpc.StatusCode.UNAUTHENTICATED, call, request,
                                metadata=bearer(ADMIN_TOKEN + "x"))
                self.assertCode(grpc.StatusCode.UNAUTHENTICATED, call, request,
                                metadata=(("authorization", "Basic " + ADMIN_TOKEN),))
                self.assertCode(grpc.StatusCode.UNAUTHENTICATED, call, request,
                                metadata=(("authorization", ADMIN_TOKEN),))
                call(request, timeout=T, metadata=bearer(ADMIN_TOKEN))
        # The refused calls changed nothing: the dataset went through exactly
        # one put, one add (+1 each) and one delete.
        self.assertCode(grpc.StatusCode.NOT_FOUND, self.stub.GetDataset,
                        pb.GetDatasetRequest(name="guarded"))

    def test_refused_write_does_not_write(self):
        ds = pb.Dataset(name="never", class_counts=[1, 2])
        self.assertCode(grpc.StatusCode.UNAUTHENTICATED, self.stub.PutDataset,
                        pb.PutDatasetRequest(dataset=ds), metadata=bearer(WRONG_TOKEN))
        self.assertCode(grpc.StatusCode.NOT_FOUND, self.stub.GetDataset,
                        pb.GetDatasetRequest(name="never"))

    def test_reads_and_computations_stay_open(self):
        self.stub.GetDataset(pb.GetDatasetRequest(name="cifar10-lt"), timeout=T)
        with open(SAMPLE_DATASETS_FILE) as f:
            expected = len(json.load(f)["datasets"])
        self.assertEqual(len(self.stub.ListDatasets(pb.ListDatasetsRequest(), timeout=T)
                             .datasets), expected)
        self.stub.GetClassWeights(pb.GetClassWeightsRequest(dataset="cifar10-lt"), timeout=T)
        self.stub.ComputeLoss(compute_request(), timeout=T)
        # A wrong token on an open method is ignored, not an error.
        self.stub.ComputeLoss(compute_request(), timeout=T, metadata=bearer(WRONG_TOKEN))

    def test_tokens_never_logged(self):
        for method, call, request in self.writes():
            self.assertCode(grpc.StatusCode.UNAUTHENTICATED, call, request,
                            metadata=bearer(WRONG_TOKEN))
            call(request, timeout=T, metadata=bearer(ADMIN_TOKEN))
        self.assertEqual(self.server.stop(), 0)
        log = self.server.stderr(limit=10 ** 7)
        self.assertIn("admin_token=required", log)
        self.assertIn("PutDataset failed: UNAUTHENTICATED", log)
        for token in (ADMIN_TOKEN, WRONG_TOKEN, ADMIN_TOKEN[4:20], WRONG_TOKEN[4:20]):
            self.assertNotIn(token, log)


class ComputeTokenTest(ProdTestCase):
    """--admin_token_file and --compute_token_file: every LossService method
    needs a token; the compute token cannot write."""

    def setUp(self):
        super().setUp()
        certs = Certificates.get()
        self.server = self.new_prod_server(
            credentials=channel_credentials(certs), datasets_file=SAMPLE_DATASETS_FILE,
            extra_flags=["--tls_cert=" + certs["server"], "--tls_key=" + certs["server.key"],
                         "--admin_token_file=" + self.token_file("admin", ADMIN_TOKEN),
                         "--compute_token_file=" + self.token_file("compute", COMPUTE_TOKEN)])
        self.server.start()
        self.stub = self.server.stub

    def stream_status(self, metadata):
        responses = self.stub.StreamLoss(iter([compute_request()]), timeout=T,
                                         metadata=metadata)
        try:
            got = list(responses)
        except grpc.RpcError as e:
            return e.code(), []
        return grpc.StatusCode.OK, got

    def test_compute_and_read_methods_need_a_token(self):
        calls = [
            ("ComputeLoss", self.stub.ComputeLoss, compute_request()),
            ("GetClassWeights", self.stub.GetClassWeights,
             pb.GetClassWeightsRequest(dataset="cifar10-lt")),
            ("GetDataset", self.stub.GetDataset, pb.GetDatasetRequest(name="cifar10-lt")),
            ("ListDatasets", self.stub.ListDatasets, pb.ListDatasetsRequest()),
        ]
        for method, call, request in calls:
            with self.subTest(method):
                self.assertCode(grpc.StatusCode.UNAUTHENTICATED, call, request)
                self.assertCode(grpc.StatusCode.UNAUTHENTICATED, call, request,
                                metadata=bearer(WRONG_TOKEN))
                call(request, timeout=T, metadata=bearer(COMPUTE_TOKEN))
                call(request, timeout=T, metadata=bearer(ADMIN_TOKEN))

    def test_stream_needs_a_token(self):
        self.assertEqual(self.stream_status(None)[0], grpc.StatusCode.UNAUTHENTICATED)
        self.assertEqual(self.stream_status(bearer(WRONG_TOKEN))[0],
                         grpc.StatusCode.UNAUTHENTICATED)
        for token in (COMPUTE_TOKEN, ADMIN_TOKEN):
            code, responses = self.stream_status(bearer(token))
            self.assertEqual(code, grpc.StatusCode.OK)
            self.assertEqual(len(responses), 1)
            self.assertEqual(responses[0].error_code, 0)

    def test_compute_token_cannot_write(self):
        ds = pb.Dataset(name="x", class_counts=[1, 2])
        self.assertCode(grpc.StatusCode.PERMISSION_DENIED, self.stub.PutDataset,
                        pb.PutDatasetRequest(dataset=ds), metadata=bearer(COMPUTE_TOKEN))
        self.assertCode(grpc.StatusCode.PERMISSION_DENIED, self.stub.AddClassCounts,
                        pb.AddClassCountsRequest(name="cifar10-lt", deltas=[1] * 10),
                        metadata=bearer(COMPUTE_TOKEN))
        self.assertCode(grpc.StatusCode.PERMISSION_DENIED, self.stub.DeleteDataset,
                        pb.DeleteDatasetRequest(name="cifar10-lt"),
                        metadata=bearer(COMPUTE_TOKEN))
        d = self.stub.GetDataset(pb.GetDatasetRequest(name="cifar10-lt"), timeout=T,
                                 metadata=bearer(COMPUTE_TOKEN))
        self.assertEqual(d.version, 1)

    def test_health_and_reflection_stay_open(self):
        self.assertEqual(health_check(self.server.channel), HEALTH_SERVING)
        names, _ = reflection_list_services(self.server.channel)
        self.assertIn("cbloss.v1.LossService", names)


class TokenFlagsTest(ProdTestCase):
    def test_bad_token_files_exit_2(self):
        empty = os.path.join(self.tmpdir(), "empty")
        with open(empty, "w") as f:
            f.write("\n")
        spaced = self.token_file("spaced", "two words")
        same = self.token_file("same", ADMIN_TOKEN)
        cases = {
            "missing": ["--admin_token_file=/nonexistent/token"],
            "empty": ["--compute_token_file=" + empty],
            "inner space": ["--admin_token_file=" + spaced],
            "same token twice": ["--admin_token_file=" + same,
                                 "--compute_token_file=" + same],
        }
        for what, flags in cases.items():
            with self.subTest(what):
                server = self.new_prod_server(extra_flags=flags)
                proc = server.launch()
                self.assertEqual(proc.wait(timeout=30), 2, server.stderr())
                self.assertNotIn(ADMIN_TOKEN, server.stderr())

    def test_token_over_plaintext_works_with_a_warning(self):
        server = self.new_prod_server(
            extra_flags=["--admin_token_file=" + self.token_file("admin", ADMIN_TOKEN)])
        server.start()
        ds = pb.Dataset(name="plain", class_counts=[1, 2])
        self.assertCode(grpc.StatusCode.UNAUTHENTICATED, server.stub.PutDataset,
                        pb.PutDatasetRequest(dataset=ds))
        server.stub.PutDataset(pb.PutDatasetRequest(dataset=ds), timeout=T,
                               metadata=bearer(ADMIN_TOKEN))
        self.assertIn("TLS is off", server.stderr())


class CliTest(ProdTestCase):
    """The cbloss CLI with --tls_ca/--tls_cert/--tls_key and tokens."""

    def setUp(self):
        super().setUp()
        if not CLI_BINARY or not os.path.exists(CLI_BINARY):
            raise RuntimeError("CBLOSS_CLI must name the cbloss binary (got %r)" % CLI_BINARY)
        self.certs = Certificates.get()
        self.admin_file = self.token_file("admin", ADMIN_TOKEN)
        self.compute_file = self.token_file("compute", COMPUTE_TOKEN)
        self.server = self.new_prod_server(
            credentials=channel_credentials(self.certs, client="client"),
            datasets_file=SAMPLE_DATASETS_FILE,
            extra_flags=["--tls_cert=" + self.certs["server"],
                         "--tls_key=" + self.certs["server.key"],
                         "--tls_client_ca=" + self.certs["ca"],
                         "--admin_token_file=" + self.admin_file,
                         "--compute_token_file=" + self.compute_file])
        self.server.start()

    def cli(self, *args, env_token=None, tls=True):
        cmd = [CLI_BINARY, "--target", self.server.target, "--timeout", "10"]
        if tls:
            cmd += ["--tls_ca", self.certs["ca"], "--tls_cert", self.certs["client"],
                    "--tls_key", self.certs["client.key"]]
        cmd += list(args)
        env = dict(os.environ)
        env.pop("CBLOSS_TOKEN", None)
        if env_token is not None:
            env["CBLOSS_TOKEN"] = env_token
        return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                              timeout=60, text=True)

    def test_health_over_mutual_tls(self):
        r = self.cli("health")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip(), "SERVING")
        # Without the client certificate the handshake fails: UNAVAILABLE + 1.
        r = self.cli("--tls_ca", self.certs["ca"], "health", tls=False)
        self.assertEqual(r.returncode, 15, r.stderr)
        # Plaintext to a TLS server: UNAVAILABLE too.
        r = self.cli("health", tls=False)
        self.assertEqual(r.returncode, 15, r.stderr)

    def test_tokens_from_file_and_environment(self):
        put = ("datasets", "put", "cli-ds", "--counts", "7,5,3")
        r = self.cli(*put)
        self.assertEqual(r.returncode, 17, r.stderr)  # UNAUTHENTICATED + 1
        self.assertIn("UNAUTHENTICATED", r.stderr)
        r = self.cli("--token_file", self.compute_file, *put)
        self.assertEqual(r.returncode, 8, r.stderr)  # PERMISSION_DENIED + 1
        r = self.cli("--token_file", self.admin_file, "--json", *put)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn('"version":1', r.stdout.replace(" ", ""))
        r = self.cli("--json", "weights", "--dataset", "cli-ds", env_token=COMPUTE_TOKEN)
        self.assertEqual(r.returncode, 0, r.stderr)
        r = self.cli("--json", "weights", "--dataset", "cli-ds", env_token=WRONG_TOKEN)
        self.assertEqual(r.returncode, 17, r.stderr)
        r = self.cli("--json", "weights", "--dataset", "cli-ds")
        self.assertEqual(r.returncode, 17, r.stderr)
        # --token_file wins over $CBLOSS_TOKEN.
        r = self.cli("--token_file", self.admin_file, "datasets", "delete", "cli-ds",
                     env_token=WRONG_TOKEN)
        self.assertEqual(r.returncode, 0, r.stderr)
        for out in (r.stdout, r.stderr):
            self.assertNotIn(ADMIN_TOKEN, out)

    def test_bench_with_tls_and_token(self):
        r = self.cli("--token_file", self.compute_file, "--json", "bench", "--duration", "1",
                     "--concurrency", "2", "--dataset", "cifar10-lt", "--batch", "8")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn('"errors":0', r.stdout.replace(" ", ""))

    def test_cert_without_key_is_a_usage_error(self):
        r = self.cli("--tls_cert", self.certs["client"], "health", tls=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("tls_key", r.stderr + r.stdout)


class PythonClientTest(ProdTestCase):
    """cbloss.Client with tls_credentials() and token=."""

    def setUp(self):
        super().setUp()
        import cbloss  # the package under build/python (PYTHONPATH)
        self.cbloss = cbloss
        self.certs = Certificates.get()
        self.server = self.new_prod_server(
            credentials=channel_credentials(self.certs, client="client"),
            datasets_file=SAMPLE_DATASETS_FILE,
            extra_flags=["--tls_cert=" + self.certs["server"],
                         "--tls_key=" + self.certs["server.key"],
                         "--tls_client_ca=" + self.certs["ca"],
                         "--admin_token_file=" + self.token_file("admin", ADMIN_TOKEN),
                         "--compute_token_file=" + self.token_file("compute", COMPUTE_TOKEN)])
        self.server.start()

    def client(self, **kwargs):
        creds = self.cbloss.tls_credentials(root_ca=self.certs["ca"], cert=self.certs["client"],
                                            key=self.certs["client.key"])
        return self.cbloss.Client(self.server.target, credentials=creds, timeout=T, **kwargs)

    def test_token_and_mutual_tls(self):
        logits = np.array([[2.0, -1.0, 0.5]], dtype=np.float32)
        with self.client(token=self.cbloss.read_token_file(
                os.path.join(self.tmpdir(), "admin"))) as admin:
            d = admin.put_dataset("py-ds", [10, 5, 1])
            self.assertEqual(d.version, 1)
        with self.client(token=COMPUTE_TOKEN) as c:
            r = c.compute_loss(logits, [1], dataset="py-ds")
            self.assertGreater(r.loss, 0.0)
            with c.stream_loss() as stream:
                r2 = stream.compute_loss(logits, [1], dataset="py-ds")
            self.assertAlmostEqual(r.loss, r2.loss, places=6)
            with self.assertRaises(self.cbloss.CblossError) as e:
                c.put_dataset("py-ds", [1, 1, 1])
            self.assertEqual(e.exception.code, grpc.StatusCode.PERMISSION_DENIED)
        with self.client() as anonymous:
            with self.assertRaises(self.cbloss.CblossError) as e:
                anonymous.compute_loss(logits, [1], dataset="py-ds")
            self.assertEqual(e.exception.code, grpc.StatusCode.UNAUTHENTICATED)
            self.assertEqual(anonymous.health(), "SERVING")

    def test_token_from_environment(self):
        os.environ["CBLOSS_TOKEN"] = COMPUTE_TOKEN
        try:
            with self.client() as c:
                self.assertEqual(len(c.get_dataset("cifar10-lt").class_counts), 10)
        finally:
            del os.environ["CBLOSS_TOKEN"]

    def test_without_client_certificate_fails(self):
        creds = self.cbloss.tls_credentials(root_ca=self.certs["ca"])
        with self.cbloss.Client(self.server.target, credentials=creds, timeout=5,
                                token=COMPUTE_TOKEN) as c:
            with self.assertRaises(self.cbloss.CblossError) as e:
                c.get_dataset("cifar10-lt")
            self.assertEqual(e.exception.code, grpc.StatusCode.UNAVAILABLE)


if __name__ == "__main__":
    unittest.main()
