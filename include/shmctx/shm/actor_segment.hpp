// The actor segment: one per actor, `shmctx.<euid>.<ns>.seg.<name>` (DESIGN.md §2 "Actor file =
// identity and liveness"). It says who the actor is (uuid, pid, process start time), where it
// is woken (doorbell, wake-slot table), how its peers announce new links (links_epoch), whether
// it still makes progress (heartbeat), and holds its counters and error log.
//
// It is built under the temporary name `tmp.<name>.<uuid>`, fully initialised, and only then
// published with link(2) under `seg.<name>` ([actor.publish]); nobody can open a half-built
// segment. The header is immutable after publication; an opener copies it once into a local,
// validates every field of the copy and uses only the copy.
//
//   offset   size     content                                       writer
//   0        256      ActorHeader (immutable after publish)          creator, before link()
//   256      128      doorbell: WakeSlot (+ pad)                     counter: any waker; tid: owner
//   384      128      links_epoch: atomic u64 (+ pad)                any peer (fetch_add)
//   512      128      heartbeat: beats u64, last_beat_mono_ns u64    owner's liveness thread
//   640      3456     zero (reserved, keeps the regions page aligned)
//   4096     131072   wake-slot table: 2048 WakeSlot                 counter: wakers; tid: owner
//   135168   65536    counters region (zeroed; layout defined by the counters table)
//   200704   65536    error-log region (zeroed; layout defined by the error log)
//   266240            total_bytes
//
// ActorHeader (offsets in bytes):
//   0 magic u64 "SHMCTXAS" | 8 layout_version u32 | 12 protocol_version u32 | 16 header_bytes
//   u32 (= 640, the fixed part) | 20 flags u32 (0) | 24 total_bytes u64 | 32 owner uuid [16] |
//   48 pid i32 | 52 reserved u32 | 56 start_time u64 (field 22 of /proc/<pid>/stat, clock ticks
//   since boot: with the pid it names one process, whatever pid reuse happens later) |
//   64 created_unix_ns i64 | 72 name char[72] | 144 ns char[56] (NUL padded) |
//   200 wake_table {offset u64, bytes u64} | 216 counters {..} | 232 error_log {..} | 248 pad.
//
// Thread-safety: ActorSegment is move-only; its accessors are thread-safe (they return views
// into shared memory whose own rules apply). process_start_time() is thread-safe.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>

#include "shmctx/shm/layout.hpp"
#include "shmctx/shm/names.hpp"
#include "shmctx/shm/segment.hpp"
#include "shmctx/shm/wake.hpp"
#include "shmctx/uuid.hpp"

namespace shmctx::shm {

/// "SHMCTXAS" read as a little-endian u64.
inline constexpr std::uint64_t kActorSegmentMagic = 0x5341'5854'434D'4853ULL;
inline constexpr std::uint32_t kActorWakeSlots = 2048;
inline constexpr std::size_t kActorCountersBytes = 64 * 1024;
inline constexpr std::size_t kActorErrorLogBytes = 64 * 1024;
/// Regions start on page boundaries (the counters region may be mapped separately one day).
inline constexpr std::size_t kActorRegionAlign = 4096;

/// A region of the actor segment: [offset, offset + bytes).
struct ActorRegion {
    std::uint64_t offset;
    std::uint64_t bytes;
};

/// Immutable after publication. Plain (non-atomic) fields: they are written before link() and
/// read after open() of the published name (see [actor.publish] in actor_segment.cpp).
struct ActorHeader {
    std::uint64_t magic;
    std::uint32_t layout_version;
    std::uint32_t protocol_version;
    std::uint32_t header_bytes;
    std::uint32_t flags;
    std::uint64_t total_bytes;
    Uuid owner;
    std::int32_t pid;
    std::uint32_t reserved0;
    std::uint64_t start_time;
    std::int64_t created_unix_ns;
    char name[72];
    char ns[56];
    ActorRegion wake_table;
    ActorRegion counters;
    ActorRegion error_log;
    std::byte reserved1[8];
};
static_assert(sizeof(ActorHeader) == 256);
static_assert(offsetof(ActorHeader, layout_version) == 8);
static_assert(offsetof(ActorHeader, header_bytes) == 16);
static_assert(offsetof(ActorHeader, total_bytes) == 24);
static_assert(offsetof(ActorHeader, owner) == 32);
static_assert(offsetof(ActorHeader, pid) == 48);
static_assert(offsetof(ActorHeader, start_time) == 56);
static_assert(offsetof(ActorHeader, created_unix_ns) == 64);
static_assert(offsetof(ActorHeader, name) == 72);
static_assert(offsetof(ActorHeader, ns) == 144);
static_assert(offsetof(ActorHeader, wake_table) == 200);
static_assert(offsetof(ActorHeader, counters) == 216);
static_assert(offsetof(ActorHeader, error_log) == 232);
static_assert(sizeof(ActorHeader::name) > kMaxActorNameBytes);
static_assert(sizeof(ActorHeader::ns) > kMaxNamespaceBytes);
static_assert(std::is_standard_layout_v<ActorHeader> && std::is_trivially_copyable_v<ActorHeader>);

/// Progress of the owner's liveness thread. Writer: the owner's liveness thread only; read by
/// peers' watchers (progress only) and observers (`shmctx ls`: heartbeat age).
struct Heartbeat {
    std::atomic<std::uint64_t> beats;  ///< +1 per beat
    std::atomic<std::uint64_t>
        last_beat_mono_ns;  ///< CLOCK_MONOTONIC (system-wide) of the last beat
};
static_assert(sizeof(Heartbeat) == 16);

/// The fixed part of the segment: the header and three hot lines, each written by different
/// processes, kFalseSharingRange apart.
struct ActorSegmentHead {
    ActorHeader header;
    struct alignas(kFalseSharingRange) DoorbellLine {
        WakeSlot slot;  ///< the control loop's wake counter; peers ring() it
    } doorbell;
    struct alignas(kFalseSharingRange) EpochLine {
        std::atomic<std::uint64_t> links_epoch;  ///< peers bump it after publishing an arena
    } epoch;
    struct alignas(kFalseSharingRange) HeartbeatLine {
        Heartbeat heartbeat;
    } heartbeat;
};
static_assert(offsetof(ActorSegmentHead, doorbell) == 256);
static_assert(offsetof(ActorSegmentHead, epoch) == 384);
static_assert(offsetof(ActorSegmentHead, heartbeat) == 512);
static_assert(sizeof(ActorSegmentHead) == 640);
static_assert(std::is_standard_layout_v<ActorSegmentHead> &&
              std::is_trivially_destructible_v<ActorSegmentHead>);

/// Validated copy of an actor segment's header: the only values an opener uses.
struct ActorInfo {
    Uuid uuid;
    pid_t pid = 0;
    std::uint64_t start_time = 0;
    std::int64_t created_unix_ns = 0;
    std::string name;
    std::string ns;
    std::size_t total_bytes = 0;
    ActorRegion wake_table{};
    ActorRegion counters{};
    ActorRegion error_log{};
};

/// Start time of process `pid` (field 22 of /proc/<pid>/stat, clock ticks since boot), or
/// nullopt if there is no such process. With the pid it identifies one process for good.
std::optional<std::uint64_t> process_start_time(pid_t pid);

struct ActorSegmentOptions {
    mode_t mode = 0600;      ///< applied with fchmod at creation (SegmentOptions::mode)
    bool read_only = false;  ///< open: map read-only (observers)
};

/// A mapped actor segment, created (and published) by its owner or opened by a peer/observer.
class ActorSegment {
public:
    /// Total size of a segment built by this version.
    static constexpr std::size_t kTotalBytes = kActorRegionAlign +
                                               kActorWakeSlots * sizeof(WakeSlot) +
                                               kActorCountersBytes + kActorErrorLogBytes;

    /// Builds the segment of actor `name` under Names::actor_segment_tmp(name, uuid), fills it
    /// (pid and start time of this process), then publishes it with link() under
    /// Names::actor_segment(name) and unlinks the temporary name. The caller must hold the
    /// actor file lock and have removed any stale `seg.<name>` (else SystemError: exists).
    /// Fault point "actor.before_publish" sits between building and link() (stall: a
    /// half-built actor; corrupt: publish with layout version kLayoutVersion + 1).
    static ActorSegment create(const Names& names, std::string_view name, const Uuid& uuid,
                               ActorSegmentOptions options = {});
    /// Opens the published segment of `name`; nullopt if none. Throws LayoutError (naming both
    /// versions, or the bad size/offset) if it is not a valid segment of this version.
    static std::optional<ActorSegment> try_open(const Names& names, std::string_view name,
                                                ActorSegmentOptions options = {});

    const ActorInfo& info() const noexcept { return info_; }
    /// The published name (`…seg.<name>`).
    const std::string& published_name() const noexcept { return published_name_; }
    const Segment& segment() const noexcept { return segment_; }

    WakeSlot& doorbell() const noexcept { return head_->doorbell.slot; }
    std::atomic<std::uint64_t>& links_epoch() const noexcept { return head_->epoch.links_epoch; }
    Heartbeat& heartbeat() const noexcept { return head_->heartbeat.heartbeat; }
    WakeTable wake_table() const noexcept { return WakeTable(region(info_.wake_table)); }
    std::span<std::byte> counters() const noexcept { return region(info_.counters); }
    std::span<std::byte> error_log() const noexcept { return region(info_.error_log); }
    /// The raw header as mapped (tests forge it; production code uses info()).
    ActorHeader& raw_header() const noexcept { return head_->header; }

private:
    ActorSegment(Segment segment, std::string published_name, ActorInfo info);
    std::span<std::byte> region(const ActorRegion& r) const noexcept {
        return {segment_.data() + r.offset, static_cast<std::size_t>(r.bytes)};
    }

    Segment segment_;
    std::string published_name_;
    ActorInfo info_;
    ActorSegmentHead* head_;
};

/// Validates a header copy against the mapping size; throws LayoutError naming `what`.
ActorInfo validate_actor_header(const ActorHeader& copy, std::size_t mapping_size,
                                const std::string& what);

}  // namespace shmctx::shm
