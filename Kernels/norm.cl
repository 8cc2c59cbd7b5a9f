// Instance and group normalization, accurate on whole volumes: variances are always sums of
// (x - mean)^2, never E[x^2] - E[x]^2, and every sum is Kahan-compensated.
//
// CPUs (CHUNKED 1): each work-item takes one contiguous chunk of a group, finds the chunk's
// mean and sum of squared deviations in two passes over the chunk (the second pass reads it
// from cache), and norm_combine_moments merges the chunks with Chan et al.'s pairwise formula.
// The volume is read from memory once. GPUs (CHUNKED 0): interleaved partial sums, two global
// passes (mean, then squared deviations), each followed by norm_finalize.
//
// A group g covers `len` contiguous values (its channels are adjacent in NCDHW).
// Compile-time: CHUNKED 1 makes each partial sum read one contiguous chunk (CPUs, caches);
// CHUNKED 0 interleaves the partitions (GPUs, coalesced reads).
#include "common.h"

// Kahan step: sum += v with compensation comp, for scalars or vectors of type T.
#define KAHAN_ADD(T, sum, comp, v) { const T y_ = (v) - comp; const T t_ = sum + y_; comp = (t_ - sum) - y_; sum = t_; }

#if !CHUNKED
// Work-item (p, g): partial sum number p of group g, reading every P-th value (coalesced on
// GPUs). pass 0 sums x; pass 1 sums (x - mean)^2.
__kernel void norm_partial_sums(__global const float* restrict x, __global const float* restrict stats,
                                __global float* restrict partial, long len, int P, int pass)
{
    const int p = get_global_id(0);
    const int g = get_global_id(1);
    if (p >= P) return;
    __global const float* xg = x + (size_t)g * len;
    const float mean = pass == 1 ? stats[2 * g] : 0.0f;
    float sum = 0.0f, comp = 0.0f;
    for (long i = p; i < len; i += P) {
        float v = xg[i] - mean;
        if (pass == 1) v = v * v;
        KAHAN_ADD(float, sum, comp, v)
    }
    partial[(size_t)g * P + p] = sum;
}
#endif

#if CHUNKED
// Work-item (p, g): mean and sum of squared deviations of chunk p of group g, stored at
// moments[2 * (g * P + p)].
__kernel void norm_chunk_moments(__global const float* restrict x, __global float* restrict moments, long len, int P)
{
    const int p = get_global_id(0);
    const int g = get_global_id(1);
    if (p >= P) return;
    __global const float* xg = x + (size_t)g * len;
    const long chunk = (len + P - 1) / P;
    const long begin = min((long)p * chunk, len);
    const long end = min(begin + chunk, len);
    float mean = 0.0f, m2 = 0.0f;
    for (int pass = 0; pass < 2 && end > begin; ++pass) {
        float8 s0 = (float8)(0.0f), s1 = (float8)(0.0f), c0 = (float8)(0.0f), c1 = (float8)(0.0f);
        const float8 m8 = (float8)(mean);
        long i = begin;
        for (; i + 16 <= end; i += 16) {
            float8 a = vload8(0, xg + i) - m8, b = vload8(0, xg + i + 8) - m8;
            if (pass == 1) { a = a * a; b = b * b; }
            KAHAN_ADD(float8, s0, c0, a)
            KAHAN_ADD(float8, s1, c1, b)
        }
        float sum = 0.0f, comp = 0.0f;
        for (; i < end; ++i) {
            float v = xg[i] - mean;
            if (pass == 1) v = v * v;
            KAHAN_ADD(float, sum, comp, v)
        }
        float lanes[16], comps[16];
        vstore8(s0, 0, lanes); vstore8(s1, 0, lanes + 8);
        vstore8(c0, 0, comps); vstore8(c1, 0, comps + 8);
        for (int l = 0; l < 16; ++l) {
            KAHAN_ADD(float, sum, comp, (lanes[l] - comps[l]))
        }
        if (pass == 0) mean = sum / (float)(end - begin); else m2 = sum;
    }
    moments[2 * ((size_t)g * P + p)] = mean;
    moments[2 * ((size_t)g * P + p) + 1] = m2;
}

// Work-item g: merges the chunk moments of group g (Chan, Golub and LeVeque's pairwise update)
// into the mean and 1 / sqrt(variance + epsilon).
__kernel void norm_combine_moments(__global const float* restrict moments, __global float* restrict stats,
                                   long len, int P, int G, float epsilon)
{
    const int g = get_global_id(0);
    if (g >= G) return;
    const long chunk = (len + P - 1) / P;
    float n = 0.0f, mean = 0.0f, m2 = 0.0f;
    for (int p = 0; p < P; ++p) {
        const long begin = min((long)p * chunk, len);
        const float nb = (float)(min(begin + chunk, len) - begin);
        if (nb == 0.0f) continue;
        const float mb = moments[2 * ((size_t)g * P + p)], m2b = moments[2 * ((size_t)g * P + p) + 1];
        const float total = n + nb;
        const float delta = mb - mean;
        mean += delta * (nb / total);
        m2 += m2b + delta * delta * (n * nb / total);
        n = total;
    }
    stats[2 * g] = mean;
    stats[2 * g + 1] = rsqrt(m2 / (float)len + epsilon);
}
#endif

// Work-item g: combines the P partial sums of group g. pass 0 stores the mean; pass 1 stores
// 1 / sqrt(variance + epsilon) next to it.
__kernel void norm_finalize(__global const float* restrict partial, __global float* restrict stats,
                            long len, int P, int G, int pass, float epsilon)
{
    const int g = get_global_id(0);
    if (g >= G) return;
    float sum = 0.0f, comp = 0.0f;
    for (int p = 0; p < P; ++p) {
        KAHAN_ADD(float, sum, comp, partial[(size_t)g * P + p])
    }
    const float mean = sum / (float)len;
    if (pass == 0) stats[2 * g] = mean;
    else stats[2 * g + 1] = rsqrt(mean + epsilon);
}

// y = (x - mean_g) * invstd_g * scale_c + bias_c, then the fused activation. May run in place.
// Work-item (i, c) handles PER_ITEM values of channel c, strided by the local size GROUP.
// `offset` (floats) locates channel 0 in x and y: a streamed run normalizes a tile's channel
// range in place, inside a buffer that also holds other tensors' channels.
__kernel void norm_apply(__global const float* x, __global float* y, __global const float* restrict stats,
                         __global const float* restrict scale, __global const float* restrict bias,
                         long spatial, int channelsPerGroup, int act, float alpha, long offset)
{
    x += offset;
    y += offset;
    const long base = (long)get_group_id(0) * GROUP * PER_ITEM + get_local_id(0);
    const int c = get_global_id(1);
    const int g = c / channelsPerGroup;
    const float m = stats[2 * g], s = stats[2 * g + 1] * scale[c], b = bias[c];
    __global const float* xc = x + (size_t)c * spatial;
    __global float* yc = y + (size_t)c * spatial;
    const long last = min(base + (long)GROUP * PER_ITEM, spatial);
    for (long i = base; i < last; i += GROUP) yc[i] = activate((xc[i] - m) * s + b, act, alpha);
}
