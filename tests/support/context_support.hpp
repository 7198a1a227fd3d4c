// Helpers shared by the actor runtime's tests (unit and multiproc): a per-test watchdog that
// turns a hang into a named failure, and small probes. Header-only; needs shmctx_core.
#pragma once

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "namespace_guard.hpp"
#include "shmctx/actor.hpp"
#include "shmctx/context.hpp"
#include "shmctx/shm/names.hpp"

namespace shmctx::test {

/// Aborts the process, naming the test, if the test is still running after `limit`. A hang in the
/// runtime then fails at once and says where, and never stalls the suite.
class Watchdog {
public:
    /// `on_hang` runs before the abort (e.g. removes the test's shared-memory objects).
    Watchdog(std::chrono::seconds limit, std::function<void()> on_hang) {
        const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
        name_ = info != nullptr ? std::string(info->test_suite_name()) + "." + info->name()
                                : std::string("<no test>");
        thread_ = std::thread([this, limit, on_hang = std::move(on_hang)] {
            std::unique_lock lock(m_);
            if (!cv_.wait_for(lock, limit, [&] { return done_; })) {
                std::fprintf(stderr, "watchdog: %s still running after %llds: hang, aborting\n",
                             name_.c_str(), static_cast<long long>(limit.count()));
                std::fflush(stderr);
                if (on_hang) on_hang();
                std::abort();
            }
        });
    }
    ~Watchdog() {
        {
            std::lock_guard lock(m_);
            done_ = true;
        }
        cv_.notify_one();
        thread_.join();
    }
    Watchdog(const Watchdog&) = delete;
    Watchdog& operator=(const Watchdog&) = delete;

private:
    std::string name_;
    std::mutex m_;
    std::condition_variable cv_;
    bool done_ = false;  // guarded by m_
    std::thread thread_;
};

/// Threads of this process that the library started (named "shmctx-..."). Sanitizer runtimes
/// start threads of their own (TSan's background thread appears lazily), so counting every task
/// would make the counts depend on the build.
inline std::size_t library_threads() {
    std::size_t n = 0;
    for (const auto& e : std::filesystem::directory_iterator("/proc/self/task")) {
        std::ifstream comm(e.path() / "comm");
        std::string name;
        std::getline(comm, name);
        if (name.rfind("shmctx-", 0) == 0) ++n;
    }
    return n;
}

/// The set of /dev/shm objects of a namespace.
inline std::set<std::string> objects_of(const shm::Names& names) {
    const auto all = all_objects(names);
    return {all.begin(), all.end()};
}

/// Bytes of /dev/shm actually allocated to the namespace's link arenas (they are sparse: only
/// carved rings take memory), so a ring that is never freed shows up here.
inline std::uint64_t link_bytes_allocated(const shm::Names& names) {
    std::uint64_t total = 0;
    for (const auto& n : names.list("link")) {
        struct stat st {};
        if (::stat(shm::shm_path(names.prefix() + "link." + n).c_str(), &st) == 0) {
            total += static_cast<std::uint64_t>(st.st_blocks) * 512;
        }
    }
    return total;
}

/// Runs `one(i)` for 10 warm-up contexts (the baseline then holds the link, its control rings
/// and the first threads), then for `n` more, one at a time between `parent` and `child`
/// (i counts on from the warm-up), and checks that nothing leaked: no context left registered,
/// at most 8 endpoint threads at any time and at the end, no library threads beyond the
/// baseline + 8, the one link still up, the same /dev/shm objects, and link-arena allocation
/// within 16 rings of `ring_bytes` of the baseline (freed ring slots are reused).
template <class One>
void expect_sequential_contexts_leak_nothing(Actor& parent, Actor& child, const shm::Names& names,
                                             std::size_t ring_bytes, std::int64_t n, One&& one) {
    constexpr std::int64_t kWarmup = 10;
    for (std::int64_t i = 1; i <= kWarmup; ++i) ASSERT_NO_FATAL_FAILURE(one(i));
    const auto none_open = [&] {
        return parent.open_contexts() == 0 && child.open_contexts() == 0;
    };
    ASSERT_TRUE(wait_until(none_open, std::chrono::seconds(20)));
    const std::set<std::string> files_before = objects_of(names);
    const std::size_t threads_before = library_threads();
    const std::uint64_t link_bytes_before = link_bytes_allocated(names);

    std::size_t max_endpoint_threads = 0;
    for (std::int64_t i = kWarmup + 1; i <= kWarmup + n; ++i) {
        ASSERT_NO_FATAL_FAILURE(one(i)) << "context " << i;
        max_endpoint_threads = std::max(max_endpoint_threads, child.endpoint_threads());
    }

    EXPECT_TRUE(wait_until(none_open, std::chrono::seconds(20)))
        << "contexts still registered: parent " << parent.open_contexts() << ", child "
        << child.open_contexts();
    // One context at a time needs one endpoint thread, plus a few while a finished endpoint
    // returns to the pool as the next Start arrives.
    EXPECT_LE(max_endpoint_threads, 8U);
    EXPECT_LE(child.endpoint_threads(), 8U);
    EXPECT_LE(library_threads(), threads_before + 8) << "before: " << threads_before;
    EXPECT_EQ(parent.links(), 1U);
    EXPECT_EQ(child.links(), 1U);
    EXPECT_EQ(objects_of(names), files_before) << "only the actors' own objects may exist";
    ::testing::Test::RecordProperty("contexts", std::to_string(n));
    ::testing::Test::RecordProperty("max_endpoint_threads", std::to_string(max_endpoint_threads));
    ::testing::Test::RecordProperty("link_bytes_before", std::to_string(link_bytes_before));
    ::testing::Test::RecordProperty("link_bytes_after",
                                    std::to_string(link_bytes_allocated(names)));
    EXPECT_LE(link_bytes_allocated(names), link_bytes_before + 16 * (ring_bytes + 8192))
        << "before: " << link_bytes_before;
}

/// A body for contexts whose body must never run (errors raised at entry).
auto body_must_not_run(std::atomic<bool>& ran) {
    return [&ran](Context&, const Payload&) { ran = true; };
}

/// Base fixture of the actor tests: its own namespace (`tag`, so parallel ctest never collides),
/// a watchdog of `limit` that removes the namespace's objects before it aborts, and a TearDown
/// check that the test's actors left nothing in /dev/shm (they remove their objects when
/// destroyed, and the tests destroy theirs in the body).
class ActorTest : public ::testing::Test {
protected:
    ActorTest(std::string_view tag, std::chrono::seconds limit)
        : guard_(tag), watchdog_(limit, [names = guard_.names] {
              for (const auto& o : all_objects(names)) ::unlink(shm::shm_path(o).c_str());
          }) {}
    ActorOptions options() const {
        ActorOptions o;
        o.ns = guard_.names.ns();
        return o;
    }
    const shm::Names& names() const { return guard_.names; }
    void TearDown() override {
        const std::vector<std::string> left = all_objects(guard_.names);
        std::string list;
        for (const std::string& o : left) list += "\n  " + o;
        EXPECT_TRUE(left.empty()) << "the actors left shared-memory objects in namespace "
                                  << guard_.names.ns() << ":" << list;
    }

private:
    NamespaceGuard guard_;  // removes leftovers after the check, for the ctest fixture
    Watchdog watchdog_;
};

/// A consumer doing `d` of work: the slowness a spill or overrun test is about (the behaviour
/// under test), never a way to wait for another thread; what the tests assert (order, no loss,
/// counters) holds whatever the scheduler makes of it.
inline void simulate_work(std::chrono::microseconds d) { std::this_thread::sleep_for(d); }

}  // namespace shmctx::test
