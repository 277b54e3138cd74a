// Element-wise and row-wise kernels: embedding, RMSNorm, gated activations, softmax
// cross-entropy, AdamW, BLAS-1 helpers and storage conversions (see src/backend/native.ts for the
// contract). Arguments are validated here; the loops live in ops_kernels.h, compiled twice (AVX2+FMA
// and portable) and picked at run time. Setting LORATUNE_OPS_PORTABLE=1 forces the portable loops.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#elif defined(__ARM_NEON)
#include <arm_neon.h>
#endif

#include "napi_util.h"
#include "ops_table.h"
#include "threadpool.h"

#pragma GCC diagnostic ignored "-Wpsabi"

// Portable copy: baseline ISA (SSE2 on x86-64, NEON on arm64), 16-byte vectors.
#define LT_OPS_NS ops_portable
#define LT_OPS_VBYTES 16
#include "ops_kernels.h"
#undef LT_OPS_VBYTES
#undef LT_OPS_NS

#if defined(__x86_64__) && defined(__GNUC__)
#define LT_HAVE_AVX2_COPY 1
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define LT_OPS_NS ops_avx2
#define LT_OPS_VBYTES 32
#define LT_OPS_AVX2 1
#include "ops_kernels.h"
#undef LT_OPS_AVX2
#undef LT_OPS_VBYTES
#undef LT_OPS_NS
#pragma GCC pop_options
#endif

namespace lt {
namespace {

const OpsTable& K() {
  static const OpsTable table = [] {
    const char* force = std::getenv("LORATUNE_OPS_PORTABLE");
    const bool portable = force && *force && std::strcmp(force, "0") != 0;
#ifdef LT_HAVE_AVX2_COPY
    __builtin_cpu_init();
    if (!portable && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
      return ops_avx2::make_table();
#endif
    (void)portable;
    return ops_portable::make_table();
  }();
  return table;
}

// ------------------------------------------------------------------------------------------------
// Validation helpers

size_t mul(size_t a, size_t b, const char* what) {
  size_t r;
  check(!__builtin_mul_overflow(a, b, &r), std::string(what) + " is too large");
  return r;
}

size_t size_arg(const Args& a, size_t i, const char* name) {
  int64_t v = a.integer(i, name);
  return static_cast<size_t>(v);
}

float* f32_arg(const Args& a, size_t i, const char* name, size_t need) {
  View v = a.array(i, name);
  float* p = v.f32(name);
  v.need(need, name);
  return p;
}

float* opt_f32_arg(const Args& a, size_t i, const char* name, size_t need) {
  View v = a.optional_array(i, name);
  if (!v.present) return nullptr;
  float* p = v.f32(name);
  v.need(need, name);
  return p;
}

int32_t* i32_arg(const Args& a, size_t i, const char* name, size_t need) {
  View v = a.array(i, name);
  int32_t* p = v.i32(name);
  v.need(need, name);
  return p;
}

uint16_t* u16_arg(const Args& a, size_t i, const char* name, size_t need) {
  View v = a.array(i, name);
  check(v.dtype == DType::BF16, std::string(name) + " must be a Uint16Array");
  v.need(need, name);
  return static_cast<uint16_t*>(v.data);
}

// A WeightArray: Float32Array or Uint16Array (bf16).
struct Weight {
  const float* f32 = nullptr;
  const uint16_t* bf16 = nullptr;
};

Weight weight_arg(const Args& a, size_t i, const char* name, size_t need) {
  View v = a.array(i, name);
  check(v.dtype == DType::F32 || v.dtype == DType::BF16,
        std::string(name) + " must be a Float32Array or a Uint16Array (bf16)");
  v.need(need, name);
  Weight w;
  if (v.dtype == DType::F32) w.f32 = static_cast<const float*>(v.data);
  else w.bf16 = static_cast<const uint16_t*>(v.data);
  return w;
}

// A weight vector of `n` values as float32, with 1 added when addOne (in float, like PyTorch's 1 + w).
std::vector<float> weight_vector(const Weight& w, size_t n, bool add_one) {
  std::vector<float> g(n);
  if (w.f32) std::memcpy(g.data(), w.f32, n * sizeof(float));
  else K().bf16_to_f32(w.bf16, g.data(), n);
  if (add_one)
    for (auto& x : g) x = 1.0f + x;
  return g;
}

// ------------------------------------------------------------------------------------------------
// Threading: stay on the calling thread below ~32K elements of work.

constexpr size_t kInline = 32768;

// Element-wise loop over [0, n), in chunks (multiples of 64) when large.
template <class F>
void par_elems(size_t n, F&& fn) {
  const size_t nt = static_cast<size_t>(num_threads());
  if (n < kInline || nt <= 1) {
    if (n) fn(size_t(0), n);
    return;
  }
  size_t grain = std::max<size_t>(16384, (n + nt * 4 - 1) / (nt * 4));
  grain = (grain + 63) / 64 * 64;
  parallel_for(n, grain, [&](size_t b, size_t e) { fn(b, e); });
}

// Loop over `rows` rows of `row_len` elements each.
template <class F>
void par_rows(size_t rows, size_t row_len, F&& fn) {
  const size_t nt = static_cast<size_t>(num_threads());
  const size_t total = rows * std::max<size_t>(1, row_len);
  if (total < kInline || nt <= 1 || rows <= 1) {
    if (rows) fn(size_t(0), rows);
    return;
  }
  // At least ~8K elements per chunk, at most ~8 chunks per thread.
  size_t grain = std::max<size_t>(1, 8192 / std::max<size_t>(1, row_len));
  grain = std::max(grain, (rows + nt * 8 - 1) / (nt * 8));
  parallel_for(rows, grain, [&](size_t b, size_t e) { fn(b, e); });
}

// ------------------------------------------------------------------------------------------------
// embedding(T, dim, rows, scale, ids, table, out)

void check_ids(const int32_t* ids, size_t T, size_t rows, const char* name) {
  for (size_t t = 0; t < T; ++t) {
    const int64_t id = ids[t];
    if (id < 0 || static_cast<uint64_t>(id) >= rows)
      throw Error(std::string(name) + "[" + std::to_string(t) + "] = " + std::to_string(id) +
                  " is out of range [0, " + std::to_string(rows) + ")");
  }
}

void embedding(Args& a) {
  const size_t T = size_arg(a, 0, "T"), dim = size_arg(a, 1, "dim"), rows = size_arg(a, 2, "rows");
  const float scale = static_cast<float>(a.number(3, "scale"));
  const size_t n = mul(T, dim, "T*dim");
  const int32_t* ids = i32_arg(a, 4, "ids", T);
  const Weight table = weight_arg(a, 5, "table", mul(rows, dim, "rows*dim"));
  float* out = f32_arg(a, 6, "out", n);
  check_ids(ids, T, rows, "ids");
  const OpsTable& k = K();
  par_rows(T, dim, [&](size_t b, size_t e) {
    for (size_t t = b; t < e; ++t) {
      const size_t off = static_cast<size_t>(ids[t]) * dim;
      if (table.f32) k.emb_row_f32(table.f32 + off, scale, out + t * dim, dim);
      else k.emb_row_bf16(table.bf16 + off, scale, out + t * dim, dim);
    }
  });
}

// embeddingBackward(T, dim, rows, scale, ids, dOut, dTable): dTable[ids[t]] += scale * dOut[t].
// Threads split the columns, so repeated ids never race and the sum order is fixed.
void embedding_backward(Args& a) {
  const size_t T = size_arg(a, 0, "T"), dim = size_arg(a, 1, "dim"), rows = size_arg(a, 2, "rows");
  const float scale = static_cast<float>(a.number(3, "scale"));
  const int32_t* ids = i32_arg(a, 4, "ids", T);
  const float* dout = f32_arg(a, 5, "dOut", mul(T, dim, "T*dim"));
  float* dtable = f32_arg(a, 6, "dTable", mul(rows, dim, "rows*dim"));
  check_ids(ids, T, rows, "ids");
  const OpsTable& k = K();
  auto cols = [&](size_t c0, size_t c1) {
    for (size_t t = 0; t < T; ++t)
      k.axpy_range(scale, dout + t * dim + c0, dtable + static_cast<size_t>(ids[t]) * dim + c0, c1 - c0);
  };
  const size_t nt = static_cast<size_t>(num_threads());
  if (T * dim < kInline || nt <= 1 || dim < 128) {
    cols(0, dim);
  } else {
    size_t grain = std::max<size_t>(64, (dim + nt * 2 - 1) / (nt * 2));
    grain = (grain + 15) / 16 * 16;
    parallel_for(dim, grain, cols);
  }
}

// ------------------------------------------------------------------------------------------------
// rmsnorm(T, dim, eps, addOne, x, w, out, rstd)

void rmsnorm(Args& a) {
  const size_t T = size_arg(a, 0, "T"), dim = size_arg(a, 1, "dim");
  const double eps = a.number(2, "eps");
  const bool add_one = a.boolean(3, "addOne");
  const size_t n = mul(T, dim, "T*dim");
  check(dim > 0, "dim must be positive");
  const float* x = f32_arg(a, 4, "x", n);
  const Weight w = weight_arg(a, 5, "w", dim);
  float* out = f32_arg(a, 6, "out", n);
  float* rstd = f32_arg(a, 7, "rstd", T);
  const std::vector<float> g = weight_vector(w, dim, add_one);
  const OpsTable& k = K();
  par_rows(T, dim, [&](size_t b, size_t e) {
    for (size_t t = b; t < e; ++t) rstd[t] = k.rms_fwd_row(x + t * dim, g.data(), dim, eps, out + t * dim);
  });
}

// rmsnormBackward(T, dim, addOne, x, w, rstd, dOut, dx, dw)
void rmsnorm_backward(Args& a) {
  const size_t T = size_arg(a, 0, "T"), dim = size_arg(a, 1, "dim");
  const bool add_one = a.boolean(2, "addOne");
  const size_t n = mul(T, dim, "T*dim");
  check(dim > 0, "dim must be positive");
  const float* x = f32_arg(a, 3, "x", n);
  const Weight w = weight_arg(a, 4, "w", dim);
  const float* rstd = f32_arg(a, 5, "rstd", T);
  const float* dy = f32_arg(a, 6, "dOut", n);
  float* dx = f32_arg(a, 7, "dx", n);
  float* dw = opt_f32_arg(a, 8, "dw", dim);
  const std::vector<float> g = weight_vector(w, dim, add_one);
  const OpsTable& k = K();
  // dw first: dx may alias dOut or x.
  if (dw) {
    constexpr size_t CB = 256;
    const size_t blocks = (dim + CB - 1) / CB;
    auto run = [&](size_t b, size_t e) {
      for (size_t blk = b; blk < e; ++blk) k.rms_dw_cols(x, dy, rstd, T, dim, blk * CB, std::min(dim, (blk + 1) * CB), dw);
    };
    if (n < kInline) run(0, blocks);
    else parallel_for(blocks, 1, run);
  }
  par_rows(T, dim, [&](size_t b, size_t e) {
    for (size_t t = b; t < e; ++t) k.rms_bwd_row(x + t * dim, g.data(), rstd[t], dy + t * dim, dim, dx + t * dim);
  });
}

// ------------------------------------------------------------------------------------------------
// gatedActivation(n, kind, gate, up, out) / gatedActivationBackward(n, kind, gate, up, dOut, dGate, dUp)

int gate_kind(const Args& a, size_t i) {
  const int64_t kind = a.integer(i, "kind");
  check(kind == 0 || kind == 1, "kind must be 0 (GeluTanh) or 1 (Silu), got " + std::to_string(kind));
  return static_cast<int>(kind);
}

void gated_activation(Args& a) {
  const size_t n = size_arg(a, 0, "n");
  const int kind = gate_kind(a, 1);
  const float* gate = f32_arg(a, 2, "gate", n);
  const float* up = f32_arg(a, 3, "up", n);
  float* out = f32_arg(a, 4, "out", n);
  const OpsTable& k = K();
  par_elems(n, [&](size_t b, size_t e) { k.gated_fwd(kind, gate + b, up + b, out + b, e - b); });
}

void gated_activation_backward(Args& a) {
  const size_t n = size_arg(a, 0, "n");
  const int kind = gate_kind(a, 1);
  const float* gate = f32_arg(a, 2, "gate", n);
  const float* up = f32_arg(a, 3, "up", n);
  const float* dout = f32_arg(a, 4, "dOut", n);
  float* dgate = f32_arg(a, 5, "dGate", n);
  float* dup = f32_arg(a, 6, "dUp", n);
  const OpsTable& k = K();
  par_elems(n, [&](size_t b, size_t e) {
    k.gated_bwd(kind, gate + b, up + b, dout + b, dgate + b, dup + b, e - b);
  });
}

// ------------------------------------------------------------------------------------------------
// crossEntropy(R, V, logits, targets, loss, argmax, gradScale)

void cross_entropy(Args& a) {
  const size_t R = size_arg(a, 0, "R"), V = size_arg(a, 1, "V");
  check(V > 0, "V must be positive");
  check(V <= 0x7fffffffu, "V must be below 2^31");
  float* logits = f32_arg(a, 2, "logits", mul(R, V, "R*V"));
  const int32_t* targets = i32_arg(a, 3, "targets", R);
  float* loss = f32_arg(a, 4, "loss", R);
  View am = a.array(5, "argmax");
  int32_t* amax = am.i32("argmax");
  am.need(R, "argmax");
  const float* gscale = opt_f32_arg(a, 6, "gradScale", R);
  for (size_t r = 0; r < R; ++r) {
    const int64_t t = targets[r];
    if (t != -1 && (t < 0 || static_cast<uint64_t>(t) >= V))
      throw Error("targets[" + std::to_string(r) + "] = " + std::to_string(t) + " is out of range [0, " +
                  std::to_string(V) + ") (use -1 to ignore a row)");
  }
  const OpsTable& k = K();
  const bool grad = gscale != nullptr;
  par_rows(R, V, [&](size_t b, size_t e) {
    for (size_t r = b; r < e; ++r)
      k.ce_row(logits + r * V, V, targets[r], grad, grad ? gscale[r] : 0.0f, loss + r, amax + r);
  });
}

// ------------------------------------------------------------------------------------------------
// adamw(n, param, grad, m, v, lr, beta1, beta2, eps, weightDecay, step, variant)

void adamw(Args& a) {
  const size_t n = size_arg(a, 0, "n");
  float* p = f32_arg(a, 1, "param", n);
  const float* g = f32_arg(a, 2, "grad", n);
  float* m = f32_arg(a, 3, "m", n);
  float* v = f32_arg(a, 4, "v", n);
  const double lr = a.number(5, "lr"), b1 = a.number(6, "beta1"), b2 = a.number(7, "beta2");
  const double eps = a.number(8, "eps"), wd = a.number(9, "weightDecay");
  const int64_t step = a.integer(10, "step");
  const int64_t variant = a.integer(11, "variant");
  check(step >= 1, "step counts from 1");
  check(variant == 0 || variant == 1, "variant must be 0 (Keras) or 1 (Torch), got " + std::to_string(variant));
  check(b1 >= 0 && b1 < 1 && b2 >= 0 && b2 < 1, "beta1 and beta2 must be in [0, 1)");
  const double bc1 = 1.0 - std::pow(b1, static_cast<double>(step));
  const double bc2 = 1.0 - std::pow(b2, static_cast<double>(step));
  AdamScalars s;
  s.lr = static_cast<float>(lr);
  s.wd = static_cast<float>(wd);
  s.b1 = static_cast<float>(b1);
  s.omb1 = static_cast<float>(1.0 - b1);
  s.b2 = static_cast<float>(b2);
  s.omb2 = static_cast<float>(1.0 - b2);
  s.eps = static_cast<float>(eps);
  s.alpha = static_cast<float>(lr * std::sqrt(bc2) / bc1);
  s.decay = static_cast<float>(1.0 - lr * wd);
  s.step_size = static_cast<float>(lr / bc1);
  s.bc2sqrt = static_cast<float>(std::sqrt(bc2));
  const OpsTable& k = K();
  const int var = static_cast<int>(variant);
  par_elems(n, [&](size_t b, size_t e) { k.adamw_range(var, s, p + b, g + b, m + b, v + b, e - b); });
}

// ------------------------------------------------------------------------------------------------
// add / axpy / scale / sumSquares

void add(Args& a) {
  const size_t n = size_arg(a, 0, "n");
  const float* x = f32_arg(a, 1, "a", n);
  const float* y = f32_arg(a, 2, "b", n);
  float* out = f32_arg(a, 3, "out", n);
  const OpsTable& k = K();
  par_elems(n, [&](size_t b, size_t e) { k.add_range(x + b, y + b, out + b, e - b); });
}

void axpy(Args& a) {
  const size_t n = size_arg(a, 0, "n");
  const float alpha = static_cast<float>(a.number(1, "alpha"));
  const float* x = f32_arg(a, 2, "x", n);
  float* y = f32_arg(a, 3, "y", n);
  const OpsTable& k = K();
  par_elems(n, [&](size_t b, size_t e) { k.axpy_range(alpha, x + b, y + b, e - b); });
}

void scale(Args& a) {
  const size_t n = size_arg(a, 0, "n");
  const float alpha = static_cast<float>(a.number(1, "alpha"));
  float* x = f32_arg(a, 2, "x", n);
  const OpsTable& k = K();
  par_elems(n, [&](size_t b, size_t e) { k.scale_range(alpha, x + b, e - b); });
}

void sum_squares(Args& a) {
  const size_t n = size_arg(a, 0, "n");
  const float* x = f32_arg(a, 1, "x", n);
  const OpsTable& k = K();
  // Fixed chunks summed in order: the result does not depend on the number of threads.
  constexpr size_t CH = 65536;
  const size_t chunks = (n + CH - 1) / CH;
  std::vector<double> part(chunks, 0.0);
  auto run = [&](size_t b, size_t e) {
    for (size_t c = b; c < e; ++c) part[c] = k.sumsq_range(x + c * CH, std::min(n, (c + 1) * CH) - c * CH);
  };
  if (chunks <= 1) run(0, chunks);
  else parallel_for(chunks, 1, run);
  double s = 0;
  for (double p : part) s += p;
  napi_create_double(a.env, s, &a.result);
}

// ------------------------------------------------------------------------------------------------
// Conversions

// Element-wise conversion `convert(src, dst, count)` over src and dst arrays of n values each.
template <typename Src, typename Dst, typename Convert>
void convert_elems(Args& a, Convert convert) {
  const size_t n = size_arg(a, 0, "n");
  const Src* src;
  Dst* dst;
  if constexpr (std::is_same_v<Src, float>) src = f32_arg(a, 1, "src", n);
  else src = u16_arg(a, 1, "src", n);
  if constexpr (std::is_same_v<Dst, float>) dst = f32_arg(a, 2, "dst", n);
  else dst = u16_arg(a, 2, "dst", n);
  par_elems(n, [&](size_t b, size_t e) { convert(src + b, dst + b, e - b); });
}

void bf16_to_f32(Args& a) { convert_elems<uint16_t, float>(a, K().bf16_to_f32); }
void f32_to_bf16(Args& a) { convert_elems<float, uint16_t>(a, K().f32_to_bf16); }
void f16_to_f32(Args& a) { convert_elems<uint16_t, float>(a, K().f16_to_f32); }
void f16_to_bf16(Args& a) { convert_elems<uint16_t, uint16_t>(a, K().f16_to_bf16); }

}  // namespace

void register_ops(napi_env env, napi_value exports) {
  define(env, exports, "embedding", embedding);
  define(env, exports, "embeddingBackward", embedding_backward);
  define(env, exports, "rmsnorm", rmsnorm);
  define(env, exports, "rmsnormBackward", rmsnorm_backward);
  define(env, exports, "gatedActivation", gated_activation);
  define(env, exports, "gatedActivationBackward", gated_activation_backward);
  define(env, exports, "crossEntropy", cross_entropy);
  define(env, exports, "adamw", adamw);
  define(env, exports, "add", add);
  define(env, exports, "axpy", axpy);
  define(env, exports, "scale", scale);
  define(env, exports, "sumSquares", sum_squares);
  define(env, exports, "bf16ToF32", bf16_to_f32);
  define(env, exports, "f32ToBf16", f32_to_bf16);
  define(env, exports, "f16ToF32", f16_to_f32);
  define(env, exports, "f16ToBf16", f16_to_bf16);
}

}  // namespace lt
