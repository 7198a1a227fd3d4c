// Writes the seed corpus of the fuzz targets: `shmctx_fuzz_make_corpus <dir>` fills
// <dir>/<target>/ with valid inputs built by the real encoders and ring writer, plus a few
// near-valid ones (one field off). Deterministic: fixed uuids, names and values, so running it
// again reproduces the committed files byte for byte.
#include <flatbuffers/flexbuffers.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <span>
#include <string>
#include <vector>

#include "core/link.hpp"
#include "shmctx/payload.hpp"
#include "shmctx/shm/actor_segment.hpp"
#include "shmctx/shm/arena.hpp"
#include "shmctx/shm/ring.hpp"
#include "shmctx/wire/codec.hpp"

using namespace shmctx;
using namespace shmctx::shm;
namespace fs = std::filesystem;

namespace {

using Bytes = std::vector<std::uint8_t>;

fs::path g_out;

void write(const std::string& target, const std::string& name, std::span<const std::uint8_t> b) {
    const fs::path dir = g_out / target;
    fs::create_directories(dir);
    std::ofstream f(dir / name, std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
    if (!f) {
        std::fprintf(stderr, "cannot write %s\n", (dir / name).c_str());
        std::exit(1);
    }
}
void write(const std::string& target, const std::string& name, std::span<const std::byte> b) {
    write(target, name, std::span(reinterpret_cast<const std::uint8_t*>(b.data()), b.size()));
}

constexpr Uuid kA{{0x0f, 0x1e, 0x2d, 0x3c, 0x4b, 0x5a, 0x69, 0x78, 0x87, 0x96, 0xa5, 0xb4, 0xc3,
                   0xd2, 0xe1, 0xf0}};
constexpr Uuid kB{{0xf1, 0xe2, 0xd3, 0xc4, 0xb5, 0xa6, 0x97, 0x88, 0x79, 0x6a, 0x5b, 0x4c, 0x3d,
                   0x2e, 0x1f, 0x01}};
const wire::UidRef kAlice{"alice", kA};
const wire::UidRef kBob{"bob", kB};
const Cid kCid{kA, 7};

// ---- control_decode ----

void control_corpus() {
    wire::ControlEncoder enc;
    const auto put = [](const std::string& name, std::span<const std::byte> b) {
        write("control_decode", name, b);
    };
    const Payload arg = Payload::value(std::int64_t{42});
    put("start", enc.start({kCid, "echo", arg, {16, true}}));
    put("start_ack", enc.start_ack(kCid, {64, false}));
    put("started", enc.started(kCid, "ready"));
    put("stop", enc.stop(kCid, 3));
    put("return", enc.return_value(kCid, 9, Payload::value(2.5)));
    const wire::UidRef path[] = {kAlice, kBob};
    wire::ErrorFields e;
    e.cid = kCid;
    e.data_seq = 1;
    e.src_uid = kAlice;
    e.boxed_type = "RemoteActorError";
    e.src_type = "std::runtime_error";
    e.relay_path = path;
    e.message = "boom";
    e.traceback = "at main\nat run";
    e.canceller = kBob;
    e.sender = kBob;
    put("error", enc.error(e));
    put("cancel_context", enc.cancel_context(5, kAlice, kCid));
    put("cancel_actor", enc.cancel_actor(6, kBob));
    put("cancel_ack", enc.cancel_ack(5, true));
    put("stream_open", enc.stream_open({kCid, 8320, 1664, 2}));
    put("link_open", enc.link_open(kAlice));
    put("link_close", enc.link_close(wire::fb::LinkCloseReason::protocol_error, "bad index"));
    put("heartbeat", enc.heartbeat(11, 123456789));
    // A FlatBuffer argument (kind flatbuffer) nested in a Start.
    {
        wire::ControlEncoder inner;
        const auto hb = inner.heartbeat(1, 2);
        const Payload nested = Payload::copy(PayloadView(PayloadKind::flatbuffer, hb));
        put("start_nested", enc.start({kCid, "nested", nested, {}}));
    }
    // Near-valid: decodable FlatBuffers the semantic checks refuse, and broken frames.
    put("nil_cid", enc.stop(Cid{kA, 0}, 1));
    put("zero_request", enc.cancel_ack(0, false));
    {
        const auto lo = enc.link_open(kAlice);
        Bytes b(reinterpret_cast<const std::uint8_t*>(lo.data()),
                reinterpret_cast<const std::uint8_t*>(lo.data()) + lo.size());
        Bytes ident = b;
        ident[4] = 'X';  // file identifier
        write("control_decode", "bad_identifier", ident);
        b.resize(b.size() / 2);
        write("control_decode", "truncated", b);
    }
}

// ---- payload ----

void payload_corpus() {
    const auto put = [](const std::string& name, PayloadKind kind, std::span<const std::byte> b) {
        Bytes out{static_cast<std::uint8_t>(kind)};
        const auto* p = reinterpret_cast<const std::uint8_t*>(b.data());
        out.insert(out.end(), p, p + b.size());
        write("payload", name, out);
    };
    const auto value = [&](const std::string& name, const Payload& p) {
        put(name, p.kind(), p.bytes());
    };
    value("bool", Payload::value(true));
    value("int", Payload::value(-123456789012LL));
    value("small_int", Payload::value(7));
    value("double", Payload::value(3.25));
    value("string", Payload::value(std::string("hello, fuzz")));
    put("text", PayloadKind::string, std::as_bytes(std::span(std::string_view("plain text"))));
    put("empty", PayloadKind::empty, {});
    {
        flexbuffers::Builder b;
        b.UInt(18446744073709551615ULL);  // does not fit int64
        b.Finish();
        put("uint_max", PayloadKind::value,
            std::as_bytes(std::span(b.GetBuffer().data(), b.GetBuffer().size())));
    }
    {
        flexbuffers::Builder b;
        b.Vector([&]() {
            b.Int(1);
            b.String("two");
        });
        b.Finish();
        put("vector", PayloadKind::value,
            std::as_bytes(std::span(b.GetBuffer().data(), b.GetBuffer().size())));
    }
    wire::ControlEncoder enc;
    put("flatbuffer_start", PayloadKind::flatbuffer, enc.start({kCid, "f", "arg", {}}));
    put("flatbuffer_error_as_bytes", PayloadKind::bytes, enc.cancel_context(9, kBob, kCid));
}

// ---- ring_reader: inputs for FuzzedDataProvider (scalars from the end, bytes from the front) --

class FdpInput {
public:
    // ConsumeIntegralInRange<T>(min, max) returning `value`: the offset from min, most
    // significant byte consumed first, as many bytes as the range needs.
    template <class T>
    void integral(T min, T max, T value) {
        const auto range = static_cast<std::uint64_t>(max) - static_cast<std::uint64_t>(min);
        const auto v = static_cast<std::uint64_t>(value) - static_cast<std::uint64_t>(min);
        int n = 0;
        while (n < static_cast<int>(sizeof(T)) && (range >> (8 * n)) > 0) ++n;
        for (int i = n - 1; i >= 0; --i) back_.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
    }
    void boolean(bool b) { integral<std::uint8_t>(0, 255, b ? 1 : 0); }
    void bytes(std::span<const std::uint8_t> b) { front_.insert(front_.end(), b.begin(), b.end()); }
    Bytes finish() const {
        Bytes out = front_;
        out.insert(out.end(), back_.rbegin(), back_.rend());
        return out;
    }

private:
    Bytes front_;
    Bytes back_;
};

enum Op { kWrite = 0, kRead, kRelease, kDrain, kCorrupt, kObserve, kPublish };

struct RingScript {
    FdpInput in;
    std::size_t max_payload;
    std::uint16_t max_kind;
    void op(Op o) { in.integral(0, 6, static_cast<int>(o)); }
    void write(std::uint16_t kind, std::size_t len) {
        op(kWrite);
        in.integral<std::uint16_t>(1, max_kind, kind);
        in.integral<std::size_t>(0, max_payload + 1, len);
    }
    void drain(std::size_t max) {
        op(kDrain);
        in.integral<std::size_t>(1, 8, max);
    }
    void corrupt(std::size_t region, std::size_t at, std::span<const std::uint8_t> b) {
        op(kCorrupt);
        in.integral<std::size_t>(0, region - 1, at);
        in.integral<std::size_t>(1, 8, b.size());
        in.bytes(b);
    }
};

RingScript valid_ring(int shift, bool control_kinds, std::uint8_t generation, std::uint32_t cap) {
    RingScript s{{},
                 (kMinRingDataBytes << shift) / 4 - kRecordHeaderBytes,
                 static_cast<std::uint16_t>(control_kinds ? 1 : 20)};
    s.in.boolean(false);  // valid mode
    s.in.integral(0, 2, shift);
    s.in.boolean(control_kinds);
    s.in.integral<std::uint8_t>(0, 255, generation);
    s.in.integral<std::uint32_t>(1, 64, cap);
    return s;
}

void ring_corpus() {
    const std::size_t region1k = ring_region_bytes(kMinRingDataBytes);
    {  // writes and reads through several wraps of a 1 KiB ring
        RingScript s = valid_ring(0, false, 3, 8);
        for (int i = 0; i < 24; ++i) {
            s.write(static_cast<std::uint16_t>(16 + i % 5), static_cast<std::size_t>(i * 37 % 200));
            if (i % 3 == 2) s.drain(8);
        }
        s.op(kRead);
        s.op(kRelease);
        write("ring_reader", "valid_wraps", s.in.finish());
    }
    {  // the control ring's kinds, held records, a full ring, then reads
        RingScript s = valid_ring(1, true, 1, 64);
        for (int i = 0; i < 12; ++i) s.write(1, 150);
        s.op(kRead);
        s.op(kRead);
        s.op(kObserve);
        s.in.integral<std::size_t>(0, 4096, 512);
        s.op(kRelease);
        s.op(kPublish);
        write("ring_reader", "valid_full", s.in.finish());
    }
    {  // a corrupted tail and a corrupted record header in the middle of a stream
        RingScript s = valid_ring(0, false, 0, 16);
        s.write(17, 40);
        s.write(18, 100);
        const std::uint8_t tail[] = {0x30, 0x10};  // producer tail_bytes, low bytes
        s.corrupt(region1k, offsetof(RingHeader, producer), tail);
        s.op(kRead);
        s.write(16, 8);
        const std::uint8_t len[] = {0xff, 0x7f};  // first record's len
        s.corrupt(region1k, sizeof(RingHeader), len);
        s.drain(4);
        write("ring_reader", "corrupt_tail_and_len", s.in.finish());
    }
    {  // raw mode: the image of a ring written by RingWriter (4 records, one wrapped)
        alignas(128) static std::byte region[ring_region_bytes(kMinRingDataBytes)];
        alignas(kCacheLine) static std::byte wakes[4 * sizeof(WakeSlot)];
        RingParams p;
        p.data_bytes = kMinRingDataBytes;
        p.generation = 5;
        RingWriter w = RingWriter::create(region, p, WakeTable(std::span(wakes)));
        RingReader r = RingReader::attach(region, 5, WakeTable(std::span(wakes)));
        const std::byte payload[200] = {};
        for (int i = 0; i < 7; ++i) {
            (void)w.try_write(static_cast<std::uint16_t>(16 + i % 4), std::span(payload, 150));
            if (i < 4) {
                RecordView v;
                (void)r.try_read(v);
                r.release();
            }
        }
        FdpInput in;
        in.boolean(true);  // raw mode
        in.integral(0, 2, 0);
        in.boolean(false);
        in.integral<std::uint8_t>(0, 255, 5);
        in.integral<std::size_t>(0, sizeof region, sizeof region);
        in.bytes(std::span(reinterpret_cast<const std::uint8_t*>(region), sizeof region));
        write("ring_reader", "raw_image", in.finish());
    }
}

// ---- link_setup ----

Bytes link_input(bool with_stream) {
    // The layout of fuzz_link_setup.cpp: actor header, mapping size, arena header, an extra
    // descriptor, then the arena from offset 4096.
    constexpr std::size_t kCarveArea = 8192 + kCarveHeaderBytes + ring_region_bytes(1024);
    Bytes out(416 + kCarveArea - kArenaCarveBase, 0);

    ActorHeader h{};
    h.magic = kActorSegmentMagic;
    h.layout_version = kLayoutVersion;
    h.protocol_version = kProtocolVersion;
    h.header_bytes = sizeof(ActorSegmentHead);
    h.total_bytes = ActorSegment::kTotalBytes;
    h.owner = kA;
    h.pid = 4242;
    h.start_time = 1000;
    std::memcpy(h.name, "alice", 5);
    std::memcpy(h.ns, "default", 7);
    h.wake_table = {4096, kActorWakeSlots * sizeof(WakeSlot)};
    h.counters = {4096 + kActorWakeSlots * sizeof(WakeSlot), kActorCountersBytes};
    h.error_log = {h.counters.offset + kActorCountersBytes, kActorErrorLogBytes};
    std::memcpy(out.data(), &h, sizeof h);
    const std::uint64_t mapping = ActorSegment::kTotalBytes;
    std::memcpy(out.data() + 256, &mapping, 8);

    // The arena: header (written field by field: its atomics are not copyable).
    alignas(128) static std::byte arena[kCarveArea];
    std::memset(arena, 0, sizeof arena);
    auto* ah = new (arena) ArenaHeader{};
    ah->magic.store(kArenaMagic);
    ah->layout_version = kLayoutVersion;
    ah->protocol_version = kProtocolVersion;
    ah->owner = kA;
    ah->peer = kB;
    const std::size_t control_class =
        std::bit_ceil(kCarveHeaderBytes + ring_region_bytes(detail::kControlRingDataBytes));
    ah->virtual_bytes = kArenaCarveBase + control_class;
    ah->carve_base = kArenaCarveBase;
    ah->carve_header_bytes = kCarveHeaderBytes;
    ah->min_class_bytes = kMinCarveClass;
    const auto carve = [&](std::size_t slot, std::uint64_t bytes, std::uint64_t cls,
                           std::uint64_t generation) {
        auto* c = new (arena + slot) CarveHeader{};
        c->magic.store(kCarveMagic);
        c->bytes.store(bytes);
        c->class_bytes.store(cls);
        c->generation.store(generation);
    };
    alignas(kCacheLine) static std::byte wakes[4 * sizeof(WakeSlot)];
    const WakeTable table{std::span(wakes)};
    // The control ring: the first carve; only its first bytes are in the input, which is
    // all a few records need (the rest of the data area reads as zeros).
    const std::uint64_t control_bytes = ring_region_bytes(detail::kControlRingDataBytes);
    carve(kArenaCarveBase, control_bytes, control_class, 1);
    static std::vector<std::byte> control_region;
    control_region.assign(control_bytes + 128, std::byte{0});
    auto* ring = reinterpret_cast<std::byte*>(
        (reinterpret_cast<std::uintptr_t>(control_region.data()) + 127) & ~std::uintptr_t{127});
    RingParams p;
    p.data_bytes = detail::kControlRingDataBytes;
    p.generation = 1;
    p.capacity_msgs = 1U << 30;
    RingWriter w = RingWriter::create(std::span(ring, control_bytes), p, table);
    wire::ControlEncoder enc;
    const std::uint64_t data_offset = 8192 + kCarveHeaderBytes;
    const std::uint64_t data_bytes = ring_region_bytes(1024);
    (void)w.try_write(detail::kControlRecordKind, enc.link_open(kAlice));
    if (with_stream) {
        (void)w.try_write(detail::kControlRecordKind,
                          enc.stream_open({kCid, data_offset, data_bytes, 2}));
        (void)w.try_write(detail::kControlRecordKind, enc.heartbeat(1, 2));
    }
    // Copy what fits below the data slot at 8192 (the ring header and the first records).
    std::memcpy(arena + kArenaCarveBase + kCarveHeaderBytes, ring,
                8192 - kArenaCarveBase - kCarveHeaderBytes);
    if (with_stream) {
        // A data ring in the slot at 8192 (inside the control ring's unused data area: the
        // arena does not check that slots do not overlap; attach validates each on its own).
        carve(8192, data_bytes, kMinCarveClass, 2);
        RingParams dp;
        dp.data_bytes = 1024;
        dp.generation = 2;
        RingWriter dw = RingWriter::create(std::span(arena + data_offset, data_bytes), dp, table);
        const std::byte msg[24] = {std::byte{1}, std::byte{2}};
        (void)dw.try_write(static_cast<std::uint16_t>(detail::kDataKindBase + 1), msg);
        (void)dw.try_write(static_cast<std::uint16_t>(detail::kDataKindBase + 3), msg);
        const std::uint64_t d[3] = {data_offset, data_bytes, 2};
        std::memcpy(out.data() + 392, d, sizeof d);
    }
    std::memcpy(out.data() + 264, arena, sizeof(ArenaHeader));
    std::memcpy(out.data() + 416, arena + kArenaCarveBase, sizeof arena - kArenaCarveBase);
    if (!with_stream) out.resize(416 + 4096);  // no data slot: the header page of the carve area
    return out;
}

void link_corpus() {
    write("link_setup", "link_open", link_input(false));
    const Bytes full = link_input(true);
    write("link_setup", "link_open_stream", full);
    Bytes stale = full;
    stale[416 + kCarveHeaderBytes + 24] ^= 1;  // the control ring's generation
    write("link_setup", "stale_ring_generation", stale);
    Bytes peer = full;
    peer[264 + 32] ^= 0x80;  // the arena's peer uuid
    write("link_setup", "wrong_peer", peer);
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s <corpus dir>\n", argv[0]);
        return 2;
    }
    g_out = argv[1];
    control_corpus();
    payload_corpus();
    ring_corpus();
    link_corpus();
    return 0;
}
