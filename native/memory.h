// Native memory for tensors. Freed blocks are kept by size class and handed out again, because
// fresh pages are expensive: first-touch page faults made a 1 MB GEMM output cost 7x the GEMM.
#pragma once
#include <cstddef>

namespace lt {

// A 64-byte aligned block of at least `bytes`; zero-filled when `zero`. Returns nullptr when out of memory.
void* allocate(size_t bytes, bool zero, size_t* capacity);
// Returns a block from allocate() with the capacity it reported, kept for reuse when `reuse` (and
// the cache has room), else given back to the system at once.
void release(void* p, size_t capacity, bool reuse = true);
// Bytes held in the free lists.
size_t cached_bytes();

}  // namespace lt
