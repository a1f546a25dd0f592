// daq's packed integer kernels: convolutions of bit-packed levels by AND and popcount.
// The derivation and the tests are in nbs/06_packed.ipynb; daq/packed.py compiles this file (no torch headers: it
// builds in about a second with the machine's C++ compiler) and calls it through ctypes.
//
// Layouts (bit b of word d is channel 64 d + b; unused bits are zero):
//   activations  int64 [N, H, W, planes, words]            plane j holds bit j of each channel's level k_A
//   weights      int64 [taps, planes, words, cout_padded]  plane i holds bit i of k_W; output channels innermost
// Build flags: -O3 -ffp-contract=off (no fused multiply-add: the float epilogue rounds as PyTorch's does).
#include <cstdint>
#include <algorithm>
#include <cstring>
#include <memory>
#include <atomic>
#include <thread>
#include <vector>
#if (defined(__x86_64__) || defined(__i386__)) && !defined(DAQ_PORTABLE_ONLY)   // -DDAQ_PORTABLE_ONLY: plain C++
#include <immintrin.h>
#define DAQ_X86 1
#endif

// --- section: arguments
struct ConvArgs {
    const uint64_t* act; int64_t batch, height, width; int32_t act_planes, words;
    const uint64_t* weight; int64_t cout, cout_padded; int32_t kernel_h, kernel_w, weight_planes, n_w;
    int32_t stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w; int64_t out_h, out_w;
    const float* scale; const float* bias;          // float epilogue: P * scale + bias, float32 [N, H, W, C]
    const int64_t* thresholds; const int64_t* sign; // level epilogue: k = #{j : sign * P >= thresholds[j]}, packed
    int32_t out_bits;                               // 0: the float epilogue; 1..8: planes of the packed output
    void* out; int32_t isa, threads;                // isa: 0 portable, 1 AVX2, 2 AVX-512 (VPOPCNTDQ)
    const float* residual; int64_t residual_stride[4];  // float epilogue, optional: relu(P scale + bias + residual)
    int32_t cin;                                    // input channels (the bits used in each pixel's words)
    const uint64_t* compact;                        // the short-channel weights, prepared once (or null: per call)
};

struct Window {                                     // one output pixel's valid taps (zero padding adds nothing)
    const uint64_t** taps; int32_t* index; int count; int64_t active;   // active = sum_j 2^j popcount(a_j)
};

// --- section: window
// Inlined into each dispatch level, so that its popcounts use that level's instructions.
static inline __attribute__((always_inline)) void window(const ConvArgs& a, int64_t n, int64_t oh, int64_t ow, Window& win) {
    const int64_t pixel_words = (int64_t)a.act_planes * a.words;
    win.count = 0; win.active = 0;
    for (int kh = 0; kh < a.kernel_h; ++kh) {
        int64_t ih = oh * a.stride_h - a.pad_h + (int64_t)kh * a.dilation_h;
        if (ih < 0 || ih >= a.height) continue;
        for (int kw = 0; kw < a.kernel_w; ++kw) {
            int64_t iw = ow * a.stride_w - a.pad_w + (int64_t)kw * a.dilation_w;
            if (iw < 0 || iw >= a.width) continue;
            const uint64_t* x = a.act + ((n * a.height + ih) * a.width + iw) * pixel_words;
            for (int j = 0; j < a.act_planes; ++j)
                for (int d = 0; d < a.words; ++d) win.active += (int64_t)__builtin_popcountll(x[j * a.words + d]) << j;
            win.taps[win.count] = x; win.index[win.count++] = kh * a.kernel_w + kw;
        }
    }
}

// --- section: portable
// sums[co] = sum over taps, weight planes i, activation planes j, words: 2^(i+j) popcount(w_i AND a_j)
static void accumulate_portable(const ConvArgs& a, const Window& win, int64_t* sums) {
    const int64_t cp = a.cout_padded;
    for (int64_t co = 0; co < a.cout; ++co) {
        int64_t s = 0;
        for (int t = 0; t < win.count; ++t)
            for (int i = 0; i < a.weight_planes; ++i) {
                const uint64_t* w = a.weight + ((int64_t)win.index[t] * a.weight_planes + i) * a.words * cp + co;
                for (int j = 0; j < a.act_planes; ++j) {
                    const uint64_t* x = win.taps[t] + (int64_t)j * a.words;
                    int64_t c = 0;
                    for (int d = 0; d < a.words; ++d) c += __builtin_popcountll(w[d * cp] & x[d]);
                    s += c << (i + j);
                }
            }
        sums[co] = s;
    }
}

// P = 2 sum - n_W active, then either P scale + bias (float, NCHW) or the packed levels k = #{j : sign P >= t_j}
static void epilogue_portable(const ConvArgs& a, const Window& win, const int64_t* sums, int64_t n, int64_t oh,
                              int64_t ow) {
    const int64_t offset = (int64_t)a.n_w * win.active;
    if (a.out_bits == 0) {
        float* out = (float*)a.out + ((n * a.out_h + oh) * a.out_w + ow) * a.cout;
        const float* r = a.residual ? a.residual + n * a.residual_stride[0] + oh * a.residual_stride[2]
                                      + ow * a.residual_stride[3] : nullptr;
        for (int64_t co = 0; co < a.cout; ++co) {
            float scaled = (float)(double)(2 * sums[co] - offset) * a.scale[co];
            float y = scaled + a.bias[co];
            if (r) { y = y + r[co * a.residual_stride[1]]; y = y != y ? y : (y > 0.0f ? y : 0.0f); }
            out[co] = y;
        }
        return;
    }
    const int64_t out_words = (a.cout + 63) / 64, levels = (1 << a.out_bits) - 1;
    uint64_t* out = (uint64_t*)a.out + ((n * a.out_h + oh) * a.out_w + ow) * a.out_bits * out_words;
    std::memset(out, 0, sizeof(uint64_t) * a.out_bits * out_words);
    for (int64_t co = 0; co < a.cout; ++co) {
        int64_t q = a.sign[co] * (2 * sums[co] - offset);
        int k = 0;
        for (int64_t j = 0; j < levels; ++j) k += q >= a.thresholds[j * a.cout_padded + co];
        for (int b = 0; b < a.out_bits; ++b) out[b * out_words + co / 64] |= (uint64_t)((k >> b) & 1) << (co % 64);
    }
}

#ifdef DAQ_X86
// --- section: avx2
__attribute__((target("avx2,popcnt")))
static inline __m256i popcount_avx2(__m256i v) {      // per 64-bit lane: nibble table lookups, then byte sums
    const __m256i table = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                           0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i low = _mm256_set1_epi8(0x0f);
    __m256i counts = _mm256_add_epi8(_mm256_shuffle_epi8(table, _mm256_and_si256(v, low)),
                                     _mm256_shuffle_epi8(table, _mm256_and_si256(_mm256_srli_epi16(v, 4), low)));
    return _mm256_sad_epu8(counts, _mm256_setzero_si256());
}

__attribute__((target("avx2,popcnt")))
static void accumulate_avx2(const ConvArgs& a, const Window& win, int64_t* sums) {
    const int64_t cp = a.cout_padded;
    for (int64_t co = 0; co < cp; co += 8) {
        __m256i s0 = _mm256_setzero_si256(), s1 = _mm256_setzero_si256();
        for (int t = 0; t < win.count; ++t)
            for (int i = 0; i < a.weight_planes; ++i) {
                const uint64_t* w = a.weight + ((int64_t)win.index[t] * a.weight_planes + i) * a.words * cp + co;
                for (int j = 0; j < a.act_planes; ++j) {
                    const uint64_t* x = win.taps[t] + (int64_t)j * a.words;
                    __m256i c0 = _mm256_setzero_si256(), c1 = _mm256_setzero_si256();
                    for (int d = 0; d < a.words; ++d) {
                        __m256i xv = _mm256_set1_epi64x((long long)x[d]);
                        c0 = _mm256_add_epi64(c0, popcount_avx2(_mm256_and_si256(
                                 xv, _mm256_loadu_si256((const __m256i*)(w + d * cp)))));
                        c1 = _mm256_add_epi64(c1, popcount_avx2(_mm256_and_si256(
                                 xv, _mm256_loadu_si256((const __m256i*)(w + d * cp + 4)))));
                    }
                    s0 = _mm256_add_epi64(s0, _mm256_slli_epi64(c0, i + j));
                    s1 = _mm256_add_epi64(s1, _mm256_slli_epi64(c1, i + j));
                }
            }
        _mm256_storeu_si256((__m256i*)(sums + co), s0);
        _mm256_storeu_si256((__m256i*)(sums + co + 4), s1);
    }
}

// --- section: avx512
// Eight output channels a vector, B output pixels at a time (each weight vector loaded once for all B), then the
// epilogue on the same registers (the packed output gets 8 channels, a byte, per vector).
__attribute__((target("avx512f,avx512dq,avx512vl,avx512vpopcntdq")))
static inline __attribute__((always_inline)) void epilogue_avx512(const ConvArgs& a, __m512i s, int64_t active,
                                                                  int64_t n, int64_t oh, int64_t ow, int64_t co) {
    const int64_t cp = a.cout_padded, out_words = (a.cout + 63) / 64;
    __m512i p = _mm512_sub_epi64(_mm512_add_epi64(s, s), _mm512_set1_epi64((long long)a.n_w * active));
    if (a.out_bits == 0) {                              // P -> double -> float, as the integer path rounds it
        __m256 y = _mm256_add_ps(_mm256_mul_ps(_mm512_cvtpd_ps(_mm512_cvtepi64_pd(p)), _mm256_loadu_ps(a.scale + co)),
                                 _mm256_loadu_ps(a.bias + co));
        const __mmask8 inside = (__mmask8)(a.cout - co >= 8 ? 0xff : (1u << (a.cout - co)) - 1);
        if (a.residual) {                               // + residual, then ReLU as torch's (NaN stays NaN, -0 -> 0)
            const int64_t* rs = a.residual_stride;
            const float* r = a.residual + n * rs[0] + co * rs[1] + oh * rs[2] + ow * rs[3];
            __m256 add;
            if (rs[1] == 1) add = _mm256_maskz_loadu_ps(inside, r);
            else {
                alignas(32) float lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
                for (int c = 0; c < 8 && co + c < a.cout; ++c) lane[c] = r[c * rs[1]];
                add = _mm256_load_ps(lane);
            }
            y = _mm256_add_ps(y, add);
            y = _mm256_or_ps(_mm256_max_ps(y, _mm256_setzero_ps()), _mm256_cmp_ps(y, y, _CMP_UNORD_Q));
        }
        _mm256_mask_storeu_ps((float*)a.out + ((n * a.out_h + oh) * a.out_w + ow) * a.cout + co, inside, y);
        return;
    }
    uint8_t* packed = (uint8_t*)((uint64_t*)a.out + ((n * a.out_h + oh) * a.out_w + ow) * a.out_bits * out_words
                                 + co / 64) + (co % 64) / 8;
    const __m512i q = _mm512_mullo_epi64(p, _mm512_loadu_si512(a.sign + co));
    if (a.out_bits == 1) {                              // one level: the comparison's mask is the output byte
        *packed = (uint8_t)_mm512_cmpge_epi64_mask(q, _mm512_loadu_si512(a.thresholds + co));
        return;
    }
    __m512i k = _mm512_setzero_si512();
    const int levels = (1 << a.out_bits) - 1;
    for (int j = 0; j < levels; ++j)
        k = _mm512_mask_add_epi64(k, _mm512_cmpge_epi64_mask(q, _mm512_loadu_si512(a.thresholds + j * cp + co)),
                                  k, _mm512_set1_epi64(1));
    for (int b = 0; b < a.out_bits; ++b)                // padded channels never reach a level: their bits stay 0
        packed[b * out_words * 8] = (uint8_t)_mm512_test_epi64_mask(k, _mm512_set1_epi64(1LL << b));
}

// taps[p * count + t]: pixel p's tap t; index[t]: the tap's place in the kernel (the same for all B pixels)
template <int WP, int AP, int B, int WD, int KT>   // WD, KT: words and taps fixed at compile time (0: not)
__attribute__((target("avx512f,avx512dq,avx512vl,avx512vpopcntdq")))
static inline __attribute__((always_inline)) void pixels_avx512(const ConvArgs& a, const uint64_t* const* taps,
        const int32_t* index, int count_, const int64_t* active, int64_t n, int64_t oh, int64_t ow) {
    const int words = WD ? WD : a.words, count = KT ? KT : count_;
    const int64_t cp = a.cout_padded, out_words = (a.cout + 63) / 64;
    if (a.out_bits)
        std::memset((uint64_t*)a.out + ((n * a.out_h + oh) * a.out_w + ow) * a.out_bits * out_words, 0,
                    sizeof(uint64_t) * B * a.out_bits * out_words);
    for (int64_t co = 0; co < cp; co += 8) {
        __m512i s[B];
#pragma GCC unroll 8
        for (int p = 0; p < B; ++p) s[p] = _mm512_setzero_si512();
        for (int t = 0; t < count; ++t)
#pragma GCC unroll 4
            for (int i = 0; i < WP; ++i) {
                const uint64_t* w = a.weight + ((int64_t)index[t] * WP + i) * words * cp + co;
#pragma GCC unroll 4
                for (int j = 0; j < AP; ++j)
                    for (int d = 0; d < words; ++d) {
                        const __m512i wv = _mm512_loadu_si512(w + d * cp);
#pragma GCC unroll 8
                        for (int p = 0; p < B; ++p) {
                            __m512i c = _mm512_popcnt_epi64(_mm512_and_si512(
                                wv, _mm512_set1_epi64((long long)taps[p * count + t][j * words + d])));
                            s[p] = _mm512_add_epi64(s[p], i + j ? _mm512_slli_epi64(c, (unsigned)(i + j)) : c);
                        }
                    }
            }
#pragma GCC unroll 8
        for (int p = 0; p < B; ++p) epilogue_avx512(a, s[p], active[p], n, oh, ow + p, co);
    }
}

// One row: border pixels one at a time, interior ones (every tap inside the image) four at a time.
template <int WP, int AP, int WD, int KT>
__attribute__((target("avx512f,avx512dq,avx512vl,avx512vpopcntdq,popcnt")))
static void rows_avx512(const ConvArgs& args, int64_t first, int64_t last, Window& win, int64_t*) {
    const ConvArgs a = args;            // a local copy: the byte stores of the output cannot alias it (reloads)
    constexpr int B = 4;
    const int count = a.kernel_h * a.kernel_w, words = WD ? WD : a.words;
    const int64_t pixel_words = (int64_t)AP * words;
    std::vector<const uint64_t*> taps(B * count);
    std::vector<int32_t> index(count);
    for (int t = 0; t < count; ++t) index[t] = t;
    int64_t active[B];
    const int64_t lo = (a.pad_w + a.stride_w - 1) / a.stride_w;
    const int64_t reach = a.width - 1 - (int64_t)(a.kernel_w - 1) * a.dilation_w + a.pad_w;
    const int64_t hi = reach < 0 ? 0 : std::min<int64_t>(a.out_w, reach / a.stride_w + 1);
    for (int64_t r = first; r < last; ++r) {
        const int64_t n = r / a.out_h, oh = r % a.out_h, ih = oh * a.stride_h - a.pad_h;
        const bool inside = ih >= 0 && ih + (int64_t)(a.kernel_h - 1) * a.dilation_h < a.height;
        for (int64_t ow = 0; ow < a.out_w;) {
            if (!(inside && ow >= lo && ow + B <= hi)) {
                window(a, n, oh, ow, win);
                pixels_avx512<WP, AP, 1, WD, 0>(a, win.taps, win.index, win.count, &win.active, n, oh, ow);
                ++ow; continue;
            }
            for (int p = 0; p < B; ++p) {
                const uint64_t* x = a.act + ((n * a.height + ih) * a.width + (ow + p) * a.stride_w - a.pad_w)
                                            * pixel_words;
                active[p] = 0;
                for (int kh = 0; kh < a.kernel_h; ++kh)
                    for (int kw = 0; kw < a.kernel_w; ++kw) {
                        const uint64_t* tap = x + ((int64_t)kh * a.dilation_h * a.width + (int64_t)kw * a.dilation_w)
                                                  * pixel_words;
                        taps[p * count + kh * a.kernel_w + kw] = tap;
                        for (int j = 0; j < AP; ++j)
                            for (int d = 0; d < words; ++d)
                                active[p] += (int64_t)__builtin_popcountll(tap[j * words + d]) << j;
                    }
            }
            pixels_avx512<WP, AP, B, WD, KT>(a, taps.data(), index.data(), count, active, n, oh, ow);
            ow += B;
        }
    }
}
#endif

// --- section: avx2 blocked
// AVX2 has no vector popcount: each byte of w AND a is counted by two 16-entry table lookups (VPSHUFB), one per
// nibble. The nibbles are split once (the weights' when loaded, for all B pixels; the activations' once per window),
// so a word costs two ANDs, two lookups and two byte adds. Byte counts (at most 8 a word) are summed over up to 31
// words before VPSADBW turns them into the four 64-bit lanes' totals. Four output channels a vector, eight (one
// output byte) a step, B output pixels at a time, then the epilogue of the AVX-512 path on eight sums.
#ifdef DAQ_X86
static inline void split_nibbles(uint64_t* to, const uint64_t* from, int64_t count) {   // [lo, hi] per word
    for (int64_t k = 0; k < count; ++k) {
        to[2 * k] = from[k] & 0x0f0f0f0f0f0f0f0fULL; to[2 * k + 1] = (from[k] >> 4) & 0x0f0f0f0f0f0f0f0fULL;
    }
}

__attribute__((target("avx2,popcnt")))
static inline __attribute__((always_inline)) void epilogue_avx2(const ConvArgs& a, const int64_t* s, int64_t active,
                                                                int64_t n, int64_t oh, int64_t ow, int64_t co) {
    const int64_t cp = a.cout_padded, out_words = (a.cout + 63) / 64, offset = (int64_t)a.n_w * active;
    if (a.out_bits == 0) {                              // P -> double -> float, then as the AVX-512 epilogue
        alignas(32) float f[8];
        for (int c = 0; c < 8; ++c) f[c] = (float)(double)(2 * s[c] - offset);
        __m256 y = _mm256_add_ps(_mm256_mul_ps(_mm256_load_ps(f), _mm256_loadu_ps(a.scale + co)),
                                 _mm256_loadu_ps(a.bias + co));
        const int inside = (int)std::min<int64_t>(8, a.cout - co);
        const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(inside), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        if (a.residual) {
            const int64_t* rs = a.residual_stride;
            const float* r = a.residual + n * rs[0] + co * rs[1] + oh * rs[2] + ow * rs[3];
            __m256 add;
            if (rs[1] == 1) add = _mm256_maskload_ps(r, mask);
            else {
                alignas(32) float lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
                for (int c = 0; c < inside; ++c) lane[c] = r[c * rs[1]];
                add = _mm256_load_ps(lane);
            }
            y = _mm256_add_ps(y, add);
            y = _mm256_or_ps(_mm256_max_ps(y, _mm256_setzero_ps()), _mm256_cmp_ps(y, y, _CMP_UNORD_Q));
        }
        _mm256_maskstore_ps((float*)a.out + ((n * a.out_h + oh) * a.out_w + ow) * a.cout + co, mask, y);
        return;
    }
    uint8_t* packed = (uint8_t*)((uint64_t*)a.out + ((n * a.out_h + oh) * a.out_w + ow) * a.out_bits * out_words
                                 + co / 64) + (co % 64) / 8;
    const __m256i zero = _mm256_setzero_si256(), off = _mm256_set1_epi64x(offset);
    __m256i q[2], k[2];
    for (int h = 0; h < 2; ++h) {                       // q = sign P (sign = +-1: negate where it is -1)
        const __m256i p = _mm256_loadu_si256((const __m256i*)(s + 4 * h));
        const __m256i neg = _mm256_cmpgt_epi64(zero, _mm256_loadu_si256((const __m256i*)(a.sign + co + 4 * h)));
        q[h] = _mm256_sub_epi64(_mm256_xor_si256(_mm256_sub_epi64(_mm256_add_epi64(p, p), off), neg), neg);
        k[h] = zero;
    }
    if (a.out_bits == 1) {                              // q >= t: not t > q; 4 lanes a movemask
        int below = 0;
        for (int h = 0; h < 2; ++h)
            below |= _mm256_movemask_pd(_mm256_castsi256_pd(_mm256_cmpgt_epi64(
                         _mm256_loadu_si256((const __m256i*)(a.thresholds + co + 4 * h)), q[h]))) << (4 * h);
        *packed = (uint8_t)~below;
        return;
    }
    const int levels = (1 << a.out_bits) - 1;
    for (int j = 0; j < levels; ++j)
        for (int h = 0; h < 2; ++h)                     // k += (q >= t_j): subtract the all-ones "t_j > q" - 1
            k[h] = _mm256_add_epi64(k[h], _mm256_add_epi64(_mm256_cmpgt_epi64(_mm256_loadu_si256(
                       (const __m256i*)(a.thresholds + j * cp + co + 4 * h)), q[h]), _mm256_set1_epi64x(1)));
    for (int b = 0; b < a.out_bits; ++b) {              // bit b of each k, moved to the sign bit
        int bits = 0;
        for (int h = 0; h < 2; ++h)
            bits |= _mm256_movemask_pd(_mm256_castsi256_pd(_mm256_slli_epi64(k[h], 63 - b))) << (4 * h);
        packed[b * out_words * 8] = (uint8_t)bits;
    }
}

// xs: the B pixels' activation words split into nibbles, [B][count][AP][words][lo, hi]; the weight words of tap t,
// plane i are at weight + (index[t] WP + i) words cp (the packed layout, or the compact one with index = kernel row).
template <int WP, int AP, int B, int WD, int KT>
__attribute__((target("avx2,popcnt")))
static inline __attribute__((always_inline)) void pixels_avx2(const ConvArgs& a, const uint64_t* weight,
        const int32_t* index, int count_, int words_, const uint64_t* xs, const int64_t* active, int64_t n,
        int64_t oh, int64_t ow) {
    const int words = WD ? WD : words_, count = KT ? KT : count_;
    const int64_t cp = a.cout_padded, out_words = (a.cout + 63) / 64;
    const __m256i table = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                           0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i low = _mm256_set1_epi8(0x0f), zero = _mm256_setzero_si256();
    if (a.out_bits)
        std::memset((uint64_t*)a.out + ((n * a.out_h + oh) * a.out_w + ow) * a.out_bits * out_words, 0,
                    sizeof(uint64_t) * B * a.out_bits * out_words);
    for (int64_t co = 0; co < cp; co += 8) {
        alignas(32) int64_t sums[B][8];
        for (int h = 0; h < 2; ++h) {
            __m256i q[B];
            for (int p = 0; p < B; ++p) q[p] = zero;
            for (int i = 0; i < WP; ++i)
                for (int j = 0; j < AP; ++j) {
                    __m256i c[B];
                    for (int p = 0; p < B; ++p) c[p] = zero;
                    int adds = 0;
                    for (int t = 0; t < count; ++t) {
                        const uint64_t* w = weight + ((int64_t)index[t] * WP + i) * words * cp + co + 4 * h;
                        for (int d = 0; d < words; ++d) {
                            const __m256i wv = _mm256_loadu_si256((const __m256i*)(w + d * cp));
                            const __m256i lo = _mm256_and_si256(wv, low);
                            const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(wv, 4), low);
                            for (int p = 0; p < B; ++p) {
                                const uint64_t* x = xs + ((((int64_t)p * count + t) * AP + j) * words + d) * 2;
                                const __m256i xl = _mm256_set1_epi64x((long long)x[0]);
                                const __m256i xh = _mm256_set1_epi64x((long long)x[1]);
                                c[p] = _mm256_add_epi8(c[p], _mm256_add_epi8(
                                    _mm256_shuffle_epi8(table, _mm256_and_si256(lo, xl)),
                                    _mm256_shuffle_epi8(table, _mm256_and_si256(hi, xh))));
                            }
                            if (++adds == 31 || (t == count - 1 && d == words - 1)) {   // bytes -> 64-bit lanes
                                for (int p = 0; p < B; ++p) {
                                    const __m256i lanes = _mm256_sad_epu8(c[p], zero);
                                    q[p] = _mm256_add_epi64(q[p], i + j ? _mm256_slli_epi64(lanes, i + j) : lanes);
                                    c[p] = zero;
                                }
                                adds = 0;
                            }
                        }
                    }
                }
            for (int p = 0; p < B; ++p) _mm256_store_si256((__m256i*)(sums[p] + 4 * h), q[p]);
        }
        for (int p = 0; p < B; ++p) epilogue_avx2(a, sums[p], active[p], n, oh, ow + p, co);
    }
}

// One row as rows_avx512: border pixels one at a time, interior ones B at a time; their words split once.
template <int WP, int AP, int WD, int KT>
__attribute__((target("avx2,popcnt")))
static void rows_avx2_blocked(const ConvArgs& args, int64_t first, int64_t last, Window& win, int64_t*) {
    const ConvArgs a = args;
    constexpr int B = 4;
    const int count = a.kernel_h * a.kernel_w, words = WD ? WD : a.words;
    const int64_t pixel_words = (int64_t)AP * words;
    std::vector<uint64_t> xs((size_t)B * count * pixel_words * 2);
    std::vector<int32_t> index(count);
    for (int t = 0; t < count; ++t) index[t] = t;
    int64_t active[B];
    const int64_t lo = (a.pad_w + a.stride_w - 1) / a.stride_w;
    const int64_t reach = a.width - 1 - (int64_t)(a.kernel_w - 1) * a.dilation_w + a.pad_w;
    const int64_t hi = reach < 0 ? 0 : std::min<int64_t>(a.out_w, reach / a.stride_w + 1);
    for (int64_t r = first; r < last; ++r) {
        const int64_t n = r / a.out_h, oh = r % a.out_h, ih = oh * a.stride_h - a.pad_h;
        const bool inside = ih >= 0 && ih + (int64_t)(a.kernel_h - 1) * a.dilation_h < a.height;
        for (int64_t ow = 0; ow < a.out_w;) {
            if (!(inside && ow >= lo && ow + B <= hi)) {
                window(a, n, oh, ow, win);
                for (int t = 0; t < win.count; ++t)
                    split_nibbles(xs.data() + t * pixel_words * 2, win.taps[t], pixel_words);
                pixels_avx2<WP, AP, 1, WD, 0>(a, a.weight, win.index, win.count, words, xs.data(), &win.active,
                                              n, oh, ow);
                ++ow; continue;
            }
            for (int p = 0; p < B; ++p) {
                const uint64_t* x = a.act + ((n * a.height + ih) * a.width + (ow + p) * a.stride_w - a.pad_w)
                                            * pixel_words;
                active[p] = 0;
                for (int kh = 0; kh < a.kernel_h; ++kh)
                    for (int kw = 0; kw < a.kernel_w; ++kw) {
                        const uint64_t* tap = x + ((int64_t)kh * a.dilation_h * a.width + (int64_t)kw * a.dilation_w)
                                                  * pixel_words;
                        split_nibbles(xs.data() + ((int64_t)p * count + kh * a.kernel_w + kw) * pixel_words * 2, tap,
                                      pixel_words);
                        for (int64_t k = 0; k < pixel_words; ++k)
                            active[p] += (int64_t)__builtin_popcountll(tap[k]) << (k / words);
                    }
            }
            pixels_avx2<WP, AP, B, WD, KT>(a, a.weight, index.data(), count, words, xs.data(), active, n, oh, ow);
            ow += B;
        }
    }
}
#endif

// --- section: compact
// Short channel counts: the taps of one kernel row side by side in one or two words. Each input row is copied into a
// zero-padded byte buffer, one pixel every `pitch` bytes (C_in bits rounded up to whole bytes), so the window of
// kernel row kh at output column ow is the bit string starting at byte ow s_w pitch: an unaligned 64-bit load per
// word, the padding already in place (no border cases). The weights are laid out the same way: tap kw at bit
// 8 kw pitch.
struct Compact { int pitch, row_words; int64_t padded_h, padded_w, row_bytes; uint64_t last_mask; };
#ifdef DAQ_X86

static bool compact_layout(const ConvArgs& a, Compact& c) {     // used where it needs fewer words than taps
    if (a.words != 1 || a.dilation_w != 1 || a.kernel_w < 2 || a.kernel_h > 8) return false;
    c.pitch = (a.cin + 7) / 8;
    const int bits = a.kernel_w * 8 * c.pitch;
    c.row_words = (bits + 63) / 64;
    if (c.row_words > 2 || c.row_words >= a.kernel_w) return false;
    c.last_mask = bits % 64 ? (1ULL << (bits % 64)) - 1 : ~0ULL;   // bits beyond the window: the next pixels
    c.padded_h = a.height + 2 * a.pad_h; c.padded_w = a.width + 2 * a.pad_w;
    c.row_bytes = c.padded_w * c.pitch + 8 * c.row_words;           // the last window's loads stay inside
    return true;
}

template <int P> static inline void copy_pixels(uint8_t* to, const uint64_t* from, int64_t width, int planes) {
    for (int64_t iw = 0; iw < width; ++iw) std::memcpy(to + iw * P, from + iw * planes, P);
}

static void compact_copy(const ConvArgs& a, const Compact& c, uint8_t* buffer, int64_t first, int64_t last) {
    for (int64_t r = first; r < last; ++r) {                        // r = (image, padded row)
        const int64_t n = r / c.padded_h, ih = r % c.padded_h - a.pad_h;
        uint8_t* row = buffer + r * a.act_planes * c.row_bytes;
        std::memset(row, 0, a.act_planes * c.row_bytes);
        if (ih < 0 || ih >= a.height) continue;
        const uint64_t* x = a.act + (n * a.height + ih) * a.width * a.act_planes;
        for (int j = 0; j < a.act_planes; ++j) {                    // little-endian: byte b holds channels 8b..8b+7
            uint8_t* to = row + j * c.row_bytes + a.pad_w * c.pitch;
            const uint64_t* from = x + j;
            switch (c.pitch) {                                      // fixed sizes: inlined moves, not memcpy calls
                case 1: for (int64_t iw = 0; iw < a.width; ++iw) to[iw] = (uint8_t)from[iw * a.act_planes]; break;
                case 2: copy_pixels<2>(to, from, a.width, a.act_planes); break;
                case 4: copy_pixels<4>(to, from, a.width, a.act_planes); break;
                default:
                    for (int64_t iw = 0; iw < a.width; ++iw)
                        std::memcpy(to + iw * c.pitch, from + iw * a.act_planes, c.pitch);
            }
        }
    }
}

static std::vector<uint64_t> compact_weights(const ConvArgs& a, const Compact& c) {   // [KH, planes, row words, C]
    const int64_t cp = a.cout_padded;
    std::vector<uint64_t> w((size_t)a.kernel_h * a.weight_planes * c.row_words * cp, 0);
    for (int kh = 0; kh < a.kernel_h; ++kh)
        for (int kw = 0; kw < a.kernel_w; ++kw)
            for (int i = 0; i < a.weight_planes; ++i)
                for (int64_t co = 0; co < cp; ++co) {
                    const uint64_t word = a.weight[((int64_t)(kh * a.kernel_w + kw) * a.weight_planes + i) * cp + co];
                    const int bit = kw * 8 * c.pitch, d = bit / 64, shift = bit % 64;
                    uint64_t* row = w.data() + ((int64_t)(kh * a.weight_planes + i) * c.row_words) * cp + co;
                    row[d * cp] |= word << shift;
                    if (shift && shift + a.cin > 64) row[(d + 1) * cp] |= word >> (64 - shift);   // straddles
                }
    return w;
}

// B output pixels of one row: their window words and active counts, then 8 output channels a vector as above.
template <int WP, int AP, int RW, int B>
__attribute__((target("avx512f,avx512dq,avx512vl,avx512vpopcntdq,popcnt")))
static inline __attribute__((always_inline)) void compact_pixels(const ConvArgs& a, const Compact& c,
        const uint64_t* w, const uint8_t* const* rows, int64_t n, int64_t oh, int64_t ow) {
    const int64_t cp = a.cout_padded, out_words = (a.cout + 63) / 64;
    uint64_t x[B][8][AP][RW];
    int64_t active[B];
    for (int p = 0; p < B; ++p) {
        const int64_t at = (ow + p) * a.stride_w * c.pitch;
        active[p] = 0;
        for (int kh = 0; kh < a.kernel_h; ++kh)
            for (int j = 0; j < AP; ++j)
                for (int d = 0; d < RW; ++d) {
                    uint64_t v;
                    std::memcpy(&v, rows[kh] + j * c.row_bytes + at + 8 * d, 8);
                    if (d == RW - 1) v &= c.last_mask;
                    x[p][kh][j][d] = v;
                    active[p] += (int64_t)__builtin_popcountll(v) << j;
                }
    }
    if (a.out_bits)
        std::memset((uint64_t*)a.out + ((n * a.out_h + oh) * a.out_w + ow) * a.out_bits * out_words, 0,
                    sizeof(uint64_t) * B * a.out_bits * out_words);
    for (int64_t co = 0; co < cp; co += 8) {
        __m512i s[B];
        for (int p = 0; p < B; ++p) s[p] = _mm512_setzero_si512();
        for (int kh = 0; kh < a.kernel_h; ++kh)
            for (int i = 0; i < WP; ++i)
                for (int d = 0; d < RW; ++d) {
                    const __m512i wv = _mm512_loadu_si512(w + ((int64_t)(kh * WP + i) * RW + d) * cp + co);
                    for (int j = 0; j < AP; ++j)
                        for (int p = 0; p < B; ++p) {
                            __m512i cnt = _mm512_popcnt_epi64(_mm512_and_si512(
                                wv, _mm512_set1_epi64((long long)x[p][kh][j][d])));
                            s[p] = _mm512_add_epi64(s[p], i + j ? _mm512_slli_epi64(cnt, (unsigned)(i + j)) : cnt);
                        }
                }
        for (int p = 0; p < B; ++p) epilogue_avx512(a, s[p], active[p], n, oh, ow + p, co);
    }
}

typedef void (*CompactRows)(const ConvArgs&, const Compact&, const uint64_t*, const uint8_t*, int64_t, int64_t);

template <int WP, int AP, int RW>
__attribute__((target("avx512f,avx512dq,avx512vl,avx512vpopcntdq,popcnt")))
static void compact_rows_avx512(const ConvArgs& args, const Compact& c, const uint64_t* w, const uint8_t* buffer,
                                int64_t first, int64_t last) {
    const ConvArgs a = args;            // a local copy: the byte stores of the output cannot alias it (reloads)
    constexpr int B = 4;
    const uint8_t* rows[8];
    for (int64_t r = first; r < last; ++r) {
        const int64_t n = r / a.out_h, oh = r % a.out_h;
        for (int kh = 0; kh < a.kernel_h; ++kh)
            rows[kh] = buffer + ((n * c.padded_h + oh * a.stride_h + (int64_t)kh * a.dilation_h) * a.act_planes)
                                * c.row_bytes;
        int64_t ow = 0;
        for (; ow + B <= a.out_w; ow += B) compact_pixels<WP, AP, RW, B>(a, c, w, rows, n, oh, ow);
        for (; ow < a.out_w; ++ow) compact_pixels<WP, AP, RW, 1>(a, c, w, rows, n, oh, ow);
    }
}

// The compact layout on AVX2: each kernel row's window words (as compact_pixels), split, then pixels_avx2.
template <int WP, int AP, int RW, int B>
__attribute__((target("avx2,popcnt")))
static inline __attribute__((always_inline)) void compact_pixels_avx2(const ConvArgs& a, const Compact& c,
        const uint64_t* w, const uint8_t* const* rows, const int32_t* index, int64_t n, int64_t oh, int64_t ow) {
    uint64_t xs[B * 8 * AP * RW * 2];
    int64_t active[B];
    for (int p = 0; p < B; ++p) {
        const int64_t at = (ow + p) * a.stride_w * c.pitch;
        active[p] = 0;
        for (int kh = 0; kh < a.kernel_h; ++kh)
            for (int j = 0; j < AP; ++j)
                for (int d = 0; d < RW; ++d) {
                    uint64_t v;
                    std::memcpy(&v, rows[kh] + j * c.row_bytes + at + 8 * d, 8);
                    if (d == RW - 1) v &= c.last_mask;
                    active[p] += (int64_t)__builtin_popcountll(v) << j;
                    split_nibbles(xs + (((p * a.kernel_h + kh) * AP + j) * RW + d) * 2, &v, 1);
                }
    }
    pixels_avx2<WP, AP, B, RW, 0>(a, w, index, a.kernel_h, RW, xs, active, n, oh, ow);
}

template <int WP, int AP, int RW>
__attribute__((target("avx2,popcnt")))
static void compact_rows_avx2(const ConvArgs& args, const Compact& c, const uint64_t* w, const uint8_t* buffer,
                              int64_t first, int64_t last) {
    const ConvArgs a = args;
    constexpr int B = 4;
    const uint8_t* rows[8];
    const int32_t index[8] = {0, 1, 2, 3, 4, 5, 6, 7};
    for (int64_t r = first; r < last; ++r) {
        const int64_t n = r / a.out_h, oh = r % a.out_h;
        for (int kh = 0; kh < a.kernel_h; ++kh)
            rows[kh] = buffer + ((n * c.padded_h + oh * a.stride_h + (int64_t)kh * a.dilation_h) * a.act_planes)
                                * c.row_bytes;
        int64_t ow = 0;
        for (; ow + B <= a.out_w; ow += B) compact_pixels_avx2<WP, AP, RW, B>(a, c, w, rows, index, n, oh, ow);
        for (; ow < a.out_w; ++ow) compact_pixels_avx2<WP, AP, RW, 1>(a, c, w, rows, index, n, oh, ow);
    }
}

template <int WP, int AP> static CompactRows compact_rows_shaped(const ConvArgs& a, const Compact& c) {
    if (a.isa == 2) return c.row_words == 1 ? compact_rows_avx512<WP, AP, 1> : compact_rows_avx512<WP, AP, 2>;
    return c.row_words == 1 ? compact_rows_avx2<WP, AP, 1> : compact_rows_avx2<WP, AP, 2>;
}
template <int WP> static CompactRows compact_rows_for(const ConvArgs& a, const Compact& c) {
    const int ap = a.act_planes;
    return ap == 1 ? compact_rows_shaped<WP, 1>(a, c) : ap == 2 ? compact_rows_shaped<WP, 2>(a, c)
         : ap == 3 ? compact_rows_shaped<WP, 3>(a, c) : compact_rows_shaped<WP, 4>(a, c);
}
#endif

static bool takes_compact(const ConvArgs& a, Compact& c) {     // the compact path's condition
#if defined(DAQ_X86) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    return a.isa >= 1 && a.weight_planes <= 4 && a.act_planes <= 4 && compact_layout(a, c);
#else
    (void)a; (void)c; return false;
#endif
}

// --- section: rows
// rows = (image, output row) pairs, one dispatch level's loop each (written out per level: the target attribute
// must sit on the loop itself, so that the inlined window() counts with that level's popcount instruction)
typedef void (*Rows)(const ConvArgs&, int64_t, int64_t, Window&, int64_t*);

static void rows_portable(const ConvArgs& a, int64_t first, int64_t last, Window& win, int64_t* sums) {
    for (int64_t r = first; r < last; ++r)
        for (int64_t ow = 0; ow < a.out_w; ++ow) {
            window(a, r / a.out_h, r % a.out_h, ow, win);
            accumulate_portable(a, win, sums);
            epilogue_portable(a, win, sums, r / a.out_h, r % a.out_h, ow);
        }
}

#ifdef DAQ_X86
__attribute__((target("avx2,popcnt")))
static void rows_avx2(const ConvArgs& a, int64_t first, int64_t last, Window& win, int64_t* sums) {
    for (int64_t r = first; r < last; ++r)
        for (int64_t ow = 0; ow < a.out_w; ++ow) {
            window(a, r / a.out_h, r % a.out_h, ow, win);
            accumulate_avx2(a, win, sums);
            epilogue_portable(a, win, sums, r / a.out_h, r % a.out_h, ow);
        }
}

template <int WP, int AP> static Rows rows_avx512_shaped(const ConvArgs& a) {   // 3x3 and one word specialised
    const bool nine = a.kernel_h * a.kernel_w == 9;
    if (a.words == 1) return nine ? rows_avx512<WP, AP, 1, 9> : rows_avx512<WP, AP, 1, 0>;
    return nine ? rows_avx512<WP, AP, 0, 9> : rows_avx512<WP, AP, 0, 0>;
}
template <int WP> static Rows rows_avx512_for(const ConvArgs& a) {
    const int ap = a.act_planes;
    return ap == 1 ? rows_avx512_shaped<WP, 1>(a) : ap == 2 ? rows_avx512_shaped<WP, 2>(a)
         : ap == 3 ? rows_avx512_shaped<WP, 3>(a) : ap == 4 ? rows_avx512_shaped<WP, 4>(a) : rows_avx2;
}

template <int WP, int AP> static Rows rows_avx2_shaped(const ConvArgs& a) {      // as rows_avx512_shaped
    const bool nine = a.kernel_h * a.kernel_w == 9;
    if (a.words == 1) return nine ? rows_avx2_blocked<WP, AP, 1, 9> : rows_avx2_blocked<WP, AP, 1, 0>;
    return nine ? rows_avx2_blocked<WP, AP, 0, 9> : rows_avx2_blocked<WP, AP, 0, 0>;
}
template <int WP> static Rows rows_avx2_for(const ConvArgs& a) {
    const int ap = a.act_planes;
    return ap == 1 ? rows_avx2_shaped<WP, 1>(a) : ap == 2 ? rows_avx2_shaped<WP, 2>(a)
         : ap == 3 ? rows_avx2_shaped<WP, 3>(a) : ap == 4 ? rows_avx2_shaped<WP, 4>(a) : rows_avx2;
}
#endif

static Rows rows_for(const ConvArgs& a) {                 // the loop for this layer's dispatch level and bit-widths
#ifdef DAQ_X86
    if (a.isa == 2) {
        const int wp = a.weight_planes;
        return wp == 1 ? rows_avx512_for<1>(a) : wp == 2 ? rows_avx512_for<2>(a) : wp == 3 ? rows_avx512_for<3>(a)
             : wp == 4 ? rows_avx512_for<4>(a) : rows_avx2;
    }
    if (a.isa == 1) {
        const int wp = a.weight_planes;
        return wp == 1 ? rows_avx2_for<1>(a) : wp == 2 ? rows_avx2_for<2>(a) : wp == 3 ? rows_avx2_for<3>(a)
             : wp == 4 ? rows_avx2_for<4>(a) : rows_avx2;
    }
#endif
    return rows_portable;
}

static void conv_rows(const ConvArgs* a, int64_t first, int64_t last) {
    std::vector<const uint64_t*> taps(a->kernel_h * a->kernel_w);
    std::vector<int32_t> index(a->kernel_h * a->kernel_w);
    std::vector<int64_t> sums(a->cout_padded);
    Window win{taps.data(), index.data(), 0, 0};
    rows_for(*a)(*a, first, last, win, sums.data());
}

// Rows split over threads, each thread given at least 2048 pixels (a thread costs more to start than fewer do).
template <class F> static void parallel_rows(int64_t rows, int64_t row_pixels, int threads, F body) {
    const int64_t most = rows * row_pixels / 2048;
    if (threads > most) threads = (int)most;
    if (threads > rows) threads = (int)rows;
    if (threads <= 1) { body(0, rows); return; }
    std::vector<std::thread> pool;
    for (int t = 1; t < threads; ++t) pool.emplace_back(body, rows * t / threads, rows * (t + 1) / threads);
    body(0, rows / threads);
    for (auto& th : pool) th.join();
}

// --- section: entry points
extern "C" {
int daq_packed_isa_supported(int isa) {             // compiled in, and supported by this CPU
    if (isa == 0) return 1;
#ifdef DAQ_X86
    __builtin_cpu_init();
    if (isa == 1) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt");
    if (isa == 2) return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq")
                         && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vpopcntdq");
#endif
    return 0;
}

int daq_packed_abi() { return (int)sizeof(ConvArgs); }

void daq_packed_conv(const ConvArgs* a) {
#if defined(DAQ_X86) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    Compact c;
    const int wp = a->weight_planes;
    if (takes_compact(*a, c)) {
        std::vector<uint64_t> own;
        if (!a->compact) own = compact_weights(*a, c);
        const uint64_t* w = a->compact ? a->compact : own.data();
        std::unique_ptr<uint8_t[]> buffer(new uint8_t[a->batch * c.padded_h * a->act_planes * c.row_bytes]);
        parallel_rows(a->batch * c.padded_h, a->width, a->threads,
                      [&](int64_t lo, int64_t hi) { compact_copy(*a, c, buffer.get(), lo, hi); });
        const CompactRows rows = wp == 1 ? compact_rows_for<1>(*a, c) : wp == 2 ? compact_rows_for<2>(*a, c)
                               : wp == 3 ? compact_rows_for<3>(*a, c) : compact_rows_for<4>(*a, c);
        parallel_rows(a->batch * a->out_h, a->out_w, a->threads,
                      [&](int64_t lo, int64_t hi) { rows(*a, c, w, buffer.get(), lo, hi); });
        return;
    }
#endif
    parallel_rows(a->batch * a->out_h, a->out_w, a->threads, [a](int64_t lo, int64_t hi) { conv_rows(a, lo, hi); });
}

// The short-channel weights of a layer, once: their word count (0: the layer does not take the compact path), and
// the words themselves (a call then reads them from ConvArgs::compact instead of laying them out again).
int64_t daq_compact_words(const ConvArgs* a) {
    Compact c;
    if (!takes_compact(*a, c)) return 0;
    return (int64_t)a->kernel_h * a->weight_planes * c.row_words * a->cout_padded;
}

void daq_compact_weights(const ConvArgs* a, uint64_t* out) {
    Compact c;
    if (!takes_compact(*a, c)) return;
#ifdef DAQ_X86
    const std::vector<uint64_t> w = compact_weights(*a, c);
    std::memcpy(out, w.data(), sizeof(uint64_t) * w.size());
#else
    (void)out;
#endif
}

// Float [N, C, H, W] (any strides) -> packed levels: k = round_half_down(clamp((x - lower) / step, 0, n)), with the
// operations of daq.export.input_levels. Channels-last input on AVX-512: 16 channels a vector, each level bit a mask.
static inline int level_of(float x, float lower, float step, float n) {
    float t = (x - lower) / step;
    t = t < 0.0f ? 0.0f : (t > n ? n : t);
    float f = __builtin_floorf(t);
    return t == t ? (int)f + (t - f > 0.5f) : 0;                          // NaN: level 0
}

// level_of does not decrease as x grows (each of its operations is monotone), so level >= j exactly where x >= e_j
// for the smallest float e_j with level_of(e_j) >= j: found by bisection over the floats in order, the levels then
// by comparisons alone (no division). None for a step that is not a positive finite number.
static inline uint32_t float_order(float x) {
    uint32_t u; std::memcpy(&u, &x, 4); return u >> 31 ? ~u : u | 0x80000000u;
}
static inline float ordered_float(uint32_t k) {
    const uint32_t u = k >> 31 ? k & 0x7fffffffu : ~k;
    float x; std::memcpy(&x, &u, 4); return x;
}

static bool level_edges(float lower, float step, float n, int levels, float* edges) {
    if (!(step > 0.0f && step <= 3.4e38f && lower == lower && lower - lower == 0.0f)) return false;
    const uint32_t first = float_order(-__builtin_inff()), last = float_order(__builtin_inff());
    for (int j = 1; j <= levels; ++j) {
        uint32_t lo = first, hi = last;                      // level_of(ordered_float(hi)) >= j throughout
        if (level_of(ordered_float(hi), lower, step, n) < j) return false;
        while (lo < hi) {
            const uint32_t mid = lo + (hi - lo) / 2;
            if (level_of(ordered_float(mid), lower, step, n) >= j) hi = mid; else lo = mid + 1;
        }
        edges[j - 1] = ordered_float(lo);
    }
    return true;
}

#ifdef DAQ_X86
__attribute__((target("avx512f,avx512bw")))                  // 16 values' levels (0 where not inside)
static inline __m512i levels_avx512(const float* src, __mmask16 inside, float lower, float step, float n) {
    const __m512 lo = _mm512_set1_ps(lower), st = _mm512_set1_ps(step), top = _mm512_set1_ps(n);
    __m512 t = _mm512_div_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(inside, src), lo), st);
    const __mmask16 number = _mm512_cmp_ps_mask(t, t, _CMP_ORD_Q);
    t = _mm512_min_ps(_mm512_max_ps(t, _mm512_setzero_ps()), top);      // max/min: NaN handled by the mask below
    __m512 f = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    __m512i k = _mm512_cvttps_epi32(f);
    const __mmask16 up = _mm512_cmp_ps_mask(_mm512_sub_ps(t, f), _mm512_set1_ps(0.5f), _CMP_GT_OQ);
    return _mm512_maskz_mov_epi32(number & inside, _mm512_mask_add_epi32(k, up, k, _mm512_set1_epi32(1)));
}

__attribute__((target("avx512f,avx512bw")))                  // channels last: 16 channels of one pixel a vector
static void pack_pixel_avx512(const float* src, int64_t channels, float lower, float step, float n, int bits,
                              int64_t words, uint64_t* o) {
    for (int64_t c = 0; c < channels; c += 16) {
        const __mmask16 inside = (__mmask16)(channels - c >= 16 ? 0xffff : (1u << (channels - c)) - 1);
        const __m512i k = levels_avx512(src + c, inside, lower, step, n);
        for (int j = 0; j < bits; ++j)
            ((uint16_t*)(o + j * words + c / 64))[(c % 64) / 16] =
                (uint16_t)_mm512_test_epi32_mask(k, _mm512_set1_epi32(1 << j));
    }
}

__attribute__((target("avx512f,avx512bw")))                  // channels last, a row of pixels: words built in registers
static void pack_pixels_avx512(const float* src, int64_t pixels, int64_t channels, float lower, float step, float n,
                               int bits, const float* edges, uint64_t* o) {   // one word a plane (C <= 64), bits <= 4
    const int levels = (1 << bits) - 1;
    for (int64_t p = 0; p < pixels; ++p, src += channels, o += bits) {
        uint64_t word[4] = {0, 0, 0, 0};
        for (int64_t c = 0; c < channels; c += 16) {
            const __mmask16 inside = (__mmask16)(channels - c >= 16 ? 0xffff : (1u << (channels - c)) - 1);
            if (edges && bits == 1) {                         // one comparison: its mask is the plane
                word[0] |= (uint64_t)_mm512_mask_cmp_ps_mask(inside, _mm512_maskz_loadu_ps(inside, src + c),
                                                             _mm512_set1_ps(edges[0]), _CMP_GE_OQ) << c;
                continue;
            }
            __m512i k;
            if (edges) {                                      // k = #{j : x >= edge_j}, NaN nowhere: level 0
                const __m512 x = _mm512_maskz_loadu_ps(inside, src + c);
                k = _mm512_setzero_si512();
                for (int j = 0; j < levels; ++j)
                    k = _mm512_mask_add_epi32(k, _mm512_mask_cmp_ps_mask(inside, x, _mm512_set1_ps(edges[j]),
                                                                         _CMP_GE_OQ), k, _mm512_set1_epi32(1));
            } else k = levels_avx512(src + c, inside, lower, step, n);
            for (int j = 0; j < bits; ++j)
                word[j] |= (uint64_t)_mm512_test_epi32_mask(k, _mm512_set1_epi32(1 << j)) << c;
        }
        for (int j = 0; j < bits; ++j) o[j] = word[j];
    }
}

__attribute__((target("avx512f,avx512bw,popcnt")))           // channels first: 16 pixels of one channel a vector
static void pack_row_avx512(const float* src, int64_t channels, int64_t width, int64_t sc, float lower, float step,
                            float n, int bits, int64_t words, uint64_t* o) {
    std::memset(o, 0, sizeof(uint64_t) * width * bits * words);
    for (int64_t c = 0; c < channels; ++c)
        for (int64_t w = 0; w < width; w += 16) {
            const __mmask16 inside = (__mmask16)(width - w >= 16 ? 0xffff : (1u << (width - w)) - 1);
            const __m512i k = levels_avx512(src + c * sc + w, inside, lower, step, n);
            for (int j = 0; j < bits; ++j)                      // pixel p's bit j of channel c, for each p set
                for (unsigned m = _mm512_test_epi32_mask(k, _mm512_set1_epi32(1 << j)); m; m &= m - 1)
                    o[((w + __builtin_ctz(m)) * bits + j) * words + c / 64] |= 1ULL << (c % 64);
        }
}
#endif

#ifdef DAQ_X86
__attribute__((target("avx2")))            // as pack_pixels_avx512 with its edges: 8 channels a comparison
static void pack_pixels_avx2(const float* src, int64_t pixels, int64_t channels, int bits, const float* edges,
                             uint64_t* o) {
    const int levels = (1 << bits) - 1;
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (int64_t p = 0; p < pixels; ++p, src += channels, o += bits) {
        uint64_t word[4] = {0, 0, 0, 0};
        for (int64_t c = 0; c < channels; c += 8) {
            const __m256i inside = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)std::min<int64_t>(8, channels - c)),
                                                      lane);
            const __m256 x = _mm256_maskload_ps(src + c, inside);
            __m256i k = _mm256_setzero_si256();     // k = #{j : x >= edge_j} (minus the all-ones of each true)
            for (int j = 0; j < levels; ++j)
                k = _mm256_sub_epi32(k, _mm256_castps_si256(_mm256_cmp_ps(x, _mm256_set1_ps(edges[j]), _CMP_GE_OQ)));
            k = _mm256_and_si256(k, inside);
            for (int j = 0; j < bits; ++j)          // bit j of each lane's k, moved to its sign bit
                word[j] |= (uint64_t)(uint32_t)_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_slli_epi32(k, 31 - j)))
                           << c;
        }
        for (int j = 0; j < bits; ++j) o[j] = word[j];
    }
}
#endif

static void pack_input(const float* x, int64_t batch, int64_t channels, int64_t height, int64_t width,
                       const int64_t* strides, float lower, float step, int32_t bits, uint64_t* out, int32_t threads,
                       int32_t isa) {
    const int64_t words = (channels + 63) / 64, sn = strides[0], sc = strides[1], sh = strides[2], sw = strides[3];
    const float n = (float)((1 << bits) - 1);
    float edges[15];
    const bool has_edges = bits <= 4 && level_edges(lower, step, n, (1 << bits) - 1, edges);
    parallel_rows(batch * height, width, threads, [&](int64_t lo, int64_t hi) {
        for (int64_t r = lo; r < hi; ++r) {                 // r = (image, row)
            const int64_t b = r / height, h = r % height;
#ifdef DAQ_X86
            if (isa == 2 && sc == 1 && sw == channels && words == 1 && bits <= 4) {
                pack_pixels_avx512(x + b * sn + h * sh, width, channels, lower, step, n, bits,
                                   has_edges ? edges : nullptr, out + (b * height + h) * width * bits);
                continue;
            }
            if (isa == 1 && has_edges && sc == 1 && sw == channels && words == 1) {
                pack_pixels_avx2(x + b * sn + h * sh, width, channels, bits, edges,
                                 out + (b * height + h) * width * bits);
                continue;
            }
            if (isa == 2 && sw == 1 && sc != 1) {
                pack_row_avx512(x + b * sn + h * sh, channels, width, sc, lower, step, n, bits, words,
                                out + (b * height + h) * width * bits * words);
                continue;
            }
#endif
            for (int64_t w = 0; w < width; ++w) {
                uint64_t* o = out + ((b * height + h) * width + w) * bits * words;
                std::memset(o, 0, sizeof(uint64_t) * bits * words);
                const float* src = x + b * sn + h * sh + w * sw;
#ifdef DAQ_X86
                if (isa == 2 && sc == 1) { pack_pixel_avx512(src, channels, lower, step, n, bits, words, o); continue; }
#endif
                for (int64_t c = 0; c < channels; ++c) {
                    const int k = level_of(src[c * sc], lower, step, n);
                    for (int j = 0; j < bits; ++j) o[j * words + c / 64] |= (uint64_t)((k >> j) & 1) << (c % 64);
                }
            }
        }
    });
}

void daq_pack_input(const float* x, int64_t batch, int64_t channels, int64_t height, int64_t width,
                    const int64_t* strides, float lower, float step, int32_t bits, uint64_t* out, int32_t threads,
                    int32_t isa) {
    pack_input(x, batch, channels, height, width, strides, lower, step, bits, out, threads, isa);
}

// --- section: program
// A segment of a network in one call: quantizing and packing a float value, the convolutions (whose epilogues write
// the next layer's packed levels, or floats with the block's residual added), and ResNet's parameter-free shortcut
// (every s-th row and column, zero channels added on either side). Float values are channels last [N, H, W, C];
// value i lives in buffers[i], laid out and sized by the caller once per input shape.
struct Step {
    int32_t kind, src, dst, residual;          // kind: 0 pack, 1 convolution, 2 shortcut; residual: -1 for none
    ConvArgs* conv;                            // kind 1: the layer with its sizes (act, out, residual: the buffers)
    int64_t batch, height, width, channels;    // kinds 0 and 2: the float source [N, H, W, C]
    float lower, step; int32_t bits, isa;      // kind 0: the input quantizer
    int32_t stride, before, after;             // kind 2: every stride-th row and column; zero channels before, after
};

static void shortcut(const Step& s, const float* x, float* y) {
    const int64_t oh = (s.height + s.stride - 1) / s.stride, ow = (s.width + s.stride - 1) / s.stride;
    const int64_t c = s.channels, oc = c + s.before + s.after;
    for (int64_t n = 0; n < s.batch; ++n)
        for (int64_t h = 0; h < oh; ++h)
            for (int64_t w = 0; w < ow; ++w) {
                float* o = y + ((n * oh + h) * ow + w) * oc;
                std::memset(o, 0, sizeof(float) * s.before);
                std::memcpy(o + s.before, x + ((n * s.height + h * s.stride) * s.width + w * s.stride) * c,
                            sizeof(float) * c);
                std::memset(o + s.before + c, 0, sizeof(float) * s.after);
            }
}

int daq_program_abi() { return (int)sizeof(Step); }

static void run_steps(const Step* steps, int32_t count, void* const* buffers, int32_t threads) {
    for (int32_t i = 0; i < count; ++i) {
        const Step& s = steps[i];
        if (s.kind == 0) {
            const int64_t strides[4] = {s.height * s.width * s.channels, 1, s.width * s.channels, s.channels};
            pack_input((const float*)buffers[s.src], s.batch, s.channels, s.height, s.width, strides, s.lower, s.step,
                       s.bits, (uint64_t*)buffers[s.dst], threads, s.isa);
        } else if (s.kind == 1) {
            ConvArgs a = *s.conv;
            a.act = (const uint64_t*)buffers[s.src]; a.out = buffers[s.dst]; a.threads = threads;
            a.residual = s.residual < 0 ? nullptr : (const float*)buffers[s.residual];
            daq_packed_conv(&a);
        } else shortcut(s, (const float*)buffers[s.src], (float*)buffers[s.dst]);
    }
}

// The steps are laid out for a batch of one; the images are shared out to `workers` threads, each with its own set
// of `values` buffers (buffers[w * values + v]), so every image's values stay in the core's cache. Value 0 of image
// i is at input + i input_bytes, the output value's at output + i output_bytes; `threads` split one image's rows.
void daq_run_program(const Step* steps, int32_t count, void* const* buffers, int32_t values, int32_t out_value,
                     int32_t workers, int32_t threads, int64_t images, const char* input, int64_t input_bytes,
                     char* output, int64_t output_bytes) {
    std::atomic<int64_t> next{0};
    auto work = [&](int32_t w) {
        std::vector<void*> b(buffers + (int64_t)w * values, buffers + (int64_t)(w + 1) * values);
        for (int64_t i = next++; i < images; i = next++) {
            b[0] = (void*)(input + i * input_bytes); b[out_value] = output + i * output_bytes;
            run_steps(steps, count, b.data(), threads);
        }
    };
    std::vector<std::thread> pool;
    for (int32_t w = 1; w < workers; ++w) pool.emplace_back(work, w);
    work(0);
    for (auto& t : pool) t.join();
}
}
