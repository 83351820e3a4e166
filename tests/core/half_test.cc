// Copyright 2026 The cbloss Authors.
//
// float16 / bfloat16 conversion: encode results come from PyTorch's own
// round-to-nearest-even conversions (golden_cases.json "conversions"), and
// decoding is checked to be the exact inverse over all 65536 patterns.

#include "core/half.h"

#include <cmath>
#include <fstream>

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
