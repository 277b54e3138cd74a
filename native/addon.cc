// The loratune native addon: every loop over tensor elements lives here. Each kernel file
// registers its functions; this file adds memory allocation and thread control.
#include <sys/mman.h>

#include <algorithm>
#include <cstdint>
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

// Large buffers come from mmap: page-aligned, zeroed lazily by the kernel, so a weight that is
// about to be overwritten is never touched twice. The hint records the size and which allocator.
constexpr size_t kMmapThreshold = 256 * 1024;

void free_native(napi_env env, void* data, void* hint) {
  auto tag = reinterpret_cast<uintptr_t>(hint);
  size_t size = tag & ~uintptr_t(1);
  if (tag & 1) munmap(data, size);
  else std::free(data);
  napi_adjust_external_memory(env, -static_cast<int64_t>(size), nullptr);
}

// alloc(bytes): a zero-filled ArrayBuffer in 64-byte aligned native memory.
void alloc(Args& a) {
  int64_t bytes = a.integer(0, "bytes");
  size_t rounded = std::max<size_t>(64, (static_cast<size_t>(bytes) + 63) / 64 * 64);
  bool use_mmap = rounded >= kMmapThreshold;
  void* p = nullptr;
  if (use_mmap) {
    p = mmap(nullptr, rounded, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) p = nullptr;
  } else {
    p = std::aligned_alloc(64, rounded);
    if (p) std::memset(p, 0, rounded);
  }
  check(p != nullptr, "cannot allocate " + std::to_string(bytes) + " bytes");
  auto tag = reinterpret_cast<void*>(static_cast<uintptr_t>(rounded) | (use_mmap ? 1 : 0));
  napi_value buf;
  if (napi_create_external_arraybuffer(a.env, p, static_cast<size_t>(bytes), free_native, tag, &buf) != napi_ok) {
    free_native(a.env, p, tag);
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
