// mask.cu -- the mask pipeline of docs/architecture.md on the device:
//   temporal (hold / smooth, model resolution) -> bilinear upsample + threshold ->
//   dilation (separable square max) -> feather (separable box mean) -> alpha 0..255.
// Chroma alpha (2x2 mean) is folded into the composite kernels of effects.cu.
//
// Bytes per 1080p frame below assume a 256x256 model map (256 KiB float) and count ideal
// DRAM traffic (each input byte read once, each output byte written once; window re-reads
// are served by L1/L2).  1920x1080 = 2 073 600 pixels = 2.07 MB per u8 mask plane.
#include "common.cuh"

#define SEG 32  // pixels per thread in the sliding-window passes

// temporal_hold: ring[slot] = p; out = max over the `count` most recent ring slots.
// Launch: 1-D, block 256, grid ceil(n/256); n = model pixels.
// Bytes (256x256, hold 5): read p 0.26 MB + ring 5x0.26 MB, write ring 0.26 + out 0.26 -> 2.1 MB.
extern "C" __global__ void temporal_hold(const float* __restrict__ p, float* __restrict__ ring,
                                         float* __restrict__ out, int n, int slot, int count) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float v = p[i];
    ring[(long long)slot * n + i] = v;
    float m = v;
    for (int k = 0; k < count; ++k) m = fmaxf(m, ring[(long long)k * n + i]);
    out[i] = m;
}

// temporal_smooth: state = first ? p : a*p + (1-a)*state  (in place; the state is the output).
// Launch: 1-D, block 256, grid ceil(n/256).  Bytes (256x256): read 0.52 MB, write 0.26 MB.
extern "C" __global__ void temporal_smooth(const float* __restrict__ p, float* __restrict__ state,
                                           int n, float a, int first) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    state[i] = first ? p[i] : a * p[i] + (1.0f - a) * state[i];
}

// mask_upsample_threshold: out(x,y) = bilinear(prob)(x,y) >= thr ? on : off, for the W x H frame.
// The map covers the whole frame (stretch); sample position (x+0.5)*pw/W-0.5 (half-pixel centres).
// on/off are 1/0 when dilation or feathering follows, 255/0 (or 0/255 for target background)
// when this is the last mask pass.
// Launch: 2-D, block 32x8, grid (ceil(W/32), ceil(H/8)).
// Bytes (1080p): read 0.26 MB map (cached), write 2.07 MB -> 2.3 MB.
extern "C" __global__ void mask_upsample_threshold(const float* __restrict__ prob, int pw, int ph, int ppitch,
                                                   u8* __restrict__ out, int W, int H, int opitch,
                                                   float thr, int on, int off) {
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= W || y >= H) return;
    float sx = ((float)x + 0.5f) * ((float)pw / (float)W) - 0.5f;
    float sy = ((float)y + 0.5f) * ((float)ph / (float)H) - 0.5f;
    float v = bilinear_f32(prob, pw, ph, ppitch, sx, sy);
    out[(long long)y * opitch + x] = (u8)(v >= thr ? on : off);
}

// dilate_rows: dst(x,y) = any nonzero src in [x-r, x+r] of row y ? 1 : 0.
// A thread slides a running count over SEG pixels, so the cost is O(1) per pixel in r.
// Launch: 2-D, block 32x8, grid (ceil(ceil(W/SEG)/32), ceil(H/8)).
// Bytes (1080p): read 2.07 MB, write 2.07 MB -> 4.1 MB.
extern "C" __global__ void dilate_rows(const u8* __restrict__ src, int spitch, u8* __restrict__ dst, int dpitch,
                                       int W, int H, int r) {
    int x0 = (blockIdx.x * blockDim.x + threadIdx.x) * SEG;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x0 >= W || y >= H) return;
    const u8* s = src + (long long)y * spitch;
    u8* d = dst + (long long)y * dpitch;
    int count = 0;
    for (int k = x0 - r; k <= x0 + r; ++k) count += s[clampi(k, 0, W - 1)] != 0;
    int x1 = min(x0 + SEG, W);
    for (int x = x0; x < x1; ++x) {
        d[x] = count > 0;
        count += (s[clampi(x + r + 1, 0, W - 1)] != 0) - (s[clampi(x - r, 0, W - 1)] != 0);
    }
}

// dilate_cols: dst(x,y) = any nonzero src in [y-r, y+r] of column x ? on : off.
// Launch: 2-D, block 32x8, grid (ceil(W/32), ceil(ceil(H/SEG)/8)); adjacent threads read
// adjacent columns (coalesced).  Bytes (1080p): read 2.07 MB, write 2.07 MB -> 4.1 MB.
extern "C" __global__ void dilate_cols(const u8* __restrict__ src, int spitch, u8* __restrict__ dst, int dpitch,
                                       int W, int H, int r, int on, int off) {
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y0 = (blockIdx.y * blockDim.y + threadIdx.y) * SEG;
    if (x >= W || y0 >= H) return;
    int count = 0;
    for (int k = y0 - r; k <= y0 + r; ++k) count += src[(long long)clampi(k, 0, H - 1) * spitch + x] != 0;
    int y1 = min(y0 + SEG, H);
    for (int y = y0; y < y1; ++y) {
        dst[(long long)y * dpitch + x] = (u8)(count > 0 ? on : off);
        count += (src[(long long)clampi(y + r + 1, 0, H - 1) * spitch + x] != 0)
               - (src[(long long)clampi(y - r, 0, H - 1) * spitch + x] != 0);
    }
}

// feather_rows: cnt(x,y) = number of nonzero src in [x-f, x+f] of row y, edges replicated.
// Launch: as dilate_rows.  Bytes (1080p): read 2.07 MB u8, write 4.15 MB u16 -> 6.2 MB.
extern "C" __global__ void feather_rows(const u8* __restrict__ src, int spitch, u16* __restrict__ cnt, int cpitch,
                                        int W, int H, int f) {
    int x0 = (blockIdx.x * blockDim.x + threadIdx.x) * SEG;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x0 >= W || y >= H) return;
    const u8* s = src + (long long)y * spitch;
    u16* c = cnt + (long long)y * cpitch;
    int count = 0;
    for (int k = x0 - f; k <= x0 + f; ++k) count += s[clampi(k, 0, W - 1)] != 0;
    int x1 = min(x0 + SEG, W);
    for (int x = x0; x < x1; ++x) {
        c[x] = (u16)count;
        count += (s[clampi(x + f + 1, 0, W - 1)] != 0) - (s[clampi(x - f, 0, W - 1)] != 0);
    }
}

// feather_cols_alpha: alpha(x,y) = round(255 * sum_{k=y-f..y+f} cnt(x,k) / (2f+1)^2), edges
// replicated; 255 - alpha when invert (target background).  Integer, exact round-half-up.
// Launch: as dilate_cols.  Bytes (1080p): read 4.15 MB u16, write 2.07 MB -> 6.2 MB.
extern "C" __global__ void feather_cols_alpha(const u16* __restrict__ cnt, int cpitch, u8* __restrict__ alpha,
                                              int apitch, int W, int H, int f, int invert) {
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y0 = (blockIdx.y * blockDim.y + threadIdx.y) * SEG;
    if (x >= W || y0 >= H) return;
    long long area = (long long)(2 * f + 1) * (2 * f + 1);
    long long sum = 0;
    for (int k = y0 - f; k <= y0 + f; ++k) sum += cnt[(long long)clampi(k, 0, H - 1) * cpitch + x];
    int y1 = min(y0 + SEG, H);
    for (int y = y0; y < y1; ++y) {
        int a = (int)((510 * sum + area) / (2 * area));
        alpha[(long long)y * apitch + x] = (u8)(invert ? 255 - a : a);
        sum += (long long)cnt[(long long)clampi(y + f + 1, 0, H - 1) * cpitch + x]
             - cnt[(long long)clampi(y - f, 0, H - 1) * cpitch + x];
    }
}

// chroma_alpha: ca(cx,cy) = (a00+a01+a10+a11+2) >> 2 over the 2x2 luma block, odd edges
// replicated.  The composite kernels compute the same inline; this standalone pass exists
// for the effect `none` (mask output) and for testing.
// Launch: 2-D, block 32x8, grid (ceil(CW/32), ceil(CH/8)).  Bytes (1080p): 2.07 + 0.52 MB.
extern "C" __global__ void chroma_alpha(const u8* __restrict__ alpha, int apitch, int W, int H,
                                        u8* __restrict__ ca, int cpitch) {
    int cx = blockIdx.x * blockDim.x + threadIdx.x;
    int cy = blockIdx.y * blockDim.y + threadIdx.y;
    int CW = (W + 1) / 2, CH = (H + 1) / 2;
    if (cx >= CW || cy >= CH) return;
    int x0 = 2 * cx, x1 = min(2 * cx + 1, W - 1), y0 = 2 * cy, y1 = min(2 * cy + 1, H - 1);
    int s = alpha[(long long)y0 * apitch + x0] + alpha[(long long)y0 * apitch + x1]
          + alpha[(long long)y1 * apitch + x0] + alpha[(long long)y1 * apitch + x1];
    ca[(long long)cy * cpitch + cx] = (u8)((s + 2) >> 2);
}
