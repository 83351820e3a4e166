"""Runs (LOSS.md section 11, docs/spec/API.md section 5.2) through
cbloss.Client and cbloss.torch.

- Determinism: one caller's sequence of accumulating SEESAW and EQL_V2
  requests gives, step by step (loss, gradient, the run's statistics), the
  numbers of one float64 reference module in one process: mmdetection's
  SeesawLoss (cum_samples accumulated before the loss) and the eqlv2
  repository's EQLv2 (P, Q collected after the loss), written here from
  their code with LOSS.md section 10's generalisations (C columns without an
  objectness head, ignored rows dropped, sample weights, r = 100 before the
  first EQL_V2 update). Tolerances of LOSS.md section 7.
- Exact versions and seen counts, the exact errors, and cbloss.torch's
  training / eval behaviour, on a real cbloss-server.
- Access with token files (API.md section 5.2): CreateRun / DeleteRun need
  the admin token, an accumulating request a token even when computations
  are open.
- Accumulating calls are never retried: against an in-process grpc server
  that answers every ComputeLoss with UNAVAILABLE.
"""

from concurrent import futures
import os
import shutil
import tempfile
import threading
import unittest

import grpc
import numpy as np
import torch
import torch.nn.functional as F

import cbloss
from cbloss._proto import cbloss_pb2 as pb
from cbloss.torch import ClassBalancedLoss, StreamingClassBalancedLoss
from loss_cases import assert_gradient_close, assert_loss_close
from server_process import ServerTestCase

IGNORE = 255
NEEDS_RUN = "accumulate needs run: name the run whose statistics this request updates"
EQLV2_NEEDS_RUN = "config.loss_type = eql_v2 needs a run (LOSS.md section 11): name one in run"


class SeesawReference:
    """mmdetection's SeesawLoss (mmdet/models/losses/seesaw_loss.py) in
    float64: a cum_samples buffer of C + 1 entries (index C = background)
    that forward increments with the batch's labels *before* seesaw_ce_loss
    runs on the foreground rows with cum_samples[:C]; mitigation
    (cum_j / cum_y)^p where < 1 (counts clamped at 1), compensation
    (score_j / max(score_y, eps))^q where > 1 on detached softmax scores;
    cross entropy on z + log(M * S) * (1 - onehot), times the label weights,
    'mean' over the rows passed in. LOSS.md section 10: no objectness head,
    ignored rows take no part (not counted either)."""

    def __init__(self, num_classes, p=0.8, q=2.0, eps=0.01):
        self.C, self.p, self.q, self.eps = num_classes, p, q, eps
        self.cum_samples = torch.zeros(num_classes + 1, dtype=torch.float64)

    def forward(self, logits, labels, sample_weights, reduction="mean", accumulate=True):
        z = torch.tensor(np.asarray(logits, dtype=np.float64))
        labels = torch.tensor(np.asarray(labels, dtype=np.int64))
        s = torch.tensor(np.asarray(sample_weights, dtype=np.float64))
        keep = labels != IGNORE
        if accumulate:
            for u in labels[keep].unique():
                self.cum_samples[u] += (labels == u).sum()
        pos = keep & (labels < self.C)
        cls_score = z[pos].clone().requires_grad_(True)
        y = labels[pos]
        cum = self.cum_samples[:self.C]
        onehot = F.one_hot(y, self.C).double()
        ratio = cum[None, :].clamp(min=1) / cum[:, None].clamp(min=1)
        index = (ratio < 1.0).double()
        weights = (ratio.pow(self.p) * index + (1 - index))[y, :]
        scores = F.softmax(cls_score.detach(), dim=1)
        self_scores = scores[torch.arange(len(y)), y]
        score_matrix = scores / self_scores[:, None].clamp(min=self.eps)
        index = (score_matrix > 1.0).double()
        weights = weights * (score_matrix.pow(self.q) * index + (1 - index))
        shifted = cls_score + weights.log() * (1 - onehot)
        l = F.cross_entropy(shifted, y, reduction="none") * s[pos]
        loss = l.mean() if reduction == "mean" else l.sum()
        loss.backward()
        grad = torch.zeros_like(z)
        grad[pos] = cls_score.grad
        return float(loss), grad.numpy()


class EQLv2Reference:
    """The eqlv2 repository's EQLv2 (mmdet/models/losses/eqlv2.py) in
    float64: get_weight (neg_w = 1 / (1 + exp(-gamma (pos_neg - mu))),
    pos_w = 1 + alpha (1 - neg_w)), loss = sum(BCE * weight) / n_i, then
    collect_grad with the same detached weights (g = |sigmoid(z) - target|,
    _pos_grad += sum g * target * w, _neg_grad += sum g * (1 - target) * w,
    pos_neg = pos / (neg + 1e-10)). LOSS.md section 10: C columns (no
    objectness column), pos_neg = 100 before the first update (the
    reference uses weights 1 there), ignored rows dropped, row i times s_i in
    the loss and in the sums; collect_grad only for accumulating requests."""

    def __init__(self, num_classes, gamma=12.0, mu=0.8, alpha=4.0):
        self.C, self.gamma, self.mu, self.alpha = num_classes, gamma, mu, alpha
        self._pos_grad = torch.zeros(num_classes, dtype=torch.float64)
        self._neg_grad = torch.zeros(num_classes, dtype=torch.float64)
        self.pos_neg = torch.full((num_classes,), 100.0, dtype=torch.float64)
        self.updates = 0

    def forward(self, logits, labels, sample_weights, reduction="mean", accumulate=True):
        z = torch.tensor(np.asarray(logits, dtype=np.float64))
        labels = torch.tensor(np.asarray(labels, dtype=np.int64))
        s = torch.tensor(np.asarray(sample_weights, dtype=np.float64))[:, None]
        keep = labels != IGNORE
        n_i = int(keep.sum())
        cls_score = z[keep].clone().requires_grad_(True)
        target = torch.zeros(n_i, self.C + 1, dtype=torch.float64)
        target[torch.arange(n_i), labels[keep]] = 1
        target = target[:, :self.C]  # label C (background): an all-zero row
        neg_w = 1 / (1 + torch.exp(-self.gamma * (self.pos_neg - self.mu)))
        pos_w = 1 + self.alpha * (1 - neg_w)
        weight = pos_w[None, :] * target + neg_w[None, :] * (1 - target)
        bce = F.binary_cross_entropy_with_logits(cls_score, target, reduction="none")
        total = torch.sum(bce * weight * s[keep])
        loss = total / n_i if reduction == "mean" else total
        loss.backward()
        if accumulate:
            prob = torch.sigmoid(cls_score.detach())
            g = torch.abs(target * (prob - 1) + (1 - target) * prob)
            w = weight.detach() * s[keep]
            self._pos_grad += torch.sum(g * target * w, dim=0)
            self._neg_grad += torch.sum(g * (1 - target) * w, dim=0)
            self.pos_neg = self._pos_grad / (self._neg_grad + 1e-10)
            self.updates += 1
        grad = torch.zeros_like(z)
        grad[keep] = cls_score.grad
        return float(loss), grad.numpy()


def random_batch(rng, num_classes, rows, with_background):
    """float32 logits [rows, C], labels with ignored rows (and background
    label C), sample weights; at least two foreground rows."""
    logits = rng.normal(0.0, 2.0, (rows, num_classes)).astype(np.float32)
    labels = rng.integers(0, num_classes, rows)
    labels[0], labels[1] = rng.integers(0, num_classes, 2)
    for i in range(2, rows):
        u = rng.random()
        if u < 0.15:
            labels[i] = IGNORE
        elif with_background and u < 0.35:
            labels[i] = num_classes
    weights = rng.uniform(0.0, 2.0, rows).astype(np.float32)
    return logits, labels.astype(np.int64), weights


def seen_after(seen, background, labels, num_classes):
    """The seen counts and background count after adding `labels`."""
    seen = list(seen)
    for y in labels:
        if y == num_classes:
            background += 1
        elif 0 <= y < num_classes:
            seen[y] += 1
    return seen, background


class RunsTest(ServerTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.client.put_dataset("runs-data", [50, 20, 5, 1])

    def assert_stats_close(self, got, want, what):
        assert_loss_close(self, got, np.asarray(want, dtype=np.float64), what)

    # -- CRUD --------------------------------------------------------------------

    def test_create_get_list_delete(self):
        run = self.client.create_run("crud-a", num_classes=3, loss_type="seesaw", seesaw_p=0.5)
        self.assertIsInstance(run, cbloss.Run)
        self.assertEqual((run.name, run.dataset, run.num_classes, run.version),
                         ("crud-a", None, 3, 1))
        self.assertEqual(run.defaults.loss_type, "seesaw")
        self.assertEqual(run.defaults.seesaw_p, 0.5)
        self.assertEqual(run.statistics.seen_counts, [0, 0, 0])
        self.assertEqual(run.statistics.background_seen, 0)
        self.assertEqual(run.statistics.positive_gradient.tolist(), [0.0] * 3)
        self.assertEqual(run.statistics.negative_gradient.tolist(), [0.0] * 3)
        self.assertEqual(run.statistics.eqlv2_updates, 0)
        run = self.client.create_run("crud-b", dataset="runs-data")
        self.assertEqual((run.dataset, run.num_classes), ("runs-data", 4))
        self.assertEqual(self.client.get_run("crud-a").num_classes, 3)

        for name in ("crud-c", "crud-d", "crud-e"):
            self.client.create_run(name, dataset="runs-data", num_classes=4)
        names = [r.name for r in self.client.list_runs(page_size=2)]
        crud = [n for n in names if n.startswith("crud-")]
        self.assertEqual(crud, ["crud-a", "crud-b", "crud-c", "crud-d", "crud-e"])
        self.assertEqual(names, sorted(names))
        of_dataset = [r.name for r in self.client.list_runs("runs-data", page_size=1)]
        self.assertEqual([n for n in of_dataset if n.startswith("crud-")],
                         ["crud-b", "crud-c", "crud-d", "crud-e"])
        self.assertNotIn("crud-a", of_dataset)
        self.assertEqual(list(self.client.list_runs(dataset="no-such-dataset")), [])

        with self.assertRaises(cbloss.CblossError) as caught:
            self.client.delete_run("crud-c", expected_version=3)
        self.assertEqual(caught.exception.code, grpc.StatusCode.ABORTED)
        self.assertEqual(caught.exception.details,
                         "run 'crud-c' is at version 1, not expected_version 3")
        self.client.delete_run("crud-c", expected_version=1)
        self.client.delete_run("crud-d")
        for name in ("crud-c", "crud-d"):
            with self.assertRaises(cbloss.CblossError) as caught:
                self.client.get_run(name)
            self.assertEqual(caught.exception.code, grpc.StatusCode.NOT_FOUND)
            self.assertEqual(caught.exception.details, "run '%s' not found" % name)
        with self.assertRaises(cbloss.CblossError) as caught:
            self.client.delete_run("crud-c")
        self.assertEqual(caught.exception.code, grpc.StatusCode.NOT_FOUND)

    def test_create_errors(self):
        self.client.create_run("dup", num_classes=2)
        cases = [
            (dict(name="dup", num_classes=2), grpc.StatusCode.ALREADY_EXISTS,
             "run 'dup' already exists"),
            (dict(name="nc0"), grpc.StatusCode.INVALID_ARGUMENT,
             "run.num_classes = 0: give run.dataset or run.num_classes >= 1"),
            (dict(name="neg", num_classes=-1), grpc.StatusCode.INVALID_ARGUMENT,
             "run.num_classes = -1 is negative"),
            (dict(name="mismatch", dataset="runs-data", num_classes=5),
             grpc.StatusCode.INVALID_ARGUMENT,
             "run.num_classes = 5 but dataset 'runs-data' has 4 classes"),
            (dict(name="nods", dataset="no-such-dataset"), grpc.StatusCode.NOT_FOUND,
             "dataset 'no-such-dataset' not found"),
        ]
        for kwargs, code, details in cases:
            with self.subTest(**kwargs):
                with self.assertRaises(cbloss.CblossError) as caught:
                    self.client.create_run(**kwargs)
                self.assertEqual(caught.exception.code, code)
                self.assertEqual(caught.exception.details, details)

    # -- request errors -----------------------------------------------------------

    def test_accumulate_without_run_is_the_exact_error(self):
        logits = np.zeros((2, 4), dtype=np.float32)
        with self.assertRaises(cbloss.CblossError) as caught:
            self.client.compute_loss(logits, [0, 1], dataset="runs-data", accumulate=True)
        self.assertEqual(caught.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertEqual(caught.exception.details, NEEDS_RUN)
        with self.client.stream_loss() as stream:
            with self.assertRaises(cbloss.CblossError) as caught:
                stream.compute_loss(logits, [0, 1], dataset="runs-data", accumulate=True)
            self.assertEqual(caught.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
            self.assertEqual(caught.exception.details, NEEDS_RUN)

    def test_eqlv2_without_run_is_the_exact_error(self):
        logits = np.zeros((2, 4), dtype=np.float32)
        with self.assertRaises(cbloss.CblossError) as caught:
            self.client.compute_loss(logits, [0, 4], class_counts=[5, 4, 3, 1],
                                     loss_type="eql_v2")
        self.assertEqual(caught.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertEqual(caught.exception.details, EQLV2_NEEDS_RUN)

    def test_unknown_run_and_wrong_classes(self):
        logits = np.zeros((2, 4), dtype=np.float32)
        with self.assertRaises(cbloss.CblossError) as caught:
            self.client.compute_loss(logits, [0, 1], run="no-such-run", accumulate=True)
        self.assertEqual(caught.exception.code, grpc.StatusCode.NOT_FOUND)
        self.assertEqual(caught.exception.details, "run 'no-such-run' not found")
        self.client.create_run("five", num_classes=5, loss_type="seesaw")
        with self.assertRaises(cbloss.CblossError) as caught:
            self.client.compute_loss(logits, [0, 1], run="five", accumulate=True)
        self.assertEqual(caught.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertEqual(caught.exception.details,
                         "logits.shape[1] = 4 but run 'five' has 5 classes")
        self.assertEqual(self.client.get_run("five").version, 1)  # a failed request changes nothing

    def test_local_argument_errors(self):
        logits = np.zeros((2, 4), dtype=np.float32)
        with self.assertRaises(ValueError):
            self.client.compute_loss(logits, [0, 1])
        with self.assertRaises(ValueError):
            self.client.compute_loss(logits, [0, 1], run="r", dataset="runs-data",
                                     class_counts=[1, 1, 1, 1])

    # -- versions and seen counts ---------------------------------------------------

    def test_versions_and_seen_counts_are_exact(self):
        self.client.create_run("counting", dataset="runs-data")
        rng = np.random.default_rng(11)
        seen, background = [0] * 4, 0
        for step in range(1, 13):
            logits, labels, _ = random_batch(rng, 4, 9, with_background=False)
            r = self.client.compute_loss(logits, labels, run="counting", accumulate=True,
                                         loss_type="focal", ignore_index=IGNORE)
            self.assertEqual(r.run_version, 1 + step)
            seen, background = seen_after(seen, background, labels, 4)
        # Reading without accumulate changes nothing and reports the version.
        r = self.client.compute_loss(logits, labels, run="counting", ignore_index=IGNORE)
        self.assertEqual(r.run_version, 13)
        # Targets mode counts as an update but adds no labels.
        targets = (rng.random((3, 4)) < 0.5).astype(np.float32)
        r = self.client.compute_loss(logits[:3], targets=targets, run="counting",
                                     accumulate=True, loss_type="sigmoid")
        self.assertEqual(r.run_version, 14)
        # Without a run: run_version 0.
        r = self.client.compute_loss(logits, labels, dataset="runs-data", ignore_index=IGNORE)
        self.assertEqual(r.run_version, 0)
        run = self.client.get_run("counting")
        self.assertEqual(run.version, 14)
        self.assertEqual(run.statistics.seen_counts, seen)
        self.assertEqual(run.statistics.background_seen, 0)
        self.assertEqual(run.statistics.eqlv2_updates, 0)

    def test_stream_accumulates_like_unary(self):
        self.client.create_run("streamed", num_classes=4, loss_type="seesaw",
                               ignore_index=IGNORE)
        rng = np.random.default_rng(5)
        seen, background = [0] * 4, 0
        with self.client.stream_loss() as stream:
            for step in range(1, 6):
                logits, labels, _ = random_batch(rng, 4, 7, with_background=True)
                r = stream.compute_loss(logits, labels, run="streamed", accumulate=True)
                self.assertEqual(r.run_version, 1 + step)
                seen, background = seen_after(seen, background, labels, 4)
        stats = self.client.get_run("streamed").statistics
        self.assertEqual((stats.seen_counts, stats.background_seen), (seen, background))

    # -- determinism (LOSS.md section 11) against the reference modules ------------------

    def check_step(self, result, reference_loss, reference_grad, what):
        assert_loss_close(self, result.loss, reference_loss, what + ": loss")
        assert_gradient_close(self, result.gradient, reference_grad, what + ": gradient")

    def test_seesaw_sequence_matches_mmdetection_module(self):
        C = 6
        self.client.create_run("seesaw-seq", num_classes=C, loss_type="seesaw",
                               ignore_index=IGNORE, seesaw_p=0.8, seesaw_q=2.0)
        reference = SeesawReference(C, p=0.8, q=2.0, eps=0.01)
        rng = np.random.default_rng(2021)
        seen, background, version = [0] * C, 0, 1
        for step in range(12):
            logits, labels, weights = random_batch(rng, C, int(rng.integers(4, 11)),
                                                   with_background=True)
            if step == 0:  # the rarest class first: large mitigation later on
                labels[:2] = [0, 0]
            logits[0, int(rng.integers(0, C))] = 9.0  # some compensation
            reduction = "sum" if step % 4 == 3 else "mean"
            accumulate = step != 6  # one read in the middle
            ref_loss, ref_grad = reference.forward(logits, labels, weights, reduction,
                                                   accumulate=accumulate)
            r = self.client.compute_loss(logits, labels, run="seesaw-seq",
                                         accumulate=accumulate, sample_weights=weights,
                                         reduction=reduction)
            what = "step %d" % step
            self.check_step(r, ref_loss, ref_grad, what)
            if accumulate:
                seen, background = seen_after(seen, background, labels, C)
                version += 1
            self.assertEqual(r.run_version, version, what)
            run = self.client.get_run("seesaw-seq")
            self.assertEqual(run.version, version, what)
            self.assertEqual(run.statistics.seen_counts,
                             [int(n) for n in reference.cum_samples[:C]], what)
            self.assertEqual(run.statistics.seen_counts, seen, what)
            self.assertEqual(run.statistics.background_seen, int(reference.cum_samples[C]))
            self.assertEqual(run.statistics.background_seen, background)
            self.assertEqual(run.statistics.eqlv2_updates, 0)

    def eqlv2_sequence(self, name, reference, steps, seed, **run_defaults):
        C = reference.C
        self.client.create_run(name, num_classes=C, loss_type="eql_v2", ignore_index=IGNORE,
                               **run_defaults)
        rng = np.random.default_rng(seed)
        seen, background, version = [0] * C, 0, 1
        for step in range(steps):
            logits, labels, weights = random_batch(rng, C, int(rng.integers(4, 11)),
                                                   with_background=True)
            reduction = "sum" if step % 3 == 2 else "mean"
            accumulate = step != 4
            ref_loss, ref_grad = reference.forward(logits, labels, weights, reduction,
                                                   accumulate=accumulate)
            r = self.client.compute_loss(logits, labels, run=name, accumulate=accumulate,
                                         sample_weights=weights, reduction=reduction)
            what = "%s step %d" % (name, step)
            self.check_step(r, ref_loss, ref_grad, what)
            if accumulate:
                seen, background = seen_after(seen, background, labels, C)
                version += 1
            self.assertEqual(r.run_version, version, what)
            stats = self.client.get_run(name).statistics
            self.assertEqual(stats.eqlv2_updates, reference.updates, what)
            self.assertEqual((stats.seen_counts, stats.background_seen), (seen, background))
            self.assert_stats_close(stats.positive_gradient, reference._pos_grad.numpy(),
                                    what + ": P")
            self.assert_stats_close(stats.negative_gradient, reference._neg_grad.numpy(),
                                    what + ": Q")

    def test_eqlv2_sequence_matches_eqlv2_module(self):
        self.eqlv2_sequence("eqlv2-seq", EQLv2Reference(5), steps=10, seed=2022)

    def test_eqlv2_first_step_uses_r_100(self):
        # gamma 0.05: q = sigmoid(0.05 (100 - 0.8)) = 0.9930 on the first
        # step, not the reference's 1 (LOSS.md section 10); the run's
        # defaults carry the parameters.
        self.eqlv2_sequence("eqlv2-small-gamma",
                            EQLv2Reference(4, gamma=0.05, mu=0.8, alpha=4.0), steps=5, seed=7,
                            eqlv2_gamma=0.05)

    # -- cbloss.torch ---------------------------------------------------------------

    def test_module_accumulates_in_training_mode_only(self):
        C = 5
        self.client.create_run("torch-seesaw", num_classes=C, loss_type="seesaw",
                               ignore_index=IGNORE)
        criterion = ClassBalancedLoss(self.client, run="torch-seesaw", loss_type=None,
                                      reduction="mean")
        self.assertTrue(criterion.training)
        reference = SeesawReference(C)
        rng = np.random.default_rng(3)
        seen, background, version = [0] * C, 0, 1
        for step in range(8):
            if step == 3:
                criterion.eval()
            if step == 6:
                criterion.train()
            logits, labels, weights = random_batch(rng, C, 8, with_background=True)
            z = torch.tensor(logits, requires_grad=True)
            out = criterion(z, torch.from_numpy(labels), torch.from_numpy(weights))
            out.backward()
            accumulate = criterion.training
            ref_loss, ref_grad = reference.forward(logits, labels, weights,
                                                   accumulate=accumulate)
            what = "step %d (%s)" % (step, "train" if accumulate else "eval")
            assert_loss_close(self, float(out), ref_loss, what + ": loss")
            assert_gradient_close(self, z.grad.numpy(), ref_grad, what + ": gradient")
            if accumulate:
                version += 1
                seen, background = seen_after(seen, background, labels, C)
            self.assertEqual(criterion.last_result.run_version, version, what)
            run = self.client.get_run("torch-seesaw")
            self.assertEqual(run.version, version, what)
            self.assertEqual((run.statistics.seen_counts, run.statistics.background_seen),
                             (seen, background), what)
        self.assertEqual(version, 1 + 5)  # steps 0-2 and 6-7 trained

    def test_module_in_eval_mode_under_no_grad_reads_only(self):
        self.client.create_run("torch-eval", dataset="runs-data")
        criterion = ClassBalancedLoss(self.client, run="torch-eval", loss_type="softmax")
        criterion.eval()
        with torch.no_grad():
            criterion(torch.zeros(3, 4), torch.tensor([0, 1, 3]))
        self.assertEqual(criterion.last_result.run_version, 1)
        criterion.train()
        criterion(torch.zeros(3, 4, requires_grad=True), torch.tensor([0, 1, 3])).backward()
        self.assertEqual(criterion.last_result.run_version, 2)
        self.assertEqual(self.client.get_run("torch-eval").statistics.seen_counts, [1, 1, 0, 1])

    def test_streaming_module_accumulates_in_training_mode(self):
        self.client.create_run("torch-stream", num_classes=3, loss_type="eql_v2")
        criterion = StreamingClassBalancedLoss(self.client, run="torch-stream", loss_type=None)
        try:
            for step in range(1, 4):
                z = torch.zeros(2, 3, requires_grad=True)
                criterion(z, torch.tensor([0, 3])).backward()
                self.assertEqual(criterion.last_result.run_version, 1 + step)
            criterion.eval()
            criterion(torch.zeros(2, 3), torch.tensor([0, 3]))
            self.assertEqual(criterion.last_result.run_version, 4)
        finally:
            criterion.close()
        stats = self.client.get_run("torch-stream").statistics
        self.assertEqual((stats.seen_counts, stats.background_seen, stats.eqlv2_updates),
                         ([3, 0, 0], 3, 3))

    def test_module_without_run_never_accumulates(self):
        criterion = ClassBalancedLoss(self.client, dataset="runs-data")
        self.assertTrue(criterion.training)
        criterion(torch.zeros(2, 4, requires_grad=True), torch.tensor([0, 1])).backward()
        self.assertEqual(criterion.last_result.run_version, 0)
        self.assertIsNone(criterion.run)


ADMIN_TOKEN = "adm-runs-7d1e0c2b9a8f4e36b5c4d3e2f1a0b9c8"
COMPUTE_TOKEN = "cmp-runs-1a2b3c4d5e6f708192a3b4c5d6e7f809"


class _TokenServerTestCase(ServerTestCase):
    """A server with token files (`tokens`: the flags' names)."""

    tokens = ()

    @classmethod
    def setUpClass(cls):
        cls.token_dir = tempfile.mkdtemp(prefix="cbloss-runs-tokens-")
        flags = []
        for flag, token in (("admin", ADMIN_TOKEN), ("compute", COMPUTE_TOKEN)):
            if flag in cls.tokens:
                path = os.path.join(cls.token_dir, flag)
                with open(path, "w") as f:
                    f.write(token + "\n")
                flags.append("--%s_token_file=%s" % (flag, path))
        cls.server_flags = tuple(flags)
        try:
            super().setUpClass()
        except BaseException:
            shutil.rmtree(cls.token_dir, ignore_errors=True)
            raise
        cls.admin = cbloss.Client(cls.server.target, timeout=10, token=ADMIN_TOKEN)

    @classmethod
    def tearDownClass(cls):
        cls.admin.close()
        super().tearDownClass()
        shutil.rmtree(cls.token_dir, ignore_errors=True)

    def assert_code(self, code, call, *args, **kwargs):
        with self.assertRaises(cbloss.CblossError) as caught:
            call(*args, **kwargs)
        self.assertEqual(caught.exception.code, code, caught.exception.details)


class AdminAndComputeTokensTest(_TokenServerTestCase):
    """API.md section 5.2: CreateRun and DeleteRun need the admin token; an
    accumulating request the compute or admin token."""

    tokens = ("admin", "compute")

    def test_compute_token_accumulates_but_cannot_create_or_delete(self):
        self.admin.create_run("tok-run", num_classes=3, loss_type="seesaw")
        with cbloss.Client(self.server.target, timeout=10, token=COMPUTE_TOKEN) as compute:
            self.assert_code(grpc.StatusCode.PERMISSION_DENIED, compute.create_run, "tok-b",
                             num_classes=3)
            self.assert_code(grpc.StatusCode.PERMISSION_DENIED, compute.delete_run, "tok-run")
            r = compute.compute_loss(np.zeros((2, 3), dtype=np.float32), [0, 3],
                                     run="tok-run", accumulate=True)
            self.assertEqual(r.run_version, 2)
        self.assertEqual(self.admin.get_run("tok-run").statistics.background_seen, 1)
        self.admin.delete_run("tok-run", expected_version=2)


class AdminTokenOnlyTest(_TokenServerTestCase):
    """--admin_token_file only: computations are open, but an accumulating
    request changes state and needs a token."""

    tokens = ("admin",)

    def test_accumulating_needs_a_token(self):
        self.admin.create_run("open-run", num_classes=2, loss_type="seesaw")
        self.assert_code(grpc.StatusCode.UNAUTHENTICATED, self.client.create_run, "x",
                         num_classes=2)
        logits = np.zeros((1, 2), dtype=np.float32)
        r = self.client.compute_loss(logits, [1], run="open-run")  # reads stay open
        self.assertEqual(r.run_version, 1)
        self.assertEqual(self.client.get_run("open-run").version, 1)
        self.assert_code(grpc.StatusCode.UNAUTHENTICATED, self.client.compute_loss, logits,
                         [1], run="open-run", accumulate=True)
        self.assertEqual(self.admin.get_run("open-run").version, 1)
        r = self.admin.compute_loss(logits, [1], run="open-run", accumulate=True)
        self.assertEqual(r.run_version, 2)


class _UnavailableLossService:
    """An in-process grpc server whose ComputeLoss counts its calls and
    answers every one with UNAVAILABLE."""

    def __init__(self):
        self.calls = 0
        self.accumulating = []
        self._lock = threading.Lock()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        handler = grpc.method_handlers_generic_handler("cbloss.v1.LossService", {
            "ComputeLoss": grpc.unary_unary_rpc_method_handler(
                self._compute_loss,
                request_deserializer=pb.ComputeLossRequest.FromString,
                response_serializer=pb.ComputeLossResponse.SerializeToString),
        })
        self.server.add_generic_rpc_handlers((handler,))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def _compute_loss(self, request, context):
        with self._lock:
            self.calls += 1
            self.accumulating.append(request.accumulate)
        context.abort(grpc.StatusCode.UNAVAILABLE, "replica going away")

    def take_calls(self):
        with self._lock:
            calls, self.calls = self.calls, 0
            return calls

    def stop(self):
        self.server.stop(grace=None).wait(5)


class NoRetryTest(unittest.TestCase):
    """LOSS.md section 11: clients never retry an accumulating request."""

    def setUp(self):
        self.service = _UnavailableLossService()
        self.client = cbloss.Client("127.0.0.1:%d" % self.service.port, timeout=10)

    def tearDown(self):
        self.client.close()
        self.service.stop()

    def call(self, **kwargs):
        with self.assertRaises(cbloss.CblossError) as caught:
            self.client.compute_loss(np.zeros((1, 2), dtype=np.float32), [0],
                                     class_counts=[1, 1], **kwargs)
        self.assertEqual(caught.exception.code, grpc.StatusCode.UNAVAILABLE)
        self.assertEqual(caught.exception.details, "replica going away")
        return self.service.take_calls()

    def test_plain_call_is_retried_accumulating_call_is_not(self):
        self.assertGreater(self.call(run="r"), 1)
        self.assertEqual(self.call(run="r", accumulate=True), 1)
        self.assertEqual(self.call(run="r", accumulate=True), 1)
        self.assertGreater(self.call(), 1)  # the retrying channel is still the main one
        self.assertEqual(self.service.accumulating.count(True), 2)

    def test_accumulating_module_forward_is_sent_once(self):
        criterion = ClassBalancedLoss(self.client, run="r", class_counts=[1, 1])
        with self.assertRaises(cbloss.CblossError):
            criterion(torch.zeros(1, 2, requires_grad=True), torch.tensor([0]))
        self.assertEqual(self.service.take_calls(), 1)
        criterion.eval()
        with self.assertRaises(cbloss.CblossError):
            criterion(torch.zeros(1, 2, requires_grad=True), torch.tensor([0]))
        self.assertGreater(self.service.take_calls(), 1)

    def test_retry_unavailable_false_sends_everything_once(self):
        self.client.close()
        self.client = cbloss.Client("127.0.0.1:%d" % self.service.port, timeout=10,
                                    retry_unavailable=False)
        self.assertEqual(self.call(run="r"), 1)
        self.assertEqual(self.call(run="r", accumulate=True), 1)


if __name__ == "__main__":
    unittest.main()
