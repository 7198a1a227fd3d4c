// Limits and semi-trusted payloads between actors of one process (issue 9 items 4 and 5;
// docs/protocol.d/security.md): every limit error carries its figures in its text
// (TooManyContexts, PayloadTooLarge for Start arguments, started(), Return and stream
// messages); copy_on_receive messages stay intact however often the sender reuses the ring
// space; Message::as<T>() refuses a FlatBuffer of another file identifier with DecodeError.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "namespace_guard.hpp"
#include "process.hpp"
#include "shmctx/actor.hpp"
#include "shmctx/context.hpp"
#include "shmctx/errors.hpp"
#include "shmctx/payload.hpp"
#include "shmctx/test_tick_generated.h"
#include "shmctx/wire/codec.hpp"

SHMCTX_ROOT_TYPE(shmctx::test::fb::Tick, "TICK");

namespace shmctx {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr auto kDeadline = 20s;

class Security : public ::testing::Test {
protected:
    ActorOptions options() const { return ActorOptions{.ns = ns_.names.ns()}; }
    test::NamespaceGuard ns_{"sec"};
};

// ---------------------------------------------------------------------------------------------
// Limits: the figures are in the text

TEST_F(Security, TooManyContextsNamesTheLimit) {
    Actor parent("parent", options());
    ActorOptions child_options = options();
    child_options.max_endpoints = 1;
    Actor child("child", child_options);
    child.expose("hold", [](Context& ctx, const Payload&) -> Payload {
        ctx.started();
        auto stream = ctx.open_stream();
        for (const auto& msg : stream) (void)msg;
        return Payload{};
    });
    Portal portal = parent.connect("child", kDeadline);
    auto r = portal.open_context("hold", {}, [&](Context& ctx, const Payload&) {
        auto stream = ctx.open_stream();  // the one endpoint is busy until this stream ends
        try {
            (void)portal.run("hold", {}, Deadline(kDeadline));
            ADD_FAILURE() << "a second endpoint ran past max_endpoints = 1";
        } catch (const RemoteActorError& e) {
            EXPECT_TRUE(e.boxed_is<TooManyContexts>()) << e.boxed_type_name();
            EXPECT_THAT(e.what(), HasSubstr("max_endpoints=1 ")) << e.what();
        }
    });
    EXPECT_TRUE(r.outcome.has_value());
}

constexpr std::size_t kCap = 4096;
const std::string kBig(3 * kCap, 'x');

ActorOptions capped(ActorOptions o) {
    o.max_control_record_bytes = kCap;
    return o;
}

/// "is <size> bytes, over the cap of <cap> bytes" with the figures of `e`.
void expect_figures(const std::string& what, std::size_t size_at_least) {
    EXPECT_THAT(what, HasSubstr("over the cap of " + std::to_string(kCap) + " bytes")) << what;
    const auto at = what.find(" is ");
    ASSERT_NE(at, std::string::npos) << what;
    EXPECT_GE(std::stoull(what.substr(at + 4)), size_at_least) << what;
}

TEST_F(Security, PayloadTooLargeNamesSizeAndCapForStartStartedAndReturn) {
    Actor parent("parent", capped(options()));
    Actor child("child", capped(options()));
    child.expose("big_started", [](Context& ctx, const Payload&) -> Payload {
        ctx.started(Payload::value(kBig));
        return Payload{};
    });
    child.expose("big_return", [](Context&, const Payload&) { return Payload::value(kBig); });
    child.expose("sink", [](Context&, const Payload&) { return Payload{}; });
    Portal portal = parent.connect("child", kDeadline);
    // Start arguments: refused here, before anything is sent.
    try {
        (void)portal.run("sink", Payload::value(kBig));
        ADD_FAILURE() << "start arguments over the cap were sent";
    } catch (const PayloadTooLarge& e) {
        EXPECT_EQ(e.cap_bytes(), kCap);
        EXPECT_GE(e.size_bytes(), kBig.size());
        EXPECT_THAT(e.what(), HasSubstr("start arguments of 'sink'"));
        expect_figures(e.what(), kBig.size());
    }
    // started() and Return: raised in the child, boxed to us with the child's text.
    for (const char* fn : {"big_started", "big_return"}) {
        SCOPED_TRACE(fn);
        try {
            (void)portal.run(fn);
            ADD_FAILURE() << "a value over the cap arrived";
        } catch (const RemoteActorError& e) {
            EXPECT_TRUE(e.boxed_is<PayloadTooLarge>()) << e.boxed_type_name();
            expect_figures(e.what(), kBig.size());
        }
    }
    EXPECT_EQ(portal.run("sink").kind(), PayloadKind::empty) << "the link is still usable";
}

// A stream message over a quarter of the sender's data ring: try_send says too_large, send()
// raises PayloadTooLarge naming the message size, the limit and the ring it comes from (not the
// control-record cap, which has nothing to do with it).
TEST_F(Security, StreamMessageOverAQuarterOfTheRingIsTooLargeWithFigures) {
    ActorOptions small = options();
    small.data_ring_bytes = 8192;
    Actor parent("parent", small);
    Actor child("child", options());
    child.expose("sink", [](Context& ctx, const Payload&) -> Payload {
        ctx.started();
        auto stream = ctx.open_stream();
        std::int64_t n = 0;
        for (const auto& msg : stream) n += static_cast<std::int64_t>(msg.bytes().size());
        return Payload::value(n);
    });
    Portal portal = parent.connect("child", kDeadline);
    std::size_t limit = 0;
    auto r = portal.open_context("sink", {}, [&](Context& ctx, const Payload&) {
        auto stream = ctx.open_stream();
        const std::size_t max = stream.max_message_bytes();
        limit = max;
        EXPECT_LE(max, small.data_ring_bytes / 4);
        const std::vector<std::byte> fits(max);
        const std::vector<std::byte> huge(max + 1);
        EXPECT_EQ(stream.try_send(std::span<const std::byte>(huge)), SendStatus::too_large);
        try {
            stream.send(std::span<const std::byte>(huge));
            ADD_FAILURE() << "send() of a message over the limit returned";
        } catch (const PayloadTooLarge& e) {
            EXPECT_EQ(e.size_bytes(), max + 1);
            EXPECT_EQ(e.cap_bytes(), max);
            EXPECT_THAT(e.what(), HasSubstr(std::to_string(max + 1) + " bytes"));
            EXPECT_THAT(e.what(), HasSubstr(std::to_string(max) + " bytes"));
            EXPECT_THAT(e.what(), HasSubstr("data_ring_bytes"));
            EXPECT_THAT(e.what(), Not(HasSubstr("control record"))) << e.what();
        }
        stream.send(std::span<const std::byte>(fits));  // the stream is still usable
    });
    ASSERT_TRUE(r.outcome.has_value());
    EXPECT_EQ(r.outcome.value().value<std::int64_t>(), static_cast<std::int64_t>(limit))
        << "only the message that fits arrived";
}

// ---------------------------------------------------------------------------------------------
// copy_on_receive

std::vector<std::byte> pattern(std::uint64_t seq, std::size_t size) {
    std::vector<std::byte> out(std::max(size, sizeof seq));
    std::memcpy(out.data(), &seq, sizeof seq);
    for (std::size_t i = sizeof seq; i < size; ++i) {
        out[i] = static_cast<std::byte>((seq * 131 + i * 7) & 0xff);
    }
    return out;
}

/// The sequence number of a pattern() message; throws if any byte differs.
std::uint64_t check_pattern(std::span<const std::byte> bytes) {
    std::uint64_t seq = 0;
    if (bytes.size() < sizeof seq) throw std::runtime_error("short message");
    std::memcpy(&seq, bytes.data(), sizeof seq);
    if (!std::equal(bytes.begin(), bytes.end(), pattern(seq, bytes.size()).begin())) {
        throw std::runtime_error("message " + std::to_string(seq) + " changed");
    }
    return seq;
}

// The sender's data ring is 4 KiB and each message up to ~1 KiB: 400 messages overwrite every
// byte of the ring about a hundred times while the receiver keeps every Message it got. With
// copy_on_receive each kept Message owns its bytes and is intact at the end; a view would show
// a later message's bytes (and is what the receiver gets without the option).
TEST_F(Security, CopyOnReceiveMessagesSurviveTheSenderReusingTheRing) {
    constexpr std::uint64_t kItems = 400;
    ActorOptions small = options();
    small.data_ring_bytes = 4096;
    Actor parent("parent", small);
    Actor child("child", options());
    child.expose("keep", [&](Context& ctx, const Payload&) -> Payload {
        ctx.started();
        StreamOptions o;
        o.copy_on_receive = true;
        o.msg_buffer_size = 4;
        auto stream = ctx.open_stream(o);
        std::vector<Message> kept;
        for (const auto& msg : stream) {
            if (!msg.owned()) throw std::runtime_error("copy_on_receive gave a view");
            kept.push_back(msg);
        }
        for (std::size_t i = 0; i < kept.size(); ++i) {
            if (check_pattern(kept[i].bytes()) != i) throw std::runtime_error("order");
        }
        return Payload::value(static_cast<std::int64_t>(kept.size()));
    });
    Portal portal = parent.connect("child", kDeadline);
    std::uint64_t wrapped_bytes = 0;
    auto r = portal.open_context("keep", {}, [&](Context& ctx, const Payload&) {
        StreamOptions o;
        o.on_full = OnFull::block;
        auto stream = ctx.open_stream(o);
        const std::size_t max = stream.max_message_bytes();
        for (std::uint64_t i = 0; i < kItems; ++i) {
            const auto bytes = pattern(i, max / 2 + (i * 37) % (max / 2));
            wrapped_bytes += bytes.size();
            stream.send(std::span<const std::byte>(bytes));
        }
    });
    ASSERT_TRUE(r.outcome.has_value()) << "the receiver failed";
    EXPECT_EQ(r.outcome.value().value<std::int64_t>(), static_cast<std::int64_t>(kItems));
    EXPECT_GT(wrapped_bytes, 50U * small.data_ring_bytes) << "the ring was not reused enough";
}

// ---------------------------------------------------------------------------------------------
// File identifiers: Message::as<T>()

flatbuffers::FlatBufferBuilder tick(std::uint64_t seq, const char* identifier) {
    flatbuffers::FlatBufferBuilder fbb;
    fbb.Finish(test::fb::CreateTickDirect(fbb, "ACME", 1.5, 10, seq), identifier);
    return fbb;
}

// A stream carries a Tick with its own identifier, one with a forged identifier and a text:
// as<Tick>() accepts only the first; as<ControlMessage>() (another declared root type) refuses
// the Tick, naming both identifiers; nothing is a crash.
TEST_F(Security, MessageAsRefusesAnotherFileIdentifier) {
    Actor parent("parent", options());
    Actor child("child", options());
    child.expose("check", [&](Context& ctx, const Payload&) -> Payload {
        ctx.started();
        auto stream = ctx.open_stream();
        std::string report;
        const auto outcome = [&](auto&& decode) {
            try {
                decode();
                return std::string("ok");
            } catch (const DecodeError& e) {
                return std::string("DecodeError(") + e.what() + ")";
            }
        };
        const Message good = stream.receive();
        report += "good.tick=" + outcome([&] {
                      if (good.as<test::fb::Tick>()->seq() != 1) throw std::runtime_error("seq");
                  });
        report += "\ngood.control=" + outcome([&] { (void)good.as<wire::fb::ControlMessage>(); });
        const Message forged = stream.receive();
        report += "\nforged.tick=" + outcome([&] { (void)forged.as<test::fb::Tick>(); });
        const Message text = stream.receive();
        report += "\ntext.tick=" + outcome([&] { (void)text.as<test::fb::Tick>(); });
        return Payload::value(report);
    });
    Portal portal = parent.connect("child", kDeadline);
    auto r = portal.open_context("check", {}, [&](Context& ctx, const Payload&) {
        auto stream = ctx.open_stream();
        auto good = tick(1, test::fb::TickIdentifier());
        auto forged = tick(2, "XXXX");
        stream.send(good);
        stream.send(forged);
        stream.send("not a flatbuffer");
    });
    ASSERT_TRUE(r.outcome.has_value());
    const std::string report = r.outcome.value().value<std::string>();
    EXPECT_THAT(report, HasSubstr("good.tick=ok\n")) << report;
    EXPECT_THAT(report, HasSubstr("good.control=DecodeError(")) << report;
    EXPECT_THAT(report, HasSubstr("expected 'SHMC', found 'TICK'")) << report;
    EXPECT_THAT(report, HasSubstr("forged.tick=DecodeError(")) << report;
    EXPECT_THAT(report, HasSubstr("expected 'TICK', found 'XXXX'")) << report;
    EXPECT_THAT(report, HasSubstr("text.tick=DecodeError(")) << report;
}

// Message::as<T>() accepts the kinds Payload::as<T>() accepts (flatbuffer and bytes): a Tick
// built in place with send_with's default kind (bytes) decodes from the message as from its
// copy, a forged identifier is refused by both, and a text message by both (discrepancy 4).
TEST_F(Security, MessageAsAcceptsTheKindsPayloadAsAccepts) {
    Actor parent("parent", options());
    Actor child("child", options());
    child.expose("check", [&](Context& ctx, const Payload&) -> Payload {
        ctx.started();
        auto stream = ctx.open_stream();
        std::string report;
        const auto outcome = [&](auto&& decode) {
            try {
                return decode() == 7 ? std::string("ok") : std::string("wrong seq");
            } catch (const DecodeError&) {
                return std::string("DecodeError");
            }
        };
        for (const char* name : {"in_place", "forged", "text"}) {
            const Message m = stream.receive();
            report += std::string(name) + ".kind=" + std::string(to_string(m.kind()));
            report += " message=" + outcome([&] { return m.as<test::fb::Tick>()->seq(); });
            const Payload copy = m.to_payload();
            report += " payload=" + outcome([&] { return copy.as<test::fb::Tick>()->seq(); });
            report += "\n";
        }
        return Payload::value(report);
    });
    Portal portal = parent.connect("child", kDeadline);
    auto r = portal.open_context("check", {}, [&](Context& ctx, const Payload&) {
        auto stream = ctx.open_stream();
        for (const char* identifier : {test::fb::TickIdentifier(), "XXXX"}) {
            const auto fbb = tick(7, identifier);
            stream.send_with(fbb.GetSize(), [&](std::span<std::byte> out) {
                std::memcpy(out.data(), fbb.GetBufferPointer(), fbb.GetSize());
                return fbb.GetSize();
            });
        }
        stream.send("not a flatbuffer");
    });
    ASSERT_TRUE(r.outcome.has_value());
    EXPECT_EQ(r.outcome.value().value<std::string>(),
              "in_place.kind=bytes message=ok payload=ok\n"
              "forged.kind=bytes message=DecodeError payload=DecodeError\n"
              "text.kind=string message=DecodeError payload=DecodeError\n");
}

}  // namespace
}  // namespace shmctx
