// The race detector's side of the emulator (racecheck.cpp): what fiber.cpp and simt.cpp tell it.
// Kernel translation units built with -fsanitize=thread (CMake option CONVKIT_SIM_RACECHECK) call
// racecheck.cpp's __tsan_* hooks on every load, store and atomic; the hooks keep shadow memory
// and the happens-before CUDA guarantees, from these events: a launch starts and ends (stream
// order: nothing of one launch races with another's), a block starts and ends (its shared memory
// and thread clocks), a __syncthreads() releases (everything before it in the block happens
// before everything after it), and a __syncwarp(mask) completes (the lanes of the mask). Shuffles,
// votes and matches order no memory. Fences are not a happens-before edge on their own.
#pragma once
#include <cstddef>
#include <mutex>
#include <string>

#include "sim/simt_internal.h"

namespace simt::rc {

// Whether the detector runs in this launch (the racecheck build with racecheck() on). When true
// the launch runs its blocks one after another on the calling thread: the detector's shadow is
// not shared between OS threads, and a race is found from the logical order of accesses, not
// from the schedule.
bool on();
// Held for a whole checked launch: the shadow is one, so checked launches run one at a time.
std::unique_lock<std::mutex> launch_lock();

void launch_begin(impl::Launch& L);
// The launch's first report (with how many more), or "" when it was clean; clears the shadow.
std::string launch_end(impl::Launch& L);
void block_begin(impl::Block& b);
void block_end(impl::Block& b);
void barrier_released(impl::Block& b);
// The lanes of `mask` (lanes: the warp's fibers, index = lane) completed a __syncwarp.
void warp_synced(impl::Fiber* lanes, unsigned mask);

// What the __tsan_* hooks call: one access of `size` bytes at `addr` by the running thread, from
// the instruction before `pc`; an atomic read-modify-write.
void access_hook(const volatile void* addr, std::size_t size, bool write, bool atomic, bool check_align, void* pc);
void rmw_hook(const volatile void* addr, std::size_t size, void* pc);

}  // namespace simt::rc
