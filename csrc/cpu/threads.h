// The number of OpenMP threads every CPU kernel uses. Python sets it from
// torch.get_num_threads() (or convkit.set_num_threads) so benchmarks compare like with like.
#pragma once

namespace convkit::cpu {
int num_threads();
void set_num_threads(int n);
}  // namespace convkit::cpu
