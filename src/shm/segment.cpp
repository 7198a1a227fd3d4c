#include "shmctx/shm/segment.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <boost/interprocess/exceptions.hpp>
#include <boost/interprocess/mapped_region.hpp>
#include <boost/interprocess/permissions.hpp>
#include <boost/interprocess/shared_memory_object.hpp>
#include <cerrno>
#include <cstring>

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
    if (err == ENOSPC || err == ENOMEM) {
        throw ShmExhausted(text + " (" + std::to_string(shm_free_bytes()) +
                           " bytes free in /dev/shm)");
    }
    throw SystemError(text);
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
    if (size == 0) throw SystemError("segment '" + name + "': size 0");
    auto impl = std::make_unique<Impl>();
    impl->name = name;
    try {
        impl->object = bip::shared_memory_object(bip::create_only, name.c_str(),
                                                 bip::read_write,
                                                 bip::permissions(static_cast<int>(options.mode)));
    } catch (const bip::interprocess_exception& e) {
        if (e.get_error_code() == bip::already_exists_error) return std::nullopt;
        throw_for_errno("shm_open(create)", name, e.get_native_error());
    }
    const int fd = native_fd(impl->object);
    try {
        ensure_cloexec(fd, name);
        // The umask masked the create mode: set exactly what was asked.
        if (::fchmod(fd, options.mode) != 0) throw_for_errno("fchmod", name, errno);
        impl->inode = checked_fstat(fd, name).st_ino;
        if (::ftruncate(fd, static_cast<off_t>(size)) != 0) throw_for_errno("ftruncate", name, errno);
        if (backing == Backing::allocate) {
            // posix_fallocate returns the error number; it does not set errno.
            const int rc = ::posix_fallocate(fd, 0, static_cast<off_t>(size));
            if (rc != 0) throw_for_errno("posix_fallocate(" + std::to_string(size) + " bytes)", name, rc);
        }
        impl->region = bip::mapped_region(impl->object, access_mode(options));
    } catch (const bip::interprocess_exception& e) {
        bip::shared_memory_object::remove(name.c_str());
        throw_for_errno("mmap", name, e.get_native_error());
    } catch (...) {
        bip::shared_memory_object::remove(name.c_str());
        throw;
    }
    return Segment(std::move(impl));
}

Segment Segment::create(const std::string& name, std::size_t size, SegmentOptions options,
                        Backing backing) {
    auto seg = try_create(name, size, options, backing);
    if (!seg) throw SystemError("shm_open(create) '" + name + "': already exists");
    return std::move(*seg);
}

std::optional<Segment> Segment::try_open(const std::string& name, SegmentOptions options,
                                         std::size_t min_size) {
    auto impl = std::make_unique<Impl>();
    impl->name = name;
    try {
        impl->object = bip::shared_memory_object(bip::open_only, name.c_str(),
                                                 access_mode(options));
    } catch (const bip::interprocess_exception& e) {
        if (e.get_error_code() == bip::not_found_error) return std::nullopt;
        throw_for_errno("shm_open", name, e.get_native_error());
    }
    const int fd = native_fd(impl->object);
    ensure_cloexec(fd, name);
    const struct stat st = checked_fstat(fd, name);
    impl->inode = st.st_ino;
    if (st.st_size < 0 || static_cast<std::size_t>(st.st_size) < min_size) {
        throw LayoutError("segment '" + name + "' has " + std::to_string(st.st_size) +
                          " bytes, fewer than the " + std::to_string(min_size) + " expected");
    }
    try {
        impl->region = bip::mapped_region(impl->object, access_mode(options));
    } catch (const bip::interprocess_exception& e) {
        throw_for_errno("mmap", name, e.get_native_error());
    }
    return Segment(std::move(impl));
}

Segment Segment::open(const std::string& name, SegmentOptions options, std::size_t min_size) {
    auto seg = try_open(name, options, min_size);
    if (!seg) throw SystemError("shm_open '" + name + "': no such segment");
    return std::move(*seg);
}

bool Segment::remove(const std::string& name) noexcept {
    return bip::shared_memory_object::remove(name.c_str());
}

void Segment::allocate(std::size_t offset, std::size_t bytes) const {
    if (SHMCTX_FAULT_POINT("segment.allocate")) {
        throw_for_errno("posix_fallocate(" + std::to_string(bytes) + " bytes at " +
                            std::to_string(offset) + ")",
                        impl_->name, ENOSPC);
    }
    const int rc = ::posix_fallocate(fd(), static_cast<off_t>(offset), static_cast<off_t>(bytes));
    if (rc != 0) {
        throw_for_errno("posix_fallocate(" + std::to_string(bytes) + " bytes at " +
                            std::to_string(offset) + ")",
                        impl_->name, rc);
    }
}

std::byte* Segment::data() const noexcept {
    return static_cast<std::byte*>(impl_->region.get_address());
}
std::size_t Segment::size() const noexcept { return impl_->region.get_size(); }
int Segment::fd() const noexcept { return native_fd(impl_->object); }
ino_t Segment::inode() const noexcept { return impl_->inode; }
const std::string& Segment::name() const noexcept { return impl_->name; }

}  // namespace shmctx::shm
