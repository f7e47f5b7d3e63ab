// convkit._cpu: the pybind11 module over csrc/cpu. Pointers travel as Python ints, shapes in
// ConvParams / PoolParams; outputs and workspaces are allocated by the caller (Python). C++
// errors become Python exceptions here: MemoryError -> convkit's ConvkitMemoryError (a
// RuntimeError and a MemoryError), ValueError -> ConvkitValueError, Interrupted -> the pending
// signal's exception (see cpu_call.h).
#include <pybind11/pybind11.h>

#include <new>

#include "bindings/bind_util.h"
#include "bindings/cpu_call.h"
#include "cpu/threads.h"

namespace py = pybind11;
using namespace convkit;

namespace convkit::bind {
void register_cpu_gemm(pybind11::module_& m);  // cpu_gemm.cpp: gemm, fma_peak_gflops

namespace {
unsigned long g_main_thread = 0;

// convkit._errors.<name> (a borrowed reference: the module keeps it), or `fallback` when
// convkit's Python package cannot be imported. Only on error paths.
PyObject* convkit_error_class(const char* name, PyObject* fallback) {
  PyObject* mod = PyImport_ImportModule("convkit._errors");
  PyObject* cls = mod ? PyObject_GetAttrString(mod, name) : nullptr;
  Py_XDECREF(mod);
  if (!cls) {
    PyErr_Clear();
    return fallback;
  }
  Py_DECREF(cls);
  return cls;
}
}  // namespace

bool on_main_thread() { return g_main_thread != 0 && PyThread_get_thread_ident() == g_main_thread; }

bool python_interrupt_pending() {
  if (_Py_IsFinalizing()) return false;  // PyGILState_Ensure would never return
  const PyGILState_STATE st = PyGILState_Ensure();
  const bool raised = PyErr_CheckSignals() != 0;
  PyGILState_Release(st);
  return raised;
}
}  // namespace convkit::bind

PYBIND11_MODULE(_cpu, m) {
  m.doc() = "convkit's hand-written C++ kernels (CPU)";

  bind::g_main_thread = py::module_::import("threading").attr("main_thread")().attr("ident").cast<unsigned long>();
  py::register_local_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const MemoryError& e) {
      PyErr_SetString(bind::convkit_error_class("ConvkitMemoryError", PyExc_MemoryError), e.what());
    } catch (const ValueError& e) {
      PyErr_SetString(bind::convkit_error_class("ConvkitValueError", PyExc_ValueError), e.what());
    } catch (const Interrupted& e) {
      if (!PyErr_Occurred()) PyErr_SetString(PyExc_KeyboardInterrupt, e.what());
    } catch (const std::bad_alloc&) {
      PyErr_SetString(bind::convkit_error_class("ConvkitMemoryError", PyExc_MemoryError),
                      "convkit: out of memory (std::bad_alloc)");
    }
  });

  bind::register_params(m);  // ConvParams, PoolParams (common_params.cpp)

  m.def("set_num_threads", &cpu::set_num_threads, py::arg("n"),
        "Threads used by every CPU kernel, 1 to 1024 (0: OpenMP's default). A process forked from "
        "one that loaded this module runs every kernel on one thread whatever is set.");
  m.def("get_num_threads", &cpu::num_threads);
  m.def("scratch_bytes", &cpu::scratch_bytes,
        "Bytes of per-thread scratch the kernels hold between calls (buffers of 32 MiB or more are "
        "released when the call that grew them ends); for tests and memory accounting");
  m.def("simd_isa", []() -> std::string {
#if defined(__AVX512F__)
    return "avx512";
#elif defined(__AVX2__) && defined(__FMA__)
    return "avx2+fma";
#else
    return "portable";
#endif
  });

  bind::register_cpu_conv(m);
  bind::register_cpu_pool(m);
  bind::register_cpu_gemm(m);
}
