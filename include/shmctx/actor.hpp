// Actors and portals (DESIGN.md §3, §5; tractor spec §1, §2).
//
// An Actor is a named participant in a namespace: it owns its actor file and segment, a control
// loop thread that only waits on its doorbell, a liveness watcher, an endpoint thread pool and
// the links to the actors it talks to. `connect(name)` links to a peer and returns a Portal;
// `portal.open_context(fn, args, body)` runs `fn` in the peer and `body` here, linked as one
// Context.
//
//     shmctx::Actor feed("feed");
//     feed.expose("quotes", [](shmctx::Context& ctx, const shmctx::Payload& args) {
//         ctx.started(shmctx::Payload::value(args.value<std::int64_t>() + 1));
//         auto stream = ctx.open_stream();
//         for (auto& msg : stream) stream.send(msg.view());   // echo until the parent closes
//         return shmctx::Payload{};
//     });
//
//     shmctx::Actor client("client");
//     auto portal = client.connect("feed");
//     auto r = portal.open_context("quotes", shmctx::Payload::value(10),
//                                  [](shmctx::Context& ctx, const shmctx::Payload& first) {
//                                      auto stream = ctx.open_stream();
//                                      stream.send("ping");
//                                      return std::string(stream.receive().text());
//                                  });
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include "shmctx/context.hpp"
#include "shmctx/deadline.hpp"
#include "shmctx/ids.hpp"
#include "shmctx/payload.hpp"

namespace shmctx {

namespace detail {
class ActorCore;
class LinkHandle;
}  // namespace detail

/// An exposed function: runs in the child actor on an endpoint thread, inside the context's
/// cancel scope. Its return value is the context's Return; an exception escaping it is boxed
/// and shipped to the parent (spec §3.8).
using Endpoint = std::function<Payload(Context&, const Payload& args)>;

/// Actor settings. The Actor constructor checks every bound below and raises
/// std::invalid_argument naming the field, its value and the bound (the namespace: InvalidName).
struct ActorOptions {
    /// Namespace (empty: $SHMCTX_NS, else "default"). Actors see only their namespace.
    std::string ns;
    /// Mode of the actor's shared-memory objects: within 0777, including 0600.
    mode_t mode = 0600;
    /// Most endpoints running at once (at least 1); a Start past it is refused with a boxed
    /// TooManyContexts.
    std::size_t max_endpoints = 1024;
    /// An idle endpoint thread retires after this long (not negative).
    Duration endpoint_idle_timeout = std::chrono::seconds(5);
    /// Default inbound message capacity of our contexts (tractor's 64; at least 1).
    std::uint32_t msg_buffer_size = 64;
    /// Data bytes of each data ring we carve (a power of two in [4 KiB, 2^40]); a message may
    /// use a quarter of it.
    std::size_t data_ring_bytes = std::size_t{256} * 1024;
    /// Virtual size of each link arena (sparse: only carved rings use memory). A multiple of
    /// 4 KiB with room for the control ring and one data ring: at least
    /// 4 KiB + 512 KiB + 2 * data_ring_bytes (1 MiB + 4 KiB for the default ring).
    std::size_t arena_bytes = std::size_t{256} << 20;
    /// Cap on one control record, in [1 KiB, 64 KiB - 16] (the control ring's record limit): a
    /// bigger start argument, started() or Return value is PayloadTooLarge (stream it
    /// instead); error tracebacks are truncated to fit.
    std::size_t max_control_record_bytes = std::size_t{16} * 1024;
    /// After activity, the control loop, idle endpoint threads and threads waiting on a
    /// context watch for the next event this long (yielding the CPU) before they sleep on a
    /// futex: a back-to-back exchange then never pays a wake-up (tens of microseconds on a
    /// VM). An idle actor still uses no CPU. Zero: sleep at once (not negative). A stream's
    /// receive(), drain() and blocked send() watch their ring this long too, busy, unless
    /// StreamOptions::spin_before_sleep says otherwise.
    Duration spin_before_sleep = std::chrono::microseconds(50);
    /// Liveness heartbeat period (positive); a peer whose heartbeat is older than
    /// `unresponsive_after` (longer than heartbeat_interval) is reported unresponsive (never
    /// dead: death needs kernel evidence).
    Duration heartbeat_interval = std::chrono::milliseconds(100);
    Duration unresponsive_after = std::chrono::seconds(2);
    /// Zero (the default): an unresponsive peer (stopped, traced, starved) is only reported
    /// (stderr, Portal::peer_unresponsive()) and waited for, however long. Else a peer whose
    /// heartbeat has not moved for this long (at least unresponsive_after) is given up on: its
    /// link closes and every context with it fails with PeerUnresponsive; when it comes back it
    /// sees the link closed (TransportClosed).
    Duration unresponsive_timeout = Duration::zero();
};

struct ExposeOptions {
    /// Our inbound settings for contexts of this endpoint (0: the actor's default).
    std::uint32_t msg_buffer_size = 0;
    bool allow_overruns = false;
};

struct OpenOptions {
    /// Our inbound settings for this context (0: the actor's default).
    std::uint32_t msg_buffer_size = 0;
    bool allow_overruns = false;
};

/// What open_context returns: the outcome (a value, or our own absorbed cancel) and the body's
/// return value (unset when the body was cancelled and the cancel absorbed).
template <class R>
struct ContextResult {
    Outcome outcome;
    std::optional<R> value;
};
template <>
struct ContextResult<void> {
    Outcome outcome;
};

/// A local handle to a linked peer actor.
/// Thread-safety: thread-safe; copies share the link.
class Portal {
public:
    const Uid& peer() const noexcept;
    /// Our own actor.
    const Uid& self() const noexcept;

    /// Runs `fn` in the peer with `args` and `body(Context&, const Payload& first)` here, as one
    /// context (spec §2.1, exit algorithm §3.5):
    ///  - errors before the child's started() are raised here at entry (RemoteActorError, or
    ///    ContextCancelled); an unknown `fn` is a RemoteActorError saying it is not exposed;
    ///  - the body's normal exit waits for the child's result (its error raised, our own
    ///    absorbed cancel returned in `outcome`);
    ///  - a body error cancels the context and is rethrown unchanged;
    ///  - an EndOfChannel of this context's own stream escaping the body is absorbed.
    /// Opening a context with our own actor: InvalidOperation; an empty `fn`:
    /// std::invalid_argument; Start arguments over the control-record cap: PayloadTooLarge.
    /// The link's loss raises its error (TransportClosed, PeerDied, PeerUnresponsive,
    /// ProtocolError, LayoutError). Blocking waits observe the caller's cancel scope (on a
    /// thread outside every scope, the actor's: Actor::cancel() reaches them); a cancelled actor
    /// opens nothing (shmctx::Cancelled), nor does a destroyed one (TransportClosed).
    template <class Body>
    auto open_context(std::string_view fn, PayloadView args, Body&& body, OpenOptions options = {})
        -> ContextResult<std::invoke_result_t<Body&, Context&, const Payload&>> {
        using R = std::invoke_result_t<Body&, Context&, const Payload&>;
        ContextResult<R> out;
        if constexpr (std::is_void_v<R>) {
            out.outcome = run_context(
                fn, args, options, [&](Context& ctx, const Payload& first) { body(ctx, first); });
        } else {
            out.outcome = run_context(fn, args, options, [&](Context& ctx, const Payload& first) {
                out.value.emplace(body(ctx, first));
            });
        }
        return out;
    }
    /// One-shot RPC: opens a context on `fn` and returns its Return value (the child need not
    /// call started()). Raises the child's error; past `deadline` the remote task is
    /// cancelled and TimedOut raised. Otherwise raises as open_context does.
    Payload run(std::string_view fn, PayloadView args = {}, Deadline deadline = {});

    /// Asks the peer actor to cancel itself, with us as requester (spec §3.6): every task it
    /// runs is cancelled, each context any actor has with it ends with a ContextCancelled whose
    /// canceller() is us, and its ack follows all of those on our link. Waits for the ack up
    /// to `deadline`, shielded from our own cancellation. True if acked; false when the link is
    /// not up, on timeout, or when the link is lost meanwhile (cancel_called() is set in every
    /// case). A portal to our own actor cancels it (Actor::cancel()) and waits for its tasks
    /// the same way (from one of its own endpoints, only until `deadline`: that endpoint is
    /// one of the tasks).
    bool cancel_actor(Deadline deadline = std::chrono::milliseconds(500));
    /// cancel_actor() was called on this portal's link (by any portal to that peer).
    bool cancel_called() const noexcept;
    /// The peer's heartbeat has not moved for ActorOptions::unresponsive_after (it may be
    /// stopped or starved; death is decided on kernel evidence only, never on this).
    bool peer_unresponsive() const noexcept;

private:
    friend class Actor;
    Portal(std::shared_ptr<detail::ActorCore> core, std::shared_ptr<detail::LinkHandle> link)
        : core_(std::move(core)), link_(std::move(link)) {}
    using BodyFn = std::function<void(Context&, const Payload&)>;
    Outcome run_context(std::string_view fn, PayloadView args, const OpenOptions& options,
                        const BodyFn& body);
    std::shared_ptr<detail::ActorCore> core_;
    std::shared_ptr<detail::LinkHandle> link_;
};

/// An actor. Several may live in one process. The destructor shuts down in order: cancels
/// running endpoints, closes links (peers' contexts fail with TransportClosed), joins its
/// threads, removes its shared-memory objects and releases its name (a new Actor may take it
/// at once). Parent bodies still running on other threads are cancelled too (their next wait
/// ends with shmctx::Cancelled or TransportClosed): end them first. Handles that outlive it
/// (Portal, Context, MsgStream, Subscription) stay safe to use: what they recorded stays
/// readable, and their calls fail (TransportClosed naming this actor, or the link's error).
/// Thread-safety: thread-safe.
class Actor {
public:
    /// Claims `name` in the namespace: NameTaken if a live actor holds it, InvalidName for a
    /// name outside [A-Za-z0-9_-] (1-64 bytes), std::invalid_argument for an option outside
    /// its bound (see ActorOptions).
    explicit Actor(std::string name, ActorOptions options = {});
    Actor(const Actor&) = delete;
    Actor& operator=(const Actor&) = delete;
    ~Actor();

    const Uid& uid() const noexcept;
    /// Makes `fn` callable by peers (replaces an earlier endpoint of that name). An empty name
    /// or endpoint: std::invalid_argument.
    void expose(std::string fn, Endpoint endpoint, ExposeOptions options = {});
    /// Links to the live actor `peer_name` of our namespace, waiting up to `deadline` for it
    /// to appear and answer (ActorNotFound naming actor and namespace). A peer of another
    /// layout or protocol version is a LayoutError naming both versions.
    Portal connect(std::string_view peer_name, Deadline deadline = std::chrono::seconds(5));

    /// Cancels every task of this actor, with itself as canceller (spec §3.6; what a peer's
    /// Portal::cancel_actor() does with the peer as canceller): child endpoints end with a
    /// ContextCancelled naming the canceller, parent-side open_context bodies see an enclosing
    /// cancel and cancel their remote tasks on their way out (the cascade). Starts arriving
    /// afterwards are refused with a ContextCancelled. Never blocks (callable from an endpoint
    /// or a signal-handling thread); idempotent: the first requester is kept.
    void cancel();
    /// cancel() was called, or a peer's cancel_actor() arrived.
    bool cancel_called() const noexcept;
    /// Who asked first (our own uid for cancel()); nullopt if nobody did.
    std::optional<Uid> cancel_caller() const;
    /// Waits until the actor was cancelled and every task it cancelled has ended (its
    /// terminal shipped); false when `deadline` passes first. Called from one of this actor's
    /// own endpoints it waits for that endpoint too: give it a finite deadline there.
    bool wait_cancelled(Deadline deadline = Deadline::never());

    /// Threads of the endpoint pool now (running + idle), for tests and monitoring.
    std::size_t endpoint_threads() const;
    /// Contexts registered now (both sides), for tests and monitoring.
    std::size_t open_contexts() const;
    /// Links up now.
    std::size_t links() const;

private:
    friend class ActorNursery;
    std::shared_ptr<detail::ActorCore> core_;
};

}  // namespace shmctx
