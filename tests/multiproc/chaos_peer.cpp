// Helper for chaos_xproc_test (issue 9, "chaos peer"): an actor process that links with the test
// process (the victim V) like any peer and then writes corruption into every shared structure it
// can reach. Its corruption is deliberate, but it models what a buggy or crashing peer may leave
// in shared memory (DESIGN.md threat model): the victim must fail this link with ProtocolError
// (LayoutError for a foreign layout) and nothing else.
//
//   chaos_peer <ns> <name> <victim>
//
// It prints "ready" once its endpoints are exposed and then reads commands from stdin:
//   forge <case>            (before any link) builds its arena for <victim>, valid but for one
//                           corrupted field, and prints "forged"; the victim then connects
//   corrupt <case> <seed>   (after the "chaos" endpoint printed "armed") applies one targeted
//                           corruption to the live link and prints "corrupted <what>"
//   random <seed> <flips>   flips random bytes at random offsets of every structure the victim
//                           reads, up to <flips> times or until the link is gone; prints
//                           "flipped <n>"
//   quit                    ends the process (exit 0)
//
// Endpoints:
//   chaos <mode>   started(); mode 0: opens the stream, sends 8 counted ints (a C->V data ring
//                  with 8 unread records) and receives one message (so the victim's V->C ring
//                  is attached here); mode 1: opens nothing (a forged StreamOpen is the first
//                  for this context); mode 2: streams counted ints until cancelled (random
//                  mode). Modes 0 and 1 then print "armed" and block until cancelled.
//   ping           returns its argument.
//
// The objects are found by name (shm::Names::arena(owner, peer)) and mapped with plain
// shm_open + mmap; carves are found by walking the carve headers from kArenaCarveBase (the
// first is the control ring, the second the first data ring). Writes to the victim's own words
// are what a consumer may legitimately write (its consumer block); everything else the victim
// reads lives in our arena.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <bit>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <mutex>
#include <optional>
#include <random>
#include <span>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "shmctx/actor.hpp"
#include "shmctx/errors.hpp"
#include "shmctx/shm/actor_file.hpp"
#include "shmctx/shm/arena.hpp"
#include "shmctx/shm/names.hpp"
#include "shmctx/shm/ring.hpp"
#include "shmctx/spawner.hpp"
#include "shmctx/wire/codec.hpp"
#include "until_cancelled.hpp"

namespace {

using namespace shmctx;
using namespace std::chrono_literals;

constexpr auto kWait = 60s;

std::mutex g_out_mu;
void say(const std::string& line) {
    const std::lock_guard lock(g_out_mu);
    std::fputs((line + "\n").c_str(), stdout);
    std::fflush(stdout);
}

bool read_line(std::string& line) {
    line.clear();
    for (;;) {
        const int c = std::fgetc(stdin);
        if (c == EOF) return !line.empty();
        if (c == '\n') return true;
        line.push_back(static_cast<char>(c));
    }
}

/// A whole /dev/shm object mapped read-write (MAP_SHARED). Thread-safety: single thread.
class Mapping {
public:
    explicit Mapping(const std::string& name) {
        const int fd = ::shm_open(("/" + name).c_str(), O_RDWR | O_CLOEXEC, 0);
        if (fd < 0) throw std::runtime_error("shm_open " + name + ": " + std::strerror(errno));
        struct stat st {};
        if (::fstat(fd, &st) != 0) {
            ::close(fd);
            throw std::runtime_error("fstat " + name);
        }
        size_ = static_cast<std::size_t>(st.st_size);
        void* p = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        ::close(fd);
        if (p == MAP_FAILED) throw std::runtime_error("mmap " + name);
        data_ = static_cast<std::byte*>(p);
    }
    Mapping(const Mapping&) = delete;
    Mapping& operator=(const Mapping&) = delete;
    ~Mapping() { ::munmap(data_, size_); }
    std::byte* data() const noexcept { return data_; }
    std::size_t size() const noexcept { return size_; }

private:
    std::byte* data_ = nullptr;
    std::size_t size_ = 0;
};

struct CarveInfo {
    std::uint64_t slot;
    std::uint64_t generation;
    std::uint64_t bytes;
    std::uint64_t class_bytes;
};

/// The carves of an arena, in slot order (the bump allocator's order on a fresh link).
std::vector<CarveInfo> carves_of(const Mapping& m) {
    std::vector<CarveInfo> out;
    std::uint64_t slot = shm::kArenaCarveBase;
    while (slot + shm::kCarveHeaderBytes <= m.size()) {
        auto* h = reinterpret_cast<shm::CarveHeader*>(m.data() + slot);
        const std::uint64_t gen = h->generation.load(std::memory_order::acquire);
        const std::uint64_t cls = h->class_bytes.load(std::memory_order::relaxed);
        if (gen == 0 || cls == 0) break;
        out.push_back({slot, gen, h->bytes.load(std::memory_order::relaxed), cls});
        slot += cls;
    }
    return out;
}

shm::RingHeader& ring_of(const Mapping& m, const CarveInfo& c) {
    return *reinterpret_cast<shm::RingHeader*>(m.data() + c.slot + shm::kCarveHeaderBytes);
}

std::byte* ring_data(const Mapping& m, const CarveInfo& c) {
    return m.data() + c.slot + shm::kCarveHeaderBytes + sizeof(shm::RingHeader);
}

/// What the "chaos" endpoint learnt once armed.
struct Armed {
    std::mutex mu;
    bool armed = false;
    Uuid victim;
    Cid cid;
};

/// The corruptions. Thread-safety: the main thread runs the commands; `state` is shared with
/// the "chaos" endpoint under its mutex.
class Chaos {
public:
    Chaos(Actor& actor, const std::string& ns, const std::string& victim_name)
        : actor_(actor), names_(ns), victim_name_(victim_name) {}

    Armed state;

    /// Rings the victim's doorbell (its wake slot 0), as a producer does after a publish.
    void ring_victim() {
        shm::PeerActor peer = shm::open_peer(names_, victim_name_, Deadline(kWait));
        if (shm::WakeSlot* bell = peer.segment().wake_table().slot(0)) shm::ring(*bell);
    }

    /// Appends a record to our control ring by hand, as a producer would (header, payload,
    /// written_msgs, tail with release), with `edit` applied to the header first. The library's
    /// own writer of that ring is idle (our endpoint blocks); its private tail is left behind,
    /// which only matters once the victim has failed the link.
    void forge_control(std::span<const std::byte> payload, std::uint16_t kind,
                       const std::function<void(shm::RecordHeader&, std::uint64_t&)>& edit) {
        Mapping own(names_.arena(actor_.uid().uuid, victim()));
        const CarveInfo c = carves_of(own).at(0);
        shm::RingHeader& r = ring_of(own, c);
        std::byte* data = ring_data(own, c);
        const std::uint64_t mask = r.immutable.data_bytes - 1;
        std::uint64_t tail = r.producer.tail_bytes.load(std::memory_order::relaxed);
        std::uint64_t written = r.producer.written_msgs.load(std::memory_order::relaxed);
        const std::uint64_t need = shm::ring_record_bytes(payload.size());
        const std::uint64_t to_end = mask + 1 - (tail & mask);
        if (need > to_end) {
            const shm::RecordHeader pad{static_cast<std::uint32_t>(to_end - 16), shm::kPaddingKind,
                                        0, static_cast<std::uint32_t>(written), 0};
            std::memcpy(data + (tail & mask), &pad, sizeof pad);
            tail += to_end;
        }
        shm::RecordHeader h{static_cast<std::uint32_t>(payload.size()), kind, 0,
                            static_cast<std::uint32_t>(written), 0};
        std::uint64_t new_tail = tail + need;
        edit(h, new_tail);
        if (!payload.empty())
            std::memcpy(data + (tail & mask) + 16, payload.data(), payload.size());
        std::memcpy(data + (tail & mask), &h, sizeof h);
        r.producer.written_msgs.store(written + 1, std::memory_order::relaxed);
        r.producer.tail_bytes.store(new_tail, std::memory_order::release);
        ring_victim();
    }

    Uuid victim() {
        const std::lock_guard lock(state.mu);
        return state.victim;
    }
    Cid cid() {
        const std::lock_guard lock(state.mu);
        return state.cid;
    }

    std::string corrupt(const std::string& what, std::uint64_t seed);
    std::string forge(const std::string& what);
    std::size_t random(std::uint64_t seed, std::size_t flips);

private:
    Actor& actor_;
    shm::Names names_;
    std::string victim_name_;
    wire::ControlEncoder encoder_{wire::kDefaultMaxControlRecordBytes};
    std::optional<shm::Arena> forged_;  // "forge": unlinked when we quit
    std::jthread hammer_;               // "v_ctrl_cell_slot": keeps the bad slot in place
};

std::span<const std::byte> bytes_of(const std::vector<std::byte>& v) {
    return {v.data(), v.size()};
}

std::string Chaos::corrupt(const std::string& what, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    const Uuid self = actor_.uid().uuid;
    Mapping own(names_.arena(self, victim()));
    Mapping theirs(names_.arena(victim(), self));
    const std::vector<CarveInfo> ours = carves_of(own);
    const std::vector<CarveInfo> vs = carves_of(theirs);
    const auto none = [](shm::RecordHeader&, std::uint64_t&) {};
    const auto valid_heartbeat = [&] {
        const auto rec = encoder_.heartbeat(1, 1);
        return std::vector<std::byte>(rec.begin(), rec.end());
    };

    // ---- our control ring (the victim's control loop reads it) ----
    shm::RingHeader& ctrl = ring_of(own, ours.at(0));
    const std::uint64_t ctrl_tail = ctrl.producer.tail_bytes.load(std::memory_order::relaxed);
    const std::uint64_t ctrl_d = ctrl.immutable.data_bytes;
    if (what == "ctrl_tail_backwards" || what == "ctrl_tail_beyond_capacity" ||
        what == "ctrl_tail_misaligned") {
        const std::uint64_t head = ctrl.consumer.head_bytes.load(std::memory_order::relaxed);
        const std::uint64_t bad = what == "ctrl_tail_backwards"         ? ctrl_tail - 32
                                  : what == "ctrl_tail_beyond_capacity" ? head + ctrl_d + 16
                                                                        : ctrl_tail + 8;
        ctrl.producer.tail_bytes.store(bad, std::memory_order::release);
        ring_victim();
        return "control tail " + std::to_string(ctrl_tail) + " -> " + std::to_string(bad);
    }
    if (what == "ctrl_record_len") {
        forge_control(bytes_of(valid_heartbeat()), 1,
                      [](shm::RecordHeader& h, std::uint64_t&) { h.len = 0xfffffff0U; });
        return "control record len 0xfffffff0";
    }
    if (what == "ctrl_record_past_tail") {
        // A length within the ring's maximum that runs past the published tail.
        forge_control(bytes_of(valid_heartbeat()), 1,
                      [](shm::RecordHeader& h, std::uint64_t&) { h.len += 4096; });
        return "control record len past the tail";
    }
    if (what == "ctrl_record_kind") {
        forge_control(bytes_of(valid_heartbeat()), 7, none);
        return "control record kind 7";
    }
    if (what == "ctrl_record_seq") {
        forge_control(bytes_of(valid_heartbeat()), 1,
                      [](shm::RecordHeader& h, std::uint64_t&) { h.seq_lo += 5; });
        return "control record seq_lo + 5";
    }
    if (what == "ctrl_padding") {
        forge_control(bytes_of(valid_heartbeat()), shm::kPaddingKind,
                      [](shm::RecordHeader& h, std::uint64_t&) { h.len = 32; });
        return "padding record that does not reach the end";
    }
    if (what == "ctrl_payload_garbage") {
        std::vector<std::byte> junk(96);
        for (auto& b : junk) b = static_cast<std::byte>(rng());
        forge_control(bytes_of(junk), 1, none);
        return "control record of 96 random bytes";
    }
    if (what == "ctrl_payload_flip") {
        // A valid Heartbeat with one byte of its FlatBuffer replaced.
        std::vector<std::byte> rec = valid_heartbeat();
        const std::size_t at = rng() % rec.size();
        rec[at] = static_cast<std::byte>(~std::to_integer<unsigned>(rec[at]));
        forge_control(bytes_of(rec), 1, none);
        return "heartbeat with byte " + std::to_string(at) + " inverted";
    }
    if (what == "ctrl_space_cell_slot") {
        // Our producer cell advertises a wake slot far outside our table; the victim's next
        // release of a control record tries to wake it.
        ctrl.producer.space_cell.waiter.store(0x7fffff00U, std::memory_order::relaxed);
        ctrl.producer.space_cell.mode.store(static_cast<std::uint32_t>(shm::WaitMode::block),
                                            std::memory_order::relaxed);
        forge_control(bytes_of(valid_heartbeat()), 1, none);
        return "control space cell advertises slot 0x7ffffeff";
    }
    if (what.starts_with("stream_open_")) {
        // A StreamOpen for our live context naming a carve that is not one.
        wire::StreamOpenFields f;
        f.cid = cid();
        const CarveInfo& data = ours.size() > 1 ? ours.at(1) : ours.at(0);
        f.offset = data.slot + shm::kCarveHeaderBytes;
        f.size_bytes = data.bytes;
        f.generation = data.generation;
        if (what == "stream_open_out_of_range") f.offset = own.size() + 4096 + 128;
        if (what == "stream_open_overflow") f.size_bytes = ~std::uint64_t{0} - 64;
        if (what == "stream_open_misaligned") f.offset += 64;
        if (what == "stream_open_stale") f.generation += 7;
        if (what == "stream_open_bytes") f.size_bytes += 4096;
        if (what == "stream_open_in_header") f.offset = 128;
        if (what.starts_with("stream_open_ring_")) {
            // A fresh carve of our own, far from the allocator's, with a ring header that is
            // right but for one field.
            const std::uint64_t slot = own.size() / 2;
            const std::uint64_t data_bytes = 64 * 1024;
            const std::uint64_t body_bytes = shm::ring_region_bytes(data_bytes);
            const std::uint64_t gen = 1000 + rng() % 1000;
            auto* ch = reinterpret_cast<shm::CarveHeader*>(own.data() + slot);
            ch->magic.store(shm::kCarveMagic, std::memory_order::relaxed);
            ch->bytes.store(body_bytes, std::memory_order::relaxed);
            ch->class_bytes.store(std::bit_ceil(body_bytes + shm::kCarveHeaderBytes),
                                  std::memory_order::relaxed);
            ch->detached.store(0, std::memory_order::relaxed);
            ch->generation.store(gen, std::memory_order::release);
            auto* rh = reinterpret_cast<shm::RingHeader*>(own.data() + slot + 128);
            rh->immutable.layout_version = shm::kLayoutVersion;
            rh->immutable.header_bytes = sizeof(shm::RingHeader);
            rh->immutable.data_bytes = data_bytes;
            rh->immutable.generation = gen;
            rh->immutable.max_payload_bytes = static_cast<std::uint32_t>(data_bytes / 4 - 16);
            rh->consumer.capacity_msgs.store(64, std::memory_order::relaxed);
            if (what == "stream_open_ring_magic") {
                rh->immutable.magic.store(0x1234, std::memory_order::release);
            } else {
                if (what == "stream_open_ring_data_bytes") rh->immutable.data_bytes = 3 * 4096;
                if (what == "stream_open_ring_too_big") rh->immutable.data_bytes = 1ULL << 30;
                if (what == "stream_open_ring_max_payload")
                    rh->immutable.max_payload_bytes = 1U << 31;
                if (what == "stream_open_ring_generation") rh->immutable.generation = gen + 1;
                if (what == "stream_open_ring_header_bytes") rh->immutable.header_bytes = 64;
                if (what == "stream_open_ring_head") {
                    rh->consumer.head_bytes.store(8, std::memory_order::relaxed);
                }
                rh->immutable.magic.store(shm::kRingMagic, std::memory_order::release);
            }
            f.offset = slot + 128;
            f.size_bytes = body_bytes;
            f.generation = gen;
        }
        const auto rec = encoder_.stream_open(f);
        forge_control(std::span<const std::byte>(rec.data(), rec.size()), 1, none);
        return what + " offset " + std::to_string(f.offset) + " bytes " +
               std::to_string(f.size_bytes) + " generation " + std::to_string(f.generation);
    }

    // ---- our data ring to the victim (8 unread records) ----
    if (what.starts_with("data_")) {
        const CarveInfo& c = ours.at(1);
        shm::RingHeader& r = ring_of(own, c);
        std::byte* data = ring_data(own, c);
        const std::uint64_t mask = r.immutable.data_bytes - 1;
        const std::uint64_t tail = r.producer.tail_bytes.load(std::memory_order::relaxed);
        const std::uint64_t head = r.consumer.head_bytes.load(std::memory_order::relaxed);
        if (what == "data_tail_backwards" || what == "data_tail_beyond_capacity" ||
            what == "data_tail_misaligned") {
            const std::uint64_t bad = what == "data_tail_backwards"         ? tail - 32
                                      : what == "data_tail_beyond_capacity" ? head + mask + 17
                                                                            : tail + 8;
            r.producer.tail_bytes.store(bad, std::memory_order::release);
            return "data tail " + std::to_string(tail) + " -> " + std::to_string(bad);
        }
        if (what == "data_space_cell_slot") {
            r.producer.space_cell.waiter.store(0x7fffff00U, std::memory_order::relaxed);
            r.producer.space_cell.mode.store(static_cast<std::uint32_t>(shm::WaitMode::block),
                                             std::memory_order::relaxed);
            return "data space cell advertises slot 0x7ffffeff";
        }
        // The first unread record (the victim has read none).
        auto* h = reinterpret_cast<shm::RecordHeader*>(data + (head & mask));
        if (what == "data_record_len") h->len = 0x7fffffffU;
        if (what == "data_record_past_tail") h->len = static_cast<std::uint32_t>(tail - head);
        if (what == "data_record_kind") h->kind = 0x7777;
        if (what == "data_record_control_kind") h->kind = 1;  // a kind below the payload kinds
        if (what == "data_record_seq") h->seq_lo ^= 0x10000U;
        if (what == "data_record_padding") h->kind = shm::kPaddingKind;
        if (what == "data_record_zeroed") std::memset(h, 0, sizeof *h + 8);
        return what + " at position " + std::to_string(head);
    }

    // ---- the victim's arena: the consumer words we may write ----
    if (what.starts_with("v_")) {
        const CarveInfo& c = what.starts_with("v_ctrl") ? vs.at(0) : vs.at(1);
        shm::RingHeader& r = ring_of(theirs, c);
        if (what == "v_data_read_past_written") {
            r.consumer.read_msgs.store(1ULL << 40, std::memory_order::relaxed);
        } else if (what == "v_data_head_past_tail") {
            const std::uint64_t tail = r.producer.tail_bytes.load(std::memory_order::relaxed);
            r.consumer.head_bytes.store(tail + (1ULL << 20), std::memory_order::release);
        } else if (what == "v_data_head_misaligned") {
            r.consumer.head_bytes.store(8, std::memory_order::release);
        } else if (what == "v_ctrl_cell_slot") {
            // Our own control loop rewrites this cell whenever it sleeps or wakes, so the bad
            // slot is stored again and again until the link is gone: the victim finds it when
            // a publish of its finds us asleep (a wake is owed).
            auto mapping = std::make_shared<Mapping>(names_.arena(victim(), self));
            auto* cell = &ring_of(*mapping, c).consumer.data_cell;
            hammer_ = std::jthread([this, mapping, cell](const std::stop_token& stop) {
                const auto until = Clock::now() + kWait;
                while (!stop.stop_requested() && actor_.links() != 0 && Clock::now() < until) {
                    cell->mode.store(static_cast<std::uint32_t>(shm::WaitMode::block),
                                     std::memory_order::relaxed);
                    cell->waiter.store(0x7fffff00U, std::memory_order::relaxed);
                    std::this_thread::yield();
                }
            });
        } else if (what == "v_data_cell_slot") {
            r.consumer.data_cell.mode.store(static_cast<std::uint32_t>(shm::WaitMode::block),
                                            std::memory_order::relaxed);
            r.consumer.data_cell.waiter.store(0x7fffff00U, std::memory_order::relaxed);
        } else {
            throw std::invalid_argument("unknown case " + what);
        }
        return what;
    }
    throw std::invalid_argument("unknown case " + what);
}

std::string Chaos::forge(const std::string& what) {
    // Our arena for the victim, built by the library (so every field is right), then one field
    // is broken before the victim is told about it. No LinkOpen is written: the victim fails
    // while attaching.
    shm::PeerActor peer = shm::open_peer(names_, victim_name_, Deadline(kWait));
    {
        const std::lock_guard lock(state.mu);
        state.victim = peer.uuid();
    }
    forged_.emplace(shm::Arena::create(names_, actor_.uid().uuid, peer.uuid(), {}));
    shm::Arena& arena = *forged_;
    const shm::Carve carve = arena.carve(shm::ring_region_bytes(256 * 1024));
    shm::RingParams params;
    params.data_bytes = 256 * 1024;
    params.generation = carve.descriptor.generation;
    params.capacity_msgs = 1U << 30;
    (void)shm::RingWriter::create(carve.body, params, peer.segment().wake_table());
    Mapping own(arena.name());
    auto* ah = reinterpret_cast<shm::ArenaHeader*>(own.data());
    auto* ch = reinterpret_cast<shm::CarveHeader*>(own.data() + shm::kArenaCarveBase);
    auto* rh = reinterpret_cast<shm::RingHeader*>(own.data() + shm::kArenaCarveBase + 128);
    if (what == "arena_owner") {
        ah->owner = Uuid{};
    } else if (what == "arena_peer") {
        ah->peer = actor_.uid().uuid;
    } else if (what == "arena_layout") {
        ah->layout_version = 999;
    } else if (what == "arena_magic") {
        ah->magic.store(0x42, std::memory_order::release);
    } else if (what == "arena_virtual_bytes") {
        ah->virtual_bytes = own.size() * 4;
    } else if (what == "arena_virtual_bytes_small") {
        ah->virtual_bytes = 4096;
    } else if (what == "arena_carve_base") {
        ah->carve_base = 8192;
    } else if (what == "carve_magic") {
        ch->magic.store(7, std::memory_order::relaxed);
    } else if (what == "carve_bytes") {
        ch->bytes.store(ch->bytes.load() + 4096, std::memory_order::relaxed);
    } else if (what == "carve_class") {
        ch->class_bytes.store(~std::uint64_t{0} - 4096, std::memory_order::relaxed);
    } else if (what == "carve_generation") {
        ch->generation.store(99, std::memory_order::release);
    } else if (what == "ring_magic") {
        rh->immutable.magic.store(0x99, std::memory_order::release);
    } else if (what == "ring_layout") {
        rh->immutable.layout_version = 77;
    } else if (what == "ring_data_bytes") {
        rh->immutable.data_bytes = 1ULL << 39;
    } else if (what == "ring_generation") {
        rh->immutable.generation = 5;
    } else if (what == "ring_max_payload") {
        rh->immutable.max_payload_bytes = 0xffffffffU;
    } else if (what == "ring_head_misaligned") {
        rh->consumer.head_bytes.store(3, std::memory_order::relaxed);
    } else {
        throw std::invalid_argument("unknown forge case " + what);
    }
    // Not announced: the victim finds it when it connects (an announcement would let its
    // control loop fail the link first, and a connect after that waits for a new arena).
    return what;
}

std::size_t Chaos::random(std::uint64_t seed, std::size_t flips) {
    std::mt19937_64 rng(seed);
    const Uuid self = actor_.uid().uuid;
    Mapping own(names_.arena(self, victim()));
    Mapping theirs(names_.arena(victim(), self));
    // Ranges the victim reads: our arena header, our carve headers' owner words, our rings'
    // immutable and producer blocks and their data areas; the consumer blocks of the victim's
    // rings (its writers read them). Not our rings' consumer blocks: our own writers read
    // those, and we want the victim to find the damage, not ourselves. Not the two closed
    // flags either: any non-zero value there is a legitimate close (the link or the stream
    // ends as closed, TransportClosed / EndOfChannel), not damage anyone could detect.
    struct Range {
        std::byte* at;
        std::size_t bytes;
    };
    std::vector<Range> ranges;
    ranges.push_back({own.data(), sizeof(shm::ArenaHeader)});
    for (const CarveInfo& c : carves_of(own)) {
        ranges.push_back({own.data() + c.slot, 64});
        auto& r = ring_of(own, c);
        auto* base = reinterpret_cast<std::byte*>(&r);
        constexpr std::size_t closed =
            offsetof(shm::RingHeader, producer) + offsetof(shm::RingProducerBlock, producer_closed);
        ranges.push_back({base, closed});
        ranges.push_back({base + closed + 4, offsetof(shm::RingHeader, consumer) - closed - 4});
        ranges.push_back({ring_data(own, c), static_cast<std::size_t>(r.immutable.data_bytes)});
    }
    for (const CarveInfo& c : carves_of(theirs)) {
        auto* base = reinterpret_cast<std::byte*>(&ring_of(theirs, c));
        constexpr std::size_t from = offsetof(shm::RingHeader, consumer);
        constexpr std::size_t closed = from + offsetof(shm::RingConsumerBlock, consumer_closed);
        ranges.push_back({base + from, closed - from});
        ranges.push_back({base + closed + 4, sizeof(shm::RingHeader) - closed - 4});
    }
    std::size_t n = 0;
    for (; n < flips && actor_.links() != 0; ++n) {
        const Range& r = ranges[rng() % ranges.size()];
        std::byte* p = r.at + rng() % r.bytes;
        // One bit or a whole random byte; volatile so that every flip is a real store.
        auto* v = reinterpret_cast<volatile unsigned char*>(p);
        if (rng() % 2 == 0) {
            *v = static_cast<unsigned char>(*v ^ (1U << (rng() % 8)));
        } else {
            *v = static_cast<unsigned char>(rng());
        }
        if (n % 16 == 15) ring_victim();
        std::this_thread::yield();  // pacing only: the victim keeps reading meanwhile
    }
    return n;
}

void expose(Actor& actor, Chaos& chaos) {
    actor.expose("ping", [](Context&, const Payload& args) { return Payload::copy(args); });
    actor.expose("chaos", [&chaos](Context& ctx, const Payload& args) -> Payload {
        const std::int64_t mode = args.value<std::int64_t>();
        {
            const std::lock_guard lock(chaos.state.mu);
            chaos.state.victim = ctx.peer().uuid;
            chaos.state.cid = ctx.cid();
        }
        ctx.started();
        if (mode == 2) {
            StreamOptions o;
            o.on_full = OnFull::block;
            auto stream = ctx.open_stream(o);
            for (std::int64_t i = 0;; ++i) stream.send(Payload::value(i));
        }
        std::optional<MsgStream> stream;
        if (mode == 0) {
            stream.emplace(ctx.open_stream());
            for (std::int64_t i = 0; i < 8; ++i) stream->send(Payload::value(i));
            // The victim's first message: its ring to us is attached here from now on.
            (void)stream->receive();
        }
        say("armed");
        test::until_cancelled(ctx, kWait);
        return Payload{};
    });
}

int run(int argc, char** argv) {
    if (argc != 4) {
        std::fprintf(stderr, "usage: chaos_peer <ns> <name> <victim>\n");
        return 2;
    }
    ActorOptions options;
    options.ns = argv[1];
    Actor actor(argv[2], options);
    Chaos chaos(actor, argv[1], argv[3]);
    expose(actor, chaos);
    say("ready");
    std::string line;
    while (read_line(line) && line != "quit") {
        std::istringstream in(line);
        std::string cmd;
        std::string what;
        in >> cmd;
        try {
            if (cmd == "corrupt") {
                std::uint64_t seed = 0;
                in >> what >> seed;
                say("corrupted " + chaos.corrupt(what, seed));
            } else if (cmd == "forge") {
                in >> what;
                say("forged " + chaos.forge(what));
            } else if (cmd == "random") {
                std::uint64_t seed = 0;
                std::size_t flips = 0;
                in >> seed >> flips;
                say("flipped " + std::to_string(chaos.random(seed, flips)));
            }
        } catch (const std::exception& e) {
            say(std::string("failed ") + e.what());
        }
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    (void)shmctx::child_process_init();
    try {
        return run(argc, argv);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "chaos_peer: %s\n", e.what());
        return 1;
    }
}
