// Runtime basics of the actor layer (links, the control loop, a context's lifecycle) between
// actors in one process. The spec scenarios live in context_test.cpp; cross-process cases in
// tests/multiproc.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <string>

#include "namespace_guard.hpp"
#include "process.hpp"
#include "shmctx/actor.hpp"

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
    b.expose("boom", [](Context&, const Payload&) -> Payload {
        throw std::runtime_error("kaboom");
    });
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

}  // namespace
}  // namespace shmctx
