"""StreamingClassBalancedLoss and Client.stream_loss: one StreamLoss call,
same numbers as the unary ComputeLoss."""

import unittest

import grpc
import numpy as np
import torch

import cbloss
from cbloss.torch import ClassBalancedLoss, StreamingClassBalancedLoss
import loss_cases
from server_process import ServerTestCase


class StreamingModuleTest(ServerTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.client.put_dataset(loss_cases.DATASET_NAME, loss_cases.DATASET_COUNTS,
                               **loss_cases.DATASET_DEFAULTS)

    def modules(self, case, source):
        kwargs = dict(loss_type=case["loss_type"], reduction=case["reduction"], **case["params"])
        if source == "dataset":
            kwargs["dataset"] = loss_cases.DATASET_NAME
        else:
            kwargs["class_counts"] = case["counts"]
        return (ClassBalancedLoss(self.client, **kwargs),
                StreamingClassBalancedLoss(self.client, **kwargs))

    def test_streaming_equals_unary(self):
        rng = np.random.default_rng(42)
        combos = [("softmax", "labels", "mean"), ("focal", "labels", "none"),
                  ("sigmoid", "targets", "sum"), ("focal", "targets", "element_mean"),
                  ("softmax_bce", "labels", "weighted_mean"), ("softmax", "labels", "none")]
        for loss_type, mode, reduction in combos:
            for source in ("dataset", "inline"):
                case = loss_cases.random_case(rng, loss_type, mode, reduction, source)
                unary, streaming = self.modules(case, source)
                with self.subTest(source=source, case=loss_cases.describe(case)):
                    for dtype in (torch.bfloat16, torch.float32):
                        out_u, grad_u = loss_cases.run_module(unary, case, dtype)
                        out_s, grad_s = loss_cases.run_module(streaming, case, dtype)
                        torch.testing.assert_close(out_s, out_u, rtol=1e-7, atol=0)
                        torch.testing.assert_close(grad_s, grad_u, rtol=1e-7, atol=0)
                    value, grad = loss_cases.reference_of(case)  # of the float32 run
                    loss_cases.assert_loss_close(self, out_s.numpy(), value)
                    loss_cases.assert_gradient_close(self, grad_s.numpy(), grad)
                streaming.close()

    def test_one_stream_for_many_steps_and_errors_do_not_end_it(self):
        module = StreamingClassBalancedLoss(self.client, class_counts=[5, 3, 1],
                                            loss_type="focal")
        logits = torch.randn(4, 3, requires_grad=True)
        module(logits, torch.tensor([0, 1, 2, 0])).backward()
        stream = module._stream
        for _ in range(20):
            module(logits, torch.tensor([0, 1, 2, 0])).backward()
        with self.assertRaises(cbloss.CblossError) as caught:
            module(logits, torch.tensor([0, 1, 3, 0]))
        self.assertEqual(caught.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("labels[2]", caught.exception.details)
        loss = module(logits, torch.tensor([0, 1, 2, 0]))
        self.assertTrue(torch.isfinite(loss))
        self.assertIs(module._stream, stream, "the stream was reopened")
        self.assertFalse(stream.broken)
        # A stream that breaks is replaced at the next forward.
        stream.cancel()
        loss2 = module(logits, torch.tensor([0, 1, 2, 0]))
        self.assertIsNot(module._stream, stream)
        self.assertEqual(loss2.item(), loss.item())
        module.close()

    def test_client_stream_answers_in_order(self):
        rng = np.random.default_rng(8)
        batches = [rng.normal(size=(3, 4)).astype(np.float32) for _ in range(10)]
        unary = [self.client.compute_loss(z, [0, 1, 3], class_counts=[4, 3, 2, 1]).loss
                 for z in batches]
        with self.client.stream_loss() as stream:
            streamed = [stream.compute_loss(z, [0, 1, 3], class_counts=[4, 3, 2, 1]).loss
                        for z in batches]
        self.assertEqual(streamed, unary)
        self.assertTrue(stream.closed)
        with self.assertRaises(cbloss.CblossError):
            stream.compute_loss(batches[0], [0, 1, 3], class_counts=[4, 3, 2, 1])


if __name__ == "__main__":
    unittest.main()
