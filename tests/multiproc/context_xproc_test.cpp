// Contexts across real processes (issue 4): the test process is the parent actor, its peers are
// actor_node helpers started with posix_spawn. Covered: a context round trip with a stream
// (spec §5 #73-76) and Portal::run; errors boxed in another process (at entry and at block
// exit, a bad argument, an unknown function); an error relayed over three processes keeping its
// source (spec §3.8, §5 #65-68); a peer that exits or is killed between connect() and
// open_context(); a peer SIGKILLed while the parent is blocked in receive() (PeerDied, never a
// hang: DESIGN.md §4.7).
//
// Every wait has a deadline and every test runs under a watchdog that aborts (naming the test)
// if the runtime hangs. The helpers end at stdin EOF, so they also end if this process dies.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <functional>
#include <mutex>
#include <optional>
#include <ostream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "context_support.hpp"
#include "namespace_guard.hpp"
#include "process.hpp"
#include "shmctx/actor.hpp"
#include "shmctx/context.hpp"
#include "shmctx/errors.hpp"
#include "shmctx/payload.hpp"
#include "shmctx/shm/fault.hpp"
#include "shmctx/shm/layout.hpp"

namespace shmctx {

// gtest printer (found by ADL, hence outside the unnamed namespace; internal linkage).
[[maybe_unused]] static void PrintTo(const Uid& uid, std::ostream* os) { *os << uid.to_string(); }

namespace {

using namespace std::chrono_literals;
using test::body_must_not_run;
using test::current_tid;
using test::thread_state;
using test::Watchdog;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

/// Bound of every wait on a condition: generous, since sanitizer builds run many times slower.
constexpr auto kDeadline = 20s;
/// A whole test must finish within this, else the watchdog aborts the binary.
constexpr auto kTestLimit = 120s;

bool exited_cleanly(const std::optional<int>& status) {
    return status.has_value() && WIFEXITED(*status) && WEXITSTATUS(*status) == 0;
}

class ContextXproc : public ::testing::Test {
protected:
    ActorOptions options() const {
        ActorOptions o;
        o.ns = guard_.names.ns();
        return o;
    }
    const shm::Names& names() const { return guard_.names; }

    /// Starts an actor_node and waits for its "ready"; a failure names the helper's status.
    test::Child spawn_node(const std::string& name, const std::vector<std::string>& role,
                           const std::vector<std::string>& env = {}) {
        std::vector<std::string> args{guard_.names.ns(), name};
        args.insert(args.end(), role.begin(), role.end());
        test::Child child = test::spawn("actor_node", args, env);
        const bool ready = child.expect_line("ready", kDeadline);
        if (!ready) {
            child.kill(SIGKILL);
            (void)child.wait(kDeadline);
            ADD_FAILURE() << "actor_node " << name << " never became ready: " << child.describe();
        }
        return child;
    }

    /// Asks a node to quit and expects exit status 0.
    static void quit(test::Child& child) {
        child.write("quit\n");
        const auto status = child.wait(kDeadline);
        EXPECT_TRUE(exited_cleanly(status)) << "actor_node: " << child.describe();
    }

    void TearDown() override {
        // Killed helpers included: the parent reclaimed what a dead peer left (DESIGN.md §2).
        EXPECT_THAT(test::all_objects(guard_.names), IsEmpty())
            << "shared-memory objects left in namespace " << guard_.names.ns();
    }

private:
    test::NamespaceGuard guard_{"ctxx"};
    Watchdog watchdog_{kTestLimit, [names = guard_.names] {
                           for (const auto& o : test::all_objects(names)) {
                               ::unlink(shm::shm_path(o).c_str());
                           }
                       }};
};

// A context with a stream across two processes (spec §5 #73-76), and Portal::run.
TEST_F(ContextXproc, ContextRoundTripAcrossProcesses) {
    test::Child node = spawn_node("server", {"server"});
    ASSERT_TRUE(node.running());
    {
        Actor parent("parent", options());
        Portal portal = parent.connect("server", kDeadline);
        EXPECT_EQ(portal.peer().name, "server");
        EXPECT_EQ(portal.run("add_one", Payload::value(41)).value<std::int64_t>(), 42);

        constexpr std::int64_t kPings = 10;
        auto r = portal.open_context("simple_rpc", Payload::value(10),
                                     [&](Context& ctx, const Payload& sent) {
                                         EXPECT_EQ(sent.value<std::int64_t>(), 11);
                                         auto stream = ctx.open_stream();
                                         std::int64_t pongs = 0;
                                         stream.send("ping");
                                         for (const auto& msg : stream) {
                                             EXPECT_EQ(msg.text(), "pong");
                                             if (++pongs == kPings) break;
                                             stream.send("ping");
                                         }
                                         return pongs;
                                     });
        EXPECT_EQ(r.value, kPings);
        ASSERT_TRUE(r.outcome.has_value());
        EXPECT_EQ(r.outcome.value().value<std::int64_t>(), kPings) << "pings the child counted";
        EXPECT_TRUE(test::wait_until([&] { return parent.open_contexts() == 0; }, kDeadline));
        EXPECT_EQ(parent.links(), 1U);
    }
    quit(node);
}

// Errors raised in another process arrive boxed, with the source actor: before started() (at
// entry), after started() (at block exit), a bad argument (DecodeError), an unknown function.
TEST_F(ContextXproc, ErrorsOfAChildProcessArriveBoxed) {
    test::Child node = spawn_node("server", {"server"});
    ASSERT_TRUE(node.running());
    {
        Actor parent("parent", options());
        Portal portal = parent.connect("server", kDeadline);
        const Uid server = portal.peer();

        std::atomic<bool> body_ran{false};
        try {
            portal.open_context("boom_early", {}, body_must_not_run(body_ran));
            ADD_FAILURE() << "boom_early: open_context returned";
        } catch (const RemoteActorError& e) {
            EXPECT_TRUE(e.boxed_is<std::runtime_error>()) << e.boxed_type_name();
            EXPECT_EQ(e.src_uid(), server);
            EXPECT_FALSE(e.is_inception());
            EXPECT_THAT(e.message(), HasSubstr("early boom from server"));
        }
        EXPECT_FALSE(body_ran);

        bool body_ran_after_started = false;
        try {
            portal.open_context("boom", {},
                                [&](Context&, const Payload&) { body_ran_after_started = true; });
            ADD_FAILURE() << "boom: open_context returned";
        } catch (const RemoteActorError& e) {
            EXPECT_TRUE(e.boxed_is<std::runtime_error>()) << e.boxed_type_name();
            EXPECT_EQ(e.src_uid(), server);
            EXPECT_THAT(e.message(), HasSubstr("boom from server"));
        }
        EXPECT_TRUE(body_ran_after_started);

        try {
            (void)portal.run("square", Payload::value("seven"));
            ADD_FAILURE() << "square: run returned";
        } catch (const RemoteActorError& e) {
            EXPECT_TRUE(e.boxed_is<DecodeError>()) << e.boxed_type_name() << ": " << e.what();
            EXPECT_EQ(e.src_uid(), server);
        }
        EXPECT_EQ(portal.run("square", Payload::value(9)).value<std::int64_t>(), 81);

        try {
            (void)portal.run("no_such_fn");
            ADD_FAILURE() << "no_such_fn: run returned";
        } catch (const RemoteActorError& e) {
            EXPECT_THAT(e.what(), HasSubstr("not exposed"));
        }
        EXPECT_TRUE(test::wait_until([&] { return parent.open_contexts() == 0; }, kDeadline));
    }
    quit(node);
}

// Three processes A (this one) -> B -> C: C raises std::runtime_error, B's endpoint has a
// context open to C and lets the error escape. A sees an inception that keeps C as the source.
TEST_F(ContextXproc, ErrorRelayedOverThreeProcessesKeepsItsSource) {
    test::Child c = spawn_node("c", {"server"});
    test::Child b = spawn_node("b", {"relay", "c"});
    ASSERT_TRUE(c.running());
    ASSERT_TRUE(b.running());
    {
        Actor a("a", options());
        Portal to_b = a.connect("b", kDeadline);
        const Uid b_uid = to_b.peer();
        const Uid c_uid = a.connect("c", kDeadline).peer();
        try {
            to_b.open_context("relay", {}, [](Context&, const Payload&) {});
            ADD_FAILURE() << "open_context returned";
        } catch (const ContextCancelled& e) {
            ADD_FAILURE() << "a real error arrived as ContextCancelled: " << e.what();
        } catch (const RemoteActorError& e) {
            EXPECT_EQ(e.boxed_type_name(), "RemoteActorError");
            EXPECT_TRUE(e.src_is<std::runtime_error>()) << e.src_type_name();
            EXPECT_EQ(e.src_uid(), c_uid);
            EXPECT_EQ(e.relay_uid(), b_uid);
            EXPECT_TRUE(e.is_inception());
            EXPECT_THAT(e.message(), HasSubstr("boom from c"));
        }
    }
    quit(b);
    quit(c);
}

// DESIGN.md §3: a peer of another layout version is refused at connect() with a LayoutError
// naming both versions (the fault point makes the node publish its actor segment as the next
// layout version would).
TEST_F(ContextXproc, PeerOfAnotherLayoutVersionIsRefusedNamingBothVersions) {
    test::Child node =
        spawn_node("server", {"server"}, {"SHMCTX_FAULT=actor.before_publish=corrupt"});
    ASSERT_TRUE(node.running());
    {
        Actor parent("parent", options());
        const auto start = Clock::now();
        try {
            (void)parent.connect("server", kDeadline);
            ADD_FAILURE() << "connect to a peer of another layout version returned";
        } catch (const LayoutError& e) {
            RecordProperty("what", e.what());
            EXPECT_THAT(e.what(), HasSubstr("server"));
            EXPECT_THAT(e.what(), HasSubstr(std::to_string(shm::kLayoutVersion)));
            EXPECT_THAT(e.what(), HasSubstr(std::to_string(shm::kLayoutVersion + 1)));
        }
        EXPECT_LT(Clock::now() - start, kDeadline) << "refused only after the connect deadline";
        EXPECT_EQ(parent.links(), 0U);
    }
    quit(node);
}

// The third version check (docs/semantics.md §14): a peer whose segment and arena carry our
// versions but whose LinkOpen names the next protocol version is refused at link set-up
// (on_link_open answers LinkClose{version_mismatch}); connect() raises that LayoutError, naming
// both versions, at once rather than at its deadline.
TEST_F(ContextXproc, LinkOpenOfAnotherProtocolVersionIsRefusedNamingBothVersions) {
    ASSERT_TRUE(shm::fault_points_enabled()) << "this test needs -DSHMCTX_FAULT_POINTS=ON";
    test::Child node = spawn_node("server", {"server"}, {"SHMCTX_FAULT=link.open_version=corrupt"});
    ASSERT_TRUE(node.running());
    {
        Actor parent("parent", options());
        const auto start = Clock::now();
        try {
            (void)parent.connect("server", kDeadline);
            ADD_FAILURE() << "connect to a peer speaking another protocol version returned";
        } catch (const LayoutError& e) {
            RecordProperty("what", e.what());
            EXPECT_THAT(e.what(), HasSubstr("server"));
            EXPECT_THAT(e.what(),
                        HasSubstr("protocol version " + std::to_string(shm::kProtocolVersion + 1) +
                                  "; ours are " + std::to_string(shm::kLayoutVersion) + " and " +
                                  std::to_string(shm::kProtocolVersion)));
        }
        EXPECT_LT(Clock::now() - start, kDeadline) << "refused only after the connect deadline";
        EXPECT_EQ(parent.links(), 0U);
    }
    quit(node);
}

// A peer killed while it sets up its side of the link (right after carving its control ring)
// fails connect() promptly with a typed error, and our actor links to other peers afterwards.
TEST_F(ContextXproc, PeerDyingDuringLinkSetupFailsConnectWithoutHanging) {
    test::Child doomed =
        spawn_node("doomed", {"server"}, {"SHMCTX_FAULT=arena.after_carve=kill@1"});
    test::Child healthy = spawn_node("healthy", {"server"});
    ASSERT_TRUE(doomed.running());
    ASSERT_TRUE(healthy.running());
    Actor parent("parent", options());
    constexpr auto kConnectDeadline = 5s;
    const auto start = Clock::now();
    try {
        (void)parent.connect("doomed", kConnectDeadline);
        ADD_FAILURE() << "connect to a peer that died during the link set-up returned";
    } catch (const TransportClosed& e) {
        RecordProperty("error", e.what());
    } catch (const ActorNotFound& e) {
        RecordProperty("error", e.what());
    }
    EXPECT_LT(Clock::now() - start, kConnectDeadline + 5s);
    const auto status = doomed.wait(kDeadline);
    EXPECT_TRUE(status.has_value() && WIFSIGNALED(*status) && WTERMSIG(*status) == SIGKILL)
        << "the fault point did not fire: " << doomed.describe();
    EXPECT_TRUE(test::wait_until([&] { return parent.links() == 0; }, kDeadline));

    Portal portal = parent.connect("healthy", kDeadline);
    EXPECT_EQ(portal.run("add_one", Payload::value(1)).value<std::int64_t>(), 2);
    quit(healthy);
}

// A peer that goes away between connect() and open_context(): an orderly exit ("quit") gives
// TransportClosed, a SIGKILL gives PeerDied (a TransportClosed); never a hang.
class PeerGone : public ContextXproc, public ::testing::WithParamInterface<bool> {};

TEST_P(PeerGone, BetweenConnectAndOpenContextRaisesTransportClosed) {
    const bool killed = GetParam();
    test::Child node = spawn_node("server", {"server"});
    ASSERT_TRUE(node.running());
    Actor parent("parent", options());
    std::optional<Portal> portal = parent.connect("server", kDeadline);
    const Uid server = portal->peer();
    EXPECT_EQ(portal->run("add_one", Payload::value(1)).value<std::int64_t>(), 2);
    if (killed) {
        node.kill(SIGKILL);
        const auto status = node.wait(kDeadline);
        ASSERT_TRUE(status.has_value() && WIFSIGNALED(*status)) << node.describe();
    } else {
        quit(node);
    }

    std::atomic<bool> body_ran{false};
    const auto start = Clock::now();
    try {
        portal->open_context("add_one", Payload::value(1), body_must_not_run(body_ran));
        ADD_FAILURE() << "open_context returned";
    } catch (const TransportClosed& e) {
        if (killed) {
            EXPECT_NE(dynamic_cast<const PeerDied*>(&e), nullptr) << "not PeerDied: " << e.what();
        }
    }
    EXPECT_THROW((void)portal->run("add_one", Payload::value(1)), TransportClosed);
    EXPECT_LT(Clock::now() - start, kDeadline);
    EXPECT_FALSE(body_ran);
    EXPECT_TRUE(test::wait_until([&] { return parent.links() == 0; }, kDeadline));
    EXPECT_EQ(parent.open_contexts(), 0U);
    // Our arena of the lost link is removed once no Portal holds the link (the dead peer's own
    // objects are the guard's to remove).
    portal.reset();
    const std::string our_arena = names().arena(parent.uid().uuid, server.uuid);
    EXPECT_TRUE(test::wait_until(
        [&] {
            for (const auto& o : test::all_objects(names())) {
                if (o == our_arena) return false;
            }
            return true;
        },
        kDeadline))
        << our_arena << " left after the link was lost";
}

INSTANTIATE_TEST_SUITE_P(Exit, PeerGone, ::testing::Bool(),
                         [](const auto& p) { return p.param ? "Sigkill" : "Quit"; });

// DESIGN.md §4.7 (fixes spec §3.10): the parent blocked in receive() while its peer is SIGKILLed
// wakes with PeerDied; the body's error propagates unchanged out of open_context.
TEST_F(ContextXproc, PeerKilledWhileParentBlockedInReceiveRaisesPeerDied) {
    test::Child node = spawn_node("server", {"server"});
    ASSERT_TRUE(node.running());
    Actor parent("parent", options());
    Portal portal = parent.connect("server", kDeadline);

    std::atomic<pid_t> receiver_tid{0};
    std::jthread killer([&] {
        // Kill once the parent thread sleeps in receive() (it spins first, then blocks).
        EXPECT_TRUE(test::wait_until(
            [&] {
                const pid_t tid = receiver_tid.load();
                return tid != 0 && thread_state(tid) == 'S';
            },
            kDeadline));
        node.kill(SIGKILL);
    });
    std::optional<Context> handle;
    const auto start = Clock::now();
    try {
        portal.open_context("hold", {}, [&](Context& ctx, const Payload&) {
            handle.emplace(ctx.handle());
            auto stream = ctx.open_stream();
            receiver_tid = current_tid();
            (void)stream.receive();
            ADD_FAILURE() << "receive() returned a message";
        });
        ADD_FAILURE() << "open_context returned";
    } catch (const PeerDied& e) {
        EXPECT_THAT(e.what(), HasSubstr("server"));
    }
    EXPECT_LT(Clock::now() - start, kDeadline);
    killer.join();
    const auto status = node.wait(kDeadline);
    EXPECT_TRUE(status.has_value() && WIFSIGNALED(*status) && WTERMSIG(*status) == SIGKILL)
        << node.describe();
    ASSERT_TRUE(handle.has_value());
    EXPECT_TRUE(handle->cancel_called()) << "the body's error path cancels the context";
    EXPECT_TRUE(test::wait_until([&] { return parent.links() == 0; }, kDeadline));
    EXPECT_EQ(parent.open_contexts(), 0U);
}

}  // namespace
}  // namespace shmctx
