#pragma once
// The collectives a tensor- and expert-parallel forward needs, behind one interface, so that the
// model code never knows whether its ranks are threads of one process (LocalGroup,
// parallel/local_group.h: what the tests and the CPU commands run), one process alone
// (SingleRank: every collective a no-op) or GPUs of one host (an NCCL implementation, which needs
// the multi-GPU device: docs/PARALLEL.md).
//
// Every rank of a group calls the same collectives in the same order with matching sizes (the
// rules NCCL has). A collective that one rank leaves by an exception leaves the group unusable
// until its owner resets it; the in-process group then wakes and fails every other rank instead
// of letting it wait forever.
//
// Results are the same bits on every rank: a forward whose inputs are replicated stays replicated
// (the indexer's top-k, computed on every rank, is then identical on every rank).
#include <cstdint>
#include <span>

namespace ic::parallel {

// What a rank has sent through its communicator: calls and payload bytes per collective (the bytes
// the rank contributes: its span for all_reduce_sum and all_gather, the root's span for broadcast,
// its send buffer less what it keeps for itself for all_to_all). docs/PARALLEL.md counts the
// forward's communication with these.
struct CommStats {
  int64_t all_reduce_calls = 0, all_reduce_bytes = 0;
  int64_t all_gather_calls = 0, all_gather_bytes = 0;
  int64_t broadcast_calls = 0, broadcast_bytes = 0;
  int64_t all_to_all_calls = 0, all_to_all_bytes = 0;
  int64_t barriers = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;

  // In place: x becomes the element-wise sum of every rank's x (the same length on every rank).
  // The in-process group sums in double in rank order and rounds once; NCCL sums in f32 in its
  // ring's order. Either way every rank gets the same bits.
  virtual void all_reduce_sum(std::span<float> x) = 0;
  // out[r * in.size() + i] = rank r's in[i]; in has the same length on every rank and
  // out.size() == size() * in.size().
  virtual void all_gather(std::span<const float> in, std::span<float> out) = 0;
  // Root's x into every rank's x (same length everywhere).
  virtual void broadcast(std::span<float> x, int root) = 0;
  // Fixed-size exchange: send holds size() equal chunks, chunk d for rank d; recv's chunk s is
  // what rank s sent to this rank. For the counts of an all_to_all_v.
  virtual void all_to_all(std::span<const int64_t> send, std::span<int64_t> recv) = 0;
  // Variable-size exchange (MoE dispatch and combine): send is size() consecutive chunks,
  // send_counts[d] floats for rank d; recv takes recv_counts[s] floats from rank s, in rank
  // order. recv_counts[s] must equal what rank s sends here (exchange the counts first with
  // all_to_all); a mismatch is an ic::Error on the receiving rank.
  virtual void all_to_all_v(std::span<const float> send, std::span<const int64_t> send_counts, std::span<float> recv,
                            std::span<const int64_t> recv_counts) = 0;
  virtual void barrier() = 0;

  const CommStats& stats() const { return stats_; }
  void reset_stats() { stats_ = {}; }

 protected:
  CommStats stats_;
};

// One rank alone: the sum, gather, broadcast and exchange of one rank are the identity (copies
// where the output is a separate buffer). Sizes are checked as the group implementations check
// them. Counts nothing: no byte leaves the rank.
class SingleRank final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  void all_reduce_sum(std::span<float>) override {}
  void all_gather(std::span<const float> in, std::span<float> out) override;
  void broadcast(std::span<float> x, int root) override;
  void all_to_all(std::span<const int64_t> send, std::span<int64_t> recv) override;
  void all_to_all_v(std::span<const float> send, std::span<const int64_t> send_counts, std::span<float> recv,
                    std::span<const int64_t> recv_counts) override;
  void barrier() override {}
};

}  // namespace ic::parallel
