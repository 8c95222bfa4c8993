/* The kernels of permnull.c for one width of the permutation tables, included once per width:
 * IDX is the table entry (int32_t; uint16_t when V <= 65,536, half the bytes to write and read),
 * FN(name) names the function for it, LOAD16(p) loads 16 entries as 16 int32 lanes (AVX-512).
 * Included only from permnull.c, after its helpers. */
/* Permutations first .. first + S - 1 of `seed` as permT/pinvT [V, S] (S a multiple of 16).
 * Threads may fill disjoint ranges [p0, p1) of 16-aligned columns. */
static int FN(tables_range)(uint64_t seed, int64_t first, int64_t p0, int64_t p1, int64_t S,
                        int64_t V, IDX *permT, IDX *pinvT) {
    int32_t *perm = malloc((size_t)(16 * V) * sizeof(int32_t));
    int32_t *pinv = malloc((size_t)(16 * V) * sizeof(int32_t));
    if (!perm || !pinv || S % 16 || p0 % 16) { free(perm); free(pinv); return 1; }
    for (int64_t q0 = p0; q0 < p1; q0 += 16) {
        for (int64_t q = 0; q < 16; q++) {
            int32_t *pm = perm + q * V, *pi = pinv + q * V;
            uint64_t x = seed ^ (0xD1B54A32D192ED03ull * (uint64_t)(first + q0 + q + 1)), s[4];
            for (int k = 0; k < 4; k++) s[k] = splitmix64(&x);
            for (int64_t v = 0; v < V; v++) pm[v] = (int32_t)v;
            for (int64_t v = V - 1; v > 0; v--) {
                uint32_t j = below(s, (uint32_t)(v + 1));
                int32_t t = pm[v]; pm[v] = pm[j]; pm[j] = t;
            }
            for (int64_t v = 0; v < V; v++) pi[pm[v]] = (int32_t)v;
        }
        for (int64_t v = 0; v < V; v++)  /* one 64-byte line per token and table */
            for (int64_t q = 0; q < 16; q++) {
                permT[v * S + q0 + q] = (IDX)perm[q * V + v];
                pinvT[v * S + q0 + q] = (IDX)pinv[q * V + v];
            }
    }
    free(perm); free(pinv);
    return 0;
}

/* p's heaviest tokens: the bucket of the place each permutation sends them to brackets the
 * discount of their gain (code 255: one of the exact slots, counted there; code 254: in the
 * top K below the exact slots, bracketed by [near_lo, near_hi]). */
static void FN(heavy_tail)(int64_t K, int64_t S, int64_t nb, const IDX *restrict permT,
                       const float *restrict g, const int64_t *restrict H,
                       const uint8_t *restrict bk, const float *restrict lo_b,
                       const float *restrict hi_b, float near_lo, float near_hi,
                       float *restrict hmass, float *restrict lo, float *restrict hi) {
#if defined(__AVX512F__)
    if (nb == 64 && S % 16 == 0) {  /* the 64-entry tables live in registers */
        __m512 l0 = _mm512_loadu_ps(lo_b), l1 = _mm512_loadu_ps(lo_b + 16);
        __m512 l2 = _mm512_loadu_ps(lo_b + 32), l3 = _mm512_loadu_ps(lo_b + 48);
        __m512 h0 = _mm512_loadu_ps(hi_b), h1 = _mm512_loadu_ps(hi_b + 16);
        __m512 h2 = _mm512_loadu_ps(hi_b + 32), h3 = _mm512_loadu_ps(hi_b + 48);
        __m512i low8 = _mm512_set1_epi32(0xFF), code = _mm512_set1_epi32(255);
        __m512i bit5 = _mm512_set1_epi32(32), near = _mm512_set1_epi32(254);
        __m512 vnear_lo = _mm512_set1_ps(near_lo), vnear_hi = _mm512_set1_ps(near_hi);
        for (int64_t i = 0; i < K; i++) {
            const IDX *dst = permT + H[i] * S;
            __m512 gi = _mm512_set1_ps(g[H[i]]);
            for (int64_t p = 0; p < S; p += 16) {
                __m512i d = LOAD16(dst + p);
                __m512i b = _mm512_and_si512(_mm512_i32gather_epi32(d, (const void *)bk, 1), low8);
                __mmask16 tail = _mm512_cmpneq_epi32_mask(b, code);
                __mmask16 upper = _mm512_test_epi32_mask(b, bit5);
                __mmask16 m254 = _mm512_cmpeq_epi32_mask(b, near);
                __m512 w = _mm512_maskz_mov_ps(tail, gi);
                __m512 vlo = _mm512_mask_blend_ps(upper, _mm512_permutex2var_ps(l0, b, l1),
                                                  _mm512_permutex2var_ps(l2, b, l3));
                __m512 vhi = _mm512_mask_blend_ps(upper, _mm512_permutex2var_ps(h0, b, h1),
                                                  _mm512_permutex2var_ps(h2, b, h3));
                vlo = _mm512_mask_mov_ps(vlo, m254, vnear_lo);
                vhi = _mm512_mask_mov_ps(vhi, m254, vnear_hi);
                _mm512_storeu_ps(hmass + p, _mm512_add_ps(_mm512_loadu_ps(hmass + p), w));
                _mm512_storeu_ps(lo + p, _mm512_add_ps(_mm512_loadu_ps(lo + p), _mm512_mul_ps(w, vlo)));
                _mm512_storeu_ps(hi + p, _mm512_add_ps(_mm512_loadu_ps(hi + p), _mm512_mul_ps(w, vhi)));
            }
        }
        return;
    }
#endif
    for (int64_t i = 0; i < K; i++) {
        const IDX *restrict dst = permT + H[i] * S;
        float gi = g[H[i]];
        for (int64_t p = 0; p < S; p++) {
            int b = (int)(*(const u32_unaligned *)(bk + dst[p]) & 0xFFu);  /* 4-byte read */
            float w = b == 255 ? 0.0f : gi;
            float vlo = b == 254 ? near_lo : lo_b[b < nb ? b : 0];
            float vhi = b == 254 ? near_hi : hi_b[b < nb ? b : 0];
            hmass[p] += w;
            lo[p] += w * vlo;
            hi[p] += w * vhi;
        }
    }
}

/* Control rows [r0, r1) of one rank group (arrays indexed by the global row) against S
 * permutations: the first Kx of the K top slots are exact, K heavy tokens. Outputs are
 * [n_rows, S] (dcg_k: [n_rows, nk, S]); 0 on success. Sums are float32 over at most K terms
 * per permutation. */
static int FN(null_range)(int64_t r0, int64_t r1, int64_t V, int64_t K, int64_t Kx, int64_t S,
                      int64_t nb, const IDX *restrict permT, const IDX *restrict pinvT,
                      const float *restrict gains, const float *restrict total,
                      const int64_t *restrict heavy, const int64_t *restrict top,
                      const uint8_t *restrict bucket, const float *restrict d_lo,
                      const float *restrict d_hi, const float *restrict disc,
                      const int64_t *restrict kcut, int64_t nk, float *restrict dcg_k,
                      float *restrict dcg_top, float *restrict tail_lo, float *restrict tail_hi,
                      float *restrict top1, float *restrict top10) {
    if (K < 1 || Kx < 1 || Kx > K || nb > 254) return 2;
    int64_t k10 = Kx < 10 ? Kx : 10;
    float light_lo = (float)(1.0 / log2((double)V + 1.0));
    float light_hi = (float)(1.0 / log2((double)Kx + 2.0));
    float near_lo = (float)(1.0 / log2((double)K + 1.0)), near_hi = light_hi;
    float *work = calloc((size_t)(3 * S), sizeof(float));
    if (!work) return 1;
    float *slot = work, *hmass = work + S, *hits = work + 2 * S;
    for (int64_t r = r0; r < r1; r++) {
        const float *restrict g = gains + r * V;
        const float *restrict lo_b = d_lo + r * nb, *restrict hi_b = d_hi + r * nb;
        const int64_t *T = top + r * K, *H = heavy + r * K;
        const uint8_t *restrict bk = bucket + r * V;
        float *restrict acc = dcg_top + r * S, *restrict lo = tail_lo + r * S;
        float *restrict hi = tail_hi + r * S, *restrict t1 = top1 + r * S;
        for (int64_t p = 0; p < S; p++) acc[p] = slot[p] = hmass[p] = hits[p] = lo[p] = hi[p] = 0.0f;
        int64_t c = 0;
        for (int64_t j = 0; j < Kx; j++) {  /* the exact slots */
            const IDX *restrict src = pinvT + T[j] * S;
            float dj = disc[j];
            for (int64_t p = 0; p < S; p++) {
                float gu = g[src[p]];
                acc[p] += gu * dj;
                slot[p] += gu;
            }
            if (j < k10)
                for (int64_t q = 0; q < k10; q++) {
                    int32_t hq = (int32_t)H[q];
                    for (int64_t p = 0; p < S; p++) hits[p] += (int32_t)src[p] == hq ? 1.0f : 0.0f;
                }
            if (j == 0)
                for (int64_t p = 0; p < S; p++) t1[p] = (int32_t)src[p] == (int32_t)H[0] ? 1.0f : 0.0f;
            for (; c < nk && kcut[c] == j + 1; c++)
                memcpy(dcg_k + (r * nk + c) * S, acc, (size_t)S * sizeof(float));
        }
        FN(heavy_tail)(K, S, nb, permT, g, H, bk, lo_b, hi_b, near_lo, near_hi, hmass, lo, hi);
        for (int64_t p = 0; p < S; p++) {  /* the rest of the mass: the widest bracket */
            float light = total[r] - slot[p] - hmass[p];
            light = light > 0.0f ? light : 0.0f;
            lo[p] += light * light_lo;
            hi[p] += light * light_hi;
            top10[r * S + p] = hits[p] / (float)k10;
        }
    }
    free(work);
    return 0;
}

