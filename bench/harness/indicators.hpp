// Placement and noise indicators recorded with every batch of runs (DESIGN.md §8): the
// core-to-core cache-line round trip between the two processes, and single-thread memcpy
// bandwidth. On a VM whose cores sit "near" or "far" for minutes, these tell which regime a
// batch ran in.
//
// Thread-safety: free functions; each uses its own resources.
#pragma once

#include <cstddef>
#include <string>

#include "process.hpp"
#include "shmctx/deadline.hpp"

namespace shmctx::bench {

struct CacheLineResult {
    double median_ns = 0;  ///< median over chunks of the mean round trip per chunk
    double min_ns = 0;
};

/// Ping-pongs one cache line in a shared segment `<name>.c2c` with a peer process on
/// `placement.peer_cpu` for `round_trips` round trips. The segment is removed afterwards.
CacheLineResult measure_cacheline_rtt(const std::string& name, const Placement& placement,
                                      std::size_t round_trips);
/// The peer side (role "cacheline"); returns the process exit status.
int cacheline_peer(const std::string& name, const Deadline& deadline);

struct MemcpyResult {
    double gbytes_per_s = 0;  ///< median of the trials
    std::size_t block_bytes = 0;
    std::size_t working_set_bytes = 0;
};

/// Copies `block_bytes` blocks round-robin through a `working_set_bytes` source and destination
/// (sized like one ring), `trials` times for `trial_ms` each, in the calling thread.
MemcpyResult measure_memcpy(std::size_t block_bytes, std::size_t working_set_bytes, int trials,
                            int trial_ms);

}  // namespace shmctx::bench
