#pragma once
// N ranks as N threads of one process, meeting at one rendezvous: the in-process implementation
// of parallel/communicator.h. The tests run several ranks in one process with it, and the CPU
// commands run `--tp N` with it (docs/PARALLEL.md); it stands in for NCCL on the multi-GPU
// device and keeps its rules (same collectives in the same order on every rank, matching sizes).
//
// A collective publishes each rank's buffer in its slot, waits for every rank, then each rank
// does its share of the work on the published buffers and waits again, so no buffer is read
// after its owner has left the call. all_reduce_sum: rank r sums its 1/N of the elements over the
// ranks in rank order, in double, and writes the f32 result into every rank's buffer (the same
// bits everywhere). A rank that fails inside a collective (a size or order mismatch, or an
// exception of its own through run_ranks) aborts the group: every rank waiting in or entering a
// collective then throws GroupAborted instead of waiting forever.
#include <functional>
#include <memory>
#include <string>

#include "core/error.h"
#include "parallel/communicator.h"

namespace ic::parallel {

// What a rank throws when another rank failed first.
class GroupAborted : public Error {
 public:
  explicit GroupAborted(const std::string& what) : Error(what) {}
};

class LocalGroup {
 public:
  explicit LocalGroup(int n_ranks);  // throws ic::Error unless n_ranks >= 1
  ~LocalGroup();
  LocalGroup(const LocalGroup&) = delete;
  LocalGroup& operator=(const LocalGroup&) = delete;

  int size() const;
  Communicator& rank(int r);  // r in [0, size())
  // Wakes every rank waiting in a collective and makes every later one throw GroupAborted, until reset().
  void abort(const std::string& why);
  // Clears an abort; no rank may be inside a collective (run_ranks calls it after joining).
  void reset();

  struct State;

 private:
  std::unique_ptr<State> state_;
};

// Runs fn on every rank of the group: rank 0 on the calling thread, the others on threads of
// their own, each with 1/N of the caller's OpenMP threads (at least one). Returns when all have
// finished; when any failed, rethrows the first failure that was not a GroupAborted (lowest rank),
// else the first GroupAborted, after resetting the group.
void run_ranks(LocalGroup& group, const std::function<void(Communicator&)>& fn);

}  // namespace ic::parallel
