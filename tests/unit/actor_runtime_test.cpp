// Runtime basics of the actor layer (links, the control loop, a context's lifecycle) between
// actors in one process. The spec scenarios live in context_test.cpp; cross-process cases in
// tests/multiproc.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <latch>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "namespace_guard.hpp"
#include "process.hpp"
#include "shmctx/actor.hpp"
#include "shmctx/shm/actor_file.hpp"
#include "until_cancelled.hpp"

namespace shmctx {
namespace {

using test::NamespaceGuard;
using namespace std::chrono_literals;

ActorOptions in(const NamespaceGuard& ns) {
    ActorOptions o;
    o.ns = ns.names.ns();
    return o;
}

TEST(ActorRuntime, LinksBothWaysAndLeavesNothingBehind) {
    NamespaceGuard ns("rt-link");
    {
        Actor a("a", in(ns));
        Actor b("b", in(ns));
        Portal p = a.connect("b", 5s);
        EXPECT_EQ(p.peer(), b.uid());
        EXPECT_EQ(a.links(), 1U);
        EXPECT_TRUE(test::wait_until([&] { return b.links() == 1U; }));
        // Connecting again reuses the link; the other direction finds it too.
        Portal again = a.connect("b", 5s);
        Portal back = b.connect("a", 5s);
        EXPECT_EQ(back.peer(), a.uid());
        EXPECT_EQ(a.links(), 1U);
    }
    EXPECT_THAT(test::all_objects(ns.names), ::testing::IsEmpty());
}

TEST(ActorRuntime, ContextRoundTripReturnsTheValueAndTheStartedValue) {
    NamespaceGuard ns("rt-ctx");
    Actor a("a", in(ns));
    Actor b("b", in(ns));
    b.expose("inc", [](Context& ctx, const Payload& args) {
        ctx.started(Payload::value(args.value<std::int64_t>() + 1));
        return Payload::value(std::string("yo"));
    });
    Portal p = a.connect("b", 5s);
    auto r = p.open_context("inc", Payload::value(10), [](Context& ctx, const Payload& first) {
        EXPECT_EQ(ctx.side(), Side::parent);
        return first.value<std::int64_t>();
    });
    ASSERT_TRUE(r.value.has_value());
    EXPECT_EQ(*r.value, 11);
    EXPECT_EQ(r.outcome.value().value<std::string>(), "yo");
    EXPECT_EQ(p.run("inc", Payload::value(1)).value<std::string>(), "yo");
    EXPECT_TRUE(test::wait_until([&] { return a.open_contexts() == 0 && b.open_contexts() == 0; }));
}

TEST(ActorRuntime, StreamsBothWaysInOrderAndEndsWithTheStop) {
    NamespaceGuard ns("rt-stream");
    Actor a("a", in(ns));
    Actor b("b", in(ns));
    b.expose("echo", [](Context& ctx, const Payload&) {
        ctx.started();
        auto stream = ctx.open_stream();
        std::int64_t n = 0;
        for (auto& msg : stream) {
            stream.send(msg.view());
            ++n;
        }
        return Payload::value(n);
    });
    Portal p = a.connect("b", 5s);
    const int count = static_cast<int>(test::scaled(1000));
    auto r = p.open_context("echo", {}, [&](Context& ctx, const Payload&) {
        auto stream = ctx.open_stream();
        for (int i = 0; i < count; ++i) {
            stream.send(Payload::value(i));
            Message m = stream.receive();
            EXPECT_EQ(m.value<std::int64_t>(), i);
        }
        stream.close();
        EXPECT_THROW((void)stream.receive(), EndOfChannel);
    });
    EXPECT_EQ(r.outcome.value().value<std::int64_t>(), count);
}

TEST(ActorRuntime, ChildErrorIsRaisedAtTheParentWithItsSource) {
    NamespaceGuard ns("rt-err");
    Actor a("a", in(ns));
    Actor b("b", in(ns));
    b.expose("boom",
             [](Context&, const Payload&) -> Payload { throw std::runtime_error("kaboom"); });
    Portal p = a.connect("b", 5s);
    try {
        (void)p.open_context("boom", {}, [](Context&, const Payload&) {});
        ADD_FAILURE() << "no error";
    } catch (const RemoteActorError& e) {
        EXPECT_EQ(e.src_uid(), b.uid());
        EXPECT_THAT(e.message(), ::testing::HasSubstr("kaboom"));
    }
    try {
        (void)p.run("nope");
        ADD_FAILURE() << "no error";
    } catch (const RemoteActorError& e) {
        EXPECT_TRUE(e.boxed_is<NotExposed>());
        EXPECT_THAT(e.message(), ::testing::HasSubstr("not exposed"));
    }
}

TEST(ActorRuntime, SimultaneousConnectsConvergeOnOneLinkPerPair) {
    NamespaceGuard ns("rt-converge");
    const int rounds = static_cast<int>(test::scaled(20)) + 1;
    for (int round = 0; round < rounds; ++round) {
        Actor a("a", in(ns));
        Actor b("b", in(ns));
        std::latch go(2);
        std::optional<Portal> ab;
        std::optional<Portal> ba;
        std::thread ta([&] {
            go.arrive_and_wait();
            ab.emplace(a.connect("b", 5s));
        });
        std::thread tb([&] {
            go.arrive_and_wait();
            ba.emplace(b.connect("a", 5s));
        });
        ta.join();
        tb.join();
        ASSERT_TRUE(ab && ba);
        EXPECT_EQ(a.links(), 1U);
        EXPECT_EQ(b.links(), 1U);
        // Exactly the two arenas of the pair exist, and the link works both ways.
        EXPECT_EQ(ns.names.list("link").size(), 2U);
        b.expose("id", [](Context&, const Payload& args) { return Payload::copy(args); });
        a.expose("id", [](Context&, const Payload& args) { return Payload::copy(args); });
        EXPECT_EQ(ab->run("id", Payload::value(round)).value<int>(), round);
        EXPECT_EQ(ba->run("id", Payload::value(round)).value<int>(), round);
    }
    EXPECT_THAT(test::all_objects(ns.names), ::testing::IsEmpty());
}

TEST(ActorRuntime, ConnectToAMissingActorNamesActorAndNamespace) {
    NamespaceGuard ns("rt-missing");
    Actor a("a", in(ns));
    try {
        (void)a.connect("ghost", 50ms);
        ADD_FAILURE() << "connected to nobody";
    } catch (const ActorNotFound& e) {
        EXPECT_THAT(e.what(), ::testing::HasSubstr("'ghost'"));
        EXPECT_THAT(e.what(), ::testing::HasSubstr(ns.names.ns()));
    }
}

TEST(ActorRuntime, PeerShutdownFailsItsContextsWithTransportClosed) {
    NamespaceGuard ns("rt-shutdown");
    Actor a("a", in(ns));
    auto b = std::make_unique<Actor>("b", in(ns));
    std::latch entered(1);
    b->expose("wait", [&](Context& ctx, const Payload&) {
        ctx.started();
        entered.count_down();
        test::until_cancelled(ctx, 60s);  // until b shuts down
        return Payload{};
    });
    Portal p = a.connect("b", 5s);
    std::thread closer([&] {
        entered.wait();
        b.reset();  // orderly: cancels the endpoint, closes the link
    });
    try {
        (void)p.open_context("wait", {},
                             [](Context& ctx, const Payload&) { (void)ctx.wait_for_result(); });
        ADD_FAILURE() << "the context survived its peer's shutdown";
    } catch (const ContextCancelled& e) {
        // The endpoint's ctxc (canceller: b itself) may arrive before the LinkClose.
        EXPECT_EQ(e.src_uid().name, "b");
    } catch (const TransportClosed&) {
    }
    closer.join();
    EXPECT_TRUE(test::wait_until([&] { return a.links() == 0U; }));
}

// ~Actor releases its name and removes its objects even while handles onto it live (they hold
// only mappings): a new Actor of that name starts at once, and the stale handles fail with
// TransportClosed naming the destroyed actor (docs/semantics.md, discrepancy 11).
TEST(ActorRuntime, DestroyedActorReleasesItsNameWhileItsPortalLives) {
    NamespaceGuard ns("rt-release");
    Actor b("b", in(ns));
    b.expose("id", [](Context& ctx, const Payload& args) {
        ctx.started();
        return Payload::copy(args);
    });
    auto x = std::make_unique<Actor>("x", in(ns));
    const Uid old_uid = x->uid();
    std::optional<Portal> stale = x->connect("b", 5s);
    std::optional<Context> stale_ctx;
    (void)stale->open_context("id", Payload::value(1), [&](Context& ctx, const Payload&) {
        stale_ctx.emplace(ctx.handle());
    });
    x.reset();

    // The name and the objects are gone with ~Actor, not with the last handle.
    EXPECT_EQ(shm::lock_state(ns.names, "x"), shm::LockState::absent);
    EXPECT_THAT(ns.names.list("seg"), ::testing::Not(::testing::Contains("x")));
    Actor again("x", in(ns));  // NameTaken before the fix

    // The stale handles fail cleanly, naming the destroyed actor.
    try {
        (void)stale->open_context("id", {}, [](Context&, const Payload&) {});
        ADD_FAILURE() << "a portal of a destroyed actor opened a context";
    } catch (const TransportClosed& e) {
        EXPECT_THAT(e.what(), ::testing::HasSubstr(old_uid.to_string()));
    }
    EXPECT_THROW((void)stale->run("id", Payload::value(2)), TransportClosed);
    EXPECT_FALSE(stale->cancel_actor(100ms));
    EXPECT_EQ(stale_ctx->state(), State::result_returned);
    EXPECT_EQ(stale_ctx->outcome().value().value<int>(), 1);

    // The old core goes last: it must not remove what the new actor published under the name.
    stale_ctx.reset();
    stale.reset();
    EXPECT_EQ(shm::lock_state(ns.names, "x"), shm::LockState::held);
    again.expose("id", [](Context&, const Payload& args) { return Payload::copy(args); });
    EXPECT_EQ(b.connect("x", 5s).run("id", Payload::value(3)).value<int>(), 3);
}

// Portal::cancel_called() means cancel_actor() was called on the link, even when the link was
// down and nothing could be sent (discrepancy 19).
TEST(ActorRuntime, CancelActorOnALostLinkReturnsFalseAndCountsAsCalled) {
    NamespaceGuard ns("rt-cancel-down");
    Actor a("a", in(ns));
    auto b = std::make_unique<Actor>("b", in(ns));
    Portal p = a.connect("b", 5s);
    b.reset();
    ASSERT_TRUE(test::wait_until([&] { return a.links() == 0U; }));
    EXPECT_FALSE(p.cancel_called());
    EXPECT_FALSE(p.cancel_actor(100ms));
    EXPECT_TRUE(p.cancel_called());
}

// Every ActorOptions field outside its documented bound is refused by the constructor with
// std::invalid_argument naming the field, the value and the bound, before anything is claimed
// or created (discrepancy 12); the smallest accepted data ring and arena carry a stream.
TEST(ActorRuntime, ActorOptionsOutOfBoundsAreRefusedNamingFieldValueAndBound) {
    NamespaceGuard ns("rt-options");
    struct Case {
        void (*mutate)(ActorOptions&);
        const char* text;  // field, value and bound
    };
    const Case cases[] = {
        {[](ActorOptions& o) { o.mode = 0400; },
         "mode = 0400: must be within 0777 and include 0600"},
        {[](ActorOptions& o) { o.mode = 01600; }, "mode = 01600: must be within 0777"},
        {[](ActorOptions& o) { o.max_endpoints = 0; }, "max_endpoints = 0: must be at least 1"},
        {[](ActorOptions& o) { o.endpoint_idle_timeout = -1ms; },
         "endpoint_idle_timeout = -1000000 ns: is negative"},
        {[](ActorOptions& o) { o.msg_buffer_size = 0; }, "msg_buffer_size = 0: must be at least 1"},
        {[](ActorOptions& o) { o.data_ring_bytes = 2048; },
         "data_ring_bytes = 2048: must be a power of two in [4096, 2^40]"},
        {[](ActorOptions& o) { o.data_ring_bytes = 12288; },
         "data_ring_bytes = 12288: must be a power of two"},
        {[](ActorOptions& o) { o.arena_bytes = (std::size_t{256} << 20) + 1; },
         "arena_bytes = 268435457: must be a multiple of 4096 of at least 1052672"},
        {[](ActorOptions& o) { o.arena_bytes = 1052672 - 4096; },
         "arena_bytes = 1048576: must be a multiple of 4096 of at least 1052672 (the control "
         "ring and one data ring of data_ring_bytes = 262144)"},
        {[](ActorOptions& o) { o.max_control_record_bytes = 1023; },
         "max_control_record_bytes = 1023: must be in [1024, 65520]"},
        {[](ActorOptions& o) { o.max_control_record_bytes = 65521; },
         "max_control_record_bytes = 65521: must be in [1024, 65520]"},
        {[](ActorOptions& o) { o.spin_before_sleep = -1ns; },
         "spin_before_sleep = -1 ns: is negative"},
        {[](ActorOptions& o) { o.heartbeat_interval = 0ms; },
         "heartbeat_interval = 0 ns: must be positive"},
        {[](ActorOptions& o) { o.unresponsive_after = o.heartbeat_interval; },
         "unresponsive_after = 100000000 ns: must be longer than heartbeat_interval = "
         "100000000 ns"},
        {[](ActorOptions& o) { o.unresponsive_timeout = 1s; },
         "unresponsive_timeout = 1000000000 ns: must be 0 (off) or at least "
         "unresponsive_after = 2000000000 ns"},
    };
    for (const Case& c : cases) {
        ActorOptions o = in(ns);
        c.mutate(o);
        try {
            Actor refused("a", o);
            ADD_FAILURE() << "accepted: " << c.text;
        } catch (const std::invalid_argument& e) {
            EXPECT_THAT(e.what(), ::testing::HasSubstr(std::string("ActorOptions::") + c.text));
        }
        EXPECT_THAT(test::all_objects(ns.names), ::testing::IsEmpty()) << c.text;
    }
    // The bounds themselves are accepted and work: the smallest data ring and the smallest
    // arena for it carry a stream.
    ActorOptions smallest = in(ns);
    smallest.data_ring_bytes = 4096;
    smallest.arena_bytes = 4096 + (std::size_t{512} << 10) + 8192;
    smallest.max_control_record_bytes = 1024;
    Actor a("a", smallest);
    Actor b("b", smallest);
    b.expose("echo", [](Context& ctx, const Payload&) {
        ctx.started();
        auto stream = ctx.open_stream();
        for (auto& msg : stream) stream.send(msg.view());
        return Payload{};
    });
    auto r = a.connect("b", 5s).open_context("echo", {}, [](Context& ctx, const Payload&) {
        auto stream = ctx.open_stream();
        stream.send("ping");
        return std::string(stream.receive().text());
    });
    EXPECT_EQ(r.value, "ping");
}

}  // namespace
}  // namespace shmctx
