// Elementwise kernels. Each work-item handles PER_ITEM values, strided by the work-group size
// GROUP (a compile-time constant equal to the launch's local size), so that a GPU work-group
// reads contiguous memory while a CPU work-item (GROUP 1) walks a contiguous chunk that the
// compiler can vectorize.
#include "common.h"

#define FOR_EACH_INDEX(n) \
    const long first__ = (long)get_group_id(0) * GROUP * PER_ITEM + get_local_id(0); \
    const long last__ = min(first__ + (long)GROUP * PER_ITEM, (long)(n)); \
    for (long i = first__; i < last__; i += GROUP) {
#define END_FOR_EACH }

// y = act(x). May run in place.
__kernel void unary(__global const float* x, __global float* y, long n, int act, float alpha)
{
    FOR_EACH_INDEX(n)
        y[i] = activate(x[i], act, alpha);
    END_FOR_EACH
}

// PReLU with one slope (mode 0), one per channel (1) or one per value (2). May run in place.
__kernel void prelu(__global const float* x, __global float* y, __global const float* restrict slope,
                    long n, long spatial, int mode)
{
    FOR_EACH_INDEX(n)
        const float v = x[i];
        const float a = slope[mode == 2 ? i : mode == 1 ? i / spatial : 0];
        y[i] = v >= 0.0f ? v : v * a;
    END_FOR_EACH
}

// y = act(a op b) with b the same shape (mode 0), one value per channel (1) or a scalar (2).
// op 0 adds, op 1 multiplies. May run in place on a.
__kernel void binary(__global const float* a, __global const float* b, __global float* y,
                     long n, long spatial, int mode, int op, int act, float alpha)
{
    FOR_EACH_INDEX(n)
        const float bv = mode == 0 ? b[i] : mode == 1 ? b[i / spatial] : b[0];
        const float r = op == 0 ? a[i] + bv : a[i] * bv;
        y[i] = activate(r, act, alpha);
    END_FOR_EACH
}

// y = act(x * scale_c + shift_c): inference batch normalization that could not be folded.
__kernel void channel_affine(__global const float* x, __global float* y, __global const float* restrict scale,
                             __global const float* restrict shift, long n, long spatial, int act, float alpha)
{
    FOR_EACH_INDEX(n)
        const int c = (int)(i / spatial);
        y[i] = activate(x[i] * scale[c] + shift[c], act, alpha);
    END_FOR_EACH
}

// y[offset + i] = x[i]: one input of a channel concatenation.
__kernel void copy_to_offset(__global const float* restrict x, __global float* restrict y, long n, long offset)
{
    FOR_EACH_INDEX(n)
        y[offset + i] = x[i];
    END_FOR_EACH
}
