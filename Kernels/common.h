// Shared helpers for every CascadeSeg kernel (OpenCL C 1.2, no extensions).
#ifndef CASCADESEG_COMMON_H
#define CASCADESEG_COMMON_H

// Fused activation codes, matching FusedActivation.kernelCode in Swift.
#define ACT_NONE 0
#define ACT_RELU 1
#define ACT_LEAKY_RELU 2
#define ACT_SIGMOID 3
#define ACT_TANH 4

inline float activate(float x, int code, float alpha) {
    switch (code) {
    case ACT_RELU: return fmax(x, 0.0f);
    case ACT_LEAKY_RELU: return x >= 0.0f ? x : x * alpha;
    case ACT_SIGMOID: return 1.0f / (1.0f + exp(-x));
    case ACT_TANH: return tanh(x);
    default: return x;
    }
}

#endif
