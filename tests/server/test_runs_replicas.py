"""Runs on two replicas sharing one PostgreSQL store (LOSS.md section 11:
"an update acknowledged by one replica is seen by requests on every replica
within 2 seconds"). Each test starts its own PostgreSQL
(tests/store/pg_server.py) and two cbloss-server processes on it. The
measured propagation times are printed and asserted <= 2 s. Also: both
replicas accumulating at once lose nothing, a SIGKILLed replica loses none
of the other's updates, and a stalled store (a lock held on the runs table)
holds accumulating requests back instead of piling up what a crash could
lose."""

import os
import subprocess
import sys
import threading
import time
import unittest

import grpc

from server_fixture import RPC_TIMEOUT_S, ServerTestCase, pb, pb_grpc, tensor_f32
from test_runs import (add_labels, create_run, get_run, make_logits, ref_seesaw_mean,
                       seesaw_config)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "store"))
from pg_server import PG_BIN, PgServer  # noqa: E402

PROPAGATION_BOUND_S = 2.0  # LOSS.md section 11
POLL_TIMEOUT_S = 15.0  # overall bound of each wait (failures show the real time)
T = RPC_TIMEOUT_S
NOT_FOUND = grpc.StatusCode.NOT_FOUND


class RunsReplicasTest(ServerTestCase):

    def setUp(self):
        super().setUp()
        self.pg = PgServer()
        self.addCleanup(self.pg.destroy)
        self.dsn = self.pg.start()

    def start_replicas(self, n=2):
        return [self.new_server(extra_flags=["--store=" + self.dsn]).start() for _ in range(n)]

    def wait_for(self, what, predicate, since=None):
        """Polls predicate() until true; returns the seconds since `since`
        (time.monotonic(); default: now)."""
        start = time.monotonic() if since is None else since
        while True:
            if predicate():
                return time.monotonic() - start
            if time.monotonic() - start > POLL_TIMEOUT_S:
                self.fail("%s: not after %.0f s" % (what, POLL_TIMEOUT_S))
            time.sleep(0.002)

    def run_or_none(self, server, name):
        try:
            return get_run(server.stub, name)
        except grpc.RpcError as e:
            if e.code() == NOT_FOUND:
                return None
            raise

    def test_updates_on_one_replica_are_seen_on_the_other_within_2_s(self):
        a, b = self.start_replicas()
        C = 4
        times = {}
        created = time.monotonic()
        create_run(a.stub, "prop", num_classes=C)
        # Created on A: usable on B.
        times["CreateRun -> GetRun on B"] = self.wait_for(
            "run on B", lambda: self.run_or_none(b, "prop") is not None, since=created)
        z = make_logits(4, C, 3)
        resp = b.stub.ComputeLoss(pb.ComputeLossRequest(
            run="prop", logits=tensor_f32(z), labels=[0, 1, 2, 3], config=seesaw_config()),
            timeout=T)
        self.assertEqual(resp.run_version, 1)

        seen, background = [0] * C, 0
        for step, labels in enumerate(([0, 0, 0, 0, 0, 1, 4], [2, 2, 0, -100])):
            resp = a.stub.ComputeLoss(pb.ComputeLossRequest(
                run="prop", accumulate=True, logits=tensor_f32(make_logits(len(labels), C, step)),
                labels=labels, config=seesaw_config()), timeout=T)
            acked = time.monotonic()
            self.assertEqual(resp.run_version, 2 + step)
            background = add_labels(seen, background, labels, C)

            def b_has_it():
                run = get_run(b.stub, "prop")
                return (run.version == 2 + step and list(run.statistics.seen_counts) == seen
                        and run.statistics.background_seen == background)
            times["update %d -> GetRun on B" % step] = self.wait_for(
                "update %d in GetRun on B" % step, b_has_it, since=acked)

        # A SEESAW request on B uses the counts A accumulated: the loss of
        # the new counts, not of zero counts. One more update through A,
        # then poll B's loss.
        labels = [1, 1, 1, 3]
        a.stub.ComputeLoss(pb.ComputeLossRequest(
            run="prop", accumulate=True, logits=tensor_f32(make_logits(4, C, 50)),
            labels=labels, config=seesaw_config()), timeout=T)
        acked = time.monotonic()
        stale = ref_seesaw_mean(z, [0, 1, 2, 3], seen)
        background = add_labels(seen, background, labels, C)
        want = ref_seesaw_mean(z, [0, 1, 2, 3], seen)
        self.assertGreater(abs(want - stale), 1e-3)  # the update shows in the loss

        def b_loss_is_new():
            got = b.stub.ComputeLoss(pb.ComputeLossRequest(
                run="prop", logits=tensor_f32(z), labels=[0, 1, 2, 3], config=seesaw_config()),
                timeout=T)
            return got.run_version == 4 and abs(got.loss - want) <= 1e-5 * abs(want) + 1e-6
        times["update -> SEESAW on B"] = self.wait_for("SEESAW on B with A's counts",
                                                       b_loss_is_new, since=acked)
        self.assertEqual(seen, [6, 4, 2, 1])
        self.assertEqual(list(get_run(b.stub, "prop").statistics.seen_counts), seen)

        # Deleted on A: NOT_FOUND on B.
        a.stub.DeleteRun(pb.DeleteRunRequest(name="prop"), timeout=T)
        deleted = time.monotonic()
        times["DeleteRun -> NOT_FOUND on B"] = self.wait_for(
            "delete seen on B", lambda: self.run_or_none(b, "prop") is None, since=deleted)
        self.assertRpcError(NOT_FOUND, b.stub.ComputeLoss, pb.ComputeLossRequest(
            run="prop", logits=tensor_f32(z), labels=[0, 1, 2, 3], config=seesaw_config()),
            contains="run 'prop' not found")
        sys.stderr.write("run propagation times (s): %s\n" % ", ".join(
            "%s %.4f" % item for item in times.items()))
        for what, took in times.items():
            self.assertLessEqual(took, PROPAGATION_BOUND_S, what)

    def test_both_replicas_accumulating_concurrently_lose_nothing(self):
        replicas = self.start_replicas()
        C, per_thread = 6, 60
        create_run(replicas[0].stub, "both", num_classes=C)
        for s in replicas:
            self.wait_for("run everywhere", lambda s=s: self.run_or_none(s, "both") is not None)
        errors, versions = [], []
        lock = threading.Lock()
        seen, background = [0] * C, 0
        plans = []
        for k in range(4):  # two threads per replica
            plan = [[k, (k + i) % C, C if i % 7 == 0 else -100] for i in range(per_thread)]
            for labels in plan:
                background = add_labels(seen, background, labels, C)
            plans.append(plan)

        def work(server, plan, seed):
            channel = grpc.insecure_channel(server.target, options=[("grpc.enable_retries", 0)])
            stub = pb_grpc.LossServiceStub(channel)
            try:
                for i, labels in enumerate(plan):
                    try:
                        resp = stub.ComputeLoss(pb.ComputeLossRequest(
                            run="both", accumulate=True, labels=labels, config=seesaw_config(),
                            logits=tensor_f32(make_logits(3, C, seed * 1000 + i))), timeout=T)
                        with lock:
                            versions.append(resp.run_version)
                    except grpc.RpcError as e:  # any failure fails the test
                        with lock:
                            errors.append("%s: %s" % (e.code(), e.details()))
            finally:
                channel.close()

        threads = [threading.Thread(target=work, args=(replicas[k % 2], plans[k], k))
                   for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(240)
            self.assertFalse(t.is_alive())
        done = time.monotonic()
        self.assertEqual(errors, [])
        total = 4 * per_thread
        self.assertEqual(len(versions), total)
        self.assertTrue(all(2 <= v <= 1 + total for v in versions), sorted(versions)[-5:])

        def exact(server):
            run = get_run(server.stub, "both")
            return (run.version == 1 + total and list(run.statistics.seen_counts) == seen
                    and run.statistics.background_seen == background)
        for s in replicas:
            took = self.wait_for("final statistics on %s" % s.name, lambda s=s: exact(s),
                                 since=done)
            sys.stderr.write("both replicas: %d updates; %s exact %.4f s after the last ack\n"
                             % (total, s.name, took))
            self.assertLessEqual(took, PROPAGATION_BOUND_S)
        # The store has them too: a replica started now reads the same.
        late = self.start_replicas(1)[0]
        self.assertTrue(exact(late))

    def test_sigkill_of_one_replica_loses_none_of_the_others_updates(self):
        """A and B accumulate on classes of their own (one label per request:
        A class 0, B class 1); A is SIGKILLed in the middle: every update B
        acknowledged is kept, A keeps at least those acknowledged more than a
        second before the kill, and the version counts both."""
        a, b = self.start_replicas()
        create_run(a.stub, "crash", num_classes=2)
        self.wait_for("run on B", lambda: self.run_or_none(b, "crash") is not None)
        acks = {0: [], 1: []}
        stop = threading.Event()
        errors = []

        def work(server, label):
            channel = grpc.insecure_channel(server.target, options=[("grpc.enable_retries", 0)])
            stub = pb_grpc.LossServiceStub(channel)
            req = pb.ComputeLossRequest(run="crash", accumulate=True, labels=[label],
                                        config=seesaw_config(),
                                        logits=tensor_f32(make_logits(1, 2, label)))
            try:
                while not stop.is_set():
                    try:
                        stub.ComputeLoss(req, timeout=T)
                    except grpc.RpcError as e:
                        if label == 1 or not killing.is_set():
                            errors.append("%d: %s %s" % (label, e.code(), e.details()))
                        return
                    acks[label].append(time.monotonic())
            finally:
                channel.close()

        killing = threading.Event()
        threads = [threading.Thread(target=work, args=(s, k)) for k, s in enumerate((a, b))]
        for t in threads:
            t.start()
        time.sleep(2.0)
        killing.set()
        kill_time = time.monotonic()
        a.kill()
        time.sleep(0.3)
        stop.set()
        for t in threads:
            t.join(60)
            self.assertFalse(t.is_alive())
        done = time.monotonic()
        self.assertEqual(errors, [])
        a_must_have = len([at for at in acks[0] if at < kill_time - 1.0])
        self.assertGreater(a_must_have, 0)

        def settled(server):
            run = get_run(server.stub, "crash")
            seen = list(run.statistics.seen_counts)
            return seen[1] == len(acks[1]) and run.version == 1 + sum(seen)
        took = self.wait_for("B's updates, flushed", lambda: settled(b), since=done)
        self.assertLessEqual(took, PROPAGATION_BOUND_S)
        a.start()
        for s in (a, b):
            self.wait_for("%s agrees" % s.name, lambda s=s: settled(s))
        run = get_run(a.stub, "crash")
        seen = list(run.statistics.seen_counts)
        sys.stderr.write("SIGKILL of replica A: A acknowledged %d (%d more than 1 s before the "
                         "kill), kept %d; B acknowledged %d, kept %d\n"
                         % (len(acks[0]), a_must_have, seen[0], len(acks[1]), seen[1]))
        self.assertGreaterEqual(seen[0], a_must_have)
        self.assertLessEqual(seen[0], len(acks[0]) + 1)
        self.assertEqual(seen[1], len(acks[1]))
        self.assertEqual(run.version, 1 + seen[0] + seen[1])
        self.assertEqual(get_run(b.stub, "crash"), run)

    def test_a_stalled_store_holds_accumulating_requests_back(self):
        """While another session holds a lock on the runs table, commits
        stall: after the lag bound (500 ms) accumulating requests wait
        instead of piling up updates a crash could lose; requests that do not
        accumulate are still answered. Once the lock goes, everything
        acknowledged is written."""
        (a,) = self.start_replicas(1)
        create_run(a.stub, "slow", num_classes=2)
        acks, reads, errors = [], [], []
        stop = threading.Event()

        def work(accumulate, times):
            channel = grpc.insecure_channel(a.target, options=[("grpc.enable_retries", 0)])
            stub = pb_grpc.LossServiceStub(channel)
            req = pb.ComputeLossRequest(run="slow", accumulate=accumulate, labels=[0],
                                        config=seesaw_config(),
                                        logits=tensor_f32(make_logits(1, 2, 0)))
            try:
                while not stop.is_set():
                    try:
                        stub.ComputeLoss(req, timeout=T)
                    except grpc.RpcError as e:
                        errors.append("%s %s" % (e.code(), e.details()))
                        return
                    times.append(time.monotonic())
                    if not accumulate:
                        time.sleep(0.01)
            finally:
                channel.close()

        threads = [threading.Thread(target=work, args=(True, acks)),
                   threading.Thread(target=work, args=(False, reads))]
        for t in threads:
            t.start()
        psql = subprocess.Popen([os.path.join(PG_BIN, "psql"), "-X", "-q", "-v",
                                 "ON_ERROR_STOP=1", self.dsn],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

        def close_psql():
            psql.kill()
            psql.communicate()
        self.addCleanup(close_psql)
        try:
            time.sleep(0.5)
            psql.stdin.write("BEGIN;\nLOCK TABLE cbloss_runs IN ACCESS EXCLUSIVE MODE;\n"
                             "\\echo locked\n")
            psql.stdin.flush()
            self.assertEqual(psql.stdout.readline().strip(), "locked")
            locked = time.monotonic()
            time.sleep(3.0)
            psql.stdin.write("COMMIT;\n\\q\n")
            psql.stdin.flush()
            unlocked = time.monotonic()
            self.assertEqual(psql.wait(30), 0)
            time.sleep(1.0)
        finally:
            stop.set()
            for t in threads:
                t.join(60)
        self.assertEqual(errors, [])
        held = [at for at in acks if locked + 1.2 < at < unlocked]
        answered = [at for at in reads if locked + 1.2 < at < unlocked]
        sys.stderr.write("stalled store: %d updates acknowledged before the lock, %d in its "
                         "first 1.2 s, %d later while it lasted, %d after; %d reads while "
                         "held\n" % (len([at for at in acks if at < locked]),
                                     len([at for at in acks if locked <= at <= locked + 1.2]),
                                     len(held), len([at for at in acks if at >= unlocked]),
                                     len(answered)))
        self.assertEqual(held, [], "accumulating requests were acknowledged while the "
                         "store had been stalled for more than 1.2 s")
        self.assertGreater(len(answered), 0)
        self.assertGreater(len([at for at in acks if at > unlocked]), 0)
        self.wait_for("every update applied",
                      lambda: get_run(a.stub, "slow").version == 1 + len(acks))
        a.stop()
        a.start()
        run = get_run(a.stub, "slow")
        self.assertEqual((run.version, list(run.statistics.seen_counts)),
                         (1 + len(acks), [len(acks), 0]))

    def test_run_on_a_dataset_across_replicas(self):
        a, b = self.start_replicas()
        a.stub.PutDataset(pb.PutDatasetRequest(dataset=pb.Dataset(
            name="ds", class_counts=[30, 3, 1])), timeout=T)
        self.wait_for("dataset on B", lambda: self._has_dataset(b, "ds"))
        create_run(a.stub, "on-ds", dataset="ds")
        self.wait_for("run on B", lambda: self.run_or_none(b, "on-ds") is not None)
        # B refuses to delete the dataset the run uses, and to change its classes.
        self.assertRpcError(grpc.StatusCode.FAILED_PRECONDITION, b.stub.DeleteDataset,
                            pb.DeleteDatasetRequest(name="ds"),
                            contains="dataset 'ds' is used by run 'on-ds'; delete its runs first")
        # Accumulating on B with the dataset's static counts (SOFTMAX).
        z = make_logits(3, 3, 8)
        resp = b.stub.ComputeLoss(pb.ComputeLossRequest(
            run="on-ds", accumulate=True, logits=tensor_f32(z), labels=[0, 1, 2]), timeout=T)
        inline = b.stub.ComputeLoss(pb.ComputeLossRequest(
            class_counts=pb.ClassCounts(counts=[30, 3, 1]), logits=tensor_f32(z),
            labels=[0, 1, 2]), timeout=T)
        self.assertEqual(resp.loss, inline.loss)
        self.assertEqual(resp.run_version, 2)
        acked = time.monotonic()
        took = self.wait_for("B's update on A", lambda: get_run(a.stub, "on-ds").version == 2,
                             since=acked)
        self.assertLessEqual(took, PROPAGATION_BOUND_S)
        self.assertEqual(list(get_run(a.stub, "on-ds").statistics.seen_counts), [1, 1, 1])

    def _has_dataset(self, server, name):
        try:
            server.stub.GetDataset(pb.GetDatasetRequest(name=name), timeout=T)
            return True
        except grpc.RpcError as e:
            if e.code() == NOT_FOUND:
                return False
            raise


if __name__ == "__main__":
    unittest.main()
