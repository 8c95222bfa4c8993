/* The permutation null of the rank metrics, without re-ranking the vocabulary
 * (`geomlens.analysis.permutation`).
 *
 * Permutation p shuffles the rows of the target matrix: token v gets the score of token
 * perm_p[v], s'[v] = s[perm_p[v]]. Then the permuted top-K are pinv_p[T_j] in the order of the
 * score's own top-K T, and token u falls into the bucket of s at perm_p[u]; the buckets' counts,
 * hence their rank ranges, do not change. So for every permutation, control row and rank group:
 *   DCG@k     = sum_{j<k} gain[pinv[T_j]] / log2(j + 2)      exact for k <= Kx (the exact
 *             slots: the largest finite NDCG cut-off, at least 10)
 *   top1/10   from pinv[T_0..9] against p's top tokens
 *   tail      p's K heaviest tokens u: bucket[perm[u]] gives the discount bracket of their gain
 *             (255: an exact slot, counted there; 254: in the top K below the exact slots,
 *             ranks Kx+1..K); the rest of the gain mass (total minus the exact slots minus the
 *             heavy ones elsewhere) is bracketed by [1/log2(V+1), 1/log2(Kx+2)].
 * The tables are transposed, permT[v * S + p] = perm_p[v] for a block of S permutations: the
 * S permutations of one token are contiguous, so the inner loops run across permutations
 * (vectorized gathers from the row's gains and bucket map, which stay in cache).
 * `perm_tables` draws the permutations: Fisher-Yates driven by xoshiro256** seeded with
 * splitmix64(seed, index), so permutation `index` is the same in every call.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include "rows.h"
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

static inline uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static inline uint64_t xoshiro(uint64_t s[4]) {
    uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3]; s[2] ^= t; s[3] = rotl(s[3], 45);
    return r;
}

/* Uniform integer in [0, n) (Lemire's multiply-shift with rejection). */
static inline uint32_t below(uint64_t s[4], uint32_t n) {
    uint64_t m = (uint64_t)(uint32_t)(xoshiro(s) >> 32) * n;
    uint32_t l = (uint32_t)m;
    if (l < n) {
        uint32_t t = (uint32_t)(-n) % n;
        while (l < t) { m = (uint64_t)(uint32_t)(xoshiro(s) >> 32) * n; l = (uint32_t)m; }
    }
    return (uint32_t)(m >> 32);
}

/* A 4-byte load at any address, so that the byte lookup vectorizes as a dword gather (the
 * bucket map's buffer has 64 bytes of slack after its last row). */
typedef uint32_t u32_unaligned __attribute__((may_alias, aligned(1)));

#if defined(__AVX512F__)
#define LOAD16(p) _mm512_loadu_si512((const void *)(p))
#endif
#define IDX int32_t
#define FN(name) name##_i32
#include "permnull_kernels.h"
#undef IDX
#undef FN
#undef LOAD16
#if defined(__AVX512F__)
#define LOAD16(p) _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(p)))
#endif
#define IDX uint16_t
#define FN(name) name##_u16
#include "permnull_kernels.h"
#undef IDX
#undef FN
#undef LOAD16

/* Columns [p0, p1) of the tables (16-aligned), split over the OpenMP threads (see rows.h). */
int perm_tables(uint64_t seed, int64_t first, int64_t p0, int64_t p1, int64_t S, int64_t V,
                int64_t width, void *permT, void *pinvT) {
    int err = 0;
    if (width == 2 && V <= 65536)
        SPLIT_ROWS(p0, p1, 16, tables_range_u16(seed, first, a, b, S, V, permT, pinvT));
    else if (width == 4)
        SPLIT_ROWS(p0, p1, 16, tables_range_i32(seed, first, a, b, S, V, permT, pinvT));
    else
        return 2;
    return err;
}

/* Rows [r0, r1), split over the OpenMP threads (see rows.h). */
int perm_null_rows(int64_t r0, int64_t r1, int64_t V, int64_t K, int64_t Kx, int64_t S,
                   int64_t nb, int64_t width, const void *permT, const void *pinvT,
                   const float *gains,
                   const float *total, const int64_t *heavy, const int64_t *top,
                   const uint8_t *bucket, const float *d_lo, const float *d_hi,
                   const float *disc, const int64_t *kcut, int64_t nk, float *dcg_k,
                   float *dcg_top, float *tail_lo, float *tail_hi, float *top1, float *top10) {
    int err = 0;
    if (width == 2)
        SPLIT_ROWS(r0, r1, 1, null_range_u16(a, b, V, K, Kx, S, nb, permT, pinvT, gains, total,
                                             heavy, top, bucket, d_lo, d_hi, disc, kcut, nk, dcg_k,
                                             dcg_top, tail_lo, tail_hi, top1, top10));
    else if (width == 4)
        SPLIT_ROWS(r0, r1, 1, null_range_i32(a, b, V, K, Kx, S, nb, permT, pinvT, gains, total,
                                             heavy, top, bucket, d_lo, d_hi, disc, kcut, nk, dcg_k,
                                             dcg_top, tail_lo, tail_hi, top1, top10));
    else
        return 2;
    return err;
}
