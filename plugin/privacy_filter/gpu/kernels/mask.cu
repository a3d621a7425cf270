// mask.cu -- the mask pipeline of docs/effects.md ("Mask pipeline") on the device, bit-exact:
//   sanitize + temporal (none / hold / smooth) + quantize      (model resolution)
//   -> uint8 bilinear upsample (INTER_LINEAR_EXACT taps from the host) + threshold
//   -> dilation (separable square max) -> feather (separable box mean) -> alpha, target applied.
// Chroma alpha (2x2 mean) is folded into the composite kernels of effects.cu; chroma_alpha
// below is the standalone form (mask output, tests).
//
// Bytes per 1080p frame assume a 256x256 model map (256 KiB float) and count ideal DRAM
// traffic (each input byte read once, each output byte written once; window re-reads are
// served by L1/L2).  A 1920x1080 u8 plane is 2.07 MB.
#include "common.cuh"

#define SEG 32  // pixels per thread in the sliding-window passes

// mask_temporal_quantize: per model pixel i
//   P = sanitize(p[i])  (NaN -> 1, clamp to [0,1])
//   mode 0 (none):   M = P
//   mode 1 (hold):   ring[slot] = P; M = max of ring slots 0..count-1 (count includes slot)
//   mode 2 (smooth): M = first ? P : fl(fl(a*P) + fl(b*state)); state = M   (no FMA)
//   q[i] = floor(255*M + 0.5)  (double: exact)
// p and q are contiguous n-element maps; ring is nslots*n floats; state n floats.
// Launch: 1-D, block 256, grid ceil(n/256).
// Bytes (256x256): none 0.33 MB; hold-5 0.26 read + 5x0.26 ring + 0.26 write + 0.07 q = 1.9 MB;
// smooth 0.26 + 0.26 read, 0.26 + 0.07 write = 0.85 MB.
extern "C" __global__ void mask_temporal_quantize(const float* __restrict__ p, u8* __restrict__ q, int n, int mode,
                                                  float* __restrict__ ring, int slot, int count,
                                                  float* __restrict__ state, float a, float b, int first) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float v = p[i];
    v = (v != v) ? 1.0f : clampf(v, 0.0f, 1.0f);
    float m = v;
    if (mode == 1) {
        ring[(long long)slot * n + i] = v;
        for (int k = 0; k < count; ++k) m = fmaxf(m, ring[(long long)k * n + i]);
    } else if (mode == 2) {
        if (!first) m = __fadd_rn(__fmul_rn(a, v), __fmul_rn(b, state[i]));
        state[i] = m;
    }
    q[i] = (u8)floor((double)m * 255.0 + 0.5);
}

// mask_upsample_threshold: U = bilinear(q) with the host's INTER_LINEAR_EXACT tap tables,
// out = U >= t8 ? on : off.  xt = [i0[W], i1[W], w[W]], yt = [j0[H], j1[H], w[H]] (int32).
// on/off: 255/0 (person) or 0/255 (background) when this is the last mask pass, 255/0 when
// dilation or feathering follows.
// Launch: 2-D, block 32x8, grid (ceil(W/32), ceil(H/8)).
// Bytes (1080p): read q 0.07 MB + taps 0.02 MB (cached), write 2.07 MB -> 2.2 MB.
extern "C" __global__ void mask_upsample_threshold(const u8* __restrict__ q, int qpitch,
                                                   const int* __restrict__ xt, const int* __restrict__ yt,
                                                   u8* __restrict__ out, int W, int H, int opitch,
                                                   int t8, int on, int off) {
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= W || y >= H) return;
    int u = bilinear_exact_u8(q, qpitch, 1, xt, W, yt, H, x, y);
    out[(long long)y * opitch + x] = (u8)(u >= t8 ? on : off);
}

// dilate_rows: dst(x,y) = 255 if any nonzero src in [x-r, x+r] of row y, else 0.
// A thread slides a running count over SEG pixels: O(1) per pixel whatever r is.
// Clamping indices equals ignoring outside pixels for a max filter.
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
        d[x] = count > 0 ? 255 : 0;
        count += (s[clampi(x + r + 1, 0, W - 1)] != 0) - (s[clampi(x - r, 0, W - 1)] != 0);
    }
}

// dilate_cols: dst(x,y) = on if any nonzero src in [y-r, y+r] of column x, else off.
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

// feather_rows: cnt(x,y) = number of nonzero src (0/255 mask) in [x-f, x+f] of row y,
// edges replicated.  Launch: as dilate_rows.
// Bytes (1080p): read 2.07 MB u8, write 4.15 MB u16 -> 6.2 MB.
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

// feather_cols_alpha: with S = 255 * (sum of cnt over [y-f, y+f], edges replicated) and
// n = (2f+1)^2: A8 = (2S + n) / (2n) (round half up, exact integers); 255 - A8 when invert.
// Launch: as dilate_cols.  Bytes (1080p): read 4.15 MB u16, write 2.07 MB -> 6.2 MB.
extern "C" __global__ void feather_cols_alpha(const u16* __restrict__ cnt, int cpitch, u8* __restrict__ alpha,
                                              int apitch, int W, int H, int f, int invert) {
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y0 = (blockIdx.y * blockDim.y + threadIdx.y) * SEG;
    if (x >= W || y0 >= H) return;
    long long n = (long long)(2 * f + 1) * (2 * f + 1);
    long long sum = 0;
    for (int k = y0 - f; k <= y0 + f; ++k) sum += cnt[(long long)clampi(k, 0, H - 1) * cpitch + x];
    int y1 = min(y0 + SEG, H);
    for (int y = y0; y < y1; ++y) {
        int a = (int)((2 * 255 * sum + n) / (2 * n));
        alpha[(long long)y * apitch + x] = (u8)(invert ? 255 - a : a);
        sum += (long long)cnt[(long long)clampi(y + f + 1, 0, H - 1) * cpitch + x]
             - cnt[(long long)clampi(y - f, 0, H - 1) * cpitch + x];
    }
}

// chroma_alpha: Ac(cx,cy) = (a00+a01+a10+a11+2) >> 2 over the 2x2 luma block, an odd last
// row/column replicated.  Launch: 2-D, block 32x8, grid (ceil(CW/32), ceil(CH/8)).
// Bytes (1080p): read 2.07 MB, write 0.52 MB -> 2.6 MB.
extern "C" __global__ void chroma_alpha(const u8* __restrict__ alpha, int apitch, int W, int H,
                                        u8* __restrict__ ca, int cpitch) {
    int cx = blockIdx.x * blockDim.x + threadIdx.x;
    int cy = blockIdx.y * blockDim.y + threadIdx.y;
    if (cx >= (W + 1) / 2 || cy >= (H + 1) / 2) return;
    ca[(long long)cy * cpitch + cx] = chroma_alpha_at(alpha, apitch, W, H, cx, cy);
}
