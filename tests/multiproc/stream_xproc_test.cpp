// Overrun policies across two real processes (issue 5, DESIGN.md §4.2, §4.7): the test process is
// the sending actor, an actor_node helper (posix_spawn) the receiver. Its gated_count endpoints
// hold a 4-message inbound ring and read nothing until the test writes "release" to the node's
// stdin, so every policy meets a full ring deterministically:
//   raise  StreamOverrun at our send; the receiver is unaffected and reports its overrun counter;
//   spill  everything arrives in order; the receiver reads the spill counters (written by our
//          process) from its own mapping of the ring;
//   block  our send waits until the other process reads;
// and a peer SIGKILLed while our send is blocked (PeerDied, promptly) or while we spill (the
// context fails with PeerDied and the spill is discarded, counted).
//
// Every wait has a deadline and every test runs under a watchdog.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <optional>
#include <ostream>
#include <span>
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

// gtest printer (found by ADL, hence outside the unnamed namespace; internal linkage).
[[maybe_unused]] static void PrintTo(const Uid& uid, std::ostream* os) { *os << uid.to_string(); }

namespace {

using namespace std::chrono_literals;
using test::Watchdog;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr auto kDeadline = 20s;
constexpr auto kTestLimit = 120s;
/// A dead peer must be noticed well within this (DESIGN.md §4.7: never a hang).
constexpr auto kPrompt = 5s;
/// The node's inbound ring (actor_node gated_count).
constexpr std::uint64_t kNodeSlots = 4;

bool exited_cleanly(const std::optional<int>& status) {
    return status.has_value() && WIFEXITED(*status) && WEXITSTATUS(*status) == 0;
}

/// An 8-byte sequence number (what gated_count checks).
struct Seq {
    std::uint64_t value;
    operator PayloadView() const noexcept {  // NOLINT(google-explicit-constructor): by design
        return PayloadView(std::as_bytes(std::span<const std::uint64_t, 1>(&value, 1)));
    }
};

class StreamXproc : public ::testing::Test {
protected:
    ActorOptions options() const {
        ActorOptions o;
        o.ns = guard_.names.ns();
        return o;
    }

    test::Child spawn_node(const std::string& name) {
        test::Child child = test::spawn("actor_node", {guard_.names.ns(), name, "server"});
        if (!child.expect_line("ready", kDeadline)) {
            child.kill(SIGKILL);
            (void)child.wait(kDeadline);
            ADD_FAILURE() << "actor_node " << name << " never became ready: " << child.describe();
        }
        return child;
    }
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
    test::NamespaceGuard guard_{"strx"};
    Watchdog watchdog_{kTestLimit, [names = guard_.names] {
                           for (const auto& o : test::all_objects(names)) {
                               ::unlink(shm::shm_path(o).c_str());
                           }
                       }};
};

StreamOptions blocking() {
    StreamOptions o;
    o.on_full = OnFull::block;
    return o;
}

// raise: the fifth message into the node's 4-slot ring raises StreamOverrun in THIS process (the
// sender detects the full ring); the node is unaffected: released, it reads the four, sees the
// end and returns normally, reporting overruns=1 from its mapping of the ring.
TEST_F(StreamXproc, RaisePolicyFailsTheSenderAndLeavesTheReceiverUnaffected) {
    test::Child node = spawn_node("node");
    ASSERT_TRUE(node.running());
    {
        Actor parent("parent", options());
        Portal portal = parent.connect("node", kDeadline);
        const Uid node_uid = portal.peer();
        bool overran = false;
        auto r = portal.open_context("gated_count", {}, [&](Context& ctx, const Payload&) {
            auto stream = ctx.open_stream();
            for (std::uint64_t i = 0; i < kNodeSlots; ++i) stream.send(Seq{i});
            try {
                stream.send(Seq{kNodeSlots});
            } catch (const StreamOverrun& e) {
                overran = true;
                EXPECT_EQ(e.sender(), parent.uid());
                EXPECT_EQ(e.receiver(), node_uid);
                EXPECT_EQ(e.cid(), ctx.cid());
                EXPECT_EQ(e.limit(), OverrunLimit::messages);
            }
            const shm::RingCounters c = stream.outbound_counters();
            EXPECT_EQ(c.sent, kNodeSlots);
            EXPECT_EQ(c.overruns, 1U);
            node.write("release\n");
        });
        EXPECT_TRUE(overran) << "a fifth message into a full 4-slot ring was accepted";
        ASSERT_TRUE(r.outcome.has_value());
        const std::string report = r.outcome.value().value<std::string>();
        EXPECT_THAT(report, HasSubstr("count=4 overruns=1 "));
        EXPECT_THAT(report, HasSubstr(" spilled=0 "));
    }
    quit(node);
}

// spill: 1000 messages to a receiver that allows overruns but reads nothing yet: 4 go into the
// ring, 996 into our spill; released, the node reads all in order while our drainer refills the
// ring; our close flushes before the Stop. The node reports the spill counters our process wrote.
TEST_F(StreamXproc, SpillPolicyDeliversEverythingInOrderAndCountersCrossProcesses) {
    constexpr std::uint64_t kItems = 1000;
    test::Child node = spawn_node("node");
    ASSERT_TRUE(node.running());
    {
        Actor parent("parent", options());
        Portal portal = parent.connect("node", kDeadline);
        shm::RingCounters ours;
        auto r = portal.open_context("gated_count_spill", {}, [&](Context& ctx, const Payload&) {
            auto stream = ctx.open_stream();
            for (std::uint64_t i = 0; i < kItems; ++i) stream.send(Seq{i});
            const shm::RingCounters before = stream.outbound_counters();
            EXPECT_EQ(before.sent, kNodeSlots);
            EXPECT_EQ(before.spilled, kItems - kNodeSlots);
            node.write("release\n");
            stream.close();  // flushes the spill, then sends the Stop
            // The close waits for the ring, not for the reader: wait until it read the last one.
            EXPECT_TRUE(test::wait_until(
                [&] {
                    ours = stream.outbound_counters();
                    return ours.received == kItems;
                },
                kDeadline));
        });
        ASSERT_TRUE(r.outcome.has_value());
        const std::string expected =
            "count=" + std::to_string(kItems) +
            " overruns=0 full=" + std::to_string(ours.full_events) +
            " sent=" + std::to_string(kItems) + " spilled=" + std::to_string(kItems - kNodeSlots) +
            " drained=" + std::to_string(kItems - kNodeSlots) + " discarded=0";
        EXPECT_EQ(r.outcome.value().value<std::string>(), expected);
        EXPECT_EQ(ours.sent, kItems);
        EXPECT_EQ(ours.received, kItems);
        EXPECT_EQ(ours.spill_drained, kItems - kNodeSlots);
        EXPECT_EQ(ours.spill_high_water, kItems - kNodeSlots);
    }
    quit(node);
}

// block: our fifth send waits until the other process reads; it returns only after we released
// the node (which happens once our sending thread sleeps in send()).
TEST_F(StreamXproc, BlockPolicyWaitsUntilTheOtherProcessReads) {
    test::Child node = spawn_node("node");
    ASSERT_TRUE(node.running());
    {
        Actor parent("parent", options());
        Portal portal = parent.connect("node", kDeadline);
        std::atomic<pid_t> sender_tid{0};
        std::atomic<bool> released{false};
        std::jthread releaser([&] {
            EXPECT_TRUE(test::wait_until(
                [&] {
                    const pid_t tid = sender_tid.load();
                    return tid != 0 && test::thread_state(tid) == 'S';
                },
                kDeadline));
            released = true;
            node.write("release\n");
        });
        bool returned_after_release = false;
        auto r = portal.open_context("gated_count", {}, [&](Context& ctx, const Payload&) {
            auto stream = ctx.open_stream(blocking());
            for (std::uint64_t i = 0; i < kNodeSlots; ++i) stream.send(Seq{i});
            sender_tid = test::current_tid();
            stream.send(Seq{kNodeSlots});  // blocks until the node reads
            returned_after_release = released.load();
            for (std::uint64_t i = kNodeSlots + 1; i < 100; ++i) stream.send(Seq{i});
            EXPECT_EQ(stream.outbound_counters().overruns, 0U);
        });
        releaser.join();
        EXPECT_TRUE(returned_after_release) << "the blocked send returned before the node read";
        ASSERT_TRUE(r.outcome.has_value());
        EXPECT_THAT(r.outcome.value().value<std::string>(), HasSubstr("count=100 overruns=0 "));
    }
    quit(node);
}

// DESIGN.md §4.7: a peer SIGKILLed while our send is blocked (on_full = block) wakes the send
// with PeerDied promptly; the error leaves the block unchanged.
TEST_F(StreamXproc, PeerKilledWhileOurSendIsBlockedRaisesPeerDied) {
    test::Child node = spawn_node("node");
    ASSERT_TRUE(node.running());
    Actor parent("parent", options());
    Portal portal = parent.connect("node", kDeadline);
    std::atomic<pid_t> sender_tid{0};
    std::atomic<std::int64_t> killed_at{0};
    std::jthread killer([&] {
        EXPECT_TRUE(test::wait_until(
            [&] {
                const pid_t tid = sender_tid.load();
                return tid != 0 && test::thread_state(tid) == 'S';
            },
            kDeadline));
        killed_at = Clock::now().time_since_epoch().count();
        node.kill(SIGKILL);
    });
    std::optional<Clock::time_point> woke;
    try {
        portal.open_context("gated_count", {}, [&](Context& ctx, const Payload&) {
            auto stream = ctx.open_stream(blocking());
            for (std::uint64_t i = 0; i < kNodeSlots; ++i) stream.send(Seq{i});
            sender_tid = test::current_tid();
            try {
                stream.send(Seq{kNodeSlots});
            } catch (...) {
                woke = Clock::now();
                throw;
            }
            ADD_FAILURE() << "the blocked send returned although nobody read";
        });
        ADD_FAILURE() << "open_context returned";
    } catch (const PeerDied& e) {
        EXPECT_THAT(e.what(), HasSubstr("node"));
    }
    killer.join();
    ASSERT_TRUE(woke.has_value()) << "the blocked send did not raise";
    EXPECT_LT(*woke - Clock::time_point(Clock::duration(killed_at.load())), kPrompt);
    const auto status = node.wait(kDeadline);
    EXPECT_TRUE(status.has_value() && WIFSIGNALED(*status) && WTERMSIG(*status) == SIGKILL)
        << node.describe();
    EXPECT_TRUE(test::wait_until([&] { return parent.links() == 0; }, kDeadline));
    EXPECT_EQ(parent.open_contexts(), 0U);
}

// A peer SIGKILLed while we spill to it: our context fails with PeerDied (try_send reports
// peer_error, the block raises PeerDied) and the spill is discarded, counted in spill_discarded.
TEST_F(StreamXproc, PeerKilledWhileWeSpillFailsTheContextAndDiscardsTheSpill) {
    constexpr std::uint64_t kItems = 200;
    test::Child node = spawn_node("node");
    ASSERT_TRUE(node.running());
    Actor parent("parent", options());
    Portal portal = parent.connect("node", kDeadline);
    shm::RingCounters c;
    SendStatus after_death = SendStatus::ok;
    try {
        portal.open_context("gated_count_spill", {}, [&](Context& ctx, const Payload&) {
            auto stream = ctx.open_stream();
            for (std::uint64_t i = 0; i < kItems; ++i) stream.send(Seq{i});
            EXPECT_EQ(stream.outbound_counters().spilled, kItems - kNodeSlots);
            const auto killed = Clock::now();
            node.kill(SIGKILL);
            EXPECT_TRUE(test::wait_until(
                [&] {
                    after_death = stream.try_send(Seq{kItems});
                    return after_death != SendStatus::spilled;
                },
                kDeadline));
            EXPECT_LT(Clock::now() - killed, kPrompt);
            EXPECT_TRUE(test::wait_until(
                [&] {
                    c = stream.outbound_counters();
                    return c.spill_depth() == 0;
                },
                kDeadline));
            stream.send(Seq{kItems});  // raises the context's error
            ADD_FAILURE() << "send() after the peer died returned";
        });
        ADD_FAILURE() << "open_context returned";
    } catch (const PeerDied& e) {
        EXPECT_THAT(e.what(), HasSubstr("node"));
    }
    EXPECT_EQ(after_death, SendStatus::peer_error);
    EXPECT_EQ(c.sent, kNodeSlots);
    EXPECT_EQ(c.spill_drained, 0U);
    EXPECT_GE(c.spilled, kItems - kNodeSlots);
    EXPECT_EQ(c.spill_discarded, c.spilled) << "the spill was not discarded";
    const auto status = node.wait(kDeadline);
    EXPECT_TRUE(status.has_value() && WIFSIGNALED(*status)) << node.describe();
    EXPECT_TRUE(test::wait_until([&] { return parent.links() == 0; }, kDeadline));
    EXPECT_EQ(parent.open_contexts(), 0U);
}

}  // namespace
}  // namespace shmctx
