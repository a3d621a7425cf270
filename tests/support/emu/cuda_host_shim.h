// cuda_host_shim.h -- compile CUDA C kernels (the kernels/*.cu of this project) with g++
// and run them on the CPU.  Test harness only: this is how the kernels are proven correct
// on machines without a GPU (see docs/gpu.md and plugin/gpu_emulation.py).
//
// What it maps:
//   __global__/__device__/__host__/__constant__/__launch_bounds__  -> nothing
//   __shared__                       -> static thread_local (one copy per worker = per running block)
//   threadIdx/blockIdx/blockDim/gridDim -> thread_local globals set by the launcher
//   __syncthreads()                  -> emu::syncthreads(): a fiber switch (FIBER mode) or an
//                                      error (PLAIN mode with more than one thread per block)
//   min/max, __saturatef, __float2int_rn, __fdividef, rsqrtf, __expf, __ldg, atomics
// What it does not map: warp intrinsics (__shfl*, __ballot*), cooperative groups, textures,
// dynamic extern __shared__, CUDA headers.  The project's kernels use none of them.
#pragma once

#include <cstdint>
#include <cstddef>
#include <cmath>
#include <algorithm>

#define __global__
#define __device__
#define __host__
#define __constant__
#define __launch_bounds__(...)
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __restrict__ __restrict
#define __shared__ static thread_local

struct uint3 { unsigned int x, y, z; };
struct dim3 {
    unsigned int x, y, z;
    dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct uchar2 { unsigned char x, y; };
struct uchar4 { unsigned char x, y, z, w; };
struct float2 { float x, y; };
struct float4 { float x, y, z, w; };

namespace emu {
extern thread_local uint3 t_idx;
extern thread_local uint3 b_idx;
extern thread_local dim3 b_dim;
extern thread_local dim3 g_dim;
void syncthreads();
}  // namespace emu

#define threadIdx (emu::t_idx)
#define blockIdx (emu::b_idx)
#define blockDim (emu::b_dim)
#define gridDim (emu::g_dim)
#define __syncthreads() emu::syncthreads()

// Device math the kernels may use.  Integer min/max come from overloads so that mixed
// int/unsigned calls behave like CUDA's (which promotes the same way C++ does).
static inline int min(int a, int b) { return a < b ? a : b; }
static inline int max(int a, int b) { return a > b ? a : b; }
static inline unsigned int min(unsigned int a, unsigned int b) { return a < b ? a : b; }
static inline unsigned int max(unsigned int a, unsigned int b) { return a > b ? a : b; }
static inline long long min(long long a, long long b) { return a < b ? a : b; }
static inline long long max(long long a, long long b) { return a > b ? a : b; }
static inline float min(float a, float b) { return fminf(a, b); }
static inline float max(float a, float b) { return fmaxf(a, b); }
static inline float __saturatef(float x) { return x < 0.f ? 0.f : (x > 1.f ? 1.f : x); }
static inline int __float2int_rn(float x) { return (int)nearbyintf(x); }
static inline int __float2int_rd(float x) { return (int)floorf(x); }
static inline float __fdividef(float a, float b) { return a / b; }
// __expf and __logf: glibc's <math.h> already declares float __expf(float) / __logf(float).
static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
// IEEE round-to-nearest float ops that the compiler must not fuse into an FMA (the library
// builds with -ffp-contract=off, so plain operators already behave like these).
static inline float __fmul_rn(float a, float b) { volatile float r = a * b; return r; }
static inline float __fadd_rn(float a, float b) { volatile float r = a + b; return r; }
template <typename T> static inline T __ldg(const T* p) { return *p; }

// Atomics through GCC builtins (float via compare-and-swap), as CUDA's return the old value.
static inline int atomicAdd(int* p, int v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
static inline unsigned int atomicAdd(unsigned int* p, unsigned int v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
static inline int atomicMax(int* p, int v) {
    int old = __atomic_load_n(p, __ATOMIC_RELAXED);
    while (old < v && !__atomic_compare_exchange_n(p, &old, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {}
    return old;
}
static inline int atomicMin(int* p, int v) {
    int old = __atomic_load_n(p, __ATOMIC_RELAXED);
    while (old > v && !__atomic_compare_exchange_n(p, &old, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {}
    return old;
}
static inline int atomicCAS(int* p, int cmp, int v) {
    __atomic_compare_exchange_n(p, &cmp, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
    return cmp;
}
static inline int atomicExch(int* p, int v) { return __atomic_exchange_n(p, v, __ATOMIC_RELAXED); }
static inline float atomicAdd(float* p, float v) {
    float old = *p, want;
    do { want = old + v; } while (!__atomic_compare_exchange(p, &old, &want, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
    return old;
}
