// Reductions over the channel axis, one work-item per voxel.
#include "common.h"

__kernel void softmax_channels(__global const float* x, __global float* y, int C, long spatial)
{
    const long i = get_global_id(0);
    if (i >= spatial) return;
    float m = -INFINITY;
    for (int c = 0; c < C; ++c) m = fmax(m, x[c * spatial + i]);
    float s = 0.0f;
    for (int c = 0; c < C; ++c) s += exp(x[c * spatial + i] - m);
    const float inv = 1.0f / s;
    for (int c = 0; c < C; ++c) y[c * spatial + i] = exp(x[c * spatial + i] - m) * inv;
}

// The index of the largest channel (the first one on ties, as PyTorch and ONNX do).
__kernel void argmax_channels(__global const float* restrict x, __global float* restrict y, int C, long spatial)
{
    const long i = get_global_id(0);
    if (i >= spatial) return;
    float best = x[i];
    int index = 0;
    for (int c = 1; c < C; ++c) {
        const float v = x[c * spatial + i];
        if (v > best) { best = v; index = c; }
    }
    y[i] = (float)index;
}
