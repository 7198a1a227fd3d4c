#include "shmctx/shm/names.hpp"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <memory>

#include "shmctx/errors.hpp"

namespace shmctx::shm {

void validate_component(std::string_view what, std::string_view value, std::size_t max_bytes) {
    auto ok_char = [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '_' || c == '-';
    };
    if (value.empty() || value.size() > max_bytes ||
        !std::all_of(value.begin(), value.end(), ok_char)) {
        throw InvalidName(std::string(what) + " '" + std::string(value) + "' is invalid: use 1.." +
                          std::to_string(max_bytes) + " characters of [A-Za-z0-9_-]");
    }
}

std::string resolve_namespace(std::string_view requested) {
    std::string ns(requested);
    if (ns.empty()) {
        const char* env = std::getenv("SHMCTX_NS");
        ns = (env != nullptr && *env != '\0') ? env : "default";
    }
    validate_component("namespace", ns, kMaxNamespaceBytes);
    return ns;
}

Names::Names(std::string_view ns, uid_t euid)
    : ns_(resolve_namespace(ns)),
      euid_(euid),
      prefix_("shmctx." + std::to_string(euid) + "." + ns_ + ".") {}

Names::Names(std::string_view ns) : Names(ns, ::geteuid()) {}

std::string Names::actor_file(std::string_view actor) const {
    validate_component("actor name", actor, kMaxActorNameBytes);
    return prefix_ + "actor." + std::string(actor);
}

std::string Names::actor_segment(std::string_view actor) const {
    validate_component("actor name", actor, kMaxActorNameBytes);
    return prefix_ + "seg." + std::string(actor);
}

std::string Names::actor_segment_tmp(std::string_view actor, const Uuid& uuid) const {
    validate_component("actor name", actor, kMaxActorNameBytes);
    return prefix_ + "tmp." + std::string(actor) + "." + uuid.to_hex();
}

std::string Names::arena(const Uuid& owner, const Uuid& peer) const {
    return prefix_ + "link." + owner.to_hex() + "." + peer.to_hex();
}

std::vector<std::string> Names::list(std::string_view kind) const {
    std::vector<std::string> out;
    const std::string want = prefix_ + std::string(kind) + ".";
    std::unique_ptr<DIR, int (*)(DIR*)> dir(::opendir(std::string(kShmDir).c_str()), ::closedir);
    if (!dir) return out;
    while (const dirent* e = ::readdir(dir.get())) {
        std::string_view n(e->d_name);
        if (n.size() > want.size() && n.substr(0, want.size()) == want) {
            out.emplace_back(n.substr(want.size()));
        }
    }
    std::sort(out.begin(), out.end());
    return out;
}

std::string shm_path(std::string_view name) {
    return std::string(kShmDir) + "/" + std::string(name);
}

std::optional<ino_t> object_inode(std::string_view name) {
    struct stat st {};
    if (::stat(shm_path(name).c_str(), &st) != 0) return std::nullopt;
    return st.st_ino;
}

}  // namespace shmctx::shm
