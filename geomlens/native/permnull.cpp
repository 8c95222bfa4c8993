/* The permutation null of the rank metrics, without re-ranking the vocabulary: the native
 * version of `geomlens.analysis.permutation._null_torch_block`, term for term.
 *
 * Permutation p shuffles the rows of the target matrix: token v gets the score of token
 * perm_p[v]. Then the permuted top-K are pinv_p[T_j] in the order of the score's own top-K T,
 * and token u falls into the bucket of s at perm_p[u]; the buckets' counts, hence their rank
 * ranges, do not change. So for every permutation, control row and rank group:
 *   DCG@k     = sum_{j<k} gain[pinv[T_j]] / log2(j + 2)      exact for k <= Kx (the exact
 *             slots: the largest finite NDCG cut-off, at least 10)
 *   top1/10   from pinv[T_0..9] against p's top tokens
 *   tail      p's K heaviest tokens u: bucket[perm[u]] gives the discount bracket of their gain
 *             (255: an exact slot, counted there; 254: in the top K below the exact slots,
 *             ranks Kx+1..K); the rest of the gain mass (total minus the exact slots minus the
 *             heavy ones elsewhere) is bracketed by [light_lo, light_hi].
 * The permutations are drawn in torch (`perm_tables`); this code only reads them. The tables
 * are transposed, permT[v * S + p] = perm_p[v] for a block of S permutations: the inner loops
 * run across permutations (gathers from the row's gains and bucket map, which stay in cache).
 *
 * Arithmetic, identical to the torch path: every product is a float32 product; every sum is a
 * float64 sum taken in slot order (j, then the heavy tokens i), rounded to float32 at the end.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <vector>
#include "rows.h"

/* One row of one rank group against S permutations (IDX: the tables' entry type). */
template <typename IDX>
static void null_row(int64_t r, int64_t V, int64_t K, int64_t Kx, int64_t S, int64_t nb,
                     const IDX *permT, const IDX *pinvT, const float *gains, const float *total,
                     const int64_t *heavy, const int64_t *top, const uint8_t *bucket,
                     const float *d_lo, const float *d_hi, const float *disc,
                     const int64_t *kcut, int64_t nk, const double *consts, float *dcg_k,
                     float *dcg_top, float *tail_lo, float *tail_hi, float *top1, float *top10,
                     double *work) {
    const float near_lo = (float)consts[0], near_hi = (float)consts[1];
    const double light_lo = consts[2], light_hi = consts[3];
    const int64_t k10 = Kx < 10 ? Kx : 10;
    const float *g = gains + r * V;
    const float *lo_b = d_lo + r * nb, *hi_b = d_hi + r * nb;
    const int64_t *T = top + r * K, *H = heavy + r * K;
    const uint8_t *bk = bucket + r * V;
    double *acc = work, *slot = work + S, *hmass = work + 2 * S, *lo = work + 3 * S;
    double *hi = work + 4 * S, *hits = work + 5 * S;
    for (int64_t p = 0; p < 6 * S; p++) work[p] = 0.0;
    int64_t c = 0;
    for (int64_t j = 0; j < Kx; j++) {  /* the exact slots */
        const IDX *src = pinvT + T[j] * S;
        const float dj = disc[j];
        for (int64_t p = 0; p < S; p++) {
            const float gu = g[src[p]];
            acc[p] += (double)(gu * dj);
            slot[p] += (double)gu;
        }
        if (j < k10)
            for (int64_t q = 0; q < k10; q++) {
                const int64_t hq = H[q];
                for (int64_t p = 0; p < S; p++) hits[p] += (int64_t)src[p] == hq ? 1.0 : 0.0;
            }
        if (j == 0)
            for (int64_t p = 0; p < S; p++) top1[r * S + p] = (int64_t)src[p] == H[0] ? 1.0f : 0.0f;
        for (; c < nk && kcut[c] == j + 1; c++)
            for (int64_t p = 0; p < S; p++) dcg_k[(r * nk + c) * S + p] = (float)acc[p];
    }
    for (int64_t i = 0; i < K; i++) {  /* p's heavy tokens, where each permutation sends them */
        const IDX *dst = permT + H[i] * S;
        const float gi = g[H[i]];
        for (int64_t p = 0; p < S; p++) {
            uint32_t word;  /* a 4-byte read (the map has 64 bytes of slack after its last
                               row), so that the lookup vectorizes as a dword gather */
            memcpy(&word, bk + dst[p], 4);
            const int b = (int)(word & 0xFFu);
            const float w = b == 255 ? 0.0f : gi;
            const float vlo = b == 254 ? near_lo : lo_b[b < nb ? b : nb - 1];
            const float vhi = b == 254 ? near_hi : hi_b[b < nb ? b : nb - 1];
            hmass[p] += (double)w;
            lo[p] += (double)(w * vlo);
            hi[p] += (double)(w * vhi);
        }
    }
    for (int64_t p = 0; p < S; p++) {  /* the rest of the mass: the widest bracket */
        double light = (double)total[r] - slot[p] - hmass[p];
        light = light > 0.0 ? light : 0.0;
        dcg_top[r * S + p] = (float)acc[p];
        tail_lo[r * S + p] = (float)(lo[p] + light * light_lo);
        tail_hi[r * S + p] = (float)(hi[p] + light * light_hi);
        top10[r * S + p] = (float)hits[p] / (float)k10;
    }
}

/* Control rows [r0, r1) of one rank group (arrays indexed by the global row) against the S
 * permutations of tables of `width` bytes per entry (2: uint16, 4: int32); the first Kx of the
 * K top slots are exact, K heavy tokens. consts: near_lo, near_hi, light_lo, light_hi. Outputs
 * are [n_rows, S] (dcg_k: [n_rows, nk, S]). 0 on success. */
extern "C" int perm_null_rows(int64_t r0, int64_t r1, int64_t V, int64_t K, int64_t Kx,
                              int64_t S, int64_t nb, int64_t width, const void *permT,
                              const void *pinvT, const float *gains, const float *total,
                              const int64_t *heavy, const int64_t *top, const uint8_t *bucket,
                              const float *d_lo, const float *d_hi, const float *disc,
                              const int64_t *kcut, int64_t nk, const double *consts,
                              float *dcg_k, float *dcg_top, float *tail_lo, float *tail_hi,
                              float *top1, float *top10) {
    if (K < 1 || Kx < 1 || Kx > K || nb < 1 || nb > 254 || (width != 2 && width != 4)) return 2;
    return split_rows(r0, r1, [&](int64_t a, int64_t b) {
        std::vector<double> work((size_t)(6 * S));
        for (int64_t r = a; r < b; r++) {
            if (width == 2)
                null_row<uint16_t>(r, V, K, Kx, S, nb, (const uint16_t *)permT,
                                   (const uint16_t *)pinvT, gains, total, heavy, top, bucket,
                                   d_lo, d_hi, disc, kcut, nk, consts, dcg_k, dcg_top, tail_lo,
                                   tail_hi, top1, top10, work.data());
            else
                null_row<int32_t>(r, V, K, Kx, S, nb, (const int32_t *)permT,
                                  (const int32_t *)pinvT, gains, total, heavy, top, bucket, d_lo,
                                  d_hi, disc, kcut, nk, consts, dcg_k, dcg_top, tail_lo, tail_hi,
                                  top1, top10, work.data());
        }
        return 0;
    });
}
