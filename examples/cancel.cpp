// cancel: cancelling one context, then a whole actor, and who is told what (the canceller).
//
//   this process: actors "client" and "admin"       child process: actor "worker"
//   1. client opens "count" ─────────────────────►  streams 0, 1, 2, ... until cancelled
//      reads 5, ctx.cancel() ── cancel request ──►  its send/sleep throws shmctx::Cancelled
//      ◄── ContextCancelled, canceller = client ──  (rethrown: the runtime reports it)
//      we asked for it: absorbed, not raised: outcome.is_absorbed_cancel()
//   2. client opens "count" again ───────────────►  streams 0, 1, 2, ...
//      reads 5, admin: portal.cancel_actor() ────►  every task of the worker is cancelled
//      ◄── ContextCancelled, canceller = admin ───
//      somebody else asked: raised in the client's body, out of open_context
//
// The rule (tractor's): a ContextCancelled names its canceller; the side that requested the
// cancel absorbs it, everybody else gets it raised, so a task never mistakes somebody else's
// cancel for its own clean exit. What to notice: the canceller printed by both processes.
//
// Usage: cancel [--ns NAMESPACE]
#include <chrono>
#include <cstdint>
#include <exception>
#include <optional>

#include "example_process.hpp"
#include "shmctx/actor.hpp"

namespace {

using namespace std::chrono_literals;
using example::say;

const char* yes(bool b) { return b ? "yes" : "no"; }

int run_worker(const example::Args& cli) {
    shmctx::Actor worker("worker", shmctx::ActorOptions{.ns = cli.ns});
    worker.expose("count", [](shmctx::Context& ctx, const shmctx::Payload&) -> shmctx::Payload {
        ctx.started();
        shmctx::StreamOptions options;
        options.on_full = shmctx::OnFull::block;  // a client that falls behind slows us down
        shmctx::MsgStream stream = ctx.open_stream(options);
        try {
            for (std::int64_t i = 0;; ++i) {
                stream.send(shmctx::Payload::value(i));
                ctx.sleep_for(1ms);  // a cancellation point, like every blocking shmctx call
            }
        } catch (const shmctx::Cancelled&) {
            // Not a std::exception on purpose: a catch-all for errors cannot swallow it. Look,
            // clean up, and always rethrow: the runtime turns it into the ContextCancelled the
            // parent receives.
            say("my task was cancelled; canceller = %s", ctx.canceller()->to_string().c_str());
            throw;
        }
    });
    example::signal_ready();
    example::wait_for_parent();
    const std::optional<shmctx::Uid> by = worker.cancel_caller();
    say("exiting; my actor was cancelled by %s", by ? by->to_string().c_str() : "nobody");
    return 0;
}

bool run_client(const example::Args& cli) {
    example::PeerProcess peer("worker", cli);
    if (!peer.wait_ready(10s)) return false;
    bool ok = true;
    {
        shmctx::Actor client("client", shmctx::ActorOptions{.ns = cli.ns});
        shmctx::Actor admin("admin", shmctx::ActorOptions{.ns = cli.ns});  // a third party
        shmctx::Portal portal = client.connect("worker");

        // 1. Context cancel: the client cancels its own context.
        std::optional<shmctx::Context> ctx1;  // a handle stays queryable after the block
        auto r1 =
            portal.open_context("count", {}, [&](shmctx::Context& ctx, const shmctx::Payload&) {
                ctx1 = ctx.handle();
                shmctx::MsgStream stream = ctx.open_stream();
                for (int i = 0; i < 5; ++i) (void)stream.receive();
                ctx.cancel();  // asks the worker to cancel its task; waits for the ack
            });
        // The worker's ContextCancelled names us: returned in the outcome, not raised.
        say("1. ContextCancelled: canceller = %s, absorbed = %s, cancel_acked = %s",
            ctx1->canceller()->to_string().c_str(), yes(r1.outcome.is_absorbed_cancel()),
            yes(ctx1->cancel_acked()));
        ok = r1.outcome.is_absorbed_cancel() && ctx1->cancel_acked() &&
             *ctx1->canceller() == client.uid();

        // 2. Actor cancel: while the client reads, the admin cancels the whole worker actor.
        try {
            portal.open_context("count", {}, [&](shmctx::Context& ctx, const shmctx::Payload&) {
                shmctx::MsgStream stream = ctx.open_stream();
                int received = 0;
                for ([[maybe_unused]] const shmctx::Message& msg : stream) {
                    if (++received == 5) {
                        const bool acked = admin.connect("worker").cancel_actor(5s);
                        say("2. admin: cancel_actor(worker) acked = %s", yes(acked));
                    }
                }
                say("the stream ended without an error");  // not reached: receive raises
            });
            say("open_context returned normally: the cancel was not raised");
            ok = false;
        } catch (const shmctx::ContextCancelled& e) {
            say("2. ContextCancelled: canceller = %s (raised by %s)",
                e.canceller().to_string().c_str(), e.src_uid().to_string().c_str());
            ok = ok && e.canceller() == admin.uid();
        }
    }
    return peer.finish(10s) && ok;
}

}  // namespace

int main(int argc, char** argv) {
    const example::Args cli = example::init(argc, argv, "cancel", "client");
    try {
        if (!cli.role.empty()) return run_worker(cli);
        if (!run_client(cli)) return 1;
    } catch (const std::exception& e) {
        say("error: %s", e.what());
        return 1;
    }
    say("cancel OK: ctx.cancel() absorbed by its requester; actor cancel raised naming admin");
    return 0;
}
