/* Centered average ranks of each row (scipy.stats.rankdata(method="average") minus (V+1)/2),
 * for Spearman's rho over the vocabulary (`geomlens.metrics.correlation.centered_ranks`).
 *
 * An LSD radix sort (three passes of 11 bits) of the float32 keys mapped to order-preserving
 * unsigned integers gives the ascending order in O(V); entries with equal values (compared as
 * floats, so -0.0 == +0.0) share the average of their 1-based ranks. No NaN in the input.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <vector>
#include "rows.h"

#define BITS 11
#define NB (1 << BITS)

static inline uint32_t key_of(float v) {
    uint32_t u;
    memcpy(&u, &v, sizeof(u));
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

/* One stable counting-sort pass on bits [shift, shift + BITS). */
static void pass(const uint32_t *k_in, const int32_t *i_in, uint32_t *k_out, int32_t *i_out,
                 int64_t n, int shift) {
    int64_t count[NB];
    memset(count, 0, sizeof(count));
    for (int64_t j = 0; j < n; j++) count[(k_in[j] >> shift) & (NB - 1)]++;
    int64_t sum = 0;
    for (int b = 0; b < NB; b++) { int64_t c = count[b]; count[b] = sum; sum += c; }
    for (int64_t j = 0; j < n; j++) {
        int64_t d = count[(k_in[j] >> shift) & (NB - 1)]++;
        k_out[d] = k_in[j];
        i_out[d] = i_in[j];
    }
}

/* Rows [r0, r1) of values [n, V] -> out [n, V] centered average ranks (float32). */
static int ranks_range(const float *values, int64_t r0, int64_t r1, int64_t V, float *out) {
    std::vector<uint32_t> ka_((size_t)V), kb_((size_t)V);
    std::vector<int32_t> ia_((size_t)V), ib_((size_t)V);
    uint32_t *ka = ka_.data(), *kb = kb_.data();
    int32_t *ia = ia_.data(), *ib = ib_.data();
    double center = (double)(V + 1) / 2.0;
    for (int64_t r = r0; r < r1; r++) {
        const float *row = values + r * V;
        for (int64_t j = 0; j < V; j++) { ka[j] = key_of(row[j]); ia[j] = (int32_t)j; }
        pass(ka, ia, kb, ib, V, 0);
        pass(kb, ib, ka, ia, V, BITS);
        pass(ka, ia, kb, ib, V, 2 * BITS);  /* ascending order in (kb, ib) */
        float *o = out + r * V;
        for (int64_t s = 0; s < V;) {
            int64_t e = s + 1;
            float v = row[ib[s]];
            while (e < V && row[ib[e]] == v) e++;
            float rank = (float)((double)(s + 1 + e) / 2.0 - center);  /* mean of s+1..e */
            for (int64_t q = s; q < e; q++) o[ib[q]] = rank;
            s = e;
        }
    }
    return 0;
}

/* Rows [r0, r1), split over torch's threads (see rows.h). */
extern "C" int centered_ranks_rows(const float *values, int64_t r0, int64_t r1, int64_t V,
                                   float *out) {
    return split_rows(r0, r1, [&](int64_t a, int64_t b) { return ranks_range(values, a, b, V, out); });
}
