/* The permutation null of the rank metrics, without re-ranking the vocabulary
 * (`geomlens.analysis.permutation`).
 *
 * Permutation p shuffles the rows of the target matrix: token v gets the score of token
 * perm_p[v], s'[v] = s[perm_p[v]]. Then the permuted top-K are pinv_p[T_j] in the order of the
 * score's own top-K T, and token u falls into the bucket of s at perm_p[u]; the buckets' counts,
 * hence their rank ranges, do not change. So for every permutation, control row and rank group:
 *   DCG@k     = sum_{j<k} gain[pinv[T_j]] / log2(j + 2)      exact, k <= K
 *   top1/10   from pinv[T_0..9] against p's top tokens
 *   tail      p's K heaviest tokens u exactly: bucket[perm[u]] (255 = in the top K: counted
 *             above) gives the discount bracket of their gain; the rest of the gain mass (total
 *             minus the top-K slots minus the heavy tail) is bracketed by [1/log2(V+1),
 *             1/log2(K+2)].
 * The tables are transposed, permT[v * P + p] = perm_p[v], so one cache line serves P = 16
 * permutations and the inner loops run across permutations.
 * `perm_tables` draws the permutations: Fisher-Yates driven by xoshiro256** seeded with
 * splitmix64(seed, index), so permutation `index` is the same in every call.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

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

/* Permutations first .. first + P - 1 of `seed` into permT/pinvT [V, P] (and perm [P, V] when
 * not NULL). */
int perm_tables(uint64_t seed, int64_t first, int64_t P, int64_t V, int32_t *permT,
                int32_t *pinvT, int32_t *perm_out) {
    int32_t *perm = malloc((size_t)V * sizeof(int32_t));
    if (!perm) return 1;
    for (int64_t p = 0; p < P; p++) {
        uint64_t x = seed ^ (0xD1B54A32D192ED03ull * (uint64_t)(first + p + 1)), s[4];
        for (int q = 0; q < 4; q++) s[q] = splitmix64(&x);
        for (int64_t v = 0; v < V; v++) perm[v] = (int32_t)v;
        for (int64_t v = V - 1; v > 0; v--) {
            uint32_t j = below(s, (uint32_t)(v + 1));
            int32_t t = perm[v]; perm[v] = perm[j]; perm[j] = t;
        }
        for (int64_t v = 0; v < V; v++) {
            permT[v * P + p] = perm[v];
            pinvT[(int64_t)perm[v] * P + p] = (int32_t)v;
        }
        if (perm_out) memcpy(perm_out + p * V, perm, (size_t)V * sizeof(int32_t));
    }
    free(perm);
    return 0;
}

#define MAXP 64

/* Control rows [r0, r1) of one rank group (arrays indexed by the global row). Outputs are
 * [n_rows, P] (dcg_k: [n_rows, P, nk]); 0 on success. */
int perm_null_rows(int64_t r0, int64_t r1, int64_t V, int64_t K, int64_t P, int64_t nb,
                   const int32_t *permT, const int32_t *pinvT, const float *gains,
                   const float *total, const int64_t *heavy, const int64_t *top,
                   const uint8_t *bucket, const float *d_lo, const float *d_hi,
                   const float *disc, const int64_t *kcut, int64_t nk, float *dcg_k,
                   float *dcg_top, float *tail_lo, float *tail_hi, float *top1, float *top10) {
    if (P > MAXP || K < 1) return 2;
    int64_t k10 = K < 10 ? K : 10;
    double light_lo = 1.0 / log2((double)V + 1.0), light_hi = 1.0 / log2((double)K + 2.0);
    for (int64_t r = r0; r < r1; r++) {
        const float *g = gains + r * V, *lo_b = d_lo + r * nb, *hi_b = d_hi + r * nb;
        const int64_t *T = top + r * K, *H = heavy + r * K;
        const uint8_t *bk = bucket + r * V;
        double acc[MAXP], slot[MAXP], hmass[MAXP], tlo[MAXP], thi[MAXP];
        float t1[MAXP], t10[MAXP];
        for (int64_t p = 0; p < P; p++) {
            acc[p] = slot[p] = hmass[p] = tlo[p] = thi[p] = 0.0;
            t1[p] = t10[p] = 0.0f;
        }
        int64_t c = 0;
        for (int64_t j = 0; j < K; j++) {  /* the top-K slots: exact */
            const int32_t *src = pinvT + T[j] * P;
            for (int64_t p = 0; p < P; p++) {
                float gu = g[src[p]];
                acc[p] += (double)(gu * disc[j]);
                slot[p] += (double)gu;
            }
            if (j == 0)
                for (int64_t p = 0; p < P; p++) t1[p] = src[p] == H[0] ? 1.0f : 0.0f;
            if (j < k10)
                for (int64_t p = 0; p < P; p++)
                    for (int64_t q = 0; q < k10; q++) t10[p] += src[p] == H[q] ? 1.0f : 0.0f;
            for (; c < nk && kcut[c] == j + 1; c++)
                for (int64_t p = 0; p < P; p++) dcg_k[(r * P + p) * nk + c] = (float)acc[p];
        }
        for (int64_t i = 0; i < K; i++) {  /* p's heaviest tokens in the tail: bucket bracket */
            const int32_t *dst = permT + H[i] * P;
            float gi = g[H[i]];
            for (int64_t p = 0; p < P; p++) {
                uint8_t b = bk[dst[p]];
                if (b == 255) continue;  /* in the top K: counted exactly above */
                hmass[p] += (double)gi;
                tlo[p] += (double)(gi * lo_b[b]);
                thi[p] += (double)(gi * hi_b[b]);
            }
        }
        for (int64_t p = 0; p < P; p++) {  /* the rest of the mass: the widest bracket */
            double light = (double)total[r] - slot[p] - hmass[p];
            light = light > 0.0 ? light : 0.0;
            int64_t o = r * P + p;
            dcg_top[o] = (float)acc[p];
            tail_lo[o] = (float)(tlo[p] + light * light_lo);
            tail_hi[o] = (float)(thi[p] + light * light_hi);
            top1[o] = t1[p];
            top10[o] = t10[p] / (float)k10;
        }
    }
    return 0;
}
