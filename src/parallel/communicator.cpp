#include "parallel/communicator.h"

#include <algorithm>

#include "core/error.h"

namespace ic::parallel {

void SingleRank::all_gather(std::span<const float> in, std::span<float> out) {
  IC_CHECK(out.size() == in.size(), "all_gather on one rank: out has {} floats, in {}", out.size(), in.size());
  std::copy(in.begin(), in.end(), out.begin());
}

void SingleRank::broadcast(std::span<float>, int root) {
  IC_CHECK(root == 0, "broadcast on one rank: root {} is not rank 0", root);
}

void SingleRank::all_to_all(std::span<const int64_t> send, std::span<int64_t> recv) {
  IC_CHECK(recv.size() == send.size(), "all_to_all on one rank: send {} and recv {} differ", send.size(), recv.size());
  std::copy(send.begin(), send.end(), recv.begin());
}

void SingleRank::all_to_all_v(std::span<const float> send, std::span<const int64_t> send_counts, std::span<float> recv,
                              std::span<const int64_t> recv_counts) {
  IC_CHECK(send_counts.size() == 1 && recv_counts.size() == 1 && send_counts[0] == recv_counts[0] &&
               send_counts[0] == static_cast<int64_t>(send.size()) && recv.size() == send.size(),
           "all_to_all_v on one rank: counts {} / {} for buffers of {} / {}",
           send_counts.empty() ? -1 : send_counts[0], recv_counts.empty() ? -1 : recv_counts[0], send.size(),
           recv.size());
  std::copy(send.begin(), send.end(), recv.begin());
}

}  // namespace ic::parallel
