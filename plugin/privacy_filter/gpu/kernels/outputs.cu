// outputs.cu -- model output tensor -> person probability map (N, H, W) float32, mirroring
// privacy_filter.engines.outputs (argmax ids, softmax scores, sigmoid probabilities, logits).
//
// Tensor layout: NCHW (nhwc = 0) or NHWC (nhwc = 1) with C channels; a rank-3 (N, H, W) id map
// is passed as C = 1.
// Launch (all kernels): block 32x8, grid (ceil(W/32), ceil(H/8), N), one thread per output pixel.
// Bytes for a 256x256 map (the default model) per frame: read C*256 KiB (int64 argmax: 512 KiB),
// write 256 KiB; for PeopleSemSegNet 960x544 int32 ids: read 2.09 MB, write 2.09 MB.
#include "common.cuh"

__device__ __forceinline__ long long tensor_index(int n, int c, int y, int x, int C, int H, int W, int nhwc) {
    return nhwc ? (((long long)n * H + y) * W + x) * C + c : (((long long)n * C + c) * H + y) * W + x;
}

// decode_argmax_i32: prob = (ids[channel 0] == person) ? 1 : 0.
extern "C" __global__ void decode_argmax_i32(const int* __restrict__ ids, float* __restrict__ prob,
                                             int C, int H, int W, int nhwc, int person) {
    int x = blockIdx.x * blockDim.x + threadIdx.x, y = blockIdx.y * blockDim.y + threadIdx.y, n = blockIdx.z;
    if (x >= W || y >= H) return;
    prob[((long long)n * H + y) * W + x] = ids[tensor_index(n, 0, y, x, C, H, W, nhwc)] == person ? 1.0f : 0.0f;
}

// decode_argmax_i64: the same for int64 ids (ONNX ArgMax's output type).
extern "C" __global__ void decode_argmax_i64(const long long* __restrict__ ids, float* __restrict__ prob,
                                             int C, int H, int W, int nhwc, int person) {
    int x = blockIdx.x * blockDim.x + threadIdx.x, y = blockIdx.y * blockDim.y + threadIdx.y, n = blockIdx.z;
    if (x >= W || y >= H) return;
    prob[((long long)n * H + y) * W + x] = ids[tensor_index(n, 0, y, x, C, H, W, nhwc)] == (long long)person ? 1.0f : 0.0f;
}

// decode_channel_f32: prob = raw[channel] (softmax scores, sigmoid probabilities).
extern "C" __global__ void decode_channel_f32(const float* __restrict__ raw, float* __restrict__ prob,
                                              int C, int H, int W, int nhwc, int channel) {
    int x = blockIdx.x * blockDim.x + threadIdx.x, y = blockIdx.y * blockDim.y + threadIdx.y, n = blockIdx.z;
    if (x >= W || y >= H) return;
    prob[((long long)n * H + y) * W + x] = raw[tensor_index(n, channel, y, x, C, H, W, nhwc)];
}

__device__ __forceinline__ float sigmoidf_(float v) { return 1.0f / (1.0f + expf(-v)); }

// decode_logits_f32: C == 1 -> sigmoid; C == 2 -> sigmoid(l_person - l_other);
// C > 2 -> softmax over channels, person channel (max-subtracted, stable).
extern "C" __global__ void decode_logits_f32(const float* __restrict__ raw, float* __restrict__ prob,
                                             int C, int H, int W, int nhwc, int person) {
    int x = blockIdx.x * blockDim.x + threadIdx.x, y = blockIdx.y * blockDim.y + threadIdx.y, n = blockIdx.z;
    if (x >= W || y >= H) return;
    float p;
    if (C == 1) {
        p = sigmoidf_(raw[tensor_index(n, 0, y, x, C, H, W, nhwc)]);
    } else if (C == 2) {
        p = sigmoidf_(raw[tensor_index(n, person, y, x, C, H, W, nhwc)] - raw[tensor_index(n, 1 - person, y, x, C, H, W, nhwc)]);
    } else {
        float m = raw[tensor_index(n, 0, y, x, C, H, W, nhwc)];
        for (int c = 1; c < C; ++c) m = fmaxf(m, raw[tensor_index(n, c, y, x, C, H, W, nhwc)]);
        float s = 0.0f, e_p = 0.0f;
        for (int c = 0; c < C; ++c) {
            float e = expf(raw[tensor_index(n, c, y, x, C, H, W, nhwc)] - m);
            s += e;
            if (c == person) e_p = e;
        }
        p = e_p / s;
    }
    prob[((long long)n * H + y) * W + x] = p;
}
