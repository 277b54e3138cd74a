// GEMM: C = alpha * op(A) · op(B) + beta * C, row-major with row strides, A f32, B f32 or bf16.
//
// One engine (gemm_body.h: packing, micro-kernel; a streaming path for M <= 8, a panel-by-panel
// path for moderate M, packed blocks for large M) is compiled for three instruction sets and
// picked at run time: AVX-512 (12x32 block), AVX2+FMA (6x16 block) and a portable one in plain
// GCC vector extensions (6x8 block; SSE2 on x86-64, NEON on arm64).
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "napi_util.h"
#include "threadpool.h"

namespace lt {
namespace {

struct Problem {
  bool transA, transB;
  long M, N, K;
  float alpha, beta;
  const float* A;
  long lda;
  const float* Bf;     // B when f32
  const uint16_t* Bh;  // B when bf16
  long ldb;
  float* C;
  long ldc;
};

// The small-operand form (see gemm_body.h): out[i, j] = alpha * sum_k a[i,k] op(W)[k,j] + beta * out.
struct Small {
  long M, N, K;  // M <= 8 rows in `a`, N columns of op(W)
  const float* a;  // M x K, contiguous
  const float* Wf;
  const uint16_t* Wh;
  long ldw;
  bool w_rows_along_k;  // W stored [N, K] (else [K, N])
  float* C;
  long rs, cs;  // output element (i, j) at C[i*rs + j*cs]
  float alpha, beta;
};

// Packing buffers, kept per calling thread and only grown: allocating megabytes per call would
// cost page faults on every product.
float* workspace(int slot, size_t floats) {
  struct Buffers {
    float* p[7] = {};
    size_t n[7] = {};
    ~Buffers() {
      for (float* q : p) std::free(q);
    }
  };
  thread_local Buffers ws;
  if (ws.n[slot] < floats) {
    std::free(ws.p[slot]);
    ws.p[slot] = nullptr;
    ws.n[slot] = 0;
    void* q = std::aligned_alloc(64, (floats * sizeof(float) + 63) / 64 * 64);
    check(q != nullptr, "cannot allocate " + std::to_string(floats * sizeof(float)) + " bytes of GEMM workspace");
    ws.p[slot] = static_cast<float*>(q);
    ws.n[slot] = floats;
  }
  return ws.p[slot];
}

// parallel_for, or a plain call when the product is too small to be worth waking threads.
template <typename F>
void run(size_t n, size_t grain, bool par, const F& f) {
  if (!par) f(size_t(0), n);
  else parallel_for(n, grain, f);
}

}  // namespace

// ---- one engine per instruction set -------------------------------------------------------

#if defined(__x86_64__) || defined(__i386__)
#pragma GCC push_options
#pragma GCC target("avx512f,avx2,fma")
#pragma GCC diagnostic push
// GCC 12 reports the "undefined" source register inside _mm512_cvtepu16_epi32 itself.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
// Block sizes measured on the 2-core Zen machines (1 MB L2): a long K block (one pass over C)
// and thin tiles beat the classic L1-sized KC = 256 by 10-20%.
namespace gemm_avx512 {
constexpr int VW = 16, MR = 12, NR = 32;
constexpr long KC = 2048, MC = 48, NT = 256, NC = 1024, MB = 1008, KP = 1024;
#define LT_AVX2_INTRINSICS 1
#define LT_AVX512_INTRINSICS 1
#include "gemm_body.h"
#undef LT_AVX2_INTRINSICS
#undef LT_AVX512_INTRINSICS
}  // namespace gemm_avx512
#pragma GCC diagnostic pop
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace gemm_avx2 {
constexpr int VW = 8, MR = 6, NR = 16;  // KC halved: AVX2-only CPUs often have 256 KB of L2
constexpr long KC = 1024, MC = 48, NT = 256, NC = 1024, MB = 1008, KP = 512;
#define LT_AVX2_INTRINSICS 1
#define LT_AVX512_INTRINSICS 0
#include "gemm_body.h"
#undef LT_AVX2_INTRINSICS
#undef LT_AVX512_INTRINSICS
}  // namespace gemm_avx2
#pragma GCC pop_options
#endif

namespace gemm_portable {
// 16-byte vectors: one register on the baseline of every 64-bit target (SSE2, NEON); wider ones
// are split by GCC and their accumulators spill.
constexpr int VW = 4, MR = 6, NR = 8;
constexpr long KC = 512, MC = 60, NT = 256, NC = 1024, MB = 1020, KP = 512;
#define LT_AVX2_INTRINSICS 0
#define LT_AVX512_INTRINSICS 0
#include "gemm_body.h"
#undef LT_AVX2_INTRINSICS
#undef LT_AVX512_INTRINSICS
}  // namespace gemm_portable

namespace {

enum class Isa { Portable, Avx2, Avx512 };

const char* isa_name(Isa i) {
  switch (i) {
    case Isa::Avx512: return "avx512";
    case Isa::Avx2: return "avx2-fma";
    default: return "portable";
  }
}

bool supported(Isa i) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (i == Isa::Avx512) return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx2") &&
                               __builtin_cpu_supports("fma");
  if (i == Isa::Avx2) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
  return i == Isa::Portable;
}

Isa best_isa() {
  if (supported(Isa::Avx512)) return Isa::Avx512;
  if (supported(Isa::Avx2)) return Isa::Avx2;
  return Isa::Portable;
}

Isa current = best_isa();

// Elements spanned by a rows x cols matrix with row stride ld; rejects strides below the width.
size_t span(int64_t rows, int64_t cols, int64_t ld, const char* what) {
  check(ld >= cols, std::string(what) + " row stride " + std::to_string(ld) + " is less than its row width " +
                        std::to_string(cols));
  if (rows == 0 || cols == 0) return 0;
  uint64_t n;
  check(!__builtin_mul_overflow(uint64_t(rows - 1), uint64_t(ld), &n) &&
            !__builtin_add_overflow(n, uint64_t(cols), &n),
        std::string(what) + " is too large");
  return n;
}

void scale_c(float* C, long M, long N, long ldc, float beta) {
  for (long i = 0; i < M; ++i)
    for (long j = 0; j < N; ++j) C[i * ldc + j] = beta == 0 ? 0.0f : beta * C[i * ldc + j];
}

void dispatch_packed(const Problem& P, bool par) {
  // Panel by panel up to a thousand rows (measured 1.1-1.6x faster than the big packed block at
  // 79-512 rows on the 270M and 2B shapes), unless op(B) has too few panels to share out.
  const bool panels = P.M <= 256 || (P.M <= 1024 && P.N >= 256);
  switch (current) {
#if defined(__x86_64__) || defined(__i386__)
    case Isa::Avx512: panels ? gemm_avx512::gemm_panels(P, par) : gemm_avx512::gemm_packed(P, par); break;
    case Isa::Avx2: panels ? gemm_avx2::gemm_panels(P, par) : gemm_avx2::gemm_packed(P, par); break;
#endif
    default: panels ? gemm_portable::gemm_panels(P, par) : gemm_portable::gemm_packed(P, par);
  }
}

void dispatch_small(const Small& S, bool par) {
  switch (current) {
#if defined(__x86_64__) || defined(__i386__)
    case Isa::Avx512: gemm_avx512::gemm_small(S, par); break;
    case Isa::Avx2: gemm_avx2::gemm_small(S, par); break;
#endif
    default: gemm_portable::gemm_small(S, par);
  }
}

// gemm(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)
void gemm(Args& a) {
  const bool ta = a.boolean(0, "transA"), tb = a.boolean(1, "transB");
  const int64_t M = a.integer(2, "M"), N = a.integer(3, "N"), K = a.integer(4, "K");
  const double alpha = a.number(5, "alpha");
  View vA = a.array(6, "A");
  const int64_t lda = a.integer(7, "lda");
  View vB = a.array(8, "B");
  const int64_t ldb = a.integer(9, "ldb");
  const double beta = a.number(10, "beta");
  View vC = a.array(11, "C");
  const int64_t ldc = a.integer(12, "ldc");

  Problem P{};
  P.transA = ta;
  P.transB = tb;
  P.M = M;
  P.N = N;
  P.K = K;
  P.alpha = float(alpha);
  P.beta = float(beta);
  P.A = vA.f32("A");
  check(vB.dtype == DType::F32 || vB.dtype == DType::BF16, "B must be a Float32Array or a Uint16Array (bf16)");
  if (vB.is_bf16()) P.Bh = vB.bf16("B");
  else P.Bf = vB.f32("B");
  P.C = vC.f32("C");
  P.lda = lda;
  P.ldb = ldb;
  P.ldc = ldc;
  vA.need(ta ? span(K, M, lda, "A [K,M]") : span(M, K, lda, "A [M,K]"), "A");
  vB.need(tb ? span(N, K, ldb, "B [N,K]") : span(K, N, ldb, "B [K,N]"), "B");
  vC.need(span(M, N, ldc, "C [M,N]"), "C");

  if (M == 0 || N == 0) return;
  if (K == 0 || alpha == 0) {  // BLAS semantics: A and B are not read
    scale_c(P.C, M, N, ldc, P.beta);
    return;
  }
  // Waking the second thread costs 3-250 us (DESIGN.md): only for products worth it.
  const bool par = num_threads() > 1 && double(M) * double(N) * double(K) >= double(1 << 18);

  if (M <= 8 || N <= 8) {
    // Few rows (decode, short prompts) or few columns (LoRA rank): copy the small operand into `a`
    // as f32 rows and stream the other one once; for M = 5..8 this measured 2-3x faster than
    // packing. For few columns, compute Cᵀ = op(B)ᵀ · op(A)ᵀ.
    Small S{};
    S.K = K;
    S.alpha = P.alpha;
    S.beta = P.beta;
    const bool few_rows = M <= 8;
    float* s = workspace(2, size_t(few_rows ? M : N) * size_t(K));
    if (few_rows) {
      for (long i = 0; i < M; ++i)
        for (long k = 0; k < K; ++k) s[i * K + k] = ta ? P.A[k * lda + i] : P.A[i * lda + k];
      S.M = M;
      S.N = N;
      S.Wf = P.Bf;
      S.Wh = P.Bh;
      S.ldw = ldb;
      S.w_rows_along_k = tb;  // B [N,K]
      S.rs = ldc;
      S.cs = 1;
    } else {
      auto b = [&](long k, long j) -> float {  // op(B)[k][j]
        long at = tb ? j * ldb + k : k * ldb + j;
        if (P.Bh) {
          uint32_t w = uint32_t(P.Bh[at]) << 16;
          float f;
          std::memcpy(&f, &w, 4);
          return f;
        }
        return P.Bf[at];
      };
      for (long j = 0; j < N; ++j)
        for (long k = 0; k < K; ++k) s[j * K + k] = b(k, j);
      S.M = N;
      S.N = M;
      S.Wf = P.A;
      S.ldw = lda;
      S.w_rows_along_k = !ta;  // op(A)ᵀ [K,M]: A [M,K] has rows along k
      S.rs = 1;
      S.cs = ldc;
    }
    S.a = s;
    S.C = P.C;
    dispatch_small(S, par);
    return;
  }
  dispatch_packed(P, par);
}

void gemm_kernel(Args& a) { napi_create_string_utf8(a.env, isa_name(current), NAPI_AUTO_LENGTH, &a.result); }

// setGemmKernel(name): "avx512", "avx2-fma", "portable" or "auto" (the best this CPU supports).
// For tests and benchmarks of each kernel on one machine.
napi_value set_gemm_kernel(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  char buf[32] = {0};
  size_t len = 0;
  if (argc < 1 || napi_get_value_string_utf8(env, argv[0], buf, sizeof buf, &len) != napi_ok) {
    napi_throw_type_error(env, "LORATUNE_NATIVE", "setGemmKernel: argument kernel must be a string");
    return nullptr;
  }
  std::string name(buf, len);
  Isa want;
  if (name == "auto") want = best_isa();
  else if (name == "avx512") want = Isa::Avx512;
  else if (name == "avx2-fma") want = Isa::Avx2;
  else if (name == "portable") want = Isa::Portable;
  else {
    napi_throw_error(env, "LORATUNE_NATIVE",
                     ("setGemmKernel: unknown kernel \"" + name + "\" (avx512, avx2-fma, portable, auto)").c_str());
    return nullptr;
  }
  if (!supported(want)) {
    napi_throw_error(env, "LORATUNE_NATIVE",
                     ("setGemmKernel: this CPU cannot run the " + name + " kernel").c_str());
    return nullptr;
  }
  current = want;
  return nullptr;
}

}  // namespace

void register_gemm(napi_env env, napi_value exports) {
  define(env, exports, "gemm", gemm);
  define(env, exports, "gemmKernel", gemm_kernel);
  napi_value fn;
  napi_create_function(env, "setGemmKernel", NAPI_AUTO_LENGTH, set_gemm_kernel, nullptr, &fn);
  napi_set_named_property(env, exports, "setGemmKernel", fn);
}

}  // namespace lt
