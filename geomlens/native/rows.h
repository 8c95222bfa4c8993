/* Splitting rows over threads inside a kernel. Compiled with -fopenmp, a kernel's exported
 * entry point splits its range [lo, hi) over the calling thread's OpenMP team: inside torch's
 * process that is torch's own libgomp pool (the same soname is loaded once), so the kernel
 * runs on the threads torch's element-wise ops and matmuls just used, sized by
 * torch.set_num_threads, instead of competing with them while they spin-wait. Without OpenMP
 * the range runs on the calling thread (and Python splits it, see `geomlens.native.run_rows`).
 */
#ifndef GEOMLENS_ROWS_H
#define GEOMLENS_ROWS_H
#include <stdint.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* 1 when the kernels split their rows themselves (compiled with OpenMP). */
int geomlens_parallel(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

/* Run CALL (an int expression of the range [a, b)) on disjoint ranges of [lo, hi) whose
 * starts are multiples of `unit` from lo, one per thread; the results are or-ed into `err`
 * (an int in scope). */
#ifdef _OPENMP
#define SPLIT_ROWS(lo, hi, unit, CALL)                                                     \
    do {                                                                                   \
        int64_t lo_ = (lo), hi_ = (hi), unit_ = (unit);                                    \
        int64_t units_ = (hi_ - lo_ + unit_ - 1) / unit_;                                  \
        int threads_ = omp_get_max_threads();                                              \
        if (threads_ > units_) threads_ = units_ > 0 ? (int)units_ : 1;                    \
        _Pragma("omp parallel num_threads(threads_) reduction(|:err)")                     \
        {                                                                                  \
            int64_t t_ = omp_get_thread_num(), n_ = omp_get_num_threads();                 \
            int64_t a = lo_ + units_ * t_ / n_ * unit_, b = lo_ + units_ * (t_ + 1) / n_ * unit_; \
            if (b > hi_) b = hi_;                                                          \
            if (b > a) err |= (CALL);                                                      \
        }                                                                                  \
    } while (0)
#else
#define SPLIT_ROWS(lo, hi, unit, CALL)                                                     \
    do {                                                                                   \
        int64_t a = (lo), b = (hi);                                                        \
        if (b > a) err |= (CALL);                                                          \
    } while (0)
#endif
#endif
