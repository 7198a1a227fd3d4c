// Shared by the supervision tests and their child actor (nursery_child): the error type the
// children raise, and process checks through /proc.
#pragma once

#include <dirent.h>
#include <sys/types.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "shmctx/errors.hpp"

namespace shmctx::test {

/// tractor's tests raise Python's AssertionError in children; ours raise this, registered under
/// that wire name on both sides so the parent's RemoteActorError names the original type.
class AssertionError : public std::logic_error {
public:
    using std::logic_error::logic_error;
};

inline void register_test_errors() {
    static const bool once = [] {
        register_error_type<AssertionError>("AssertionError");
        return true;
    }();
    (void)once;
}

/// The state letter of process `pid` from /proc/<pid>/stat ('R', 'S', 'Z', ...), or 0 when no
/// such process exists (reaped).
inline char process_state(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
    std::string stat;
    if (!std::getline(in, stat)) return 0;
    const auto close = stat.rfind(')');  // comm may hold spaces and parentheses
    if (close == std::string::npos || close + 2 >= stat.size()) return 0;
    return stat[close + 2];
}

/// The parent pid of `pid`, or -1 if it is gone.
inline pid_t parent_of(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
    std::string stat;
    if (!std::getline(in, stat)) return -1;
    const auto close = stat.rfind(')');
    if (close == std::string::npos) return -1;
    // ") S ppid ..."
    return static_cast<pid_t>(std::strtol(stat.c_str() + close + 4, nullptr, 10));
}

/// Every process whose parent is `pid` (zombies included), from a /proc scan.
inline std::vector<pid_t> children_of(pid_t pid) {
    std::vector<pid_t> out;
    DIR* d = ::opendir("/proc");
    if (d == nullptr) return out;
    while (const dirent* e = ::readdir(d)) {
        char* end = nullptr;
        const long p = std::strtol(e->d_name, &end, 10);
        if (end == e->d_name || *end != '\0' || p <= 0) continue;
        if (parent_of(static_cast<pid_t>(p)) == pid) out.push_back(static_cast<pid_t>(p));
    }
    ::closedir(d);
    return out;
}

/// Whether process `pid` still exists and is not a zombie.
inline bool process_alive(pid_t pid) {
    const char s = process_state(pid);
    return s != 0 && s != 'Z' && s != 'X';
}

}  // namespace shmctx::test
