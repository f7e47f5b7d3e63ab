// How the _cpu bindings run a kernel: with the GIL released, inside a cpu::CallScope whose
// interrupt check (on the main thread only, where Python handles signals) briefly takes the GIL
// and runs Python's pending signal handlers. A kernel the check cancelled throws Interrupted;
// this raises the Python exception the handler left (KeyboardInterrupt for Ctrl-C).
#pragma once
#include <pybind11/pybind11.h>

#include "common/error.h"
#include "cpu/threads.h"

namespace convkit::bind {

// True when a pending signal's Python handler raised (the exception stays set on this thread).
bool python_interrupt_pending();
// Whether the calling thread is Python's main thread (the only one that runs signal handlers).
bool on_main_thread();

template <typename F>
void cpu_call(F&& f) {
  try {
    pybind11::gil_scoped_release release;
    // (inside the release: the scope's end trims large scratch without holding the GIL)
    cpu::CallScope scope(on_main_thread() ? &python_interrupt_pending : nullptr);
    f();
  } catch (const Interrupted&) {
    if (PyErr_Occurred()) throw pybind11::error_already_set();
    throw;
  }
}

}  // namespace convkit::bind
