#include "shmctx/shm/fault.hpp"

#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <string>
#include <deque>
#include <vector>

namespace shmctx::shm {
namespace {

enum class Action { kill, stall, abort, corrupt };

struct FaultSpec {
    std::string name;
    Action action = Action::kill;
    unsigned long fire_on_hit = 0;  // 0 = every hit
    std::atomic<unsigned long> hits{0};
};

std::deque<FaultSpec>* parse_env() {
    auto* specs = new std::deque<FaultSpec>();  // leaked on purpose: usable during exit
    const char* env = std::getenv("SHMCTX_FAULT");
    if (env == nullptr) return specs;
    std::string all(env);
    std::size_t pos = 0;
    std::vector<std::string> items;
    while (pos <= all.size()) {
        const std::size_t comma = all.find(',', pos);
        items.push_back(all.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos));
        if (comma == std::string::npos) break;
        pos = comma + 1;
    }
    for (const auto& item : items) {
        const std::size_t eq = item.find('=');
        if (eq == std::string::npos || eq == 0) continue;
        std::string action = item.substr(eq + 1);
        unsigned long nth = 0;
        if (const std::size_t at = action.find('@'); at != std::string::npos) {
            nth = std::strtoul(action.c_str() + at + 1, nullptr, 10);
            action.resize(at);
        }
        auto& spec = specs->emplace_back();
        spec.name = item.substr(0, eq);
        spec.fire_on_hit = nth;
        if (action == "kill") {
            spec.action = Action::kill;
        } else if (action == "stall") {
            spec.action = Action::stall;
        } else if (action == "abort") {
            spec.action = Action::abort;
        } else if (action == "corrupt") {
            spec.action = Action::corrupt;
        } else {
            specs->pop_back();
        }
    }
    return specs;
}

}  // namespace

bool fault_point(const char* name) noexcept {
    static std::deque<FaultSpec>* const specs = parse_env();
    for (auto& spec : *specs) {
        if (spec.name != name) continue;
        // relaxed: a per-process hit counter; no other memory is published through it.
        const unsigned long hit = spec.hits.fetch_add(1, std::memory_order::relaxed) + 1;
        if (spec.fire_on_hit != 0 && hit != spec.fire_on_hit) return false;
        switch (spec.action) {
            case Action::kill:
                ::kill(::getpid(), SIGKILL);
                for (;;) ::pause();
            case Action::stall:
                for (;;) ::pause();
            case Action::abort:
                std::abort();
            case Action::corrupt:
                return true;
        }
    }
    return false;
}

}  // namespace shmctx::shm
