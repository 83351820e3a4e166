"""Runs under load (LOSS.md section 11, "Atomicity" and "Durability"):
many concurrent callers on one run lose nothing; a graceful stop (SIGTERM)
in the middle of the load keeps every acknowledged update; SIGKILLs in the
middle of the load keep exactly the first `version - 1` updates, in order,
never part of one, and every update acknowledged more than a second before
the kill. Each caller has a channel of its own; each update is identifiable
by its labels (and, for EQL_V2, by P and Q, against a float64 reference of
LOSS.md section 10)."""

import random
import sys
import threading
import time
import unittest

import grpc
import numpy as np

from server_fixture import RPC_TIMEOUT_S, ServerTestCase, pb, pb_grpc, tensor_f32
from test_runs import (add_labels, create_run, eqlv2_step, get_run, make_logits,
                       seesaw_config)

T = RPC_TIMEOUT_S
CRASH_LOSS_BOUND_S = 1.0  # LOSS.md section 11: at most the last second


class Caller(threading.Thread):
    """Sends requests(i) for i = start, start + 1, ... on a channel of its
    own, one at a time, until `count` were acknowledged or a call fails;
    records (i, run_version, ack time) of every acknowledged one."""

    def __init__(self, target, requests, start=0, count=None):
        super().__init__(daemon=True)
        self.target = target
        self.requests = requests
        self.start_index = start
        self.count = count
        self.acks = []  # (index, run_version, time.monotonic() of the answer)
        self.error = None  # (index, code, details) of the failed call
        self.stopping = threading.Event()  # set before the server is stopped
        self.error_before_stop = False

    def run(self):
        channel = grpc.insecure_channel(self.target, options=[("grpc.enable_retries", 0)])
        stub = pb_grpc.LossServiceStub(channel)
        i = self.start_index
        try:
            while self.count is None or len(self.acks) < self.count:
                try:
                    resp = stub.ComputeLoss(self.requests(i), timeout=T)
                except grpc.RpcError as e:
                    self.error = (i, e.code(), e.details())
                    self.error_before_stop = not self.stopping.is_set()
                    return
                self.acks.append((i, resp.run_version, time.monotonic()))
                i += 1
        finally:
            channel.close()

    @property
    def acked(self):
        return len(self.acks)

    def unexpected_error(self):
        """The error, if it came before the server was stopped."""
        return self.error if self.error_before_stop else None


class RunsDurabilityTest(ServerTestCase):

    def test_sixteen_concurrent_callers_lose_nothing(self):
        server = self.start_server()
        C, callers, per_caller = 16, 16, 200
        create_run(server.stub, "busy", num_classes=C)
        requests = {}
        seen, background = [0] * C, 0
        for k in range(callers):
            for i in range(per_caller):
                labels = [k, (k + i) % C, -100] + ([C] if i % 10 == 0 else [])
                requests[k, i] = pb.ComputeLossRequest(
                    run="busy", accumulate=True, config=seesaw_config(), labels=labels,
                    logits=tensor_f32(make_logits(len(labels), C, k * 1000 + i)))
                background = add_labels(seen, background, labels, C)
        threads = [Caller(server.target, lambda i, k=k: requests[k, i], count=per_caller)
                   for k in range(callers)]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(240)
            self.assertFalse(t.is_alive(), "a caller is still running after 240 s")
        took = time.monotonic() - started
        for t in threads:
            self.assertIsNone(t.error)
            self.assertEqual(t.acked, per_caller)
        total = callers * per_caller
        sys.stderr.write("%d accumulating requests from %d callers in %.2f s\n"
                         % (total, callers, took))
        # Each request's run_version is the version its own update made:
        # with one server (SQLite) every one of 2 .. 1 + total exactly once.
        versions = sorted(v for t in threads for (_, v, _) in t.acks)
        self.assertEqual(versions, list(range(2, 2 + total)))
        # And each caller's versions increase (its requests are sequential).
        for t in threads:
            own = [v for (_, v, _) in t.acks]
            self.assertEqual(own, sorted(own))
        run = get_run(server.stub, "busy")
        self.assertEqual(run.version, 1 + total)
        self.assertEqual(list(run.statistics.seen_counts), seen)
        self.assertEqual(run.statistics.background_seen, background)
        self.assertEqual(sum(seen), 2 * total)
        # Durable across a graceful restart.
        self.assertEqual(server.stop(), 0)
        server.start()
        again = get_run(server.stub, "busy")
        self.assertEqual(again.version, 1 + total)
        self.assertEqual(again.statistics, run.statistics)

    def test_sigterm_under_load_keeps_every_acknowledged_update(self):
        server = self.start_server()
        C = 8
        create_run(server.stub, "term", num_classes=C)
        # Caller k sends one label k per request: seen_counts[k] is the
        # number of its updates applied.
        logits = [make_logits(1, C, k) for k in range(C)]
        threads = [Caller(server.target, lambda i, k=k: pb.ComputeLossRequest(
            run="term", accumulate=True, config=seesaw_config(), labels=[k],
            logits=tensor_f32(logits[k]))) for k in range(C)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while min(t.acked for t in threads) < 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(random.Random(3).uniform(0.05, 0.3))
        for t in threads:
            t.stopping.set()
        self.assertEqual(server.stop(), 0)
        for t in threads:
            t.join(60)
            self.assertFalse(t.is_alive())
            self.assertIsNone(t.unexpected_error())
        server.start()
        run = get_run(server.stub, "term")
        stored = list(run.statistics.seen_counts)
        acked = [t.acked for t in threads]
        in_flight = [1 if t.error is not None else 0 for t in threads]
        sys.stderr.write("SIGTERM under load: acknowledged %s, stored %s\n" % (acked, stored))
        self.assertGreaterEqual(min(acked), 20)
        for k in range(C):
            self.assertLessEqual(acked[k], stored[k], "caller %d lost an update" % k)
            self.assertLessEqual(stored[k] - acked[k], in_flight[k],
                                 "caller %d: more stored than sent" % k)
        self.assertEqual(run.version, 1 + sum(stored))
        self.assertEqual(run.statistics.background_seen, 0)
        # The last acknowledged version of each caller is within the stored one.
        self.assertLessEqual(max(t.acks[-1][1] for t in threads), run.version)

    def test_sigkills_keep_a_prefix_of_one_callers_updates(self):
        """One caller; request i has labels [i % C, (3 i + 1) % (C + 1), ignored]
        (C + 1: background) and logits of seed i, as EQL_V2 with accumulate;
        after each SIGKILL the run is exactly the first version - 1 requests:
        seen counts, background count, P and Q of the float64 reference."""
        server = self.start_server()
        C = 6
        create_run(server.stub, "killed", num_classes=C)

        def labels_of(i):
            return [i % C, (3 * i + 1) % (C + 1), -100]

        def request(i):
            labels = labels_of(i)
            return pb.ComputeLossRequest(
                run="killed", accumulate=True, labels=labels,
                logits=tensor_f32(make_logits(len(labels), C, 5000 + i)),
                config=pb.LossConfig(loss_type=pb.LOSS_TYPE_EQL_V2))

        # prefix[m]: (seen, background, P, Q, updates) after the first m requests.
        prefix = [([0] * C, 0, np.zeros(C), np.zeros(C), 0)]

        def state_after(m):
            while len(prefix) <= m:
                i = len(prefix) - 1
                seen, background, P, Q, updates = prefix[-1]
                seen = list(seen)
                background = add_labels(seen, background, labels_of(i), C)
                _, (P, Q, updates) = eqlv2_step((P, Q, updates),
                                                make_logits(3, C, 5000 + i), labels_of(i))
                prefix.append((seen, background, P, Q, updates))
            return prefix[m]

        rng = random.Random(17)
        applied = 0
        for round_ in range(3):
            caller = Caller(server.target, request, start=applied)
            caller.start()
            time.sleep(rng.uniform(1.5, 2.5))
            caller.stopping.set()
            kill_time = time.monotonic()
            server.kill()
            caller.join(60)
            self.assertFalse(caller.is_alive())
            self.assertIsNone(caller.unexpected_error())
            self.assertGreater(caller.acked, 0, "round %d: nothing acknowledged" % round_)
            # Sequential requests of one caller: request i makes version i + 2.
            for i, version, _ in caller.acks:
                self.assertEqual(version, i + 2, "round %d, request %d" % (round_, i))
            sent = caller.acks[-1][0] + 1 + (1 if caller.error is not None else 0)
            must_have = max([i + 1 for i, _, at in caller.acks
                             if at < kill_time - CRASH_LOSS_BOUND_S] + [applied])

            server.start()
            run = get_run(server.stub, "killed")
            m = run.version - 1
            sys.stderr.write("SIGKILL round %d: acknowledged up to %d, more than 1 s before "
                             "the kill %d, stored %d\n"
                             % (round_, caller.acks[-1][0] + 1, must_have, m))
            self.assertGreaterEqual(m, must_have, "round %d lost an update acknowledged more "
                                    "than 1 s before the kill" % round_)
            self.assertLessEqual(m, sent, "round %d: more stored than sent" % round_)
            seen, background, P, Q, updates = state_after(m)
            stats = run.statistics
            self.assertEqual(list(stats.seen_counts), seen, "round %d" % round_)
            self.assertEqual(stats.background_seen, background, "round %d" % round_)
            self.assertEqual(stats.eqlv2_updates, updates, "round %d" % round_)
            np.testing.assert_allclose(list(stats.positive_gradient), P, rtol=1e-4, atol=1e-9,
                                       err_msg="round %d: P" % round_)
            np.testing.assert_allclose(list(stats.negative_gradient), Q, rtol=1e-4, atol=1e-9,
                                       err_msg="round %d: Q" % round_)
            applied = m

    def test_sigkills_keep_a_prefix_of_every_callers_updates(self):
        """Three callers on classes of their own (caller c: 3c .. 3c + 2);
        request i of caller c has labels [3c + i % 3, 3c + (i // 3) % 3], and
        caller 0 adds a background label: after each SIGKILL, each caller's
        classes hold exactly a prefix of its requests, and the prefixes add
        up to version - 1. With a flush interval of 250 ms (a crash may lose
        about that plus one commit), the one-second bound is tighter."""
        server = self.start_server(extra_flags=["--run_flush_interval_ms=250"])
        callers, C = 3, 9
        create_run(server.stub, "shared-kill", num_classes=C)

        def labels_of(c, i):
            return [3 * c + i % 3, 3 * c + (i // 3) % 3] + ([C] if c == 0 else [])

        def own_counts(c, m):
            counts = [0] * 3
            for i in range(m):
                for y in labels_of(c, i)[:2]:
                    counts[y - 3 * c] += 1
            return counts

        def request(c, i):
            labels = labels_of(c, i)
            return pb.ComputeLossRequest(run="shared-kill", accumulate=True, labels=labels,
                                         config=seesaw_config(),
                                         logits=tensor_f32(make_logits(len(labels), C, i)))

        rng = random.Random(29)
        applied = [0] * callers
        for round_ in range(3):
            threads = [Caller(server.target, lambda i, c=c: request(c, i), start=applied[c])
                       for c in range(callers)]
            for t in threads:
                t.start()
            time.sleep(rng.uniform(1.5, 2.5))
            for t in threads:
                t.stopping.set()
            kill_time = time.monotonic()
            server.kill()
            for t in threads:
                t.join(60)
                self.assertFalse(t.is_alive())
                self.assertIsNone(t.unexpected_error())
            server.start()
            run = get_run(server.stub, "shared-kill")
            seen = list(run.statistics.seen_counts)
            prefixes = []
            for c, t in enumerate(threads):
                mine = seen[3 * c:3 * c + 3]
                self.assertEqual(sum(mine) % 2, 0, "round %d caller %d: part of an update"
                                 % (round_, c))
                m = sum(mine) // 2
                self.assertEqual(mine, own_counts(c, m),
                                 "round %d caller %d: not a prefix of its requests" % (round_, c))
                must_have = max([i + 1 for i, _, at in t.acks
                                 if at < kill_time - CRASH_LOSS_BOUND_S] + [applied[c]])
                sent = (t.acks[-1][0] + 1 if t.acks else applied[c]) + (
                    1 if t.error is not None else 0)
                self.assertGreaterEqual(m, must_have, "round %d caller %d lost an update "
                                        "acknowledged more than 1 s before the kill"
                                        % (round_, c))
                self.assertLessEqual(m, sent)
                prefixes.append(m)
            sys.stderr.write("SIGKILL round %d, %d callers: acknowledged %s, stored %s\n"
                             % (round_, callers, [t.acked + applied[c]
                                                  for c, t in enumerate(threads)], prefixes))
            self.assertEqual(run.version - 1, sum(prefixes))
            self.assertEqual(run.statistics.background_seen, prefixes[0])
            applied = prefixes


if __name__ == "__main__":
    unittest.main()
