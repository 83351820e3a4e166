"""cbloss.Client: datasets, class weights, compute_loss, errors, on a real
cbloss-server."""

import json
import os
import unittest

import grpc
import numpy as np
import torch

import cbloss
from cbloss import enums
from cbloss._proto import cbloss_pb2 as pb
import reference_loss
from server_process import ServerTestCase

# LOSS.md section 2 check values.
CHECK_COUNTS = [2, 3, 1, 2, 2]
CHECK_WEIGHTS = [0.88236332, 0.58827163, 1.76463841, 0.88236332, 0.88236332]


class EnumNamesTest(unittest.TestCase):

    def test_short_full_and_numeric_names(self):
        for value in ("focal", "FOCAL", "LOSS_TYPE_FOCAL", "loss_type_focal", 3):
            self.assertEqual(enums.loss_type_number(value), pb.LOSS_TYPE_FOCAL, value)
        self.assertEqual(enums.loss_type_number("softmax-bce"), pb.LOSS_TYPE_SOFTMAX_BCE)
        self.assertEqual(enums.loss_type_number("ldam"), pb.LOSS_TYPE_LDAM)
        self.assertEqual(enums.reduction_number("none"), pb.REDUCTION_NONE)
        self.assertEqual(enums.reduction_number("weighted_mean"), pb.REDUCTION_WEIGHTED_MEAN)
        self.assertEqual(enums.weighting_number("none"), pb.WEIGHTING_SCHEME_NONE)
        self.assertEqual(enums.weighting_number(None), pb.WEIGHTING_SCHEME_UNSPECIFIED)
        for value in ("bf16", "bfloat16", "DTYPE_BFLOAT16", torch.bfloat16):
            self.assertEqual(enums.dtype_number(value), pb.DTYPE_BFLOAT16, value)
        for value in ("f16", "half", np.float16, np.dtype("float16"), torch.float16):
            self.assertEqual(enums.dtype_number(value), pb.DTYPE_FLOAT16, value)
        self.assertEqual(enums.dtype_number("float32"), pb.DTYPE_FLOAT32)

    def test_unknown_names_are_rejected(self):
        with self.assertRaisesRegex(ValueError, "loss_type.*'hinge'"):
            enums.loss_type_number("hinge")
        with self.assertRaises(ValueError):
            enums.reduction_number("average")
        with self.assertRaises(ValueError):
            enums.dtype_number("float64")
        with self.assertRaises(ValueError):
            enums.loss_type_number(42)


class LossParametersFromTheProtoTest(unittest.TestCase):
    """The loss keywords and cbloss.LossConfig come from the proto's
    LossConfig descriptor, the short enum names from the enum descriptors:
    every field and every value works without a Python edit."""

    @staticmethod
    def sample(field):
        if field.enum_type is not None:
            value = field.enum_type.values[-1]
            return value.name[len(enums.prefix_of(field.enum_type)):].lower(), value.number
        if field.cpp_type in (field.CPPTYPE_DOUBLE, field.CPPTYPE_FLOAT):
            return 0.25, 0.25
        return 3, 3

    def test_every_field_is_a_keyword_and_an_attribute(self):
        logits = np.zeros((1, 2), np.float32)
        for field in pb.LossConfig.DESCRIPTOR.fields:
            value, wire = self.sample(field)
            with self.subTest(field=field.name):
                request = cbloss.client.build_loss_request(logits, [0], class_counts=[1, 1],
                                                           **{field.name: value})
                self.assertEqual(getattr(request.config, field.name), wire)
                config = cbloss.LossConfig(**{field.name: value})
                self.assertEqual(cbloss.LossConfig.from_proto(config.to_proto()), config)
        self.assertEqual([f.name for f in pb.LossConfig.DESCRIPTOR.fields],
                         [f.name for f in cbloss.LossConfig.__dataclass_fields__.values()])

    def test_unknown_keywords_are_type_errors(self):
        logits = np.zeros((1, 2), np.float32)
        with self.assertRaisesRegex(TypeError, "unexpected keyword argument 'temperature'"):
            cbloss.client.build_loss_request(logits, [0], class_counts=[1, 1], temperature=2)
        with cbloss.Client("127.0.0.1:1") as client:
            with self.assertRaisesRegex(TypeError, "put_dataset.*'temperature'"):
                client.put_dataset("x", [1, 2], temperature=2)
            with self.assertRaisesRegex(TypeError, "'temperature'"):
                client.compute_loss(logits, [0], class_counts=[1, 1], temperature=2)

    def test_every_enum_value_has_its_short_name(self):
        for enum in pb.DESCRIPTOR.enum_types_by_name.values():
            prefix = enums.prefix_of(enum)
            for value in enum.values[1:]:
                short = value.name[len(prefix):].lower()
                self.assertEqual(enums.number_of(enum, short, "x"), value.number, short)
                self.assertEqual(enums.name_of(enum, value.number), short)


class ServiceConfigTest(unittest.TestCase):

    def test_retry_policy_is_the_shared_file(self):
        root = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir)
        with open(os.path.join(root, "proto", "cbloss", "v1", "service_config.json")) as f:
            shared = json.load(f)
        config = json.loads(cbloss.client._service_config("round_robin", True))
        self.assertEqual(config["methodConfig"], shared["methodConfig"])
        self.assertEqual(config["loadBalancingConfig"], [{"round_robin": {}}])
        config = json.loads(cbloss.client._service_config("pick_first", False))
        self.assertEqual(config, {"loadBalancingConfig": [{"pick_first": {}}]})


class DatasetCallsTest(ServerTestCase):

    def test_put_get_replace_delete(self):
        created = self.client.put_dataset(
            "py-life", [10, 5, 1], class_names=["cat", "dog", "eel"], loss_type="focal",
            beta=0.999, gamma=1.0, reduction="sum", weighting="inverse_sqrt_frequency",
            expected_version=0)
        self.assertEqual(created.version, 1)
        self.assertIsNotNone(created.create_time)
        got = self.client.get_dataset("py-life")
        self.assertEqual((got.name, got.class_counts, got.class_names, got.num_classes),
                         ("py-life", [10, 5, 1], ["cat", "dog", "eel"], 3))
        self.assertEqual(got.defaults, cbloss.LossConfig(
            loss_type="focal", weighting="inverse_sqrt_frequency", beta=0.999, gamma=1.0,
            reduction="sum"))
        with self.assertRaises(cbloss.CblossError) as caught:
            self.client.put_dataset("py-life", [1, 1, 1], expected_version=0)
        self.assertEqual(caught.exception.code, grpc.StatusCode.ABORTED)
        replaced = self.client.put_dataset("py-life", [1, 2, 3], expected_version=1)
        self.assertEqual((replaced.version, replaced.class_counts), (2, [1, 2, 3]))
        with self.assertRaises(cbloss.CblossError) as caught:
            self.client.delete_dataset("py-life", expected_version=1)
        self.assertEqual(caught.exception.code, grpc.StatusCode.ABORTED)
        self.client.delete_dataset("py-life", expected_version=2)
        for call in (self.client.get_dataset, self.client.delete_dataset):
            with self.assertRaises(cbloss.CblossError) as caught:
                call("py-life")
            self.assertEqual(caught.exception.code, grpc.StatusCode.NOT_FOUND)

    def test_list_iterates_every_page_in_name_order(self):
        names = ["py-list-%02d" % i for i in (7, 3, 11, 0, 5)]
        for name in names:
            self.client.put_dataset(name, [1, 2])
        listed = [d.name for d in self.client.list_datasets(page_size=2)
                  if d.name.startswith("py-list-")]
        self.assertEqual(listed, sorted(names))
        everything = [d.name for d in self.client.list_datasets()]
        self.assertEqual(everything, sorted(everything))

    def test_add_counts_with_deltas_and_labels(self):
        self.client.put_dataset("py-counts", [0, 0, 0, 0])
        d = self.client.add_counts("py-counts", deltas=[1, 2, 3, 4])
        self.assertEqual((d.class_counts, d.version), ([1, 2, 3, 4], 2))
        d = self.client.add_counts("py-counts", labels=np.array([0, 0, 3]))
        self.assertEqual(d.class_counts, [3, 2, 3, 5])
        d = self.client.add_counts("py-counts", deltas=[0, 1, 0, 0], labels=torch.tensor([2]))
        self.assertEqual(d.class_counts, [3, 3, 4, 5])
        with self.assertRaises(cbloss.CblossError):
            self.client.add_counts("py-counts", deltas=[-4, 0, 0, 0])
        with self.assertRaises(cbloss.CblossError) as caught:
            self.client.add_counts("py-counts", labels=[4])
        self.assertEqual(caught.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertEqual(self.client.get_dataset("py-counts").class_counts, [3, 3, 4, 5])

    def test_class_weights_check_values(self):
        inline = self.client.class_weights(class_counts=CHECK_COUNTS, beta=0.9999)
        self.assertEqual(inline.dtype, np.float64)
        np.testing.assert_allclose(inline, CHECK_WEIGHTS, rtol=0, atol=5e-9)
        self.client.put_dataset("py-check", CHECK_COUNTS, beta=0.9999)
        np.testing.assert_allclose(self.client.class_weights(dataset="py-check"),
                                   CHECK_WEIGHTS, rtol=0, atol=5e-9)

    def test_class_weights_schemes_and_overrides(self):
        counts = [100, 10, 1, 0]
        for scheme in ("inverse_frequency", "inverse_sqrt_frequency", "none"):
            with self.subTest(scheme=scheme):
                got = self.client.class_weights(class_counts=counts, weighting=scheme)
                want = reference_loss.class_weights(counts, scheme=scheme).numpy()
                np.testing.assert_allclose(got, want, rtol=1e-12)
        self.client.put_dataset("py-weights", counts, beta=0.5)
        np.testing.assert_allclose(self.client.class_weights(dataset="py-weights"),
                                   reference_loss.class_weights(counts, 0.5).numpy(),
                                   rtol=1e-12)
        np.testing.assert_allclose(self.client.class_weights(dataset="py-weights", beta=0.99),
                                   reference_loss.class_weights(counts, 0.99).numpy(),
                                   rtol=1e-12)
        with self.assertRaises(ValueError):
            self.client.class_weights(dataset="py-weights", class_counts=counts)


class ComputeLossTest(ServerTestCase):

    def setUp(self):
        rng = np.random.default_rng(1)
        self.logits = rng.normal(0, 2, (6, 5)).astype(np.float32)
        self.labels = np.array([0, 1, 2, -100, 4, 2])

    def reference(self, **kwargs):
        z, loss, per = reference_loss.reference(self.logits, CHECK_COUNTS, labels=self.labels,
                                                **kwargs)
        return loss.item(), per.detach().numpy(), reference_loss.gradient(z, loss).numpy()

    def test_result_fields(self):
        r = self.client.compute_loss(self.logits, self.labels, class_counts=CHECK_COUNTS,
                                     loss_type="focal", beta=0.9999, gamma=2.0,
                                     want_per_sample_losses=True)
        loss, per, grad = self.reference(loss_type="focal", gamma=2.0)
        self.assertAlmostEqual(r.loss, loss, delta=1e-5 * abs(loss) + 1e-6)
        np.testing.assert_allclose(r.per_sample_losses, per, rtol=1e-5, atol=1e-6)
        self.assertEqual((r.gradient.dtype, r.gradient.shape, r.gradient_dtype),
                         (np.float32, (6, 5), "float32"))
        np.testing.assert_allclose(r.gradient, grad, rtol=0,
                                   atol=1e-5 * np.abs(grad).max() + 1e-7)
        np.testing.assert_allclose(r.class_weights, CHECK_WEIGHTS, atol=5e-9)
        self.assertEqual(r.num_samples, 5)
        self.assertEqual(r.dataset_version, 0)
        self.assertEqual(r.resolved_config.loss_type, "focal")
        self.assertEqual(r.resolved_config.reduction, "mean")
        self.assertEqual(r.resolved_config.weighting, "effective_number")
        self.assertEqual(r.resolved_config.ignore_index, -100)

    def test_dataset_source_and_version(self):
        d = self.client.put_dataset("py-compute", CHECK_COUNTS, loss_type="sigmoid")
        r = self.client.compute_loss(self.logits, self.labels, dataset="py-compute",
                                     want_gradient=False, expected_dataset_version=d.version)
        self.assertIsNone(r.gradient)
        self.assertIsNone(r.per_sample_losses)
        self.assertEqual((r.dataset_version, r.resolved_config.loss_type), (d.version, "sigmoid"))
        loss, _, _ = self.reference(loss_type="sigmoid")
        self.assertAlmostEqual(r.loss, loss, delta=1e-5 * abs(loss) + 1e-6)
        with self.assertRaises(cbloss.CblossError) as caught:
            self.client.compute_loss(self.logits, self.labels, dataset="py-compute",
                                     expected_dataset_version=d.version + 1)
        self.assertEqual(caught.exception.code, grpc.StatusCode.ABORTED)

    def test_upstream_and_targets(self):
        u = np.array([1.0, -0.5, 2.0, 3.0, 0.0, 1.5], dtype=np.float32)
        r = self.client.compute_loss(self.logits, self.labels, class_counts=CHECK_COUNTS,
                                     reduction="none", upstream=u)
        z, total, per = reference_loss.reference(self.logits, CHECK_COUNTS, labels=self.labels,
                                                 reduction="none", upstream=u)
        np.testing.assert_allclose(r.per_sample_losses, per.detach().numpy(), rtol=1e-5,
                                   atol=1e-6)
        self.assertAlmostEqual(r.loss, total.item(), delta=1e-5 * abs(total.item()) + 1e-6)
        g = reference_loss.gradient(z, total).numpy()
        np.testing.assert_allclose(r.gradient, g, atol=1e-5 * np.abs(g).max() + 1e-7, rtol=0)

        targets = (self.logits > 0.5).astype(np.float32)
        r = self.client.compute_loss(torch.from_numpy(self.logits), targets=targets,
                                     class_counts=CHECK_COUNTS, loss_type="sigmoid",
                                     reduction="sum")
        z, total, _ = reference_loss.reference(self.logits, CHECK_COUNTS, targets=targets,
                                               loss_type="sigmoid", reduction="sum")
        self.assertAlmostEqual(r.loss, total.item(), delta=1e-5 * abs(total.item()) + 1e-6)

    def test_16_bit_gradients(self):
        z16 = torch.from_numpy(self.logits).to(torch.bfloat16)
        r32 = self.client.compute_loss(z16, self.labels, class_counts=CHECK_COUNTS)
        r16 = self.client.compute_loss(z16, self.labels, class_counts=CHECK_COUNTS,
                                       gradient_dtype="bf16")
        self.assertEqual((r16.gradient_dtype, r16.gradient.dtype), ("bfloat16", np.float32))
        np.testing.assert_array_equal(  # float32 holding bf16 values: the low bits are 0
            r16.gradient.view(np.uint32) & 0xFFFF, 0)
        np.testing.assert_array_equal(
            r16.gradient, torch.from_numpy(r32.gradient).to(torch.bfloat16).float().numpy())
        rh = self.client.compute_loss(self.logits.astype(np.float16), self.labels,
                                      class_counts=CHECK_COUNTS, gradient_dtype=np.float16)
        self.assertEqual((rh.gradient_dtype, rh.gradient.dtype), ("float16", np.float16))

    def test_errors_name_the_field(self):
        cases = [
            (dict(labels=[0, 1, 2, 3, 9, 0]), "labels[4]"),
            (dict(labels=[0, 1, 2]), "labels"),
            (dict(labels=self.labels, sample_weights=[1, 1, 1, float("inf"), 1, 1]),
             "sample_weights[3]"),
            (dict(labels=self.labels, beta=1.5), "beta"),
            (dict(labels=self.labels, gamma=-1.0), "gamma"),
        ]
        for kwargs, needle in cases:
            with self.subTest(needle=needle):
                with self.assertRaises(cbloss.CblossError) as caught:
                    self.client.compute_loss(self.logits, class_counts=CHECK_COUNTS, **kwargs)
                self.assertIsInstance(caught.exception, RuntimeError)
                self.assertEqual(caught.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
                self.assertIn(needle, caught.exception.details)
                self.assertIn(needle, str(caught.exception))
        bad = self.logits.copy()
        bad[2, 3] = np.inf
        with self.assertRaises(cbloss.CblossError) as caught:
            self.client.compute_loss(bad, self.labels, class_counts=CHECK_COUNTS)
        self.assertIn("logits[2][3]", caught.exception.details)
        with self.assertRaises(cbloss.CblossError) as caught:
            self.client.compute_loss(self.logits, self.labels, dataset="py-missing")
        self.assertEqual(caught.exception.code, grpc.StatusCode.NOT_FOUND)

    def test_client_side_argument_errors(self):
        with self.assertRaises(ValueError):
            self.client.compute_loss(self.logits, class_counts=CHECK_COUNTS)  # no labels
        with self.assertRaises(ValueError):
            self.client.compute_loss(self.logits, self.labels)  # no source
        with self.assertRaises(ValueError):
            self.client.compute_loss(self.logits[0], self.labels[:1], class_counts=CHECK_COUNTS)
        with self.assertRaises(ValueError):
            self.client.compute_loss(self.logits, [0, 1, 2, 3, 2 ** 31, 0],
                                     class_counts=CHECK_COUNTS)

    def test_unreachable_server_raises_cbloss_error(self):
        with cbloss.Client("127.0.0.1:1", timeout=2) as client:
            with self.assertRaises(cbloss.CblossError) as caught:
                client.get_dataset("x")
        self.assertIn(caught.exception.code, (grpc.StatusCode.UNAVAILABLE,
                                              grpc.StatusCode.DEADLINE_EXCEEDED))

    def test_health(self):
        self.assertEqual(self.client.health(), "SERVING")
        self.assertEqual(self.client.health("cbloss.v1.LossService"), "SERVING")


if __name__ == "__main__":
    unittest.main()
