// A fixed pool of worker threads for data-parallel loops. Workers spin briefly before sleeping,
// because waking a sleeping thread costs 80-250 us on a busy machine (DESIGN.md).
#pragma once
#include <cstddef>
#include <functional>

namespace lt {

int num_threads();
void set_num_threads(int n);  // n >= 1; defaults to the number of cores

// Calls fn(begin, end) over [0, n) in chunks of `grain` items, on the pool and the calling thread.
// Runs inline when there is a single chunk or when called from inside another parallel_for.
void parallel_for(size_t n, size_t grain, const std::function<void(size_t, size_t)>& fn);

}  // namespace lt
