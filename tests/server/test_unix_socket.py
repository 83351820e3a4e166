"""cbloss-server on Unix domain sockets and several --listen addresses
(API.md section 5.3): every RPC over `unix:`, the socket file's mode, its
removal on SIGTERM, a stale file from a SIGKILLed server, a live one
refused, unix: and TCP together with --port_file, and the start-up line.

Real cbloss-server processes, bounded in time (server_fixture.py)."""

import os
import stat
import time
import unittest

import grpc
import numpy as np

from server_fixture import (HEALTH_SERVING, RPC_TIMEOUT_S, STARTUP_TIMEOUT_S, ServerTestCase,
                            assert_close_gradient, assert_close_loss, decode_tensor, health_check,
                            pb, pb_grpc, ref_class_weights, ref_loss, reflection_list_services,
                            tensor_f32)
from unix_support import UnixServer, serving_ports, unix_channel


class UnixSocketTestCase(ServerTestCase):
    def new_unix_server(self, **kwargs):
        server = self.new_server(server_class=UnixServer, **kwargs)
        self.addCleanup(server.close_socket_dir)
        return server

    def wait_exit(self, server, timeout=STARTUP_TIMEOUT_S):
        code = server.wait_exit(timeout)
        self.assertIsNotNone(code, "cbloss-server still runs after %.0f s" % timeout)
        return code


class EveryRpcOverUnixTest(UnixSocketTestCase):
    def test_every_rpc_is_served_over_a_unix_socket_alone(self):
        server = self.new_unix_server(tcp=False).start()
        # No TCP address: the port file says 0.
        self.assertEqual(server.port, 0)
        stub = server.stub
        t = RPC_TIMEOUT_S

        counts = [50, 10, 2]
        dataset = stub.PutDataset(pb.PutDatasetRequest(
            dataset=pb.Dataset(name="unix-ds", class_counts=counts)), timeout=t)
        self.assertEqual(dataset.version, 1)
        self.assertEqual(list(stub.GetDataset(pb.GetDatasetRequest(name="unix-ds"),
                                              timeout=t).class_counts), counts)
        names = [d.name for d in stub.ListDatasets(pb.ListDatasetsRequest(), timeout=t).datasets]
        self.assertEqual(names, ["unix-ds"])
        added = stub.AddClassCounts(pb.AddClassCountsRequest(name="unix-ds", labels=[2, 2]),
                                    timeout=t)
        counts = [50, 10, 4]
        self.assertEqual(list(added.class_counts), counts)

        weights = stub.GetClassWeights(pb.GetClassWeightsRequest(dataset="unix-ds"), timeout=t)
        np.testing.assert_allclose(weights.weights, ref_class_weights(counts), rtol=1e-6)

        rng = np.random.RandomState(7)
        logits = rng.randn(6, 3).astype(np.float32)
        labels = [0, 1, 2, 2, 1, 0]
        request = pb.ComputeLossRequest(dataset="unix-ds", logits=tensor_f32(logits),
                                        labels=labels, want_gradient=True)
        response = stub.ComputeLoss(request, timeout=t)
        loss, _, gradient, _, _ = ref_loss(logits, labels, counts)
        assert_close_loss(self, response.loss, loss)
        assert_close_gradient(self, decode_tensor(response.gradient), gradient)

        streamed = list(stub.StreamLoss(iter([request, request]), timeout=t))
        self.assertEqual(len(streamed), 2)
        for r in streamed:
            self.assertEqual(r.error_code, 0, r.error_message)
            self.assertEqual(r.loss, response.loss)

        run = stub.CreateRun(pb.CreateRunRequest(run=pb.Run(name="unix-run", dataset="unix-ds")),
                             timeout=t)
        self.assertEqual(run.version, 1)
        self.assertEqual(stub.GetRun(pb.GetRunRequest(name="unix-run"), timeout=t).dataset,
                         "unix-ds")
        self.assertEqual([r.name for r in stub.ListRuns(pb.ListRunsRequest(), timeout=t).runs],
                         ["unix-run"])
        stub.DeleteRun(pb.DeleteRunRequest(name="unix-run"), timeout=t)
        stub.DeleteDataset(pb.DeleteDatasetRequest(name="unix-ds"), timeout=t)
        self.assertRpcError(grpc.StatusCode.NOT_FOUND, stub.GetDataset,
                            pb.GetDatasetRequest(name="unix-ds"))

        # The shared-memory RPCs are served (and off on this server).
        off = "shared memory is off on this server (start it with --allow_shared_memory)"
        self.assertRpcError(grpc.StatusCode.FAILED_PRECONDITION, stub.ListSharedMemory,
                            pb.ListSharedMemoryRequest(), contains=off)
        self.assertRpcError(grpc.StatusCode.FAILED_PRECONDITION, stub.RegisterSharedMemory,
                            pb.RegisterSharedMemoryRequest(name="r", key="/cbloss-x",
                                                           byte_size=4), contains=off)
        self.assertRpcError(grpc.StatusCode.FAILED_PRECONDITION, stub.UnregisterSharedMemory,
                            pb.UnregisterSharedMemoryRequest(name="r"), contains=off)

        # Health and reflection on the same listener.
        self.assertEqual(health_check(server.channel, "cbloss.v1.LossService"), HEALTH_SERVING)
        services, _ = reflection_list_services(server.channel)
        self.assertIn("cbloss.v1.LossService", services)
        self.assertIn("grpc.health.v1.Health", services)

    def test_a_relative_unix_path_is_relative_to_the_working_directory(self):
        server = self.new_unix_server(listen=["--listen=unix:rel.sock"], tcp=False)
        server.socket_path = os.path.join(server.workdir, "rel.sock")
        if len(server.socket_path) > 107:
            self.skipTest("temporary folder too deep for a socket path")
        server.start()
        self.assertTrue(stat.S_ISSOCK(os.stat(server.socket_path).st_mode))
        self.assertEqual(health_check(server.channel), HEALTH_SERVING)


class SocketFileTest(UnixSocketTestCase):
    def test_default_mode_is_0660(self):
        server = self.new_unix_server().start()
        st = os.stat(server.socket_path)
        self.assertTrue(stat.S_ISSOCK(st.st_mode))
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o660)

    def test_unix_socket_mode_sets_the_mode(self):
        server = self.new_unix_server(extra_flags=["--unix_socket_mode=0600"]).start()
        self.assertEqual(stat.S_IMODE(os.stat(server.socket_path).st_mode), 0o600)
        server2 = self.new_unix_server(extra_flags=["--unix_socket_mode=666"]).start()
        self.assertEqual(stat.S_IMODE(os.stat(server2.socket_path).st_mode), 0o666)

    def test_a_bad_mode_is_a_flag_error(self):
        for mode in ("0999", "rw", "06600", "66"):
            server = self.new_unix_server(extra_flags=["--unix_socket_mode=" + mode])
            server.launch()
            self.assertEqual(self.wait_exit(server), 2, mode)
            self.assertIn("--unix_socket_mode", server.stderr())
            self.assertFalse(os.path.exists(server.socket_path), mode)

    def test_removed_on_sigterm(self):
        server = self.new_unix_server().start()
        self.assertTrue(os.path.exists(server.socket_path))
        self.assertEqual(server.stop(), 0)
        self.assertFalse(os.path.exists(server.socket_path))

    def test_a_stale_socket_file_does_not_prevent_a_restart(self):
        server = self.new_unix_server().start()
        server.kill()
        # SIGKILL leaves the file; nothing accepts on it.
        self.assertTrue(stat.S_ISSOCK(os.lstat(server.socket_path).st_mode))
        server.start()
        self.assertIn("removing the stale socket file", server.stderr())
        self.assertEqual(health_check(server.channel), HEALTH_SERVING)
        response = server.stub.GetClassWeights(
            pb.GetClassWeightsRequest(class_counts=pb.ClassCounts(counts=[3, 1])),
            timeout=RPC_TIMEOUT_S)
        np.testing.assert_allclose(response.weights, ref_class_weights([3, 1]), rtol=1e-6)

    def test_a_live_socket_is_refused(self):
        first = self.new_unix_server().start()
        second = self.new_unix_server(socket_path=first.socket_path)
        second.launch()
        self.assertEqual(self.wait_exit(second), 1)
        self.assertIn("cannot listen on unix:%s: address in use" % first.socket_path,
                      second.stderr())
        # The first server still serves on its file.
        self.assertTrue(os.path.exists(first.socket_path))
        channel = unix_channel(first.socket_path)
        self.addCleanup(channel.close)
        self.assertEqual(health_check(channel), HEALTH_SERVING)

    def test_a_file_that_is_not_a_socket_is_refused(self):
        server = self.new_unix_server()
        with open(server.socket_path, "w") as f:
            f.write("not a socket\n")
        server.launch()
        self.assertEqual(self.wait_exit(server), 1)
        self.assertIn("a file that is not a socket is there", server.stderr())
        with open(server.socket_path) as f:
            self.assertEqual(f.read(), "not a socket\n")


class SeveralListenersTest(UnixSocketTestCase):
    def check_both(self, server):
        """The port file holds the first TCP port; unix: and TCP both serve."""
        self.assertGreater(server.port, 0)
        ports, _ = serving_ports(server.stderr())
        self.assertEqual(ports[0], server.port)
        self.assertEqual(health_check(server.channel), HEALTH_SERVING)
        tcp = server.tcp_channel()
        self.addCleanup(tcp.close)
        self.assertEqual(health_check(tcp), HEALTH_SERVING)
        request = pb.GetClassWeightsRequest(class_counts=pb.ClassCounts(counts=[9, 3, 1]))
        over_unix = server.stub.GetClassWeights(request, timeout=RPC_TIMEOUT_S)
        over_tcp = pb_grpc.LossServiceStub(tcp).GetClassWeights(request, timeout=RPC_TIMEOUT_S)
        self.assertEqual(list(over_unix.weights), list(over_tcp.weights))

    def test_repeated_listen_unix_and_tcp(self):
        server = self.new_unix_server(tcp=True).start()
        self.check_both(server)

    def test_comma_separated_listen(self):
        server = self.new_unix_server()
        server.listen = ["--listen=unix:%s,127.0.0.1:0" % server.socket_path]
        server.start()
        self.check_both(server)

    def test_listen_with_its_value_in_the_next_argument(self):
        server = self.new_unix_server()
        server.listen = ["--listen", "127.0.0.1:0", "-listen", "unix:" + server.socket_path]
        server.start()
        self.check_both(server)
        _, addresses = serving_ports(server.stderr())
        self.assertIn("unix:" + server.socket_path, addresses)

    def test_two_tcp_listeners_and_the_start_up_line(self):
        server = self.new_unix_server()
        server.listen = ["--listen=127.0.0.1:0", "--listen=unix:" + server.socket_path,
                         "--listen=127.0.0.1:0"]
        server.start()
        ports, addresses = serving_ports(server.stderr())
        self.assertEqual(len(ports), 2)
        self.assertEqual(ports[0], server.port)
        self.assertNotEqual(ports[0], ports[1])
        # Every address is on the start-up line.
        self.assertIn("unix:" + server.socket_path, addresses)
        self.assertEqual(addresses.count("127.0.0.1:0 (port "), 2)
        for port in ports:
            channel = grpc.insecure_channel("127.0.0.1:%d" % port)
            self.addCleanup(channel.close)
            self.assertEqual(health_check(channel), HEALTH_SERVING)

    def test_the_tcp_address_that_fails_is_named(self):
        server = self.new_unix_server()
        server.listen = ["--listen=unix:" + server.socket_path, "--listen=127.0.0.1:0",
                         "--listen=192.0.2.1:0"]  # TEST-NET-1: not this host
        server.launch()
        self.assertEqual(self.wait_exit(server), 1)
        self.assertIn("cannot listen on 192.0.2.1:0", server.stderr())
        # The socket file it had bound is gone with it.
        self.assertFalse(os.path.exists(server.socket_path))

    def test_unix_sockets_take_tokens_like_tcp(self):
        token_file = os.path.join(self.tmpdir(), "compute.token")
        with open(token_file, "w") as f:
            f.write("unix-compute-token\n")
        server = self.new_unix_server(extra_flags=["--compute_token_file=" + token_file])
        server.start()
        request = pb.GetClassWeightsRequest(class_counts=pb.ClassCounts(counts=[2, 1]))
        self.assertRpcError(grpc.StatusCode.UNAUTHENTICATED, server.stub.GetClassWeights,
                            request)
        self.assertRpcError(grpc.StatusCode.UNAUTHENTICATED, server.stub.GetClassWeights,
                            request, metadata=[("authorization", "Bearer wrong")])
        ok = server.stub.GetClassWeights(
            request, metadata=[("authorization", "Bearer unix-compute-token")],
            timeout=RPC_TIMEOUT_S)
        np.testing.assert_allclose(ok.weights, ref_class_weights([2, 1]), rtol=1e-6)


if __name__ == "__main__":
    unittest.main()
