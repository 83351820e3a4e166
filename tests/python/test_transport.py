"""Client transport options against an in-process stand-in LossService
(grpcio's own server): per-call metadata, TLS channel credentials, status
mapping of StreamLoss error responses. No cbloss-server needed."""

from concurrent import futures
import os
import shutil
import subprocess
import tempfile
import unittest

import grpc

import cbloss
from cbloss._proto import cbloss_pb2 as pb
from cbloss._proto import cbloss_pb2_grpc as pb_grpc


class RecordingService(pb_grpc.LossServiceServicer):
    """Answers GetDataset with a fixed dataset and records call metadata;
    StreamLoss answers every request with an error response."""

    def __init__(self):
        self.metadata = []

    def GetDataset(self, request, context):
        self.metadata.append(dict(context.invocation_metadata()))
        if request.name == "missing":
            context.abort(grpc.StatusCode.NOT_FOUND, "dataset 'missing' not found")
        return pb.Dataset(name=request.name, class_counts=[3, 1], version=4)

    def ComputeLoss(self, request, context):
        # Answers with the run's version after the request, as a server would.
        self.metadata.append(dict(context.invocation_metadata()))
        return pb.ComputeLossResponse(loss=0.5, run_version=7 if request.accumulate else 6)

    def StreamLoss(self, request_iterator, context):
        self.metadata.append(dict(context.invocation_metadata()))
        for _ in request_iterator:
            yield pb.ComputeLossResponse(error_code=grpc.StatusCode.FAILED_PRECONDITION.value[0],
                                         error_message="every count is 0")


def start(service, credentials=None):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pb_grpc.add_LossServiceServicer_to_server(service, server)
    if credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    return server, port


class TransportTest(unittest.TestCase):

    def setUp(self):
        self.service = RecordingService()
        self.servers = []

    def tearDown(self):
        for server in self.servers:
            server.stop(grace=None).wait(5)

    def test_metadata_goes_with_every_call(self):
        server, port = start(self.service)
        self.servers.append(server)
        with cbloss.Client("127.0.0.1:%d" % port, timeout=5,
                           metadata=[("authorization", "Bearer s3cret")]) as client:
            d = client.get_dataset("ok")
            self.assertEqual((d.name, d.class_counts, d.version), ("ok", [3, 1], 4))
            with self.assertRaises(cbloss.CblossError) as caught:
                client.get_dataset("missing")
            self.assertEqual(caught.exception.code, grpc.StatusCode.NOT_FOUND)
            self.assertEqual(caught.exception.details, "dataset 'missing' not found")
            with client.stream_loss() as stream:
                with self.assertRaises(cbloss.CblossError) as caught:
                    stream.compute_loss([[0.0, 1.0]], [0], class_counts=[0, 0])
                self.assertEqual(caught.exception.code, grpc.StatusCode.FAILED_PRECONDITION)
                self.assertFalse(stream.broken)
            # An accumulating call (its own channel, without retries) too.
            r = client.compute_loss([[0.0, 1.0]], [0], run="r", accumulate=True)
            self.assertEqual(r.run_version, 7)
        self.assertEqual([m.get("authorization") for m in self.service.metadata],
                         ["Bearer s3cret"] * 4)

    def test_tls_channel_credentials(self):
        tmp = tempfile.mkdtemp(prefix="cbloss-tls-")
        self.addCleanup(shutil.rmtree, tmp, True)
        key, cert = os.path.join(tmp, "key.pem"), os.path.join(tmp, "cert.pem")
        try:
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                            "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=localhost",
                            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                           check=True, capture_output=True, timeout=60)
        except (OSError, subprocess.SubprocessError) as e:
            self.fail("openssl cannot make a test certificate: %s" % e)
        with open(key, "rb") as f:
            key_pem = f.read()
        with open(cert, "rb") as f:
            cert_pem = f.read()
        server, port = start(self.service, grpc.ssl_server_credentials([(key_pem, cert_pem)]))
        self.servers.append(server)
        target = "localhost:%d" % port
        with cbloss.Client(target, timeout=5,
                           credentials=grpc.ssl_channel_credentials(cert_pem)) as client:
            self.assertEqual(client.get_dataset("tls").name, "tls")
            # The channel of accumulating calls uses the same credentials.
            r = client.compute_loss([[0.0, 1.0]], [0], run="r", accumulate=True)
            self.assertEqual(r.run_version, 7)
        with cbloss.Client(target, timeout=5) as plaintext:  # no TLS: refused
            with self.assertRaises(cbloss.CblossError):
                plaintext.get_dataset("tls")


if __name__ == "__main__":
    unittest.main()
