// The loratune native addon: every loop over tensor elements lives here. Each kernel file
// registers its functions; this file adds memory allocation and thread control.
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include "napi_util.h"
#include "threadpool.h"

namespace lt {
void register_gemm(napi_env env, napi_value exports);
void register_attention(napi_env env, napi_value exports);
void register_ops(napi_env env, napi_value exports);

namespace {

void free_aligned(napi_env, void* data, void*) { std::free(data); }

// alloc(bytes): a zero-filled ArrayBuffer in 64-byte aligned native memory.
void alloc(Args& a) {
  int64_t bytes = a.integer(0, "bytes");
  size_t rounded = (static_cast<size_t>(bytes) + 63) / 64 * 64;
  if (rounded == 0) rounded = 64;
  void* p = std::aligned_alloc(64, rounded);
  check(p != nullptr, "cannot allocate " + std::to_string(bytes) + " bytes");
  std::memset(p, 0, rounded);
  napi_value buf;
  if (napi_create_external_arraybuffer(a.env, p, static_cast<size_t>(bytes), free_aligned, nullptr, &buf) !=
      napi_ok) {
    std::free(p);
    throw Error("cannot wrap native memory in an ArrayBuffer");
  }
  napi_adjust_external_memory(a.env, static_cast<int64_t>(rounded), nullptr);
  a.result = buf;
}

void get_num_threads(Args& a) { napi_create_int32(a.env, num_threads(), &a.result); }

void set_threads(Args& a) {
  int64_t n = a.integer(0, "threads");
  check(n >= 1 && n <= 256, "threads must be between 1 and 256");
  set_num_threads(static_cast<int>(n));
}

}  // namespace
}  // namespace lt

static napi_value init(napi_env env, napi_value exports) {
  lt::define(env, exports, "alloc", lt::alloc);
  lt::define(env, exports, "numThreads", lt::get_num_threads);
  lt::define(env, exports, "setNumThreads", lt::set_threads);
  lt::register_gemm(env, exports);
  lt::register_attention(env, exports);
  lt::register_ops(env, exports);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
