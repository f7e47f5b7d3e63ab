// convkit's error type: a std::runtime_error, which pybind11 raises as Python's RuntimeError.
#pragma once
#include <stdexcept>
#include <string>

namespace convkit {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace convkit

#define CK_CHECK(cond, msg)                                  \
  do {                                                       \
    if (!(cond)) throw ::convkit::Error(std::string(msg));   \
  } while (0)
