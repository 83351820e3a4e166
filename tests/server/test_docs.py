"""Replays the grpcurl session of docs/API.md against a real server.

Each ```sh block holding `grpcurl ... -d '<json>' ... <Service>/<Method>` is
sent through the protobuf JSON mapping (as grpcurl does), and the fenced
block after it is the documented answer: JSON, compared field by field
(floats to 1e-6 relative; times are not compared), or `Code: X` for an error.
So the guide cannot drift from what the service does."""

import json
import os
import re
import unittest

import grpc
from google.protobuf import json_format

from server_fixture import ServerTestCase, health_check, pb

DOC = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "API.md")
GRPCURL = re.compile(r"grpcurl -plaintext -d '(?P<body>.*)' \S+ (?P<service>[\w.]+)/(?P<method>\w+)")
ERROR_CODE = re.compile(r"Code: (\w+)")
IGNORED_KEYS = {"createTime", "updateTime"}
# grpcurl's spelling of status codes.
CODES = {"InvalidArgument": grpc.StatusCode.INVALID_ARGUMENT,
         "NotFound": grpc.StatusCode.NOT_FOUND,
         "FailedPrecondition": grpc.StatusCode.FAILED_PRECONDITION,
         "Aborted": grpc.StatusCode.ABORTED}
REQUESTS = {"PutDataset": pb.PutDatasetRequest, "GetDataset": pb.GetDatasetRequest,
            "ListDatasets": pb.ListDatasetsRequest,
            "DeleteDataset": pb.DeleteDatasetRequest,
            "AddClassCounts": pb.AddClassCountsRequest,
            "GetClassWeights": pb.GetClassWeightsRequest,
            "ComputeLoss": pb.ComputeLossRequest}


def session_steps():
    """(service, method, request json, answer kind, answer text) in order."""
    text = open(DOC).read()
    blocks = re.findall(r"```(\w+)\n(.*?)```", text, re.S)
    steps = []
    for i, (kind, body) in enumerate(blocks):
        m = GRPCURL.search(body) if kind == "sh" else None
        if m and i + 1 < len(blocks):
            steps.append((m["service"], m["method"], m["body"],) + blocks[i + 1])
    return steps


class DocsSessionTest(ServerTestCase):

    def assertMatches(self, got, want, path="$"):
        if isinstance(want, dict):
            for key, value in want.items():
                if key in IGNORED_KEYS:
                    continue
                self.assertIn(key, got, "%s.%s missing from the answer" % (path, key))
                self.assertMatches(got[key], value, "%s.%s" % (path, key))
        elif isinstance(want, list):
            self.assertEqual(len(got), len(want), path)
            for i, (g, w) in enumerate(zip(got, want)):
                self.assertMatches(g, w, "%s[%d]" % (path, i))
        elif isinstance(want, float):
            self.assertAlmostEqual(got, want, delta=1e-6 * max(1.0, abs(want)), msg=path)
        else:
            self.assertEqual(got, want, path)

    def test_api_guide_session(self):
        server = self.start_server()
        stub = server.stub
        steps = session_steps()
        self.assertGreaterEqual(len(steps), 7, "the session in docs/API.md was not found")
        for service, method, body, kind, answer in steps:
            with self.subTest(method=method, body=body[:60]):
                if service == "grpc.health.v1.Health":
                    status = health_check(server.channel, json.loads(body)["service"])
                    self.assertEqual(status, 1)  # SERVING
                    self.assertEqual(json.loads(answer), {"status": "SERVING"})
                    continue
                request = json_format.Parse(body, REQUESTS[method]())
                if kind == "text":
                    code = CODES[ERROR_CODE.search(answer)[1]]
                    with self.assertRaises(grpc.RpcError) as caught:
                        getattr(stub, method)(request, timeout=10)
                    self.assertEqual(caught.exception.code(), code)
                    message = re.search(r"Message: (.*)", answer)[1].strip()
                    self.assertEqual(caught.exception.details(), message)
                    continue
                response = getattr(stub, method)(request, timeout=10)
                got = json.loads(json_format.MessageToJson(response))
                self.assertMatches(got, json.loads(answer))

    def test_list_shows_the_documented_services(self):
        # The first block of the session: reflection lists these services.
        from server_fixture import reflection_list_services
        server = self.start_server()
        services, _ = reflection_list_services(server.channel)
        for name in ("cbloss.v1.LossService", "grpc.health.v1.Health"):
            self.assertIn(name, services)


if __name__ == "__main__":
    unittest.main()
