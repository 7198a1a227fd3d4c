// Single-thread micro-benchmarks of ring operations (STYLE.md §2.7): the shmctx ring's
// try_write + try_read/release, try_claim/commit, and a batched write + drain, with the
// harness's minimal fixed-slot ring as the baseline. Payload sizes are Args; every message's
// sequence number and check words are verified by the reader (message.hpp), so a benchmark
// that stops moving correct data fails instead of getting faster.
//
// The second Arg is the consumer's declared wait mode: 0 = busy-spin (producers skip the wake
// fence), 1 = block (every publish pays the [wake.storeload] fence and a cell check).
// Cross-process figures come from shmctx_perf_harness, not from here.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>
#include <span>
#include <vector>

#include "aligned_region.hpp"
#include "message.hpp"
#include "minimal_ring.hpp"
#include "shmctx/shm/ring.hpp"
#include "shmctx/shm/wake.hpp"

namespace {

using namespace shmctx;
using shmctx::bench::check;
using shmctx::bench::stamp;

using shmctx::bench::AlignedRegion;

constexpr std::size_t kRingDataBytes = 1 << 20;
constexpr std::size_t kMaxBatch = 64;
constexpr std::uint16_t kKind = 1;

/// Messages per batch: 64, or fewer when half the ring cannot hold 64 of them.
std::uint32_t batch_for(std::size_t size) {
    const std::size_t fit = kRingDataBytes / (2 * shm::align_up(size + 16, 64));
    return static_cast<std::uint32_t>(std::clamp<std::size_t>(fit, 1, kMaxBatch));
}

/// A shmctx ring with both ends in this thread, and a two-slot wake table.
struct ShmctxFixture {
    explicit ShmctxFixture(bool consumer_blocks)
        : wakes(2 * sizeof(shm::WakeSlot)),
          region(shm::ring_region_bytes(kRingDataBytes)),
          table(wakes.span()),
          writer(shm::RingWriter::create(region.span(), params(), table)),
          reader(shm::RingReader::attach(region.span(), 0, table)) {
        if (consumer_blocks) {
            // What a consumer that entered a blocking wait leaves in its cell: from now on every
            // publish fences and checks the cell (the cost this variant measures).
            auto* header = std::launder(reinterpret_cast<shm::RingHeader*>(region.data));
            // relaxed: single thread.
            header->consumer.data_cell.mode.store(static_cast<std::uint32_t>(shm::WaitMode::block),
                                                  std::memory_order::relaxed);
        }
    }
    static shm::RingParams params() {
        shm::RingParams p;
        p.data_bytes = kRingDataBytes;
        p.capacity_msgs = kRingDataBytes / shm::kRecordAlign;
        return p;
    }
    AlignedRegion wakes;
    AlignedRegion region;
    shm::WakeTable table;
    shm::RingWriter writer;
    shm::RingReader reader;
};

void set_counters(benchmark::State& state, std::size_t size, std::int64_t per_iteration) {
    state.SetItemsProcessed(state.iterations() * per_iteration);
    state.SetBytesProcessed(state.iterations() * per_iteration * static_cast<std::int64_t>(size));
}

void BM_ShmctxRing_TryWriteTryRead(benchmark::State& state) {
    const auto size = static_cast<std::size_t>(state.range(0));
    ShmctxFixture f(state.range(1) != 0);
    std::vector<std::byte> msg(size, std::byte{0x11});
    std::uint64_t seq = 0;
    for (auto _ : state) {
        stamp(msg.data(), size, seq);
        if (f.writer.try_write(kKind, msg) != shm::WriteResult::ok) {
            state.SkipWithError("try_write failed");
            break;
        }
        shm::RecordView v;
        if (f.reader.try_read(v) != shm::ReadResult::ok ||
            !check("bench_ring", v.payload.data(), v.payload.size(), size, seq)) {
            state.SkipWithError("try_read failed");
            break;
        }
        f.reader.release();
        ++seq;
    }
    set_counters(state, size, 1);
}

void BM_ShmctxRing_ClaimCommit(benchmark::State& state) {
    const auto size = static_cast<std::size_t>(state.range(0));
    ShmctxFixture f(state.range(1) != 0);
    std::uint64_t seq = 0;
    for (auto _ : state) {
        // Built in place: stamping stands in for serialising straight into the record.
        const shm::RingClaim claim = f.writer.try_claim(size);
        if (!claim.ok()) {
            state.SkipWithError("try_claim failed");
            break;
        }
        stamp(claim.buffer.data(), size, seq);
        if (f.writer.commit(claim, size, kKind) != shm::WriteResult::ok) {
            state.SkipWithError("commit failed");
            break;
        }
        shm::RecordView v;
        if (f.reader.try_read(v) != shm::ReadResult::ok ||
            !check("bench_ring", v.payload.data(), v.payload.size(), size, seq)) {
            state.SkipWithError("try_read failed");
            break;
        }
        f.reader.release();
        ++seq;
    }
    // Items only: the payload is not copied (three stamped words stand in for in-place
    // building), so bytes per second would be meaningless here.
    state.SetItemsProcessed(state.iterations());
}

void BM_ShmctxRing_BatchDrain(benchmark::State& state) {
    const auto size = static_cast<std::size_t>(state.range(0));
    ShmctxFixture f(state.range(1) != 0);
    const std::uint32_t batch = batch_for(size);
    std::vector<std::byte> msg(size, std::byte{0x22});
    std::uint64_t seq = 0;
    std::uint64_t expected = 0;
    for (auto _ : state) {
        for (std::uint32_t i = 0; i < batch; ++i, ++seq) {
            stamp(msg.data(), size, seq);
            if (f.writer.try_write(kKind, msg, 0, shm::Publish::deferred) != shm::WriteResult::ok) {
                state.SkipWithError("try_write failed");
                return;
            }
        }
        if (f.writer.publish() != shm::WriteResult::ok) {
            state.SkipWithError("publish failed");
            break;
        }
        bool bad = false;
        const auto d = f.reader.drain(
            [&](const shm::RecordView& v) {
                bad =
                    bad || !check("bench_ring", v.payload.data(), v.payload.size(), size, expected);
                ++expected;
            },
            batch);
        if (d.count != batch || bad) {
            state.SkipWithError("drain returned a short or bad batch");
            break;
        }
    }
    set_counters(state, size, batch);
}

/// The minimal fixed-slot ring of the harness over process memory, both ends in this thread.
struct MinimalFixture {
    MinimalFixture(std::size_t size, std::uint32_t batch, bool consumer_blocks)
        : spec(make_spec(size, batch, consumer_blocks)),
          geometry(bench::MinimalRing::Geometry::of(spec)),
          control(sizeof(bench::MinimalRingControl)),
          slots(geometry.slot_count * geometry.slot_bytes) {
        auto* c = new (control.data) bench::MinimalRingControl{};
        bench::MinimalRing::init_cells(*c);
        if (consumer_blocks) {
            // relaxed: single thread; see ShmctxFixture.
            c->consumer_cell.mode.store(static_cast<std::uint32_t>(shm::WaitMode::block),
                                        std::memory_order::relaxed);
        }
        auto* wake = reinterpret_cast<std::byte*>(&c->wake[0]);
        view = {c, slots.data, geometry.slot_bytes, geometry.slot_count,
                shm::WakeTable(std::span<std::byte>(wake, sizeof c->wake))};
    }
    static bench::ChannelSpec make_spec(std::size_t size, std::uint32_t batch, bool blocks) {
        bench::ChannelSpec s;
        s.msg_bytes = size;
        s.ring_bytes = kRingDataBytes;
        s.batch = batch;
        s.read_batch = batch;
        s.mode = blocks ? bench::Mode::block : bench::Mode::spin;
        return s;
    }
    bench::ChannelSpec spec;
    bench::MinimalRing::Geometry geometry;
    AlignedRegion control;
    AlignedRegion slots;
    bench::MinimalRing::View view{};
};

void BM_MinimalRing_WriteRead(benchmark::State& state) {
    const auto size = static_cast<std::size_t>(state.range(0));
    MinimalFixture f(size, 1, state.range(1) != 0);
    bench::MinimalRing::Sender tx(f.view, f.spec);
    bench::MinimalRing::Receiver rx(f.view, f.spec);
    std::vector<std::byte> msg(size, std::byte{0x33});
    std::uint64_t seq = 0;
    bool bad = false;
    for (auto _ : state) {
        stamp(msg.data(), size, seq);
        tx.send(msg.data(), size);
        rx.receive([&](const std::byte* p, std::size_t n) {
            bad = bad || !check("bench_ring", p, n, size, seq);
        });
        ++seq;
    }
    if (bad) state.SkipWithError("minimal ring delivered a bad message");
    set_counters(state, size, 1);
}

void BM_MinimalRing_BatchRead(benchmark::State& state) {
    const auto size = static_cast<std::size_t>(state.range(0));
    const std::uint32_t batch = batch_for(size);
    MinimalFixture f(size, batch, state.range(1) != 0);
    bench::MinimalRing::Sender tx(f.view, f.spec);
    bench::MinimalRing::Receiver rx(f.view, f.spec);
    std::vector<std::byte> msg(size, std::byte{0x44});
    std::uint64_t seq = 0;
    std::uint64_t expected = 0;
    bool bad = false;
    for (auto _ : state) {
        for (std::uint32_t i = 0; i < batch; ++i, ++seq) {
            stamp(msg.data(), size, seq);
            tx.send(msg.data(), size);  // publishes at the last of the batch
        }
        // A no-op unless a full ring made send() publish early; keeps every batch whole, so the
        // single-threaded consumer below always frees all of it.
        tx.flush();
        rx.receive([&](const std::byte* p, std::size_t n) {
            bad = bad || !check("bench_ring", p, n, size, expected);
            ++expected;
        });
    }
    if (bad || expected != seq) state.SkipWithError("minimal ring delivered a bad or short batch");
    set_counters(state, size, batch);
}

void sizes(benchmark::internal::Benchmark* b) {
    for (std::int64_t blocks : {0, 1})
        for (std::int64_t size : {8, 64, 1024, 16384, 65536}) b->Args({size, blocks});
    b->ArgNames({"bytes", "consumer_blocks"});
}

BENCHMARK(BM_ShmctxRing_TryWriteTryRead)->Apply(sizes);
BENCHMARK(BM_ShmctxRing_ClaimCommit)->Apply(sizes);
BENCHMARK(BM_ShmctxRing_BatchDrain)->Apply(sizes);
BENCHMARK(BM_MinimalRing_WriteRead)->Apply(sizes);
BENCHMARK(BM_MinimalRing_BatchRead)->Apply(sizes);

}  // namespace

BENCHMARK_MAIN();
