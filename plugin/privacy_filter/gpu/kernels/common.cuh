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

// Chroma alpha of chroma site (cx, cy): (a00+a01+a10+a11+2) >> 2, odd edges replicated.
__device__ __forceinline__ u8 chroma_alpha_at(const u8* __restrict__ alpha, int apitch, int W, int H, int cx, int cy) {
    int x0 = 2 * cx, x1 = min(2 * cx + 1, W - 1);
    const u8* r0 = alpha + (long long)(2 * cy) * apitch;
    const u8* r1 = alpha + (long long)min(2 * cy + 1, H - 1) * apitch;
    return (u8)((r0[x0] + r0[x1] + r1[x0] + r1[x1] + 2) >> 2);
}

// uint8 bilinear sample with host tap tables (OpenCV INTER_LINEAR_EXACT, docs/effects.md):
// xt = [i0[n], i1[n], w[n]] for the output width n = DW, yt likewise for DH.
__device__ __forceinline__ int bilinear_exact_u8(const u8* __restrict__ p, int pitch, int step,
                                                 const int* __restrict__ xt, int DW,
                                                 const int* __restrict__ yt, int DH, int x, int y) {
    int x0 = xt[x] * step, x1 = xt[DW + x] * step, wx = xt[2 * DW + x];
    const u8* r0 = p + (long long)yt[y] * pitch;
    const u8* r1 = p + (long long)yt[DH + y] * pitch;
    int wy = yt[2 * DH + y];
    int h0 = r0[x0] * (256 - wx) + r0[x1] * wx;
    int h1 = r1[x0] * (256 - wx) + r1[x1] * wx;
    return (h0 * (256 - wy) + h1 * wy + (1 << 15)) >> 16;
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
