// Causal grouped-query attention (flash-style forward and backward) and rotary embeddings; see
// src/backend/native.ts for the contract.
//
// Layouts: q/out/dOut/dq [T, Hq, D], k/v/dk/dv [S, Hkv, D], lse [Hq, T]. Query head h reads kv
// head h / G with G = Hq / Hkv. The G query heads of one kv head are processed together: a block
// of rows is Bt positions x G heads (rows (t, j) -> q[t, g*G + j]), so every key/value tile is read
// once for the whole group.
//
// Forward: per (kv head, row block) task, key tiles of BK keys with an online softmax; the [T, S]
// score matrix only ever exists as one [rows, BK] tile. For short query blocks (decoding) the key
// range is additionally split into chunks whose partial results are merged in a fixed order.
//
// Backward (FlashAttention-2 recomputation from lse), in two passes so that every output element
// is written by exactly one task in a fixed order (bit-for-bit deterministic, independent of the
// thread count and of scheduling):
//   pass 1, per (kv head, query block): Di = rowsum(dO*O), P, dP = dO V^T, dS = P*(dP - Di),
//           dQ = scale * dS K;
//   pass 2, per (kv head, key block), over the query rows of the whole group: dV = P^T dO,
//           dK = scale * dS^T Q, with the P and dS tiles pass 1 kept (five tile products in all
//           instead of seven) when they fit in kStoredTilesMax bytes, else recomputed.
//
// Two small matrix kernels do all the arithmetic: C = A B^T (dot-product form, used for Q K^T and
// dO V^T straight from the strided k/v arrays) and C += A B (broadcast form, for P V, dS K, P^T dO,
// dS^T Q). Both have an AVX2+FMA version and a portable one, picked at run time
// (LORATUNE_ATTENTION_PORTABLE=1 forces the portable one).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define LT_ATTN_X86 1
#define LT_AVX2 __attribute__((target("avx2,fma")))
#endif

#include "napi_util.h"
#include "threadpool.h"

namespace lt {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// ---------------------------------------------------------------------------------------------
// Kernels

// C[M,N] = A[M,K] * B[N,K]^T; rows of A, B, C at strides lda, ldb, ldc.
using AbtFn = void (*)(int M, int N, int K, const float* A, size_t lda, const float* B, size_t ldb, float* C,
                       size_t ldc);
// C[M,N] += A[M,K] * B[K,N]; A[m,k] at A[m*ars + k*acs], rows of B and C at ldb, ldc.
using AbFn = void (*)(int M, int N, int K, const float* A, size_t ars, size_t acs, const float* B, size_t ldb,
                      float* C, size_t ldc);
// s[i] *= scale for i < n; returns the maximum (n >= 1).
using ScaleMaxFn = float (*)(float* s, int n, float scale);
// s[i] = exp(s[i] - m) for i < n; returns the sum.
using ExpSumFn = float (*)(float* s, int n, float m);
// s[i] = exp(scale * s[i] - shift) for i < n.
using ExpShiftFn = void (*)(float* s, int n, float scale, float shift);

struct Kernels {
  AbtFn abt;
  AbFn ab;
  ScaleMaxFn scale_max;
  ExpSumFn exp_sum;
  ExpShiftFn exp_shift;
};

// ---- portable (the compiler vectorizes the inner loops for the baseline ISA)

void abt_portable(int M, int N, int K, const float* A, size_t lda, const float* B, size_t ldb, float* C,
                  size_t ldc) {
  for (int i = 0; i < M; ++i) {
    const float* a = A + i * lda;
    for (int j = 0; j < N; ++j) {
      const float* b = B + j * ldb;
      float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      int k = 0;
      for (; k + 8 <= K; k += 8)
        for (int u = 0; u < 8; ++u) acc[u] += a[k + u] * b[k + u];
      float tail = 0;
      for (; k < K; ++k) tail += a[k] * b[k];
      C[i * ldc + j] = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail;
    }
  }
}

void ab_portable(int M, int N, int K, const float* A, size_t ars, size_t acs, const float* B, size_t ldb, float* C,
                 size_t ldc) {
  for (int i = 0; i < M; ++i) {
    float* c = C + i * ldc;
    for (int k = 0; k < K; ++k) {
      const float a = A[i * ars + k * acs];
      const float* b = B + k * ldb;
      for (int n = 0; n < N; ++n) c[n] += a * b[n];
    }
  }
}

float scale_max_portable(float* s, int n, float scale) {
  float m = kNegInf;
  for (int i = 0; i < n; ++i) {
    s[i] *= scale;
    m = std::max(m, s[i]);
  }
  return m;
}

float exp_sum_portable(float* s, int n, float m) {
  float sum = 0;
  for (int i = 0; i < n; ++i) {
    s[i] = std::exp(s[i] - m);
    sum += s[i];
  }
  return sum;
}

void exp_shift_portable(float* s, int n, float scale, float shift) {
  for (int i = 0; i < n; ++i) s[i] = std::exp(scale * s[i] - shift);
}

// ---- AVX2 + FMA

#ifdef LT_ATTN_X86

alignas(32) const int32_t kMaskSource[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

// Lanes [0, n) set, n in [0, 8].
LT_AVX2 inline __m256i tail_mask(int n) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kMaskSource + 8 - n));
}

// [sum(a0), sum(a1), sum(a2), sum(a3)]
LT_AVX2 inline __m128 hsum4(__m256 a0, __m256 a1, __m256 a2, __m256 a3) {
  __m256 t = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
  return _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
}

LT_AVX2 inline float hsum(__m256 a) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

LT_AVX2 inline float hmax(__m256 a) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// exp(x) in float32 (Cephes polynomial, ~1 ulp on the range used here); NaN stays NaN.
LT_AVX2 inline __m256 exp256(__m256 x) {
  x = _mm256_max_ps(_mm256_set1_ps(-87.33654f), x);  // max(lo, NaN) = NaN
  x = _mm256_min_ps(_mm256_set1_ps(88.0f), x);
  const __m256 fx = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

// One R x C block of C = A B^T (R <= 4 rows of A, C <= 3 rows of B): 12 accumulators over K.
template <int R, int C>
LT_AVX2 void abt_block(int K, const float* A, size_t lda, const float* B, size_t ldb, float* Cm, size_t ldc) {
  __m256 acc[4][3];
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 3; ++c) acc[r][c] = _mm256_setzero_ps();
  int k = 0;
  for (; k + 8 <= K; k += 8) {
    __m256 b[C];
    for (int c = 0; c < C; ++c) b[c] = _mm256_loadu_ps(B + c * ldb + k);
    for (int r = 0; r < R; ++r) {
      const __m256 a = _mm256_loadu_ps(A + r * lda + k);
      for (int c = 0; c < C; ++c) acc[r][c] = _mm256_fmadd_ps(a, b[c], acc[r][c]);
    }
  }
  if (k < K) {
    const __m256i mask = tail_mask(K - k);
    __m256 b[C];
    for (int c = 0; c < C; ++c) b[c] = _mm256_maskload_ps(B + c * ldb + k, mask);
    for (int r = 0; r < R; ++r) {
      const __m256 a = _mm256_maskload_ps(A + r * lda + k, mask);
      for (int c = 0; c < C; ++c) acc[r][c] = _mm256_fmadd_ps(a, b[c], acc[r][c]);
    }
  }
  for (int c = 0; c < C; ++c) {
    alignas(16) float s[4];
    _mm_store_ps(s, hsum4(acc[0][c], acc[1][c], acc[2][c], acc[3][c]));
    for (int r = 0; r < R; ++r) Cm[r * ldc + c] = s[r];
  }
}

using AbtBlock = void (*)(int, const float*, size_t, const float*, size_t, float*, size_t);
const AbtBlock kAbtBlocks[4][3] = {
    {abt_block<1, 1>, abt_block<1, 2>, abt_block<1, 3>},
    {abt_block<2, 1>, abt_block<2, 2>, abt_block<2, 3>},
    {abt_block<3, 1>, abt_block<3, 2>, abt_block<3, 3>},
    {abt_block<4, 1>, abt_block<4, 2>, abt_block<4, 3>},
};

LT_AVX2 void abt_avx2(int M, int N, int K, const float* A, size_t lda, const float* B, size_t ldb, float* C,
                      size_t ldc) {
  for (int i = 0; i < M; i += 4) {
    const int r = std::min(4, M - i);
    int j = 0;
    if (r == 4)
      for (; j + 3 <= N; j += 3) abt_block<4, 3>(K, A + i * lda, lda, B + j * ldb, ldb, C + i * ldc + j, ldc);
    for (; j < N; j += 3) {
      const int c = std::min(3, N - j);
      kAbtBlocks[r - 1][c - 1](K, A + i * lda, lda, B + j * ldb, ldb, C + i * ldc + j, ldc);
    }
  }
}

// One R x 16 block of C += A B (R <= 6); FULL: all 16 columns, else the lanes in m0/m1. The
// accumulators are named variables (GCC spills an array of them to the stack on every iteration).
template <int R, bool FULL>
LT_AVX2 void ab_block(int K, const float* A, size_t ars, size_t acs, const float* B, size_t ldb, float* Cm,
                      size_t ldc, __m256i m0, __m256i m1) {
  __m256 c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51;
  c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = c40 = c41 = c50 = c51 = _mm256_setzero_ps();
#define LT_AB_LOAD(r)                                              \
  if (R > r) {                                                     \
    if (FULL) {                                                    \
      c##r##0 = _mm256_loadu_ps(Cm + r * ldc);                     \
      c##r##1 = _mm256_loadu_ps(Cm + r * ldc + 8);                 \
    } else {                                                       \
      c##r##0 = _mm256_maskload_ps(Cm + r * ldc, m0);              \
      c##r##1 = _mm256_maskload_ps(Cm + r * ldc + 8, m1);          \
    }                                                              \
  }
  LT_AB_LOAD(0) LT_AB_LOAD(1) LT_AB_LOAD(2) LT_AB_LOAD(3) LT_AB_LOAD(4) LT_AB_LOAD(5)
#undef LT_AB_LOAD
  for (int k = 0; k < K; ++k) {
    const float* b = B + k * ldb;
    const __m256 b0 = FULL ? _mm256_loadu_ps(b) : _mm256_maskload_ps(b, m0);
    const __m256 b1 = FULL ? _mm256_loadu_ps(b + 8) : _mm256_maskload_ps(b + 8, m1);
    const float* a = A + k * acs;
#define LT_AB_FMA(r)                                               \
  if (R > r) {                                                     \
    const __m256 av = _mm256_broadcast_ss(a + r * ars);            \
    c##r##0 = _mm256_fmadd_ps(av, b0, c##r##0);                    \
    c##r##1 = _mm256_fmadd_ps(av, b1, c##r##1);                    \
  }
    LT_AB_FMA(0) LT_AB_FMA(1) LT_AB_FMA(2) LT_AB_FMA(3) LT_AB_FMA(4) LT_AB_FMA(5)
#undef LT_AB_FMA
  }
#define LT_AB_STORE(r)                                             \
  if (R > r) {                                                     \
    if (FULL) {                                                    \
      _mm256_storeu_ps(Cm + r * ldc, c##r##0);                     \
      _mm256_storeu_ps(Cm + r * ldc + 8, c##r##1);                 \
    } else {                                                       \
      _mm256_maskstore_ps(Cm + r * ldc, m0, c##r##0);              \
      _mm256_maskstore_ps(Cm + r * ldc + 8, m1, c##r##1);          \
    }                                                              \
  }
  LT_AB_STORE(0) LT_AB_STORE(1) LT_AB_STORE(2) LT_AB_STORE(3) LT_AB_STORE(4) LT_AB_STORE(5)
#undef LT_AB_STORE
}

using AbBlock = void (*)(int, const float*, size_t, size_t, const float*, size_t, float*, size_t, __m256i, __m256i);
const AbBlock kAbFull[6] = {ab_block<1, true>, ab_block<2, true>, ab_block<3, true>,
                            ab_block<4, true>, ab_block<5, true>, ab_block<6, true>};
const AbBlock kAbPart[6] = {ab_block<1, false>, ab_block<2, false>, ab_block<3, false>,
                            ab_block<4, false>, ab_block<5, false>, ab_block<6, false>};

LT_AVX2 void ab_avx2(int M, int N, int K, const float* A, size_t ars, size_t acs, const float* B, size_t ldb,
                     float* C, size_t ldc) {
  for (int n = 0; n < N; n += 16) {
    const int w = std::min(16, N - n);
    const __m256i m0 = tail_mask(std::min(8, w));
    const __m256i m1 = tail_mask(std::max(0, w - 8));
    const AbBlock* blocks = w == 16 ? kAbFull : kAbPart;
    int i = 0;
    if (w == 16)
      for (; i + 6 <= M; i += 6) ab_block<6, true>(K, A + i * ars, ars, acs, B + n, ldb, C + i * ldc + n, ldc, m0, m1);
    for (; i < M; i += 6) {
      const int r = std::min(6, M - i);
      blocks[r - 1](K, A + i * ars, ars, acs, B + n, ldb, C + i * ldc + n, ldc, m0, m1);
    }
  }
}

LT_AVX2 float scale_max_avx2(float* s, int n, float scale) {
  const __m256 vs = _mm256_set1_ps(scale);
  __m256 vm = _mm256_set1_ps(kNegInf);
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 x = _mm256_mul_ps(_mm256_loadu_ps(s + i), vs);
    _mm256_storeu_ps(s + i, x);
    vm = _mm256_max_ps(vm, x);
  }
  float m = hmax(vm);
  for (; i < n; ++i) {
    s[i] *= scale;
    m = std::max(m, s[i]);
  }
  return m;
}

LT_AVX2 float exp_sum_avx2(float* s, int n, float m) {
  const __m256 vm = _mm256_set1_ps(m);
  __m256 acc = _mm256_setzero_ps();
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(s + i), vm));
    _mm256_storeu_ps(s + i, e);
    acc = _mm256_add_ps(acc, e);
  }
  if (i < n) {
    const __m256i mask = tail_mask(n - i);
    const __m256 e = _mm256_and_ps(exp256(_mm256_sub_ps(_mm256_maskload_ps(s + i, mask), vm)),
                                   _mm256_castsi256_ps(mask));
    _mm256_maskstore_ps(s + i, mask, e);
    acc = _mm256_add_ps(acc, e);
  }
  return hsum(acc);
}

LT_AVX2 void exp_shift_avx2(float* s, int n, float scale, float shift) {
  const __m256 vs = _mm256_set1_ps(scale), vsh = _mm256_set1_ps(shift);
  int i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(s + i, exp256(_mm256_fmsub_ps(_mm256_loadu_ps(s + i), vs, vsh)));
  if (i < n) {
    const __m256i mask = tail_mask(n - i);
    _mm256_maskstore_ps(s + i, mask, exp256(_mm256_fmsub_ps(_mm256_maskload_ps(s + i, mask), vs, vsh)));
  }
}

#endif  // LT_ATTN_X86

const Kernels& kernels() {
  static const Kernels k = [] {
    Kernels p{abt_portable, ab_portable, scale_max_portable, exp_sum_portable, exp_shift_portable};
#ifdef LT_ATTN_X86
    const char* force = std::getenv("LORATUNE_ATTENTION_PORTABLE");
    const bool portable = force && force[0] && std::strcmp(force, "0") != 0;
    if (!portable && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
      return Kernels{abt_avx2, ab_avx2, scale_max_avx2, exp_sum_avx2, exp_shift_avx2};
#endif
    return p;
  }();
  return k;
}

// ---------------------------------------------------------------------------------------------
// Scratch memory, kept per thread and only grown (the pool's threads live as long as the addon).

float* scratch(size_t floats) {
  thread_local std::vector<float> buf;
  if (buf.size() < floats) buf.resize(floats);
  return buf.data();
}

// ---------------------------------------------------------------------------------------------
// Shapes and tiling

// The kernels work in blocks of 4 and 6 rows and 3 columns (see above), so multiples of 12 tile best.
constexpr int kRowsPerBlock = 72;  // query rows (positions x group heads) per block
constexpr int kKeyTile = 72;       // keys per tile
constexpr int kSplitKeys = 1024;   // key-chunk length when a forward call has few row blocks
constexpr size_t kStoredTilesMax = size_t(64) << 20;  // backward: P and dS kept up to this size

struct Shape {
  int T, S, Hq, Hkv, D, G, offset;
  float scale;
  int Bt;   // positions per row block
  int nqb;  // row blocks
  size_t qs() const { return static_cast<size_t>(Hq) * D; }   // stride of q rows over t
  size_t ks() const { return static_cast<size_t>(Hkv) * D; }  // stride of k rows over s
  int rows(int qb) const { return (std::min(T, (qb + 1) * Bt) - qb * Bt) * G; }
};

Shape make_shape(int64_t T, int64_t S, int64_t Hq, int64_t Hkv, int64_t D, int64_t offset, double scale) {
  const int64_t lim = 1 << 30;
  check(T <= lim && S <= lim && Hq <= lim && Hkv <= lim && D <= lim && offset <= lim, "sizes are too large");
  check(Hq >= 1 && Hkv >= 1, "Hq and Hkv must be at least 1");
  check(Hq % Hkv == 0, "Hq (" + std::to_string(Hq) + ") must be a multiple of Hkv (" + std::to_string(Hkv) + ")");
  check(D >= 1, "D must be at least 1");
  check(offset + T <= S, "offset + T (" + std::to_string(offset + T) + ") exceeds S (" + std::to_string(S) + ")");
  check(std::isfinite(scale), "scale must be finite");
  Shape s;
  s.T = static_cast<int>(T);
  s.S = static_cast<int>(S);
  s.Hq = static_cast<int>(Hq);
  s.Hkv = static_cast<int>(Hkv);
  s.D = static_cast<int>(D);
  s.G = s.Hq / s.Hkv;
  s.offset = static_cast<int>(offset);
  s.scale = static_cast<float>(scale);
  s.Bt = std::max(1, std::min(s.T, kRowsPerBlock / s.G));
  s.nqb = s.T == 0 ? 0 : (s.T + s.Bt - 1) / s.Bt;
  return s;
}

size_t product(std::initializer_list<int64_t> xs) {
  size_t p = 1;
  for (int64_t x : xs)
    check(!__builtin_mul_overflow(p, static_cast<size_t>(x), &p), "array size overflows");
  return p;
}

bool overlap(const View& a, const View& b) {
  if (!a.present || !b.present || a.length == 0 || b.length == 0) return false;
  const char* a0 = static_cast<const char*>(a.data);
  const char* b0 = static_cast<const char*>(b.data);
  return a0 < b0 + b.length * 4 && b0 < a0 + a.length * 4;
}

void check_disjoint(const View& out, const char* out_name, std::initializer_list<std::pair<const View*, const char*>> others) {
  for (const auto& o : others)
    check(!overlap(out, *o.first), std::string(out_name) + " must not overlap " + o.second);
}

// The rows of row block qb, kv head g, of a [T, Hq, D] array as a matrix [rows, D] with row stride
// *ld: in place when the rows are evenly spaced (Hkv = 1 or G = 1), else copied into buf.
const float* rows_of(const Shape& s, int g, int qb, const float* src, float* buf, size_t* ld) {
  const int t0 = qb * s.Bt, t1 = std::min(s.T, t0 + s.Bt);
  const size_t n = static_cast<size_t>(s.G) * s.D;
  const float* first = src + t0 * s.qs() + static_cast<size_t>(g) * n;
  if (s.Hkv == 1 || s.G == 1) {
    *ld = s.Hkv == 1 ? s.D : s.qs();
    return first;
  }
  for (int t = t0; t < t1; ++t) std::memcpy(buf + static_cast<size_t>(t - t0) * n, first + (t - t0) * s.qs(), n * 4);
  *ld = s.D;
  return buf;
}

// Runs fn(i) for i in [0, n) on the pool, or inline when the whole job is small.
template <typename Fn>
void run_tasks(size_t n, double work, const Fn& fn) {
  const size_t grain = work < 3e5 ? std::max<size_t>(n, 1) : 1;
  parallel_for(n, grain, [&](size_t b, size_t e) {
    for (size_t i = b; i < e; ++i) fn(i);
  });
}

// ---------------------------------------------------------------------------------------------
// Forward

// Online-softmax attention of row block qb (kv head g) over keys [kbeg, kend) (clipped to the
// block's causal limit). Leaves the unnormalized output in O [rows, D] and the running max m and
// sum l per row (m = -inf, l = 0 for a row that sees no key in the range).
void forward_block(const Kernels& K, const Shape& s, int g, int qb, int kbeg, int kend, const float* Qb,
                   size_t ldq, const float* k, const float* v, float* O, float* m, float* l, float* Sb) {
  const int M = s.rows(qb), t0 = qb * s.Bt;
  const int pmax = s.offset + t0 + M / s.G - 1;
  kend = std::min(kend, pmax + 1);
  std::fill(O, O + static_cast<size_t>(M) * s.D, 0.0f);
  std::fill(m, m + M, kNegInf);
  std::fill(l, l + M, 0.0f);
  const size_t ks = s.ks();
  for (int j0 = kbeg; j0 < kend; j0 += kKeyTile) {
    const int nk = std::min(kKeyTile, kend - j0);
    const float* kt = k + j0 * ks + static_cast<size_t>(g) * s.D;
    const float* vt = v + j0 * ks + static_cast<size_t>(g) * s.D;
    K.abt(M, nk, s.D, Qb, ldq, kt, ks, Sb, kKeyTile);
    for (int r = 0; r < M; ++r) {
      float* row = Sb + static_cast<size_t>(r) * kKeyTile;
      const int p = s.offset + t0 + r / s.G;
      const int nv = std::max(0, std::min(nk, p - j0 + 1));
      if (nv < nk) std::fill(row + nv, row + nk, 0.0f);
      if (nv == 0) continue;
      const float mt = K.scale_max(row, nv, s.scale);
      const float mnew = std::max(m[r], mt);
      const float alpha = std::exp(m[r] - mnew);
      const float sum = K.exp_sum(row, nv, mnew);
      l[r] = l[r] * alpha + sum;
      m[r] = mnew;
      if (alpha != 1.0f) {
        float* o = O + static_cast<size_t>(r) * s.D;
        for (int d = 0; d < s.D; ++d) o[d] *= alpha;
      }
    }
    K.ab(M, s.D, nk, Sb, kKeyTile, 1, vt, ks, O, s.D);
  }
}

void attention_forward(Args& a) {
  const Shape s = make_shape(a.integer(0, "T"), a.integer(1, "S"), a.integer(2, "Hq"), a.integer(3, "Hkv"),
                             a.integer(4, "D"), a.integer(5, "offset"), a.number(6, "scale"));
  const View vq = a.array(7, "q"), vk = a.array(8, "k"), vv = a.array(9, "v"), vo = a.array(10, "out");
  const View vl = a.optional_array(11, "lse");
  const size_t nq = product({s.T, s.Hq, s.D}), nkv = product({s.S, s.Hkv, s.D});
  const float* q = vq.need(nq, "q").f32("q");
  const float* k = vk.need(nkv, "k").f32("k");
  const float* v = vv.need(nkv, "v").f32("v");
  float* out = vo.need(nq, "out").f32("out");
  float* lse = vl.present ? vl.need(product({s.Hq, s.T}), "lse").f32("lse") : nullptr;
  check_disjoint(vo, "out", {{&vq, "q"}, {&vk, "k"}, {&vv, "v"}, {&vl, "lse"}});
  check_disjoint(vl, "lse", {{&vq, "q"}, {&vk, "k"}, {&vv, "v"}});
  if (s.T == 0) return;

  const Kernels& K = kernels();
  const int D = s.D, G = s.G, Mmax = s.Bt * G;
  const int klimit = s.offset + s.T;  // keys any query can see
  // Few row blocks (decoding, short prompts): also split the keys so that several threads share
  // the work. The split depends only on the shapes, so results do not depend on the thread count.
  int nsplit = 1;
  if (s.Hkv * s.nqb < 4 && klimit >= 2 * kSplitKeys) nsplit = std::min(16, klimit / kSplitKeys);
  const int chunk = (klimit + nsplit - 1) / nsplit;
  const double work = 2.0 * s.Hq * s.T * (s.offset + (s.T + 1) / 2.0) * D;

  // Partial results of split chunks: O [nsplit][T, Hq, D], m and l [nsplit][Hq, T].
  std::vector<float> part;
  float *pO = nullptr, *pm = nullptr, *pl = nullptr;
  if (nsplit > 1) {
    part.resize(static_cast<size_t>(nsplit) * (nq + 2 * static_cast<size_t>(s.Hq) * s.T));
    pO = part.data();
    pm = pO + static_cast<size_t>(nsplit) * nq;
    pl = pm + static_cast<size_t>(nsplit) * s.Hq * s.T;
  }

  const size_t ntasks = static_cast<size_t>(s.Hkv) * s.nqb * nsplit;
  run_tasks(ntasks, work, [&](size_t i) {
    // Largest blocks (latest positions) first.
    const int c = static_cast<int>(i % nsplit);
    const int g = static_cast<int>(i / nsplit % s.Hkv);
    const int qb = s.nqb - 1 - static_cast<int>(i / nsplit / s.Hkv);
    const int M = s.rows(qb), t0 = qb * s.Bt;
    float* Qbuf = scratch(static_cast<size_t>(Mmax) * (2 * D + kKeyTile + 2));
    float* O = Qbuf + static_cast<size_t>(Mmax) * D;
    float* Sb = O + static_cast<size_t>(Mmax) * D;
    float* m = Sb + static_cast<size_t>(Mmax) * kKeyTile;
    float* l = m + Mmax;
    size_t ldq;
    const float* Qb = rows_of(s, g, qb, q, Qbuf, &ldq);
    forward_block(K, s, g, qb, c * chunk, std::min(klimit, (c + 1) * chunk), Qb, ldq, k, v, O, m, l, Sb);
    for (int r = 0; r < M; ++r) {
      const int t = t0 + r / G, h = g * G + r % G;
      const float* o = O + static_cast<size_t>(r) * D;
      if (nsplit == 1) {
        float* dst = out + t * s.qs() + static_cast<size_t>(h) * D;
        const float inv = 1.0f / l[r];
        for (int d = 0; d < D; ++d) dst[d] = o[d] * inv;
        if (lse) lse[static_cast<size_t>(h) * s.T + t] = m[r] + std::log(l[r]);
      } else {
        std::memcpy(pO + c * nq + t * s.qs() + static_cast<size_t>(h) * D, o, static_cast<size_t>(D) * 4);
        pm[static_cast<size_t>(c) * s.Hq * s.T + static_cast<size_t>(h) * s.T + t] = m[r];
        pl[static_cast<size_t>(c) * s.Hq * s.T + static_cast<size_t>(h) * s.T + t] = l[r];
      }
    }
  });
  if (nsplit == 1) return;

  // Merge the chunks in order.
  const size_t HT = static_cast<size_t>(s.Hq) * s.T;
  run_tasks(HT, static_cast<double>(nsplit) * nq, [&](size_t i) {
    const int h = static_cast<int>(i / s.T), t = static_cast<int>(i % s.T);
    float mx = kNegInf;
    for (int c = 0; c < nsplit; ++c) mx = std::max(mx, pm[c * HT + i]);
    float* dst = out + t * s.qs() + static_cast<size_t>(h) * D;
    std::fill(dst, dst + D, 0.0f);
    float lsum = 0;
    for (int c = 0; c < nsplit; ++c) {
      const float lc = pl[c * HT + i];
      if (lc == 0) continue;
      const float w = std::exp(pm[c * HT + i] - mx);
      lsum += lc * w;
      const float* o = pO + c * nq + t * s.qs() + static_cast<size_t>(h) * D;
      for (int d = 0; d < D; ++d) dst[d] += w * o[d];
    }
    const float inv = 1.0f / lsum;
    for (int d = 0; d < D; ++d) dst[d] *= inv;
    if (lse) lse[i] = mx + std::log(lsum);
  });
}

// ---------------------------------------------------------------------------------------------
// Backward

// For the [M, nk] tile at keys j0.. of row block qb: turns S (raw q.k) into P and dP (raw dO.v)
// into dS = P * (dP - Di), zero where masked.
void softmax_grad_tile(const Kernels& K, const Shape& s, int qb, int M, int j0, int nk, float* Sb, float* dPb,
                       const float* lse_rows, const float* di_rows) {
  const int t0 = qb * s.Bt;
  for (int r = 0; r < M; ++r) {
    float* p = Sb + static_cast<size_t>(r) * kKeyTile;
    float* dp = dPb + static_cast<size_t>(r) * kKeyTile;
    const int pos = s.offset + t0 + r / s.G;
    const int nv = std::max(0, std::min(nk, pos - j0 + 1));
    K.exp_shift(p, nv, s.scale, lse_rows[r]);
    const float di = di_rows[r];
    for (int j = 0; j < nv; ++j) dp[j] = p[j] * (dp[j] - di);
    for (int j = nv; j < nk; ++j) p[j] = dp[j] = 0.0f;
  }
}

void gather_rows(const Shape& s, int g, int qb, const float* src_ht, float* dst) {
  const int M = s.rows(qb), t0 = qb * s.Bt;
  for (int r = 0; r < M; ++r) dst[r] = src_ht[static_cast<size_t>(g * s.G + r % s.G) * s.T + t0 + r / s.G];
}

void attention_backward(Args& a) {
  const Shape s = make_shape(a.integer(0, "T"), a.integer(1, "S"), a.integer(2, "Hq"), a.integer(3, "Hkv"),
                             a.integer(4, "D"), a.integer(5, "offset"), a.number(6, "scale"));
  const View vq = a.array(7, "q"), vk = a.array(8, "k"), vv = a.array(9, "v"), vo = a.array(10, "out");
  const View vl = a.array(11, "lse"), vdo = a.array(12, "dOut");
  const View vdq = a.array(13, "dq"), vdk = a.array(14, "dk"), vdv = a.array(15, "dv");
  const size_t nq = product({s.T, s.Hq, s.D}), nkv = product({s.S, s.Hkv, s.D});
  const float* q = vq.need(nq, "q").f32("q");
  const float* k = vk.need(nkv, "k").f32("k");
  const float* v = vv.need(nkv, "v").f32("v");
  const float* out = vo.need(nq, "out").f32("out");
  const float* lse = vl.need(product({s.Hq, s.T}), "lse").f32("lse");
  const float* dout = vdo.need(nq, "dOut").f32("dOut");
  float* dq = vdq.need(nq, "dq").f32("dq");
  float* dk = vdk.need(nkv, "dk").f32("dk");
  float* dv = vdv.need(nkv, "dv").f32("dv");
  const std::initializer_list<std::pair<const View*, const char*>> inputs = {
      {&vq, "q"}, {&vk, "k"}, {&vv, "v"}, {&vo, "out"}, {&vl, "lse"}, {&vdo, "dOut"}};
  check_disjoint(vdq, "dq", inputs);
  check_disjoint(vdk, "dk", inputs);
  check_disjoint(vdv, "dv", inputs);
  check_disjoint(vdq, "dq", {{&vdk, "dk"}, {&vdv, "dv"}});
  check_disjoint(vdk, "dk", {{&vdv, "dv"}});
  std::fill(dk, dk + nkv, 0.0f);
  std::fill(dv, dv + nkv, 0.0f);
  if (s.T == 0) return;

  const Kernels& K = kernels();
  const int D = s.D, G = s.G, Mmax = s.Bt * G;
  const size_t ks = s.ks();
  const int klimit = s.offset + s.T;
  const double work = 2.0 * s.Hq * s.T * (s.offset + (s.T + 1) / 2.0) * D;
  std::vector<float> di(static_cast<size_t>(s.Hq) * s.T);

  // Where pass 1 leaves the P and dS tiles of (kv head g, row block qb, key tile): tile_at[g *
  // nqb + qb] counts the tiles before it; each tile is [Mmax, kKeyTile] of P, then the same of dS.
  const size_t tile_floats = 2 * static_cast<size_t>(Mmax) * kKeyTile;
  std::vector<size_t> tile_at(static_cast<size_t>(s.Hkv) * s.nqb + 1, 0);
  for (int g = 0; g < s.Hkv; ++g)
    for (int qb = 0; qb < s.nqb; ++qb) {
      const size_t i = static_cast<size_t>(g) * s.nqb + qb;
      const int kend = std::min(klimit, s.offset + qb * s.Bt + s.rows(qb) / G);
      tile_at[i + 1] = tile_at[i] + (kend + kKeyTile - 1) / kKeyTile;
    }
  float* stored = nullptr;
  if (tile_at.back() * tile_floats * sizeof(float) <= kStoredTilesMax) {
    thread_local std::vector<float> keep;  // kept grown: fresh pages cost more than the products
    if (keep.size() < tile_at.back() * tile_floats) keep.resize(tile_at.back() * tile_floats);
    stored = keep.data();
  }

  // Pass 1: Di and dQ, per (kv head, row block), largest blocks first.
  run_tasks(static_cast<size_t>(s.Hkv) * s.nqb, 3 * work, [&](size_t i) {
    const int g = static_cast<int>(i % s.Hkv);
    const int qb = s.nqb - 1 - static_cast<int>(i / s.Hkv);
    const int M = s.rows(qb), t0 = qb * s.Bt;
    float* Qbuf = scratch(static_cast<size_t>(Mmax) * (4 * D + 2 * kKeyTile + 2));
    float* dObuf = Qbuf + static_cast<size_t>(Mmax) * D;
    float* Obuf = dObuf + static_cast<size_t>(Mmax) * D;
    float* dQb = Obuf + static_cast<size_t>(Mmax) * D;
    float* Sb = dQb + static_cast<size_t>(Mmax) * D;
    float* dPb = Sb + static_cast<size_t>(Mmax) * kKeyTile;
    float* lr = dPb + static_cast<size_t>(Mmax) * kKeyTile;
    float* dr = lr + Mmax;
    size_t ldq, lddo, ldo;
    const float* Qb = rows_of(s, g, qb, q, Qbuf, &ldq);
    const float* dOb = rows_of(s, g, qb, dout, dObuf, &lddo);
    const float* Ob = rows_of(s, g, qb, out, Obuf, &ldo);
    for (int r = 0; r < M; ++r) {
      const float* o = Ob + r * ldo;
      const float* d_o = dOb + r * lddo;
      double acc = 0;
      for (int d = 0; d < D; ++d) acc += static_cast<double>(o[d]) * d_o[d];
      dr[r] = static_cast<float>(acc);
      di[static_cast<size_t>(g * G + r % G) * s.T + t0 + r / G] = dr[r];
    }
    gather_rows(s, g, qb, lse, lr);
    std::fill(dQb, dQb + static_cast<size_t>(M) * D, 0.0f);
    const int kend = std::min(klimit, s.offset + t0 + M / G);
    for (int j0 = 0; j0 < kend; j0 += kKeyTile) {
      const int nk = std::min(kKeyTile, kend - j0);
      const float* kt = k + j0 * ks + static_cast<size_t>(g) * D;
      const float* vt = v + j0 * ks + static_cast<size_t>(g) * D;
      if (stored) {
        Sb = stored + (tile_at[static_cast<size_t>(g) * s.nqb + qb] + j0 / kKeyTile) * tile_floats;
        dPb = Sb + static_cast<size_t>(Mmax) * kKeyTile;
      }
      K.abt(M, nk, D, Qb, ldq, kt, ks, Sb, kKeyTile);
      K.abt(M, nk, D, dOb, lddo, vt, ks, dPb, kKeyTile);
      softmax_grad_tile(K, s, qb, M, j0, nk, Sb, dPb, lr, dr);
      K.ab(M, D, nk, dPb, kKeyTile, 1, kt, ks, dQb, D);
    }
    for (int r = 0; r < M; ++r) {
      const int t = t0 + r / G, h = g * G + r % G;
      float* dst = dq + t * s.qs() + static_cast<size_t>(h) * D;
      const float* src = dQb + static_cast<size_t>(r) * D;
      for (int d = 0; d < D; ++d) dst[d] = s.scale * src[d];
    }
  });

  // Pass 2: dK and dV, per (kv head, key block), over all query rows of the group that see it.
  const int nkb = (klimit + kKeyTile - 1) / kKeyTile;
  run_tasks(static_cast<size_t>(s.Hkv) * nkb, 4 * work, [&](size_t i) {
    const int g = static_cast<int>(i % s.Hkv);
    const int kb = static_cast<int>(i / s.Hkv);
    const int j0 = kb * kKeyTile, nk = std::min(kKeyTile, klimit - j0);
    float* Qbuf = scratch(static_cast<size_t>(Mmax) * (2 * D + 2 * kKeyTile + 2) + 2 * static_cast<size_t>(kKeyTile) * D);
    float* dObuf = Qbuf + static_cast<size_t>(Mmax) * D;
    float* Sb = dObuf + static_cast<size_t>(Mmax) * D;
    float* dPb = Sb + static_cast<size_t>(Mmax) * kKeyTile;
    float* lr = dPb + static_cast<size_t>(Mmax) * kKeyTile;
    float* dr = lr + Mmax;
    float* dKb = dr + Mmax;
    float* dVb = dKb + static_cast<size_t>(kKeyTile) * D;
    std::fill(dKb, dKb + 2 * static_cast<size_t>(kKeyTile) * D, 0.0f);
    const float* kt = k + j0 * ks + static_cast<size_t>(g) * D;
    const float* vt = v + j0 * ks + static_cast<size_t>(g) * D;
    const int tfirst = std::max(0, j0 - s.offset);  // first position that sees key j0
    for (int qb = tfirst / s.Bt; qb < s.nqb; ++qb) {
      const int M = s.rows(qb), t0 = qb * s.Bt;
      const int nkk = std::min(nk, s.offset + t0 + M / G - j0);  // keys this block sees
      size_t ldq, lddo;
      const float* Qb = rows_of(s, g, qb, q, Qbuf, &ldq);
      const float* dOb = rows_of(s, g, qb, dout, dObuf, &lddo);
      if (stored) {
        Sb = stored + (tile_at[static_cast<size_t>(g) * s.nqb + qb] + kb) * tile_floats;
        dPb = Sb + static_cast<size_t>(Mmax) * kKeyTile;
      } else {
        gather_rows(s, g, qb, lse, lr);
        gather_rows(s, g, qb, di.data(), dr);
        K.abt(M, nkk, D, Qb, ldq, kt, ks, Sb, kKeyTile);
        K.abt(M, nkk, D, dOb, lddo, vt, ks, dPb, kKeyTile);
        softmax_grad_tile(K, s, qb, M, j0, nkk, Sb, dPb, lr, dr);
      }
      K.ab(nkk, D, M, Sb, 1, kKeyTile, dOb, lddo, dVb, D);
      K.ab(nkk, D, M, dPb, 1, kKeyTile, Qb, ldq, dKb, D);
    }
    for (int j = 0; j < nk; ++j) {
      float* dkr = dk + (j0 + j) * ks + static_cast<size_t>(g) * D;
      float* dvr = dv + (j0 + j) * ks + static_cast<size_t>(g) * D;
      const float* sk = dKb + static_cast<size_t>(j) * D;
      const float* sv = dVb + static_cast<size_t>(j) * D;
      for (int d = 0; d < D; ++d) {
        dkr[d] = s.scale * sk[d];
        dvr[d] = sv[d];
      }
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Rotary embedding

// cos and sin of every (position, frequency) pair of a call. A training step applies the same
// positions to q and k in every layer, forward and backward, so the last table is kept (per calling
// thread) and reused while theta, D and the positions stay the same.
struct RopeTable {
  float theta = 0;
  int half = 0;
  std::vector<int32_t> positions;
  std::vector<float> cos, sin;  // [T, half]
};

const RopeTable& rope_table(float theta, int half, const int32_t* pos, size_t T) {
  thread_local RopeTable mine;
  RopeTable& tab = mine;  // a name the pool's threads can see: inside the lambda `mine` would be theirs
  if (tab.theta == theta && tab.half == half && tab.positions.size() == T &&
      std::equal(pos, pos + T, tab.positions.begin()))
    return tab;
  // As PyTorch computes it in float32: inv_freq = 1 / theta^(float(2i) / D), angle = float(pos) *
  // inv_freq, then cos/sin of that float angle (here correctly rounded via double).
  std::vector<float> inv_freq(half);
  for (int i = 0; i < half; ++i) {
    const float e = static_cast<float>(2 * i) / static_cast<float>(2 * half);
    const float p = static_cast<float>(std::pow(static_cast<double>(theta), static_cast<double>(e)));
    inv_freq[i] = 1.0f / p;
  }
  tab.theta = 0;  // invalid until filled
  tab.positions.assign(pos, pos + T);
  tab.cos.resize(T * half);
  tab.sin.resize(T * half);
  parallel_for(T, std::max<size_t>(1, 4096 / half), [&](size_t b, size_t e) {
    for (size_t t = b; t < e; ++t) {
      const float fp = static_cast<float>(pos[t]);
      for (int i = 0; i < half; ++i) {
        const double ang = static_cast<double>(fp * inv_freq[i]);
        tab.cos[t * half + i] = static_cast<float>(std::cos(ang));
        tab.sin[t * half + i] = static_cast<float>(std::sin(ang));
      }
    }
  });
  tab.theta = theta;
  tab.half = half;
  return tab;
}

void rope(Args& a) {
  const int64_t T = a.integer(0, "T"), H = a.integer(1, "H"), D = a.integer(2, "D");
  const double theta = a.number(3, "theta");
  const View vp = a.array(4, "positions"), vx = a.array(5, "x");
  const bool inverse = a.boolean(6, "inverse");
  check(T <= (1 << 30) && H <= (1 << 30) && D <= (1 << 30), "sizes are too large");
  check(D >= 2 && D % 2 == 0, "D must be even and at least 2");
  check(std::isfinite(theta) && theta > 0, "theta must be a positive number");
  const int32_t* pos = vp.need(static_cast<size_t>(T), "positions").i32("positions");
  float* x = vx.need(product({T, H, D}), "x").f32("x");
  const int half = static_cast<int>(D / 2);
  const RopeTable& tab = rope_table(static_cast<float>(theta), half, pos, static_cast<size_t>(T));
  const size_t row = static_cast<size_t>(H) * D;
  const size_t grain = std::max<size_t>(1, 32768 / row);
  parallel_for(static_cast<size_t>(T), grain, [&](size_t b, size_t e) {
    const float sign = inverse ? -1.0f : 1.0f;
    for (size_t t = b; t < e; ++t) {
      const float* c = tab.cos.data() + t * half;
      const float* sn = tab.sin.data() + t * half;
      for (int64_t h = 0; h < H; ++h) {
        float* x1 = x + t * row + h * D;
        float* x2 = x1 + half;
        for (int i = 0; i < half; ++i) {
          const float a1 = x1[i], a2 = x2[i], si = sign * sn[i];
          x1[i] = a1 * c[i] - a2 * si;
          x2[i] = a1 * si + a2 * c[i];
        }
      }
    }
  });
}

}  // namespace

void register_attention(napi_env env, napi_value exports) {
  define(env, exports, "attentionForward", attention_forward);
  define(env, exports, "attentionBackward", attention_backward);
  define(env, exports, "rope", rope);
}

}  // namespace lt
