#include "shmctx/shm/actor_segment.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <ctime>
#include <new>

#include "shmctx/errors.hpp"
#include "shmctx/shm/actor_counters.hpp"
#include "shmctx/shm/error_log.hpp"
#include "shmctx/shm/fault.hpp"

namespace shmctx::shm {
namespace {

constexpr std::uint64_t kWakeTableOffset = kActorRegionAlign;
constexpr std::uint64_t kWakeTableBytes = std::uint64_t{kActorWakeSlots} * sizeof(WakeSlot);
constexpr std::uint64_t kCountersOffset = kWakeTableOffset + kWakeTableBytes;
constexpr std::uint64_t kErrorLogOffset = kCountersOffset + kActorCountersBytes;
static_assert(kErrorLogOffset + kActorErrorLogBytes == ActorSegment::kTotalBytes);
static_assert(kWakeTableOffset % kActorRegionAlign == 0 &&
              kCountersOffset % kActorRegionAlign == 0 && kErrorLogOffset % kActorRegionAlign == 0);
static_assert(sizeof(ActorSegmentHead) <= kWakeTableOffset);

std::string hex64(std::uint64_t v) {
    char buf[19] = "0x";
    const auto r = std::to_chars(buf + 2, buf + sizeof buf, v, 16);
    return std::string(buf, r.ptr);
}

/// A NUL-padded fixed array as a string: at most N-1 bytes (the last byte must be NUL).
template <std::size_t N>
std::optional<std::string> fixed_string(const char (&field)[N]) {
    const void* nul = std::memchr(field, '\0', N);
    if (nul == nullptr) return std::nullopt;
    return std::string(field, static_cast<const char*>(nul));
}

template <std::size_t N>
void store_fixed(char (&field)[N], std::string_view value) {
    std::memset(field, 0, N);
    std::memcpy(field, value.data(), std::min(value.size(), N - 1));
}

std::int64_t unix_now_ns() {
    timespec ts{};
    ::clock_gettime(CLOCK_REALTIME, &ts);
    return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

void check_region(const ActorRegion& r, const char* which, std::uint64_t min_offset,
                  std::uint64_t total, const std::string& what) {
    const bool ok = r.offset >= min_offset && r.offset % kCacheLine == 0 && r.bytes > 0 &&
                    r.offset <= total && r.bytes <= total - r.offset;
    if (!ok) {
        throw LayoutError(what + ": " + which + " region [" + std::to_string(r.offset) + ", +" +
                          std::to_string(r.bytes) + ") is outside [" + std::to_string(min_offset) +
                          ", " + std::to_string(total) + ") or misaligned");
    }
}

}  // namespace

std::optional<std::uint64_t> process_start_time(pid_t pid) {
    if (pid <= 0) return std::nullopt;
    const std::string path = "/proc/" + std::to_string(pid) + "/stat";
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return std::nullopt;
    char buf[1024];
    std::size_t len = 0;
    for (;;) {
        const ssize_t n = ::read(fd, buf + len, sizeof buf - 1 - len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        len += static_cast<std::size_t>(n);
        if (len == sizeof buf - 1) break;
    }
    ::close(fd);
    const std::string_view text(buf, len);
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so fields are counted
    // from the last ')'. Field 3 (state) follows it; start time is field 22.
    const std::size_t close_paren = text.rfind(')');
    if (close_paren == std::string_view::npos) return std::nullopt;
    std::size_t pos = close_paren + 1;
    for (int field = 3; field <= 22; ++field) {
        while (pos < text.size() && text[pos] == ' ') ++pos;
        const std::size_t end = std::min(text.find(' ', pos), text.size());
        if (pos >= end) return std::nullopt;
        if (field == 22) {
            std::uint64_t value = 0;
            const auto r = std::from_chars(text.data() + pos, text.data() + end, value);
            if (r.ec != std::errc() || r.ptr != text.data() + end) return std::nullopt;
            return value;
        }
        pos = end;
    }
    return std::nullopt;
}

ActorInfo validate_actor_header(const ActorHeader& h, std::size_t mapping_size,
                                const std::string& what) {
    if (h.magic != kActorSegmentMagic) {
        throw LayoutError(what + ": bad magic " + hex64(h.magic) + ", expected " +
                          hex64(kActorSegmentMagic) + " (not an actor segment)");
    }
    if (h.layout_version != kLayoutVersion) {
        throw LayoutError(what + ": layout version " + std::to_string(h.layout_version) +
                          ", expected " + std::to_string(kLayoutVersion));
    }
    if (h.protocol_version != kProtocolVersion) {
        throw LayoutError(what + ": protocol version " + std::to_string(h.protocol_version) +
                          ", expected " + std::to_string(kProtocolVersion));
    }
    if (h.header_bytes != sizeof(ActorSegmentHead)) {
        throw LayoutError(what + ": header of " + std::to_string(h.header_bytes) +
                          " bytes, expected " + std::to_string(sizeof(ActorSegmentHead)));
    }
    if (h.total_bytes < sizeof(ActorSegmentHead) || h.total_bytes > mapping_size) {
        throw LayoutError(what + ": total_bytes " + std::to_string(h.total_bytes) +
                          " does not fit the mapping of " + std::to_string(mapping_size) +
                          " bytes");
    }
    ActorInfo info;
    info.total_bytes = static_cast<std::size_t>(h.total_bytes);
    check_region(h.wake_table, "wake table", sizeof(ActorSegmentHead), h.total_bytes, what);
    if (h.wake_table.bytes % sizeof(WakeSlot) != 0 ||
        h.wake_table.bytes / sizeof(WakeSlot) > UINT32_MAX) {
        throw LayoutError(what + ": wake table of " + std::to_string(h.wake_table.bytes) +
                          " bytes is not a whole number of slots");
    }
    check_region(h.counters, "counters", h.wake_table.offset + h.wake_table.bytes, h.total_bytes,
                 what);
    check_region(h.error_log, "error log", h.counters.offset + h.counters.bytes, h.total_bytes,
                 what);
    if (h.pid <= 0) throw LayoutError(what + ": invalid pid " + std::to_string(h.pid));
    auto name = fixed_string(h.name);
    auto ns = fixed_string(h.ns);
    if (!name || !ns) throw LayoutError(what + ": name or namespace is not NUL terminated");
    info.uuid = h.owner;
    info.pid = h.pid;
    info.start_time = h.start_time;
    info.created_unix_ns = h.created_unix_ns;
    info.name = std::move(*name);
    info.ns = std::move(*ns);
    info.wake_table = h.wake_table;
    info.counters = h.counters;
    info.error_log = h.error_log;
    return info;
}

ActorSegment::ActorSegment(Segment segment, std::string published_name, ActorInfo info)
    : segment_(std::move(segment)),
      published_name_(std::move(published_name)),
      info_(std::move(info)),
      // The creator placement-newed the head; openers launder a pointer derived from the
      // mapping (STYLE.md §2.5).
      head_(std::launder(reinterpret_cast<ActorSegmentHead*>(segment_.data()))) {}

ActorSegment ActorSegment::create(const Names& names, std::string_view name, const Uuid& uuid,
                                  ActorSegmentOptions options) {
    const std::string tmp = names.actor_segment_tmp(name, uuid);
    const std::string published = names.actor_segment(name);
    const auto start_time = process_start_time(::getpid());
    if (!start_time) throw SystemError("cannot read the start time of this process");
    const std::int64_t created_unix_ns = unix_now_ns();
    Segment seg =
        Segment::create(tmp, kTotalBytes, SegmentOptions{options.mode, false}, Backing::allocate);
    try {
        // The creator lock: held for as long as this actor's segment fd is open, i.e. until it
        // destroys its ActorSegment or its process dies. open_peer trusts a published segment
        // only while it is held, so the segment of a dead creator is never live, even while a
        // successor holds the name's actor-file lock (protocol.md §2 R5).
        if (!seg.try_lock_exclusive()) {
            throw SystemError("the fresh segment '" + tmp + "' is locked by someone else");
        }
        // The object is fresh (zero-filled by the kernel); construct every shared object.
        auto* head = new (seg.data()) ActorSegmentHead{};
        ActorHeader& h = head->header;
        h.magic = kActorSegmentMagic;
        h.layout_version = kLayoutVersion;
        h.protocol_version = kProtocolVersion;
        h.header_bytes = sizeof(ActorSegmentHead);
        h.flags = 0;
        h.total_bytes = kTotalBytes;
        h.owner = uuid;
        h.pid = ::getpid();
        h.start_time = *start_time;
        h.created_unix_ns = created_unix_ns;
        store_fixed(h.name, name);
        store_fixed(h.ns, names.ns());
        h.wake_table = {kWakeTableOffset, kWakeTableBytes};
        h.counters = {kCountersOffset, kActorCountersBytes};
        h.error_log = {kErrorLogOffset, kActorErrorLogBytes};
        for (std::uint32_t i = 0; i < kActorWakeSlots; ++i) {
            new (seg.data() + kWakeTableOffset + i * sizeof(WakeSlot)) WakeSlot{};
        }
        // The counters table and the error log: their headers, before publication like the
        // actor header ([actor.publish] orders them for every opener).
        init_actor_counters({seg.data() + kCountersOffset, kActorCountersBytes});
        init_error_log({seg.data() + kErrorLogOffset, kActorErrorLogBytes});
        if (SHMCTX_FAULT_POINT("actor.before_publish")) {
            // "corrupt": publish as an actor of the next layout version would (tests of the
            // version-mismatch error across processes).
            h.layout_version = kLayoutVersion + 1;
        }
        // [actor.publish] The header above is plain memory written before link(); a reader
        // can only map the object after finding the published name, i.e. after a syscall
        // (open) that the kernel orders after our link() syscall. So the reader sees the whole
        // build. The same page-cache pages back both mappings.
        const std::string from = shm_path(tmp);
        const std::string to = shm_path(published);
        if (::link(from.c_str(), to.c_str()) != 0) {
            const int err = errno;
            throw SystemError("link '" + from + "' -> '" + to + "': " + std::strerror(err));
        }
    } catch (...) {
        Segment::remove(tmp);
        throw;
    }
    Segment::remove(tmp);
    // The creator uses what it wrote, not what the (shared, writable) header says now.
    ActorInfo info;
    info.uuid = uuid;
    info.pid = ::getpid();
    info.start_time = *start_time;
    info.created_unix_ns = created_unix_ns;
    info.name = std::string(name);
    info.ns = names.ns();
    info.total_bytes = kTotalBytes;
    info.wake_table = {kWakeTableOffset, kWakeTableBytes};
    info.counters = {kCountersOffset, kActorCountersBytes};
    info.error_log = {kErrorLogOffset, kActorErrorLogBytes};
    return ActorSegment(std::move(seg), published, std::move(info));
}

std::optional<ActorSegment> ActorSegment::try_open(const Names& names, std::string_view name,
                                                   ActorSegmentOptions options) {
    const std::string published = names.actor_segment(name);
    auto seg = Segment::try_open(published, SegmentOptions{options.mode, options.read_only},
                                 sizeof(ActorSegmentHead));
    if (!seg) return std::nullopt;
    // Read the whole header once into a local; only the validated copy is used afterwards.
    ActorHeader copy;
    std::memcpy(&copy, seg->data(), sizeof copy);
    ActorInfo info = validate_actor_header(copy, seg->size(), "actor segment '" + published + "'");
    return ActorSegment(std::move(*seg), published, std::move(info));
}

}  // namespace shmctx::shm
