// Unresponsive peers (issue 7 item 3, DESIGN.md §2): a peer that is alive but makes no progress
// (SIGSTOP here; a debugger or a starved machine alike) is reported unresponsive, never dead.
// Without ActorOptions::unresponsive_timeout its contexts wait for it and carry on when it
// resumes; with it, the link is given up after that long: every context fails with
// PeerUnresponsive, blocked calls wake with it, and the peer, once resumed, finds the link closed
// (it serves a new link at once).
//
// The peer is an actor_node process (heartbeat every 100 ms, the default). Every wait has a
// deadline; a watchdog aborts the binary if the runtime hangs, after SIGCONT-ing nothing: the
// helpers end at stdin EOF or with their Child handle.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <optional>
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

namespace shmctx {
namespace {

using namespace std::chrono_literals;
using test::wait_until;
using ::testing::HasSubstr;

constexpr auto kDeadline = 20s;
constexpr auto kTestLimit = 120s;
/// unresponsive_timeout of the tests that give up.
constexpr auto kGiveUpAfter = 2s;
constexpr auto kGiveUpSlowly = 6s;

class Unresponsive : public ::testing::Test {
protected:
    /// Our view of the peer: unresponsive after 1 s without a heartbeat (10 of its beats: a
    /// sanitizer build's peer still beats in time).
    ActorOptions options(Duration timeout = Duration::zero()) const {
        ActorOptions o;
        o.ns = guard_.names.ns();
        o.heartbeat_interval = 50ms;
        o.unresponsive_after = 1s;
        o.unresponsive_timeout = timeout;
        return o;
    }

    const shm::Names& names() const { return guard_.names; }

    test::Child spawn_node() {
        test::Child child = test::spawn("actor_node", {guard_.names.ns(), "peer", "server"});
        if (!child.expect_line("ready", kDeadline)) {
            child.kill(SIGKILL);
            (void)child.wait(kDeadline);
            ADD_FAILURE() << "actor_node never became ready: " << child.describe();
        }
        return child;
    }

    static void quit(test::Child& child) {
        child.write("quit\n");
        const auto status = child.wait(kDeadline);
        EXPECT_TRUE(status.has_value() && WIFEXITED(*status) && WEXITSTATUS(*status) == 0)
            << child.describe();
    }

    void TearDown() override {
        EXPECT_THAT(test::all_objects(guard_.names), ::testing::IsEmpty())
            << "shared-memory objects left in namespace " << guard_.names.ns();
    }

private:
    test::NamespaceGuard guard_{"unresp"};
    test::Watchdog watchdog_{kTestLimit, [names = guard_.names] {
                                 for (const auto& o : test::all_objects(names)) {
                                     ::unlink(shm::shm_path(o).c_str());
                                 }
                             }};
};

/// One "ping" -> "pong" exchange on the simple_rpc stream.
void ping(MsgStream& stream) {
    stream.send("ping");
    EXPECT_EQ(stream.receive().text(), "pong");
}

// No timeout: a stopped peer is reported (Portal::peer_unresponsive) but its context neither
// fails nor loses anything; once resumed it answers and the context ends normally.
TEST_F(Unresponsive, StoppedPeerIsReportedAndItsContextCarriesOnWhenItResumes) {
    test::Child node = spawn_node();
    {
        Actor self("self", options());
        Portal portal = self.connect("peer", kDeadline);
        const auto r = portal.open_context(
            "simple_rpc", Payload::value(std::int64_t{1}), [&](Context& ctx, const Payload&) {
                auto stream = ctx.open_stream();
                ping(stream);
                EXPECT_FALSE(portal.peer_unresponsive());
                node.kill(SIGSTOP);
                EXPECT_TRUE(wait_until([&] { return portal.peer_unresponsive(); }, kDeadline))
                    << "a stopped peer was never reported unresponsive";
                // Stopped well past unresponsive_after: still linked, nothing raised.
                stream.send("ping");
                EXPECT_FALSE(stream.receive_for(200ms).has_value()) << "a stopped peer answered";
                EXPECT_EQ(self.links(), 1U);
                node.kill(SIGCONT);
                EXPECT_EQ(stream.receive().text(), "pong");  // the queued ping
                EXPECT_TRUE(wait_until([&] { return !portal.peer_unresponsive(); }, kDeadline))
                    << "a resumed peer stayed unresponsive";
                ping(stream);
            });
        EXPECT_EQ(r.outcome.value().value<std::int64_t>(), 3) << "pings counted by the peer";
    }
    quit(node);
}

// With unresponsive_timeout: a receive blocked on a stopped peer wakes with PeerUnresponsive,
// the link is closed, and the resumed peer sees the close (it accepts a new link at once).
TEST_F(Unresponsive, TimeoutFailsTheContextWithPeerUnresponsiveAndTheResumedPeerSeesTheClose) {
    test::Child node = spawn_node();
    {
        Actor self("self", options(kGiveUpAfter));
        Portal portal = self.connect("peer", kDeadline);
        std::optional<Context> handle;
        const auto start = Clock::now();
        try {
            portal.open_context("simple_rpc", Payload::value(std::int64_t{1}),
                                [&](Context& ctx, const Payload&) {
                                    handle.emplace(ctx.handle());
                                    auto stream = ctx.open_stream();
                                    ping(stream);
                                    node.kill(SIGSTOP);
                                    (void)stream.receive();  // blocks until we give up
                                    ADD_FAILURE() << "receive() returned";
                                });
            ADD_FAILURE() << "open_context returned";
        } catch (const PeerUnresponsive& e) {
            EXPECT_THAT(e.what(), HasSubstr("peer"));
            EXPECT_THAT(e.what(), HasSubstr("unresponsive_timeout"));
        }
        EXPECT_GE(Clock::now() - start, kGiveUpAfter) << "gave up before unresponsive_timeout";
        EXPECT_TRUE(wait_until([&] { return self.links() == 0; }, kDeadline));
        EXPECT_EQ(self.open_contexts(), 0U);
        ASSERT_TRUE(handle.has_value());
        EXPECT_TRUE(handle->cancel_called()) << "the body's error path cancels the context";

        node.kill(SIGCONT);
        // The peer reads our close (LinkClose or the closed control ring): it drops its end of
        // the link and its task, and a new connect links afresh and serves.
        EXPECT_TRUE(wait_until(
            [&] {
                node.write("status\n");
                std::string links;
                std::string contexts;
                for (;;) {
                    const auto line = node.read_line(kDeadline);
                    if (!line || *line == "report status.done=1") break;
                    if (line->starts_with("report actor.links=")) links = line->substr(19);
                    if (line->starts_with("report actor.open_contexts=")) {
                        contexts = line->substr(27);
                    }
                }
                return links == "0" && contexts == "0";
            },
            kDeadline))
            << "the resumed peer kept the link or its task";
        Portal again = self.connect("peer", kDeadline);
        EXPECT_EQ(
            again.run("add_one", Payload::value(std::int64_t{1}), kDeadline).value<std::int64_t>(),
            2);
    }
    quit(node);
}

// After we gave up on a stopped peer, a new connect() while it is still stopped must not attach
// its old arena (it lingers until the peer notices the end): once the peer resumes and drops
// its end, the new link comes up with its new arena and serves (protocol.md §12 R6).
TEST_F(Unresponsive, AfterGivingUpAConnectWaitsForTheResumedPeersNewArena) {
    test::Child node = spawn_node();
    {
        // The new link is given up too if the peer stays stopped that long again: a timeout
        // well above the time this test needs to resume it, even on a loaded sanitizer run.
        Actor self("self", options(kGiveUpSlowly));
        Portal portal = self.connect("peer", kDeadline);
        EXPECT_EQ(
            portal.run("add_one", Payload::value(std::int64_t{1}), kDeadline).value<std::int64_t>(),
            2);
        node.kill(SIGSTOP);
        ASSERT_TRUE(wait_until([&] { return self.links() == 0; }, kDeadline))
            << "never gave up on the stopped peer";
        std::optional<Portal> again;
        std::exception_ptr failed;
        std::atomic<pid_t> connecting{0};
        std::jthread connecter([&] {
            connecting = test::current_tid();
            try {
                again.emplace(self.connect("peer", kDeadline));
            } catch (...) {
                failed = std::current_exception();
            }
        });
        // Resume the peer once our connect waits for it (its link made, our control loop
        // looking for the peer's arena, where only the old one is).
        EXPECT_TRUE(wait_until(
            [&] {
                const pid_t tid = connecting.load();
                if (tid == 0 || test::thread_state(tid) != 'S') return false;
                for (const auto& arena : names().list("link")) {
                    if (arena.starts_with(self.uid().uuid.to_hex())) return true;  // ours, new
                }
                return false;
            },
            kDeadline));
        node.kill(SIGCONT);
        connecter.join();
        if (failed) {
            try {
                std::rethrow_exception(failed);
            } catch (const std::exception& e) {
                FAIL() << "connect after the give-up failed: " << e.what();
            }
        }
        ASSERT_TRUE(again.has_value());
        EXPECT_EQ(
            again->run("add_one", Payload::value(std::int64_t{2}), kDeadline).value<std::int64_t>(),
            3);
    }
    quit(node);
}

}  // namespace
}  // namespace shmctx
