// 3-D convolution kernels (NCDHW, batch 1, float32).
//
// Weights are reordered on the host to [ceil(K/KB)][C/group][kd][kh][kw][KB] (zero-padded
// output channels), so one work-item reads KB output-channel weights of one tap as a vector
// and broadcasts each against a vector of consecutive output voxels along x.
//
// Compile-time parameters (chosen per device, see ConvTuning.swift):
//   KB  output channels per work-item
//   XV  vector width along x (4, 8 or 16)
//   XN  vectors along x per work-item (so XW = XV * XN outputs per row)
//   KX  kernel width (for the stride-1 kernel, so the row loop unrolls into register shuffles)
#include "common.h"

#define XW (XV * XN)
#define CAT(a, b) a##b
#define VEC(n) CAT(float, n)
#define VLOAD(n) CAT(vload, n)
#define VSTORE(n) CAT(vstore, n)
#define floatv VEC(XV)
#define vloadv VLOAD(XV)
#define vstorev VSTORE(XV)

inline floatv activate_v(floatv x, int code, float alpha) {
    switch (code) {
    case ACT_RELU: return fmax(x, (floatv)(0.0f));
    case ACT_LEAKY_RELU: return select(x * alpha, x, x >= (floatv)(0.0f));
    case ACT_SIGMOID: return (floatv)(1.0f) / ((floatv)(1.0f) + exp(-x));
    case ACT_TANH: return tanh(x);
    default: return x;
    }
}

// Stride 1, dilation 1, group 1, any padding. Work-item (xb, y, z + D_out * kb) computes
// XW consecutive outputs along x for KB output channels. Each input row segment the work-item
// needs is loaded once into registers, then every kx tap reads it at a shifted offset.
__kernel void conv3d_s1(
    __global const float* restrict in, __global const float* restrict w, __global const float* restrict bias,
    __global float* restrict out,
    int C, int D, int H, int W,          // input
    int K, int OD, int OH, int OW,       // output
    int KD, int KH, int padD, int padH, int padW,
    int act, float alpha)
{
    const int xb = get_global_id(0);
    const int oy = get_global_id(1);
    const int zk = get_global_id(2);
    const int oz = zk % OD;
    const int kb = zk / OD;
    const int x0 = xb * XW;
    if (oy >= OH || kb * KB >= K) return;

    floatv acc[KB][XN];
    #pragma unroll
    for (int k = 0; k < KB; ++k) {
        #pragma unroll
        for (int j = 0; j < XN; ++j) acc[k][j] = (floatv)(0.0f);
    }

    const int kvol = KD * KH * KX;
    const int xs = x0 - padW;
    const bool rowInside = xs >= 0 && xs + XW + KX - 1 <= W;
    __global const float* wk = w + (size_t)kb * C * kvol * KB;

    for (int c = 0; c < C; ++c) {
        __global const float* inc = in + (size_t)c * D * H * W;
        for (int kz = 0; kz < KD; ++kz) {
            const int iz = oz + kz - padD;
            if (iz < 0 || iz >= D) continue;
            for (int ky = 0; ky < KH; ++ky) {
                const int iy = oy + ky - padH;
                if (iy < 0 || iy >= H) continue;
                __global const float* rowp = inc + ((size_t)iz * H + iy) * W;
                float row[XW + KX - 1];
                if (rowInside) {
                    #pragma unroll
                    for (int i = 0; i < XW + KX - 1; ++i) row[i] = rowp[xs + i];
                } else {
                    #pragma unroll
                    for (int i = 0; i < XW + KX - 1; ++i) {
                        const int ix = xs + i;
                        row[i] = (ix >= 0 && ix < W) ? rowp[ix] : 0.0f;
                    }
                }
                __global const float* wt = wk + (size_t)((c * KD + kz) * KH + ky) * KX * KB;
                #pragma unroll
                for (int kx = 0; kx < KX; ++kx) {
                    floatv v[XN];
                    #pragma unroll
                    for (int j = 0; j < XN; ++j) v[j] = vloadv(0, row + kx + j * XV);
                    #pragma unroll
                    for (int k = 0; k < KB; ++k) {
                        const float wv = wt[kx * KB + k];
                        #pragma unroll
                        for (int j = 0; j < XN; ++j) acc[k][j] = fma(v[j], (floatv)(wv), acc[k][j]);
                    }
                }
            }
        }
    }

    const bool full = x0 + XW <= OW;
    #pragma unroll
    for (int k = 0; k < KB; ++k) {
        const int ok = kb * KB + k;
        if (ok >= K) break;
        const float b = bias[ok];
        __global float* o = out + (((size_t)ok * OD + oz) * OH + oy) * OW;
        #pragma unroll
        for (int j = 0; j < XN; ++j) {
            floatv r = activate_v(acc[k][j] + (floatv)(b), act, alpha);
            if (full) {
                vstorev(r, 0, o + x0 + j * XV);
            } else {
                float tmp[XV];
                vstorev(r, 0, tmp);
                for (int i = 0; i < XV; ++i) {
                    const int ox = x0 + j * XV + i;
                    if (ox < OW) o[ox] = tmp[i];
                }
            }
        }
    }
}

// Any stride, dilation, padding and group (KB must divide the output channels per group,
// which the host guarantees by padding when group == 1 and by KB = 1 otherwise). Work-item
// (xb, y, z + D_out * kb) computes XW outputs along x for KB channels, gathering inputs with
// bounds checks.
__kernel void conv3d_general(
    __global const float* restrict in, __global const float* restrict w, __global const float* restrict bias,
    __global float* restrict out,
    int C, int D, int H, int W,
    int K, int OD, int OH, int OW,
    int KD, int KH, int KWd,
    int sD, int sH, int sW, int dD, int dH, int dW,
    int padD, int padH, int padW,
    int group, int act, float alpha)
{
    const int xb = get_global_id(0);
    const int oy = get_global_id(1);
    const int zk = get_global_id(2);
    const int oz = zk % OD;
    const int kb = zk / OD;
    const int x0 = xb * XW;
    if (oy >= OH || kb * KB >= K) return;

    const int Kpad = (K + KB - 1) / KB * KB;
    const int Cg = C / group;
    const int Kg = Kpad / group;           // output channels per group (host ensures KB | Kg)
    const int g = (kb * KB) / Kg;
    const int kvol = KD * KH * KWd;

    float acc[KB][XW];
    for (int k = 0; k < KB; ++k)
        for (int i = 0; i < XW; ++i) acc[k][i] = 0.0f;

    __global const float* wk = w + (size_t)kb * Cg * kvol * KB;
    for (int cc = 0; cc < Cg; ++cc) {
        const int c = g * Cg + cc;
        __global const float* inc = in + (size_t)c * D * H * W;
        for (int kz = 0; kz < KD; ++kz) {
            const int iz = oz * sD + kz * dD - padD;
            if (iz < 0 || iz >= D) continue;
            for (int ky = 0; ky < KH; ++ky) {
                const int iy = oy * sH + ky * dH - padH;
                if (iy < 0 || iy >= H) continue;
                __global const float* rowp = inc + ((size_t)iz * H + iy) * W;
                __global const float* wt = wk + (size_t)((cc * KD + kz) * KH + ky) * KWd * KB;
                for (int kx = 0; kx < KWd; ++kx) {
                    float v[XW];
                    for (int i = 0; i < XW; ++i) {
                        const int ix = (x0 + i) * sW + kx * dW - padW;
                        v[i] = (ix >= 0 && ix < W) ? rowp[ix] : 0.0f;
                    }
                    for (int k = 0; k < KB; ++k) {
                        const float wv = wt[kx * KB + k];
                        for (int i = 0; i < XW; ++i) acc[k][i] = fma(v[i], wv, acc[k][i]);
                    }
                }
            }
        }
    }
    for (int k = 0; k < KB; ++k) {
        const int ok = kb * KB + k;
        if (ok >= K) break;
        const float b = bias[ok];
        __global float* o = out + (((size_t)ok * OD + oz) * OH + oy) * OW;
        for (int i = 0; i < XW; ++i) {
            const int ox = x0 + i;
            if (ox < OW) o[ox] = activate(acc[k][i] + b, act, alpha);
        }
    }
}

// Transposed convolution, any kernel, stride, padding, dilation and output padding, group 1.
// Weights reordered to [ceil(K/KB)][C][kd][kh][kw][KB]. Each output voxel gathers the input
// voxels whose strided footprint covers it.
__kernel void conv_transpose3d_general(
    __global const float* restrict in, __global const float* restrict w, __global const float* restrict bias,
    __global float* restrict out,
    int C, int D, int H, int W,
    int K, int OD, int OH, int OW,
    int KD, int KH, int KWd,
    int sD, int sH, int sW, int dD, int dH, int dW,
    int padD, int padH, int padW,
    int act, float alpha)
{
    const int xb = get_global_id(0);
    const int oy = get_global_id(1);
    const int zk = get_global_id(2);
    const int oz = zk % OD;
    const int kb = zk / OD;
    const int x0 = xb * XW;
    if (oy >= OH || kb * KB >= K) return;
    const int kvol = KD * KH * KWd;

    float acc[KB][XW];
    for (int k = 0; k < KB; ++k)
        for (int i = 0; i < XW; ++i) acc[k][i] = 0.0f;

    __global const float* wk = w + (size_t)kb * C * kvol * KB;
    for (int kz = 0; kz < KD; ++kz) {
        const int nz = oz + padD - kz * dD;
        if (nz < 0 || nz % sD != 0 || nz / sD >= D) continue;
        const int iz = nz / sD;
        for (int ky = 0; ky < KH; ++ky) {
            const int ny = oy + padH - ky * dH;
            if (ny < 0 || ny % sH != 0 || ny / sH >= H) continue;
            const int iy = ny / sH;
            for (int kx = 0; kx < KWd; ++kx) {
                for (int c = 0; c < C; ++c) {
                    __global const float* rowp = in + (((size_t)c * D + iz) * H + iy) * W;
                    __global const float* wt = wk + (size_t)(((c * KD + kz) * KH + ky) * KWd + kx) * KB;
                    float v[XW];
                    for (int i = 0; i < XW; ++i) {
                        const int nx = x0 + i + padW - kx * dW;
                        v[i] = (nx >= 0 && nx % sW == 0 && nx / sW < W) ? rowp[nx / sW] : 0.0f;
                    }
                    for (int k = 0; k < KB; ++k) {
                        const float wv = wt[k];
                        for (int i = 0; i < XW; ++i) acc[k][i] = fma(v[i], wv, acc[k][i]);
                    }
                }
            }
        }
    }
    for (int k = 0; k < KB; ++k) {
        const int ok = kb * KB + k;
        if (ok >= K) break;
        const float b = bias[ok];
        __global float* o = out + (((size_t)ok * OD + oz) * OH + oy) * OW;
        for (int i = 0; i < XW; ++i) {
            const int ox = x0 + i;
            if (ox < OW) o[ox] = activate(acc[k][i] + b, act, alpha);
        }
    }
}

// Transposed convolution with kernel 2, stride 2, no padding (the U-Net upsampling case).
// Each output voxel receives exactly one input voxel, so this is eight pointwise products, one
// per tap. Work-item (xb, iy * 2 + b, iz * 2 + a + kb-block) takes XW input voxels of one input
// row and writes the two output rows' taps for KB channels. Weights are reordered to
// [ceil(K/KB)][C][2][2][2][KB].
__kernel void conv_transpose3d_k2s2(
    __global const float* restrict in, __global const float* restrict w, __global const float* restrict bias,
    __global float* restrict out,
    int C, int D, int H, int W,
    int K, int OD, int OH, int OW,
    int act, float alpha)
{
    const int xb = get_global_id(0);
    const int oy = get_global_id(1);
    const int zk = get_global_id(2);
    const int oz = zk % OD;
    const int kb = zk / OD;
    const int x0 = xb * XW;                // in input voxels
    if (oy >= OH || kb * KB >= K) return;
    const int iz = oz >> 1, a = oz & 1, iy = oy >> 1, b = oy & 1;

    floatv acc0[KB][XN], acc1[KB][XN];
    #pragma unroll
    for (int k = 0; k < KB; ++k) {
        #pragma unroll
        for (int j = 0; j < XN; ++j) { acc0[k][j] = (floatv)(0.0f); acc1[k][j] = (floatv)(0.0f); }
    }
    const bool full = x0 + XW <= W;
    __global const float* wk = w + (size_t)kb * C * 8 * KB + (size_t)(a * 2 + b) * 2 * KB;
    for (int c = 0; c < C; ++c) {
        __global const float* rowp = in + (((size_t)c * D + iz) * H + iy) * W + x0;
        floatv v[XN];
        if (full) {
            #pragma unroll
            for (int j = 0; j < XN; ++j) v[j] = vloadv(0, rowp + j * XV);
        } else {
            float tmp[XW];
            for (int i = 0; i < XW; ++i) tmp[i] = (x0 + i < W) ? rowp[i] : 0.0f;
            #pragma unroll
            for (int j = 0; j < XN; ++j) v[j] = vloadv(0, tmp + j * XV);
        }
        __global const float* wt = wk + (size_t)c * 8 * KB;
        #pragma unroll
        for (int k = 0; k < KB; ++k) {
            const float w0 = wt[k], w1 = wt[KB + k];
            #pragma unroll
            for (int j = 0; j < XN; ++j) {
                acc0[k][j] = fma(v[j], (floatv)(w0), acc0[k][j]);
                acc1[k][j] = fma(v[j], (floatv)(w1), acc1[k][j]);
            }
        }
    }
    #pragma unroll
    for (int k = 0; k < KB; ++k) {
        const int ok = kb * KB + k;
        if (ok >= K) break;
        const float bb = bias[ok];
        __global float* o = out + (((size_t)ok * OD + oz) * OH + oy) * OW;
        #pragma unroll
        for (int j = 0; j < XN; ++j) {
            float t0[XV], t1[XV];
            vstorev(activate_v(acc0[k][j] + (floatv)(bb), act, alpha), 0, t0);
            vstorev(activate_v(acc1[k][j] + (floatv)(bb), act, alpha), 0, t1);
            for (int i = 0; i < XV; ++i) {
                const int ix = x0 + j * XV + i;
                if (ix < W) { o[2 * ix] = t0[i]; o[2 * ix + 1] = t1[i]; }
            }
        }
    }
}
