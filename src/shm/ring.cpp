// RingWriter / RingReader (include/shmctx/shm/ring.hpp; protocol in docs/protocol.md §3).
#include "shmctx/shm/ring.hpp"

#include <algorithm>
#include <bit>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <stdexcept>
#include <string>

#if defined(SHMCTX_TSAN)
#include <sanitizer/tsan_interface.h>
#endif

#include "shmctx/errors.hpp"
#include "shmctx/shm/fault.hpp"

namespace shmctx::shm {
namespace {

RingHeader* header_at(std::span<std::byte> region) noexcept {
    // The region is a mapping of shared memory holding a RingHeader placed by the producer.
    return std::launder(reinterpret_cast<RingHeader*>(region.data()));  // NOLINT: layout view
}

/// A record is at most a quarter of the data area, and its length must fit the header's u32.
std::size_t max_payload_for(std::uint64_t data_bytes) noexcept {
    return static_cast<std::size_t>(
        std::min<std::uint64_t>(data_bytes / 4 - kRecordHeaderBytes, UINT32_MAX));
}

}  // namespace

#if defined(SHMCTX_TSAN)
namespace {
/// Process-local addresses standing for rings (by instance); a collision only adds ordering.
char* tsan_key(std::uint64_t instance) noexcept {
    static char keys[4096];
    return &keys[(instance * 0x9E3779B97F4A7C15ULL) >> 52];
}
}  // namespace

void tsan_publish(std::uint64_t instance) noexcept { __tsan_release(tsan_key(instance)); }
void tsan_observe(std::uint64_t instance) noexcept { __tsan_acquire(tsan_key(instance)); }
#endif

void ring_contract_violation(const char* what) noexcept {
    std::fprintf(stderr, "shmctx: ring contract violation: %s\n", what);
    std::abort();
}

std::string_view to_string(WriteResult r) noexcept {
    switch (r) {
        case WriteResult::ok:
            return "ok";
        case WriteResult::full_msgs:
            return "full_msgs";
        case WriteResult::full_bytes:
            return "full_bytes";
        case WriteResult::too_large:
            return "too_large";
        case WriteResult::consumer_closed:
            return "consumer_closed";
        case WriteResult::protocol_error:
            return "protocol_error";
    }
    return "?";
}

std::string_view to_string(ReadResult r) noexcept {
    switch (r) {
        case ReadResult::ok:
            return "ok";
        case ReadResult::empty:
            return "empty";
        case ReadResult::protocol_error:
            return "protocol_error";
    }
    return "?";
}

void RingErrorText::set(const char* what, std::uint64_t a, std::uint64_t b,
                        std::uint64_t c) noexcept {
    const int n = std::snprintf(text_.data(), text_.size(),
                                "%s [%" PRIu64 ", %" PRIu64 ", %" PRIu64 "]", what, a, b, c);
    size_ = n < 0 ? 0 : std::min(static_cast<std::size_t>(n), text_.size() - 1);
}

// ============================== RingWriter ==============================

RingWriter::RingWriter(RingHeader* header, std::byte* data, std::uint64_t data_bytes,
                       std::uint64_t generation, const WakeTable& consumer_wakes) noexcept
    : header_(header),
      data_(data),
      mask_(data_bytes - 1),
      generation_(generation),
      max_payload_(max_payload_for(data_bytes)),
      consumer_wakes_(consumer_wakes) {}

RingWriter RingWriter::create(std::span<std::byte> region, const RingParams& params,
                              const WakeTable& consumer_wakes) {
    const std::size_t data_bytes = params.data_bytes;
    if (!std::has_single_bit(data_bytes) || data_bytes < kMinRingDataBytes ||
        data_bytes > kMaxRingDataBytes) {
        throw std::invalid_argument("ring data size " + std::to_string(data_bytes) +
                                    " is not a power of two in [" +
                                    std::to_string(kMinRingDataBytes) + ", 2^40]");
    }
    if (reinterpret_cast<std::uintptr_t>(region.data()) % kFalseSharingRange != 0) {
        throw std::invalid_argument("ring region is not 128-byte aligned");
    }
    if (region.size() < ring_region_bytes(data_bytes)) {
        throw std::invalid_argument("ring region of " + std::to_string(region.size()) +
                                    " bytes is smaller than the " +
                                    std::to_string(ring_region_bytes(data_bytes)) + " needed");
    }
    // Only the creator constructs the header; the peer launders a pointer to it (attach).
    auto* header = new (region.data()) RingHeader{};
    RingImmutableBlock& imm = header->immutable;
    imm.layout_version = kLayoutVersion;
    imm.header_bytes = sizeof(RingHeader);
    imm.data_bytes = data_bytes;
    imm.generation = params.generation;
    imm.max_payload_bytes = static_cast<std::uint32_t>(max_payload_for(data_bytes));
    // relaxed: only uniqueness in this process matters (tsan_publish); published by [ring.init].
    static std::atomic<std::uint64_t> next_instance{0};
    imm.instance = next_instance.fetch_add(1, std::memory_order::relaxed) + 1;
    // relaxed (all stores below): nobody reads the ring before [ring.init] publishes it.
    header->producer.tail_bytes.store(0, std::memory_order::relaxed);
    header->producer.written_msgs.store(0, std::memory_order::relaxed);
    // Nobody waits yet: wakers skip the fence until a waiter switches the cell (wake.hpp).
    header->producer.space_cell.mode.store(static_cast<std::uint32_t>(WaitMode::busy_spin),
                                           std::memory_order::relaxed);
    header->consumer.data_cell.mode.store(static_cast<std::uint32_t>(WaitMode::busy_spin),
                                          std::memory_order::relaxed);
    header->consumer.capacity_msgs.store(params.capacity_msgs, std::memory_order::relaxed);
    header->consumer.allow_overruns.store(params.allow_overruns ? 1U : 0U,
                                          std::memory_order::relaxed);
    // [ring.init] pairs with [ring.init] in RingReader::attach: everything above is visible to a
    // reader that sees the magic.
    imm.magic.store(kRingMagic, std::memory_order::release);
    const std::uint64_t gen = params.generation;
    RingWriter writer(header, region.data() + sizeof(RingHeader), data_bytes, gen, consumer_wakes);
    writer.instance_ = imm.instance;
    return writer;
}

WriteResult RingWriter::fail(const char* what, std::uint64_t a, std::uint64_t b,
                             std::uint64_t c) noexcept {
    if (!failed_) error_.set(what, a, b, c);
    failed_ = true;
    return WriteResult::protocol_error;
}

WriteResult RingWriter::wake_consumer() noexcept {
    // Skips the fence when the consumer busy-spins; else [wake.storeload] + wake (wake.hpp).
    if (wake_cell(header_->consumer.data_cell, consumer_wakes_) == WakeResult::bad_slot) {
        // relaxed: diagnosis only, the value is reported, never used as an index.
        const std::uint32_t slot =
            header_->consumer.data_cell.waiter.load(std::memory_order::relaxed);
        return fail("consumer advertised a wake slot outside its table (slot+1, capacity, 0)", slot,
                    consumer_wakes_.capacity(), 0);
    }
    return WriteResult::ok;
}

bool RingWriter::consumer_waits_for(std::uint64_t tail) const noexcept {
    storeload_fence();  // [wake.storeload] pairs with the fence after the consumer advertises
    const WakeCell& cell = header_->consumer.data_cell;
    // relaxed (both): ordered after our tail store by the fence above; hints read once.
    if (cell.waiter.load(std::memory_order::relaxed) == 0) return false;
    const std::uint64_t head = header_->consumer.head_bytes.load(std::memory_order::relaxed);
    return head < tail;
}

WaitStatus RingWriter::wait_writable(std::size_t bytes, Waiter& waiter, const Deadline& deadline,
                                     const std::stop_token& stop, WaitPolicy policy) {
    return wait_writable_or(
        bytes, waiter, [] { return false; }, deadline, stop, policy);
}

void RingWriter::close() noexcept {
    // [ring.producer_close] pairs with [ring.producer_close] in RingReader::producer_closed.
    header_->producer.producer_closed.store(1, std::memory_order::release);
    (void)wake_consumer();
}

void RingWriter::note_overrun() noexcept {
    auto& overruns = header_->producer.overruns;
    // relaxed: a diagnostic counter with a single writer (this producer).
    overruns.store(overruns.load(std::memory_order::relaxed) + 1, std::memory_order::relaxed);
}

void RingWriter::count_spilled(std::uint64_t total, std::uint64_t high_water) noexcept {
    // relaxed (all spill counters): diagnostic words with one writer each (ring.hpp).
    header_->producer.spilled.store(total, std::memory_order::relaxed);
    header_->producer.spill_high_water.store(high_water, std::memory_order::relaxed);
}

void RingWriter::count_spill_drained(std::uint64_t total) noexcept {
    header_->producer.spill_drained.store(total, std::memory_order::relaxed);
}

void RingWriter::count_spill_discarded(std::uint64_t total) noexcept {
    header_->producer.spill_discarded.store(total, std::memory_order::relaxed);
}

RingCounters read_ring_counters(const RingHeader& header) noexcept {
    // relaxed (all): monotonic diagnostic words; a snapshot may be slightly stale (ring.hpp).
    const RingProducerBlock& p = header.producer;
    RingCounters c;
    c.sent = p.written_msgs.load(std::memory_order::relaxed);
    c.received = header.consumer.read_msgs.load(std::memory_order::relaxed);
    c.payload_bytes = p.payload_bytes.load(std::memory_order::relaxed);
    c.full_events = p.full_events.load(std::memory_order::relaxed);
    c.overruns = p.overruns.load(std::memory_order::relaxed);
    c.spilled = p.spilled.load(std::memory_order::relaxed);
    c.spill_drained = p.spill_drained.load(std::memory_order::relaxed);
    c.spill_discarded = p.spill_discarded.load(std::memory_order::relaxed);
    c.spill_high_water = p.spill_high_water.load(std::memory_order::relaxed);
    return c;
}

std::uint32_t RingWriter::capacity_msgs() const noexcept {
    // relaxed: a setting; see check_space.
    return header_->consumer.capacity_msgs.load(std::memory_order::relaxed);
}

bool RingWriter::allow_overruns() const noexcept {
    // relaxed: a setting read as a hint by the sender's overrun policy.
    return header_->consumer.allow_overruns.load(std::memory_order::relaxed) != 0;
}

bool RingWriter::consumer_closed() const noexcept {
    // [ring.close] as in check_space.
    return header_->consumer.consumer_closed.load(std::memory_order::acquire) != 0;
}

std::uint64_t RingWriter::size_approx() const noexcept {
    // relaxed: an estimate; clamped because the word comes from the other process.
    const std::uint64_t read = header_->consumer.read_msgs.load(std::memory_order::relaxed);
    return read <= written_ ? written_ - read : 0;
}

// ============================== RingReader ==============================

RingReader::RingReader(RingHeader* header, std::byte* data, std::uint64_t data_bytes,
                       std::uint64_t generation, const WakeTable& producer_wakes,
                       RingReaderOptions options) noexcept
    : header_(header),
      data_(data),
      mask_(data_bytes - 1),
      generation_(generation),
      max_payload_(max_payload_for(data_bytes)),
      max_kind_(options.max_kind),
      producer_wakes_(producer_wakes) {}

RingReader RingReader::attach(std::span<std::byte> region, std::uint64_t expected_generation,
                              const WakeTable& producer_wakes, RingReaderOptions options) {
    if (reinterpret_cast<std::uintptr_t>(region.data()) % kFalseSharingRange != 0 ||
        region.size() < sizeof(RingHeader) + kMinRingDataBytes) {
        throw ProtocolError("ring region of " + std::to_string(region.size()) +
                            " bytes is misaligned or too small for a ring");
    }
    RingHeader* header = header_at(region);
    const RingImmutableBlock& imm = header->immutable;
    // [ring.init] pairs with [ring.init] in RingWriter::create.
    const std::uint64_t magic = imm.magic.load(std::memory_order::acquire);
    if (magic != kRingMagic) {
        throw LayoutError("ring magic is " + std::to_string(magic) + ", expected " +
                          std::to_string(kRingMagic) + " (not a ring, or not initialised)");
    }
    const std::uint32_t layout = imm.layout_version;
    if (layout != kLayoutVersion) {
        throw LayoutError("ring layout version " + std::to_string(layout) + ", ours is " +
                          std::to_string(kLayoutVersion));
    }
    const std::uint32_t header_bytes = imm.header_bytes;
    const std::uint64_t data_bytes = imm.data_bytes;
    const std::uint64_t generation = imm.generation;
    const std::uint32_t max_payload = imm.max_payload_bytes;
    if (header_bytes != sizeof(RingHeader)) {
        throw ProtocolError("ring header size " + std::to_string(header_bytes) + ", expected " +
                            std::to_string(sizeof(RingHeader)));
    }
    if (!std::has_single_bit(data_bytes) || data_bytes < kMinRingDataBytes ||
        data_bytes > kMaxRingDataBytes || data_bytes > region.size() - sizeof(RingHeader)) {
        throw ProtocolError("ring data size " + std::to_string(data_bytes) +
                            " is not a power of two that fits the region of " +
                            std::to_string(region.size()) + " bytes");
    }
    if (max_payload != max_payload_for(data_bytes)) {
        throw ProtocolError("ring max payload " + std::to_string(max_payload) +
                            " does not match its data size " + std::to_string(data_bytes));
    }
    if (generation != expected_generation) {
        throw ProtocolError("ring generation " + std::to_string(generation) +
                            ", the descriptor "
                            "says " +
                            std::to_string(expected_generation) + " (stale descriptor)");
    }
    RingReader reader(header, region.data() + sizeof(RingHeader), data_bytes, generation,
                      producer_wakes, options);
    // The consumer words were initialised by the producer before [ring.init] (acquired above)
    // and are ours from now on. Read once, validated like any shared word.
    // relaxed: ordered by the [ring.init] acquire above.
    const std::uint64_t head = header->consumer.head_bytes.load(std::memory_order::relaxed);
    const std::uint64_t read = header->consumer.read_msgs.load(std::memory_order::relaxed);
    if ((head & kRecordAlignMask) != 0) {
        throw ProtocolError("ring consumer head " + std::to_string(head) + " is misaligned");
    }
    reader.position_ = reader.released_ = reader.cached_tail_ = head;
    reader.instance_ = imm.instance;  // a key for tsan_observe only; never used as an index
    reader.read_ = read;
    return reader;
}

ReadResult RingReader::fail(const char* what, std::uint64_t a, std::uint64_t b,
                            std::uint64_t c) noexcept {
    if (!failed_) error_.set(what, a, b, c);
    failed_ = true;
    return ReadResult::protocol_error;
}

void RingReader::wake_producer() noexcept {
    if (wake_cell(header_->producer.space_cell, producer_wakes_) == WakeResult::bad_slot) {
        // relaxed: diagnosis only, the value is reported, never used as an index.
        const std::uint32_t slot =
            header_->producer.space_cell.waiter.load(std::memory_order::relaxed);
        (void)fail("producer advertised a wake slot outside its table (slot+1, capacity, 0)", slot,
                   producer_wakes_.capacity(), 0);
    }
}

WaitStatus RingReader::wait_readable(Waiter& waiter, const Deadline& deadline,
                                     const std::stop_token& stop, WaitPolicy policy) {
    return wait_readable_or(
        waiter, [] { return false; }, deadline, stop, policy);
}

void RingReader::set_capacity_msgs(std::uint32_t capacity) noexcept {
    // relaxed: a setting; the producer reads it on every push (check_space).
    header_->consumer.capacity_msgs.store(capacity, std::memory_order::relaxed);
    // Growing the capacity may unblock a producer waiting for space.
    wake_producer();
}

void RingReader::set_allow_overruns(bool allow) noexcept {
    // relaxed: a setting read as a hint by the sender.
    header_->consumer.allow_overruns.store(allow ? 1U : 0U, std::memory_order::relaxed);
}

void RingReader::close() noexcept {
    // [ring.close] pairs with [ring.close] in RingWriter::check_space.
    header_->consumer.consumer_closed.store(1, std::memory_order::release);
    wake_producer();
}

bool RingReader::producer_closed() const noexcept {
    // [ring.producer_close] pairs with [ring.producer_close] in RingWriter::close.
    return header_->producer.producer_closed.load(std::memory_order::acquire) != 0;
}

std::uint32_t RingReader::capacity_msgs() const noexcept {
    // relaxed: our own word.
    return header_->consumer.capacity_msgs.load(std::memory_order::relaxed);
}

std::uint64_t RingReader::size_approx() const noexcept {
    // relaxed: an estimate; clamped because the word comes from the other process.
    const std::uint64_t written = header_->producer.written_msgs.load(std::memory_order::relaxed);
    return written >= read_ ? written - read_ : 0;
}

}  // namespace shmctx::shm
