#include "core/device.h"

#include "core/error.h"

namespace ic {

void fail_no_cuda(const char* op) {
  fail("{}: tensor is on cuda but this build has no CUDA backend (configure with -DWITH_CUDA=ON)", op);
}

}  // namespace ic
