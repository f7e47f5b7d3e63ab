// convkit's error types: std::runtime_error subclasses, which pybind11 raises as Python's
// RuntimeError; the CPU module translates MemoryError and ValueError to convkit's Python classes
// (ConvkitMemoryError, ConvkitValueError) and Interrupted to the pending Python exception.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>

namespace convkit {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A bad argument value (raised as ConvkitValueError by the CPU module).
struct ValueError : Error {
  using Error::Error;
};

// An allocation that failed; the message says how many bytes and what for.
struct MemoryError : Error {
  int64_t bytes;
  MemoryError(const std::string& what, int64_t nbytes)
      : Error("convkit: cannot allocate " + std::to_string(nbytes) + " bytes for " + what), bytes(nbytes) {}
};

// A kernel stopped early because the caller asked it to (Ctrl-C): the binding raises the pending
// Python exception (KeyboardInterrupt, or whatever a signal handler raised).
struct Interrupted : Error {
  Interrupted() : Error("convkit: interrupted") {}
};

}  // namespace convkit

#define CK_CHECK(cond, msg)                                  \
  do {                                                       \
    if (!(cond)) throw ::convkit::Error(std::string(msg));   \
  } while (0)
