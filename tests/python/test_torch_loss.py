"""cbloss.torch.ClassBalancedLoss against a float64 PyTorch autograd
reference of LOSS.md (reference_loss.py), on a real cbloss-server."""

import unittest

import grpc
import numpy as np
import torch

import cbloss
from cbloss.torch import ClassBalancedLoss
import loss_cases
from loss_cases import assert_gradient_close, assert_loss_close
import reference_loss
from server_process import ServerTestCase


class ClassBalancedLossTest(ServerTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.client.put_dataset(loss_cases.DATASET_NAME, loss_cases.DATASET_COUNTS,
                               **loss_cases.DATASET_DEFAULTS)

    def module(self, case, source, **overrides):
        kwargs = dict(loss_type=case["loss_type"], reduction=case["reduction"])
        kwargs.update(case["params"])
        kwargs.update(overrides)
        if source == "dataset":
            return ClassBalancedLoss(self.client, dataset=loss_cases.DATASET_NAME, **kwargs)
        return ClassBalancedLoss(self.client, class_counts=case["counts"], **kwargs)

    def check_case(self, case, source):
        out, grad = loss_cases.run_module(self.module(case, source), case)
        ref_value, ref_grad = loss_cases.reference_of(case)
        self.assertEqual(out.dtype, torch.float32)
        self.assertEqual(grad.dtype, torch.float32)
        assert_loss_close(self, out.numpy(), ref_value,
                          "per-sample losses" if case["reduction"] == "none" else "loss")
        assert_gradient_close(self, grad.numpy(), ref_grad)

    def test_value_and_gradient_match_float64_reference(self):
        rng = np.random.default_rng(20190615)
        checked = 0
        for loss_type in loss_cases.LOSS_TYPES:
            modes = ["labels", "targets"] if loss_type in ("sigmoid", "focal") else ["labels"]
            for mode in modes:
                for reduction in loss_cases.REDUCTIONS:
                    if mode == "targets" and reduction == "weighted_mean":
                        continue
                    for source in ("dataset", "inline"):
                        for _ in range(2):
                            case = loss_cases.random_case(rng, loss_type, mode, reduction,
                                                          source)
                            with self.subTest(source=source, case=loss_cases.describe(case)):
                                self.check_case(case, source)
                            checked += 1
        self.assertEqual(checked, 2 * 2 * (4 * 5 + 2 * 4))

    def test_dataset_defaults_fill_unset_parameters(self):
        # The module leaves beta/gamma unset: the dataset's 0.99 / 1.5 apply.
        module = ClassBalancedLoss(self.client, dataset=loss_cases.DATASET_NAME,
                                   loss_type="focal")
        logits = torch.randn(5, 6, requires_grad=True)
        module(logits, torch.tensor([0, 1, 2, 3, 4]))
        config = module.last_result.resolved_config
        self.assertEqual((config.loss_type, config.beta, config.gamma, config.reduction),
                         ("focal", 0.99, 1.5, "mean"))
        np.testing.assert_allclose(module.last_result.class_weights,
                                   reference_loss.class_weights(loss_cases.DATASET_COUNTS,
                                                                0.99).numpy(), rtol=1e-12)

    def test_reduction_from_dataset_default_none_gives_per_sample_losses(self):
        self.client.put_dataset("py-none", [5, 3, 2], reduction="none", loss_type="sigmoid")
        module = ClassBalancedLoss(self.client, dataset="py-none", loss_type=None,
                                   reduction=None)
        rng = np.random.default_rng(7)
        case = dict(loss_type="sigmoid", reduction="none", counts=[5, 3, 2], beta=0.9999,
                    gamma=2.0, params={}, ignore_index=-100,
                    logits=rng.normal(size=(4, 3)).astype(np.float32),
                    labels=np.array([0, 2, 1, 1]),
                    grad_output=np.array([1.0, -2.0, 0.5, 3.0], dtype=np.float32))
        out, grad = loss_cases.run_module(module, case)
        ref_value, ref_grad = loss_cases.reference_of(case)
        self.assertEqual(tuple(out.shape), (4,))
        assert_loss_close(self, out.numpy(), ref_value)
        assert_gradient_close(self, grad.numpy(), ref_grad)

    def test_scalar_grad_output_scales_gradient(self):
        rng = np.random.default_rng(11)
        case = loss_cases.random_case(rng, "focal", "labels", "mean", "inline")
        logits = torch.tensor(case["logits"], requires_grad=True)
        loss = self.module(case, "inline")(logits, torch.from_numpy(case["labels"]))
        (2.5 * loss).backward()
        _, ref_grad = loss_cases.reference_of(case)
        assert_gradient_close(self, logits.grad.numpy(), 2.5 * ref_grad)

    def test_bfloat16_logits_round_trip(self):
        rng = np.random.default_rng(3)
        case = loss_cases.random_case(rng, "focal", "labels", "mean", "inline")
        case.pop("sample_weights", None)
        # The reference sees the bf16 values the service receives.
        logits_bf16 = torch.tensor(case["logits"]).to(torch.bfloat16)
        case["logits"] = logits_bf16.to(torch.float64).numpy()
        sent = []
        client = cbloss.Client(self.server.target, timeout=30)
        original = client._stub.ComputeLoss

        def capture(request, **kwargs):
            sent.append(request)
            return original(request, **kwargs)

        client._stub.ComputeLoss = capture
        module = ClassBalancedLoss(client, class_counts=case["counts"], loss_type="focal",
                                   **case["params"])
        logits = logits_bf16.clone().requires_grad_(True)
        loss = module(logits, torch.from_numpy(case["labels"]))
        loss.backward()
        client.close()
        self.assertEqual(sent[0].logits.dtype, cbloss.v1.cbloss_pb2.DTYPE_BFLOAT16)
        self.assertEqual(len(sent[0].logits.data), 2 * logits.numel())
        self.assertEqual(sent[0].gradient_dtype, cbloss.v1.cbloss_pb2.DTYPE_BFLOAT16)
        self.assertEqual(module.last_result.gradient_dtype, "bfloat16")
        self.assertEqual(logits.grad.dtype, torch.bfloat16)
        self.assertEqual(loss.dtype, torch.float32)
        ref_value, ref_grad = loss_cases.reference_of(case)
        assert_loss_close(self, loss.item(), ref_value)
        # bf16 keeps 8 significant bits: rounding to nearest is within 2^-9.
        assert_gradient_close(self, logits.grad.to(torch.float64).numpy(), ref_grad,
                              rel_elem=2.0 ** -8)

    def test_float16_and_float64_logits(self):
        rng = np.random.default_rng(5)
        for dtype in (torch.float16, torch.float64):
            case = loss_cases.random_case(rng, "softmax", "labels", "sum", "inline")
            case["logits"] = torch.tensor(case["logits"]).to(dtype).to(torch.float32).numpy()
            with self.subTest(dtype=str(dtype)):
                out, grad = loss_cases.run_module(self.module(case, "inline"), case, dtype)
                ref_value, ref_grad = loss_cases.reference_of(case)
                self.assertEqual(grad.dtype, dtype)
                assert_loss_close(self, out.item(), ref_value)
                rel = 2.0 ** -10 if dtype == torch.float16 else 0.0
                assert_gradient_close(self, grad.to(torch.float64).numpy(), ref_grad,
                                      rel_elem=rel)

    def test_per_sample_bfloat16_gradient_is_rounded_once(self):
        rng = np.random.default_rng(9)
        case = loss_cases.random_case(rng, "sigmoid", "targets", "none", "inline")
        case["logits"] = torch.tensor(case["logits"]).to(torch.bfloat16).float().numpy()
        out, grad = loss_cases.run_module(self.module(case, "inline"), case, torch.bfloat16)
        _, ref_grad = loss_cases.reference_of(case)
        self.assertEqual(grad.dtype, torch.bfloat16)
        assert_gradient_close(self, grad.double().numpy(), ref_grad, rel_elem=2.0 ** -8)

    def test_no_gradient_requested_without_grad(self):
        module = ClassBalancedLoss(self.client, class_counts=[3, 2, 1])
        with torch.no_grad():
            loss = module(torch.randn(4, 3, requires_grad=True), torch.tensor([0, 1, 2, 0]))
        self.assertIsNone(module.last_result.gradient)
        self.assertTrue(np.isfinite(loss.item()))

    def test_sgd_steps_decrease_the_loss(self):
        torch.manual_seed(0)
        x = torch.randn(96, 8)
        teacher = torch.randn(8, 4)
        y = (x @ teacher).argmax(dim=1)
        counts = torch.bincount(y, minlength=4).tolist()
        model = torch.nn.Linear(8, 4)
        criterion = ClassBalancedLoss(self.client, class_counts=counts, loss_type="focal",
                                      beta=0.999, gamma=1.0)
        # The first step's parameter gradient equals the reference's.
        z, ref_loss, _ = reference_loss.reference(
            model(x).detach(), counts, labels=y, loss_type="focal", beta=0.999, gamma=1.0)
        ref_grad_z = reference_loss.gradient(z, ref_loss)
        ref_weight_grad = (ref_grad_z.T @ x.double()).numpy()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        losses = []
        for step in range(30):
            optimizer.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            if step == 0:
                assert_loss_close(self, loss.item(), ref_loss.item())
                np.testing.assert_allclose(model.weight.grad.numpy(), ref_weight_grad,
                                           rtol=1e-4, atol=1e-6)
            optimizer.step()
            losses.append(loss.item())
        self.assertLess(losses[-1], 0.5 * losses[0], losses)
        self.assertGreaterEqual(sum(b < a for a, b in zip(losses, losses[1:])), 25, losses)

    def test_service_errors_raise_cbloss_error_naming_the_field(self):
        module = ClassBalancedLoss(self.client, class_counts=[3, 2, 1])
        logits = torch.randn(4, 3, requires_grad=True)
        with self.assertRaises(cbloss.CblossError) as caught:
            module(logits, torch.tensor([0, 1, 5, 0]))
        self.assertIsInstance(caught.exception, RuntimeError)
        self.assertEqual(caught.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("labels[2]", caught.exception.details)

        bad = logits.detach().clone()
        bad[1, 2] = float("nan")
        with self.assertRaises(cbloss.CblossError) as caught:
            module(bad, torch.tensor([0, 1, 2, 0]))
        self.assertEqual(caught.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("logits[1][2]", caught.exception.details)

        with self.assertRaises(cbloss.CblossError) as caught:
            module(logits, torch.tensor([0, 1, 2, 0]), torch.tensor([1.0, -1.0, 1.0, 1.0]))
        self.assertEqual(caught.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("sample_weights[1]", caught.exception.details)

        softmax_targets = ClassBalancedLoss(self.client, class_counts=[3, 2, 1])
        with self.assertRaises(cbloss.CblossError) as caught:
            softmax_targets(logits, torch.zeros(4, 3))
        self.assertEqual(caught.exception.code, grpc.StatusCode.INVALID_ARGUMENT)

        wrong_c = ClassBalancedLoss(self.client, dataset=loss_cases.DATASET_NAME)
        with self.assertRaises(cbloss.CblossError) as caught:
            wrong_c(logits, torch.tensor([0, 1, 2, 0]))
        self.assertEqual(caught.exception.code, grpc.StatusCode.INVALID_ARGUMENT)

        missing = ClassBalancedLoss(self.client, dataset="no-such-dataset")
        with self.assertRaises(cbloss.CblossError) as caught:
            missing(logits, torch.tensor([0, 1, 2, 0]))
        self.assertEqual(caught.exception.code, grpc.StatusCode.NOT_FOUND)

    def test_module_opens_its_own_client_from_target(self):
        module = ClassBalancedLoss(target=self.server.target, class_counts=[3, 2, 1],
                                   reduction="sum")
        self.assertEqual(module.client.target, self.server.target)
        logits = torch.randn(2, 3, requires_grad=True)
        module(logits, [2, 0]).backward()  # labels as a list
        z, ref, _ = reference_loss.reference(logits.detach(), [3, 2, 1], labels=[2, 0],
                                             reduction="sum")
        assert_gradient_close(self, logits.grad.numpy(), reference_loss.gradient(z, ref).numpy())
        module.client.close()

    def test_bad_arguments_fail_before_any_call(self):
        with self.assertRaises(ValueError):
            ClassBalancedLoss(self.client, class_counts=[1, 2], loss_type="hinge")
        with self.assertRaises(ValueError):
            ClassBalancedLoss(self.client, class_counts=[1, 2], dataset="x")
        module = ClassBalancedLoss(self.client, class_counts=[1, 2])
        with self.assertRaises(ValueError):
            module(torch.randn(3, 2), torch.randn(3, 3))  # targets of the wrong shape


if __name__ == "__main__":
    unittest.main()
