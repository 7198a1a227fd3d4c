// Producer-owned sparse arenas (DESIGN.md §2 "Arenas"; protocol in docs/protocol.md).
//
// Per link and direction the producer owns one arena `shmctx.<euid>.<ns>.link.<owner>.<peer>`:
// a large sparse shared-memory object (default 256 MiB virtual) mapped once per side. The owner
// carves ranges from it (rings, first its outbound control ring); each carved range is
// posix_fallocate'd at carve time, so a full /dev/shm is ShmExhausted there and never a SIGBUS
// later. Allocator state (bump pointer, free lists per size class, pending frees) is private to
// the owner process; the only shared allocator words are the per-carve headers.
//
// Arena layout (offsets in bytes):
//
//   0      +-------------------------------+
//          | ArenaHeader (128)             |  owner, once; magic stored last ([arena.init])
//   128    | (rest of the header page)     |
//   4096   +-------------------------------+  carve_base
//          | slot: CarveHeader (128)       |  owner at carve, `detached` by the consumer
//          |       body (`bytes`)          |  what the carve is for (e.g. a ring)
//          |       unused up to the class  |
//          +-------------------------------+  slots are 4096-aligned powers of two
//          | slot ...                      |
//          +-------------------------------+  virtual_bytes
//
// A carve of `bytes` takes a slot of class bit_ceil(max(4096, 128 + bytes)); only the first
// align_up(128 + bytes, 4096) bytes of the slot are fallocate'd. The body starts 128 bytes into
// the slot, so it is 128-byte aligned.
//
// Lifecycle of a slot: carve (generation = ++arena generation, published with release) →
// descriptor {offset, bytes, generation} sent to the consumer (control ring) → consumer
// attach (checks bounds and generation) ... detach (stores `detached` = generation, release) →
// owner release (pending) → owner collect (sees detached with acquire, or the peer is dead) → free
// list of its class → a later carve of that class reuses it with a new generation, so a stale
// descriptor is rejected at attach.
//
// The `detached` word lives only in the CarveHeader (not in the ring's consumer block): the
// reuse rule belongs to the arena, whatever the carve holds.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "shmctx/shm/layout.hpp"
#include "shmctx/shm/segment.hpp"
#include "shmctx/uuid.hpp"

namespace shmctx::shm {

class Names;

inline constexpr std::uint64_t kArenaMagic = 0x314e455241584d53ULL;  // "SMXAREN1" little-endian
inline constexpr std::uint64_t kCarveMagic = 0x3156524143584d53ULL;  // "SMXCARV1" little-endian
inline constexpr std::size_t kArenaCarveBase = 4096;
inline constexpr std::size_t kMinCarveClass = 4096;
inline constexpr std::size_t kCarveHeaderBytes = 128;
inline constexpr std::size_t kDefaultArenaBytes = std::size_t{256} << 20;

/// At offset 0 of an arena. Writer: the owner, once, magic last; `carves` and `last_generation`
/// are diagnostics the owner updates at each carve.
struct ArenaHeader {
    std::atomic<std::uint64_t> magic;  ///< kArenaMagic ([arena.init])
    std::uint32_t layout_version;
    std::uint32_t protocol_version;
    Uuid owner;                                  ///< the producer
    Uuid peer;                                   ///< the consumer
    std::uint64_t virtual_bytes;                 ///< size of the object
    std::uint64_t carve_base;                    ///< kArenaCarveBase
    std::uint32_t carve_header_bytes;            ///< kCarveHeaderBytes
    std::uint32_t min_class_bytes;               ///< kMinCarveClass
    std::atomic<std::uint64_t> carves;           ///< carves made (diagnostic)
    std::atomic<std::uint64_t> last_generation;  ///< generation of the latest carve (diagnostic)
    std::byte reserved[kFalseSharingRange - 88];
};
static_assert(sizeof(ArenaHeader) == kFalseSharingRange);
static_assert(offsetof(ArenaHeader, owner) == 16 && offsetof(ArenaHeader, peer) == 32 &&
              offsetof(ArenaHeader, virtual_bytes) == 48 &&
              offsetof(ArenaHeader, carve_base) == 56 &&
              offsetof(ArenaHeader, carve_header_bytes) == 64 &&
              offsetof(ArenaHeader, carves) == 72);
static_assert(std::is_standard_layout_v<ArenaHeader> &&
              std::is_trivially_destructible_v<ArenaHeader>);

/// At the start of each slot. Writer: the owner at carve (generation last, [arena.publish]),
/// except `detached`, which the consumer sets ([arena.detach]).
struct CarveHeader {
    std::atomic<std::uint64_t> generation;   ///< this carve's generation ([arena.publish])
    std::atomic<std::uint64_t> magic;        ///< kCarveMagic
    std::atomic<std::uint64_t> bytes;        ///< body bytes
    std::atomic<std::uint64_t> class_bytes;  ///< slot size
    std::byte owner_pad[kCacheLine - 32];
    /// The generation the consumer detached from (0: attached or not yet seen). Storing the
    /// generation, not a flag, means a late or repeated detach with an old descriptor can never
    /// mark a newer carve of the same slot as free.
    std::atomic<std::uint64_t> detached;
    std::byte consumer_pad[kCacheLine - 8];
};
static_assert(sizeof(CarveHeader) == kCarveHeaderBytes);
static_assert(offsetof(CarveHeader, detached) == kCacheLine);
static_assert(std::is_standard_layout_v<CarveHeader> &&
              std::is_trivially_destructible_v<CarveHeader>);

/// What travels in the stream-open control message. `offset` is the body's offset.
struct CarveDescriptor {
    std::uint64_t offset = 0;
    std::uint64_t bytes = 0;
    std::uint64_t generation = 0;
    friend bool operator==(const CarveDescriptor&, const CarveDescriptor&) = default;
};

struct Carve {
    CarveDescriptor descriptor;
    std::span<std::byte> body;  ///< in the owner's mapping
};

struct ArenaOptions {
    std::size_t virtual_bytes = kDefaultArenaBytes;
    mode_t mode = 0600;
};

/// The owner (producer) side. Unlinks its name when destroyed (mappings stay valid).
/// Thread-safety: single thread (the link's owner serialises carve/release/collect).
class Arena {
public:
    /// Creates names.arena(owner, peer). Throws ShmExhausted, PermissionDenied, SystemError
    /// (name exists), std::invalid_argument (virtual size not a multiple of 4096 or < 8192).
    static Arena create(const Names& names, const Uuid& owner, const Uuid& peer,
                        ArenaOptions options = {});
    /// As above with an explicit object name (tests, tools).
    static Arena create(const std::string& name, const Uuid& owner, const Uuid& peer,
                        ArenaOptions options = {});

    Arena(Arena&&) noexcept;
    Arena& operator=(Arena&&) noexcept;
    ~Arena();

    /// Carves `bytes` (> 0): reuses a free slot of the class (collecting detached ones first),
    /// else bumps. Fallocates the range; ShmExhausted (with the figures) when the arena's
    /// virtual size or /dev/shm has no room. Fault points arena.before_publish, arena.after_carve.
    Carve carve(std::size_t bytes);
    /// The owner is done with the carve (wrote its last record): reusable once detached.
    /// Throws std::invalid_argument for a descriptor this arena did not hand out (or twice).
    void release(const CarveDescriptor& descriptor);
    /// Moves released carves whose consumer set `detached` (or all, when the peer is dead) to
    /// the free lists; returns how many.
    std::size_t collect(bool peer_dead = false);

    /// The body of a live carve in our mapping.
    std::span<std::byte> body(const CarveDescriptor& descriptor) const;

    const std::string& name() const noexcept;
    /// Removes the arena's name now (the mapping stays valid until destruction): for an owner
    /// whose peer is gone, so nothing is left in /dev/shm while handles still hold the arena.
    void unlink() noexcept;
    std::size_t virtual_bytes() const noexcept;
    std::size_t pending_count() const noexcept { return pending_.size(); }
    std::size_t free_count() const noexcept;
    /// Bytes of the virtual size used by slots so far (bump pointer).
    std::size_t used_bytes() const noexcept { return static_cast<std::size_t>(bump_); }
    const Segment& segment() const noexcept { return segment_; }

    /// Size class (slot bytes) of a carve of `bytes`.
    static std::size_t class_bytes(std::size_t bytes) noexcept;

private:
    struct Live {
        std::uint64_t slot;
        std::uint64_t bytes;
        std::uint64_t generation;
    };
    Arena(Segment segment, std::uint64_t virtual_bytes);
    CarveHeader& carve_header(std::uint64_t slot) const noexcept;

    Segment segment_;
    std::uint64_t virtual_bytes_;
    std::uint64_t bump_ = kArenaCarveBase;
    std::uint64_t generation_ = 0;
    std::vector<std::vector<std::uint64_t>> free_;  // slot offsets per class (log2 - 12)
    std::vector<Live> live_;                        // carved, not released
    std::vector<Live> pending_;                     // released, waiting for `detached`
    bool owns_name_ = true;                         // false once moved from
};

/// The consumer side: a mapping of the peer's arena. Thread-safety: attach/detach are
/// thread-safe (they only read the mapping, and detach stores one word).
class ArenaView {
public:
    /// Opens names.arena(owner, peer) and validates its header: magic, layout and protocol
    /// versions (LayoutError naming both), owner and peer uuids and sizes (ProtocolError).
    static ArenaView open(const Names& names, const Uuid& owner, const Uuid& peer);
    static ArenaView open(const std::string& name, const Uuid& owner, const Uuid& peer);
    /// As open(), but nullopt while the arena does not exist or its owner has not finished
    /// its header (magic still zero): for a peer that polls for an arena being created.
    static std::optional<ArenaView> try_open(const Names& names, const Uuid& owner,
                                             const Uuid& peer);

    /// The body of the carve `descriptor` names, after checking its bounds, alignment and the
    /// generation in the carve header (ProtocolError on any mismatch).
    std::span<std::byte> attach(const CarveDescriptor& descriptor) const;
    /// False while the slot `descriptor` names has never been carved (its generation is still
    /// zero): for a peer that attaches a carve it expects, such as a link's control ring,
    /// before the owner has finished it. True otherwise (attach() then validates). Never
    /// touches a page that is still a hole (lseek SEEK_DATA first): reading one would allocate
    /// it, and on a full tmpfs fault with SIGBUS.
    bool carved(const CarveDescriptor& descriptor) const noexcept;
    /// Stores `detached` in the carve header ([arena.detach], release): after this the
    /// consumer must not touch the body. Same checks as attach.
    void detach(const CarveDescriptor& descriptor) const;

    const std::string& name() const noexcept { return segment_.name(); }
    std::size_t virtual_bytes() const noexcept { return static_cast<std::size_t>(virtual_bytes_); }
    /// Inode of the mapped object: a later object under the same name is another arena.
    ino_t inode() const noexcept { return segment_.inode(); }

private:
    ArenaView(Segment segment, std::uint64_t virtual_bytes) noexcept
        : segment_(std::move(segment)), virtual_bytes_(virtual_bytes) {}
    CarveHeader& validated_header(const CarveDescriptor& descriptor) const;
    static ArenaView validated(Segment segment, const std::string& name, const Uuid& owner,
                               const Uuid& peer);

    Segment segment_;
    std::uint64_t virtual_bytes_;
};

}  // namespace shmctx::shm
