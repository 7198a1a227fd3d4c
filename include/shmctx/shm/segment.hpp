// A POSIX shared-memory object and its mapping (DESIGN.md §2 "Segments").
//
// Created and mapped through Boost.Interprocess; the native fd is used for what Boost lacks:
// fchmod (the umask masks the create mode), posix_fallocate (a full /dev/shm becomes
// ShmExhausted at allocation instead of a SIGBUS on first touch), fstat (a segment not owned by
// our effective uid is refused with PermissionDenied) and OFD locks. Every fd is O_CLOEXEC.
// No code path shrinks a segment that a peer may have mapped.
//
// Thread-safety: move-only; const members are thread-safe, allocate() is thread-safe (the kernel
// serialises fallocate), moving or destroying needs exclusive access.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <memory>
#include <optional>
#include <span>
#include <string>

namespace shmctx::shm {

struct SegmentOptions {
    /// Permission bits of a created object, applied with fchmod after creation so the umask
    /// cannot widen or narrow them. Owner-only by default; 0660 shares with the group.
    mode_t mode = 0600;
    /// Map the object read-only (observers such as `shmctx stat`).
    bool read_only = false;
};

/// How create() backs the object with memory.
enum class Backing {
    allocate,  ///< posix_fallocate the whole size now: ShmExhausted here, never SIGBUS later
    sparse,    ///< only set the size; the owner allocate()s each range before anyone touches it
};

class Segment {
public:
    /// Creates `name` (exclusively: fails if it exists), sets its mode with fchmod, sizes and maps
    /// it. Throws ShmExhausted (no room, with the figures; the object is removed again),
    /// PermissionDenied, SystemError (also for an existing name); std::invalid_argument for
    /// size 0 or mode bits outside 0777. On any failure nothing is left under `name`.
    static Segment create(const std::string& name, std::size_t size, SegmentOptions = {},
                          Backing = Backing::allocate);
    /// As create(), but returns nullopt when the name already exists.
    static std::optional<Segment> try_create(const std::string& name, std::size_t size,
                                             SegmentOptions = {}, Backing = Backing::allocate);
    /// Opens and maps an existing object of at least max(min_size, 1) bytes (else LayoutError).
    /// Refuses one owned by another uid (PermissionDenied, checked on the open fd); returns
    /// nullopt if it does not exist.
    static std::optional<Segment> try_open(const std::string& name, SegmentOptions = {},
                                           std::size_t min_size = 1);
    /// As try_open(), throwing SystemError naming the object when it does not exist.
    static Segment open(const std::string& name, SegmentOptions = {}, std::size_t min_size = 1);
    /// shm_unlink; false if it did not exist. Mappings stay valid until unmapped.
    static bool remove(const std::string& name) noexcept;

    Segment(Segment&&) noexcept;
    Segment& operator=(Segment&&) noexcept;
    ~Segment();

    /// Backs [offset, offset + bytes) with memory (posix_fallocate, retried on EINTR).
    /// ShmExhausted with the figures in the text if /dev/shm is full; std::out_of_range if the
    /// range leaves the segment (that would grow the object past every mapping).
    void allocate(std::size_t offset, std::size_t bytes) const;

    std::byte* data() const noexcept;
    std::size_t size() const noexcept;
    std::span<std::byte> bytes() const noexcept { return {data(), size()}; }
    /// The object's fd (O_CLOEXEC), valid while this Segment lives. Used for OFD locks.
    int fd() const noexcept;
    /// Whether the page at `offset` (page-aligned, inside the object) holds data, asked of the
    /// kernel (lseek SEEK_DATA) without touching it: for a reader of a sparse object someone
    /// else allocates, since reading a hole of tmpfs allocates it, and on a full tmpfs faults
    /// with SIGBUS. A page allocated but never written counts as a hole; an error as a hole.
    /// Moves this Segment's file offset only (nothing reads or writes through it).
    bool holds_data(std::size_t offset) const noexcept;
    /// Inode number of the object, to detect that a name now refers to a new object.
    ino_t inode() const noexcept;
    /// Takes an exclusive OFD lock on the whole object through this Segment's fd (which must
    /// be writable). It lasts until this Segment is destroyed or the process exits (the kernel
    /// drops it when the fd closes, crash included). false if another open file description
    /// holds a lock on the object.
    bool try_lock_exclusive() const;
    /// True if an open file description other than this Segment's holds a lock on the object
    /// (F_OFD_GETLK; works on a read-only mapping too).
    bool locked_elsewhere() const;
    const std::string& name() const noexcept;

private:
    struct Impl;
    explicit Segment(std::unique_ptr<Impl> impl) noexcept;
    std::unique_ptr<Impl> impl_;
};

/// Free bytes in /dev/shm (statvfs), for error texts and tests.
std::size_t shm_free_bytes() noexcept;

}  // namespace shmctx::shm
