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
//   KX  kernel width and SX stride along x of conv3d_blocked (so its inner loop fully unrolls)
//   TX  x blocks per work-item of conv3d_blocked, CC input channels per cache chunk
#include "common.h"

#define XW (XV * XN)
#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
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

#if XV == 4
#define LANES (int4)(0, 1, 2, 3)
#define intv int4
#elif XV == 8
#define LANES (int8)(0, 1, 2, 3, 4, 5, 6, 7)
#define intv int8
#else
#define LANES (int16)(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
#define intv int16
#endif

// Loads the XV input values that output lanes x0 + j*XV + i read at tap kx. SX is the stride
// along x (1 or 2). With stride 2 the lanes read every other value of 2*XV consecutive ones.
#if SX == 1
#define LOAD_TAP(p) vloadv(0, (p))
#elif XV == 16
#define LOAD_TAP(p) ((float16)(vload16(0, (p)).even, vload16(0, (p) + 16).even))
#elif XV == 8
#define LOAD_TAP(p) (vload16(0, (p)).even)
#else
#define LOAD_TAP(p) (vload8(0, (p)).even)
#endif

// Accumulates one (kz, ky) row pair over `count` input channels: the innermost loop has a
// fixed trip count and no branches. MASKED zeroes the lanes that fall outside the row (x < 0 or
// x >= W); their loads still read inside the activation arena, whose guard band covers them.
#define ACCUMULATE_ROWS(MASKED, count)                                                 \
    for (int c = 0; c < (count); ++c, src += cstride, wt += wstride) {                 \
        _Pragma("unroll")                                                              \
        for (int kx = 0; kx < KX; ++kx) {                                              \
            floatv v[XN];                                                              \
            _Pragma("unroll")                                                          \
            for (int j = 0; j < XN; ++j) {                                             \
                v[j] = LOAD_TAP(src + kx + j * XV * SX);                               \
                if (MASKED) v[j] = select((floatv)(0.0f), v[j], valid[kx][j]);         \
            }                                                                          \
            _Pragma("unroll")                                                          \
            for (int k = 0; k < KB; ++k) {                                             \
                const floatv wv = (floatv)(wt[kx * KB + k]);                           \
                _Pragma("unroll")                                                      \
                for (int j = 0; j < XN; ++j) acc[k][j] = fma(v[j], wv, acc[k][j]);     \
            }                                                                          \
        }                                                                              \
    }

// Group 1, dilation 1, stride SX along x (compile-time 1 or 2) and any stride along z and y,
// any padding, kernel width KX (compile-time). Work-item (tile, y, z + D_out * kb) computes TX
// blocks of XW consecutive outputs along x for KB output channels.
//
// Cache blocking: the input channels are taken CC at a time, and each chunk is applied to all
// TX blocks before the next chunk, so the chunk's weights (CC * taps * KB floats) are read from
// the L1 cache TX times instead of once per block from further away. The blocks' partial sums
// wait in private memory between chunks. TX = 1 with CC >= C is the plain register-blocked loop.
__kernel void conv3d_blocked(
    __global const float* restrict in, __global const float* restrict w, __global const float* restrict bias,
    __global float* restrict out,
    int C, int D, int H, int W,          // input
    int K, int OD, int OH, int OW,       // output
    int KD, int KH, int sD, int sH, int padD, int padH, int padW,
    int act, float alpha)
{
    const int tile = get_global_id(0);
    const int oy = get_global_id(1);
    const int zk = get_global_id(2);
    const int oz = zk % OD;
    const int kb = zk / OD;
    if (oy >= OH || kb * KB >= K || tile * TX * XW >= OW) return;

    const int kvol = KD * KH * KX;
    const size_t cstride = (size_t)D * H * W;
    const size_t wstride = (size_t)kvol * KB;
    const int span = (XW - 1) * SX + KX;                // input values a block reads per row

#if TX > 1
    floatv partial[TX][KB][XN];
#endif
    floatv acc[KB][XN];

    for (int c0 = 0; c0 < C; c0 += CC) {
        const int count = min(CC, C - c0);
        for (int t = 0; t < TX; ++t) {
            const int x0 = (tile * TX + t) * XW;
            if (x0 >= OW) break;
            #pragma unroll
            for (int k = 0; k < KB; ++k) {
                #pragma unroll
                for (int j = 0; j < XN; ++j) {
#if TX > 1
                    acc[k][j] = c0 == 0 ? (floatv)(0.0f) : partial[t][k][j];
#else
                    acc[k][j] = c0 == 0 ? (floatv)(0.0f) : acc[k][j];
#endif
                }
            }
            const int xs = x0 * SX - padW;              // first input x this block reads
            const bool inside = xs >= 0 && xs + span <= W;
            intv valid[KX][XN];
            #pragma unroll
            for (int kx = 0; kx < KX; ++kx) {
                #pragma unroll
                for (int j = 0; j < XN; ++j) {
                    const intv x = (intv)(xs + kx + j * XV * SX) + LANES * SX;
                    valid[kx][j] = x >= (intv)(0) && x < (intv)(W);
                }
            }
            for (int kz = 0; kz < KD; ++kz) {
                const int iz = oz * sD + kz - padD;
                if (iz < 0 || iz >= D) continue;
                for (int ky = 0; ky < KH; ++ky) {
                    const int iy = oy * sH + ky - padH;
                    if (iy < 0 || iy >= H) continue;
                    __global const float* src = in + (size_t)c0 * cstride + ((size_t)iz * H + iy) * W + xs;
                    __global const float* wt = w + ((size_t)kb * C + c0) * wstride + (size_t)(kz * KH + ky) * KX * KB;
                    if (inside) {
                        ACCUMULATE_ROWS(0, count)
                    } else {
                        ACCUMULATE_ROWS(1, count)
                    }
                }
            }
            if (c0 + CC < C) {
#if TX > 1
                #pragma unroll
                for (int k = 0; k < KB; ++k) {
                    #pragma unroll
                    for (int j = 0; j < XN; ++j) partial[t][k][j] = acc[k][j];
                }
#endif
                continue;
            }

            // Last chunk: bias, activation, store.
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
    }
}

// Bias, activation and store of a work-item's KB x XW scalar accumulators (general kernels).
inline void store_scalar_block(float acc[KB][XW], __global const float* restrict bias, __global float* restrict out,
                               int kb, int K, int OD, int OH, int OW, int oz, int oy, int x0, int act, float alpha)
{
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
    store_scalar_block(acc, bias, out, kb, K, OD, OH, OW, oz, oy, x0, act, alpha);
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
    store_scalar_block(acc, bias, out, kb, K, OD, OH, OW, oz, oy, x0, act, alpha);
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
            const floatv r0 = activate_v(acc0[k][j] + (floatv)(bb), act, alpha);
            const floatv r1 = activate_v(acc1[k][j] + (floatv)(bb), act, alpha);
            const int ix0 = x0 + j * XV;
            if (full) {
                // Interleave the two x taps into 2*XV consecutive outputs.
#if XV == 4
                vstore8(shuffle2(r0, r1, (uint8)(0, 4, 1, 5, 2, 6, 3, 7)), 0, o + 2 * ix0);
#elif XV == 8
                vstore16(shuffle2(r0, r1, (uint16)(0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15)), 0, o + 2 * ix0);
#else
                vstore16(shuffle2(r0, r1, (uint16)(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23)), 0, o + 2 * ix0);
                vstore16(shuffle2(r0, r1, (uint16)(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31)), 0, o + 2 * ix0 + 16);
#endif
            } else {
                float t0[XV], t1[XV];
                vstorev(r0, 0, t0);
                vstorev(r1, 0, t1);
                for (int i = 0; i < XV; ++i) {
                    const int ix = ix0 + i;
                    if (ix < W) { o[2 * ix] = t0[i]; o[2 * ix + 1] = t1[i]; }
                }
            }
        }
    }
}
