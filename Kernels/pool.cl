// Max and average pooling. One work-item per output voxel: (x, y, z + OD * c).
#include "common.h"

__kernel void pool3d(__global const float* restrict in, __global float* restrict out,
                     int D, int H, int W, int OD, int OH, int OW,
                     int kD, int kH, int kW, int sD, int sH, int sW, int dD, int dH, int dW,
                     int padD, int padH, int padW, int padEndD, int padEndH, int padEndW,
                     int isMax, int countIncludePad)
{
    const int ox = get_global_id(0), oy = get_global_id(1), zc = get_global_id(2);
    if (ox >= OW || oy >= OH) return;
    const int oz = zc % OD, c = zc / OD;
    __global const float* inc = in + (size_t)c * D * H * W;
    float best = -INFINITY, sum = 0.0f;
    int count = 0;
    for (int kz = 0; kz < kD; ++kz) {
        const int iz = oz * sD + kz * dD - padD;
        for (int ky = 0; ky < kH; ++ky) {
            const int iy = oy * sH + ky * dH - padH;
            for (int kx = 0; kx < kW; ++kx) {
                const int ix = ox * sW + kx * dW - padW;
                const bool inside = iz >= 0 && iz < D && iy >= 0 && iy < H && ix >= 0 && ix < W;
                if (inside) {
                    const float v = inc[((size_t)iz * H + iy) * W + ix];
                    best = fmax(best, v);
                    sum += v;
                    count += 1;
                } else if (countIncludePad && iz < D + padEndD && iy < H + padEndH && ix < W + padEndW) {
                    count += 1;  // a padded position inside the padded extent counts as zero
                                 // (the extent ends at the end pads, which may differ from the begin pads)
                }
            }
        }
    }
    out[(((size_t)c * OD + oz) * OH + oy) * OW + ox] = isMax ? best : sum / (float)max(count, 1);
}
