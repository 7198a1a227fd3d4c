// Streams and overrun policies (issue 5) with several actors in one process: the spec's overrun
// scenarios (tractor-context-spec.md §5 #43-60, #80-84) and the stream API of DESIGN.md §4.1-§4.3,
// §4.8, §4.9 (try_send statuses, in-place sends, batch reads, copy_on_receive, on_full = block,
// spill caps, flush on close, discard on cancel, counters, FlatBuffers payloads through the spill).
//
// DESIGN.md §4.2 wins over the spec where they differ, and changes several expectations:
//   - The SENDER detects the full ring at push time; tractor's receiver-side runtime never sees
//     an overrun. So an overrun caused by the parent raises StreamOverrun from the parent's own
//     send() (a local error, not a RemoteActorError), and one caused by the child reaches the
//     parent as RemoteActorError boxing StreamOverrun itself (not an inception boxing a
//     RemoteActorError: nobody relays it).
//   - `allow_overruns` is the RECEIVER's declaration: the sender spills instead of failing when
//     the ring's reader allows overruns. "No error" therefore holds when the slow side (the
//     reader that falls behind) allows overruns, which is tractor's "allow == slow_side" row.
//
// Slowness is simulated inside the slow consumer (it waits until its producer has sent a whole
// batch before reading, or sleeps briefly per item): that is the behaviour under test. Test
// synchronisation waits on conditions with deadlines, never on sleeps.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <ostream>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>
#include <vector>

#include "context_support.hpp"
#include "namespace_guard.hpp"
#include "process.hpp"
#include "shmctx/actor.hpp"
#include "shmctx/context.hpp"
#include "shmctx/errors.hpp"
#include "shmctx/payload.hpp"
#include "shmctx/test_tick_generated.h"
#include "until_cancelled.hpp"

SHMCTX_ROOT_TYPE(shmctx::test::fb::Tick, "TICK");

namespace shmctx {

// gtest printers (found by ADL, hence outside the unnamed namespace; internal linkage).
[[maybe_unused]] static void PrintTo(const Uid& uid, std::ostream* os) { *os << uid.to_string(); }
[[maybe_unused]] static void PrintTo(SendStatus s, std::ostream* os) { *os << to_string(s); }

namespace {

using namespace std::chrono_literals;
using test::Watchdog;
using ::testing::IsEmpty;

/// Bound of every wait on a condition: generous, since sanitizer builds run many times slower.
constexpr auto kDeadline = 20s;
/// A whole test must finish within this, else the watchdog aborts the binary.
constexpr auto kTestLimit = 60s;

/// A level that only rises, with waiters: "the producer has sent n", "the reader has read n".
/// `release()` satisfies every wait (the other side failed: stop waiting for it).
/// Thread-safety: thread-safe.
class Level {
public:
    void add(std::int64_t n = 1) {
        {
            const std::lock_guard lock(m_);
            value_ += n;
        }
        cv_.notify_all();
    }
    void release() {
        {
            const std::lock_guard lock(m_);
            released_ = true;
        }
        cv_.notify_all();
    }
    std::int64_t value() const {
        const std::lock_guard lock(m_);
        return value_;
    }
    /// Waits until value() >= n or release(): true. False when `stop` fired first (the caller's
    /// context was cancelled); std::runtime_error after kDeadline.
    bool wait_for(std::int64_t n, const std::stop_token& stop = {}) const {
        std::unique_lock lock(m_);
        const bool ok =
            cv_.wait_for(lock, stop, kDeadline, [&] { return released_ || value_ >= n; });
        if (ok) return true;
        if (stop.stop_requested()) return false;
        throw std::runtime_error("level " + std::to_string(value_) + " did not reach " +
                                 std::to_string(n) + " within the deadline");
    }
    /// As wait_for inside a context: a cancelled context raises shmctx::Cancelled.
    void wait_in(Context& ctx, std::int64_t n) const {
        if (!wait_for(n, ctx.stop_token())) ctx.checkpoint();
    }

private:
    mutable std::mutex m_;
    mutable std::condition_variable_any cv_;
    std::int64_t value_ = 0;
    bool released_ = false;
};

/// Releases a Level when a scope is left by an exception (the peer must stop waiting for us).
class ReleaseOnThrow {
public:
    explicit ReleaseOnThrow(Level& level)
        : level_(level), exceptions_(std::uncaught_exceptions()) {}
    ~ReleaseOnThrow() {
        if (std::uncaught_exceptions() > exceptions_) level_.release();
    }
    ReleaseOnThrow(const ReleaseOnThrow&) = delete;
    ReleaseOnThrow& operator=(const ReleaseOnThrow&) = delete;

private:
    Level& level_;
    int exceptions_;
};

/// Owned payload bytes that convert to a PayloadView (kind bytes) like a span would.
struct Bytes : std::vector<std::byte> {
    using std::vector<std::byte>::vector;
    operator PayloadView() const noexcept {  // NOLINT(google-explicit-constructor): by design
        return PayloadView(std::span<const std::byte>(data(), size()));
    }
};

/// An 8-byte little-endian sequence number, optionally padded to `size` bytes with a pattern
/// derived from it, so a receiver can check both the order and the content.
Bytes seq_payload(std::uint64_t seq, std::size_t size = 8) {
    Bytes out(std::max<std::size_t>(size, 8));
    std::memcpy(out.data(), &seq, 8);
    for (std::size_t i = 8; i < out.size(); ++i) {
        out[i] = static_cast<std::byte>((seq * 31 + i) & 0xff);
    }
    return out;
}

/// The sequence number of a seq_payload message; throws if the content is damaged.
std::uint64_t seq_of(std::span<const std::byte> bytes) {
    if (bytes.size() < 8) throw std::runtime_error("message shorter than a sequence number");
    std::uint64_t seq = 0;
    std::memcpy(&seq, bytes.data(), 8);
    for (std::size_t i = 8; i < bytes.size(); ++i) {
        if (bytes[i] != static_cast<std::byte>((seq * 31 + i) & 0xff)) {
            throw std::runtime_error("message " + std::to_string(seq) + " damaged at byte " +
                                     std::to_string(i));
        }
    }
    return seq;
}
std::uint64_t seq_of(const Message& m) { return seq_of(m.bytes()); }

StreamOptions stream_opts(std::optional<bool> allow_overruns, std::uint32_t msg_buffer_size = 0) {
    StreamOptions o;
    o.allow_overruns = allow_overruns;
    o.msg_buffer_size = msg_buffer_size;
    return o;
}
ExposeOptions expose_opts(bool allow_overruns, std::uint32_t msg_buffer_size = 0) {
    ExposeOptions o;
    o.allow_overruns = allow_overruns;
    o.msg_buffer_size = msg_buffer_size;
    return o;
}
OpenOptions open_opts(bool allow_overruns, std::uint32_t msg_buffer_size = 0) {
    OpenOptions o;
    o.allow_overruns = allow_overruns;
    o.msg_buffer_size = msg_buffer_size;
    return o;
}

class StreamTest : public test::ActorTest {
protected:
    StreamTest() : ActorTest("stream", kTestLimit) {}
};

// ---------------------------------------------------------------------------------------------
// Spec §5 #43-44: one end never opens its stream.

// #43 (parent_1buf_never_open_stream), adapted: C never opens a stream; R sends 64 + 1 items.
// Tractor's child runtime drops item 65 and replies StreamOverrun; here the SENDER detects the
// full ring (DESIGN.md §4.2), so R's own send() of item 65 raises StreamOverrun (sender R,
// receiver C, limit messages), the 64 earlier items wait in C's ring, and the error escapes R's
// block unchanged (a local error, not a RemoteActorError).
TEST_F(StreamTest, ParentOverrunsChildThatNeverOpensItsStream) {
    Actor parent("parent", options());
    Actor child("child", options());
    child.expose("never_open", [](Context& ctx, const Payload&) -> Payload {
        ctx.started();
        test::until_cancelled(ctx, kDeadline);
        return Payload{};
    });
    Portal portal = parent.connect("child", kDeadline);
    std::int64_t sent = 0;
    shm::RingCounters counters;
    std::optional<Cid> cid;
    try {
        portal.open_context("never_open", {}, [&](Context& ctx, const Payload&) {
            cid = ctx.cid();
            auto stream = ctx.open_stream();
            for (std::uint64_t i = 0; i < 65; ++i) {
                try {
                    stream.send(seq_payload(i));
                } catch (const StreamOverrun&) {
                    counters = stream.outbound_counters();
                    throw;
                }
                ++sent;
            }
        });
        ADD_FAILURE() << "item 65 into a full ring of a receiver without overruns was sent";
    } catch (const StreamOverrun& e) {
        EXPECT_EQ(e.sender(), parent.uid());
        EXPECT_EQ(e.receiver(), child.uid());
        ASSERT_TRUE(cid.has_value());
        EXPECT_EQ(e.cid(), *cid);
        EXPECT_EQ(e.limit(), OverrunLimit::messages);
    }
    EXPECT_EQ(sent, 64);
    EXPECT_EQ(counters.sent, 64U);
    EXPECT_EQ(counters.overruns, 1U);
    EXPECT_EQ(counters.full_events, 1U);
    EXPECT_EQ(counters.spilled, 0U);
    EXPECT_EQ(counters.received, 0U) << "C never opened its stream, so it read nothing";
}

// #44 (child_0buf_keep_sending_from_child), adapted: C streams an endless count; R never opens a
// stream. Tractor's parent runtime overflows and sends StreamOverrun back, and R sees an
// inception. Here C's own send() of item 65 raises StreamOverrun (DESIGN.md §4.2); it escapes C's
// endpoint and reaches R as a RemoteActorError boxing StreamOverrun, raised from R's block.
TEST_F(StreamTest, ChildOverrunsParentThatNeverOpensItsStream) {
    Actor parent("parent", options());
    Actor child("child", options());
    std::atomic<std::int64_t> child_sent{0};
    child.expose("count_forever", [&](Context& ctx, const Payload&) -> Payload {
        ctx.started();
        auto stream = ctx.open_stream();
        for (std::uint64_t i = 0;; ++i) {
            stream.send(seq_payload(i));
            ++child_sent;
        }
    });
    Portal portal = parent.connect("child", kDeadline);
    try {
        portal.open_context("count_forever", {}, [&](Context& ctx, const Payload&) {
            test::until_cancelled(ctx, kDeadline);  // never opens the stream
        });
        ADD_FAILURE() << "the child's overrun did not reach the parent";
    } catch (const RemoteActorError& e) {
        EXPECT_TRUE(e.boxed_is<StreamOverrun>()) << e.boxed_type_name() << ": " << e.what();
        EXPECT_FALSE(e.is_inception()) << "the sender raised it: nothing to relay";
        EXPECT_EQ(e.src_uid(), child.uid());
    }
    EXPECT_EQ(child_sent.load(), 64);
}

// ---------------------------------------------------------------------------------------------
// Spec §5 #45-60: test_maybe_allow_overruns_stream, 16 cases.

enum class AllowSide { none, parent, child, both };
enum class SlowSide { parent, child };
std::string_view name_of(AllowSide a) {
    switch (a) {
        case AllowSide::none:
            return "AllowNone";
        case AllowSide::parent:
            return "AllowParent";
        case AllowSide::child:
            return "AllowChild";
        case AllowSide::both:
            return "AllowBoth";
    }
    return "?";
}

// C = echo_back_sequence: its inbound ring holds 1 message (msg_buffer_size = 1) and allows
// overruns if AllowSide is child or both; per batch it reads 10 sequence numbers, then echoes them.
// R's inbound ring holds 1 message when R is the slow side (else 64) and allows overruns if
// AllowSide is parent or both. R sends 2 batches of 10 and reads each echoed batch, then either
// cancels the context or closes the stream and takes C's "yo".
//
// The slow side is the reader that falls behind: slow child = C starts reading a batch only after
// R sent all of it (so R's sends must overflow C's 1-slot ring); slow parent = R paces its sends
// to C's reads (C's ring never overflows) but reads the echoes only after C sent them all (C's
// sends must overflow R's 1-slot ring).
//
// Expected (DESIGN.md §4.2, see the file comment): no error when the slow side's receiver allows
// overruns (allow == slow side, or both): the fast sender spills, items arrive complete and in
// order, and the result is "yo" or, with cancel_ctx, the absorbed ContextCancelled. Otherwise the
// fast sender's own send() raises StreamOverrun: slow child -> R's send raises it and it escapes
// R's block unchanged; slow parent -> C's send raises it and R gets RemoteActorError boxing
// StreamOverrun. (Tractor: RAE[StreamOverrun] resp. RAE[RemoteActorError], racy for "none"; here
// the sender decides, so "none" is deterministic too.)
class MaybeAllowOverruns
    : public StreamTest,
      public ::testing::WithParamInterface<std::tuple<AllowSide, SlowSide, bool>> {};

TEST_P(MaybeAllowOverruns, NoErrorExactlyWhenTheSlowSideAllowsOverruns) {
    const auto [allow, slow, cancel_ctx] = GetParam();
    const bool child_allows = allow == AllowSide::child || allow == AllowSide::both;
    const bool parent_allows = allow == AllowSide::parent || allow == AllowSide::both;
    const bool slow_child = slow == SlowSide::child;
    const bool expect_ok = slow_child ? child_allows : parent_allows;
    constexpr std::int64_t kBatch = 10;
    constexpr std::int64_t kBatches = 2;
    const std::uint32_t parent_buffer = slow_child ? 0 : 1;  // 0: the default (64)

    Level child_open;    // C opened its stream
    Level child_read;    // items C has read
    Level child_echoed;  // items C has echoed
    Level parent_sent;   // items R has sent
    Actor parent("parent", options());
    Actor child("child", options());
    child.expose(
        "echo_back_sequence",
        [&](Context& ctx, const Payload&) -> Payload {
            const ReleaseOnThrow release_read(child_read);
            const ReleaseOnThrow release_echoed(child_echoed);
            ctx.started();
            auto stream = ctx.open_stream(stream_opts(child_allows, 1));
            child_open.add();
            for (std::int64_t batch = 0; batch < kBatches; ++batch) {
                if (slow_child) parent_sent.wait_in(ctx, (batch + 1) * kBatch);
                std::vector<std::uint64_t> seq;
                for (std::int64_t i = 0; i < kBatch; ++i) {
                    seq.push_back(seq_of(stream.receive()));
                    child_read.add();
                }
                for (const std::uint64_t s : seq) {
                    stream.send(seq_payload(s));
                    child_echoed.add();
                }
            }
            for (const auto& msg : stream) {
                throw std::runtime_error("unexpected message " + std::to_string(seq_of(msg)));
            }
            return Payload::value("yo");
        },
        expose_opts(child_allows, 1));
    Portal portal = parent.connect("child", kDeadline);

    std::vector<std::uint64_t> echoed;
    shm::RingCounters parent_out;
    shm::RingCounters parent_in;
    const Uid parent_uid = parent.uid();
    const Uid child_uid = child.uid();
    const auto run = [&] {
        return portal.open_context(
            "echo_back_sequence", {},
            [&](Context& ctx, const Payload&) {
                const ReleaseOnThrow release_sent(parent_sent);
                auto stream = ctx.open_stream(stream_opts(parent_allows, parent_buffer));
                child_open.wait_in(ctx, 1);
                std::uint64_t next = 0;
                for (std::int64_t batch = 0; batch < kBatches; ++batch) {
                    for (std::int64_t i = 0; i < kBatch; ++i, ++next) {
                        // A slow parent sends each item only after C read the previous one.
                        if (!slow_child) child_read.wait_in(ctx, static_cast<std::int64_t>(next));
                        stream.send(seq_payload(next));
                        parent_sent.add();
                    }
                    if (!slow_child) child_echoed.wait_in(ctx, (batch + 1) * kBatch);
                    for (std::int64_t i = 0; i < kBatch; ++i) {
                        echoed.push_back(seq_of(stream.receive()));
                    }
                }
                parent_out = stream.outbound_counters();
                parent_in = stream.inbound_counters();
                if (cancel_ctx) ctx.cancel(kDeadline);
            },
            open_opts(parent_allows, parent_buffer));
    };

    if (expect_ok) {
        const auto r = run();
        std::vector<std::uint64_t> want(kBatch * kBatches);
        for (std::size_t i = 0; i < want.size(); ++i) want[i] = i;
        EXPECT_EQ(echoed, want) << "items lost or out of order through the spill";
        const shm::RingCounters& spilling = slow_child ? parent_out : parent_in;
        EXPECT_GE(spilling.spilled, static_cast<std::uint64_t>(kBatch - 1))
            << "the fast sender never spilled: the test did not overrun anything";
        EXPECT_EQ(parent_out.overruns, 0U);
        EXPECT_EQ(parent_in.overruns, 0U);
        if (cancel_ctx) {
            EXPECT_TRUE(r.outcome.is_absorbed_cancel());
            try {
                r.outcome.rethrow_if_error();
                ADD_FAILURE() << "a cancelled context has no value";
            } catch (const ContextCancelled& e) {
                EXPECT_EQ(e.canceller(), parent_uid);
            }
        } else {
            ASSERT_TRUE(r.outcome.has_value());
            EXPECT_EQ(r.outcome.value().value<std::string>(), "yo");
        }
        return;
    }
    if (slow_child) {
        try {
            (void)run();
            ADD_FAILURE() << "R overran C's 1-slot ring without an error";
        } catch (const StreamOverrun& e) {
            EXPECT_EQ(e.sender(), parent_uid);
            EXPECT_EQ(e.receiver(), child_uid);
            EXPECT_EQ(e.limit(), OverrunLimit::messages);
        }
        EXPECT_EQ(parent_sent.value(), 1) << "C's ring holds one message; the second overran";
    } else {
        try {
            (void)run();
            ADD_FAILURE() << "C overran R's 1-slot ring without an error";
        } catch (const RemoteActorError& e) {
            EXPECT_TRUE(e.boxed_is<StreamOverrun>()) << e.boxed_type_name() << ": " << e.what();
            EXPECT_EQ(e.src_uid(), child_uid);
        }
        EXPECT_EQ(child_echoed.value(), 1) << "R's ring holds one message; the second overran";
    }
}

INSTANTIATE_TEST_SUITE_P(Matrix, MaybeAllowOverruns,
                         ::testing::Combine(::testing::Values(AllowSide::none, AllowSide::parent,
                                                              AllowSide::child, AllowSide::both),
                                            ::testing::Values(SlowSide::parent, SlowSide::child),
                                            ::testing::Bool()),
                         [](const auto& p) {
                             return std::string(name_of(std::get<0>(p.param))) +
                                    (std::get<1>(p.param) == SlowSide::parent ? "_SlowParent"
                                                                              : "_SlowChild") +
                                    (std::get<2>(p.param) ? "_CancelCtx" : "_Result");
                         });

// ---------------------------------------------------------------------------------------------
// Spec §5 #80-84 (without subscriptions).

// #80-83: R opens its stream with allow_overruns; C echoes a 1000-item sequence as fast as it can
// while R, sending all 1000 first, reads nothing: C's echoes must spill (R's ring holds 64), and
// R then receives every item in order, with no StreamOverrun anywhere. R's sends use
// on_full = block because C's ring does not allow overruns (R waits for C, never fails).
TEST_F(StreamTest, EchoBurstIntoParentThatAllowsOverrunsArrivesInOrder) {
    constexpr std::uint64_t kItems = 1000;
    Actor parent("parent", options());
    Actor child("child", options());
    child.expose("echo", [](Context& ctx, const Payload&) -> Payload {
        ctx.started();
        auto stream = ctx.open_stream();
        std::int64_t n = 0;
        for (const auto& msg : stream) {
            stream.send(msg.view());
            ++n;
        }
        if (stream.outbound_counters().overruns != 0) throw std::runtime_error("C overran R");
        return Payload::value(n);
    });
    Portal portal = parent.connect("child", kDeadline);
    shm::RingCounters in;
    auto r = portal.open_context(
        "echo", {},
        [&](Context& ctx, const Payload&) {
            StreamOptions o = stream_opts(true);
            o.on_full = OnFull::block;
            auto stream = ctx.open_stream(o);
            for (std::uint64_t i = 0; i < kItems; ++i) stream.send(seq_payload(i));
            for (std::uint64_t i = 0; i < kItems; ++i) {
                const std::uint64_t got = seq_of(stream.receive());
                if (got != i) {
                    ADD_FAILURE() << "item " << i << " arrived as " << got;
                    break;
                }
            }
            // The drainer counts after it publishes: wait for the last count.
            EXPECT_TRUE(test::wait_until(
                [&] {
                    in = stream.inbound_counters();
                    return in.spill_drained == in.spilled;
                },
                kDeadline));
        },
        open_opts(true));
    ASSERT_TRUE(r.outcome.has_value());
    EXPECT_EQ(r.outcome.value().value<std::int64_t>(), static_cast<std::int64_t>(kItems));
    EXPECT_EQ(in.sent, kItems);
    EXPECT_EQ(in.received, kItems);
    EXPECT_GT(in.spilled, 0U) << "C's burst never spilled: the test overran nothing";
    EXPECT_EQ(in.spill_discarded, 0U);
    EXPECT_EQ(in.overruns, 0U);
}

// #84: N workers in one process, each declaring allow_overruns on its side (expose and
// open_stream); R sends the same sequence to every worker in one tight loop: no StreamOverrun,
// every worker counts every item in order, and every context exits cleanly (its close flushes
// what R spilled).
TEST_F(StreamTest, TightLoopToAClusterOfWorkersThatAllowOverruns) {
    constexpr std::size_t kWorkers = 3;
    const std::uint64_t items = test::scaled(20000, 2000);
    Actor parent("parent", options());
    std::vector<std::unique_ptr<Actor>> workers;
    std::vector<Portal> portals;
    for (std::size_t w = 0; w < kWorkers; ++w) {
        workers.push_back(std::make_unique<Actor>("worker-" + std::to_string(w), options()));
        workers.back()->expose(
            "count",
            [](Context& ctx, const Payload&) -> Payload {
                ctx.started();
                auto stream = ctx.open_stream(stream_opts(true));
                std::uint64_t n = 0;
                for (const auto& msg : stream) {
                    if (seq_of(msg) != n) throw std::runtime_error("out of order");
                    ++n;
                    // A consumer a little slower than the tight loop (simulated slowness).
                    if (n % 512 == 0) test::simulate_work(100us);
                }
                return Payload::value(static_cast<std::int64_t>(n));
            },
            expose_opts(true));
        portals.push_back(parent.connect(workers.back()->uid().name, kDeadline));
    }
    std::vector<MsgStream*> streams;
    std::vector<std::int64_t> counts(kWorkers, -1);
    std::uint64_t spilled = 0;
    std::function<void(std::size_t)> open_from = [&](std::size_t w) {
        if (w == kWorkers) {
            for (std::uint64_t i = 0; i < items; ++i) {
                const auto payload = seq_payload(i);
                for (MsgStream* s : streams) s->send(payload);
            }
            for (MsgStream* s : streams) spilled += s->outbound_counters().spilled;
            return;
        }
        auto r = portals[w].open_context("count", {}, [&](Context& ctx, const Payload&) {
            auto stream = ctx.open_stream();
            streams.push_back(&stream);
            open_from(w + 1);
        });
        ASSERT_TRUE(r.outcome.has_value());
        counts[w] = r.outcome.value().value<std::int64_t>();
    };
    open_from(0);
    for (std::size_t w = 0; w < kWorkers; ++w) {
        EXPECT_EQ(counts[w], static_cast<std::int64_t>(items)) << "worker " << w;
    }
    RecordProperty("spilled", std::to_string(spilled));
}

// ---------------------------------------------------------------------------------------------
// try_send statuses (DESIGN.md §4.2: never blocks or throws).

// A receiver that holds 2 messages and does not allow overruns: ok, ok, then full (on_full is not
// applied); a message beyond max_message_bytes() is too_large whatever the ring holds.
TEST_F(StreamTest, TrySendIsOkThenFullThenTooLarge) {
    Actor parent("parent", options());
    Actor child("child", options());
    Level release;
    child.expose(
        "hold",
        [&](Context& ctx, const Payload&) -> Payload {
            ctx.started();
            auto stream = ctx.open_stream();
            release.wait_in(ctx, 1);
            std::int64_t n = 0;
            for (const auto& msg : stream) n += static_cast<std::int64_t>(seq_of(msg)) + 1;
            return Payload::value(n);
        },
        expose_opts(false, 2));
    Portal portal = parent.connect("child", kDeadline);
    auto r = portal.open_context("hold", {}, [&](Context& ctx, const Payload&) {
        const ReleaseOnThrow guard(release);
        auto stream = ctx.open_stream();
        EXPECT_EQ(stream.try_send(seq_payload(0)), SendStatus::ok);
        EXPECT_EQ(stream.try_send(seq_payload(1)), SendStatus::ok);
        EXPECT_EQ(stream.try_send(seq_payload(2)), SendStatus::full);
        EXPECT_EQ(stream.try_send(seq_payload(3)), SendStatus::full);
        const std::vector<std::byte> huge(stream.max_message_bytes() + 1);
        EXPECT_EQ(stream.try_send(std::span<const std::byte>(huge)), SendStatus::too_large);
        try {
            stream.send(std::span<const std::byte>(huge));
            ADD_FAILURE() << "send() of a too large message returned";
        } catch (const PayloadTooLarge&) {
        }
        const shm::RingCounters c = stream.outbound_counters();
        EXPECT_EQ(c.sent, 2U);
        EXPECT_EQ(c.spilled, 0U);
        EXPECT_GE(c.full_events, 2U);
        release.add();
    });
    ASSERT_TRUE(r.outcome.has_value());
    EXPECT_EQ(r.outcome.value().value<std::int64_t>(), 1 + 2) << "exactly items 0 and 1 arrived";
}

// A receiver that allows overruns: ok while the ring takes it, then spilled (delivered later, in
// order); after our close(), closed.
TEST_F(StreamTest, TrySendSpillsForAReceiverThatAllowsOverrunsAndIsClosedAfterClose) {
    Actor parent("parent", options());
    Actor child("child", options());
    Level release;
    child.expose(
        "collect",
        [&](Context& ctx, const Payload&) -> Payload {
            ctx.started();
            auto stream = ctx.open_stream();
            release.wait_in(ctx, 1);
            std::string seen;
            for (const auto& msg : stream) seen += std::to_string(seq_of(msg)) + ",";
            return Payload::value(seen);
        },
        expose_opts(true, 1));
    Portal portal = parent.connect("child", kDeadline);
    auto r = portal.open_context("collect", {}, [&](Context& ctx, const Payload&) {
        const ReleaseOnThrow guard(release);
        auto stream = ctx.open_stream();
        EXPECT_EQ(stream.try_send(seq_payload(0)), SendStatus::ok);
        for (std::uint64_t i = 1; i < 5; ++i) {
            EXPECT_EQ(stream.try_send(seq_payload(i)), SendStatus::spilled) << i;
        }
        release.add();
        stream.close();  // flushes the spill before the Stop
        EXPECT_EQ(stream.try_send(seq_payload(5)), SendStatus::closed);
        try {
            stream.send(seq_payload(5));
            ADD_FAILURE() << "send() after close() returned";
        } catch (const EndOfChannel&) {
        }
    });
    ASSERT_TRUE(r.outcome.has_value());
    EXPECT_EQ(r.outcome.value().value<std::string>(), "0,1,2,3,4,");
}

// After the peer closed its side, try_send says peer_stopped and send() raises EndOfChannel
// (DESIGN.md §4.8), even though we never receive.
TEST_F(StreamTest, TrySendAfterThePeersCloseIsPeerStopped) {
    Actor parent("parent", options());
    Actor child("child", options());
    Level release;
    child.expose("close_then_wait", [&](Context& ctx, const Payload&) -> Payload {
        ctx.started();
        auto stream = ctx.open_stream();
        stream.close();
        release.wait_in(ctx, 1);
        return Payload::value("closed");
    });
    Portal portal = parent.connect("child", kDeadline);
    auto r = portal.open_context("close_then_wait", {}, [&](Context& ctx, const Payload&) {
        const ReleaseOnThrow guard(release);
        auto stream = ctx.open_stream();
        SendStatus last = SendStatus::ok;
        // Until the child's Stop arrives our sends still go into its (closed) ring or fail on
        // consumer_closed; both end as peer_stopped.
        EXPECT_TRUE(test::wait_until(
            [&] {
                last = stream.try_send("x");
                return last != SendStatus::ok;
            },
            kDeadline));
        EXPECT_EQ(last, SendStatus::peer_stopped);
        try {
            stream.send("x");
            ADD_FAILURE() << "send() after the peer's Stop returned";
        } catch (const EndOfChannel&) {
        }
        release.add();
    });
    ASSERT_TRUE(r.outcome.has_value());
    EXPECT_EQ(r.outcome.value().value<std::string>(), "closed");
}

// ---------------------------------------------------------------------------------------------
// In-place sends (send_with / try_send_with).

// send_with/try_send_with build the message in the space they are given, directly in the ring and
// in a spill buffer alike; a fill that throws abandons its message (its exception propagates,
// nothing is sent or spilled) and later sends are fine; the bytes a fill reports are what arrives.
TEST_F(StreamTest, SendWithBuildsInPlaceAndAThrowingFillSendsNothing) {
    Actor parent("parent", options());
    Actor child("child", options());
    Level release;
    child.expose(
        "collect",
        [&](Context& ctx, const Payload&) -> Payload {
            ctx.started();
            auto stream = ctx.open_stream();
            release.wait_in(ctx, 1);
            std::string seen;
            for (const auto& msg : stream) {
                seen +=
                    std::to_string(seq_of(msg)) + ":" + std::to_string(msg.bytes().size()) + ",";
            }
            return Payload::value(seen);
        },
        expose_opts(true, 2));
    Portal portal = parent.connect("child", kDeadline);
    const auto fill_seq = [](std::uint64_t seq, std::size_t used) {
        return [seq, used](std::span<std::byte> buffer) -> std::size_t {
            const auto bytes = seq_payload(seq, used);
            if (buffer.size() < bytes.size()) throw std::logic_error("buffer too small");
            std::memcpy(buffer.data(), bytes.data(), bytes.size());
            return bytes.size();
        };
    };
    // A fill passed as an lvalue does not compile (context.hpp send_filled forms `Fill*` with
    // Fill a reference type; reported), so each call gets a fresh rvalue.
    const auto throwing_fill = [] {
        return [](std::span<std::byte> buffer) -> std::size_t {
            std::memset(buffer.data(), 0xee, buffer.size());  // half-written, then fails
            throw std::domain_error("fill failed");
        };
    };
    auto r = portal.open_context("collect", {}, [&](Context& ctx, const Payload&) {
        const ReleaseOnThrow guard(release);
        auto stream = ctx.open_stream();
        // Direct into the ring: max 64 bytes offered, 16 used.
        EXPECT_EQ(stream.try_send_with(64, fill_seq(0, 16)), SendStatus::ok);
        EXPECT_THROW((void)stream.try_send_with(64, throwing_fill()), std::domain_error);
        EXPECT_THROW(stream.send_with(64, throwing_fill()), std::domain_error);
        EXPECT_EQ(stream.outbound_counters().sent, 1U) << "a failed fill published a record";
        stream.send_with(32, fill_seq(1, 32));
        // The ring (2 slots) is full now: spill buffers.
        EXPECT_EQ(stream.try_send_with(100, fill_seq(2, 40)), SendStatus::spilled);
        EXPECT_THROW(stream.send_with(64, throwing_fill()), std::domain_error);
        EXPECT_THROW((void)stream.try_send_with(64, throwing_fill()), std::domain_error);
        EXPECT_EQ(stream.outbound_counters().spilled, 1U) << "a failed fill was spilled";
        stream.send_with(8, fill_seq(3, 8));
        EXPECT_EQ(stream.outbound_counters().spilled, 2U);
        release.add();
    });
    ASSERT_TRUE(r.outcome.has_value());
    EXPECT_EQ(r.outcome.value().value<std::string>(), "0:16,1:32,2:40,3:8,");
}

// ---------------------------------------------------------------------------------------------
// Receiving: drain(), copy_on_receive.

// drain(f, max) hands over at most `max` messages per call, in order, each valid inside f; 100
// messages waiting give batches of 16 x 6 + 4; the next call raises EndOfChannel. A throwing f
// consumes the messages up to the one it threw on.
TEST_F(StreamTest, DrainReadsBatchesInOrder) {
    constexpr std::int64_t kItems = 100;
    Actor parent("parent", options());
    Actor child("child", options());
    Level parent_sent;
    std::vector<std::size_t> batches;
    std::vector<std::uint64_t> seen;
    bool end_of_channel = false;
    child.expose(
        "drainer",
        [&](Context& ctx, const Payload&) -> Payload {
            ctx.started();
            auto stream = ctx.open_stream();
            parent_sent.wait_in(ctx, kItems);  // all 100 are in the ring now
            // A named (const lvalue) callable: drain() takes any callable, not only temporaries.
            const auto record = [&](const Message& m) { seen.push_back(seq_of(m)); };
            for (;;) {
                try {
                    batches.push_back(stream.drain(record, 16));
                } catch (const EndOfChannel&) {
                    end_of_channel = true;
                    break;
                }
            }
            return Payload{};
        },
        expose_opts(false, 128));
    Portal portal = parent.connect("child", kDeadline);
    auto r = portal.open_context("drainer", {}, [&](Context& ctx, const Payload&) {
        const ReleaseOnThrow guard(parent_sent);
        auto stream = ctx.open_stream();
        for (std::int64_t i = 0; i < kItems; ++i)
            stream.send(seq_payload(static_cast<std::uint64_t>(i)));
        EXPECT_EQ(stream.outbound_counters().spilled, 0U);
        parent_sent.add(kItems);
    });
    ASSERT_TRUE(r.outcome.has_value());
    EXPECT_EQ(batches, (std::vector<std::size_t>{16, 16, 16, 16, 16, 16, 4}));
    ASSERT_EQ(seen.size(), static_cast<std::size_t>(kItems));
    for (std::size_t i = 0; i < seen.size(); ++i) EXPECT_EQ(seen[i], i);
    EXPECT_TRUE(end_of_channel);
}

TEST_F(StreamTest, DrainWhoseCallbackThrowsConsumesUpToTheThrow) {
    Actor parent("parent", options());
    Actor child("child", options());
    Level parent_sent;
    child.expose("drain_throw", [&](Context& ctx, const Payload&) -> Payload {
        ctx.started();
        auto stream = ctx.open_stream();
        parent_sent.wait_in(ctx, 6);
        std::size_t calls = 0;
        try {
            (void)stream.drain(
                [&](const Message&) {
                    if (++calls == 3) throw std::domain_error("third");
                },
                10);
            throw std::logic_error("drain did not rethrow");
        } catch (const std::domain_error&) {
        }
        // Messages 0-2 are consumed (2 included: f threw on it); 3 comes next.
        return Payload::value(static_cast<std::int64_t>(seq_of(stream.receive())));
    });
    Portal portal = parent.connect("child", kDeadline);
    auto r = portal.open_context("drain_throw", {}, [&](Context& ctx, const Payload&) {
        const ReleaseOnThrow guard(parent_sent);
        auto stream = ctx.open_stream();
        for (std::uint64_t i = 0; i < 6; ++i) stream.send(seq_payload(i));
        parent_sent.add(6);
    });
    ASSERT_TRUE(r.outcome.has_value());
    EXPECT_EQ(r.outcome.value().value<std::int64_t>(), 3);
}

// copy_on_receive: a Message owns its bytes and stays valid after later receives (the ring slot
// is freed at once); without it, a Message is a view (not owned).
TEST_F(StreamTest, CopyOnReceiveMessagesOutliveTheNextReceive) {
    constexpr std::size_t kItems = 200;  // beyond the 64-slot ring: every slot is reused
    Actor parent("parent", options());
    Actor child("child", options());
    child.expose("keep", [&](Context& ctx, const Payload&) -> Payload {
        ctx.started();
        StreamOptions o;
        o.copy_on_receive = true;
        auto stream = ctx.open_stream(o);
        std::vector<Message> kept;
        for (const auto& msg : stream) {
            if (!msg.owned()) throw std::runtime_error("copy_on_receive gave a view");
            kept.push_back(msg);
        }
        for (std::size_t i = 0; i < kept.size(); ++i) {
            if (seq_of(kept[i]) != i) throw std::runtime_error("kept message changed");
        }
        return Payload::value(static_cast<std::int64_t>(kept.size()));
    });
    child.expose("view", [&](Context& ctx, const Payload&) -> Payload {
        ctx.started();
        auto stream = ctx.open_stream();
        const Message m = stream.receive();
        return Payload::value(m.owned());
    });
    Portal portal = parent.connect("child", kDeadline);
    auto r = portal.open_context("keep", {}, [&](Context& ctx, const Payload&) {
        StreamOptions o;
        o.on_full = OnFull::block;
        auto stream = ctx.open_stream(o);
        for (std::size_t i = 0; i < kItems; ++i) stream.send(seq_payload(i, 8 + i % 50));
    });
    ASSERT_TRUE(r.outcome.has_value());
    EXPECT_EQ(r.outcome.value().value<std::int64_t>(), static_cast<std::int64_t>(kItems));
    auto v = portal.open_context("view", {}, [&](Context& ctx, const Payload&) {
        auto stream = ctx.open_stream();
        stream.send(seq_payload(0));
    });
    ASSERT_TRUE(v.outcome.has_value());
    EXPECT_FALSE(v.outcome.value().value<bool>()) << "a zero-copy Message claimed to own bytes";
}

// ---------------------------------------------------------------------------------------------
// on_full = block (DESIGN.md §4.2: beyond tractor).

StreamOptions blocking(std::optional<Duration> timeout = std::nullopt) {
    StreamOptions o;
    o.on_full = OnFull::block;
    o.block_timeout = timeout;
    return o;
}

// The waits' busy first phase (StreamOptions::spin_before_sleep): the actor's default watch,
// none (sleep at once) and a watch that never ends (never sleep). Every wait must end the same
// way whichever it is: on room or data, its timeout, a cancel.
class StreamWatch : public StreamTest,
                    public ::testing::WithParamInterface<std::optional<Duration>> {
protected:
    StreamOptions watching(StreamOptions o) const {
        o.spin_before_sleep = GetParam();
        return o;
    }
};
INSTANTIATE_TEST_SUITE_P(Spin, StreamWatch,
                         ::testing::Values(std::nullopt, Duration::zero(), Duration::max()),
                         [](const auto& spin) -> std::string {
                             if (!spin.param) return "ActorDefault";
                             return *spin.param == Duration::zero() ? "SleepAtOnce" : "NeverSleep";
                         });

// A send into a full ring waits until the consumer reads, then succeeds; the consumer starts
// reading only after the sender found the ring full (its full_events, read through the ring).
TEST_F(StreamTest, BlockingSendWaitsForTheConsumerThenSucceeds) {
    Actor parent("parent", options());
    Actor child("child", options());
    std::atomic<bool> reading{false};
    child.expose(
        "late_reader",
        [&](Context& ctx, const Payload&) -> Payload {
            ctx.started();
            auto stream = ctx.open_stream();
            if (!test::wait_until([&] { return stream.inbound_counters().full_events >= 1; },
                                  kDeadline)) {
                throw std::runtime_error("the sender never found the ring full");
            }
            reading = true;
            std::int64_t n = 0;
            for (const auto& msg : stream) {
                if (seq_of(msg) != static_cast<std::uint64_t>(n)) throw std::runtime_error("order");
                ++n;
            }
            return Payload::value(n);
        },
        expose_opts(false, 1));
    Portal portal = parent.connect("child", kDeadline);
    bool read_before_return = false;
    auto r = portal.open_context("late_reader", {}, [&](Context& ctx, const Payload&) {
        auto stream = ctx.open_stream(blocking());
        stream.send(seq_payload(0));
        stream.send(seq_payload(1));  // blocks: the ring holds one message
        read_before_return = reading.load();
        stream.send(seq_payload(2));
        EXPECT_EQ(stream.outbound_counters().overruns, 0U);
    });
    EXPECT_TRUE(read_before_return) << "the blocked send returned before the consumer read";
    ASSERT_TRUE(r.outcome.has_value());
    EXPECT_EQ(r.outcome.value().value<std::int64_t>(), 3);
}

// block_timeout: a blocked send that gets no room in time raises StreamOverrun (limit
// block_timeout), not before the timeout; the receiver is unaffected and reads what was sent.
TEST_P(StreamWatch, BlockingSendPastItsTimeoutRaisesStreamOverrun) {
    constexpr auto kTimeout = 100ms;
    Actor parent("parent", options());
    Actor child("child", options());
    Level release;
    child.expose(
        "stuck",
        [&](Context& ctx, const Payload&) -> Payload {
            ctx.started();
            auto stream = ctx.open_stream();
            release.wait_in(ctx, 1);
            std::int64_t n = 0;
            for (const auto& msg : stream) {
                (void)msg;
                ++n;
            }
            return Payload::value(n);
        },
        expose_opts(false, 1));
    Portal portal = parent.connect("child", kDeadline);
    auto r = portal.open_context("stuck", {}, [&](Context& ctx, const Payload&) {
        const ReleaseOnThrow guard(release);
        auto stream = ctx.open_stream(watching(blocking(kTimeout)));
        stream.send(seq_payload(0));
        const auto start = Clock::now();
        try {
            stream.send(seq_payload(1));
            ADD_FAILURE() << "a send into a ring nobody reads returned";
        } catch (const StreamOverrun& e) {
            EXPECT_EQ(e.limit(), OverrunLimit::block_timeout);
            EXPECT_EQ(e.sender(), parent.uid());
            EXPECT_EQ(e.receiver(), child.uid());
        }
        EXPECT_GE(Clock::now() - start, kTimeout);
        release.add();
    });
    ASSERT_TRUE(r.outcome.has_value());
    EXPECT_EQ(r.outcome.value().value<std::int64_t>(), 1);
}

// Cancelling the context while the child's send is blocked (the parent's ring is full and the
// parent does not read) wakes the send with shmctx::Cancelled; the parent's cancel is absorbed.
TEST_P(StreamWatch, CancellingABlockedSendRaisesCancelled) {
    Actor parent("parent", options());
    Actor child("child", options());
    std::atomic<bool> send_cancelled{false};
    child.expose("flood", [&](Context& ctx, const Payload&) -> Payload {
        ctx.started();
        auto stream = ctx.open_stream(watching(blocking()));
        try {
            for (std::uint64_t i = 0;; ++i) stream.send(seq_payload(i));
        } catch (const Cancelled&) {
            send_cancelled = true;
            throw;
        }
    });
    Portal portal = parent.connect("child", kDeadline);
    auto r = portal.open_context(
        "flood", {},
        [&](Context& ctx, const Payload&) {
            auto stream = ctx.open_stream();
            // The child's send found our 1-slot ring full: it is blocked (or about to be).
            EXPECT_TRUE(test::wait_until([&] { return stream.inbound_counters().full_events >= 1; },
                                         kDeadline));
            ctx.cancel(kDeadline);
            EXPECT_TRUE(ctx.cancel_acked());
        },
        open_opts(false, 1));
    EXPECT_TRUE(r.outcome.is_absorbed_cancel());
    EXPECT_TRUE(send_cancelled.load()) << "the blocked send did not raise shmctx::Cancelled";
}

// A receive ends on data, receive_for on its timeout (not before), and a receive blocked with
// nothing coming on the context's cancel, whichever the watch (the never-sleeping one checks
// the deadline and the stop token as it spins).
TEST_P(StreamWatch, ReceiveEndsOnDataOnItsTimeoutAndOnCancel) {
    constexpr auto kTimeout = 30ms;
    Actor parent("parent", options());
    Actor child("child", options());
    std::atomic<bool> waiting_last{false};
    std::atomic<bool> receive_cancelled{false};
    child.expose("watcher", [&](Context& ctx, const Payload&) -> Payload {
        ctx.started();
        auto stream = ctx.open_stream(watching({}));
        if (seq_of(stream.receive()) != 7) throw std::runtime_error("not the message sent");
        const auto start = Clock::now();
        if (stream.receive_for(kTimeout)) throw std::runtime_error("a message nobody sent");
        if (Clock::now() - start < kTimeout) throw std::runtime_error("receive_for ended early");
        waiting_last = true;
        try {
            (void)stream.receive();
        } catch (const Cancelled&) {
            receive_cancelled = true;
            throw;
        }
        throw std::runtime_error("the last receive returned");
    });
    Portal portal = parent.connect("child", kDeadline);
    auto r = portal.open_context("watcher", {}, [&](Context& ctx, const Payload&) {
        auto stream = ctx.open_stream();
        stream.send(seq_payload(7));
        ASSERT_TRUE(test::wait_until([&] { return waiting_last.load(); }, kDeadline))
            << "the child never got past its receive_for";
        ctx.cancel(kDeadline);
        EXPECT_TRUE(ctx.cancel_acked());
    });
    EXPECT_TRUE(r.outcome.is_absorbed_cancel());
    EXPECT_TRUE(receive_cancelled.load()) << "the blocked receive did not raise Cancelled";
}

// Actor::cancel() from another thread ends a parent body's receive that waits for a child who
// sends nothing, whichever the watch: the wait sees its scope's stop token.
TEST_P(StreamWatch, ActorCancelEndsAWaitingReceive) {
    Actor parent("parent", options());
    Actor child("child", options());
    child.expose("silent", [&](Context& ctx, const Payload&) -> Payload {
        ctx.started();
        auto stream = ctx.open_stream();
        test::until_cancelled(ctx, kDeadline);
        return Payload{};
    });
    Portal portal = parent.connect("child", kDeadline);
    std::atomic<bool> receiving{false};
    std::thread canceller([&] {
        EXPECT_TRUE(test::wait_until([&] { return receiving.load(); }, kDeadline));
        parent.cancel();
    });
    bool cancelled = false;
    try {
        (void)portal.open_context("silent", {}, [&](Context& ctx, const Payload&) {
            auto stream = ctx.open_stream(watching({}));
            receiving = true;
            (void)stream.receive();
            ADD_FAILURE() << "a receive with nothing sent returned";
        });
    } catch (const Cancelled&) {
        cancelled = true;
    }
    canceller.join();
    EXPECT_TRUE(cancelled) << "Actor::cancel() did not end the waiting receive";
}

TEST_F(StreamTest, NegativeSpinBeforeSleepIsInvalidOperation) {
    Actor parent("parent", options());
    Actor child("child", options());
    child.expose("idle", [&](Context& ctx, const Payload&) -> Payload {
        ctx.started();
        return Payload{};
    });
    Portal portal = parent.connect("child", kDeadline);
    bool refused = false;
    (void)portal.open_context("idle", {}, [&](Context& ctx, const Payload&) {
        StreamOptions o;
        o.spin_before_sleep = Duration(-1);
        try {
            (void)ctx.open_stream(o);
        } catch (const InvalidOperation& e) {
            refused = std::string_view(e.what()).find("spin_before_sleep") != std::string::npos;
        }
    });
    EXPECT_TRUE(refused) << "a negative watch was accepted or the error does not name it";
}

/// Messages first, first + 1, ... as seq_payloads, and views of them for send_many.
struct SeqBatch {
    std::vector<Bytes> storage;
    std::vector<PayloadView> views;
    SeqBatch(std::uint64_t first, std::size_t n) {
        storage.reserve(n);
        for (std::size_t i = 0; i < n; ++i) storage.push_back(seq_payload(first + i));
        for (const Bytes& b : storage) views.emplace_back(std::span<const std::byte>(b));
    }
};

/// Reads the stream to its end; throws unless it is 0, 1, ... in order. Returns the count.
std::int64_t read_in_order(MsgStream& stream) {
    std::int64_t n = 0;
    for (const auto& msg : stream) {
        if (seq_of(msg) != static_cast<std::uint64_t>(n)) throw std::runtime_error("order");
        ++n;
    }
    return n;
}

/// Exposes "late_reader": it reads its stream only once `release` reached 1, then to the end;
/// its result is the count (in order, else it throws). Its inbound ring: `capacity` messages.
void expose_late_reader(Actor& child, Level& release, bool allow_overruns, std::uint32_t capacity) {
    child.expose(
        "late_reader",
        [&release](Context& ctx, const Payload&) -> Payload {
            ctx.started();
            auto stream = ctx.open_stream();
            release.wait_in(ctx, 1);
            return Payload::value(read_in_order(stream));
        },
        expose_opts(allow_overruns, capacity));
}

// send_many: every message arrives, in order, across batches of different sizes (one of them
// empty, which sends nothing).
TEST_F(StreamTest, SendManyArrivesInOrder) {
    Actor parent("parent", options());
    Actor child("child", options());
    child.expose("reader", [](Context& ctx, const Payload&) -> Payload {
        ctx.started();
        auto stream = ctx.open_stream();
        return Payload::value(read_in_order(stream));
    });
    Portal portal = parent.connect("child", kDeadline);
    auto r = portal.open_context("reader", {}, [&](Context& ctx, const Payload&) {
        auto stream = ctx.open_stream(blocking());
        std::uint64_t next = 0;
        for (const std::size_t n :
             {std::size_t{1}, std::size_t{64}, std::size_t{0}, std::size_t{7}, std::size_t{300}}) {
            const SeqBatch batch(next, n);
            stream.send_many(batch.views);
            next += n;
        }
        EXPECT_EQ(stream.outbound_counters().sent, next);
        stream.close();
        const SeqBatch late(next, 3);
        EXPECT_THROW(stream.send_many(late.views), EndOfChannel) << "a batch after close()";
        EXPECT_EQ(stream.outbound_counters().sent, next);
    });
    ASSERT_TRUE(r.outcome.has_value());
    EXPECT_EQ(r.outcome.value().value<std::int64_t>(), 372);
}

// send_many into a 4-message ring nobody reads yet, on_full = raise: the four that fit are
// sent (published, so the receiver gets them later), the fifth raises StreamOverrun.
TEST_F(StreamTest, SendManyIntoAFullRingSendsWhatFitsThenRaisesStreamOverrun) {
    Actor parent("parent", options());
    Actor child("child", options());
    Level release;
    expose_late_reader(child, release, false, 4);
    Portal portal = parent.connect("child", kDeadline);
    auto r = portal.open_context("late_reader", {}, [&](Context& ctx, const Payload&) {
        const ReleaseOnThrow guard(release);
        auto stream = ctx.open_stream();
        const SeqBatch batch(0, 10);
        try {
            stream.send_many(batch.views);
            ADD_FAILURE() << "ten messages fit a four-message ring";
        } catch (const StreamOverrun& e) {
            EXPECT_EQ(e.limit(), OverrunLimit::messages);
        }
        EXPECT_EQ(stream.outbound_counters().sent, 4U);
        release.add();
    });
    ASSERT_TRUE(r.outcome.has_value());
    EXPECT_EQ(r.outcome.value().value<std::int64_t>(), 4);
}

// send_many to a receiver that allows overruns, through a one-message ring it reads only after
// the call: the first message goes into the ring, the rest spill, and all arrive in order.
// The record written straight into the ring must be published before the spill starts: the
// drainer needs room that only the receiver's read of it can make.
TEST_F(StreamTest, SendManySpillsBehindWhatItWroteAndKeepsOrder) {
    constexpr std::size_t kItems = 200;
    Actor parent("parent", options());
    Actor child("child", options());
    Level release;
    expose_late_reader(child, release, true, 1);
    Portal portal = parent.connect("child", kDeadline);
    auto r = portal.open_context("late_reader", {}, [&](Context& ctx, const Payload&) {
        const ReleaseOnThrow guard(release);
        auto stream = ctx.open_stream();
        const SeqBatch batch(0, kItems);
        stream.send_many(batch.views);
        EXPECT_GT(stream.outbound_counters().spilled, 0U) << "nothing spilled: no test";
        release.add();
    });
    ASSERT_TRUE(r.outcome.has_value());
    EXPECT_EQ(r.outcome.value().value<std::int64_t>(), static_cast<std::int64_t>(kItems));
}

// send_many with on_full = block into a two-message ring that the receiver reads slowly:
// the call waits for room as often as needed and every message arrives in order.
TEST_F(StreamTest, BlockingSendManyWaitsForRoomAsOftenAsNeeded) {
    constexpr std::size_t kItems = 100;
    Actor parent("parent", options());
    Actor child("child", options());
    child.expose(
        "reader",
        [](Context& ctx, const Payload&) -> Payload {
            ctx.started();
            auto stream = ctx.open_stream();
            return Payload::value(read_in_order(stream));
        },
        expose_opts(false, 2));
    Portal portal = parent.connect("child", kDeadline);
    auto r = portal.open_context("reader", {}, [&](Context& ctx, const Payload&) {
        auto stream = ctx.open_stream(blocking());
        const SeqBatch batch(0, kItems);
        stream.send_many(batch.views);
        EXPECT_GT(stream.outbound_counters().full_events, 0U) << "never full: no test";
    });
    ASSERT_TRUE(r.outcome.has_value());
    EXPECT_EQ(r.outcome.value().value<std::int64_t>(), static_cast<std::int64_t>(kItems));
}

// The peer's Stop while our send is blocked ends the send with EndOfChannel (DESIGN.md §4.8).
TEST_F(StreamTest, ThePeersStopDuringABlockedSendRaisesEndOfChannel) {
    Actor parent("parent", options());
    Actor child("child", options());
    child.expose("flood_until_stop", [&](Context& ctx, const Payload&) -> Payload {
        ctx.started();
        auto stream = ctx.open_stream(blocking());
        std::int64_t sent = 0;
        try {
            for (std::uint64_t i = 0;; ++i) {
                stream.send(seq_payload(i));
                ++sent;
            }
        } catch (const EndOfChannel&) {
            return Payload::value(sent);
        }
    });
    Portal portal = parent.connect("child", kDeadline);
    auto r = portal.open_context(
        "flood_until_stop", {},
        [&](Context& ctx, const Payload&) {
            auto stream = ctx.open_stream();
            EXPECT_TRUE(test::wait_until([&] { return stream.inbound_counters().full_events >= 1; },
                                         kDeadline));
            stream.close();
        },
        open_opts(false, 1));
    ASSERT_TRUE(r.outcome.has_value()) << "the child's blocked send did not end with EndOfChannel";
    EXPECT_EQ(r.outcome.value().value<std::int64_t>(), 1) << "our ring holds one message";
}

// ---------------------------------------------------------------------------------------------
// Spill caps, flush on close, discard on cancel, counters.

// The spill's message cap: past it, on_full = raise gives StreamOverrun (limit spill_cap) and the
// message is not queued; the ring's overrun counter does not count it (the receiver allows
// overruns). What was queued is delivered in order.
TEST_F(StreamTest, SpillPastItsMessageCapRaisesStreamOverrun) {
    Actor parent("parent", options());
    Actor child("child", options());
    Level release;
    child.expose(
        "collect",
        [&](Context& ctx, const Payload&) -> Payload {
            ctx.started();
            auto stream = ctx.open_stream();
            release.wait_in(ctx, 1);
            std::string seen;
            for (const auto& msg : stream) seen += std::to_string(seq_of(msg)) + ",";
            return Payload::value(seen);
        },
        expose_opts(true, 1));
    Portal portal = parent.connect("child", kDeadline);
    auto r = portal.open_context("collect", {}, [&](Context& ctx, const Payload&) {
        const ReleaseOnThrow guard(release);
        StreamOptions o;
        o.spill_cap_msgs = 4;
        auto stream = ctx.open_stream(o);
        for (std::uint64_t i = 0; i < 5; ++i) stream.send(seq_payload(i));  // 1 direct, 4 spilled
        try {
            stream.send(seq_payload(5));
            ADD_FAILURE() << "a fifth spilled message was accepted past a cap of 4";
        } catch (const StreamOverrun& e) {
            EXPECT_EQ(e.limit(), OverrunLimit::spill_cap);
        }
        EXPECT_EQ(stream.try_send(seq_payload(5)), SendStatus::full);
        const shm::RingCounters c = stream.outbound_counters();
        EXPECT_EQ(c.spilled, 4U);
        EXPECT_EQ(c.spill_high_water, 4U);
        EXPECT_EQ(c.overruns, 0U);
        release.add();
    });
    ASSERT_TRUE(r.outcome.has_value());
    EXPECT_EQ(r.outcome.value().value<std::string>(), "0,1,2,3,4,");
}

// The byte cap: 300-byte messages against a 1000-byte cap: three fit in the spill, the fourth is
// refused with StreamOverrun (limit spill_cap).
TEST_F(StreamTest, SpillPastItsByteCapRaisesStreamOverrun) {
    Actor parent("parent", options());
    Actor child("child", options());
    Level release;
    child.expose(
        "collect",
        [&](Context& ctx, const Payload&) -> Payload {
            ctx.started();
            auto stream = ctx.open_stream();
            release.wait_in(ctx, 1);
            std::int64_t n = 0;
            for (const auto& msg : stream) {
                if (seq_of(msg) != static_cast<std::uint64_t>(n)) throw std::runtime_error("order");
                ++n;
            }
            return Payload::value(n);
        },
        expose_opts(true, 1));
    Portal portal = parent.connect("child", kDeadline);
    auto r = portal.open_context("collect", {}, [&](Context& ctx, const Payload&) {
        const ReleaseOnThrow guard(release);
        StreamOptions o;
        o.spill_cap_bytes = 1000;
        auto stream = ctx.open_stream(o);
        for (std::uint64_t i = 0; i < 4; ++i) stream.send(seq_payload(i, 300));  // 1 + 3 spilled
        try {
            stream.send(seq_payload(4, 300));
            ADD_FAILURE() << "1200 spilled bytes were accepted past a cap of 1000";
        } catch (const StreamOverrun& e) {
            EXPECT_EQ(e.limit(), OverrunLimit::spill_cap);
        }
        // A smaller message still fits under the byte cap.
        stream.send(seq_payload(4, 100));
        EXPECT_EQ(stream.outbound_counters().spilled, 4U);
        release.add();
    });
    ASSERT_TRUE(r.outcome.has_value());
    EXPECT_EQ(r.outcome.value().value<std::int64_t>(), 5);
}

// on_full = block at the spill cap waits for room in the spill (the consumer reads, the drainer
// moves a message into the ring), then queues.
TEST_F(StreamTest, BlockingSendAtTheSpillCapWaitsForRoom) {
    Actor parent("parent", options());
    Actor child("child", options());
    Level release;
    std::atomic<pid_t> sender_tid{0};
    std::atomic<bool> reading{false};
    child.expose(
        "collect",
        [&](Context& ctx, const Payload&) -> Payload {
            ctx.started();
            auto stream = ctx.open_stream();
            release.wait_in(ctx, 1);
            // The sender sleeps in its send (blocked at the cap).
            if (!test::wait_until(
                    [&] {
                        const pid_t tid = sender_tid.load();
                        return tid != 0 && test::thread_state(tid) == 'S';
                    },
                    kDeadline)) {
                throw std::runtime_error("the sender never blocked");
            }
            reading = true;
            std::string seen;
            for (const auto& msg : stream) seen += std::to_string(seq_of(msg)) + ",";
            return Payload::value(seen);
        },
        expose_opts(true, 1));
    Portal portal = parent.connect("child", kDeadline);
    bool read_before_return = false;
    auto r = portal.open_context("collect", {}, [&](Context& ctx, const Payload&) {
        const ReleaseOnThrow guard(release);
        StreamOptions o = blocking();
        o.spill_cap_msgs = 3;
        auto stream = ctx.open_stream(o);
        for (std::uint64_t i = 0; i < 4; ++i) stream.send(seq_payload(i));  // 1 direct, 3 spilled
        sender_tid = test::current_tid();
        release.add();
        stream.send(seq_payload(4));  // blocks at the cap until the consumer reads
        read_before_return = reading.load();
        stream.send(seq_payload(5));
        EXPECT_EQ(stream.outbound_counters().spill_high_water, 3U);
    });
    EXPECT_TRUE(read_before_return) << "the send at the spill cap returned before any read";
    ASSERT_TRUE(r.outcome.has_value());
    EXPECT_EQ(r.outcome.value().value<std::string>(), "0,1,2,3,4,5,");
}

// A normal close flushes everything spilled before the peer sees EndOfChannel: a slow consumer
// gets every message, in order, then the end.
TEST_F(StreamTest, NormalCloseFlushesTheSpillBeforeTheEnd) {
    const std::uint64_t items = test::scaled(2000, 200);
    Actor parent("parent", options());
    Actor child("child", options());
    Level release;
    child.expose(
        "slow_count",
        [&](Context& ctx, const Payload&) -> Payload {
            ctx.started();
            auto stream = ctx.open_stream();
            release.wait_in(ctx, 1);
            std::int64_t n = 0;
            for (const auto& msg : stream) {
                if (seq_of(msg) != static_cast<std::uint64_t>(n)) throw std::runtime_error("order");
                if (++n % 100 == 0) test::simulate_work(200us);  // a slow consumer
            }
            return Payload::value(n);
        },
        expose_opts(true, 4));
    Portal portal = parent.connect("child", kDeadline);
    shm::RingCounters c;
    auto r = portal.open_context("slow_count", {}, [&](Context& ctx, const Payload&) {
        const ReleaseOnThrow guard(release);
        auto stream = ctx.open_stream();
        for (std::uint64_t i = 0; i < items; ++i) stream.send(seq_payload(i));
        EXPECT_EQ(stream.outbound_counters().spilled, items - 4) << "the consumer did not wait";
        release.add();
        stream.close();  // returns once the spill is flushed
        c = stream.outbound_counters();
    });
    ASSERT_TRUE(r.outcome.has_value());
    EXPECT_EQ(r.outcome.value().value<std::int64_t>(), static_cast<std::int64_t>(items));
    EXPECT_EQ(c.sent, items);
    EXPECT_EQ(c.spilled, items - 4);
    EXPECT_EQ(c.spill_drained, items - 4);
    EXPECT_EQ(c.spill_discarded, 0U);
    EXPECT_EQ(c.spill_depth(), 0U);
}

// A cancelled context discards its spill, and the counters say how many (spill_discarded); nothing
// queued is delivered after the cancel.
TEST_F(StreamTest, CancelledContextDiscardsItsSpillAndCountsIt) {
    constexpr std::uint64_t kItems = 50;
    Actor parent("parent", options());
    Actor child("child", options());
    child.expose(
        "never_read",
        [&](Context& ctx, const Payload&) -> Payload {
            ctx.started();
            auto stream = ctx.open_stream();
            test::until_cancelled(ctx, kDeadline);
            return Payload{};
        },
        expose_opts(true, 1));
    Portal portal = parent.connect("child", kDeadline);
    shm::RingCounters c;
    auto r = portal.open_context("never_read", {}, [&](Context& ctx, const Payload&) {
        auto stream = ctx.open_stream();
        for (std::uint64_t i = 0; i < kItems; ++i) stream.send(seq_payload(i));
        ctx.cancel(kDeadline);
        EXPECT_TRUE(ctx.cancel_acked());
        EXPECT_TRUE(test::wait_until(
            [&] {
                c = stream.outbound_counters();
                return c.spill_depth() == 0;
            },
            kDeadline));
    });
    EXPECT_TRUE(r.outcome.is_absorbed_cancel());
    EXPECT_EQ(c.sent, 1U);
    EXPECT_EQ(c.spilled, kItems - 1);
    EXPECT_EQ(c.spill_drained, 0U);
    EXPECT_EQ(c.spill_discarded, kItems - 1);
    EXPECT_EQ(c.spill_high_water, kItems - 1);
}

// A body that fails while its spill holds messages for a consumer that does not read: the error
// must leave the block promptly and the spill is discarded (DESIGN.md §4.2: "a cancelled or failed
// context discards the spill"), not flushed by the stream's destructor during the unwinding (which
// would wait for reads that never come). The body runs on its own thread so a stuck flush is
// reported and then ended (cancelling the child actor) instead of tripping the watchdog.
TEST_F(StreamTest, BodyErrorWhileSpillingLeavesPromptlyAndDiscardsTheSpill) {
    constexpr std::uint64_t kItems = 50;
    Actor parent("parent", options());
    Actor child("child", options());
    child.expose(
        "never_read",
        [&](Context& ctx, const Payload&) -> Payload {
            ctx.started();
            auto stream = ctx.open_stream();
            test::until_cancelled(ctx, kDeadline);
            return Payload{};
        },
        expose_opts(true, 1));
    Portal portal = parent.connect("child", kDeadline);
    std::atomic<bool> done{false};
    std::mutex handle_mu;
    std::optional<Context> handle;  // guarded by handle_mu
    std::string escaped;
    std::thread body_thread([&] {
        try {
            portal.open_context("never_read", {}, [&](Context& ctx, const Payload&) {
                {
                    const std::lock_guard lock(handle_mu);
                    handle = ctx.handle();
                }
                auto stream = ctx.open_stream();
                for (std::uint64_t i = 0; i < kItems; ++i) stream.send(seq_payload(i));
                throw std::domain_error("body failed while spilling");
            });
        } catch (const std::domain_error& e) {
            escaped = e.what();
        } catch (const std::exception& e) {
            escaped = std::string("unexpected: ") + e.what();
        }
        done = true;
    });
    const bool prompt = test::wait_until([&] { return done.load(); }, 5s);
    EXPECT_TRUE(prompt) << "the failed body's block did not end: its stream's destructor flushes "
                           "the spill into a ring nobody reads";
    if (!prompt) {
        // Cancel the context from here: the child's ContextCancelled ends the flush.
        const std::lock_guard lock(handle_mu);
        if (handle) handle->cancel();
    }
    body_thread.join();
    EXPECT_EQ(escaped, "body failed while spilling");
}

// Every counter after a run whose consumer reads nothing until the sender is done: 8 direct
// writes, 92 spilled (the high water: nothing drains while the ring is full), all drained once
// the consumer reads; no overrun; both sides read the same words.
TEST_F(StreamTest, CountersAreExactAfterASpillingRun) {
    constexpr std::uint64_t kItems = 100;
    constexpr std::uint32_t kSlots = 8;
    Actor parent("parent", options());
    Actor child("child", options());
    Level release;
    shm::RingCounters child_view;
    child.expose(
        "collect",
        [&](Context& ctx, const Payload&) -> Payload {
            ctx.started();
            auto stream = ctx.open_stream();
            release.wait_in(ctx, 1);
            std::int64_t n = 0;
            while (n < static_cast<std::int64_t>(kItems)) {
                if (seq_of(stream.receive()) != static_cast<std::uint64_t>(n)) {
                    throw std::runtime_error("order");
                }
                ++n;
            }
            if (!test::wait_until(
                    [&] {
                        child_view = stream.inbound_counters();
                        return child_view.spill_drained == kItems - kSlots;
                    },
                    kDeadline)) {
                throw std::runtime_error("the drainer's count never reached what was read");
            }
            for (const auto& msg : stream) (void)msg;
            return Payload::value(n);
        },
        expose_opts(true, kSlots));
    Portal portal = parent.connect("child", kDeadline);
    shm::RingCounters before;
    shm::RingCounters after;
    std::uint64_t bytes = 0;
    auto r = portal.open_context("collect", {}, [&](Context& ctx, const Payload&) {
        const ReleaseOnThrow guard(release);
        auto stream = ctx.open_stream();
        for (std::uint64_t i = 0; i < kItems; ++i) {
            const auto p = seq_payload(i, 8 + i);
            bytes += p.size();
            stream.send(p);
        }
        before = stream.outbound_counters();
        release.add();
        stream.close();  // flushes
        // The close waits for the ring, not for the reader: wait until it read the last one.
        EXPECT_TRUE(test::wait_until(
            [&] {
                after = stream.outbound_counters();
                return after.received == kItems;
            },
            kDeadline));
    });
    ASSERT_TRUE(r.outcome.has_value());
    EXPECT_EQ(before.sent, kSlots);
    EXPECT_EQ(before.received, 0U);
    EXPECT_EQ(before.spilled, kItems - kSlots);
    EXPECT_EQ(before.spill_high_water, kItems - kSlots);
    EXPECT_EQ(before.spill_depth(), kItems - kSlots);
    EXPECT_EQ(before.spill_drained, 0U);
    // full_events counts every push that found the ring full: the sender's first (before it
    // spilled; later sends queue behind the spill without trying) and the drainer's retries.
    EXPECT_GE(before.full_events, 1U);
    EXPECT_EQ(after.sent, kItems);
    EXPECT_EQ(after.received, kItems);
    EXPECT_EQ(after.payload_bytes, bytes);
    EXPECT_EQ(after.spilled, kItems - kSlots);
    EXPECT_EQ(after.spill_drained, kItems - kSlots);
    EXPECT_EQ(after.spill_discarded, 0U);
    EXPECT_EQ(after.spill_high_water, kItems - kSlots);
    EXPECT_EQ(after.overruns, 0U);
    EXPECT_EQ(after.spill_depth(), 0U);
    EXPECT_EQ(child_view.spilled, after.spilled);
    EXPECT_EQ(child_view.spill_drained, after.spill_drained);
    EXPECT_EQ(child_view.sent, after.sent);
    EXPECT_EQ(child_view.payload_bytes, after.payload_bytes);
}

// ---------------------------------------------------------------------------------------------
// FlatBuffers payloads through the spill.

// Mixed-size Tick tables (a few bytes to ~20 KB, so both the message and the byte limit of the
// ring are hit) sent in spill mode to a slow reader: each arrives verified (as<Tick>()), intact
// and in order.
TEST_F(StreamTest, MixedSizeFlatBuffersTablesSurviveTheSpill) {
    using test::fb::Tick;
    const std::uint64_t items = test::scaled(600, 100);
    const auto symbol_of = [](std::uint64_t i) {
        return std::string(1 + (i * 7919) % (i % 5 == 0 ? 20000 : 200),
                           static_cast<char>('A' + i % 26));
    };
    Actor parent("parent", options());
    Actor child("child", options());
    child.expose(
        "ticks",
        [&](Context& ctx, const Payload&) -> Payload {
            ctx.started();
            auto stream = ctx.open_stream();
            std::uint64_t n = 0;
            for (const auto& msg : stream) {
                const Tick* t = msg.as<Tick>();
                const flatbuffers::String* symbol = t->symbol();
                const auto* venues = t->venues();
                const bool intact = t->seq() == n && symbol != nullptr &&
                                    symbol->string_view() == symbol_of(n) &&
                                    t->qty() == -static_cast<std::int64_t>(n) &&
                                    t->price() == 0.5 * static_cast<double>(n) &&
                                    venues != nullptr && venues->size() == n % 4;
                if (!intact) throw std::runtime_error("tick " + std::to_string(n) + " damaged");
                ++n;
                if (n % 50 == 0) test::simulate_work(300us);  // a slow consumer
            }
            return Payload::value(static_cast<std::int64_t>(n));
        },
        expose_opts(true, 4));
    Portal portal = parent.connect("child", kDeadline);
    std::uint64_t spilled = 0;
    auto r = portal.open_context("ticks", {}, [&](Context& ctx, const Payload&) {
        auto stream = ctx.open_stream();
        for (std::uint64_t i = 0; i < items; ++i) {
            flatbuffers::FlatBufferBuilder fbb;
            std::vector<flatbuffers::Offset<flatbuffers::String>> venues;
            for (std::uint64_t v = 0; v < i % 4; ++v) {
                venues.push_back(fbb.CreateString("V" + std::to_string(v)));
            }
            const auto venue_vector = fbb.CreateVector(venues);
            const auto symbol = fbb.CreateString(symbol_of(i));
            test::fb::TickBuilder tick(fbb);
            tick.add_symbol(symbol);
            tick.add_price(0.5 * static_cast<double>(i));
            tick.add_qty(-static_cast<std::int64_t>(i));
            tick.add_seq(i);
            tick.add_venues(venue_vector);
            fbb.Finish(tick.Finish(), test::fb::TickIdentifier());
            stream.send(fbb);
        }
        spilled = stream.outbound_counters().spilled;
    });
    ASSERT_TRUE(r.outcome.has_value());
    EXPECT_EQ(r.outcome.value().value<std::int64_t>(), static_cast<std::int64_t>(items));
    EXPECT_GT(spilled, 0U) << "nothing spilled: the test did not exercise the spill";
}

// A moved-from MsgStream raises InvalidOperation naming the member from every call that can
// raise, and its noexcept calls return what a dead stream would (peer_error, closed, 0); the
// stream it moved into works (discrepancy 17).
TEST_F(StreamTest, MovedFromStreamRaisesInvalidOperationFromEveryMember) {
    Actor parent("parent", options());
    Actor child("child", options());
    child.expose("echo", [](Context& ctx, const Payload&) {
        ctx.started();
        MsgStream s = ctx.open_stream();
        for (const auto& msg : s) s.send(msg.view());
        return Payload{};
    });
    Portal portal = parent.connect("child", kDeadline);
    auto r = portal.open_context("echo", {}, [&](Context& ctx, const Payload&) {
        MsgStream from = ctx.open_stream();
        MsgStream to = std::move(from);
        MsgStream& s = from;  // NOLINT(bugprone-use-after-move): the point of the test
        const auto raises = [](const char* member, auto&& call) {
            try {
                call();
                ADD_FAILURE() << member << " did not raise";
            } catch (const InvalidOperation& e) {
                EXPECT_THAT(e.what(), ::testing::HasSubstr(std::string(member) +
                                                           " on a moved-from MsgStream"));
            }
        };
        const std::byte byte{1};
        const auto fill = [&](std::span<std::byte> out) {
            out[0] = byte;
            return std::size_t{1};
        };
        raises("MsgStream::send", [&] { s.send("x"); });
        raises("MsgStream::send_with", [&] { s.send_with(1, fill); });
        raises("MsgStream::send_many", [&] {
            const PayloadView one("x");
            s.send_many(std::span<const PayloadView>(&one, 1));
        });
        raises("MsgStream::receive", [&] { (void)s.receive(); });
        raises("MsgStream::receive_for", [&] { (void)s.receive_for(1ms); });
        raises("MsgStream::drain", [&] { (void)s.drain([](const Message&) {}, 1); });
        raises("MsgStream::receive", [&] {
            for (const auto& msg : s) (void)msg;
        });
        raises("MsgStream::outbound_counters", [&] { (void)s.outbound_counters(); });
        raises("MsgStream::inbound_counters", [&] { (void)s.inbound_counters(); });
        raises("MsgStream::close", [&] { s.close(); });
        raises("MsgStream::subscribe", [&] { (void)s.subscribe(); });
        EXPECT_EQ(s.try_send("x"), SendStatus::peer_error);
        EXPECT_EQ(s.try_send_with(1, fill), SendStatus::peer_error);
        Message m;
        EXPECT_EQ(s.try_receive(m), RecvStatus::peer_error);
        EXPECT_TRUE(s.closed());
        EXPECT_EQ(s.max_message_bytes(), 0U);
        // The stream it moved into carries on; assigning to the moved-from one revives it.
        to.send("ping");
        EXPECT_EQ(to.receive().text(), "ping");
        from = std::move(to);
        from.send("pong");
        EXPECT_EQ(from.receive().text(), "pong");
    });
    r.outcome.rethrow_if_error();
}

}  // namespace
}  // namespace shmctx
