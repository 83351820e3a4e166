// Copyright 2026 The cbloss Authors.
//
// Fused SIMD row kernels behind ComputeLoss (private to core/: only core/,
// its white-box tests and the kernels benchmark include this). One call
// computes the per-sample losses l_i (LOSS.md section 4) and the gradient
// rows (section 6) of a contiguous range of rows, in one pass over each
// row's logits plus in-cache passes over the row, and returns the range's
// sum of l_i (or u_i l_i for reduction NONE) accumulated in row order.
//
// Precision (LOSS.md section 7): float32 vector math per element for
// SOFTMAX, SOFTMAX_FOCAL, SIGMOID and FOCAL, with float64 row sums and the
// label's element in float64; float64 vector math for the shifted or scaled
// logits of section 9 (BALANCED_SOFTMAX, LOGIT_ADJUSTED, LDAM), where
// float32 loses digits the tolerance needs, and for SOFTMAX_BCE, whose
// clamps (log >= -100, p (1 - p) >= 1e-12) must switch where PyTorch's do.
//
// Kernels are compiled for several instruction sets (Highway's
// foreach_target: AVX-512, AVX2+FMA, SSE4, and a portable 128-bit emulation)
// and the best one the CPU supports is chosen at run time. For one CPU and
// build, a row's results do not depend on the thread count.
//
// Thread-safety: reentrant.

#ifndef CBLOSS_CORE_INTERNAL_LOSS_KERNELS_H_
#define CBLOSS_CORE_INTERNAL_LOSS_KERNELS_H_

#include <cstdint>
#include <vector>

#include "core/class_weights.h"
#include "core/loss_parameters.h"
#include "core/loss_types.h"

namespace cbloss::kernels {

// Everything the row kernels read and write for one ComputeLoss call. The
// pointers cover the whole batch; a kernel touches only its rows.
struct RowsArgs {
  // What to compute: the resolved parameters (loss type, gamma, scale,
  // focal_alpha, seesaw_p, ...) and the class terms MakeClassTerms made for
  // them (weights, offsets, margins, factors). A kernel reads a parameter
  // straight from `params`, so a new one needs no plumbing here.
  const LossParams* params = nullptr;
  const ClassTerms* terms = nullptr;
  const float* weights_f32 = nullptr;  // terms->weights as float (targets)
  int64_t cols = 0;
  const float* logits = nullptr;          // B x C
  const int32_t* labels = nullptr;        // B (labels mode) or null
  const float* targets = nullptr;         // B x C (targets mode) or null
  const float* sample_weights = nullptr;  // B or null (all 1)
  const float* upstream = nullptr;        // B or null (all 1)
  bool reduce_by_upstream = false;        // reduction NONE: grad scale u_i
  double inv_denominator = 0.0;           // 1/D otherwise (0 when D = 0)
  float* per_sample_losses = nullptr;     // B or null
  float* gradient = nullptr;              // B x C or null
};

// Rows [begin, end): writes their outputs and returns their sum of l_i
// (u_i l_i for NONE), in row order.
double LossRows(const RowsArgs& args, int64_t begin, int64_t end);

// EQL_V2's statistics update of LOSS.md section 10 over rows [begin, end)
// (not ignored, background included): adds s_i e_ij |sigma(z_ij) - t_ij|
// to positive[j] where t_ij = 1 and to negative[j] where t_ij = 0, with the
// factors e of args.terms; C entries each.
void EqlV2StatisticsRows(const RowsArgs& args, int64_t begin, int64_t end,
                         double* positive, double* negative);

// Index of the first NaN or infinity among values[0, n), or -1: the
// vectorised scan behind ValidateLossBatch's finite-logits rule.
int64_t FindNonFinite(const float* values, int64_t n);

// bfloat16 wire bytes (little-endian, any alignment) <-> float32, for
// core/half.h's DecodeHalfBytes / EncodeHalfBytes (`saturate`: see
// HalfOverflow there).
void DecodeBFloat16(const char* bytes, int64_t n, float* out);
void EncodeBFloat16(const float* in, int64_t n, char* bytes, bool saturate);

// Name of the instruction set LossRows dispatches to on this CPU now
// ("AVX2", "AVX3", "SSE4", "EMU128", ...).
const char* ActiveTargetName();

// For tests: the compiled instruction sets this CPU supports, as Highway
// target bits (best first). ForceTarget(bit) makes LossRows use that one
// until ForceTarget(0) restores the normal choice. Not thread-safe.
std::vector<int64_t> SupportedTargets();
void ForceTarget(int64_t target);

}  // namespace cbloss::kernels

#endif  // CBLOSS_CORE_INTERNAL_LOSS_KERNELS_H_
