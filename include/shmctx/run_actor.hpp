// The main of a child actor executable (DESIGN.md §6).
//
//     int main() {
//         return shmctx::run_actor("worker", [](shmctx::Actor& actor) {
//             actor.expose("sum", [](shmctx::Context&, const shmctx::Payload& args) { ... });
//         });
//     }
//
// run_actor claims the actor, runs `setup` (expose the endpoints there), tells a parent
// nursery it is ready, then serves until the actor is cancelled: by a peer's cancel_actor()
// (the nursery's teardown), by Actor::cancel() from one of its own endpoints, or by SIGINT or
// SIGTERM, which it turns into Actor::cancel() through a signalfd (no signal handler runs).
// It returns once every cancelled task has ended and the actor is closed.
#pragma once

#include <functional>
#include <string>

#include "shmctx/actor.hpp"

namespace shmctx {

/// Exit codes of run_actor.
inline constexpr int kRunActorOk = 0;           ///< cancelled by request (a peer, or itself)
inline constexpr int kRunActorSetupFailed = 1;  ///< the actor could not be claimed, or setup threw
// SIGINT/SIGTERM: 128 + the signal number (130, 143), as a shell reports a signalled process.
// A parent that died before the child armed PDEATHSIG: kParentGoneExitCode (spawner.hpp).

struct RunActorOptions {
    /// Options of the actor (its namespace defaults to $SHMCTX_NS, which a nursery sets).
    ActorOptions actor;
    /// Turn SIGINT and SIGTERM into Actor::cancel(). They are blocked in the calling thread
    /// first, so call run_actor before starting any thread (threads inherit the mask), or
    /// block them in every thread yourself. The calling thread's mask is restored when
    /// run_actor returns (a signal that arrived while the actor was closing is discarded).
    bool handle_signals = true;
};

/// Runs the actor `name` until it is cancelled (see above) and returns the process exit code:
/// kRunActorOk, kRunActorSetupFailed (the error is printed on stderr and sent to a waiting
/// nursery) or 128 + signal. Under a nursery (SHMCTX_ACTOR_NAME set) the nursery's name for
/// the child replaces `name`, so one executable can serve as many actors. Calls
/// child_process_init() first (PDEATHSIG), so a child of a Spawner needs nothing else in main.
/// Thread-safety: call once, from main.
int run_actor(std::string name, const std::function<void(Actor&)>& setup,
              RunActorOptions options = {});

}  // namespace shmctx
