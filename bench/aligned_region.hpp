// Zeroed, page-aligned process memory standing in for a shared mapping in the single-process
// ring benchmarks (bench_ring.cpp, counters_upkeep.cpp). Thread-safety: none needed (owned by
// one benchmark fixture; the bytes inside follow the ring's own rules).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <new>
#include <span>

#include "shmctx/shm/layout.hpp"

namespace shmctx::bench {

struct AlignedRegion {
    explicit AlignedRegion(std::size_t bytes)
        : size(shm::align_up(bytes, 4096)),
          data(static_cast<std::byte*>(std::aligned_alloc(4096, size))) {
        if (data == nullptr) throw std::bad_alloc();
        std::fill_n(data, size, std::byte{0});
    }
    ~AlignedRegion() { std::free(data); }
    AlignedRegion(const AlignedRegion&) = delete;
    AlignedRegion& operator=(const AlignedRegion&) = delete;
    std::span<std::byte> span() const { return {data, size}; }
    std::size_t size;
    std::byte* data;
};

}  // namespace shmctx::bench
