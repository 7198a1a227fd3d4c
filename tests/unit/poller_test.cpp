// Poller (issue 5 item 6; DESIGN.md §5): one thread consuming many streams through the wake
// protocol, without a thread per stream. Actors in one process; every wait bounded.
#include "shmctx/poller.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "context_support.hpp"
#include "namespace_guard.hpp"
#include "process.hpp"
#include "shmctx/actor.hpp"
#include "shmctx/errors.hpp"

namespace shmctx {
namespace {

using namespace std::chrono_literals;
using ::testing::IsEmpty;

constexpr auto kDeadline = 20s;

class PollerTest : public test::ActorTest {
protected:
    PollerTest() : ActorTest("poll", std::chrono::seconds(120)) {}
};

/// "count": streams args = "n pause_every" messages carrying 0..n-1, pausing (on its own
/// stream's reverse direction: waiting for a "go" message) every `pause_every` messages so that
/// the consumer's streams go idle and the Poller must sleep, then returns n.
void expose_counter(Actor& actor) {
    actor.expose("count", [](Context& ctx, const Payload& args) {
        const auto n = args.value<std::int64_t>();
        ctx.started();
        MsgStream s = ctx.open_stream();
        for (std::int64_t i = 0; i < n; ++i) {
            s.send(Payload::value(i).view());
            if ((i + 1) % 16 == 0) (void)s.receive();  // the consumer's "go": paced bursts
        }
        s.close();
        return Payload::value(n);
    });
}

/// Opens `n` contexts nested (each body opens the next), so one thread holds every stream,
/// then runs `consume` in the innermost body.
void open_nested(Portal& portal, std::int64_t per_stream, std::size_t n,
                 std::vector<MsgStream>& streams, const std::function<void()>& consume) {
    if (streams.size() == n) {
        consume();
        return;
    }
    auto r = portal.open_context("count", Payload::value(per_stream).view(),
                                 [&](Context& ctx, const Payload&) {
                                     StreamOptions so;
                                     so.msg_buffer_size = 32;
                                     streams.push_back(ctx.open_stream(so));
                                     open_nested(portal, per_stream, n, streams, consume);
                                 });
    r.outcome.rethrow_if_error();
}

// One thread with a Poller consumes 100 streams: every message arrives once, in order per
// stream, and every stream ends with EndOfChannel; the producers pause every 16 messages until
// the consumer answers, so the Poller sleeps and must be woken by the rings.
TEST_F(PollerTest, OneThreadConsumesAHundredStreams) {
    Actor consumer("consumer", options());
    Actor producer("producer", options());
    expose_counter(producer);
    Portal portal = consumer.connect("producer", kDeadline);
    constexpr std::size_t kStreams = 100;
    const std::int64_t per_stream = static_cast<std::int64_t>(test::scaled(320, 64));
    std::vector<MsgStream> streams;
    streams.reserve(kStreams);  // the Poller holds pointers
    std::vector<std::int64_t> next(kStreams, 0);
    std::size_t ended = 0;
    std::size_t empty_waits = 0;
    open_nested(portal, per_stream, kStreams, streams, [&] {
        Poller poller;
        for (MsgStream& s : streams) poller.add(s);
        EXPECT_EQ(poller.size(), kStreams);
        const Deadline limit(60s);
        while (ended < kStreams && !limit.expired()) {
            const std::vector<MsgStream*> ready = poller.wait(kDeadline);
            if (ready.empty()) ++empty_waits;
            for (MsgStream* s : ready) {
                const auto i = static_cast<std::size_t>(s - streams.data());
                try {
                    const std::int64_t before = next[i];
                    (void)s->drain(
                        [&](const Message& m) {
                            ASSERT_EQ(m.value<std::int64_t>(), next[i]) << "stream " << i;
                            ++next[i];
                        },
                        64);
                    // After the batch (drain releases it as a whole): one "go" per burst.
                    for (std::int64_t b = before / 16; b < next[i] / 16; ++b) {
                        s->send(Payload::value("go").view());
                    }
                } catch (const EndOfChannel&) {
                    EXPECT_TRUE(poller.remove(*s));
                    ++ended;
                }
            }
        }
    });
    EXPECT_EQ(ended, kStreams);
    EXPECT_EQ(empty_waits, 0U) << "a wait ran out its deadline while streams had data";
    for (std::size_t i = 0; i < kStreams; ++i) EXPECT_EQ(next[i], per_stream) << "stream " << i;
}

// With nothing to receive, wait() returns empty at its deadline; a Poller refuses a stream
// twice; and a cancel of the waiting task's scope (the parent's cancel() reaching the child)
// ends the child's wait with shmctx::Cancelled.
TEST_F(PollerTest, WaitTimesOutEmptyAndIsCancellable) {
    Actor consumer("consumer", options());
    Actor producer("producer", options());
    std::atomic<int> child_saw{0};  // 1: timed out empty, 2: then cancelled
    producer.expose("poll_until_cancelled", [&](Context& ctx, const Payload&) {
        ctx.started();
        MsgStream s = ctx.open_stream();
        Poller poller;
        poller.add(s);
        EXPECT_THROW(poller.add(s), InvalidOperation);
        const auto t0 = Clock::now();
        if (poller.wait(50ms).empty() && Clock::now() - t0 >= 50ms) child_saw.store(1);
        try {
            (void)poller.wait(kDeadline);
        } catch (const Cancelled&) {
            if (child_saw.load() == 1) child_saw.store(2);
            throw;
        }
        return Payload{};
    });
    Portal portal = consumer.connect("producer", kDeadline);
    auto r = portal.open_context(
        "poll_until_cancelled", PayloadView{}, [&](Context& ctx, const Payload&) {
            MsgStream s = ctx.open_stream();
            ASSERT_TRUE(test::wait_until([&] { return child_saw.load() == 1; }, kDeadline));
            ctx.cancel();
        });
    EXPECT_TRUE(r.outcome.is_absorbed_cancel());
    EXPECT_EQ(child_saw.load(), 2);
}

// wait() with no stream raises InvalidOperation (it could only spin or hang; discrepancy 15),
// also after the last stream was removed; add() refuses a subscribed stream and a moved-from
// one (discrepancy 17), naming why.
TEST_F(PollerTest, WaitWithoutStreamsAndAddOfUnusableStreamsAreInvalid) {
    Poller empty;
    try {
        (void)empty.wait(kDeadline);
        ADD_FAILURE() << "wait() with no stream returned";
    } catch (const InvalidOperation& e) {
        EXPECT_THAT(e.what(), ::testing::HasSubstr("Poller::wait with no stream added"));
    }
    Actor consumer("consumer", options());
    Actor producer("producer", options());
    producer.expose("idle", [](Context& ctx, const Payload&) {
        ctx.started();
        MsgStream s = ctx.open_stream();
        for (const auto& msg : s) (void)msg;
        return Payload{};
    });
    Portal portal = consumer.connect("producer", kDeadline);
    for (int round = 0; round < 2; ++round) {
        auto r = portal.open_context("idle", PayloadView{}, [&](Context& ctx, const Payload&) {
            MsgStream s = ctx.open_stream();
            Poller poller;
            if (round == 0) {
                Subscription sub = s.subscribe();
                try {
                    poller.add(s);
                    ADD_FAILURE() << "a subscribed stream was added";
                } catch (const InvalidOperation& e) {
                    EXPECT_THAT(e.what(), ::testing::HasSubstr("has subscriptions"));
                }
                return;
            }
            MsgStream moved = std::move(s);
            try {
                poller.add(s);  // NOLINT(bugprone-use-after-move): the point of the test
                ADD_FAILURE() << "a moved-from stream was added";
            } catch (const InvalidOperation& e) {
                EXPECT_THAT(e.what(), ::testing::HasSubstr("Poller::add on a moved-from"));
            }
            poller.add(moved);
            EXPECT_TRUE(poller.wait(1ms).empty());
            EXPECT_TRUE(poller.remove(moved));
            EXPECT_THROW((void)poller.wait(kDeadline), InvalidOperation);
        });
        r.outcome.rethrow_if_error();
    }
}

}  // namespace
}  // namespace shmctx
