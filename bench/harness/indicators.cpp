#include "indicators.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <new>
#include <vector>

#include "shmctx/shm/segment.hpp"
#include "shmctx/shm/wake.hpp"
#include "transport.hpp"

namespace shmctx::bench {
namespace {

/// One cache line written alternately by both processes: odd values by the parent, even values
/// by the peer. Writer table: `value` — both, in strict alternation; `stop` — parent.
struct CacheLineShared {
    std::atomic<std::uint64_t> value;
    std::byte pad[shm::kFalseSharingRange - sizeof(std::atomic<std::uint64_t>)];
};
static_assert(sizeof(CacheLineShared) == shm::kFalseSharingRange);

constexpr std::uint64_t kStop = ~std::uint64_t{0};
constexpr std::size_t kChunk = 256;

double median(std::vector<double> v) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

}  // namespace

CacheLineResult measure_cacheline_rtt(const std::string& name, const Placement& placement,
                                      std::size_t round_trips) {
    const std::string seg_name = name + ".c2c";
    OwnedShmName owned(seg_name);
    shm::Segment seg = shm::Segment::create(seg_name, sizeof(CacheLineShared));
    auto* line = new (seg.data()) CacheLineShared{};
    std::vector<std::string> args{"--role", "cacheline", "--name",
                                  name,     "--cpu",     std::to_string(placement.peer_cpu)};
    Peer peer = Peer::spawn(args);
    const Deadline setup(std::chrono::seconds(10));
    if (peer.read_line(setup) != "ready") throw std::runtime_error("cacheline peer: bad handshake");

    const RunGuard guard{Deadline(std::chrono::seconds(30)), {}};
    std::vector<double> chunks;
    std::uint64_t v = 1;
    for (std::size_t done = 0; done < round_trips; done += kChunk) {
        const auto t0 = Clock::now();
        for (std::size_t i = 0; i < kChunk; ++i, v += 2) {
            // [c2c.ping] pairs with [c2c.see-ping] in cacheline_peer.
            line->value.store(v, std::memory_order::release);
            // [c2c.see-pong] pairs with [c2c.pong] in cacheline_peer.
            spin_until([&] { return line->value.load(std::memory_order::acquire) == v + 1; }, guard,
                       "cacheline peer stalled");
        }
        const std::chrono::duration<double, std::nano> dt = Clock::now() - t0;
        chunks.push_back(dt.count() / kChunk);
    }
    // [c2c.ping] (stop) pairs with [c2c.see-ping].
    line->value.store(kStop, std::memory_order::release);
    peer.wait_success(Deadline(std::chrono::seconds(10)));
    CacheLineResult r;
    r.min_ns = chunks.empty() ? 0 : *std::min_element(chunks.begin(), chunks.end());
    r.median_ns = median(std::move(chunks));
    return r;
}

int cacheline_peer(const std::string& name, const Deadline& deadline) {
    shm::Segment seg = shm::Segment::open(name + ".c2c", {}, sizeof(CacheLineShared));
    auto* line = std::launder(reinterpret_cast<CacheLineShared*>(seg.data()));
    std::printf("ready\n");
    std::fflush(stdout);
    std::uint64_t expected = 1;
    for (;;) {
        std::uint64_t seen = 0;
        // [c2c.see-ping] pairs with [c2c.ping].
        spin_until(
            [&] {
                seen = line->value.load(std::memory_order::acquire);
                return seen == expected || seen == kStop;
            },
            RunGuard{deadline, {}}, "cacheline parent stalled");
        if (seen == kStop) return 0;
        // [c2c.pong] pairs with [c2c.see-pong].
        line->value.store(expected + 1, std::memory_order::release);
        expected += 2;
    }
}

MemcpyResult measure_memcpy(std::size_t block_bytes, std::size_t working_set_bytes, int trials,
                            int trial_ms) {
    working_set_bytes = std::max(working_set_bytes, block_bytes);
    std::vector<std::byte> src(working_set_bytes, std::byte{0x5a});
    std::vector<std::byte> dst(working_set_bytes, std::byte{0});
    const std::size_t blocks = working_set_bytes / block_bytes;
    std::vector<double> rates;
    std::uint64_t sink = 0;
    for (int t = 0; t < trials; ++t) {
        std::size_t copied = 0;
        std::size_t b = 0;
        const auto t0 = Clock::now();
        const auto end = t0 + std::chrono::milliseconds(trial_ms);
        auto now = t0;
        do {
            for (int i = 0; i < 16; ++i) {
                std::memcpy(dst.data() + b * block_bytes, src.data() + b * block_bytes,
                            block_bytes);
                // Keep the copy: the compiler must assume the destination is read.
                asm volatile("" : : "r"(dst.data()) : "memory");
                copied += block_bytes;
                b = b + 1 == blocks ? 0 : b + 1;
            }
            now = Clock::now();
        } while (now < end);
        sink += static_cast<std::uint64_t>(dst[b * block_bytes]);
        const std::chrono::duration<double> dt = now - t0;
        rates.push_back(static_cast<double>(copied) / dt.count() / 1e9);
    }
    asm volatile("" : : "r"(sink) : "memory");
    return {median(std::move(rates)), block_bytes, working_set_bytes};
}

}  // namespace shmctx::bench
