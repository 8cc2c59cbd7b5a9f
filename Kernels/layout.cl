// Kernels that move values between layouts: padding and slicing. One work-item per output
// voxel: (x, y, z + OD * c).
#include "common.h"

inline int pad_source(int o, int pad, int size, int mode)
{
    int i = o - pad;
    if (i >= 0 && i < size) return i;
    if (mode == 1) {            // reflect (edge value not repeated)
        if (i < 0) i = -i;
        if (i >= size) i = 2 * (size - 1) - i;
        return i;
    }
    if (mode == 2) return clamp(i, 0, size - 1);  // edge
    return -1;                  // constant
}

// mode: 0 constant, 1 reflect, 2 edge
__kernel void pad3d(__global const float* restrict in, __global float* restrict out,
                    int D, int H, int W, int OD, int OH, int OW,
                    int padD, int padH, int padW, int mode, float value)
{
    const int ox = get_global_id(0), oy = get_global_id(1), zc = get_global_id(2);
    if (ox >= OW || oy >= OH) return;
    const int oz = zc % OD, c = zc / OD;
    const int iz = pad_source(oz, padD, D, mode), iy = pad_source(oy, padH, H, mode), ix = pad_source(ox, padW, W, mode);
    const float v = (iz < 0 || iy < 0 || ix < 0) ? value : in[(((size_t)c * D + iz) * H + iy) * W + ix];
    out[(((size_t)c * OD + oz) * OH + oy) * OW + ox] = v;
}

__kernel void slice5d(__global const float* restrict in, __global float* restrict out,
                      int D, int H, int W, int OD, int OH, int OW,
                      int startC, int startD, int startH, int startW,
                      int stepC, int stepD, int stepH, int stepW)
{
    const int ox = get_global_id(0), oy = get_global_id(1), zc = get_global_id(2);
    if (ox >= OW || oy >= OH) return;
    const int oz = zc % OD, oc = zc / OD;
    const int c = startC + oc * stepC, z = startD + oz * stepD, y = startH + oy * stepH, x = startW + ox * stepW;
    out[(((size_t)oc * OD + oz) * OH + oy) * OW + ox] = in[(((size_t)c * D + z) * H + y) * W + x];
}
