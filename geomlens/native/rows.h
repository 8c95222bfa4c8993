/* Splitting rows over threads inside the native code: split_rows(lo, hi, body) calls
 * body(a, b) (an int, 0 on success) on disjoint ranges [a, b) of [lo, hi) over torch's own
 * intra-op thread pool (at::parallel_for: the threads torch's element-wise ops and matmuls just
 * used, sized by torch.set_num_threads) and returns the results or-ed together (1 for a range
 * whose body threw, e.g. std::bad_alloc: no exception crosses the C boundary).
 */
#ifndef GEOMLENS_ROWS_H
#define GEOMLENS_ROWS_H
#include <ATen/Parallel.h>
#include <atomic>
#include <stdint.h>

template <typename Body>
static int split_rows(int64_t lo, int64_t hi, Body &&body) {
    std::atomic<int> err{0};
    at::parallel_for(lo, hi, 1, [&](int64_t a, int64_t b) {
        int code;
        try {
            code = body(a, b);
        } catch (...) {
            code = 1;
        }
        if (code) err |= code;
    });
    return err.load();
}
#endif
