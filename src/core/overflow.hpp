// The sending end of a stream and its overflow spill (DESIGN.md §4.2; docs/protocol.md §10).
// Private to core.
//
// When the receiver declared `allow_overruns` and its ring is full, the sender does not fail:
// the message goes into a per-stream overflow queue in the sender's process (a moodycamel
// ConcurrentQueue used with one producer token, so FIFO holds), and the actor's one
// OverflowDrainer thread writes queued messages into the ring as the consumer frees space.
//
// Hand-off rules (who may touch the ring's producer-private state, RingWriter):
//   1. One sending thread per stream (MsgStream's contract).
//   2. The RingWriter passes between the sender and the drainer by release/acquire: the sender's
//      enqueue (the queue's own release) publishes its direct writes to the drainer that
//      dequeues; the drainer's [spill.settle] release publishes its writes to the sender that
//      sees `settled_ == enqueued_` ([spill.settle] acquire).
//   3. The drainer touches the ring only while it holds a popped item (then settled_ <
//      enqueued_), and publishes the tail before it bumps settled_.
//   4. The sender writes directly only when settled_ == enqueued_ (acquire); otherwise its
//      message goes behind the queued ones (FIFO).
//   5. Waking the parked drainer uses the wake protocol ([wake.storeload] in wake_cell), and
//      the drainer's scheduling flag uses seq_cst on both sides ([spill.schedule]), so a
//      queued message is never left without a drainer.
#pragma once

#include <concurrentqueue/concurrentqueue.h>

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <stop_token>
#include <thread>
#include <utility>
#include <vector>

#include "shmctx/deadline.hpp"
#include "shmctx/shm/ring.hpp"
#include "shmctx/shm/wake.hpp"

namespace shmctx::detail {

class OverflowDrainer;

/// Caps on what one stream's spill may hold now (DESIGN.md §4.9: StreamOptions::spill_cap_*).
struct SpillLimits {
    std::uint64_t max_msgs = std::uint64_t{1} << 20;
    std::uint64_t max_bytes = std::uint64_t{256} << 20;
};

/// Payload memory of one stream's spill. A spilling sender must not take a page fault per few
/// dozen messages (each costs microseconds on a VM: the spill's send p99.9 bar), so payloads go
/// into 1 MiB chunks mapped pre-faulted (MAP_POPULATE), carved in order by the sending thread
/// and released by whichever thread drops the item (the drainer). A chunk the sender left and
/// whose items are all released is kept for reuse (up to kKeptChunks per stream) or unmapped.
/// Payloads over a quarter chunk use the heap.
/// Thread-safety: allocate() from the sending thread only; release() from any thread.
class SpillArena {
public:
    struct Chunk;
    /// Where one payload lives; `chunk` is null for a heap block.
    struct Block {
        std::byte* data = nullptr;
        Chunk* chunk = nullptr;
    };
    static constexpr std::size_t kChunkBytes = std::size_t{1} << 20;
    static constexpr std::size_t kKeptChunks = 4;

    SpillArena() { kept_.reserve(kKeptChunks); }  // recycle() then never allocates
    SpillArena(const SpillArena&) = delete;
    SpillArena& operator=(const SpillArena&) = delete;
    /// Every Block must have been released.
    ~SpillArena();

    /// `bytes` of payload space (std::bad_alloc when the memory cannot be mapped).
    Block allocate(std::size_t bytes);
    static void release(const Block& block) noexcept;

private:
    void recycle(Chunk* chunk) noexcept;
    Chunk* fresh_chunk();

    Chunk* current_ = nullptr;  // sending thread
    std::size_t used_ = 0;      // bytes of current_ handed out (after its header)
    std::mutex mu_;             // guards kept_
    std::vector<Chunk*> kept_;
};

/// One queued message: its record kind and a copy of the payload in the stream's SpillArena.
struct SpillItem {
    std::uint16_t kind = 0;
    std::uint32_t size = 0;
    SpillArena::Block block;

    SpillItem() = default;
    SpillItem(SpillItem&& other) noexcept
        : kind(other.kind), size(other.size), block(std::exchange(other.block, {})) {}
    SpillItem& operator=(SpillItem&& other) noexcept {
        if (this != &other) {
            SpillArena::release(block);
            kind = other.kind;
            size = other.size;
            block = std::exchange(other.block, {});
        }
        return *this;
    }
    SpillItem(const SpillItem&) = delete;
    SpillItem& operator=(const SpillItem&) = delete;
    ~SpillItem() { SpillArena::release(block); }
    std::span<const std::byte> payload() const noexcept { return {block.data, size}; }
};

/// moodycamel settings for the spill queue: 4096-item blocks whose memory is mapped
/// pre-faulted, for the same reason as SpillArena (the queue keeps its blocks for reuse until
/// it is destroyed: a stream's spill memory stays at its high water while the stream lives).
struct SpillQueueTraits : moodycamel::ConcurrentQueueDefaultTraits {
    static constexpr std::size_t BLOCK_SIZE = 4096;
    static void*(malloc)(std::size_t size);
    static void(free)(void* ptr);
};

/// One stream direction's producer: the data ring and the spill in front of it.
/// Thread-safety: the sending thread calls the sender members; the drainer thread calls
/// drain_some()/advertise()/has_space(); request_discard() and the counters from any thread.
class OutboundStream : public std::enable_shared_from_this<OutboundStream> {
public:
    /// Called once, on the drainer thread, when the drainer finds the ring broken by the peer
    /// (the peer corrupted its consumer words): the link must fail with the ProtocolError it
    /// gets, as it would on the sending thread (the spill is discarded either way).
    using BrokenRingHandler = std::function<void(std::exception_ptr)>;

    OutboundStream(shm::RingWriter ring, SpillLimits limits, std::string label,
                   BrokenRingHandler on_broken = {});
    OutboundStream(const OutboundStream&) = delete;
    OutboundStream& operator=(const OutboundStream&) = delete;

    // ---- sending thread ----
    /// The ring, for direct writes; only while spill_empty() (rule 4).
    shm::RingWriter& ring() noexcept { return ring_; }
    /// Nothing queued or held by the drainer: the sender owns the ring (rules 2 and 4).
    bool spill_empty() const noexcept {
        // [spill.settle] pairs with the store in settle(): the drainer's ring writes are
        // visible once its count is seen (seq_cst: also the [spill.waiters] check).
        return settled_.load(std::memory_order::seq_cst) == enqueued_;
    }
    enum class SpillResult : std::uint8_t { queued, cap_msgs, cap_bytes, discarding, abandoned };
    /// Queues a copy of `payload` (kind `kind`) behind what is queued and makes sure the drainer
    /// serves this stream. Refused past a cap (the caller applies on_full) or after a discard.
    SpillResult spill(std::uint16_t kind, std::span<const std::byte> payload,
                      OverflowDrainer& drainer);
    /// As spill(), building the payload in place: `fill(span<std::byte> of max_bytes)` returns
    /// the bytes used (<= max_bytes), or kAbandonedFill to abandon the message.
    template <class Fill>
    SpillResult spill_with(std::uint16_t kind, std::size_t max_bytes, Fill&& fill,
                           OverflowDrainer& drainer) {
        const SpillResult r = check_caps(max_bytes);
        if (r != SpillResult::queued) return r;
        SpillItem item;
        item.kind = kind;
        item.block = arena_.allocate(max_bytes);
        const std::size_t used = fill(std::span<std::byte>(item.block.data, max_bytes));
        if (used == kAbandonedFill) return SpillResult::abandoned;
        item.size = static_cast<std::uint32_t>(used < max_bytes ? used : max_bytes);
        return enqueue(std::move(item), drainer);
    }
    static constexpr std::size_t kAbandonedFill = static_cast<std::size_t>(-1);
    shm::RingCounters counters() const noexcept { return ring_.counters(); }
    /// Whether a spill of `bytes` more would be refused by a cap now (sending thread).
    bool at_cap(std::size_t bytes) const noexcept {
        const SpillResult r = check_caps(bytes);
        return r == SpillResult::cap_msgs || r == SpillResult::cap_bytes;
    }
    /// Waits until `ready()` (checked now, after each drainer batch and after wake_waiters()),
    /// `stop` or `deadline`; returns ready().
    template <class Ready>
    bool wait_spill(Ready&& ready, const std::stop_token& stop, const Deadline& deadline);
    /// Wakes threads in wait_spill() (after a change their ready() looks at).
    void wake_waiters();
    bool has_waiters() const noexcept {
        return waiters_.load(std::memory_order::seq_cst) != 0;  // [spill.waiters]
    }
    /// Discards what is queued (and everything queued later), waits until the drainer let go of
    /// the ring, and returns how many messages were discarded by this call's wait (logged by
    /// the caller). Safe to call more than once.
    std::uint64_t discard_and_wait(OverflowDrainer& drainer);

    // ---- any thread ----
    /// Asks the drainer to discard instead of writing (the peer stopped reading, the context
    /// ended). Sticky. `drainer` may be null (no drainer was ever started: nothing is queued).
    void request_discard(OverflowDrainer* drainer);
    bool discarding() const noexcept { return discarding_.load(std::memory_order::acquire); }
    std::uint64_t discarded_total() const noexcept {
        return discarded_.load(std::memory_order::acquire);
    }
    const std::string& label() const noexcept { return label_; }

    // ---- drainer thread (OverflowDrainer) ----
    enum class Drain : std::uint8_t {
        idle,     ///< nothing queued any more; the stream left the drainer
        blocked,  ///< the ring is full; an item is held
        more,     ///< the budget ran out; more may be queued
    };
    /// Writes queued messages while the ring takes them, at most `budget`, publishing once;
    /// `moved` = messages written or discarded.
    Drain drain_some(std::size_t budget, std::size_t& moved);
    /// The held item would fit now, or there is something to discard (drainer, while blocked).
    bool has_space() noexcept;
    /// Advertises the drainer's wake slot in the ring's space cell (blocked streams, before the
    /// drainer sleeps); nullopt withdraws it but leaves the cell in block mode. True when the
    /// cell just left busy_spin (the drainer then bounds its sleep, wake.hpp kModeSwitchWait).
    bool advertise(std::optional<std::uint32_t> slot) noexcept;
    /// Drainer stopping: discards everything queued now and later (the stream is never served
    /// again).
    void abandon() noexcept;

private:
    friend class OverflowDrainer;
    SpillResult check_caps(std::size_t bytes) const noexcept;
    SpillResult enqueue(SpillItem item, OverflowDrainer& drainer);
    /// Drops the held and queued items without writing: whoever holds the stream.
    void discard_all() noexcept;
    /// Publishes the ring, counts, then [spill.settle] and wakes wait_empty() waiters.
    void settle(std::uint64_t written, std::uint64_t discarded) noexcept;

    shm::RingWriter ring_;
    const SpillLimits limits_;
    const std::string label_;            // "context <cid> to <peer>", for the discard log
    const BrokenRingHandler on_broken_;  // drainer thread, once (broken_reported_)
    bool broken_reported_ = false;       // drainer thread only
    SpillArena arena_;                   // before the queue and held_: their items release into it
    moodycamel::ConcurrentQueue<SpillItem, SpillQueueTraits> queue_;
    moodycamel::ProducerToken token_;  // the sending thread's (rule 1)

    // Sending thread only.
    std::uint64_t enqueued_ = 0;
    std::uint64_t high_water_ = 0;
    // Shared (see the file comment for the protocol).
    std::atomic<std::uint64_t> enqueued_shared_{0};  // [spill.schedule] seq_cst
    std::atomic<std::uint64_t> settled_{0};          // [spill.settle] drained + discarded
    std::atomic<std::uint64_t> queued_bytes_{0};     // relaxed: a cap, checked by the sender
    std::atomic<std::uint64_t> discarded_{0};
    std::atomic<bool> scheduled_{false};  // [spill.schedule] the drainer serves this stream
    std::atomic<bool> discarding_{false};
    // Drainer only (or whoever discards after the drainer stopped).
    std::optional<SpillItem> held_;
    std::uint64_t settled_local_ = 0;
    std::uint64_t drained_total_ = 0;
    bool space_mode_block_ = false;  // the space cell was switched to block for the drainer
    // wait_empty()/discard_and_wait() waiters.
    std::mutex wait_mu_;
    std::condition_variable_any wait_cv_;
    std::atomic<std::uint32_t> waiters_{0};  // [spill.waiters] seq_cst with settled_
};

/// The actor's one drainer thread (DESIGN.md §4.2): started with the actor's first spill,
/// parked on its wake slot while nothing spills, woken by senders (schedule) and by consumers'
/// releases (the space cells of blocked rings advertise its slot while it sleeps), serving every
/// spilling stream round-robin, a batch each.
/// Thread-safety: schedule()/poke() from any thread; stop() from the owner.
class OverflowDrainer {
public:
    /// `table`/`slot`: the actor's wake table and a slot reserved for this thread.
    OverflowDrainer(const shm::WakeTable& table, std::uint32_t slot);
    OverflowDrainer(const OverflowDrainer&) = delete;
    OverflowDrainer& operator=(const OverflowDrainer&) = delete;
    ~OverflowDrainer();

    /// Hands a stream with queued messages to the drainer; false once stopped (the caller then
    /// owns the queue and discards it).
    bool schedule(std::shared_ptr<OutboundStream> stream);
    /// Wakes the drainer to look at its streams again (a discard request).
    void poke() noexcept;
    /// Discards what every stream still queues and joins the thread. Idempotent.
    void stop();
    std::uint32_t slot() const noexcept { return slot_; }

private:
    void run() noexcept;
    bool ready_to_run(const std::vector<std::shared_ptr<OutboundStream>>& blocked) noexcept;

    shm::WakeTable table_;
    const std::uint32_t slot_;
    shm::WakeCell cell_{};  // where the parked drainer advertises its slot (process-local)
    std::mutex mu_;
    std::vector<std::shared_ptr<OutboundStream>> incoming_;  // guarded by mu_
    bool stopped_ = false;                                   // guarded by mu_
    std::atomic<bool> poked_{false};  // [drainer.poke] release; the drainer acquires
    std::atomic<bool> stop_{false};
    std::thread thread_;
};

// ---- template implementation ----

template <class Ready>
bool OutboundStream::wait_spill(Ready&& ready, const std::stop_token& stop,
                                const Deadline& deadline) {
    std::unique_lock lock(wait_mu_);
    // [spill.waiters] pairs with the seq_cst load in settle(): either the drainer sees us
    // waiting and notifies under wait_mu_, or ready() sees its settled_ count.
    waiters_.fetch_add(1, std::memory_order::seq_cst);
    // [spill.waiters] ready() reads settled_ (and more) with weaker orders: this fence puts
    // those reads after our increment in the single total order, so settle()'s seq_cst store
    // and load pair with it (store-buffering) and one of the two sides sees the other.
    shm::storeload_fence();
    bool ok = false;
    if (deadline.is_infinite()) {
        ok = wait_cv_.wait(lock, stop, ready);
    } else {
        ok = wait_cv_.wait_until(lock, stop, deadline.at(), ready);
    }
    waiters_.fetch_sub(1, std::memory_order::relaxed);  // relaxed: a hint for settle()
    return ok;
}

}  // namespace shmctx::detail
