// common.cuh -- small device helpers shared by kernels/*.cu.  No CUDA headers, so that NVRTC,
// nvcc and the host emulation (kernels/emu/cuda_host_shim.h) all compile it unchanged.
//
// Conventions used by every kernel of this project:
//   * planes are pitched: element (x, y) of a plane is p[y * pitch + x]; pitches are in
//     elements (= bytes for uint8 planes) and may exceed the width;
//   * a YUV 4:2:0 frame is (Y, U, V, cstep): I420 passes three planes and cstep = 1;
//     NV12 passes U = uv, V = uv + 1 and cstep = 2, with the UV plane's pitch;
//   * chroma planes are ceil(W/2) x ceil(H/2) (odd sizes round up, as FFmpeg does);
//   * every scalar parameter is int or float (callers pass np.int32 / np.float32).
#pragma once

typedef unsigned char u8;
typedef unsigned short u16;

__device__ __forceinline__ int clampi(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }
__device__ __forceinline__ float clampf(float v, float lo, float hi) { return v < lo ? lo : (v > hi ? hi : v); }

// Round-half-up of a non-negative float to 0..255.
__device__ __forceinline__ u8 to_u8(float v) { return (u8)clampi((int)(v + 0.5f), 0, 255); }

// The project's integer composite: out = (orig*(255-a) + eff*a + 127) / 255.
__device__ __forceinline__ u8 blend_u8(int orig, int eff, int a) {
    return (u8)((orig * (255 - a) + eff * a + 127) / 255);
}

// Bilinear sample with half-pixel centres and clamped edges (cv2.INTER_LINEAR semantics on
// float data): horizontal lerp of the two rows first, then vertical, as OpenCV does.
__device__ __forceinline__ float bilinear_f32(const float* __restrict__ p, int pw, int ph, int pitch,
                                              float sx, float sy) {
    float fx = sx - floorf(sx), fy = sy - floorf(sy);
    int x0 = (int)floorf(sx), y0 = (int)floorf(sy);
    int xa = clampi(x0, 0, pw - 1), xb = clampi(x0 + 1, 0, pw - 1);
    int ya = clampi(y0, 0, ph - 1), yb = clampi(y0 + 1, 0, ph - 1);
    const float* r0 = p + (long long)ya * pitch;
    const float* r1 = p + (long long)yb * pitch;
    float h0 = r0[xa] * (1.0f - fx) + r0[xb] * fx;
    float h1 = r1[xa] * (1.0f - fx) + r1[xb] * fx;
    return h0 * (1.0f - fy) + h1 * fy;
}
