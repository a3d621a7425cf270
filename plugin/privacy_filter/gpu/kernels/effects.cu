// effects.cu -- effect pictures and the integer composite of docs/effects.md on YUV 4:2:0
// device planes (I420: cstep 1; NV12: U = uv, V = uv + 1, cstep 2), in place:
//   out = (orig*(255-a) + E*a + 127) / 255, a = A on Y and Ac = 2x2 mean of A on U, V.
// Every kind fuses its effect picture into the composite pass where that saves a pass:
//   fill / overlay / replace-by-colour  -> composite_const
//   replace (image or video planes)     -> composite_planes
//   pixelate                            -> pixelate_composite (cell mean + composite, one pass)
//   blur  -> cell_means (k) -> box_mean x2 (small planes) -> composite_blur (bilinear fused)
// Bytes per 1080p frame count ideal DRAM traffic: frame Y+U+V 3.11 MB read and written,
// alpha 2.07 MB read.
#include "common.cuh"

// Composite one chroma site (cx, cy) and its up-to-four luma pixels.  ey/eu/ev give the
// effect value at a luma or chroma position; o8 scales alpha (overlay), 255 = unscaled.
#define COMPOSITE_SITE(EY_AT, EU_AT, EV_AT)                                                  \
    for (int dy = 0; dy < 2; ++dy) {                                                         \
        int y = 2 * cy + dy;                                                                 \
        if (y >= H) break;                                                                   \
        for (int dx = 0; dx < 2; ++dx) {                                                     \
            int x = 2 * cx + dx;                                                             \
            if (x >= W) break;                                                               \
            int a = (alpha[(long long)y * apitch + x] * o8 + 127) / 255;                     \
            u8* py = Y + (long long)y * ypitch + x;                                          \
            *py = blend_u8(*py, (EY_AT), a);                                                 \
        }                                                                                    \
    }                                                                                        \
    {                                                                                        \
        int ac = (chroma_alpha_at(alpha, apitch, W, H, cx, cy) * o8 + 127) / 255;            \
        long long co = (long long)cy * cpitch + (long long)cx * cstep;                       \
        U[co] = blend_u8(U[co], (EU_AT), ac);                                                \
        V[co] = blend_u8(V[co], (EV_AT), ac);                                                \
    }

// composite_const: E = constant (ey, eu, ev).  fill: o8 = 255; overlay: o8 = opacity8.
// Launch: 2-D, block 32x8, one thread per chroma site, grid (ceil(CW/32), ceil(CH/8)).
// Bytes (1080p): frame 3.11 read + 3.11 write, alpha 2.07 read -> 8.3 MB.
extern "C" __global__ void composite_const(u8* __restrict__ Y, int ypitch, u8* U, u8* V, int cpitch, int cstep,
                                           int W, int H, const u8* __restrict__ alpha, int apitch,
                                           int ey, int eu, int ev, int o8) {
    int cx = blockIdx.x * blockDim.x + threadIdx.x, cy = blockIdx.y * blockDim.y + threadIdx.y;
    if (cx >= (W + 1) / 2 || cy >= (H + 1) / 2) return;
    COMPOSITE_SITE(ey, eu, ev)
}

// composite_planes: E = effect planes of the frame's size (replace by image / video frame),
// in their own layout (epitch, ecpitch, ecstep; NV12 or I420).
// Launch: as composite_const.  Bytes (1080p): frame 6.22 + effect 3.11 + alpha 2.07 -> 11.4 MB.
extern "C" __global__ void composite_planes(u8* __restrict__ Y, int ypitch, u8* U, u8* V, int cpitch, int cstep,
                                            int W, int H, const u8* __restrict__ alpha, int apitch,
                                            const u8* __restrict__ EY, int eypitch, const u8* EU, const u8* EV,
                                            int ecpitch, int ecstep) {
    int cx = blockIdx.x * blockDim.x + threadIdx.x, cy = blockIdx.y * blockDim.y + threadIdx.y;
    if (cx >= (W + 1) / 2 || cy >= (H + 1) / 2) return;
    const int o8 = 255;
    long long ec = (long long)cy * ecpitch + (long long)cx * ecstep;
    COMPOSITE_SITE(EY[(long long)y * eypitch + x], EU[ec], EV[ec])
}

#define PIX_THREADS_MAX 256

// pixelate_composite: one thread block per b x b luma cell (and its (b/2)^2 chroma cell).
// The block sums the cell's Y, U and V with a shared-memory tree reduction (__syncthreads),
// takes the round-half-up means over the pixels that exist (partial edge cells), then
// composites every pixel of the cell with them: one pass over the frame.
// Launch: 1-D block of a power of two <= 256 threads (128 used), grid (ceil(W/b), ceil(H/b)).
// Bytes (1080p): frame 3.11 read (the second read of the cell hits L1/L2) + 3.11 write,
// alpha 2.07 read -> 8.3 MB.
extern "C" __global__ void pixelate_composite(u8* __restrict__ Y, int ypitch, u8* U, u8* V, int cpitch, int cstep,
                                              int W, int H, const u8* __restrict__ alpha, int apitch, int b) {
    __shared__ int s_y[PIX_THREADS_MAX];
    __shared__ int s_u[PIX_THREADS_MAX];
    __shared__ int s_v[PIX_THREADS_MAX];
    __shared__ int s_mean[3];
    const int o8 = 255;
    int t = threadIdx.x, nt = blockDim.x;
    int c = b / 2, CW = (W + 1) / 2, CH = (H + 1) / 2;
    int lx0 = blockIdx.x * b, ly0 = blockIdx.y * b;
    int lw = min(b, W - lx0), lh = min(b, H - ly0);
    int cx0 = blockIdx.x * c, cy0 = blockIdx.y * c;
    int cw = min(c, CW - cx0), ch = min(c, CH - cy0);
    int sy = 0, su = 0, sv = 0;
    for (int i = t; i < lw * lh; i += nt) sy += Y[(long long)(ly0 + i / lw) * ypitch + lx0 + i % lw];
    for (int i = t; i < cw * ch; i += nt) {
        long long co = (long long)(cy0 + i / cw) * cpitch + (long long)(cx0 + i % cw) * cstep;
        su += U[co];
        sv += V[co];
    }
    s_y[t] = sy;
    s_u[t] = su;
    s_v[t] = sv;
    __syncthreads();
    for (int s = nt / 2; s > 0; s >>= 1) {
        if (t < s) {
            s_y[t] += s_y[t + s];
            s_u[t] += s_u[t + s];
            s_v[t] += s_v[t + s];
        }
        __syncthreads();
    }
    if (t == 0) {
        int nl = lw * lh, nc = cw * ch;
        s_mean[0] = (2 * s_y[0] + nl) / (2 * nl);
        s_mean[1] = (2 * s_u[0] + nc) / (2 * nc);
        s_mean[2] = (2 * s_v[0] + nc) / (2 * nc);
    }
    __syncthreads();
    int my = s_mean[0], mu = s_mean[1], mv = s_mean[2];
    for (int i = t; i < cw * ch; i += nt) {
        int cx = cx0 + i % cw, cy = cy0 + i / cw;
        COMPOSITE_SITE(my, mu, mv)
    }
}

// cell_means: small(i, j) = round-half-up mean of the k x k cell (i, j) of a plane (partial
// edge cells average the pixels that exist).  Blur step 1, per plane (luma k, chroma k_c).
// Launch: 2-D, block 32x8, grid over the small plane (ceil(SW/32), ceil(SH/8)).
// Bytes (1080p, k = 8 luma / 4 chroma): read 3.11 MB, write 0.06 MB.
extern "C" __global__ void cell_means(const u8* __restrict__ src, int pitch, int step, int W, int H, int k,
                                      u8* __restrict__ dst, int dpitch) {
    int j = blockIdx.x * blockDim.x + threadIdx.x, i = blockIdx.y * blockDim.y + threadIdx.y;
    int SW = (W + k - 1) / k, SH = (H + k - 1) / k;
    if (j >= SW || i >= SH) return;
    int x0 = j * k, y0 = i * k, x1 = min(x0 + k, W), y1 = min(y0 + k, H);
    int s = 0;
    for (int y = y0; y < y1; ++y)
        for (int x = x0; x < x1; ++x) s += src[(long long)y * pitch + (long long)x * step];
    int n = (x1 - x0) * (y1 - y0);
    dst[(long long)i * dpitch + j] = (u8)((2 * s + n) / (2 * n));
}

// box_mean: round-half-up mean over the (2r+1)^2 window, edges replicated (blur step 2, on
// the small planes; r is about 2, so the direct 2-D sum is cheaper than two passes).
// Launch: 2-D, block 32x8, grid (ceil(w/32), ceil(h/8)).  Bytes (1080p small planes): 0.12 MB.
extern "C" __global__ void box_mean(const u8* __restrict__ src, int spitch, u8* __restrict__ dst, int dpitch,
                                    int w, int h, int r) {
    int x = blockIdx.x * blockDim.x + threadIdx.x, y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= w || y >= h) return;
    int s = 0;
    for (int dy = -r; dy <= r; ++dy) {
        const u8* row = src + (long long)clampi(y + dy, 0, h - 1) * spitch;
        for (int dx = -r; dx <= r; ++dx) s += row[clampi(x + dx, 0, w - 1)];
    }
    int n = (2 * r + 1) * (2 * r + 1);
    dst[(long long)y * dpitch + x] = (u8)((2 * s + n) / (2 * n));
}

// composite_blur: E = exact uint8 bilinear upsample of the blurred small planes (blur step 3)
// fused into the composite.  lxt/lyt: taps small-luma -> W/H; cxt/cyt: small-chroma -> CW/CH.
// Launch: as composite_const.  Bytes (1080p): frame 6.22 + alpha 2.07 + small planes 0.06
// (+ taps 0.02) -> 8.4 MB.
extern "C" __global__ void composite_blur(u8* __restrict__ Y, int ypitch, u8* U, u8* V, int cpitch, int cstep,
                                          int W, int H, const u8* __restrict__ alpha, int apitch,
                                          const u8* __restrict__ SY, int sypitch, const u8* __restrict__ SU,
                                          const u8* __restrict__ SV, int scpitch,
                                          const int* __restrict__ lxt, const int* __restrict__ lyt,
                                          const int* __restrict__ cxt, const int* __restrict__ cyt) {
    int cx = blockIdx.x * blockDim.x + threadIdx.x, cy = blockIdx.y * blockDim.y + threadIdx.y;
    int CW = (W + 1) / 2, CH = (H + 1) / 2;
    if (cx >= CW || cy >= CH) return;
    const int o8 = 255;
    COMPOSITE_SITE(bilinear_exact_u8(SY, sypitch, 1, lxt, W, lyt, H, x, y),
                   bilinear_exact_u8(SU, scpitch, 1, cxt, CW, cyt, CH, cx, cy),
                   bilinear_exact_u8(SV, scpitch, 1, cxt, CW, cyt, CH, cx, cy))
}
