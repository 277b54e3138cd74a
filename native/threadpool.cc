#include "threadpool.h"

#include <algorithm>
#include <atomic>
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

  void run(size_t chunks, size_t n, size_t grain, const std::function<void(size_t, size_t)>& fn) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      fn_ = &fn;
      n_ = n;
      grain_ = grain;
      chunks_ = chunks;
      next_.store(0);
      active_.store(static_cast<int>(workers_.size()));
      generation_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
    inside_pool = true;
    drain();
    inside_pool = false;
    while (active_.load(std::memory_order_acquire) != 0) std::this_thread::yield();
    if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
  }

 private:
  // Runs chunks until none are left. An exception stops the loop for every thread and is
  // rethrown on the calling thread, so a failing kernel never terminates the process.
  void drain() {
    for (;;) {
      size_t c = next_.fetch_add(1);
      if (c >= chunks_) return;
      size_t begin = c * grain_;
      try {
        (*fn_)(begin, std::min(n_, begin + grain_));
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex_);
        if (!error_) error_ = std::current_exception();
        next_.store(chunks_);
      }
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
      active_.fetch_sub(1, std::memory_order_release);
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
  std::atomic<size_t> next_{0};
  std::atomic<int> active_{0};
  std::atomic<bool> stopping_{false};
  const std::function<void(size_t, size_t)>* fn_ = nullptr;
  std::mutex error_mutex_;
  std::exception_ptr error_;
  size_t n_ = 0, grain_ = 1, chunks_ = 0;
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
