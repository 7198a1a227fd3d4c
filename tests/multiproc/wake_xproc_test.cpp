// The wake protocol across real processes: this test process is side 0, the `shm_peer` helper
// side 1 of a segment laid out as in wake_pingpong.hpp. Every wait has a deadline, so a lost
// wake-up is a failure, never a hang.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include "process.hpp"
#include "shmctx/shm/fault.hpp"
#include "shmctx/shm/names.hpp"
#include "shmctx/shm/segment.hpp"
#include "shmctx/shm/wake.hpp"
#include "wake_pingpong.hpp"

namespace shmctx::shm {
namespace {

using namespace std::chrono_literals;
using test::PingPongBlock;

/// Creates the ping-pong segment in a namespace of its own and removes it on destruction, also
/// when the test fails half-way or killed its peer.
class PingPongSegment {
public:
    explicit PingPongSegment(std::string_view tag)
        : name_(Names(test::unique_ns(tag)).actor_segment("wake")),
          segment_(Segment::create(name_, sizeof(PingPongBlock))),
          block_(test::pingpong_block(segment_.data(), /*create=*/true)),
          table_(test::pingpong_table(block_)) {}
    ~PingPongSegment() { Segment::remove(name_); }
    PingPongSegment(const PingPongSegment&) = delete;
    PingPongSegment& operator=(const PingPongSegment&) = delete;

    const std::string& name() const { return name_; }
    PingPongBlock& block() { return *block_; }
    const WakeTable& table() const { return table_; }

private:
    std::string name_;
    Segment segment_;
    PingPongBlock* block_;
    WakeTable table_;
};

bool exited_zero(const std::optional<int>& st) {
    return st && WIFEXITED(*st) && WEXITSTATUS(*st) == 0;
}

TEST(WakeXproc, PingPongLosesNoWakeUpThroughTheFutexPath) {
    PingPongSegment seg("wxpp");
    const std::uint64_t rounds = test::scaled(1'000'000, 1000);
    constexpr std::uint32_t kSpinChecks = 4;  // small: nearly every wait reaches the futex
    constexpr auto kPerWait = 5s;
    auto child = test::spawn("shm_peer", {"pingpong", seg.name(), std::to_string(rounds),
                                          std::to_string(kSpinChecks), "5000"});
    ASSERT_TRUE(child.expect_line("ready")) << child.describe();

    const auto r = test::run_pingpong(seg.block(), seg.table(), 0, rounds,
                                      WaitPolicy{WaitMode::block, kSpinChecks}, kPerWait);
    EXPECT_TRUE(r.ok) << "side 0 wait ended " << test::to_string(r.failed_status) << " in round "
                      << r.failed_round << " of " << rounds
                      << " (a lost wake-up shows as timed_out)";
    const auto line = child.read_line(r.ok ? Deadline(30s) : Deadline(6s));
    const auto st = child.wait(10s);
    ASSERT_TRUE(exited_zero(st)) << "peer " << child.describe()
                                 << ", last line: " << line.value_or("<none>");
    ASSERT_TRUE(line && line->rfind("done ", 0) == 0) << line.value_or("<none>");

    unsigned long long peer_rounds = 0;
    unsigned long long peer_ns = 0;
    unsigned long long peer_woken = 0;
    ASSERT_EQ(std::sscanf(line->c_str(), "done rounds=%llu ns=%llu woken=%llu", &peer_rounds,
                          &peer_ns, &peer_woken),
              3)
        << *line;
    EXPECT_EQ(peer_rounds, rounds);
    // Both sides found the other advertised (blocked or about to block) many times: the futex
    // path was taken, not just the spin.
    EXPECT_GT(r.woken, 0U);
    EXPECT_GT(peer_woken, 0U);
    const double secs = std::chrono::duration<double>(r.elapsed).count();
    std::printf(
        "[ figures  ] %llu round trips in %.3f s = %.0f cycles/s; wakes through the "
        "futex: side0 %llu, side1 %llu (spin_checks=%u)\n",
        static_cast<unsigned long long>(rounds), secs, static_cast<double>(rounds) / secs,
        static_cast<unsigned long long>(r.woken), peer_woken, kSpinChecks);
}

TEST(WakeXproc, WaiterBlockedInOneProcessIsWokenByTheOther) {
    PingPongSegment seg("wxwake");
    auto child = test::spawn("shm_peer", {"wake-once", seg.name()});
    ASSERT_TRUE(child.expect_line("ready")) << child.describe();
    Waiter waiter(seg.table(), 0);
    const std::uint32_t counter_before = waiter.slot().counter.load(std::memory_order::relaxed);
    constexpr auto kDeadline = 5s;
    const auto start = Clock::now();
    const auto status = waiter.wait(
        seg.block().side[0].cell,
        [&] { return seg.block().side[1].count.load(std::memory_order::acquire) >= 1; },
        Deadline(kDeadline), {}, WaitPolicy{WaitMode::block, 0});
    const auto waited = Clock::now() - start;
    EXPECT_EQ(status, WaitStatus::ready)
        << test::to_string(status) << "; peer " << child.describe();
    EXPECT_LT(waited, kDeadline);
    EXPECT_EQ(seg.block().side[0].cell.waiter.load(std::memory_order::relaxed), 0U)
        << "the advertisement must be withdrawn when the wait ends";
    ASSERT_TRUE(child.expect_line("published")) << child.describe();
    const auto woke = child.read_line();
    EXPECT_EQ(woke.value_or("<none>"), "wake woken");
    EXPECT_NE(waiter.slot().counter.load(std::memory_order::relaxed), counter_before)
        << "the peer must have bumped our wake counter";
    const auto st = child.wait(10s);
    EXPECT_TRUE(exited_zero(st)) << child.describe();
}

TEST(WakeXproc, WaiterTimesOutCleanlyWhenTheWakerIsKilled) {
    PingPongSegment seg("wxkill");
    auto child = test::spawn("shm_peer", {"idle", seg.name()});
    ASSERT_TRUE(child.expect_line("ready")) << child.describe();
    WaitStatus status = WaitStatus::ready;
    Clock::duration waited{};
    constexpr auto kDeadline = 1s;
    std::thread waiter_thread([&] {
        Waiter waiter(seg.table(), 0);
        const auto start = Clock::now();
        status = waiter.wait(
            seg.block().side[0].cell,
            [&] { return seg.block().side[1].count.load(std::memory_order::acquire) >= 1; },
            Deadline(kDeadline), {}, WaitPolicy{WaitMode::block, 0});
        waited = Clock::now() - start;
    });
    // Kill the would-be waker while the waiter is blocked (advertised).
    const bool advertised = test::wait_until(
        [&] { return seg.block().side[0].cell.waiter.load(std::memory_order::relaxed) != 0; },
        Deadline(10s));
    child.kill(SIGKILL);
    const auto st = child.wait(10s);
    waiter_thread.join();
    ASSERT_TRUE(advertised);
    ASSERT_TRUE(st && WIFSIGNALED(*st) && WTERMSIG(*st) == SIGKILL) << child.describe();
    EXPECT_EQ(status, WaitStatus::timed_out) << test::to_string(status);
    EXPECT_GE(waited, kDeadline);
    EXPECT_LT(waited, kDeadline + 5s) << "the waiter must not hang past its deadline";
    EXPECT_EQ(seg.block().side[0].cell.waiter.load(std::memory_order::relaxed), 0U);
}

TEST(WakeXproc, ChangePublishedByAWakerThatDiesBeforeWakingIsSeenAtTheDeadline) {
    if (!fault_points_enabled()) GTEST_SKIP() << "needs -DSHMCTX_FAULT_POINTS=ON";
    PingPongSegment seg("wxdie");
    auto child =
        test::spawn("shm_peer", {"wake-once", seg.name()}, {"SHMCTX_FAULT=peer.before_wake=kill"});
    ASSERT_TRUE(child.expect_line("ready")) << child.describe();
    Waiter waiter(seg.table(), 0);
    constexpr auto kDeadline = 500ms;
    const auto status = waiter.wait(
        seg.block().side[0].cell,
        [&] { return seg.block().side[1].count.load(std::memory_order::acquire) >= 1; },
        Deadline(kDeadline), {}, WaitPolicy{WaitMode::block, 0});
    const auto st = child.wait(10s);
    ASSERT_TRUE(st && WIFSIGNALED(*st) && WTERMSIG(*st) == SIGKILL)
        << "the peer should die at peer.before_wake: " << child.describe();
    // The change was published but never signalled: the final re-check at the deadline sees
    // it, and a satisfied condition wins over the timeout.
    EXPECT_EQ(status, WaitStatus::ready) << test::to_string(status);
}

}  // namespace
}  // namespace shmctx::shm
