// Measures the device's attainable float32 FMA throughput: each work-item runs CHAINS
// independent chains of vector FMAs (enough to hide FMA latency), and stores the result so
// the compiler cannot drop the work.
#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define VEC(n) CAT(float, n)
#define floatv VEC(XV)

__kernel void fma_peak(__global float* out, int iterations, float a, float b)
{
    floatv acc[CHAINS];
    #pragma unroll
    for (int c = 0; c < CHAINS; ++c) acc[c] = (floatv)((float)(get_global_id(0) + c));
    const floatv va = (floatv)(a), vb = (floatv)(b);
    for (int i = 0; i < iterations; ++i) {
        #pragma unroll
        for (int c = 0; c < CHAINS; ++c) acc[c] = fma(acc[c], va, vb);
    }
    floatv s = acc[0];
    #pragma unroll
    for (int c = 1; c < CHAINS; ++c) s += acc[c];
    float t = 0.0f;
    float tmp[XV];
    CAT(vstore, XV)(s, 0, tmp);
    for (int i = 0; i < XV; ++i) t += tmp[i];
    out[get_global_id(0)] = t;
}
