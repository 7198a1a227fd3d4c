#include "inspect.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <optional>
#include <set>
#include <string>
#include <type_traits>
#include <vector>

#include "common.hpp"
#include "shmctx/errors.hpp"
#include "shmctx/shm/actor_file.hpp"
#include "shmctx/shm/actor_segment.hpp"
#include "shmctx/shm/arena.hpp"
#include "shmctx/shm/ring.hpp"

namespace shmctx::cli {
namespace {

/// Upper bound of the slots walked per arena: a corrupt class chain cannot keep us busy.
constexpr std::size_t kMaxSlotsWalked = 65536;

/// A u64/u32 at `offset` of a byte copy of shared memory (the copy is the only thing read).
template <class T, std::size_t N>
T field(const std::array<std::byte, N>& bytes, std::size_t offset) {
    T value;
    static_assert(std::is_trivially_copyable_v<T>);
    std::memcpy(&value, bytes.data() + offset, sizeof value);
    return value;
}

/// Reads exactly N bytes at `offset`; false on a short read (the object is smaller) or error.
/// pread, not a mapping: a hole of a sparse arena reads as zeros without allocating a page (a
/// read fault on a shared tmpfs mapping allocates one, or raises SIGBUS when /dev/shm is
/// full). The copy is a snapshot of words their owners keep writing; nothing in it is used
/// before it is validated.
template <std::size_t N>
bool read_at(int fd, std::uint64_t offset, std::array<std::byte, N>& out) {
    std::size_t done = 0;
    while (done < N) {
        const ssize_t n =
            ::pread(fd, out.data() + done, N - done, static_cast<off_t>(offset + done));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return false;
        done += static_cast<std::size_t>(n);
    }
    return true;
}

constexpr std::size_t kProducer = offsetof(shm::RingHeader, producer);
constexpr std::size_t kConsumer = offsetof(shm::RingHeader, consumer);

/// The ring in the carve body at `body`, if the body holds an initialised ring of generation
/// `generation`; every field is validated before use.
std::optional<RingStats> read_ring(int fd, std::uint64_t body, std::uint64_t body_bytes,
                                   std::uint64_t generation) {
    using shm::RingConsumerBlock;
    using shm::RingImmutableBlock;
    using shm::RingProducerBlock;
    std::array<std::byte, sizeof(shm::RingHeader)> h{};
    if (body_bytes < h.size() || !read_at(fd, body, h)) return std::nullopt;
    if (field<std::uint64_t>(h, offsetof(RingImmutableBlock, magic)) != shm::kRingMagic ||
        field<std::uint64_t>(h, offsetof(RingImmutableBlock, generation)) != generation) {
        return std::nullopt;  // not a ring, not initialised yet, or a previous carve's
    }
    RingStats r;
    r.generation = generation;
    r.data_bytes = field<std::uint64_t>(h, offsetof(RingImmutableBlock, data_bytes));
    if (!std::has_single_bit(r.data_bytes) || r.data_bytes > body_bytes - h.size()) {
        return std::nullopt;
    }
    auto producer = [&](std::size_t off) { return field<std::uint64_t>(h, kProducer + off); };
    auto consumer = [&](std::size_t off) { return field<std::uint64_t>(h, kConsumer + off); };
    const std::uint64_t tail = producer(offsetof(RingProducerBlock, tail_bytes));
    const std::uint64_t head = consumer(offsetof(RingConsumerBlock, head_bytes));
    if (head <= tail && tail - head <= r.data_bytes) r.fill_bytes = tail - head;
    r.capacity_msgs =
        field<std::uint32_t>(h, kConsumer + offsetof(RingConsumerBlock, capacity_msgs));
    shm::RingCounters& c = r.counters;
    c.sent = producer(offsetof(RingProducerBlock, written_msgs));
    c.received = consumer(offsetof(RingConsumerBlock, read_msgs));
    c.payload_bytes = producer(offsetof(RingProducerBlock, payload_bytes));
    c.full_events = producer(offsetof(RingProducerBlock, full_events));
    c.overruns = producer(offsetof(RingProducerBlock, overruns));
    c.spilled = producer(offsetof(RingProducerBlock, spilled));
    c.spill_drained = producer(offsetof(RingProducerBlock, spill_drained));
    c.spill_discarded = producer(offsetof(RingProducerBlock, spill_discarded));
    c.spill_high_water = producer(offsetof(RingProducerBlock, spill_high_water));
    return r;
}

/// Walks the slots of an arena (docs: arena.hpp): slot i+1 starts class_bytes after slot i;
/// the first never-carved slot (magic still zero: a hole of the sparse object, read as zeros
/// without allocating) ends the walk.
void walk_arena(int fd, std::uint64_t virtual_bytes, LinkStats& link) {
    std::uint64_t slot = shm::kArenaCarveBase;
    for (std::size_t n = 0; n < kMaxSlotsWalked; ++n) {
        if (virtual_bytes - slot < shm::kCarveHeaderBytes) return;
        std::array<std::byte, sizeof(shm::CarveHeader)> ch{};
        if (!read_at(fd, slot, ch)) return;
        const auto magic = field<std::uint64_t>(ch, offsetof(shm::CarveHeader, magic));
        if (magic == 0) return;
        const auto cls = field<std::uint64_t>(ch, offsetof(shm::CarveHeader, class_bytes));
        if (magic != shm::kCarveMagic || !std::has_single_bit(cls) || cls < shm::kMinCarveClass ||
            cls > virtual_bytes - slot) {
            link.problem = "slot at offset " + std::to_string(slot) + ": bad carve header";
            return;
        }
        const auto generation = field<std::uint64_t>(ch, offsetof(shm::CarveHeader, generation));
        const auto bytes = field<std::uint64_t>(ch, offsetof(shm::CarveHeader, bytes));
        const auto detached = field<std::uint64_t>(ch, offsetof(shm::CarveHeader, detached));
        // In use: carved (generation published) and its consumer has not detached from it.
        if (generation != 0 && detached != generation && bytes <= cls - shm::kCarveHeaderBytes) {
            if (auto ring = read_ring(fd, slot + shm::kCarveHeaderBytes, bytes, generation)) {
                ring->control = slot == shm::kArenaCarveBase;
                link.rings.push_back(*ring);
            }
        }
        slot += cls;
    }
    link.problem = "more than " + std::to_string(kMaxSlotsWalked) + " slots; walk stopped";
}

/// Reads arena `object` (owned by `owner`) with pread only.
LinkStats read_link(const std::string& object, const std::string& peer, const Uuid& owner,
                    uid_t euid) {
    LinkStats link{object, peer, 0, {}, std::nullopt};
    const std::string path = shm::shm_path(object);
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        link.problem = std::string("open: ") + std::strerror(errno);
        return link;
    }
    struct stat st {};
    std::array<std::byte, sizeof(shm::ArenaHeader)> h{};
    if (::fstat(fd, &st) != 0) {
        link.problem = std::string("fstat: ") + std::strerror(errno);
    } else if (st.st_uid != euid) {
        link.problem = "owned by uid " + std::to_string(st.st_uid) + ": not read";
    } else if (!read_at(fd, 0, h)) {
        link.problem = "smaller than an arena header";
    } else {
        using shm::ArenaHeader;
        const auto magic = field<std::uint64_t>(h, offsetof(ArenaHeader, magic));
        const auto version = field<std::uint32_t>(h, offsetof(ArenaHeader, layout_version));
        const auto header_owner = field<Uuid>(h, offsetof(ArenaHeader, owner));
        const auto virtual_bytes = field<std::uint64_t>(h, offsetof(ArenaHeader, virtual_bytes));
        const auto carve_base = field<std::uint64_t>(h, offsetof(ArenaHeader, carve_base));
        const auto carve_header =
            field<std::uint32_t>(h, offsetof(ArenaHeader, carve_header_bytes));
        link.carves = field<std::uint64_t>(h, offsetof(ArenaHeader, carves));
        if (magic == 0) {
            link.problem = "header not initialised yet";
        } else if (magic != shm::kArenaMagic) {
            link.problem = "bad magic: not an arena";
        } else if (version != shm::kLayoutVersion) {
            link.problem = "layout version " + std::to_string(version) + ", expected " +
                           std::to_string(shm::kLayoutVersion);
        } else if (header_owner != owner || carve_base != shm::kArenaCarveBase ||
                   carve_header != shm::kCarveHeaderBytes ||
                   virtual_bytes > static_cast<std::uint64_t>(st.st_size) ||
                   virtual_bytes < carve_base) {
            link.problem = "inconsistent arena header";
        } else {
            walk_arena(fd, virtual_bytes, link);
        }
    }
    ::close(fd);
    return link;
}

std::string state_of(shm::LockState lock, bool creator_live) {
    if (lock == shm::LockState::held) {
        // The name is held. Its segment is the holder's only while the segment's creator
        // lock is held too (else: an actor starting, or a cleaner holding the name).
        return creator_live ? "live" : "starting";
    }
    // No name lock: dead, unless the segment's creator lock says its process lives (its actor
    // file was removed behind its back; `clean` keeps such an actor too).
    return creator_live ? "live" : "dead";
}

Row probe(const shm::Names& names, const std::string& name,
          const std::vector<std::string>& arenas) {
    Row row;
    row.ns = names.ns();
    row.name = name;
    std::optional<shm::LockState> lock;
    try {
        lock = shm::lock_state(names, name);
    } catch (const Error& e) {
        row.problems.push_back(std::string("actor file: ") + e.what());
    }
    bool creator_live = false;
    try {
        row.segment =
            shm::ActorSegment::try_open(names, name, shm::ActorSegmentOptions{0600, true});
        if (row.segment) creator_live = row.segment->segment().locked_elsewhere();
    } catch (const Error& e) {
        row.problems.push_back(std::string("segment: ") + e.what());
    }
    row.state = lock ? state_of(*lock, creator_live) : "unknown";
    if (lock && *lock != shm::LockState::held && creator_live) {
        row.problems.emplace_back(
            "its segment's creator lives but does not hold the actor file's lock (the file "
            "was removed?): its name is unprotected");
    }
    if (!row.segment) return row;

    const shm::ActorInfo& info = row.segment->info();
    if (info.name != name || info.ns != names.ns()) {
        row.problems.push_back("segment: its header names actor '" + info.name +
                               "' in namespace '" + info.ns + "'");
    }
    // relaxed (both): a diagnostic snapshot of the liveness thread's words; nothing read
    // afterwards depends on them, and a value a beat old is as good.
    const shm::Heartbeat& hb = row.segment->heartbeat();
    const std::uint64_t beats = hb.beats.load(std::memory_order::relaxed);
    const std::uint64_t last = hb.last_beat_mono_ns.load(std::memory_order::relaxed);
    row.beats = beats;
    const std::uint64_t now = mono_now_ns();
    if (beats != 0 && last != 0 && last <= now) row.beat_age_ns = now - last;

    const std::string owner = info.uuid.to_hex() + ".";
    row.links.emplace();
    for (const auto& a : arenas) {
        if (a.compare(0, owner.size(), owner) != 0) continue;
        row.links->push_back(read_link(names.prefix() + "link." + a, a.substr(owner.size()),
                                       info.uuid, names.euid()));
    }
    return row;
}

}  // namespace

std::uint64_t mono_now_ns() {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000u +
           static_cast<std::uint64_t>(ts.tv_nsec);
}

std::vector<Row> collect_rows(const std::vector<std::string>& namespaces, uid_t euid,
                              std::vector<std::string>& skipped) {
    std::vector<Row> rows;
    for (const auto& ns : namespaces) {
        const shm::Names names(ns, euid);
        // Same discovery as reclaim_stale: any actor file, segment or tmp segment names an actor.
        std::set<std::string> actors;
        for (auto& n : names.list("actor")) actors.insert(n);
        for (auto& n : names.list("seg")) actors.insert(n);
        for (auto& e : names.list("tmp")) actors.insert(e.substr(0, e.find('.')));
        const std::vector<std::string> arenas = names.list("link");
        for (const auto& name : actors) {
            try {
                shm::validate_component("actor name", name, shm::kMaxActorNameBytes);
            } catch (const InvalidName&) {
                skipped.push_back("skipped '" + names.prefix() + "*." + name +
                                  "': not a valid actor name");
                continue;
            }
            rows.push_back(probe(names, name, arenas));
        }
    }
    return rows;
}

Totals totals_of(const std::vector<LinkStats>& links) {
    Totals t;
    t.links = links.size();
    for (const auto& l : links) {
        for (const auto& r : l.rings) {
            const shm::RingCounters& c = r.counters;
            ++t.rings;
            t.sent += c.sent;
            t.received += c.received;
            if (c.received <= c.sent) t.in_flight += c.sent - c.received;
            t.fill_bytes += r.fill_bytes.value_or(0);
            t.full_events += c.full_events;
            t.overruns += c.overruns;
            t.spilled += c.spilled;
            t.spill_depth += c.spill_depth();
            t.spill_high_water = std::max(t.spill_high_water, c.spill_high_water);
        }
    }
    return t;
}

std::string json_u64(const std::optional<std::uint64_t>& v) {
    return v ? std::to_string(*v) : std::string("null");
}

std::string json_ring(const RingStats& r) {
    const shm::RingCounters& c = r.counters;
    std::string out = "{\"kind\":" + json_string(r.control ? "control" : "data");
    out += ",\"generation\":" + std::to_string(r.generation);
    out += ",\"data_bytes\":" + std::to_string(r.data_bytes);
    out += ",\"capacity_msgs\":" + std::to_string(r.capacity_msgs);
    out += ",\"fill_bytes\":" + json_u64(r.fill_bytes);
    out += ",\"sent\":" + std::to_string(c.sent);
    out += ",\"received\":" + std::to_string(c.received);
    out += ",\"payload_bytes\":" + std::to_string(c.payload_bytes);
    out += ",\"full_events\":" + std::to_string(c.full_events);
    out += ",\"overruns\":" + std::to_string(c.overruns);
    out += ",\"spilled\":" + std::to_string(c.spilled);
    out += ",\"spill_drained\":" + std::to_string(c.spill_drained);
    out += ",\"spill_discarded\":" + std::to_string(c.spill_discarded);
    out += ",\"spill_depth\":" + std::to_string(c.spill_depth());
    out += ",\"spill_high_water\":" + std::to_string(c.spill_high_water) + "}";
    return out;
}

}  // namespace shmctx::cli
