#include "shmctx/shm/actor_counters.hpp"

#include <algorithm>
#include <cstring>
#include <new>

#include "shmctx/errors.hpp"

namespace shmctx::shm {
namespace {

/// Names by slot; the order is the enum's and part of the format (never reordered).
constexpr std::string_view kNames[] = {
    "contexts_opened",   "contexts_closed",     "tasks_started",         "tasks_ended",
    "starts_refused",    "cancels_requested",   "cancels_acked",         "cancels_timed_out",
    "cancels_received",  "actor_cancels",       "actor_cancel_requests", "links_up",
    "links_closed",      "links_failed",        "links_peer_died",       "link_refused",
    "protocol_errors",   "peers_unresponsive",  "outbox_queued",         "outbox_depth",
    "outbox_high_water", "control_loop_sleeps", "control_loop_wakes",    "errors_reported",
};
static_assert(std::size(kNames) == kActorCounterSlots, "a counter without a name");

}  // namespace

std::string_view actor_counter_name(std::uint32_t index) noexcept {
    return index < kActorCounterSlots ? kNames[index] : std::string_view();
}

void init_actor_counters(std::span<std::byte> region) {
    if (region.size() < kActorCountersUsedBytes ||
        reinterpret_cast<std::uintptr_t>(region.data()) % alignof(std::atomic<std::uint64_t>) !=
            0) {
        throw LayoutError("counters region of " + std::to_string(region.size()) +
                          " bytes is too small or misaligned for " +
                          std::to_string(kActorCountersUsedBytes));
    }
    auto* h = new (region.data()) ActorCountersHeader{};
    h->magic = kActorCountersMagic;
    h->version = kActorCountersVersion;
    h->slots = kActorCounterSlots;
    for (std::uint32_t i = 0; i < kActorCounterSlots; ++i) {
        new (region.data() + kActorCountersHeaderBytes + 8 * i) std::atomic<std::uint64_t>(0);
    }
}

ActorCounters::ActorCounters(std::span<std::byte> region) noexcept
    : values_(std::launder(reinterpret_cast<std::atomic<std::uint64_t>*>(
          region.data() + kActorCountersHeaderBytes))) {}

void ActorCounters::raise(ActorCounter c, std::uint64_t v) noexcept {
    if (values_ == nullptr) return;
    auto& word = values_[index(c)];
    // relaxed (all): a diagnostic high-water mark; the CAS only keeps concurrent raisers from
    // lowering it.
    std::uint64_t seen = word.load(std::memory_order::relaxed);
    while (seen < v && !word.compare_exchange_weak(seen, v, std::memory_order::relaxed,
                                                   std::memory_order::relaxed)) {
    }
}

std::optional<ActorCountersSample> read_actor_counters(std::span<const std::byte> region,
                                                       std::string& problem) noexcept {
    if (region.size() < kActorCountersHeaderBytes) {
        problem = "counters region smaller than its header";
        return std::nullopt;
    }
    // The header is immutable after publication: one copy, validated, the only thing used.
    ActorCountersHeader h;
    std::memcpy(&h, region.data(), sizeof h);
    if (h.magic == 0) {
        problem = "counters not initialised (a segment of a version without counters?)";
        return std::nullopt;
    }
    if (h.magic != kActorCountersMagic) {
        problem = "counters region: bad magic";
        return std::nullopt;
    }
    if (h.version != kActorCountersVersion) {
        problem = "counters version " + std::to_string(h.version) + ", expected " +
                  std::to_string(kActorCountersVersion);
        return std::nullopt;
    }
    if (h.slots == 0 || h.slots > (region.size() - kActorCountersHeaderBytes) / 8) {
        problem = "counters region declares " + std::to_string(h.slots) + " slots";
        return std::nullopt;
    }
    ActorCountersSample s;
    s.version = h.version;
    s.slots = h.slots;
    s.known = std::min(h.slots, kActorCounterSlots);
    const auto* values = std::launder(reinterpret_cast<const std::atomic<std::uint64_t>*>(
        region.data() + kActorCountersHeaderBytes));
    for (std::uint32_t i = 0; i < s.known; ++i) {
        // relaxed: a diagnostic sample of monotonic counters and levels (writer table).
        s.values[i] = values[i].load(std::memory_order::relaxed);
    }
    return s;
}

}  // namespace shmctx::shm
