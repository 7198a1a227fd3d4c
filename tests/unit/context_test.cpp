// Acceptance tests of the actor runtime (issue 4) with several actors in one process: the
// Context lifecycle of tractor-context-spec.md §2 and its exit algorithm §3.5, error boxing and
// relaying (§3.8), the runtime's resource bounds (threads, contexts, rings, /dev/shm objects),
// and what the contexts stand on: names, connect() and the link set-up (DESIGN.md §2, §3).
//
// Spec §5 scenarios ported here: #1, #2 (started() misuse), #23-24 (the child closes its stream
// and returns), #61 (a context with one's own actor), #73-76 (simple RPC over a stream), #115
// (unknown function), and the two-hop relay of #65-68. DESIGN.md §4 wins where the spec differs:
// a tractor RuntimeError for started() misuse is our InvalidOperation, and re-opening a stream is a
// ClosedResourceError.
//
// Every test runs in its own namespace, asserts that its actors left no /dev/shm object behind, and
// runs under a watchdog: a hang anywhere aborts the binary with the test's name instead of stalling
// until the ctest timeout. Waits are on conditions with deadlines (test::wait_until), never sleeps.
#include "shmctx/context.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <functional>
#include <latch>
#include <memory>
#include <mutex>
#include <optional>
#include <ostream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>
#include <vector>

#include "context_support.hpp"
#include "error_as.hpp"
#include "namespace_guard.hpp"
#include "process.hpp"
#include "shmctx/actor.hpp"
#include "shmctx/errors.hpp"
#include "shmctx/payload.hpp"
#include "until_cancelled.hpp"

namespace shmctx {

// gtest printers (found by ADL, hence outside the unnamed namespace; internal linkage).
[[maybe_unused]] static void PrintTo(const Uid& uid, std::ostream* os) { *os << uid.to_string(); }
[[maybe_unused]] static void PrintTo(State s, std::ostream* os) { *os << to_string(s); }
[[maybe_unused]] static void PrintTo(Side s, std::ostream* os) { *os << to_string(s); }

namespace {

using namespace std::chrono_literals;
using test::body_must_not_run;
using test::current_tid;
using test::expect_sequential_contexts_leak_nothing;
using test::thread_state;
using test::Watchdog;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

/// Bound of every wait on a condition: generous, since sanitizer builds run many times slower.
constexpr auto kDeadline = 20s;
/// A whole test must finish within this, else the watchdog aborts the binary.
constexpr auto kTestLimit = 90s;
/// How long a child "blocks": far beyond kDeadline, so only a cancellation can end the wait early.
constexpr auto kBlockForever = 60s;

class ContextTest : public test::ActorTest {
protected:
    ContextTest() : ActorTest("ctx", kTestLimit) {}
};

// ---------------------------------------------------------------------------------------------
// Links (DESIGN.md §3 "Link")

// Fresh actor pairs link on the first connect(), every time: the link set-up has no window in
// which the peer's half-built arena is taken for a corrupt one.
TEST_F(ContextTest, FreshActorPairsLinkEveryTime) {
    const std::size_t rounds = test::scaled(200, 20);
    std::size_t failures = 0;
    std::string first_failure;
    for (std::size_t i = 0; i < rounds; ++i) {
        Actor parent("parent", options());
        Actor child("child", options());
        child.expose("add_one", [](Context&, const Payload& args) {
            return Payload::value(args.value<std::int64_t>() + 1);
        });
        try {
            Portal portal = parent.connect("child", kDeadline);
            const auto v = static_cast<std::int64_t>(i);
            EXPECT_EQ(portal.run("add_one", Payload::value(v)).value<std::int64_t>(), v + 1);
        } catch (const Error& e) {
            if (failures++ == 0) first_failure = e.what();
        }
    }
    EXPECT_EQ(failures, 0U) << "of " << rounds << " rounds; first: " << first_failure;
}

// connect() to a name nobody holds waits out its deadline, then names actor and namespace.
TEST_F(ContextTest, ConnectToAnAbsentActorRaisesActorNotFoundNamingIt) {
    Actor parent("parent", options());
    constexpr auto kWait = 200ms;
    const auto start = Clock::now();
    try {
        (void)parent.connect("nobody", kWait);
        ADD_FAILURE() << "connect to an absent actor returned";
    } catch (const ActorNotFound& e) {
        EXPECT_THAT(e.what(), HasSubstr("nobody"));
        EXPECT_THAT(e.what(), HasSubstr(names().ns()));
    }
    const auto elapsed = Clock::now() - start;
    EXPECT_GE(elapsed, kWait);
    EXPECT_LT(elapsed, kDeadline);
    EXPECT_EQ(parent.links(), 0U);
}

// A name is held by one live actor at a time, and only valid names can be claimed.
TEST_F(ContextTest, ActorNamesAreClaimedOnceAndValidated) {
    {
        Actor first("solo", options());
        EXPECT_EQ(first.uid().name, "solo");
        EXPECT_THROW(Actor("solo", options()), NameTaken);
        EXPECT_THROW(Actor("not a name!", options()), InvalidName);
        EXPECT_THROW(Actor("", options()), InvalidName);
        EXPECT_THROW(Actor(std::string(65, 'n'), options()), InvalidName);
    }
    Actor again("solo", options());  // free again once its holder is gone
    Actor other("solo-2", options());
    EXPECT_FALSE(again.uid() == other.uid());
}

// Two actors connecting to each other at the same moment converge on one link, usable both ways.
TEST_F(ContextTest, SimultaneousConnectsConvergeOnOneLink) {
    const std::size_t rounds = test::scaled(50, 10);
    for (std::size_t i = 0; i < rounds; ++i) {
        Actor a("a", options());
        Actor b("b", options());
        a.expose("who", [&a](Context&, const Payload&) { return Payload::value(a.uid().name); });
        b.expose("who", [&b](Context&, const Payload&) { return Payload::value(b.uid().name); });
        std::atomic<bool> go{false};
        std::optional<Portal> b_to_a;
        std::exception_ptr b_error;
        std::jthread other([&] {
            (void)test::wait_until([&] { return go.load(); }, kDeadline);
            try {
                b_to_a = b.connect("a", kDeadline);
            } catch (...) {
                b_error = std::current_exception();
            }
        });
        go = true;
        std::optional<Portal> a_to_b;
        try {
            a_to_b = a.connect("b", kDeadline);
        } catch (const Error& e) {
            ADD_FAILURE() << "round " << i << ": a.connect: " << e.what();
        }
        other.join();
        if (b_error != nullptr) {
            try {
                std::rethrow_exception(b_error);
            } catch (const std::exception& e) {
                ADD_FAILURE() << "round " << i << ": b.connect: " << e.what();
            }
        }
        ASSERT_TRUE(a_to_b.has_value() && b_to_a.has_value()) << "round " << i;
        EXPECT_EQ(a_to_b->run("who").value<std::string>(), "b");
        EXPECT_EQ(b_to_a->run("who").value<std::string>(), "a");
        EXPECT_EQ(a.links(), 1U);
        EXPECT_EQ(b.links(), 1U);
        EXPECT_EQ(names().list("link").size(), 2U) << "one arena per direction";
    }
}

// ---------------------------------------------------------------------------------------------
// started() rules (spec §2.3, §5 #1, #2)

// Spec §5 #1: the child calls started() twice; the parent's body sleeps and is interrupted, and
// open_context raises the boxed InvalidOperation (tractor: RAE[RuntimeError]).
TEST_F(ContextTest, StartedTwiceInterruptsTheParentsSleepWithBoxedInvalidOperation) {
    Actor parent("parent", options());
    Actor child("child", options());
    std::atomic<bool> parent_sleeping{false};
    std::atomic<bool> child_saw_invalid_operation{false};
    child.expose("twice", [&](Context& ctx, const Payload&) -> Payload {
        ctx.started();
        // Deterministic interleaving: fail only once the parent's body is in its sleep.
        EXPECT_TRUE(test::wait_until([&] { return parent_sleeping.load(); }, kDeadline));
        try {
            ctx.started();
        } catch (const InvalidOperation& e) {
            child_saw_invalid_operation = true;
            throw;
        }
        return Payload::value("second started() returned");
    });
    Portal portal = parent.connect("child");

    std::atomic<bool> sleep_interrupted{false};
    const auto start = Clock::now();
    try {
        portal.open_context("twice", {}, [&](Context& ctx, const Payload& first) {
            EXPECT_TRUE(first.empty());
            parent_sleeping = true;
            try {
                test::until_cancelled(ctx, kBlockForever / 2);
            } catch (const Cancelled&) {
                sleep_interrupted = true;
                throw;
            }
        });
        ADD_FAILURE() << "open_context returned";
    } catch (const RemoteActorError& e) {
        EXPECT_TRUE(e.boxed_is<InvalidOperation>()) << e.boxed_type_name() << ": " << e.what();
        EXPECT_TRUE(e.src_is<InvalidOperation>()) << e.src_type_name();
        EXPECT_EQ(e.src_uid(), child.uid());
        EXPECT_FALSE(e.is_inception());
    }
    EXPECT_TRUE(sleep_interrupted) << "the body's sleep was not cancelled by the remote error";
    EXPECT_TRUE(child_saw_invalid_operation);
    EXPECT_LT(Clock::now() - start, kDeadline);
}

// Spec §5 #2: a child opening its stream before started() fails before Started; the parent's
// open_context raises the boxed error at entry and its body never runs.
TEST_F(ContextTest, StreamOpenedBeforeStartedRaisesAtEntry) {
    Actor parent("parent", options());
    Actor child("child", options());
    std::atomic<bool> child_saw_invalid_operation{false};
    child.expose("eager", [&](Context& ctx, const Payload&) -> Payload {
        EXPECT_EQ(ctx.state(), State::pre_started);
        try {
            auto stream = ctx.open_stream();
        } catch (const InvalidOperation& e) {
            EXPECT_THAT(e.what(), HasSubstr("Invalid Operation"));
            child_saw_invalid_operation = true;
            throw;
        }
        return Payload{};
    });
    Portal portal = parent.connect("child");
    std::atomic<bool> body_ran{false};
    try {
        portal.open_context("eager", {}, body_must_not_run(body_ran));
        ADD_FAILURE() << "open_context returned";
    } catch (const RemoteActorError& e) {
        EXPECT_TRUE(e.boxed_is<InvalidOperation>()) << e.boxed_type_name() << ": " << e.what();
        EXPECT_EQ(e.src_uid(), child.uid());
    }
    EXPECT_FALSE(body_ran) << "an error before started() must be raised at entry";
    EXPECT_TRUE(child_saw_invalid_operation);
}

// Spec §2.3: started() is the child's; on the parent side it is an InvalidOperation (and the
// context carries on). The states of spec §2.6 on both sides, and a handle() after the block.
TEST_F(ContextTest, StartedOnTheParentIsInvalidAndStatesFollowTheLifecycle) {
    Actor parent("parent", options());
    Actor child("child", options());
    std::mutex m;
    std::vector<State> child_states;  // guarded by m
    std::optional<Uid> child_saw_peer;
    std::optional<Side> child_saw_side;
    std::atomic<bool> parent_checked{false};
    child.expose("states", [&](Context& ctx, const Payload& args) -> Payload {
        auto note = [&] {
            std::lock_guard lock(m);
            child_states.push_back(ctx.state());
        };
        {
            std::lock_guard lock(m);
            child_saw_peer = ctx.peer();
            child_saw_side = ctx.side();
        }
        note();  // pre_started
        ctx.started(args);
        note();  // started
        auto stream = ctx.open_stream();
        note();                    // streaming
        stream.send("streaming");  // the parent closes only after this: no race with its Stop
        std::int64_t received = 0;
        for (const auto& msg : stream) received += msg.value<std::int64_t>();
        note();  // streaming_finished: the parent's Stop ended the stream
        // Return only once the parent looked at its state after close(): with the Return
        // recorded it would already be result_returned.
        EXPECT_TRUE(test::wait_until([&] { return parent_checked.load(); }, kDeadline));
        return Payload::value(received);
    });
    Portal portal = parent.connect("child");
    EXPECT_EQ(portal.peer(), child.uid());
    EXPECT_EQ(portal.self(), parent.uid());

    std::optional<Context> handle;
    auto r =
        portal.open_context("states", Payload::value(5), [&](Context& ctx, const Payload& first) {
            handle.emplace(ctx.handle());
            EXPECT_EQ(first.value<std::int64_t>(), 5);
            EXPECT_EQ(ctx.side(), Side::parent);
            EXPECT_EQ(ctx.peer(), child.uid());
            EXPECT_EQ(ctx.self(), parent.uid());
            EXPECT_FALSE(ctx.cid().is_nil());
            EXPECT_EQ(ctx.state(), State::started);
            try {
                ctx.started(Payload::value(1));
                ADD_FAILURE() << "started() on the parent side did not raise";
            } catch (const InvalidOperation& e) {
                EXPECT_THAT(e.what(), HasSubstr("Invalid Operation"));
            }
            EXPECT_EQ(ctx.state(), State::started) << "the refused started() changed the state";
            auto stream = ctx.open_stream();
            EXPECT_EQ(ctx.state(), State::streaming);
            EXPECT_EQ(stream.receive().text(), "streaming");
            EXPECT_EQ(ctx.state(), State::streaming);
            for (std::int64_t i = 1; i <= 3; ++i) stream.send(Payload::value(i));
            stream.close();
            EXPECT_TRUE(stream.closed());
            EXPECT_EQ(ctx.state(), State::streaming_finished);
            parent_checked = true;
            return std::string("body done");
        });

    ASSERT_TRUE(r.value.has_value());
    EXPECT_EQ(*r.value, "body done");
    ASSERT_TRUE(r.outcome.has_value());
    EXPECT_EQ(r.outcome.value().value<std::int64_t>(), 6);
    EXPECT_FALSE(r.outcome.is_absorbed_cancel());

    // The handle outlives the block and reports the final state and the same outcome.
    ASSERT_TRUE(handle.has_value());
    EXPECT_EQ(handle->state(), State::result_returned);
    EXPECT_TRUE(handle->has_outcome());
    EXPECT_EQ(handle->outcome().value().value<std::int64_t>(), 6);
    EXPECT_EQ(handle->wait_for_result().value().value<std::int64_t>(), 6);
    EXPECT_EQ(handle->remote_error(), nullptr);
    EXPECT_EQ(handle->local_error(), nullptr);
    EXPECT_EQ(handle->maybe_error(), nullptr);
    EXPECT_EQ(handle->remote_error_info(), nullptr);
    EXPECT_FALSE(handle->cancel_called());
    EXPECT_FALSE(handle->cancelled());

    std::lock_guard lock(m);
    EXPECT_EQ(child_states, (std::vector<State>{State::pre_started, State::started,
                                                State::streaming, State::streaming_finished}));
    ASSERT_TRUE(child_saw_peer.has_value());
    EXPECT_EQ(*child_saw_peer, parent.uid());
    EXPECT_EQ(child_saw_side, Side::child);
}

TEST(ContextStates, NamesAreTractors) {
    EXPECT_EQ(to_string(State::pre_started), "pre-started");
    EXPECT_EQ(to_string(State::syncing_to_child), "syncing-to-child");
    EXPECT_EQ(to_string(State::started), "started");
    EXPECT_EQ(to_string(State::streaming), "streaming");
    EXPECT_EQ(to_string(State::streaming_finished), "streaming-finished");
    EXPECT_EQ(to_string(State::result_returned), "result-returned");
    EXPECT_EQ(to_string(State::self_cancelled), "self-cancelled");
    EXPECT_EQ(to_string(State::peer_cancelled), "peer-cancelled");
    EXPECT_EQ(to_string(State::actor_cancelled), "actor-cancelled");
    EXPECT_EQ(to_string(State::errored), "errored");
}

// ---------------------------------------------------------------------------------------------
// Streams in the simple case (spec §2.4, §5 #23-24, #73-76)

// Spec §5 #23-24: the child opens and at once closes its stream, then returns None. The parent's
// iteration yields nothing, the next receive() raises EndOfChannel, a second open_stream()
// raises ClosedResourceError, and the block exits cleanly with the child's value.
class ChildClosesStream : public ContextTest, public ::testing::WithParamInterface<bool> {};

TEST_P(ChildClosesStream, ParentIterationEndsEmptyAndReopeningIsRefused) {
    const bool parent_sends_first = GetParam();
    Actor parent("parent", options());
    Actor child("child", options());
    child.expose("close_and_return", [](Context& ctx, const Payload&) -> Payload {
        ctx.started();
        {
            auto stream = ctx.open_stream();
            stream.close();
        }
        return Payload{};
    });
    Portal portal = parent.connect("child");

    std::size_t iterated = 0;
    bool end_of_channel = false;
    bool reopen_refused = false;
    auto r = portal.open_context("close_and_return", {}, [&](Context& ctx, const Payload& sent) {
        EXPECT_TRUE(sent.empty()) << "started() without a value hands over the empty payload";
        auto stream = ctx.open_stream();
        if (parent_sends_first) {
            // The child may already have stopped: then the send reports it (DESIGN.md §4.8).
            const SendStatus st = stream.try_send("yo");
            EXPECT_TRUE(st == SendStatus::ok || st == SendStatus::peer_stopped) << to_string(st);
        }
        for (const auto& msg : stream) {
            ADD_FAILURE() << "unexpected message " << msg.text();
            ++iterated;
        }
        try {
            (void)stream.receive();
        } catch (const EndOfChannel&) {
            end_of_channel = true;
        }
        try {
            auto again = ctx.open_stream();
        } catch (const ClosedResourceError&) {
            reopen_refused = true;
        }
    });
    EXPECT_EQ(iterated, 0U);
    EXPECT_TRUE(end_of_channel) << "receive() after the end did not raise EndOfChannel";
    EXPECT_TRUE(reopen_refused) << "a second open_stream() did not raise ClosedResourceError";
    ASSERT_TRUE(r.outcome.has_value());
    EXPECT_TRUE(r.outcome.value().empty());
}

INSTANTIATE_TEST_SUITE_P(ParentSendsFirst, ChildClosesStream, ::testing::Bool(),
                         [](const auto& p) { return p.param ? "SendsFirst" : "OnlyReads"; });

// DESIGN.md §4.9: the EndOfChannel of the context's own stream escaping the body is absorbed at
// the open_context boundary, which then waits for the result as on a normal exit.
TEST_F(ContextTest, EndOfChannelOfOwnStreamEscapingTheBodyIsAbsorbed) {
    Actor parent("parent", options());
    Actor child("child", options());
    child.expose("count", [](Context& ctx, const Payload&) -> Payload {
        ctx.started();
        auto stream = ctx.open_stream();
        std::int64_t n = 0;
        for (const auto& msg : stream) {
            (void)msg;
            ++n;
        }
        return Payload::value(n);
    });
    Portal portal = parent.connect("child");
    auto r = portal.open_context("count", {}, [](Context& ctx, const Payload&) {
        auto stream = ctx.open_stream();
        stream.send("one");
        stream.send("two");
        stream.close();
        (void)stream.receive();  // raises EndOfChannel: it escapes the body
        ADD_FAILURE() << "receive() after close() returned";
    });
    ASSERT_TRUE(r.outcome.has_value());
    EXPECT_EQ(r.outcome.value().value<std::int64_t>(), 2);
}

// Spec §5 #73-76: the child answers started(data + 1), then one "pong" per "ping" until the
// stream ends, and sees EndOfChannel after exactly 10 pings. Parameters: the parent reads with
// range-for or receive(); the child with range-for or a receive() loop.
class SimpleRpc : public ContextTest,
                  public ::testing::WithParamInterface<std::tuple<bool, bool>> {};

TEST_P(SimpleRpc, TenPingPongsThenTheChildSeesEndOfChannel) {
    const bool parent_range_for = std::get<0>(GetParam());
    const bool child_range_for = std::get<1>(GetParam());
    constexpr std::int64_t kPings = 10;
    Actor parent("parent", options());
    Actor child("child", options());
    std::atomic<bool> child_saw_end{false};
    child.expose("simple_rpc", [&](Context& ctx, const Payload& args) -> Payload {
        ctx.started(Payload::value(args.value<std::int64_t>() + 1));
        auto stream = ctx.open_stream();
        std::int64_t pings = 0;
        auto answer = [&](const Message& msg) {
            EXPECT_EQ(msg.text(), "ping");
            ++pings;
            stream.send("pong");
        };
        if (child_range_for) {
            for (const auto& msg : stream) answer(msg);
            child_saw_end = true;  // range-for ends only at EndOfChannel
        } else {
            for (;;) {
                try {
                    answer(stream.receive());
                } catch (const EndOfChannel&) {
                    child_saw_end = true;
                    break;
                }
            }
        }
        return Payload::value(pings);
    });
    Portal portal = parent.connect("child");

    std::int64_t pongs = 0;
    auto r = portal.open_context("simple_rpc", Payload::value(10),
                                 [&](Context& ctx, const Payload& sent) {
                                     EXPECT_EQ(sent.value<std::int64_t>(), 11);
                                     auto stream = ctx.open_stream();
                                     stream.send("ping");
                                     if (parent_range_for) {
                                         for (const auto& msg : stream) {
                                             EXPECT_EQ(msg.text(), "pong");
                                             if (++pongs == kPings) break;
                                             stream.send("ping");
                                         }
                                     } else {
                                         for (;;) {
                                             const Message msg = stream.receive();
                                             EXPECT_EQ(msg.text(), "pong");
                                             if (++pongs == kPings) break;
                                             stream.send("ping");
                                         }
                                     }
                                     return pongs;
                                 });
    EXPECT_EQ(pongs, kPings);
    EXPECT_EQ(r.value, kPings);
    ASSERT_TRUE(r.outcome.has_value());
    EXPECT_EQ(r.outcome.value().value<std::int64_t>(), kPings) << "pings the child counted";
    EXPECT_TRUE(child_saw_end);
}

INSTANTIATE_TEST_SUITE_P(Loops, SimpleRpc, ::testing::Combine(::testing::Bool(), ::testing::Bool()),
                         [](const auto& p) {
                             return std::string(std::get<0>(p.param) ? "ParentRangeFor"
                                                                     : "ParentReceive") +
                                    (std::get<1>(p.param) ? "ChildRangeFor" : "ChildReceive");
                         });

// ---------------------------------------------------------------------------------------------
// Misuse and errors at entry (spec §5 #61, #115; a bad argument)

// Spec §5 #61 / §6.15.
TEST_F(ContextTest, ContextWithOwnActorIsInvalidOperation) {
    Actor self("self", options());
    self.expose("echo", [](Context&, const Payload& args) { return args; });
    Portal portal = self.connect("self");
    EXPECT_EQ(portal.peer(), self.uid());
    std::atomic<bool> body_ran{false};
    try {
        portal.open_context("echo", {}, body_must_not_run(body_ran));
        ADD_FAILURE() << "open_context with our own actor returned";
    } catch (const InvalidOperation& e) {
        EXPECT_THAT(e.what(), HasSubstr("Invalid Operation"));
    }
    EXPECT_FALSE(body_ran);
    EXPECT_THROW((void)portal.run("echo", Payload::value(1)), InvalidOperation);
    EXPECT_EQ(self.open_contexts(), 0U);
}

// Spec §5 #115: a function the child does not expose fails at entry with a RemoteActorError
// that says so, through open_context and through Portal::run.
TEST_F(ContextTest, UnknownFunctionRaisesNotExposedAtEntry) {
    Actor parent("parent", options());
    Actor child("child", options());
    child.expose("known", [](Context&, const Payload&) { return Payload::value(1); });
    Portal portal = parent.connect("child");
    std::atomic<bool> body_ran{false};
    try {
        portal.open_context("no_such_fn", {}, body_must_not_run(body_ran));
        ADD_FAILURE() << "open_context of an unknown function returned";
    } catch (const RemoteActorError& e) {
        EXPECT_THAT(e.what(), HasSubstr("not exposed"));
        EXPECT_THAT(e.what(), HasSubstr("no_such_fn"));
        EXPECT_EQ(e.src_uid(), child.uid());
    }
    EXPECT_FALSE(body_ran);
    try {
        (void)portal.run("no_such_fn", Payload::value(1));
        ADD_FAILURE() << "run of an unknown function returned";
    } catch (const RemoteActorError& e) {
        EXPECT_THAT(e.what(), HasSubstr("not exposed"));
    }
    // The link survives: a known function still works.
    EXPECT_EQ(portal.run("known").value<std::int64_t>(), 1);
}

// An endpoint decoding its argument as the wrong type: the DecodeError is boxed to the parent.
TEST_F(ContextTest, BadArgumentPayloadIsBoxedDecodeError) {
    Actor parent("parent", options());
    Actor child("child", options());
    child.expose("square", [](Context&, const Payload& args) {
        const auto v = args.value<std::int64_t>();
        return Payload::value(v * v);
    });
    Portal portal = parent.connect("child");
    EXPECT_EQ(portal.run("square", Payload::value(7)).value<std::int64_t>(), 49);

    std::atomic<bool> body_ran{false};
    try {
        portal.open_context("square", Payload::value("seven"), body_must_not_run(body_ran));
        ADD_FAILURE() << "open_context returned";
    } catch (const RemoteActorError& e) {
        EXPECT_TRUE(e.boxed_is<DecodeError>()) << e.boxed_type_name() << ": " << e.what();
        EXPECT_EQ(e.src_uid(), child.uid());
    }
    EXPECT_FALSE(body_ran);
    try {
        (void)portal.run("square", "seven");  // a text payload, not even a FlexBuffer value
        ADD_FAILURE() << "run returned";
    } catch (const RemoteActorError& e) {
        EXPECT_TRUE(e.boxed_is<DecodeError>()) << e.boxed_type_name() << ": " << e.what();
    }
}

// ---------------------------------------------------------------------------------------------
// Relaying over two hops (spec §3.8, §5 #65-68, §6.17)

// A -> B -> C in one process. C raises std::runtime_error after started(); B's endpoint has a
// context open to C and lets the error escape (its block is interrupted, then re-raises). A sees
// an inception: boxed "RemoteActorError", the source type and actor kept, B as the last hop.
TEST_F(ContextTest, ErrorRelayedOverTwoHopsKeepsItsSource) {
    Actor a("a", options());
    Actor b("b", options());
    Actor c("c", options());
    c.expose("boom", [](Context& ctx, const Payload&) -> Payload {
        ctx.started();
        throw std::runtime_error("boom from c");
    });
    std::atomic<bool> b_body_interrupted{false};
    b.expose("relay", [&](Context& ctx, const Payload&) -> Payload {
        ctx.started();
        Portal to_c = b.connect("c");
        to_c.open_context("boom", {}, [&](Context& inner, const Payload&) {
            try {
                test::until_cancelled(inner, kBlockForever);
            } catch (const Cancelled&) {
                b_body_interrupted = true;
                throw;
            }
        });
        return Payload::value("relay returned");
    });
    Portal to_b = a.connect("b");

    std::optional<Context> handle;
    try {
        to_b.open_context("relay", {}, [&](Context& ctx, const Payload&) {
            handle.emplace(ctx.handle());  // then exit normally: the error comes with the result
        });
        ADD_FAILURE() << "open_context returned";
    } catch (const ContextCancelled& e) {
        ADD_FAILURE() << "a real error arrived as ContextCancelled: " << e.what();
    } catch (const RemoteActorError& e) {
        EXPECT_EQ(e.boxed_type_name(), "RemoteActorError");
        EXPECT_TRUE(e.boxed_is<RemoteActorError>());
        EXPECT_EQ(e.src_type_name(), error_type_name<std::runtime_error>());
        EXPECT_TRUE(e.src_is<std::runtime_error>());
        EXPECT_EQ(e.src_uid(), c.uid());
        EXPECT_EQ(e.relay_uid(), b.uid());
        ASSERT_FALSE(e.relay_path().empty());
        EXPECT_EQ(e.relay_path().back(), b.uid());
        EXPECT_TRUE(e.is_inception());
        EXPECT_THAT(e.message(), HasSubstr("boom from c"));
    }
    EXPECT_TRUE(b_body_interrupted) << "B's block was not interrupted by C's error";
    ASSERT_TRUE(handle.has_value());
    EXPECT_EQ(handle->state(), State::errored);
    ASSERT_NE(handle->remote_error_info(), nullptr);
    EXPECT_EQ(handle->remote_error_info()->src_uid(), c.uid());
}

// The same chain with both errors raised before started(): each hop raises at entry.
TEST_F(ContextTest, ErrorBeforeStartedIsRelayedAtEntryOverTwoHops) {
    Actor a("a", options());
    Actor b("b", options());
    Actor c("c", options());
    c.expose("boom", [](Context&, const Payload&) -> Payload {
        throw std::runtime_error("early boom from c");
    });
    std::atomic<bool> b_body_ran{false};
    b.expose("relay", [&](Context&, const Payload&) -> Payload {
        Portal to_c = b.connect("c");
        to_c.open_context("boom", {}, body_must_not_run(b_body_ran));
        return Payload{};
    });
    Portal to_b = a.connect("b");
    std::atomic<bool> a_body_ran{false};
    try {
        to_b.open_context("relay", {}, body_must_not_run(a_body_ran));
        ADD_FAILURE() << "open_context returned";
    } catch (const RemoteActorError& e) {
        EXPECT_EQ(e.boxed_type_name(), "RemoteActorError");
        EXPECT_TRUE(e.src_is<std::runtime_error>()) << e.src_type_name();
        EXPECT_EQ(e.src_uid(), c.uid());
        EXPECT_EQ(e.relay_uid(), b.uid());
        EXPECT_TRUE(e.is_inception());
        EXPECT_THAT(e.message(), HasSubstr("early boom from c"));
    }
    EXPECT_FALSE(a_body_ran);
    EXPECT_FALSE(b_body_ran);
}

// ---------------------------------------------------------------------------------------------
// The exit algorithm (spec §3.5) and error identity (DESIGN.md §4.5)

// Spec §3.5 step 2: a body error cancels the context (the child's task sees Cancelled) and is
// rethrown unchanged: the very object the body threw.
TEST_F(ContextTest, BodyErrorPropagatesUnchangedAndCancelsTheChild) {
    Actor parent("parent", options());
    Actor child("child", options());
    std::atomic<bool> child_sleeping{false};
    std::atomic<bool> child_cancelled{false};
    child.expose("sleeper", [&](Context& ctx, const Payload&) -> Payload {
        ctx.started();
        try {
            child_sleeping = true;
            test::until_cancelled(ctx, kBlockForever);
        } catch (const Cancelled&) {
            child_cancelled = true;
            throw;
        }
        return Payload::value("slept through");
    });
    Portal portal = parent.connect("child");

    const std::runtime_error* thrown = nullptr;
    std::optional<Context> handle;
    const auto start = Clock::now();
    try {
        portal.open_context("sleeper", {}, [&](Context& ctx, const Payload&) {
            handle.emplace(ctx.handle());
            EXPECT_TRUE(test::wait_until([&] { return child_sleeping.load(); }, kDeadline));
            try {
                throw std::runtime_error("body failed");
            } catch (const std::runtime_error& e) {
                thrown = &e;
                throw;
            }
        });
        ADD_FAILURE() << "open_context returned";
    } catch (const std::runtime_error& e) {
        EXPECT_EQ(&e, thrown) << "not the object the body threw: " << e.what();
        EXPECT_EQ(dynamic_cast<const Error*>(&e), nullptr) << "replaced by " << e.what();
        EXPECT_STREQ(e.what(), "body failed");
    }
    EXPECT_TRUE(test::wait_until([&] { return child_cancelled.load(); }, kDeadline))
        << "the child's task was not cancelled";
    EXPECT_LT(Clock::now() - start, kDeadline);
    ASSERT_TRUE(handle.has_value());
    EXPECT_TRUE(handle->cancel_called());
    // local_error is the body's error, the same object.
    const std::exception_ptr local = handle->local_error();
    ASSERT_NE(local, nullptr);
    try {
        std::rethrow_exception(local);
    } catch (const std::runtime_error& e) {
        EXPECT_EQ(&e, thrown);
    }
    EXPECT_TRUE(test::wait_until([&] { return child.open_contexts() == 0; }, kDeadline));
    EXPECT_TRUE(test::wait_until([&] { return parent.open_contexts() == 0; }, kDeadline));
}

// DESIGN.md §4.5 / spec §6.12: the first remote error is created once; the block's raise,
// wait_for_result() (twice), outcome() and the accessors all give the same object.
TEST_F(ContextTest, RemoteErrorIsTheSameObjectEveryTime) {
    Actor parent("parent", options());
    Actor child("child", options());
    child.expose("late_boom", [](Context& ctx, const Payload&) -> Payload {
        ctx.started();
        throw std::runtime_error("late boom");
    });
    Portal portal = parent.connect("child");

    std::optional<Context> handle;
    const RemoteActorError* first = nullptr;
    std::exception_ptr first_ptr;
    try {
        portal.open_context("late_boom", {},
                            [&](Context& ctx, const Payload&) { handle.emplace(ctx.handle()); });
        ADD_FAILURE() << "open_context returned";
    } catch (const RemoteActorError& e) {
        first = &e;
        first_ptr = std::current_exception();
        EXPECT_TRUE(e.boxed_is<std::runtime_error>()) << e.boxed_type_name();
        EXPECT_EQ(e.src_uid(), child.uid());
        EXPECT_THAT(e.message(), HasSubstr("late boom"));
    }
    ASSERT_NE(first, nullptr);
    ASSERT_TRUE(handle.has_value());
    for (int i = 0; i < 2; ++i) {
        try {
            (void)handle->wait_for_result();
            ADD_FAILURE() << "wait_for_result() returned, call " << i;
        } catch (const RemoteActorError& e) {
            EXPECT_EQ(&e, first) << "call " << i;
        }
    }
    EXPECT_EQ(handle->remote_error(), first_ptr);
    EXPECT_EQ(handle->maybe_error(), first_ptr);
    EXPECT_EQ(handle->outcome().error(), first_ptr);
    EXPECT_FALSE(handle->outcome().is_absorbed_cancel());
    try {
        (void)handle->outcome().value();
        ADD_FAILURE() << "Outcome::value() returned";
    } catch (const RemoteActorError& e) {
        EXPECT_EQ(&e, first);
    }
    ASSERT_NE(handle->remote_error_info(), nullptr);
    EXPECT_EQ(handle->remote_error_info()->src_uid(), child.uid());
}

// ---------------------------------------------------------------------------------------------
// Portal::run (one-shot RPC)

TEST_F(ContextTest, RunReturnsTheValueWithoutStarted) {
    Actor parent("parent", options());
    Actor child("child", options());
    child.expose("add_one", [](Context&, const Payload& args) {
        return Payload::value(args.value<std::int64_t>() + 1);
    });
    // started() is optional, and an endpoint that calls it still serves run() (DESIGN.md §4.9).
    child.expose("started_then_return", [](Context& ctx, const Payload& args) {
        ctx.started(Payload::value("ignored by run"));
        return Payload::value(args.value<std::string>() + "!");
    });
    Portal portal = parent.connect("child");
    EXPECT_EQ(portal.run("add_one", Payload::value(41)).value<std::int64_t>(), 42);
    EXPECT_EQ(portal.run("started_then_return", Payload::value("hi")).value<std::string>(), "hi!");
    EXPECT_TRUE(test::wait_until([&] { return child.open_contexts() == 0; }, kDeadline));
}

// Past its deadline run() cancels the remote task and raises TimedOut.
TEST_F(ContextTest, RunPastItsDeadlineCancelsTheChildAndTimesOut) {
    Actor parent("parent", options());
    Actor child("child", options());
    std::atomic<bool> child_cancelled{false};
    child.expose("block", [&](Context& ctx, const Payload&) -> Payload {
        try {
            test::until_cancelled(ctx, kBlockForever);
        } catch (const Cancelled&) {
            child_cancelled = true;
            throw;
        }
        return Payload::value("slept through");
    });
    Portal portal = parent.connect("child");
    constexpr auto kRunDeadline = 300ms;
    const auto start = Clock::now();
    EXPECT_THROW((void)portal.run("block", {}, kRunDeadline), TimedOut);
    const auto elapsed = Clock::now() - start;
    EXPECT_GE(elapsed, kRunDeadline) << "raised before the deadline";
    EXPECT_LT(elapsed, kDeadline);
    EXPECT_TRUE(test::wait_until([&] { return child_cancelled.load(); }, kDeadline))
        << "the remote task was not cancelled";
    EXPECT_TRUE(test::wait_until([&] { return child.open_contexts() == 0; }, kDeadline));
    EXPECT_TRUE(test::wait_until([&] { return parent.open_contexts() == 0; }, kDeadline));
}

// ---------------------------------------------------------------------------------------------
// Limits: max_endpoints, the control-record cap

TEST_F(ContextTest, StartPastMaxEndpointsIsBoxedTooManyContexts) {
    Actor parent("parent", options());
    ActorOptions child_options = options();
    child_options.max_endpoints = 1;
    Actor child("child", child_options);
    child.expose("hold", [](Context& ctx, const Payload&) -> Payload {
        ctx.started();
        auto stream = ctx.open_stream();
        return Payload::copy(stream.receive().view());  // held until the parent sends
    });
    Portal portal = parent.connect("child");

    std::atomic<bool> holding{false};
    std::atomic<bool> release{false};
    std::optional<Payload> held_result;
    std::exception_ptr held_error;
    std::jthread holder([&] {
        try {
            auto r = portal.open_context("hold", {}, [&](Context& ctx, const Payload&) {
                auto stream = ctx.open_stream();
                holding = true;
                EXPECT_TRUE(test::wait_until([&] { return release.load(); }, kDeadline));
                stream.send("released");
            });
            held_result = r.outcome.value();
        } catch (...) {
            held_error = std::current_exception();
        }
    });
    const bool held = test::wait_until([&] { return holding.load(); }, kDeadline);
    if (held) {
        std::atomic<bool> body_ran{false};
        try {
            portal.open_context("hold", {}, body_must_not_run(body_ran));
            ADD_FAILURE() << "a second context past max_endpoints = 1 was accepted";
        } catch (const RemoteActorError& e) {
            EXPECT_TRUE(e.boxed_is<TooManyContexts>()) << e.boxed_type_name() << ": " << e.what();
            EXPECT_EQ(e.src_uid(), child.uid());
        }
        EXPECT_FALSE(body_ran);
    }
    release = true;
    holder.join();
    ASSERT_TRUE(held) << "the first context never reached its body";
    EXPECT_EQ(held_error, nullptr);
    ASSERT_TRUE(held_result.has_value());
    EXPECT_EQ(held_result->view().kind(), PayloadKind::string);

    // Once the endpoint finished, a new Start is accepted again.
    EXPECT_TRUE(test::wait_until(
        [&] {
            try {
                auto r = portal.open_context("hold", {}, [](Context& ctx, const Payload&) {
                    ctx.open_stream().send("again");
                });
                return r.outcome.has_value();
            } catch (const RemoteActorError& e) {
                if (e.boxed_is<TooManyContexts>()) return false;
                throw;
            }
        },
        kDeadline));
}

ActorOptions with_record_cap(ActorOptions o, std::size_t cap) {
    o.max_control_record_bytes = cap;
    return o;
}

constexpr std::size_t kRecordCap = 4096;
const std::string kBigText(4 * kRecordCap, 'x');

// DESIGN.md §3: a Return value over max_control_record_bytes is refused in the child and the
// parent receives a boxed PayloadTooLarge (stream it instead).
TEST_F(ContextTest, ReturnValueOverTheRecordCapIsBoxedPayloadTooLarge) {
    Actor parent("parent", with_record_cap(options(), kRecordCap));
    Actor child("child", with_record_cap(options(), kRecordCap));
    child.expose("big_return", [](Context& ctx, const Payload& args) {
        if (args.value<bool>()) ctx.started();
        return Payload::value(kBigText);
    });
    Portal portal = parent.connect("child");
    try {
        portal.open_context("big_return", Payload::value(true), [](Context&, const Payload&) {});
        ADD_FAILURE() << "open_context returned";
    } catch (const RemoteActorError& e) {
        EXPECT_TRUE(e.boxed_is<PayloadTooLarge>()) << e.boxed_type_name() << ": " << e.what();
        EXPECT_EQ(e.src_uid(), child.uid());
    }
    try {
        (void)portal.run("big_return", Payload::value(false));
        ADD_FAILURE() << "run returned";
    } catch (const RemoteActorError& e) {
        EXPECT_TRUE(e.boxed_is<PayloadTooLarge>()) << e.boxed_type_name() << ": " << e.what();
    }
}

TEST_F(ContextTest, StartedValueOverTheRecordCapRaisesInTheChildAndAtEntry) {
    Actor parent("parent", with_record_cap(options(), kRecordCap));
    Actor child("child", with_record_cap(options(), kRecordCap));
    std::atomic<bool> child_saw_too_large{false};
    child.expose("big_started", [&](Context& ctx, const Payload&) -> Payload {
        try {
            ctx.started(Payload::value(kBigText));
        } catch (const PayloadTooLarge& e) {
            EXPECT_GE(e.size_bytes(), kBigText.size());
            EXPECT_LE(e.cap_bytes(), kRecordCap);
            child_saw_too_large = true;
            throw;
        }
        return Payload{};
    });
    Portal portal = parent.connect("child");
    std::atomic<bool> body_ran{false};
    try {
        portal.open_context("big_started", {}, body_must_not_run(body_ran));
        ADD_FAILURE() << "open_context returned";
    } catch (const RemoteActorError& e) {
        EXPECT_TRUE(e.boxed_is<PayloadTooLarge>()) << e.boxed_type_name() << ": " << e.what();
    }
    EXPECT_FALSE(body_ran);
    EXPECT_TRUE(child_saw_too_large);
}

// A started() refused as too large sent nothing: a retry with a smaller value is the first
// started(), and the context goes on (it raised "called twice" before; semantics review).
TEST_F(ContextTest, StartedRetriedAfterPayloadTooLargeIsTheFirstStarted) {
    Actor parent("parent", with_record_cap(options(), kRecordCap));
    Actor child("child", with_record_cap(options(), kRecordCap));
    child.expose("retry_started", [](Context& ctx, const Payload&) -> Payload {
        EXPECT_THROW(ctx.started(Payload::value(kBigText)), PayloadTooLarge);
        ctx.started(Payload::value("small"));
        return Payload::value(std::int64_t{7});
    });
    Portal portal = parent.connect("child");
    std::string first;
    const auto result =
        portal.open_context("retry_started", {}, [&](Context& ctx, const Payload& started) {
            first = started.value<std::string>();
            return ctx.wait_for_result().value().value<std::int64_t>();
        });
    EXPECT_EQ(first, "small");
    EXPECT_EQ(result.value, 7);
}

// Start arguments over the cap never leave the parent: a local PayloadTooLarge.
TEST_F(ContextTest, StartArgumentsOverTheRecordCapRaiseLocally) {
    Actor parent("parent", with_record_cap(options(), kRecordCap));
    Actor child("child", with_record_cap(options(), kRecordCap));
    std::atomic<bool> endpoint_ran{false};
    child.expose("sink", [&](Context&, const Payload&) {
        endpoint_ran = true;
        return Payload{};
    });
    Portal portal = parent.connect("child");
    std::atomic<bool> body_ran{false};
    try {
        portal.open_context("sink", Payload::value(kBigText), body_must_not_run(body_ran));
        ADD_FAILURE() << "open_context returned";
    } catch (const PayloadTooLarge& e) {
        EXPECT_GE(e.size_bytes(), kBigText.size());
        EXPECT_LE(e.cap_bytes(), kRecordCap);
    }
    EXPECT_FALSE(body_ran);
    EXPECT_FALSE(endpoint_ran);
    EXPECT_EQ(parent.open_contexts(), 0U);
    EXPECT_EQ(portal.run("sink").kind(), PayloadKind::empty) << "the link is still usable";
}

// ---------------------------------------------------------------------------------------------
// Peer loss

// The peer shuts down (in order) between connect() and open_context(): TransportClosed (or its
// PeerDied), never a hang. The lost link is dropped, and its arena is removed once no Portal
// holds the link any more.
TEST_F(ContextTest, PeerShutDownBetweenConnectAndOpenRaisesTransportClosed) {
    Actor parent("parent", options());
    auto child = std::make_unique<Actor>("child", options());
    child->expose("add_one", [](Context&, const Payload& args) {
        return Payload::value(args.value<std::int64_t>() + 1);
    });
    std::optional<Portal> portal = parent.connect("child");
    EXPECT_EQ(portal->run("add_one", Payload::value(1)).value<std::int64_t>(), 2);
    child.reset();

    std::atomic<bool> body_ran{false};
    const auto start = Clock::now();
    EXPECT_THROW(portal->open_context("add_one", Payload::value(1), body_must_not_run(body_ran)),
                 TransportClosed);
    EXPECT_THROW((void)portal->run("add_one", Payload::value(1)), TransportClosed);
    EXPECT_LT(Clock::now() - start, kDeadline);
    EXPECT_FALSE(body_ran);
    EXPECT_TRUE(test::wait_until([&] { return parent.links() == 0; }, kDeadline));
    EXPECT_EQ(parent.open_contexts(), 0U);
    portal.reset();
    EXPECT_TRUE(test::wait_until([&] { return names().list("link").empty(); }, kDeadline))
        << "link arenas left after the peer shut down: "
        << ::testing::PrintToString(names().list("link")) << " (ours: link."
        << parent.uid().uuid.to_hex() << ".*)";
}

// ---------------------------------------------------------------------------------------------
// Load: resource bounds

// 1,000 contexts (each with a stream both ways) opened and closed in sequence leak no endpoint
// thread, no registered context, no ring (the arenas are small, so leaked rings would exhaust
// them, and their allocated bytes stay flat) and no /dev/shm object.
TEST_F(ContextTest, ThousandSequentialContextsLeakNoThreadsContextsRingsOrFiles) {
    ActorOptions o = options();
    o.data_ring_bytes = std::size_t{16} * 1024;
    o.arena_bytes = std::size_t{4} << 20;  // ~120 leaked 32 KiB ring slots exhaust it
    Actor parent("parent", o);
    Actor child("child", o);
    child.expose("echo", [](Context& ctx, const Payload& args) -> Payload {
        ctx.started(args);
        auto stream = ctx.open_stream();
        for (const auto& msg : stream) stream.send(msg.view());
        return args;
    });
    Portal portal = parent.connect("child");
    auto one = [&](std::int64_t i) {
        auto r =
            portal.open_context("echo", Payload::value(i), [&](Context& ctx, const Payload& first) {
                EXPECT_EQ(first.value<std::int64_t>(), i);
                auto stream = ctx.open_stream();
                stream.send(Payload::value(i * 3));
                return stream.receive().value<std::int64_t>();
            });
        ASSERT_EQ(r.value, i * 3);
        ASSERT_TRUE(r.outcome.has_value());
        ASSERT_EQ(r.outcome.value().value<std::int64_t>(), i);
    };

    expect_sequential_contexts_leak_nothing(parent, child, names(), o.data_ring_bytes,
                                            static_cast<std::int64_t>(test::scaled(1000, 50)), one);
}

// 100 contexts open at once on one link: 100 parent threads are inside their bodies (and 100
// endpoints inside theirs) at the same time; then all complete with their own values.
TEST_F(ContextTest, HundredContextsOpenAtOnceOnOneLink) {
    constexpr std::size_t kContexts = 100;
    Actor parent("parent", options());
    Actor child("child", options());
    child.expose("echo_once", [](Context& ctx, const Payload& args) -> Payload {
        ctx.started(args);
        auto stream = ctx.open_stream();
        const Message msg = stream.receive();
        stream.send(msg.view());
        return Payload::value(args.value<std::int64_t>() * 2);
    });
    Portal portal = parent.connect("child");

    std::atomic<std::size_t> inside{0};
    std::atomic<bool> go{false};
    std::vector<std::optional<std::int64_t>> echoed(kContexts);
    std::vector<std::optional<std::int64_t>> returned(kContexts);
    std::vector<std::exception_ptr> errors(kContexts);
    {
        std::vector<std::jthread> threads;
        threads.reserve(kContexts);
        for (std::size_t t = 0; t < kContexts; ++t) {
            threads.emplace_back([&, t] {
                const auto i = static_cast<std::int64_t>(t);
                try {
                    auto r = portal.open_context(
                        "echo_once", Payload::value(i), [&](Context& ctx, const Payload& first) {
                            EXPECT_EQ(first.value<std::int64_t>(), i);
                            auto stream = ctx.open_stream();
                            inside.fetch_add(1, std::memory_order::relaxed);  // a counter only
                            EXPECT_TRUE(test::wait_until([&] { return go.load(); }, kDeadline));
                            stream.send(Payload::value(i + 1000));
                            return stream.receive().value<std::int64_t>();
                        });
                    echoed[t] = r.value;
                    returned[t] = r.outcome.value().value<std::int64_t>();
                } catch (...) {
                    errors[t] = std::current_exception();
                }
            });
        }
        const bool all_inside = test::wait_until([&] { return inside.load() == kContexts; },
                                                 std::chrono::seconds(3 * kDeadline));
        const std::size_t parent_contexts = parent.open_contexts();
        const std::size_t child_contexts = child.open_contexts();
        const std::size_t endpoint_threads = child.endpoint_threads();
        go = true;  // release the bodies before asserting, so no thread waits out its deadline
        EXPECT_TRUE(all_inside) << inside.load() << " of " << kContexts << " bodies entered";
        EXPECT_EQ(parent_contexts, kContexts);
        EXPECT_EQ(child_contexts, kContexts);
        EXPECT_GE(endpoint_threads, kContexts);
    }
    for (std::size_t t = 0; t < kContexts; ++t) {
        const auto i = static_cast<std::int64_t>(t);
        if (errors[t] != nullptr) {
            try {
                std::rethrow_exception(errors[t]);
            } catch (const std::exception& e) {
                ADD_FAILURE() << "context " << t << ": " << e.what();
            }
            continue;
        }
        EXPECT_EQ(echoed[t], i + 1000) << "context " << t;
        EXPECT_EQ(returned[t], 2 * i) << "context " << t;
    }
    EXPECT_TRUE(test::wait_until(
        [&] { return parent.open_contexts() == 0 && child.open_contexts() == 0; }, kDeadline));
    EXPECT_EQ(parent.links(), 1U);
}

// A parent thread blocked in receive() wakes when the peer actor shuts down in order (DESIGN.md
// §4.7: never a hang). The peer cancels its running endpoint first, so the parent gets that
// task's ContextCancelled (canceller: the peer itself), or TransportClosed if the link closed
// first.
TEST_F(ContextTest, ReceiveBlockedWhenThePeerShutsDownWakesWithAnError) {
    Actor parent("parent", options());
    auto child = std::make_unique<Actor>("child", options());
    const Uid child_uid = child->uid();
    std::atomic<bool> child_streaming{false};
    child->expose("silent", [&](Context& ctx, const Payload&) -> Payload {
        ctx.started();
        auto stream = ctx.open_stream();
        child_streaming = true;
        for (const auto& msg : stream) (void)msg;  // never sends; ends when cancelled
        return Payload{};
    });
    Portal portal = parent.connect("child");

    std::atomic<pid_t> receiver_tid{0};
    std::jthread stopper([&] {
        // Wait until the parent thread is asleep (in receive()), then shut the child down.
        EXPECT_TRUE(test::wait_until(
            [&] {
                const pid_t tid = receiver_tid.load();
                return child_streaming.load() && tid != 0 && thread_state(tid) == 'S';
            },
            kDeadline));
        child.reset();
    });
    const auto start = Clock::now();
    try {
        portal.open_context("silent", {}, [&](Context& ctx, const Payload&) {
            auto stream = ctx.open_stream();
            receiver_tid = current_tid();
            (void)stream.receive();
            ADD_FAILURE() << "receive() returned a message";
        });
        ADD_FAILURE() << "open_context returned";
    } catch (const ContextCancelled& e) {
        RecordProperty("woke_with", "ContextCancelled");
        EXPECT_EQ(e.canceller(), child_uid);
        EXPECT_EQ(e.src_uid(), child_uid);
    } catch (const TransportClosed& e) {
        RecordProperty("woke_with", "TransportClosed");
        EXPECT_EQ(dynamic_cast<const PeerDied*>(&e), nullptr)
            << "an orderly shutdown: " << e.what();
    }
    EXPECT_LT(Clock::now() - start, kDeadline);
    stopper.join();
    EXPECT_TRUE(test::wait_until([&] { return parent.links() == 0; }, kDeadline));
    EXPECT_EQ(parent.open_contexts(), 0U);
}

// wait_for_result() on the handle of a context that ended long ago touches nothing of the
// rings: the peer has freed that context's ring and carved the next context's over the same
// bytes, which a late close would end (the peer's next send raised EndOfChannel; found by the
// semantics review).
TEST_F(ContextTest, LateWaitForResultOnAnEndedContextLeavesTheNextContextsRingAlone) {
    Actor parent("parent", options());
    Actor child("child", options());
    child.expose("one", [](Context& ctx, const Payload&) {
        ctx.started();
        auto stream = ctx.open_stream();
        stream.send("a");
        return Payload{};
    });
    child.expose("two", [](Context& ctx, const Payload&) {
        ctx.started();
        auto stream = ctx.open_stream();
        stream.send("b1");
        EXPECT_EQ(stream.receive().text(), "go");
        stream.send("b2");  // EndOfChannel here if the parent's late close hit this ring
        for (auto& msg : stream) (void)msg;  // until the parent closes
        return Payload{};
    });
    Portal portal = parent.connect("child", kDeadline);
    std::optional<Context> first;
    (void)portal.open_context("one", {}, [&](Context& ctx, const Payload&) {
        first.emplace(ctx.handle());
        auto stream = ctx.open_stream();
        EXPECT_EQ(stream.receive().text(), "a");
    });
    // The child's side of "one" is over: its ring is free for the next carve.
    ASSERT_TRUE(test::wait_until([&] { return child.open_contexts() == 0; }, kDeadline));
    std::string second;
    (void)portal.open_context("two", {}, [&](Context& ctx, const Payload&) {
        auto stream = ctx.open_stream();
        EXPECT_EQ(stream.receive().text(), "b1");
        EXPECT_TRUE(first->wait_for_result().has_value());  // late: "one" ended long ago
        stream.send("go");
        second = std::string(stream.receive().text());
    });
    EXPECT_EQ(second, "b2");
}

// remote_error() is only what the peer sent (tractor's `_remote_error`); the link's loss is
// not one: maybe_error() reports it, and the state is errored (discrepancy 8). The body waits
// on a latch (not a checkpoint), so the parent's shutdown fails the context under it.
TEST_F(ContextTest, LinkLossIsMaybeErrorButNotRemoteError) {
    auto parent = std::make_unique<Actor>("parent", options());
    Actor child("child", options());
    child.expose("hold", [](Context& ctx, const Payload&) {
        ctx.started();
        auto stream = ctx.open_stream();
        for (const auto& msg : stream) (void)msg;  // until the link goes
        return Payload{};
    });
    Portal portal = parent->connect("child", kDeadline);
    std::latch in_body(1);
    std::latch shut_down(1);
    std::optional<Context> handle;
    std::exception_ptr remote;
    std::exception_ptr maybe;
    std::optional<State> state;
    std::thread body_thread([&] {
        try {
            (void)portal.open_context("hold", {}, [&](Context& ctx, const Payload&) {
                auto stream = ctx.open_stream();
                handle.emplace(ctx.handle());
                in_body.count_down();
                shut_down.wait();
                remote = ctx.remote_error();
                maybe = ctx.maybe_error();
                state = ctx.state();
            });
        } catch (...) {
            // Whatever the exit raises (TransportClosed, or Cancelled by the shutdown).
        }
    });
    in_body.wait();
    parent.reset();
    shut_down.count_down();
    body_thread.join();
    EXPECT_EQ(remote, nullptr) << test::describe_error(remote);
    EXPECT_NE(test::error_as<TransportClosed>(maybe), nullptr) << test::describe_error(maybe);
    EXPECT_EQ(state, State::errored);
    ASSERT_TRUE(handle.has_value());
    EXPECT_EQ(handle->remote_error(), nullptr) << test::describe_error(handle->remote_error());
    EXPECT_NE(handle->maybe_error(), nullptr);
    EXPECT_EQ(handle->outcome().error(), handle->maybe_error());
}

// ctx.sleep_for() wakes on ctx's cancel even on a thread inside another context (checkpoint()
// checks ctx's scope too), and on that thread's own chain (discrepancy 14). No timing is
// asserted: without the fix the sleep outlasts run()'s deadline (TimedOut).
TEST_F(ContextTest, SleepForWakesOnItsContextsCancelAndOnTheCallersChain) {
    Actor parent("parent", options());
    Actor child("child", options());
    std::mutex mu;
    std::optional<Context> held;  // the child side of "hold"
    const auto held_copy = [&]() -> std::optional<Context> {
        const std::lock_guard lock(mu);
        return held;
    };
    child.expose("hold", [&](Context& ctx, const Payload&) -> Payload {
        ctx.started();
        {
            const std::lock_guard lock(mu);
            held.emplace(ctx.handle());
        }
        test::until_cancelled(ctx, kBlockForever);
        return Payload{};
    });
    // Sleeps on "hold"'s context from inside its own endpoint (another context's scope).
    child.expose("nap", [&](Context& ctx, const Payload&) -> Payload {
        ctx.started();
        EXPECT_TRUE(test::wait_until([&] { return held_copy().has_value(); }, kDeadline));
        std::optional<Context> other = held_copy();
        try {
            other->sleep_for(kBlockForever);
            return Payload::value(std::string("slept"));
        } catch (const Cancelled&) {
            return Payload::value(std::string(ctx.cancelled() ? "woke: nap" : "woke: hold"));
        }
    });
    Portal portal = parent.connect("child", kDeadline);
    std::jthread holder([&] {
        try {
            (void)portal.open_context(
                "hold", {}, [](Context& ctx, const Payload&) { (void)ctx.wait_for_result(); });
            ADD_FAILURE() << "hold returned";
        } catch (const ContextCancelled& e) {
            EXPECT_EQ(e.canceller(), e.src_uid()) << "cancelled by itself";
        }
    });
    // 1. The caller's chain: nap's own context is cancelled while it sleeps on hold's.
    auto r = portal.open_context("nap", {}, [&](Context& ctx, const Payload&) {
        EXPECT_TRUE(test::wait_until([&] { return held_copy().has_value(); }, kDeadline));
        ctx.cancel(kDeadline);
    });
    EXPECT_TRUE(r.outcome.is_absorbed_cancel() ||
                (r.outcome.has_value() && r.outcome.value().value<std::string>() == "woke: nap"))
        << test::describe_error(r.outcome.error());
    // 2. The context's own cancel: hold cancels itself (child side) while nap sleeps on it.
    std::jthread canceller([&] {
        EXPECT_TRUE(test::wait_until([&] { return held_copy().has_value(); }, kDeadline));
        held_copy()->cancel();
    });
    EXPECT_EQ(portal.run("nap", {}, kDeadline).value<std::string>(), "woke: hold");
    canceller.join();
    holder.join();
}

}  // namespace
}  // namespace shmctx
