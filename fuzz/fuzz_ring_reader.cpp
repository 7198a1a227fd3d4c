// Fuzz target: the ring reader over corrupted images (shm::RingReader, include/shmctx/shm/ring.hpp,
// src/shm/ring.cpp). The ring lives in ordinary heap memory of exactly its size (128-byte
// aligned), so ASan reports any access outside the region.
//
// Input (FuzzedDataProvider: scalars from the end, byte strings from the front):
//   mode raw:   the whole region image (ring header + data) is input bytes (zero-filled when
//               short) and the reader attaches to it;
//   mode valid: RingWriter::create builds a correct ring which the reader attaches to;
// then a script of operations from the input: the producer writes records (valid mode), the
// reader try_read()s / release()s / drain()s, and a corrupter stores input bytes anywhere in
// the region (ring header words included, e.g. the producer's tail) between them. Finally the
// reader reads until it reports empty or protocol_error.
// Contract: attach() returns or throws LayoutError/ProtocolError; reads never touch memory
// outside the region; every record handed out lies inside the data area with a kind in
// 1..max_kind and a length within max_payload; protocol_error is sticky and has a text; and
// while nothing was corrupted, the reader returns exactly the records written, in order, and
// neither side reports a protocol error.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <deque>
#include <optional>
#include <span>
#include <vector>

#include "fuzz_support.hpp"
#include "shmctx/shm/ring.hpp"
#include "shmctx/shm/wake.hpp"

using namespace shmctx;
using namespace shmctx::shm;

namespace {

constexpr std::size_t kRegionAlign = 128;
constexpr std::uint32_t kWakeSlots = 4;

// Heap memory of exactly `bytes` (a multiple of kRegionAlign), zeroed.
struct AlignedRegion {
    explicit AlignedRegion(std::size_t bytes)
        : size(bytes), data(static_cast<std::byte*>(std::aligned_alloc(kRegionAlign, bytes))) {
        FUZZ_CHECK(data != nullptr);
        std::memset(data, 0, bytes);
    }
    ~AlignedRegion() { std::free(data); }
    AlignedRegion(const AlignedRegion&) = delete;
    AlignedRegion& operator=(const AlignedRegion&) = delete;
    std::span<std::byte> span() const noexcept { return {data, size}; }
    std::size_t size;
    std::byte* data;
};

class Harness {
public:
    Harness(FuzzedDataProvider& in, AlignedRegion& region, std::uint16_t max_kind)
        : in_(in), region_(region), max_kind_(max_kind) {}

    std::optional<RingWriter> writer;
    std::optional<RingReader> reader;
    bool pristine = true;  // nothing corrupted the region so far (valid mode only)
    std::deque<std::vector<std::byte>> expected;  // written, not yet read (pristine only)

    // A record handed out by the reader: inside the data area, kind and length in range.
    void check_record(const RecordView& r) {
        const std::byte* data = region_.data + sizeof(RingHeader);
        const std::byte* end = region_.data + region_.size;
        FUZZ_CHECK(r.kind >= 1 && r.kind <= max_kind_);
        FUZZ_CHECK(r.payload.size() <= max_payload_for_region());
        FUZZ_CHECK(r.payload.data() >= data + kRecordHeaderBytes &&
                   r.payload.data() + r.payload.size() <= end);
        FUZZ_CHECK(reinterpret_cast<std::uintptr_t>(r.payload.data()) % kRecordAlign == 0);
        (void)fuzz::touch(r.payload);
        FUZZ_TRACE("record kind %u, %zu bytes", r.kind, r.payload.size());
        if (pristine) {
            FUZZ_CHECK(!expected.empty());
            FUZZ_CHECK(std::ranges::equal(expected.front(), r.payload));
            expected.pop_front();
        }
    }

    void after_read(ReadResult r) {
        if (r == ReadResult::protocol_error) {
            FUZZ_TRACE("protocol error: %.*s", static_cast<int>(reader->error_text().size()),
                       reader->error_text().data());
            FUZZ_CHECK(!pristine);
            FUZZ_CHECK(reader->has_protocol_error() && !reader->error_text().empty());
            had_error_ = true;
        } else {
            FUZZ_CHECK(!had_error_);  // sticky
            // Every write publishes at once: an empty ring has nothing written left unread.
            if (r == ReadResult::empty && pristine) FUZZ_CHECK(expected.empty());
        }
    }

    void read_one() {
        RecordView r;
        const ReadResult res = reader->try_read(r);
        if (res == ReadResult::ok) {
            FUZZ_CHECK(!had_error_);
            check_record(r);
        }
        after_read(res);
    }

    void release() { reader->release(); }

    void drain(std::size_t max) {
        const auto d = reader->drain([&](const RecordView& r) { check_record(r); }, max);
        FUZZ_CHECK(d.count <= max);
        FUZZ_CHECK(d.count > 0 || d.status != ReadResult::ok);
        // ok when records came (even if the ring then ran empty); else why none came.
        if (d.status != ReadResult::ok) after_read(d.status);
    }

    void write_one() {
        if (!writer) return;
        const auto kind = in_.ConsumeIntegralInRange<std::uint16_t>(1, max_kind_);
        const auto len =
            in_.ConsumeIntegralInRange<std::size_t>(0, writer->max_payload_bytes() + 1);
        std::vector<std::byte> payload(len);
        for (std::size_t i = 0; i < len; ++i)
            payload[i] = std::byte(static_cast<std::uint8_t>(i * 7 + len));
        const WriteResult w = writer->try_write(kind, payload);
        FUZZ_TRACE("write kind %u, %zu bytes: %s", kind, len, to_string(w).data());
        if (w == WriteResult::ok) {
            if (pristine) expected.push_back(std::move(payload));
        } else if (pristine) {
            FUZZ_CHECK(w != WriteResult::protocol_error);
            FUZZ_CHECK(w != WriteResult::too_large || len > writer->max_payload_bytes());
        }
        if (w == WriteResult::protocol_error) {
            FUZZ_CHECK(writer->has_protocol_error() && !writer->error_text().empty());
        }
    }

    void corrupt() {
        const auto at = in_.ConsumeIntegralInRange<std::size_t>(0, region_.size - 1);
        const auto n = in_.ConsumeIntegralInRange<std::size_t>(1, 8);
        const std::vector<std::uint8_t> bytes = in_.ConsumeBytes<std::uint8_t>(n);
        const std::size_t count = std::min(bytes.size(), region_.size - at);
        if (count == 0) return;
        std::memcpy(region_.data + at, bytes.data(), count);
        FUZZ_TRACE("corrupt %zu bytes at %zu", count, at);
        pristine = false;
    }

    void observe() {
        (void)reader->has_unread();
        (void)reader->maybe_readable();
        (void)reader->size_approx();
        (void)reader->counters().spill_depth();
        reader->prefetch_unread(in_.ConsumeIntegralInRange<std::size_t>(0, 4096));
        (void)reader->producer_closed();
        (void)reader->capacity_msgs();
    }

    bool had_error() const noexcept { return had_error_; }

private:
    std::size_t max_payload_for_region() const noexcept {
        return (region_.size - sizeof(RingHeader)) / 4 - kRecordHeaderBytes;
    }

    FuzzedDataProvider& in_;
    AlignedRegion& region_;
    std::uint16_t max_kind_;
    bool had_error_ = false;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    FuzzedDataProvider in(data, size);
    const bool raw = in.ConsumeBool();
    const std::size_t data_bytes = kMinRingDataBytes << in.ConsumeIntegralInRange(0, 2);
    // The control ring's max kind (1) and the data rings' (16 + the highest payload kind).
    const std::uint16_t max_kind = in.ConsumeBool() ? 1 : 20;
    AlignedRegion region(ring_region_bytes(data_bytes));
    alignas(kCacheLine) static std::byte wake_bytes[kWakeSlots * sizeof(WakeSlot)];
    const WakeTable wakes{std::span(wake_bytes)};
    Harness h(in, region, max_kind);

    if (raw) {
        const auto generation = in.ConsumeIntegral<std::uint8_t>();
        const std::vector<std::uint8_t> image =
            in.ConsumeBytes<std::uint8_t>(in.ConsumeIntegralInRange<std::size_t>(0, region.size));
        if (!image.empty()) std::memcpy(region.data, image.data(), image.size());
        h.pristine = false;
        if (!fuzz::expect_only<LayoutError, ProtocolError>("RingReader::attach", [&]() {
                h.reader.emplace(RingReader::attach(region.span(), generation, wakes,
                                                    RingReaderOptions{max_kind}));
            })) {
            return 0;
        }
    } else {
        RingParams params;
        params.data_bytes = data_bytes;
        params.generation = in.ConsumeIntegral<std::uint8_t>();
        params.capacity_msgs = in.ConsumeIntegralInRange<std::uint32_t>(1, 64);
        h.writer.emplace(RingWriter::create(region.span(), params, wakes));
        h.reader.emplace(RingReader::attach(region.span(), params.generation, wakes,
                                            RingReaderOptions{max_kind}));
    }

    // The script: at most 256 operations, then read until the reader stops.
    for (int step = 0; step < 256 && in.remaining_bytes() > 0; ++step) {
        switch (in.ConsumeIntegralInRange(0, 6)) {
            case 0:
                h.write_one();
                break;
            case 1:
                h.read_one();
                break;
            case 2:
                h.release();
                break;
            case 3:
                h.drain(in.ConsumeIntegralInRange<std::size_t>(1, 8));
                break;
            case 4:
                h.corrupt();
                break;
            case 5:
                h.observe();
                break;
            case 6:
                if (h.writer) (void)h.writer->publish();
                break;
        }
    }
    // Each ok read advances by at least 16 bytes and the tail is fixed now: this ends.
    for (;;) {
        RecordView r;
        const ReadResult res = h.reader->try_read(r);
        if (res != ReadResult::ok) {
            h.after_read(res);
            break;
        }
        FUZZ_CHECK(!h.had_error());
        h.check_record(r);
        h.release();
    }
    if (h.pristine) FUZZ_CHECK(h.expected.empty());
    return 0;
}
