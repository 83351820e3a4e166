"""ComputeLoss and GetClassWeights against the golden float64 cases
(tests/golden/golden_cases.json) at the tolerances of LOSS.md section 7."""

import json
import unittest

import grpc
import numpy as np
import torch

from server_fixture import (SharedServerTestCase, RPC_TIMEOUT_S, SEED_EXAMPLE_FILE, ServerTestCase,
                            assert_close_gradient, assert_close_loss,
                            assert_close_per_sample, bf16_bits_to_f32, decode_tensor, golden_config,
                            golden_request, load_golden, pb, ref_class_weights, ref_loss,
                            tensor_f32, tensor_float_data)

T = RPC_TIMEOUT_S
GOLDEN = load_golden()
CASES = GOLDEN["cases"]
BY_NAME = {c["name"]: c for c in CASES}

SECTION2_COUNTS = [2, 3, 1, 2, 2]
SECTION2_WEIGHTS = [0.88236332, 0.58827163, 1.76463841, 0.88236332, 0.88236332]


def find_case(pred):
    for c in CASES:
        if pred(c):
            return c
    raise LookupError("no golden case matches")


class ComputeTest(SharedServerTestCase):

    def put_dataset(self, name, counts, defaults=None):
        ds = pb.Dataset(name=name, class_counts=list(counts))
        if defaults is not None:
            ds.defaults.CopyFrom(defaults)
        return self.stub.PutDataset(pb.PutDatasetRequest(dataset=ds), timeout=T)

    def check_against_golden(self, case, resp, gradient_form="data"):
        exp = case["expected"]
        b, c = case["rows"], case["cols"]
        assert_close_loss(self, resp.loss, exp["loss"])
        assert_close_per_sample(self, list(resp.per_sample_losses), exp["per_sample_losses"])
        self.assertEqual(list(resp.gradient.shape), [b, c], "gradient.shape")
        if gradient_form == "data":
            self.assertEqual(resp.gradient.dtype, pb.DTYPE_FLOAT32, "gradient.dtype")
            self.assertEqual(len(resp.gradient.data), 4 * b * c, "gradient.data size")
            self.assertEqual(len(resp.gradient.float_data), 0)
        else:
            self.assertIn(resp.gradient.dtype, (pb.DTYPE_FLOAT32, pb.DTYPE_UNSPECIFIED))
            self.assertEqual(len(resp.gradient.float_data), b * c, "gradient.float_data size")
            self.assertEqual(len(resp.gradient.data), 0)
        assert_close_gradient(self, decode_tensor(resp.gradient),
                              np.asarray(exp["gradient"]).reshape(b, c))
        np.testing.assert_allclose(list(resp.class_weights), exp["class_weights"],
                                   rtol=1e-9, atol=1e-12, err_msg="class_weights")
        self.assertEqual(resp.num_samples, exp["num_samples"], "num_samples")

    # -- golden cases -------------------------------------------------------

    def test_golden_cases_inline(self):
        self.assertGreaterEqual(len(CASES), 240)
        for case in CASES:
            with self.subTest(case=case["name"]):
                resp = self.stub.ComputeLoss(golden_request(case), timeout=T)
                self.check_against_golden(case, resp)
                self.assertEqual(resp.dataset_version, 0)
                self.assertEqual(resp.error_code, 0)
                self.assertEqual(resp.resolved_config.loss_type,
                                 golden_config(case).loss_type)
                self.assertEqual(resp.resolved_config.reduction,
                                 golden_config(case).reduction)

    def test_golden_section9_cases_inline(self):
        # LOSS.md section 9 losses and deferred re-weighting (drw_start_epoch in
        # the request config, epoch in the request).
        for case in load_golden("golden_cases_section9.json")["cases"]:
            with self.subTest(case=case["name"]):
                resp = self.stub.ComputeLoss(golden_request(case), timeout=T)
                self.check_against_golden(case, resp)
                self.assertEqual(resp.resolved_config.loss_type,
                                 golden_config(case).loss_type)

    def test_golden_cases_float_data(self):
        for case in CASES:
            if case["logits_dtype"] != "float32":
                continue
            with self.subTest(case=case["name"]):
                via_data = self.stub.ComputeLoss(golden_request(case), timeout=T)
                via_floats = self.stub.ComputeLoss(golden_request(case, use_float_data=True),
                                                   timeout=T)
                self.check_against_golden(case, via_floats, gradient_form="float_data")
                self.assertAlmostEqual(via_floats.loss, via_data.loss,
                                       delta=1e-12 * abs(via_data.loss) + 1e-15)
                np.testing.assert_array_equal(decode_tensor(via_floats.gradient),
                                              decode_tensor(via_data.gradient))
                np.testing.assert_array_equal(list(via_floats.per_sample_losses),
                                              list(via_data.per_sample_losses))

    def test_golden_cases_through_dataset(self):
        # Every 8th case: the counts and config stored as a dataset's defaults,
        # the request carrying no config at all.
        for i, case in enumerate(CASES[::8]):
            with self.subTest(case=case["name"]):
                name = "golden-%03d" % i
                stored = self.put_dataset(name, case["class_counts"], golden_config(case))
                req = golden_request(case, inline_counts=False, config=False)
                req.dataset = name
                resp = self.stub.ComputeLoss(req, timeout=T)
                self.check_against_golden(case, resp)
                self.assertEqual(resp.dataset_version, stored.version)

    def test_concurrent_compute(self):
        # 8 client threads, each sending 30 golden cases: every answer right.
        import threading
        cases = [c for c in CASES if c["logits_dtype"] == "float32"]
        failures = []

        def worker(t):
            for k in range(30):
                case = cases[(t * 37 + k * 11) % len(cases)]
                try:
                    resp = self.stub.ComputeLoss(golden_request(case), timeout=T)
                    ref = case["expected"]["loss"]
                    if not abs(resp.loss - ref) <= 1e-5 * abs(ref) + 1e-6:
                        failures.append("%s: loss %r want %r" % (case["name"], resp.loss, ref))
                    g = decode_tensor(resp.gradient)
                    gref = np.asarray(case["expected"]["gradient"]).reshape(g.shape)
                    tol = 1e-5 * np.max(np.abs(gref)) + 1e-7
                    if np.max(np.abs(g - gref)) > tol:
                        failures.append("%s: gradient off" % case["name"])
                except Exception as e:  # pragma: no cover - reported below
                    failures.append("%s: %r" % (case["name"], e))

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(120)
        self.assertEqual(failures, [])

    # -- optional outputs ---------------------------------------------------

    def test_outputs_only_when_asked(self):
        case = find_case(lambda c: c["reduction"] == "MEAN" and c["logits_dtype"] == "float32"
                         and "labels" in c)
        req = golden_request(case)
        req.want_gradient = False
        req.want_per_sample_losses = False
        resp = self.stub.ComputeLoss(req, timeout=T)
        assert_close_loss(self, resp.loss, case["expected"]["loss"])
        self.assertEqual(len(resp.per_sample_losses), 0)
        self.assertEqual(len(resp.gradient.data), 0)
        self.assertEqual(len(resp.gradient.float_data), 0)

        # NONE returns per-sample losses even when not asked for.
        none_case = find_case(lambda c: c["reduction"] == "NONE"
                              and c["logits_dtype"] == "float32")
        req = golden_request(none_case)
        req.want_gradient = False
        req.want_per_sample_losses = False
        resp = self.stub.ComputeLoss(req, timeout=T)
        assert_close_loss(self, resp.loss, none_case["expected"]["loss"])
        assert_close_per_sample(self, list(resp.per_sample_losses),
                                none_case["expected"]["per_sample_losses"])

    # -- stored datasets: defaults and overrides ----------------------------

    def assertResolved(self, resolved, loss_type, weighting, beta, gamma, reduction,
                       ignore_index):
        self.assertEqual(resolved.loss_type, loss_type, "resolved loss_type")
        self.assertEqual(resolved.weighting, weighting, "resolved weighting")
        self.assertEqual(resolved.reduction, reduction, "resolved reduction")
        for f in ("beta", "gamma", "ignore_index"):
            self.assertTrue(resolved.HasField(f), "resolved_config.%s is not set" % f)
        self.assertAlmostEqual(resolved.beta, beta, delta=1e-15)
        self.assertAlmostEqual(resolved.gamma, gamma, delta=1e-15)
        self.assertEqual(resolved.ignore_index, ignore_index)

    def test_dataset_defaults_and_overrides(self):
        case = BY_NAME["focal_gamma_0p5_labels"]  # FOCAL, MEAN, gamma 0.5
        cfg = golden_config(case)
        wanted = dict(loss_type=cfg.loss_type, weighting=cfg.weighting, beta=cfg.beta,
                      gamma=cfg.gamma, reduction=cfg.reduction,
                      ignore_index=cfg.ignore_index)

        # (a) everything from the dataset's defaults.
        a = self.put_dataset("ovr-a", case["class_counts"], cfg)
        req = golden_request(case, inline_counts=False, config=False)
        req.dataset = "ovr-a"
        resp = self.stub.ComputeLoss(req, timeout=T)
        self.check_against_golden(case, resp)
        self.assertEqual(resp.dataset_version, a.version)
        self.assertResolved(resp.resolved_config, **wanted)

        # (b) defaults all different; the request overrides every field.
        other = pb.LossConfig(loss_type=pb.LOSS_TYPE_SOFTMAX,
                              weighting=pb.WEIGHTING_SCHEME_INVERSE_FREQUENCY,
                              beta=0.5, gamma=4.0, reduction=pb.REDUCTION_SUM,
                              ignore_index=-7)
        b = self.put_dataset("ovr-b", case["class_counts"], other)
        self.stub.AddClassCounts(pb.AddClassCountsRequest(name="ovr-b", deltas=[0] * len(
            case["class_counts"])), timeout=T)
        req = golden_request(case, inline_counts=False, config=True)
        req.dataset = "ovr-b"
        resp = self.stub.ComputeLoss(req, timeout=T)
        self.check_against_golden(case, resp)
        self.assertEqual(resp.dataset_version, b.version + 1)
        self.assertResolved(resp.resolved_config, **wanted)

        # (c) mixed: loss type and beta from the dataset, gamma, reduction and
        # ignore_index from the request, weighting from LOSS.md's default.
        self.put_dataset("ovr-c", case["class_counts"],
                         pb.LossConfig(loss_type=cfg.loss_type, beta=cfg.beta, gamma=7.0))
        req = golden_request(case, inline_counts=False, config=False)
        req.dataset = "ovr-c"
        req.config.gamma = cfg.gamma
        req.config.reduction = cfg.reduction
        req.config.ignore_index = cfg.ignore_index
        resp = self.stub.ComputeLoss(req, timeout=T)
        self.check_against_golden(case, resp)
        self.assertResolved(resp.resolved_config, **wanted)

        # expected_dataset_version matching: OK.
        req.expected_dataset_version = 1
        self.assertEqual(self.stub.ComputeLoss(req, timeout=T).dataset_version, 1)

    def test_spec_defaults_resolved(self):
        case = find_case(lambda c: c["loss_type"] == "SOFTMAX" and c["reduction"] == "MEAN"
                         and c["scheme"] == "EFFECTIVE_NUMBER" and c["beta"] == 0.9999
                         and c["ignore_index"] == -100 and c["logits_dtype"] == "float32"
                         and "labels" in c and "sample_weights" not in c)
        # Inline counts, empty config: LOSS.md defaults.
        req = golden_request(case, config=False)
        resp = self.stub.ComputeLoss(req, timeout=T)
        self.check_against_golden(case, resp)
        self.assertResolved(resp.resolved_config, pb.LOSS_TYPE_SOFTMAX,
                            pb.WEIGHTING_SCHEME_EFFECTIVE_NUMBER, 0.9999, 2.0,
                            pb.REDUCTION_MEAN, -100)
        # A dataset without defaults, empty config: the same.
        stored = self.put_dataset("spec-defaults", case["class_counts"])
        req = golden_request(case, config=False, inline_counts=False)
        req.dataset = "spec-defaults"
        resp = self.stub.ComputeLoss(req, timeout=T)
        self.check_against_golden(case, resp)
        self.assertEqual(resp.dataset_version, stored.version)
        self.assertResolved(resp.resolved_config, pb.LOSS_TYPE_SOFTMAX,
                            pb.WEIGHTING_SCHEME_EFFECTIVE_NUMBER, 0.9999, 2.0,
                            pb.REDUCTION_MEAN, -100)

    # -- gradient dtypes ----------------------------------------------------

    def test_gradient_dtype_16bit(self):
        cases = [c for c in CASES if c["logits_dtype"] == "float32"][::10]
        cases += [c for c in CASES if c["logits_dtype"] != "float32"]
        for case in cases:
            b, c = case["rows"], case["cols"]
            ref = self.stub.ComputeLoss(golden_request(case), timeout=T)
            g32 = torch.from_numpy(decode_tensor(ref.gradient).copy())
            for dtype, torch_dtype in [(pb.DTYPE_BFLOAT16, torch.bfloat16),
                                       (pb.DTYPE_FLOAT16, torch.float16)]:
                with self.subTest(case=case["name"], dtype=pb.DType.Name(dtype)):
                    req = golden_request(case)
                    req.gradient_dtype = dtype
                    resp = self.stub.ComputeLoss(req, timeout=T)
                    self.assertEqual(resp.gradient.dtype, dtype)
                    self.assertEqual(list(resp.gradient.shape), [b, c])
                    self.assertEqual(len(resp.gradient.data), 2 * b * c)
                    self.assertEqual(len(resp.gradient.float_data), 0)
                    want = g32.to(torch_dtype).view(torch.int16).numpy().view(np.uint16)
                    got = np.frombuffer(resp.gradient.data, dtype="<u2").reshape(b, c)
                    bad = np.argwhere(got != want)
                    if bad.size:
                        i, j = bad[0]
                        self.fail("gradient[%d][%d]: got bits 0x%04x, want 0x%04x "
                                  "(float32 gradient %r)" % (i, j, got[i, j], want[i, j],
                                                             float(g32[i, j])))
                    assert_close_loss(self, resp.loss, ref.loss)
        # float_data logits with a 16-bit gradient: raw bytes in data.
        case = find_case(lambda c: c["logits_dtype"] == "float32")
        req = golden_request(case, use_float_data=True)
        req.gradient_dtype = pb.DTYPE_BFLOAT16
        resp = self.stub.ComputeLoss(req, timeout=T)
        self.assertEqual(resp.gradient.dtype, pb.DTYPE_BFLOAT16)
        self.assertEqual(len(resp.gradient.data), 2 * case["rows"] * case["cols"])
        # Explicit FLOAT32 equals the default.
        req = golden_request(case)
        req.gradient_dtype = pb.DTYPE_FLOAT32
        self.check_against_golden(case, self.stub.ComputeLoss(req, timeout=T))

    def test_gradient_16bit_saturates(self):
        # P = sum of targets = 1e-44 (a float32 subnormal), so every element
        # of G = omega / P * (sigma - t) is beyond float32's range. LOSS.md 7
        # wants every result finite, so each dtype returns its largest finite
        # value with G's sign (IEEE rounding alone would give bfloat16 and
        # float16 infinities; found by the fuzzer with P = 1.3e-39).
        counts = [3, 1]
        z = np.array([[0.0, 0.5], [1.0, -2.0]], dtype=np.float32)
        t = np.array([[1e-44, 0.0], [0.0, 0.0]], dtype=np.float32)
        sigma = 1.0 / (1.0 + np.exp(-z.astype(np.float64)))
        p = float(t.astype(np.float64).sum())
        g_ref = ref_class_weights(counts)[None, :] / p * (sigma - t.astype(np.float64))
        self.assertGreater(np.abs(g_ref).min(), float(np.finfo(np.float32).max))
        largest = {pb.DTYPE_FLOAT32: float(np.finfo(np.float32).max),
                   pb.DTYPE_BFLOAT16: float(bf16_bits_to_f32([0x7f7f])[0]),
                   pb.DTYPE_FLOAT16: float(np.finfo(np.float16).max)}
        for dtype, big in largest.items():
            with self.subTest(dtype=pb.DType.Name(dtype)):
                req = pb.ComputeLossRequest(
                    class_counts=pb.ClassCounts(counts=counts),
                    config=pb.LossConfig(loss_type=pb.LOSS_TYPE_SIGMOID),
                    logits=tensor_f32(z), targets=tensor_f32(t), want_gradient=True,
                    gradient_dtype=dtype)
                resp = self.stub.ComputeLoss(req, timeout=T)
                self.assertEqual(resp.gradient.dtype, dtype)
                np.testing.assert_array_equal(decode_tensor(resp.gradient),
                                              np.sign(g_ref) * big)

    # -- seed example -------------------------------------------------------

    def seed(self):
        with open(SEED_EXAMPLE_FILE) as f:
            return json.load(f)

    def test_seed_example_inline(self):
        s = self.seed()
        req = pb.ComputeLossRequest(
            class_counts=pb.ClassCounts(counts=s["class_counts"]),
            config=pb.LossConfig(loss_type=pb.LOSS_TYPE_FOCAL, beta=0.9999, gamma=2.0,
                                 reduction=pb.REDUCTION_MEAN),
            logits=tensor_f32(np.asarray(s["logits"], dtype=np.float32)),
            labels=s["labels"])
        resp = self.stub.ComputeLoss(req, timeout=T)
        self.assertAlmostEqual(resp.loss, 1.9582863, delta=1e-5)
        np.testing.assert_allclose(list(resp.class_weights), s["expected"]["class_weights"],
                                   atol=1e-8)
        self.assertEqual(resp.num_samples, 10)

    def test_seed_example_dataset(self):
        s = self.seed()
        stored = self.put_dataset("seed-example", s["class_counts"],
                                  pb.LossConfig(loss_type=pb.LOSS_TYPE_FOCAL, beta=0.9999,
                                                gamma=2.0))
        req = pb.ComputeLossRequest(dataset="seed-example",
                                    logits=tensor_float_data(s["logits"]),
                                    labels=s["labels"])
        resp = self.stub.ComputeLoss(req, timeout=T)
        self.assertAlmostEqual(resp.loss, 1.9582863, delta=1e-5)
        self.assertEqual(resp.dataset_version, stored.version)
        self.assertEqual(resp.resolved_config.loss_type, pb.LOSS_TYPE_FOCAL)
        self.assertEqual(resp.resolved_config.reduction, pb.REDUCTION_MEAN)

    # -- extreme logits -----------------------------------------------------

    def test_extreme_logits_finite(self):
        rng = np.random.default_rng(11)
        b, c = 16, 6
        z = (rng.standard_normal((b, c)) * 3000).astype(np.float32)
        z[0, :] = [-1000, 1e4, -1e4, 0, 5, -5]
        y = rng.integers(0, c, size=b)
        y[0] = 0  # a FOCAL positive at z = -1000
        counts = [50, 20, 10, 5, 2, 1]
        for loss in ("SOFTMAX", "SIGMOID", "FOCAL"):
            for reduction in ("MEAN", "SUM"):
                with self.subTest(loss=loss, reduction=reduction):
                    req = pb.ComputeLossRequest(
                        class_counts=pb.ClassCounts(counts=counts),
                        config=pb.LossConfig(loss_type=getattr(pb, "LOSS_TYPE_" + loss),
                                             reduction=getattr(pb, "REDUCTION_" + reduction)),
                        logits=tensor_f32(z), labels=y.tolist(), want_gradient=True,
                        want_per_sample_losses=True)
                    resp = self.stub.ComputeLoss(req, timeout=T)
                    L, per, G, w, n = ref_loss(z, y, counts, loss, reduction=reduction)
                    assert_close_loss(self, resp.loss, L)
                    assert_close_per_sample(self, list(resp.per_sample_losses), per)
                    assert_close_gradient(self, decode_tensor(resp.gradient), G)

    # -- GetClassWeights ----------------------------------------------------

    def test_class_weights_inline(self):
        resp = self.stub.GetClassWeights(pb.GetClassWeightsRequest(
            class_counts=pb.ClassCounts(counts=SECTION2_COUNTS),
            config=pb.LossConfig(beta=0.9999)), timeout=T)
        np.testing.assert_allclose(list(resp.weights), SECTION2_WEIGHTS, atol=1e-8)
        self.assertEqual(resp.dataset_version, 0)
        # Default beta is 0.9999 too.
        resp = self.stub.GetClassWeights(pb.GetClassWeightsRequest(
            class_counts=pb.ClassCounts(counts=SECTION2_COUNTS)), timeout=T)
        np.testing.assert_allclose(list(resp.weights), SECTION2_WEIGHTS, atol=1e-8)

    def test_class_weights_schemes(self):
        checks = [
            ([5000, 2997, 1796, 50], 0.9999, "EFFECTIVE_NUMBER"),
            ([5000, 2997, 1796, 50], 0.0, "EFFECTIVE_NUMBER"),
            ([5000, 2997, 1796, 50], 1.0, "EFFECTIVE_NUMBER"),
            ([10, 0, 3, 1], 0.999, "EFFECTIVE_NUMBER"),
            ([10, 0, 3, 1], 0.999, "INVERSE_FREQUENCY"),
            ([10, 0, 3, 1], 0.999, "INVERSE_SQRT_FREQUENCY"),
            ([10, 0, 3, 1], 0.999, "NONE"),
            ([10 ** 12, 1], 0.999999, "EFFECTIVE_NUMBER"),
        ]
        for counts, beta, scheme in checks:
            with self.subTest(counts=counts, beta=beta, scheme=scheme):
                resp = self.stub.GetClassWeights(pb.GetClassWeightsRequest(
                    class_counts=pb.ClassCounts(counts=counts),
                    config=pb.LossConfig(beta=beta,
                                         weighting=getattr(pb, "WEIGHTING_SCHEME_" + scheme))),
                    timeout=T)
                np.testing.assert_allclose(list(resp.weights),
                                           ref_class_weights(counts, beta, scheme),
                                           rtol=1e-12, atol=1e-15)

    def test_class_weights_dataset(self):
        stored = self.put_dataset("weights-ds", SECTION2_COUNTS)
        resp = self.stub.GetClassWeights(pb.GetClassWeightsRequest(dataset="weights-ds"),
                                         timeout=T)
        np.testing.assert_allclose(list(resp.weights), SECTION2_WEIGHTS, atol=1e-8)
        self.assertEqual(resp.dataset_version, stored.version)
        self.assertGreater(resp.dataset_version, 0)
        # Dataset default beta, overridden by the request.
        stored = self.put_dataset("weights-ds2", SECTION2_COUNTS, pb.LossConfig(beta=0.5))
        resp = self.stub.GetClassWeights(pb.GetClassWeightsRequest(dataset="weights-ds2"),
                                         timeout=T)
        np.testing.assert_allclose(list(resp.weights),
                                   ref_class_weights(SECTION2_COUNTS, 0.5), rtol=1e-12)
        resp = self.stub.GetClassWeights(pb.GetClassWeightsRequest(
            dataset="weights-ds2", config=pb.LossConfig(beta=0.9999)), timeout=T)
        np.testing.assert_allclose(list(resp.weights), SECTION2_WEIGHTS, atol=1e-8)
        self.assertEqual(resp.dataset_version, stored.version)

    def test_class_weights_errors(self):
        self.assertRpcError(grpc.StatusCode.NOT_FOUND, self.stub.GetClassWeights,
                            pb.GetClassWeightsRequest(dataset="weights-nobody"))
        self.assertRpcError(grpc.StatusCode.FAILED_PRECONDITION, self.stub.GetClassWeights,
                            pb.GetClassWeightsRequest(class_counts=pb.ClassCounts(
                                counts=[0, 0, 0])))
        self.assertRpcError(grpc.StatusCode.INVALID_ARGUMENT, self.stub.GetClassWeights,
                            pb.GetClassWeightsRequest(
                                class_counts=pb.ClassCounts(counts=[1, -2]),
                                ), contains="class_counts")
        self.assertRpcError(grpc.StatusCode.INVALID_ARGUMENT, self.stub.GetClassWeights,
                            pb.GetClassWeightsRequest(
                                class_counts=pb.ClassCounts(counts=[1, 2]),
                                config=pb.LossConfig(beta=1.5)), contains="config.beta")
        self.assertRpcError(grpc.StatusCode.INVALID_ARGUMENT, self.stub.GetClassWeights,
                            pb.GetClassWeightsRequest())


if __name__ == "__main__":
    unittest.main()
