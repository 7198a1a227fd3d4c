#include "shmctx/shm/fault.hpp"

#include <sched.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <string>

namespace shmctx::shm {
namespace {

enum class Action { kill, stall, abort, corrupt, jitter };

struct FaultSpec {
    std::string name;
    Action action = Action::kill;
    unsigned long fire_on_hit = 0;  // 0 = every hit
    std::atomic<unsigned long> hits{0};
};

/// A malformed SHMCTX_FAULT must not silently disable the fault a test relies on.
[[noreturn]] void reject(const std::string& item, const char* why) {
    std::fprintf(stderr, "shmctx: SHMCTX_FAULT item '%s': %s\n", item.c_str(), why);
    std::abort();
}

std::deque<FaultSpec>* parse_env() {
    auto* specs = new std::deque<FaultSpec>();  // leaked on purpose: usable during exit
    const char* env = std::getenv("SHMCTX_FAULT");
    if (env == nullptr) return specs;
    const std::string all(env);
    std::size_t pos = 0;
    while (pos <= all.size()) {
        const std::size_t comma = std::min(all.find(',', pos), all.size());
        const std::string item = all.substr(pos, comma - pos);
        pos = comma + 1;
        if (item.empty()) continue;  // "a=kill," and ",," are harmless
        const std::size_t eq = item.find('=');
        if (eq == std::string::npos || eq == 0) reject(item, "expected <point>=<action>[@N]");
        std::string action = item.substr(eq + 1);
        unsigned long nth = 0;
        if (const std::size_t at = action.find('@'); at != std::string::npos) {
            const std::string digits = action.substr(at + 1);
            if (digits.empty() || digits.size() > 9 ||
                digits.find_first_not_of("0123456789") != std::string::npos) {
                reject(item, "@N needs a decimal hit number");
            }
            nth = std::stoul(digits);
            if (nth == 0) reject(item, "hits count from 1");
            action.resize(at);
        }
        Action parsed = Action::kill;
        if (action == "kill") {
            parsed = Action::kill;
        } else if (action == "stall") {
            parsed = Action::stall;
        } else if (action == "abort") {
            parsed = Action::abort;
        } else if (action == "corrupt") {
            parsed = Action::corrupt;
        } else if (action == "jitter") {
            parsed = Action::jitter;
        } else {
            reject(item, "action must be kill, stall, abort, corrupt or jitter");
        }
        auto& spec = specs->emplace_back();
        spec.name = item.substr(0, eq);
        spec.action = parsed;
        spec.fire_on_hit = nth;
    }
    return specs;
}

/// A random pause of 0-50 us: a yield (about a quarter of the hits) or a sleep. Widens the race
/// windows around a fault point for TSan and stress schedules; never changes what the code does.
void jitter() noexcept {
    // Per-thread xorshift64 seeded from the thread's stack address and the clock: no shared
    // state, so the jitter adds no synchronisation that could hide a race.
    thread_local std::uint64_t state = [] {
        struct timespec now {};
        ::clock_gettime(CLOCK_MONOTONIC, &now);
        int local = 0;
        const auto seed =
            static_cast<std::uint64_t>(now.tv_nsec) ^
            (static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(&local)) << 16);
        return seed | 1;
    }();
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    const std::uint64_t r = state % 200;  // 0-149: sleep 0-50 us; 150-199: yield
    if (r >= 150) {
        ::sched_yield();
        return;
    }
    struct timespec pause {
        0, static_cast<long>((r % 50) * 1000 + (state >> 40) % 1000)
    };
    ::nanosleep(&pause, nullptr);
}

std::deque<FaultSpec>& specs_of_process() {
    static std::deque<FaultSpec>* const specs = parse_env();
    return *specs;
}

}  // namespace

bool fault_point_armed(const char* name) noexcept {
    const std::deque<FaultSpec>& specs = specs_of_process();
    return std::any_of(specs.begin(), specs.end(),
                       [&](const FaultSpec& spec) { return spec.name == name; });
}

bool fault_point(const char* name) noexcept {
    std::deque<FaultSpec>* const specs = &specs_of_process();
    // Every item for this point counts every hit (so "p=corrupt@1,p=kill@2" means hits 1 and 2
    // of p); the first item that fires on this hit decides.
    const FaultSpec* fires = nullptr;
    for (auto& spec : *specs) {
        if (spec.name != name) continue;
        // relaxed: a per-process hit counter; no other memory is published through it.
        const unsigned long hit = spec.hits.fetch_add(1, std::memory_order::relaxed) + 1;
        if (fires == nullptr && (spec.fire_on_hit == 0 || hit == spec.fire_on_hit)) fires = &spec;
    }
    if (fires == nullptr) return false;
    switch (fires->action) {
        case Action::kill:
            ::kill(::getpid(), SIGKILL);
            for (;;) ::pause();
        case Action::stall:
            for (;;) ::pause();
        case Action::abort:
            std::abort();
        case Action::corrupt:
            return true;
        case Action::jitter:
            jitter();
            return false;
    }
    return false;
}

}  // namespace shmctx::shm
