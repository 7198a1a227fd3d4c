// Producer and consumer as two threads, each on its OWN mapping of one shared-memory segment
// (so a stored pointer would break, and ThreadSanitizer sees both threads), for a bounded time.
// Every record's sequence, kind, flags, size and bytes are checked; the consumer changes its
// message capacity live and mixes try_read/release, held records and drain.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <latch>
#include <string>
#include <thread>

#include "../multiproc/ring_records.hpp"
#include "process.hpp"
#include "shmctx/shm/names.hpp"
#include "shmctx/shm/ring.hpp"
#include "shmctx/shm/segment.hpp"

namespace shmctx::shm {
namespace {

using namespace std::chrono_literals;

constexpr std::size_t kWakeBytes = 4096;  // wake table page, then the ring
constexpr std::size_t kData = 64 * 1024;
constexpr std::uint16_t kEndKind = 9;
constexpr std::uint64_t kMinRecords = 2000;  // also on a loaded machine, enough to wrap often

class RingStress : public ::testing::TestWithParam<WaitMode> {};

TEST_P(RingStress, TwoMappingsTwoThreadsNothingLostOrReordered) {
    const WaitMode mode = GetParam();
    const std::string name = Names(test::unique_ns("ring-stress")).prefix() + "ring";
    Segment created = Segment::create(name, kWakeBytes + ring_region_bytes(kData));
    struct Remove {
        std::string name;
        ~Remove() { Segment::remove(name); }
    } remove{name};
    Segment producer_map = Segment::open(name);
    Segment consumer_map = Segment::open(name);
    ASSERT_NE(producer_map.data(), consumer_map.data());

    const auto wakes_of = [](Segment& s) { return WakeTable({s.data(), kWakeBytes}); };
    const auto ring_of = [](Segment& s) {
        return std::span<std::byte>{s.data() + kWakeBytes, ring_region_bytes(kData)};
    };
    const WakeTable producer_wakes = wakes_of(producer_map);
    const WakeTable consumer_wakes = wakes_of(consumer_map);
    // Each side holds the *other* side's table as mapped by itself.
    RingWriter writer =
        RingWriter::create(ring_of(producer_map), {kData, 42, 512, false}, wakes_of(producer_map));
    RingReader reader = RingReader::attach(ring_of(consumer_map), 42, wakes_of(consumer_map));

    const test::RecordStream stream(7, 4096);
    const auto duration = std::chrono::milliseconds(
        std::max<std::int64_t>(200, static_cast<std::int64_t>(1500 * test::test_scale())));
    std::latch start(2);
    std::atomic<std::uint64_t> produced{0};
    std::string producer_error;
    std::string consumer_error;
    const WaitPolicy policy{mode, 200};

    std::thread producer([&] {
        Waiter waiter(producer_wakes, 0);
        start.arrive_and_wait();
        const Deadline stop_at(duration);
        const Deadline hard_stop(60s);  // a starved machine still ends the test
        std::uint64_t i = 0;
        std::uint64_t batch = 0;
        for (; (!stop_at.expired() || i < kMinRecords) && !hard_stop.expired(); ++i) {
            const auto payload = stream.payload(i);
            // Alternate publish-now and batches of deferred commits.
            const Publish publish = (i / 64) % 2 == 0 ? Publish::now : Publish::deferred;
            for (;;) {
                RingClaim claim = writer.try_claim(payload.size() + 32);
                if (claim.ok()) {
                    std::memcpy(claim.buffer.data(), payload.data(), payload.size());
                    const WriteResult r =
                        writer.commit(claim, payload.size(), test::RecordStream::kind(i),
                                      test::RecordStream::flags(i), publish);
                    if (r != WriteResult::ok)
                        producer_error = "commit: " + std::string(to_string(r));
                    break;
                }
                if (claim.status != WriteResult::full_bytes &&
                    claim.status != WriteResult::full_msgs) {
                    producer_error = "claim: " + std::string(to_string(claim.status));
                    break;
                }
                if (writer.wait_writable(payload.size() + 32, waiter, Deadline(20s), {}, policy) !=
                    WaitStatus::ready) {
                    producer_error = "wait_writable timed out";
                    break;
                }
            }
            if (!producer_error.empty()) break;
            if (publish == Publish::deferred && ++batch % 8 == 0) (void)writer.publish();
        }
        (void)writer.publish();
        produced.store(i, std::memory_order::relaxed);
        const std::byte end{0};
        while (producer_error.empty()) {
            const WriteResult r = writer.try_write(kEndKind, {&end, 1});
            if (r == WriteResult::ok) break;
            if (writer.wait_writable(1, waiter, Deadline(20s), {}, policy) != WaitStatus::ready) {
                producer_error = "final wait_writable timed out";
            }
        }
    });

    std::thread consumer([&] {
        Waiter waiter(consumer_wakes, 1);
        start.arrive_and_wait();
        std::uint64_t next = 0;
        bool done = false;
        const auto check = [&](const RecordView& v) {
            if (v.kind == kEndKind) {
                done = true;
                return;
            }
            const auto expected = stream.payload(next);
            if (v.seq_lo != static_cast<std::uint32_t>(next) ||
                v.kind != test::RecordStream::kind(next) ||
                v.flags != test::RecordStream::flags(next) || v.payload.size() != expected.size() ||
                std::memcmp(v.payload.data(), expected.data(), expected.size()) != 0) {
                if (consumer_error.empty())
                    consumer_error = "record " + std::to_string(next) + " differs";
            }
            ++next;
        };
        std::uint64_t round = 0;
        while (!done && consumer_error.empty()) {
            if (reader.wait_readable(waiter, Deadline(20s), {}, policy) != WaitStatus::ready) {
                consumer_error = "wait_readable timed out at record " + std::to_string(next);
                break;
            }
            ++round;
            if (round % 97 == 0) reader.set_capacity_msgs(round % 2 == 0 ? 3U : 512U);
            if (round % 3 == 0) {
                const auto r = reader.drain(check, 1 + round % 50);
                if (r.status == ReadResult::protocol_error)
                    consumer_error = std::string(reader.error_text());
            } else {
                // Hold up to three records, then release them together.
                for (int k = 0; k < 3 && !done; ++k) {
                    RecordView v;
                    const ReadResult r = reader.try_read(v);
                    if (r == ReadResult::empty) break;
                    if (r != ReadResult::ok) {
                        consumer_error = std::string(reader.error_text());
                        break;
                    }
                    check(v);
                }
                reader.release();
            }
        }
        if (consumer_error.empty() && next != produced.load(std::memory_order::relaxed)) {
            consumer_error = "received " + std::to_string(next) + " of " +
                             std::to_string(produced.load(std::memory_order::relaxed));
        }
    });
    producer.join();
    consumer.join();
    EXPECT_EQ(producer_error, "");
    EXPECT_EQ(consumer_error, "");
    EXPECT_GE(produced.load(), kMinRecords);
    std::printf("records moved: %llu\n", static_cast<unsigned long long>(produced.load()));
    RecordView none;
    EXPECT_EQ(reader.try_read(none), ReadResult::empty);
}

INSTANTIATE_TEST_SUITE_P(AllWaitModes, RingStress,
                         ::testing::Values(WaitMode::busy_spin, WaitMode::spin_yield,
                                           WaitMode::block),
                         [](const auto& param_info) {
                             switch (param_info.param) {
                                 case WaitMode::busy_spin:
                                     return std::string("busy_spin");
                                 case WaitMode::spin_yield:
                                     return std::string("spin_yield");
                                 case WaitMode::block:
                                     return std::string("block");
                             }
                             return std::string("unknown");
                         });

}  // namespace
}  // namespace shmctx::shm
