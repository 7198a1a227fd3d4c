// The actor-cancel mechanics of issue #6 with several actors in one process (spec §3.6, DESIGN.md
// §4.4): Portal::cancel_actor() and Actor::cancel(), who is named canceller, the ack's ORDER
// after every ctxc, the refusal of later Starts, and the cases where there is nothing to ack.
// The spec §5 scenarios built on them are in cancel_test.cpp and cancel_xproc_test.cpp.
//
// Every test runs in its own namespace under a watchdog and checks that nothing is left in
// /dev/shm; waits are on conditions with deadlines, never sleeps.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <exception>
#include <optional>
#include <thread>
#include <vector>

#include "context_support.hpp"
#include "process.hpp"
#include "shmctx/actor.hpp"
#include "shmctx/context.hpp"
#include "shmctx/errors.hpp"
#include "until_cancelled.hpp"

namespace shmctx {

[[maybe_unused]] static void PrintTo(const Uid& uid, std::ostream* os) { *os << uid.to_string(); }

namespace {

using namespace std::chrono_literals;

constexpr auto kDeadline = 20s;
constexpr auto kBlockForever = 60s;

class ActorCancelTest : public test::ActorTest {
protected:
    ActorCancelTest() : ActorTest("acancel", 90s) {}
};

/// An endpoint that starts and then blocks until cancelled, counting the tasks that are parked.
Endpoint parked(std::atomic<int>& parked_now) {
    return [&parked_now](Context& ctx, const Payload&) -> Payload {
        ctx.started();
        ++parked_now;
        test::until_cancelled(ctx, kBlockForever);
        return {};
    };
}

/// The ContextCancelled in `e` (fails the test if it is something else).
const ContextCancelled* as_ctxc(const std::exception_ptr& e) {
    try {
        std::rethrow_exception(e);
    } catch (const ContextCancelled& c) {
        return &c;
    } catch (...) {
        ADD_FAILURE() << "not a ContextCancelled";
    }
    return nullptr;
}

// spec §3.6: every task of the cancelled actor ends with a ctxc naming the requester; the
// requester did not call ctx.cancel(), so it is raised; the ack follows all of them (ORDER): when
// cancel_actor() returns, every one of them is recorded already.
TEST_F(ActorCancelTest, CancelActorEndsEveryTaskWithTheRequesterAsCancellerBeforeItsAck) {
    Actor root("root", options());
    Actor target("target", options());
    std::atomic<int> parked_now{0};
    target.expose("park", parked(parked_now));
    Portal portal = root.connect("target");

    constexpr std::size_t kContexts = 3;
    std::vector<std::optional<Context>> handles(kContexts);
    std::vector<std::exception_ptr> raised(kContexts);
    std::atomic<int> entered{0};
    std::vector<std::thread> openers;
    for (std::size_t i = 0; i < kContexts; ++i) {
        openers.emplace_back([&, i] {
            try {
                portal.open_context("park", {}, [&](Context& ctx, const Payload&) {
                    handles[i].emplace(ctx.handle());
                    ++entered;
                    (void)ctx.wait_for_result();
                });
            } catch (...) {
                raised[i] = std::current_exception();
            }
        });
    }
    ASSERT_TRUE(test::wait_until(
        [&] { return entered.load() == int{kContexts} && parked_now.load() == int{kContexts}; },
        kDeadline));

    EXPECT_FALSE(portal.cancel_called());
    ASSERT_TRUE(portal.cancel_actor(kDeadline));
    EXPECT_TRUE(portal.cancel_called());
    // ORDER: each ctxc was written before the ack on the same ring.
    for (auto& h : handles) EXPECT_NE(h->remote_error(), nullptr) << "ack before its ctxc";
    for (auto& t : openers) t.join();

    for (std::size_t i = 0; i < kContexts; ++i) {
        ASSERT_NE(raised[i], nullptr) << "a ctxc we did not request must be raised";
        const ContextCancelled* ctxc = as_ctxc(raised[i]);
        ASSERT_NE(ctxc, nullptr);
        EXPECT_EQ(ctxc->canceller(), root.uid());
        EXPECT_EQ(ctxc->src_uid(), target.uid());
        EXPECT_EQ(raised[i], handles[i]->remote_error()) << "not the recorded object";
        EXPECT_FALSE(handles[i]->cancel_called());
        EXPECT_FALSE(handles[i]->cancel_acked());
        EXPECT_EQ(handles[i]->canceller(), root.uid());  // spec §3.3 step 2: ours
    }
    EXPECT_TRUE(target.cancel_called());
    EXPECT_EQ(target.cancel_caller(), root.uid());
    EXPECT_TRUE(target.wait_cancelled(kDeadline));
    EXPECT_FALSE(root.cancel_called());
    EXPECT_TRUE(test::wait_until([&] { return target.open_contexts() == 0; }, kDeadline));
}

// A cancelled actor starts nothing: a later Start is refused at entry with a ContextCancelled
// naming the actor's canceller (itself, for Actor::cancel()).
TEST_F(ActorCancelTest, StartAfterActorCancelIsRefusedWithContextCancelledAtEntry) {
    Actor root("root", options());
    Actor target("target", options());
    std::atomic<bool> ran{false};
    target.expose("work", [&](Context& ctx, const Payload&) -> Payload {
        ran = true;
        ctx.started();
        return {};
    });
    Portal portal = root.connect("target");
    target.cancel();
    EXPECT_TRUE(target.cancel_called());
    EXPECT_EQ(target.cancel_caller(), target.uid());
    ASSERT_TRUE(target.wait_cancelled(kDeadline));
    try {
        portal.open_context("work", {},
                            [](Context&, const Payload&) { ADD_FAILURE() << "the body ran"; });
        ADD_FAILURE() << "open_context returned";
    } catch (const ContextCancelled& e) {
        EXPECT_EQ(e.canceller(), target.uid());
        EXPECT_EQ(e.src_uid(), target.uid());
    }
    EXPECT_FALSE(ran.load());
    // A second cancel_actor() is acked at once: every task has ended already.
    EXPECT_TRUE(portal.cancel_actor(kDeadline));
    EXPECT_EQ(target.cancel_caller(), target.uid()) << "the first requester is kept";
}

// Actor::cancel() reaches parent-side bodies too (an enclosing cancel): the body's open_context
// cancels its remote task, whose ctxc names our actor (the cascade), and a later open_context of
// the cancelled actor raises Cancelled before sending anything.
TEST_F(ActorCancelTest, ActorCancelReachesParentBodiesWhichCancelTheirRemoteTasks) {
    Actor root("root", options());
    Actor child("child", options());
    std::atomic<int> parked_now{0};
    std::atomic<bool> child_saw_ctxc_canceller_root{false};
    child.expose("park", [&](Context& ctx, const Payload&) -> Payload {
        ctx.started();
        ++parked_now;
        try {
            test::until_cancelled(ctx, kBlockForever);
        } catch (const Cancelled&) {
            child_saw_ctxc_canceller_root = ctx.canceller() == std::optional<Uid>(root.uid());
            throw;
        }
        return {};
    });
    Portal portal = root.connect("child");
    std::optional<Context> handle;
    std::atomic<bool> in_body{false};  // [test] handle is written before it (release/acquire)
    std::exception_ptr raised;
    std::thread opener([&] {
        try {
            portal.open_context("park", {}, [&](Context& ctx, const Payload&) {
                handle.emplace(ctx.handle());
                in_body.store(true, std::memory_order::release);
                test::until_cancelled(ctx, kBlockForever);
            });
        } catch (...) {
            raised = std::current_exception();
        }
    });
    // Cancel once the body runs: a cancel while open_context still waits for started() raises
    // Cancelled at entry instead (the waits of a thread outside every scope observe the actor).
    ASSERT_TRUE(test::wait_until([&] { return parked_now.load() == 1; }, kDeadline));
    ASSERT_TRUE(
        test::wait_until([&] { return in_body.load(std::memory_order::acquire); }, kDeadline));
    root.cancel();
    opener.join();
    ASSERT_NE(raised, nullptr);
    EXPECT_THROW(std::rethrow_exception(raised), Cancelled);
    ASSERT_TRUE(handle.has_value());
    EXPECT_TRUE(handle->cancel_called()) << "the body's exit must cancel the remote task";
    EXPECT_TRUE(handle->cancel_acked());
    EXPECT_TRUE(child_saw_ctxc_canceller_root.load());
    const ContextCancelled* ctxc = as_ctxc(handle->remote_error());
    ASSERT_NE(ctxc, nullptr);
    EXPECT_EQ(ctxc->canceller(), root.uid());
    EXPECT_TRUE(root.wait_cancelled(kDeadline));
    EXPECT_THROW(portal.open_context("park", {}, [](Context&, const Payload&) { ADD_FAILURE(); }),
                 Cancelled);
    EXPECT_EQ(parked_now.load(), 1) << "a Start was sent after the actor was cancelled";
}

// A third actor's cancel_actor(): our context with the cancelled actor raises a ctxc naming the
// third actor as canceller and the cancelled actor as our ctx's canceller (the src, spec §3.3).
TEST_F(ActorCancelTest, ThirdPartyCancelActorIsRaisedNamingTheThirdParty) {
    Actor root("root", options());
    Actor target("target", options());
    Actor third("third", options());
    std::atomic<int> parked_now{0};
    target.expose("park", parked(parked_now));
    Portal portal = root.connect("target");
    std::optional<Context> handle;
    try {
        portal.open_context("park", {}, [&](Context& ctx, const Payload&) {
            handle.emplace(ctx.handle());
            ASSERT_TRUE(test::wait_until([&] { return parked_now.load() == 1; }, kDeadline));
            EXPECT_TRUE(third.connect("target").cancel_actor(kDeadline));
            (void)ctx.wait_for_result();
        });
        ADD_FAILURE() << "open_context returned";
    } catch (const ContextCancelled& e) {
        EXPECT_EQ(e.canceller(), third.uid());
        EXPECT_EQ(e.src_uid(), target.uid());
    }
    ASSERT_TRUE(handle.has_value());
    EXPECT_EQ(handle->canceller(), target.uid());
    EXPECT_FALSE(handle->cancel_called());
    EXPECT_FALSE(handle->cancel_acked());
    EXPECT_EQ(target.cancel_caller(), third.uid());
}

// Nothing to wait for: a link that is gone answers false at once, without waiting the deadline.
TEST_F(ActorCancelTest, CancelActorOnALostLinkReturnsFalseAtOnce) {
    Actor root("root", options());
    std::optional<Actor> target;
    target.emplace("target", options());
    Portal portal = root.connect("target");
    target.reset();  // an orderly shutdown closes the link
    ASSERT_TRUE(test::wait_until([&] { return root.links() == 0; }, kDeadline));
    const auto start = Clock::now();
    EXPECT_FALSE(portal.cancel_actor(kDeadline));
    EXPECT_LT(Clock::now() - start, kDeadline);
}

// The ack can only come from the actor asked: an actor that never answers (its endpoint ignores
// cancellation) leaves cancel_actor() false at its deadline, and the caller is not stuck.
TEST_F(ActorCancelTest, CancelActorTimesOutWhenATaskIgnoresCancellation) {
    Actor root("root", options());
    Actor target("target", options());
    std::atomic<bool> release{false};
    std::atomic<bool> running{false};
    target.expose("stubborn", [&](Context& ctx, const Payload&) -> Payload {
        ctx.started();
        running = true;
        // Never checkpoints: the cancel cannot end it until the test lets it go.
        (void)test::wait_until([&] { return release.load(); }, kBlockForever);
        return {};
    });
    Portal portal = root.connect("target");
    std::exception_ptr raised;
    std::thread opener([&] {
        try {
            portal.open_context("stubborn", {},
                                [&](Context& ctx, const Payload&) { (void)ctx.wait_for_result(); });
        } catch (...) {
            raised = std::current_exception();
        }
    });
    ASSERT_TRUE(test::wait_until([&] { return running.load(); }, kDeadline));
    EXPECT_FALSE(portal.cancel_actor(200ms));
    EXPECT_FALSE(target.wait_cancelled(10ms));
    release = true;
    opener.join();
    // The task returned (a real value beats the cancel it never observed: spec §3.2).
    EXPECT_EQ(raised, nullptr);
    EXPECT_TRUE(target.wait_cancelled(kDeadline));
}

// DESIGN.md §4.8 (tractor means it, spec §6.7): after our own cancel(), an overrun of our own
// sends (the peer stopped reading because we cancelled it) is absorbed at the open_context exit:
// recorded as local_error, and the outcome is our absorbed cancel.
TEST_F(ActorCancelTest, OwnOverrunAfterOurOwnCancelIsAbsorbedAtTheExit) {
    Actor root("root", options());
    Actor child("child", options());
    std::atomic<bool> child_cancelled{false};
    std::atomic<bool> release_child{false};
    child.expose("reader", [&](Context& ctx, const Payload&) -> Payload {
        ctx.started();
        auto stream = ctx.open_stream();
        try {
            for (;;) (void)stream.receive();
        } catch (const Cancelled&) {
            // Stops reading while it cleans up, so the parent's sends overrun it meanwhile.
            child_cancelled = true;
            (void)test::wait_until([&] { return release_child.load(); }, kBlockForever);
            throw;
        }
    });
    Portal portal = root.connect("child");
    std::optional<Context> handle;
    std::thread canceller;
    std::thread releaser;
    std::atomic<bool> overrun_raised{false};
    std::optional<Outcome> outcome;
    std::exception_ptr raised;
    try {
        outcome =
            portal
                .open_context(
                    "reader", {},
                    [&](Context& ctx, const Payload&) {
                        handle.emplace(ctx.handle());
                        auto stream = ctx.open_stream();
                        canceller =
                            std::thread([c = ctx.handle()]() mutable { c.cancel(kDeadline); });
                        ASSERT_TRUE(
                            test::wait_until([&] { return child_cancelled.load(); }, kDeadline));
                        releaser = std::thread([&] {
                            (void)test::wait_until([&] { return overrun_raised.load(); },
                                                   kDeadline);
                            release_child = true;
                        });
                        try {
                            for (;;) stream.send("tick");
                        } catch (const StreamOverrun& e) {
                            EXPECT_EQ(e.sender(), root.uid());
                            overrun_raised = true;
                            throw;
                        }
                    },
                    OpenOptions{})
                .outcome;
    } catch (...) {
        raised = std::current_exception();
    }
    if (canceller.joinable()) canceller.join();
    if (releaser.joinable()) releaser.join();
    ASSERT_EQ(raised, nullptr) << "the overrun escaped open_context";
    ASSERT_TRUE(outcome.has_value());
    EXPECT_TRUE(outcome->is_absorbed_cancel());
    ASSERT_TRUE(handle.has_value());
    EXPECT_TRUE(handle->cancel_called());
    EXPECT_TRUE(handle->cancel_acked());
    try {
        std::rethrow_exception(handle->local_error());
    } catch (const StreamOverrun& e) {
        EXPECT_EQ(e.cid(), handle->cid());
    } catch (...) {
        ADD_FAILURE() << "local_error is not the overrun";
    }
}

// A task blocked in send() at its spill cap (the receiver allows overruns, the sender's
// on_full = block) is woken by a cancel request like one blocked on a full ring: its wait is
// on the spill's own waiter mutex, and the request must reach it without that wait reading
// control records itself (a record for this context dispatched there would take the mutex
// again).
TEST_F(ActorCancelTest, CancelReachesASendBlockedAtTheSpillCap) {
    Actor root("root", options());
    Actor child("child", options());
    constexpr std::uint32_t kRing = 8;
    constexpr std::size_t kSpillCap = 4;
    std::atomic<std::size_t> sent{0};
    std::atomic<bool> blocking{false};
    std::atomic<bool> child_cancelled{false};
    child.expose("flood", [&](Context& ctx, const Payload&) -> Payload {
        ctx.started();
        StreamOptions so;
        so.on_full = OnFull::block;
        so.spill_cap_msgs = kSpillCap;
        auto stream = ctx.open_stream(so);
        try {
            for (;;) {
                if (sent.load() == kRing + kSpillCap) blocking = true;
                stream.send("tick");
                ++sent;
            }
        } catch (const Cancelled&) {
            child_cancelled = true;
            throw;
        }
    });
    Portal portal = root.connect("child");
    OpenOptions oo;
    oo.msg_buffer_size = kRing;
    oo.allow_overruns = true;
    std::optional<Context> handle;
    const auto r = portal.open_context(
        "flood", {},
        [&](Context& ctx, const Payload&) {
            handle.emplace(ctx.handle());
            auto stream = ctx.open_stream();  // never read: the ring fills, then the spill
            ASSERT_TRUE(test::wait_until([&] { return blocking.load(); }, kDeadline))
                << "sent " << sent.load();
            ctx.cancel(kDeadline);
        },
        oo);
    EXPECT_TRUE(r.outcome.is_absorbed_cancel());
    ASSERT_TRUE(handle.has_value());
    EXPECT_TRUE(handle->cancel_acked());
    EXPECT_TRUE(child_cancelled.load());
    EXPECT_EQ(sent.load(), kRing + kSpillCap);
}

// Actor::cancel() reaches calls blocked on a thread outside every cancel scope (the test's
// main thread here): an open_context waiting for started() and a Portal::run waiting for its
// result both raise Cancelled, and the remote tasks are cancelled (found by the semantics
// review: those waits used the calling thread's scope only, which such a thread has none of).
TEST_F(ActorCancelTest, ActorCancelReachesCallsBlockedOutsideEveryScope) {
    for (const bool use_run : {false, true}) {
        SCOPED_TRACE(use_run ? "Portal::run" : "open_context");
        Actor parent(use_run ? "parent_run" : "parent_ctx", options());
        Actor child(use_run ? "child_run" : "child_ctx", options());
        std::atomic<int> waiting{0};
        child.expose("never_starts", [&waiting](Context& ctx, const Payload&) -> Payload {
            ++waiting;
            test::until_cancelled(ctx, kBlockForever);  // no started(), no result
            return {};
        });
        Portal portal = parent.connect(child.uid().name, 20s);
        std::thread canceller([&] {
            EXPECT_TRUE(test::wait_until([&] { return waiting.load() == 1; }, 20s));
            parent.cancel();
        });
        bool cancelled = false;
        try {
            if (use_run) {
                (void)portal.run("never_starts");
            } else {
                (void)portal.open_context("never_starts", {},
                                          [](Context&, const Payload&) { ADD_FAILURE(); });
            }
        } catch (const Cancelled&) {
            cancelled = true;
        }
        canceller.join();
        EXPECT_TRUE(cancelled);
        // The remote task did not run on behind us: it was cancelled on our way out.
        EXPECT_TRUE(test::wait_until([&] { return child.open_contexts() == 0; }, 20s));
    }
}

}  // namespace
}  // namespace shmctx
