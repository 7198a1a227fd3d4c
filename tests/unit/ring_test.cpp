// RingWriter / RingReader in a local buffer: normal operation, capacity rules, and forged states
// (a corrupted word must give protocol_error, never a crash or an out-of-bounds read).
#include "shmctx/shm/ring.hpp"

#include <gtest/gtest.h>
#include <sys/mman.h>

#include <atomic>
#include <cstring>
#include <memory>
#include <numeric>
#include <stdexcept>
#include <stop_token>
#include <thread>
#include <vector>

#include "shmctx/errors.hpp"

namespace shmctx::shm {
namespace {

using namespace std::chrono_literals;

constexpr std::size_t kData = 4096;  // max payload 1008

std::span<const std::byte> bytes_of(const std::vector<std::byte>& v) {
    return {v.data(), v.size()};
}

std::vector<std::byte> pattern(std::size_t n, std::uint32_t seed) {
    std::vector<std::byte> v(n);
    for (std::size_t i = 0; i < n; ++i)
        v[i] = static_cast<std::byte>((seed * 131U + i * 7U) & 0xFFU);
    return v;
}

/// A 128-aligned region for one ring plus a small wake table, in process memory.
class LocalRing {
public:
    explicit LocalRing(RingParams params = {kData, 7, 1'000'000, false}) : params_(params) {
        storage_.resize(ring_region_bytes(params.data_bytes) + 256);
        const auto base = reinterpret_cast<std::uintptr_t>(storage_.data());
        const std::size_t skip = (128 - base % 128) % 128;
        region_ = {storage_.data() + skip, ring_region_bytes(params.data_bytes)};
        wake_storage_.resize(8 * sizeof(WakeSlot) + 64);
        const auto wbase = reinterpret_cast<std::uintptr_t>(wake_storage_.data());
        wakes_ = WakeTable({wake_storage_.data() + (64 - wbase % 64) % 64, 8 * sizeof(WakeSlot)});
        writer_.emplace(RingWriter::create(region_, params, wakes_));
        reader_.emplace(RingReader::attach(region_, params.generation, wakes_));
    }
    RingWriter& writer() { return *writer_; }
    RingReader& reader() { return *reader_; }
    RingHeader& header() { return *reinterpret_cast<RingHeader*>(region_.data()); }
    std::byte* data() { return region_.data() + sizeof(RingHeader); }
    std::span<std::byte> region() { return region_; }
    const WakeTable& wakes() const { return wakes_; }

private:
    RingParams params_;
    std::vector<std::byte> storage_;
    std::vector<std::byte> wake_storage_;
    std::span<std::byte> region_;
    WakeTable wakes_;
    std::optional<RingWriter> writer_;
    std::optional<RingReader> reader_;
};

WriteResult write(RingWriter& w, std::size_t n, std::uint32_t seed, std::uint16_t kind = 1) {
    const auto p = pattern(n, seed);
    return w.try_write(kind, bytes_of(p));
}

TEST(SpscRing, DeliversRecordsInOrderWithKindFlagsAndSequence) {
    LocalRing ring;
    for (std::uint32_t i = 0; i < 5; ++i) {
        const auto p = pattern(10 + i, i);
        ASSERT_EQ(ring.writer().try_write(static_cast<std::uint16_t>(1 + i % 2), bytes_of(p),
                                          static_cast<std::uint16_t>(100 + i)),
                  WriteResult::ok);
    }
    for (std::uint32_t i = 0; i < 5; ++i) {
        RecordView view;
        ASSERT_EQ(ring.reader().try_read(view), ReadResult::ok);
        EXPECT_EQ(view.kind, 1 + i % 2);
        EXPECT_EQ(view.flags, 100 + i);
        EXPECT_EQ(view.seq_lo, i);
        const auto p = pattern(10 + i, i);
        ASSERT_EQ(view.payload.size(), p.size());
        EXPECT_EQ(std::memcmp(view.payload.data(), p.data(), p.size()), 0);
        EXPECT_EQ(reinterpret_cast<std::uintptr_t>(view.payload.data()) % 8, 0U);
    }
    RecordView view;
    EXPECT_EQ(ring.reader().try_read(view), ReadResult::empty);
    ring.reader().release();
    EXPECT_FALSE(ring.reader().has_protocol_error());
}

TEST(SpscRing, AcceptsEmptyPayloads) {
    LocalRing ring;
    ASSERT_EQ(ring.writer().try_write(1, {}), WriteResult::ok);
    RecordView view;
    ASSERT_EQ(ring.reader().try_read(view), ReadResult::ok);
    EXPECT_TRUE(view.payload.empty());
}

TEST(SpscRing, DoesNotExposeHalfWrittenRecord) {
    LocalRing ring;
    // Claimed and filled, but not committed: the header is not even written.
    RingClaim claim = ring.writer().try_claim(32);
    ASSERT_TRUE(claim.ok());
    std::memset(claim.buffer.data(), 0xAB, 32);
    RecordView view;
    EXPECT_EQ(ring.reader().try_read(view), ReadResult::empty);
    // Committed with the header written, but the tail not published: still invisible.
    ASSERT_EQ(ring.writer().commit(claim, 32, 1, 0, Publish::deferred), WriteResult::ok);
    EXPECT_EQ(ring.reader().try_read(view), ReadResult::empty);
    ASSERT_EQ(ring.writer().publish(), WriteResult::ok);
    ASSERT_EQ(ring.reader().try_read(view), ReadResult::ok);
    EXPECT_EQ(view.payload.size(), 32U);
}

TEST(SpscRing, ForgedHeaderBeyondPublishedTailIsInvisible) {
    LocalRing ring;
    ASSERT_EQ(write(ring.writer(), 8, 1), WriteResult::ok);
    // A complete-looking header for message 1 right after the published record: not published.
    const RecordHeader forged{8, 1, 0, 1, 0};
    std::memcpy(ring.data() + ring_record_bytes(8), &forged, sizeof forged);
    RecordView view;
    ASSERT_EQ(ring.reader().try_read(view), ReadResult::ok);
    EXPECT_EQ(ring.reader().try_read(view), ReadResult::empty);
}

TEST(SpscRing, RejectsWriteWhenFullByMessages) {
    LocalRing ring({kData, 1, 3, false});
    for (int i = 0; i < 3; ++i) ASSERT_EQ(write(ring.writer(), 8, 1), WriteResult::ok);
    EXPECT_EQ(write(ring.writer(), 8, 1), WriteResult::full_msgs);
    EXPECT_EQ(ring.header().producer.full_events.load(), 1U);
    // A record handed out but still held no longer counts against the message capacity.
    RecordView view;
    ASSERT_EQ(ring.reader().try_read(view), ReadResult::ok);
    EXPECT_EQ(write(ring.writer(), 8, 1), WriteResult::ok);
    EXPECT_EQ(write(ring.writer(), 8, 1), WriteResult::full_msgs);
}

TEST(SpscRing, RejectsWriteWhenFullByBytesAndHeldRecordKeepsItsBytes) {
    LocalRing ring;
    const std::size_t payload = ring.writer().max_payload_bytes();  // a quarter of the ring
    for (int i = 0; i < 4; ++i) ASSERT_EQ(write(ring.writer(), payload, 1), WriteResult::ok);
    EXPECT_EQ(write(ring.writer(), 1, 1), WriteResult::full_bytes);
    RecordView view;
    ASSERT_EQ(ring.reader().try_read(view), ReadResult::ok);
    // Handed out but held: its bytes are not free yet.
    EXPECT_EQ(write(ring.writer(), 1, 1), WriteResult::full_bytes);
    ring.reader().release();
    EXPECT_EQ(write(ring.writer(), payload, 1), WriteResult::ok);
    EXPECT_EQ(write(ring.writer(), 1, 1), WriteResult::full_bytes);
}

TEST(SpscRing, CapacityInMessagesCanChangeLive) {
    LocalRing ring({kData, 1, 64, false});
    for (int i = 0; i < 3; ++i) ASSERT_EQ(write(ring.writer(), 8, 1), WriteResult::ok);
    ring.reader().set_capacity_msgs(2);  // below the fill: the next push sees the ring full
    EXPECT_EQ(ring.writer().capacity_msgs(), 2U);
    EXPECT_EQ(write(ring.writer(), 8, 1), WriteResult::full_msgs);
    ring.reader().set_capacity_msgs(5);
    EXPECT_EQ(write(ring.writer(), 8, 1), WriteResult::ok);
    EXPECT_EQ(write(ring.writer(), 8, 1), WriteResult::ok);
    EXPECT_EQ(write(ring.writer(), 8, 1), WriteResult::full_msgs);
    ring.reader().set_capacity_msgs(0);
    RecordView view;
    ASSERT_EQ(ring.reader().try_read(view), ReadResult::ok);
    EXPECT_EQ(write(ring.writer(), 8, 1), WriteResult::full_msgs);
    // Records already in the ring stay readable.
    std::size_t n = 1;
    while (ring.reader().try_read(view) == ReadResult::ok) ++n;
    EXPECT_EQ(n, 5U);
}

TEST(SpscRing, RejectsRecordsLargerThanAQuarterOfTheRing) {
    LocalRing ring;
    const std::size_t max = ring.writer().max_payload_bytes();
    EXPECT_EQ(ring_record_bytes(max), kData / 4);
    EXPECT_EQ(write(ring.writer(), max + 1, 1), WriteResult::too_large);
    EXPECT_EQ(ring.writer().try_claim(max + 1).status, WriteResult::too_large);
    EXPECT_EQ(write(ring.writer(), max, 1), WriteResult::ok);
}

TEST(SpscRing, WrapsWithPaddingAndKeepsOrderOverManyLaps) {
    LocalRing ring;
    std::uint32_t written = 0;
    std::uint32_t read = 0;
    std::uint64_t sizes_seed = 12345;
    auto next_size = [&] {
        sizes_seed = sizes_seed * 6364136223846793005ULL + 1442695040888963407ULL;
        return static_cast<std::size_t>((sizes_seed >> 33) %
                                        (ring.writer().max_payload_bytes() + 1));
    };
    std::vector<std::size_t> pending;
    while (read < 20'000) {
        const std::size_t n = next_size();
        while (write(ring.writer(), n, written) != WriteResult::ok) {
            RecordView view;
            ASSERT_EQ(ring.reader().try_read(view), ReadResult::ok);
            const auto p = pattern(pending.front(), read);
            ASSERT_EQ(view.payload.size(), p.size());
            ASSERT_TRUE(p.empty() || std::memcmp(view.payload.data(), p.data(), p.size()) == 0)
                << read;
            ASSERT_EQ(view.seq_lo, read);
            pending.erase(pending.begin());
            ++read;
            ring.reader().release();
        }
        pending.push_back(n);
        ++written;
    }
    EXPECT_FALSE(ring.reader().has_protocol_error());
}

TEST(SpscRing, WritesAPaddingRecordToTheEndAndContinuesAtZero) {
    LocalRing ring;
    // Three records of 1008 + 16 bytes = 3072; then 960 + 16 = 976: tail at 4048, 48 bytes left.
    for (int i = 0; i < 3; ++i) ASSERT_EQ(write(ring.writer(), 1008, 1), WriteResult::ok);
    ASSERT_EQ(write(ring.writer(), 960, 1), WriteResult::ok);
    ASSERT_EQ(ring.reader().drain([](const RecordView&) {}, 10).count, 4U);
    ASSERT_EQ(write(ring.writer(), 100, 77), WriteResult::ok);  // 128 bytes: does not fit in 48
    RecordHeader padding;
    std::memcpy(&padding, ring.data() + 4048, sizeof padding);
    EXPECT_EQ(padding.kind, kPaddingKind);
    EXPECT_EQ(padding.len, 48U - kRecordHeaderBytes);
    EXPECT_EQ(padding.seq_lo, 4U);
    RecordHeader next;
    std::memcpy(&next, ring.data(), sizeof next);
    EXPECT_EQ(next.len, 100U);
    EXPECT_EQ(next.seq_lo, 4U);
    EXPECT_EQ(ring.header().producer.tail_bytes.load(), 4096U + 128U);
    RecordView view;
    ASSERT_EQ(ring.reader().try_read(view), ReadResult::ok);
    EXPECT_EQ(view.seq_lo, 4U);
    EXPECT_EQ(view.payload.data(), ring.data() + kRecordHeaderBytes);
    const auto p = pattern(100, 77);
    EXPECT_EQ(std::memcmp(view.payload.data(), p.data(), p.size()), 0);
}

TEST(SpscRing, CommitShrinksTheClaim) {
    LocalRing ring;
    RingClaim claim = ring.writer().try_claim(1000);
    ASSERT_TRUE(claim.ok());
    EXPECT_EQ(claim.buffer.size(), 1000U);
    std::memcpy(claim.buffer.data(), "hello", 5);
    ASSERT_EQ(ring.writer().commit(claim, 5, 2, 9), WriteResult::ok);
    EXPECT_EQ(ring.header().producer.tail_bytes.load(), ring_record_bytes(5));
    ASSERT_EQ(write(ring.writer(), 3, 3), WriteResult::ok);
    RecordView view;
    ASSERT_EQ(ring.reader().try_read(view), ReadResult::ok);
    EXPECT_EQ(view.payload.size(), 5U);
    EXPECT_EQ(std::memcmp(view.payload.data(), "hello", 5), 0);
    EXPECT_EQ(view.kind, 2);
    EXPECT_EQ(view.flags, 9);
    ASSERT_EQ(ring.reader().try_read(view), ReadResult::ok);
    EXPECT_EQ(view.seq_lo, 1U);
}

TEST(SpscRing, DrainHandsOutABatchAndPublishesHeadOnce) {
    LocalRing ring;
    for (std::uint32_t i = 0; i < 10; ++i) ASSERT_EQ(write(ring.writer(), 24, i), WriteResult::ok);
    std::vector<std::uint32_t> seen;
    auto result = ring.reader().drain([&](const RecordView& v) { seen.push_back(v.seq_lo); }, 4);
    EXPECT_EQ(result.count, 4U);
    EXPECT_EQ(result.status, ReadResult::ok);
    EXPECT_EQ(ring.header().consumer.head_bytes.load(), 4 * ring_record_bytes(24));
    EXPECT_EQ(ring.header().consumer.read_msgs.load(), 4U);
    result = ring.reader().drain([&](const RecordView& v) { seen.push_back(v.seq_lo); }, 100);
    EXPECT_EQ(result.count, 6U);
    std::vector<std::uint32_t> expected(10);
    std::iota(expected.begin(), expected.end(), 0U);
    EXPECT_EQ(seen, expected);
    result = ring.reader().drain([&](const RecordView&) {}, 100);
    EXPECT_EQ(result.count, 0U);
    EXPECT_EQ(result.status, ReadResult::empty);
}

TEST(SpscRing, DrainReleasesWhatItHandedOutWhenTheCallbackThrows) {
    LocalRing ring;
    for (std::uint32_t i = 0; i < 3; ++i) ASSERT_EQ(write(ring.writer(), 24, i), WriteResult::ok);
    std::vector<std::uint32_t> seen;
    EXPECT_THROW((void)ring.reader().drain(
                     [&](const RecordView& v) {
                         seen.push_back(v.seq_lo);
                         if (v.seq_lo == 1) throw std::runtime_error("callback failed");
                     },
                     100),
                 std::runtime_error);
    // The record the callback threw on was handed out: it is consumed, and its bytes and message
    // count must go back to the producer, or a producer waiting for space waits forever.
    EXPECT_EQ(ring.header().consumer.read_msgs.load(), 2U);
    EXPECT_EQ(ring.header().consumer.head_bytes.load(), 2 * ring_record_bytes(24));
    const auto result =
        ring.reader().drain([&](const RecordView& v) { seen.push_back(v.seq_lo); }, 100);
    EXPECT_EQ(result.count, 1U);
    EXPECT_EQ(seen, (std::vector<std::uint32_t>{0, 1, 2}));
}

TEST(SpscRing, WriterSeesConsumerClosed) {
    LocalRing ring;
    ASSERT_EQ(write(ring.writer(), 8, 1), WriteResult::ok);
    ring.reader().close();
    EXPECT_TRUE(ring.writer().consumer_closed());
    EXPECT_EQ(write(ring.writer(), 8, 1), WriteResult::consumer_closed);
    ring.writer().close();
    EXPECT_TRUE(ring.reader().producer_closed());
}

TEST(SpscRing, SettingsAreVisibleToTheWriter) {
    LocalRing ring({kData, 1, 10, true});
    EXPECT_TRUE(ring.writer().allow_overruns());
    ring.reader().set_allow_overruns(false);
    EXPECT_FALSE(ring.writer().allow_overruns());
    ring.writer().note_overrun();
    EXPECT_EQ(ring.header().producer.overruns.load(), 1U);
}

// ---- forged states ----

void expect_read_error(LocalRing& ring, std::string_view text_part) {
    RecordView view;
    EXPECT_EQ(ring.reader().try_read(view), ReadResult::protocol_error);
    EXPECT_TRUE(ring.reader().has_protocol_error());
    EXPECT_NE(ring.reader().error_text().find(text_part), std::string_view::npos)
        << ring.reader().error_text();
    // Sticky, and the reader stays usable for diagnosis.
    EXPECT_EQ(ring.reader().try_read(view), ReadResult::protocol_error);
    EXPECT_EQ(ring.reader().drain([](const RecordView&) {}, 10).status, ReadResult::protocol_error);
    (void)ring.reader().size_approx();
}

TEST(SpscRingForged, LengthPastTheEndIsAProtocolError) {
    LocalRing ring;
    ASSERT_EQ(write(ring.writer(), 16, 1), WriteResult::ok);
    RecordHeader h;
    std::memcpy(&h, ring.data(), sizeof h);
    h.len = 0xFFFF'FFF0U;
    std::memcpy(ring.data(), &h, sizeof h);
    expect_read_error(ring, "length");
}

TEST(SpscRingForged, LengthPastThePublishedTailIsAProtocolError) {
    LocalRing ring;
    ASSERT_EQ(write(ring.writer(), 16, 1), WriteResult::ok);
    RecordHeader h;
    std::memcpy(&h, ring.data(), sizeof h);
    h.len = 200;  // within the maximum, beyond the tail
    std::memcpy(ring.data(), &h, sizeof h);
    expect_read_error(ring, "past the tail");
}

TEST(SpscRingForged, ZeroedHeaderIsAProtocolError) {
    LocalRing ring;
    ASSERT_EQ(write(ring.writer(), 16, 1), WriteResult::ok);
    ASSERT_EQ(write(ring.writer(), 16, 2), WriteResult::ok);
    std::memset(ring.data() + ring_record_bytes(16), 0, kRecordHeaderBytes);
    RecordView view;
    ASSERT_EQ(ring.reader().try_read(view), ReadResult::ok);
    expect_read_error(ring, "seq_lo");
}

TEST(SpscRingForged, ZeroedFirstHeaderLooksLikePaddingAndIsRejected) {
    LocalRing ring;
    ASSERT_EQ(write(ring.writer(), 16, 1), WriteResult::ok);
    std::memset(ring.data(), 0, kRecordHeaderBytes);
    expect_read_error(ring, "padding");
}

TEST(SpscRingForged, UnknownKindIsAProtocolError) {
    LocalRing ring;
    ASSERT_EQ(write(ring.writer(), 16, 1, 300), WriteResult::ok);
    expect_read_error(ring, "kind");
}

TEST(SpscRingForged, PaddingThatDoesNotReachTheEndIsAProtocolError) {
    LocalRing ring;
    ASSERT_EQ(write(ring.writer(), 16, 1), WriteResult::ok);
    const RecordHeader padding{0, kPaddingKind, 0, 0, 0};
    std::memcpy(ring.data(), &padding, sizeof padding);
    expect_read_error(ring, "padding");
}

TEST(SpscRingForged, TailBeyondHeadPlusCapacityIsAProtocolError) {
    LocalRing ring;
    ring.header().producer.tail_bytes.store(kData + 16);
    expect_read_error(ring, "tail");
}

TEST(SpscRingForged, TailMovingBackwardsIsAProtocolError) {
    LocalRing ring;
    ASSERT_EQ(write(ring.writer(), 16, 1), WriteResult::ok);
    ASSERT_EQ(write(ring.writer(), 16, 1), WriteResult::ok);
    RecordView view;
    ASSERT_EQ(ring.reader().try_read(view), ReadResult::ok);
    ASSERT_EQ(ring.reader().try_read(view), ReadResult::ok);
    ring.header().producer.tail_bytes.store(ring_record_bytes(16));
    expect_read_error(ring, "backwards");
}

TEST(SpscRingForged, MisalignedTailIsAProtocolError) {
    LocalRing ring;
    ring.header().producer.tail_bytes.store(24);
    expect_read_error(ring, "alignment");
}

TEST(SpscRingForged, HeadPastTailIsAProtocolErrorForTheWriter) {
    LocalRing ring;
    const std::size_t payload = ring.writer().max_payload_bytes();
    for (int i = 0; i < 4; ++i) ASSERT_EQ(write(ring.writer(), payload, 1), WriteResult::ok);
    ring.header().consumer.head_bytes.store(kData + 16);
    EXPECT_EQ(write(ring.writer(), 8, 1), WriteResult::protocol_error);
    EXPECT_TRUE(ring.writer().has_protocol_error());
    EXPECT_NE(ring.writer().error_text().find("head"), std::string_view::npos);
    EXPECT_EQ(write(ring.writer(), 8, 1), WriteResult::protocol_error);  // sticky
}

TEST(SpscRingForged, HeadMovingBackwardsIsAProtocolErrorForTheWriter) {
    LocalRing ring;
    const std::size_t payload = ring.writer().max_payload_bytes();
    for (int i = 0; i < 4; ++i) ASSERT_EQ(write(ring.writer(), payload, 1), WriteResult::ok);
    RecordView view;
    ASSERT_EQ(ring.reader().try_read(view), ReadResult::ok);
    ring.reader().release();
    ASSERT_EQ(write(ring.writer(), payload, 1), WriteResult::ok);  // writer cached the new head
    ring.header().consumer.head_bytes.store(0);
    EXPECT_EQ(write(ring.writer(), 8, 1), WriteResult::protocol_error);
}

TEST(SpscRingForged, ReadCountPastWrittenIsAProtocolErrorForTheWriter) {
    LocalRing ring({kData, 1, 2, false});
    ASSERT_EQ(write(ring.writer(), 8, 1), WriteResult::ok);
    ASSERT_EQ(write(ring.writer(), 8, 1), WriteResult::ok);
    ring.header().consumer.read_msgs.store(1000);
    EXPECT_EQ(write(ring.writer(), 8, 1), WriteResult::protocol_error);
}

TEST(SpscRingForged, WakeSlotOutsideTheTableIsAProtocolErrorForTheWriter) {
    LocalRing ring;
    ring.header().consumer.data_cell.mode.store(static_cast<std::uint32_t>(WaitMode::block));
    ring.header().consumer.data_cell.waiter.store(1000);
    EXPECT_EQ(write(ring.writer(), 8, 1), WriteResult::protocol_error);
    EXPECT_NE(ring.writer().error_text().find("wake slot"), std::string_view::npos);
}

TEST(SpscRingForged, WakeSlotOutsideTheTableIsAProtocolErrorForTheReaderInEveryWake) {
    // release(), set_capacity_msgs() and close() all wake the producer's advertised slot.
    for (int which = 0; which < 3; ++which) {
        LocalRing ring;
        ring.header().producer.space_cell.mode.store(static_cast<std::uint32_t>(WaitMode::block));
        ring.header().producer.space_cell.waiter.store(1000);
        if (which == 0) {
            ASSERT_EQ(write(ring.writer(), 8, 1), WriteResult::ok);
            RecordView view;
            ASSERT_EQ(ring.reader().try_read(view), ReadResult::ok);
            ring.reader().release();
        } else if (which == 1) {
            ring.reader().set_capacity_msgs(5);
        } else {
            ring.reader().close();
        }
        EXPECT_TRUE(ring.reader().has_protocol_error()) << "wake path " << which;
        EXPECT_NE(ring.reader().error_text().find("wake slot"), std::string_view::npos);
    }
}

TEST(SpscRingForged, GenerationMismatchIsRejectedAtAttach) {
    LocalRing ring;
    EXPECT_THROW((void)RingReader::attach(ring.region(), 8, ring.wakes()), ProtocolError);
    EXPECT_NO_THROW((void)RingReader::attach(ring.region(), 7, ring.wakes()));
}

TEST(SpscRingForged, BadMagicOrSizesAreRejectedAtAttach) {
    LocalRing ring;
    ring.header().immutable.magic.store(0);
    EXPECT_THROW((void)RingReader::attach(ring.region(), 7, ring.wakes()), LayoutError);
    ring.header().immutable.magic.store(kRingMagic);
    ring.header().immutable.layout_version = kLayoutVersion + 1;
    EXPECT_THROW((void)RingReader::attach(ring.region(), 7, ring.wakes()), LayoutError);
    ring.header().immutable.layout_version = kLayoutVersion;
    ring.header().immutable.data_bytes = 3000;
    EXPECT_THROW((void)RingReader::attach(ring.region(), 7, ring.wakes()), ProtocolError);
    ring.header().immutable.data_bytes = kData * 2;  // larger than the region
    EXPECT_THROW((void)RingReader::attach(ring.region(), 7, ring.wakes()), ProtocolError);
}

TEST(SpscRing, CreateRejectsBadParameters) {
    std::vector<std::byte> storage(ring_region_bytes(kData) + 256);
    const auto base = reinterpret_cast<std::uintptr_t>(storage.data());
    std::span<std::byte> region{storage.data() + (128 - base % 128) % 128,
                                ring_region_bytes(kData)};
    WakeTable none;
    EXPECT_THROW((void)RingWriter::create(region, {3000, 1, 1, false}, none),
                 std::invalid_argument);
    EXPECT_THROW((void)RingWriter::create(region, {512, 1, 1, false}, none), std::invalid_argument);
    EXPECT_THROW((void)RingWriter::create(region, {kData * 2, 1, 1, false}, none),
                 std::invalid_argument);
    EXPECT_THROW((void)RingWriter::create(region.subspan(16), {kData / 2, 1, 1, false}, none),
                 std::invalid_argument);
}

TEST(SpscRing, LargestRingSizesKeepThePayloadLengthInTheHeaderAndAttach) {
    // A record's length is a u32: rings of 2^35 bytes and more must cap the payload there, and
    // the reader must accept the header the writer wrote. Only the header page is touched.
    constexpr std::size_t kHuge = std::size_t{1} << 35;
    const std::size_t bytes = ring_region_bytes(kHuge);
    void* map = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (map == MAP_FAILED) GTEST_SKIP() << "cannot reserve " << bytes << " bytes of address space";
    const std::span<std::byte> region{static_cast<std::byte*>(map), bytes};
    const WakeTable none;
    auto writer = RingWriter::create(region, {kHuge, 3, 1, false}, none);
    EXPECT_LE(writer.max_payload_bytes(), std::size_t{UINT32_MAX});
    EXPECT_EQ(writer.try_claim(std::size_t{UINT32_MAX} + 1).status, WriteResult::too_large);
    EXPECT_NO_THROW((void)RingReader::attach(region, 3, none));
    ::munmap(map, bytes);
}

// ---- waits ----

TEST(SpscRingWait, ReadableTimesOutWhenEmptyAndIsReadyWithData) {
    LocalRing ring;
    Waiter waiter(ring.wakes(), 0);
    EXPECT_EQ(ring.reader().wait_readable(waiter, Deadline(5ms), {}, {WaitMode::block, 10}),
              WaitStatus::timed_out);
    ASSERT_EQ(write(ring.writer(), 8, 1), WriteResult::ok);
    EXPECT_EQ(ring.reader().wait_readable(waiter, Deadline(5ms)), WaitStatus::ready);
}

TEST(SpscRingWait, BlockedReaderIsWokenByACommitFromAnotherThread) {
    for (const WaitMode mode : {WaitMode::block, WaitMode::spin_yield, WaitMode::busy_spin}) {
        LocalRing ring;
        Waiter waiter(ring.wakes(), 1);
        std::thread producer([&] {
            for (std::uint32_t i = 0; i < 200; ++i) {
                while (write(ring.writer(), 8, i) != WriteResult::ok) std::this_thread::yield();
                if (i % 16 == 0) std::this_thread::yield();
            }
        });
        std::uint32_t got = 0;
        while (got < 200) {
            ASSERT_EQ(ring.reader().wait_readable(waiter, Deadline(10s), {}, {mode, 50}),
                      WaitStatus::ready);
            got += static_cast<std::uint32_t>(
                ring.reader().drain([](const RecordView&) {}, 1000).count);
        }
        producer.join();
    }
}

TEST(SpscRingWait, BlockedWriterIsWokenByARelease) {
    LocalRing ring({kData, 1, 2, false});
    ASSERT_EQ(write(ring.writer(), 8, 1), WriteResult::ok);
    ASSERT_EQ(write(ring.writer(), 8, 1), WriteResult::ok);
    Waiter waiter(ring.wakes(), 2);
    std::thread consumer([&] {
        // Wait until the writer advertises, then free a message slot.
        while (ring.header().producer.space_cell.waiter.load() == 0) std::this_thread::yield();
        (void)ring.reader().drain([](const RecordView&) {}, 1);
    });
    EXPECT_EQ(ring.writer().wait_writable(8, waiter, Deadline(10s), {}, {WaitMode::block, 10}),
              WaitStatus::ready);
    consumer.join();
    EXPECT_EQ(write(ring.writer(), 8, 1), WriteResult::ok);
    // After the wait the space cell says "nobody waits" again, so releases skip the fence.
    EXPECT_EQ(ring.header().producer.space_cell.mode.load(),
              static_cast<std::uint32_t>(WaitMode::busy_spin));
}

TEST(SpscRingWait, WriterBlockedOnMessageCapacityIsWokenWhenARecordIsHandedOut) {
    // try_read frees message capacity at once (the record is held, not released): a writer
    // blocked on full_msgs must be woken by it, not only by a later release().
    LocalRing ring({kData, 1, 1, false});
    ASSERT_EQ(write(ring.writer(), 8, 1), WriteResult::ok);
    // The cell already says "block": no mode-switch window polls the writer, so only a wake can
    // end its futex wait before the deadline.
    ring.header().producer.space_cell.mode.store(static_cast<std::uint32_t>(WaitMode::block));
    Waiter waiter(ring.wakes(), 2);
    std::stop_source stop;
    std::atomic<int> status{-1};
    std::thread producer([&] {
        status.store(static_cast<int>(ring.writer().wait_writable(
            8, waiter, Deadline(120s), stop.get_token(), {WaitMode::block, 10})));
    });
    while (ring.header().producer.space_cell.waiter.load() == 0) std::this_thread::yield();
    RecordView view;
    const ReadResult read = ring.reader().try_read(view);  // held: no release()
    const Deadline woken(20s);
    while (status.load() < 0 && !woken.expired()) std::this_thread::yield();
    const int seen = status.load();
    stop.request_stop();  // ends the wait if the wake was lost, so the thread can be joined
    producer.join();
    EXPECT_EQ(read, ReadResult::ok);
    EXPECT_EQ(seen, static_cast<int>(WaitStatus::ready)) << "the writer was not woken";
}

TEST(SpscRingWait, WriterWaitIsCancelledByStopToken) {
    LocalRing ring({kData, 1, 1, false});
    ASSERT_EQ(write(ring.writer(), 8, 1), WriteResult::ok);
    Waiter waiter(ring.wakes(), 0);
    std::stop_source stop;
    std::thread canceller([&] {
        while (ring.header().producer.space_cell.waiter.load() == 0) std::this_thread::yield();
        stop.request_stop();
    });
    EXPECT_EQ(ring.writer().wait_writable(8, waiter, Deadline(10s), stop.get_token(),
                                          {WaitMode::block, 10}),
              WaitStatus::cancelled);
    canceller.join();
}

}  // namespace
}  // namespace shmctx::shm
