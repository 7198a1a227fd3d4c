// A named series of latencies in milliseconds and its percentiles, for the cross-process bench
// programs that time events one by one (peer death, spawn). Header-only.
// Thread-safety: single thread.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <vector>

#include "shmctx/deadline.hpp"

namespace shmctx::bench {

inline double ms_between(Clock::time_point a, Clock::time_point b) {
    return std::chrono::duration<double, std::milli>(b - a).count();
}

struct LatencySeries {
    const char* name;
    std::vector<double> ms;

    /// The p-quantile (0..1) by nearest rank; sorts the samples. Precondition: not empty.
    double quantile(double p) {
        std::sort(ms.begin(), ms.end());
        return ms[std::min(ms.size() - 1,
                           static_cast<std::size_t>(p * static_cast<double>(ms.size())))];
    }
    /// "<name> n=100 p50_ms=0.530 p90_ms=0.650 max_ms=2.800"
    void print(int name_width = 26) {
        if (ms.empty()) {
            std::printf("%-*s n=0\n", name_width, name);
            return;
        }
        const double p50 = quantile(0.50);
        const double p90 = quantile(0.90);
        std::printf("%-*s n=%zu p50_ms=%.3f p90_ms=%.3f max_ms=%.3f\n", name_width, name, ms.size(),
                    p50, p90, ms.back());
    }
};

}  // namespace shmctx::bench
