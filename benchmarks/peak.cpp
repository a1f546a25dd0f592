// This core's arithmetic peak, for benchmarks/export.py: binary multiply-accumulates as the packed kernels do them
// (a broadcast activation word ANDed with weight vectors, VPOPCNTQ, add; 512 binary MACs an instruction triple) and
// float32 fused multiply-adds on 512-bit vectors (16 MACs each), with enough independent accumulators to hide latency.
// Compiled by the benchmark with the machine's compiler; each function returns a checksum so nothing is optimized out.
#include <cstdint>
#include <immintrin.h>

extern "C" {
__attribute__((target("avx512f,avx512vpopcntdq")))
int64_t daq_peak_binary(int64_t iterations) {            // 8 x 4 x 512 binary MACs an iteration
    __m512i w[32], acc[4];
    for (int i = 0; i < 32; ++i) w[i] = _mm512_set1_epi64((long long)(0x9e3779b97f4a7c15ULL * (i + 1)));
    for (int i = 0; i < 4; ++i) acc[i] = _mm512_setzero_si512();
    uint64_t a = 0x0123456789abcdefULL;
    for (int64_t it = 0; it < iterations; ++it)
#pragma GCC unroll 8
        for (int k = 0; k < 8; ++k) {
            __m512i x = _mm512_set1_epi64((long long)(a + k));
            asm volatile("" : "+v"(x));                   // an opaque activation: recomputed every time
#pragma GCC unroll 4
            for (int i = 0; i < 4; ++i)
                acc[i] = _mm512_add_epi64(acc[i], _mm512_popcnt_epi64(_mm512_and_si512(w[k * 4 + i], x)));
        }
    return _mm512_reduce_add_epi64(_mm512_add_epi64(_mm512_add_epi64(acc[0], acc[1]), _mm512_add_epi64(acc[2], acc[3])));
}

__attribute__((target("avx512f,fma")))
double daq_peak_fma(int64_t iterations) {                 // 12 x 16 float32 MACs an iteration
    __m512 acc[12];
    const __m512 x = _mm512_set1_ps(0.999f), y = _mm512_set1_ps(1e-3f);
    for (int i = 0; i < 12; ++i) acc[i] = _mm512_set1_ps((float)i);
    for (int64_t it = 0; it < iterations; ++it)
#pragma GCC unroll 12
        for (int i = 0; i < 12; ++i) acc[i] = _mm512_fmadd_ps(acc[i], x, y);
    __m512 s = acc[0];
    for (int i = 1; i < 12; ++i) s = _mm512_add_ps(s, acc[i]);
    return (double)_mm512_reduce_add_ps(s);
}

int daq_peak_supported() {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vpopcntdq")
           && __builtin_cpu_supports("fma");
}
}
