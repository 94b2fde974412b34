#include "core/thread_pool.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <utility>

#include "core/error.h"

namespace ic {

namespace {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#else
  std::this_thread::yield();
#endif
}

// The futex directly: libstdc++ 12's atomic wait/notify missed wake-ups here (a worker slept
// through the destructor's notify_all).
static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t) && std::atomic<uint32_t>::is_always_lock_free);

void futex_wait(std::atomic<uint32_t>& word, uint32_t expected) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(&word), FUTEX_WAIT_PRIVATE, expected, nullptr, nullptr, 0);
}
void futex_wake_all(std::atomic<uint32_t>& word) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(&word), FUTEX_WAKE_PRIVATE, INT32_MAX, nullptr, nullptr, 0);
}

[[noreturn]] void rethrow_as_error(std::exception_ptr e) {
  try {
    std::rethrow_exception(e);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& x) {
    fail("thread pool: a parallel task failed: {}", x.what());
  } catch (...) {
    fail("thread pool: a parallel task threw a non-standard exception");
  }
}

}  // namespace

// state_ counts jobs: an even value is closed, open = closed + 3 (a new epoch with the open
// bit), closing subtracts 1. Workers only compare it for a change, so wrap-around is harmless.

ThreadPool::ThreadPool(int n_threads, int spin_us) : n_threads_(n_threads), spin_us_(spin_us) {
  IC_CHECK(n_threads >= 1, "ThreadPool: {} threads requested, at least 1 needed", n_threads);
  IC_CHECK(spin_us >= 0, "ThreadPool: negative spin time {} us", spin_us);
  workers_.reserve(static_cast<size_t>(n_threads - 1));
  for (int i = 1; i < n_threads; ++i) workers_.emplace_back([this] { worker_loop(); });
}

ThreadPool::~ThreadPool() {
  stop_.store(true);
  state_.fetch_add(2);  // stays closed; wakes sleepers and spinners
  futex_wake_all(state_);
  for (std::thread& t : workers_) t.join();
}

void ThreadPool::record_error(std::exception_ptr e) {
  std::lock_guard<std::mutex> lock(error_mu_);
  if (!error_) error_ = std::move(e);
  failed_.store(true, std::memory_order_relaxed);
}

void ThreadPool::work() {
  for (;;) {
    const int64_t c = next_.fetch_add(1, std::memory_order_relaxed);
    if (c >= n_chunks_) return;
    if (failed_.load(std::memory_order_relaxed)) continue;  // skip what has not started
    const int64_t b = c * grain_;
    try {
      call_(ctx_, b, std::min(n_, b + grain_));
    } catch (...) {
      record_error(std::current_exception());
    }
  }
}

void ThreadPool::worker_loop() {
  const auto spin = std::chrono::microseconds(spin_us_);
  uint32_t seen = state_.load();
  for (;;) {
    uint32_t s = state_.load(std::memory_order_acquire);
    auto t0 = std::chrono::steady_clock::now();
    for (int iter = 1; s == seen && !stop_.load(std::memory_order_relaxed); ++iter) {
      cpu_relax();
      if ((iter & 255) == 0 && std::chrono::steady_clock::now() - t0 > spin) {
        // Dekker with run(): either it sees our sleepers_ and notifies, or we see its state_.
        sleepers_.fetch_add(1);
        // stop_ too: a worker that started after the destructor's bump has seen its value.
        if (state_.load() == seen && !stop_.load()) futex_wait(state_, seen);  // returns at once if it changed
        sleepers_.fetch_sub(1);
        t0 = std::chrono::steady_clock::now();
      }
      s = state_.load(std::memory_order_acquire);
    }
    seen = s;
    if (stop_.load()) return;
    if ((s & 1u) == 0) continue;  // a job closed before we saw it open
    // Join, then check the job is still the one we saw: either run() sees joined_ before it
    // returns, or we see it closed and never touch its fields.
    joined_.fetch_add(1);
    if (state_.load() == s) work();
    joined_.fetch_sub(1, std::memory_order_release);
  }
}

void ThreadPool::run(int64_t n, int64_t grain, Call call, void* ctx) {
  IC_CHECK(n >= 0 && grain >= 1, "ThreadPool::parallel_for: bad range n = {}, grain = {}", n, grain);
  if (n == 0) return;
  const int64_t chunks = (n + grain - 1) / grain;
  bool idle = false;
  if (n_threads_ == 1 || chunks == 1 || !busy_.compare_exchange_strong(idle, true)) {
    try {
      for (int64_t b = 0; b < n; b += grain) call(ctx, b, std::min(n, b + grain));
    } catch (...) {
      rethrow_as_error(std::current_exception());
    }
    return;
  }
  call_ = call;
  ctx_ = ctx;
  n_ = n;
  grain_ = grain;
  n_chunks_ = chunks;
  failed_.store(false, std::memory_order_relaxed);
  next_.store(0, std::memory_order_relaxed);
  const uint32_t open = state_.load(std::memory_order_relaxed) + 3;
  state_.store(open);  // publishes the job's fields
  if (sleepers_.load() > 0) futex_wake_all(state_);
  regions_.fetch_add(1, std::memory_order_relaxed);
  work();
  state_.store(open - 1);
  // Only workers that joined are waited for, and they are running chunks they claimed.
  while (joined_.load() != 0) cpu_relax();
  std::exception_ptr e;
  {
    std::lock_guard<std::mutex> lock(error_mu_);
    e = std::exchange(error_, nullptr);
  }
  busy_.store(false, std::memory_order_release);
  if (e) rethrow_as_error(e);
}

}  // namespace ic
