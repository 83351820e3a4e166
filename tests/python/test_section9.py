"""LOSS.md section 9 (count-aware losses and deferred re-weighting) through
cbloss.Client and cbloss.torch, on a real cbloss-server.

The reference below is written from LOSS.md sections 3, 5 and 9 only (not
from the service's engine, tests/golden or any paper's code): float64 values,
gradients from torch.autograd, on the float32 logits the service receives.
Section 2 class weights come from reference_loss.class_weights (checked
against LOSS.md's check values in test_client.py).
"""

import math
import unittest

import grpc
import numpy as np
import torch

import cbloss
from cbloss import enums
from cbloss._proto import cbloss_pb2 as pb
from cbloss.torch import ClassBalancedLoss, StreamingClassBalancedLoss
from loss_cases import assert_gradient_close, assert_loss_close
import reference_loss
from server_process import ServerTestCase

F64 = torch.float64
SECTION9 = ("balanced_softmax", "logit_adjusted", "ldam", "softmax_focal")
REDUCTIONS = ("mean", "sum", "element_mean", "weighted_mean", "none")

# LOSS.md section 9's check: counts [2,3,1,2,2], max_margin 0.5.
CHECK_COUNTS = [2, 3, 1, 2, 2]
CHECK_MARGINS = [0.42044821, 0.37991784, 0.5, 0.42044821, 0.42044821]

# Stored dataset for the "dataset" cases. Its defaults are none of LOSS.md's,
# so a module that leaves them unset checks the fallback to the dataset.
DATASET = "s9-ref"
DATASET_COUNTS = [90, 31, 12, 5, 2, 1]
DATASET_DEFAULTS = dict(beta=0.99, gamma=1.5, tau=0.6, max_margin=0.7, scale=5.0)


# -- reference (LOSS.md section 9) ---------------------------------------------

def ldam_margins(counts, max_margin):
    """Delta_j = max_margin * n_j^(-1/4) / max_k n_k^(-1/4)."""
    q = torch.as_tensor(counts, dtype=F64) ** -0.25
    return max_margin * q / q.max()


def section9(logits, counts, labels, *, loss_type, reduction, weights,
             sample_weights=None, ignore_index=-100, tau=1.0, max_margin=0.5, scale=30.0,
             gamma=2.0, upstream=None):
    """(z, L, l): z the float64 leaf, L the reduced scalar (for "none":
    sum_i u_i l_i), l the per-sample losses. `weights` is the class weight
    vector w (all 1 for DRW before its start epoch)."""
    z = torch.as_tensor(np.asarray(logits, dtype=np.float32)).to(F64).requires_grad_(True)
    b, c = z.shape
    n = torch.as_tensor(counts, dtype=F64)
    w = torch.as_tensor(weights, dtype=F64)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    kept = y != ignore_index
    yk = torch.where(kept, y, torch.zeros_like(y))[:, None]  # [B, 1] safe index
    s = torch.ones(b, dtype=F64) if sample_weights is None else \
        torch.as_tensor(np.asarray(sample_weights, dtype=np.float32)).to(F64)
    row = torch.where(kept, s * w[yk[:, 0]], torch.zeros(b, dtype=F64))  # s_i w_{y_i}

    def softmax_ce(zp):  # SOFTMAX of section 4 on adjusted logits z'
        return row * (torch.logsumexp(zp, dim=1) - zp.gather(1, yk)[:, 0])

    if loss_type == "balanced_softmax":
        per = softmax_ce(z + torch.log(n)[None, :])
    elif loss_type == "logit_adjusted":
        per = softmax_ce(z + tau * torch.log(n / n.sum())[None, :])
    elif loss_type == "ldam":
        is_target = torch.zeros(b, c, dtype=F64).scatter(1, yk, 1.0)
        per = softmax_ce(scale * (z - is_target * ldam_margins(counts, max_margin)[None, :]))
    elif loss_type == "softmax_focal":
        log_pt = torch.log_softmax(z, dim=1).gather(1, yk)[:, 0]
        one_minus_pt = -torch.expm1(log_pt)
        per = row * one_minus_pt ** gamma * (-log_pt)
    else:
        raise ValueError(loss_type)
    per = torch.where(kept, per, torch.zeros_like(per))

    if reduction == "none":
        u = torch.ones(b, dtype=F64) if upstream is None else \
            torch.as_tensor(np.asarray(upstream, dtype=np.float32)).to(F64)
        return z, (u * per).sum(), per
    d = {"mean": float(kept.sum()), "sum": 1.0, "element_mean": float(kept.sum()) * c,
         "weighted_mean": float(row.sum())}[reduction]
    return z, (per.sum() / d if d > 0 else per.sum() * 0.0), per


def reference_values(case, weights):
    """(value: scalar or per-sample vector, gradient) of a case; for "none"
    the gradient is that of sum_i grad_output_i l_i."""
    z, total, per = section9(
        case["logits"], case["counts"], case["labels"], loss_type=case["loss_type"],
        reduction=case["reduction"], weights=weights,
        sample_weights=case.get("sample_weights"), ignore_index=case["ignore_index"],
        upstream=case.get("grad_output"), **case["resolved"])
    (grad,) = torch.autograd.grad(total, z)
    value = per if case["reduction"] == "none" else total
    return value.detach().numpy(), grad.numpy()


# -- random cases ---------------------------------------------------------------

def random_case(rng, loss_type, reduction, source):
    """Inputs, the module's keyword arguments (`params`) and the parameter
    values the service should resolve (`resolved`)."""
    resolved = dict(tau=1.0, max_margin=0.5, scale=30.0, gamma=2.0)
    if source == "dataset":
        counts = list(DATASET_COUNTS)
        beta = DATASET_DEFAULTS["beta"]
        resolved.update({k: DATASET_DEFAULTS[k] for k in resolved})
        params = {}
        if rng.random() < 0.5:  # sometimes override a dataset default
            key = {"balanced_softmax": "beta", "logit_adjusted": "tau", "ldam": "scale",
                   "softmax_focal": "gamma"}[loss_type]
            value = {"beta": 0.9, "tau": 1.8, "scale": 2.0, "gamma": 0.5}[key]
            params[key] = value
            if key == "beta":
                beta = value
            else:
                resolved[key] = value
    else:
        c = int(rng.integers(2, 9))
        counts = [int(v) for v in rng.integers(1, 60, c)]
        counts[int(rng.integers(0, c))] = int(rng.integers(100, 2000))
        beta = float(rng.choice([0.0, 0.9, 0.999, 0.9999, 1.0]))
        resolved.update(tau=float(rng.choice([0.0, 0.5, 1.7])),
                        max_margin=float(rng.choice([0.2, 0.9])),
                        scale=float(rng.choice([1.5, 4.0, 16.0])),
                        gamma=float(rng.choice([0.0, 0.5, 1.5, 3.0])))
        params = dict(beta=beta, **resolved)  # every parameter set, used or not
    c = len(counts)
    b = int(rng.integers(1, 13))
    logits = rng.normal(0.0, 2.5, (b, c))
    if rng.random() < 0.3:  # a few far-out logits
        logits[rng.integers(0, b), rng.integers(0, c)] = float(rng.choice([-60.0, 45.0]))
    case = dict(loss_type=loss_type, reduction=reduction, counts=counts, beta=beta,
                params=params, resolved=resolved, logits=logits.astype(np.float32),
                ignore_index=-100)
    if rng.random() < 0.5:
        case["ignore_index"] = 255
        params["ignore_index"] = 255
    labels = rng.integers(0, c, b)
    labels[rng.random(b) < 0.2] = case["ignore_index"]
    case["labels"] = labels.astype(np.int64)
    if rng.random() < 0.6:
        case["sample_weights"] = rng.uniform(0.0, 2.0, b).astype(np.float32)
    if reduction == "none":
        case["grad_output"] = rng.normal(0.0, 1.5, b).astype(np.float32)
    return case


def describe(case):
    return "%s, %s, counts=%s, beta=%s, %s, params=%s, B=%d" % (
        case["loss_type"], case["reduction"], case["counts"], case["beta"], case["resolved"],
        case["params"], len(case["labels"]))


def run_module(module, case):
    logits = torch.tensor(case["logits"], requires_grad=True)
    sw = case.get("sample_weights")
    out = module(logits, torch.from_numpy(case["labels"]),
                 None if sw is None else torch.from_numpy(sw))
    if case["reduction"] == "none":
        out.backward(torch.from_numpy(case["grad_output"]))
    else:
        out.backward()
    return out.detach(), logits.grad


# -- tests -------------------------------------------------------------------------

class ReferenceSelfCheckTest(unittest.TestCase):
    """The reference against LOSS.md's check values and against identities
    that follow from the definitions (no server)."""

    def test_ldam_margins_check_values(self):
        np.testing.assert_allclose(ldam_margins(CHECK_COUNTS, 0.5).numpy(), CHECK_MARGINS,
                                   rtol=0, atol=5e-9)

    def test_special_cases_reduce_to_cross_entropy(self):
        rng = np.random.default_rng(1)
        logits = rng.normal(0, 2, (7, 5)).astype(np.float32)
        labels = rng.integers(0, 5, 7)
        w = np.ones(5)
        ce = torch.nn.functional.cross_entropy(torch.tensor(logits, dtype=F64),
                                               torch.tensor(labels)).item()
        for loss_type, counts, kw in (("balanced_softmax", [7] * 5, {}),
                                      ("logit_adjusted", [3, 9, 1, 4, 4], dict(tau=0.0)),
                                      ("logit_adjusted", [6] * 5, dict(tau=2.0)),
                                      ("softmax_focal", [3, 9, 1, 4, 4], dict(gamma=0.0))):
            _, loss, _ = section9(logits, counts, labels, loss_type=loss_type, reduction="mean",
                                  weights=w, **kw)
            self.assertAlmostEqual(loss.item(), ce, places=12, msg=loss_type)
        # LDAM with equal counts: every margin is max_margin.
        _, loss, _ = section9(logits, [4] * 5, labels, loss_type="ldam", reduction="mean",
                              weights=w, max_margin=0.3, scale=2.0)
        shifted = torch.tensor(logits, dtype=F64) * 2.0
        shifted[torch.arange(7), torch.tensor(labels)] -= 0.6
        want = torch.nn.functional.cross_entropy(shifted, torch.tensor(labels)).item()
        self.assertAlmostEqual(loss.item(), want, places=12)


class Section9ModuleTest(ServerTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.client.put_dataset(DATASET, DATASET_COUNTS, **DATASET_DEFAULTS)

    def module(self, case, source, cls=ClassBalancedLoss):
        kwargs = dict(loss_type=case["loss_type"], reduction=case["reduction"], **case["params"])
        if source == "dataset":
            return cls(self.client, dataset=DATASET, **kwargs)
        return cls(self.client, class_counts=case["counts"], **kwargs)

    def check(self, module, case):
        out, grad = run_module(module, case)
        weights = reference_loss.class_weights(case["counts"], case["beta"])
        value, ref_grad = reference_values(case, weights)
        result = module.last_result
        np.testing.assert_allclose(result.class_weights, weights.numpy(), rtol=1e-12, atol=0)
        config = result.resolved_config
        self.assertEqual((config.loss_type, config.reduction, config.beta),
                         (case["loss_type"], case["reduction"], case["beta"]))
        for key, want in case["resolved"].items():
            self.assertEqual(getattr(config, key), want, key)
        self.assertEqual(result.num_samples, int(np.sum(case["labels"] != case["ignore_index"])))
        assert_loss_close(self, out.numpy(), value,
                          "per-sample losses" if case["reduction"] == "none" else "loss")
        assert_gradient_close(self, grad.numpy(), ref_grad)

    def test_module_matches_reference_every_loss_reduction_and_source(self):
        rng = np.random.default_rng(20200707)
        checked = 0
        for loss_type in SECTION9:
            for reduction in REDUCTIONS:
                for source in ("dataset", "inline"):
                    for _ in range(2):
                        case = random_case(rng, loss_type, reduction, source)
                        with self.subTest(source=source, case=describe(case)):
                            self.check(self.module(case, source), case)
                        checked += 1
        self.assertEqual(checked, 4 * 5 * 2 * 2)

    def test_streaming_module_matches_reference(self):
        rng = np.random.default_rng(31)
        for loss_type in SECTION9:
            for reduction, source in (("mean", "dataset"), ("none", "inline")):
                case = random_case(rng, loss_type, reduction, source)
                module = self.module(case, source, StreamingClassBalancedLoss)
                try:
                    with self.subTest(source=source, case=describe(case)):
                        self.check(module, case)
                finally:
                    module.close()

    def test_client_compute_loss_matches_reference(self):
        rng = np.random.default_rng(5)
        for loss_type in SECTION9:
            case = random_case(rng, loss_type, "sum", "inline")
            with self.subTest(case=describe(case)):
                r = self.client.compute_loss(
                    case["logits"], case["labels"], class_counts=case["counts"],
                    loss_type=loss_type, reduction="sum",
                    sample_weights=case.get("sample_weights"), want_per_sample_losses=True,
                    **case["params"])
                weights = reference_loss.class_weights(case["counts"], case["beta"])
                value, grad = reference_values(case, weights)
                _, _, per = section9(case["logits"], case["counts"], case["labels"],
                                     loss_type=loss_type, reduction="sum", weights=weights,
                                     sample_weights=case.get("sample_weights"),
                                     ignore_index=case["ignore_index"], **case["resolved"])
                assert_loss_close(self, r.loss, value)
                assert_loss_close(self, r.per_sample_losses, per.detach().numpy(),
                                  "per-sample losses")
                assert_gradient_close(self, r.gradient, grad)

    def test_ldam_large_logits_stay_accurate(self):
        # scale 30 (LOSS.md's default) on |z| up to 1e3: z' up to 3e4.
        counts = [500, 40, 3]
        logits = np.array([[1000.0, -1000.0, 3.0], [2.0, 2.5, 2.4], [-7.0, 400.0, 399.9],
                           [0.1, 0.2, 0.3]], dtype=np.float32)
        labels = np.array([0, 1, 1, 2])
        module = ClassBalancedLoss(self.client, class_counts=counts, loss_type="ldam",
                                   reduction="none")
        case = dict(logits=logits, counts=counts, labels=labels, loss_type="ldam",
                    reduction="none", ignore_index=-100, grad_output=np.ones(4, np.float32),
                    resolved=dict(tau=1.0, max_margin=0.5, scale=30.0, gamma=2.0), beta=0.9999)
        out, grad = run_module(module, case)
        value, ref_grad = reference_values(case, reference_loss.class_weights(counts, 0.9999))
        assert_loss_close(self, out.numpy(), value, "per-sample losses")
        assert_gradient_close(self, grad.numpy(), ref_grad)

    def test_dataset_keeps_section9_defaults(self):
        got = self.client.get_dataset(DATASET)
        self.assertEqual((got.defaults.tau, got.defaults.max_margin, got.defaults.scale,
                          got.defaults.gamma, got.defaults.drw_start_epoch),
                         (0.6, 0.7, 5.0, 1.5, None))
        put = self.client.put_dataset("s9-defaults", [5, 4, 3], loss_type="ldam", tau=0.25,
                                      max_margin=0.4, scale=2.5, drw_start_epoch=7)
        self.assertEqual(put.defaults, cbloss.LossConfig(
            loss_type="ldam", tau=0.25, max_margin=0.4, scale=2.5, drw_start_epoch=7))
        self.assertEqual(self.client.get_dataset("s9-defaults").defaults, put.defaults)

    def test_loss_type_names(self):
        for name, number in (("balanced_softmax", pb.LOSS_TYPE_BALANCED_SOFTMAX),
                             ("logit_adjusted", pb.LOSS_TYPE_LOGIT_ADJUSTED),
                             ("ldam", pb.LOSS_TYPE_LDAM),
                             ("softmax_focal", pb.LOSS_TYPE_SOFTMAX_FOCAL)):
            self.assertEqual(enums.loss_type_number(name), number)
            self.assertEqual(enums.loss_type_number(name.upper()), number)
            self.assertEqual(enums.loss_type_name(number), name)

    def test_zero_count_is_failed_precondition_naming_the_class(self):
        logits = torch.randn(3, 4, requires_grad=True)
        labels = torch.tensor([0, 2, 3])
        self.client.put_dataset("s9-zero", [40, 9, 0, 3])
        for loss_type in ("ldam", "balanced_softmax", "logit_adjusted"):
            for source in ({"class_counts": [40, 0, 5, 2]}, {"dataset": "s9-zero"}):
                want = "class_counts[1]" if "class_counts" in source else "class_counts[2]"
                with self.subTest(loss_type=loss_type, source=source):
                    module = ClassBalancedLoss(self.client, loss_type=loss_type, **source)
                    with self.assertRaises(cbloss.CblossError) as caught:
                        module(logits, labels)
                    self.assertEqual(caught.exception.code, grpc.StatusCode.FAILED_PRECONDITION,
                                     caught.exception.details)
                    self.assertIn(want, caught.exception.details)
                    with self.assertRaises(cbloss.CblossError) as caught:
                        self.client.compute_loss(logits.detach(), labels, loss_type=loss_type,
                                                 **source)
                    self.assertEqual(caught.exception.code, grpc.StatusCode.FAILED_PRECONDITION)
                    self.assertIn(want, caught.exception.details)

    def test_softmax_focal_follows_section2_for_zero_counts(self):
        # LOSS.md section 9 (v1.2): SOFTMAX_FOCAL uses the counts only through
        # the weights of section 2: a zero count is weight 0 under a counting
        # scheme and 1 under NONE, never FAILED_PRECONDITION.
        rng = np.random.default_rng(11)
        logits = rng.normal(size=(6, 4)).astype(np.float32) * 2
        labels = np.array([0, 1, 2, 3, 1, 0])
        counts = [40, 0, 5, 2]
        for scheme in ("effective_number", "inverse_frequency", "none"):
            with self.subTest(scheme=scheme):
                r = self.client.compute_loss(logits, labels, class_counts=counts,
                                             loss_type="softmax_focal", reduction="sum",
                                             weighting=scheme, gamma=2.0,
                                             want_per_sample_losses=True)
                weights = reference_loss.class_weights(counts, 0.9999, scheme)
                z, value, per = section9(logits, counts, labels, loss_type="softmax_focal",
                                         reduction="sum", weights=weights, gamma=2.0)
                (grad,) = torch.autograd.grad(value, z)
                assert_loss_close(self, r.loss, value.item())
                assert_loss_close(self, r.per_sample_losses, per.detach().numpy(),
                                  "per-sample losses")
                assert_gradient_close(self, r.gradient, grad.numpy())
                if scheme != "none":  # class 1 carries no weight: its rows are 0
                    self.assertEqual(r.per_sample_losses[1], 0.0)
                    self.assertEqual(r.per_sample_losses[4], 0.0)

    def test_out_of_range_parameters_are_invalid_argument(self):
        logits = np.zeros((2, 3), np.float32)
        for loss_type, kw, field in (("logit_adjusted", dict(tau=-0.5), "tau"),
                                     ("ldam", dict(max_margin=0.0), "max_margin"),
                                     ("ldam", dict(scale=-1.0), "scale"),
                                     ("ldam", dict(scale=math.inf), "scale"),
                                     ("softmax_focal", dict(gamma=-1.0), "gamma")):
            with self.subTest(loss_type=loss_type, **kw):
                with self.assertRaises(cbloss.CblossError) as caught:
                    self.client.compute_loss(logits, [0, 1], class_counts=[3, 2, 1],
                                             loss_type=loss_type, **kw)
                self.assertEqual(caught.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
                self.assertIn(field, caught.exception.details)


class DeferredReweightingTest(ServerTestCase):
    """drw_start_epoch = E: epoch < E -> w = 1; epoch >= E or no epoch ->
    the configured weights."""

    COUNTS = [120, 30, 8, 2]
    BETA = 0.999

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.client.put_dataset("s9-drw", cls.COUNTS, loss_type="ldam", beta=cls.BETA,
                               max_margin=0.4, scale=3.0, drw_start_epoch=3)
        cls.configured = reference_loss.class_weights(cls.COUNTS, cls.BETA).numpy()

    def case(self, rng, loss_type, reduction, resolved):
        b = 9
        labels = rng.integers(0, 4, b)
        labels[1] = -100
        case = dict(logits=rng.normal(0, 2, (b, 4)).astype(np.float32), labels=labels,
                    counts=self.COUNTS, loss_type=loss_type, reduction=reduction,
                    ignore_index=-100, sample_weights=rng.uniform(0.2, 2, b).astype(np.float32),
                    resolved=dict(dict(tau=1.0, max_margin=0.5, scale=30.0, gamma=2.0),
                                  **resolved))
        if reduction == "none":
            case["grad_output"] = rng.normal(0, 1, b).astype(np.float32)
        return case

    def check_epochs(self, module, case, start, epochs):
        for epoch in epochs:
            deferred = epoch is not None and epoch < start
            with self.subTest(module=type(module).__name__, loss=case["loss_type"],
                              reduction=case["reduction"], epoch=epoch):
                module.epoch = epoch
                out, grad = run_module(module, case)
                result = module.last_result
                weights = np.ones(4) if deferred else self.configured
                np.testing.assert_allclose(result.class_weights, weights, rtol=1e-12, atol=0)
                self.assertEqual(result.resolved_config.drw_start_epoch, start)
                value, ref_grad = reference_values(case, weights)
                assert_loss_close(self, out.numpy(), value,
                                  "per-sample losses" if case["reduction"] == "none" else "loss")
                assert_gradient_close(self, grad.numpy(), ref_grad)

    def test_dataset_default_start_epoch(self):
        rng = np.random.default_rng(8)
        for reduction in ("mean", "weighted_mean", "none"):
            case = self.case(rng, "ldam", reduction, dict(max_margin=0.4, scale=3.0))
            module = ClassBalancedLoss(self.client, dataset="s9-drw", loss_type=None,
                                       reduction=reduction)
            self.assertIsNone(module.epoch)
            self.check_epochs(module, case, 3, [0, 2, 3, 4, 50, None])

    def test_inline_start_epoch_in_module_config(self):
        rng = np.random.default_rng(9)
        for loss_type, extra in (("balanced_softmax", {}), ("logit_adjusted", dict(tau=0.4)),
                                 ("softmax_focal", dict(gamma=0.5)),
                                 ("ldam", dict(max_margin=0.6, scale=2.0))):
            for reduction in ("sum", "weighted_mean"):
                case = self.case(rng, loss_type, reduction, extra)
                module = ClassBalancedLoss(self.client, class_counts=self.COUNTS,
                                           loss_type=loss_type, reduction=reduction,
                                           beta=self.BETA, drw_start_epoch=5, **extra)
                self.check_epochs(module, case, 5, [4, 5, 6])

    def test_streaming_module(self):
        rng = np.random.default_rng(10)
        case = self.case(rng, "ldam", "mean", dict(max_margin=0.4, scale=3.0))
        module = StreamingClassBalancedLoss(self.client, dataset="s9-drw", loss_type=None)
        try:
            self.check_epochs(module, case, 3, [1, 3, 2, None])
        finally:
            module.close()

    def test_client_epoch_and_request_override(self):
        logits = np.random.default_rng(11).normal(size=(5, 4)).astype(np.float32)
        labels = [0, 1, 2, 3, 3]
        # The request's drw_start_epoch (1) overrides the dataset's (3).
        for epoch, start, deferred in ((0, 1, True), (1, 1, False), (2, 1, False),
                                       (2, None, True), (3, None, False), (None, None, False),
                                       (np.int64(2), None, True), (torch.tensor(7), 8, True)):
            with self.subTest(epoch=epoch, drw_start_epoch=start):
                r = self.client.compute_loss(logits, labels, dataset="s9-drw", epoch=epoch,
                                             drw_start_epoch=start)
                weights = np.ones(4) if deferred else self.configured
                np.testing.assert_allclose(r.class_weights, weights, rtol=1e-12, atol=0)
                self.assertEqual(r.resolved_config.drw_start_epoch, 3 if start is None else start)
                case = dict(logits=logits, labels=np.array(labels), counts=self.COUNTS,
                            loss_type="ldam", reduction="mean", ignore_index=-100,
                            resolved=dict(tau=1.0, max_margin=0.4, scale=3.0, gamma=2.0))
                value, grad = reference_values(case, weights)
                assert_loss_close(self, r.loss, value)
                assert_gradient_close(self, r.gradient, grad)
        # An epoch without drw_start_epoch anywhere: the configured weights.
        r = self.client.compute_loss(logits, labels, class_counts=self.COUNTS,
                                     loss_type="ldam", beta=self.BETA, epoch=0)
        np.testing.assert_allclose(r.class_weights, self.configured, rtol=1e-12, atol=0)

    def test_epoch_goes_on_the_wire_and_is_checked(self):
        request = cbloss.client.build_loss_request(np.zeros((1, 2)), [0], class_counts=[1, 1],
                                                   epoch=np.int32(4), drw_start_epoch=2)
        self.assertTrue(request.HasField("epoch"))
        self.assertEqual((request.epoch, request.config.drw_start_epoch), (4, 2))
        request = cbloss.client.build_loss_request(np.zeros((1, 2)), [0], class_counts=[1, 1])
        self.assertFalse(request.HasField("epoch"))
        self.assertFalse(request.config.HasField("drw_start_epoch"))
        for bad, error in ((1.5, TypeError), (True, TypeError), ("3", TypeError),
                           (2 ** 31, ValueError)):
            with self.subTest(epoch=bad):
                with self.assertRaises(error):
                    cbloss.client.build_loss_request(np.zeros((1, 2)), [0],
                                                      class_counts=[1, 1], epoch=bad)
        module = ClassBalancedLoss(self.client, class_counts=[3, 1], loss_type="ldam")
        module.epoch = 2.0
        with self.assertRaises(TypeError):
            module(torch.zeros(1, 2, requires_grad=True), torch.tensor([0]))


if __name__ == "__main__":
    unittest.main()
