// Wire layer: control message round trips, decoding of forged and random buffers (always a
// DecodeError, never a crash: this binary also runs under ASan+UBSan), Payload values, and
// Payload::as<T>() with a user schema (test_tick.fbs, file identifier "TICK").
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "process.hpp"
#include "shmctx/errors.hpp"
#include "shmctx/payload.hpp"
#include "shmctx/test_tick_generated.h"
#include "shmctx/wire/codec.hpp"

SHMCTX_ROOT_TYPE(shmctx::test::fb::Tick, "TICK");

namespace shmctx::wire {
namespace {

using shmctx::test::fb::Tick;
using ::testing::HasSubstr;

static_assert(DeclaredRootType<Tick>);
static_assert(DeclaredRootType<fb::ControlMessage>);
static_assert(!DeclaredRootType<fb::Start>, "only root types are declared");

// Dereferences a pointer the test expects to be set; a null one fails the test by exception
// instead of crashing (and tells the optimiser the pointer is non-null past this point).
template <class T>
const T& must(const T* p) {
    if (p == nullptr) {
        throw std::logic_error("unexpected null pointer");
    }
    return *p;
}

// A heap copy of exactly `bytes.size()` bytes at an 8-byte aligned address (as a ring record
// delivers it), so ASan reports any read past the end.
class Record {
public:
    explicit Record(std::span<const std::byte> bytes, std::size_t shift = 0)
        : size_(bytes.size()), mem_(new std::byte[bytes.size() + shift]) {
        if (!bytes.empty()) {
            std::memcpy(mem_.get() + shift, bytes.data(), bytes.size());
        }
        shift_ = shift;
    }
    std::span<const std::byte> span() const { return {mem_.get() + shift_, size_}; }
    std::byte* data() { return mem_.get() + shift_; }
    std::size_t size() const { return size_; }
    template <class T>
    void put(std::size_t offset, T v) {
        ASSERT_LE(offset + sizeof(T), size_);
        std::memcpy(data() + offset, &v, sizeof(T));
    }

private:
    std::size_t size_;
    std::unique_ptr<std::byte[]> mem_;
    std::size_t shift_ = 0;
};

Uuid uuid_of(std::uint8_t seed) {
    Uuid u;
    for (std::size_t i = 0; i < u.bytes.size(); ++i) {
        u.bytes[i] = static_cast<std::uint8_t>(seed + 17 * i + 1);
    }
    return u;
}

const Cid kCid{uuid_of(1), 17};
const UidRef kAlice{"alice", uuid_of(2)};
const UidRef kBob{"bob", uuid_of(3)};
const UidRef kCarol{"carol", uuid_of(4)};

void expect_uid(const fb::Uid* u, const UidRef& want) {
    ASSERT_NE(u, nullptr);
    const UidRef got = from_fb(*u);
    EXPECT_EQ(got.name, want.name);
    EXPECT_EQ(got.uuid, want.uuid);
}

// Reads every field of a decoded message (so ASan sees any out-of-bounds access); returns a
// checksum so the reads cannot be optimised away.
std::size_t touch_all(const ControlView& v) {
    std::size_t sum = static_cast<std::size_t>(v.type());
    auto uid = [&](const fb::Uid* u) {
        if (u != nullptr) {
            const UidRef r = from_fb(*u);
            sum += r.name.size() + r.uuid.bytes[15];
            for (char c : r.name) sum += static_cast<unsigned char>(c);
        }
    };
    auto str = [&](const flatbuffers::String* s) {
        if (s != nullptr) {
            for (char c : s->string_view()) sum += static_cast<unsigned char>(c);
        }
    };
    auto val = [&](const fb::Value* x) {
        for (std::byte b : from_fb(x).bytes()) sum += static_cast<unsigned>(b);
    };
    auto cid = [&](const fb::Cid* c) {
        if (c != nullptr) sum += from_fb(*c).seq;
    };
    if (const auto* m1 = v.as<fb::Start>()) {
        cid(m1->cid()), str(m1->fn_name()), val(m1->args());
        if (m1->options() != nullptr) sum += m1->options()->msg_buffer_size();
    } else if (const auto* m2 = v.as<fb::StartAck>()) {
        cid(m2->cid());
        if (m2->options() != nullptr) sum += m2->options()->allow_overruns();
    } else if (const auto* m3 = v.as<fb::Started>()) {
        cid(m3->cid()), val(m3->value());
    } else if (const auto* m4 = v.as<fb::Stop>()) {
        cid(m4->cid()), sum += m4->data_seq();
    } else if (const auto* m5 = v.as<fb::Return>()) {
        cid(m5->cid()), val(m5->value()), sum += m5->data_seq();
    } else if (const auto* m6 = v.as<fb::Error>()) {
        cid(m6->cid()), uid(m6->src_uid()), str(m6->boxed_type()), str(m6->src_type());
        if (m6->relay_path() != nullptr) {
            for (const fb::Uid* hop : *m6->relay_path()) uid(hop);
        }
        str(m6->message()), str(m6->traceback()), uid(m6->canceller()), uid(m6->sender());
    } else if (const auto* m7 = v.as<fb::CancelRequest>()) {
        uid(m7->requester());
        sum += m7->request_id();
        if (const auto* t = m7->target_as_ContextTarget()) cid(t->cid());
    } else if (const auto* m8 = v.as<fb::CancelAck>()) {
        sum += m8->request_id() + m8->found();
    } else if (const auto* m9 = v.as<fb::StreamOpen>()) {
        cid(m9->cid()), sum += m9->offset() + m9->size_bytes() + m9->generation();
    } else if (const auto* m10 = v.as<fb::LinkOpen>()) {
        uid(m10->sender()), sum += m10->layout_version() + m10->protocol_version();
    } else if (const auto* m11 = v.as<fb::LinkClose>()) {
        str(m11->detail()), sum += static_cast<unsigned>(m11->reason());
    } else if (const auto* m12 = v.as<fb::Heartbeat>()) {
        sum += m12->counter() + m12->monotonic_ns();
    }
    return sum;
}

// One encoded sample of every message type, each copied out of the encoder.
std::vector<std::vector<std::byte>> all_messages() {
    ControlEncoder enc;
    std::vector<std::vector<std::byte>> out;
    auto keep = [&](std::span<const std::byte> b) { out.emplace_back(b.begin(), b.end()); };
    const Payload args = Payload::value(std::string_view("ticker=ACME"));
    keep(enc.start({kCid, "subscribe", args, {128, true}}));
    keep(enc.start_ack(kCid, {32, false}));
    keep(enc.started(kCid, Payload::value(7)));
    keep(enc.stop(kCid, 9));
    keep(enc.return_value(kCid, 10, PayloadView("done")));
    const UidRef path[] = {kBob, kCarol};
    keep(enc.error({kCid, 11, kAlice, "RemoteActorError", "ValueError", path, "bad value",
                    "Traceback (most recent call last)\n  ...", kBob, kCarol}));
    keep(enc.cancel_context(5, kBob, kCid));
    keep(enc.cancel_actor(6, kBob));
    keep(enc.cancel_ack(5, true));
    keep(enc.stream_open({kCid, 4096, 65536, 3}));
    keep(enc.link_open(kAlice));
    keep(enc.link_close(fb::LinkCloseReason::version_mismatch, "layout 1 vs 2"));
    keep(enc.heartbeat(99, 123456789));
    return out;
}

// ---------------------------------------------------------------------------------------------
// Control messages

TEST(WireCodec, StartRoundTripsEveryField) {
    ControlEncoder enc;
    const Payload args = Payload::value(std::string_view("ticker=ACME"));
    const Record rec(enc.start({kCid, "subscribe", args, {128, true}}));
    const ControlView v = decode_control(rec.span());
    ASSERT_EQ(v.type(), fb::ControlBody::Start);
    EXPECT_EQ(v.type_name(), "Start");
    EXPECT_EQ(v.as<fb::Stop>(), nullptr);
    const fb::Start* m = v.as<fb::Start>();
    ASSERT_NE(m, nullptr);
    EXPECT_EQ(from_fb(*m->cid()), kCid);
    EXPECT_EQ(m->fn_name()->string_view(), "subscribe");
    ASSERT_NE(m->options(), nullptr);
    EXPECT_EQ(must(m->options()).msg_buffer_size(), 128U);
    EXPECT_TRUE(must(m->options()).allow_overruns());
    const Payload got = Payload::copy(from_fb(m->args()));
    EXPECT_EQ(got.kind(), PayloadKind::value);
    EXPECT_EQ(got.value<std::string>(), "ticker=ACME");
}

TEST(WireCodec, StartAckStartedStopAndReturnRoundTrip) {
    ControlEncoder enc;
    {
        const Record rec(enc.start_ack(kCid, {32, false}));
        const auto* m = decode_control(rec.span()).as<fb::StartAck>();
        ASSERT_NE(m, nullptr);
        EXPECT_EQ(from_fb(*m->cid()), kCid);
        EXPECT_EQ(must(m->options()).msg_buffer_size(), 32U);
        EXPECT_FALSE(must(m->options()).allow_overruns());
    }
    {
        const Record rec(enc.started(kCid, Payload::value(7)));
        const auto* m = decode_control(rec.span()).as<fb::Started>();
        ASSERT_NE(m, nullptr);
        EXPECT_EQ(from_fb(*m->cid()), kCid);
        EXPECT_EQ(Payload::copy(from_fb(m->value())).value<int>(), 7);
    }
    {
        const Record rec(enc.started(kCid, PayloadView()));
        const auto* m = decode_control(rec.span()).as<fb::Started>();
        ASSERT_NE(m, nullptr);
        EXPECT_TRUE(from_fb(m->value()).empty());
    }
    {
        const Record rec(enc.stop(kCid, 123456789012345ULL));
        const auto* m = decode_control(rec.span()).as<fb::Stop>();
        ASSERT_NE(m, nullptr);
        EXPECT_EQ(from_fb(*m->cid()), kCid);
        EXPECT_EQ(m->data_seq(), 123456789012345ULL);
    }
    {
        const Record rec(enc.return_value(kCid, 10, PayloadView("done")));
        const auto* m = decode_control(rec.span()).as<fb::Return>();
        ASSERT_NE(m, nullptr);
        EXPECT_EQ(m->data_seq(), 10U);
        const PayloadView val = from_fb(m->value());
        EXPECT_EQ(val.kind(), PayloadKind::string);
        EXPECT_EQ(Payload::copy(val).value<std::string_view>(), "done");
    }
}

TEST(WireCodec, ErrorRoundTripsEveryField) {
    ControlEncoder enc;
    const UidRef path[] = {kBob, kCarol};
    const Record rec(enc.error({kCid, 11, kAlice, "RemoteActorError", "ValueError", path,
                                "bad value", "Traceback\n  line 1", kBob, kCarol}));
    const auto* m = decode_control(rec.span()).as<fb::Error>();
    ASSERT_NE(m, nullptr);
    EXPECT_EQ(from_fb(*m->cid()), kCid);
    EXPECT_EQ(m->data_seq(), 11U);
    expect_uid(m->src_uid(), kAlice);
    EXPECT_EQ(m->boxed_type()->string_view(), "RemoteActorError");
    EXPECT_EQ(m->src_type()->string_view(), "ValueError");
    ASSERT_NE(m->relay_path(), nullptr);
    ASSERT_EQ(m->relay_path()->size(), 2U);
    expect_uid(m->relay_path()->Get(0), kBob);
    expect_uid(m->relay_path()->Get(1), kCarol);
    EXPECT_EQ(m->message()->string_view(), "bad value");
    EXPECT_EQ(m->traceback()->string_view(), "Traceback\n  line 1");
    expect_uid(m->canceller(), kBob);
    expect_uid(m->sender(), kCarol);
}

TEST(WireCodec, ErrorWithoutCancellerOrRelayPathLeavesThemAbsent) {
    ControlEncoder enc;
    const Record rec(enc.error(
        {kCid, 0, kAlice, "ValueError", "ValueError", {}, "m", "", std::nullopt, kAlice}));
    const auto* m = decode_control(rec.span()).as<fb::Error>();
    ASSERT_NE(m, nullptr);
    EXPECT_EQ(m->canceller(), nullptr);
    EXPECT_EQ(m->relay_path(), nullptr);
}

TEST(WireCodec, ErrorLongerThanTheCapKeepsTheTracebackHeadAndAMarker) {
    ControlEncoder enc;  // default cap: 16 KiB
    ASSERT_EQ(enc.max_record_bytes(), kDefaultMaxControlRecordBytes);
    std::string traceback = "Traceback (most recent call last):\n";
    while (traceback.size() < 100'000) traceback += "  File \"x.py\", line 1, in f\n";
    ErrorFields f{kCid, 3,           kAlice,    "ValueError", "ValueError",
                  {},   "bad value", traceback, {},           kBob};
    const Record rec(enc.error(f));
    EXPECT_LE(rec.size(), kDefaultMaxControlRecordBytes);
    const auto* m = decode_control(rec.span()).as<fb::Error>();
    ASSERT_NE(m, nullptr);
    EXPECT_EQ(m->message()->string_view(), "bad value");
    const std::string_view tb = m->traceback()->string_view();
    EXPECT_GT(tb.size(), kDefaultMaxControlRecordBytes / 2) << "keeps as much as fits";
    EXPECT_TRUE(traceback.starts_with(tb.substr(0, tb.find("\n[... traceback truncated"))));
    EXPECT_THAT(
        std::string(tb),
        ::testing::MatchesRegex(".*\n\\[\\.\\.\\. traceback truncated: [0-9]+ bytes dropped\\]"));
    // Short errors are untouched.
    f.traceback = "short";
    const Record small(enc.error(f));
    EXPECT_EQ(decode_control(small.span()).as<fb::Error>()->traceback()->string_view(), "short");
}

TEST(WireCodec, ErrorTruncatesTheMessageWhenTheTracebackIsNotEnough) {
    ControlEncoder enc(4096);
    const std::string message(10'000, 'm');
    const Record rec(
        enc.error({kCid, 0, kAlice, "ValueError", "ValueError", {}, message, "tb", {}, kBob}));
    EXPECT_LE(rec.size(), 4096U);
    const auto* m = decode_control(rec.span()).as<fb::Error>();
    ASSERT_NE(m, nullptr);
    EXPECT_THAT(m->message()->str(), ::testing::HasSubstr("message truncated"));
    EXPECT_THAT(m->traceback()->str(), ::testing::HasSubstr("traceback truncated: 2 bytes"));
    EXPECT_EQ(m->message()->string_view().substr(0, 100), std::string(100, 'm'));
}

TEST(WireCodec, ErrorTruncationNeverSplitsAUtf8Sequence) {
    ControlEncoder enc(2048);
    std::string traceback;
    while (traceback.size() < 10'000) traceback += "\xc3\xa9\xe2\x82\xac";  // é €
    const Record rec(
        enc.error({kCid, 0, kAlice, "ValueError", "ValueError", {}, "m", traceback, {}, kBob}));
    EXPECT_LE(rec.size(), 2048U);
    const std::string tb = decode_control(rec.span()).as<fb::Error>()->traceback()->str();
    const std::string head = tb.substr(0, tb.find("\n[..."));
    ASSERT_FALSE(head.empty());
    EXPECT_TRUE(traceback.starts_with(head));
    // The head ends after a complete "é€" unit or a complete "é".
    EXPECT_TRUE(head.ends_with("\xe2\x82\xac") || head.ends_with("\xc3\xa9")) << head.size();
}

TEST(WireCodec, CancelRequestTargetsAContextOrTheWholeActor) {
    ControlEncoder enc;
    {
        const Record rec(enc.cancel_context(5, kBob, kCid));
        const auto* m = decode_control(rec.span()).as<fb::CancelRequest>();
        ASSERT_NE(m, nullptr);
        EXPECT_EQ(m->request_id(), 5U);
        expect_uid(m->requester(), kBob);
        ASSERT_EQ(m->target_type(), fb::CancelTarget::ContextTarget);
        EXPECT_EQ(from_fb(must(must(m->target_as_ContextTarget()).cid())), kCid);
    }
    {
        const Record rec(enc.cancel_actor(6, kBob));
        const auto* m = decode_control(rec.span()).as<fb::CancelRequest>();
        ASSERT_NE(m, nullptr);
        EXPECT_EQ(m->request_id(), 6U);
        EXPECT_EQ(m->target_type(), fb::CancelTarget::ActorTarget);
        EXPECT_EQ(m->target_as_ContextTarget(), nullptr);
    }
    for (bool found : {true, false}) {
        const Record rec(enc.cancel_ack(5, found));
        const auto* m = decode_control(rec.span()).as<fb::CancelAck>();
        ASSERT_NE(m, nullptr);
        EXPECT_EQ(m->request_id(), 5U);
        EXPECT_EQ(m->found(), found);
    }
}

TEST(WireCodec, StreamOpenLinkAndHeartbeatRoundTrip) {
    ControlEncoder enc;
    {
        const Record rec(enc.stream_open({kCid, 4096, 65536, 0xfedcba9876543210ULL}));
        const auto* m = decode_control(rec.span()).as<fb::StreamOpen>();
        ASSERT_NE(m, nullptr);
        EXPECT_EQ(from_fb(*m->cid()), kCid);
        EXPECT_EQ(m->offset(), 4096U);
        EXPECT_EQ(m->size_bytes(), 65536U);
        EXPECT_EQ(m->generation(), 0xfedcba9876543210ULL);
    }
    {
        const Record rec(enc.link_open(kAlice));
        const auto* m = decode_control(rec.span()).as<fb::LinkOpen>();
        ASSERT_NE(m, nullptr);
        EXPECT_EQ(m->layout_version(), shm::kLayoutVersion);
        EXPECT_EQ(m->protocol_version(), shm::kProtocolVersion);
        expect_uid(m->sender(), kAlice);
    }
    {
        const Record rec(enc.link_close(fb::LinkCloseReason::version_mismatch, "layout", 7, 9));
        const auto* m = decode_control(rec.span()).as<fb::LinkClose>();
        ASSERT_NE(m, nullptr);
        EXPECT_EQ(m->reason(), fb::LinkCloseReason::version_mismatch);
        EXPECT_EQ(m->layout_version(), 7U);
        EXPECT_EQ(m->protocol_version(), 9U);
        EXPECT_EQ(m->detail()->string_view(), "layout");
    }
    {
        const Record rec(enc.heartbeat(99, 123456789));
        const auto* m = decode_control(rec.span()).as<fb::Heartbeat>();
        ASSERT_NE(m, nullptr);
        EXPECT_EQ(m->counter(), 99U);
        EXPECT_EQ(m->monotonic_ns(), 123456789U);
    }
}

TEST(WireCodec, EncodedRecordsAreAlignedAndCarryTheFileIdentifier) {
    ControlEncoder enc;
    const Payload big = Payload::copy(PayloadView(std::string(333, 'x')));
    const auto buf = enc.start({kCid, "f", big, {}});
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(buf.data()) % 8, 0U);
    EXPECT_EQ(buf.size() % 8, 0U);
    EXPECT_EQ(std::memcmp(buf.data() + 4, "SHMC", 4), 0);
    const Record rec(buf);
    const auto* m = decode_control(rec.span()).as<fb::Start>();
    ASSERT_NE(m, nullptr);
    const auto payload_offset =
        reinterpret_cast<const std::byte*>(must(must(m->args()).data()).data()) - rec.span().data();
    EXPECT_EQ(payload_offset % 8, 0) << "nested payload bytes must be 8-byte aligned";
    for (const auto& b : all_messages()) {
        EXPECT_EQ(b.size() % 8, 0U);
    }
}

TEST(WireCodec, EncoderReusesItsBufferAcrossMessages) {
    ControlEncoder enc;
    for (int i = 0; i < 3; ++i) {
        const Record a(enc.stop(kCid, static_cast<std::uint64_t>(i)));
        const Record b(enc.heartbeat(static_cast<std::uint64_t>(i), 1));
        EXPECT_EQ(must(decode_control(a.span()).as<fb::Stop>()).data_seq(),
                  static_cast<unsigned>(i));
        EXPECT_EQ(must(decode_control(b.span()).as<fb::Heartbeat>()).counter(),
                  static_cast<unsigned>(i));
    }
}

TEST(WireCodec, CidPrintsOpenerAndSequence) {
    EXPECT_EQ(kCid.to_string(), uuid_of(1).short_hex() + "#17");
    EXPECT_TRUE(Cid{}.is_nil());
    EXPECT_FALSE(kCid.is_nil());
}

// ---------------------------------------------------------------------------------------------
// Malformed control records

// The builder writes the first-created object at the end of the buffer, followed by its
// alignment padding; cutting only that zero padding leaves a self-consistent buffer. Any other
// truncation must be rejected.
bool only_padding_cut(std::span<const std::byte> full, std::size_t n) {
    return std::all_of(full.begin() + static_cast<std::ptrdiff_t>(n), full.end(),
                       [](std::byte b) { return b == std::byte{0}; });
}

TEST(WireDecode, EveryTruncationOfEveryMessageIsRejectedUnlessOnlyPaddingWasCut) {
    for (const auto& msg : all_messages()) {
        const Record whole(msg);
        const std::size_t full_sum = touch_all(decode_control(whole.span()));
        std::size_t rejected = 0;
        for (std::size_t n = 0; n < msg.size(); ++n) {
            const Record rec(std::span(msg.data(), n));
            try {
                const ControlView v = decode_control(rec.span());
                EXPECT_TRUE(only_padding_cut(msg, n))
                    << "message " << msg.size() << " bytes truncated to " << n << " decoded";
                EXPECT_EQ(touch_all(v), full_sum);
            } catch (const DecodeError&) {
                ++rejected;
            }
        }
        EXPECT_GE(rejected, msg.size() - 7) << "at most 7 bytes of trailing padding";
    }
}

TEST(WireDecode, WrongFileIdentifierNamesBothIdentifiers) {
    ControlEncoder enc;
    Record rec(enc.heartbeat(1, 2));
    std::memcpy(rec.data() + 4, "TICK", 4);
    try {
        decode_control(rec.span());
        FAIL() << "decoded a record with the wrong identifier";
    } catch (const DecodeError& e) {
        EXPECT_THAT(e.what(), HasSubstr("expected 'SHMC'"));
        EXPECT_THAT(e.what(), HasSubstr("found 'TICK'"));
        EXPECT_EQ(e.code(), Errc::decode_error);
    }
}

TEST(WireDecode, RootOffsetPastTheEndIsADecodeError) {
    ControlEncoder enc;
    Record rec(enc.heartbeat(1, 2));
    rec.put<std::uint32_t>(0, static_cast<std::uint32_t>(rec.size() + 64));
    EXPECT_THROW(decode_control(rec.span()), DecodeError);
    rec.put<std::uint32_t>(0, 0xfffffff0U);
    EXPECT_THROW(decode_control(rec.span()), DecodeError);
}

TEST(WireDecode, FieldOffsetPastTheEndIsADecodeError) {
    ControlEncoder enc;
    Record rec(enc.start({kCid, "subscribe", PayloadView("a"), {}}));
    const auto* start = decode_control(rec.span()).as<fb::Start>();
    ASSERT_NE(start, nullptr);
    // The fn_name field holds a uoffset relative to its own position: aim it past the end.
    const auto* table = reinterpret_cast<const flatbuffers::Table*>(start);
    const std::uint8_t* field = table->GetAddressOf(fb::Start::VT_FN_NAME);
    ASSERT_NE(field, nullptr);
    const auto at =
        static_cast<std::size_t>(reinterpret_cast<const std::byte*>(field) - rec.span().data());
    rec.put<std::uint32_t>(at, static_cast<std::uint32_t>(rec.size()));
    EXPECT_THROW(decode_control(rec.span()), DecodeError);
    rec.put<std::uint32_t>(at, 0x7ffffff0U);
    EXPECT_THROW(decode_control(rec.span()), DecodeError);
}

TEST(WireDecode, StringLengthPastTheEndIsADecodeError) {
    ControlEncoder enc;
    Record rec(enc.start({kCid, "subscribe", PayloadView("a"), {}}));
    const auto* start = decode_control(rec.span()).as<fb::Start>();
    const auto at = static_cast<std::size_t>(
        reinterpret_cast<const std::byte*>(must(start).fn_name()) - rec.span().data());
    rec.put<std::uint32_t>(at, 1U << 20);  // the length prefix of "subscribe"
    EXPECT_THROW(decode_control(rec.span()), DecodeError);
}

TEST(WireDecode, MisalignedRecordIsADecodeError) {
    ControlEncoder enc;
    const auto buf = enc.heartbeat(1, 2);
    const Record rec(buf, 4);
    try {
        decode_control(rec.span());
        FAIL() << "decoded a misaligned record";
    } catch (const DecodeError& e) {
        EXPECT_THAT(e.what(), HasSubstr("aligned"));
    }
}

TEST(WireDecode, UnknownOrMissingMessageTypeIsADecodeError) {
    ControlEncoder enc;
    Record rec(enc.heartbeat(1, 2));
    const ControlView v = decode_control(rec.span());
    const auto* table = reinterpret_cast<const flatbuffers::Table*>(&v.message());
    const std::uint8_t* type = table->GetAddressOf(fb::ControlMessage::VT_BODY_TYPE);
    ASSERT_NE(type, nullptr);
    const auto at =
        static_cast<std::size_t>(reinterpret_cast<const std::byte*>(type) - rec.span().data());
    rec.put<std::uint8_t>(at, 200);
    try {
        decode_control(rec.span());
        FAIL() << "decoded an unknown message type";
    } catch (const DecodeError& e) {
        EXPECT_THAT(e.what(), HasSubstr("unknown message type 200"));
    }
    rec.put<std::uint8_t>(at, 0);
    try {
        decode_control(rec.span());
        FAIL() << "decoded a message without body type";
    } catch (const DecodeError& e) {
        EXPECT_THAT(e.what(), HasSubstr("no body"));
    }
}

TEST(WireDecode, MissingRequiredFieldIsADecodeError) {
    flatbuffers::FlatBufferBuilder fbb;
    const auto fn = fbb.CreateString("f");
    // Built by hand: StartBuilder::Finish() would assert on the missing required cid.
    const auto table_start = fbb.StartTable();
    fbb.AddOffset(fb::Start::VT_FN_NAME, fn);
    const flatbuffers::Offset<fb::Start> start(fbb.EndTable(table_start));
    fbb.Finish(fb::CreateControlMessage(fbb, fb::ControlBody::Start, start.Union()),
               fb::ControlMessageIdentifier());
    const Record rec(PayloadView(fbb).bytes());
    EXPECT_THROW(decode_control(rec.span()), DecodeError);
}

TEST(WireDecode, NilIdsAndUnknownPayloadKindsAreDecodeErrors) {
    ControlEncoder enc;
    auto expect_error = [](std::span<const std::byte> buf, std::string_view text) {
        const Record rec(buf);
        try {
            decode_control(rec.span());
            ADD_FAILURE() << "decoded; expected an error containing " << text;
        } catch (const DecodeError& e) {
            EXPECT_THAT(e.what(), HasSubstr(std::string(text)));
        }
    };
    expect_error(enc.stop(Cid{uuid_of(1), 0}, 1), "Stop.cid is a nil context id");
    expect_error(enc.start({Cid{uuid_of(1), 0}, "f", {}, {}}), "Start.cid is a nil context id");
    const std::byte junk[3]{};
    expect_error(enc.started(kCid, PayloadView(static_cast<PayloadKind>(9), junk)),
                 "unknown payload kind 9");
    expect_error(enc.started(kCid, PayloadView(PayloadKind::empty, junk)), "is empty but carries");
    expect_error(enc.cancel_context(0, kBob, kCid), "request_id is 0");
    expect_error(enc.link_close(static_cast<fb::LinkCloseReason>(77), ""), "reason 77");
}

TEST(WireDecode, RelayPathBeyondTheTableLimitIsADecodeError) {
    ControlEncoder enc;
    std::vector<std::string> names;
    std::vector<UidRef> hops;
    for (std::size_t i = 0; i < 5000; ++i) {
        names.push_back("hop" + std::to_string(i));
    }
    for (const auto& n : names) {
        hops.push_back({n, uuid_of(static_cast<std::uint8_t>(hops.size()))});
    }
    ErrorFields f{kCid, 0, kAlice, "RemoteActorError", "ValueError", {}, "m", "", {}, kBob};
    f.relay_path = std::span(hops).first(100);
    const Record ok(enc.error(f));
    EXPECT_EQ(must(must(decode_control(ok.span()).as<fb::Error>()).relay_path()).size(), 100U);
    f.relay_path = hops;
    const Record too_many(enc.error(f));
    EXPECT_THROW(decode_control(too_many.span()), DecodeError);
}

TEST(WireDecode, RandomBytesNeverCrash) {
    std::mt19937_64 rng(0x5eed'0001);
    const std::size_t rounds = test::scaled(20000, 2000);
    std::size_t decoded = 0;
    for (std::size_t i = 0; i < rounds; ++i) {
        std::vector<std::byte> buf(rng() % 300);
        for (auto& b : buf) b = static_cast<std::byte>(rng());
        if (buf.size() >= 8 && (i % 2) == 0) {
            // Past the cheap checks: a plausible root offset and the right identifier.
            const auto root = static_cast<std::uint32_t>((rng() % buf.size()) & ~3ULL);
            std::memcpy(buf.data(), &root, 4);
            std::memcpy(buf.data() + 4, "SHMC", 4);
        }
        const Record rec(buf);
        try {
            decoded += touch_all(decode_control(rec.span())) != 0 ? 1U : 0U;
        } catch (const DecodeError&) {
        }
    }
    // Random bytes essentially never form a valid message; a verifier accepting most of them
    // would be broken.
    EXPECT_LT(decoded, rounds / 100);
}

TEST(WireDecode, MutatedValidRecordsDecodeOrFailCleanly) {
    std::mt19937_64 rng(0x5eed'0002);
    const std::size_t variants = test::scaled(8, 2);
    std::size_t rejected = 0;
    std::size_t accepted = 0;
    for (const auto& msg : all_messages()) {
        for (std::size_t pos = 0; pos < msg.size(); ++pos) {
            for (std::size_t k = 0; k < variants; ++k) {
                Record rec(msg);
                rec.data()[pos] ^= static_cast<std::byte>(1U << (rng() % 8));
                if (k % 2 == 1) {
                    rec.data()[rng() % msg.size()] = static_cast<std::byte>(rng());
                }
                try {
                    // Whatever decodes must be safe to read in full.
                    touch_all(decode_control(rec.span()));
                    ++accepted;
                } catch (const DecodeError&) {
                    ++rejected;
                }
            }
        }
    }
    EXPECT_GT(rejected, 0U);
    EXPECT_GT(accepted, 0U) << "flips in string bytes or scalars must still decode";
}

// ---------------------------------------------------------------------------------------------
// Payload and PayloadView

TEST(PayloadView, KindFollowsTheConstructor) {
    EXPECT_TRUE(PayloadView().empty());
    EXPECT_EQ(PayloadView().kind(), PayloadKind::empty);
    EXPECT_EQ(PayloadView().size_bytes(), 0U);

    const std::byte raw[4]{std::byte{1}, std::byte{2}, std::byte{3}, std::byte{4}};
    const PayloadView bytes{std::span<const std::byte>(raw)};
    EXPECT_EQ(bytes.kind(), PayloadKind::bytes);
    EXPECT_EQ(bytes.bytes().data(), raw);
    EXPECT_EQ(bytes.size_bytes(), 4U);

    const std::string text = "hello";
    const PayloadView s(text);
    EXPECT_EQ(s.kind(), PayloadKind::string);
    EXPECT_EQ(reinterpret_cast<const char*>(s.bytes().data()), text.data());
    EXPECT_EQ(PayloadView("lit").size_bytes(), 3U);
    EXPECT_FALSE(PayloadView("").empty()) << "an empty string is a value, not no value";

    flatbuffers::FlatBufferBuilder fbb;
    fbb.Finish(test::fb::CreateTickDirect(fbb, "ACME", 1.5, 10, 1), "TICK");
    const PayloadView fbv(fbb);
    EXPECT_EQ(fbv.kind(), PayloadKind::flatbuffer);
    EXPECT_EQ(reinterpret_cast<const std::uint8_t*>(fbv.bytes().data()), fbb.GetBufferPointer());
    EXPECT_EQ(fbv.size_bytes(), fbb.GetSize());
}

TEST(Payload, ValueRoundTripsIntegers) {
    for (std::int64_t v :
         {std::int64_t{0}, std::int64_t{1}, std::int64_t{-1}, std::int64_t{127}, std::int64_t{-129},
          std::int64_t{1} << 40, std::numeric_limits<std::int64_t>::min(),
          std::numeric_limits<std::int64_t>::max()}) {
        const Payload p = Payload::value(v);
        EXPECT_EQ(p.kind(), PayloadKind::value);
        EXPECT_FALSE(p.empty());
        EXPECT_EQ(p.value<std::int64_t>(), v);
    }
    EXPECT_EQ(Payload::value(42).value<int>(), 42);
    EXPECT_EQ(Payload::value(std::uint16_t{65535}).value<std::uint16_t>(), 65535);
    EXPECT_EQ(Payload::value(-5).value<std::int8_t>(), -5);
}

TEST(Payload, IntegerOutOfTheRequestedRangeIsADecodeError) {
    EXPECT_THROW(Payload::value(300).value<std::int8_t>(), DecodeError);
    EXPECT_THROW(Payload::value(-1).value<std::uint32_t>(), DecodeError);
    EXPECT_THROW(Payload::value(std::numeric_limits<std::uint64_t>::max()), std::out_of_range);
}

TEST(Payload, ValueRoundTripsFloatingPoint) {
    for (double v :
         {0.0, -0.0, 0.1, -2.5, 1e300, 5e-324, std::numeric_limits<double>::infinity()}) {
        const double got = Payload::value(v).value<double>();
        EXPECT_EQ(got, v);
        EXPECT_EQ(std::signbit(got), std::signbit(v));
    }
    EXPECT_TRUE(std::isnan(Payload::value(std::nan("")).value<double>()));
    EXPECT_EQ(Payload::value(1.5F).value<float>(), 1.5F);
}

TEST(Payload, ValueRoundTripsBoolsAndStrings) {
    EXPECT_TRUE(Payload::value(true).value<bool>());
    EXPECT_FALSE(Payload::value(false).value<bool>());
    for (const std::string& s : {std::string(), std::string("x"), std::string("hello world"),
                                 std::string(1000, 'z'), std::string("nul\0inside", 10)}) {
        const Payload p = Payload::value(s);
        EXPECT_EQ(p.value<std::string>(), s);
        EXPECT_EQ(p.value<std::string_view>(), s);
    }
    EXPECT_EQ(Payload::value("literal").value<std::string>(), "literal");
}

TEST(Payload, TypeMismatchIsADecodeErrorNamingBothTypes) {
    auto expect_error = [](auto&& fn, std::string_view text) {
        try {
            fn();
            ADD_FAILURE() << "no error; expected " << text;
        } catch (const DecodeError& e) {
            EXPECT_THAT(e.what(), HasSubstr(std::string(text)));
        }
    };
    expect_error([] { (void)Payload::value(1).value<std::string>(); }, "is an integer");
    expect_error([] { (void)Payload::value(1).value<double>(); }, "is an integer");
    expect_error([] { (void)Payload::value(1).value<bool>(); }, "is an integer");
    expect_error([] { (void)Payload::value("s").value<std::int64_t>(); }, "is a string");
    expect_error([] { (void)Payload::value(true).value<int>(); }, "is a bool");
    expect_error([] { (void)Payload::value(2.5).value<int>(); }, "is a floating-point number");
    expect_error([] { (void)Payload().value<int>(); }, "the payload is empty");
    expect_error([] { (void)Payload::copy(PayloadView("text")).value<int>(); },
                 "the payload is string");
}

TEST(Payload, TextPayloadDecodesAsString) {
    const Payload p = Payload::copy(PayloadView("plain text"));
    EXPECT_EQ(p.kind(), PayloadKind::string);
    EXPECT_EQ(p.value<std::string_view>(), "plain text");
}

TEST(Payload, CorruptFlexBufferIsADecodeError) {
    const Payload good = Payload::value(std::string_view("hello"));
    std::vector<std::byte> bytes(good.bytes().begin(), good.bytes().end());
    {
        auto b = bytes;
        b[0] = std::byte{200};  // string length prefix far past the end
        EXPECT_THROW(Payload::copy(PayloadView(PayloadKind::value, b)).value<std::string>(),
                     DecodeError);
    }
    {
        auto b = bytes;
        b.back() = std::byte{3};  // root byte width must be 1, 2, 4 or 8
        EXPECT_THROW(Payload::copy(PayloadView(PayloadKind::value, b)).value<std::string>(),
                     DecodeError);
    }
    {
        const auto b = std::span(bytes).first(2);  // shorter than any FlexBuffer
        EXPECT_THROW(Payload::copy(PayloadView(PayloadKind::value, b)).value<std::string>(),
                     DecodeError);
    }
    // Random bytes labelled as a value: decoded or rejected, never read out of bounds.
    std::mt19937_64 rng(0x5eed'0003);
    for (std::size_t i = 0; i < test::scaled(20000, 2000); ++i) {
        std::vector<std::byte> junk(rng() % 24);
        for (auto& x : junk) x = static_cast<std::byte>(rng());
        const Payload p = Payload::copy(PayloadView(PayloadKind::value, junk));
        try {
            (void)p.value<std::string_view>().size();
        } catch (const DecodeError&) {
        }
        try {
            (void)p.value<double>();
        } catch (const DecodeError&) {
        }
    }
}

TEST(Payload, ValuesEncodeConcurrentlyFromManyThreads) {
    // Payload::value reuses a per-thread builder; threads must never see each other's bytes.
    constexpr int kThreads = 4;
    const int rounds = static_cast<int>(test::scaled(5000, 500));
    std::vector<std::thread> threads;
    std::atomic<int> failures{0};
    for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back([t, rounds, &failures] {
            for (int i = 0; i < rounds; ++i) {
                const std::int64_t v = std::int64_t{t} * 1'000'000 + i;
                const std::string s = std::to_string(v);
                if (Payload::value(v).value<std::int64_t>() != v ||
                    Payload::value(s).value<std::string>() != s) {
                    // Relaxed: a counter read after join(), which orders it.
                    failures.fetch_add(1, std::memory_order::relaxed);
                }
            }
        });
    }
    for (auto& th : threads) th.join();
    EXPECT_EQ(failures.load(std::memory_order::relaxed), 0);
}

TEST(Payload, StorageIsAlignedWhateverTheSourceAlignment) {
    std::vector<std::byte> src(256);
    for (std::size_t i = 0; i < src.size(); ++i) src[i] = static_cast<std::byte>(i * 7);
    for (std::size_t shift = 0; shift < 8; ++shift) {
        for (std::size_t n : {0UL, 1UL, 7UL, 39UL, 40UL, 41UL, 100UL, 200UL}) {
            const Payload p = Payload::copy(std::span<const std::byte>(src).subspan(shift, n));
            EXPECT_EQ(p.kind(), PayloadKind::bytes);
            ASSERT_EQ(p.size_bytes(), n);
            EXPECT_EQ(reinterpret_cast<std::uintptr_t>(p.bytes().data()) % kPayloadAlign, 0U);
            EXPECT_TRUE(std::equal(p.bytes().begin(), p.bytes().end(),
                                   src.begin() + static_cast<std::ptrdiff_t>(shift)));
        }
    }
}

TEST(Payload, CopiesAreDeepAndMovesLeaveTheSourceEmpty) {
    for (std::size_t n : {5UL, 300UL}) {  // inline and heap storage
        const std::string text(n, 'q');
        Payload a = Payload::copy(PayloadView(text));
        Payload b = a;
        EXPECT_NE(a.bytes().data(), b.bytes().data());
        EXPECT_EQ(b.value<std::string>(), text);
        Payload c = std::move(a);
        EXPECT_TRUE(a.empty());  // NOLINT(bugprone-use-after-move): the moved-from state is API
        EXPECT_EQ(a.size_bytes(), 0U);
        EXPECT_EQ(c.value<std::string>(), text);
        Payload d;
        d = std::move(c);
        EXPECT_EQ(d.value<std::string>(), text);
        d = b;
        EXPECT_EQ(d.value<std::string>(), text);
        d = Payload::value(3);
        EXPECT_EQ(d.value<int>(), 3);
        EXPECT_EQ(PayloadView(d).kind(), PayloadKind::value);
    }
}

// ---------------------------------------------------------------------------------------------
// Payload::as<T>() with a user schema

std::vector<std::byte> tick_buffer(std::string_view symbol = "ACME") {
    flatbuffers::FlatBufferBuilder fbb;
    const std::vector<flatbuffers::Offset<flatbuffers::String>> venues{fbb.CreateString("XNAS"),
                                                                       fbb.CreateString("XNYS")};
    fbb.Finish(
        test::fb::CreateTickDirect(fbb, std::string(symbol).c_str(), 101.25, -42, 7, &venues),
        test::fb::TickIdentifier());
    const auto v = PayloadView(fbb).bytes();
    return {v.begin(), v.end()};
}

TEST(PayloadAs, ReturnsTheVerifiedRoot) {
    flatbuffers::FlatBufferBuilder fbb;
    fbb.Finish(test::fb::CreateTickDirect(fbb, "ACME", 101.25, -42, 7), "TICK");
    const Payload p = Payload::copy(PayloadView(fbb));
    EXPECT_EQ(p.kind(), PayloadKind::flatbuffer);
    const Tick* t = p.as<Tick>();
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(t->symbol()->string_view(), "ACME");
    EXPECT_EQ(t->price(), 101.25);
    EXPECT_EQ(t->qty(), -42);
    EXPECT_EQ(t->seq(), 7U);
    // Opaque bytes that happen to be a Tick are accepted too.
    const auto raw = tick_buffer();
    EXPECT_EQ(Payload::copy(std::span<const std::byte>(raw)).as<Tick>()->venues()->size(), 2U);
}

TEST(PayloadAs, WrongFileIdentifierIsADecodeError) {
    ControlEncoder enc;
    const Payload control =
        Payload::copy(PayloadView(PayloadKind::flatbuffer, enc.heartbeat(1, 2)));
    try {
        (void)control.as<Tick>();
        FAIL() << "a control message passed as a Tick";
    } catch (const DecodeError& e) {
        EXPECT_THAT(e.what(), HasSubstr("expected 'TICK', found 'SHMC'"));
    }
    const auto tick = tick_buffer();
    const Payload p = Payload::copy(PayloadView(PayloadKind::flatbuffer, tick));
    EXPECT_THROW((void)p.as<fb::ControlMessage>(), DecodeError);
    EXPECT_NO_THROW((void)control.as<fb::ControlMessage>());
}

TEST(PayloadAs, CorruptedBufferIsADecodeError) {
    const auto tick = tick_buffer();
    for (std::size_t n = 0; n < tick.size(); ++n) {
        const Payload p =
            Payload::copy(PayloadView(PayloadKind::flatbuffer, std::span(tick).first(n)));
        if (!only_padding_cut(tick, n)) {
            EXPECT_THROW((void)p.as<Tick>(), DecodeError) << "truncated to " << n;
        }
    }
    // The venues vector offset aimed past the end.
    const Payload good = Payload::copy(PayloadView(PayloadKind::flatbuffer, tick));
    const auto* table = reinterpret_cast<const flatbuffers::Table*>(good.as<Tick>());
    const auto at = static_cast<std::size_t>(
        reinterpret_cast<const std::byte*>(table->GetAddressOf(Tick::VT_VENUES)) -
        good.bytes().data());
    auto bad = tick;
    const auto past = static_cast<std::uint32_t>(tick.size());
    std::memcpy(bad.data() + at, &past, sizeof past);
    EXPECT_THROW((void)Payload::copy(PayloadView(PayloadKind::flatbuffer, bad)).as<Tick>(),
                 DecodeError);
}

TEST(PayloadAs, NonFlatBufferKindsAreRejected) {
    EXPECT_THROW((void)Payload().as<Tick>(), DecodeError);
    EXPECT_THROW((void)Payload::value(1).as<Tick>(), DecodeError);
    const auto tick = tick_buffer();
    EXPECT_THROW((void)Payload::copy(PayloadView(PayloadKind::string, tick)).as<Tick>(),
                 DecodeError);
}

TEST(PayloadAs, VerifiedRootRejectsAMisalignedBuffer) {
    const auto tick = tick_buffer();
    const Record shifted(tick, 4);
    EXPECT_THROW((void)verified_root<Tick>(shifted.span()), DecodeError);
    const Record aligned(tick);
    EXPECT_EQ(verified_root<Tick>(aligned.span())->qty(), -42);
}

}  // namespace
}  // namespace shmctx::wire
