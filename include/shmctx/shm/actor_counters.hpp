// The actor counters: a fixed, versioned table of named u64 counters in the counters region of
// the actor segment (actor_segment.hpp; DESIGN.md §6 "Counters"; docs/protocol.d/counters.md).
// Per-ring figures (sent, received, bytes, full events, overruns, spill) live in the ring
// headers (ring.hpp RingCounters); this table holds what belongs to the actor as a whole.
//
// Region layout (offsets from the start of the counters region, page aligned):
//
//   0     +--------------------------------------------+
//         | ActorCountersHeader (128)                  |  creator, before the segment is
//         |   magic u64 "SHMCTXAC" | version u32 |     |  published; immutable after
//         |   slots u32 | reserved                     |
//   128   +--------------------------------------------+
//         | values: u64[kActorCounterSlots] (atomics)  |  owner process (writer table below)
//   128 + 8 * kActorCounterSlots                        |
//         | zero to the end of the region              |
//         +--------------------------------------------+
//
// Counter i is the u64 at offset 128 + 8 * i, i being the enumerator's value of ActorCounter;
// names (actor_counter_name) are part of the format: an enumerator is never renumbered, new
// ones are added at the end and the version is raised. `slots` says how many the writer
// defines; a reader shows the first min(slots, what it knows).
//
// Writers (all in the owner process; no other process writes the region):
//
//   counter kind | how it is written                  | why
//   -------------+------------------------------------+-----------------------------------------
//   event count  | fetch_add(n, relaxed), any thread  | several owner threads count the same
//                |                                    | event kind (control loop, task threads,
//                |                                    | canceller); events are rare (per context,
//                |                                    | cancel, link), never per message
//   level        | store(v, relaxed), under the       | outbox_depth: one value of the whole
//                | owner's own lock of the quantity   | actor, set where it changes
//   high water   | CAS max loop (relaxed)             | several threads may raise it
//
// Readers (any process, read-only mapping allowed) load each word relaxed: every counter is
// monotonic or a level, so a sample is a set of slightly stale values, never a torn word.
//
// Thread-safety: ActorCounters is thread-safe (every member is an atomic RMW or store);
// read_actor_counters is thread-safe.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>

namespace shmctx::shm {

/// "SHMCTXAC" read as a little-endian u64.
inline constexpr std::uint64_t kActorCountersMagic = 0x4341'5854'434D'4853ULL;
inline constexpr std::uint32_t kActorCountersVersion = 1;
inline constexpr std::size_t kActorCountersHeaderBytes = 128;

/// The named counters. Values are slot indices: never renumber, add at the end (before count_).
enum class ActorCounter : std::uint32_t {
    contexts_opened = 0,    ///< parent side: open_context sent a Start
    contexts_closed,        ///< parent side: an opened context ended (any outcome)
    tasks_started,          ///< child side: a Start accepted, its endpoint task began
    tasks_ended,            ///< child side: an endpoint task ended (any outcome)
    starts_refused,         ///< child side: a Start answered with an error, no task run
    cancels_requested,      ///< CancelRequests this actor sent for its contexts
    cancels_acked,          ///< of those, answered by the peer's ack
    cancels_timed_out,      ///< of those, given up on after the cancel-ack timeout
    cancels_received,       ///< CancelRequests peers sent to this actor's tasks
    actor_cancels,          ///< times this actor was cancelled as a whole (cancel_actor)
    actor_cancel_requests,  ///< Portal::cancel_actor calls made by this actor
    links_up,               ///< links that came up
    links_closed,           ///< links ended in order (LinkClose either side, shutdown)
    links_failed,           ///< links failed: protocol error, peer gave up, unresponsive
    links_peer_died,        ///< links ended because the peer process died
    link_refused,           ///< failures to make a link (cannot link, version mismatch)
    protocol_errors,        ///< protocol errors found on a link (its data or control rings)
    peers_unresponsive,     ///< unresponsive-peer events (heartbeat stopped)
    outbox_queued,          ///< control records that had to wait in a link's outbox
    outbox_depth,           ///< level: records waiting in outboxes now (sampled per pass)
    outbox_high_water,      ///< most records waiting in outboxes at once
    control_loop_sleeps,    ///< futex waits of the control loop (it found nothing to do)
    control_loop_wakes,     ///< doorbell rings this actor's threads sent to its control loop
    errors_reported,        ///< errors reported to the distinct-error log (all, with repeats)
    count_
};
inline constexpr std::uint32_t kActorCounterSlots =
    static_cast<std::uint32_t>(ActorCounter::count_);

/// The counter's stable name ("contexts_opened"), or "" for an index past the known ones.
std::string_view actor_counter_name(std::uint32_t index) noexcept;

/// Written once by the creator before the segment is published (plain fields, like the actor
/// header: [actor.publish] orders them for every opener).
struct ActorCountersHeader {
    std::uint64_t magic;    ///< kActorCountersMagic
    std::uint32_t version;  ///< kActorCountersVersion
    std::uint32_t slots;    ///< counters defined by the writer (kActorCounterSlots)
    std::byte reserved[kActorCountersHeaderBytes - 16];
};
static_assert(sizeof(ActorCountersHeader) == kActorCountersHeaderBytes);
static_assert(offsetof(ActorCountersHeader, version) == 8);
static_assert(offsetof(ActorCountersHeader, slots) == 12);
static_assert(std::is_standard_layout_v<ActorCountersHeader> &&
              std::is_trivially_copyable_v<ActorCountersHeader>);
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);
static_assert(sizeof(std::atomic<std::uint64_t>) == 8);

/// Bytes of the region the table uses.
inline constexpr std::size_t kActorCountersUsedBytes =
    kActorCountersHeaderBytes + 8 * kActorCounterSlots;

/// Writes the header of a zeroed counters region (the creator, before publication). Throws
/// LayoutError if the region is too small or misaligned.
void init_actor_counters(std::span<std::byte> region);

/// The owner's view of its counters region (initialised by init_actor_counters).
/// Thread-safety: thread-safe.
class ActorCounters {
public:
    ActorCounters() noexcept = default;  ///< counts nothing (an actor without a segment)
    /// Views `region`; it must have been initialised by init_actor_counters.
    explicit ActorCounters(std::span<std::byte> region) noexcept;

    void add(ActorCounter c, std::uint64_t n = 1) noexcept {
        if (values_ == nullptr) return;
        // relaxed: a diagnostic count; nothing is published through it and several owner
        // threads add to the same word (see the writer table).
        values_[index(c)].fetch_add(n, std::memory_order::relaxed);
    }
    /// Sets a level counter.
    void set(ActorCounter c, std::uint64_t v) noexcept {
        if (values_ == nullptr) return;
        // relaxed: a diagnostic level, set by its one updater (writer table); publishes nothing.
        values_[index(c)].store(v, std::memory_order::relaxed);
    }
    /// Raises a high-water counter to at least `v`.
    void raise(ActorCounter c, std::uint64_t v) noexcept;
    /// The current value (the owner's own reading; observers use read_actor_counters).
    std::uint64_t get(ActorCounter c) const noexcept {
        // relaxed: a diagnostic read.
        return values_ == nullptr ? 0 : values_[index(c)].load(std::memory_order::relaxed);
    }

private:
    static std::size_t index(ActorCounter c) noexcept { return static_cast<std::size_t>(c); }
    std::atomic<std::uint64_t>* values_ = nullptr;
};

/// A validated sample of a counters region, as an observer sees it.
struct ActorCountersSample {
    std::uint32_t version = 0;
    std::uint32_t slots = 0;  ///< as the writer declared it
    /// The counters this reader knows by name (min(slots, kActorCounterSlots)); index = slot.
    std::array<std::uint64_t, kActorCounterSlots> values{};
    std::uint32_t known = 0;
    std::uint64_t operator[](ActorCounter c) const noexcept {
        const auto i = static_cast<std::uint32_t>(c);
        return i < known ? values[i] : 0;
    }
};

/// Reads a counters region of any process (read-only mapping allowed). Every header word is
/// read once and validated: a region not (yet) initialised, of another version or declaring
/// more slots than fit gives nullopt and a reason in `problem`; never a crash.
std::optional<ActorCountersSample> read_actor_counters(std::span<const std::byte> region,
                                                       std::string& problem) noexcept;

}  // namespace shmctx::shm
