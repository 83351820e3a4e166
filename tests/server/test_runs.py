"""Runs (LOSS.md section 11, docs/spec/API.md section 5.2) through the real
server: CreateRun, GetRun, ListRuns, DeleteRun and every error they give;
ComputeLoss and StreamLoss naming a run, with and without `accumulate`:
run_version, the seen counts after known accumulating requests (ignored and
background labels included), SEESAW losses from the run's seen counts
against a float64 reference, failing requests that change nothing; datasets
that runs use; access with token files; runs surviving a graceful restart.

The helpers at the top are shared with test_runs_durability and
test_runs_replicas (they import functions only, never a TestCase).
"""

import os
import unittest

import grpc
import numpy as np

from prod_support import bearer, write_token
from server_fixture import (RPC_TIMEOUT_S, ServerTestCase, SharedServerTestCase, pb,
                            tensor_f32)

T = RPC_TIMEOUT_S
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
NAME_RULE = "must match [a-z0-9][a-z0-9._-]{0,127}"

ADMIN_TOKEN = "adm-3c9e1f0a7b2d4e6f8a0b1c2d3e4f5a6b"
COMPUTE_TOKEN = "cmp-9f8e7d6c5b4a39281706f5e4d3c2b1a0"

# ---------------------------------------------------------------------------
# Helpers shared by the runs tests
# ---------------------------------------------------------------------------


def make_logits(rows, classes, seed):
    return (np.random.default_rng(seed).standard_normal((rows, classes)) * 2).astype(
        np.float32)


def seesaw_config(**kwargs):
    kwargs.setdefault("seesaw_p", 0.8)
    kwargs.setdefault("seesaw_q", 2.0)
    kwargs.setdefault("seesaw_eps", 0.01)
    return pb.LossConfig(loss_type=pb.LOSS_TYPE_SEESAW, reduction=pb.REDUCTION_MEAN, **kwargs)


def run_request(run, labels, classes, seed=0, accumulate=True, config=None, **fields):
    """A labels-mode ComputeLossRequest naming `run` (SEESAW unless `config`
    says otherwise: it needs no static counts with a run)."""
    req = pb.ComputeLossRequest(run=run, accumulate=accumulate,
                                logits=tensor_f32(make_logits(len(labels), classes, seed)),
                                labels=list(labels),
                                config=config if config is not None else seesaw_config())
    for key, value in fields.items():
        if hasattr(value, "SerializeToString"):
            getattr(req, key).CopyFrom(value)
        else:
            setattr(req, key, value)
    return req


def create_run(stub, name, dataset="", num_classes=0, defaults=None, metadata=None, timeout=T):
    run = pb.Run(name=name, dataset=dataset, num_classes=num_classes)
    if defaults is not None:
        run.defaults.CopyFrom(defaults)
    return stub.CreateRun(pb.CreateRunRequest(run=run), timeout=timeout, metadata=metadata)


def get_run(stub, name, metadata=None, timeout=T):
    return stub.GetRun(pb.GetRunRequest(name=name), timeout=timeout, metadata=metadata)


def add_labels(seen, background, labels, classes, ignore_index=-100):
    """Adds `labels` to the expected statistics as section 11 says: a label in
    [0, C) other than ignore_index counts for its class, C is background,
    ignored labels count for nothing. Returns the new background count."""
    for y in labels:
        if y == ignore_index:
            continue
        if y == classes:
            background += 1
        else:
            seen[y] += 1
    return background


def _lse(v):
    m = np.max(v)
    return m + np.log(np.sum(np.exp(v - m)))


def ref_seesaw_mean(logits, labels, counts, p=0.8, q=2.0, eps=0.01, ignore_index=-100):
    """SEESAW, REDUCTION_MEAN, s_i = 1, in float64 from LOSS.md section 10:
    N_j = max(n_j, 1); log M_ij = p min(0, log N_j - log N_y);
    log S_ij = q max(0, log softmax_j - log max(softmax_y, eps));
    z'_ij = z_ij + log M_ij + log S_ij (j != y); l_i = lse(z'_i) - z_iy;
    background rows give 0; D = foreground rows not ignored."""
    z = np.asarray(logits, dtype=np.float32).astype(np.float64)
    classes = z.shape[1]
    log_n = np.log(np.maximum(np.asarray(counts, dtype=np.float64), 1.0))
    total, rows = 0.0, 0
    for i, y in enumerate(labels):
        if y == ignore_index or y == classes:
            continue
        log_p = z[i] - _lse(z[i])
        log_m = p * np.minimum(0.0, log_n - log_n[y])
        log_s = q * np.maximum(0.0, log_p - np.log(max(np.exp(log_p[y]), eps)))
        zp = z[i] + log_m + log_s
        zp[y] = z[i, y]
        total += _lse(zp) - z[i, y]
        rows += 1
    return total / rows if rows else 0.0


def eqlv2_step(state, logits, labels, gamma=12.0, mu=0.8, alpha=4.0, ignore_index=-100):
    """One EQL_V2 request in float64 (LOSS.md section 10), s_i = 1, MEAN:
    the weights from the run's P, Q, updates before it; returns (loss, the
    state after it accumulated: P_j += sum e g t, Q_j += sum e g (1 - t)
    over the rows not ignored, background included, updates + 1)."""
    P, Q, updates = state
    z = np.asarray(logits, dtype=np.float32).astype(np.float64)
    C = z.shape[1]
    r = np.full(C, 100.0) if updates == 0 else P / (Q + 1e-10)
    x = gamma * (r - mu)
    q = np.where(x >= 0, 1.0 / (1.0 + np.exp(-np.abs(x))),
                 np.exp(-np.abs(x)) / (1.0 + np.exp(-np.abs(x))))
    p = 1.0 + alpha * (1.0 - q)
    P, Q = P.copy(), Q.copy()
    total, rows = 0.0, 0
    for i, y in enumerate(labels):
        if y == ignore_index:
            continue
        t = np.zeros(C)
        if y < C:
            t[y] = 1.0
        e = p * t + q * (1.0 - t)
        softplus = np.maximum(z[i], 0.0) + np.log1p(np.exp(-np.abs(z[i])))
        total += np.sum(e * (softplus - t * z[i]))
        rows += 1
        g = np.abs(1.0 / (1.0 + np.exp(-z[i])) - t)
        P += e * g * t
        Q += e * g * (1.0 - t)
    return (total / rows if rows else 0.0), (P, Q, updates + 1)


def assert_statistics(test, run, seen, background, version, where=""):
    """The run's seen counts, background count and version are exactly these."""
    stats = run.statistics
    test.assertEqual(list(stats.seen_counts), list(seen), where)
    test.assertEqual(stats.background_seen, background, where)
    test.assertEqual(run.version, version, where)


# ---------------------------------------------------------------------------
# API behaviour on one shared server
# ---------------------------------------------------------------------------


class RunsApiTest(SharedServerTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        stub = cls.server.stub
        stub.PutDataset(pb.PutDatasetRequest(dataset=pb.Dataset(
            name="ten", class_counts=[500, 300, 200, 100, 50, 20, 10, 5, 2, 1])), timeout=T)
        stub.PutDataset(pb.PutDatasetRequest(dataset=pb.Dataset(
            name="three", class_counts=[100, 10, 1])), timeout=T)

    def assertStatus(self, code, message, fn, *args, **kwargs):
        """fn fails with exactly `code` and `message`."""
        details = self.assertRpcError(code, fn, *args, **kwargs)
        self.assertEqual(details, message)

    # -- CreateRun / GetRun / ListRuns / DeleteRun --------------------------

    def test_create_get_list_delete(self):
        made = create_run(self.stub, "crud-ten", dataset="ten")
        self.assertEqual((made.name, made.dataset, made.num_classes, made.version),
                         ("crud-ten", "ten", 10, 1))
        self.assertEqual(list(made.statistics.seen_counts), [0] * 10)
        self.assertEqual(list(made.statistics.positive_gradient), [0.0] * 10)
        self.assertEqual(list(made.statistics.negative_gradient), [0.0] * 10)
        self.assertEqual((made.statistics.background_seen, made.statistics.eqlv2_updates), (0, 0))
        # num_classes given and equal to the dataset's is fine too.
        also = create_run(self.stub, "crud-ten-b", dataset="ten", num_classes=10)
        self.assertEqual(also.num_classes, 10)
        free = create_run(self.stub, "crud-free", num_classes=4,
                          defaults=pb.LossConfig(seesaw_p=0.5))
        self.assertEqual((free.dataset, free.num_classes, free.version), ("", 4, 1))
        self.assertEqual(list(free.statistics.seen_counts), [0] * 4)
        self.assertEqual(free.defaults.seesaw_p, 0.5)

        got = get_run(self.stub, "crud-ten")
        self.assertEqual((got.name, got.dataset, got.num_classes, got.version),
                         ("crud-ten", "ten", 10, 1))
        self.assertEqual(list(got.statistics.seen_counts), [0] * 10)

        # ListRuns: ordered by name, the dataset filter, pages.
        names = [r.name for r in self.stub.ListRuns(pb.ListRunsRequest(), timeout=T).runs
                 if r.name.startswith("crud-")]
        self.assertEqual(names, ["crud-free", "crud-ten", "crud-ten-b"])
        ten = self.stub.ListRuns(pb.ListRunsRequest(dataset="ten"), timeout=T)
        self.assertEqual([r.name for r in ten.runs if r.name.startswith("crud-")],
                         ["crud-ten", "crud-ten-b"])
        self.assertTrue(all(r.dataset == "ten" for r in ten.runs))
        self.assertEqual(list(self.stub.ListRuns(pb.ListRunsRequest(dataset="no-such-dataset"),
                                                 timeout=T).runs), [])
        paged, token = [], ""
        for _ in range(100):
            page = self.stub.ListRuns(pb.ListRunsRequest(page_size=1, page_token=token),
                                      timeout=T)
            self.assertLessEqual(len(page.runs), 1)
            paged += [r.name for r in page.runs]
            token = page.next_page_token
            if not token:
                break
        self.assertEqual(paged, sorted(paged))
        self.assertEqual([n for n in paged if n.startswith("crud-")],
                         ["crud-free", "crud-ten", "crud-ten-b"])

        # DeleteRun: a wrong expected_version is ABORTED and deletes nothing.
        self.assertStatus(grpc.StatusCode.ABORTED,
                          "run 'crud-ten' is at version 1, not expected_version 3",
                          self.stub.DeleteRun,
                          pb.DeleteRunRequest(name="crud-ten", expected_version=3))
        self.assertEqual(get_run(self.stub, "crud-ten").version, 1)
        self.stub.DeleteRun(pb.DeleteRunRequest(name="crud-ten", expected_version=1), timeout=T)
        self.stub.DeleteRun(pb.DeleteRunRequest(name="crud-ten-b"), timeout=T)
        self.stub.DeleteRun(pb.DeleteRunRequest(name="crud-free"), timeout=T)
        for name in ("crud-ten", "crud-ten-b", "crud-free"):
            self.assertStatus(NOT_FOUND, "run '%s' not found" % name, self.stub.GetRun,
                              pb.GetRunRequest(name=name))
        self.assertStatus(NOT_FOUND, "run 'crud-ten' not found", self.stub.DeleteRun,
                          pb.DeleteRunRequest(name="crud-ten"))
        # The name is free again.
        self.assertEqual(create_run(self.stub, "crud-ten", num_classes=2).version, 1)
        self.stub.DeleteRun(pb.DeleteRunRequest(name="crud-ten"), timeout=T)

    def test_create_run_errors(self):
        create_run(self.stub, "taken", num_classes=3)
        cases = [
            (INVALID, "run.name = 'Bad!' " + NAME_RULE, pb.Run(name="Bad!", num_classes=3)),
            (INVALID, "run.name = '' " + NAME_RULE, pb.Run(num_classes=3)),
            (INVALID, "run.dataset = 'No Such' " + NAME_RULE,
             pb.Run(name="ok-name", dataset="No Such")),
            (INVALID, "run.defaults.beta = 2 is outside [0, 1]",
             pb.Run(name="ok-name", num_classes=3, defaults=pb.LossConfig(beta=2))),
            (INVALID, "run.num_classes = -1 is negative", pb.Run(name="ok-name", num_classes=-1)),
            (INVALID, "run.num_classes = 0: give run.dataset or run.num_classes >= 1",
             pb.Run(name="ok-name")),
            (INVALID, "run.num_classes = 5 but dataset 'ten' has 10 classes",
             pb.Run(name="ok-name", dataset="ten", num_classes=5)),
            (NOT_FOUND, "dataset 'no-such' not found", pb.Run(name="ok-name", dataset="no-such")),
            (grpc.StatusCode.ALREADY_EXISTS, "run 'taken' already exists",
             pb.Run(name="taken", num_classes=3)),
            (grpc.StatusCode.ALREADY_EXISTS, "run 'taken' already exists",
             pb.Run(name="taken", dataset="three")),
        ]
        for code, message, run in cases:
            with self.subTest(message):
                self.assertStatus(code, message, self.stub.CreateRun,
                                  pb.CreateRunRequest(run=run))
        # Nothing was created by the refused calls; "taken" is unchanged.
        self.assertStatus(NOT_FOUND, "run 'ok-name' not found", self.stub.GetRun,
                          pb.GetRunRequest(name="ok-name"))
        taken = get_run(self.stub, "taken")
        self.assertEqual((taken.dataset, taken.num_classes, taken.version), ("", 3, 1))
        self.stub.DeleteRun(pb.DeleteRunRequest(name="taken"), timeout=T)

    def test_get_list_delete_errors(self):
        self.assertStatus(INVALID, "name = 'Bad!' " + NAME_RULE, self.stub.GetRun,
                          pb.GetRunRequest(name="Bad!"))
        self.assertStatus(NOT_FOUND, "run 'absent' not found", self.stub.GetRun,
                          pb.GetRunRequest(name="absent"))
        self.assertStatus(INVALID, "page_size = -1 is negative", self.stub.ListRuns,
                          pb.ListRunsRequest(page_size=-1))
        self.assertStatus(INVALID, "dataset = 'Bad!' " + NAME_RULE, self.stub.ListRuns,
                          pb.ListRunsRequest(dataset="Bad!"))
        self.assertStatus(INVALID, "name = 'Bad!' " + NAME_RULE, self.stub.DeleteRun,
                          pb.DeleteRunRequest(name="Bad!"))
        self.assertStatus(NOT_FOUND, "run 'absent' not found", self.stub.DeleteRun,
                          pb.DeleteRunRequest(name="absent"))
        self.assertStatus(NOT_FOUND, "run 'absent' not found", self.stub.DeleteRun,
                          pb.DeleteRunRequest(name="absent", expected_version=1))

    def test_list_runs_page_sizes(self):
        names = ["page-%04d" % i for i in range(1001)]
        for name in names:
            create_run(self.stub, name, num_classes=1)
        try:
            first = self.stub.ListRuns(pb.ListRunsRequest(), timeout=T)
            self.assertEqual(len(first.runs), 100)  # the default page size
            self.assertNotEqual(first.next_page_token, "")
            listed, token = [], ""
            while True:
                page = self.stub.ListRuns(pb.ListRunsRequest(page_size=400, page_token=token),
                                          timeout=T)
                self.assertLessEqual(len(page.runs), 400)
                listed += [r.name for r in page.runs]
                token = page.next_page_token
                if not token:
                    break
            self.assertEqual([n for n in listed if n.startswith("page-")], names)
            self.assertEqual(listed, sorted(listed))
            # page_size above the maximum (1000) gets 1000.
            big = self.stub.ListRuns(pb.ListRunsRequest(page_size=5000), timeout=T)
            self.assertEqual(len(big.runs), 1000)
            self.assertNotEqual(big.next_page_token, "")
            rest = self.stub.ListRuns(pb.ListRunsRequest(page_size=5000,
                                                         page_token=big.next_page_token),
                                      timeout=T)
            self.assertEqual([r.name for r in list(big.runs) + list(rest.runs)
                              if r.name.startswith("page-")], names)
        finally:
            for name in names:
                self.stub.DeleteRun(pb.DeleteRunRequest(name=name), timeout=T)

    # -- ComputeLoss with a run ---------------------------------------------

    def test_compute_errors_change_nothing(self):
        create_run(self.stub, "err-ten", dataset="ten")
        create_run(self.stub, "err-free", num_classes=4)
        softmax = pb.LossConfig(loss_type=pb.LOSS_TYPE_SOFTMAX,
                                weighting=pb.WEIGHTING_SCHEME_EFFECTIVE_NUMBER)
        labels10 = [0, 3, 9, 1]
        cases = [
            (INVALID, "accumulate needs run: name the run whose statistics this request updates",
             run_request("", labels10, 10, class_counts=pb.ClassCounts(counts=[1] * 10))),
            (INVALID, "run = 'Err Ten' " + NAME_RULE, run_request("Err Ten", labels10, 10)),
            (NOT_FOUND, "run 'err-none' not found", run_request("err-none", labels10, 10)),
            (INVALID, "dataset = 'three' but run 'err-ten' uses dataset 'ten'",
             run_request("err-ten", labels10, 10, dataset="three")),
            (INVALID, "dataset = 'three' but run 'err-free' has no dataset",
             run_request("err-free", [0, 1], 4, dataset="three")),
            (INVALID, "class_counts has 5 classes but run 'err-ten' has 10",
             run_request("err-ten", labels10, 10, class_counts=pb.ClassCounts(counts=[1] * 5))),
            (INVALID, "logits.shape[1] = 5 but run 'err-ten' has 10 classes",
             run_request("err-ten", [0, 1], 5)),
            (INVALID, "logits.shape[1] = 10 but run 'err-free' has 4 classes",
             run_request("err-free", [0, 1], 10)),
            (PRECONDITION,
             "run 'err-free' has no dataset and the request gives no class_counts; "
             "loss type softmax with weighting effective_number needs class counts",
             run_request("err-free", [0, 1], 4, config=softmax)),
            (INVALID, "config.loss_type = eql_v2 needs a run (LOSS.md section 11): name one in run",
             run_request("", [0, 1, 2], 3, accumulate=False,
                         config=pb.LossConfig(loss_type=pb.LOSS_TYPE_EQL_V2),
                         class_counts=pb.ClassCounts(counts=[3, 2, 1]))),
            # Failing after the run was found: nothing may be applied.
            (INVALID, "labels[2] = 11 is outside [0, 10] (10 = background) and is not "
                      "ignore_index -100",
             run_request("err-ten", [0, 1, 11], 10)),
            (INVALID, "labels[1] = 10 is outside [0, 10) and is not ignore_index -100",
             run_request("err-ten", [0, 10], 10, config=softmax)),
            (INVALID, "config.beta = 2 is outside [0, 1]",
             run_request("err-ten", [0, 1], 10, config=pb.LossConfig(beta=2))),
            (INVALID, "config.weighting = effective_number is not allowed with loss type seesaw, "
                      "which carries its own re-weighting; leave it unset or none",
             run_request("err-free", [0, 1], 4, config=seesaw_config(
                 weighting=pb.WEIGHTING_SCHEME_EFFECTIVE_NUMBER))),
        ]
        for code, message, req in cases:
            with self.subTest(message):
                self.assertStatus(code, message, self.stub.ComputeLoss, req)
        # Other loss types that need static counts, without any.
        for loss_type in (pb.LOSS_TYPE_BALANCED_SOFTMAX, pb.LOSS_TYPE_LOGIT_ADJUSTED,
                          pb.LOSS_TYPE_LDAM, pb.LOSS_TYPE_EQL, pb.LOSS_TYPE_VS):
            with self.subTest(loss_type=loss_type):
                self.assertRpcError(
                    PRECONDITION, self.stub.ComputeLoss,
                    run_request("err-free", [0, 1], 4, config=pb.LossConfig(
                        loss_type=loss_type, weighting=pb.WEIGHTING_SCHEME_NONE)),
                    contains="run 'err-free' has no dataset and the request gives no "
                             "class_counts")
        # A NaN logit in an accumulating request.
        req = run_request("err-ten", [0, 1], 10)
        z = make_logits(2, 10, 0)
        z[1, 4] = np.nan
        req.logits.CopyFrom(tensor_f32(z))
        self.assertRpcError(INVALID, self.stub.ComputeLoss, req, contains="logits[1][4] is NaN")
        # None of them changed a run.
        assert_statistics(self, get_run(self.stub, "err-ten"), [0] * 10, 0, 1)
        assert_statistics(self, get_run(self.stub, "err-free"), [0] * 4, 0, 1)
        # The same requests, fixed, work: the runs were usable all along.
        ok = self.stub.ComputeLoss(run_request("err-free", [0, 1], 4, config=softmax,
                                               class_counts=pb.ClassCounts(counts=[4, 3, 2, 1])),
                                   timeout=T)
        self.assertEqual(ok.run_version, 2)
        ok = self.stub.ComputeLoss(run_request("err-ten", labels10, 10, dataset="ten"), timeout=T)
        self.assertEqual(ok.run_version, 2)

    def test_accumulated_counts_are_exact(self):
        C = 5
        create_run(self.stub, "acc", num_classes=C)
        seen, background, version = [0] * C, 0, 1
        softmax_counts = pb.ClassCounts(counts=[50, 20, 10, 5, 1])
        steps = [
            # (labels, config, inline counts?, ignore_index)
            ([0, 1, 1, 4, -100, 5, 5], seesaw_config(), False, -100),  # 5 = background
            ([2, 3, 3, 3, 7, 0], pb.LossConfig(loss_type=pb.LOSS_TYPE_SOFTMAX, ignore_index=3),
             True, 3),
            ([4, 4, 5, -100], pb.LossConfig(loss_type=pb.LOSS_TYPE_EQL, eql_lambda=0.1), True,
             -100),
            ([1, -1, 0], pb.LossConfig(loss_type=pb.LOSS_TYPE_FOCAL, ignore_index=-1), True, -1),
        ]
        for k, (labels, config, inline, ignore_index) in enumerate(steps):
            req = run_request("acc", [y if y != 7 else ignore_index for y in labels], C,
                              seed=k, config=config)
            if inline:
                req.class_counts.CopyFrom(softmax_counts)
            resp = self.stub.ComputeLoss(req, timeout=T)
            version += 1
            background = add_labels(seen, background, req.labels, C, ignore_index)
            self.assertEqual(resp.run_version, version, "step %d" % k)
            assert_statistics(self, get_run(self.stub, "acc"), seen, background, version,
                              "after step %d" % k)
        self.assertEqual(seen, [3, 3, 1, 0, 3])
        self.assertEqual(background, 3)

        # A request naming the run without accumulate changes nothing and
        # reports the current version.
        resp = self.stub.ComputeLoss(run_request("acc", [0, 1, 2], C, accumulate=False),
                                     timeout=T)
        self.assertEqual(resp.run_version, version)
        # Targets mode: the version moves, the counts do not.
        targets = np.zeros((3, C), dtype=np.float32)
        targets[0, 1] = targets[1, 2] = targets[2, 0] = 1.0
        req = pb.ComputeLossRequest(run="acc", accumulate=True,
                                    logits=tensor_f32(make_logits(3, C, 9)),
                                    targets=tensor_f32(targets),
                                    class_counts=softmax_counts,
                                    config=pb.LossConfig(loss_type=pb.LOSS_TYPE_SIGMOID))
        resp = self.stub.ComputeLoss(req, timeout=T)
        version += 1
        self.assertEqual(resp.run_version, version)
        run = get_run(self.stub, "acc")
        assert_statistics(self, run, seen, background, version, "after the targets request")
        self.assertEqual(run.statistics.eqlv2_updates, 0)
        self.assertEqual(list(run.statistics.positive_gradient), [0.0] * C)
        listed = [r for r in self.stub.ListRuns(pb.ListRunsRequest(), timeout=T).runs
                  if r.name == "acc"]
        self.assertEqual(len(listed), 1)
        assert_statistics(self, listed[0], seen, background, version, "ListRuns")

    def test_seesaw_uses_the_runs_seen_counts(self):
        C = 4
        # The dataset's counts must not enter SEESAW with a run: the run's
        # seen counts do (here very different from the dataset's).
        self.stub.PutDataset(pb.PutDatasetRequest(dataset=pb.Dataset(
            name="four", class_counts=[1, 1, 1000, 1000])), timeout=T)
        create_run(self.stub, "saw", dataset="four")
        seen = [0] * C
        rng = np.random.default_rng(7)
        for k in range(12):
            labels = rng.integers(0, C + 1, size=6).tolist()  # background included
            z = make_logits(len(labels), C, 100 + k)
            accumulate = k % 3 != 2
            # Non-accumulating requests see the counts so far; accumulating
            # ones also their own labels (the reference accumulates first).
            counts = list(seen)
            if accumulate:
                add_labels(counts, 0, labels, C)
            want = ref_seesaw_mean(z, labels, counts)
            req = pb.ComputeLossRequest(run="saw", accumulate=accumulate, logits=tensor_f32(z),
                                        labels=labels, config=seesaw_config())
            resp = self.stub.ComputeLoss(req, timeout=T)
            self.assertLessEqual(abs(resp.loss - want), 1e-5 * abs(want) + 1e-6,
                                 "request %d: loss %.10g, want %.10g (counts %s)"
                                 % (k, resp.loss, want, counts))
            seen = counts
        run = get_run(self.stub, "saw")
        self.assertEqual(list(run.statistics.seen_counts), seen)
        # A SEESAW request with the same dataset named explicitly is the same.
        z = make_logits(5, C, 999)
        resp = self.stub.ComputeLoss(pb.ComputeLossRequest(
            run="saw", dataset="four", logits=tensor_f32(z), labels=[0, 1, 2, 3, 0],
            config=seesaw_config()), timeout=T)
        want = ref_seesaw_mean(z, [0, 1, 2, 3, 0], seen)
        self.assertLessEqual(abs(resp.loss - want), 1e-5 * abs(want) + 1e-6)
        # Without a run, SEESAW uses the dataset's counts as before.
        resp = self.stub.ComputeLoss(pb.ComputeLossRequest(
            dataset="four", logits=tensor_f32(z), labels=[0, 1, 2, 3, 0],
            config=seesaw_config()), timeout=T)
        want = ref_seesaw_mean(z, [0, 1, 2, 3, 0], [1, 1, 1000, 1000])
        self.assertLessEqual(abs(resp.loss - want), 1e-5 * abs(want) + 1e-6)

    def test_eqlv2_sequence_matches_the_reference(self):
        """One caller's sequence of EQL_V2 requests (LOSS.md section 11,
        "Determinism"): each loss from P and Q before it, then P, Q and
        eqlv2_updates as the float64 reference accumulates them; requests
        without accumulate use the statistics and leave them alone."""
        C = 5
        create_run(self.stub, "eqlv2", num_classes=C)
        state = (np.zeros(C), np.zeros(C), 0)
        seen, background, version = [0] * C, 0, 1
        rng = np.random.default_rng(11)
        config = pb.LossConfig(loss_type=pb.LOSS_TYPE_EQL_V2, reduction=pb.REDUCTION_MEAN)
        for k in range(16):
            labels = rng.integers(0, C + 1, size=8).tolist()  # background included
            labels[0] = -100
            z = make_logits(len(labels), C, 300 + k)
            accumulate = k % 4 != 3
            want, after = eqlv2_step(state, z, labels)
            resp = self.stub.ComputeLoss(pb.ComputeLossRequest(
                run="eqlv2", accumulate=accumulate, logits=tensor_f32(z), labels=labels,
                config=config), timeout=T)
            self.assertLessEqual(abs(resp.loss - want), 1e-5 * abs(want) + 1e-6,
                                 "request %d: loss %.10g, want %.10g" % (k, resp.loss, want))
            if accumulate:
                state, version = after, version + 1
                background = add_labels(seen, background, labels, C)
            self.assertEqual(resp.run_version, version)
            run = get_run(self.stub, "eqlv2")
            assert_statistics(self, run, seen, background, version, "request %d" % k)
            self.assertEqual(run.statistics.eqlv2_updates, state[2])
            np.testing.assert_allclose(list(run.statistics.positive_gradient), state[0],
                                       rtol=1e-5, atol=1e-9, err_msg="P after %d" % k)
            np.testing.assert_allclose(list(run.statistics.negative_gradient), state[1],
                                       rtol=1e-5, atol=1e-9, err_msg="Q after %d" % k)
        # Other accumulating loss types add labels, not P and Q.
        before = get_run(self.stub, "eqlv2").statistics
        self.stub.ComputeLoss(run_request("eqlv2", [0, 1, 5], C), timeout=T)
        run = get_run(self.stub, "eqlv2")
        self.assertEqual(run.statistics.eqlv2_updates, state[2])
        self.assertEqual(list(run.statistics.positive_gradient), list(before.positive_gradient))
        self.assertEqual(list(run.statistics.negative_gradient), list(before.negative_gradient))
        background = add_labels(seen, background, [0, 1, 5], C)
        assert_statistics(self, run, seen, background, version + 1)

    def test_datasets_used_by_runs(self):
        self.stub.PutDataset(pb.PutDatasetRequest(dataset=pb.Dataset(
            name="used", class_counts=[9, 3, 1])), timeout=T)
        create_run(self.stub, "user", dataset="used")
        self.assertStatus(PRECONDITION,
                          "dataset 'used' is used by run 'user'; delete its runs first",
                          self.stub.DeleteDataset, pb.DeleteDatasetRequest(name="used"))
        self.assertStatus(
            PRECONDITION,
            "dataset 'used' has 3 classes and is used by run 'user'; a replacement must keep "
            "3 classes",
            self.stub.PutDataset,
            pb.PutDatasetRequest(dataset=pb.Dataset(name="used", class_counts=[1, 1])))
        got = self.stub.GetDataset(pb.GetDatasetRequest(name="used"), timeout=T)
        self.assertEqual((got.version, list(got.class_counts)), (1, [9, 3, 1]))
        # Same class count: fine, and the run follows the new counts.
        self.stub.PutDataset(pb.PutDatasetRequest(dataset=pb.Dataset(
            name="used", class_counts=[5, 5, 5])), timeout=T)
        z = make_logits(3, 3, 1)
        with_run = self.stub.ComputeLoss(pb.ComputeLossRequest(
            run="user", logits=tensor_f32(z), labels=[0, 1, 2]), timeout=T)
        inline = self.stub.ComputeLoss(pb.ComputeLossRequest(
            class_counts=pb.ClassCounts(counts=[5, 5, 5]), logits=tensor_f32(z),
            labels=[0, 1, 2]), timeout=T)
        self.assertEqual(with_run.loss, inline.loss)
        self.assertEqual(with_run.dataset_version, 2)
        self.assertEqual(with_run.run_version, 1)
        self.stub.DeleteRun(pb.DeleteRunRequest(name="user"), timeout=T)
        self.stub.DeleteDataset(pb.DeleteDatasetRequest(name="used"), timeout=T)

    def test_defaults_resolution(self):
        # request config over run.defaults over the dataset's over LOSS.md's:
        # the run sets seesaw_p, the request overrides seesaw_q.
        self.stub.PutDataset(pb.PutDatasetRequest(dataset=pb.Dataset(
            name="defs", class_counts=[10, 1, 1],
            defaults=pb.LossConfig(loss_type=pb.LOSS_TYPE_SEESAW, seesaw_p=0.1))), timeout=T)
        create_run(self.stub, "defs-run", dataset="defs",
                   defaults=pb.LossConfig(seesaw_p=1.5))
        self.stub.ComputeLoss(run_request("defs-run", [0, 0, 0, 1], 3,
                                          config=pb.LossConfig()), timeout=T)
        z = make_logits(4, 3, 42)
        resp = self.stub.ComputeLoss(pb.ComputeLossRequest(
            run="defs-run", logits=tensor_f32(z), labels=[0, 1, 2, 1],
            config=pb.LossConfig(seesaw_q=0.5)), timeout=T)
        self.assertEqual(resp.resolved_config.loss_type, pb.LOSS_TYPE_SEESAW)
        self.assertAlmostEqual(resp.resolved_config.seesaw_p, 1.5)
        self.assertAlmostEqual(resp.resolved_config.seesaw_q, 0.5)
        want = ref_seesaw_mean(z, [0, 1, 2, 1], [3, 1, 0], p=1.5, q=0.5)
        self.assertLessEqual(abs(resp.loss - want), 1e-5 * abs(want) + 1e-6)

    # -- StreamLoss ------------------------------------------------------------

    def test_stream_with_run(self):
        C = 3
        create_run(self.stub, "streamed", num_classes=C)
        plan = [
            (run_request("streamed", [0, 1, 3], C, seed=1), 0, ""),
            (run_request("", [0, 1], C, seed=2, class_counts=pb.ClassCounts(counts=[1, 1, 1])),
             grpc.StatusCode.INVALID_ARGUMENT.value[0],
             "accumulate needs run: name the run whose statistics this request updates"),
            (run_request("streamed", [2, 2], C, seed=3), 0, ""),
            (run_request("streamed", [2, 2, 1, 0], C, seed=4, accumulate=False), 0, ""),
            (run_request("nope", [0], C, seed=5), grpc.StatusCode.NOT_FOUND.value[0],
             "run 'nope' not found"),
            (run_request("streamed", [0, 5], C, seed=6), grpc.StatusCode.INVALID_ARGUMENT.value[0],
             "labels[1] = 5 is outside [0, 3] (3 = background) and is not ignore_index -100"),
            (run_request("streamed", [1, -100], C, seed=7), 0, ""),
        ]
        responses = list(self.stub.StreamLoss(iter([p[0] for p in plan]), timeout=T))
        self.assertEqual(len(responses), len(plan))
        want_versions = [2, None, 3, 3, None, None, 4]
        for i, ((req, code, message), resp) in enumerate(zip(plan, responses)):
            self.assertEqual((resp.error_code, resp.error_message), (code, message),
                             "response %d" % i)
            if code == 0:
                self.assertEqual(resp.run_version, want_versions[i], "response %d" % i)
        run = get_run(self.stub, "streamed")
        assert_statistics(self, run, [1, 2, 2], 1, 4)


# ---------------------------------------------------------------------------
# Access rules with token files
# ---------------------------------------------------------------------------


class RunsAccessTest(ServerTestCase):

    def token_file(self, name, token):
        return write_token(os.path.join(self.tmpdir(), name), token)

    def assertCode(self, code, fn, *args, **kwargs):
        return self.assertRpcError(code, fn, *args, **kwargs)

    def test_admin_token_only(self):
        server = self.start_server(extra_flags=[
            "--admin_token_file=" + self.token_file("admin", ADMIN_TOKEN)])
        stub, admin = server.stub, bearer(ADMIN_TOKEN)
        unauth = grpc.StatusCode.UNAUTHENTICATED
        self.assertCode(unauth, create_run, stub, "guarded", num_classes=3)
        self.assertCode(unauth, create_run, stub, "guarded", num_classes=3,
                        metadata=bearer(COMPUTE_TOKEN))
        self.assertCode(NOT_FOUND, get_run, stub, "guarded")
        create_run(stub, "guarded", num_classes=3, metadata=admin)
        # Reads and non-accumulating computations stay open.
        self.assertEqual(get_run(stub, "guarded").version, 1)
        self.assertEqual(len(stub.ListRuns(pb.ListRunsRequest(), timeout=T).runs), 1)
        self.assertEqual(stub.ComputeLoss(run_request("guarded", [0, 1], 3, accumulate=False),
                                          timeout=T).run_version, 1)
        # Accumulating changes state: it needs a token even here.
        self.assertCode(unauth, stub.ComputeLoss, run_request("guarded", [0, 1], 3))
        self.assertCode(unauth, stub.ComputeLoss, run_request("guarded", [0, 1], 3),
                        metadata=bearer(COMPUTE_TOKEN))
        # In a stream: the accumulating request is refused in-band, the
        # others are answered.
        responses = list(stub.StreamLoss(iter([
            run_request("guarded", [0, 1], 3, accumulate=False),
            run_request("guarded", [0, 1], 3),
            run_request("guarded", [2], 3, accumulate=False)]), timeout=T))
        self.assertEqual([r.error_code for r in responses], [0, unauth.value[0], 0])
        self.assertEqual(responses[1].error_message,
                         "this method needs an 'authorization: Bearer <token>' header")
        self.assertEqual([r.run_version for r in (responses[0], responses[2])], [1, 1])
        assert_statistics(self, get_run(stub, "guarded"), [0, 0, 0], 0, 1)
        self.assertEqual(stub.ComputeLoss(run_request("guarded", [0, 1], 3), timeout=T,
                                          metadata=admin).run_version, 2)
        self.assertCode(unauth, stub.DeleteRun, pb.DeleteRunRequest(name="guarded"))
        stub.DeleteRun(pb.DeleteRunRequest(name="guarded"), timeout=T, metadata=admin)
        self.assertCode(NOT_FOUND, get_run, stub, "guarded")

    def test_admin_and_compute_tokens(self):
        server = self.start_server(extra_flags=[
            "--admin_token_file=" + self.token_file("admin", ADMIN_TOKEN),
            "--compute_token_file=" + self.token_file("compute", COMPUTE_TOKEN)])
        stub, admin, compute = server.stub, bearer(ADMIN_TOKEN), bearer(COMPUTE_TOKEN)
        denied, unauth = grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED
        self.assertCode(denied, create_run, stub, "locked", num_classes=2, metadata=compute)
        self.assertCode(unauth, create_run, stub, "locked", num_classes=2)
        create_run(stub, "locked", num_classes=2, metadata=admin)
        # Reads need a token, either one.
        self.assertCode(unauth, get_run, stub, "locked")
        self.assertCode(unauth, stub.ListRuns, pb.ListRunsRequest())
        self.assertEqual(get_run(stub, "locked", metadata=compute).version, 1)
        stub.ListRuns(pb.ListRunsRequest(), timeout=T, metadata=compute)
        # Accumulating: the compute token is enough.
        self.assertCode(unauth, stub.ComputeLoss, run_request("locked", [0, 1], 2))
        self.assertEqual(stub.ComputeLoss(run_request("locked", [0, 1], 2), timeout=T,
                                          metadata=compute).run_version, 2)
        self.assertEqual(stub.ComputeLoss(run_request("locked", [1, 1], 2), timeout=T,
                                          metadata=admin).run_version, 3)
        self.assertCode(denied, stub.DeleteRun, pb.DeleteRunRequest(name="locked"),
                        metadata=compute)
        assert_statistics(self, get_run(stub, "locked", metadata=admin), [1, 3], 0, 3)
        stub.DeleteRun(pb.DeleteRunRequest(name="locked"), timeout=T, metadata=admin)


# ---------------------------------------------------------------------------
# Restart
# ---------------------------------------------------------------------------


class RunsRestartTest(ServerTestCase):

    def test_graceful_restart_keeps_runs(self):
        # The longest flush interval (500 ms), and the stop right after the
        # last updates: the flush of the graceful stop must write them.
        server = self.start_server(extra_flags=["--run_flush_interval_ms=500"])
        stub = server.stub
        stub.PutDataset(pb.PutDatasetRequest(dataset=pb.Dataset(
            name="base", class_counts=[7, 5, 3])), timeout=T)
        create_run(stub, "kept", dataset="base", defaults=pb.LossConfig(seesaw_q=1.0))
        create_run(stub, "kept-free", num_classes=2)
        seen, background = [0, 0, 0], 0
        for k in range(25):
            labels = [k % 3, (k * 2) % 4, -100]
            resp = stub.ComputeLoss(run_request("kept", labels, 3, seed=k), timeout=T)
            self.assertEqual(resp.run_version, k + 2)
            background = add_labels(seen, background, labels, 3)
        stub.ComputeLoss(run_request("kept-free", [1, 1, 0], 2), timeout=T)
        before = [get_run(stub, "kept"), get_run(stub, "kept-free")]
        assert_statistics(self, before[0], seen, background, 26)
        self.assertEqual(server.stop(), 0)
        server.start()
        after = [get_run(server.stub, "kept"), get_run(server.stub, "kept-free")]
        for b, a in zip(before, after):
            self.assertEqual(a.name, b.name)
            self.assertEqual(a.dataset, b.dataset)
            self.assertEqual(a.num_classes, b.num_classes)
            self.assertEqual(a.defaults, b.defaults)
            self.assertEqual(a.statistics, b.statistics)
            self.assertEqual(a.version, b.version)
            self.assertEqual(a.create_time, b.create_time)
        assert_statistics(self, after[0], seen, background, 26)
        assert_statistics(self, after[1], [1, 2], 0, 2)
        self.assertEqual([r.name for r in server.stub.ListRuns(pb.ListRunsRequest(),
                                                               timeout=T).runs],
                         ["kept", "kept-free"])
        # And it keeps counting from there.
        resp = server.stub.ComputeLoss(run_request("kept", [2], 3), timeout=T)
        self.assertEqual(resp.run_version, 27)


if __name__ == "__main__":
    unittest.main()
