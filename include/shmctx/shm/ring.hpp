// The SPSC byte ring in shared memory (DESIGN.md §3 "SpscRing"; exact layout and race
// walk-throughs in docs/protocol.md "Arenas and rings").
//
// One producer process writes variable-length records, one consumer process reads them in
// place. Roles are types: RingWriter (producer) and RingReader (consumer), each over its own
// mapping of the same region (normally an arena carve, see arena.hpp).
//
// Region layout (offsets from the region start, which must be 128-byte aligned):
//
//   0    +---------------------------------------------+
//        | RingImmutableBlock  (128)  producer, once   |  magic (stored last), versions,
//   128  +---------------------------------------------+  data bytes, generation
//        | RingProducerBlock   (256)                   |
//        |   hot  line: tail_bytes, written_msgs,      |  producer, every commit / batch
//        |              payload_bytes, full_events     |
//        |   cold line: space_cell, overruns, spill    |  producer, rarely
//        |              counters, closed               |
//   384  +---------------------------------------------+
//        | RingConsumerBlock   (256)                   |
//        |   hot  line: head_bytes, read_msgs          |  consumer, every read / release
//        |   cold line: data_cell, capacity_msgs,      |  consumer, rarely (read by the
//        |              allow_overruns, closed         |  producer on every push)
//   640  +---------------------------------------------+
//        | data: data_bytes (a power of two)           |  records, written by the producer
//        +---------------------------------------------+
//
// Record (16-byte aligned position inside the data area; never crosses its end):
//
//   0        4        6        8        12       16
//   +--------+--------+--------+--------+--------+--------------------------+
//   | len    | kind   | flags  | seq_lo |reserved| payload (len bytes), pad |
//   | u32    | u16    | u16    | u32    | u32    | to a multiple of 16      |
//   +--------+--------+--------+--------+--------+--------------------------+
//
// `len` is the payload length; the record occupies align_up(16 + len, 16) bytes. `seq_lo` is
// the low 32 bits of the message's index in the ring (0, 1, 2, ...); the reader checks it, so a
// stale or zeroed header is detected. A record that would cross the end of the data area is
// preceded by a padding record (kind kPaddingKind) that runs exactly to the end and carries the
// seq_lo of the record after it. Nothing is ever zeroed: what is readable is decided by the
// tail index alone.
//
// Commit is by tail index. The producer writes records past its private tail, then stores
// `written_msgs` and `tail_bytes` (release, [ring.publish]); the consumer caches the tail and
// reloads it (acquire, [ring.observe]) only when it has consumed everything it knew of.
// `read_msgs` is published when a record is handed out, `head_bytes` (release, [ring.release])
// when it is released, so a record held by the application does not count against the message
// capacity (it still occupies its bytes). Capacity is both `capacity_msgs` (consumer-written,
// changeable live, read by the producer on every push) and the byte size (fixed at creation).
//
// Every word read from shared memory is read once into a local and validated. A bad value (an
// index that moved backwards or past the other side, a length out of bounds, an unknown kind, a
// wrong seq_lo, a wake slot outside the table) puts that side into a sticky protocol_error
// state with a text; the object stays usable for diagnosis and never reads out of bounds.
//
// Hot path: no allocation, no exceptions, no read-modify-write atomics, one release store per
// commit (or per batch with Publish::deferred + publish()), one per release/drain.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <stop_token>
#include <string_view>
#include <type_traits>
#include <utility>

#include "shmctx/deadline.hpp"
#include "shmctx/shm/fault.hpp"
#include "shmctx/shm/layout.hpp"
#include "shmctx/shm/wake.hpp"

namespace shmctx::shm {

/// SHMCTX_RING_COUNTERS=0 drops the observer-only counter stores of the hot path (written_msgs,
/// payload_bytes per publish; full_events per refused push). For one benchmark build only
/// (bench/counters_upkeep.cpp, which compiles its own copy of ring.cpp with it): it measures
/// what the counters cost (bench/README.md §11). Never set it for a library build: `shmctx ls`
/// and `stat` would show zeros and RingReader::size_approx() would be wrong.
#ifndef SHMCTX_RING_COUNTERS
#define SHMCTX_RING_COUNTERS 1
#endif
inline constexpr bool kRingCounters = SHMCTX_RING_COUNTERS != 0;

// ---- record format ----

/// Kind of a wrap padding record. The wire layer's RecordKind maps onto the other values.
inline constexpr std::uint16_t kPaddingKind = 0;
/// Default highest kind a reader accepts (RingReaderOptions::max_kind).
inline constexpr std::uint16_t kDefaultMaxKind = 255;
inline constexpr std::size_t kRecordHeaderBytes = 16;
/// Records start at multiples of this; payloads are therefore 16- (and so 8-) byte aligned.
inline constexpr std::size_t kRecordAlign = 16;
/// Smallest and largest data area (power of two). A record is at most a quarter of it.
inline constexpr std::size_t kMinRingDataBytes = 1024;
inline constexpr std::size_t kMaxRingDataBytes = std::size_t{1} << 40;
inline constexpr std::uint64_t kRecordAlignMask = kRecordAlign - 1;
inline constexpr std::uint64_t kRingMagic = 0x31474e4952584d53ULL;  // "SMXRING1" little-endian

/// The 16-byte record header (DESIGN.md §3).
struct RecordHeader {
    std::uint32_t len;     ///< payload bytes (padding: bytes after the header up to the end)
    std::uint16_t kind;    ///< kPaddingKind or an application kind 1..max_kind
    std::uint16_t flags;   ///< application flags, not interpreted by the ring
    std::uint32_t seq_lo;  ///< low 32 bits of the message index; checked by the reader
    std::uint32_t reserved;
};
static_assert(sizeof(RecordHeader) == kRecordHeaderBytes);
static_assert(std::is_standard_layout_v<RecordHeader> &&
              std::is_trivially_copyable_v<RecordHeader>);
static_assert(offsetof(RecordHeader, kind) == 4 && offsetof(RecordHeader, flags) == 6 &&
              offsetof(RecordHeader, seq_lo) == 8 && offsetof(RecordHeader, reserved) == 12);

/// Bytes a record with `payload_bytes` of payload occupies in the data area.
constexpr std::size_t ring_record_bytes(std::size_t payload_bytes) noexcept {
    return align_up(kRecordHeaderBytes + payload_bytes, kRecordAlign);
}

// ---- shared layout ----

/// Writer: the producer, once, before the magic. Read by both sides at attach.
struct RingImmutableBlock {
    std::atomic<std::uint64_t> magic;  ///< kRingMagic, stored last ([ring.init])
    std::uint32_t layout_version;      ///< kLayoutVersion
    std::uint32_t header_bytes;        ///< sizeof(RingHeader): where the data area starts
    std::uint64_t data_bytes;          ///< a power of two
    std::uint64_t generation;          ///< the arena carve's generation
    std::uint32_t max_payload_bytes;   ///< min(data_bytes / 4 - 16, 2^32 - 1): `len` is a u32
    std::uint32_t reserved0;
    std::uint64_t instance;  ///< unique per ring in its creator's process (tsan_publish/observe)
    std::byte reserved[kFalseSharingRange - 48];
};

/// Writer: the producer. Hot line written on every publish; cold line rarely.
///
/// The per-message counters (payload_bytes, full_events) share the hot line with the tail: the
/// producer owns that line while it publishes anyway, whereas the cold line holds space_cell,
/// which the consumer reads on every try_read. Stored there, each publish (and each refused
/// push of a spinning producer) took that line from the consumer: 30-65 % of the throughput of
/// a busy-spin ring (bench/README.md §11, shmctx_bench_counters). The cold-line words they
/// used are reserved (zero).
struct RingProducerBlock {
    std::atomic<std::uint64_t> tail_bytes;     ///< published end position ([ring.publish])
    std::atomic<std::uint64_t> written_msgs;   ///< messages published (observers, size_approx)
    std::atomic<std::uint64_t> payload_bytes;  ///< payload bytes published (counter)
    std::atomic<std::uint64_t> full_events;    ///< pushes refused as full (counter)
    std::byte hot_pad[kFalseSharingRange - 32];
    WakeCell space_cell;                         ///< producer waiting for space advertises here
    std::uint64_t reserved_cold0;                ///< zero (held full_events before, see above)
    std::atomic<std::uint64_t> overruns;         ///< overruns noted by the sender (diagnostic)
    std::atomic<std::uint32_t> producer_closed;  ///< 1: no more records will come
    std::uint32_t reserved0;
    // Counters (diagnostic, readable from any process; one writer each, see RingCounters).
    std::uint64_t reserved_cold1;                 ///< zero (payload_bytes before, see above)
    std::atomic<std::uint64_t> spilled;           ///< messages put in the sender's spill queue
    std::atomic<std::uint64_t> spill_drained;     ///< spilled messages written to the ring
    std::atomic<std::uint64_t> spill_discarded;   ///< spilled messages discarded (cancel, failure)
    std::atomic<std::uint64_t> spill_high_water;  ///< most messages queued in the spill at once
    std::byte cold_pad[kFalseSharingRange - 72];
};

/// Writer: the consumer (initialised by the producer at creation, before [ring.init]). Hot line
/// written on every read/release; the cold line rarely, and the producer reads it every push.
struct RingConsumerBlock {
    std::atomic<std::uint64_t> head_bytes;  ///< released position ([ring.release])
    std::atomic<std::uint64_t> read_msgs;   ///< messages handed out (frees message capacity)
    std::byte hot_pad[kFalseSharingRange - 16];
    WakeCell data_cell;                          ///< consumer waiting for data advertises here
    std::atomic<std::uint32_t> capacity_msgs;    ///< message capacity; changeable live
    std::atomic<std::uint32_t> allow_overruns;   ///< receiver's declaration (DESIGN.md §4.2)
    std::atomic<std::uint32_t> consumer_closed;  ///< 1: the reader stopped reading
    std::uint32_t reserved0;
    std::byte cold_pad[kFalseSharingRange - 24];
};

/// The ring header at the start of the region; the data area follows it.
struct RingHeader {
    RingImmutableBlock immutable;
    RingProducerBlock producer;
    RingConsumerBlock consumer;
};

static_assert(sizeof(RingImmutableBlock) == kFalseSharingRange);
static_assert(sizeof(RingProducerBlock) == 2 * kFalseSharingRange);
static_assert(sizeof(RingConsumerBlock) == 2 * kFalseSharingRange);
static_assert(sizeof(RingHeader) == 640);
static_assert(offsetof(RingProducerBlock, payload_bytes) == 16 &&
              offsetof(RingProducerBlock, full_events) == 24 &&
              offsetof(RingProducerBlock, overruns) == kFalseSharingRange + 16 &&
              offsetof(RingProducerBlock, spilled) == kFalseSharingRange + 40 &&
              offsetof(RingProducerBlock, spill_high_water) == kFalseSharingRange + 64);

/// A snapshot of one ring's counters (DESIGN.md §6 "Counters"), read with relaxed loads from
/// any process that maps the ring: each word is monotonic or a level, so a torn snapshot is
/// merely a little stale. Writers: the producer side (sent, payload_bytes, full_events,
/// overruns, spill_* — the sender or the drainer holding the ring, one writer per word), the
/// consumer (received).
struct RingCounters {
    std::uint64_t sent = 0;              ///< records published (written_msgs)
    std::uint64_t received = 0;          ///< records handed to the reader (read_msgs)
    std::uint64_t payload_bytes = 0;     ///< payload bytes published
    std::uint64_t full_events = 0;       ///< pushes that found the ring full
    std::uint64_t overruns = 0;          ///< pushes refused with StreamOverrun
    std::uint64_t spilled = 0;           ///< messages queued in the sender's spill
    std::uint64_t spill_drained = 0;     ///< spilled messages written to the ring later
    std::uint64_t spill_discarded = 0;   ///< spilled messages discarded (cancel, failure)
    std::uint64_t spill_high_water = 0;  ///< most messages queued in the spill at once
    /// Messages in the spill now.
    std::uint64_t spill_depth() const noexcept {
        const std::uint64_t out = spill_drained + spill_discarded;
        return spilled > out ? spilled - out : 0;
    }
};
/// Reads the counters of the ring whose header is `header` (any process, any thread).
RingCounters read_ring_counters(const RingHeader& header) noexcept;
static_assert(offsetof(RingHeader, producer) == 128 && offsetof(RingHeader, consumer) == 384);
static_assert(offsetof(RingProducerBlock, space_cell) == kFalseSharingRange);
static_assert(offsetof(RingConsumerBlock, data_cell) == kFalseSharingRange);
static_assert(offsetof(RingImmutableBlock, data_bytes) == 16 &&
              offsetof(RingImmutableBlock, generation) == 24 &&
              offsetof(RingImmutableBlock, max_payload_bytes) == 32 &&
              offsetof(RingImmutableBlock, instance) == 40);
static_assert(std::is_standard_layout_v<RingHeader> &&
              std::is_trivially_destructible_v<RingHeader>);

// ---- results ----

enum class [[nodiscard]] WriteResult : std::uint8_t{
    ok,
    full_msgs,        ///< capacity_msgs messages are unread
    full_bytes,       ///< not enough free bytes for this record
    too_large,        ///< the record exceeds max_payload_bytes(): it can never fit
    consumer_closed,  ///< the reader said it stops reading; nothing was written
    protocol_error,   ///< the consumer corrupted its words; see error_text()
};

enum class [[nodiscard]] ReadResult : std::uint8_t{
    ok,
    empty,           ///< nothing committed beyond what was read
    protocol_error,  ///< the producer corrupted the ring; see error_text()
};

std::string_view to_string(WriteResult r) noexcept;
std::string_view to_string(ReadResult r) noexcept;

/// Whether commit() makes the record visible now or leaves it for a later publish().
enum class Publish : std::uint8_t { now, deferred };

/// Space handed out by RingWriter::try_claim. Valid until the next commit/try_claim.
struct [[nodiscard]] RingClaim {
    WriteResult status = WriteResult::full_bytes;
    std::span<std::byte> buffer;  ///< exactly the bytes asked for, 16-byte aligned
    std::uint64_t position = 0;   ///< where the record header goes (internal)
    bool ok() const noexcept { return status == WriteResult::ok; }
};

/// A record as seen by the reader. The payload points into the ring and stays valid (and
/// unchanged by a correct producer) until RingReader::release().
struct RecordView {
    std::uint16_t kind = 0;
    std::uint16_t flags = 0;
    std::uint32_t seq_lo = 0;
    std::span<const std::byte> payload;
};

struct RingParams {
    std::size_t data_bytes = 64 * 1024;  ///< power of two in [kMinRingDataBytes, kMaxRingDataBytes]
    std::uint64_t generation = 0;        ///< the carve's generation, checked at attach
    std::uint32_t capacity_msgs = 64;    ///< initial consumer capacity in messages
    bool allow_overruns = false;         ///< initial consumer declaration
};

struct RingReaderOptions {
    /// Highest record kind accepted (kinds 1..max_kind); anything else is a protocol error.
    std::uint16_t max_kind = kDefaultMaxKind;
};

/// Bytes a region needs for a ring with `data_bytes` of data.
constexpr std::size_t ring_region_bytes(std::size_t data_bytes) noexcept {
    return sizeof(RingHeader) + data_bytes;
}

/// ThreadSanitizer stand-ins for the ring's hand-off when both ends live in one process through
/// two mappings of the same region (the in-process multi-actor tests): TSan sees two different
/// addresses and so no happens-before from a publish to the read that observes it. Under
/// SHMCTX_TSAN a publish releases, and an observe acquires, a process-local key derived from the
/// ring's `instance`; elsewhere they compile to nothing.
#if defined(SHMCTX_TSAN)
void tsan_publish(std::uint64_t instance) noexcept;
void tsan_observe(std::uint64_t instance) noexcept;
#else
inline void tsan_publish(std::uint64_t /*instance*/) noexcept {}
inline void tsan_observe(std::uint64_t /*instance*/) noexcept {}
#endif

/// Aborts with `what` on stderr: a caller broke the API contract (never used for shared data).
[[noreturn]] void ring_contract_violation(const char* what) noexcept;

/// A fixed buffer for the protocol-error text (no allocation on the hot path).
class RingErrorText {
public:
    void set(const char* what, std::uint64_t a, std::uint64_t b, std::uint64_t c) noexcept;
    std::string_view view() const noexcept { return {text_.data(), size_}; }

private:
    std::array<char, 192> text_{};
    std::size_t size_ = 0;
};

// ---- producer ----

/// The producer end. Thread-safety: single thread (one producer); may be moved between threads
/// with external release/acquire hand-off (DESIGN.md §4.2 drainer rules).
class RingWriter {
public:
    /// Initialises the ring header in `region` (128-byte aligned, at least
    /// ring_region_bytes(params.data_bytes)) and returns its producer. `consumer_wakes` is the
    /// consumer actor's wake table as mapped here. Throws std::invalid_argument on bad params.
    static RingWriter create(std::span<std::byte> region, const RingParams& params,
                             const WakeTable& consumer_wakes);

    RingWriter(RingWriter&&) noexcept = default;
    RingWriter& operator=(RingWriter&&) noexcept = default;
    RingWriter(const RingWriter&) = delete;
    RingWriter& operator=(const RingWriter&) = delete;
    ~RingWriter() = default;

    /// Space for a record of `bytes` payload bytes, or why not. May write (unpublished) wrap
    /// padding. Fault point `ring.after_claim`.
    RingClaim try_claim(std::size_t bytes) noexcept;
    /// Writes the header of `claim` with `used_bytes` (<= claim.buffer.size(): shrink) and
    /// publishes it (Publish::now) or leaves it for publish(). Fault point `ring.after_commit`.
    /// Contract: `claim` is the latest successful claim, `kind` != kPaddingKind.
    WriteResult commit(const RingClaim& claim, std::size_t used_bytes, std::uint16_t kind,
                       std::uint16_t flags = 0, Publish publish = Publish::now) noexcept;
    /// Publishes every deferred commit (one release store) and wakes a blocked consumer.
    WriteResult publish() noexcept;
    /// publish() without the wake: `wake_owed` says whether the consumer's cell is out of
    /// busy_spin mode, in which case the caller owes it wake_consumer(), at once or after
    /// watching consumer_waits_for() a little (a consumer about to look anyway needs none).
    WriteResult publish_deferring_wake(bool& wake_owed) noexcept;
    /// [wake.storeload] (pairs with the consumer's fence after it advertises), then whether the
    /// consumer still advertises a wake slot and has not released up to `tail` (a tail we
    /// published). Reads only shared words and no producer state, so it may run beside
    /// another thread that writes under the producer's lock. A peer's corrupt words can only
    /// make it answer false (no wake): the consumer's own loss.
    bool consumer_waits_for(std::uint64_t tail) const noexcept;
    /// [wake.storeload] + wake of an advertised consumer (the wake publish() does).
    WriteResult wake_consumer() noexcept;
    /// The tail the consumer can see (deferred commits excluded).
    std::uint64_t published_tail() const noexcept { return published_tail_; }
    /// A hint: starts fetching the cache lines the next try_write() touches first, so that
    /// their transfer from the consumer's core overlaps what the caller does before writing
    /// (e.g. encoding the record): the consumer's cold line (check_space() and publish() read
    /// it; the consumer writes it when it advertises a wake slot), our tail's line and the
    /// data line at the tail (both written; the consumer reads them). Changes nothing.
    void prefetch_for_write() const noexcept {
        __builtin_prefetch(&header_->consumer.data_cell, 0, 3);
        __builtin_prefetch(&header_->producer.tail_bytes, 1, 3);
        __builtin_prefetch(data_ + (tail_ & mask_), 1, 3);
    }
    /// try_claim + memcpy + commit.
    WriteResult try_write(std::uint16_t kind, std::span<const std::byte> payload,
                          std::uint16_t flags = 0, Publish publish = Publish::now) noexcept;

    /// Withdraws the advertised slot but leaves the space cell in block mode, for a waiter
    /// that advertises again soon (no busy_spin switch window each time; wake.hpp).
    void withdraw_space_waiter() noexcept {
        // relaxed: a stale advertisement costs the consumer one spurious wake at most.
        header_->producer.space_cell.waiter.store(0, std::memory_order::relaxed);
    }
    /// Waits until a record of `bytes` would not be refused as full (or the ring is closed or
    /// broken). The producer advertises in its space cell; the consumer wakes it on release.
    WaitStatus wait_writable(std::size_t bytes, Waiter& waiter, const Deadline& deadline = {},
                             const std::stop_token& stop = {}, WaitPolicy policy = {});

    /// Says no more records will come (observers; the control ring carries the real Stop).
    void close() noexcept;
    /// Counts an overrun the sender decided on (diagnostic counter in the producer block).
    void note_overrun() noexcept;
    /// Spill counters (RingCounters), stored as totals by their one writer each: `spilled` and
    /// `high_water` by the sending thread, `drained` by whoever holds the ring for the spill,
    /// `discarded` by whoever discards. Only the shared words are written, never the writer's
    /// private state, so the sender may count while the drainer holds the ring.
    void count_spilled(std::uint64_t total, std::uint64_t high_water) noexcept;
    void count_spill_drained(std::uint64_t total) noexcept;
    void count_spill_discarded(std::uint64_t total) noexcept;
    RingCounters counters() const noexcept { return read_ring_counters(*header_); }
    /// Whether a record of `bytes` payload would be accepted now (refreshes the cached consumer
    /// indices, like a push; writes nothing shared).
    bool has_space_for(std::size_t bytes) noexcept {
        std::uint64_t pad = 0;
        const WriteResult r = check_space(bytes, pad);
        return r != WriteResult::full_bytes && r != WriteResult::full_msgs;
    }
    /// As wait_writable, and also ready as soon as `also()` is true: a sender that must wake for
    /// other events too (its context's terminals, rung on waiter.slot() after making `also()`
    /// true, the [wake.storeload] protocol).
    template <class Also>
    WaitStatus wait_writable_or(std::size_t bytes, Waiter& waiter, Also&& also,
                                const Deadline& deadline = {}, const std::stop_token& stop = {},
                                WaitPolicy policy = {}) {
        const auto ready = [&]() { return has_space_for(bytes) || also(); };
        if (ready()) return WaitStatus::ready;
        // Deferred commits must be visible, or the consumer could never free space for us.
        (void)publish();
        const WaitStatus status =
            waiter.wait(header_->producer.space_cell, ready, deadline, stop, policy);
        // relaxed: back to "nobody waits" (see wait_writable).
        header_->producer.space_cell.mode.store(static_cast<std::uint32_t>(WaitMode::busy_spin),
                                                std::memory_order::relaxed);
        return status;
    }
    /// Advertises (or, with nullopt, withdraws) wake slot `slot_index` of the producer's table
    /// in the space cell, in block mode, until withdrawn: the consumer's releases then wake
    /// it. For a producer that waits for space on a thread that waits for other things too (the
    /// control loop flushing an outbox). After advertising, re-check the space before sleeping.
    void advertise_space_waiter(std::optional<std::uint32_t> slot_index) noexcept {
        if (slot_index) {
            // relaxed: ordered before the owner's re-check by the fence below.
            header_->producer.space_cell.mode.store(static_cast<std::uint32_t>(WaitMode::block),
                                                    std::memory_order::relaxed);
            header_->producer.space_cell.waiter.store(*slot_index + 1, std::memory_order::relaxed);
            storeload_fence();  // [wake.storeload] pairs with the fence in wake_cell()
        } else {
            // relaxed: a stale advertisement costs the consumer one spurious wake at most.
            header_->producer.space_cell.waiter.store(0, std::memory_order::relaxed);
            header_->producer.space_cell.mode.store(static_cast<std::uint32_t>(WaitMode::busy_spin),
                                                    std::memory_order::relaxed);
        }
    }

    // Consumer settings as last published (read fresh, validated by nothing: any value is legal).
    std::uint32_t capacity_msgs() const noexcept;
    bool allow_overruns() const noexcept;
    bool consumer_closed() const noexcept;

    /// Messages committed and not yet handed out, as last seen (racy by nature).
    std::uint64_t size_approx() const noexcept;
    std::uint64_t written_msgs() const noexcept { return written_; }
    std::size_t data_bytes() const noexcept { return static_cast<std::size_t>(mask_ + 1); }
    std::size_t max_payload_bytes() const noexcept { return max_payload_; }
    std::uint64_t generation() const noexcept { return generation_; }
    bool has_protocol_error() const noexcept { return failed_; }
    std::string_view error_text() const noexcept { return error_.view(); }

private:
    RingWriter(RingHeader* header, std::byte* data, std::uint64_t data_bytes,
               std::uint64_t generation, const WakeTable& consumer_wakes) noexcept;
    [[gnu::cold]] WriteResult fail(const char* what, std::uint64_t a, std::uint64_t b,
                                   std::uint64_t c) noexcept;
    WriteResult check_space(std::size_t bytes, std::uint64_t& padding) noexcept;

    RingHeader* header_;
    std::byte* data_;
    std::uint64_t mask_;
    std::uint64_t generation_;
    std::size_t max_payload_;
    WakeTable consumer_wakes_;
    std::uint64_t instance_ = 0;  // RingImmutableBlock::instance (tsan_publish)
    // Producer-private state: never in shared memory.
    std::uint64_t tail_ = 0;  // private end (includes deferred commits)
    std::uint64_t published_tail_ = 0;
    std::uint64_t written_ = 0;        // messages committed (incl. deferred)
    std::uint64_t payload_bytes_ = 0;  // payload bytes committed (incl. deferred)
    std::uint64_t cached_head_ = 0;    // consumer's head as last loaded and validated
    std::uint64_t cached_read_ = 0;    // consumer's read_msgs as last loaded and validated
    bool failed_ = false;
    RingErrorText error_;
};

// ---- consumer ----

/// The consumer end. Thread-safety: single thread (one consumer).
class RingReader {
public:
    /// Validates the ring header in `region` (magic and layout version → LayoutError naming
    /// both; sizes and `expected_generation` → ProtocolError) and returns its consumer.
    /// `producer_wakes` is the producer actor's wake table as mapped here.
    static RingReader attach(std::span<std::byte> region, std::uint64_t expected_generation,
                             const WakeTable& producer_wakes, RingReaderOptions options = {});

    RingReader(RingReader&&) noexcept = default;
    RingReader& operator=(RingReader&&) noexcept = default;
    RingReader(const RingReader&) = delete;
    RingReader& operator=(const RingReader&) = delete;
    ~RingReader() = default;

    /// The next record, zero-copy; it stays valid until release(). Several records may be held.
    /// Publishes read_msgs (frees message capacity at once) and wakes a producer waiting for it.
    ReadResult try_read(RecordView& out) noexcept;
    /// Releases every record returned so far: publishes head_bytes once ([ring.release]) and
    /// wakes a producer waiting for space.
    void release() noexcept;

    /// Calls `fn(const RecordView&)` for up to `max` records, then publishes read_msgs and the
    /// head once (so the records are released when it returns). Returns how many were handed
    /// out and ok / empty / protocol_error (records before an error are still delivered).
    /// If `fn` throws, the records handed out so far, including the one it threw on, count as
    /// consumed and are released before the exception propagates.
    struct DrainResult {
        std::size_t count;
        ReadResult status;
    };
    template <class Fn>
    DrainResult drain(Fn&& fn, std::size_t max) noexcept(noexcept(fn(std::declval<RecordView&>())));

    /// Waits until try_read would not return empty (or the ring is broken).
    WaitStatus wait_readable(Waiter& waiter, const Deadline& deadline = {},
                             const std::stop_token& stop = {}, WaitPolicy policy = {});
    /// As wait_readable, and also ready as soon as `also()` is true: a reader that must wake for
    /// other events too (a context's terminals) has their signaller ring waiter.slot() after
    /// making `also()` true (the [wake.storeload] protocol, with `also` as the condition).
    template <class Also>
    WaitStatus wait_readable_or(Waiter& waiter, Also&& also, const Deadline& deadline = {},
                                const std::stop_token& stop = {}, WaitPolicy policy = {}) {
        const auto ready = [&]() { return has_unread() || failed_ || also(); };
        if (ready()) return WaitStatus::ready;
        const WaitStatus status =
            waiter.wait(header_->consumer.data_cell, ready, deadline, stop, policy);
        // relaxed: back to "nobody waits", so the producer's publishes skip the [wake.storeload]
        // fence and the wake check again (a fence per message otherwise, for good, after one
        // blocking read); the next wait switches back and Waiter bounds its first futex wait
        // for the window (wake.hpp), as RingWriter::wait_writable does for the space cell.
        header_->consumer.data_cell.mode.store(static_cast<std::uint32_t>(WaitMode::busy_spin),
                                               std::memory_order::relaxed);
        return status;
    }
    /// For a reader whose thread waits on one wake slot for many things at once (the control
    /// loop's doorbell, DESIGN.md §3): puts the data cell in block mode for good and
    /// advertises `slot_index` of the consumer's table (nullopt withdraws it). The owner
    /// advertises before it sleeps, re-checks maybe_readable() (the fence below orders the two),
    /// and withdraws after it woke, so producers pay a wake only while it sleeps. Never combine
    /// with wait_readable on the same reader. Touches only the shared cell: safe beside a
    /// thread that reads (maybe_readable() is the lock-free re-check).
    void advertise_wake_slot(std::optional<std::uint32_t> slot_index) noexcept {
        // relaxed (both): the producer reads the cell after its [wake.storeload] fence.
        header_->consumer.data_cell.mode.store(static_cast<std::uint32_t>(WaitMode::block),
                                               std::memory_order::relaxed);
        header_->consumer.data_cell.waiter.store(slot_index ? *slot_index + 1 : 0,
                                                 std::memory_order::relaxed);
        if (slot_index) storeload_fence();  // [wake.storeload] pairs with wake_cell()'s
    }
    /// Consumer thread: a record is committed beyond what was handed out (try_read would not
    /// return empty), or the ring is broken (try_read reports it).
    bool has_unread() noexcept { return failed_ || position_ != cached_tail_ || refresh_tail(); }
    /// A hint: starts fetching the cache lines of what the producer has published and we have
    /// not read yet, at most `max_bytes` of it, so that the transfers of a record's lines from
    /// the producer's core overlap instead of following one another as the record is decoded.
    /// Changes nothing; the bytes are read (and validated) by next() as always.
    void prefetch_unread(std::size_t max_bytes) const noexcept {
        // relaxed: a hint; next() acquires the tail before it reads anything. The word is the
        // peer's: read once, and whatever it holds only picks which of our data lines (masked,
        // at most max_bytes of them) are prefetched.
        const std::uint64_t tail = header_->producer.tail_bytes.load(std::memory_order::relaxed);
        if (tail <= position_) return;
        const std::uint64_t end = position_ + std::min<std::uint64_t>(tail - position_, max_bytes);
        for (std::uint64_t at = position_ & ~std::uint64_t{kCacheLine - 1}; at < end;
             at += kCacheLine) {
            __builtin_prefetch(data_ + (at & mask_), 0, 3);
        }
    }
    /// A hint, safe from any thread (it reads only the shared words): the producer's tail is
    /// not the released head, so something is unread (or held). For threads that poll a ring
    /// another thread reads (under a lock) before they take that lock.
    bool maybe_readable() const noexcept {
        // relaxed (both): a hint; whoever acts on it takes the reader's lock and reads properly.
        return header_->producer.tail_bytes.load(std::memory_order::relaxed) !=
               header_->consumer.head_bytes.load(std::memory_order::relaxed);
    }

    /// Changes the message capacity; applies to every push after the store is visible.
    void set_capacity_msgs(std::uint32_t capacity) noexcept;
    void set_allow_overruns(bool allow) noexcept;
    /// Says this reader stops reading: further pushes get consumer_closed. Wakes the producer.
    void close() noexcept;

    /// Whether the producer said it will write no more (close()).
    bool producer_closed() const noexcept;
    RingCounters counters() const noexcept { return read_ring_counters(*header_); }
    std::uint64_t read_msgs() const noexcept { return read_; }
    std::uint32_t capacity_msgs() const noexcept;
    /// Committed records not yet handed out, as last seen (racy by nature).
    std::uint64_t size_approx() const noexcept;
    std::size_t data_bytes() const noexcept { return static_cast<std::size_t>(mask_ + 1); }
    std::uint64_t generation() const noexcept { return generation_; }
    bool has_protocol_error() const noexcept { return failed_; }
    std::string_view error_text() const noexcept { return error_.view(); }

private:
    RingReader(RingHeader* header, std::byte* data, std::uint64_t data_bytes,
               std::uint64_t generation, const WakeTable& producer_wakes,
               RingReaderOptions options) noexcept;
    ReadResult next(RecordView& out) noexcept;
    bool refresh_tail() noexcept;
    [[gnu::cold]] ReadResult fail(const char* what, std::uint64_t a, std::uint64_t b,
                                  std::uint64_t c) noexcept;
    void publish_read() noexcept;
    /// [wake.storeload] + wake of an advertised producer (cell mode is not busy_spin).
    void wake_producer() noexcept;

    RingHeader* header_;
    const std::byte* data_;
    std::uint64_t mask_;
    std::uint64_t generation_;
    std::size_t max_payload_;
    std::uint16_t max_kind_;
    std::uint64_t instance_ = 0;  // RingImmutableBlock::instance (tsan_observe)
    WakeTable producer_wakes_;
    // Consumer-private state.
    std::uint64_t position_ = 0;     // next record to hand out
    std::uint64_t released_ = 0;     // last published head
    std::uint64_t cached_tail_ = 0;  // producer's tail as last loaded and validated
    std::uint64_t read_ = 0;         // messages handed out
    bool failed_ = false;
    RingErrorText error_;
};

// ---- hot paths, inline (per-message cost matters: docs/protocol.md §3) ----

inline WriteResult RingWriter::check_space(std::size_t bytes, std::uint64_t& padding) noexcept {
    if (failed_) return WriteResult::protocol_error;
    if (bytes > max_payload_) return WriteResult::too_large;
    RingConsumerBlock& consumer = header_->consumer;
    // [ring.close] pairs with [ring.close] in RingReader::close.
    if (consumer.consumer_closed.load(std::memory_order::acquire) != 0) {
        return WriteResult::consumer_closed;
    }
    // relaxed: a setting, not a hand-off of memory; any value is legal (0 = no messages).
    const std::uint32_t capacity = consumer.capacity_msgs.load(std::memory_order::relaxed);
    if (written_ - cached_read_ >= capacity) {
        // relaxed: read_msgs frees message capacity only; bytes come back via [ring.release].
        const std::uint64_t read = consumer.read_msgs.load(std::memory_order::relaxed);
        if (read < cached_read_ || read > written_) {
            return fail(
                "consumer read_msgs moved backwards or past the written count (read, "
                "cached, written)",
                read, cached_read_, written_);
        }
        cached_read_ = read;
        if (written_ - read >= capacity) return WriteResult::full_msgs;
    }
    const std::uint64_t data_bytes = mask_ + 1;
    const std::uint64_t need = ring_record_bytes(bytes);
    const std::uint64_t to_end = data_bytes - (tail_ & mask_);
    const std::uint64_t pad = need > to_end ? to_end : 0;
    if (tail_ + pad + need - cached_head_ > data_bytes) {
        // [ring.reclaim] pairs with [ring.release] in RingReader::release: the consumer's reads
        // of everything before `head` happened before we overwrite it.
        const std::uint64_t head = consumer.head_bytes.load(std::memory_order::acquire);
        if (head < cached_head_ || head > published_tail_ || (head & kRecordAlignMask) != 0) {
            return fail(
                "consumer head moved backwards, past the tail or off alignment (head, "
                "cached head, tail)",
                head, cached_head_, published_tail_);
        }
        cached_head_ = head;
        if (tail_ + pad + need - head > data_bytes) return WriteResult::full_bytes;
    }
    padding = pad;
    return WriteResult::ok;
}

inline RingClaim RingWriter::try_claim(std::size_t bytes) noexcept {
    std::uint64_t pad = 0;
    const WriteResult r = check_space(bytes, pad);
    if (r != WriteResult::ok) {
        if (kRingCounters && (r == WriteResult::full_bytes || r == WriteResult::full_msgs)) {
            auto& full = header_->producer.full_events;
            // relaxed: a diagnostic counter with a single writer (this producer).
            full.store(full.load(std::memory_order::relaxed) + 1, std::memory_order::relaxed);
        }
        return RingClaim{r, {}, 0};
    }
    if (pad != 0) {
        // Wrap: a padding record up to the end of the data area, published with the next record.
        const RecordHeader padding{static_cast<std::uint32_t>(pad - kRecordHeaderBytes),
                                   kPaddingKind, 0, static_cast<std::uint32_t>(written_), 0};
        std::memcpy(data_ + (tail_ & mask_), &padding, sizeof padding);
        tail_ += pad;
    }
    const std::uint64_t position = tail_;
    (void)SHMCTX_FAULT_POINT("ring.after_claim");
    return RingClaim{
        WriteResult::ok, {data_ + (position & mask_) + kRecordHeaderBytes, bytes}, position};
}

inline WriteResult RingWriter::commit(const RingClaim& claim, std::size_t used_bytes,
                                      std::uint16_t kind, std::uint16_t flags,
                                      Publish publish_mode) noexcept {
    if (failed_) return WriteResult::protocol_error;
    if (claim.status != WriteResult::ok || claim.position != tail_) {
        ring_contract_violation("commit of a claim that is not the latest successful one");
    }
    if (used_bytes > claim.buffer.size())
        ring_contract_violation("commit of more bytes than claimed");
    if (kind == kPaddingKind) ring_contract_violation("commit with the padding kind");
    const RecordHeader record{static_cast<std::uint32_t>(used_bytes), kind, flags,
                              static_cast<std::uint32_t>(written_), 0};
    std::memcpy(data_ + (tail_ & mask_), &record, sizeof record);
    tail_ += ring_record_bytes(used_bytes);
    ++written_;
    payload_bytes_ += used_bytes;
    WriteResult r = WriteResult::ok;
    if (publish_mode == Publish::now) r = publish();
    (void)SHMCTX_FAULT_POINT("ring.after_commit");
    return r;
}

inline WriteResult RingWriter::publish() noexcept {
    bool wake_owed = false;
    const WriteResult r = publish_deferring_wake(wake_owed);
    return wake_owed ? wake_consumer() : r;
}

inline WriteResult RingWriter::publish_deferring_wake(bool& wake_owed) noexcept {
    wake_owed = false;
    if (failed_) return WriteResult::protocol_error;
    if (tail_ == published_tail_) return WriteResult::ok;
    RingProducerBlock& producer = header_->producer;
    if constexpr (kRingCounters) {
        // relaxed: written_msgs is for observers (size_approx, shmctx ls); the tail publishes
        // data.
        producer.written_msgs.store(written_, std::memory_order::relaxed);
        // relaxed: a counter for observers, one writer (this producer), stored once per
        // publish.
        producer.payload_bytes.store(payload_bytes_, std::memory_order::relaxed);
    }
    // [ring.publish] pairs with [ring.observe] in RingReader::refresh_tail: the records and
    // padding before `tail_` are visible to a reader that sees this tail.
    producer.tail_bytes.store(tail_, std::memory_order::release);
    tsan_publish(instance_);
    published_tail_ = tail_;
    // relaxed: a hint; while the consumer busy-spins it never blocks, so no fence or wake is
    // needed (wake.hpp). wake_consumer() rereads it after its own checks.
    wake_owed = header_->consumer.data_cell.mode.load(std::memory_order::relaxed) !=
                static_cast<std::uint32_t>(WaitMode::busy_spin);
    return WriteResult::ok;
}

inline WriteResult RingWriter::try_write(std::uint16_t kind, std::span<const std::byte> payload,
                                         std::uint16_t flags, Publish publish_mode) noexcept {
    const RingClaim claim = try_claim(payload.size());
    if (!claim.ok()) return claim.status;
    if (!payload.empty()) std::memcpy(claim.buffer.data(), payload.data(), payload.size());
    return commit(claim, payload.size(), kind, flags, publish_mode);
}

inline bool RingReader::refresh_tail() noexcept {
    // [ring.observe] pairs with [ring.publish] in RingWriter::publish.
    const std::uint64_t tail = header_->producer.tail_bytes.load(std::memory_order::acquire);
    if (tail == cached_tail_) return false;
    tsan_observe(instance_);
    if (tail < cached_tail_ || tail - released_ > mask_ + 1 || (tail & kRecordAlignMask) != 0) {
        (void)fail(
            "producer tail moved backwards, beyond head + data bytes or off alignment "
            "(tail, cached tail, head)",
            tail, cached_tail_, released_);
        return false;
    }
    cached_tail_ = tail;
    return true;
}

inline ReadResult RingReader::next(RecordView& out) noexcept {
    if (failed_) return ReadResult::protocol_error;
    const std::uint64_t data_bytes = mask_ + 1;
    for (;;) {
        if (position_ == cached_tail_ && !refresh_tail()) {
            return failed_ ? ReadResult::protocol_error : ReadResult::empty;
        }
        const std::uint64_t index = position_ & mask_;
        const std::uint64_t available = cached_tail_ - position_;  // >= 16: both aligned
        RecordHeader h;
        std::memcpy(&h, data_ + index, sizeof h);  // read once; only `h` is used below
        const auto expected_seq = static_cast<std::uint32_t>(read_);
        if (h.seq_lo != expected_seq) {
            return fail("record seq_lo is not the next message index (seq_lo, expected, position)",
                        h.seq_lo, expected_seq, position_);
        }
        if (h.kind == kPaddingKind) {
            const std::uint64_t to_end = data_bytes - index;
            if (std::uint64_t{h.len} + kRecordHeaderBytes != to_end || to_end > available ||
                to_end >= data_bytes / 4) {
                return fail(
                    "padding record does not run exactly to the end of the data area "
                    "within the tail (len, bytes to end, position)",
                    h.len, to_end, position_);
            }
            position_ += to_end;
            continue;
        }
        if (h.kind > max_kind_) {
            return fail("record kind unknown (kind, max kind, position)", h.kind, max_kind_,
                        position_);
        }
        if (h.len > max_payload_) {
            return fail("record length over the ring's maximum (len, max, position)", h.len,
                        max_payload_, position_);
        }
        const std::uint64_t bytes = ring_record_bytes(h.len);
        if (bytes > available || index + bytes > data_bytes) {
            return fail(
                "record runs past the tail or the end of the data area (len, available, "
                "position)",
                h.len, available, position_);
        }
        out.kind = h.kind;
        out.flags = h.flags;
        out.seq_lo = h.seq_lo;
        out.payload = {data_ + index + kRecordHeaderBytes, h.len};
        position_ += bytes;
        ++read_;
        return ReadResult::ok;
    }
}

inline void RingReader::publish_read() noexcept {
    // relaxed: read_msgs frees message capacity only; no memory is handed back by it.
    header_->consumer.read_msgs.store(read_, std::memory_order::relaxed);
}

inline ReadResult RingReader::try_read(RecordView& out) noexcept {
    const ReadResult r = next(out);
    if (r == ReadResult::ok) {
        publish_read();
        // The record may be held for long: a producer blocked on full_msgs must not wait for
        // release(). relaxed: a hint, as in release().
        if (header_->producer.space_cell.mode.load(std::memory_order::relaxed) !=
            static_cast<std::uint32_t>(WaitMode::busy_spin)) {
            wake_producer();
        }
    }
    return r;
}

inline void RingReader::release() noexcept {
    if (position_ == released_) return;
    // [ring.release] pairs with [ring.reclaim] in RingWriter::check_space: our reads of the
    // released records happen before the producer overwrites them.
    header_->consumer.head_bytes.store(position_, std::memory_order::release);
    released_ = position_;
    // relaxed: a hint, as in RingWriter::publish; "busy_spin" also means nobody waits for space.
    if (header_->producer.space_cell.mode.load(std::memory_order::relaxed) !=
        static_cast<std::uint32_t>(WaitMode::busy_spin)) {
        wake_producer();
    }
}

// ---- template implementation ----

template <class Fn>
RingReader::DrainResult RingReader::drain(Fn&& fn, std::size_t max) noexcept(
    noexcept(fn(std::declval<RecordView&>()))) {
    // Publishes however the loop ends, also when `fn` throws: next() has already consumed every
    // record handed out, so its message count and bytes must go back to the producer.
    struct Publisher {
        RingReader& reader;
        const std::size_t& count;
        ~Publisher() {
            if (count > 0) {
                reader.publish_read();
                reader.release();
            }
        }
    };
    std::size_t count = 0;
    ReadResult status = ReadResult::empty;
    {
        const Publisher publisher{*this, count};
        RecordView view;
        while (count < max) {
            status = next(view);
            if (status != ReadResult::ok) break;
            ++count;
            fn(static_cast<const RecordView&>(view));
        }
    }
    return {count, count > 0 && status != ReadResult::protocol_error ? ReadResult::ok : status};
}

}  // namespace shmctx::shm
