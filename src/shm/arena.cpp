// Arena / ArenaView (include/shmctx/shm/arena.hpp; protocol in docs/protocol.md §3).
#include "shmctx/shm/arena.hpp"

#include <algorithm>
#include <bit>
#include <new>
#include <stdexcept>
#include <utility>

#include "shmctx/errors.hpp"
#include "shmctx/shm/fault.hpp"
#include "shmctx/shm/names.hpp"

namespace shmctx::shm {
namespace {

constexpr std::uint64_t kPage = 4096;

std::size_t class_index(std::uint64_t class_bytes) noexcept {
    return static_cast<std::size_t>(std::countr_zero(class_bytes) -
                                    std::countr_zero(std::uint64_t{kMinCarveClass}));
}

std::string describe(const CarveDescriptor& d) {
    return "{offset " + std::to_string(d.offset) + ", bytes " + std::to_string(d.bytes) +
           ", generation " + std::to_string(d.generation) + "}";
}

}  // namespace

// ============================== Arena ==============================

std::size_t Arena::class_bytes(std::size_t bytes) noexcept {
    const std::size_t need = std::max<std::size_t>(kMinCarveClass, kCarveHeaderBytes + bytes);
    return std::bit_ceil(need);
}

Arena::Arena(Segment segment, std::uint64_t virtual_bytes)
    : segment_(std::move(segment)), virtual_bytes_(virtual_bytes) {}

Arena::Arena(Arena&& other) noexcept
    : segment_(std::move(other.segment_)),
      virtual_bytes_(other.virtual_bytes_),
      bump_(other.bump_),
      generation_(other.generation_),
      free_(std::move(other.free_)),
      live_(std::move(other.live_)),
      pending_(std::move(other.pending_)),
      owns_name_(std::exchange(other.owns_name_, false)) {}

Arena& Arena::operator=(Arena&& other) noexcept {
    if (this != &other) {
        if (owns_name_) Segment::remove(segment_.name());
        segment_ = std::move(other.segment_);
        virtual_bytes_ = other.virtual_bytes_;
        bump_ = other.bump_;
        generation_ = other.generation_;
        free_ = std::move(other.free_);
        live_ = std::move(other.live_);
        pending_ = std::move(other.pending_);
        owns_name_ = std::exchange(other.owns_name_, false);
    }
    return *this;
}

Arena::~Arena() {
    if (owns_name_) Segment::remove(segment_.name());
}

void Arena::unlink() noexcept {
    if (!std::exchange(owns_name_, false)) return;
    try {
        Segment::remove(segment_.name());
    } catch (...) {
        // Already gone (a cleaner, or a test): nothing to give back.
    }
}

Arena Arena::create(const Names& names, const Uuid& owner, const Uuid& peer, ArenaOptions options) {
    return create(names.arena(owner, peer), owner, peer, options);
}

Arena Arena::create(const std::string& name, const Uuid& owner, const Uuid& peer,
                    ArenaOptions options) {
    if (options.virtual_bytes % kPage != 0 || options.virtual_bytes < 2 * kPage) {
        throw std::invalid_argument("arena size " + std::to_string(options.virtual_bytes) +
                                    " is not a multiple of 4096 of at least 8192");
    }
    Segment segment =
        Segment::create(name, options.virtual_bytes, SegmentOptions{options.mode}, Backing::sparse);
    try {
        segment.allocate(0, kArenaCarveBase);
    } catch (...) {
        Segment::remove(name);
        throw;
    }
    // Only the creator constructs the header; openers launder a pointer to it.
    auto* header = new (segment.data()) ArenaHeader{};
    header->layout_version = kLayoutVersion;
    header->protocol_version = kProtocolVersion;
    header->owner = owner;
    header->peer = peer;
    header->virtual_bytes = options.virtual_bytes;
    header->carve_base = kArenaCarveBase;
    header->carve_header_bytes = kCarveHeaderBytes;
    header->min_class_bytes = kMinCarveClass;
    // [arena.init] pairs with [arena.init] in ArenaView::open: the fields above are visible to
    // an opener that sees the magic.
    header->magic.store(kArenaMagic, std::memory_order::release);
    Arena arena(std::move(segment), options.virtual_bytes);
    arena.free_.resize(static_cast<std::size_t>(std::countr_zero(
                           std::bit_ceil(static_cast<std::uint64_t>(options.virtual_bytes)))) +
                       1);
    return arena;
}

CarveHeader& Arena::carve_header(std::uint64_t slot) const noexcept {
    // A slot offset handed out by this allocator: inside the mapping, 4096-aligned.
    return *std::launder(reinterpret_cast<CarveHeader*>(segment_.data() + slot));  // NOLINT
}

Carve Arena::carve(std::size_t bytes) {
    if (bytes == 0) throw std::invalid_argument("arena carve of 0 bytes");
    if (bytes > virtual_bytes_) {
        throw ShmExhausted("arena '" + name() + "': carve of " + std::to_string(bytes) +
                           " bytes exceeds its virtual size of " + std::to_string(virtual_bytes_));
    }
    const std::uint64_t cls = class_bytes(bytes);
    const std::size_t index = class_index(cls);
    if (index >= free_.size()) free_.resize(index + 1);
    if (free_[index].empty() && !pending_.empty()) (void)collect(false);
    bool reused = false;
    std::uint64_t slot = 0;
    if (!free_[index].empty()) {
        slot = free_[index].back();
        free_[index].pop_back();
        reused = true;
    } else {
        if (cls > virtual_bytes_ - bump_) {
            std::size_t free_slots = 0;
            for (const auto& list : free_) free_slots += list.size();
            throw ShmExhausted("arena '" + name() + "': carve of " + std::to_string(bytes) +
                               " bytes (class " + std::to_string(cls) +
                               ") does not fit: " + std::to_string(bump_) + " of " +
                               std::to_string(virtual_bytes_) + " virtual bytes used, " +
                               std::to_string(pending_.size()) + " carves pending detach, " +
                               std::to_string(free_slots) + " free slots of other classes");
        }
        slot = bump_;
    }
    try {
        // Backs the header and the body now: a full /dev/shm is ShmExhausted here, never a
        // SIGBUS when a peer first touches the range.
        segment_.allocate(static_cast<std::size_t>(slot),
                          static_cast<std::size_t>(std::min<std::uint64_t>(
                              align_up(kCarveHeaderBytes + bytes, kPage), cls)));
    } catch (...) {
        if (reused) free_[index].push_back(slot);
        throw;
    }
    if (!reused) bump_ += cls;
    (void)SHMCTX_FAULT_POINT("arena.before_publish");
    const std::uint64_t generation = ++generation_;
    CarveHeader& header = carve_header(slot);
    // relaxed (these four): published by [arena.publish] below. The previous consumer of a
    // reused slot detached, so nobody legitimately reads them now.
    header.magic.store(kCarveMagic, std::memory_order::relaxed);
    header.bytes.store(bytes, std::memory_order::relaxed);
    header.class_bytes.store(cls, std::memory_order::relaxed);
    header.detached.store(0, std::memory_order::relaxed);
    // [arena.publish] pairs with [arena.publish] in ArenaView::validated_header. The descriptor
    // itself reaches the consumer through the control ring ([ring.publish]), which orders this
    // store before the consumer's attach as well.
    header.generation.store(generation, std::memory_order::release);
    auto* arena_header = std::launder(reinterpret_cast<ArenaHeader*>(segment_.data()));  // NOLINT
    // relaxed: diagnostics written only by the owner.
    arena_header->carves.store(arena_header->carves.load(std::memory_order::relaxed) + 1,
                               std::memory_order::relaxed);
    arena_header->last_generation.store(generation, std::memory_order::relaxed);
    live_.push_back(Live{slot, bytes, generation});
    (void)SHMCTX_FAULT_POINT("arena.after_carve");
    const CarveDescriptor descriptor{slot + kCarveHeaderBytes, bytes, generation};
    return Carve{descriptor, {segment_.data() + descriptor.offset, bytes}};
}

void Arena::release(const CarveDescriptor& descriptor) {
    const auto it = std::find_if(live_.begin(), live_.end(), [&](const Live& l) {
        return l.slot + kCarveHeaderBytes == descriptor.offset && l.bytes == descriptor.bytes &&
               l.generation == descriptor.generation;
    });
    if (it == live_.end()) {
        throw std::invalid_argument("arena '" + name() + "': release of " + describe(descriptor) +
                                    ", which is not a live carve");
    }
    pending_.push_back(*it);
    live_.erase(it);
}

std::size_t Arena::collect(bool peer_dead) {
    std::size_t moved = 0;
    auto keep = pending_.begin();
    for (auto it = pending_.begin(); it != pending_.end(); ++it) {
        // [arena.reclaim] pairs with [arena.detach] in ArenaView::detach: the consumer's last
        // accesses to the body happened before we hand the slot out again. A dead peer's
        // accesses are over (the kernel says so).
        const bool detached = peer_dead || carve_header(it->slot).detached.load(
                                               std::memory_order::acquire) == it->generation;
        if (detached) {
            const std::uint64_t cls = class_bytes(static_cast<std::size_t>(it->bytes));
            free_[class_index(cls)].push_back(it->slot);
            ++moved;
        } else {
            *keep++ = *it;
        }
    }
    pending_.erase(keep, pending_.end());
    return moved;
}

std::span<std::byte> Arena::body(const CarveDescriptor& descriptor) const {
    const bool live = std::any_of(live_.begin(), live_.end(), [&](const Live& l) {
        return l.slot + kCarveHeaderBytes == descriptor.offset && l.bytes == descriptor.bytes &&
               l.generation == descriptor.generation;
    });
    if (!live) {
        throw std::invalid_argument("arena '" + name() + "': " + describe(descriptor) +
                                    " is not a live carve");
    }
    return {segment_.data() + descriptor.offset, static_cast<std::size_t>(descriptor.bytes)};
}

const std::string& Arena::name() const noexcept { return segment_.name(); }
std::size_t Arena::virtual_bytes() const noexcept {
    return static_cast<std::size_t>(virtual_bytes_);
}

std::size_t Arena::free_count() const noexcept {
    std::size_t n = 0;
    for (const auto& list : free_) n += list.size();
    return n;
}

// ============================== ArenaView ==============================

ArenaView ArenaView::open(const Names& names, const Uuid& owner, const Uuid& peer) {
    return open(names.arena(owner, peer), owner, peer);
}

ArenaView ArenaView::open(const std::string& name, const Uuid& owner, const Uuid& peer) {
    return validated(Segment::open(name, {}, kArenaCarveBase), name, owner, peer);
}

std::optional<ArenaView> ArenaView::try_open(const Names& names, const Uuid& owner,
                                             const Uuid& peer) {
    const std::string name = names.arena(owner, peer);
    std::optional<Segment> segment;
    try {
        segment = Segment::try_open(name, {}, kArenaCarveBase);
    } catch (const LayoutError&) {
        return std::nullopt;  // shorter than its header: the owner is still sizing it
    }
    if (!segment) return std::nullopt;
    // Between the owner's create and its allocation of the header pages they are a hole, which
    // a read would allocate (SIGBUS on a full tmpfs, where that allocation fails and the owner
    // removes the object): read the header only once it holds data.
    if (!segment->holds_data(0)) return std::nullopt;
    const auto* header =
        std::launder(reinterpret_cast<const ArenaHeader*>(segment->data()));  // NOLINT
    // [arena.init] pairs with [arena.init] in Arena::create: zero until the header is built.
    if (header->magic.load(std::memory_order::acquire) == 0) return std::nullopt;
    return validated(std::move(*segment), name, owner, peer);
}

ArenaView ArenaView::validated(Segment segment, const std::string& name, const Uuid& owner,
                               const Uuid& peer) {
    const auto* header =
        std::launder(reinterpret_cast<const ArenaHeader*>(segment.data()));  // NOLINT
    // [arena.init] pairs with [arena.init] in Arena::create.
    const std::uint64_t magic = header->magic.load(std::memory_order::acquire);
    if (magic != kArenaMagic) {
        throw LayoutError("arena '" + name + "': magic " + std::to_string(magic) + ", expected " +
                          std::to_string(kArenaMagic) + " (not an arena, or not initialised)");
    }
    // Read once into locals; only these are used.
    const std::uint32_t layout = header->layout_version;
    const std::uint32_t protocol = header->protocol_version;
    const Uuid header_owner = header->owner;
    const Uuid header_peer = header->peer;
    const std::uint64_t virtual_bytes = header->virtual_bytes;
    const std::uint64_t carve_base = header->carve_base;
    const std::uint32_t carve_header = header->carve_header_bytes;
    const std::uint32_t min_class = header->min_class_bytes;
    if (layout != kLayoutVersion || protocol != kProtocolVersion) {
        throw LayoutError("arena '" + name + "': layout version " + std::to_string(layout) +
                          ", protocol version " + std::to_string(protocol) + "; ours are " +
                          std::to_string(kLayoutVersion) + " and " +
                          std::to_string(kProtocolVersion));
    }
    if (header_owner != owner || header_peer != peer) {
        throw ProtocolError("arena '" + name + "' is for owner " + header_owner.to_hex() +
                            " and peer " + header_peer.to_hex() + ", expected " + owner.to_hex() +
                            " and " + peer.to_hex());
    }
    if (virtual_bytes > segment.size() || virtual_bytes < 2 * kPage ||
        carve_base != kArenaCarveBase || carve_header != kCarveHeaderBytes ||
        min_class != kMinCarveClass) {
        throw ProtocolError(
            "arena '" + name + "': header sizes (virtual " + std::to_string(virtual_bytes) +
            " of a " + std::to_string(segment.size()) + "-byte object, carve base " +
            std::to_string(carve_base) + ", carve header " + std::to_string(carve_header) +
            ", min class " + std::to_string(min_class) + ") do not match this version");
    }
    return ArenaView(std::move(segment), virtual_bytes);
}

CarveHeader& ArenaView::validated_header(const CarveDescriptor& d) const {
    const std::uint64_t end = virtual_bytes_;
    if (d.bytes == 0 || d.offset < kArenaCarveBase + kCarveHeaderBytes || d.offset > end ||
        d.bytes > end - d.offset) {
        throw ProtocolError("arena '" + name() + "': descriptor " + describe(d) +
                            " lies outside the carve area [" + std::to_string(kArenaCarveBase) +
                            ", " + std::to_string(end) + ")");
    }
    const std::uint64_t slot = d.offset - kCarveHeaderBytes;
    if (slot % kPage != 0) {
        throw ProtocolError("arena '" + name() + "': descriptor " + describe(d) +
                            " is not at a slot boundary");
    }
    auto& header = *std::launder(reinterpret_cast<CarveHeader*>(segment_.data() + slot));  // NOLINT
    // [arena.publish] pairs with [arena.publish] in Arena::carve.
    const std::uint64_t generation = header.generation.load(std::memory_order::acquire);
    // relaxed (three): ordered by the acquire above; read once, validated below.
    const std::uint64_t magic = header.magic.load(std::memory_order::relaxed);
    const std::uint64_t bytes = header.bytes.load(std::memory_order::relaxed);
    const std::uint64_t cls = header.class_bytes.load(std::memory_order::relaxed);
    if (magic != kCarveMagic || bytes != d.bytes || cls < kCarveHeaderBytes + bytes ||
        cls > end - slot) {
        throw ProtocolError("arena '" + name() + "': carve header at " + std::to_string(slot) +
                            " (magic " + std::to_string(magic) + ", bytes " +
                            std::to_string(bytes) + ", class " + std::to_string(cls) +
                            ") does not match descriptor " + describe(d));
    }
    if (generation != d.generation) {
        throw ProtocolError("arena '" + name() + "': descriptor " + describe(d) +
                            " is stale: the carve's generation is " + std::to_string(generation));
    }
    return header;
}

std::span<std::byte> ArenaView::attach(const CarveDescriptor& descriptor) const {
    (void)validated_header(descriptor);
    return {segment_.data() + descriptor.offset, static_cast<std::size_t>(descriptor.bytes)};
}

bool ArenaView::carved(const CarveDescriptor& descriptor) const noexcept {
    const std::uint64_t end = virtual_bytes_;
    if (descriptor.offset < kArenaCarveBase + kCarveHeaderBytes || descriptor.offset > end ||
        (descriptor.offset - kCarveHeaderBytes) % kPage != 0) {
        return true;  // not a slot at all: let attach() say why
    }
    // The slot's page is a hole until its owner's carve has allocated it (Segment::holds_data):
    // a hole is "not carved yet". A page allocated but not yet written counts as a hole too,
    // which is right: its owner writes the header before it publishes the carve.
    if (!segment_.holds_data(descriptor.offset - kCarveHeaderBytes)) return false;
    const auto& header = *std::launder(reinterpret_cast<const CarveHeader*>(  // NOLINT
        segment_.data() + (descriptor.offset - kCarveHeaderBytes)));
    // [arena.publish] pairs with [arena.publish] in Arena::carve: zero until published.
    return header.generation.load(std::memory_order::acquire) != 0;
}

void ArenaView::detach(const CarveDescriptor& descriptor) const {
    CarveHeader& header = validated_header(descriptor);
    // [arena.detach] pairs with [arena.reclaim] in Arena::collect. The generation, not a flag:
    // a detach with a stale descriptor that raced a re-carve cannot free the new carve.
    header.detached.store(descriptor.generation, std::memory_order::release);
}

}  // namespace shmctx::shm
