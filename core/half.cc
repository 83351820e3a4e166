// Copyright 2026 The cbloss Authors.

#include "core/half.h"

#include <algorithm>
#include <cmath>

#include "core/internal/loss_kernels.h"

namespace cbloss {

float Float16ToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  const uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0) {
    // Zero or subnormal: mantissa * 2^-24, exact in float32.
    const float magnitude = std::ldexp(static_cast<float>(mantissa), -24);
    return sign ? -magnitude : magnitude;
  }
  if (exponent == 31) {
    return BitsToFloat(sign | 0x7f800000u | (mantissa << 13));
  }
  return BitsToFloat(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

uint16_t FloatToFloat16(float f) {
  uint32_t bits = FloatBits(f);
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  uint32_t magnitude = bits & 0x7fffffffu;
  if (magnitude >= 0x7f800000u) {  // inf or NaN (NaN stays a quiet NaN)
    const uint16_t nan_bits =
        magnitude > 0x7f800000u ? 0x200u | ((magnitude >> 13) & 0x3ffu) : 0u;
    return static_cast<uint16_t>(sign | 0x7c00u | nan_bits);
  }
  if (magnitude >= 0x477ff000u) {  // >= 65520 rounds to infinity
    return static_cast<uint16_t>(sign | 0x7c00u);
  }
  if (magnitude < 0x38800000u) {  // below 2^-14: subnormal or zero
    // Scaling by 2^24 is exact; nearbyint rounds half to even.
    const float units = BitsToFloat(magnitude) * 16777216.0f;
    return static_cast<uint16_t>(sign |
                                 static_cast<uint16_t>(std::nearbyint(units)));
  }
  const uint32_t odd = (magnitude >> 13) & 1u;
  magnitude += 0xfffu + odd;        // round to nearest even at bit 13
  magnitude -= (127u - 15u) << 23;  // rebias the exponent
  return static_cast<uint16_t>(sign | (magnitude >> 13));
}

uint16_t FloatToBFloat16(float f) {
  const uint32_t bits = FloatBits(f);
  if ((bits & 0x7fffffffu) > 0x7f800000u) {  // NaN: keep it a quiet NaN
    return static_cast<uint16_t>((bits >> 16) | 0x40u);
  }
  const uint32_t odd = (bits >> 16) & 1u;
  return static_cast<uint16_t>((bits + 0x7fffu + odd) >> 16);
}

void DecodeHalf(DType dtype, absl::Span<const uint16_t> in,
                absl::Span<float> out) {
  if (dtype == DType::kBFloat16) {
    for (size_t i = 0; i < in.size(); ++i) out[i] = BFloat16ToFloat(in[i]);
  } else {
    for (size_t i = 0; i < in.size(); ++i) out[i] = Float16ToFloat(in[i]);
  }
}

void EncodeHalf(DType dtype, absl::Span<const float> in,
                absl::Span<uint16_t> out) {
  if (dtype == DType::kBFloat16) {
    for (size_t i = 0; i < in.size(); ++i) out[i] = FloatToBFloat16(in[i]);
  } else {
    for (size_t i = 0; i < in.size(); ++i) out[i] = FloatToFloat16(in[i]);
  }
}

void DecodeHalfBytes(DType dtype, const char* bytes, int64_t n, float* out) {
  if (dtype == DType::kBFloat16) {
    kernels::DecodeBFloat16(bytes, n, out);  // vectorised
    return;
  }
  for (int64_t i = 0; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, bytes + 2 * i, sizeof h);
    out[i] = Float16ToFloat(h);
  }
}

void EncodeHalfBytes(DType dtype, const float* in, int64_t n, char* bytes,
                     HalfOverflow overflow) {
  const bool saturate = overflow == HalfOverflow::kSaturate;
  if (dtype == DType::kBFloat16) {
    kernels::EncodeBFloat16(in, n, bytes, saturate);  // vectorised
    return;
  }
  constexpr float kMaxFloat16 = 65504.0f;
  for (int64_t i = 0; i < n; ++i) {
    // std::clamp keeps NaN (its comparisons are false).
    const uint16_t h = FloatToFloat16(
        saturate ? std::clamp(in[i], -kMaxFloat16, kMaxFloat16) : in[i]);
    std::memcpy(bytes + 2 * i, &h, sizeof h);
  }
}

int64_t FindNonFiniteHalfBytes(DType dtype, const char* bytes, int64_t n) {
  // Infinities and NaNs are the values whose exponent bits are all ones.
  const uint16_t exponent = dtype == DType::kBFloat16 ? 0x7f80u : 0x7c00u;
  // Blocks without an early exit inside, so the compiler vectorises the scan.
  constexpr int64_t kBlock = 1024;
  uint16_t block[kBlock];
  for (int64_t start = 0; start < n; start += kBlock) {
    const int64_t len = std::min(kBlock, n - start);
    std::memcpy(block, bytes + 2 * start, 2 * len);
    unsigned any = 0;
    for (int64_t k = 0; k < len; ++k) {
      any |= static_cast<unsigned>((block[k] & exponent) == exponent);
    }
    if (any == 0) continue;
    for (int64_t k = 0; k < len; ++k) {
      if ((block[k] & exponent) == exponent) return start + k;
    }
  }
  return -1;
}

float HalfBytesValue(DType dtype, const char* bytes, int64_t index) {
  uint16_t h;
  std::memcpy(&h, bytes + 2 * index, sizeof h);
  return dtype == DType::kBFloat16 ? BFloat16ToFloat(h) : Float16ToFloat(h);
}

}  // namespace cbloss
