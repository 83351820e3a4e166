// Copyright 2026 The cbloss Authors.
//
// float16 / bfloat16 conversion: encode results come from PyTorch's own
// round-to-nearest-even conversions (golden_cases.json "conversions"), and
// decoding is checked to be the exact inverse over all 65536 patterns.

#include "core/half.h"

#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <vector>

#include "core/internal/loss_kernels.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace cbloss {
namespace {

nlohmann::json LoadConversions() {
  std::ifstream in(CBLOSS_GOLDEN_DIR "/golden_cases.json");
  EXPECT_TRUE(in.good()) << "missing golden_cases.json";
  return nlohmann::json::parse(in)["conversions"];
}

TEST(Half, EncodeMatchesPyTorchRoundToNearestEven) {
  const nlohmann::json conv = LoadConversions();
  const auto& f32 = conv["float32_bits"];
  const auto& f16 = conv["float16_bits"];
  const auto& bf16 = conv["bfloat16_bits"];
  ASSERT_GE(f32.size(), 100u);
  ASSERT_EQ(f32.size(), f16.size());
  ASSERT_EQ(f32.size(), bf16.size());
  for (size_t i = 0; i < f32.size(); ++i) {
    const float x = BitsToFloat(f32[i].get<uint32_t>());
    EXPECT_EQ(FloatToFloat16(x), f16[i].get<uint16_t>()) << "x = " << x;
    EXPECT_EQ(FloatToBFloat16(x), bf16[i].get<uint16_t>()) << "x = " << x;
  }
}

TEST(Half, DecodeIsExactInverseOfEncode) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const uint16_t bits = static_cast<uint16_t>(h);
    const float a = Float16ToFloat(bits);
    const float b = BFloat16ToFloat(bits);
    if (!std::isnan(a)) {
      EXPECT_EQ(FloatToFloat16(a), bits) << h;
    }
    if (!std::isnan(b)) {
      EXPECT_EQ(FloatToBFloat16(b), bits) << h;
    }
  }
}

// The wire-byte converters (vectorised for bfloat16) on every instruction
// set, from an odd address: encoding equals PyTorch's, decoding inverts it.
TEST(Half, WireBytesMatchPyTorchOnEveryTarget) {
  const nlohmann::json conv = LoadConversions();
  std::vector<float> x;
  std::vector<uint16_t> want_bf16, want_f16;
  for (size_t i = 0; i < conv["float32_bits"].size(); ++i) {
    x.push_back(BitsToFloat(conv["float32_bits"][i].get<uint32_t>()));
    want_bf16.push_back(conv["bfloat16_bits"][i].get<uint16_t>());
    want_f16.push_back(conv["float16_bits"][i].get<uint16_t>());
  }
  const int64_t n = static_cast<int64_t>(x.size());
  for (int64_t target : kernels::SupportedTargets()) {
    kernels::ForceTarget(target);
    SCOPED_TRACE(kernels::ActiveTargetName());
    for (DType dtype : {DType::kBFloat16, DType::kFloat16}) {
      const auto& want = dtype == DType::kBFloat16 ? want_bf16 : want_f16;
      std::vector<char> bytes(2 * n + 1);
      EncodeHalfBytes(dtype, x.data(), n, bytes.data() + 1,
                      HalfOverflow::kInfinity);
      std::vector<float> back(n);
      DecodeHalfBytes(dtype, bytes.data() + 1, n, back.data());
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, bytes.data() + 1 + 2 * i, 2);
        EXPECT_EQ(h, want[i]) << "x = " << x[i];
        const float exact =
            dtype == DType::kBFloat16 ? BFloat16ToFloat(h) : Float16ToFloat(h);
        if (!std::isnan(exact)) {
          EXPECT_EQ(back[i], exact) << i;
        }
      }
    }
  }
  kernels::ForceTarget(0);
}

// HalfOverflow::kSaturate (the service's gradients): beyond the largest
// finite value, and at infinity, the result is that value; in range it is
// the same round to nearest even; NaN stays NaN. On every instruction set,
// through both the vector loop and the tail.
TEST(Half, SaturatingEncodeOnEveryTarget) {
  const float inf = std::numeric_limits<float>::infinity();
  const float flt_max = std::numeric_limits<float>::max();
  struct Case {
    float x;
    uint16_t bf16, f16;
  };
  const std::vector<Case> cases = {
      {flt_max, 0x7f7f, 0x7bff},   {-flt_max, 0xff7f, 0xfbff},
      {inf, 0x7f7f, 0x7bff},       {-inf, 0xff7f, 0xfbff},
      {3.397e38f, 0x7f7f, 0x7bff},  // rounds to bf16 inf under IEEE
      {65520.0f, 0x4780, 0x7bff},   // rounds to f16 inf under IEEE
      {-1.0e5f, 0xc7c3, 0xfbff},   {65504.0f, 0x4780, 0x7bff},
      {1.0f, 0x3f80, 0x3c00},      {-2.0f, 0xc000, 0xc000},
      {0.0f, 0x0000, 0x0000},      {1.0e-3f, 0x3a83, 0x1419},
  };
  for (int64_t target : kernels::SupportedTargets()) {
    kernels::ForceTarget(target);
    SCOPED_TRACE(kernels::ActiveTargetName());
    for (DType dtype : {DType::kBFloat16, DType::kFloat16}) {
      // 3 rounds of the cases plus a NaN: vector lanes and a scalar tail.
      std::vector<float> x;
      for (int round = 0; round < 3; ++round) {
        for (const Case& c : cases) x.push_back(c.x);
      }
      x.push_back(std::nanf(""));
      const int64_t n = static_cast<int64_t>(x.size());
      std::vector<char> bytes(2 * n + 1);
      EncodeHalfBytes(dtype, x.data(), n, bytes.data() + 1,
                      HalfOverflow::kSaturate);
      for (int64_t i = 0; i + 1 < n; ++i) {
        const Case& c = cases[i % cases.size()];
        uint16_t h;
        std::memcpy(&h, bytes.data() + 1 + 2 * i, 2);
        EXPECT_EQ(h, dtype == DType::kBFloat16 ? c.bf16 : c.f16)
            << "x = " << c.x << " at " << i;
      }
      uint16_t h;
      std::memcpy(&h, bytes.data() + 1 + 2 * (n - 1), 2);
      EXPECT_TRUE(std::isnan(dtype == DType::kBFloat16 ? BFloat16ToFloat(h)
                                                       : Float16ToFloat(h)));
    }
  }
  kernels::ForceTarget(0);
}

TEST(Half, KnownValues) {
  EXPECT_EQ(Float16ToFloat(0x3c00), 1.0f);
  EXPECT_EQ(Float16ToFloat(0x7bff), 65504.0f);
  EXPECT_EQ(Float16ToFloat(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(Float16ToFloat(0xc000), -2.0f);
  EXPECT_EQ(BFloat16ToFloat(0x3f80), 1.0f);
  EXPECT_TRUE(std::isinf(Float16ToFloat(0x7c00)));
  EXPECT_TRUE(std::isnan(Float16ToFloat(0x7e00)));
  EXPECT_TRUE(std::isnan(Float16ToFloat(FloatToFloat16(std::nanf("")))));
  EXPECT_TRUE(std::isnan(BFloat16ToFloat(FloatToBFloat16(std::nanf("")))));
}

}  // namespace
}  // namespace cbloss
