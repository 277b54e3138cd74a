#include "threadpool.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <condition_variable>
#include <exception>
#include <utility>
#include <mutex>
#include <thread>
#include <vector>

namespace lt {
namespace {

thread_local bool inside_pool = false;

class Pool {
 public:
  explicit Pool(int n) { resize(n); }
  ~Pool() { stop_all(); }

  int size() const { return threads_; }

  void resize(int n) {
    n = std::max(1, n);
    if (n == threads_) return;
    stop_all();
    threads_ = n;
    stopping_ = false;
    // A worker must start from the generation current now: a loop posted before the thread
    // first runs would otherwise be missed, and run() would wait for it forever.
    unsigned start = generation_.load();
    for (int i = 1; i < n; ++i) workers_.emplace_back([this, start] { work(start); });
  }

  // Posts a loop and works on it too; returns once every chunk is done. Late workers are not
  // waited for: on a busy machine one may wake only after the others have finished the loop.
  void run(size_t chunks, size_t n, size_t grain, const std::function<void(size_t, size_t)>& fn) {
    uint64_t gen;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      fn_ = &fn;
      n_ = n;
      grain_ = grain;
      chunks_.store(chunks, std::memory_order_relaxed);
      done_.store(0, std::memory_order_relaxed);
      gen = (next_.load(std::memory_order_relaxed) >> 32) + 1;
      next_.store(gen << 32, std::memory_order_release);  // publishes the loop to drain()
      generation_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
    inside_pool = true;
    drain();
    inside_pool = false;
    while (done_.load(std::memory_order_acquire) != chunks) std::this_thread::yield();
    if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
  }

 private:
  // Claims and runs chunks of the loop posted last. next_ holds the loop's number (high 32 bits)
  // and the next chunk (low 32 bits), so a thread that arrives after the loop ended claims nothing
  // from the one after it. An exception gives up the unclaimed chunks and is rethrown by run(),
  // so a failing kernel never terminates the process.
  void drain() {
    uint64_t v = next_.load(std::memory_order_acquire);
    const uint64_t gen = v >> 32;
    const size_t chunks = chunks_.load(std::memory_order_relaxed);  // checked against gen by the claim
    for (;;) {
      if ((v >> 32) != gen) return;
      size_t c = static_cast<size_t>(v & 0xffffffffu);
      if (c >= chunks) return;
      if (!next_.compare_exchange_weak(v, v + 1, std::memory_order_acq_rel, std::memory_order_acquire)) continue;
      size_t begin = c * grain_;
      size_t finished = 1;
      try {
        (*fn_)(begin, std::min(n_, begin + grain_));
      } catch (...) {
        {
          std::lock_guard<std::mutex> lock(error_mutex_);
          if (!error_) error_ = std::current_exception();
        }
        uint64_t w = next_.load(std::memory_order_acquire);
        while ((w & 0xffffffffu) < chunks &&
               !next_.compare_exchange_weak(w, (gen << 32) | chunks, std::memory_order_acq_rel, std::memory_order_acquire)) {
        }
        if ((w & 0xffffffffu) < chunks) finished += chunks - static_cast<size_t>(w & 0xffffffffu);
      }
      done_.fetch_add(finished, std::memory_order_release);
      v = next_.load(std::memory_order_acquire);
    }
  }

  void work(unsigned seen) {
    inside_pool = true;
    for (;;) {
      // Spin ~50-100 us for the next loop before sleeping on the condition variable.
      bool got = false;
      for (int spin = 0; spin < 20000; ++spin) {
        if (generation_.load(std::memory_order_acquire) != seen || stopping_) { got = true; break; }
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
      }
      if (!got) {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return generation_.load() != seen || stopping_; });
      }
      if (stopping_) return;
      seen = generation_.load(std::memory_order_acquire);
      drain();
    }
  }

  void stop_all() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
  }

  int threads_ = 0;
  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::atomic<unsigned> generation_{0};
  std::atomic<uint64_t> next_{0};
  std::atomic<size_t> done_{0};
  std::atomic<bool> stopping_{false};
  const std::function<void(size_t, size_t)>* fn_ = nullptr;
  std::mutex error_mutex_;
  std::exception_ptr error_;
  size_t n_ = 0, grain_ = 1;
  std::atomic<size_t> chunks_{0};
};

Pool& pool() {
  static Pool p(std::max(1u, std::thread::hardware_concurrency()));
  return p;
}

}  // namespace

int num_threads() { return pool().size(); }

void set_num_threads(int n) { pool().resize(n); }

void parallel_for(size_t n, size_t grain, const std::function<void(size_t, size_t)>& fn) {
  if (n == 0) return;
  grain = std::max<size_t>(1, grain);
  size_t chunks = (n + grain - 1) / grain;
  if (chunks == 1 || inside_pool || pool().size() == 1) {
    fn(0, n);
    return;
  }
  pool().run(chunks, n, grain, fn);
}

}  // namespace lt
