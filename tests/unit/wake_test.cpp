// The wake protocol inside one process: futex primitives, Waiter outcomes, the busy_spin rules,
// the wake table's bounds, the slot allocator, and a two-thread ping-pong through the futex
// path. Every wait has a deadline: a lost wake-up shows as a timeout, never as a hang.
#include "shmctx/shm/wake.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <latch>
#include <set>
#include <stop_token>
#include <thread>

#include "process.hpp"

namespace shmctx::shm {
namespace {

using namespace std::chrono_literals;

/// A wake table in ordinary memory (the layout is the same as in a segment).
struct LocalTable {
    alignas(kCacheLine) WakeSlot slots[4]{};
    WakeTable table{std::as_writable_bytes(std::span(slots))};
};

struct alignas(kFalseSharingRange) Cell {
    WakeCell cell{};
};

// ---- futex primitives ----

TEST(Futex, WaitReturnsValueChangedWhenTheWordDiffers) {
    std::atomic<std::uint32_t> word{5};
    EXPECT_EQ(futex_wait(word, 4, 5s), FutexResult::value_changed);
}

TEST(Futex, WaitTimesOutAfterTheRelativeTimeout) {
    std::atomic<std::uint32_t> word{0};
    const auto start = Clock::now();
    EXPECT_EQ(futex_wait(word, 0, 20ms), FutexResult::timed_out);
    EXPECT_GE(Clock::now() - start, 20ms);
    EXPECT_EQ(futex_wait(word, 0, Duration::zero()), FutexResult::timed_out);
    EXPECT_EQ(futex_wait(word, 0, Duration(-5)), FutexResult::timed_out);
}

TEST(Futex, WakeWakesABlockedWaiter) {
    std::atomic<std::uint32_t> word{0};
    std::atomic<int> result{-1};
    std::thread waiter([&] {
        // relaxed: joined before it is read.
        result.store(static_cast<int>(futex_wait(word, 0, 10s)), std::memory_order::relaxed);
    });
    // futex_wake reports how many it woke: 1 proves the thread was blocked and is now woken.
    const bool woke = test::wait_until([&] { return futex_wake(word) == 1; }, Deadline(10s));
    waiter.join();
    EXPECT_TRUE(woke);
    EXPECT_EQ(result.load(std::memory_order::relaxed), static_cast<int>(FutexResult::woken));
    EXPECT_EQ(futex_wake(word), 0) << "nobody is waiting any more";
}

// ---- Waiter outcomes ----

TEST(Waiter, ReturnsReadyAtOnceWhenTheConditionHolds) {
    LocalTable t;
    Cell c;
    Waiter w(t.table, 0);
    EXPECT_EQ(w.wait(
                  c.cell, [] { return true; }, Deadline(5s)),
              WaitStatus::ready);
    // relaxed: single-threaded observation.
    EXPECT_EQ(c.cell.waiter.load(std::memory_order::relaxed), 0U);
}

TEST(Waiter, ReturnsReadyWhenWokenFromAnotherThread) {
    LocalTable t;
    Cell c;
    std::atomic<bool> flag{false};
    std::atomic<int> status{-1};
    std::thread th([&] {
        Waiter w(t.table, 1);
        const auto s = w.wait(
            c.cell, [&] { return flag.load(std::memory_order::acquire); }, Deadline(5s), {},
            WaitPolicy{WaitMode::block, 0});
        status.store(static_cast<int>(s), std::memory_order::relaxed);  // relaxed: joined
    });
    // Publish only once the waiter advertised, so the wake goes through the futex.
    ASSERT_TRUE(test::wait_until(
        [&] { return c.cell.waiter.load(std::memory_order::relaxed) == 2; }, Deadline(10s)));
    const std::uint32_t before = t.slots[1].counter.load(std::memory_order::relaxed);
    flag.store(true, std::memory_order::release);
    // Normally the waiter is asleep and this wakes it. A spurious futex return (signals: the
    // sanitizers' runtimes send some) between the store above and this read lets the waiter see
    // the flag, return and withdraw first: then nobody is advertised and nothing is bumped.
    const WakeResult woke = wake_cell(c.cell, t.table);
    EXPECT_TRUE(woke == WakeResult::woken || woke == WakeResult::none_waiting);
    th.join();
    EXPECT_EQ(status.load(std::memory_order::relaxed), static_cast<int>(WaitStatus::ready));
    EXPECT_EQ(t.slots[1].counter.load(std::memory_order::relaxed),
              before + (woke == WakeResult::woken ? 1U : 0U));
    EXPECT_EQ(c.cell.waiter.load(std::memory_order::relaxed), 0U);
    EXPECT_EQ(wake_cell(c.cell, t.table), WakeResult::none_waiting);
}

TEST(Waiter, TimesOutAtTheDeadlineAndWithdrawsTheAdvertisement) {
    LocalTable t;
    Cell c;
    Waiter w(t.table, 0);
    for (const std::uint32_t spin : {0U, 2000U}) {
        const auto start = Clock::now();
        EXPECT_EQ(w.wait(
                      c.cell, [] { return false; }, Deadline(30ms), {},
                      WaitPolicy{WaitMode::block, spin}),
                  WaitStatus::timed_out);
        EXPECT_GE(Clock::now() - start, 30ms);
        EXPECT_EQ(c.cell.waiter.load(std::memory_order::relaxed), 0U);
    }
    // Spin modes that never block honour the deadline too.
    for (const WaitMode mode : {WaitMode::busy_spin, WaitMode::spin_yield}) {
        EXPECT_EQ(w.wait(
                      c.cell, [] { return false; }, Deadline(5ms), {}, WaitPolicy{mode, 100}),
                  WaitStatus::timed_out);
    }
}

TEST(Waiter, StopRequestedFromAnotherThreadWakesABlockedWaiterPromptly) {
    LocalTable t;
    Cell c;
    std::stop_source source;
    std::atomic<int> status{-1};
    constexpr auto kDeadline = 10s;
    std::thread th([&] {
        Waiter w(t.table, 2);
        const auto s = w.wait(
            c.cell, [] { return false; }, Deadline(kDeadline), source.get_token(),
            WaitPolicy{WaitMode::block, 0});
        status.store(static_cast<int>(s), std::memory_order::relaxed);  // relaxed: joined
    });
    ASSERT_TRUE(test::wait_until(
        [&] { return c.cell.waiter.load(std::memory_order::relaxed) == 3; }, Deadline(10s)));
    const auto requested = Clock::now();
    source.request_stop();
    th.join();
    const auto took = Clock::now() - requested;
    // Without the stop callback's wake the waiter would sleep to its deadline: timed_out.
    EXPECT_EQ(status.load(std::memory_order::relaxed), static_cast<int>(WaitStatus::cancelled));
    EXPECT_LT(took, kDeadline / 2);
    EXPECT_EQ(c.cell.waiter.load(std::memory_order::relaxed), 0U);
}

TEST(Waiter, StopRequestedBeforeTheWaitCancelsItInEveryMode) {
    LocalTable t;
    Cell c;
    Waiter w(t.table, 0);
    std::stop_source source;
    source.request_stop();
    for (const WaitMode mode : {WaitMode::block, WaitMode::spin_yield, WaitMode::busy_spin}) {
        EXPECT_EQ(w.wait(
                      c.cell, [] { return false; }, Deadline(5s), source.get_token(),
                      WaitPolicy{mode, 10}),
                  WaitStatus::cancelled);
    }
    // A satisfied condition beats a stop request (it is checked first).
    EXPECT_EQ(w.wait(
                  c.cell, [] { return true; }, Deadline(5s), source.get_token()),
              WaitStatus::ready);
}

TEST(Waiter, AdvertisementIsWithdrawnWhenTheConditionThrows) {
    LocalTable t;
    Cell c;
    Waiter w(t.table, 0);
    int calls = 0;
    EXPECT_THROW(w.wait(
                     c.cell,
                     [&]() -> bool {
                         if (++calls == 2) throw std::runtime_error("ready() failed");
                         return false;
                     },
                     Deadline(5s), {}, WaitPolicy{WaitMode::block, 0}),
                 std::runtime_error);
    EXPECT_EQ(calls, 2);  // the second call is the re-check after advertising
    EXPECT_EQ(c.cell.waiter.load(std::memory_order::relaxed), 0U);
}

// ---- busy_spin ----

TEST(Waiter, BusySpinNeverAdvertisesAndWakersSkipIt) {
    LocalTable t;
    Cell c;
    std::atomic<bool> flag{false};
    std::atomic<bool> advertised{false};
    std::latch spinning(1);
    std::atomic<int> status{-1};
    std::thread th([&] {
        Waiter w(t.table, 0);
        bool first = true;
        const auto s = w.wait(
            c.cell,
            [&] {
                if (first) spinning.count_down();
                first = false;
                // relaxed: observed by this (the waiting) thread; it writes the cell itself.
                if (c.cell.waiter.load(std::memory_order::relaxed) != 0) {
                    advertised.store(true, std::memory_order::relaxed);  // relaxed: joined
                }
                return flag.load(std::memory_order::acquire);
            },
            Deadline(10s), {}, WaitPolicy{WaitMode::busy_spin, 0});
        status.store(static_cast<int>(s), std::memory_order::relaxed);  // relaxed: joined
    });
    spinning.wait();
    EXPECT_EQ(c.cell.mode.load(std::memory_order::relaxed),
              static_cast<std::uint32_t>(WaitMode::busy_spin));
    const std::uint32_t before = t.slots[0].counter.load(std::memory_order::relaxed);
    flag.store(true, std::memory_order::release);
    EXPECT_EQ(wake_cell(c.cell, t.table), WakeResult::none_waiting);
    th.join();
    EXPECT_EQ(status.load(std::memory_order::relaxed), static_cast<int>(WaitStatus::ready));
    EXPECT_FALSE(advertised.load(std::memory_order::relaxed));
    EXPECT_EQ(t.slots[0].counter.load(std::memory_order::relaxed), before)
        << "a waker must not bump a busy-spinning waiter's counter";
}

TEST(WakeCell, WakerSkipsACellInBusySpinModeEvenIfItNamesASlot) {
    LocalTable t;
    Cell c;
    c.cell.waiter.store(1, std::memory_order::relaxed);
    c.cell.mode.store(static_cast<std::uint32_t>(WaitMode::busy_spin), std::memory_order::relaxed);
    EXPECT_EQ(wake_cell(c.cell, t.table), WakeResult::none_waiting);
    EXPECT_EQ(t.slots[0].counter.load(std::memory_order::relaxed), 0U);
    c.cell.mode.store(static_cast<std::uint32_t>(WaitMode::block), std::memory_order::relaxed);
    EXPECT_EQ(wake_cell(c.cell, t.table), WakeResult::woken);
    EXPECT_EQ(t.slots[0].counter.load(std::memory_order::relaxed), 1U);
}

/// Simulates the one waker a mode switch can fool: it read `busy_spin` (stale) and so neither
/// fenced nor woke, and its change became visible only after the waiter's re-check. The
/// condition therefore flips to true right after the waiter's first re-check returned false,
/// and nobody ever wakes the waiter.
struct StaleWakerRun {
    WaitStatus status{};
    Duration took{};              ///< the whole wait
    Clock::time_point recheck{};  ///< when the re-check after advertising ran
};

StaleWakerRun wait_with_stale_waker(Waiter& w, WakeCell& cell, Duration deadline) {
    StaleWakerRun run;
    bool flag = false;
    int calls = 0;
    const auto start = Clock::now();
    run.status = w.wait(
        cell,
        [&] {
            const bool value = flag;
            if (++calls == 2) {  // call 1: spin phase; call 2: the re-check
                run.recheck = Clock::now();
                flag = true;
            }
            return value;
        },
        Deadline(deadline), {}, WaitPolicy{WaitMode::block, 0});
    run.took = Clock::now() - start;
    return run;
}

/// A waker can only read the stale mode before the switch is visible, and its change is
/// visible microseconds later; so the waiter's promise covers re-checks that start within
/// kModeSwitchWait of the switch. A run where preemption delayed the re-check beyond that
/// proves nothing either way and is repeated.
void expect_no_lost_wake_after_switch(bool switch_in_earlier_wait) {
    LocalTable t;
    Cell c;
    Waiter w(t.table, 0);
    constexpr auto kDeadline = 2s;
    for (int attempt = 0; attempt < 50; ++attempt) {
        ASSERT_EQ(w.wait(
                      c.cell, [] { return true; }, Deadline(kDeadline), {},
                      WaitPolicy{WaitMode::busy_spin, 0}),
                  WaitStatus::ready);
        const auto switched_before = Clock::now();
        if (switch_in_earlier_wait) {
            // The switch happens in a wait that returns without blocking; a waker that read
            // the stale mode may still be in flight when the next wait blocks.
            ASSERT_EQ(w.wait(
                          c.cell, [] { return true; }, Deadline(kDeadline), {},
                          WaitPolicy{WaitMode::block, 0}),
                      WaitStatus::ready);
        }
        const auto run = wait_with_stale_waker(w, c.cell, kDeadline);
        EXPECT_EQ(run.status, WaitStatus::ready);
        if (run.recheck - switched_before >= kModeSwitchWait) continue;  // inconclusive
        EXPECT_LT(run.took, kDeadline / 2)
            << "slept towards the deadline although the re-check ran within the mode-switch "
               "window: a wake-up was lost";
        return;
    }
    GTEST_SKIP() << "every attempt was preempted past the " << kModeSwitchWait.count()
                 << " ns mode-switch window";
}

TEST(Waiter, SwitchFromBusySpinToBlockCannotLoseAWakeUp) {
    expect_no_lost_wake_after_switch(false);
}

TEST(Waiter, SwitchInAnEarlierWaitStillBoundsTheNextBlock) {
    expect_no_lost_wake_after_switch(true);
}

TEST(Waiter, WithoutAModeSwitchAWaiterIsNotPolledSoAMissingWakeIsVisible) {
    // The counterpart of the test above, showing that it can fail: in steady block mode the
    // waiter relies on wakes alone, so a change published without a wake is only seen at the
    // deadline's final re-check (which still reports it: ready beats the timeout).
    LocalTable t;
    Cell c;
    Waiter w(t.table, 0);
    constexpr auto kDeadline = 200ms;
    const auto run = wait_with_stale_waker(w, c.cell, kDeadline);
    EXPECT_EQ(run.status, WaitStatus::ready);
    EXPECT_GE(run.took, kDeadline);
}

// ---- table bounds and slot allocation ----

TEST(WakeTable, BadIndexFromSharedMemoryIsBadSlotNotACrash) {
    LocalTable t;
    Cell c;
    EXPECT_EQ(t.table.capacity(), 4U);
    EXPECT_NE(t.table.slot(3), nullptr);
    EXPECT_EQ(t.table.slot(4), nullptr);
    for (const std::uint32_t bad : {5U, 6U, 1000U, UINT32_MAX}) {
        c.cell.waiter.store(bad, std::memory_order::relaxed);
        EXPECT_EQ(wake_cell(c.cell, t.table), WakeResult::bad_slot) << bad;
    }
    c.cell.waiter.store(4, std::memory_order::relaxed);  // slot 3: the last valid one
    EXPECT_EQ(wake_cell(c.cell, t.table), WakeResult::woken);
    EXPECT_THROW(Waiter(t.table, 4), std::out_of_range);
    EXPECT_EQ(WakeTable().capacity(), 0U);
}

TEST(WakeTable, MisalignedRegionGivesAnEmptyTable) {
    LocalTable t;
    auto bytes = std::as_writable_bytes(std::span(t.slots));
    const WakeTable misaligned(bytes.subspan(8));
    EXPECT_EQ(misaligned.capacity(), 0U);
    EXPECT_EQ(misaligned.slot(0), nullptr);
}

TEST(WakeSlotAllocator, HandsOutDistinctSlotsUntilExhaustedThenReuses) {
    WakeSlotAllocator alloc(3);
    std::set<std::uint32_t> got;
    for (int i = 0; i < 3; ++i) {
        const auto s = alloc.allocate();
        ASSERT_TRUE(s.has_value());
        EXPECT_LT(*s, 3U);
        got.insert(*s);
    }
    EXPECT_EQ(got.size(), 3U);
    EXPECT_EQ(alloc.in_use(), 3U);
    EXPECT_FALSE(alloc.allocate().has_value());
    alloc.release(1);
    EXPECT_EQ(alloc.in_use(), 2U);
    EXPECT_EQ(alloc.allocate(), std::optional<std::uint32_t>(1));
    EXPECT_FALSE(alloc.allocate().has_value());
}

TEST(WakeSlotAllocatorDeathTest, ReleasingASlotTwiceAborts) {
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    WakeSlotAllocator alloc(2);
    const auto s = alloc.allocate();
    ASSERT_TRUE(s.has_value());
    alloc.release(*s);
    EXPECT_DEATH(alloc.release(*s), "slot not allocated");
    EXPECT_DEATH(alloc.release(7), "slot not allocated");
}

// ---- ping-pong through the futex path ----

TEST(Waiter, TwoThreadsPingPongWithoutLosingAWakeUp) {
    LocalTable t;
    Cell cells[2];
    struct alignas(kFalseSharingRange) Count {
        std::atomic<std::uint64_t> value{0};
    } counts[2];
    const std::uint64_t rounds = test::scaled(100'000, 1000);
    constexpr auto kPerWait = 5s;
    std::atomic<std::uint64_t> failed_round[2] = {0, 0};
    std::atomic<std::uint64_t> woken[2] = {0, 0};

    auto side = [&](int me) {
        Waiter w(t.table, static_cast<std::uint32_t>(me));
        const int peer = 1 - me;
        std::uint64_t wakes = 0;
        auto publish = [&](std::uint64_t k) {
            // [pingpong.publish] pairs with [pingpong.observe] below.
            counts[me].value.store(k, std::memory_order::release);
            if (wake_cell(cells[peer].cell, t.table) == WakeResult::woken) ++wakes;
        };
        for (std::uint64_t k = 1; k <= rounds; ++k) {
            if (me == 0) publish(k);
            const auto s = w.wait(
                cells[me].cell,
                [&] {
                    // [pingpong.observe] pairs with [pingpong.publish].
                    return counts[peer].value.load(std::memory_order::acquire) >= k;
                },
                Deadline(kPerWait), {}, WaitPolicy{WaitMode::block, 0});
            if (s != WaitStatus::ready) {
                failed_round[me].store(k, std::memory_order::relaxed);  // relaxed: joined
                // Unblock the peer so the test ends at once instead of at its deadline.
                counts[me].value.store(UINT64_MAX, std::memory_order::release);
                (void)wake_cell(cells[peer].cell, t.table);
                break;
            }
            if (me == 1) publish(k);
        }
        woken[me].store(wakes, std::memory_order::relaxed);  // relaxed: joined
    };
    std::thread a(side, 0);
    std::thread b(side, 1);
    a.join();
    b.join();
    EXPECT_EQ(failed_round[0].load(std::memory_order::relaxed), 0U)
        << "side 0 timed out: lost wake-up";
    EXPECT_EQ(failed_round[1].load(std::memory_order::relaxed), 0U)
        << "side 1 timed out: lost wake-up";
    // spin_checks = 0: the futex path is really taken.
    EXPECT_GT(woken[0].load(std::memory_order::relaxed) + woken[1].load(std::memory_order::relaxed),
              0U);
}

}  // namespace
}  // namespace shmctx::shm
