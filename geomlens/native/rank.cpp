/* Per-row top-K selection and equal-width bucket sums: what `geomlens.metrics.selection`
 * needs from a [n_positions, d_vocab] matrix, reading each row about twice (it stays in cache);
 * the native version of `selection._torch`, value for value.
 *
 * For each row v[0..V):
 *   top_values/top_indices  the K best entries, best first; "better" = larger value, then
 *                           smaller index (a strict total order: the result is deterministic)
 *   low                     the row minimum
 *   high                    the K-th best value
 *   scale                   n_buckets / (high - low) in float32, 0 when that is not finite
 *   counts[b], gsums[b]     number of entries and sum of gains per bucket
 *                           b = trunc(clamp((v - low) * scale, 0, n_buckets - 1)); the sums are
 *                           float64, taken in index order (as torch's scatter_add_ does)
 * (`topk_rows` gives the top K alone, without the bucket pass.)
 * Selection: the K-th largest of the maxima of blocks of GROUP entries is a threshold t; the
 * entries >= t (at least K) are the candidates, and a quickselect + sort finds the K best among
 * them. No NaN in the input (NaN breaks any ordering).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <vector>
#include "rows.h"
#if defined(__AVX__)
#include <immintrin.h>
#endif

#define GROUP 16
#define BLOCK 256
#define WAYS 8
#define NBIN 1024

typedef struct { float v; int32_t i; } pair_t;

static inline int better(pair_t a, pair_t b) { return a.v > b.v || (a.v == b.v && a.i < b.i); }

/* Move the k best pairs (in any order) to buf[0..k). */
static void select_best(pair_t *buf, int64_t n, int64_t k) {
    int64_t lo = 0, hi = n - 1, target = k - 1;
    while (lo < hi) {
        pair_t pivot = buf[lo + (hi - lo) / 2];
        int64_t i = lo, j = hi;
        while (i <= j) {
            while (better(buf[i], pivot)) i++;
            while (better(pivot, buf[j])) j--;
            if (i <= j) { pair_t t = buf[i]; buf[i] = buf[j]; buf[j] = t; i++; j--; }
        }
        if (target <= j) hi = j;
        else if (target >= i) lo = i;
        else break;
    }
}

/* Maxima of blocks of GROUP consecutive entries and the row minimum, in one read of the row
 * (AVX: 8 lanes at a time; without it, or for a partial last block, scalar). Min/max of
 * non-NaN floats are exact in either form (a -0/+0 tie may return either zero: equal values). */
static int64_t block_max(const float *row, int64_t V, float *bmax, float *low) {
    float mn = INFINITY;
    int64_t nblk = (V + GROUP - 1) / GROUP, blk = 0;
#if defined(__AVX__) && GROUP == 16
    __m256 vmn = _mm256_set1_ps(INFINITY);
    for (; (blk + 1) * GROUP <= V; blk++) {
        __m256 a = _mm256_loadu_ps(row + blk * GROUP), b = _mm256_loadu_ps(row + blk * GROUP + 8);
        vmn = _mm256_min_ps(vmn, _mm256_min_ps(a, b));
        __m256 m = _mm256_max_ps(a, b);
        __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        h = _mm_max_ps(h, _mm_movehl_ps(h, h));
        h = _mm_max_ss(h, _mm_shuffle_ps(h, h, 1));
        bmax[blk] = _mm_cvtss_f32(h);
    }
    float lanes[8];
    _mm256_storeu_ps(lanes, vmn);
    for (int u = 0; u < 8; u++) mn = lanes[u] < mn ? lanes[u] : mn;
#endif
    for (; blk < nblk; blk++) {
        int64_t j0 = blk * GROUP, j1 = j0 + GROUP < V ? j0 + GROUP : V;
        float mx = -INFINITY;
        for (int64_t j = j0; j < j1; j++) {
            mx = row[j] > mx ? row[j] : mx;
            mn = row[j] < mn ? row[j] : mn;
        }
        bmax[blk] = mx;
    }
    *low = mn;
    return nblk;
}

/* The k-th largest (k >= 1) of x[0..n), by quickselect (reorders x). */
static float kth_largest(float *x, int64_t n, int64_t k) {
    int64_t lo = 0, hi = n - 1, target = k - 1;
    while (lo < hi) {
        float pivot = x[lo + (hi - lo) / 2];
        int64_t i = lo, j = hi;
        while (i <= j) {
            while (x[i] > pivot) i++;
            while (pivot > x[j]) j--;
            if (i <= j) { float t = x[i]; x[i] = x[j]; x[j] = t; i++; j--; }
        }
        if (target <= j) hi = j;
        else if (target >= i) lo = i;
        else break;
    }
    return x[target];
}

/* The K-th largest block maximum t, exactly, so at least K entries are >= t: a histogram of
 * the maxima (NBIN bins between their min and max) finds the bin that holds it, and a
 * quickselect among that bin's maxima finds it (cheap for any distribution: heavy-tailed
 * probabilities put most maxima in one bin, but then the selection is over those only). */
static float block_threshold(const float *bmax, int64_t nblk, int64_t K, int32_t *bins,
                             float *work) {
    float mn = INFINITY, mx = -INFINITY;
    for (int64_t b = 0; b < nblk; b++) {
        mn = bmax[b] < mn ? bmax[b] : mn;
        mx = bmax[b] > mx ? bmax[b] : mx;
    }
    float s = (float)(NBIN - 1) / (mx - mn);
    if (!isfinite(s)) return mn;
    int64_t hist[NBIN];
    memset(hist, 0, sizeof(hist));
    for (int64_t b = 0; b < nblk; b++) {
        int32_t q = (int32_t)((bmax[b] - mn) * s);
        q = q < 0 ? 0 : (q > NBIN - 1 ? NBIN - 1 : q);
        bins[b] = q;
        hist[q]++;
    }
    int64_t above = 0, q = NBIN - 1;
    for (; q > 0 && above + hist[q] < K; q--) above += hist[q];
    int64_t m = 0;
    for (int64_t b = 0; b < nblk; b++)
        if (bins[b] == q) work[m++] = bmax[b];
    return kth_largest(work, m, K - above);
}

/* The entries >= t: at least K pass (the K best blocks hold one each, and t is at most the K-th
 * largest block maximum), and only blocks whose maximum is >= t hold any. */
static int64_t candidates(const float *row, int64_t V, int64_t K, const float *bmax,
                          int32_t *bins, float *work, int64_t nblk, pair_t *buf) {
    float t = K >= nblk ? -INFINITY : block_threshold(bmax, nblk, K, bins, work);
    int64_t c = 0;
    for (int64_t blk = 0; blk < nblk; blk++) {
        if (bmax[blk] < t) continue;
        int64_t j0 = blk * GROUP, j1 = j0 + GROUP < V ? j0 + GROUP : V;
        for (int64_t j = j0; j < j1; j++)
            if (row[j] >= t) { buf[c].v = row[j]; buf[c].i = (int32_t)j; c++; }
    }
    return c;
}

/* Sort pairs best first (insertion sort below 16 entries, quicksort above). */
static void sort_best(pair_t *x, int64_t n) {
    while (n > 16) {
        pair_t pivot = x[n / 2];
        int64_t i = 0, j = n - 1;
        while (i <= j) {
            while (better(x[i], pivot)) i++;
            while (better(pivot, x[j])) j--;
            if (i <= j) { pair_t t = x[i]; x[i] = x[j]; x[j] = t; i++; j--; }
        }
        if (j + 1 < n - i) { sort_best(x, j + 1); x += i; n -= i; }
        else { sort_best(x + i, n - i); n = j + 1; }
    }
    for (int64_t i = 1; i < n; i++) {
        pair_t v = x[i];
        int64_t j = i;
        for (; j > 0 && better(v, x[j - 1]); j--) x[j] = x[j - 1];
        x[j] = v;
    }
}

/* Counts: WAYS interleaved histograms break the read-modify-write chains of repeated buckets
 * (integers: any order gives the same counts). Gain sums: float64, one after the other in index
 * order, so that they round exactly like the torch path's. */
static void buckets(const float *row, const float *gains, int64_t V, float low, float scale,
                    int64_t nb, int64_t *counts, double *gsums) {
    int32_t idx[BLOCK];
    int64_t cw[WAYS][256];
    memset(cw, 0, sizeof(cw));
    for (int64_t b = 0; b < nb; b++) gsums[b] = 0.0;
    float top = (float)(nb - 1);
    for (int64_t j0 = 0; j0 < V; j0 += BLOCK) {
        int64_t m = V - j0 < BLOCK ? V - j0 : BLOCK, j = 0;
        for (int64_t q = 0; q < m; q++) {  /* vectorized */
            float t = (row[j0 + q] - low) * scale;
            t = t < 0.0f ? 0.0f : (t > top ? top : t);
            idx[q] = (int32_t)t;
        }
        for (; j + WAYS <= m; j += WAYS)
            for (int u = 0; u < WAYS; u++) cw[u][idx[j + u]] += 1;
        for (; j < m; j++) cw[0][idx[j]] += 1;
        for (int64_t q = 0; q < m; q++) gsums[idx[q]] += (double)gains[j0 + q];
    }
    for (int64_t b = 0; b < nb; b++) {
        counts[b] = 0;
        for (int u = 0; u < WAYS; u++) counts[b] += cw[u][b];
    }
}

/* The K best entries of row[0..V), best first, into top_values/top_indices; the row minimum
 * into *low. bmax, bins, work (nblk each) and buf (V) are workspace. */
static void best_of_row(const float *row, int64_t V, int64_t K, int64_t nblk, float *bmax,
                        int32_t *bins, float *work, pair_t *buf, float *top_values,
                        int64_t *top_indices, float *low) {
    block_max(row, V, bmax, low);
    int64_t c = candidates(row, V, K, bmax, bins, work, nblk, buf);
    select_best(buf, c, K);
    sort_best(buf, K);
    for (int64_t k = 0; k < K; k++) {
        top_values[k] = buf[k].v;
        top_indices[k] = buf[k].i;
    }
}

/* Workspace of `best_of_row` for rows of V entries. */
struct Workspace {
    std::vector<float> bmax, work;
    std::vector<int32_t> bins;
    std::vector<pair_t> buf;
    int64_t nblk;
    explicit Workspace(int64_t V)
        : bmax((size_t)((V + GROUP - 1) / GROUP)), work((size_t)((V + GROUP - 1) / GROUP)),
          bins((size_t)((V + GROUP - 1) / GROUP)), buf((size_t)V), nblk((V + GROUP - 1) / GROUP) {}
};

/* Rows [r0, r1) of values [n, V] (gains likewise); outputs are indexed by the global row.
 * Returns non-zero when the workspace cannot be allocated or an argument is out of range. */
static int rank_range(const float *values, const float *gains, int64_t r0, int64_t r1, int64_t V,
                      int64_t K, int64_t nb, float *top_values, int64_t *top_indices,
                      float *low_out, float *high_out, float *scale_out, int64_t *counts,
                      double *gsums) {
    if (nb < 1 || nb > 256 || K < 1 || K > V) return 2;
    Workspace ws(V);
    for (int64_t r = r0; r < r1; r++) {
        const float *row = values + r * V;
        float low;
        best_of_row(row, V, K, ws.nblk, ws.bmax.data(), ws.bins.data(), ws.work.data(),
                    ws.buf.data(), top_values + r * K, top_indices + r * K, &low);
        float high = top_values[r * K + K - 1];
        float scale = (float)nb / (high - low);
        if (!isfinite(scale)) scale = 0.0f;
        low_out[r] = low; high_out[r] = high; scale_out[r] = scale;
        buckets(row, gains + r * V, V, low, scale, nb, counts + r * nb, gsums + r * nb);
    }
    return 0;
}

/* Top-K only (no buckets): rows [r0, r1) of values [n, V] -> top_values/top_indices [n, K]. */
static int topk_range(const float *values, int64_t r0, int64_t r1, int64_t V, int64_t K,
                      float *top_values, int64_t *top_indices) {
    if (K < 1 || K > V) return 2;
    Workspace ws(V);
    float low;
    for (int64_t r = r0; r < r1; r++)
        best_of_row(values + r * V, V, K, ws.nblk, ws.bmax.data(), ws.bins.data(), ws.work.data(),
                    ws.buf.data(), top_values + r * K, top_indices + r * K, &low);
    return 0;
}

extern "C" int topk_rows(const float *values, int64_t r0, int64_t r1, int64_t V, int64_t K,
                         float *top_values, int64_t *top_indices) {
    return split_rows(r0, r1, [&](int64_t a, int64_t b) {
        return topk_range(values, a, b, V, K, top_values, top_indices);
    });
}

/* The bucket of every entry of rows [r0, r1) of values [n, V], one byte each: the arithmetic of
 * `buckets`, out[r, v] = trunc(clamp((values[r, v] - low[r]) * scale[r], 0, nb - 1)). */
static int codes_range(const float *values, int64_t r0, int64_t r1, int64_t V, const float *low,
                       const float *scale, int64_t nb, uint8_t *out) {
    float top = (float)(nb - 1);
    for (int64_t r = r0; r < r1; r++) {
        const float *row = values + r * V;
        uint8_t *o = out + r * V;
        float lo = low[r], sc = scale[r];
        for (int64_t v = 0; v < V; v++) {  /* vectorized */
            float t = (row[v] - lo) * sc;
            t = t < 0.0f ? 0.0f : (t > top ? top : t);
            o[v] = (uint8_t)(int32_t)t;
        }
    }
    return 0;
}

extern "C" int bucket_codes(const float *values, int64_t r0, int64_t r1, int64_t V,
                            const float *low, const float *scale, int64_t nb, uint8_t *out) {
    if (nb < 1 || nb > 256) return 2;
    return split_rows(r0, r1, [&](int64_t a, int64_t b) {
        return codes_range(values, a, b, V, low, scale, nb, out);
    });
}

/* Rows [r0, r1), split over torch's threads (see rows.h). */
extern "C" int rank_rows(const float *values, const float *gains, int64_t r0, int64_t r1,
                         int64_t V, int64_t K, int64_t nb, float *top_values,
                         int64_t *top_indices, float *low_out, float *high_out, float *scale_out,
                         int64_t *counts, double *gsums) {
    return split_rows(r0, r1, [&](int64_t a, int64_t b) {
        return rank_range(values, gains, a, b, V, K, nb, top_values, top_indices, low_out,
                          high_out, scale_out, counts, gsums);
    });
}

/* counts[r, t] = the number of entries of row r strictly above thresholds[r, t] (strictly
 * below when `below` is non-zero), for T thresholds per row, in one read of the row per
 * threshold (an exact integer: the same as torch's (values > thresholds[:, t:t+1]).sum(-1)). */
static int count_range(const float *values, int64_t r0, int64_t r1, int64_t V, int64_t T,
                       const float *thresholds, int64_t below, int64_t *counts) {
    if (T < 1 || T > 8) return 2;
    for (int64_t r = r0; r < r1; r++) {
        const float *row = values + r * V;
        for (int64_t t = 0; t < T; t++) {
            float th = thresholds[r * T + t];
            int64_t c = 0;
            if (below)
                for (int64_t v = 0; v < V; v++) c += row[v] < th;  /* vectorized */
            else
                for (int64_t v = 0; v < V; v++) c += row[v] > th;  /* vectorized */
            counts[r * T + t] = c;
        }
    }
    return 0;
}

extern "C" int count_above_rows(const float *values, int64_t r0, int64_t r1, int64_t V,
                                int64_t T, const float *thresholds, int64_t below,
                                int64_t *counts) {
    return split_rows(r0, r1, [&](int64_t a, int64_t b) {
        return count_range(values, a, b, V, T, thresholds, below, counts);
    });
}
