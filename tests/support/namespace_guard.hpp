// Test support: a private shmctx namespace per test that removes whatever the test left.
// Thread-safety: single thread.
#pragma once

#include <unistd.h>

#include <string>
#include <string_view>
#include <vector>

#include "process.hpp"
#include "shmctx/shm/names.hpp"

namespace shmctx::test {

/// Every object of the namespace, as /dev/shm names.
inline std::vector<std::string> all_objects(const shm::Names& names) {
    std::vector<std::string> out;
    for (const char* kind : {"actor", "seg", "tmp", "link"}) {
        for (auto& n : names.list(kind)) out.push_back(names.prefix() + kind + "." + n);
    }
    return out;
}

/// A unique namespace; the destructor removes anything a failed test left in it (the ctest
/// leak fixture would flag it otherwise).
struct NamespaceGuard {
    shm::Names names;
    explicit NamespaceGuard(std::string_view tag) : names(unique_ns(tag)) {}
    ~NamespaceGuard() {
        for (auto& object : all_objects(names)) ::unlink(shm::shm_path(object).c_str());
    }
    NamespaceGuard(const NamespaceGuard&) = delete;
    NamespaceGuard& operator=(const NamespaceGuard&) = delete;
};

}  // namespace shmctx::test
