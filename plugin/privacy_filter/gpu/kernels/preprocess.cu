// preprocess.cu -- engine preprocessing in ONE kernel: YUV 4:2:0 planes (I420 or NV12, any
// pitch, one frame per batch item, frames may differ in size) -> resized, normalised RGB or BGR
// float batch (NCHW planar, or NHWC), mirroring privacy_filter.engines.preprocess.yuv_into:
//   1. each plane is resized to the content size on its own, as engines.preprocess._resize:
//      upscaling in either axis -> OpenCV's 8-bit fixed-point bilinear (half-pixel centres);
//      shrinking both axes by 3x or more in either -> "two-stage": that bilinear to twice the
//      target, then OpenCV's exact 2:1 box (a + b + c + d + 2) >> 2, i.e. the rounded mean of
//      four bilinear samples per output pixel (computed directly, no intermediate plane);
//      other shrinks -> exact area averaging (INTER_AREA, round half to even; the 2:1 fast path
//      as above).  8-bit results, within one level of the CPU path's on a few samples in 10^4;
//   2. one 3x4 affine map (YUV -> RGB with the frame's matrix/range, rows already in model
//      colour order) and a clip to 0..255;
//   3. y = (x - offset) * scale per channel; letterbox padding gets (0 - offset) * scale.
//
// Per-item tables (device arrays):
//   planes: N x 3 unsigned long long  -- addresses of Y, U, V (NV12: U = uv, V = uv + 1)
//   geom:   N x 9 int                 -- W, H, ypitch, cpitch, cstep, px, py, pw, ph
//                                        (px, py, pw, ph: content rectangle in model pixels)
//   coef:   N x 12 float              -- the 3x4 affine map, row-major
//   norm:   6 float                   -- offset[3], scale[3] in model colour order
// Launch: block 32x8, grid (ceil(MW/32), ceil(MH/8), N); one thread per model pixel, all three
// planes.  Loads per model pixel and plane: two-stage 4 bilinear samples x 4 taps = 16; area up
// to (ceil(SW/DW) + 1) x (ceil(SH/DH) + 1); bilinear 4.
// Bytes per 1080p frame -> 256x256 model (two-stage for Y 7.5x4.2 and U/V 3.75x2.1): the
// taps of a 512x512 bilinear grid touch 1024 of 1080 Y rows and every U/V row; in 32-byte
// sectors that is every sector of those rows -> read ~3.0 MB (of 3.11 MB Y+U+V), write
// 3x256x256x4 = 0.79 MB -> 3.8 MB.
#include "common.cuh"

// One axis of OpenCV's 8-bit INTER_LINEAR: source index and 11-bit fixed-point weights.
__device__ __forceinline__ void linear_tap(int d, int S, int D, int* i0, int* i1, int* w0, int* w1) {
    double scale = 1.0 / ((double)D / (double)S);
    float f = (float)(((double)d + 0.5) * scale - 0.5);
    int i = (int)floorf(f);
    f -= (float)i;
    if (i < 0) { i = 0; f = 0.0f; }
    if (i >= S - 1) { i = S - 1; f = 0.0f; }
    *i0 = i;
    *i1 = min(i + 1, S - 1);
    *w0 = __float2int_rn((1.0f - f) * 2048.0f);
    *w1 = __float2int_rn(f * 2048.0f);
}

// OpenCV's 8-bit INTER_LINEAR (the vectorised path): horizontal taps in 11-bit fixed point,
// vertical ((h >> 4) * w >> 16) per row, then (+2) >> 2.  Matches cv2.resize to the level on
// all but ~0.02% of samples (off by one there).
__device__ int linear_sample(const u8* __restrict__ p, int pitch, int step, int SW, int SH, int dx, int dy,
                             int DW, int DH) {
    int x0, x1, a0, a1, y0, y1, b0, b1;
    linear_tap(dx, SW, DW, &x0, &x1, &a0, &a1);
    linear_tap(dy, SH, DH, &y0, &y1, &b0, &b1);
    const u8* r0 = p + (long long)y0 * pitch;
    const u8* r1 = p + (long long)y1 * pitch;
    int h0 = r0[(long long)x0 * step] * a0 + r0[(long long)x1 * step] * a1;
    int h1 = r1[(long long)x0 * step] * a0 + r1[(long long)x1 * step] * a1;
    int v = ((((h0 >> 4) * b0) >> 16) + (((h1 >> 4) * b1) >> 16) + 2) >> 2;
    return clampi(v, 0, 255);
}

// Shrink by area averaging (OpenCV's INTER_AREA): the source cells overlapping
// [d*scale, (d+1)*scale) on each axis, weighted by their overlap.
__device__ float area_sample(const u8* __restrict__ p, int pitch, int step, int SW, int SH,
                             int dx, int dy, int DW, int DH) {
    float sxs = (float)SW / (float)DW, sys = (float)SH / (float)DH;
    float fx1 = dx * sxs, fx2 = fminf(fx1 + sxs, (float)SW);
    float fy1 = dy * sys, fy2 = fminf(fy1 + sys, (float)SH);
    int x1 = (int)floorf(fx1), x2 = min((int)ceilf(fx2), SW);
    int y1 = (int)floorf(fy1), y2 = min((int)ceilf(fy2), SH);
    float acc = 0.0f;
    for (int sy = y1; sy < y2; ++sy) {
        float wy = fminf((float)(sy + 1), fy2) - fmaxf((float)sy, fy1);
        if (wy <= 1e-3f) continue;
        const u8* row = p + (long long)sy * pitch;
        float racc = 0.0f;
        for (int sx = x1; sx < x2; ++sx) {
            float wx = fminf((float)(sx + 1), fx2) - fmaxf((float)sx, fx1);
            if (wx <= 1e-3f) continue;
            racc += wx * (float)row[(long long)sx * step];
        }
        acc += wy * racc;
    }
    return acc / ((fx2 - fx1) * (fy2 - fy1));
}

// "Two-stage" shrink: OpenCV's 8-bit bilinear to 2DW x 2DH, then its exact 2:1 box
// (a + b + c + d + 2) >> 2 -- the four bilinear samples (2dx + i, 2dy + j), i, j in {0, 1}.
// Taps are computed once per axis; each sample is linear_sample's arithmetic.
__device__ int two_stage_sample(const u8* __restrict__ p, int pitch, int step, int SW, int SH, int dx, int dy,
                                int DW, int DH) {
    int x0[2], x1[2], a0[2], a1[2];
    for (int i = 0; i < 2; ++i) linear_tap(2 * dx + i, SW, 2 * DW, &x0[i], &x1[i], &a0[i], &a1[i]);
    int sum = 0;
    for (int j = 0; j < 2; ++j) {
        int y0, y1, b0, b1;
        linear_tap(2 * dy + j, SH, 2 * DH, &y0, &y1, &b0, &b1);
        const u8* r0 = p + (long long)y0 * pitch;
        const u8* r1 = p + (long long)y1 * pitch;
        for (int i = 0; i < 2; ++i) {
            int h0 = r0[(long long)x0[i] * step] * a0[i] + r0[(long long)x1[i] * step] * a1[i];
            int h1 = r1[(long long)x0[i] * step] * a0[i] + r1[(long long)x1[i] * step] * a1[i];
            sum += clampi(((((h0 >> 4) * b0) >> 16) + (((h1 >> 4) * b1) >> 16) + 2) >> 2, 0, 255);
        }
    }
    return (sum + 2) >> 2;
}

// One plane resampled to DW x DH as engines.preprocess._resize does it (DOWNSCALE "two-stage"):
// same size -> copy; upscaling in either axis -> OpenCV's 8-bit bilinear; shrinking both axes,
// by 3x or more in either -> two-stage; otherwise area averaging (INTER_AREA).
__device__ __forceinline__ float resample_u8(const u8* __restrict__ p, int pitch, int step, int SW, int SH,
                                             int dx, int dy, int DW, int DH) {
    if (DW == SW && DH == SH) return (float)p[(long long)dy * pitch + (long long)dx * step];
    if (!(DW <= SW && DH <= SH)) return (float)linear_sample(p, pitch, step, SW, SH, dx, dy, DW, DH);
    if (SW >= 3 * DW || SH >= 3 * DH) return (float)two_stage_sample(p, pitch, step, SW, SH, dx, dy, DW, DH);
    float v = area_sample(p, pitch, step, SW, SH, dx, dy, DW, DH);
    // Area means round half to even (OpenCV, engines.preprocess.area_resize), except OpenCV's
    // exact 2:1 fast path, which computes (a + b + c + d + 2) >> 2.
    if (SW == 2 * DW && SH == 2 * DH) return (float)to_u8(v);
    return (float)clampi(__float2int_rn(v), 0, 255);
}

extern "C" __global__ void preprocess_yuv(const unsigned long long* __restrict__ planes, const int* __restrict__ geom,
                                          const float* __restrict__ coef, const float* __restrict__ norm,
                                          float* __restrict__ out, int MW, int MH, int nhwc) {
    int x = blockIdx.x * blockDim.x + threadIdx.x, y = blockIdx.y * blockDim.y + threadIdx.y, n = blockIdx.z;
    if (x >= MW || y >= MH) return;
    const int* g = geom + n * 9;
    int W = g[0], H = g[1], ypitch = g[2], cpitch = g[3], cstep = g[4], px = g[5], py = g[6], pw = g[7], ph = g[8];
    float rgb[3];
    int cx = x - px, cy = y - py;
    if (cx >= 0 && cy >= 0 && cx < pw && cy < ph) {
        const u8* Y = (const u8*)planes[n * 3 + 0];
        const u8* U = (const u8*)planes[n * 3 + 1];
        const u8* V = (const u8*)planes[n * 3 + 2];
        int CW = (W + 1) / 2, CH = (H + 1) / 2;
        float yv = resample_u8(Y, ypitch, 1, W, H, cx, cy, pw, ph);
        float uv = resample_u8(U, cpitch, cstep, CW, CH, cx, cy, pw, ph);
        float vv = resample_u8(V, cpitch, cstep, CW, CH, cx, cy, pw, ph);
        const float* m = coef + n * 12;
        for (int k = 0; k < 3; ++k) {
            float v = m[4 * k] * yv + m[4 * k + 1] * uv + m[4 * k + 2] * vv + m[4 * k + 3];
            rgb[k] = clampf(v, 0.0f, 255.0f);
        }
    } else {
        rgb[0] = rgb[1] = rgb[2] = 0.0f;  // letterbox padding is black
    }
    for (int k = 0; k < 3; ++k) {
        float v = (rgb[k] - norm[k]) * norm[3 + k];
        long long o = nhwc ? (((long long)n * MH + y) * MW + x) * 3 + k : (((long long)n * 3 + k) * MH + y) * MW + x;
        out[o] = v;
    }
}
