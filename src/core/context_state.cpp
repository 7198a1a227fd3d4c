#include "core/context_state.hpp"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <thread>
#include <utility>

#include "core/actor_core.hpp"
#include "core/backoff.hpp"
#include "core/boxing.hpp"
#include "core/canceller_thread.hpp"
#include "shmctx/shm/fault.hpp"

namespace shmctx::detail {

namespace {

/// Bits of ContextState::blockers_: something a sender must look at under the mutex.
constexpr std::uint32_t kBlockRemoteError = 1U << 0;
constexpr std::uint32_t kBlockTransport = 1U << 1;
constexpr std::uint32_t kBlockPeerEnded = 1U << 2;
constexpr std::uint32_t kBlockClosed = 1U << 3;

/// A stream wait's blocking phase after its busy watch (watch_stream): a few re-checks that
/// cover the switch of the ring's cell to block mode, then the futex.
constexpr shm::WaitPolicy kAfterWatch{shm::WaitMode::block, 64};

template <class T>
const T* exception_as(const std::exception_ptr& e) noexcept {
    if (!e) return nullptr;
    try {
        std::rethrow_exception(e);
    } catch (const T& t) {
        return &t;  // the object lives as long as any exception_ptr to it
    } catch (...) {
        return nullptr;
    }
}

bool is_cancelled(const std::exception_ptr& e) noexcept {
    if (!e) return false;
    try {
        std::rethrow_exception(e);
    } catch (const Cancelled&) {
        return true;
    } catch (...) {
        return false;
    }
}

std::uint16_t data_kind(PayloadKind k) noexcept {
    return static_cast<std::uint16_t>(kDataKindBase + static_cast<std::uint16_t>(k));
}

}  // namespace

ContextState::ContextState(std::shared_ptr<ActorCore> core, std::shared_ptr<Link> link, Side side,
                           Cid cid, std::string fn, wire::ContextSettings own,
                           CancelScope* scope_parent, CancelScope* scope_also)
    : core_(std::move(core)),
      link_(std::move(link)),
      side_(side),
      cid_(cid),
      fn_(std::move(fn)),
      own_(own),
      scope_(scope_parent, scope_also),
      start_ack_owed_(side == Side::child) {}

ContextState::~ContextState() = default;

const Uid& ContextState::peer() const noexcept { return link_->peer(); }
const Uid& ContextState::self() const noexcept { return core_->uid(); }

Context ContextState::handle(std::shared_ptr<ContextState> state) noexcept {
    return Context(std::move(state));
}

void ContextState::notify() noexcept {
    // [ctx.event] pairs with [ctx.event] in receive(): the change is published before the wake.
    // [wake.storeload] without a fence of our own: this seq_cst increment and the seq_cst load
    // of the advertisement below, against the receiver's fence between its waiting_slot_ store
    // and its events_ load, leave no outcome where both miss (C++20 [atomics.order]: a fence
    // before a read that misses our increment precedes it in S; our load that misses the
    // receiver's store precedes that fence; the increment precedes our load). The increment
    // is a full barrier already where it matters (x86 lock xadd): no second one per event.
    events_.fetch_add(1, std::memory_order::seq_cst);
    cv_.notify_all();
    const std::uint32_t slot = waiting_slot_.load(std::memory_order::seq_cst);
    if (slot != 0) {
        if (shm::WakeSlot* s = core_->wake_table().slot(slot - 1)) shm::ring(*s);
    }
    // relaxed: as waiting_slot_ (a send() blocked on a full ring, on_full = block).
    const std::uint32_t sender = send_waiting_slot_.load(std::memory_order::relaxed);
    if (sender != 0) {
        if (shm::WakeSlot* s = core_->wake_table().slot(sender - 1)) shm::ring(*s);
    }
    // [ctx.out] pairs with the release in ensure_out_ring(); a send() blocked on the spill cap.
    if (OutboundStream* out = out_raw_.load(std::memory_order::acquire)) {
        if (out->has_waiters()) out->wake_waiters();
    }
}

void ContextState::post_scope_cancel(std::optional<Uid> canceller, std::string reason) {
    // CancelScope::cancel runs stop-callbacks: never on the control loop (DESIGN.md §4.6).
    auto self = shared_from_this();
    if (!core_->canceller().post(
            [self, canceller = std::move(canceller), reason = std::move(reason)]() mutable {
                self->scope_.cancel(std::move(canceller), std::move(reason));
            })) {
        // The canceller thread is stopping: the actor shuts down and cancels its root scope,
        // which encloses this one.
    }
}

void ContextState::finish_scope_cancel(std::optional<Uid> canceller, std::string reason) {
    // [ctx.waiting] a store-buffering pair with the waits' exit: we stored `requested` (seq_cst,
    // CancelScope::request) and read the waits' flags (seq_cst); a wait stores its flag false
    // (seq_cst) and then reads `requested` (complete_scope_cancel). One of the two sees the
    // other: either the waiter completes the cancel, or we post it (both is harmless).
    const bool waiting = receiving_.load(std::memory_order::seq_cst) ||
                         send_waiting_slot_.load(std::memory_order::seq_cst) != 0 ||
                         cancel_waiting_.load(std::memory_order::seq_cst);
    if (!waiting) post_scope_cancel(std::move(canceller), std::move(reason));
}

void ContextState::help_link() noexcept { (void)core_->help_link(link_); }

Duration ContextState::stream_spin() const noexcept {
    const std::optional<Duration>& own = stream_options().spin_before_sleep;
    return own ? *own : core_->options().spin_before_sleep;
}

template <class Ready>
bool ContextState::watch_stream(Ready&& ready, const std::stop_token& stop,
                                const Deadline& deadline) {
    const Duration spin = stream_spin();
    if (spin <= Duration::zero()) return false;
    const Clock::time_point now = Clock::now();
    // Saturating: Duration::max() (never sleep) must not overflow the clock.
    const Clock::time_point watch_end =
        spin < Clock::time_point::max() - now ? now + spin : Clock::time_point::max();
    const Clock::time_point until = std::min(watch_end, deadline.at());
    for (std::uint32_t looks = 1;; ++looks) {
        if (ready()) return true;
        // The clock and the stop token every 64th look: each costs about what a look does.
        if ((looks & 63U) == 0 && (stop.stop_requested() || Clock::now() >= until)) return false;
        shm::cpu_relax();
    }
}

template <class Pred>
bool ContextState::wait_locked(Lock& lock, Pred pred, const std::stop_token& stop,
                               Deadline deadline) {
    if (pred()) return true;
    const Duration spin = core_->options().spin_before_sleep;
    if (spin > Duration::zero()) {
        const Clock::time_point until = std::min(Clock::now() + spin, deadline.at());
        // [ctx.event] read under the mutex: a later record bumps it after changing state.
        std::uint32_t seen = events_.load(std::memory_order::acquire);
        bool satisfied = false;
        lock.unlock();
        {
            // Held without our mutex: leaving it may take a link's reader lock, which the
            // control loop holds while it takes our mutex to record what arrived.
            const HelperScope helping(*core_);
            Backoff backoff;
            while (!satisfied) {
                while (events_.load(std::memory_order::acquire) == seen &&
                       (!backoff.time_to_check() || Clock::now() < until) &&
                       !stop.stop_requested()) {
                    // Read the control rings ourselves meanwhile (leader/follower): our own
                    // records then need no hop through the control loop.
                    if (!core_->help_poll()) backoff.pause();
                }
                if (events_.load(std::memory_order::acquire) == seen) break;  // budget, stop
                lock.lock();
                satisfied = pred();
                seen = events_.load(std::memory_order::acquire);
                lock.unlock();
            }
        }
        lock.lock();
        if (satisfied || pred()) return true;
    }
    // Sleep. A stop request wakes us through a callback that notifies under our mutex (so it
    // cannot fall between our check and our wait); it is registered without the mutex held,
    // since it runs at once, on this thread, when the stop was already requested.
    struct WakeOnStop {
        ContextState* self;
        void operator()() const noexcept {
            { const Lock relock(self->mu_); }
            self->cv_.notify_all();
        }
    };
    std::optional<std::stop_callback<WakeOnStop>> on_stop;
    if (stop.stop_possible()) {
        lock.unlock();
        on_stop.emplace(stop, WakeOnStop{this});
        lock.lock();
    }
    const auto ready = [&] { return pred() || stop.stop_requested(); };
    if (deadline.is_infinite()) {
        cv_.wait(lock, ready);
    } else {
        (void)cv_.wait_until(lock, deadline.at(), ready);
    }
    if (on_stop) {
        // Deregistering waits for a callback running on another thread, which takes our
        // mutex: never do it with the mutex held.
        lock.unlock();
        on_stop.reset();
        lock.lock();
    }
    return pred();
}

// ---- control loop ----

void ContextState::on_start_ack(const wire::ContextSettings& peer_settings) {
    const Lock lock(mu_);
    peer_settings_ = peer_settings;
}

void ContextState::on_started(PayloadView value) {
    {
        const Lock lock(mu_);
        if (started_ || finished_) return;
        first_ = Payload::copy(value);
        started_ = true;
    }
    notify();
}

void ContextState::on_stop(std::uint64_t data_seq) {
    {
        const Lock lock(mu_);
        if (stop_seq_) return;
        stop_seq_ = data_seq;
        blockers_.fetch_or(kBlockPeerEnded, std::memory_order::release);  // [ctx.blockers]
    }
    discard_spill_async();  // the peer reads no more: stop flushing at once (DESIGN.md §4.2)
    notify();
}

void ContextState::on_return(std::uint64_t data_seq, PayloadView value) {
    {
        const Lock lock(mu_);
        if (result_ || remote_error_) return;  // one terminal per context: the first counts
        result_ = Payload::copy(value);
        return_seq_ = data_seq;
        // A Return that arrives before Started counts as an empty started() (DESIGN.md §4.9).
        if (!started_) {
            started_ = true;
            first_ = Payload{};
        }
        blockers_.fetch_or(kBlockPeerEnded, std::memory_order::release);  // [ctx.blockers]
    }
    discard_spill_async();  // a Return ends the stream: the peer reads no more
    notify();
}

void ContextState::on_error(const wire::fb::Error& record) {
    std::optional<Uid> canceller;
    bool cancel_scope = false;
    {
        Lock lock(mu_);
        if (remote_error_ || result_) return;  // first error wins; a Return was final
        Unboxed unboxed = unbox_fields(record);
        remote_error_ = std::move(unboxed.error);
        remote_fields_ = unboxed.info;
        remote_ctxc_ = unboxed.context_cancelled;
        // spec §3.3 step 2: a ctxc naming us as canceller is "self"; otherwise the peer that
        // sent (relayed) it. (A ContextCancelled always has a canceller: its constructor sets
        // src_uid when the record had none.)
        if (remote_ctxc_ && remote_fields_->canceller == self()) {
            canceller_ = self();
        } else {
            canceller_ = remote_fields_->src_uid;
        }
        canceller = canceller_;
        // Step 3: a self-cancel ack cancels the scope only when the task is not receiving on
        // this context (it then sees the error through that call).
        cancel_scope =
            !remote_is_own_cancel_ack_locked() || !receiving_.load(std::memory_order::acquire);
        blockers_.fetch_or(kBlockRemoteError, std::memory_order::release);  // [ctx.blockers]
    }
    std::string reason = "the peer's task of this context failed";
    if (cancel_scope) (void)scope_.request(canceller, reason);
    discard_spill_async();  // a failed context discards its spill
    notify();
    if (cancel_scope) finish_scope_cancel(std::move(canceller), std::move(reason));
}

void ContextState::on_stream_open(const shm::CarveDescriptor& descriptor) {
    const shm::ArenaView* arena = link_->peer_arena();
    if (arena == nullptr) return;  // impossible: records only come from an attached arena
    {
        Lock lock(mu_);
        if (!in_ && !finished_) {
            const std::span<std::byte> region = arena->attach(descriptor);  // ProtocolError
            try {
                in_ = std::make_unique<shm::RingReader>(
                    shm::RingReader::attach(region, descriptor.generation, link_->peer_wakes(),
                                            shm::RingReaderOptions{kMaxDataKind}));
            } catch (const LayoutError& e) {
                // The versions were agreed at link set-up: a data ring of another layout (a
                // wrong magic) is a corrupt announcement, not a version mismatch.
                throw ProtocolError("data ring of context " + cid_.to_string() + ": " + e.what());
            }
            in_desc_ = descriptor;
            if (stream_options_) {
                if (stream_options_->msg_buffer_size != 0) {
                    in_->set_capacity_msgs(stream_options_->msg_buffer_size);
                }
                if (stream_options_->allow_overruns) {
                    in_->set_allow_overruns(*stream_options_->allow_overruns);
                }
            }
            if (stream_closed_ || stop_reading_) in_->close();
            // [ctx.in] pairs with [ctx.in] in receive(): in_ is built before the flag.
            in_ready_.store(true, std::memory_order::release);
            lock.unlock();
            notify();
            return;
        }
    }
    // A duplicate, or a context that already ended: give the carve back at once.
    arena->detach(descriptor);
}

bool ContextState::on_cancel_request(std::uint64_t request_id, const Uid& requester) {
    {
        const Lock lock(mu_);
        if (task_done_) return false;
        if (!canceller_) canceller_ = requester;
        pending_acks_.push_back(request_id);
    }
    std::string reason = "cancel requested by " + requester.to_string();
    // The fast half first: the task's checkpoints and its waits in this context (woken by
    // notify()) see the cancel now, on whatever thread dispatched the request; the stop-
    // callbacks (nested scopes, stop tokens, other waits) run on the thread that leaves such a
    // wait, or on the canceller thread (docs/protocol.md §8, C1-C4).
    (void)scope_.request(requester, reason);
    notify();
    finish_scope_cancel(requester, std::move(reason));
    return true;
}

void ContextState::cancel_for_actor(const Uid& requester, const std::string& reason) {
    {
        const Lock lock(mu_);
        if (task_done_) return;
        if (!canceller_) canceller_ = requester;
    }
    scope_.cancel(requester, reason);
}

void ContextState::wait_task_done() {
    Lock lock(mu_);
    // finished_, not task_done_: the task's local_error and its rings are settled too.
    (void)wait_locked(
        lock, [&] { return finished_; }, std::stop_token{}, Deadline::never());
}

void ContextState::on_cancel_ack(std::uint64_t request_id, bool /*found*/) {
    {
        const Lock lock(mu_);
        acked_.push_back(request_id);
    }
    notify();
}

void ContextState::on_link_lost(std::exception_ptr why) {
    {
        const Lock lock(mu_);
        if (transport_error_ || finished_) return;
        transport_error_ = std::move(why);
        if (side_ == Side::child && !canceller_) canceller_ = self();
        blockers_.fetch_or(kBlockTransport, std::memory_order::release);  // [ctx.blockers]
    }
    discard_spill_async();
    notify();
    // Child tasks of a lost link are cancelled with ourselves as canceller (DESIGN.md §4.7);
    // a parent's body is woken the same way so that no wait outlives the link.
    post_scope_cancel(self(), "the link to " + peer().to_string() + " was lost");
}

// ---- parent side ----

void ContextState::send_start(PayloadView args) {
    bool too_large = false;
    std::size_t size = 0;
    std::size_t cap = 0;
    const bool sent = ship([&](wire::ControlEncoder& enc) {
        wire::StartFields f;
        f.cid = cid_;
        f.fn_name = fn_;
        f.args = args;
        f.options = own_;
        const std::span<const std::byte> rec = enc.start(f);
        if (rec.size() > enc.max_record_bytes()) {
            too_large = true;
            size = rec.size();
            cap = enc.max_record_bytes();
            throw PayloadTooLarge("start arguments of '" + fn_ + "'", size, cap);
        }
        return rec;
    });
    if (!sent) {
        const Lock lock(mu_);
        if (auto e = link_->failure()) std::rethrow_exception(e);
        throw TransportClosed("the link to " + peer().to_string() + " is closed");
    }
    // relaxed: a diagnostic flag for finish()'s count; it publishes nothing, and a finish
    // racing this store could at worst leave one close uncounted.
    start_sent_.store(true, std::memory_order::relaxed);
    core_->counters().add(shm::ActorCounter::contexts_opened);
}

std::stop_token ContextState::wait_token() const noexcept {
    // Every scope of ours chains to the actor's root scope (an endpoint's is nested in it, a
    // parent body's has it as also_in), so the innermost scope's token also fires on
    // Actor::cancel(). A thread outside every scope (main, a user's thread) waits on the root
    // scope's token itself: Actor::cancel() must reach its blocked calls too.
    const CancelScope* scope = current_scope();
    return scope != nullptr ? scope->stop_token() : core_->root_scope().stop_token();
}

const Payload& ContextState::await_started() {
    Lock lock(mu_);
    const std::stop_token stop = wait_token();
    const bool ready = wait_locked(
        lock, [&] { return started_ || remote_error_ != nullptr || transport_error_ != nullptr; },
        stop, Deadline::never());
    if (!ready) {
        lock.unlock();
        throw_cancelled();
    }
    // first_ is set once, before started_, and never again: the reference stays valid.
    if (started_) return *first_;
    const std::exception_ptr e = remote_error_ ? remote_error_ : transport_error_;
    if (!local_error_) local_error_ = e;
    lock.unlock();
    std::rethrow_exception(e);
}

Payload ContextState::run_result(Deadline deadline) {
    Lock lock(mu_);
    const std::stop_token stop = wait_token();
    const auto done = [&] {
        return result_.has_value() || remote_error_ != nullptr || transport_error_ != nullptr;
    };
    const bool ready = wait_locked(lock, done, stop, deadline);
    if (!ready) {
        lock.unlock();
        if (stop.stop_requested()) {
            // An enclosing cancel leaves; the remote task must not run on behind us.
            cancel_quietly();
            throw_cancelled();
        }
        cancel(std::chrono::milliseconds(616));
        throw TimedOut("'" + fn_ + "' on " + peer().to_string() + " did not return in time (" +
                       cid_.to_string() + "); the remote task was cancelled");
    }
    if (result_) return *result_;
    const std::exception_ptr e = remote_error_ ? remote_error_ : transport_error_;
    lock.unlock();
    std::rethrow_exception(e);
}

Outcome ContextState::wait_for_result() {
    if (side_ != Side::parent) {
        throw InvalidOperation("wait_for_result() is only for the parent side of a context");
    }
    Lock lock(mu_);
    // Waiting for the result ends our reading (DESIGN.md §4.3: unread data is discarded): the
    // peer's flush or blocked send must not wait for reads that will never come.
    stop_reading_ = true;
    // Not after finish(): the carve is detached then, and the peer may already have carved
    // another context's ring over the same bytes (a late wait_for_result on a handle would
    // close that ring; a docs review reproduced it).
    if (in_ && !finished_) in_->close();
    const std::stop_token stop = wait_token();
    const bool ready = wait_locked(
        lock,
        [&] {
            return result_.has_value() || remote_error_ != nullptr || transport_error_ != nullptr;
        },
        stop, Deadline::never());
    if (!ready) {
        // Cancelled from outside while waiting: a recorded remote error wins (spec §2.5).
        lock.unlock();
        throw_cancelled();
    }
    if (remote_error_) {
        if (remote_is_own_cancel_ack_locked()) {
            if (!local_error_) local_error_ = remote_error_;
            return Outcome::of_error(remote_error_, true);
        }
        const std::exception_ptr e = remote_error_;
        if (!local_error_) local_error_ = e;
        lock.unlock();
        std::rethrow_exception(e);
    }
    if (result_) return Outcome::of_value(*result_);
    const std::exception_ptr e = transport_error_;
    if (!local_error_) local_error_ = e;
    lock.unlock();
    std::rethrow_exception(e);
}

Outcome ContextState::exit_parent(const std::exception_ptr& body_outcome) {
    const auto exit_normally = [&]() -> Outcome {
        try {
            return wait_for_result();
        } catch (...) {
            // A Cancelled from an enclosing scope while waiting: never leave the remote task
            // running behind us (our choice; tractor leaves it to the transport).
            if (is_cancelled(std::current_exception())) cancel_quietly();
            throw;
        }
    };
    bool cut = false;
    {
        const Lock lock(mu_);
        cut = spill_cut_;
    }
    if (!body_outcome && !cut) return exit_normally();
    // The body returned, but our cancellation cut its stream's flush (the MsgStream closed at
    // the body's end): that is the body's Cancelled, not a normal exit (DESIGN.md §4.2).
    const std::exception_ptr body_error =
        body_outcome ? body_outcome : [&]() -> std::exception_ptr {
        try {
            throw_cancelled();
        } catch (...) {
            return std::current_exception();
        }
    }();
    try {
        std::rethrow_exception(body_error);
    } catch (const EndOfChannel&) {
        bool own_stream_ended = false;
        {
            const Lock lock(mu_);
            own_stream_ended =
                stream_opened_ && (stream_closed_ || stop_seq_.has_value() || return_seq_);
        }
        if (own_stream_ended) return exit_normally();  // absorbed (DESIGN.md §4.9)
        set_local_error(body_error);
        cancel_quietly();
        throw;
    } catch (const ContextCancelled& x) {
        // spec §3.5 step 1: our own acknowledged cancel exits silently; any other ctxc is
        // re-raised without cancelling (the peer is cancelled already).
        set_local_error(body_error);
        bool graceful = false;
        {
            const Lock lock(mu_);
            graceful = cancel_called() && body_error == remote_error_ && x.canceller() == self();
        }
        if (graceful) return Outcome::of_error(body_error, true);
        throw;
    } catch (const StreamOverrun& overrun) {
        // DESIGN.md §4.8: after our own cancel(), an overrun of our own sends on this context
        // (the peer stopped reading because we cancelled it) is ours, not an error: recorded as
        // local_error, and the exit waits for the outcome (normally our absorbed cancel).
        // tractor means this rule too but never applies it (spec §6.7).
        set_local_error(body_error);
        if (cancel_called() && overrun.cid() == cid_ && overrun.sender() == self()) {
            return exit_normally();
        }
        cancel_quietly();
        throw;
    } catch (...) {
        // spec §3.5 step 2: any other error (an enclosing Cancelled included) cancels the
        // context and propagates unchanged.
        set_local_error(body_error);
        cancel_quietly();
        throw;
    }
}

void ContextState::cancel_quietly() noexcept {
    try {
        cancel(std::chrono::milliseconds(616));
    } catch (...) {
        // Transport errors while cancelling on an error path are swallowed (spec §3.1).
    }
}

// ---- child side ----

void ContextState::started(PayloadView value) {
    if (side_ != Side::child) {
        throw InvalidOperation("started() is only for the child side of a context (" +
                               cid_.to_string() + ")");
    }
    {
        const Lock lock(mu_);
        if (started_) {
            throw InvalidOperation("started() called twice on context " + cid_.to_string());
        }
        started_ = true;
    }
    bool sent = false;
    try {
        sent = ship([&](wire::ControlEncoder& enc) {
            const std::span<const std::byte> rec = enc.started(cid_, value);
            if (rec.size() > enc.max_record_bytes()) {
                throw PayloadTooLarge("started() value of '" + fn_ + "'", rec.size(),
                                      enc.max_record_bytes());
            }
            return rec;
        });
    } catch (const PayloadTooLarge&) {
        // Nothing was sent: a retry with a smaller value is the first started(), not a second.
        const Lock lock(mu_);
        started_ = false;
        throw;
    }
    if (!sent) {
        const Lock lock(mu_);
        if (transport_error_) std::rethrow_exception(transport_error_);
        throw TransportClosed("the link to " + peer().to_string() + " is closed");
    }
}

void ContextState::finish_child(std::optional<Payload> value, std::exception_ptr error,
                                bool cancelled) {
    // A failed or cancelled task discards its spill; a normal end flushes it (close_stream).
    if (error || cancelled) (void)settle_spill(false);
    {
        bool close = false;
        {
            const Lock lock(mu_);
            close = stream_opened_ && !stream_closed_;
        }
        if (close) (void)close_stream();
        // Our cancellation cut a flush (here, or when the endpoint's MsgStream closed): the
        // dropped messages make this a cancelled end, never a Return (DESIGN.md §4.2).
        const Lock lock(mu_);
        if (spill_cut_) cancelled = true;
    }
    (void)settle_spill(false);  // close_stream() flushed it, or the stream was closed before
    const std::uint64_t data_seq = out_ ? out_->ring().written_msgs() : 0;
    std::exception_ptr ship_error;
    std::optional<RemoteErrorInfo> own_cancel;  // our own ContextCancelled's fields
    std::optional<BoxedError> own_boxed;        // ... boxed
    bool acks_owed = false;
    if (error && is_cancelled(error)) {
        cancelled = true;
        error = nullptr;
    }
    {
        const Lock lock(mu_);
        if (error) {
            // spec §2.2 step 6: a recorded remote error (not our own cancel's ack) replaces it.
            local_error_ = error;
            ship_error =
                remote_error_ && !remote_is_own_cancel_ack_locked() ? remote_error_ : error;
        } else if (cancelled) {
            if (remote_error_) {
                ship_error = remote_error_;
            } else {
                const std::optional<Uid> who =
                    cancel_called() ? std::optional<Uid>(self()) : canceller_;
                // Boxed from its fields; the exception object (our local_error) is built
                // after the ack: cancel()'s latency waits for these records, not for it.
                own_cancel.emplace(context_cancelled_info(self(), peer(), who, cid_, Side::child,
                                                          scope_.reason()));
                own_boxed.emplace(box_own_cancel(*own_cancel, self(), cid_, fn_));
            }
            if (ship_error) local_error_ = ship_error;
        } else if (value) {
            result_ = *value;
        }
        // The acks owed now go out with the terminal in one publish: the peer reads (and is
        // woken for) both at once. pending_acks_ only grows until task_done_ is set below; an
        // ack requested meanwhile publishes the deferred terminal with it.
        acks_owed = !pending_acks_.empty();
    }
    bool sent = true;
    const shm::Publish terminal_publish = acks_owed ? shm::Publish::deferred : shm::Publish::now;
    if (own_boxed || ship_error) {
        BoxedError boxed = own_boxed ? std::move(*own_boxed) : box(ship_error, self(), cid_, fn_);
        sent = ship([&](wire::ControlEncoder& enc) { return enc.error(boxed.fields(data_seq)); },
                    terminal_publish);
    } else {
        const Payload empty;
        const Payload& v = value ? *value : empty;
        std::optional<BoxedError> too_large;
        sent = ship(
            [&](wire::ControlEncoder& enc) {
                const std::span<const std::byte> rec = enc.return_value(cid_, data_seq, v);
                if (rec.size() <= enc.max_record_bytes()) return rec;
                // Too big for one control record: the parent gets PayloadTooLarge instead.
                too_large.emplace(box(std::make_exception_ptr(
                                          PayloadTooLarge("Return value of endpoint '" + fn_ + "'",
                                                          rec.size(), enc.max_record_bytes())),
                                      self(), cid_, fn_));
                return enc.error(too_large->fields(data_seq));
            },
            terminal_publish);
    }
    (void)sent;  // a lost link: the parent learns it from the link, not from this record
    std::vector<std::uint64_t> acks;
    {
        const Lock lock(mu_);
        task_done_ = true;
        acks.swap(pending_acks_);
    }
    const auto record_own_cancel = [&] {
        if (!own_cancel) return;
        std::exception_ptr e = std::make_exception_ptr(ContextCancelled(std::move(*own_cancel)));
        const Lock lock(mu_);
        local_error_ = std::move(e);
    };
    // spec §3.1: the terminal precedes the ack on the same FIFO ring.
    for (const std::uint64_t id : acks) {
        (void)SHMCTX_FAULT_POINT(
            "cancel.before_ack");  // kill matrix: terminal written, unpublished
        (void)ship([&](wire::ControlEncoder& enc) { return enc.cancel_ack(id, true); });
    }
    record_own_cancel();
    finish();
}

// ---- both ----

void ContextState::open_stream(const StreamOptions& options) {
    Lock lock(mu_);
    if (cancel_called()) {
        // spec §2.4: after our own cancel, the recorded error is raised, even our own ack.
        if (remote_error_) {
            const std::exception_ptr e = remote_error_;
            lock.unlock();
            std::rethrow_exception(e);
        }
        throw InvalidOperation("stream opened after cancel() on context " + cid_.to_string());
    }
    if (stream_opened_) {
        throw ClosedResourceError("the stream of context " + cid_.to_string() +
                                  " was already opened: a context streams once");
    }
    if (finished_) {
        throw ClosedResourceError("context " + cid_.to_string() + " has ended");
    }
    if (side_ == Side::child && !started_) {
        throw InvalidOperation("started() must be called before opening a stream (context " +
                               cid_.to_string() + ")");
    }
    if (options.spin_before_sleep && *options.spin_before_sleep < Duration::zero()) {
        throw InvalidOperation("StreamOptions::spin_before_sleep is negative (" +
                               std::to_string(options.spin_before_sleep->count()) +
                               " ns) on context " + cid_.to_string());
    }
    stream_opened_ = true;
    stream_options_ = std::make_unique<const StreamOptions>(options);
    if (in_) {
        if (options.msg_buffer_size != 0) in_->set_capacity_msgs(options.msg_buffer_size);
        if (options.allow_overruns) in_->set_allow_overruns(*options.allow_overruns);
    }
}

void ContextState::cancel(Deadline deadline) {
    cancel_called_.store(true, std::memory_order::release);
    if (side_ == Side::child) {
        {
            const Lock lock(mu_);
            canceller_ = self();
        }
        // spec §3.1 child side: cancels our own scope at once, sends nothing.
        scope_.cancel(self(), "cancelled by itself");
        return;
    }
    const std::uint64_t request_id = core_->next_request_id();
    core_->register_request(request_id, shared_from_this());
    const bool sent = ship([&](wire::ControlEncoder& enc) {
        return enc.cancel_context(request_id, wire::UidRef{self().name, self().uuid}, cid_);
    });
    if (!sent) {
        core_->forget_request(request_id);
        // A dead peer's task died with it: nothing to say. Any other loss of the link is the
        // outcome (spec §3.1: logged, not thrown).
        if (link_->state() == LinkState::dead) return;
        core_->report_error("may have failed to cancel context " + cid_.to_string() + " on " +
                            peer().to_string() + ": the link is closed");
        return;
    }
    core_->counters().add(shm::ActorCounter::cancels_requested);
    // Shielded from the caller's own cancellation (spec §3.1), bounded by the deadline.
    Lock lock(mu_);
    const auto acked = [&] {
        return std::find(acked_.begin(), acked_.end(), request_id) != acked_.end() ||
               transport_error_ != nullptr;
    };
    cancel_waiting_.store(true, std::memory_order::seq_cst);  // [ctx.waiting]
    const bool answered = wait_locked(lock, acked, std::stop_token{}, deadline);
    const bool ack_seen =
        std::find(acked_.begin(), acked_.end(), request_id) != acked_.end();  // under mu_
    lock.unlock();
    if (ack_seen) core_->counters().add(shm::ActorCounter::cancels_acked);
    // [ctx.waiting] seq_cst store, then complete_scope_cancel()'s seq_cst load: the ack's ctxc
    // requested our scope's cancel (spec §3.3 step 3); its stop-callbacks run here.
    cancel_waiting_.store(false, std::memory_order::seq_cst);
    complete_scope_cancel();
    core_->forget_request(request_id);
    if (!answered) {
        core_->counters().add(shm::ActorCounter::cancels_timed_out);
        core_->report_error("cancel of context " + cid_.to_string() + " on " + peer().to_string() +
                            " timed out: no ack within the deadline (its task may still run)");
    }
}

void ContextState::finish() {
    std::optional<shm::CarveDescriptor> in_desc;
    {
        const Lock lock(mu_);
        if (finished_) return;
        finished_ = true;
        if (side_ == Side::child) {
            core_->counters().add(shm::ActorCounter::tasks_ended);
        } else if (start_sent_.load(std::memory_order::relaxed)) {  // relaxed: see send_start
            core_->counters().add(shm::ActorCounter::contexts_closed);
        }
        stream_closed_ = true;
        blockers_.fetch_or(kBlockClosed, std::memory_order::release);  // [ctx.blockers]
        if (in_) in_->close();
        in_desc = in_desc_;
    }
    if (in_desc) {
        if (const shm::ArenaView* arena = link_->peer_arena()) {
            try {
                arena->detach(*in_desc);
            } catch (const std::exception&) {
                // A corrupt carve header: the peer's problem; nothing of ours to give back.
            }
        }
    }
    if (out_) {
        // Whatever is still spilled is discarded, and the drainer lets go of the ring before its
        // carve goes back to the arena.
        settle_spill(false);
        if (const std::uint64_t n = out_->discarded_total(); n != 0) {
            std::fprintf(stderr,
                         "shmctx: %s ended while spilling: %llu queued messages discarded\n",
                         out_->label().c_str(), static_cast<unsigned long long>(n));
        }
        out_->ring().close();
        link_->release(out_desc_);
    }
    core_->unregister_context(*this);
    notify();
}

// ---- stream ----

void ContextState::ensure_out_ring() {
    wire::ContextSettings peer_settings;
    {
        const Lock lock(mu_);
        peer_settings = peer_settings_;
    }
    const std::size_t data_bytes = core_->options().data_ring_bytes;
    const shm::Carve carve = link_->carve(shm::ring_region_bytes(data_bytes));
    shm::RingParams params;
    params.data_bytes = data_bytes;
    params.generation = carve.descriptor.generation;
    params.capacity_msgs = peer_settings.msg_buffer_size != 0 ? peer_settings.msg_buffer_size
                                                              : core_->options().msg_buffer_size;
    params.allow_overruns = peer_settings.allow_overruns;
    std::shared_ptr<OutboundStream> out;
    try {
        out = std::make_shared<OutboundStream>(
            shm::RingWriter::create(carve.body, params, link_->peer_wakes()),
            SpillLimits{stream_options().spill_cap_msgs, stream_options().spill_cap_bytes},
            "context " + cid_.to_string() + " to " + peer().to_string(),
            // The drainer found the peer's consumer words corrupt: fail the link (weak: the
            // stream may outlive neither; the control loop does the failing).
            [core = std::weak_ptr<ActorCore>(core_),
             link = std::weak_ptr<Link>(link_)](std::exception_ptr error) {
                const auto c = core.lock();
                const auto l = link.lock();
                if (c && l) c->fail_link_later(l, std::move(error));
            });
    } catch (...) {
        link_->release(carve.descriptor);
        throw;
    }
    {
        const Lock lock(mu_);
        out_ = out;
        out_desc_ = carve.descriptor;
    }
    // [ctx.out] pairs with the acquire in notify()/discard_spill_async(): built before seen.
    out_raw_.store(out.get(), std::memory_order::release);
    // Announced before the first record (DESIGN.md §3 "Data rings").
    const bool sent = ship([&](wire::ControlEncoder& enc) {
        return enc.stream_open(wire::StreamOpenFields{
            cid_, carve.descriptor.offset, carve.descriptor.bytes, carve.descriptor.generation});
    });
    if (!sent) {
        const Lock lock(mu_);
        if (transport_error_) std::rethrow_exception(transport_error_);
        throw TransportClosed("the link to " + peer().to_string() + " is closed");
    }
}

std::optional<SendStatus> ContextState::send_blocked(bool raise) {
    // [ctx.blockers] pairs with the fetch_or()s: a set bit means "look under the mutex".
    if (blockers_.load(std::memory_order::acquire) != 0) {
        Lock lock(mu_);
        if (remote_error_ && !remote_is_own_cancel_ack_locked()) {
            if (!raise) return SendStatus::peer_error;
            const std::exception_ptr e = remote_error_;
            lock.unlock();
            std::rethrow_exception(e);
        }
        if (transport_error_) {
            if (!raise) return SendStatus::peer_error;
            const std::exception_ptr e = transport_error_;
            lock.unlock();
            std::rethrow_exception(e);
        }
        if (stream_closed_) {
            if (!raise) return SendStatus::closed;
            throw EndOfChannel("the stream of context " + cid_.to_string() +
                               " was closed by this side");
        }
        if (stop_seq_ || return_seq_) {
            // DESIGN.md §4.8: after the peer's Stop our send raises even if we never receive.
            if (!raise) return SendStatus::peer_stopped;
            throw EndOfChannel("the " + std::string(to_string(opposite(side_))) +
                               " side of context " + cid_.to_string() + " ended its stream");
        }
    }
    if (current_cancelled()) {
        if (!raise) return SendStatus::cancelled;
        throw_cancelled();
    }
    return std::nullopt;
}

SendStatus ContextState::try_send(PayloadView message, bool raise, shm::Publish publish) {
    struct Copy {
        std::span<const std::byte> bytes;
    } copy{message.bytes()};
    const auto thunk = [](void* object, std::span<std::byte> buffer) -> std::size_t {
        const auto* c = static_cast<const Copy*>(object);
        if (!c->bytes.empty()) std::memcpy(buffer.data(), c->bytes.data(), c->bytes.size());
        return c->bytes.size();
    };
    return send(message.size_bytes(), message.kind(), FillRef{&copy, thunk}, raise, publish);
}

void ContextState::send_many(std::span<const PayloadView> messages) {
    if (messages.empty()) return;
    // Publishes what the direct path deferred, also when a send raises: the messages before
    // the failing one count as sent. Only while our spill is empty does this thread hold the
    // ring (rule 4, overflow.hpp); send() published before anything was spilled, so nothing is
    // deferred otherwise.
    struct Publisher {
        ContextState& state;
        ~Publisher() {
            if (state.out_ && state.out_->spill_empty()) (void)state.out_->ring().publish();
        }
    } const publisher{*this};
    std::size_t next = 0;
    // The batch is one call: what stops a send (an error, the peer's end, our cancel) is
    // checked once here; a message after that takes the general path only when the ring has
    // no room, is spilling or the message is too large, and that path checks again.
    (void)send_blocked(true);  // raises what stops a send
    if (out_ && out_->spill_empty()) {
        shm::RingWriter& ring = out_->ring();
        // Anything but ok (full, too large, closed, broken) writes nothing: the general path
        // below takes that message and says why.
        for (; next < messages.size(); ++next) {
            const PayloadView& m = messages[next];
            if (ring.try_write(data_kind(m.kind()), m.bytes(), 0, shm::Publish::deferred) !=
                shm::WriteResult::ok)
                break;
        }
    }
    for (; next < messages.size(); ++next)
        (void)try_send(messages[next], true, shm::Publish::deferred);
}

SendStatus ContextState::send(std::size_t max_bytes, PayloadKind kind, FillRef fill, bool raise,
                              shm::Publish publish) {
    const std::uint16_t record_kind = data_kind(kind);
    std::optional<Deadline> block_deadline;  // on_full = block: fixed at the first wait
    for (;;) {
        if (const std::optional<SendStatus> blocked = send_blocked(raise)) return *blocked;
        if (!out_) {
            if (!raise) {
                try {
                    ensure_out_ring();
                } catch (...) {
                    return SendStatus::peer_error;
                }
            } else {
                ensure_out_ring();
            }
        }
        OutboundStream& out = *out_;
        if (max_bytes > out.ring().max_payload_bytes()) {  // immutable: safe while spilling
            if (!raise) return SendStatus::too_large;
            throw PayloadTooLarge("a stream message of context " + cid_.to_string(), max_bytes,
                                  out.ring().max_payload_bytes(),
                                  "for one stream message (a quarter of the sender's data ring, "
                                  "ActorOptions::data_ring_bytes): split it or raise that");
        }
        // Rule 4 (overflow.hpp): write directly only when nothing is spilled; else queue behind.
        const bool behind_spill = !out.spill_empty();
        shm::WriteResult r = shm::WriteResult::full_msgs;
        if (!behind_spill) {
            shm::RingWriter& ring = out.ring();
            const shm::RingClaim claim = ring.try_claim(max_bytes);
            r = claim.status;
            if (claim.ok()) {
                (void)SHMCTX_FAULT_POINT("stream.after_claim");  // kill matrix: record claimed
                const std::size_t used = fill(claim.buffer);
                // The fill threw: not committed; MsgStream rethrows its exception.
                if (used == FillRef::kAbandoned) return SendStatus::closed;
                r = ring.commit(claim, std::min(used, max_bytes), record_kind, 0, publish);
                if (r == shm::WriteResult::ok) {
                    (void)SHMCTX_FAULT_POINT("stream.after_commit");  // kill matrix: committed
                    return SendStatus::ok;
                }
            }
        }
        switch (r) {
            case shm::WriteResult::ok:
            case shm::WriteResult::too_large:  // checked above
            case shm::WriteResult::full_msgs:
            case shm::WriteResult::full_bytes:
                break;
            case shm::WriteResult::consumer_closed:
                if (!raise) return SendStatus::peer_stopped;
                throw EndOfChannel("the " + std::string(to_string(opposite(side_))) +
                                   " side of context " + cid_.to_string() + " closed its stream");
            case shm::WriteResult::protocol_error: {
                // The peer corrupted the consumer words of our ring: the link fails with it.
                auto error = std::make_exception_ptr(ProtocolError(
                    "data ring of context " + cid_.to_string() + " to " + peer().to_string() +
                    ": " + std::string(out.ring().error_text())));
                core_->fail_link_later(link_, error);
                if (!raise) return SendStatus::peer_error;
                std::rethrow_exception(error);
            }
        }
        // Records this thread deferred (send_many) become visible before we spill, wait or
        // raise: the receiver must be able to free the room we need, and the drainer must
        // never take the ring while records of ours are unpublished.
        if (!behind_spill && publish == shm::Publish::deferred) (void)out.ring().publish();
        // Full, or behind a spill. The receiver's declaration decides (DESIGN.md §4.2).
        OverrunLimit limit =
            r == shm::WriteResult::full_bytes ? OverrunLimit::bytes : OverrunLimit::messages;
        if (behind_spill || out.ring().allow_overruns()) {
            const OutboundStream::SpillResult sr =
                out.spill_with(record_kind, max_bytes, fill, core_->drainer());
            if (sr == OutboundStream::SpillResult::queued) return SendStatus::spilled;
            if (sr == OutboundStream::SpillResult::abandoned) return SendStatus::closed;
            if (sr == OutboundStream::SpillResult::discarding) {
                // The peer stopped reading (or the context ends): say why.
                if (const std::optional<SendStatus> blocked = send_blocked(raise)) return *blocked;
                if (!raise) return SendStatus::peer_stopped;
                throw EndOfChannel("the " + std::string(to_string(opposite(side_))) +
                                   " side of context " + cid_.to_string() +
                                   " stopped reading its stream");
            }
            limit = OverrunLimit::spill_cap;
        } else if (out.ring().consumer_closed()) {
            if (!raise) return SendStatus::peer_stopped;
            throw EndOfChannel("the " + std::string(to_string(opposite(side_))) +
                               " side of context " + cid_.to_string() + " closed its stream");
        }
        // on_full.
        if (!raise) {
            if (limit != OverrunLimit::spill_cap) out.ring().note_overrun();
            return SendStatus::full;
        }
        if (stream_options().on_full == OnFull::raise) {
            if (limit != OverrunLimit::spill_cap) out.ring().note_overrun();
            std::string detail;
            switch (limit) {
                case OverrunLimit::messages:
                    detail = "its inbound ring holds " +
                             std::to_string(out.ring().capacity_msgs()) + " messages";
                    break;
                case OverrunLimit::bytes:
                    detail =
                        "its inbound ring has no room for " + std::to_string(max_bytes) + " bytes";
                    break;
                default:
                    detail = "our spill holds " + std::to_string(stream_options().spill_cap_msgs) +
                             " messages or " + std::to_string(stream_options().spill_cap_bytes) +
                             " bytes at most";
                    break;
            }
            throw StreamOverrun(self(), peer(), cid_, limit, detail);
        }
        // on_full = block: wait for space (or spill room), the peer's end, an error or cancel.
        if (!block_deadline) {
            block_deadline = stream_options().block_timeout
                                 ? Deadline(*stream_options().block_timeout)
                                 : Deadline::never();
        }
        const std::uint32_t seen = events_.load(std::memory_order::acquire);  // [ctx.event]
        // A cancel requested before `seen` was read (its notify() then changes nothing we
        // watch) shows as cancel_pending(): [ctx.waiting] made us, or the canceller thread,
        // responsible for completing it.
        const auto changed = [&] {
            return events_.load(std::memory_order::acquire) != seen ||  // [ctx.event]
                   scope_.cancel_pending();
        };
        const auto changed_or_read = [&] {
            if (changed()) return true;
            help_link();  // as in wait_inbound: a cancel request needs no control-loop hop
            return changed();
        };
        const std::stop_token stop = wait_token();
        bool ready = false;
        bool cancelled = false;
        if (limit == OverrunLimit::spill_cap) {
            // `changed`, never `changed_or_read`: wait_spill evaluates it under the spill's
            // waiter mutex, which a record dispatched here for this context would take again
            // (notify() -> wake_waiters()).
            ready = out.wait_spill([&] { return !out.at_cap(max_bytes) || changed(); }, stop,
                                   *block_deadline);
            cancelled = stop.stop_requested();
        } else {
            const BorrowedSlot slot(core_->slots());
            shm::Waiter waiter(core_->wake_table(), slot.index());
            // seq_cst: [ctx.waiting] (finish_scope_cancel) reads it; the Waiter's
            // [wake.storeload] fence orders it before the check as well.
            send_waiting_slot_.store(slot.index() + 1, std::memory_order::seq_cst);
            // Busy first, as in wait_inbound. The control ring at every look (wait_inbound
            // looks every 64th): nothing flows while the ring is full, and a cancel request is
            // what this wait most likely ends on.
            shm::WaitStatus status = shm::WaitStatus::ready;
            if (!watch_stream(
                    [&] { return out.ring().has_space_for(max_bytes) || changed_or_read(); }, stop,
                    *block_deadline)) {
                status = out.ring().wait_writable_or(max_bytes, waiter, changed_or_read,
                                                     *block_deadline, stop, kAfterWatch);
            }
            // [ctx.waiting] seq_cst store, then complete_scope_cancel()'s seq_cst load.
            send_waiting_slot_.store(0, std::memory_order::seq_cst);
            complete_scope_cancel();
            ready = status == shm::WaitStatus::ready;
            cancelled = status == shm::WaitStatus::cancelled;
        }
        if (cancelled) throw_cancelled();
        if (!ready) {
            throw StreamOverrun(self(), peer(), cid_, OverrunLimit::block_timeout,
                                "no room within the block timeout");
        }
    }
}

void ContextState::discard_spill_async() noexcept {
    // [ctx.out] pairs with the release in ensure_out_ring().
    if (OutboundStream* out = out_raw_.load(std::memory_order::acquire)) {
        out->request_discard(core_->drainer_if_started());
    }
}

bool ContextState::settle_spill(bool flush) noexcept {
    if (!out_ || out_->spill_empty()) return false;
    OutboundStream& out = *out_;
    bool cut = false;
    if (flush && !out.discarding()) {
        // A normal close flushes, but stops as soon as the peer's Stop/Return, an error or the
        // peer's consumer_closed (the drainer then discards) says nobody reads (DESIGN.md §4.2).
        const auto nobody_reads = [&] {
            return out.discarding() ||
                   (blockers_.load(std::memory_order::acquire) &  // [ctx.blockers]
                    (kBlockRemoteError | kBlockTransport | kBlockPeerEnded)) != 0;
        };
        const auto done = [&] { return out.spill_empty() || nobody_reads(); };
        try {
            (void)out.wait_spill(done, wait_token(), Deadline::never());
        } catch (...) {
            // wait_spill allocates nothing of its own; treat any failure as "discard".
        }
        if (out.spill_empty()) return false;
        // The peer still reads: our cancellation ended the wait. What is dropped now was
        // accepted by send(), so the close must not look like a normal end.
        cut = !nobody_reads();
    }
    try {
        (void)out.discard_and_wait(core_->drainer());
        return cut;
    } catch (...) {
        // Fall through: the carve must never be given back while the drainer may hold the ring.
    }
    while (!out.spill_empty()) {
        out.request_discard(core_->drainer_if_started());
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return cut;
}

std::optional<std::uint64_t> ContextState::end_seq_locked() const noexcept {
    if (stop_seq_ && return_seq_) return std::min(*stop_seq_, *return_seq_);
    if (stop_seq_) return stop_seq_;
    return return_seq_;
}

template <class Read>
ContextState::Poll ContextState::poll_inbound(Read&& read, std::exception_ptr& error) {
    // [ctx.blockers]: closed by us (close() or the context's end) comes first: no more reads,
    // and after finish() the carve is detached and must not be touched at all.
    if ((blockers_.load(std::memory_order::acquire) & kBlockClosed) != 0) {
        const Lock lock(mu_);
        if (holding_ && !finished_) in_->release();
        holding_ = false;
        return Poll::closed;
    }
    if (holding_) {
        in_->release();
        holding_ = false;
    }
    if (in_error_) {  // a corrupt inbound ring: every later read raises it again
        error = in_error_;
        return Poll::error;
    }
    // [ctx.blockers] pairs with the fetch_or()s in on_error() / on_link_lost().
    const std::uint32_t blockers = blockers_.load(std::memory_order::acquire);
    if ((blockers & kBlockRemoteError) != 0 ||
        ((blockers & kBlockTransport) != 0 && link_->state() == LinkState::failed)) {
        const Lock lock(mu_);
        // spec §2.4 receive(): a recorded error is raised, even our own cancel's ack. So is a
        // link we failed (a protocol error, an unresponsive peer): its data is not trusted.
        error = remote_error_ ? remote_error_ : transport_error_;
        if (error) return Poll::error;
    }
    // [ctx.in] pairs with [ctx.in] in on_stream_open(): in_ is complete once the flag is seen.
    if (in_ready_.load(std::memory_order::acquire)) {
        const Poll p = read(error);
        if (p != Poll::empty) return p;
    }
    const Lock lock(mu_);
    if (stream_closed_) return Poll::closed;
    const std::optional<std::uint64_t> end = end_seq_locked();
    const std::uint64_t read_count = in_ ? in_->read_msgs() : 0;
    if (end && read_count >= *end) return Poll::ended;
    // The peer's death or orderly close comes after the data: what it published before it went
    // is delivered first (DESIGN.md §4.7; our mapping of its ring outlives it).
    error = transport_error_;
    return error ? Poll::error : Poll::empty;
}

ContextState::Poll ContextState::poll_locked_out(Message& out, std::exception_ptr& error) {
    return poll_inbound(
        [&](std::exception_ptr& err) {
            shm::RecordView record;
            const shm::ReadResult r = in_->try_read(record);
            if (r == shm::ReadResult::ok) {
                if (record.kind < kDataKindBase) {
                    in_->release();
                    in_error_ = std::make_exception_ptr(ProtocolError(
                        "data ring of context " + cid_.to_string() + " from " + peer().to_string() +
                        ": record kind " + std::to_string(record.kind) + " is not a payload kind"));
                    core_->fail_link_later(link_, in_error_);
                    err = in_error_;
                    return Poll::error;
                }
                const PayloadView view(static_cast<PayloadKind>(record.kind - kDataKindBase),
                                       record.payload);
                if (stream_options().copy_on_receive) {
                    out = Message(std::make_shared<const Payload>(Payload::copy(view)));
                    in_->release();  // the copy owns the bytes: free the slot at once
                } else {
                    holding_ = true;
                    out = Message(view);
                }
                return Poll::message;
            }
            if (r == shm::ReadResult::protocol_error) {
                in_error_ = std::make_exception_ptr(
                    ProtocolError("data ring of context " + cid_.to_string() + " from " +
                                  peer().to_string() + ": " + std::string(in_->error_text())));
                core_->fail_link_later(link_, in_error_);
                err = in_error_;
                return Poll::error;
            }
            return Poll::empty;
        },
        error);
}

bool ContextState::wait_inbound(std::uint32_t seen, const Deadline& deadline, bool raise) {
    // A cancel request recorded before `seen` was read is seen here (CancelScope::request,
    // then notify(): the flag is stored before the event count moves); one after it moves the
    // count, which ends the wait below.
    if (raise && current_cancelled()) {
        // A peer error (or the link's loss) that cancelled our scope is what the task blocked
        // here must see (spec §3.3: the error reaches it through this call, a Cancelled would
        // unwind it as cancelled_caught): if one was recorded after the caller's look, look
        // again (poll_inbound raises a recorded error every time, so this cannot loop).
        // [ctx.blockers] pairs with the fetch_or()s in on_error() / on_link_lost().
        if ((blockers_.load(std::memory_order::acquire) & (kBlockRemoteError | kBlockTransport)) !=
            0) {
            return true;
        }
        throw_cancelled();
    }
    if (deadline.expired()) return false;
    // cancel_pending(): a cancel requested before `seen` was read ([ctx.waiting] made us, or
    // the canceller thread, responsible for completing it; its notify() changes nothing here).
    const auto changed_now = [&] {
        return events_.load(std::memory_order::acquire) != seen ||  // [ctx.event]
               scope_.cancel_pending();
    };
    // While we spin, our link's control records (a cancel request for us) are read here, on
    // every 64th look only: the wait of a stream consumer is on the data path, and a look at
    // the control ring costs that path throughput (measured: 0.78 -> 0.55 of the ring's rate
    // when it looked every time).
    std::uint32_t looks = 0;
    const auto changed = [&] {
        if (changed_now()) return true;
        if ((++looks & 63U) != 0) return false;
        help_link();
        return changed_now();
    };
    const std::stop_token stop = raise ? wait_token() : std::stop_token{};
    const bool in_ready = in_ready_.load(std::memory_order::acquire);  // [ctx.in]
    const BorrowedSlot slot(core_->slots());
    shm::Waiter waiter(core_->wake_table(), slot.index());
    // relaxed: ordered before the check by the Waiter's [wake.storeload] fence (and read by
    // notify() only to ring us, which the busy watch below does not need).
    waiting_slot_.store(slot.index() + 1, std::memory_order::relaxed);
    // seq_cst: [ctx.waiting] (finish_scope_cancel) reads it; it also says "receiving" to
    // on_error's step 3 for the whole wait, the busy watch included.
    receiving_.store(true, std::memory_order::seq_cst);
    shm::WaitStatus status = shm::WaitStatus::ready;
    // Busy first (watch_stream): the ring's data cell stays busy_spin, so the sender's
    // publishes skip their [wake.storeload] fence and wake check while we watch.
    if (!watch_stream([&] { return (in_ready && in_->has_unread()) || changed(); }, stop,
                      deadline)) {
        if (in_ready) {
            status = in_->wait_readable_or(waiter, changed, deadline, stop, kAfterWatch);
        } else {
            status = waiter.wait(idle_cell_, changed, deadline, stop, kAfterWatch);
        }
    }
    // [ctx.waiting] seq_cst store, then complete_scope_cancel()'s seq_cst load.
    receiving_.store(false, std::memory_order::seq_cst);
    waiting_slot_.store(0, std::memory_order::relaxed);
    complete_scope_cancel();
    if (status == shm::WaitStatus::cancelled) throw_cancelled();
    return status != shm::WaitStatus::timed_out;
}

void ContextState::raise_poll(Poll p, const std::exception_ptr& error) const {
    if (p == Poll::error) std::rethrow_exception(error);
    if (p == Poll::closed) {
        throw EndOfChannel("the stream of context " + cid_.to_string() +
                           " was closed by this side");
    }
    throw EndOfChannel("the " + std::string(to_string(opposite(side_))) + " side of context " +
                       cid_.to_string() + " ended its stream");
}

std::optional<Message> ContextState::receive(Deadline deadline, bool raise) {
    for (;;) {
        // [ctx.event] pairs with [ctx.event] in notify(): read before looking, so an event
        // after the look changes it and ends the wait below.
        const std::uint32_t seen = events_.load(std::memory_order::acquire);
        Message msg;
        std::exception_ptr error;
        const Poll p = poll_locked_out(msg, error);
        if (p == Poll::message) return msg;
        if (p != Poll::empty) raise_poll(p, error);
        if (!wait_inbound(seen, deadline, raise)) return std::nullopt;
    }
}

std::size_t ContextState::drain(MessageSink sink, std::size_t max) {
    if (max == 0) return 0;
    for (;;) {
        const std::uint32_t seen = events_.load(std::memory_order::acquire);  // [ctx.event]
        std::size_t count = 0;
        std::exception_ptr error;
        const Poll p = poll_inbound(
            [&](std::exception_ptr& err) {
                std::uint16_t bad_kind = 0;
                const shm::RingReader::DrainResult r = in_->drain(
                    [&](const shm::RecordView& record) {
                        if (bad_kind != 0) return;  // nothing after a corrupt record counts
                        if (record.kind < kDataKindBase) {
                            bad_kind = record.kind;
                            return;
                        }
                        ++count;
                        sink(Message(
                            PayloadView(static_cast<PayloadKind>(record.kind - kDataKindBase),
                                        record.payload)));
                    },
                    max);
                if (bad_kind != 0) {
                    in_error_ = std::make_exception_ptr(ProtocolError(
                        "data ring of context " + cid_.to_string() + " from " + peer().to_string() +
                        ": record kind " + std::to_string(bad_kind) + " is not a payload kind"));
                    core_->fail_link_later(link_, in_error_);
                } else if (r.status == shm::ReadResult::protocol_error) {
                    in_error_ = std::make_exception_ptr(
                        ProtocolError("data ring of context " + cid_.to_string() + " from " +
                                      peer().to_string() + ": " + std::string(in_->error_text())));
                    core_->fail_link_later(link_, in_error_);
                }
                // The messages before a corruption are delivered; its error comes next call.
                if (count != 0) return Poll::message;
                err = in_error_;
                return in_error_ ? Poll::error : Poll::empty;
            },
            error);
        if (p == Poll::message) return count;
        if (p != Poll::empty) raise_poll(p, error);
        (void)wait_inbound(seen, Deadline::never(), true);
    }
}

RecvStatus ContextState::try_receive(Message& out) noexcept {
    try {
        std::exception_ptr error;
        switch (poll_locked_out(out, error)) {
            case Poll::message:
                return RecvStatus::ok;
            case Poll::error:
                return RecvStatus::peer_error;
            case Poll::closed:
            case Poll::ended:
                return RecvStatus::end_of_channel;
            case Poll::empty:
                return RecvStatus::empty;
        }
    } catch (...) {
        return RecvStatus::peer_error;
    }
    return RecvStatus::empty;
}

bool ContextState::close_stream(bool flush) {
    {
        Lock lock(mu_);
        if (stream_closed_) return false;
        stream_closed_ = true;
        blockers_.fetch_or(kBlockClosed, std::memory_order::release);  // [ctx.blockers]
        if (in_) in_->close();
        if (stop_sent_ || finished_) {
            lock.unlock();
            notify();
            return false;
        }
        stop_sent_ = true;
    }
    // The Stop counts what reached the ring: the spill is flushed (or discarded) first.
    if (settle_spill(flush)) {
        // No Stop: it would tell the peer the stream ended whole. The cancel that cut the
        // flush ends the context (our terminal, or the parent's cancel request) instead.
        {
            const Lock lock(mu_);
            spill_cut_ = true;
        }
        notify();
        return true;
    }
    if (side_ == Side::child && !flush && scope_.cancelled()) {
        // A cancelled task's stream closed by the unwinding: its terminal follows at once and
        // ends the parent's stream itself (an Error takes effect at once; data_seq of a Return
        // is counted), so a Stop ahead of it would only delay the ack cancel() waits for.
        notify();
        return false;
    }
    const std::uint64_t data_seq = out_ ? out_->ring().written_msgs() : 0;
    // A lost link makes the Stop moot; the stream is closed either way.
    (void)ship([&](wire::ControlEncoder& enc) { return enc.stop(cid_, data_seq); });
    notify();
    return false;
}

bool ContextState::poll_ready() noexcept {
    // [ctx.blockers]: an error, the link's loss or our close: receive() returns at once.
    const std::uint32_t blockers = blockers_.load(std::memory_order::acquire);
    if ((blockers & (kBlockRemoteError | kBlockTransport | kBlockClosed)) != 0) return true;
    // [ctx.in] pairs with on_stream_open(): in_ is complete once the flag is seen.
    if (in_ready_.load(std::memory_order::acquire) && in_->has_unread()) return true;
    // The peer's Stop/Return: its data was published before it (the ring's tail, then the
    // control record), so with nothing unread the stream has ended.
    return (blockers & kBlockPeerEnded) != 0;
}

bool ContextState::poll_advertise(std::optional<std::uint32_t> slot) noexcept {
    // relaxed: notify() reads it after its [wake.storeload] fence; the poller's own fence
    // (advertise_wake_slot or its Waiter) follows this store before it re-checks.
    waiting_slot_.store(slot ? *slot + 1 : 0, std::memory_order::relaxed);
    if (!in_ready_.load(std::memory_order::acquire)) return false;  // [ctx.in]
    // Closed (or finished: the carve is detached and may be another context's ring now):
    // nothing to advertise in it. [ctx.blockers] pairs with the fetch_or in finish().
    if ((blockers_.load(std::memory_order::acquire) & kBlockClosed) != 0) return false;
    // The cell may have been in busy_spin (a receive() since the last poll puts it back):
    // report a switch on every advertisement, so the caller bounds its first sleep.
    in_->advertise_wake_slot(slot);
    return slot.has_value();
}

shm::RingCounters ContextState::outbound_counters() const {
    // [ctx.out]: the ring's header words are atomics, readable from any thread.
    const OutboundStream* out = out_raw_.load(std::memory_order::acquire);
    return out != nullptr ? out->counters() : shm::RingCounters{};
}

shm::RingCounters ContextState::inbound_counters() const {
    // [ctx.in]
    if (!in_ready_.load(std::memory_order::acquire)) return {};
    const Lock lock(mu_);
    return finished_ ? shm::RingCounters{} : in_->counters();
}

bool ContextState::stream_closed() const {
    const Lock lock(mu_);
    return stream_closed_;
}

std::size_t ContextState::max_message_bytes() const noexcept {
    const std::size_t data_bytes = core_->options().data_ring_bytes;
    return data_bytes / 4 - shm::kRecordHeaderBytes;
}

// ---- accessors ----

bool ContextState::remote_is_own_cancel_ack_locked() const {
    // spec §3.3 is_self_cancelled: our cancel() was called, and the recorded remote error is a
    // ctxc from our peer naming us as canceller (its fields are at hand: no rethrow).
    if (!cancel_called() || !remote_error_) return false;
    if (!canceller_ || *canceller_ != self()) return false;
    return remote_ctxc_ && remote_fields_->src_uid == peer() && remote_fields_->canceller == self();
}

bool ContextState::cancel_acked() const {
    const Lock lock(mu_);
    return remote_is_own_cancel_ack_locked();
}

std::optional<Uid> ContextState::canceller() const {
    const Lock lock(mu_);
    return canceller_;
}

std::exception_ptr ContextState::remote_error() const {
    const Lock lock(mu_);
    return remote_error_;  // only what the peer sent (tractor's `_remote_error`)
}

std::exception_ptr ContextState::local_error() const {
    const Lock lock(mu_);
    return local_error_;
}

std::exception_ptr ContextState::maybe_error() const {
    const Lock lock(mu_);
    // The error that ended the context (tractor's `maybe_error`): the peer's, else ours, else
    // the link's loss.
    if (remote_error_) return remote_error_;  // always a RemoteActorError: remote wins
    if (local_error_) return local_error_;
    return transport_error_;
}

const RemoteActorError* ContextState::remote_error_info() const {
    const Lock lock(mu_);
    // The object lives as long as remote_error_, which is set once: the pointer stays valid.
    return exception_as<RemoteActorError>(remote_error_);
}

void ContextState::set_local_error(std::exception_ptr e) {
    const Lock lock(mu_);
    // The error leaving the open_context block is the local error (spec §3.5, §3.7), even when
    // a wait inside the block recorded the remote error it raised there first.
    local_error_ = std::move(e);
}

Outcome ContextState::outcome() const {
    const std::exception_ptr err = maybe_error();
    const Lock lock(mu_);
    if (err)
        return Outcome::of_error(err, err == remote_error_ && remote_is_own_cancel_ack_locked());
    if (result_) return Outcome::of_value(*result_);
    return Outcome{};
}

bool ContextState::has_outcome() const { return outcome().resolved(); }

State ContextState::state() const {
    const Lock lock(mu_);
    if (remote_error_) {
        if (remote_ctxc_) {
            return remote_is_own_cancel_ack_locked() ? State::self_cancelled
                                                     : State::peer_cancelled;
        }
        return State::errored;
    }
    if (transport_error_) return State::errored;
    if (result_) return State::result_returned;
    if (local_error_) {
        return is_cancelled(local_error_) || exception_as<ContextCancelled>(local_error_)
                   ? State::actor_cancelled
                   : State::errored;
    }
    if (scope_.cancel_called() && canceller_) return State::actor_cancelled;
    if (stream_opened_) {
        return stream_closed_ || stop_seq_ ? State::streaming_finished : State::streaming;
    }
    if (started_) return State::started;
    return side_ == Side::parent ? State::syncing_to_child : State::pre_started;
}

}  // namespace shmctx::detail
