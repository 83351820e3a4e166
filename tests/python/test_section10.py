"""LOSS.md section 10 (SEESAW, EQL, EQL_V2, VS and focal_alpha) through
cbloss.Client and cbloss.torch, on a real cbloss-server.

The expected numbers are those of tests/golden/golden_cases_section10.json
(a float64 PyTorch oracle written from LOSS.md; schema in
tests/golden/README.md, "Section 10"), compared with the tolerances of
LOSS.md section 7. Rules this version follows:

- EQL_V2 needs a run (LOSS.md section 11): without one, every EQL_V2
  request that passes validation is INVALID_ARGUMENT naming `run`. The
  golden cases of a fresh run (no EQL_V2 update yet) go through a new run;
  the others need statistics no API call can set, and are covered by the C++
  engine tests.
- The golden sequences (`sequence` in the file: eql_v2_sequence,
  seesaw_sequence) are sent step by step with `accumulate` on a fresh run;
  the run's statistics after each step are checked too.
- SEESAW, EQL and EQL_V2 accept weighting unset or NONE, ignore a dataset's
  default weighting, and take label C as a background row.
"""

import json
import math
import os
import unittest

import grpc
import numpy as np
import torch

import cbloss
from cbloss.torch import ClassBalancedLoss
from loss_cases import assert_gradient_close, assert_loss_close
import reference_loss
from server_process import ServerTestCase

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "golden",
                      "golden_cases_section10.json")
with open(GOLDEN) as f:
    _GOLDEN = json.load(f)
CASES = {case["name"]: case for case in _GOLDEN["cases"]}
INVALID = _GOLDEN["invalid"]

DETECTION = ("SEESAW", "EQL", "EQL_V2")
SECTION10_PARAMS = ("seesaw_p", "seesaw_q", "seesaw_eps", "eql_lambda", "eqlv2_gamma",
                    "eqlv2_mu", "eqlv2_alpha", "vs_gamma")
# LOSS.md section 10's defaults (tau is section 9's, shared with VS).
DEFAULTS = dict(seesaw_p=0.8, seesaw_q=2.0, seesaw_eps=0.01, eql_lambda=0.00177,
                eqlv2_gamma=12.0, eqlv2_mu=0.8, eqlv2_alpha=4.0, vs_gamma=0.3, tau=1.0)
NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
TORCH_16BIT = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def number(value):
    return NON_FINITE.get(value, value) if isinstance(value, str) else value


def case_params(case, weighting_unset=False):
    """Keyword arguments of Client.compute_loss for a case's LossConfig:
    every parameter the case gives (the unused ones are null in the file)."""
    params = dict(loss_type=case["loss_type"].lower(), reduction=case["reduction"].lower(),
                  weighting=None if weighting_unset else case["scheme"].lower(),
                  beta=case["beta"], gamma=case["gamma"], ignore_index=case["ignore_index"])
    for name in SECTION10_PARAMS + ("tau", "focal_alpha"):
        if case.get(name) is not None:
            params[name] = number(case[name])
    return params


def case_logits(case, dtype="float32"):
    """The case's logits [B, C]: float32 numpy, or a 16-bit torch tensor
    (exact: the file's logits are the decoded 16-bit values)."""
    z = np.asarray(case["logits"], dtype=np.float32).reshape(case["rows"], case["cols"])
    if dtype == "float32":
        return z
    return torch.from_numpy(z).to(TORCH_16BIT[dtype])


def case_inputs(case):
    """labels / targets, sample_weights and upstream of a case, as keywords."""
    inputs = {}
    if "labels" in case:
        inputs["labels"] = np.asarray(case["labels"], dtype=np.int64)
    else:
        inputs["targets"] = np.asarray(case["targets"], dtype=np.float32).reshape(
            case["rows"], case["cols"])
    if "sample_weights" in case:
        inputs["sample_weights"] = np.asarray(case["sample_weights"], dtype=np.float32)
    if "upstream" in case:
        inputs["upstream"] = np.asarray(case["upstream"], dtype=np.float32)
    return inputs


def expected_gradient(case):
    return np.asarray(case["expected"]["gradient"]).reshape(case["rows"], case["cols"])


class GoldenCasesTest(ServerTestCase):
    """Every golden case through Client.compute_loss, inline class counts."""

    def compute(self, case, dtype="float32", weighting_unset=False, **extra):
        inputs = case_inputs(case)
        labels = inputs.pop("labels", None)
        targets = inputs.pop("targets", None)
        return self.client.compute_loss(
            case_logits(case, dtype), labels, targets, class_counts=case["class_counts"],
            want_per_sample_losses=True, **inputs, **extra,
            **case_params(case, weighting_unset))

    def check_result(self, case, r):
        want = case["expected"]
        assert_loss_close(self, r.loss, want["loss"])
        assert_loss_close(self, r.per_sample_losses, want["per_sample_losses"],
                          "per-sample losses")
        self.assertEqual(r.gradient.shape, (case["rows"], case["cols"]))
        assert_gradient_close(self, r.gradient, expected_gradient(case))
        self.assertEqual(r.num_samples, want["num_samples"])
        if "class_weights" in want:
            np.testing.assert_allclose(r.class_weights, want["class_weights"],
                                       rtol=1e-12, atol=0)
        config = r.resolved_config
        self.assertEqual((config.loss_type, config.reduction),
                         (case["loss_type"].lower(), case["reduction"].lower()))
        self.assertEqual(config.weighting, case["scheme"].lower())
        for name in SECTION10_PARAMS + ("tau", "focal_alpha"):
            if case.get(name) is not None:
                self.assertEqual(getattr(config, name), case[name], name)
        if case.get("focal_alpha") is None:
            self.assertIsNone(config.focal_alpha)

    def test_valid_cases_float32(self):
        count = 0
        for i, case in enumerate(CASES.values()):
            if case["loss_type"] == "EQL_V2":
                continue
            # Detection losses: weighting NONE and weighting unset alternate.
            unset = case["loss_type"] in DETECTION and i % 2 == 1
            with self.subTest(case=case["name"], weighting_unset=unset):
                self.check_result(case, self.compute(case, weighting_unset=unset))
                count += 1
        self.assertGreaterEqual(count, 160)

    def test_detection_losses_accept_weighting_unset_and_none(self):
        for name in ("seesaw_mean_background", "seesaw_none_weighted", "eql_sum_background",
                     "eql_mean_zero_counts"):
            for unset in (False, True):
                with self.subTest(case=name, weighting_unset=unset):
                    self.check_result(CASES[name],
                                      self.compute(CASES[name], weighting_unset=unset))

    def test_valid_cases_in_their_16_bit_dtype(self):
        count = 0
        for case in CASES.values():
            dtype = case["logits_dtype"]
            if dtype == "float32" or case["loss_type"] == "EQL_V2":
                continue
            with self.subTest(case=case["name"], dtype=dtype):
                z = case_logits(case, dtype)
                bits = z.view(torch.int16).numpy().view(np.uint16)
                np.testing.assert_array_equal(bits.ravel(), case["logits_bits"])
                self.check_result(case, self.compute(case, dtype))
                # The gradient in the same 16-bit type: one rounding to
                # nearest (2^-9 relative for bfloat16, 2^-12 for float16).
                r = self.compute(case, dtype, gradient_dtype=dtype)
                self.assertEqual(r.gradient_dtype, dtype)
                rel = 2.0 ** -8 if dtype == "bfloat16" else 2.0 ** -10
                assert_gradient_close(self, np.asarray(r.gradient, np.float64),
                                      expected_gradient(case), rel_elem=rel)
                count += 1
        self.assertEqual(count, 10)

    def test_valid_cases_through_a_stream(self):
        with self.client.stream_loss() as stream:
            for case in CASES.values():
                if case["loss_type"] == "EQL_V2" or case["cols"] > 100:
                    continue
                with self.subTest(case=case["name"]):
                    inputs = case_inputs(case)
                    r = stream.compute_loss(
                        case_logits(case), inputs.pop("labels", None),
                        inputs.pop("targets", None), class_counts=case["class_counts"],
                        want_per_sample_losses=True, **inputs, **case_params(case))
                    self.check_result(case, r)

    def test_eql_v2_without_a_run_is_invalid_argument(self):
        count = 0
        for case in CASES.values():
            if case["loss_type"] != "EQL_V2":
                continue
            for unset in (False, True):
                with self.subTest(case=case["name"], weighting_unset=unset):
                    with self.assertRaises(cbloss.CblossError) as caught:
                        self.compute(case, weighting_unset=unset)
                    self.assertEqual(caught.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
                    self.assertEqual(caught.exception.details,
                                     "config.loss_type = eql_v2 needs a run (LOSS.md section "
                                     "11): name one in run")
            count += 1
        self.assertGreaterEqual(count, 30)

    def test_invalid_cases(self):
        self.assertEqual(len(INVALID), 67)
        for case in INVALID:
            with self.subTest(case=case["name"], field=case["field"]):
                with self.assertRaises(cbloss.CblossError) as caught:
                    self.compute(case)
                self.assertEqual(caught.exception.code.name, case["expected_status"],
                                 caught.exception.details)
                self.assertIn(case["field"], caught.exception.details)


class GoldenRunsTest(ServerTestCase):
    """The golden cases that a run can reproduce, through runs."""

    def compute(self, case, run, accumulate):
        inputs = case_inputs(case)
        return self.client.compute_loss(
            case_logits(case), inputs.pop("labels"), run=run, accumulate=accumulate,
            want_per_sample_losses=True, **inputs, **case_params(case))

    check_result = GoldenCasesTest.check_result

    def test_eql_v2_fresh_run_cases(self):
        count = 0
        for case in CASES.values():
            if case["loss_type"] != "EQL_V2" or case["eqlv2_updates"] != 0 or \
                    "sequence" in case:
                continue
            with self.subTest(case=case["name"]):
                run = case["name"].replace("_", "-")
                self.client.create_run(run, num_classes=case["cols"])
                r = self.compute(case, run, accumulate=False)
                self.check_result(case, r)
                self.assertEqual(r.run_version, 1)
                # Accumulating: the same numbers (weights from before the
                # request), then P and Q hold this request's deltas.
                r = self.compute(case, run, accumulate=True)
                self.check_result(case, r)
                self.assertEqual(r.run_version, 2)
                stats = self.client.get_run(run).statistics
                assert_loss_close(self, stats.positive_gradient,
                                  case["expected"]["positive_gradient_delta"], "P")
                assert_loss_close(self, stats.negative_gradient,
                                  case["expected"]["negative_gradient_delta"], "Q")
                count += 1
        self.assertEqual(count, 7)

    def test_golden_sequences_step_by_step(self):
        sequences = {}
        for case in CASES.values():
            if "sequence" in case:
                sequences.setdefault(case["sequence"]["run"], []).append(case)
        self.assertEqual(sorted(sequences), ["eql_v2_sequence", "seesaw_sequence"])
        for name, steps in sorted(sequences.items()):
            steps.sort(key=lambda case: case["sequence"]["step"])
            run = name.replace("_", "-")
            C = steps[0]["cols"]
            self.client.create_run(run, num_classes=C)
            P, Q = np.zeros(C), np.zeros(C)
            for step, case in enumerate(steps):
                with self.subTest(case=case["name"]):
                    self.assertEqual(case["sequence"]["step"], step)
                    if case["loss_type"] == "EQL_V2":
                        # The file's statistics before this step are the sums
                        # of the earlier steps' deltas.
                        assert_loss_close(self, case["eqlv2_positive"], P, "file's P")
                        assert_loss_close(self, case["eqlv2_negative"], Q, "file's Q")
                        self.assertEqual(case["eqlv2_updates"], step)
                    r = self.compute(case, run, accumulate=True)
                    self.check_result(case, r)
                    self.assertEqual(r.run_version, 2 + step)
                    stats = self.client.get_run(run).statistics
                    if case["loss_type"] == "SEESAW":
                        # class_counts: the seen counts, this step's included.
                        self.assertEqual(stats.seen_counts, case["class_counts"])
                    else:
                        P = P + case["expected"]["positive_gradient_delta"]
                        Q = Q + case["expected"]["negative_gradient_delta"]
                        assert_loss_close(self, stats.positive_gradient, P, "P")
                        assert_loss_close(self, stats.negative_gradient, Q, "Q")
                        self.assertEqual(stats.eqlv2_updates, step + 1)
            self.assertEqual(step, len(steps) - 1)


class SeesawModuleTest(ServerTestCase):
    """cbloss.torch.ClassBalancedLoss(loss_type="seesaw") in a training step:
    the parameters' gradient is the service's dL/dz, the golden one."""

    def test_training_step_matches_golden_gradient(self):
        case = CASES["seesaw_mean_weighted"]  # sample weights, background and ignored rows
        b, c = case["rows"], case["cols"]
        module = ClassBalancedLoss(self.client, class_counts=case["class_counts"],
                                   loss_type="seesaw", reduction="mean",
                                   seesaw_p=case["seesaw_p"], seesaw_q=case["seesaw_q"],
                                   seesaw_eps=case["seesaw_eps"])
        # logits = x W^T with x = I: dL/dW = G^T.
        layer = torch.nn.Linear(b, c, bias=False)
        z0 = torch.from_numpy(case_logits(case))
        with torch.no_grad():
            layer.weight.copy_(z0.t())
        optimizer = torch.optim.SGD(layer.parameters(), lr=0.5)
        optimizer.zero_grad()
        loss = module(layer(torch.eye(b)), torch.tensor(case["labels"]),
                      torch.tensor(case["sample_weights"]))
        loss.backward()
        grad = expected_gradient(case)
        assert_loss_close(self, loss.item(), case["expected"]["loss"])
        assert_gradient_close(self, layer.weight.grad.t().double().numpy(), grad)
        config = module.last_result.resolved_config
        self.assertEqual((config.loss_type, config.weighting, config.seesaw_p),
                         ("seesaw", "none", case["seesaw_p"]))
        self.assertEqual(module.last_result.num_samples, case["expected"]["num_samples"])
        optimizer.step()
        np.testing.assert_allclose(layer.weight.detach().t().double().numpy(),
                                   z0.double().numpy() - 0.5 * grad, rtol=0, atol=1e-6)
        # A second step runs from the new logits.
        optimizer.zero_grad()
        loss2 = module(layer(torch.eye(b)), torch.tensor(case["labels"]),
                       torch.tensor(case["sample_weights"]))
        loss2.backward()
        self.assertTrue(math.isfinite(loss2.item()))
        self.assertNotEqual(loss2.item(), loss.item())

    def test_none_reduction_backward_with_upstream(self):
        case = CASES["seesaw_none_weighted"]
        module = ClassBalancedLoss(self.client, class_counts=case["class_counts"],
                                   loss_type="seesaw", reduction="none")
        logits = torch.tensor(case_logits(case), requires_grad=True)
        out = module(logits, torch.tensor(case["labels"]), torch.tensor(case["sample_weights"]))
        assert_loss_close(self, out.detach().numpy(), case["expected"]["per_sample_losses"],
                          "per-sample losses")
        out.backward(torch.tensor(case["upstream"]))  # G of sum_i u_i l_i
        assert_gradient_close(self, logits.grad.numpy(), expected_gradient(case))


def vs_reference(logits, labels, counts, beta, vs_gamma, tau):
    """LOSS.md section 10 VS, MEAN (no ignored rows, s = 1): SOFTMAX of
    z / Delta + tau log(n / sum n) with the section 2 class weights; float64
    value and autograd gradient."""
    z = torch.tensor(logits, dtype=torch.float64, requires_grad=True)
    n = torch.tensor(counts, dtype=torch.float64)
    delta = (n.max() / n) ** vs_gamma
    zp = z / delta + tau * torch.log(n / n.sum())
    w = reference_loss.class_weights(counts, beta)
    y = torch.tensor(labels)
    per = w[y] * (torch.logsumexp(zp, dim=1) - zp.gather(1, y[:, None])[:, 0])
    loss = per.mean()
    (grad,) = torch.autograd.grad(loss, z)
    return loss.item(), grad.numpy()


class DatasetDefaultsTest(ServerTestCase):

    COUNTS = [400, 90, 20, 3]

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.client.put_dataset("s10-vs", cls.COUNTS, loss_type="vs", vs_gamma=0.5, tau=0.7)

    def setUp(self):
        rng = np.random.default_rng(10)
        self.logits = rng.normal(0, 2, (6, 4)).astype(np.float32)
        self.labels = [0, 1, 2, 3, 3, 1]

    def test_vs_defaults_resolved_from_the_dataset(self):
        stored = self.client.get_dataset("s10-vs")
        self.assertEqual((stored.defaults.loss_type, stored.defaults.vs_gamma,
                          stored.defaults.tau), ("vs", 0.5, 0.7))
        r = self.client.compute_loss(self.logits, self.labels, dataset="s10-vs")
        config = r.resolved_config
        self.assertEqual((config.loss_type, config.vs_gamma, config.tau), ("vs", 0.5, 0.7))
        self.assertGreaterEqual(r.dataset_version, 1)
        loss, grad = vs_reference(self.logits, self.labels, self.COUNTS, 0.9999, 0.5, 0.7)
        assert_loss_close(self, r.loss, loss)
        assert_gradient_close(self, r.gradient, grad)

    def test_request_overrides_vs_defaults(self):
        r = self.client.compute_loss(self.logits, self.labels, dataset="s10-vs", vs_gamma=0.2)
        config = r.resolved_config
        self.assertEqual((config.loss_type, config.vs_gamma, config.tau), ("vs", 0.2, 0.7))
        loss, grad = vs_reference(self.logits, self.labels, self.COUNTS, 0.9999, 0.2, 0.7)
        assert_loss_close(self, r.loss, loss)
        assert_gradient_close(self, r.gradient, grad)

    def test_dataset_weighting_does_not_apply_to_detection_losses(self):
        for name in ("seesaw_mean_background", "eql_sum_background"):
            case = CASES[name]
            dataset = "s10-" + name.replace("_", "-")
            self.client.put_dataset(dataset, case["class_counts"],
                                    loss_type=case["loss_type"].lower(),
                                    weighting="inverse_frequency",
                                    reduction=case["reduction"].lower())
            params = {k: v for k, v in case_params(case, weighting_unset=True).items()
                      if k not in ("loss_type", "reduction", "weighting")}
            with self.subTest(case=name):
                r = self.client.compute_loss(case_logits(case), case["labels"], dataset=dataset,
                                             want_per_sample_losses=True, **params)
                self.assertEqual((r.resolved_config.loss_type, r.resolved_config.weighting),
                                 (case["loss_type"].lower(), "none"))
                assert_loss_close(self, r.loss, case["expected"]["loss"])
                assert_gradient_close(self, r.gradient, expected_gradient(case))
                # A weighting the request sets must still be NONE.
                with self.assertRaises(cbloss.CblossError) as caught:
                    self.client.compute_loss(case_logits(case), case["labels"],
                                             dataset=dataset, weighting="inverse_frequency")
                self.assertEqual(caught.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
                self.assertIn("weighting", caught.exception.details)


class ResolvedConfigTest(ServerTestCase):
    """resolved_config fills every section 10 field (LOSS.md's default when
    neither the request nor the dataset sets it); focal_alpha only when set."""

    def test_every_section10_field_filled(self):
        logits = np.random.default_rng(3).normal(size=(3, 3)).astype(np.float32)
        labels = [0, 1, 2]
        for loss_type in ("softmax", "sigmoid", "focal", "softmax_bce", "balanced_softmax",
                          "logit_adjusted", "ldam", "softmax_focal", "seesaw", "eql", "vs"):
            with self.subTest(loss_type=loss_type):
                r = self.client.compute_loss(logits, labels, class_counts=[5, 3, 1],
                                             loss_type=loss_type)
                config = r.resolved_config
                for name, value in DEFAULTS.items():
                    self.assertEqual(getattr(config, name), value, name)
                self.assertIsNone(config.focal_alpha)

    def test_set_values_and_focal_alpha(self):
        logits = np.random.default_rng(4).normal(size=(3, 3)).astype(np.float32)
        set_values = dict(seesaw_p=1.5, seesaw_q=0.5, seesaw_eps=0.2, eql_lambda=0.3,
                          eqlv2_gamma=6.0, eqlv2_mu=-1.5, eqlv2_alpha=2.0, vs_gamma=0.9,
                          tau=0.25)
        for loss_type in ("focal", "sigmoid"):
            with self.subTest(loss_type=loss_type):
                r = self.client.compute_loss(logits, [0, 1, 2], class_counts=[5, 3, 1],
                                             loss_type=loss_type, focal_alpha=0.25,
                                             **set_values)
                config = r.resolved_config
                self.assertEqual(config.focal_alpha, 0.25)
                for name, value in set_values.items():
                    self.assertEqual(getattr(config, name), value, name)
        # focal_alpha from a dataset's defaults.
        self.client.put_dataset("s10-alpha", [5, 3, 1], loss_type="focal", focal_alpha=0.75)
        r = self.client.compute_loss(logits, [0, 1, 2], dataset="s10-alpha")
        self.assertEqual((r.resolved_config.loss_type, r.resolved_config.focal_alpha),
                         ("focal", 0.75))
        for name, value in DEFAULTS.items():
            self.assertEqual(getattr(r.resolved_config, name), value, name)


if __name__ == "__main__":
    unittest.main()
