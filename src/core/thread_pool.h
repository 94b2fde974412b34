#pragma once
// A fork-join pool for the CPU hot paths that run hundreds of short parallel regions per token
// (decode's GEMVs): n - 1 worker threads plus the calling thread. No globals: whoever runs the
// model owns one and passes it down.
//
// parallel_for hands out chunks of an index range through one atomic counter. The caller takes
// chunks like any worker, so a region whose workers are asleep or descheduled (a shared 2-core
// machine) is finished by the caller alone: it waits only for chunks a worker has already
// claimed and is running, never for a worker to wake up. After a region the workers spin for a
// short while (the next region of a decode step comes microseconds later), then sleep on a
// futex until the next one.
//
// One region at a time: a parallel_for issued while a region of this pool runs (nested, from a
// body, or from another thread) runs inline on its calling thread.
#include <atomic>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

namespace ic {

class ThreadPool {
 public:
  // n_threads counts the caller: n_threads - 1 workers are started. Throws ic::Error if
  // n_threads < 1. spin_us: how long an idle worker polls for the next region before sleeping.
  explicit ThreadPool(int n_threads, int spin_us = 200);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }

  // Calls body(begin, end) for consecutive chunks [begin, end) of [0, n), `grain` indices each
  // (the last may be shorter), every index exactly once, on the caller and the workers. Runs
  // inline, with no region at all, when there is a single chunk, a single thread, or a region
  // already running. If a body throws, chunks not yet started are skipped and the first
  // exception is rethrown once every running chunk has finished: an ic::Error as it was, any
  // other exception as an ic::Error carrying its message.
  template <typename F>
  void parallel_for(int64_t n, int64_t grain, F&& body) {
    using Body = std::remove_reference_t<F>;
    run(n, grain, [](void* ctx, int64_t b, int64_t e) { (*static_cast<Body*>(ctx))(b, e); },
        const_cast<void*>(static_cast<const void*>(&body)));
  }

  // Regions that actually went to the workers since construction (tests and profiling).
  int64_t regions() const { return regions_.load(std::memory_order_relaxed); }

 private:
  using Call = void (*)(void* ctx, int64_t begin, int64_t end);
  void run(int64_t n, int64_t grain, Call call, void* ctx);
  void work();  // claims and runs chunks of the current job until none are left
  void worker_loop();
  void record_error(std::exception_ptr e);

  const int n_threads_;
  const int spin_us_;
  std::vector<std::thread> workers_;

  // The current job; written by the caller only while no worker has joined it.
  Call call_ = nullptr;
  void* ctx_ = nullptr;
  int64_t n_ = 0, grain_ = 1, n_chunks_ = 0;
  alignas(64) std::atomic<int64_t> next_{0};  // next chunk to claim
  alignas(64) std::atomic<uint32_t> state_{0};  // (epoch << 1) | open; workers wait on it
  alignas(64) std::atomic<int> joined_{0};      // workers inside the current job
  std::atomic<int> sleepers_{0};                // workers asleep on state_
  std::atomic<bool> busy_{false};               // a region is running (nested calls go inline)
  std::atomic<bool> failed_{false};
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> regions_{0};
  std::mutex error_mu_;
  std::exception_ptr error_;
};

}  // namespace ic
