// Resize of the spatial axes, nearest or trilinear, with ONNX coordinate transformations.
// One work-item per output voxel: (x, y, z + OD * c).
#include "common.h"

#define CT_HALF_PIXEL 0
#define CT_ALIGN_CORNERS 1
#define CT_ASYMMETRIC 2
#define CT_PYTORCH_HALF_PIXEL 3

inline float source_coordinate(int o, int inSize, int outSize, float scale, int transform)
{
    switch (transform) {
    case CT_ALIGN_CORNERS: return outSize > 1 ? (float)o * (float)(inSize - 1) / (float)(outSize - 1) : 0.0f;
    case CT_ASYMMETRIC: return (float)o / scale;
    case CT_PYTORCH_HALF_PIXEL: return outSize > 1 ? ((float)o + 0.5f) / scale - 0.5f : 0.0f;
    default: return ((float)o + 0.5f) / scale - 0.5f;
    }
}

// rounding: 0 round_prefer_floor, 1 round_prefer_ceil, 2 floor, 3 ceil
inline int nearest_index(float s, int rounding, int size)
{
    int i;
    switch (rounding) {
    case 1: i = (int)floor(s + 0.5f); break;
    case 2: i = (int)floor(s); break;
    case 3: i = (int)ceil(s); break;
    default: i = (s - floor(s) == 0.5f) ? (int)floor(s) : (int)floor(s + 0.5f); break;
    }
    return clamp(i, 0, size - 1);
}

__kernel void resize_nearest(__global const float* restrict in, __global float* restrict out,
                             int D, int H, int W, int OD, int OH, int OW,
                             float scaleD, float scaleH, float scaleW, int transform, int rounding)
{
    const int ox = get_global_id(0), oy = get_global_id(1), zc = get_global_id(2);
    if (ox >= OW || oy >= OH) return;
    const int oz = zc % OD, c = zc / OD;
    const int iz = nearest_index(source_coordinate(oz, D, OD, scaleD, transform), rounding, D);
    const int iy = nearest_index(source_coordinate(oy, H, OH, scaleH, transform), rounding, H);
    const int ix = nearest_index(source_coordinate(ox, W, OW, scaleW, transform), rounding, W);
    out[(((size_t)c * OD + oz) * OH + oy) * OW + ox] = in[(((size_t)c * D + iz) * H + iy) * W + ix];
}

inline void linear_taps(int o, int inSize, int outSize, float scale, int transform, int* i0, int* i1, float* t)
{
    float s = source_coordinate(o, inSize, outSize, scale, transform);
    s = clamp(s, 0.0f, (float)(inSize - 1));
    const int f = (int)floor(s);
    *i0 = f;
    *i1 = min(f + 1, inSize - 1);
    *t = s - (float)f;
}

__kernel void resize_linear(__global const float* restrict in, __global float* restrict out,
                            int D, int H, int W, int OD, int OH, int OW,
                            float scaleD, float scaleH, float scaleW, int transform)
{
    const int ox = get_global_id(0), oy = get_global_id(1), zc = get_global_id(2);
    if (ox >= OW || oy >= OH) return;
    const int oz = zc % OD, c = zc / OD;
    int z0, z1, y0, y1, x0, x1;
    float tz, ty, tx;
    linear_taps(oz, D, OD, scaleD, transform, &z0, &z1, &tz);
    linear_taps(oy, H, OH, scaleH, transform, &y0, &y1, &ty);
    linear_taps(ox, W, OW, scaleW, transform, &x0, &x1, &tx);
    __global const float* p = in + (size_t)c * D * H * W;
    #define AT(z, y, x) p[((size_t)(z) * H + (y)) * W + (x)]
    const float c00 = mix(AT(z0, y0, x0), AT(z0, y0, x1), tx);
    const float c01 = mix(AT(z0, y1, x0), AT(z0, y1, x1), tx);
    const float c10 = mix(AT(z1, y0, x0), AT(z1, y0, x1), tx);
    const float c11 = mix(AT(z1, y1, x0), AT(z1, y1, x1), tx);
    #undef AT
    out[(((size_t)c * OD + oz) * OH + oy) * OW + ox] = mix(mix(c00, c01, ty), mix(c10, c11, ty), tz);
}
