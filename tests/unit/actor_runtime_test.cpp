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

}  // namespace
}  // namespace shmctx
