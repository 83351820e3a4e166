"""Crash consistency of the dataset store through the real server:
SIGKILL at random moments during writes, 20 times, and every acknowledged
write is there after each restart; an unwritable data directory is a clear
error at start; a full disk (RLIMIT_FSIZE) makes writes UNAVAILABLE while
the server keeps serving, and loses nothing acknowledged."""

import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
import unittest

import grpc

from server_fixture import (HEALTH_SERVING, RPC_TIMEOUT_S, ServerTestCase, health_check, pb)

KILLS = 20
T = RPC_TIMEOUT_S


class Writer(threading.Thread):
    """AddClassCounts with one label per call (so sum(counts) - base equals
    version - 1) and dataset creations, recording what was acknowledged."""

    def __init__(self, stub, tag):
        super().__init__(daemon=True)
        self.stub = stub
        self.tag = tag
        self.acked_version = 0
        self.created = []
        self.failed_before_kill = []
        self.killing = threading.Event()

    def run(self):
        i = 0
        while True:
            try:
                if i % 4 == 3:
                    name = "%s-%05d" % (self.tag, i)
                    self.stub.PutDataset(pb.PutDatasetRequest(
                        dataset=pb.Dataset(name=name, class_counts=[i, 1]), expected_version=0),
                        timeout=T)
                    self.created.append(name)
                else:
                    got = self.stub.AddClassCounts(
                        pb.AddClassCountsRequest(name="counted", labels=[i % 3]), timeout=T)
                    self.acked_version = max(self.acked_version, got.version)
            except grpc.RpcError as e:
                if not self.killing.is_set():
                    self.failed_before_kill.append("%s %s" % (e.code(), e.details()))
                return
            i += 1


class CrashTest(ServerTestCase):

    def test_twenty_sigkills_during_writes_lose_no_acknowledged_write(self):
        server = self.start_server()
        server.stub.PutDataset(pb.PutDatasetRequest(
            dataset=pb.Dataset(name="counted", class_counts=[0, 0, 0])), timeout=T)
        rng = random.Random(20)
        created, max_acked = [], 1
        for kill in range(KILLS):
            writers = [Writer(server.stub, "k%02d-w%d" % (kill, w)) for w in range(2)]
            for w in writers:
                w.start()
            time.sleep(rng.uniform(0.05, 0.4))
            for w in writers:
                w.killing.set()
            server.kill()
            for w in writers:
                w.join(30)
                self.assertFalse(w.is_alive())
                self.assertEqual(w.failed_before_kill, [])
                created += w.created
                max_acked = max(max_acked, w.acked_version)

            server.start()
            got = server.stub.GetDataset(pb.GetDatasetRequest(name="counted"), timeout=T)
            self.assertGreaterEqual(got.version, max_acked, "kill %d lost an acknowledged add" % kill)
            # Each add is one sample: the counts and the version agree (no torn write).
            self.assertEqual(sum(got.class_counts), got.version - 1)
            # At most one unacknowledged add per writer may have landed.
            self.assertLessEqual(got.version, max_acked + len(writers))
            max_acked = got.version
            for name in created:
                d = server.stub.GetDataset(pb.GetDatasetRequest(name=name), timeout=T)
                self.assertEqual(d.version, 1)
        print("crash: %d SIGKILLs survived; %d datasets created and %d adds acknowledged"
              % (KILLS, len(created), max_acked - 1), file=sys.stderr)

    def test_unwritable_data_dir_is_a_clear_error_at_start(self):
        server = self.new_server()
        os.makedirs(server.data_dir)
        if os.geteuid() == 0:
            # Root writes through mode bits: a read-only tmpfs on the data
            # directory is unwritable for root too (EROFS).
            subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k,mode=0755",
                            "cbloss-test-ro", server.data_dir], check=True)
            self.addCleanup(subprocess.run, ["umount", server.data_dir], check=True)
        else:
            os.chmod(server.data_dir, 0o555)  # EACCES for its owner
            self.addCleanup(os.chmod, server.data_dir, 0o755)
        self.assertFalse(os.access(server.data_dir, os.W_OK))
        server.launch()
        code = server.wait_exit(20)
        self.assertNotEqual(code, 0)
        self.assertIn("data_dir", server.stderr())
        self.assertIn("not writable", server.stderr())

    def test_full_disk_makes_writes_unavailable_and_loses_nothing(self):
        limit = 512 * 1024  # bytes any file of the server may grow to

        def small_disk():
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of death
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

        server = self.new_server(preexec_fn=small_disk)
        server.start()
        big_names = ["n%04d-%s" % (j, "x" * 200) for j in range(100)]
        acked, refused = [], None
        for i in range(400):
            name = "full-%04d" % i
            try:
                server.stub.PutDataset(pb.PutDatasetRequest(
                    dataset=pb.Dataset(name=name, class_counts=[1] * 100, class_names=big_names)),
                    timeout=T)
                acked.append(name)
            except grpc.RpcError as e:
                refused = e
                break
        self.assertIsNotNone(refused, "the 512 KiB file limit was never reached")
        self.assertEqual(refused.code(), grpc.StatusCode.UNAVAILABLE, refused.details())
        self.assertGreater(len(acked), 0)
        # Still serving reads and computes.
        self.assertEqual(health_check(server.channel, ""), HEALTH_SERVING)
        self.assertEqual(server.stub.GetDataset(pb.GetDatasetRequest(name=acked[0]),
                                                timeout=T).name, acked[0])
        # With room again, every acknowledged write is there and writes work.
        server.stop()
        server.preexec_fn = None
        server.start()
        for name in acked:
            self.assertEqual(server.stub.GetDataset(pb.GetDatasetRequest(name=name),
                                                    timeout=T).name, name)
        server.stub.PutDataset(pb.PutDatasetRequest(
            dataset=pb.Dataset(name="after", class_counts=[1])), timeout=T)
        print("full disk: %d writes acknowledged before UNAVAILABLE: %s"
              % (len(acked), refused.details()), file=sys.stderr)


if __name__ == "__main__":
    unittest.main()
