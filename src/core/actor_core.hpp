// The actor runtime behind shmctx::Actor (DESIGN.md §3 "Control loop", docs/protocol.md §8).
// Private to core.
//
// ActorCore owns the actor's identity (LocalActorRecord), its wake slots (slot 0 is the control
// loop's doorbell), the control-loop thread, the liveness watcher, the canceller thread, the
// endpoint pool, the actor-cancel thread (started by the first actor cancel), the links (by peer
// uuid) and the contexts (by peer uuid and cid).
//
// The control loop, one pass: read `seen` from slot 0; run posted events (liveness); if
// links_epoch moved, scan for arenas naming us and attach them; drain every inbound control ring
// and dispatch each record; flush outboxes; futex_wait(slot 0, seen). It never waits for
// anything else: a Start is handed to the pool with try_submit, a cancel request marks the
// task's scope and wakes its waits (the stop-callbacks run on the waiter or the canceller
// thread), an actor cancel goes to the actor-cancel thread, and contexts are updated under
// their own short mutexes.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "core/cancel_scope.hpp"
#include "core/canceller_thread.hpp"
#include "core/endpoint_pool.hpp"
#include "core/link.hpp"
#include "core/overflow.hpp"
#include "shmctx/actor.hpp"
#include "shmctx/ids.hpp"
#include "shmctx/shm/actor_counters.hpp"
#include "shmctx/shm/actor_file.hpp"
#include "shmctx/shm/error_log.hpp"
#include "shmctx/shm/liveness.hpp"
#include "shmctx/shm/names.hpp"
#include "shmctx/shm/wake.hpp"
#include "shmctx/spawner.hpp"
#include "shmctx/wire/codec.hpp"

namespace shmctx::detail {

class ContextState;
class ActorCore;

/// RAII for ActorCore::helping(): the calling thread reads control rings while it spins.
class HelperScope {
public:
    explicit HelperScope(ActorCore& core) noexcept;
    HelperScope(const HelperScope&) = delete;
    HelperScope& operator=(const HelperScope&) = delete;
    ~HelperScope();

private:
    ActorCore& core_;
};

/// A wake slot of our actor for one blocking wait, returned on scope exit.
class BorrowedSlot {
public:
    explicit BorrowedSlot(shm::WakeSlotAllocator& slots) : slots_(slots) {
        const auto index = slots.allocate();
        if (!index) throw SystemError("no free wake slot: the actor has too many waiting threads");
        index_ = *index;
    }
    BorrowedSlot(const BorrowedSlot&) = delete;
    BorrowedSlot& operator=(const BorrowedSlot&) = delete;
    ~BorrowedSlot() { slots_.release(index_); }
    std::uint32_t index() const noexcept { return index_; }

private:
    shm::WakeSlotAllocator& slots_;
    std::uint32_t index_ = 0;
};

/// What a Portal holds: the link it was made for (kept alive while a portal exists).
class LinkHandle {
public:
    explicit LinkHandle(std::shared_ptr<Link> l) : link(std::move(l)) {}
    std::shared_ptr<Link> link;  // null for a portal to our own actor
    Uid peer;
};

/// Bounds of ActorOptions the Actor constructor enforces (see actor.hpp).
inline constexpr std::size_t kMinDataRingBytes = 4096;
inline constexpr std::size_t kMinControlRecordBytes = 1024;
/// The largest record our control ring takes (a quarter of it, minus the record header).
inline constexpr std::size_t kMaxControlRecordBytes =
    kControlRingDataBytes / 4 - shm::kRecordHeaderBytes;

struct ContextKey {
    Uuid peer;
    Cid cid;
    friend bool operator<(const ContextKey& a, const ContextKey& b) noexcept {
        if (a.peer != b.peer) return a.peer.bytes < b.peer.bytes;
        return a.cid < b.cid;
    }
};

/// Thread-safety: thread-safe (see the members for which thread runs what).
class ActorCore : public std::enable_shared_from_this<ActorCore> {
public:
    ActorCore(std::string name, ActorOptions options);
    ActorCore(const ActorCore&) = delete;
    ActorCore& operator=(const ActorCore&) = delete;
    ~ActorCore();

    /// Starts the threads (needs shared_from_this, so not in the constructor).
    void start();
    /// Orderly shutdown: cancels every context, closes every link, joins the threads, removes
    /// the actor's objects and releases its name (the mappings stay while the core lives).
    /// Idempotent.
    void shutdown();
    /// shutdown() has begun: handles that outlive the Actor raise TransportClosed.
    bool shut_down() const;

    const Uid& uid() const noexcept { return uid_; }
    const ActorOptions& options() const noexcept { return options_; }
    const shm::Names& names() const noexcept { return names_; }
    const shm::WakeTable& wake_table() const noexcept { return wake_table_; }
    shm::WakeSlotAllocator& slots() noexcept { return slots_; }
    CancelScope& root_scope() noexcept { return root_scope_; }
    CancellerThread& canceller() noexcept { return canceller_; }
    /// The actor's supervisor thread, which spawns its child actors (started on first use). It
    /// lives as long as the actor core, and the children's PDEATHSIG follows it (DESIGN.md §6),
    /// so a nursery keeps the core alive until its children are reaped.
    Spawner& supervisor();

    void expose(std::string fn, Endpoint endpoint, ExposeOptions options);
    /// A link to `peer_name` that is up, creating it if needed (waits up to `deadline`).
    std::shared_ptr<LinkHandle> connect(std::string_view peer_name, Deadline deadline);

    // ---- contexts ----
    Cid next_cid() noexcept;
    std::uint64_t next_request_id() noexcept {
        return next_request_.fetch_add(1, std::memory_order::relaxed) + 1;  // relaxed: unique ids
    }
    // ---- actor cancel (spec §3.6, DESIGN.md §4.4) ----
    /// Cancels every task of ours with `requester` as canceller: child endpoints (their ctxc
    /// names `requester`), then the root scope (parent-side bodies, which cancel their remote
    /// tasks on their way out: the cascade). Later Starts are refused with a ContextCancelled.
    /// Never blocks (safe on the control loop and inside an endpoint): the waiting is done by
    /// the actor-cancel thread, which acks `ack` (a peer's request, if any) after the last of
    /// those tasks ended — so the ack follows every ctxc they sent (ORDER, spec §3.6).
    void cancel_actor(const Uid& requester, std::shared_ptr<Link> ack_link = nullptr,
                      std::uint64_t ack_id = 0);
    bool cancel_called() const noexcept {
        // [core.cancel] pairs with the release in cancel_actor(): cancel_caller_ is set.
        return actor_cancel_called_.load(std::memory_order::acquire);
    }
    std::optional<Uid> cancel_caller() const;
    /// Waits until cancel_actor() ran and every task it cancelled ended; false on timeout.
    bool wait_cancelled(Deadline deadline);
    /// Portal::cancel_actor(): asks `link`'s peer to cancel itself and waits for its ack up
    /// to `deadline` (shielded from the caller's own cancellation, spec §3.6). True if acked.
    bool request_actor_cancel(const std::shared_ptr<Link>& link, Deadline deadline);

    /// Routes the CancelAck of `request_id` to `ctx`.
    void register_request(std::uint64_t request_id, const std::shared_ptr<ContextState>& ctx);
    void forget_request(std::uint64_t request_id);
    void register_context(const std::shared_ptr<ContextState>& ctx);
    void unregister_context(const ContextState& ctx);
    std::size_t open_contexts() const;
    std::size_t link_count() const;
    std::size_t endpoint_threads() const { return pool_.threads(); }

    /// Reads and dispatches what the inbound control rings hold now, from any thread that
    /// waits for a context event or a task (leader/follower: it saves the hop through the
    /// control loop). Skips a ring another thread is reading. True if it dispatched anything.
    bool help_poll() noexcept;
    /// help_poll() for one link: dispatches what its inbound control ring holds now unless
    /// another thread is reading it. A context's task calls it while it spins in a wait, so
    /// that a record for it (a cancel request) needs no hop through our control loop, and the
    /// peer, which watches briefly whether its record is read before it rings our doorbell,
    /// needs no futex wake either. True if it dispatched anything.
    bool help_link(const std::shared_ptr<Link>& link) noexcept;
    /// A thread starts (true) or stops (false) reading the control rings while it spins
    /// (help_poll). The first one in withdraws the doorbell from the rings (producers stop
    /// waking the sleeping control loop: the helpers read); the last one out advertises it
    /// again and rings the doorbell itself if a record is waiting (docs/protocol.md §9.2).
    void helping(bool on) noexcept;
    /// Rings the control loop's doorbell (slot 0).
    void wake_control_loop() noexcept;
    /// Runs `fn` on the control loop at its next pass.
    void post(std::function<void()> fn);
    /// A data ring of `link` failed validation (found by a task thread, which may hold a
    /// context's mutex): the control loop fails the link with `error` (link_error).
    void fail_link_later(const std::shared_ptr<Link>& link, std::exception_ptr error);

    /// The actor's counters table in its segment (DESIGN.md §6; docs/protocol.d/counters.md).
    shm::ActorCounters& counters() noexcept { return counters_; }
    /// Writes "shmctx: <uid>: <text>" to stderr (the user's log) and counts `text` in the
    /// actor's distinct-error log (`shmctx errors`). Never throws.
    void report_error(std::string_view text) noexcept;
    /// report_to_stderr(where, error), and `<where>: <what()>` into the distinct-error log.
    void report_exception(const char* where, std::exception_ptr error) noexcept;

    /// The actor's overflow drainer, started on first use (DESIGN.md §4.2). After shutdown a
    /// stopped one, whose schedule() refuses (the caller discards).
    OverflowDrainer& drainer();
    /// The drainer if one was started, else null (never starts one).
    OverflowDrainer* drainer_if_started() const noexcept {
        // [core.drainer] pairs with the release in drainer(): the object is built.
        return drainer_ptr_.load(std::memory_order::acquire);
    }

private:
    struct Exposed {
        Endpoint endpoint;
        ExposeOptions options;
    };

    void control_loop() noexcept;
    /// One pass; true if it did anything (then the loop watches a little before sleeping).
    bool pass();
    void scan_links();
    bool service_link(const std::shared_ptr<Link>& link);
    void dispatch(const std::shared_ptr<Link>& link, const wire::ControlView& msg);
    void on_start(const std::shared_ptr<Link>& link, const wire::fb::Start& start);
    void on_cancel_request(const std::shared_ptr<Link>& link, const wire::fb::CancelRequest& req);
    void on_link_open(const std::shared_ptr<Link>& link, const wire::fb::LinkOpen& open);
    void link_lost(const std::shared_ptr<Link>& link, LinkState state,
                   const std::exception_ptr& why);
    /// A control ring or record of `link` failed validation: fails that link only.
    void link_error(const std::shared_ptr<Link>& link, const std::exception_ptr& error) noexcept;
    /// unresponsive_timeout: closes the link to a live but stalled peer (PeerUnresponsive).
    void give_up_on(const std::shared_ptr<Link>& link, const std::string& why);
    void on_liveness(const Uuid& peer, shm::LivenessEvent event);
    std::shared_ptr<Link> make_link(shm::PeerActor peer, Uid peer_uid);
    std::shared_ptr<ContextState> find_context(const Uuid& peer, const Cid& cid) const;
    using LinkList = std::vector<std::shared_ptr<Link>>;
    /// The links now, as an immutable list (no lock, no copy).
    std::shared_ptr<const LinkList> links_snapshot() const;
    /// links_snapshot() through a per-thread cache checked against links_version_.
    std::shared_ptr<const LinkList> cached_links() const;
    /// Publishes links_ as the list links_snapshot() returns; mu_ held.
    void publish_links_locked();
    void run_endpoint(const std::shared_ptr<ContextState>& ctx, const Endpoint& endpoint,
                      const Payload& args);
    /// The actor-cancel thread's work (see cancel_actor()).
    void run_actor_cancel(const Uid& requester, std::vector<std::shared_ptr<ContextState>> tasks);
    /// Ends the waits of the actor-cancel requests sent on `link` (its loss), or of all (null).
    void fail_actor_requests(const Link* link);

    /// A Portal::cancel_actor() waiting for its ack.
    struct ActorRequest {
        std::shared_ptr<Link> link;
        bool done = false;   // guarded by ActorCore::mu_
        bool found = false;  // guarded by ActorCore::mu_
    };

    ActorOptions options_;
    shm::Names names_;
    shm::LocalActorRecord record_;
    Uid uid_;
    // Views of our segment's counters and error-log regions (before the threads below, whose
    // error handlers report into them).
    shm::ActorCounters counters_;
    shm::ErrorLogWriter errors_;
    shm::WakeTable wake_table_;
    shm::WakeSlotAllocator slots_;
    std::uint32_t doorbell_ = 0;
    CancelScope root_scope_;
    CancellerThread canceller_;
    EndpointPool pool_;

    mutable std::mutex mu_;  // guards everything below up to links_cv_
    std::unordered_map<std::string, std::shared_ptr<const Exposed>> endpoints_;
    std::unordered_map<Uuid, std::shared_ptr<Link>> links_;
    std::map<ContextKey, std::shared_ptr<ContextState>> contexts_;
    std::vector<std::function<void()>> posted_;
    bool shutting_down_ = false;
    std::condition_variable links_cv_;  // link state changes (connect waits on it)

    std::unordered_map<std::uint64_t, std::weak_ptr<ContextState>> requests_;  // guarded by mu_
    // ---- actor cancel; guarded by mu_ ----
    std::unordered_map<std::uint64_t, std::shared_ptr<ActorRequest>> actor_requests_;
    std::condition_variable actor_cancel_cv_;  // actor_requests_ answered, actor cancel done
    std::optional<Uid> cancel_caller_;
    bool actor_cancel_done_ = false;  // every task the actor cancel cancelled has ended
    /// Peers' actor-cancel requests to ack when the actor cancel is done.
    std::vector<std::pair<std::shared_ptr<Link>, std::uint64_t>> actor_acks_;
    std::thread actor_cancel_thread_;               // joined by shutdown()
    std::atomic<bool> actor_cancel_called_{false};  // [core.cancel]
    /// Peers whose link ended (closed, dead, failed), with the inode of the arena of theirs we
    /// had attached (0: none): that arena is never linked again, while a new one (another
    /// inode) is the peer linking afresh, e.g. after we gave up on it as unresponsive.
    /// Guarded by mu_.
    /// Scan the arenas again on the next pass (a link ended: a skipped arena may be new).
    std::atomic<bool> rescan_links_{false};
    std::unordered_map<Uuid, ino_t> gone_;
    std::mutex link_create_mu_;   // one link creation at a time (connect vs. the control loop)
    mutable std::mutex list_mu_;  // guards link_list_ (the pointer, not the list: immutable)
    std::shared_ptr<const LinkList> link_list_ = std::make_shared<const LinkList>();
    std::atomic<std::uint64_t> links_version_{1};  // [core.links] bumped per new list
    std::atomic<int> helpers_{0};                  // [core.helpers] threads in help_poll spins
    std::atomic<std::uint64_t> next_seq_{0};
    std::atomic<std::uint64_t> next_request_{0};
    std::atomic<bool> stop_{false};
    std::uint64_t seen_epoch_ = 0;  // control loop only
    std::mutex drainer_mu_;         // guards drainer_ and drainer_stopped_
    std::unique_ptr<OverflowDrainer> drainer_;
    std::atomic<OverflowDrainer*> drainer_ptr_{nullptr};  // [core.drainer]
    bool drainer_stopped_ = false;
    std::optional<shm::LivenessWatcher> watcher_;
    std::thread loop_;
    std::mutex supervisor_mu_;  // guards supervisor_ (its creation)
    std::unique_ptr<Spawner> supervisor_;
};

inline HelperScope::HelperScope(ActorCore& core) noexcept : core_(core) { core_.helping(true); }
inline HelperScope::~HelperScope() { core_.helping(false); }

}  // namespace shmctx::detail
