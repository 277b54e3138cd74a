// The table of inner loops that ops.cc picks at run time (AVX2+FMA or portable); see ops_kernels.h.
#pragma once
#include <cstddef>
#include <cstdint>

namespace lt {

// AdamW per-step scalars, computed in double and rounded to float once.
struct AdamScalars {
  float lr, wd, b1, omb1, b2, omb2, eps;
  float alpha;      // Keras: lr * sqrt(1 - b2^t) / (1 - b1^t)
  float decay;      // Torch: 1 - lr * wd
  float step_size;  // Torch: lr / (1 - b1^t)
  float bc2sqrt;    // Torch: sqrt(1 - b2^t)
};

struct OpsTable {
  void (*ce_row)(float* x, size_t V, int32_t target, bool grad, float gscale, float* loss, int32_t* amax);
  float (*rms_fwd_row)(const float* x, const float* g, size_t dim, double eps, float* out);
  void (*rms_bwd_row)(const float* x, const float* g, float rstd, const float* dy, size_t dim, float* dx);
  void (*rms_dw_cols)(const float* x, const float* dy, const float* rstd, size_t T, size_t dim, size_t c0,
                      size_t c1, float* dw);
  void (*gated_fwd)(int kind, const float* gate, const float* up, float* out, size_t n);
  void (*gated_bwd)(int kind, const float* gate, const float* up, const float* dout, float* dgate, float* dup,
                    size_t n);
  void (*adamw_range)(int variant, const AdamScalars& s, float* p, const float* g, float* m, float* v, size_t n);
  void (*add_range)(const float* a, const float* b, float* out, size_t n);
  void (*axpy_range)(float alpha, const float* x, float* y, size_t n);
  void (*scale_range)(float alpha, float* x, size_t n);
  double (*sumsq_range)(const float* x, size_t n);
  void (*bf16_to_f32)(const uint16_t* src, float* dst, size_t n);
  void (*f32_to_bf16)(const float* src, uint16_t* dst, size_t n);
  void (*f16_to_f32)(const uint16_t* src, float* dst, size_t n);
  void (*f16_to_bf16)(const uint16_t* src, uint16_t* dst, size_t n);
  void (*emb_row_f32)(const float* src, float scale, float* out, size_t dim);
  void (*emb_row_bf16)(const uint16_t* src, float scale, float* out, size_t dim);
};

}  // namespace lt
