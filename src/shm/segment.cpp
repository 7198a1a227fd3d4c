#include "shmctx/shm/segment.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <boost/interprocess/exceptions.hpp>
#include <boost/interprocess/mapped_region.hpp>
#include <boost/interprocess/permissions.hpp>
#include <boost/interprocess/shared_memory_object.hpp>
#include <cerrno>
#include <cstring>
#include <limits>
#include <stdexcept>

#include "shmctx/errors.hpp"
#include "shmctx/shm/fault.hpp"
#include "shmctx/shm/names.hpp"

namespace bip = boost::interprocess;

namespace shmctx::shm {

struct Segment::Impl {
    std::string name;
    bip::shared_memory_object object;
    bip::mapped_region region;
    ino_t inode = 0;
};

namespace {

std::string errno_text(int err) { return std::strerror(err); }

[[noreturn]] void throw_for_errno(const std::string& op, const std::string& name, int err) {
    const std::string text = op + " '" + name + "': " + errno_text(err);
    if (err == EACCES || err == EPERM) throw PermissionDenied(text);
    // tmpfs out of inodes (nr_inodes) refuses shm_open with ENOSPC.
    if (err == ENOSPC) {
        throw ShmExhausted(text + "; " + std::to_string(shm_free_bytes()) + " bytes free in " +
                           std::string(kShmDir));
    }
    throw SystemError(text);
}

/// posix_fallocate failures: no room is ShmExhausted with the figures a user needs to act on.
[[noreturn]] void throw_for_allocation(const std::string& name, std::size_t offset,
                                       std::size_t bytes, int err) {
    const std::string op = "posix_fallocate(" + std::to_string(bytes) + " bytes at offset " +
                           std::to_string(offset) + ")";
    if (err == ENOSPC || err == ENOMEM || err == EFBIG) {
        throw ShmExhausted(op + " '" + name + "': " + errno_text(err) + "; " +
                           std::to_string(shm_free_bytes()) + " bytes free in " +
                           std::string(kShmDir));
    }
    throw_for_errno(op, name, err);
}

/// Boost.Interprocess reports errno as the native error; a few of its own checks (size 0,
/// mode) carry none, and then its text is all there is.
[[noreturn]] void throw_for_boost(const std::string& op, const std::string& name,
                                  const bip::interprocess_exception& e) {
    const int err = e.get_native_error();
    if (err != 0) throw_for_errno(op, name, err);
    throw SystemError(op + " '" + name + "': " + e.what());
}

int native_fd(const bip::shared_memory_object& object) {
    return object.get_mapping_handle().handle;
}

void ensure_cloexec(int fd, const std::string& name) {
    // glibc's shm_open sets FD_CLOEXEC already; check rather than trust it.
    const int flags = ::fcntl(fd, F_GETFD);
    if (flags < 0) throw_for_errno("fcntl(F_GETFD)", name, errno);
    if ((flags & FD_CLOEXEC) == 0 && ::fcntl(fd, F_SETFD, flags | FD_CLOEXEC) != 0) {
        throw_for_errno("fcntl(F_SETFD)", name, errno);
    }
}

struct stat checked_fstat(int fd, const std::string& name) {
    struct stat st {};
    if (::fstat(fd, &st) != 0) throw_for_errno("fstat", name, errno);
    if (st.st_uid != ::geteuid()) {
        throw PermissionDenied("segment '" + name + "' is owned by uid " +
                               std::to_string(st.st_uid) + ", not by us (uid " +
                               std::to_string(::geteuid()) + "): refused");
    }
    return st;
}

/// posix_fallocate returns the error number (it does not set errno). tmpfs gives up with EINTR
/// when a signal is pending during a long allocation, and glibc does not retry: we do.
int fallocate_retrying(int fd, std::size_t offset, std::size_t bytes) noexcept {
    int rc = 0;
    do {
        rc = ::posix_fallocate(fd, static_cast<off_t>(offset), static_cast<off_t>(bytes));
    } while (rc == EINTR);
    return rc;
}

/// Removes `name` only if it still is the object behind `fd`: cleanup after a failed create must
/// never unlink an object somebody else created under the same name in the meantime.
void remove_if_ours(const std::string& name, int fd) noexcept {
    struct stat ours {};
    struct stat now {};
    if (::fstat(fd, &ours) != 0) return;
    if (::stat(shm_path(name).c_str(), &now) != 0) return;
    if (now.st_ino != ours.st_ino || now.st_dev != ours.st_dev) return;
    bip::shared_memory_object::remove(name.c_str());
}

bip::mode_t access_mode(const SegmentOptions& options) {
    return options.read_only ? bip::read_only : bip::read_write;
}

}  // namespace

std::size_t shm_free_bytes() noexcept {
    struct statvfs vfs {};
    if (::statvfs(std::string(kShmDir).c_str(), &vfs) != 0) return 0;
    return static_cast<std::size_t>(vfs.f_bavail) * vfs.f_frsize;
}

Segment::Segment(std::unique_ptr<Impl> impl) noexcept : impl_(std::move(impl)) {}
Segment::Segment(Segment&&) noexcept = default;
Segment& Segment::operator=(Segment&&) noexcept = default;
Segment::~Segment() = default;

std::optional<Segment> Segment::try_create(const std::string& name, std::size_t size,
                                           SegmentOptions options, Backing backing) {
    if (size == 0) throw std::invalid_argument("segment '" + name + "': size 0");
    if ((options.mode & ~static_cast<mode_t>(0777)) != 0) {
        throw std::invalid_argument("segment '" + name + "': mode has bits outside 0777");
    }
    if (size > static_cast<std::size_t>(std::numeric_limits<off_t>::max())) {
        throw ShmExhausted("segment '" + name + "': " + std::to_string(size) +
                           " bytes exceed the largest file size");
    }
    auto impl = std::make_unique<Impl>();
    impl->name = name;
    try {
        // The create mode is only a first narrowing (the umask applies to it); fchmod below sets
        // the exact bits. Until then the object is at most as open as requested, never more.
        impl->object = bip::shared_memory_object(bip::create_only, name.c_str(), bip::read_write,
                                                 bip::permissions(static_cast<int>(options.mode)));
    } catch (const bip::interprocess_exception& e) {
        if (e.get_error_code() == bip::already_exists_error) return std::nullopt;
        throw_for_boost("shm_open(create)", name, e);
    }
    const int fd = native_fd(impl->object);
    try {
        ensure_cloexec(fd, name);
        if (::fchmod(fd, options.mode) != 0) throw_for_errno("fchmod", name, errno);
        impl->inode = checked_fstat(fd, name).st_ino;
        int rc = 0;
        do {
            rc = ::ftruncate(fd, static_cast<off_t>(size));
        } while (rc != 0 && errno == EINTR);
        if (rc != 0) throw_for_errno("ftruncate(" + std::to_string(size) + ")", name, errno);
        if (backing == Backing::allocate) {
            if (const int err = fallocate_retrying(fd, 0, size); err != 0) {
                throw_for_allocation(name, 0, size, err);
            }
        }
        try {
            impl->region = bip::mapped_region(impl->object, access_mode(options));
        } catch (const bip::interprocess_exception& e) {
            throw_for_boost("mmap", name, e);
        }
    } catch (...) {
        // Leave nothing behind. A peer that opened the name meanwhile finds no valid header
        // (our caller writes it only after create returns) and keeps an unlinked mapping.
        remove_if_ours(name, fd);
        throw;
    }
    return Segment(std::move(impl));
}

Segment Segment::create(const std::string& name, std::size_t size, SegmentOptions options,
                        Backing backing) {
    auto seg = try_create(name, size, options, backing);
    if (!seg) throw SystemError("shm_open(create) '" + name + "': " + errno_text(EEXIST));
    return std::move(*seg);
}

std::optional<Segment> Segment::try_open(const std::string& name, SegmentOptions options,
                                         std::size_t min_size) {
    auto impl = std::make_unique<Impl>();
    impl->name = name;
    try {
        impl->object =
            bip::shared_memory_object(bip::open_only, name.c_str(), access_mode(options));
    } catch (const bip::interprocess_exception& e) {
        if (e.get_error_code() == bip::not_found_error) return std::nullopt;
        throw_for_boost("shm_open", name, e);
    }
    const int fd = native_fd(impl->object);
    ensure_cloexec(fd, name);
    // The owner check uses the fd we hold, so the name cannot be swapped under us.
    const struct stat st = checked_fstat(fd, name);
    impl->inode = st.st_ino;
    // An empty object cannot be mapped: it is one whose creator has not sized it yet.
    const std::size_t need = std::max<std::size_t>(min_size, 1);
    if (st.st_size <= 0 || static_cast<std::size_t>(st.st_size) < need) {
        throw LayoutError("segment '" + name + "' has " + std::to_string(st.st_size) +
                          " bytes, fewer than the " + std::to_string(need) + " expected");
    }
    try {
        // Map exactly the size validated above: without an explicit size Boost would fstat the
        // object again, and that second read is what the mapping would then trust.
        impl->region = bip::mapped_region(impl->object, access_mode(options), 0,
                                          static_cast<std::size_t>(st.st_size));
    } catch (const bip::interprocess_exception& e) {
        throw_for_boost("mmap", name, e);
    }
    return Segment(std::move(impl));
}

Segment Segment::open(const std::string& name, SegmentOptions options, std::size_t min_size) {
    auto seg = try_open(name, options, min_size);
    if (!seg) throw SystemError("shm_open '" + name + "': " + errno_text(ENOENT));
    return std::move(*seg);
}

bool Segment::remove(const std::string& name) noexcept {
    return bip::shared_memory_object::remove(name.c_str());
}

void Segment::allocate(std::size_t offset, std::size_t bytes) const {
    // posix_fallocate past the end would grow the object beyond every peer's mapping.
    if (offset > size() || bytes > size() - offset) {
        throw std::out_of_range("segment '" + impl_->name + "': allocate(" +
                                std::to_string(offset) + ", " + std::to_string(bytes) +
                                ") outside its " + std::to_string(size()) + " bytes");
    }
    if (bytes == 0) return;
    if (SHMCTX_FAULT_POINT("segment.allocate"))
        throw_for_allocation(impl_->name, offset, bytes, ENOSPC);
    if (const int err = fallocate_retrying(fd(), offset, bytes); err != 0) {
        throw_for_allocation(impl_->name, offset, bytes, err);
    }
}

std::byte* Segment::data() const noexcept {
    return static_cast<std::byte*>(impl_->region.get_address());
}
std::size_t Segment::size() const noexcept { return impl_->region.get_size(); }
int Segment::fd() const noexcept { return native_fd(impl_->object); }
ino_t Segment::inode() const noexcept { return impl_->inode; }

bool Segment::holds_data(std::size_t offset) const noexcept {
    const auto at = static_cast<off_t>(offset);
    return ::lseek(fd(), at, SEEK_DATA) == at;
}

bool Segment::try_lock_exclusive() const {
    struct flock fl {};
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = 0;
    fl.l_len = 0;  // the whole object
    if (::fcntl(fd(), F_OFD_SETLK, &fl) == 0) return true;
    if (errno == EAGAIN || errno == EACCES) return false;
    throw SystemError("fcntl(F_OFD_SETLK) on '" + impl_->name + "': " + std::strerror(errno));
}

bool Segment::locked_elsewhere() const {
    struct flock fl {};
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = 0;
    fl.l_len = 0;
    if (::fcntl(fd(), F_OFD_GETLK, &fl) != 0) {
        throw SystemError("fcntl(F_OFD_GETLK) on '" + impl_->name + "': " + std::strerror(errno));
    }
    return fl.l_type != F_UNLCK;
}
const std::string& Segment::name() const noexcept { return impl_->name; }

}  // namespace shmctx::shm
