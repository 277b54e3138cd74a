#include "memory.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <map>
#include <vector>

namespace lt {
namespace {

constexpr size_t kSmall = 64 * 1024;  // below this, malloc; above, mmap'd pages

// Sizes round up to a class: multiples of 64 bytes when small, else four classes per power of two
// (at most 25% slack), so that blocks of similar sizes are interchangeable.
size_t size_class(size_t bytes) {
  bytes = std::max<size_t>(bytes, 64);
  if (bytes <= kSmall) return (bytes + 63) / 64 * 64;
  size_t top = size_t(1) << (63 - __builtin_clzll(bytes - 1));  // largest power of two below bytes
  size_t step = top / 4;
  return (bytes + step - 1) / step * step;
}

struct Cache {
  std::mutex mutex;
  std::map<size_t, std::vector<void*>> free;  // by capacity, ordered for best-fit lookups
  size_t bytes = 0;
  size_t limit;
  Cache() {
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    limit = pages > 0 && page > 0 ? static_cast<size_t>(pages) * static_cast<size_t>(page) / 8 : (size_t(1) << 30);
  }
};

Cache& cache() {
  static Cache* c = new Cache();  // never destroyed: finalizers may run during shutdown
  return *c;
}

void* fresh(size_t capacity) {
  if (capacity <= kSmall) return std::aligned_alloc(64, capacity);
  // MAP_POPULATE maps every page in one call: faulting them in one by one was several times slower.
  void* p = mmap(nullptr, capacity, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  return p == MAP_FAILED ? nullptr : p;
}

void destroy(void* p, size_t capacity) {
  if (capacity <= kSmall) std::free(p);
  else munmap(p, capacity);
}

}  // namespace

void* allocate(size_t bytes, bool zero, size_t* capacity) {
  size_t cls = size_class(bytes);
  *capacity = cls;
  Cache& c = cache();
  {
    std::lock_guard<std::mutex> lock(c.mutex);
    // The smallest cached block of this class or up to twice its size: training on sequences of
    // varying length asks for ever new sizes, and fresh pages for each cost more than the slack
    // (seed-270m: 0.93 s per step against 0.44 s at one fixed length).
    for (auto it = c.free.lower_bound(cls); it != c.free.end() && it->first <= 2 * cls; ++it) {
      if (it->second.empty()) continue;
      void* p = it->second.back();
      it->second.pop_back();
      *capacity = it->first;
      c.bytes -= it->first;
      if (zero) std::memset(p, 0, bytes);
      return p;
    }
  }
  void* p = fresh(cls);
  if (p && zero && cls <= kSmall) std::memset(p, 0, cls);  // mmap'd pages are already zero
  return p;
}

void release(void* p, size_t capacity, bool reuse) {
  Cache& c = cache();
  if (reuse) {
    std::lock_guard<std::mutex> lock(c.mutex);
    if (c.bytes + capacity <= c.limit) {
      c.free[capacity].push_back(p);
      c.bytes += capacity;
      return;
    }
  }
  destroy(p, capacity);
}

size_t cached_bytes() {
  std::lock_guard<std::mutex> lock(cache().mutex);
  return cache().bytes;
}

}  // namespace lt
