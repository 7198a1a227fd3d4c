// Fuzz target: what an actor reads from a peer at link set-up.
//
//  1. The peer's announce: its actor segment header, validated by shm::validate_actor_header
//     (src/shm/actor_segment.cpp; open_peer in scan_links runs it on a copy of the header).
//  2. The peer's link arena, opened with shm::ArenaView::try_open (header: magic, versions,
//     owner/peer, sizes), then the steps of Link::attach_peer (src/core/link.cpp): carved() and
//     attach() of the control-ring descriptor, the ring magic, RingReader::attach with the
//     control ring's options, then what Link::read_control does: try_read + decode_control
//     for each record until the ring is empty or broken.
//  3. Carve descriptors as a StreamOpen carries them (ContextState::on_stream_open): each
//     decoded StreamOpen's, one taken directly from the input, and one with the input's offset
//     and the size and generation the carve header there claims: ArenaView::attach,
//     RingReader::attach with the data rings' options, every record read, ArenaView::detach.
//
// The arena is a real POSIX shared-memory object (the production open path maps it); it is
// created once per process as `shmctx.<euid>.fuzz-<pid>.link.<owner>.<peer>` and refilled from
// each input. Input layout (zero-filled when short):
//
//   0     256   ActorHeader image                      -> validate_actor_header
//   256   8     mapping size (u64)                     -> its `mapping_size` argument
//   264   128   arena bytes [0, 128): the ArenaHeader
//   392   24    CarveDescriptor {offset, bytes, generation} (u64 each)
//   416   ...   arena bytes [4096, ...): the control ring's carve header, ring header, data,
//               and any further slots (a data ring at 8192 is reachable within 8 KiB)
//
// Contract: each call returns or throws its documented error (LayoutError, ProtocolError,
// DecodeError), never anything else, never a crash; a validated header's regions lie within
// total_bytes <= the mapping; an attached body is the descriptor's size inside the arena's
// virtual size; every ring record lies inside its ring's data area.
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <span>
#include <string>

#include "core/link.hpp"
#include "fuzz_support.hpp"
#include "shmctx/shm/actor_segment.hpp"
#include "shmctx/shm/arena.hpp"
#include "shmctx/shm/names.hpp"
#include "shmctx/shm/ring.hpp"
#include "shmctx/shm/segment.hpp"

using namespace shmctx;
using namespace shmctx::shm;

namespace {

constexpr std::size_t kActorImage = 0;
constexpr std::size_t kMappingSize = 256;
constexpr std::size_t kArenaHeaderImage = 264;
constexpr std::size_t kDescriptorImage = 392;
constexpr std::size_t kCarveAreaImage = 416;

// The uuids the fuzzed arena claims to be between (the seeds carry them).
constexpr Uuid kOwner{{0x0f, 0x1e, 0x2d, 0x3c, 0x4b, 0x5a, 0x69, 0x78, 0x87, 0x96, 0xa5, 0xb4, 0xc3,
                       0xd2, 0xe1, 0xf0}};
constexpr Uuid kPeer{{0xf1, 0xe2, 0xd3, 0xc4, 0xb5, 0xa6, 0x97, 0x88, 0x79, 0x6a, 0x5b, 0x4c, 0x3d,
                      0x2e, 0x1f, 0x01}};

// Where Link places the control ring: the first carve of a fresh arena (link.cpp).
constexpr CarveDescriptor kControlDescriptor{kArenaCarveBase + kCarveHeaderBytes,
                                             ring_region_bytes(detail::kControlRingDataBytes), 1};
// An arena just large enough for the control ring's slot (its class is a power of two).
constexpr std::size_t kArenaBytes =
    kArenaCarveBase + std::bit_ceil(kCarveHeaderBytes + kControlDescriptor.bytes);

constexpr std::uint32_t kWakeSlots = 4;

struct FuzzArena {
    Names names;
    Segment segment;
};
FuzzArena* g_arena = nullptr;

void remove_arena() {
    if (g_arena != nullptr) (void)Segment::remove(g_arena->segment.name());
}

// Objects of earlier runs of this target that died without cleaning up (a crash, a timeout).
void remove_stale_arenas() {
    const std::string prefix = "shmctx." + std::to_string(::geteuid()) + ".fuzz-";
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(std::string(kShmDir), ec)) {
        const std::string name = e.path().filename().string();
        if (name.rfind(prefix, 0) != 0) continue;
        const long pid = std::strtol(name.c_str() + prefix.size(), nullptr, 10);
        if (pid > 0 && ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) {
            (void)Segment::remove(name);
        }
    }
}

std::uint64_t load_u64(std::span<const std::uint8_t> in, std::size_t at) {
    std::uint8_t b[8] = {};
    if (at < in.size()) std::memcpy(b, in.data() + at, std::min<std::size_t>(8, in.size() - at));
    std::uint64_t v;
    std::memcpy(&v, b, 8);
    return v;
}

void copy_section(std::span<const std::uint8_t> in, std::size_t at, std::size_t max,
                  std::byte* dst) {
    if (at >= in.size()) return;
    std::memcpy(dst, in.data() + at, std::min(max, in.size() - at));
}

void check_announce(std::span<const std::uint8_t> in) {
    ActorHeader copy{};
    copy_section(in, kActorImage, sizeof copy, reinterpret_cast<std::byte*>(&copy));
    const std::uint64_t mapping = load_u64(in, kMappingSize);
    ActorInfo info;
    if (!fuzz::expect_only<LayoutError>("validate_actor_header", [&]() {
            info = validate_actor_header(copy, static_cast<std::size_t>(mapping), "fuzz");
        })) {
        return;
    }
    FUZZ_CHECK(info.total_bytes <= mapping && info.total_bytes >= sizeof(ActorSegmentHead));
    for (const ActorRegion& r : {info.wake_table, info.counters, info.error_log}) {
        FUZZ_CHECK(r.offset >= sizeof(ActorSegmentHead) && r.offset <= info.total_bytes &&
                   r.bytes <= info.total_bytes - r.offset);
    }
    FUZZ_CHECK(info.wake_table.bytes % sizeof(WakeSlot) == 0);
    FUZZ_CHECK(info.name.size() < sizeof copy.name && info.ns.size() < sizeof copy.ns);
    FUZZ_CHECK(info.pid > 0);
    FUZZ_TRACE("announce of '%s' in '%s' accepted", info.name.c_str(), info.ns.c_str());
}

// Reads every record of `reader` (whose region is `body`) until it is empty or broken.
template <class Fn>
void read_ring(RingReader& reader, std::span<const std::byte> body, Fn&& on_record) {
    for (;;) {
        RecordView r;
        const ReadResult res = reader.try_read(r);
        if (res == ReadResult::protocol_error) {
            FUZZ_TRACE("ring protocol error: %.*s", static_cast<int>(reader.error_text().size()),
                       reader.error_text().data());
            FUZZ_CHECK(reader.has_protocol_error() && !reader.error_text().empty());
            return;
        }
        if (res == ReadResult::empty) return;
        FUZZ_CHECK(r.payload.data() >= body.data() + sizeof(RingHeader) + kRecordHeaderBytes &&
                   r.payload.data() + r.payload.size() <= body.data() + body.size());
        (void)fuzz::touch(r.payload);
        FUZZ_TRACE("record kind %u, %zu bytes", r.kind, r.payload.size());
        on_record(r);
        reader.release();
    }
}

// ContextState::on_stream_open, then the data ring drained, then the detach.
void open_stream(const ArenaView& view, const WakeTable& wakes, const CarveDescriptor& d) {
    std::span<std::byte> body;
    if (!fuzz::expect_only<ProtocolError>("ArenaView::attach(stream)",
                                          [&]() { body = view.attach(d); })) {
        return;
    }
    FUZZ_CHECK(body.size() == d.bytes && d.offset <= view.virtual_bytes() &&
               d.bytes <= view.virtual_bytes() - d.offset);
    std::optional<RingReader> reader;
    if (fuzz::expect_only<LayoutError, ProtocolError>("RingReader::attach(stream)", [&]() {
            reader.emplace(RingReader::attach(body, d.generation, wakes,
                                              RingReaderOptions{detail::kMaxDataKind}));
        })) {
        read_ring(*reader, body, [](const RecordView& r) {
            FUZZ_CHECK(r.kind >= 1 && r.kind <= detail::kMaxDataKind);
        });
    }
    (void)fuzz::expect_only<ProtocolError>("ArenaView::detach", [&]() { view.detach(d); });
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
    remove_stale_arenas();
    Names names("fuzz-" + std::to_string(::getpid()));
    const std::string name = names.arena(kOwner, kPeer);
    (void)Segment::remove(name);
    g_arena = new FuzzArena{std::move(names), Segment::create(name, kArenaBytes)};
    std::atexit(remove_arena);
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::span<const std::uint8_t> in(data, size);
    check_announce(in);

    // Refill the whole arena: the readers store into it too (head, read_msgs, detached, wake
    // cells), and nothing of one input may leak into the next (determinism).
    std::byte* base = g_arena->segment.data();
    std::memset(base, 0, kArenaBytes);
    copy_section(in, kArenaHeaderImage, sizeof(ArenaHeader), base);
    if (size > kCarveAreaImage) {
        std::memcpy(base + kArenaCarveBase, data + kCarveAreaImage,
                    std::min(size - kCarveAreaImage, kArenaBytes - kArenaCarveBase));
    }
    const CarveDescriptor extra{load_u64(in, kDescriptorImage), load_u64(in, kDescriptorImage + 8),
                                load_u64(in, kDescriptorImage + 16)};

    // Link::attach_peer.
    std::optional<ArenaView> view;
    if (!fuzz::expect_only<LayoutError, ProtocolError>("ArenaView::try_open", [&]() {
            if (auto v = ArenaView::try_open(g_arena->names, kOwner, kPeer))
                view.emplace(std::move(*v));
        })) {
        return 0;
    }
    if (!view) return 0;
    FUZZ_CHECK(view->virtual_bytes() <= kArenaBytes);
    alignas(kCacheLine) static std::byte wake_bytes[kWakeSlots * sizeof(WakeSlot)];
    const WakeTable wakes{std::span(wake_bytes)};

    open_stream(*view, wakes, extra);
    // The same offset with the size and generation its carve header claims: what a buggy
    // producer that wrote both consistently would send (the fuzzer seldom matches two 8-byte
    // fields at once by itself).
    if (const std::uint64_t slot = extra.offset - kCarveHeaderBytes;
        extra.offset >= kCarveHeaderBytes && slot % 8 == 0 && slot <= kArenaBytes - 32) {
        static_assert(offsetof(CarveHeader, generation) == 0 && offsetof(CarveHeader, bytes) == 16);
        std::uint64_t words[3];  // generation, magic, bytes
        std::memcpy(words, base + slot, sizeof words);
        if (words[2] != extra.bytes || words[0] != extra.generation) {
            open_stream(*view, wakes, CarveDescriptor{extra.offset, words[2], words[0]});
        }
    }

    const CarveDescriptor d = kControlDescriptor;
    if (!view->carved(d)) return 0;
    std::span<std::byte> body;
    if (!fuzz::expect_only<ProtocolError>("ArenaView::attach(control)",
                                          [&]() { body = view->attach(d); })) {
        return 0;
    }
    FUZZ_CHECK(body.size() == d.bytes);
    const auto* ring = std::launder(reinterpret_cast<const RingHeader*>(body.data()));
    if (ring->immutable.magic.load(std::memory_order::acquire) == 0) return 0;
    std::optional<RingReader> reader;
    if (!fuzz::expect_only<LayoutError, ProtocolError>("RingReader::attach(control)", [&]() {
            reader.emplace(RingReader::attach(body, d.generation, wakes,
                                              RingReaderOptions{detail::kControlRecordKind}));
        })) {
        return 0;
    }
    reader->advertise_wake_slot(std::nullopt);
    // Link::read_control: every record is one control message.
    read_ring(*reader, body, [&](const RecordView& r) {
        FUZZ_CHECK(r.kind == detail::kControlRecordKind);
        std::optional<wire::ControlView> msg;
        if (!fuzz::expect_only<DecodeError>(
                "decode_control", [&]() { msg.emplace(wire::decode_control(r.payload)); })) {
            return;
        }
        (void)fuzz::walk_control(*msg);
        FUZZ_TRACE("control message %s", msg->type_name().data());
        if (const auto* m = msg->as<wire::fb::StreamOpen>()) {
            open_stream(*view, wakes,
                        CarveDescriptor{m->offset(), m->size_bytes(), m->generation()});
        }
    });
    return 0;
}
