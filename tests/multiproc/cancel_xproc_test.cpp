// Cancellation with every actor in its own process (issue 6): the test process is the root actor
// R, every other actor is an actor_node helper started with posix_spawn (a sub-actor is spawned
// by an actor_node with shmctx::Spawner). Covered: spec §5 #62 (a sub-context's self-cancel ack
// does not mask an error before started()), #63-64 (a peer cancels the sleeper with
// Portal::cancel_actor(); every context with it sees a ctxc naming that peer), #65-68 (a spawn
// server tears its sub-actor down when the client's context is cancelled, or relays the
// sub-actor's error), and beyond the spec: an actor cancel cascading down a tree of three
// processes, ctx.cancel() acked while both data rings are full and the child does not read, and
// a third-party cancel_actor() naming the third party at our context and at the cancelled actor.
//
// Where spec §3 and DESIGN.md §4 differ, DESIGN.md wins (reference/tractor-context-spec.md's own
// note). Differences that matter here: the "unserialisable started() value" of #62 becomes a
// started() value over the control-record cap (PayloadTooLarge; C++ has no unserialisable
// object); ctxc.canceller is a Uid compared by uuid (tractor compares the name, canceller[0]);
// the scope's cancelled_caught is Context::cancelled_caught(); an actor cancel does not end the
// actor's process (an actor_node ends on "quit"), so "no longer discoverable" is checked after
// the spawn server reaped its sub-actor.
//
// What happens inside the helper processes is checked there and reported on stdout as
// "report <key>=<value>" lines (actor_node.cpp); uids travel as Uid::to_string().
//
// No sleeps as synchronisation: tractor's "after 0.5 s" become explicit handshakes (a "release"
// line on the helper's stdin, a "go" message on a stream), and every wait has a deadline. Every
// test runs under a watchdog and checks that nothing is left in /dev/shm.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <map>
#include <optional>
#include <ostream>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

#include "context_support.hpp"
#include "error_as.hpp"
#include "namespace_guard.hpp"
#include "process.hpp"
#include "shmctx/actor.hpp"
#include "shmctx/context.hpp"
#include "shmctx/errors.hpp"
#include "shmctx/payload.hpp"

namespace shmctx {

// gtest printer (found by ADL, hence outside the unnamed namespace; internal linkage).
[[maybe_unused]] static void PrintTo(const Uid& uid, std::ostream* os) { *os << uid.to_string(); }

namespace {

using namespace std::chrono_literals;
using test::body_must_not_run;
using test::error_as;
using test::Watchdog;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

/// Bound of every wait on a condition: generous, since sanitizer builds run many times slower.
constexpr auto kDeadline = 20s;
/// A whole test must finish within this, else the watchdog aborts the binary.
constexpr auto kTestLimit = 150s;

bool exited_cleanly(const std::optional<int>& status) {
    return status.has_value() && WIFEXITED(*status) && WEXITSTATUS(*status) == 0;
}

std::string flag(bool b) { return b ? "1" : "0"; }

/// "<type>: <what>" of an error, for failure messages.
std::string describe(const std::exception_ptr& e) {
    if (!e) return "no error";
    try {
        std::rethrow_exception(e);
    } catch (const std::exception& x) {
        return error_type_name(x) + ": " + x.what();
    } catch (...) {
        return "a non-std::exception";
    }
}

/// An actor_node process and the "report key=value" lines it printed so far.
class Node {
public:
    Node(test::Child child, std::string name) : child_(std::move(child)), name_(std::move(name)) {}

    /// The value reported under `key`, reading lines until it arrives; "<missing ...>" at the
    /// deadline (so a failing EXPECT_EQ names the key and the helper's status).
    std::string report(const std::string& key, Deadline deadline = kDeadline) {
        for (;;) {
            if (const auto it = reports_.find(key); it != reports_.end()) return it->second;
            const std::optional<std::string> line = child_.read_line(deadline);
            if (!line) return "<missing " + key + " from " + name_ + ": " + child_.describe() + ">";
            constexpr std::string_view kPrefix = "report ";
            if (!line->starts_with(kPrefix)) continue;
            const std::string kv = line->substr(kPrefix.size());
            const auto eq = kv.find('=');
            if (eq == std::string::npos) continue;
            reports_[kv.substr(0, eq)] = kv.substr(eq + 1);
        }
    }
    /// `key` is among the lines read so far.
    bool has(const std::string& key) const { return reports_.contains(key); }
    /// Sends one command line ("release", "status", "cancel_peer <name>").
    void command(const std::string& line) { child_.write(line + "\n"); }
    /// The actor's cancel_called/cancel_caller, asked now ("status").
    std::pair<std::string, std::string> status() {
        reports_.erase("status.done");
        reports_.erase("actor.cancel_called");
        reports_.erase("actor.cancel_caller");
        command("status");
        (void)report("status.done");
        return {report("actor.cancel_called"), report("actor.cancel_caller")};
    }
    test::Child& child() { return child_; }
    const std::string& name() const { return name_; }

private:
    test::Child child_;
    std::string name_;
    std::map<std::string, std::string> reports_;
};

class CancelXproc : public ::testing::Test {
protected:
    ActorOptions options() const {
        ActorOptions o;
        o.ns = guard_.names.ns();
        return o;
    }

    /// Starts an actor_node "server" and waits for its "ready"; a failure names its status.
    Node spawn_node(const std::string& name) {
        test::Child child = test::spawn("actor_node", {guard_.names.ns(), name, "server"});
        if (!child.expect_line("ready", kDeadline)) {
            child.kill(SIGKILL);
            (void)child.wait(kDeadline);
            ADD_FAILURE() << "actor_node " << name << " never became ready: " << child.describe();
        }
        return Node(std::move(child), name);
    }

    /// Asks a node to quit and expects exit status 0.
    static void quit(Node& node) {
        node.command("quit");
        const auto status = node.child().wait(kDeadline);
        EXPECT_TRUE(exited_cleanly(status)) << node.name() << ": " << node.child().describe();
    }

    void TearDown() override {
        EXPECT_THAT(test::all_objects(guard_.names), IsEmpty())
            << "shared-memory objects left in namespace " << guard_.names.ns();
    }

private:
    test::NamespaceGuard guard_{"cxp"};
    Watchdog watchdog_{kTestLimit, [names = guard_.names] {
                           for (const auto& o : test::all_objects(names)) {
                               ::unlink(shm::shm_path(o).c_str());
                           }
                       }};
};

// spec §5 #62 test_do_not_swallow_error_before_started_by_remote_contextcancelled: the errorer's
// endpoint fails before started() (PayloadTooLarge) while it has a context with a stream open on
// the sleeper, and cancels that context on its way out. The self-cancel ack it gets from the
// sleeper is absorbed there and never masks the real error: R's open_context raises
// RAE[PayloadTooLarge] at entry, not a ContextCancelled.
TEST_F(CancelXproc, ErrorBeforeStartedIsNotMaskedByTheSubContextsCancelAck) {
    Node sleeper = spawn_node("sleeper");
    Node errorer = spawn_node("errorer");
    ASSERT_TRUE(sleeper.child().running());
    ASSERT_TRUE(errorer.child().running());
    {
        Actor root("root", options());
        Portal to_e = root.connect("errorer", kDeadline);
        const Uid e_uid = to_e.peer();
        std::atomic<bool> body_ran{false};
        try {
            to_e.open_context("error_before_started", Payload::value("sleeper"),
                              body_must_not_run(body_ran));
            ADD_FAILURE() << "open_context returned";
        } catch (const ContextCancelled& e) {
            ADD_FAILURE() << "the sub-context's cancel ack masked the error: " << e.what();
        } catch (const RemoteActorError& e) {
            EXPECT_TRUE(e.boxed_is<PayloadTooLarge>()) << e.boxed_type_name() << ": " << e.what();
            EXPECT_EQ(e.src_uid(), e_uid);
            EXPECT_FALSE(e.is_inception());
        }
        EXPECT_FALSE(body_ran);
        // Inside the errorer: the real error escaped its sub-context, whose cancel was acked by
        // the sleeper's ctxc (absorbed: canceller is the errorer itself, spec §3.3 step 2).
        EXPECT_EQ(errorer.report("error_before_started.escaped"), "PayloadTooLarge");
        EXPECT_EQ(errorer.report("error_before_started.peer_cancel_called"), "1");
        EXPECT_EQ(errorer.report("error_before_started.peer_cancel_acked"), "1");
        EXPECT_EQ(errorer.report("error_before_started.peer_canceller"), e_uid.to_string());
        EXPECT_EQ(errorer.report("error_before_started.peer_local_error_is_escaped"), "1");
        // The sleeper's task was cancelled by the errorer (its parent), not by itself.
        EXPECT_EQ(sleeper.report("sleeper.canceller"), e_uid.to_string());
        EXPECT_EQ(sleeper.report("sleeper.cancel_called"), "0");
    }
    quit(errorer);
    quit(sleeper);
}

// spec §5 #63-64 test_peer_canceller. R opens three nested contexts: (1) on the sleeper S
// (stream open, blocks), (2) on just_caller J (which streams ints from S), (3) on canceller K
// (which, released by R, calls S's Portal::cancel_actor()). R waits for S's result: a ctxc whose
// canceller is K, raised (R did not ask). Param rte_during_ctxerr: R raises a RuntimeError while
// handling that ctxc instead of re-raising it.
class PeerCanceller : public CancelXproc, public ::testing::WithParamInterface<bool> {};

TEST_P(PeerCanceller, EveryContextWithTheCancelledPeerSeesTheCanceller) {
    const bool rte_during_ctxerr = GetParam();
    Node canceller = spawn_node("canceller");
    Node sleeper = spawn_node("sleeper");
    Node just_caller = spawn_node("just_caller");
    ASSERT_TRUE(canceller.child().running() && sleeper.child().running() &&
                just_caller.child().running());
    {
        Actor root("root", options());
        Portal to_s = root.connect("sleeper", kDeadline);
        Portal to_j = root.connect("just_caller", kDeadline);
        Portal to_k = root.connect("canceller", kDeadline);
        const Uid s_uid = to_s.peer();
        const Uid k_uid = to_k.peer();

        std::optional<Context> sleeper_h;
        std::optional<Context> caller_h;
        std::optional<Context> canceller_h;
        std::exception_ptr from_result;  // what sleeper_ctx.wait_for_result() raised
        std::exception_ptr loc_err;      // what left the three blocks
        // J holds its re-raise of the sleeper's ctxc until we release it, so that its relayed
        // ctxc never reaches caller_ctx before we look (tractor wins that race by speed): in the
        // rte variant we release it in our handler and wait for it to arrive (the spec expects
        // it as caller_ctx's remote error); otherwise after our blocks ended (the spec expects
        // caller_ctx to have no remote error).
        try {
            to_s.open_context("sleeper", {}, [&](Context& sleeper_ctx, const Payload&) {
                sleeper_h.emplace(sleeper_ctx.handle());
                to_j.open_context(
                    "stream_from_peer", Payload::value("sleeper 1"),
                    [&](Context& caller_ctx, const Payload&) {
                        caller_h.emplace(caller_ctx.handle());
                        to_k.open_context(
                            "sleep_then_cancel_peer", Payload::value("sleeper"),
                            [&](Context& canceller_ctx, const Payload&) {
                                canceller_h.emplace(canceller_ctx.handle());
                                // All three contexts are open: K may cancel the sleeper now
                                // (tractor: K sleeps 0.5 s).
                                canceller.command("release");
                                try {
                                    (void)sleeper_ctx.wait_for_result();
                                    ADD_FAILURE() << "wait_for_result() did not raise a ctxc";
                                } catch (const ContextCancelled& ctxc) {
                                    from_result = std::current_exception();
                                    // K and J were not cancelled remotely.
                                    EXPECT_FALSE(canceller_ctx.canceller().has_value());
                                    EXPECT_FALSE(caller_ctx.canceller().has_value());
                                    // We did not ask: not our ack.
                                    EXPECT_FALSE(sleeper_ctx.cancel_acked());
                                    EXPECT_EQ(ctxc.canceller(), k_uid);
                                    EXPECT_FALSE(sleeper_ctx.cancelled_caught());
                                    if (rte_during_ctxerr) {
                                        // caller_ctx's remote error must be J's relayed ctxc
                                        // (canceller K), not the ack of our own cancel: release
                                        // J and wait until it arrived.
                                        EXPECT_EQ(just_caller.report("stream_from_peer.checked"),
                                                  "1");
                                        just_caller.command("release");
                                        EXPECT_TRUE(test::wait_until(
                                            [&] { return caller_ctx.remote_error() != nullptr; },
                                            kDeadline));
                                        throw std::runtime_error(
                                            "Simulated RTE re-raise during ctxc handling");
                                    }
                                    throw;
                                }
                            });
                    });
            });
            ADD_FAILURE() << "the contexts exited silently";
        } catch (const ContextCancelled& e) {
            loc_err = std::current_exception();
            EXPECT_FALSE(rte_during_ctxerr) << e.what();
            EXPECT_EQ(e.boxed_type_name(), "ContextCancelled");
            EXPECT_EQ(e.canceller(), k_uid);
        } catch (const std::runtime_error& e) {
            loc_err = std::current_exception();
            EXPECT_TRUE(rte_during_ctxerr) << e.what();
            EXPECT_THAT(e.what(), HasSubstr("Simulated RTE"));
        }
        ASSERT_TRUE(sleeper_h && caller_h && canceller_h) << "a context body never ran";
        ASSERT_TRUE(loc_err);
        const Context& sleeper_ctx = *sleeper_h;
        const Context& caller_ctx = *caller_h;
        const Context& canceller_ctx = *canceller_h;

        // Both variants: the sleeper's remote error is the outcome; the propagated error is its
        // local error; the scope was never unwound by a Cancelled.
        EXPECT_EQ(sleeper_ctx.outcome().error(), sleeper_ctx.maybe_error());
        EXPECT_EQ(sleeper_ctx.maybe_error(), sleeper_ctx.remote_error());
        // spec §3.5 step 2 / §3.7: the error that left the block is the local error (it
        // replaces the ctxc that wait_for_result() raised inside the block).
        EXPECT_EQ(sleeper_ctx.local_error(), loc_err)
            << "local_error is " << describe(sleeper_ctx.local_error()) << ", the block raised "
            << describe(loc_err);
        EXPECT_FALSE(sleeper_ctx.cancelled_caught());
        EXPECT_EQ(sleeper_ctx.remote_error(), from_result) << "unboxed more than once";
        EXPECT_EQ(sleeper_ctx.canceller(), s_uid) << "our ctx's canceller is the relayer (src)";
        const auto* sleeper_ctxc = error_as<ContextCancelled>(sleeper_ctx.remote_error());
        ASSERT_NE(sleeper_ctxc, nullptr);
        EXPECT_EQ(sleeper_ctxc->canceller(), k_uid);
        EXPECT_EQ(sleeper_ctxc->src_uid(), s_uid);
        EXPECT_FALSE(sleeper_ctx.cancel_acked());

        if (!rte_during_ctxerr) {
            EXPECT_EQ(loc_err, sleeper_ctx.remote_error()) << "the raised ctxc is the recorded one";
            EXPECT_EQ(sleeper_ctx.outcome().error(), loc_err);
            EXPECT_FALSE(sleeper_ctx.cancel_called());
            // An enclosing ctxc does not trigger cancel() (spec §6.10).
            for (const Context* ctx : {&caller_ctx, &canceller_ctx}) {
                SCOPED_TRACE(ctx == &caller_ctx ? "caller_ctx" : "canceller_ctx");
                EXPECT_EQ(ctx->remote_error(), nullptr);
                EXPECT_EQ(ctx->local_error(), loc_err);
                EXPECT_EQ(ctx->outcome().error(), ctx->maybe_error());
                EXPECT_EQ(ctx->maybe_error(), loc_err);
                EXPECT_FALSE(ctx->cancel_called());
                EXPECT_FALSE(ctx->cancel_acked());
                EXPECT_FALSE(ctx->cancelled_caught());
                EXPECT_FALSE(ctx->canceller().has_value());
            }
        } else {
            EXPECT_NE(loc_err, sleeper_ctx.maybe_error());
            // The RuntimeError took the error path of every enclosing block: each cancelled.
            EXPECT_TRUE(sleeper_ctx.cancel_called());
            EXPECT_TRUE(caller_ctx.cancel_called());
            EXPECT_TRUE(canceller_ctx.cancel_called());
            // K's ctx: the ack of our cancel.
            const auto* k_ctxc = error_as<ContextCancelled>(canceller_ctx.remote_error());
            ASSERT_NE(k_ctxc, nullptr);
            EXPECT_EQ(k_ctxc->canceller(), root.uid());
            EXPECT_TRUE(canceller_ctx.cancel_acked());
            // J's ctx: J's relayed ctxc, still naming K.
            const auto* j_ctxc = error_as<ContextCancelled>(caller_ctx.remote_error());
            ASSERT_NE(j_ctxc, nullptr);
            EXPECT_EQ(j_ctxc->canceller(), k_uid);
            EXPECT_EQ(j_ctxc->src_uid(), to_j.peer()) << "a relayed ctxc names the relayer";
            EXPECT_FALSE(caller_ctx.cancel_acked());
        }

        // Inside K: its cancel_actor() was acked.
        EXPECT_EQ(canceller.report("sleep_then_cancel_peer.acked"), "1");
        EXPECT_EQ(canceller.report("sleep_then_cancel_peer.portal_cancel_called"), "1");
        // Inside S: both its tasks were cancelled with K as canceller, and its actor knows K.
        EXPECT_EQ(sleeper.report("sleeper.canceller"), k_uid.to_string());
        EXPECT_EQ(sleeper.report("sleeper.cancel_called"), "0");
        EXPECT_EQ(sleeper.report("stream_ints.canceller"), k_uid.to_string());
        EXPECT_EQ(sleeper.status(), std::make_pair(std::string("1"), k_uid.to_string()));
        // Inside J, in its handler of the sleeper's ctxc (spec #63 "Inside J").
        const std::string p = "stream_from_peer.";
        EXPECT_EQ(just_caller.report(p + "checked"), "1");
        EXPECT_EQ(just_caller.report(p + "ctxc_canceller"), k_uid.to_string());
        EXPECT_EQ(just_caller.report(p + "ctxc_src"), s_uid.to_string());
        EXPECT_EQ(just_caller.report(p + "peer_remote_error_is_caught"), "1");
        EXPECT_EQ(just_caller.report(p + "peer_maybe_error_is_caught"), "1");
        EXPECT_EQ(just_caller.report(p + "peer_local_error_is_caught"), "1");
        EXPECT_EQ(just_caller.report(p + "peer_outcome_is_caught"), "1");
        EXPECT_EQ(just_caller.report(p + "peer_canceller"), s_uid.to_string());
        EXPECT_EQ(just_caller.report(p + "peer_cancel_called"), "0");
        EXPECT_EQ(just_caller.report(p + "peer_cancel_acked"), "0");
        EXPECT_EQ(just_caller.report(p + "peer_cancelled_caught"), "0");
        EXPECT_EQ(just_caller.report(p + "ctx_cancel_called"), "0");
        EXPECT_EQ(just_caller.report(p + "ctx_cancel_acked"), "0");
        EXPECT_EQ(just_caller.report(p + "ctx_canceller"), "-");
        EXPECT_EQ(just_caller.report(p + "ctx_cancelled_caught"), "0");
        if (!rte_during_ctxerr) just_caller.command("release");  // J re-raises now
    }
    quit(just_caller);
    quit(sleeper);
    quit(canceller);
}

INSTANTIATE_TEST_SUITE_P(Spec, PeerCanceller, ::testing::Bool(), [](const auto& p) {
    return p.param ? "RteDuringCtxErr" : "CtxcReraised";
});

// spec §5 #65-68 test_peer_spawns_and_cancels_service_subactor. R opens a context on the spawn
// server SV (serve_subactors) and one on the client CL, whose endpoint asks SV (its own context)
// to spawn "little_bro" LB as a sub-actor process and runs an echo dialog with it; R runs its own
// echo dialog with LB. Params: sub_error (LB raises after echoing 51 of CL's messages) and
// reraise (CL catches its Cancelled and re-raises it: tractor's raise_client_error, which has no
// behavioural effect).
struct SpawnCase {
    bool sub_error;
    bool reraise;
};

class SpawnServer : public CancelXproc, public ::testing::WithParamInterface<SpawnCase> {};

TEST_P(SpawnServer, ClientCancelTearsDownTheServersSubactorOrRelaysItsError) {
    const bool sub_error = GetParam().sub_error;
    const bool reraise = GetParam().reraise;
    const std::string lb_name = "little_bro";
    Node server = spawn_node("spawn_server");
    Node client = spawn_node("client");
    ASSERT_TRUE(server.child().running() && client.child().running());
    {
        Actor root("root", options());
        Portal to_sv = root.connect("spawn_server", kDeadline);
        Portal to_cl = root.connect("client", kDeadline);
        const Uid sv_uid = to_sv.peer();
        const Uid cl_uid = to_cl.peer();
        std::optional<Uid> lb_uid;
        std::optional<Context> spawn_h;
        std::optional<Context> client_h;
        bool body_done = false;

        const auto check_inner_rte = [&](const RemoteActorError& rae) {
            EXPECT_EQ(rae.boxed_type_name(), "RemoteActorError");
            EXPECT_TRUE(rae.src_is<std::runtime_error>()) << rae.src_type_name();
            EXPECT_EQ(rae.relay_uid(), cl_uid);
            ASSERT_TRUE(lb_uid.has_value());
            EXPECT_EQ(rae.src_uid(), *lb_uid);
            EXPECT_THAT(rae.message(), HasSubstr("Simulated error in little_bro"));
        };

        try {
            to_sv.open_context(
                "serve_subactors", Payload::value(lb_name),
                [&](Context& spawn_ctx, const Payload& first) {
                    spawn_h.emplace(spawn_ctx.handle());
                    EXPECT_EQ(first.value<std::string>(), lb_name);
                    const std::string args = "spawn_server " + lb_name + " " +
                                             (sub_error ? "50" : "-1") + " " + flag(reraise);
                    to_cl.open_context(
                        "client_req_subactor", Payload::value(args),
                        [&](Context& client_ctx, const Payload& says) {
                            client_h.emplace(client_ctx.handle());
                            EXPECT_EQ(says.value<std::string>(), "yup i had brudder");
                            auto client_stream = client_ctx.open_stream();
                            // LB is the grandchild CL had SV spawn; attach to it too, once
                            // it is ready: an actor is discoverable as soon as it exists,
                            // before its endpoints are exposed (a Start in between would be
                            // refused as NotExposed). SV answers CL only after LB's "ready".
                            EXPECT_EQ(client.report("client_req_subactor.spawned"), lb_name);
                            Portal to_lb = root.connect(lb_name, kDeadline);
                            lb_uid = to_lb.peer();
                            bool lb_ctxc = false;
                            try {
                                to_lb.open_context(
                                    "echo_server", Payload::value(std::int64_t{-1}),
                                    [&](Context& sub_ctx, const Payload& lb_says) {
                                        EXPECT_EQ(lb_says.value<std::string>(), lb_name);
                                        auto echo = sub_ctx.open_stream();
                                        // With sub_error, echo until SV's teardown of LB ends
                                        // the dialog (the spec requires that ctxc); else 100.
                                        const Deadline limit(kDeadline);
                                        for (std::int64_t i = 0; sub_error || i < 100; ++i) {
                                            echo.send(Payload::value(i));
                                            EXPECT_EQ(echo.receive().value<std::int64_t>(), i);
                                            // Our dialog is open: CL may start its own, whose
                                            // error (sub_error) then finds ours running.
                                            if (i == 0) client_stream.send("go");
                                            if (limit.expired()) {
                                                ADD_FAILURE() << "LB's dialog never ended";
                                                break;
                                            }
                                        }
                                    });
                            } catch (const ContextCancelled& ctxc) {
                                // SV tore LB down: the canceller is SV.
                                lb_ctxc = true;
                                EXPECT_EQ(ctxc.canceller(), sv_uid) << ctxc.what();
                                EXPECT_EQ(ctxc.src_uid(), *lb_uid);
                            }
                            EXPECT_EQ(lb_ctxc, sub_error) << "Never raised ctxc?";

                            if (!sub_error) {
                                // CL finished its dialog with LB and blocks until cancelled.
                                EXPECT_EQ(client.report("client_req_subactor.dialog_done"), "1");
                                client_ctx.cancel(kDeadline);
                            }
                            try {
                                const Outcome res = client_ctx.wait_for_result();
                                EXPECT_FALSE(sub_error)
                                    << "Never rxed proxied RemoteActorError[RuntimeError]";
                                const auto* ctxc = error_as<ContextCancelled>(res.error());
                                ASSERT_NE(ctxc, nullptr) << "no ctxc returned";
                                EXPECT_TRUE(res.is_absorbed_cancel());
                                EXPECT_EQ(ctxc->canceller(), root.uid());
                                EXPECT_TRUE(client_ctx.cancel_acked());
                            } catch (const RemoteActorError& rae) {
                                EXPECT_TRUE(sub_error) << rae.what();
                                check_inner_rte(rae);
                                EXPECT_FALSE(client_ctx.cancel_acked());
                                EXPECT_EQ(client_ctx.maybe_error(), std::current_exception());
                                EXPECT_EQ(client_ctx.outcome().error(), std::current_exception());
                                throw;
                            }
                            // Cancelling the spawn server's context ends its (empty) nursery.
                            spawn_ctx.cancel(kDeadline);
                            EXPECT_TRUE(spawn_ctx.cancel_acked());
                            // LB was reaped when CL's context with SV ended: not discoverable.
                            EXPECT_THROW((void)root.connect(lb_name, 200ms), ActorNotFound);
                            body_done = true;
                        });
                });
            EXPECT_FALSE(sub_error) << "context block(s) in the parent never raised";
        } catch (const ContextCancelled& ctxc) {
            ADD_FAILURE() << "a ctxc escaped: " << ctxc.what();
            EXPECT_EQ(ctxc.canceller(), sub_error ? sv_uid : root.uid());
        } catch (const RemoteActorError& rae) {
            EXPECT_TRUE(sub_error) << rae.what();
            check_inner_rte(rae);
        }
        ASSERT_TRUE(spawn_h && client_h);
        if (!sub_error) {
            EXPECT_TRUE(body_done);
            EXPECT_TRUE(spawn_h->cancel_acked());
            EXPECT_TRUE(client_h->cancel_acked());
            EXPECT_EQ(client.report("client_req_subactor.canceller"), root.uid().to_string());
            if (reraise) {
                EXPECT_EQ(client.report("client_req_subactor.reraised"), "1");
            }
        }
        // SV's nursery cancelled LB (acked), ended it and reaped it: exit status 0, no zombie.
        EXPECT_EQ(server.report("serve_subactors." + lb_name + ".cancel_acked"), "1");
        EXPECT_EQ(server.report("serve_subactors." + lb_name + ".exit"), "exited with 0");
    }
    quit(client);
    quit(server);
}

INSTANTIATE_TEST_SUITE_P(Spec, SpawnServer,
                         ::testing::Values(SpawnCase{false, false}, SpawnCase{false, true},
                                           SpawnCase{true, false}, SpawnCase{true, true}),
                         [](const auto& p) {
                             return std::string(p.param.sub_error ? "SubError" : "NoSubError") +
                                    (p.param.reraise ? "Reraise" : "");
                         });

// Beyond the spec (spec §3.6 "cancellation cascades down the tree"): R -> A -> B, each in its
// own process. R's Portal::cancel_actor() on A cancels A's endpoint, whose open_context on B
// takes the error path and cancels B's task with canceller A. R's context with A receives a ctxc
// naming R, but R did not call ctx.cancel(): it is raised (wait_for_result and block exit), not
// acked.
TEST_F(CancelXproc, ActorCancelCascadesDownATreeOfThreeProcesses) {
    Node a = spawn_node("a");
    Node b = spawn_node("b");
    ASSERT_TRUE(a.child().running() && b.child().running());
    {
        Actor root("root", options());
        Portal to_a = root.connect("a", kDeadline);
        const Uid a_uid = to_a.peer();
        std::optional<Context> handle;
        std::exception_ptr from_result;
        try {
            to_a.open_context(
                "cascade_hold", Payload::value("b"), [&](Context& ctx, const Payload&) {
                    handle.emplace(ctx.handle());
                    // A's started() comes from inside its context with B: B's task is running.
                    EXPECT_TRUE(to_a.cancel_actor(kDeadline));
                    EXPECT_TRUE(to_a.cancel_called());
                    try {
                        (void)ctx.wait_for_result();
                        ADD_FAILURE() << "wait_for_result() returned";
                    } catch (const ContextCancelled& ctxc) {
                        from_result = std::current_exception();
                        EXPECT_EQ(ctxc.canceller(), root.uid());
                        EXPECT_EQ(ctxc.src_uid(), a_uid);
                        EXPECT_EQ(ctx.canceller(), root.uid()) << "a ctxc naming us sets our uid";
                        EXPECT_FALSE(ctx.cancel_called());
                        EXPECT_FALSE(ctx.cancel_acked());
                        throw;
                    }
                });
            ADD_FAILURE() << "open_context returned";
        } catch (const ContextCancelled& ctxc) {
            EXPECT_EQ(std::current_exception(), from_result) << "not the recorded ctxc";
            EXPECT_EQ(ctxc.canceller(), root.uid());
        }
        ASSERT_TRUE(handle.has_value());
        EXPECT_EQ(handle->remote_error(), from_result);
        EXPECT_EQ(handle->maybe_error(), from_result);
        EXPECT_EQ(handle->outcome().error(), from_result);
        EXPECT_FALSE(handle->cancel_called());
        EXPECT_FALSE(handle->cancel_acked());

        // B's task was cancelled by A (the cascade), not by R and not by itself.
        EXPECT_EQ(b.report("sleeper.canceller"), a_uid.to_string());
        EXPECT_EQ(b.report("sleeper.cancel_called"), "0");
        // A: its context with B took the error path (cancel called, acked by B's ctxc naming
        // A); its own task's canceller and its actor's cancel_caller are R.
        EXPECT_EQ(a.report("cascade_hold.inner_cancel_called"), "1");
        EXPECT_EQ(a.report("cascade_hold.inner_cancel_acked"), "1");
        EXPECT_EQ(a.report("cascade_hold.inner_canceller"), a_uid.to_string());
        EXPECT_EQ(a.report("cascade_hold.inner_ctxc_canceller"), a_uid.to_string());
        EXPECT_EQ(a.report("cascade_hold.ctx_canceller"), root.uid().to_string());
        EXPECT_EQ(a.report("cascade_hold.actor_cancel_caller"), root.uid().to_string());
        EXPECT_EQ(a.status(), std::make_pair(std::string("1"), root.uid().to_string()));
        // Only A's actor was cancelled; B's actor was not (only its task).
        EXPECT_EQ(b.status(), std::make_pair(std::string("0"), std::string("-")));
    }
    quit(a);
    quit(b);
}

// Beyond the spec (DESIGN.md §4.4): ctx.cancel() while the data rings in both directions are
// full and the child does not read. The child filled our inbound ring and is blocked in a send
// (on_full = block); we filled its inbound ring with try_send until `full`. The cancel request
// and the child's ctxc travel on the control ring, so cancel() returns acked all the same.
TEST_F(CancelXproc, CancelIsAckedWhileBothDataRingsAreFullAndTheChildDoesNotRead) {
    Node filler = spawn_node("filler");
    ASSERT_TRUE(filler.child().running());
    {
        Actor root("root", options());
        Portal portal = root.connect("filler", kDeadline);
        constexpr std::uint32_t kSlots = 8;  // both inbound rings (fill_both exposes 8 too)
        OpenOptions open;
        open.msg_buffer_size = kSlots;
        std::optional<Context> handle;
        std::uint64_t we_sent = 0;
        auto r = portal.open_context(
            "fill_both", {},
            [&](Context& ctx, const Payload&) {
                handle.emplace(ctx.handle());
                auto stream = ctx.open_stream();
                // The child filled our inbound ring and goes on into a blocking send.
                EXPECT_EQ(filler.report("fill_both.sent"), std::to_string(kSlots));
                for (;;) {
                    const std::uint64_t seq = we_sent;
                    const SendStatus st = stream.try_send(std::span<const std::byte>(
                        reinterpret_cast<const std::byte*>(&seq), sizeof seq));
                    if (st == SendStatus::full) break;
                    ASSERT_EQ(st, SendStatus::ok) << to_string(st);
                    ASSERT_LE(++we_sent, kSlots) << "the child's inbound ring never filled";
                }
                EXPECT_EQ(we_sent, kSlots);
                // Our inbound ring's counters (written by the child's process) read zeros
                // until our side attached the ring the child carved, which our control loop
                // does when its announcement arrives: wait for it.
                EXPECT_TRUE(test::wait_until(
                    [&] { return stream.inbound_counters().sent == kSlots; }, kDeadline))
                    << "the child's sends: " << stream.inbound_counters().sent;
                EXPECT_GE(stream.inbound_counters().full_events, 1U)
                    << "the child's try_send found our inbound ring full";
                ctx.cancel(kDeadline);
                EXPECT_TRUE(ctx.cancel_acked()) << "cancel() returned without the ack";
                EXPECT_TRUE(ctx.cancel_called());
            },
            open);
        // Our own acknowledged cancel is absorbed at the exit (spec §3.5 step 3).
        EXPECT_TRUE(r.outcome.is_absorbed_cancel());
        ASSERT_TRUE(handle.has_value());
        const std::exception_ptr re = handle->remote_error();
        const auto* ctxc = error_as<ContextCancelled>(re);
        ASSERT_NE(ctxc, nullptr);
        EXPECT_EQ(ctxc->canceller(), root.uid());
        EXPECT_EQ(handle->canceller(), root.uid());
        EXPECT_EQ(handle->maybe_error(), re);
        EXPECT_EQ(handle->outcome().error(), re);
        EXPECT_EQ(r.outcome.error(), re);
        EXPECT_TRUE(handle->cancel_acked());
        // The child was cancelled in its blocked send (which never completed).
        EXPECT_EQ(filler.report("fill_both.cancelled"), "1");
        EXPECT_EQ(filler.report("fill_both.canceller"), root.uid().to_string());
        EXPECT_TRUE(test::wait_until([&] { return root.open_contexts() == 0; }, kDeadline));
    }
    // Printed before "fill_both.cancelled" if the blocked send had ever returned.
    EXPECT_FALSE(filler.has("fill_both.blocked_send_returned"));
    quit(filler);
}

// Beyond the spec (spec §3.6 "inter-peer"): a third actor Z, in its own process, cancels actor
// Y with Portal::cancel_actor() while R has a context open on Y. R's context receives a ctxc
// naming Z as canceller and Y as source: raised (R did not ask), R's ctx.canceller() is Y (the
// relayer), not acked. Y's Actor::cancel_caller() is Z.
TEST_F(CancelXproc, ThirdPartyCancelActorIsRaisedInOurContextNamingTheThirdParty) {
    Node y = spawn_node("y");
    Node z = spawn_node("z");
    ASSERT_TRUE(y.child().running() && z.child().running());
    {
        Actor root("root", options());
        Portal to_y = root.connect("y", kDeadline);
        const Uid y_uid = to_y.peer();
        const Uid z_uid = root.connect("z", kDeadline).peer();
        std::optional<Context> handle;
        std::exception_ptr from_result;
        try {
            to_y.open_context("sleeper", {}, [&](Context& ctx, const Payload&) {
                handle.emplace(ctx.handle());
                z.command("cancel_peer y");
                // Z's cancel_actor() returns after Y's ack, which follows Y's ctxc to us.
                EXPECT_EQ(z.report("cancel_peer.y.acked"), "1");
                EXPECT_EQ(z.report("cancel_peer.y.cancel_called"), "1");
                try {
                    (void)ctx.wait_for_result();
                    ADD_FAILURE() << "wait_for_result() returned";
                } catch (const ContextCancelled& ctxc) {
                    from_result = std::current_exception();
                    EXPECT_EQ(ctxc.canceller(), z_uid);
                    EXPECT_EQ(ctxc.src_uid(), y_uid);
                    throw;
                }
            });
            ADD_FAILURE() << "open_context returned";
        } catch (const ContextCancelled& ctxc) {
            EXPECT_EQ(std::current_exception(), from_result) << "not the recorded ctxc";
            EXPECT_EQ(ctxc.canceller(), z_uid);
        }
        ASSERT_TRUE(handle.has_value());
        EXPECT_EQ(handle->canceller(), y_uid) << "our ctx's canceller is the relayer (src)";
        EXPECT_FALSE(handle->cancel_called());
        EXPECT_FALSE(handle->cancel_acked());
        EXPECT_EQ(handle->remote_error(), from_result);
        EXPECT_EQ(handle->maybe_error(), from_result);
        EXPECT_EQ(handle->outcome().error(), from_result);
        EXPECT_EQ(handle->local_error(), from_result);
        EXPECT_FALSE(handle->cancelled_caught());

        EXPECT_EQ(y.report("sleeper.canceller"), z_uid.to_string());
        EXPECT_EQ(y.status(), std::make_pair(std::string("1"), z_uid.to_string()));
        EXPECT_EQ(z.status(), std::make_pair(std::string("0"), std::string("-")));
    }
    quit(y);
    quit(z);
}

}  // namespace
}  // namespace shmctx
