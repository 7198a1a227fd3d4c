// Names of shared-memory objects (DESIGN.md §2 "Names").
//
//   shmctx.<euid>.<ns>.actor.<name>              actor file: identity, OFD lock held for life
//   shmctx.<euid>.<ns>.seg.<name>                actor segment, published with link()
//   shmctx.<euid>.<ns>.tmp.<name>.<uuid>         actor segment while it is being built
//   shmctx.<euid>.<ns>.link.<owner>.<peer>       arena owned by <owner> for the link to <peer>
//
// Names are used without the leading slash (as they appear in /dev/shm); Segment adds it for
// shm_open. Thread-safety: value type; the free functions are thread-safe.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "shmctx/uuid.hpp"

namespace shmctx::shm {

/// Where POSIX shared memory objects appear as files on Linux.
inline constexpr std::string_view kShmDir = "/dev/shm";
inline constexpr std::size_t kMaxActorNameBytes = 64;
inline constexpr std::size_t kMaxNamespaceBytes = 48;

/// Throws InvalidName unless `value` is 1..max_bytes of [A-Za-z0-9_-]. `what` names the field.
void validate_component(std::string_view what, std::string_view value, std::size_t max_bytes);

/// The namespace to use: `requested` if not empty, else $SHMCTX_NS, else "default". Validated.
std::string resolve_namespace(std::string_view requested);

/// The object names of one (euid, namespace).
class Names {
public:
    explicit Names(std::string_view ns, uid_t euid);
    /// The current effective uid and resolve_namespace(ns).
    explicit Names(std::string_view ns = {});

    const std::string& ns() const noexcept { return ns_; }
    uid_t euid() const noexcept { return euid_; }
    /// "shmctx.<euid>.<ns>." — every object of this namespace starts with it.
    const std::string& prefix() const noexcept { return prefix_; }

    std::string actor_file(std::string_view actor) const;
    std::string actor_segment(std::string_view actor) const;
    std::string actor_segment_tmp(std::string_view actor, const Uuid& uuid) const;
    std::string arena(const Uuid& owner, const Uuid& peer) const;

    /// Names in /dev/shm that start with prefix() + kind + "." (kind: "actor", "seg", "tmp",
    /// "link"), returned as the part after that, sorted. A directory scan: no table to corrupt.
    std::vector<std::string> list(std::string_view kind) const;

private:
    std::string ns_;
    uid_t euid_;
    std::string prefix_;
};

/// "/dev/shm/<name>".
std::string shm_path(std::string_view name);

/// Inode of the /dev/shm object `name`; nullopt when there is none. An object created again
/// under the same name has another inode.
std::optional<ino_t> object_inode(std::string_view name);

}  // namespace shmctx::shm
