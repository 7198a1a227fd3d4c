// OutboundStream and OverflowDrainer (overflow.hpp; docs/protocol.md §10).
#include "core/overflow.hpp"

#include <pthread.h>
#include <sys/mman.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>
#include <utility>

#include "shmctx/errors.hpp"
#include "shmctx/shm/fault.hpp"

namespace shmctx::detail {

// ============================== OutboundStream ==============================

// ============================== SpillArena ==============================

namespace {

/// mmap'd and pre-faulted, or nullptr.
void* map_populated(std::size_t bytes) noexcept {
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    return p == MAP_FAILED ? nullptr : p;
}

}  // namespace

/// At the start of its mapping. `state`: live items in the low bits, kSealed once the sender
/// moved on; exactly one thread sees the transition to "sealed and empty" and recycles it.
struct SpillArena::Chunk {
    static constexpr std::uint64_t kSealed = std::uint64_t{1} << 63;
    SpillArena* arena;
    std::atomic<std::uint64_t> state;
};
static_assert(sizeof(SpillArena::Chunk) <= 64);
namespace {
constexpr std::size_t kChunkHeader = 64;  // keeps payloads 16-byte aligned
}  // namespace

SpillArena::~SpillArena() {
    if (current_ != nullptr) ::munmap(current_, kChunkBytes);
    for (Chunk* c : kept_) ::munmap(c, kChunkBytes);
}

SpillArena::Chunk* SpillArena::fresh_chunk() {
    {
        const std::lock_guard lock(mu_);
        if (!kept_.empty()) {
            Chunk* c = kept_.back();
            kept_.pop_back();
            return c;
        }
    }
    void* p = map_populated(kChunkBytes);
    if (p == nullptr) throw std::bad_alloc();
    return new (p) Chunk{this, {0}};
}

SpillArena::Block SpillArena::allocate(std::size_t bytes) {
    if (bytes == 0) return {};
    const std::size_t need = (bytes + 15) & ~std::size_t{15};
    if (need > kChunkBytes / 4) {
        auto* p = static_cast<std::byte*>(std::malloc(bytes));
        if (p == nullptr) throw std::bad_alloc();
        return {p, nullptr};
    }
    if (current_ == nullptr || kChunkHeader + used_ + need > kChunkBytes) {
        Chunk* next = fresh_chunk();
        if (current_ != nullptr) {
            // acq_rel: orders the releases of this chunk's items (theirs) with our seal.
            const std::uint64_t before =
                current_->state.fetch_add(Chunk::kSealed, std::memory_order::acq_rel);
            if (before == 0) recycle(current_);  // every item already released
        }
        // relaxed: nobody else holds a reference to a chunk with no live items.
        next->state.store(0, std::memory_order::relaxed);
        current_ = next;
        used_ = 0;
    }
    // acq_rel: pairs with the releasing thread's fetch_sub (the item's bytes are reused only
    // after every reader let go).
    current_->state.fetch_add(1, std::memory_order::acq_rel);
    std::byte* data = reinterpret_cast<std::byte*>(current_) + kChunkHeader + used_;
    used_ += need;
    return {data, current_};
}

void SpillArena::release(const Block& block) noexcept {
    if (block.data == nullptr) return;
    if (block.chunk == nullptr) {
        std::free(block.data);
        return;
    }
    // acq_rel: our reads of the bytes happen before a recycler reuses them.
    const std::uint64_t before = block.chunk->state.fetch_sub(1, std::memory_order::acq_rel);
    if (before == Chunk::kSealed + 1) block.chunk->arena->recycle(block.chunk);
}

void SpillArena::recycle(Chunk* chunk) noexcept {
    {
        const std::lock_guard lock(mu_);
        if (kept_.size() < kKeptChunks) {
            kept_.push_back(chunk);
            return;
        }
    }
    ::munmap(chunk, kChunkBytes);
}

// ============================== SpillQueueTraits ==============================

namespace {
/// Header in front of every block moodycamel gets from us, so free() knows how it was made.
struct alignas(16) QueueBlockHeader {
    std::size_t mapped_bytes;  // 0: heap
};
constexpr std::size_t kQueueHeader = 64;
constexpr std::size_t kMapFrom = 64 * 1024;  // the item blocks; small internals use the heap
}  // namespace

void*(SpillQueueTraits::malloc)(std::size_t size) {
    const std::size_t total = size + kQueueHeader;
    void* p = total >= kMapFrom ? map_populated(total) : std::malloc(total);
    if (p == nullptr) return nullptr;
    new (p) QueueBlockHeader{total >= kMapFrom ? total : 0};
    return static_cast<std::byte*>(p) + kQueueHeader;
}

void(SpillQueueTraits::free)(void* ptr) {
    if (ptr == nullptr) return;
    void* base = static_cast<std::byte*>(ptr) - kQueueHeader;
    const std::size_t mapped = static_cast<QueueBlockHeader*>(base)->mapped_bytes;
    if (mapped != 0) {
        ::munmap(base, mapped);
    } else {
        std::free(base);
    }
}

// ============================== OutboundStream ==============================

OutboundStream::OutboundStream(shm::RingWriter ring, SpillLimits limits, std::string label,
                               BrokenRingHandler on_broken)
    : ring_(std::move(ring)),
      limits_(limits),
      label_(std::move(label)),
      on_broken_(std::move(on_broken)),
      queue_(0),  // no blocks until the first spill: most streams never spill
      token_(queue_) {}

OutboundStream::SpillResult OutboundStream::check_caps(std::size_t bytes) const noexcept {
    if (discarding()) return SpillResult::discarding;
    // relaxed (settled_): a cap on what is queued now; an older count only overestimates it.
    const std::uint64_t depth = enqueued_ - settled_.load(std::memory_order::relaxed);
    if (depth >= limits_.max_msgs) return SpillResult::cap_msgs;
    if (depth == 0) return SpillResult::queued;  // empty: its byte total is 0, whatever we saw
    // relaxed: as above (the drainer subtracts what it wrote).
    if (queued_bytes_.load(std::memory_order::relaxed) + bytes > limits_.max_bytes) {
        return SpillResult::cap_bytes;
    }
    return SpillResult::queued;
}

OutboundStream::SpillResult OutboundStream::spill(std::uint16_t kind,
                                                  std::span<const std::byte> payload,
                                                  OverflowDrainer& drainer) {
    const SpillResult r = check_caps(payload.size());
    if (r != SpillResult::queued) return r;
    SpillItem item;
    item.kind = kind;
    item.size = static_cast<std::uint32_t>(payload.size());
    item.block = arena_.allocate(payload.size());
    if (!payload.empty()) std::memcpy(item.block.data, payload.data(), payload.size());
    return enqueue(std::move(item), drainer);
}

OutboundStream::SpillResult OutboundStream::enqueue(SpillItem item, OverflowDrainer& drainer) {
    const std::uint32_t size = item.size;
    // The queue's release publishes the item and, with it, our earlier direct ring writes to
    // the drainer that dequeues it (rule 2).
    if (!queue_.enqueue(token_, std::move(item))) throw std::bad_alloc();
    ++enqueued_;
    // relaxed: the byte cap's running total (check_caps).
    queued_bytes_.fetch_add(size, std::memory_order::relaxed);
    // relaxed: a diagnostic level; the drainer's count may lag, which only lowers it.
    const std::uint64_t depth = enqueued_ - settled_.load(std::memory_order::relaxed);
    high_water_ = std::max(high_water_, depth);
    ring_.count_spilled(enqueued_, high_water_);
    // [spill.schedule] pairs with the drainer's seq_cst store/load in drain_some(): either it
    // sees this count before it leaves the stream, or we see scheduled_ == false and hand the
    // stream to it again.
    enqueued_shared_.store(enqueued_, std::memory_order::seq_cst);
    (void)SHMCTX_FAULT_POINT("spill.before_schedule");
    if (!scheduled_.exchange(true, std::memory_order::seq_cst)) {
        bool handed = false;
        try {
            handed = drainer.schedule(shared_from_this());
        } catch (...) {
            // Out of memory handing the stream over: nobody else holds it (scheduled_ was
            // false), so the queue is ours; what it holds now is only what we queued since the
            // drainer left. Take it back out, count it as discarded, and let the caller see the
            // error (the send did not happen).
            discard_all();
            scheduled_.store(false, std::memory_order::seq_cst);  // [spill.schedule]
            throw;
        }
        if (!handed) {
            // The drainer stopped (the actor shuts down): nobody else holds the ring.
            discarding_.store(true, std::memory_order::release);
            discard_all();
            return SpillResult::discarding;
        }
    }
    return SpillResult::queued;
}

void OutboundStream::wake_waiters() {
    const std::lock_guard lock(wait_mu_);
    wait_cv_.notify_all();
}

void OutboundStream::request_discard(OverflowDrainer* drainer) {
    // [spill.discard] pairs with the acquire in discarding(): sticky.
    discarding_.store(true, std::memory_order::release);
    if (drainer != nullptr) drainer->poke();
    wake_waiters();
}

std::uint64_t OutboundStream::discard_and_wait(OverflowDrainer& drainer) {
    const std::uint64_t before = discarded_total();
    request_discard(&drainer);
    while (!spill_empty()) {
        // The drainer answers a poke at once; re-poking bounds the cost of a lost wake-up in a
        // protocol bug to 50 ms instead of a hang.
        if (wait_spill([&] { return spill_empty(); }, {}, std::chrono::milliseconds(50))) break;
        drainer.poke();
    }
    return discarded_total() - before;
}

bool OutboundStream::has_space() noexcept {
    if (discarding()) return true;
    return held_ && ring_.has_space_for(held_->size);
}

void OutboundStream::settle(std::uint64_t written, std::uint64_t discarded) noexcept {
    if (written == 0 && discarded == 0) return;
    (void)ring_.publish();  // rule 3: the tail before the count
    if (written != 0) {
        drained_total_ += written;
        ring_.count_spill_drained(drained_total_);
    }
    if (discarded != 0) {
        // relaxed load: this thread is the only writer while it holds the stream.
        const std::uint64_t total = discarded_.load(std::memory_order::relaxed) + discarded;
        discarded_.store(total, std::memory_order::release);
        ring_.count_spill_discarded(total);
    }
    (void)SHMCTX_FAULT_POINT("spill.before_settle");
    settled_local_ += written + discarded;
    // [spill.settle] pairs with the acquire in spill_empty(); seq_cst also for [spill.waiters].
    settled_.store(settled_local_, std::memory_order::seq_cst);
    // [spill.waiters] pairs with the fetch_add in wait_empty().
    if (waiters_.load(std::memory_order::seq_cst) != 0) wake_waiters();
}

OutboundStream::Drain OutboundStream::drain_some(std::size_t budget, std::size_t& moved) {
    std::uint64_t written = 0;
    std::uint64_t dropped = 0;
    Drain result = Drain::idle;
    for (;;) {
        if (!held_) {
            SpillItem item;
            if (!queue_.try_dequeue_from_producer(token_, item)) break;
            held_.emplace(std::move(item));
            (void)SHMCTX_FAULT_POINT("spill.after_dequeue");
        }
        const std::uint32_t size = held_->size;
        if (discarding()) {
            held_.reset();
            // relaxed: the byte cap's running total.
            queued_bytes_.fetch_sub(size, std::memory_order::relaxed);
            ++dropped;
            continue;
        }
        if (written >= budget) {
            result = Drain::more;
            break;
        }
        const shm::WriteResult r =
            ring_.try_write(held_->kind, held_->payload(), 0, shm::Publish::deferred);
        if (r == shm::WriteResult::ok) {
            held_.reset();
            queued_bytes_.fetch_sub(size, std::memory_order::relaxed);  // relaxed: as above
            ++written;
            continue;
        }
        if (r == shm::WriteResult::full_msgs || r == shm::WriteResult::full_bytes) {
            result = Drain::blocked;
            break;
        }
        // consumer_closed, protocol_error (too_large cannot happen: the sender checked): the
        // peer stopped reading or broke the ring; nothing more can be delivered (the owner
        // logs the count). A broken ring also fails the link, as a send that found it would.
        if (r == shm::WriteResult::protocol_error && on_broken_ && !broken_reported_) {
            broken_reported_ = true;
            try {
                on_broken_(std::make_exception_ptr(ProtocolError("data ring of " + label_ + ": " +
                                                                 std::string(ring_.error_text()))));
            } catch (...) {
                // Posting the failure allocates; the discard below still ends the spill.
            }
        }
        discarding_.store(true, std::memory_order::release);  // [spill.discard]
    }
    moved = written + dropped;
    if (result != Drain::blocked && space_mode_block_) {
        // Back to "nobody waits" while we still hold the ring (before settle()), so it never
        // races a sender's own wait_writable on the same cell.
        ring_.advertise_space_waiter(std::nullopt);
        space_mode_block_ = false;
    }
    settle(written, dropped);
    if (result != Drain::idle) return result;
    // [spill.schedule] pairs with the seq_cst store + exchange in enqueue().
    scheduled_.store(false, std::memory_order::seq_cst);
    (void)SHMCTX_FAULT_POINT("spill.after_unschedule");
    if (enqueued_shared_.load(std::memory_order::seq_cst) != settled_local_ &&
        !scheduled_.exchange(true, std::memory_order::seq_cst)) {
        return Drain::more;  // more arrived meanwhile and it is still ours
    }
    return Drain::idle;
}

bool OutboundStream::advertise(std::optional<std::uint32_t> slot) noexcept {
    if (slot) {
        const bool switched = !space_mode_block_;
        ring_.advertise_space_waiter(slot);
        space_mode_block_ = true;
        return switched;
    }
    ring_.withdraw_space_waiter();
    return false;
}

void OutboundStream::discard_all() noexcept {
    std::uint64_t dropped = 0;
    std::uint64_t bytes = 0;
    if (held_) {
        bytes += held_->size;
        held_.reset();
        ++dropped;
    }
    SpillItem item;
    while (queue_.try_dequeue_from_producer(token_, item)) {
        bytes += item.size;
        ++dropped;
    }
    // relaxed: the byte cap's running total (per item, so a racing enqueue's add survives).
    queued_bytes_.fetch_sub(bytes, std::memory_order::relaxed);

    if (space_mode_block_) {
        ring_.advertise_space_waiter(std::nullopt);
        space_mode_block_ = false;
    }
    settle(0, dropped);
}

void OutboundStream::abandon() noexcept {
    discarding_.store(true, std::memory_order::release);  // [spill.discard]
    for (;;) {
        discard_all();
        // [spill.schedule] as in drain_some(): a message queued meanwhile is discarded too.
        scheduled_.store(false, std::memory_order::seq_cst);
        if (enqueued_shared_.load(std::memory_order::seq_cst) == settled_local_ ||
            scheduled_.exchange(true, std::memory_order::seq_cst)) {
            return;
        }
    }
}

// ============================== OverflowDrainer ==============================

namespace {
/// Messages one stream writes per turn before the next stream's turn (fairness), published
/// with one tail store.
constexpr std::size_t kBatch = 64;
}  // namespace

OverflowDrainer::OverflowDrainer(const shm::WakeTable& table, std::uint32_t slot)
    : table_(table), slot_(slot) {
    // relaxed: the thread that reads it is started below (std::thread's start synchronises).
    cell_.mode.store(static_cast<std::uint32_t>(shm::WaitMode::block), std::memory_order::relaxed);
    thread_ = std::thread([this] { run(); });
    // For top -H / perf and the bench's idle-CPU figure; failure only loses the name.
    (void)pthread_setname_np(thread_.native_handle(), "shmctx-drain");
}

OverflowDrainer::~OverflowDrainer() { stop(); }

bool OverflowDrainer::schedule(std::shared_ptr<OutboundStream> stream) {
    {
        const std::lock_guard lock(mu_);
        if (stopped_) return false;
        incoming_.push_back(std::move(stream));
    }
    poke();
    return true;
}

void OverflowDrainer::poke() noexcept {
    // [drainer.poke] pairs with the acquire exchange/load in run(); wake_cell's
    // [wake.storeload] fence orders it before the read of the parked drainer's advertisement.
    poked_.store(true, std::memory_order::release);
    (void)shm::wake_cell(cell_, table_);
}

void OverflowDrainer::stop() {
    // [drainer.stop] pairs with the acquire in run().
    stop_.store(true, std::memory_order::release);
    poke();
    if (thread_.joinable()) thread_.join();
}

bool OverflowDrainer::ready_to_run(
    const std::vector<std::shared_ptr<OutboundStream>>& blocked) noexcept {
    // [drainer.poke]
    if (poked_.load(std::memory_order::acquire)) return true;
    return std::any_of(blocked.begin(), blocked.end(),
                       [](const std::shared_ptr<OutboundStream>& s) { return s->has_space(); });
}

void OverflowDrainer::run() noexcept {
    shm::Waiter waiter(table_, slot_);
    std::vector<std::shared_ptr<OutboundStream>> active;
    std::vector<std::shared_ptr<OutboundStream>> blocked;
    Clock::time_point switch_until{};
    for (;;) {
        // [drainer.poke]: consume the poke before looking, so a later one wakes us again.
        poked_.exchange(false, std::memory_order::acq_rel);
        {
            const std::lock_guard lock(mu_);
            try {
                // Room first (the streams stay in incoming_ if that fails), then the moves.
                active.reserve(active.size() + incoming_.size());
                blocked.reserve(active.capacity());
                std::move(incoming_.begin(), incoming_.end(), std::back_inserter(active));
                incoming_.clear();
            } catch (const std::bad_alloc&) {
                // Serve what we have; the newcomers wait for the next pass (poked stays set).
                poked_.store(true, std::memory_order::relaxed);  // relaxed: our own flag
            }
        }
        if (stop_.load(std::memory_order::acquire)) break;  // [drainer.stop]
        bool progress = false;
        blocked.clear();
        for (std::shared_ptr<OutboundStream>& s : active) {
            std::size_t moved = 0;
            const OutboundStream::Drain d = s->drain_some(kBatch, moved);
            // `more`: the stream has work left (the budget ran out, or an enqueue raced our
            // leaving and the stream is still ours): never park on it.
            progress = progress || moved != 0 || d == OutboundStream::Drain::more;
            if (d == OutboundStream::Drain::idle) {
                s.reset();
            } else if (d == OutboundStream::Drain::blocked) {
                blocked.push_back(s);
            }
        }
        std::erase(active, nullptr);
        // Round-robin: the next pass starts with the next stream.
        if (active.size() > 1) std::rotate(active.begin(), active.begin() + 1, active.end());
        if (progress) continue;
        // Park. Blocked rings advertise our slot while we sleep, so the consumer's release
        // wakes us; a ring whose cell just left busy_spin may have a consumer that read the
        // old mode: bound the sleep by kModeSwitchWait then (wake.hpp).
        bool switched = false;
        for (const std::shared_ptr<OutboundStream>& s : blocked) {
            switched = s->advertise(slot_) || switched;
        }
        const Clock::time_point now = Clock::now();
        if (switched) switch_until = now + shm::kModeSwitchWait;
        const Deadline until = switch_until > now ? Deadline(switch_until) : Deadline::never();
        (void)waiter.wait(
            cell_, [&] { return ready_to_run(blocked); }, until);
        for (const std::shared_ptr<OutboundStream>& s : blocked) (void)s->advertise(std::nullopt);
    }
    // Stopping: nothing more will be written; what is queued is discarded (the contexts are
    // being cancelled; each logs its count when it ends).
    {
        const std::lock_guard lock(mu_);
        stopped_ = true;
        std::move(incoming_.begin(), incoming_.end(), std::back_inserter(active));
        incoming_.clear();
    }
    for (const std::shared_ptr<OutboundStream>& s : active) s->abandon();
}

}  // namespace shmctx::detail
