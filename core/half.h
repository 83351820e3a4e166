// Copyright 2026 The cbloss Authors.
//
// IEEE float16 and bfloat16 <-> float32 conversion. Decoding is exact (every
// 16-bit value is a float32 value); encoding rounds to nearest, ties to even,
// as LOSS.md section 7 requires for gradients returned in the logits' dtype.
// Pure functions over caller-provided buffers; thread-safe.
//
// Example:
//   std::vector<float> z(bits.size());
//   DecodeHalf(DType::kBFloat16, bits, absl::MakeSpan(z));

#ifndef CBLOSS_CORE_HALF_H_
#define CBLOSS_CORE_HALF_H_

#include <cstdint>
#include <cstring>

#include "absl/types/span.h"
#include "core/loss_types.h"

namespace cbloss {

inline uint32_t FloatBits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

inline float BitsToFloat(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

inline float BFloat16ToFloat(uint16_t h) {
  return BitsToFloat(static_cast<uint32_t>(h) << 16);
}

float Float16ToFloat(uint16_t h);
uint16_t FloatToFloat16(float f);
uint16_t FloatToBFloat16(float f);

// Bytes per element of `dtype` on the wire.
inline int DTypeSize(DType dtype) { return dtype == DType::kFloat32 ? 4 : 2; }

// Decodes `in` (16-bit patterns of `dtype`, which must be kFloat16 or
// kBFloat16) into `out`, which has in.size() elements.
void DecodeHalf(DType dtype, absl::Span<const uint16_t> in,
                absl::Span<float> out);

// Encodes `in` to 16-bit patterns of `dtype` (kFloat16 or kBFloat16).
void EncodeHalf(DType dtype, absl::Span<const float> in,
                absl::Span<uint16_t> out);

// What encoding does with a value beyond the 16-bit type's largest finite
// value (float16 65504, bfloat16 3.3895e38). kInfinity is IEEE round to
// nearest even (what PyTorch's .to() does): such values become +-inf.
// kSaturate encodes them, and infinities, as +-the largest finite value:
// the service's gradients use it, because LOSS.md section 7 wants every
// result finite for finite input, as float32 results saturate at +-FLT_MAX.
// Values in range round to nearest even either way; NaN stays NaN.
enum class HalfOverflow { kInfinity, kSaturate };

// The same from and to raw little-endian wire bytes (2 per element, any
// alignment), so a request's bytes decode straight into the engine's input
// and the gradient encodes straight into the response's buffer.
void DecodeHalfBytes(DType dtype, const char* bytes, int64_t n, float* out);
void EncodeHalfBytes(DType dtype, const float* in, int64_t n, char* bytes,
                     HalfOverflow overflow);

// Index of the first infinity or NaN among the n 16-bit values of `dtype`
// at `bytes` (little-endian, any alignment), or -1.
int64_t FindNonFiniteHalfBytes(DType dtype, const char* bytes, int64_t n);

// The 16-bit value of `dtype` at element `index` of `bytes`, as float.
float HalfBytesValue(DType dtype, const char* bytes, int64_t index);

}  // namespace cbloss

#endif  // CBLOSS_CORE_HALF_H_
