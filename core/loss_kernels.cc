// Copyright 2026 The cbloss Authors.
//
// Highway compiles this file once per instruction set (foreach_target); the
// code between HWY_BEFORE_NAMESPACE and HWY_AFTER_NAMESPACE is the per-target
// part. See core/internal/loss_kernels.h for the contract and
// docs/PERFORMANCE.md for the measurements behind the choices.

#include "core/internal/loss_kernels.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "core/half.h"

// Not worth its compile time: SSSE3 (SSE4 covers the same machines better).
// HWY_SCALAR, one lane, stays as the portable fallback.
#ifndef HWY_DISABLED_TARGETS
#define HWY_DISABLED_TARGETS HWY_SSSE3
#endif

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "core/loss_kernels.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
// foreach_target.h must come first.
#include "hwy/contrib/math/math-inl.h"
#include "hwy/highway.h"

// Scalar float64 pieces shared by every target: the label's element, row
// tails shorter than a vector, and the float64 saturation of section 7.
#ifndef CBLOSS_CORE_LOSS_KERNELS_SCALAR_
#define CBLOSS_CORE_LOSS_KERNELS_SCALAR_
namespace cbloss::kernels::scalar {

// float64 -> float32, saturating at +-FLT_MAX (LOSS.md section 7: finite
// results for finite input, even with huge sample weights).
inline float ToFloat(double v) {
  return static_cast<float>(std::clamp(v, -double{FLT_MAX}, double{FLT_MAX}));
}

// sp(x), sp(-x), sigma(x), sigma(-x), sharing exp(-|x|) (section 4).
struct Softplus {
  double pos, neg, sigma, sigma_neg;
};

inline Softplus SoftplusPair(double x) {
  const double e = std::exp(-std::fabs(x));
  const double tail = std::log1p(e);
  const double inv = 1.0 / (1.0 + e);
  Softplus s;
  s.pos = std::max(x, 0.0) + tail;
  s.neg = std::max(-x, 0.0) + tail;
  s.sigma = x >= 0 ? inv : e * inv;
  s.sigma_neg = x >= 0 ? e * inv : inv;
  return s;
}

// One SIGMOID/FOCAL element per unit omega: its loss and dl/dz. Written
// with non-negative terms only (LOSS.md sections 4 and 6):
//   b = sp(z) - t z = (1 - t) sp(z) + t sp(-z)
//   sigma - t = (1 - t) sigma(z) - t sigma(-z)
//   sigma + t - 1 = t sigma(z) - (1 - t) sigma(-z)
//   t z + sp(-z) = t sp(z) + (1 - t) sp(-z)
struct ElementTerms {
  double loss, grad;
};

inline ElementTerms BinaryElement(double z, double t, bool focal,
                                  double gamma) {
  const Softplus s = SoftplusPair(z);
  const double b = (1.0 - t) * s.pos + t * s.neg;
  const double diff = (1.0 - t) * s.sigma - t * s.sigma_neg;
  if (!focal) return {b, diff};
  const double m = std::exp(-gamma * (t * s.pos + (1.0 - t) * s.neg));
  // m (diff - gamma h b) as m diff - (gamma h)(m b): a huge gamma (any
  // finite one is valid) makes gamma h b overflow where m is 0, and
  // 0 * inf would be NaN; (gamma h)(m b) is at worst inf, which saturates.
  const double h = t * s.sigma - (1.0 - t) * s.sigma_neg;
  const double loss = m * b;
  return {loss, m * diff - (gamma * h) * loss};
}

// -log p_y from the row max m, z'_y, e_y = exp(z'_y - m) and the sum of the
// other classes' exponentials: log1p keeps the digits of a confident,
// correct prediction, where p_y is within 1e-7 of 1.
inline double NegLogP(double m, double zy, double e_y, double others) {
  if (m - zy > 1.0) return (m - zy) + std::log(e_y + others);
  return std::log1p(others / e_y);
}

}  // namespace cbloss::kernels::scalar
#endif  // CBLOSS_CORE_LOSS_KERNELS_SCALAR_

HWY_BEFORE_NAMESPACE();
namespace cbloss::kernels {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;
#if HWY_TARGET == HWY_SCALAR
using DD = hn::Rebind<double, DF>;  // one lane
#else
using DH = hn::Half<DF>;
using DD = hn::Rebind<double, DH>;  // doubles, as many as half a DF
#endif
using VD = hn::Vec<DD>;

// Adds a float vector's lanes to a float64 accumulator (two halves).
HWY_INLINE void AddToF64(VF v, VD* lo, VD* hi) {
  const DD dd;
#if HWY_TARGET == HWY_SCALAR
  (void)hi;
  *lo = hn::Add(*lo, hn::PromoteTo(dd, v));
#else
  const DH dh;
  *lo = hn::Add(*lo, hn::PromoteTo(dd, hn::LowerHalf(dh, v)));
  *hi = hn::Add(*hi, hn::PromoteTo(dd, hn::UpperHalf(dh, v)));
#endif
}

HWY_INLINE double SumF64(VD lo, VD hi) {
  const DD dd;
  return hn::GetLane(hn::SumOfLanes(dd, hn::Add(lo, hi)));
}

HWY_INLINE VF Saturate(VF v) {
  const DF d;
  return hn::Min(hn::Max(v, hn::Set(d, -FLT_MAX)), hn::Set(d, FLT_MAX));
}

// Calls body(j0, j1) for the row's columns other than `skip` (the label),
// as at most two contiguous segments.
template <class Body>
HWY_INLINE void ForColumnsExcept(int64_t cols, int64_t skip, Body&& body) {
  if (skip < 0 || skip >= cols) {
    body(int64_t{0}, cols);
    return;
  }
  if (skip > 0) body(int64_t{0}, skip);
  if (skip + 1 < cols) body(skip + 1, cols);
}

// g[j] = e[j] * c for j in [0, cols), in place (e was stored in g).
HWY_INLINE void ScaleRow(float* g, int64_t cols, float c) {
  const DF d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  const VF vc = hn::Set(d, c);
  int64_t j = 0;
  for (; j + N <= cols; j += N) {
    hn::StoreU(Saturate(hn::Mul(hn::LoadU(d, g + j), vc)), d, g + j);
  }
  for (; j < cols; ++j) g[j] = scalar::ToFloat(double{g[j]} * c);
}

// The exponentials of a softmax row: the max m of z', e_y = exp(z'_y - m)
// and the sum of exp(z'_j - m) over j != y (float64). e_j is stored in `e`
// (the gradient row) when it is not null.
struct RowExp {
  double m = 0.0;
  double zy = 0.0;  // z'_y
  double e_y = 0.0;
  double others = 0.0;
};

// SOFTMAX and SOFTMAX_FOCAL: z' = z, float32 exponentials.
RowExp ExpRowF32(const float* z, int64_t cols, int32_t y, float* e) {
  const DF d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  VF max0 = hn::Set(d, z[0]);
  VF max1 = max0;
  int64_t j = 0;
  for (; j + 2 * N <= cols; j += 2 * N) {
    max0 = hn::Max(max0, hn::LoadU(d, z + j));
    max1 = hn::Max(max1, hn::LoadU(d, z + j + N));
  }
  for (; j + N <= cols; j += N) max0 = hn::Max(max0, hn::LoadU(d, z + j));
  float m = hn::GetLane(hn::MaxOfLanes(d, hn::Max(max0, max1)));
  for (; j < cols; ++j) m = std::max(m, z[j]);

  const VF vm = hn::Set(d, m);
  const DD dd;
  VD lo = hn::Zero(dd), hi = hn::Zero(dd);
  double tail = 0.0;
  ForColumnsExcept(cols, y, [&](int64_t j0, int64_t j1) {
    int64_t k = j0;
    for (; k + N <= j1; k += N) {
      const VF ev = hn::Exp(d, hn::Sub(hn::LoadU(d, z + k), vm));
      if (e != nullptr) hn::StoreU(ev, d, e + k);
      AddToF64(ev, &lo, &hi);
    }
    for (; k < j1; ++k) {
      const float ev = static_cast<float>(std::exp(double{z[k]} - m));
      if (e != nullptr) e[k] = ev;
      tail += ev;
    }
  });
  RowExp r;
  r.m = m;
  r.zy = z[y];
  r.e_y = std::exp(r.zy - r.m);
  r.others = SumF64(lo, hi) + tail;
  return r;
}

// BALANCED_SOFTMAX, LOGIT_ADJUSTED, LDAM: z'_j = a z_j + offset_j (offsets
// may be null) for j != y, and the caller's z'_y; float64 exponentials.
// VS: z'_j = scales_j z_j + offset_j (`scales` not null, `a` unused).
RowExp ExpRowF64(const float* z, int64_t cols, int32_t y, double a,
                 const double* offsets, double zy, float* e,
                 const double* scales = nullptr) {
  const DD dd;
  const hn::Rebind<float, DD> dfh;
  const int64_t N = static_cast<int64_t>(hn::Lanes(dd));
  const VD va = hn::Set(dd, a);
  auto load = [&](int64_t k) {
    const VD x = hn::PromoteTo(dd, hn::LoadU(dfh, z + k));
    const VD sx = scales != nullptr ? hn::Mul(hn::LoadU(dd, scales + k), x)
                                    : hn::Mul(va, x);
    return offsets != nullptr ? hn::Add(sx, hn::LoadU(dd, offsets + k)) : sx;
  };
  auto scalar_logit = [&](int64_t k) {
    const double sx = (scales != nullptr ? scales[k] : a) * double{z[k]};
    return sx + (offsets != nullptr ? offsets[k] : 0.0);
  };
  VD vmax = hn::Set(dd, zy);
  double m = zy;
  ForColumnsExcept(cols, y, [&](int64_t j0, int64_t j1) {
    int64_t k = j0;
    for (; k + N <= j1; k += N) vmax = hn::Max(vmax, load(k));
    for (; k < j1; ++k) m = std::max(m, scalar_logit(k));
  });
  m = std::max(m, hn::GetLane(hn::MaxOfLanes(dd, vmax)));

  const VD vm = hn::Set(dd, m);
  VD acc = hn::Zero(dd);
  double tail = 0.0;
  ForColumnsExcept(cols, y, [&](int64_t j0, int64_t j1) {
    int64_t k = j0;
    for (; k + N <= j1; k += N) {
      const VD ev = hn::Exp(dd, hn::Sub(load(k), vm));
      if (e != nullptr) hn::StoreU(hn::DemoteTo(dfh, ev), dfh, e + k);
      acc = hn::Add(acc, ev);
    }
    for (; k < j1; ++k) {
      const double ev = std::exp(scalar_logit(k) - m);
      if (e != nullptr) e[k] = static_cast<float>(ev);
      tail += ev;
    }
  });
  RowExp r;
  r.m = m;
  r.zy = zy;
  r.e_y = std::exp(zy - m);
  r.others = hn::GetLane(hn::SumOfLanes(dd, acc)) + tail;
  return r;
}

// Cross-entropy on z' (SOFTMAX and section 9), or SOFTMAX_FOCAL, from the
// row's exponentials; finishes the gradient row from the stored e_j:
//   G_j = f p_j (j != y),  G_y = -f (1 - p_y) = -f others / sum.
double FinishSoftmaxRow(const RowExp& r, int64_t cols, int32_t y,
                        double row_weight, double grad_scale, double chain,
                        bool focal, double gamma, float* g) {
  const double sum = r.e_y + r.others;
  const double nlp = scalar::NegLogP(r.m, r.zy, r.e_y, r.others);
  double loss = row_weight * nlp;
  double f = row_weight * grad_scale * chain;
  if (focal) {
    // LOSS.md section 9 SOFTMAX_FOCAL: x = 1 - p_t, q = lp / expm1(lp).
    const double x = r.others / sum;
    const double p_t = r.e_y / sum;
    const double modulator = std::pow(x, gamma);
    const double q = x > 0.0 ? nlp / x : 1.0;
    loss *= modulator;
    // modulator (1 + gamma p_t q), ordered so that a huge gamma where the
    // modulator is 0 gives 0, not 0 * inf = NaN (p_t q <= 1).
    f *= modulator + (modulator * gamma) * (p_t * q);
  }
  if (g != nullptr) {
    ScaleRow(g, cols, scalar::ToFloat(f / sum));
    g[y] = scalar::ToFloat(-f * (r.others / sum));
  }
  return loss;
}

// Where the float32 vector loop over columns [j0, j1) must stop: FOCAL
// with a gamma beyond float32's range (any finite gamma is valid) runs in
// the float64 scalar code instead, where m = exp(-gamma x) is right; as
// float32 the clamped gamma would make m ~ 1 where it is 0.
template <bool kFocal>
HWY_INLINE int64_t VectorEnd(int64_t j0, int64_t j1, double gamma) {
  return kFocal && !(gamma <= FLT_MAX) ? j0 : j1;
}

// SIGMOID / FOCAL in labels mode: t = 0 on columns [j0, j1) (the label's is
// done in float64 by the caller). Adds the sum of b (or m b) and writes
// G = c sigma (or c m d).
// With kFactors (EQL, EQL_V2: SIGMOID only), element k's loss and gradient
// are also multiplied by f[k].
template <bool kFocal, bool kFactors = false>
void BinaryZeroTargets(const float* z, int64_t j0, int64_t j1, double gamma,
                       float c, float* g, VD* lo, VD* hi, double* tail,
                       const float* f = nullptr) {
  static_assert(!(kFocal && kFactors), "element factors are SIGMOID's");
  const DF d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  const VF zero = hn::Zero(d), one = hn::Set(d, 1.0f);
  const VF vc = hn::Set(d, c), vgamma = hn::Set(d, scalar::ToFloat(gamma));
  const bool gamma_two = gamma == 2.0;
  int64_t k = j0;
  for (; k + N <= VectorEnd<kFocal>(j0, j1, gamma); k += N) {
    const VF x = hn::LoadU(d, z + k);
    const VF e = hn::Exp(d, hn::Neg(hn::Abs(x)));
    const VF softplus_tail = hn::Log1p(d, e);
    const VF pos = hn::Add(hn::Max(x, zero), softplus_tail);  // b = sp(z)
    const VF inv = hn::Div(one, hn::Add(one, e));
    const auto nonneg = hn::Ge(x, zero);
    const VF sigma = hn::IfThenElse(nonneg, inv, hn::Mul(e, inv));
    if constexpr (kFocal) {
      const VF sigma_neg = hn::IfThenElse(nonneg, hn::Mul(e, inv), inv);
      // m = exp(-gamma sp(-z)) = sigma^gamma
      VF m;
      if (gamma_two) {
        m = hn::Mul(sigma, sigma);
      } else {
        const VF neg = hn::Add(hn::Max(hn::Neg(x), zero), softplus_tail);
        m = hn::Exp(d, hn::Neg(hn::Mul(vgamma, neg)));
      }
      const VF loss = hn::Mul(m, pos);
      AddToF64(loss, lo, hi);
      if (g != nullptr) {
        // m (sigma + gamma sigma(-z) b) as m sigma + (gamma sigma(-z)) (m b),
        // as scalar::BinaryElement: no 0 * inf for a huge gamma.
        const VF dz =
            hn::MulAdd(hn::Mul(vgamma, sigma_neg), loss, hn::Mul(m, sigma));
        hn::StoreU(Saturate(hn::Mul(vc, dz)), d, g + k);
      }
    } else if constexpr (kFactors) {
      const VF fv = hn::LoadU(d, f + k);
      AddToF64(hn::Mul(fv, pos), lo, hi);
      if (g != nullptr) hn::StoreU(hn::Mul(hn::Mul(vc, fv), sigma), d, g + k);
    } else {
      AddToF64(pos, lo, hi);
      if (g != nullptr) hn::StoreU(hn::Mul(vc, sigma), d, g + k);
    }
  }
  for (; k < j1; ++k) {
    const scalar::ElementTerms t =
        scalar::BinaryElement(z[k], 0.0, kFocal, gamma);
    const double factor = kFactors ? double{f[k]} : 1.0;
    *tail += factor * t.loss;
    if (g != nullptr) g[k] = scalar::ToFloat(double{c} * factor * t.grad);
  }
}

// SIGMOID / FOCAL, labels mode: omega_ij = s_i w_{y_i} = row_weight.
// `negative` and `positive` scale the t = 0 and t = 1 terms (focal_alpha:
// 1 - alpha and alpha; otherwise 1).
template <bool kFocal>
double BinaryLabelsRow(const float* z, int64_t cols, int32_t y,
                       double row_weight, double grad_scale, double gamma,
                       double negative, double positive, float* g) {
  const DD dd;
  VD lo = hn::Zero(dd), hi = hn::Zero(dd);
  double tail = 0.0;
  const float c = scalar::ToFloat(row_weight * negative * grad_scale);
  ForColumnsExcept(cols, y, [&](int64_t j0, int64_t j1) {
    BinaryZeroTargets<kFocal>(z, j0, j1, gamma, c, g, &lo, &hi, &tail);
  });
  const scalar::ElementTerms t =
      scalar::BinaryElement(z[y], 1.0, kFocal, gamma);
  const double label_weight = row_weight * positive;
  if (g != nullptr) g[y] = scalar::ToFloat(label_weight * grad_scale * t.grad);
  return row_weight * negative * (SumF64(lo, hi) + tail) +
         label_weight * t.loss;
}

// EQL and EQL_V2 (LOSS.md section 10): SIGMOID terms with element factors,
// labels only; y == cols marks a background row (every t = 0). `nf` holds
// the t = 0 factors of this row (null: all 1), `pf` the label's.
double FactoredBinaryRow(const float* z, int64_t cols, int32_t y, double s,
                         double grad_scale, const float* nf, double pf,
                         float* g) {
  const DD dd;
  VD lo = hn::Zero(dd), hi = hn::Zero(dd);
  double tail = 0.0;
  const float c = scalar::ToFloat(s * grad_scale);
  ForColumnsExcept(cols, y, [&](int64_t j0, int64_t j1) {
    if (nf != nullptr) {
      BinaryZeroTargets<false, true>(z, j0, j1, 0.0, c, g, &lo, &hi, &tail, nf);
    } else {
      BinaryZeroTargets<false>(z, j0, j1, 0.0, c, g, &lo, &hi, &tail);
    }
  });
  double loss = s * (SumF64(lo, hi) + tail);
  if (y < cols) {
    const scalar::ElementTerms t = scalar::BinaryElement(z[y], 1.0, false, 0);
    if (g != nullptr) g[y] = scalar::ToFloat(s * pf * grad_scale * t.grad);
    loss += s * pf * t.loss;
  }
  return loss;
}

// SIGMOID / FOCAL, targets mode: omega_ij = s_i w_j, t_ij from the request.
// focal_alpha: every element's term times a = a0 + a1 t (a0 = 1 - alpha,
// a1 = 2 alpha - 1; without it a0 = 1, a1 = 0).
template <bool kFocal>
double BinaryTargetsRow(const float* z, const float* t, int64_t cols,
                        const double* w, const float* w32, double s,
                        double grad_scale, double gamma, double a0, double a1,
                        float* g) {
  const DF d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  const VF zero = hn::Zero(d), one = hn::Set(d, 1.0f);
  const VF va0 = hn::Set(d, static_cast<float>(a0));
  const VF va1 = hn::Set(d, static_cast<float>(a1));
  const VF vgamma = hn::Set(d, scalar::ToFloat(gamma));
  const VF vc = hn::Set(d, scalar::ToFloat(s * grad_scale));
  const DD dd;
  VD lo = hn::Zero(dd), hi = hn::Zero(dd);
  int64_t k = 0;
  for (; k + N <= VectorEnd<kFocal>(0, cols, gamma); k += N) {
    const VF x = hn::LoadU(d, z + k);
    const VF tv = hn::LoadU(d, t + k);
    const VF u = hn::Sub(one, tv);  // 1 - t
    const VF wv = hn::Mul(hn::LoadU(d, w32 + k), hn::MulAdd(va1, tv, va0));
    const VF e = hn::Exp(d, hn::Neg(hn::Abs(x)));
    const VF softplus_tail = hn::Log1p(d, e);
    const VF pos = hn::Add(hn::Max(x, zero), softplus_tail);
    const VF neg = hn::Add(hn::Max(hn::Neg(x), zero), softplus_tail);
    const VF inv = hn::Div(one, hn::Add(one, e));
    const auto nonneg = hn::Ge(x, zero);
    const VF sigma = hn::IfThenElse(nonneg, inv, hn::Mul(e, inv));
    const VF sigma_neg = hn::IfThenElse(nonneg, hn::Mul(e, inv), inv);
    const VF b = hn::MulAdd(u, pos, hn::Mul(tv, neg));
    const VF diff = hn::Sub(hn::Mul(u, sigma), hn::Mul(tv, sigma_neg));
    VF loss = b, grad = diff;
    if constexpr (kFocal) {
      const VF exponent = hn::MulAdd(tv, pos, hn::Mul(u, neg));
      const VF m = hn::Exp(d, hn::Neg(hn::Mul(vgamma, exponent)));
      const VF h = hn::Sub(hn::Mul(tv, sigma), hn::Mul(u, sigma_neg));
      loss = hn::Mul(m, b);
      grad = hn::NegMulAdd(hn::Mul(vgamma, h), loss, hn::Mul(m, diff));
    }
    AddToF64(hn::Mul(wv, loss), &lo, &hi);
    if (g != nullptr) {
      hn::StoreU(Saturate(hn::Mul(hn::Mul(vc, wv), grad)), d, g + k);
    }
  }
  double tail = 0.0;
  for (; k < cols; ++k) {
    const scalar::ElementTerms e =
        scalar::BinaryElement(z[k], t[k], kFocal, gamma);
    const double wk = w[k] * (a0 + a1 * double{t[k]});
    tail += wk * e.loss;
    if (g != nullptr) g[k] = scalar::ToFloat(s * wk * grad_scale * e.grad);
  }
  return s * (SumF64(lo, hi) + tail);
}

// g[j] *= scales[j] (VS: the chain factor 1 / Delta_j of z'_j).
HWY_INLINE void ScaleRowBy(float* g, int64_t cols, const float* scales) {
  const DF d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  int64_t j = 0;
  for (; j + N <= cols; j += N) {
    hn::StoreU(hn::Mul(hn::LoadU(d, g + j), hn::LoadU(d, scales + j)), d,
               g + j);
  }
  for (; j < cols; ++j) g[j] = scalar::ToFloat(double{g[j]} * scales[j]);
}

// SEESAW, a foreground row (LOSS.md section 10): cross-entropy on
//   z'_j = z_j + p min(0, log N_j - log N_y)
//              + q max(0, log p_j - log max(p_y, eps))   (j != y),
// z'_y = z_y, with log p from the row's log-softmax in float64 (finite for
// any finite logits; the compensation is a constant for the gradient).
// `zp` is a scratch row of `cols` doubles.
double SeesawRow(const RowsArgs& a, const float* z, int32_t y, double s,
                 double grad_scale, double* zp, float* g) {
  const int64_t cols = a.cols;
  const DD dd;
  const hn::Rebind<float, DD> dfh;
  const int64_t N = static_cast<int64_t>(hn::Lanes(dd));
  // log-sum-exp of z: float32 exponentials summed in float64, as SOFTMAX.
  const RowExp plain = ExpRowF32(z, cols, y, nullptr);
  const double lse = plain.m + std::log(plain.e_y + plain.others);
  // The compensation is q max(0, z_j - threshold), threshold =
  // lse + log max(p_y, eps); the mitigation p min(0, log N_j - log N_y).
  const double threshold =
      lse + std::max(double{z[y]} - lse, std::log(a.params->seesaw_eps));
  const double* log_n = a.terms->log_counts.data();
  const VD vp = hn::Set(dd, a.params->seesaw_p);
  const VD vq = hn::Set(dd, a.params->seesaw_q);
  const VD vt = hn::Set(dd, threshold), vlny = hn::Set(dd, log_n[y]);
  const VD zero = hn::Zero(dd);
  VD vmax = hn::Set(dd, double{z[y]});
  int64_t j = 0;
  for (; j + N <= cols; j += N) {  // z' in float64 (|z| up to 1e4 and more)
    const VD x = hn::PromoteTo(dd, hn::LoadU(dfh, z + j));
    const VD mitigation =
        hn::Mul(vp, hn::Min(zero, hn::Sub(hn::LoadU(dd, log_n + j), vlny)));
    const VD compensation = hn::Mul(vq, hn::Max(zero, hn::Sub(x, vt)));
    const VD v = hn::Add(x, hn::Add(mitigation, compensation));
    hn::StoreU(v, dd, zp + j);
    vmax = hn::Max(vmax, v);
  }
  double m2 = hn::GetLane(hn::MaxOfLanes(dd, vmax));
  for (; j < cols; ++j) {
    const double x = z[j];
    zp[j] = x + a.params->seesaw_p * std::min(0.0, log_n[j] - log_n[y]) +
            a.params->seesaw_q * std::max(0.0, x - threshold);
    m2 = std::max(m2, zp[j]);
  }
  zp[y] = z[y];  // z'_y = z_y
  // exp(z' - max): the difference in float64, the exponential in float32
  // (relative error ~1e-7 of a difference within a few hundred), summed in
  // float64; e_j is stored in the gradient row as SOFTMAX does.
  const VD vm2 = hn::Set(dd, m2);
  VD acc = hn::Zero(dd);
  double tail = 0.0;
  ForColumnsExcept(cols, y, [&](int64_t j0, int64_t j1) {
    int64_t k = j0;
    for (; k + N <= j1; k += N) {
      const auto ev =
          hn::Exp(dfh, hn::DemoteTo(dfh, hn::Sub(hn::LoadU(dd, zp + k), vm2)));
      if (g != nullptr) hn::StoreU(ev, dfh, g + k);
      acc = hn::Add(acc, hn::PromoteTo(dd, ev));
    }
    for (; k < j1; ++k) {
      const float ev = static_cast<float>(std::exp(zp[k] - m2));
      if (g != nullptr) g[k] = ev;
      tail += ev;
    }
  });
  RowExp r;
  r.m = m2;
  r.zy = z[y];
  r.e_y = std::exp(r.zy - m2);
  r.others = hn::GetLane(hn::SumOfLanes(dd, acc)) + tail;
  return FinishSoftmaxRow(r, cols, y, s, grad_scale, 1.0, false, 0.0, g);
}

// SOFTMAX_BCE (labels mode): the PyTorch port's BCE on softmax
// probabilities with its clamped logs and backward (LOSS.md sections 4 and
// 6), in float64 vectors; t = 0 except at the label, done in float64 scalar.
// exp(z_j - m) is recomputed in each pass rather than stored in float32.
double SoftmaxBceRow(const float* z, int64_t cols, int32_t y, double omega,
                     double grad_scale, float* g) {
  constexpr double kLogFloor = -100.0;
  constexpr double kEpsilon = 1e-12;  // PyTorch's BCE backward guard
  const DD dd;
  const hn::Rebind<float, DD> dfh;
  const int64_t N = static_cast<int64_t>(hn::Lanes(dd));
  auto load = [&](int64_t k) {
    return hn::PromoteTo(dd, hn::LoadU(dfh, z + k));
  };
  double m = z[0];
  for (int64_t j = 1; j < cols; ++j) m = std::max(m, double{z[j]});
  const VD vm = hn::Set(dd, m);

  VD acc = hn::Zero(dd);
  double others = 0.0;
  ForColumnsExcept(cols, y, [&](int64_t j0, int64_t j1) {
    int64_t k = j0;
    for (; k + N <= j1; k += N)
      acc = hn::Add(acc, hn::Exp(dd, hn::Sub(load(k), vm)));
    for (; k < j1; ++k) others += std::exp(double{z[k]} - m);
  });
  others += hn::GetLane(hn::SumOfLanes(dd, acc));
  const double e_y = std::exp(double{z[y]} - m);
  const double sum = e_y + others;
  const double inv_sum = 1.0 / sum;
  const double f = omega * grad_scale;

  // Loss terms and dot = sum_k p_k dL/dp_k.
  const VD vinv = hn::Set(dd, inv_sum), vf = hn::Set(dd, f);
  const VD one = hn::Set(dd, 1.0), floor = hn::Set(dd, kLogFloor);
  const VD eps = hn::Set(dd, kEpsilon);
  VD loss_acc = hn::Zero(dd), dot_acc = hn::Zero(dd);
  double loss_tail = 0.0, dot_tail = 0.0;
  auto dp_of = [&](VD p) {  // t = 0: f p / max((1 - p) p, eps)
    return hn::Div(hn::Mul(vf, p), hn::Max(hn::Mul(hn::Sub(one, p), p), eps));
  };
  auto scalar_dp = [&](double p, double t, double one_minus_p) {
    return f * (p - t) / std::max(one_minus_p * p, kEpsilon);
  };
  ForColumnsExcept(cols, y, [&](int64_t j0, int64_t j1) {
    int64_t k = j0;
    for (; k + N <= j1; k += N) {
      const VD p = hn::Mul(hn::Exp(dd, hn::Sub(load(k), vm)), vinv);
      loss_acc = hn::Sub(loss_acc, hn::Max(hn::Log1p(dd, hn::Neg(p)), floor));
      dot_acc = hn::MulAdd(p, dp_of(p), dot_acc);
    }
    for (; k < j1; ++k) {
      const double p = std::exp(double{z[k]} - m) * inv_sum;
      loss_tail -= std::max(std::log1p(-p), kLogFloor);
      dot_tail += p * scalar_dp(p, 0.0, 1.0 - p);
    }
  });
  const double p_y = e_y * inv_sum;
  const double one_minus_p_y = others * inv_sum;
  const double dp_y = scalar_dp(p_y, 1.0, one_minus_p_y);
  const double log_p_y = std::max(std::log(p_y), kLogFloor);
  const double loss =
      omega * (hn::GetLane(hn::SumOfLanes(dd, loss_acc)) + loss_tail - log_p_y);
  if (g == nullptr) return loss;
  const double dot =
      hn::GetLane(hn::SumOfLanes(dd, dot_acc)) + dot_tail + p_y * dp_y;

  // G_j = p_j (dL/dp_j - dot).
  const VD vdot = hn::Set(dd, dot);
  const VD lo = hn::Set(dd, -double{FLT_MAX}), hi = hn::Set(dd, FLT_MAX);
  ForColumnsExcept(cols, y, [&](int64_t j0, int64_t j1) {
    int64_t k = j0;
    for (; k + N <= j1; k += N) {
      const VD p = hn::Mul(hn::Exp(dd, hn::Sub(load(k), vm)), vinv);
      const VD gv = hn::Mul(p, hn::Sub(dp_of(p), vdot));
      hn::StoreU(hn::DemoteTo(dfh, hn::Min(hn::Max(gv, lo), hi)), dfh, g + k);
    }
    for (; k < j1; ++k) {
      const double p = std::exp(double{z[k]} - m) * inv_sum;
      g[k] = scalar::ToFloat(p * (scalar_dp(p, 0.0, 1.0 - p) - dot));
    }
  });
  g[y] = scalar::ToFloat(p_y * (dp_y - dot));
  return loss;
}

// SEESAW, EQL and EQL_V2 (LOSS.md section 10): the row weight is s alone,
// and y == C marks a background row.
double DetectionRow(const RowsArgs& a, const float* z, int32_t y, double s,
                    double gs, double* scratch, float* g) {
  const int64_t C = a.cols;
  switch (a.params->loss_type) {
    case LossType::kSeesaw:
      if (y == C) {  // background: l = 0, G = 0
        if (g != nullptr) std::fill(g, g + C, 0.0f);
        return 0.0;
      }
      return SeesawRow(a, z, y, s, gs, scratch, g);
    case LossType::kEql:
      return FactoredBinaryRow(
          z, C, y, s, gs, y == C ? nullptr : a.terms->negative_factors.data(),
          1.0, g);
    default:  // kEqlV2
      return FactoredBinaryRow(z, C, y, s, gs, a.terms->negative_factors.data(),
                               y == C ? 0.0 : a.terms->positive_factors[y], g);
  }
}

// focal_alpha (SIGMOID, FOCAL): t = 0 terms times 1 - alpha, t = 1 terms
// times alpha; NaN while unset (both 1).
struct AlphaScales {
  double negative = 1.0;
  double positive = 1.0;
};

AlphaScales AlphaScalesOf(const LossParams& params) {
  if (std::isnan(params.focal_alpha)) return {};
  return {1.0 - params.focal_alpha, params.focal_alpha};
}

// One labels-mode row (label y, not ignored) of the losses with class
// weights: row weight s w_y.
double WeightedLabelsRow(const RowsArgs& a, const float* z, int32_t y, double s,
                         double gs, AlphaScales alpha, float* g) {
  const int64_t C = a.cols;
  const double rw = s * a.terms->weights[y];
  switch (a.params->loss_type) {
    case LossType::kSoftmax:
    case LossType::kSoftmaxFocal: {
      const bool focal = a.params->loss_type == LossType::kSoftmaxFocal;
      return FinishSoftmaxRow(ExpRowF32(z, C, y, g), C, y, rw, gs, 1.0, focal,
                              a.params->gamma, g);
    }
    case LossType::kBalancedSoftmax:
    case LossType::kLogitAdjusted: {
      const double* off = a.terms->logit_offsets.data();
      const double zy = double{z[y]} + off[y];
      return FinishSoftmaxRow(ExpRowF64(z, C, y, 1.0, off, zy, g), C, y, rw, gs,
                              1.0, false, 0.0, g);
    }
    case LossType::kLdam: {
      const double zy = a.params->scale * (double{z[y]} - a.terms->margins[y]);
      return FinishSoftmaxRow(
          ExpRowF64(z, C, y, a.params->scale, nullptr, zy, g), C, y, rw, gs,
          a.params->scale, false, 0.0, g);
    }
    case LossType::kVs: {
      const double zy =
          double{z[y]} * a.terms->logit_scales[y] + a.terms->logit_offsets[y];
      const double loss = FinishSoftmaxRow(
          ExpRowF64(z, C, y, 1.0, a.terms->logit_offsets.data(), zy, g,
                    a.terms->logit_scales.data()),
          C, y, rw, gs, 1.0, false, 0.0, g);
      if (g != nullptr) ScaleRowBy(g, C, a.terms->gradient_scales.data());
      return loss;
    }
    case LossType::kSigmoid:
      return BinaryLabelsRow<false>(z, C, y, rw, gs, 0.0, alpha.negative,
                                    alpha.positive, g);
    case LossType::kFocal:
      return BinaryLabelsRow<true>(z, C, y, rw, gs, a.params->gamma,
                                   alpha.negative, alpha.positive, g);
    case LossType::kSoftmaxBce:
      return SoftmaxBceRow(z, C, y, rw, gs, g);
    case LossType::kSeesaw:
    case LossType::kEql:
    case LossType::kEqlV2:
      break;  // DetectionRow
  }
  return 0.0;
}

double LossRowsImpl(const RowsArgs& a, int64_t begin, int64_t end) {
  const int64_t C = a.cols;
  double total = 0.0;
  std::vector<double> scratch;  // SEESAW's z' row, once per call
  if (a.params->loss_type == LossType::kSeesaw) scratch.resize(C);
  const AlphaScales alpha = AlphaScalesOf(*a.params);
  for (int64_t i = begin; i < end; ++i) {
    const float* z = a.logits + i * C;
    float* g = a.gradient != nullptr ? a.gradient + i * C : nullptr;
    const double s = a.sample_weights != nullptr ? a.sample_weights[i] : 1.0;
    const double u = a.upstream != nullptr ? a.upstream[i] : 1.0;
    const double gs = a.reduce_by_upstream ? u : a.inv_denominator;
    double loss = 0.0;
    if (a.labels != nullptr) {
      const int32_t y = a.labels[i];
      if (y == a.params->ignore_index) {
        if (g != nullptr) std::fill(g, g + C, 0.0f);
      } else if (IsDetectionLoss(a.params->loss_type)) {
        loss = DetectionRow(a, z, y, s, gs, scratch.data(), g);
      } else {
        loss = WeightedLabelsRow(a, z, y, s, gs, alpha, g);
      }
    } else {
      const float* t = a.targets + i * C;
      const double a0 = alpha.negative, a1 = alpha.positive - alpha.negative;
      if (a.params->loss_type == LossType::kFocal) {
        loss = BinaryTargetsRow<true>(z, t, C, a.terms->weights.data(),
                                      a.weights_f32, s, gs, a.params->gamma, a0,
                                      a1, g);
      } else {
        loss = BinaryTargetsRow<false>(z, t, C, a.terms->weights.data(),
                                       a.weights_f32, s, gs, 0.0, a0, a1, g);
      }
    }
    if (a.per_sample_losses != nullptr) {
      a.per_sample_losses[i] = scalar::ToFloat(loss);
    }
    total += a.reduce_by_upstream ? u * loss : loss;
  }
  return total;
}

// out[0, N) += v: v's float lanes added to float64 sums in memory.
HWY_INLINE void AddIntoF64(VF v, double* out) {
  const DD dd;
#if HWY_TARGET == HWY_SCALAR
  hn::StoreU(hn::Add(hn::LoadU(dd, out), hn::PromoteTo(dd, v)), dd, out);
#else
  const DH dh;
  const size_t half_lanes = hn::Lanes(dd);
  hn::StoreU(
      hn::Add(hn::LoadU(dd, out), hn::PromoteTo(dd, hn::LowerHalf(dh, v))), dd,
      out);
  hn::StoreU(hn::Add(hn::LoadU(dd, out + half_lanes),
                     hn::PromoteTo(dd, hn::UpperHalf(dh, v))),
             dd, out + half_lanes);
#endif
}

// EQL_V2 statistics (loss_kernels.h): g = sigma(z) where t = 0 and
// sigma(-z) where t = 1. The t = 0 terms (all but one per row) are float32
// vectors (s q_j sigma(z), one exp each) summed in float64; the label's
// term is float64. Only accumulating requests pay for this pass.
void EqlV2StatisticsRowsImpl(const RowsArgs& a, int64_t begin, int64_t end,
                             double* positive, double* negative) {
  const DF d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  const VF zero = hn::Zero(d), one = hn::Set(d, 1.0f);
  const int64_t C = a.cols;
  const float* nf = a.terms->negative_factors.data();
  for (int64_t i = begin; i < end; ++i) {
    const int32_t y = a.labels[i];
    if (y == a.params->ignore_index) continue;
    const double s = a.sample_weights != nullptr ? a.sample_weights[i] : 1.0;
    const float* z = a.logits + i * C;
    const VF vs = hn::Set(d, static_cast<float>(s));
    ForColumnsExcept(C, y, [&](int64_t j0, int64_t j1) {
      int64_t k = j0;
      for (; k + N <= j1; k += N) {
        const VF x = hn::LoadU(d, z + k);
        const VF e = hn::Exp(d, hn::Neg(hn::Abs(x)));
        const VF inv = hn::Div(one, hn::Add(one, e));
        const VF sigma = hn::IfThenElse(hn::Ge(x, zero), inv, hn::Mul(e, inv));
        AddIntoF64(hn::Mul(hn::Mul(vs, hn::LoadU(d, nf + k)), sigma),
                   negative + k);
      }
      for (; k < j1; ++k) {
        negative[k] += s * double{nf[k]} * scalar::SoftplusPair(z[k]).sigma;
      }
    });
    if (y >= 0 && y < C) {  // y == C: a background row, every t = 0
      positive[y] += s * a.terms->positive_factors[y] *
                     scalar::SoftplusPair(z[y]).sigma_neg;
    }
  }
}

int64_t FindNonFiniteImpl(const float* x, int64_t n) {
  const DF d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  int64_t k = 0;
  // Four vectors per test; the scalar loop below finds the exact index.
  for (; k + 4 * N <= n; k += 4 * N) {
    const auto finite =
        hn::And(hn::And(hn::IsFinite(hn::LoadU(d, x + k)),
                        hn::IsFinite(hn::LoadU(d, x + k + N))),
                hn::And(hn::IsFinite(hn::LoadU(d, x + k + 2 * N)),
                        hn::IsFinite(hn::LoadU(d, x + k + 3 * N))));
    if (!hn::AllTrue(d, finite)) break;
  }
  for (; k < n; ++k) {
    if (!std::isfinite(x[k])) return k;
  }
  return -1;
}

// bfloat16 wire bytes <-> float32: decoding is exact (a shift); encoding
// rounds to nearest even and keeps NaN a quiet NaN, as FloatToBFloat16.
void DecodeBFloat16Impl(const char* bytes, int64_t n, float* out) {
  const DF d;
  const hn::RebindToUnsigned<DF> du;
  const hn::Rebind<uint16_t, DF> d16;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  int64_t k = 0;
  for (; k + N <= n; k += N) {
    const auto h = hn::LoadU(d16, reinterpret_cast<const uint16_t*>(bytes) + k);
    hn::StoreU(hn::BitCast(d, hn::ShiftLeft<16>(hn::PromoteTo(du, h))), d,
               out + k);
  }
  for (; k < n; ++k) {
    uint16_t h;
    std::memcpy(&h, bytes + 2 * k, sizeof h);
    uint32_t bits = static_cast<uint32_t>(h) << 16;
    std::memcpy(out + k, &bits, sizeof bits);
  }
}

// With `saturate`, values beyond bfloat16's largest finite value (and
// infinities) encode as that value, +-0x7f7f, instead of rounding to inf.
void EncodeBFloat16Impl(const float* in, int64_t n, char* bytes,
                        bool saturate) {
  const DF d;
  const hn::RebindToSigned<DF> di;
  const hn::Rebind<uint16_t, DF> d16;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  const auto one = hn::Set(di, 1), round = hn::Set(di, 0x7fff);
  const auto quiet = hn::Set(di, 0x40), low16 = hn::Set(di, 0xffff);
  const float max_finite = BFloat16ToFloat(0x7f7f);
  const VF vmax = hn::Set(d, max_finite), vmin = hn::Set(d, -max_finite);
  int64_t k = 0;
  for (; k + N <= n; k += N) {
    const VF v = hn::LoadU(d, in + k);
    const auto nan = hn::RebindMask(di, hn::IsNaN(v));
    const auto high = hn::And(hn::ShiftRight<16>(hn::BitCast(di, v)), low16);
    const auto bits =
        hn::BitCast(di, saturate ? hn::Min(hn::Max(v, vmin), vmax) : v);
    const auto odd = hn::And(hn::ShiftRight<16>(bits), one);
    // (bits + 0x7fff + odd) >> 16 as unsigned: add, then a logical shift.
    const auto sum = hn::Add(hn::Add(bits, round), odd);
    const auto rounded = hn::And(hn::ShiftRight<16>(sum), low16);
    const auto h = hn::IfThenElse(nan, hn::Or(high, quiet), rounded);
    hn::StoreU(hn::DemoteTo(d16, h), d16,
               reinterpret_cast<uint16_t*>(bytes) + k);
  }
  for (; k < n; ++k) {
    // std::clamp keeps NaN (its comparisons are false).
    const float v =
        saturate ? std::clamp(in[k], -max_finite, max_finite) : in[k];
    const uint16_t h = FloatToBFloat16(v);
    std::memcpy(bytes + 2 * k, &h, sizeof h);
  }
}

const char* TargetNameImpl() { return hwy::TargetName(HWY_TARGET); }

// NOLINTNEXTLINE(google-readability-namespace-comments)
}  // namespace HWY_NAMESPACE
}  // namespace cbloss::kernels
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace cbloss::kernels {

HWY_EXPORT(LossRowsImpl);
HWY_EXPORT(EqlV2StatisticsRowsImpl);
HWY_EXPORT(TargetNameImpl);
HWY_EXPORT(FindNonFiniteImpl);
HWY_EXPORT(DecodeBFloat16Impl);
HWY_EXPORT(EncodeBFloat16Impl);

void DecodeBFloat16(const char* bytes, int64_t n, float* out) {
  HWY_DYNAMIC_DISPATCH(DecodeBFloat16Impl)(bytes, n, out);
}

void EncodeBFloat16(const float* in, int64_t n, char* bytes, bool saturate) {
  HWY_DYNAMIC_DISPATCH(EncodeBFloat16Impl)(in, n, bytes, saturate);
}

int64_t FindNonFinite(const float* values, int64_t n) {
  return HWY_DYNAMIC_DISPATCH(FindNonFiniteImpl)(values, n);
}

double LossRows(const RowsArgs& args, int64_t begin, int64_t end) {
  return HWY_DYNAMIC_DISPATCH(LossRowsImpl)(args, begin, end);
}

void EqlV2StatisticsRows(const RowsArgs& args, int64_t begin, int64_t end,
                         double* positive, double* negative) {
  HWY_DYNAMIC_DISPATCH(EqlV2StatisticsRowsImpl)
  (args, begin, end, positive, negative);
}

const char* ActiveTargetName() {
  return HWY_DYNAMIC_DISPATCH(TargetNameImpl)();
}

std::vector<int64_t> SupportedTargets() {
  std::vector<int64_t> targets = hwy::SupportedAndGeneratedTargets();
  std::sort(targets.begin(), targets.end());  // lower bit = better
  return targets;
}

void ForceTarget(int64_t target) { hwy::SetSupportedTargetsForTest(target); }

}  // namespace cbloss::kernels
#endif  // HWY_ONCE
