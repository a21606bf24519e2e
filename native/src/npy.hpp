// npy.hpp - read a NumPy .npy file of integers (the pack's identity rank files) into int64.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace styleid {

// All values of an integer .npy array (any shape, C order) as int64. Throws Error(PACK) naming the file.
std::vector<int64_t> read_npy_int(const std::string &path);

}  // namespace styleid
