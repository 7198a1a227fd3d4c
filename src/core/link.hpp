// A link: the two control rings and the two arenas between this actor and one peer
// (DESIGN.md §3 "Link", docs/protocol.md §8). Private to core.
//
// Our side owns the arena `link.<me>.<peer>`; its first carve is our outbound control ring,
// whose first record is LinkOpen. The peer's arena `link.<peer>.<me>` is attached by our
// control loop once it appears (links_epoch); its first carve is our inbound control ring,
// whose data cell advertises our wake slot 0 (the control loop's doorbell) while the control
// loop sleeps, so a control publish by the peer wakes it then.
//
// Producers of our control ring (any thread of ours) are serialised by `out_mu_`, a
// process-local mutex never held across a wait. A full control ring never blocks anyone: the
// record goes to the outbox (FIFO behind anything already there) and the control loop flushes
// it when the peer frees space (it advertises slot 0 in the ring's space cell meanwhile).
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "shmctx/deadline.hpp"
#include "shmctx/ids.hpp"
#include "shmctx/shm/actor_counters.hpp"
#include "shmctx/shm/actor_file.hpp"
#include "shmctx/shm/arena.hpp"
#include "shmctx/shm/ring.hpp"
#include "shmctx/shm/wake.hpp"
#include "shmctx/wire/codec.hpp"

namespace shmctx::detail {

/// Data bytes of a control ring: a 16 KiB control record (the default cap) is a sixteenth.
inline constexpr std::size_t kControlRingDataBytes = std::size_t{256} * 1024;
/// How long a sender watches whether the peer's reader comes back by itself before it wakes it
/// (Link::wake_reader_soon): well below a futex wake-up's cost on a VM (tens of microseconds),
/// above the few hundred nanoseconds in which a reader between two waits comes back.
inline constexpr Duration kWakeGrace = std::chrono::microseconds(2);
/// How much of what waits in a control ring a reader starts fetching at once: a few records
/// (a Start is about 200 bytes, a Started or Return about 100).
inline constexpr std::size_t kControlPrefetchBytes = 512;
/// The ring record kind of control records (one kind: the FlatBuffer says the rest).
inline constexpr std::uint16_t kControlRecordKind = 1;
/// Ring record kinds of stream data: kDataKindBase + PayloadKind (so kinds 16..20).
inline constexpr std::uint16_t kDataKindBase = 16;
inline constexpr std::uint16_t kMaxDataKind = kDataKindBase + kMaxPayloadKind;

enum class LinkState : std::uint8_t {
    awaiting_peer,  ///< our arena is published; the peer's is not attached yet
    up,             ///< both control rings attached, the peer's LinkOpen read
    closed,         ///< LinkClose sent or received (orderly shutdown)
    dead,           ///< the peer died (kernel evidence)
    failed,         ///< version mismatch or a protocol error on this link
};
const char* to_string(LinkState s) noexcept;

struct LinkSettings {
    Uid self;
    std::size_t arena_bytes = 0;
    mode_t mode = 0600;
    std::size_t max_control_record_bytes = wire::kDefaultMaxControlRecordBytes;
};

/// Thread-safety: send*/carve/release/state observers from any thread; attach_peer(),
/// read_control() and flush() from the control loop only.
class Link {
public:
    /// Publishes our arena with our control ring and writes LinkOpen into it. Throws what
    /// Arena::create throws (ShmExhausted, SystemError).
    Link(const shm::Names& names, const LinkSettings& settings, shm::PeerActor peer, Uid peer_uid);
    Link(const Link&) = delete;
    Link& operator=(const Link&) = delete;
    ~Link();

    const Uid& peer() const noexcept { return peer_uid_; }
    const shm::PeerActor& peer_actor() const noexcept { return peer_; }
    /// The peer's wake table as mapped here (for rings whose other end waits in the peer).
    const shm::WakeTable& peer_wakes() const noexcept { return peer_wakes_; }

    LinkState state() const noexcept { return state_.load(std::memory_order::acquire); }
    /// Portal::cancel_actor() was called on this link (tractor's `chan._cancel_called`).
    bool cancel_called() const noexcept {
        return cancel_called_.load(std::memory_order::relaxed);  // relaxed: a flag, no data
    }
    void set_cancel_called() noexcept {
        cancel_called_.store(true, std::memory_order::relaxed);  // relaxed: as cancel_called()
    }
    /// The liveness watcher's last word on the peer's heartbeat (DESIGN.md §2).
    bool peer_unresponsive() const noexcept {
        return unresponsive_.load(std::memory_order::relaxed);  // relaxed: a flag, no data
    }
    void set_peer_unresponsive(bool on) noexcept {
        unresponsive_.store(on, std::memory_order::relaxed);  // relaxed: as peer_unresponsive()
    }
    /// Why the link is not up (failed/closed/dead), else nullptr. Stable once set.
    std::exception_ptr failure() const;
    /// Moves the link to a final state with `why` (first call wins); false if already final.
    bool finish(LinkState final_state, std::exception_ptr why);

    // ---- control loop only ----
    /// Attaches the peer's arena and control ring if it exists; true once attached. Throws
    /// LayoutError (versions) or ProtocolError (a corrupt arena).
    bool attach_peer(const shm::Names& names);

    // ---- any thread (the inbound control ring's reader is guarded by in_mu_) ----
    bool peer_attached() const noexcept {
        // [link.attach] pairs with [link.attach] in attach_peer(): in_ is complete.
        return attached_.load(std::memory_order::acquire);
    }
    /// Calls `fn(view)` for each control record available now (at most `max`), in order, with
    /// the reader's lock held (records of one link are dispatched one at a time, in FIFO
    /// order, by whichever thread reads). With `wait_for_lock` false, returns 0 at once when
    /// another thread reads. A record that fails to decode throws DecodeError; a corrupt ring
    /// throws ProtocolError.
    template <class Fn>
    std::size_t read_control(Fn&& fn, std::size_t max, bool wait_for_lock = true);
    /// Advertises our doorbell in the inbound control ring while the control loop sleeps
    /// (true) or withdraws it (false): the peer's publishes wake us only while we sleep.
    void advertise_doorbell(bool sleeping) noexcept;
    /// A control record is waiting, or one is being read right now (lock-free: checked in
    /// spin loops, and after advertising, before sleeping).
    bool control_readable() const noexcept;
    /// The peer's arena with this inode belongs to an earlier link that ended: attach_peer()
    /// waits for a new one. Before the link is shared.
    void ignore_peer_arena(ino_t inode) noexcept { ignored_peer_arena_ = inode; }
    /// Writes outbox records while the ring has room; true when the outbox is empty.
    bool flush();
    /// The peer closed its control ring (RingWriter::close in its Link::finish): once we read
    /// what it wrote before, the link is over.
    bool peer_closed_control() const noexcept { return peer_attached() && in_->producer_closed(); }
    /// awaiting_peer -> up; false (and no change) once the link reached a final state.
    bool mark_up() noexcept {
        LinkState expected = LinkState::awaiting_peer;
        // [link.final]: acq_rel, so a final state set meanwhile (with its failure) is seen.
        return state_.compare_exchange_strong(expected, LinkState::up,
                                              std::memory_order::acq_rel) ||
               expected == LinkState::up;
    }
    /// The peer's arena (attached), for data-ring attach/detach.
    const shm::ArenaView* peer_arena() const noexcept {
        return peer_arena_ ? &*peer_arena_ : nullptr;
    }

    // ---- any thread ----
    /// Encodes with the link's encoder (`encode(ControlEncoder&)` returns the record) and
    /// writes the record (or queues it in the outbox); false when the link is no longer usable
    /// (the record was not sent). A template, not a std::function: no allocation per record.
    /// Publish::deferred leaves the record invisible until the next send publishes (the
    /// ring's tail covers every record before it): for a record nobody waits for alone.
    template <class Encode>
    bool send(Encode&& encode, shm::Publish publish = shm::Publish::now);
    /// send(), preceded under the same lock by the record `owed(ControlEncoder&)` returns when
    /// `*owes` (then cleared; `*owes` is guarded by our producer lock): a context's StartAck
    /// travels with that context's first reply, in one write section (docs/protocol.md §9.4).
    /// The owed record is written deferred: the reply's publish covers it, and if `encode`
    /// throws, the next record published on the link does.
    template <class Owed, class Encode>
    bool send_owing(bool* owes, Owed&& owed, Encode&& encode,
                    shm::Publish publish = shm::Publish::now);
    /// Carves a data ring region from our arena (thread-safe); collects detached carves first.
    shm::Carve carve(std::size_t bytes);
    /// Gives a data-ring carve back (reused once the peer detached it, or the peer is dead).
    void release(const shm::CarveDescriptor& descriptor) noexcept;
    /// Records that ever had to wait in the outbox (the counters of the tools issue read it).
    std::uint64_t outbox_total() const noexcept {
        return outbox_total_.load(std::memory_order::relaxed);
    }
    /// Records waiting in the outbox now (racy: a sample for the actor counters).
    std::uint64_t outbox_depth_approx() const noexcept {
        // relaxed: a statistic, stored under out_mu_ where the outbox changes.
        return outbox_depth_.load(std::memory_order::relaxed);
    }
    /// The actor's counters (outbox_queued is counted per queued record); set before the link
    /// is shared. Null: nothing counted.
    void set_counters(shm::ActorCounters* counters) noexcept { counters_ = counters; }
    /// Called (outside the link's locks) when a send had to queue in the outbox; ActorCore
    /// rings its control loop's doorbell. Set before the link is shared.
    void set_on_outbox(std::function<void()> fn) { on_outbox_ = std::move(fn); }

    /// Set when our control ring's writer found the peer's consumer words corrupt: the
    /// ProtocolError the control loop fails this link with (ActorCore::service_link), and which
    /// failure() reports until then. Null otherwise. Cheap: one acquire load when unset.
    std::exception_ptr out_failure() const;

private:
    /// out_mu_ held: our outbound ring can take no more records; a protocol_error (the peer's
    /// words failed validation) is recorded for out_failure() and the control loop is woken.
    void break_out_locked(shm::WriteResult why);
    /// Under out_mu_: writes one record or queues it; returns false when the ring is broken.
    bool write_locked(std::span<const std::byte> record, shm::Publish publish);
    /// One record onto the control ring (out_mu_ held, or in the constructor).
    shm::WriteResult write_record(std::span<const std::byte> record, shm::Publish publish);
    /// Without out_mu_: the wake a publish owes the peer's reader (its cell is in block mode).
    /// A reader that is about to look anyway (a waiting thread of the peer coming back to read,
    /// which withdraws the advertisement, or one that reads past `published`) needs none, and
    /// a futex wake would cost us a system call and the peer a CPU: so we first watch for
    /// that for at most kWakeGrace (not on a thread that must never wait: it wakes at once).
    void wake_reader_soon(std::uint64_t published) noexcept;

    Uid self_;
    shm::PeerActor peer_;
    Uid peer_uid_;
    shm::WakeTable peer_wakes_;
    /// Our wake-table slot the control loop waits on (its doorbell), advertised in the inbound
    /// control ring's data cell and, while the outbox is not empty, the outbound's space cell.
    static constexpr std::uint32_t doorbell_slot_ = 0;
    std::function<void()> on_outbox_;

    std::atomic<LinkState> state_{LinkState::awaiting_peer};
    std::atomic<bool> cancel_called_{false};
    std::atomic<bool> unresponsive_{false};
    mutable std::mutex state_mu_;  // guards failure_ and out_failure_
    std::exception_ptr failure_;
    // The peer corrupted the consumer words of our control ring (a bad head, read count or
    // wake slot): set once, then the control loop fails the link with it (out_failure()).
    std::exception_ptr out_failure_;
    std::atomic<bool> out_failed_{false};  // [link.out_failed]

    std::mutex arena_mu_;  // guards arena_ (carve, release, collect)
    shm::Arena arena_;

    mutable std::mutex out_mu_;  // serialises our control ring's producers
    shm::RingWriter out_;
    wire::ControlEncoder encoder_;
    std::deque<std::vector<std::byte>> outbox_;
    bool out_broken_ = false;
    std::atomic<std::uint64_t> outbox_total_{0};
    std::atomic<std::uint64_t> outbox_depth_{0};  // outbox_.size(), stored under out_mu_
    shm::ActorCounters* counters_ = nullptr;      // set before the link is shared

    std::optional<shm::ArenaView> peer_arena_;  // set once by the control loop (attach)
    std::optional<ino_t> ignored_peer_arena_;   // set before the link is shared
    std::mutex in_mu_;                          // guards in_'s reader state
    std::optional<shm::RingReader> in_;         // set once by the control loop (attach)
    std::atomic<bool> attached_{false};         // [link.attach]
};

template <class Encode>
bool Link::send(Encode&& encode, shm::Publish publish) {
    return send_owing(
        nullptr, [](wire::ControlEncoder&) { return std::span<const std::byte>(); },
        std::forward<Encode>(encode), publish);
}

template <class Owed, class Encode>
bool Link::send_owing(bool* owes, Owed&& owed, Encode&& encode, shm::Publish publish) {
    bool queued = false;
    bool wake_owed = false;
    std::uint64_t published = 0;
    {
        const std::lock_guard lock(out_mu_);
        if (out_broken_) return false;
        out_.prefetch_for_write();  // their transfer overlaps the encoding below
        if (owes != nullptr && *owes) {
            if (!write_locked(owed(encoder_), shm::Publish::deferred)) return false;
            *owes = false;
        }
        const std::span<const std::byte> record = encode(encoder_);
        if (!write_locked(record, shm::Publish::deferred)) return false;
        if (publish == shm::Publish::now) {
            // The wake, if the peer's reader advertised one, is left to wake_reader_soon().
            const shm::WriteResult r = out_.publish_deferring_wake(wake_owed);
            if (r != shm::WriteResult::ok) {
                break_out_locked(r);
                return false;
            }
            published = out_.published_tail();
        }
        queued = !outbox_.empty();
    }
    if (wake_owed) wake_reader_soon(published);
    // Something waits in the outbox: make sure the control loop looks at it.
    if (queued && on_outbox_) on_outbox_();
    return true;
}

template <class Fn>
std::size_t Link::read_control(Fn&& fn, std::size_t max, bool wait_for_lock) {
    if (!peer_attached()) return 0;
    // A helper polls in a spin loop: look at the shared words before touching the lock
    // (in_ is set once, before attached_; maybe_readable() reads only shared atomics).
    if (!wait_for_lock && !in_->maybe_readable()) return 0;
    std::unique_lock lock(in_mu_, std::defer_lock);
    if (wait_for_lock) {
        lock.lock();
    } else if (!lock.try_lock()) {
        return 0;
    }
    in_->prefetch_unread(kControlPrefetchBytes);
    std::size_t n = 0;
    while (n < max) {
        shm::RecordView record;
        const shm::ReadResult r = in_->try_read(record);
        if (r == shm::ReadResult::empty) break;
        if (r != shm::ReadResult::ok) {
            throw ProtocolError("control ring from " + peer_uid_.to_string() + ": " +
                                std::string(in_->error_text()));
        }
        ++n;
        // Release even when fn throws: a record is looked at once.
        struct Release {
            shm::RingReader& ring;
            explicit Release(shm::RingReader& r) : ring(r) {}
            Release(const Release&) = delete;
            Release& operator=(const Release&) = delete;
            ~Release() { ring.release(); }
        } release(*in_);
        fn(wire::decode_control(record.payload));
    }
    return n;
}

}  // namespace shmctx::detail
