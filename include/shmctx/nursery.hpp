// Supervision: child actor processes in a nursery (DESIGN.md §6; tractor's ActorNursery, spec
// §5 #99–112).
//
// An ActorNursery is a scope that owns child actor processes. Each child is an executable whose
// main calls shmctx::run_actor() (shmctx/run_actor.hpp); the nursery spawns it from the actor's
// long-lived supervisor thread, waits until its endpoints are exposed and links to it.
//
//     shmctx::Actor root("root");
//     shmctx::open_nursery(root, [](shmctx::ActorNursery& an) {
//         shmctx::Portal feed = an.start_actor("feed", "./feed_actor");   // long-lived
//         shmctx::ChildResult sum = an.run_in_actor("adder", "./math_actor", "sum", args);
//         ... feed.open_context(...) ...
//         std::int64_t total = sum.get().value<std::int64_t>();
//     });   // waits for run_in_actor results, cancels `feed`, reaps both
//
// The rules (trio's nursery, for processes):
//  - Leaving the body normally waits for every run_in_actor result, then cancels the long-lived
//    children (Portal::cancel_actor, with our actor as canceller) and reaps them all.
//  - The body throwing cancels every child at once and reaps them; its exception propagates.
//  - ActorNursery::cancel() (or NurseryOptions::deadline) cancels the body's cancel scope: a
//    blocking call of the body raises shmctx::Cancelled, which the nursery absorbs
//    (NurseryResult::cancelled_caught), and the children are torn down as the body leaves. A
//    cancel of an enclosing scope (Actor::cancel(), an outer context's cancel) does the same
//    and propagates.
//  - Failures are collected and raised when the nursery ends: a run_in_actor function's error
//    (a RemoteActorError with the original type), a child that failed to start or whose process
//    ended unclean (a crash, a signal, a non-zero exit) before the nursery asked it to
//    (ActorFailed, naming how it ended; a clean exit, e.g. after another actor's cancel_actor,
//    is the child's orderly end, no failure). One failure is
//    raised as itself; several are raised together as an ErrorGroup, the body's own error first.
//    A failure does not interrupt the body or its siblings (tractor's nursery; the spec's
//    "multiple failures" cases depend on it).
//  - Every child is reaped (by pidfd, never waitpid(-1)) before open_nursery returns: a child
//    that does not answer its cancel gets SIGTERM, then SIGKILL (see cancel_timeout; a line
//    says so on stderr). A parent killed with SIGKILL takes its children with it: each child's
//    PDEATHSIG follows the supervisor thread that spawned it.
//  - Each child runs in a process group of its own: a terminal's Ctrl-C reaches the parent only
//    (run_actor turns it into the actor's cancel), which then tears its children down in order.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "shmctx/actor.hpp"
#include "shmctx/deadline.hpp"
#include "shmctx/payload.hpp"

namespace shmctx {

namespace detail {
class NurseryState;
struct NurseryChild;
}  // namespace detail

/// Environment variables through which a nursery tells its child who it is (read and removed
/// by run_actor). SHMCTX_NS is the namespace, as for every actor.
inline constexpr const char* kActorNameEnv = "SHMCTX_ACTOR_NAME";
inline constexpr const char* kReadyFdEnv = "SHMCTX_READY_FD";

struct NurseryOptions {
    /// How long start_actor/run_in_actor wait for a child to become ready and linked (spawned,
    /// its actor claimed, run_actor's setup done, connected): one deadline for all of it.
    Duration start_timeout = std::chrono::seconds(10);
    /// How long a cancelled child has to acknowledge its cancel (else it gets SIGTERM), and then
    /// as long again to exit (else SIGKILL). A child that runs a nursery of its own tears that
    /// down before it acknowledges: give a parent of a deep tree enough for its subtree.
    Duration cancel_timeout = std::chrono::seconds(2);
    /// The nursery cancels itself here (trio's move_on_after around the nursery): the body is
    /// cancelled, every child torn down, and open_nursery returns with cancelled_caught.
    Deadline deadline = Deadline::never();
};

/// How one child is started.
struct ChildOptions {
    /// Extra environment ("NAME=value") on top of ours.
    std::vector<std::string> env;
    /// The child's stdout/stderr (-1: ours).
    int stdout_fd = -1;
    int stderr_fd = -1;
};

/// The result of a run_in_actor child: its function's Return value or error.
/// Thread-safety: thread-safe; copies share the result.
class ChildResult {
public:
    /// The child actor's name.
    const std::string& name() const noexcept;
    /// The child's process id (it may have exited and been reaped since).
    pid_t pid() const noexcept;
    /// The child's portal (the link its function runs on).
    Portal portal() const;
    /// The result (value or error) is in.
    bool ready() const;
    /// Waits for the result: returns the value or raises the function's error (a
    /// RemoteActorError with the original type; PeerDied if the process died, which the
    /// nursery also reports as an ActorFailed naming how it ended). Waits observe the caller's
    /// cancel scope; TimedOut when `deadline` passes first.
    Payload get(Deadline deadline = Deadline::never()) const;

private:
    friend class ActorNursery;
    explicit ChildResult(std::shared_ptr<detail::NurseryChild> child) : child_(std::move(child)) {}
    std::shared_ptr<detail::NurseryChild> child_;
};

/// What open_nursery returns: whether the nursery's own cancel (cancel() or its deadline)
/// unwound the body, and the body's value when it returned.
template <class R>
struct NurseryResult {
    bool cancelled_caught = false;
    std::optional<R> value;
};
template <>
struct NurseryResult<void> {
    bool cancelled_caught = false;
};

class ActorNursery;
template <class Body>
auto open_nursery(Actor& actor, Body&& body, NurseryOptions options = {})
    -> NurseryResult<std::invoke_result_t<Body&, ActorNursery&>>;

/// A scope of child actor processes; see the top of this header. Made only by open_nursery.
/// Thread-safety: thread-safe (the body may hand it to other threads, which must be done with
/// it before the body returns).
class ActorNursery {
public:
    ActorNursery(const ActorNursery&) = delete;
    ActorNursery& operator=(const ActorNursery&) = delete;

    /// Spawns `exe` (a path) with `args` as the long-lived child actor `name` of our namespace,
    /// waits until it is ready and returns a portal to it. ActorFailed if it cannot be spawned,
    /// exits or fails in its setup first, or is not ready within start_timeout (then it is
    /// killed); NameTaken (as ActorFailed) if a live actor holds the name; InvalidName;
    /// InvalidOperation once the nursery is closing; connect()'s errors once it is ready
    /// (ActorNotFound, LayoutError, the link's loss); SystemError for a failed pipe or epoll
    /// call. Observes the caller's cancel scope (shmctx::Cancelled; the child is killed).
    Portal start_actor(const std::string& name, const std::string& exe,
                       const std::vector<std::string>& args = {}, const ChildOptions& options = {});
    /// Like start_actor, then runs `fn(args)` in the child (Portal::run); the function's result
    /// is the child's result. Once it is in, the child is cancelled and reaped at once. The
    /// nursery's end waits for it.
    ChildResult run_in_actor(const std::string& name, const std::string& exe, const std::string& fn,
                             PayloadView fn_args = {}, const std::vector<std::string>& args = {},
                             const ChildOptions& options = {});

    /// Cancels the nursery: the body's scope is cancelled (its blocking calls raise
    /// shmctx::Cancelled, which the nursery absorbs), and as the body leaves, every child is
    /// cancelled (with our actor as canceller) and reaped. Never blocks; idempotent; any thread.
    void cancel();
    /// cancel() was called, or the deadline passed.
    bool cancel_called() const noexcept;
    /// Child processes not yet reaped.
    std::size_t running_children() const;
    /// Pids of the child processes not yet reaped.
    std::vector<pid_t> child_pids() const;

private:
    template <class Body>
    friend auto open_nursery(Actor& actor, Body&& body, NurseryOptions options)
        -> NurseryResult<std::invoke_result_t<Body&, ActorNursery&>>;
    explicit ActorNursery(std::shared_ptr<detail::NurseryState> state) : state_(std::move(state)) {}
    using BodyFn = std::function<void(ActorNursery&)>;
    /// Runs the body in the nursery's scope and the whole teardown; true if the nursery's own
    /// cancel unwound the body.
    static bool run(Actor& actor, const NurseryOptions& options, const BodyFn& body);
    std::shared_ptr<detail::NurseryState> state_;
};

/// Opens a nursery on `actor`, runs `body(ActorNursery&)` in it and tears it down as described
/// at the top of this header. Returns once every child is reaped. Raises what the body raised,
/// or the children's failures (one as itself, several as an ErrorGroup).
template <class Body>
auto open_nursery(Actor& actor, Body&& body, NurseryOptions options)
    -> NurseryResult<std::invoke_result_t<Body&, ActorNursery&>> {
    using R = std::invoke_result_t<Body&, ActorNursery&>;
    NurseryResult<R> out;
    if constexpr (std::is_void_v<R>) {
        out.cancelled_caught =
            ActorNursery::run(actor, options, [&](ActorNursery& an) { body(an); });
    } else {
        out.cancelled_caught = ActorNursery::run(
            actor, options, [&](ActorNursery& an) { out.value.emplace(body(an)); });
        if (out.cancelled_caught) out.value.reset();
    }
    return out;
}

}  // namespace shmctx
