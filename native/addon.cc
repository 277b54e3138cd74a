// The loratune native addon: every loop over tensor elements lives here. Each kernel file
// registers its functions; this file adds memory allocation and thread control.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <unordered_map>
#include <thread>

#include "memory.h"
#include "napi_util.h"
#include "threadpool.h"

namespace lt {
void register_gemm(napi_env env, napi_value exports);
void register_attention(napi_env env, napi_value exports);
void register_ops(napi_env env, napi_value exports);

namespace {

// Each alloc() buffer owns a Block until release() or garbage collection, whichever comes first,
// gives its memory back. Both happen on the JavaScript thread.
struct Block {
  void* data;
  size_t capacity;
  bool released = false;
};

// Bytes held by live blocks.
size_t live_bytes = 0;

std::unordered_map<void*, Block*>& live_blocks() {
  static auto* blocks = new std::unordered_map<void*, Block*>();
  return *blocks;
}

void give_back(napi_env env, Block* block, bool reuse = true) {
  if (block->released) return;
  block->released = true;
  live_blocks().erase(block->data);
  live_bytes -= block->capacity;
  release(block->data, block->capacity, reuse);
  napi_adjust_external_memory(env, -static_cast<int64_t>(block->capacity), nullptr);
}

void free_native(napi_env env, void*, void* hint) {
  auto* block = static_cast<Block*>(hint);
  give_back(env, block);
  delete block;
}

// alloc(bytes, zero = true): an ArrayBuffer over 64-byte aligned native memory, zero-filled
// unless zero is false (for outputs a kernel overwrites whole).
void alloc(Args& a) {
  int64_t bytes = a.integer(0, "bytes");
  bool zero = a.count() < 2 || a.boolean(1, "zero");
  size_t capacity = 0;
  void* p = allocate(static_cast<size_t>(bytes), zero, &capacity);
  check(p != nullptr, "cannot allocate " + std::to_string(bytes) + " bytes");
  auto* block = new Block{p, capacity};
  napi_value buf;
  if (napi_create_external_arraybuffer(a.env, p, static_cast<size_t>(bytes), free_native, block, &buf) != napi_ok) {
    release(p, capacity);
    delete block;
    throw Error("cannot wrap native memory in an ArrayBuffer");
  }
  live_blocks()[p] = block;
  live_bytes += capacity;
  napi_adjust_external_memory(a.env, static_cast<int64_t>(capacity), nullptr);
  a.result = buf;
}

// release(buffer, reuse = true): gives an alloc() buffer's memory back now instead of at garbage
// collection: kept for reuse, or returned to the system when `reuse` is false (memory of a size
// that will not be asked for again, such as a weight moved elsewhere). The buffer is detached
// first, so any later use sees an empty array, never reused memory.
void release_buffer(Args& a) {
  if (a.count() < 1) throw Error("argument buffer is missing");
  napi_value buf = a.value(0);
  bool is_ab = false;
  napi_is_arraybuffer(a.env, buf, &is_ab);
  check(is_ab, "argument buffer must be an ArrayBuffer");
  bool detached = false;
  napi_is_detached_arraybuffer(a.env, buf, &detached);
  if (detached) return;
  void* data = nullptr;
  size_t length = 0;
  napi_get_arraybuffer_info(a.env, buf, &data, &length);
  auto it = live_blocks().find(data);
  check(it != live_blocks().end(), "this ArrayBuffer was not made by alloc()");
  Block* block = it->second;
  const bool reuse = a.count() < 2 || a.boolean(1, "reuse");
  check(napi_detach_arraybuffer(a.env, buf) == napi_ok, "this ArrayBuffer cannot be released");
  give_back(a.env, block, reuse);
}

void cached_bytes_of(Args& a) { napi_create_double(a.env, static_cast<double>(cached_bytes()), &a.result); }

void live_bytes_of(Args& a) { napi_create_double(a.env, static_cast<double>(live_bytes), &a.result); }

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
  lt::define(env, exports, "release", lt::release_buffer);
  lt::define(env, exports, "cachedBytes", lt::cached_bytes_of);
  lt::define(env, exports, "liveBytes", lt::live_bytes_of);
  lt::define(env, exports, "numThreads", lt::get_num_threads);
  lt::define(env, exports, "setNumThreads", lt::set_threads);
  lt::register_gemm(env, exports);
  lt::register_attention(env, exports);
  lt::register_ops(env, exports);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
