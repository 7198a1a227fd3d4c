// MsgStream::subscribe(): local fan-out of one stream to several readers in this process
// (issue 5 item 6; include/shmctx/subscription.hpp; docs/protocol.md "Subscriptions").
//
// Every test links two actors in this process: the child's endpoint `serve` answers commands the
// parent sends on the stream (n > 0: send the next n integers 0, 1, 2, ...; kEnd: return how many
// it sent; kBoom: throw), and the parent's body reads the child's messages through
// subscriptions. Fan-out is process-local, so no test spawns a process. Counts that must wrap the
// hub's ring many times are test::scaled. Every wait is bounded (kDeadline) and a watchdog turns
// a hang into a named failure.
#include "shmctx/subscription.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <latch>
#include <memory>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <typeinfo>
#include <utility>
#include <vector>

#include "context_support.hpp"
#include "core/cancel_scope.hpp"
#include "namespace_guard.hpp"
#include "process.hpp"
#include "shmctx/actor.hpp"
#include "shmctx/context.hpp"
#include "shmctx/errors.hpp"
#include "shmctx/payload.hpp"
#include "shmctx/poller.hpp"

namespace shmctx {
namespace {

using namespace std::chrono_literals;
using test::current_tid;
using test::thread_state;
using test::Watchdog;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

/// Bound of every wait on a condition: generous, since sanitizer builds run many times slower.
constexpr auto kDeadline = 30s;
/// A whole test must finish within this, else the watchdog aborts the binary.
constexpr auto kTestLimit = 240s;

constexpr std::int64_t kEnd = -1;
constexpr std::int64_t kBoom = -2;

/// Called by the child before it sends message number `seq` (0-based); blocks for flow control.
using Gate = std::function<void(std::uint64_t seq)>;

/// Sends `value`, waiting (bounded) while the parent's inbound ring is full: the parent reads
/// only as fast as its subscribers ask for messages.
void send_when_room(MsgStream& stream, std::int64_t value) {
    const Payload p = Payload::value(value);
    SendStatus status = SendStatus::ok;
    const bool sent = test::wait_until(
        [&] {
            status = stream.try_send(p.view());
            return status != SendStatus::full;
        },
        kDeadline);
    if (!sent || status != SendStatus::ok) {
        throw std::runtime_error("child: send of " + std::to_string(value) +
                                 " failed: " + std::string(to_string(status)));
    }
}

/// The child's endpoint (see the file comment). `sent` counts what it sent, for the parent.
Endpoint serve(Gate gate, std::atomic<std::uint64_t>& sent) {
    return [gate = std::move(gate), &sent](Context& ctx, const Payload&) -> Payload {
        ctx.started();
        auto stream = ctx.open_stream();
        std::uint64_t next = 0;
        for (const auto& msg : stream) {
            const auto command = msg.value<std::int64_t>();
            if (command == kEnd) break;
            if (command == kBoom) throw std::runtime_error("boom after " + std::to_string(next));
            for (std::int64_t i = 0; i < command; ++i) {
                if (gate) gate(next);
                send_when_room(stream, static_cast<std::int64_t>(next));
                ++next;
                sent.store(next);
            }
        }
        return Payload::value(next);
    };
}

void command(MsgStream& stream, std::int64_t c) { stream.send(Payload::value(c).view()); }

std::int64_t value_of(const Payload& p) { return p.value<std::int64_t>(); }

class SubscriptionTest : public test::ActorTest {
protected:
    SubscriptionTest()
        : ActorTest("sub", std::chrono::duration_cast<std::chrono::seconds>(kTestLimit)) {}
};

// ---------------------------------------------------------------------------------------------

// Several subscribers, each on its own thread, each read every message in stream order. The
// child never runs more than `capacity` messages ahead of the slowest reader, so nobody lags, and
// the count wraps the hub's ring hundreds of times.
TEST_F(SubscriptionTest, EverySubscriberOnItsOwnThreadSeesEveryMessageInOrder) {
    constexpr std::size_t kSubscribers = 4;
    constexpr std::size_t kCapacity = 128;
    const auto total = static_cast<std::int64_t>(test::scaled(100'000, 2'000));
    std::array<std::atomic<std::uint64_t>, kSubscribers> consumed{};
    const auto slowest = [&] {
        std::uint64_t m = UINT64_MAX;
        for (const auto& c : consumed) m = std::min(m, c.load());
        return m;
    };
    std::atomic<std::uint64_t> sent{0};
    Actor parent("parent", options());
    Actor child("child", options());
    child.expose("serve",
                 serve(
                     [&](std::uint64_t seq) {
                         if (!test::wait_until([&] { return seq + 1 <= slowest() + kCapacity; },
                                               kDeadline)) {
                             throw std::runtime_error("subscribers stalled");
                         }
                     },
                     sent));
    Portal portal = parent.connect("child");

    std::array<std::int64_t, kSubscribers> received{};
    std::array<std::int64_t, kSubscribers> out_of_order{};
    std::array<bool, kSubscribers> saw_end{};
    std::array<std::uint64_t, kSubscribers> lost{};
    auto r = portal.open_context("serve", {}, [&](Context& ctx, const Payload&) {
        auto stream = ctx.open_stream();
        std::vector<Subscription> subs;
        for (std::size_t i = 0; i < kSubscribers; ++i) {
            subs.push_back(stream.subscribe({.capacity = kCapacity}));
        }
        {
            std::vector<std::jthread> readers;
            for (std::size_t i = 0; i < kSubscribers; ++i) {
                readers.emplace_back([&, i] {
                    for (const Payload& p : subs[i]) {
                        if (value_of(p) != received[i]) ++out_of_order[i];
                        ++received[i];
                        consumed[i].store(static_cast<std::uint64_t>(received[i]));
                    }
                    saw_end[i] = true;  // range-for ends only at EndOfChannel
                    lost[i] = subs[i].lost();
                });
            }
            command(stream, total);
            command(stream, kEnd);
        }  // joins the readers
    });
    ASSERT_TRUE(r.outcome.has_value());
    EXPECT_EQ(r.outcome.value().value<std::int64_t>(), total);
    for (std::size_t i = 0; i < kSubscribers; ++i) {
        EXPECT_EQ(received[i], total) << "subscriber " << i;
        EXPECT_EQ(out_of_order[i], 0) << "subscriber " << i;
        EXPECT_TRUE(saw_end[i]) << "subscriber " << i;
        EXPECT_EQ(lost[i], 0U) << "subscriber " << i;
    }
}

// A subscriber that reads nothing while the others read everything gets one Lagged whose
// missed() is exactly what the ring overwrote, then the `capacity` newest messages in order, then
// EndOfChannel; try_receive() reports the same as `lagged` and lost().
TEST_F(SubscriptionTest, SlowSubscriberGetsLaggedWithTheExactCountThenContinues) {
    constexpr std::size_t kCapacity = 16;
    const auto total = static_cast<std::int64_t>(test::scaled(20'000, 1'000));
    std::atomic<std::uint64_t> fast_consumed{0};
    std::atomic<std::uint64_t> sent{0};
    Actor parent("parent", options());
    Actor child("child", options());
    child.expose(
        "serve",
        serve(
            [&](std::uint64_t seq) {
                // Only the fast reader paces the child.
                if (!test::wait_until([&] { return seq + 1 <= fast_consumed.load() + kCapacity; },
                                      kDeadline)) {
                    throw std::runtime_error("fast subscriber stalled");
                }
            },
            sent));
    Portal portal = parent.connect("child");

    auto r = portal.open_context("serve", {}, [&](Context& ctx, const Payload&) {
        auto stream = ctx.open_stream();
        Subscription fast = stream.subscribe({.capacity = kCapacity});
        Subscription slow = stream.subscribe();
        Subscription slow_try = stream.subscribe();
        EXPECT_EQ(slow.capacity(), kCapacity) << "the first subscribe() sizes the hub";
        std::int64_t fast_received = 0;
        {
            std::jthread reader([&] {
                for (const Payload& p : fast) {
                    EXPECT_EQ(value_of(p), fast_received);
                    ++fast_received;
                    fast_consumed.store(static_cast<std::uint64_t>(fast_received));
                }
            });
            command(stream, total);
            command(stream, kEnd);
        }
        ASSERT_EQ(fast_received, total);
        const auto expected_missed = static_cast<std::uint64_t>(total) - kCapacity;

        EXPECT_EQ(slow.pending(), kCapacity);
        try {
            (void)slow.receive();
            ADD_FAILURE() << "a subscriber " << total << " messages behind got a message";
        } catch (const Lagged& e) {
            EXPECT_EQ(e.missed(), expected_missed);
            EXPECT_EQ(e.code(), make_error_code(Errc::lagged));
            EXPECT_THAT(e.what(), HasSubstr(std::to_string(expected_missed)));
        }
        EXPECT_EQ(slow.lost(), expected_missed);
        for (std::size_t k = 0; k < kCapacity; ++k) {
            const std::optional<Payload> p = slow.receive_for(kDeadline);
            ASSERT_TRUE(p.has_value()) << "message " << k << " after the lag";
            EXPECT_EQ(value_of(*p), static_cast<std::int64_t>(expected_missed + k));
        }
        EXPECT_THROW((void)slow.receive(), EndOfChannel);
        EXPECT_THROW((void)slow.receive(), EndOfChannel) << "the end is raised again";

        Payload p;
        EXPECT_EQ(slow_try.try_receive(p), RecvStatus::lagged);
        EXPECT_EQ(slow_try.lost(), expected_missed);
        for (std::size_t k = 0; k < kCapacity; ++k) {
            ASSERT_EQ(slow_try.try_receive(p), RecvStatus::ok) << "message " << k;
            EXPECT_EQ(value_of(p), static_cast<std::int64_t>(expected_missed + k));
        }
        EXPECT_EQ(slow_try.try_receive(p), RecvStatus::end_of_channel);
    });
    ASSERT_TRUE(r.outcome.has_value());
    EXPECT_EQ(r.outcome.value().value<std::int64_t>(), total);
}

// The first subscription also gets what was already waiting in the stream; a later one starts
// with the next message to arrive.
TEST_F(SubscriptionTest, LateSubscriberSeesOnlyLaterMessages) {
    std::atomic<std::uint64_t> sent{0};
    Actor parent("parent", options());
    Actor child("child", options());
    child.expose("serve", serve({}, sent));
    Portal portal = parent.connect("child");

    auto r = portal.open_context("serve", {}, [&](Context& ctx, const Payload&) {
        auto stream = ctx.open_stream();
        command(stream, 5);
        ASSERT_TRUE(test::wait_until([&] { return sent.load() == 5; }, kDeadline));
        Subscription early = stream.subscribe();  // 0-4 wait in the stream, not yet received
        for (std::int64_t v = 0; v < 5; ++v) {
            const auto p = early.receive_for(kDeadline);
            ASSERT_TRUE(p.has_value());
            EXPECT_EQ(value_of(*p), v);
        }
        Subscription late = stream.subscribe();
        EXPECT_EQ(late.pending(), 0U);
        Payload p;
        EXPECT_EQ(late.try_receive(p), RecvStatus::empty);
        command(stream, 5);
        for (std::int64_t v = 5; v < 10; ++v) {
            const auto a = early.receive_for(kDeadline);
            ASSERT_TRUE(a.has_value());
            EXPECT_EQ(value_of(*a), v);
        }
        EXPECT_EQ(late.pending(), 5U);
        for (std::int64_t v = 5; v < 10; ++v) {
            const auto b = late.receive_for(kDeadline);
            ASSERT_TRUE(b.has_value());
            EXPECT_EQ(value_of(*b), v) << "the late subscriber starts after what it missed";
        }
        command(stream, kEnd);
        EXPECT_THROW((void)early.receive(), EndOfChannel);
        EXPECT_THROW((void)late.receive(), EndOfChannel);
    });
    ASSERT_TRUE(r.outcome.has_value());
    EXPECT_EQ(r.outcome.value().value<std::int64_t>(), 10);
}

// The context's remote error reaches every subscriber, blocked on its own thread, after the
// messages received before it; it is the same error object for all and is raised again. A
// failing endpoint's stream is closed while its exception unwinds, so its Stop precedes its
// Error: a subscriber may see EndOfChannel first, exactly as a direct receiver would, and then
// the error from its next receive once the error is recorded.
TEST_F(SubscriptionTest, RemoteErrorReachesEverySubscriberAfterItsMessages) {
    constexpr std::size_t kSubscribers = 3;
    constexpr std::int64_t kBefore = 5;
    std::atomic<std::uint64_t> sent{0};
    Actor parent("parent", options());
    Actor child("child", options());
    child.expose("serve", serve({}, sent));
    Portal portal = parent.connect("child");

    std::array<std::atomic<std::int64_t>, kSubscribers> received{};
    std::array<const RemoteActorError*, kSubscribers> errors{};
    std::array<bool, kSubscribers> raised_again{};
    std::array<bool, kSubscribers> end_first{};
    std::array<RecvStatus, kSubscribers> try_status{};
    try {
        portal.open_context("serve", {}, [&](Context& ctx, const Payload&) {
            auto stream = ctx.open_stream();
            std::vector<Subscription> subs;
            for (std::size_t i = 0; i < kSubscribers; ++i) subs.push_back(stream.subscribe());
            std::vector<std::jthread> readers;
            for (std::size_t i = 0; i < kSubscribers; ++i) {
                readers.emplace_back([&, i] {
                    try {
                        for (;;) {
                            EXPECT_EQ(value_of(subs[i].receive()), received[i].load());
                            received[i].fetch_add(1);
                        }
                    } catch (const RemoteActorError& e) {
                        errors[i] = &e;
                    } catch (const EndOfChannel&) {
                        end_first[i] = true;
                    }
                    if (errors[i] == nullptr) {
                        EXPECT_TRUE(test::wait_until([&] { return ctx.remote_error() != nullptr; },
                                                     kDeadline));
                        try {
                            (void)subs[i].receive();
                            ADD_FAILURE() << "a message after the end";
                        } catch (const RemoteActorError& e) {
                            errors[i] = &e;
                        } catch (const EndOfChannel&) {
                            ADD_FAILURE() << "EndOfChannel again after the error was recorded";
                        }
                    }
                    try {
                        (void)subs[i].receive();
                    } catch (const RemoteActorError& e) {
                        raised_again[i] = &e == errors[i];
                    }
                    Payload p;
                    try_status[i] = subs[i].try_receive(p);
                });
            }
            command(stream, kBefore);
            // The error must not overtake the messages: let every reader have them first.
            ASSERT_TRUE(test::wait_until(
                [&] {
                    return std::all_of(received.begin(), received.end(),
                                       [&](const auto& n) { return n.load() == kBefore; });
                },
                kDeadline));
            command(stream, kBoom);
        });
        ADD_FAILURE() << "open_context returned";
    } catch (const RemoteActorError& e) {
        EXPECT_TRUE(e.boxed_is<std::runtime_error>()) << e.boxed_type_name();
        EXPECT_THAT(e.message(), HasSubstr("boom after 5"));
    }
    for (std::size_t i = 0; i < kSubscribers; ++i) {
        EXPECT_EQ(received[i].load(), kBefore) << "subscriber " << i;
        ASSERT_NE(errors[i], nullptr) << "subscriber " << i << " saw no RemoteActorError";
        EXPECT_EQ(errors[i], errors[0]) << "subscriber " << i << ": not the same error object";
        EXPECT_TRUE(raised_again[i]) << "subscriber " << i;
        EXPECT_EQ(try_status[i], RecvStatus::peer_error) << "subscriber " << i;
        RecordProperty("subscriber" + std::to_string(i) + "_end_first",
                       end_first[i] ? "true" : "false");
    }
}

// Destroying the MsgStream closes the stream as before; the subscriptions keep the hub, read
// what it buffered, then see EndOfChannel. The child sees the Stop and ends normally.
TEST_F(SubscriptionTest, DroppingTheStreamEndsSubscriptionsAfterTheirBufferedMessages) {
    std::atomic<std::uint64_t> sent{0};
    Actor parent("parent", options());
    Actor child("child", options());
    child.expose("serve", serve({}, sent));
    Portal portal = parent.connect("child");

    auto r = portal.open_context("serve", {}, [&](Context& ctx, const Payload&) {
        std::optional<MsgStream> stream(ctx.open_stream());
        Subscription a = stream->subscribe({.capacity = 8});
        Subscription b = stream->subscribe();
        command(*stream, 8);
        for (std::int64_t v = 0; v < 8; ++v) {
            const auto p = a.receive_for(kDeadline);
            ASSERT_TRUE(p.has_value());
            EXPECT_EQ(value_of(*p), v);
        }
        stream.reset();
        EXPECT_THROW((void)a.receive(), EndOfChannel);
        for (std::int64_t v = 0; v < 8; ++v) {
            const auto p = b.receive_for(kDeadline);
            ASSERT_TRUE(p.has_value());
            EXPECT_EQ(value_of(*p), v);
        }
        EXPECT_THROW((void)b.receive(), EndOfChannel);
        // Dropping one subscription leaves the other as it was.
        { Subscription gone = std::move(a); }
        EXPECT_THROW((void)b.receive(), EndOfChannel);
        EXPECT_THROW((void)a.receive(), InvalidOperation) << "a moved-from Subscription";
    });
    ASSERT_TRUE(r.outcome.has_value());
    EXPECT_EQ(r.outcome.value().value<std::int64_t>(), 8);
}

// A subscriber blocked in receive() is cancelled by its own cancel scope, whether it was the
// one receiving from the stream or one waiting for it; the hub carries on for the others, and a
// receive_for() that times out leaves nothing behind either.
TEST_F(SubscriptionTest, BlockedReceivesAreCancelledByTheirScopeAndTheHubCarriesOn) {
    std::atomic<std::uint64_t> sent{0};
    Actor parent("parent", options());
    Actor child("child", options());
    child.expose("serve", serve({}, sent));
    Portal portal = parent.connect("child");

    auto r = portal.open_context("serve", {}, [&](Context& ctx, const Payload&) {
        auto stream = ctx.open_stream();
        Subscription a = stream.subscribe();
        Subscription b = stream.subscribe();
        Subscription c = stream.subscribe();
        EXPECT_FALSE(c.receive_for(20ms).has_value()) << "nothing was sent";

        detail::CancelScope root;
        std::array<std::atomic<pid_t>, 2> tids{};
        std::array<std::atomic<bool>, 2> cancelled{};
        std::array<std::atomic<bool>, 2> returned{};
        {
            std::array<Subscription*, 2> subs{&a, &b};
            std::vector<std::jthread> readers;
            for (std::size_t i = 0; i < 2; ++i) {
                readers.emplace_back([&, i] {
                    detail::CancelScope scope(&root);
                    const detail::ScopeEntry entry(scope);
                    tids[i] = current_tid();
                    try {
                        (void)subs[i]->receive();
                        returned[i] = true;
                    } catch (const Cancelled&) {
                        cancelled[i] = true;
                    }
                });
            }
            // Both asleep: one in the stream's receive, the other waiting for it.
            EXPECT_TRUE(test::wait_until(
                [&] {
                    return std::all_of(tids.begin(), tids.end(), [](const auto& t) {
                        return t.load() != 0 && thread_state(t.load()) == 'S';
                    });
                },
                kDeadline));
            // A third subscriber with a timeout waits behind them and gives up on time.
            EXPECT_FALSE(c.receive_for(20ms).has_value());
            root.cancel();
        }  // joins
        for (std::size_t i = 0; i < 2; ++i) {
            EXPECT_TRUE(cancelled[i]) << "reader " << i;
            EXPECT_FALSE(returned[i]) << "reader " << i;
        }
        command(stream, 3);
        for (Subscription* s : {&a, &b, &c}) {
            for (std::int64_t v = 0; v < 3; ++v) {
                const auto p = s->receive_for(kDeadline);
                ASSERT_TRUE(p.has_value()) << "value " << v;
                EXPECT_EQ(value_of(*p), v);
            }
        }
        command(stream, kEnd);
    });
    ASSERT_TRUE(r.outcome.has_value());
    EXPECT_EQ(r.outcome.value().value<std::int64_t>(), 3);
}

// After subscribe() the hub is the stream's only receiver: receiving directly on the MsgStream
// is an InvalidOperation (try_receive: peer_error); sending is unaffected.
TEST_F(SubscriptionTest, DirectReceiveAfterSubscribeIsInvalidAndSendingStillWorks) {
    std::atomic<std::uint64_t> sent{0};
    Actor parent("parent", options());
    Actor child("child", options());
    child.expose("serve", serve({}, sent));
    Portal portal = parent.connect("child");

    auto r = portal.open_context("serve", {}, [&](Context& ctx, const Payload&) {
        auto stream = ctx.open_stream();
        EXPECT_THROW((void)stream.subscribe({.capacity = 0}), std::invalid_argument);
        Message m;
        EXPECT_EQ(stream.try_receive(m), RecvStatus::empty) << "not subscribed yet";
        Subscription sub = stream.subscribe({.capacity = 4});
        try {
            (void)stream.receive();
            ADD_FAILURE() << "receive() after subscribe() returned";
        } catch (const InvalidOperation& e) {
            EXPECT_THAT(e.what(), HasSubstr("subscribe()"));
        }
        EXPECT_THROW((void)stream.receive_for(1ms), InvalidOperation);
        EXPECT_EQ(stream.try_receive(m), RecvStatus::peer_error);
        EXPECT_THROW((void)stream.drain([](const Message&) {}, 8), InvalidOperation);
        Poller poller;
        EXPECT_THROW(poller.add(stream), InvalidOperation) << "the hub is the only receiver";
        EXPECT_THROW(
            {
                for (const auto& msg : stream) (void)msg;
            },
            InvalidOperation);
        command(stream, 2);
        for (std::int64_t v = 0; v < 2; ++v) {
            const auto p = sub.receive_for(kDeadline);
            ASSERT_TRUE(p.has_value());
            EXPECT_EQ(value_of(*p), v);
        }
        EXPECT_EQ(stream.subscribe({.capacity = 99}).capacity(), 4U) << "joins the first hub";
        // Moving the stream moves the hub with it.
        MsgStream moved = std::move(stream);
        EXPECT_THROW((void)moved.receive(), InvalidOperation);
        command(moved, kEnd);
        EXPECT_THROW((void)sub.receive(), EndOfChannel);
    });
    ASSERT_TRUE(r.outcome.has_value());
    EXPECT_EQ(r.outcome.value().value<std::int64_t>(), 2);
}

// subscribe() from several threads at once: one hub, every subscriber gets the next message.
TEST_F(SubscriptionTest, ConcurrentFirstSubscribesJoinOneHub) {
    constexpr std::size_t kThreads = 4;
    std::atomic<std::uint64_t> sent{0};
    Actor parent("parent", options());
    Actor child("child", options());
    child.expose("serve", serve({}, sent));
    Portal portal = parent.connect("child");

    auto r = portal.open_context("serve", {}, [&](Context& ctx, const Payload&) {
        auto stream = ctx.open_stream();
        std::vector<std::optional<Subscription>> subs(kThreads);
        {
            std::latch start(kThreads);
            std::vector<std::jthread> threads;
            for (std::size_t i = 0; i < kThreads; ++i) {
                threads.emplace_back([&, i] {
                    start.arrive_and_wait();
                    subs[i].emplace(stream.subscribe({.capacity = 8 + i}));
                });
            }
        }
        const std::size_t capacity = subs[0]->capacity();
        command(stream, 1);
        for (std::size_t i = 0; i < kThreads; ++i) {
            EXPECT_EQ(subs[i]->capacity(), capacity) << "subscriber " << i << ": another hub";
            const auto p = subs[i]->receive_for(kDeadline);
            ASSERT_TRUE(p.has_value()) << "subscriber " << i;
            EXPECT_EQ(value_of(*p), 0);
        }
        command(stream, kEnd);
    });
    ASSERT_TRUE(r.outcome.has_value());
}

// Many readers, some stalling at random, a ring of 8 and no flow control: whatever each one
// gets is the stream in order except for gaps that are exactly its Lagged counts, and what it
// received plus what it lost is everything. Exercises the puller hand-off under sanitizers.
TEST_F(SubscriptionTest, RandomlyStallingReadersAccountForEveryMessage) {
    constexpr std::size_t kReaders = 4;
    constexpr std::size_t kCapacity = 8;
    const auto total = static_cast<std::int64_t>(test::scaled(50'000, 2'000));
    std::atomic<std::uint64_t> sent{0};
    Actor parent("parent", options());
    Actor child("child", options());
    child.expose("serve", serve({}, sent));
    Portal portal = parent.connect("child");

    struct Tally {
        std::int64_t received = 0;
        std::uint64_t lagged = 0;  // sum of Lagged::missed()
        std::int64_t bad_gaps = 0;
        std::uint64_t lost = 0;
        bool saw_end = false;
    };
    std::array<Tally, kReaders> tally{};
    auto r = portal.open_context("serve", {}, [&](Context& ctx, const Payload&) {
        auto stream = ctx.open_stream();
        std::vector<Subscription> subs;
        for (std::size_t i = 0; i < kReaders; ++i) {
            subs.push_back(stream.subscribe({.capacity = kCapacity}));
        }
        {
            std::vector<std::jthread> readers;
            for (std::size_t i = 0; i < kReaders; ++i) {
                readers.emplace_back([&, i] {
                    Tally& t = tally[i];
                    std::minstd_rand rng(static_cast<unsigned>(i) + 1);
                    std::int64_t expect = 0;
                    for (;;) {
                        try {
                            const Payload p = subs[i].receive();
                            if (value_of(p) != expect) ++t.bad_gaps;
                            expect = value_of(p) + 1;
                            ++t.received;
                        } catch (const Lagged& e) {
                            t.lagged += e.missed();
                            expect += static_cast<std::int64_t>(e.missed());
                        } catch (const EndOfChannel&) {
                            t.saw_end = true;
                            break;
                        }
                        // Half the readers stall now and then (a burst of yields, not a sleep:
                        // only the interleaving matters).
                        if (i % 2 == 1 && rng() % 64 == 0) {
                            for (auto k = rng() % 2000; k > 0; --k) std::this_thread::yield();
                        }
                    }
                    t.lost = subs[i].lost();
                });
            }
            command(stream, total);
            command(stream, kEnd);
        }
    });
    ASSERT_TRUE(r.outcome.has_value());
    for (std::size_t i = 0; i < kReaders; ++i) {
        const Tally& t = tally[i];
        EXPECT_TRUE(t.saw_end) << "reader " << i;
        EXPECT_EQ(t.bad_gaps, 0) << "reader " << i << ": a gap that no Lagged accounts for";
        EXPECT_EQ(t.received + static_cast<std::int64_t>(t.lagged), total) << "reader " << i;
        EXPECT_EQ(t.lost, t.lagged) << "reader " << i;
        RecordProperty("reader" + std::to_string(i) + "_lost", std::to_string(t.lost));
    }
}

// A Lagged escaping an endpoint reaches the parent boxed, resolvable to the Lagged type.
TEST_F(SubscriptionTest, LaggedEscapingAnEndpointArrivesBoxedAsLagged) {
    Actor parent("parent", options());
    Actor child("child", options());
    child.expose("lag", [](Context&, const Payload&) -> Payload { throw Lagged(7); });
    Portal portal = parent.connect("child");
    try {
        (void)portal.run("lag", {});
        ADD_FAILURE() << "run() returned";
    } catch (const RemoteActorError& e) {
        EXPECT_TRUE(e.boxed_is<Lagged>()) << e.boxed_type_name();
        EXPECT_EQ(e.boxed_type_name(), "Lagged");
        EXPECT_THAT(e.message(), HasSubstr("lost 7 messages"));
    }
}

TEST(LaggedError, IsRegisteredWithItsOwnCodeAndName) {
    const Lagged e(3);
    EXPECT_EQ(e.missed(), 3U);
    EXPECT_EQ(e.code(), make_error_code(Errc::lagged));
    EXPECT_EQ(e.code().message(), "lagged");
    EXPECT_THAT(e.what(), HasSubstr("lost 3 messages"));
    EXPECT_EQ(error_type_name<Lagged>(), "Lagged");
    ASSERT_NE(find_error_type("Lagged"), nullptr);
    EXPECT_EQ(*find_error_type("Lagged"), typeid(Lagged));
    EXPECT_EQ(to_string(RecvStatus::lagged), "lagged");
}

}  // namespace
}  // namespace shmctx
