// Inner loops of the element-wise / row-wise kernels in ops.cc, written once with GCC vector
// extensions (8 x f32 per vector) and compiled twice by ops.cc: once under
// `#pragma GCC target("avx2,fma")` (namespace lt::ops_avx2) and once for the baseline ISA
// (namespace lt::ops_portable) with 16-byte vectors (SSE2 on x86-64, NEON on arm64).
//
// This file is deliberately NOT include-guarded. The includer must define LT_OPS_NS and
// LT_OPS_VBYTES (and LT_OPS_AVX2 for the AVX2 copy) and include <cstring>, <cstdint>, <cmath>, <algorithm> (and
// <immintrin.h> on x86) first, plus ops_table.h for the function table. Nothing here throws:
// these run inside parallel_for, so every argument is validated before.

namespace lt {
namespace LT_OPS_NS {

// Vector width: LT_OPS_VBYTES bytes (32 for AVX2, 16 for the portable copy: SSE2 / NEON width).
typedef float vf __attribute__((vector_size(LT_OPS_VBYTES)));
typedef int32_t vi __attribute__((vector_size(LT_OPS_VBYTES)));
typedef uint32_t vu __attribute__((vector_size(LT_OPS_VBYTES)));
typedef double vd2 __attribute__((vector_size(2 * LT_OPS_VBYTES)));  // W doubles
typedef uint16_t vh __attribute__((vector_size(LT_OPS_VBYTES / 2)));  // W halves

constexpr size_t W = LT_OPS_VBYTES / sizeof(float);

#define LT_INL static inline __attribute__((always_inline))

LT_INL vf ld(const float* p) { vf v; std::memcpy(&v, p, sizeof v); return v; }
LT_INL void st(float* p, vf v) { std::memcpy(p, &v, sizeof v); }
// Partial load of k < W floats; the other lanes hold `fill`.
LT_INL vf ldp(const float* p, size_t k, float fill) {
  vf v = fill - vf{};
  std::memcpy(&v, p, k * sizeof(float));
  return v;
}
LT_INL void stp(float* p, vf v, size_t k) { std::memcpy(p, &v, k * sizeof(float)); }
LT_INL vh ldh(const uint16_t* p) { vh v; std::memcpy(&v, p, sizeof v); return v; }
LT_INL vh ldhp(const uint16_t* p, size_t k) { vh v = {}; std::memcpy(&v, p, k * sizeof(uint16_t)); return v; }
LT_INL void sth(uint16_t* p, vh v) { std::memcpy(p, &v, sizeof v); }
LT_INL void sthp(uint16_t* p, vh v, size_t k) { std::memcpy(p, &v, k * sizeof(uint16_t)); }
LT_INL vf splat(float x) { return x - vf{}; }
LT_INL vi splati(int32_t x) { return x - vi{}; }
LT_INL vu splatu(uint32_t x) { return x - vu{}; }
LT_INL vi iota() {
  vi v;
  for (size_t k = 0; k < W; ++k) v[k] = static_cast<int32_t>(k);
  return v;
}
LT_INL double hsumd(vf v) {
  double s = 0;
  for (size_t k = 0; k < W; ++k) s += v[k];
  return s;
}

LT_INL vf vsqrt(vf x) {
#if defined(LT_OPS_AVX2)
  return (vf)_mm256_sqrt_ps((__m256)x);
#elif defined(__SSE2__) && LT_OPS_VBYTES == 16
  return (vf)_mm_sqrt_ps((__m128)x);
#elif defined(__ARM_NEON) && defined(__aarch64__) && LT_OPS_VBYTES == 16
  return (vf)vsqrtq_f32((float32x4_t)x);
#else
  vf r;
  for (size_t k = 0; k < W; ++k) r[k] = std::sqrt(x[k]);
  return r;
#endif
}

// max(x, y) for NaN-free inputs (one instruction where the target has it).
LT_INL vf vmaxf(vf x, vf y) {
#if defined(LT_OPS_AVX2)
  return (vf)_mm256_max_ps((__m256)x, (__m256)y);
#elif defined(__SSE2__) && LT_OPS_VBYTES == 16
  return (vf)_mm_max_ps((__m128)x, (__m128)y);
#else
  return x > y ? x : y;
#endif
}

// exp(x) for x already clamped to [lo, hi]: Cephes' range reduction x = n·ln2 + r and a degree-6
// polynomial for exp(r), scaled by 2^n through the exponent bits.
LT_INL vf vexp_clamped(vf xc) {
  vf fx = xc * splat(1.44269504088896341f);
  fx = (fx + splat(12582912.0f)) - splat(12582912.0f);  // round to nearest (|fx| < 2^22)
  vf r = xc - fx * splat(0.693359375f);
  r = r - fx * splat(-2.12194440e-4f);
  vf p = splat(1.9875691500e-4f);
  p = p * r + splat(1.3981999507e-3f);
  p = p * r + splat(8.3334519073e-3f);
  p = p * r + splat(4.1665795894e-2f);
  p = p * r + splat(1.6666665459e-1f);
  p = p * r + splat(5.0000001201e-1f);
  vf y = p * (r * r) + r + splat(1.0f);
  vi n = __builtin_convertvector(fx, vi);
  return y * (vf)((n + splati(127)) << 23);
}

// exp(x), Cephes-style: x = n ln2 + r with |r| <= ln2/2, degree-6 polynomial for e^r, times 2^n.
// About 1 ulp over the range. x < ln(FLT_MIN) gives 0 (the subnormal range is flushed), x above
// ln(2^127) gives +inf, NaN stays NaN.
LT_INL vf vexp(vf x) {
  const float hi = 88.0296919311f, lo = -87.3365447505f;
  vf xc = x > splat(hi) ? splat(hi) : x;  // NaN passes through both clamps
  xc = xc < splat(lo) ? splat(lo) : xc;
  vf res = vexp_clamped(xc);
  res = x < splat(lo) ? splat(0.0f) : res;
  res = x > splat(hi) ? splat(__builtin_inff()) : res;
  return res;
}

// exp(x) for x in [-inf, 0], no NaN (softmax after subtracting the row max): only the lower clamp.
LT_INL vf vexp_nonpos(vf x) {
  const float lo = -87.3365447505f;
  const vf res = vexp_clamped(vmaxf(x, splat(lo)));
  return x < splat(lo) ? splat(0.0f) : res;
}

// ---------------------------------------------------------------------------------------------
// Softmax cross-entropy on one row (see ops.cc). `x` is overwritten with the gradient when grad.

static void ce_row(float* x, size_t V, int32_t target, bool grad, float gscale, float* loss_out,
                   int32_t* amax_out) {
  // Pass 1: max and first index of the max.
  float m;
  int32_t am;
  size_t i;
  bool has_nan = false;
  if (V >= 2 * W) {
    vf b0 = ld(x), b1 = ld(x + W);
    vi i0 = iota();
    vi i1 = i0 + splati(static_cast<int32_t>(W));
    vi c0 = i0, c1 = i1;
    const vi step = splati(static_cast<int32_t>(2 * W));
    vi nanm = (b0 != b0) | (b1 != b1);
    for (i = 2 * W; i + 2 * W <= V; i += 2 * W) {
      c0 += step;
      c1 += step;
      vf v0 = ld(x + i), v1 = ld(x + i + W);
      nanm |= (v0 != v0) | (v1 != v1);
      vi g0 = v0 > b0, g1 = v1 > b1;
      b0 = g0 ? v0 : b0;
      i0 = g0 ? c0 : i0;
      b1 = g1 ? v1 : b1;
      i1 = g1 ? c1 : i1;
    }
    m = b0[0];
    am = i0[0];
    for (size_t k = 0; k < W; ++k) {
      has_nan |= nanm[k] != 0;
      if (b0[k] > m || (b0[k] == m && i0[k] < am)) { m = b0[k]; am = i0[k]; }
      if (b1[k] > m || (b1[k] == m && i1[k] < am)) { m = b1[k]; am = i1[k]; }
    }
  } else {
    m = x[0];
    am = 0;
    has_nan = x[0] != x[0];
    i = 1;
  }
  for (; i < V; ++i) {
    has_nan |= x[i] != x[i];
    if (x[i] > m) { m = x[i]; am = static_cast<int32_t>(i); }
  }
  *amax_out = am;

  if (target < 0) {
    *loss_out = 0.0f;
    if (grad) std::memset(x, 0, V * sizeof(float));
    return;
  }
  if (has_nan || std::isinf(m)) {
    // A NaN or an infinite logit makes the loss (and the gradient) NaN, as in PyTorch.
    *loss_out = __builtin_nanf("");
    if (grad)
      for (size_t j = 0; j < V; ++j) x[j] = __builtin_nanf("");
    return;
  }
  const float xt = x[target];

  // Pass 2: sum of exp(x - max), accumulated in float per block of 512 and in double across.
  const vf vm = splat(m);
  double sum = 0;
  const size_t nv = V / W * W;
  constexpr size_t BLK = 512;
  for (size_t b = 0; b < nv; b += BLK) {
    const size_t e = std::min(nv, b + BLK);
    vf a0 = {}, a1 = {};
    size_t j = b;
    if (grad) {
      for (; j + 2 * W <= e; j += 2 * W) {
        vf e0 = vexp_nonpos(ld(x + j) - vm), e1 = vexp_nonpos(ld(x + j + W) - vm);
        st(x + j, e0);
        st(x + j + W, e1);
        a0 += e0;
        a1 += e1;
      }
      if (j < e) {
        vf e0 = vexp_nonpos(ld(x + j) - vm);
        st(x + j, e0);
        a0 += e0;
      }
    } else {
      for (; j + 2 * W <= e; j += 2 * W) {
        a0 += vexp_nonpos(ld(x + j) - vm);
        a1 += vexp_nonpos(ld(x + j + W) - vm);
      }
      if (j < e) a0 += vexp_nonpos(ld(x + j) - vm);
    }
    sum += hsumd(a0 + a1);
  }
  if (nv < V) {
    const size_t k = V - nv;
    vf e0 = vexp_nonpos(ldp(x + nv, k, -__builtin_inff()) - vm);
    if (grad) stp(x + nv, e0, k);
    sum += hsumd(e0);
  }
  *loss_out = static_cast<float>(static_cast<double>(m) + std::log(sum) - static_cast<double>(xt));
  if (!grad) return;

  // Pass 3: softmax * scale, then subtract the one-hot at the target.
  const double et = x[target];
  const vf f = splat(static_cast<float>(static_cast<double>(gscale) / sum));
  for (i = 0; i < nv; i += W) st(x + i, ld(x + i) * f);
  if (nv < V) stp(x + nv, ldp(x + nv, V - nv, 0.0f) * f, V - nv);
  x[target] = static_cast<float>((et / sum - 1.0) * static_cast<double>(gscale));
}

// ---------------------------------------------------------------------------------------------
// Reductions over one row in double (float vector partials per block of 512).

static double dot3_row(const float* a, const float* b, const float* c, size_t n) {
  // sum a*b*c, or sum a*a when b == c == nullptr, or sum a*b when c == nullptr
  double s = 0;
  const size_t nv = n / W * W;
  constexpr size_t BLK = 512;
  for (size_t blk = 0; blk < nv; blk += BLK) {
    const size_t e = std::min(nv, blk + BLK);
    vf a0 = {}, a1 = {};
    size_t j = blk;
    if (!b) {
      for (; j + 2 * W <= e; j += 2 * W) {
        vf x0 = ld(a + j), x1 = ld(a + j + W);
        a0 += x0 * x0;
        a1 += x1 * x1;
      }
      if (j < e) { vf x0 = ld(a + j); a0 += x0 * x0; }
    } else if (!c) {
      for (; j + 2 * W <= e; j += 2 * W) {
        a0 += ld(a + j) * ld(b + j);
        a1 += ld(a + j + W) * ld(b + j + W);
      }
      if (j < e) a0 += ld(a + j) * ld(b + j);
    } else {
      for (; j + 2 * W <= e; j += 2 * W) {
        a0 += ld(a + j) * ld(b + j) * ld(c + j);
        a1 += ld(a + j + W) * ld(b + j + W) * ld(c + j + W);
      }
      if (j < e) a0 += ld(a + j) * ld(b + j) * ld(c + j);
    }
    s += hsumd(a0 + a1);
  }
  for (size_t j = nv; j < n; ++j) {
    const double x = a[j];
    s += !b ? x * x : !c ? static_cast<double>(a[j] * b[j]) : static_cast<double>(a[j] * b[j] * c[j]);
  }
  return s;
}

// out = (x * rstd) * g; returns rstd = 1/sqrt(mean(x^2) + eps).
static float rms_fwd_row(const float* x, const float* g, size_t dim, double eps, float* out) {
  const double ms = dot3_row(x, nullptr, nullptr, dim) / static_cast<double>(dim);
  const float r = static_cast<float>(1.0 / std::sqrt(ms + eps));
  const vf vr = splat(r);
  const size_t nv = dim / W * W;
  for (size_t j = 0; j < nv; j += W) st(out + j, (ld(x + j) * vr) * ld(g + j));
  for (size_t j = nv; j < dim; ++j) out[j] = (x[j] * r) * g[j];
  return r;
}

// dx = r*g*dy - x * r^3/dim * sum(dy*g*x)
static void rms_bwd_row(const float* x, const float* g, float r, const float* dy, size_t dim, float* dx) {
  const double s = dot3_row(dy, g, x, dim);
  const double rd = r;
  const float c = static_cast<float>(rd * rd * rd * s / static_cast<double>(dim));
  const vf vr = splat(r), vc = splat(c);
  const size_t nv = dim / W * W;
  for (size_t j = 0; j < nv; j += W) st(dx + j, (ld(g + j) * ld(dy + j)) * vr - ld(x + j) * vc);
  for (size_t j = nv; j < dim; ++j) dx[j] = (g[j] * dy[j]) * r - x[j] * c;
}

// dw[c0:c1] += sum_t dy[t,c] * x[t,c] * rstd[t]   (c1 - c0 <= 256)
static void rms_dw_cols(const float* x, const float* dy, const float* rstd, size_t T, size_t dim, size_t c0,
                        size_t c1, float* dw) {
  alignas(32) float acc[256];
  const size_t n = c1 - c0, nv = n / W * W;
  std::memset(acc, 0, sizeof acc);
  for (size_t t = 0; t < T; ++t) {
    const float* xr = x + t * dim + c0;
    const float* dr = dy + t * dim + c0;
    const vf r = splat(rstd[t]);
    for (size_t j = 0; j < nv; j += W) st(acc + j, ld(acc + j) + (ld(dr + j) * ld(xr + j)) * r);
    for (size_t j = nv; j < n; ++j) acc[j] += (dr[j] * xr[j]) * rstd[t];
  }
  for (size_t j = 0; j < n; ++j) dw[c0 + j] += acc[j];
}

// ---------------------------------------------------------------------------------------------
// Gated activations. GELU-tanh is evaluated as x * sigmoid(2u), u = sqrt(2/pi)(x + 0.044715 x^3),
// which equals 0.5 x (1 + tanh u) exactly in real arithmetic and has no cancellation.

constexpr float kGeluK0 = 0.7978845608028654f;  // sqrt(2/pi)
constexpr float kGeluK1 = 0.044715f;

LT_INL vf clamp20(vf x) {
  vf c = x > splat(20.0f) ? splat(20.0f) : x;
  return c < splat(-20.0f) ? splat(-20.0f) : c;
}
LT_INL vf sigmoid(vf z) { return splat(1.0f) / (splat(1.0f) + vexp(-z)); }

LT_INL vf act_fwd(int kind, vf x) {
  if (kind == 0) {
    vf xc = clamp20(x);
    vf u2 = xc * splat(2.0f * kGeluK0) * (splat(1.0f) + splat(kGeluK1) * xc * xc);
    return x * sigmoid(u2);
  }
  return x * sigmoid(x);
}
// act(x) and act'(x)
LT_INL void act_both(int kind, vf x, vf& a, vf& da) {
  if (kind == 0) {
    vf xc = clamp20(x);
    vf x2 = xc * xc;
    vf s = sigmoid(xc * splat(2.0f * kGeluK0) * (splat(1.0f) + splat(kGeluK1) * x2));
    a = x * s;
    da = s + x * (s * (splat(1.0f) - s)) * (splat(2.0f * kGeluK0) * (splat(1.0f) + splat(3.0f * kGeluK1) * x2));
  } else {
    vf s = sigmoid(x);
    a = x * s;
    da = s * (splat(1.0f) + x * (splat(1.0f) - s));
  }
}

static void gated_fwd(int kind, const float* gate, const float* up, float* out, size_t n) {
  const size_t nv = n / W * W;
  for (size_t i = 0; i < nv; i += W) st(out + i, act_fwd(kind, ld(gate + i)) * ld(up + i));
  if (nv < n) {
    const size_t k = n - nv;
    stp(out + nv, act_fwd(kind, ldp(gate + nv, k, 0.0f)) * ldp(up + nv, k, 0.0f), k);
  }
}

static void gated_bwd(int kind, const float* gate, const float* up, const float* dout, float* dgate, float* dup,
                      size_t n) {
  const size_t nv = n / W * W;
  vf a, da;
  for (size_t i = 0; i < nv; i += W) {
    act_both(kind, ld(gate + i), a, da);
    const vf d = ld(dout + i);
    st(dgate + i, d * ld(up + i) * da);
    st(dup + i, d * a);
  }
  if (nv < n) {
    const size_t k = n - nv;
    act_both(kind, ldp(gate + nv, k, 0.0f), a, da);
    const vf d = ldp(dout + nv, k, 0.0f);
    stp(dgate + nv, d * ldp(up + nv, k, 0.0f) * da, k);
    stp(dup + nv, d * a, k);
  }
}

// ---------------------------------------------------------------------------------------------
// AdamW over [0, n). Scalars prepared in double by ops.cc, rounded to float.

LT_INL void adam_keras_v(const AdamScalars& s, vf& p, vf g, vf& m, vf& v) {
  p = p - (p * splat(s.wd)) * splat(s.lr);
  m = splat(s.b1) * m + splat(s.omb1) * g;
  v = splat(s.b2) * v + splat(s.omb2) * (g * g);
  p = p - (m * splat(s.alpha)) / (vsqrt(v) + splat(s.eps));
}
LT_INL void adam_torch_v(const AdamScalars& s, vf& p, vf g, vf& m, vf& v) {
  p = p * splat(s.decay);
  m = splat(s.b1) * m + splat(s.omb1) * g;
  v = splat(s.b2) * v + splat(s.omb2) * (g * g);
  const vf denom = vsqrt(v) / splat(s.bc2sqrt) + splat(s.eps);
  p = p - splat(s.step_size) * (m / denom);
}

static void adamw_range(int variant, const AdamScalars& s, float* p, const float* g, float* m, float* v,
                        size_t n) {
  const size_t nv = n / W * W;
  for (size_t i = 0; i < nv; i += W) {
    vf pp = ld(p + i), mm = ld(m + i), vv = ld(v + i);
    if (variant == 0) adam_keras_v(s, pp, ld(g + i), mm, vv);
    else adam_torch_v(s, pp, ld(g + i), mm, vv);
    st(p + i, pp);
    st(m + i, mm);
    st(v + i, vv);
  }
  if (nv < n) {
    const size_t k = n - nv;
    vf pp = ldp(p + nv, k, 0.0f), mm = ldp(m + nv, k, 0.0f), vv = ldp(v + nv, k, 0.0f);
    if (variant == 0) adam_keras_v(s, pp, ldp(g + nv, k, 0.0f), mm, vv);
    else adam_torch_v(s, pp, ldp(g + nv, k, 0.0f), mm, vv);
    stp(p + nv, pp, k);
    stp(m + nv, mm, k);
    stp(v + nv, vv, k);
  }
}

// ---------------------------------------------------------------------------------------------
// BLAS-1 style.

static void add_range(const float* a, const float* b, float* out, size_t n) {
  const size_t nv = n / W * W;
  for (size_t i = 0; i < nv; i += W) st(out + i, ld(a + i) + ld(b + i));
  for (size_t i = nv; i < n; ++i) out[i] = a[i] + b[i];
}

static void axpy_range(float alpha, const float* x, float* y, size_t n) {
  const vf va = splat(alpha);
  const size_t nv = n / W * W;
  for (size_t i = 0; i < nv; i += W) st(y + i, ld(y + i) + va * ld(x + i));
  for (size_t i = nv; i < n; ++i) y[i] += alpha * x[i];
}

static void scale_range(float alpha, float* x, size_t n) {
  const vf va = splat(alpha);
  const size_t nv = n / W * W;
  for (size_t i = 0; i < nv; i += W) st(x + i, ld(x + i) * va);
  for (size_t i = nv; i < n; ++i) x[i] *= alpha;
}

static double sumsq_range(const float* x, size_t n) {
  vd2 a0 = {}, a1 = {};
  const size_t nv2 = n / (2 * W) * (2 * W);
  for (size_t i = 0; i < nv2; i += 2 * W) {
    const vd2 d0 = __builtin_convertvector(ld(x + i), vd2), d1 = __builtin_convertvector(ld(x + i + W), vd2);
    a0 += d0 * d0;
    a1 += d1 * d1;
  }
  const vd2 a = a0 + a1;
  double s = 0;
  for (size_t k = 0; k < W; ++k) s += a[k];
  for (size_t i = nv2; i < n; ++i) s += static_cast<double>(x[i]) * x[i];
  return s;
}

// ---------------------------------------------------------------------------------------------
// Storage conversions.

LT_INL vf bf16v(vh h) { return (vf)(__builtin_convertvector(h, vu) << 16); }

LT_INL vh to_bf16v(vf f) {
  const vu b = (vu)f;
  vu r = (b + splatu(0x7fffu) + ((b >> 16) & splatu(1u))) >> 16;
  const vu qnan = (b >> 16) | splatu(0x40u);
  r = (b & splatu(0x7fffffffu)) > splatu(0x7f800000u) ? qnan : r;
  return __builtin_convertvector(r, vh);
}

// Exact f16 -> f32 (F. Giesen's branch-free method): normals rebias, inf/nan keep the payload,
// zero/subnormals renormalise through one exact float subtraction.
LT_INL vf f16v(vh h) {
  const vu hu = __builtin_convertvector(h, vu);
  const vu shifted_exp = splatu(0x7c00u << 13);
  vu o = (hu & splatu(0x7fffu)) << 13;
  const vu e = o & shifted_exp;
  o += splatu((127u - 15u) << 23);
  const vu o_inf = o + splatu((128u - 16u) << 23);
  const vu o_den = (vu)((vf)(o + splatu(1u << 23)) - (vf)splatu(113u << 23));
  o = e == shifted_exp ? o_inf : o;
  o = e == splatu(0u) ? o_den : o;
  o |= (hu & splatu(0x8000u)) << 16;
  return (vf)o;
}

static void bf16_to_f32(const uint16_t* src, float* dst, size_t n) {
  const size_t nv = n / W * W;
  for (size_t i = 0; i < nv; i += W) st(dst + i, bf16v(ldh(src + i)));
  if (nv < n) stp(dst + nv, bf16v(ldhp(src + nv, n - nv)), n - nv);
}

static void f32_to_bf16(const float* src, uint16_t* dst, size_t n) {
  const size_t nv = n / W * W;
  for (size_t i = 0; i < nv; i += W) sth(dst + i, to_bf16v(ld(src + i)));
  if (nv < n) sthp(dst + nv, to_bf16v(ldp(src + nv, n - nv, 0.0f)), n - nv);
}

static void f16_to_f32(const uint16_t* src, float* dst, size_t n) {
  const size_t nv = n / W * W;
  for (size_t i = 0; i < nv; i += W) st(dst + i, f16v(ldh(src + i)));
  if (nv < n) stp(dst + nv, f16v(ldhp(src + nv, n - nv)), n - nv);
}

static void f16_to_bf16(const uint16_t* src, uint16_t* dst, size_t n) {
  const size_t nv = n / W * W;
  for (size_t i = 0; i < nv; i += W) sth(dst + i, to_bf16v(f16v(ldh(src + i))));
  if (nv < n) sthp(dst + nv, to_bf16v(f16v(ldhp(src + nv, n - nv))), n - nv);
}

// out = table_row * scale (f32 or bf16 row)
static void emb_row_f32(const float* src, float scale, float* out, size_t dim) {
  const vf vs = splat(scale);
  const size_t nv = dim / W * W;
  for (size_t j = 0; j < nv; j += W) st(out + j, ld(src + j) * vs);
  for (size_t j = nv; j < dim; ++j) out[j] = src[j] * scale;
}
static void emb_row_bf16(const uint16_t* src, float scale, float* out, size_t dim) {
  const vf vs = splat(scale);
  const size_t nv = dim / W * W;
  for (size_t j = 0; j < nv; j += W) st(out + j, bf16v(ldh(src + j)) * vs);
  if (nv < dim) stp(out + nv, bf16v(ldhp(src + nv, dim - nv)) * vs, dim - nv);
}

#undef LT_INL

inline OpsTable make_table() {
  OpsTable t;
  t.ce_row = ce_row;
  t.rms_fwd_row = rms_fwd_row;
  t.rms_bwd_row = rms_bwd_row;
  t.rms_dw_cols = rms_dw_cols;
  t.gated_fwd = gated_fwd;
  t.gated_bwd = gated_bwd;
  t.adamw_range = adamw_range;
  t.add_range = add_range;
  t.axpy_range = axpy_range;
  t.scale_range = scale_range;
  t.sumsq_range = sumsq_range;
  t.bf16_to_f32 = bf16_to_f32;
  t.f32_to_bf16 = f32_to_bf16;
  t.f16_to_f32 = f16_to_f32;
  t.f16_to_bf16 = f16_to_bf16;
  t.emb_row_f32 = emb_row_f32;
  t.emb_row_bf16 = emb_row_bf16;
  return t;
}

}  // namespace LT_OPS_NS
}  // namespace lt
