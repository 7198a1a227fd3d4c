// Test support: a private, tiny /dev/shm for one helper process, to fill it without touching the
// machine's. Header-only. Thread-safety: call once, before the process starts threads.
#pragma once

#include <sched.h>
#include <sys/mount.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace shmctx::test {

/// Moves this process into a mount namespace of its own and mounts a tmpfs of `size` ("4m") on
/// /dev/shm there. Returns "" on success, else why it could not (the caller reports a skip:
/// it needs CAP_SYS_ADMIN).
inline std::string mount_private_dev_shm(const std::string& size) {
    if (::unshare(CLONE_NEWNS) != 0)
        return std::string("unshare(CLONE_NEWNS): ") + std::strerror(errno);
    // Private first: without it the tmpfs mount could propagate to the host's (shared) tree.
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
        return std::string("mount(/, MS_REC|MS_PRIVATE): ") + std::strerror(errno);
    }
    const std::string data = "size=" + size + ",mode=1777";
    if (::mount("shmctx-test", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, data.c_str()) != 0) {
        return "mount(tmpfs " + data + " on /dev/shm): " + std::strerror(errno);
    }
    return {};
}

}  // namespace shmctx::test
