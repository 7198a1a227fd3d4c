// The state of one side of a context, shared by its Context handles, its MsgStream and the
// control loop (DESIGN.md §4, docs/protocol.md §8 "Context"). Private to core.
//
// Writers: the control loop records what arrives (StartAck, Started, Stop, Return, Error,
// StreamOpen, cancel requests and acks, link loss) under `mu_`, then notify()s; the task's
// threads read under `mu_` and wait on `cv_` (any number of threads) or, for the one receiving
// thread, on its wake slot through the inbound ring's data cell (the data producer in the peer
// rings it) while also watching `events_` (notify() rings the advertised slot).
//
//   [ctx.event] notify(): events_ += 1 (release), storeload fence, read waiting_slot_ and ring
//   it. The receiver: store waiting_slot_, then Waiter::wait (whose fence follows the store)
//   checks events_ (acquire). One of the two sees the other's store: no lost wake-up.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/cancel_scope.hpp"
#include "core/link.hpp"
#include "core/overflow.hpp"
#include "shmctx/context.hpp"
#include "shmctx/errors.hpp"
#include "shmctx/ids.hpp"
#include "shmctx/payload.hpp"
#include "shmctx/shm/arena.hpp"
#include "shmctx/shm/ring.hpp"
#include "shmctx/shm/wake.hpp"
#include "shmctx/wire/codec.hpp"

namespace shmctx::detail {

class ActorCore;

/// Thread-safety: see the file comment; public members say which thread calls them.
class ContextState : public std::enable_shared_from_this<ContextState> {
public:
    /// `scope_parent`/`scope_also`: the scopes the context's scope nests in (parent side: the
    /// caller's current scope and the actor's root; child side: the actor's root).
    ContextState(std::shared_ptr<ActorCore> core, std::shared_ptr<Link> link, Side side, Cid cid,
                 std::string fn, wire::ContextSettings own, CancelScope* scope_parent,
                 CancelScope* scope_also);
    ContextState(const ContextState&) = delete;
    ContextState& operator=(const ContextState&) = delete;
    ~ContextState();

    Side side() const noexcept { return side_; }
    const Cid& cid() const noexcept { return cid_; }
    const Uid& peer() const noexcept;
    const Uid& self() const noexcept;
    const std::string& fn() const noexcept { return fn_; }
    CancelScope& scope() noexcept { return scope_; }
    const CancelScope& scope() const noexcept { return scope_; }
    Link& link() const noexcept { return *link_; }

    // ---- control loop: records what arrived (never blocks) ----
    /// Records the peer's inbound settings and wakes nobody: nothing waits for a StartAck alone
    /// (the Started, Return or Error it travels with does the waking).
    void on_start_ack(const wire::ContextSettings& peer_settings);
    void on_started(PayloadView value);
    void on_stop(std::uint64_t data_seq);
    void on_return(std::uint64_t data_seq, PayloadView value);
    void on_error(const wire::fb::Error& record);
    void on_stream_open(const shm::CarveDescriptor& descriptor);
    /// A cancel request for this (child) context from its peer; false if the task already
    /// finished (the caller acks at once).
    bool on_cancel_request(std::uint64_t request_id, const Uid& requester);
    void on_cancel_ack(std::uint64_t request_id, bool found);
    /// The actor-cancel thread (not the control loop): records `requester` as canceller unless
    /// one is recorded, and cancels the (child) task's scope.
    void cancel_for_actor(const Uid& requester, const std::string& reason);
    /// Waits until the context ended (a child: its task shipped its terminal and finished).
    void wait_task_done();
    void on_link_lost(std::exception_ptr why);

    // ---- parent side ----
    /// Sends Start (PayloadTooLarge before anything is sent).
    void send_start(PayloadView args);
    /// Waits for Started (or a Return, which counts as an empty started()); raises an Error
    /// recorded before it, or the link loss. Waits observe the caller's scope.
    const Payload& await_started();
    /// The stop token the calling thread's blocking calls on this context observe: its
    /// innermost scope's, or the actor's root scope's on a thread outside every scope.
    std::stop_token wait_token() const noexcept;
    /// Portal::run: waits for the Return (Started only records the first value); raises the
    /// child's error; past `deadline` cancels the remote task and raises TimedOut.
    Payload run_result(Deadline deadline);
    /// cancel(616 ms) swallowing every error (the error paths of open_context).
    void cancel_quietly() noexcept;
    /// The open_context exit algorithm (spec §3.5) after the body: `body_error` null for a
    /// normal exit (including an absorbed cancel). Returns the outcome or rethrows.
    Outcome exit_parent(const std::exception_ptr& body_outcome);
    Outcome wait_for_result();

    // ---- child side ----
    void started(PayloadView value);
    /// The endpoint's end: ships Return or Error (spec §2.2 steps 4-7), then pending acks.
    void finish_child(std::optional<Payload> value, std::exception_ptr error, bool cancelled);

    // ---- both ----
    void open_stream(const StreamOptions& options);
    void cancel(Deadline deadline);
    /// Closes the rings, detaches/releases carves and unregisters. Idempotent.
    void finish();

    // ---- stream (one sender, one receiver thread) ----
    /// Sends a message of at most `max_bytes` that `fill` writes in place (DESIGN.md §4.2):
    /// into the ring, behind the spill, or the sender's on_full. `raise`: send() (throws, may
    /// block with on_full = block); else try_send() (a status, never blocks).
    /// `publish` deferred: a record written straight into the ring stays unpublished (the
    /// caller publishes: send_many at its end); whatever else happens (room to wait for, a
    /// spill, an overrun) publishes what was deferred first.
    SendStatus send(std::size_t max_bytes, PayloadKind kind, FillRef fill, bool raise,
                    shm::Publish publish = shm::Publish::now);
    SendStatus try_send(PayloadView message, bool raise, shm::Publish publish = shm::Publish::now);
    /// MsgStream::send_many: straight into the ring (deferred) while it has room and nothing is
    /// spilled, then try_send(deferred) for the rest; one publish at the end, also on an error.
    void send_many(std::span<const PayloadView> messages);
    /// Blocks while `deadline` allows; nullopt on timeout.
    std::optional<Message> receive(Deadline deadline, bool raise);
    RecvStatus try_receive(Message& out) noexcept;
    /// Waits for the first message (as receive()), then hands up to `max` available ones to
    /// `sink` and releases them together.
    std::size_t drain(MessageSink sink, std::size_t max);
    /// Poller (the receiving thread): receive() would not wait now (a message, the end, an
    /// error).
    bool poll_ready() noexcept;
    /// Poller: advertises `slot` of our actor's table for this stream's data and events, or
    /// withdraws it (nullopt). True when the data cell just left busy_spin (the caller bounds
    /// its sleep by shm::kModeSwitchWait, wake.hpp).
    bool poll_advertise(std::optional<std::uint32_t> slot) noexcept;
    ActorCore& core() const noexcept { return *core_; }
    /// Our inbound data ring exists (the peer announced it).
    bool has_inbound() const noexcept {
        return in_ready_.load(std::memory_order::acquire);  // [ctx.in]
    }
    shm::RingCounters outbound_counters() const;
    shm::RingCounters inbound_counters() const;
    /// Sends Stop after the spill is flushed (`flush`) or discarded (a failing body's unwind).
    /// Closes our side (Stop after the spill is flushed; `flush` false discards it). True when
    /// our cancellation cut the flush: spilled messages were dropped, no Stop was sent (the
    /// cancel's terminal ends the stream) and the caller must not report a normal end
    /// (DESIGN.md §4.2: never a silent drop).
    bool close_stream(bool flush = true);
    bool stream_closed() const;
    std::size_t max_message_bytes() const noexcept;

    // ---- accessors (any thread) ----
    bool cancel_called() const noexcept { return cancel_called_.load(std::memory_order::acquire); }
    bool cancel_acked() const;
    std::optional<Uid> canceller() const;
    std::exception_ptr remote_error() const;
    std::exception_ptr local_error() const;
    std::exception_ptr maybe_error() const;
    const RemoteActorError* remote_error_info() const;
    Outcome outcome() const;
    bool has_outcome() const;
    State state() const;
    /// Records the error that leaves the open_context block as local_error (overwrites).
    void set_local_error(std::exception_ptr e);
    /// A public handle onto `state`.
    static Context handle(std::shared_ptr<ContextState> state) noexcept;

private:
    using Lock = std::unique_lock<std::mutex>;
    enum class Poll : std::uint8_t { message, error, closed, ended, empty };
    /// One non-blocking look at the inbound stream (receiver thread): releases the record
    /// held since the last call, then `read()` (message, error or empty), the recorded error,
    /// or the end.
    template <class Read>
    Poll poll_inbound(Read&& read, std::exception_ptr& error);
    Poll poll_locked_out(Message& out, std::exception_ptr& error);
    /// Waits (receiver thread) until the inbound ring may have data or an event arrived after
    /// `seen`; false on timeout. Throws shmctx::Cancelled when `raise` and cancelled.
    bool wait_inbound(std::uint32_t seen, const Deadline& deadline, bool raise);
    /// Raises what a poll other than message/empty means: the error, or EndOfChannel.
    [[noreturn]] void raise_poll(Poll p, const std::exception_ptr& error) const;
    /// Raises (or returns the status of) what stops a send; nullopt when nothing does.
    std::optional<SendStatus> send_blocked(bool raise);
    /// Flushes (`flush`, waiting cancellably while the peer still reads) or discards the spill
    /// and waits until the drainer let go of the ring. Sending thread; never throws.
    /// True when a flush was cut by our own cancellation (the stop token) while the peer still
    /// read, so that spilled messages were discarded.
    bool settle_spill(bool flush) noexcept;
    /// Asks the drainer to discard our spill (the peer ended, the context failed).
    void discard_spill_async() noexcept;
    /// The stream's options (defaults before open_stream(); stream threads only after it).
    const StreamOptions& stream_options() const noexcept {
        static const StreamOptions kDefaults;
        return stream_options_ ? *stream_options_ : kDefaults;
    }
    void notify() noexcept;
    /// Waits (mutex held on entry and exit) until `pred()`, `stop` or `deadline`; true iff
    /// `pred()`. Watches events_ for ActorOptions::spin_before_sleep before it sleeps on cv_.
    template <class Pred>
    bool wait_locked(Lock& lock, Pred pred, const std::stop_token& stop, Deadline deadline);
    /// The busy first phase of a stream wait (receive, drain, a send blocked on a full ring):
    /// watches `ready()` with pause instructions for stream_spin(), reading only what `ready`
    /// reads (the ring's cell stays busy_spin), so the peer pays no wake-up check per message
    /// meanwhile. The caller sets its [ctx.waiting] flag first, as for the blocking wait. True iff
    /// `ready()`; false once the watch ran out, `deadline` passed or `stop` was requested (the
    /// blocking wait that follows then decides).
    template <class Ready>
    bool watch_stream(Ready&& ready, const std::stop_token& stop, const Deadline& deadline);
    /// StreamOptions::spin_before_sleep, else ActorOptions::spin_before_sleep.
    Duration stream_spin() const noexcept;
    /// The recorded remote error is the ctxc acknowledging our own cancel() (spec §3.3).
    bool remote_is_own_cancel_ack_locked() const;
    bool any_final_locked() const noexcept;
    /// Rethrows the remote error unless absorbed (raise-or-absorb, spec §3.3); returns true
    /// when there is one and it was absorbed.
    bool maybe_raise_locked(Lock& lock, bool raise_self_cancel);
    std::exception_ptr transport_error_locked() const;
    void ensure_out_ring();
    void post_scope_cancel(std::optional<Uid> canceller, std::string reason);
    /// A dispatching thread (never running stop-callbacks) cancels our scope in two halves:
    /// scope_.request() (its checkpoints see it now), notify() (our waits wake), then this:
    /// posts the stop-callbacks to the canceller thread unless a thread waits in this context
    /// now (it runs them on its way out, complete_scope_cancel).
    void finish_scope_cancel(std::optional<Uid> canceller, std::string reason);
    /// A wait of ours ends (its flag cleared, seq_cst): completes a requested scope cancel.
    void complete_scope_cancel() {
        if (scope_.cancel_pending()) (void)scope_.cancel();
    }
    /// Reads the link's control ring while a wait spins (ActorCore::help_link).
    void help_link() noexcept;
    /// The end of our inbound data as far as known (Stop/Return data_seq), or nullopt.
    std::optional<std::uint64_t> end_seq_locked() const noexcept;
    /// Sends one of our records; a child's first one carries the StartAck it owes.
    /// `publish` deferred: the record becomes visible with the next one (written right after).
    template <class Encode>
    bool ship(Encode&& encode, shm::Publish publish = shm::Publish::now) {
        if (side_ == Side::parent) return link_->send(std::forward<Encode>(encode), publish);
        return link_->send_owing(
            &start_ack_owed_,
            [this](wire::ControlEncoder& enc) { return enc.start_ack(cid_, own_); },
            std::forward<Encode>(encode), publish);
    }

    std::shared_ptr<ActorCore> core_;
    std::shared_ptr<Link> link_;
    const Side side_;
    const Cid cid_;
    const std::string fn_;
    const wire::ContextSettings own_;
    CancelScope scope_;

    mutable std::mutex mu_;
    std::condition_variable cv_;  // state changes (notify() after the change, mutex released)
    // All below guarded by mu_ unless atomic.
    wire::ContextSettings peer_settings_;
    bool started_ = false;  // parent: Started (or Return) received; child: started() called
    std::optional<Payload> first_;
    std::optional<Payload> result_;
    std::optional<std::uint64_t> return_seq_;
    std::optional<std::uint64_t> stop_seq_;  // the peer's Stop
    std::exception_ptr remote_error_;
    // The recorded remote error's fields (inside its object, which lives as long as
    // remote_error_): the decisions on it need no rethrow (one costs microseconds).
    const RemoteErrorInfo* remote_fields_ = nullptr;
    bool remote_ctxc_ = false;  // remote_error_ is a ContextCancelled
    std::exception_ptr local_error_;
    std::exception_ptr transport_error_;
    std::optional<Uid> canceller_;
    std::vector<std::uint64_t> pending_acks_;  // child: cancel requests to ack after the end
    std::vector<std::uint64_t> acked_;         // parent: acks received
    bool task_done_ = false;                   // child: terminal shipped
    bool finished_ = false;
    bool stream_opened_ = false;
    bool stream_closed_ = false;  // our close (or the end of the context)
    bool stop_sent_ = false;
    bool spill_cut_ = false;     // close_stream() returned true (read by the exits)
    bool stop_reading_ = false;  // wait_for_result() ran: our inbound ring is closed
    // open_stream()'s options: set once under mu_ before the MsgStream exists, never changed,
    // so the stream's threads (which get the MsgStream later) read them without the lock.
    // Allocated apart: only a streaming context has them (ContextState stays in the malloc
    // per-thread cache's size range).
    std::unique_ptr<const StreamOptions> stream_options_;
    std::optional<shm::CarveDescriptor> in_desc_;
    // The inbound ring is allocated apart (only a streaming context has one), so that a
    // ContextState stays small enough for the allocator's per-thread cache.
    std::unique_ptr<shm::RingReader> in_;  // attached by the control loop; read by the receiver
    std::atomic<bool> in_ready_{false};    // [ctx.in] in_ is set (release), receiver acquires
    // Sender thread (after creation); assigned under mu_, published by [ctx.out] for notify().
    std::shared_ptr<OutboundStream> out_;
    std::atomic<OutboundStream*> out_raw_{nullptr};    // [ctx.out]
    std::atomic<std::uint32_t> send_waiting_slot_{0};  // a send() blocked on a full ring
    shm::CarveDescriptor out_desc_{};
    bool holding_ = false;         // receiver holds a record (released at the next receive)
    std::exception_ptr in_error_;  // receiver: the inbound ring is corrupt (sticky)
    /// Child: the StartAck (our inbound settings, own_) is not written yet. ActorCore::on_start
    /// leaves it to our first record (ship()), so that both cost one write section. Guarded
    /// by the link's producer lock (Link::send_owing).
    bool start_ack_owed_;
    std::atomic<bool> cancel_called_{false};
    /// Parent side: our Start was sent (counted as contexts_opened; finish() then counts
    /// contexts_closed). Written by the opening thread after the Start went out.
    std::atomic<bool> start_sent_{false};
    std::atomic<std::uint32_t> blockers_{0};  // [ctx.blockers] "a sender must look under mu_"
    std::atomic<bool> receiving_{false};
    std::atomic<bool> cancel_waiting_{false};  // parent: cancel() waits for its ack
    std::atomic<std::uint32_t> events_{0};
    std::atomic<std::uint32_t> waiting_slot_{0};
    shm::WakeCell idle_cell_{};  // the receiver waits here before the inbound ring exists
};

}  // namespace shmctx::detail
