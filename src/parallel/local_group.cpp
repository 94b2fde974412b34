#include "parallel/local_group.h"

#include <omp.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace ic::parallel {

namespace {

enum class Op { AllReduce, AllGather, Broadcast, AllToAll, AllToAllV, Barrier };

const char* op_name(Op op) {
  switch (op) {
    case Op::AllReduce: return "all_reduce_sum";
    case Op::AllGather: return "all_gather";
    case Op::Broadcast: return "broadcast";
    case Op::AllToAll: return "all_to_all";
    case Op::AllToAllV: return "all_to_all_v";
    case Op::Barrier: return "barrier";
  }
  return "?";
}

// What a rank publishes for one collective.
struct Slot {
  Op op = Op::Barrier;
  void* data = nullptr;        // its buffer (written by all_reduce_sum, read otherwise)
  int64_t count = 0;           // elements of that buffer
  const int64_t* counts = nullptr;  // all_to_all_v: its send counts [n]
  int root = 0;
};

}  // namespace

struct LocalGroup::State {
  int n = 0;
  std::mutex m;
  std::condition_variable cv;
  int arrived = 0;
  uint64_t generation = 0;
  bool aborted = false;
  std::string why;
  std::vector<Slot> slots;
  std::vector<std::unique_ptr<Communicator>> ranks;  // LocalRank, one per rank

  // Every rank waits here until all have arrived (or the group is aborted).
  void arrive(int rank) {
    std::unique_lock<std::mutex> lk(m);
    if (aborted) throw GroupAborted(fmt::format("rank {}: the group was aborted: {}", rank, why));
    const uint64_t gen = generation;
    if (++arrived == n) {
      arrived = 0;
      ++generation;
      cv.notify_all();
      return;
    }
    cv.wait(lk, [&] { return generation != gen || aborted; });
    if (generation == gen) throw GroupAborted(fmt::format("rank {}: the group was aborted: {}", rank, why));
  }

  void abort(const std::string& reason) {
    std::lock_guard<std::mutex> lk(m);
    if (!aborted) why = reason;
    aborted = true;
    cv.notify_all();
  }
};

namespace {

class LocalRank final : public Communicator {
 public:
  LocalRank(LocalGroup::State& s, int rank) : s_(s), rank_(rank) {}
  int rank() const override { return rank_; }
  int size() const override { return s_.n; }

  void all_reduce_sum(std::span<float> x) override {
    run(Slot{Op::AllReduce, x.data(), static_cast<int64_t>(x.size()), nullptr, 0}, [&] {
      check_same_count();
      const int64_t m = static_cast<int64_t>(x.size()), n = s_.n;
      const int64_t b = m * rank_ / n, e = m * (rank_ + 1) / n;
      for (int64_t i = b; i < e; ++i) {
        double sum = 0.0;
        for (int q = 0; q < n; ++q) sum += static_cast<const float*>(s_.slots[q].data)[i];
        const float v = static_cast<float>(sum);
        for (int q = 0; q < n; ++q) static_cast<float*>(s_.slots[q].data)[i] = v;
      }
    });
    ++stats_.all_reduce_calls;
    stats_.all_reduce_bytes += static_cast<int64_t>(x.size() * sizeof(float));
  }

  void all_gather(std::span<const float> in, std::span<float> out) override {
    IC_CHECK(out.size() == in.size() * static_cast<size_t>(s_.n),
             "all_gather on rank {}: out has {} floats, {} ranks x {} expected", rank_, out.size(), s_.n, in.size());
    run(Slot{Op::AllGather, const_cast<float*>(in.data()), static_cast<int64_t>(in.size()), nullptr, 0}, [&] {
      check_same_count();
      for (int q = 0; q < s_.n; ++q)
        std::memcpy(out.data() + q * in.size(), s_.slots[q].data, in.size() * sizeof(float));
    });
    ++stats_.all_gather_calls;
    stats_.all_gather_bytes += static_cast<int64_t>(in.size() * sizeof(float));
  }

  void broadcast(std::span<float> x, int root) override {
    IC_CHECK(root >= 0 && root < s_.n, "broadcast on rank {}: root {} outside [0, {})", rank_, root, s_.n);
    run(Slot{Op::Broadcast, x.data(), static_cast<int64_t>(x.size()), nullptr, root}, [&] {
      check_same_count();
      for (int q = 0; q < s_.n; ++q)
        IC_CHECK(s_.slots[q].root == root, "broadcast: rank {} names root {}, rank {} root {}", rank_, root, q,
                 s_.slots[q].root);
      if (rank_ != root) std::memcpy(x.data(), s_.slots[root].data, x.size() * sizeof(float));
    });
    ++stats_.broadcast_calls;
    if (rank_ == root) stats_.broadcast_bytes += static_cast<int64_t>(x.size() * sizeof(float));
  }

  void all_to_all(std::span<const int64_t> send, std::span<int64_t> recv) override {
    const size_t n = static_cast<size_t>(s_.n);
    IC_CHECK(send.size() % n == 0 && recv.size() == send.size(),
             "all_to_all on rank {}: send {} and recv {} must be equal multiples of the {} ranks", rank_, send.size(),
             recv.size(), n);
    const size_t chunk = send.size() / n;
    run(Slot{Op::AllToAll, const_cast<int64_t*>(send.data()), static_cast<int64_t>(send.size()), nullptr, 0}, [&] {
      check_same_count();
      for (size_t q = 0; q < n; ++q)
        std::memcpy(recv.data() + q * chunk, static_cast<const int64_t*>(s_.slots[q].data) + rank_ * chunk,
                    chunk * sizeof(int64_t));
    });
    ++stats_.all_to_all_calls;
    stats_.all_to_all_bytes += static_cast<int64_t>((send.size() - chunk) * sizeof(int64_t));
  }

  void all_to_all_v(std::span<const float> send, std::span<const int64_t> send_counts, std::span<float> recv,
                    std::span<const int64_t> recv_counts) override {
    const int n = s_.n;
    IC_CHECK(send_counts.size() == static_cast<size_t>(n) && recv_counts.size() == static_cast<size_t>(n),
             "all_to_all_v on rank {}: {} send and {} recv counts for {} ranks", rank_, send_counts.size(),
             recv_counts.size(), n);
    int64_t sent = 0, received = 0;
    for (int q = 0; q < n; ++q) {
      IC_CHECK(send_counts[q] >= 0 && recv_counts[q] >= 0, "all_to_all_v on rank {}: a negative count", rank_);
      sent += send_counts[q];
      received += recv_counts[q];
    }
    IC_CHECK(sent == static_cast<int64_t>(send.size()) && received == static_cast<int64_t>(recv.size()),
             "all_to_all_v on rank {}: counts sum to {} sent / {} received, buffers hold {} / {}", rank_, sent,
             received, send.size(), recv.size());
    run(Slot{Op::AllToAllV, const_cast<float*>(send.data()), sent, send_counts.data(), 0}, [&] {
      int64_t at = 0;
      for (int q = 0; q < n; ++q) {
        const int64_t* qc = s_.slots[q].counts;
        int64_t offset = 0;
        for (int d = 0; d < rank_; ++d) offset += qc[d];
        IC_CHECK(qc[rank_] == recv_counts[q], "all_to_all_v: rank {} sends {} floats to rank {}, which expects {}", q,
                 qc[rank_], rank_, recv_counts[q]);
        std::memcpy(recv.data() + at, static_cast<const float*>(s_.slots[q].data) + offset,
                    static_cast<size_t>(qc[rank_]) * sizeof(float));
        at += qc[rank_];
      }
    });
    ++stats_.all_to_all_calls;
    stats_.all_to_all_bytes += (sent - send_counts[rank_]) * static_cast<int64_t>(sizeof(float));
  }

  void barrier() override {
    run(Slot{}, [] {});
    ++stats_.barriers;
  }

 private:
  // Publish, meet, do this rank's part on the published slots, meet again. A failure here aborts
  // the group, so that no other rank waits for this one.
  template <typename F>
  void run(const Slot& mine, F&& work) {
    s_.slots[static_cast<size_t>(rank_)] = mine;
    s_.arrive(rank_);
    try {
      for (int q = 0; q < s_.n; ++q)
        IC_CHECK(s_.slots[q].op == mine.op, "collective order: rank {} called {} while rank {} called {}", rank_,
                 op_name(mine.op), q, op_name(s_.slots[q].op));
      work();
    } catch (const std::exception& e) {
      s_.abort(e.what());
      throw;
    }
    s_.arrive(rank_);
  }

  void check_same_count() const {
    for (int q = 0; q < s_.n; ++q)
      IC_CHECK(s_.slots[q].count == s_.slots[rank_].count, "{}: rank {} has {} elements, rank {} has {}",
               op_name(s_.slots[rank_].op), rank_, s_.slots[rank_].count, q, s_.slots[q].count);
  }

  LocalGroup::State& s_;
  int rank_;
};

}  // namespace

LocalGroup::LocalGroup(int n_ranks) : state_(std::make_unique<State>()) {
  IC_CHECK(n_ranks >= 1, "a group needs at least one rank, got {}", n_ranks);
  state_->n = n_ranks;
  state_->slots.resize(static_cast<size_t>(n_ranks));
  for (int r = 0; r < n_ranks; ++r) state_->ranks.push_back(std::make_unique<LocalRank>(*state_, r));
}

LocalGroup::~LocalGroup() = default;

int LocalGroup::size() const { return state_->n; }

void LocalGroup::abort(const std::string& why) { state_->abort(why); }

void LocalGroup::reset() {
  std::lock_guard<std::mutex> lk(state_->m);
  state_->aborted = false;
  state_->why.clear();
  state_->arrived = 0;
}

Communicator& LocalGroup::rank(int r) {
  IC_CHECK(r >= 0 && r < state_->n, "rank {} outside the group's [0, {})", r, state_->n);
  return *state_->ranks[static_cast<size_t>(r)];
}

void run_ranks(LocalGroup& group, const std::function<void(Communicator&)>& fn) {
  const int n = group.size();
  const int omp_total = omp_get_max_threads();
  const int omp_each = std::max(1, omp_total / n);
  std::vector<std::exception_ptr> failed(static_cast<size_t>(n));
  std::vector<bool> aborted(static_cast<size_t>(n), false);
  auto body = [&](int r) {
    try {
      fn(group.rank(r));
    } catch (const GroupAborted&) {
      failed[static_cast<size_t>(r)] = std::current_exception();
      aborted[static_cast<size_t>(r)] = true;
    } catch (const std::exception& e) {
      failed[static_cast<size_t>(r)] = std::current_exception();
      group.abort(fmt::format("rank {} failed: {}", r, e.what()));
    } catch (...) {
      failed[static_cast<size_t>(r)] = std::current_exception();
      group.abort(fmt::format("rank {} failed", r));
    }
  };
  std::vector<std::thread> threads;
  threads.reserve(static_cast<size_t>(n - 1));
  for (int r = 1; r < n; ++r)
    threads.emplace_back([&body, omp_each, r] {
      omp_set_num_threads(omp_each);
      body(r);
    });
  omp_set_num_threads(omp_each);
  body(0);
  omp_set_num_threads(omp_total);
  for (std::thread& t : threads) t.join();
  group.reset();
  for (int r = 0; r < n; ++r)
    if (failed[static_cast<size_t>(r)] && !aborted[static_cast<size_t>(r)]) std::rethrow_exception(failed[static_cast<size_t>(r)]);
  for (int r = 0; r < n; ++r)
    if (failed[static_cast<size_t>(r)]) std::rethrow_exception(failed[static_cast<size_t>(r)]);
}

}  // namespace ic::parallel
