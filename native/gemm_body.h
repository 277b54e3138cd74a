// The GEMM engine for one instruction set. gemm.cc includes this file once per target, inside
// `namespace lt::gemm_<isa>` and a `#pragma GCC target` region, after defining:
//   VW           floats per vector register (8 for 256-bit, 16 for 512-bit)
//   MR, NR       the register block of the micro-kernel (NR a multiple of VW and of 8)
//   KC, MC, NT   cache blocks: KC rows of op(B) per packed panel, MC rows of C per tile, NT columns
//   NC, MB       columns of op(B) packed at once, rows of op(A) packed at once
//   LT_AVX2_INTRINSICS  1 when AVX2 intrinsics may be used (transposes while packing, bf16 loads)
//   LT_AVX512_INTRINSICS  1 when AVX-512F intrinsics may be used (bf16 loads)
// All maths is written with GCC vector extensions, so the same text becomes AVX-512, AVX2+FMA or
// portable code; -ffp-contract=fast turns `acc += a * b` into FMA where the target has it.
//
// Notation: C [M,N] = alpha * op(A) [M,K] · op(B) [K,N] + beta * C.

typedef float vf __attribute__((vector_size(VW * 4), may_alias));
typedef float vfu __attribute__((vector_size(VW * 4), may_alias, aligned(4)));  // unaligned
typedef uint16_t vhu __attribute__((vector_size(VW * 2), may_alias, aligned(2)));
typedef uint32_t vu __attribute__((vector_size(VW * 4)));
typedef uint32_t vuu __attribute__((vector_size(VW * 4), may_alias, aligned(2)));  // unaligned

constexpr int NV = NR / VW;  // vectors per row of the register block
static_assert(NR % VW == 0 && NR % 8 == 0 && MC % MR == 0 && NT % NR == 0 && MB % MR == 0 && NC % NR == 0,
              "tiles and packed blocks must be whole register blocks");

static inline vf splat(float x) { return x - (vf){}; }
static inline vf loadu(const float* p) { return *reinterpret_cast<const vfu*>(p); }
static inline void storeu(float* p, vf v) { *reinterpret_cast<vfu*>(p) = v; }
// bf16 is the upper half of a float32: widen to 32 bits and shift into place. (GCC splits
// __builtin_convertvector into halves on x86, so the x86 targets spell out the instruction.)
static inline vf loadu_bf16(const uint16_t* p) {
#if LT_AVX512_INTRINSICS
  __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return reinterpret_cast<vf>(_mm512_slli_epi32(w, 16));
#elif LT_AVX2_INTRINSICS
  __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return reinterpret_cast<vf>(_mm256_slli_epi32(w, 16));
#else
  vu w = __builtin_convertvector(*reinterpret_cast<const vhu*>(p), vu) << 16;
  return reinterpret_cast<vf&>(w);
#endif
}
static inline float hsum(vf v) {
  float s = 0;
  for (int i = 0; i < VW; ++i) s += v[i];
  return s;
}

#if LT_AVX2_INTRINSICS
// In-register 8x8 transpose: r[i][j] becomes r[j][i].
static inline void transpose8(__m256 r[8]) {
  __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
  r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
  r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
  r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
  r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
  r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
  r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
  r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}
// [sum of v[0]'s lanes, ..., sum of v[7]'s lanes]: a tree of horizontal adds shared by the eight
// vectors, instead of eight lane-by-lane sums (a GEMV row of 640 weights spent 15% of its time there).
static inline __m256 hsum8(const vf* v) {
  __m256 h[8];
  for (int b = 0; b < 8; ++b) {
#if LT_AVX512_INTRINSICS
    const __m512 z = reinterpret_cast<const __m512&>(v[b]);
    h[b] = _mm256_add_ps(_mm512_castps512_ps256(z), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(z), 1)));
#else
    h[b] = reinterpret_cast<const __m256&>(v[b]);
#endif
  }
  const __m256 s0 = _mm256_hadd_ps(_mm256_hadd_ps(h[0], h[1]), _mm256_hadd_ps(h[2], h[3]));
  const __m256 s1 = _mm256_hadd_ps(_mm256_hadd_ps(h[4], h[5]), _mm256_hadd_ps(h[6], h[7]));
  // s0 = [sums of lanes 0-3 of v0..v3 | lanes 4-7 of v0..v3], s1 the same for v4..v7.
  return _mm256_add_ps(_mm256_permute2f128_ps(s0, s1, 0x20), _mm256_permute2f128_ps(s0, s1, 0x31));
}
static inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
static inline __m256 load8(const uint16_t* p) {
  __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
#endif

static inline float to_f32(float x) { return x; }
static inline float to_f32(uint16_t h) {
  uint32_t w = uint32_t(h) << 16;
  float f;
  __builtin_memcpy(&f, &w, 4);
  return f;
}

// ---- packing -------------------------------------------------------------------------------
// Packed A: panels of MR rows; panel p holds op(A)[i0+p*MR+r][k0+k] at Ap[p*MR*kc + k*MR + r].
// Packed B: panels of NR columns; panel p holds op(B)[k0+k][j0+p*NR+c] at Bp[p*NR*kc + k*NR + c].
// Rows/columns past the matrix are zero, so the micro-kernel never needs a bounds check on k.

// Packs rows [i, i_end) of op(A) (i a multiple of MR from the block start) into consecutive panels.
static void pack_a(const Problem& P, long i, long i_end, long k0, long kc, float* __restrict d) {
  if (P.transA) {
    // op(A)[i][k] = A[k*lda + i]: walk A's rows once, scattering MR values per panel. (Walking
    // panel by panel would stride down lda-spaced rows once per panel, thrashing cache sets.)
    for (long k = 0; k < kc; ++k) {
      const float* s = P.A + (k0 + k) * P.lda;
      for (long p = i; p < i_end; p += MR) {
        float* o = d + (p - i) * kc + k * MR;
        const long rows = std::min<long>(MR, P.M - p);
        for (long r = 0; r < rows; ++r) o[r] = s[p + r];
        for (long r = rows; r < MR; ++r) o[r] = 0;
      }
    }
    return;
  }
  // op(A)[i][k] = A[i*lda + k]: MR rows per panel, each read contiguously along k.
  for (long p = i; p < i_end; p += MR, d += MR * kc) {
    const long rows = std::min<long>(MR, P.M - p);
    const float* s[MR];
    for (long r = 0; r < MR; ++r) s[r] = P.A + (p + std::min(r, rows - 1)) * P.lda + k0;
    for (long k = 0; k < kc; ++k)
      for (long r = 0; r < MR; ++r) d[k * MR + r] = r < rows ? s[r][k] : 0.0f;
  }
}

// Packs columns [j, j_end) of op(B) (j a multiple of NR from the block start) into panels.
template <typename T>
static void pack_b(const Problem& P, const T* B, long j, long j_end, long k0, long kc, float* __restrict d) {
  if (!P.transB) {
    // op(B)[k][j] = B[k*ldb + j]: walk each row of B once across all panels of the range.
    for (long k = 0; k < kc; ++k) {
      const T* s = B + (k0 + k) * P.ldb;
      for (long p = j; p < j_end; p += NR) {
        float* o = d + (p - j) * kc + k * NR;
        const long cols = std::min<long>(NR, P.N - p);
        if (cols == NR) {
          for (int v = 0; v < NV; ++v) {
            vf x;
            if constexpr (sizeof(T) == 2) x = loadu_bf16(reinterpret_cast<const uint16_t*>(s) + p + v * VW);
            else x = loadu(reinterpret_cast<const float*>(s) + p + v * VW);
            *reinterpret_cast<vf*>(o + v * VW) = x;
          }
        } else {
          for (long c = 0; c < cols; ++c) o[c] = to_f32(s[p + c]);
          for (long c = cols; c < NR; ++c) o[c] = 0;
        }
      }
    }
    return;
  }
  // transB: op(B)[k][j] = B[j*ldb + k]: NR stored rows per panel, each contiguous along k, transposed
  // 8x8 at a time in registers.
  for (long p = j; p < j_end; p += NR, d += NR * kc) {
    const long cols = std::min<long>(NR, P.N - p);
    long k = 0;
#if LT_AVX2_INTRINSICS
    if (cols == NR) {
      for (; k + 8 <= kc; k += 8)
        for (long g = 0; g < NR; g += 8) {
          __m256 r[8];
          for (int c = 0; c < 8; ++c) r[c] = load8(B + (p + g + c) * P.ldb + k0 + k);
          transpose8(r);
          for (int kk = 0; kk < 8; ++kk) _mm256_store_ps(d + (k + kk) * NR + g, r[kk]);
        }
    }
#endif
    for (; k < kc; ++k) {
      float* o = d + k * NR;
      for (long c = 0; c < cols; ++c) o[c] = to_f32(B[(p + c) * P.ldb + k0 + k]);
      for (long c = cols; c < NR; ++c) o[c] = 0;
    }
  }
}

// ---- micro-kernel --------------------------------------------------------------------------
// C[0:mr, 0:nr] = alpha * Ap·Bp + beta * C (C not read when beta == 0), an R x NR block held in
// registers; Ap and Bp are one packed panel each. R = MR but for the last panel of a few rows.
template <int R>
__attribute__((noinline)) static void kernel(long kc, const float* __restrict Ap, const float* __restrict Bp,
                                             float* C, long ldc, long mr, long nr, float alpha, float beta) {
  for (long r = 0; r < mr; ++r) __builtin_prefetch(C + r * ldc, 1);  // needed after the k loop
  vf acc[R][NV] = {};
  for (long k = 0; k < kc; ++k) {
    vf b[NV];
    for (int v = 0; v < NV; ++v) b[v] = *reinterpret_cast<const vf*>(Bp + v * VW);
    for (int r = 0; r < R; ++r) {
      vf a = splat(Ap[r]);
      for (int v = 0; v < NV; ++v) acc[r][v] += a * b[v];
    }
    Ap += MR;
    Bp += NR;
  }
  vf va = splat(alpha), vb = splat(beta);
  if (mr == R && nr == NR) {
    for (int r = 0; r < R; ++r)
      for (int v = 0; v < NV; ++v) {
        float* c = C + r * ldc + v * VW;
        storeu(c, beta == 0 ? va * acc[r][v] : va * acc[r][v] + vb * loadu(c));
      }
    return;
  }
  // Edge tile: only the valid part of C is touched.
  alignas(64) float t[R][NR];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) *reinterpret_cast<vf*>(&t[r][v * VW]) = acc[r][v];
  for (long r = 0; r < mr; ++r)
    for (long c = 0; c < nr; ++c) {
      float* o = C + r * ldc + c;
      *o = beta == 0 ? alpha * t[r][c] : alpha * t[r][c] + beta * *o;
    }
}

// The micro-kernel for mr <= MR valid rows: a last panel of a few rows (a 25-row product has 12 +
// 12 + 1) runs a shorter kernel instead of multiplying MR rows, most of them zero.
static void kernel_rows(long kc, const float* Ap, const float* Bp, float* C, long ldc, long mr, long nr,
                        float alpha, float beta) {
  if (MR > 4 && mr <= 4) kernel<4>(kc, Ap, Bp, C, ldc, mr, nr, alpha, beta);
  else if (MR > 8 && mr <= 8) kernel<8>(kc, Ap, Bp, C, ldc, mr, nr, alpha, beta);
  else kernel<MR>(kc, Ap, Bp, C, ldc, mr, nr, alpha, beta);
}

// ---- packed GEMM ---------------------------------------------------------------------------
// Blocks (BLIS order, outermost first): up to KC rows of K; MB rows of op(A), packed once per K
// block; NC columns of op(B), packed once per (K, MB) block; then tiles of MC x NT of C, each
// sweeping NR-wide B panels against the tile's MR-high A panels (the A tile stays in L2). A long
// KC measured best here: C is read and written once per K block, and threads meet once per step.
//
// One parallel pass per (KC, MB, NC) step computes that step's tiles and packs the next step's
// blocks into the other half of double buffers, so threads meet once per step, not twice.
struct Step {
  long k0, kc, i0, mb, j0, nc;
  bool new_a;  // first step of its (k0, i0) block: A must be packed for it
};

static void gemm_packed(const Problem& P, bool par) {
  const long M = P.M, N = P.N, K = P.K;
  // K splits into equal blocks of at most KC: one pass over C when K <= KC, no thin last block.
  const long nk = (K + KC - 1) / KC;
  std::vector<Step> steps;
  for (long b = 0; b < nk; ++b) {
    const long k0 = K * b / nk, kc = K * (b + 1) / nk - k0;
    for (long i0 = 0; i0 < M; i0 += MB)
      for (long j0 = 0; j0 < N; j0 += NC)
        steps.push_back({k0, kc, i0, std::min(MB, M - i0), j0, std::min(NC, N - j0), j0 == 0});
  }
  const long kc_max = (K + nk - 1) / nk;
  const size_t a_size = size_t((std::min(M, MB) + MR - 1) / MR) * MR * kc_max;
  const size_t b_size = size_t((std::min(N, NC) + NR - 1) / NR) * NR * kc_max;
  float* Ap[2] = {workspace(0, a_size), steps.size() > 1 ? workspace(4, a_size) : nullptr};
  float* Bp[2] = {workspace(1, b_size), steps.size() > 1 ? workspace(5, b_size) : nullptr};
  // Which half of the A buffer each step reads: it flips with every new A block.
  std::vector<int> a_half(steps.size());
  for (size_t s = 0, h = 1; s < steps.size(); ++s) a_half[s] = int(h = steps[s].new_a ? 1 - h : h);

  // Packing tasks of a step: groups of panels, so that each task reads whole cache lines.
  constexpr long GA = 8, GB = 256 / NR;
  auto pack_tasks = [&](size_t s) -> long {
    const Step& st = steps[s];
    const long ta = st.new_a ? (st.mb + GA * MR - 1) / (GA * MR) : 0;
    return ta + (st.nc + GB * NR - 1) / (GB * NR);
  };
  auto pack = [&](size_t s, long t) {
    const Step& st = steps[s];
    const long ta = st.new_a ? (st.mb + GA * MR - 1) / (GA * MR) : 0;
    if (t < ta) {
      const long i = t * GA * MR;
      pack_a(P, st.i0 + i, st.i0 + std::min(st.mb, i + GA * MR), st.k0, st.kc, Ap[a_half[s]] + i * st.kc);
    } else {
      const long j = (t - ta) * GB * NR, je = st.j0 + std::min(st.nc, j + GB * NR);
      float* d = Bp[s % 2] + j * st.kc;
      if (P.Bh) pack_b(P, P.Bh, st.j0 + j, je, st.k0, st.kc, d);
      else pack_b(P, P.Bf, st.j0 + j, je, st.k0, st.kc, d);
    }
  };
  auto tiles = [&](size_t s) -> long {
    return (steps[s].mb + MC - 1) / MC * ((steps[s].nc + NT - 1) / NT);
  };
  auto compute = [&](size_t s, long t) {
    const Step& st = steps[s];
    // Tiles go down a column of C first: consecutive tiles share the B tile, which stays in L2.
    const long tm = (st.mb + MC - 1) / MC;
    const long ib = t % tm * MC, jb = t / tm * NT;
    const long ie = std::min(st.mb, ib + MC), je = std::min(st.nc, jb + NT);
    const float beta = st.k0 == 0 ? P.beta : 1.0f;  // later KC blocks accumulate onto the first
    const float* A = Ap[a_half[s]];
    const float* B = Bp[s % 2];
    for (long j = jb; j < je; j += NR)
      for (long i = ib; i < ie; i += MR)
        kernel_rows(st.kc, A + i * st.kc, B + j * st.kc, P.C + (st.i0 + i) * P.ldc + st.j0 + j, P.ldc,
               std::min<long>(MR, ie - i), std::min<long>(NR, je - j), P.alpha, beta);
  };

  run(size_t(pack_tasks(0)), 1, par, [&](size_t b, size_t e) {
    for (size_t t = b; t < e; ++t) pack(0, long(t));
  });
  for (size_t s = 0; s < steps.size(); ++s) {
    // This step's tiles first; the next step's packing fills in as threads run out of tiles.
    const long tc = tiles(s), tp = s + 1 < steps.size() ? pack_tasks(s + 1) : 0;
    run(size_t(tc + tp), 1, par, [&](size_t b, size_t e) {
      for (long t = long(b); t < long(e); ++t) {
        if (t < tc) compute(s, t);
        else pack(s + 1, t - tc);
      }
    });
  }
}

// ---- moderate M: one panel of op(B) at a time ---------------------------------------------
// With up to a few hundred rows in op(A), gemm_packed's big packed block of op(B) (NC x KC floats,
// megabytes) is written to memory and read back for too few rows to pay for it. Here each thread
// packs one NR-wide panel of op(B) into a buffer that stays in its L2 and runs every row of op(A)
// against it, so op(B) is read from memory once and never written back. op(A) is packed per K
// block of KP, which keeps it in L2 beside the panel for the row counts this path serves.
// panel_blocks does the product block by block of K; gemm_panels (below) also splits a tall K.
static void panel_blocks(const Problem& P, bool par) {
  const long M = P.M, N = P.N, K = P.K;
  const long nk = (K + KP - 1) / KP, kc_max = (K + nk - 1) / nk;
  const long panels_a = (M + MR - 1) / MR, panels_b = (N + NR - 1) / NR;
  float* Ap = workspace(0, size_t(panels_a) * MR * kc_max);
  for (long b = 0; b < nk; ++b) {
    const long k0 = K * b / nk, kc = K * (b + 1) / nk - k0;
    const float beta = b == 0 ? P.beta : 1.0f;  // later K blocks accumulate onto the first
    run(size_t(panels_a), 1, par, [&](size_t s, size_t e) {
      pack_a(P, long(s) * MR, std::min(M, long(e) * MR), k0, kc, Ap + s * MR * kc);
    });
    run(size_t(panels_b), 1, par, [&](size_t s, size_t e) {
      float* Bp = workspace(1, size_t(NR) * kc_max);  // per thread
      for (long p = long(s); p < long(e); ++p) {
        const long j = p * NR, nr = std::min<long>(NR, N - j);
        if (P.Bh) pack_b(P, P.Bh, j, j + nr, k0, kc, Bp);
        else pack_b(P, P.Bf, j, j + nr, k0, kc, Bp);
        for (long i = 0; i < M; i += MR)
          kernel_rows(kc, Ap + i * kc, Bp, P.C + i * P.ldc + j, P.ldc, std::min<long>(MR, M - i), nr, P.alpha, beta);
      }
    });
  }
}

// A tall K (the LM head's backward, K = vocabulary) would cost two thread meetings per K block;
// instead K is cut into SPLIT parts, each summed into a C of its own by whichever thread is free,
// and the parts are added up in order at the end. The cut does not depend on the thread count, so
// neither do the results. (Up to SPLIT threads share such a product.)
constexpr long SPLIT = 8;

static void gemm_panels_split_k(const Problem& P, bool par) {
  const long M = P.M, N = P.N, K = P.K;
  float* partial = workspace(6, size_t(SPLIT - 1) * size_t(M) * size_t(N));
  run(size_t(SPLIT), 1, par, [&](size_t b, size_t e) {
    for (long t = long(b); t < long(e); ++t) {
      const long k0 = K * t / SPLIT;
      Problem Q = P;
      Q.K = K * (t + 1) / SPLIT - k0;
      Q.A += P.transA ? k0 * P.lda : k0;
      if (P.Bh) Q.Bh += P.transB ? k0 : k0 * P.ldb;
      else Q.Bf += P.transB ? k0 : k0 * P.ldb;
      if (t > 0) {
        Q.C = partial + (t - 1) * M * N;
        Q.ldc = N;
        Q.beta = 0;
      }
      panel_blocks(Q, false);
    }
  });
  for (long t = 1; t < SPLIT; ++t)
    for (long i = 0; i < M; ++i)
      for (long j = 0; j < N; ++j) P.C[i * P.ldc + j] += partial[((t - 1) * M + i) * N + j];
}

static void gemm_panels(const Problem& P, bool par) {
  if ((P.K + KP - 1) / KP >= 2 * SPLIT) gemm_panels_split_k(P, par);
  else panel_blocks(P, par);
}

// ---- small M: stream the big operand once ----------------------------------------------------
// With at most 8 rows in the small operand, packing costs as much as the product; instead each
// element of the big operand W is read once from memory and used against all rows held in cache.
// S.a: the small operand, m rows of K floats. W: op(W) is [K, n]. Output element (i, j) at
// C[i*rs + j*cs].

// W stored [n, K] (rows along k): dot products of W's rows with the small rows. For bf16 W, one
// 32-bit lane holds two neighbours along k: (w << 16) is the even one and (w & 0xffff0000) the odd
// one, two integer ops per 2*VW weights; `ae` holds the small rows with each block of 2*VW values
// reordered as [evens, odds] to match.
template <int m, int JB, int U, typename T>
static void small_rows(const Small& S, const float* ae, const T* W, long j0, long j1) {
  // JB rows of W at a time, each with U accumulators over k.
  constexpr bool bf16 = sizeof(T) == 2;
  constexpr long step = bf16 ? 2 * VW : VW;
  const long K = S.K, Kv = K / step * step, Ku = K / (step * U) * (step * U);
  // acc[i * stride] += a_i · w over one block of `step` values of k.
  auto block = [&](vf* acc, const T* w, long k, int stride) {
    if constexpr (bf16) {
      vu u = *reinterpret_cast<const vuu*>(w + k);
      vu lo = u << 16, hi = u & 0xffff0000u;
      for (int i = 0; i < m; ++i)
        acc[i * stride] += loadu(ae + i * K + k) * reinterpret_cast<vf&>(lo) +
                           loadu(ae + i * K + k + VW) * reinterpret_cast<vf&>(hi);
    } else {
      vf x = loadu(w + k);
      for (int i = 0; i < m; ++i) acc[i * stride] += loadu(S.a + i * K + k) * x;
    }
  };
  auto rows = [&](long j, auto nb) {
    constexpr int B = decltype(nb)::value;
    vf acc[m][B][U] = {};
    const T* w[B];
    for (int b = 0; b < B; ++b) w[b] = W + (j + b) * S.ldw;
    long k = 0;
    for (; k < Ku; k += step * U)
      for (int b = 0; b < B; ++b)
        for (int u = 0; u < U; ++u) block(&acc[0][b][u], w[b], k + u * step, B * U);
    for (; k < Kv; k += step)
      for (int b = 0; b < B; ++b) block(&acc[0][b][0], w[b], k, B * U);
    for (int i = 0; i < m; ++i) {
      vf t[B];
      for (int b = 0; b < B; ++b) {
        t[b] = acc[i][b][0];
        for (int u = 1; u < U; ++u) t[b] += acc[i][b][u];
      }
      float sums[B];
#if LT_AVX2_INTRINSICS
      if constexpr (B == 8) _mm256_storeu_ps(sums, hsum8(t));
      else
#endif
        for (int b = 0; b < B; ++b) sums[b] = hsum(t[b]);
      for (int b = 0; b < B; ++b) {
        float sum = sums[b];
        for (long kk = Kv; kk < K; ++kk) sum += S.a[i * K + kk] * to_f32(w[b][kk]);
        float* o = S.C + i * S.rs + (j + b) * S.cs;
        *o = S.beta == 0 ? S.alpha * sum : S.alpha * sum + S.beta * *o;
      }
    }
  };
  long j = j0;
  for (; j + JB <= j1; j += JB) rows(j, std::integral_constant<int, JB>());
  for (; j < j1; ++j) rows(j, std::integral_constant<int, 1>());
}

template <int m, typename T>
static void small_cols(const Small& S, const T* W, long j0, long j1) {
  constexpr long JW = 512;
  alignas(64) float acc[m][JW];
  const long K = S.K;
  for (long jb = j0; jb < j1; jb += JW) {
    const long w = std::min(JW, j1 - jb), wv = w / VW * VW;
    for (int i = 0; i < m; ++i)
      for (long c = 0; c < w; ++c) acc[i][c] = 0;
    auto load = [&](long k, long c) -> vf {
      if constexpr (sizeof(T) == 2) return loadu_bf16(reinterpret_cast<const uint16_t*>(W) + k * S.ldw + jb + c);
      else return loadu(reinterpret_cast<const float*>(W) + k * S.ldw + jb + c);
    };
    long k = 0;
    for (; k + 4 <= K; k += 4) {
      vf a[m][4];
      for (int i = 0; i < m; ++i)
        for (int q = 0; q < 4; ++q) a[i][q] = splat(S.a[i * K + k + q]);
      for (long c = 0; c < wv; c += VW) {
        vf x0 = load(k, c), x1 = load(k + 1, c), x2 = load(k + 2, c), x3 = load(k + 3, c);
        for (int i = 0; i < m; ++i) {
          vf* o = reinterpret_cast<vf*>(&acc[i][c]);
          *o += a[i][0] * x0 + a[i][1] * x1 + a[i][2] * x2 + a[i][3] * x3;
        }
      }
    }
    for (; k < K; ++k)
      for (int i = 0; i < m; ++i) {
        vf a = splat(S.a[i * K + k]);
        for (long c = 0; c < wv; c += VW) *reinterpret_cast<vf*>(&acc[i][c]) += a * load(k, c);
      }
    for (long c = wv; c < w; ++c)  // columns past the last full vector
      for (int i = 0; i < m; ++i) {
        float s = 0;
        for (long kk = 0; kk < K; ++kk) s += S.a[i * K + kk] * to_f32(W[kk * S.ldw + jb + c]);
        acc[i][c] = s;
      }
    for (int i = 0; i < m; ++i)
      for (long c = 0; c < w; ++c) {
        float* o = S.C + i * S.rs + (jb + c) * S.cs;
        *o = S.beta == 0 ? S.alpha * acc[i][c] : S.alpha * acc[i][c] + S.beta * *o;
      }
  }
}

template <int m, typename T>
static void small_dispatch(const Small& S, const T* W, bool par) {
  const float* ae = S.a;
  if (sizeof(T) == 2 && S.w_rows_along_k) {  // the [evens, odds] order small_rows reads bf16 with
    float* p = workspace(3, size_t(m) * size_t(S.K));
    const long K = S.K, Kv = K / (2 * VW) * (2 * VW);
    for (int i = 0; i < m; ++i)
      for (long k = 0; k < Kv; k += 2 * VW)
        for (long t = 0; t < VW; ++t) {
          p[i * K + k + t] = S.a[i * K + k + 2 * t];
          p[i * K + k + VW + t] = S.a[i * K + k + 2 * t + 1];
        }
    ae = p;
  }
  // Chunks of columns: a few per thread for balance, whole JW/JB groups where possible.
  const long n = S.N, per = S.w_rows_along_k ? 16 : 512;
  const long grain = std::max<long>(per, ((n + 7) / 8 + per - 1) / per * per);
  run(size_t(n), size_t(grain), par, [&](size_t b, size_t e) {
    // Up to eight rows of W streamed together, m x JB x U accumulators staying within the registers;
    // for one row, 8 x 2 of them measured 15% faster than 4 x 1 at K = 640 (less per-row overhead).
    if (S.w_rows_along_k) small_rows<m, (m == 1 ? 8 : m <= 2 ? 4 : m <= 4 ? 2 : 1), (m == 1 ? 2 : 1)>(S, ae, W, long(b), long(e));
    else small_cols<m>(S, W, long(b), long(e));
  });
}

static void gemm_small(const Small& S, bool par) {
  switch (S.M) {
#define LT_CASE(m)                                                                 \
  case m:                                                                          \
    if (S.Wh) small_dispatch<m>(S, S.Wh, par); else small_dispatch<m>(S, S.Wf, par); \
    break;
    LT_CASE(1)
    LT_CASE(2)
    LT_CASE(3)
    LT_CASE(4)
    LT_CASE(5)
    LT_CASE(6)
    LT_CASE(7)
    LT_CASE(8)
#undef LT_CASE
  }
}
