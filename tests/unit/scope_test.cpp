// Cancel scopes, the canceller thread and the endpoint pool (src/core; DESIGN.md §3, §4.6).
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <future>
#include <latch>
#include <memory>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>
#include <type_traits>
#include <vector>

#include "context_support.hpp"
#include "core/cancel_scope.hpp"
#include "core/canceller_thread.hpp"
#include "core/endpoint_pool.hpp"
#include "process.hpp"
#include "shmctx/errors.hpp"
#include "shmctx/ids.hpp"

namespace shmctx::detail {
namespace {

using namespace std::chrono_literals;

constexpr auto kDeadline = 10s;  // bound of every wait: a hang fails the test, never stalls it

Uid make_uid(std::string name) { return Uid{std::move(name), Uuid::random()}; }

// Runs `fn` and reports whether it threw shmctx::Cancelled.
template <class F>
bool throws_cancelled(F&& fn) {
    try {
        fn();
    } catch (const Cancelled&) {
        return true;
    }
    return false;
}

// A gate that tasks block on until the test opens it (bounded by kDeadline so that a failing
// test never leaves a thread blocked forever).
class Gate {
public:
    void open() {
        {
            std::lock_guard lock(m_);
            open_ = true;
        }
        cv_.notify_all();
    }
    bool wait() {
        std::unique_lock lock(m_);
        return cv_.wait_for(lock, kDeadline, [&] { return open_; });
    }

private:
    std::mutex m_;
    std::condition_variable cv_;
    bool open_ = false;
};

// ---------------------------------------------------------------------------------------------
// CancelScope

static_assert(!std::is_base_of_v<std::exception, Cancelled>,
              "catch (const std::exception&) must not swallow Cancelled");

TEST(CancelScope, CheckpointOutsideEveryScopeNeverThrows) {
    EXPECT_EQ(current_scope(), nullptr);
    EXPECT_FALSE(current_stop_token().stop_possible());
    EXPECT_FALSE(throws_cancelled([] { checkpoint(); }));
}

TEST(CancelScope, CheckpointThrowsAfterCancelAndAgainAtEveryLaterCheckpoint) {
    CancelScope scope;
    ScopeEntry entry(scope);
    EXPECT_FALSE(throws_cancelled([] { checkpoint(); }));
    EXPECT_FALSE(scope.cancelled());
    scope.cancel();
    EXPECT_TRUE(scope.cancelled());
    EXPECT_TRUE(scope.cancel_called());
    // Level-triggered: catching it does not reset anything.
    for (int i = 0; i < 3; ++i) EXPECT_TRUE(throws_cancelled([] { checkpoint(); })) << i;
    EXPECT_TRUE(current_cancelled());
}

TEST(CancelScope, CancelledIsNotCaughtByStdExceptionHandlers) {
    CancelScope scope;
    ScopeEntry entry(scope);
    scope.cancel();
    bool caught_as_std = false;
    bool caught_as_cancelled = false;
    try {
        try {
            checkpoint();
        } catch (const std::exception&) {
            caught_as_std = true;
        }
    } catch (const Cancelled&) {
        caught_as_cancelled = true;
    }
    EXPECT_FALSE(caught_as_std);
    EXPECT_TRUE(caught_as_cancelled);
}

TEST(CancelScope, NestedScopeIsCancelledThroughItsParent) {
    CancelScope outer;
    ScopeEntry outer_entry(outer);
    CancelScope inner(current_scope());
    ScopeEntry inner_entry(inner);
    EXPECT_EQ(inner.parent(), &outer);
    EXPECT_EQ(current_scope(), &inner);
    EXPECT_FALSE(throws_cancelled([] { checkpoint(); }));

    outer.cancel();
    EXPECT_TRUE(inner.cancelled());
    EXPECT_TRUE(inner.enclosing_cancelled());
    EXPECT_FALSE(inner.cancel_called()) << "only the outer scope was cancelled itself";
    EXPECT_FALSE(inner.absorbs_cancelled());
    EXPECT_TRUE(throws_cancelled([] { checkpoint(); }));
}

TEST(CancelScope, CancellingTheInnerScopeDoesNotCancelTheOuter) {
    CancelScope outer;
    CancelScope inner(&outer);
    inner.cancel();
    EXPECT_TRUE(inner.cancelled());
    EXPECT_FALSE(outer.cancelled());
    EXPECT_FALSE(outer.cancel_called());
    EXPECT_FALSE(inner.enclosing_cancelled());
    EXPECT_TRUE(inner.absorbs_cancelled());
}

TEST(CancelScope, ScopeNestedInACancelledParentStartsCancelled) {
    CancelScope outer;
    outer.cancel();
    CancelScope inner(&outer);
    EXPECT_TRUE(inner.cancelled());
    EXPECT_FALSE(inner.cancel_called());
}

TEST(CancelScope, NestedScopeOnAnotherThreadIsCancelledThroughItsParent) {
    CancelScope root;  // like an actor's root scope: never entered
    std::latch entered(1);
    std::atomic<bool> inner_cancel_called{true};
    auto result = std::async(std::launch::async, [&] {
        CancelScope body(&root);
        bool cancelled = false;
        try {
            (void)run_in_scope(body, [&] {
                entered.count_down();
                sleep_for(2 * kDeadline);  // woken by root.cancel()
            });
        } catch (const Cancelled&) {
            cancelled = true;  // an enclosing cancel propagates through the body's boundary
        }
        inner_cancel_called = body.cancel_called();
        return cancelled && !body.cancelled_caught();
    });
    entered.wait();
    root.cancel();
    ASSERT_EQ(result.wait_for(kDeadline), std::future_status::ready);
    EXPECT_TRUE(result.get());
    EXPECT_FALSE(inner_cancel_called.load());
}

TEST(CancelScope, InnermostStopTokenFiresWhenAnEnclosingScopeIsCancelled) {
    CancelScope root;
    CancelScope middle(&root);
    std::latch waiting(1);
    auto woke_by_stop = std::async(std::launch::async, [&] {
        CancelScope body(&middle);
        ScopeEntry entry(body);
        std::mutex m;
        std::condition_variable_any cv;
        std::unique_lock lock(m);
        const std::stop_token token = current_stop_token();
        waiting.count_down();
        // Nobody notifies cv: only the stop-callback of the token can end this wait early.
        (void)cv.wait_for(lock, token, kDeadline, [] { return false; });
        return token.stop_requested();
    });
    waiting.wait();
    root.cancel();
    ASSERT_EQ(woke_by_stop.wait_for(kDeadline), std::future_status::ready);
    EXPECT_TRUE(woke_by_stop.get());
}

TEST(CancelScope, OwnCancelIsAbsorbedAtTheBoundaryAndSetsCancelledCaught) {
    CancelScope scope;
    bool reached_after_checkpoint = false;
    const ScopeResult<int> r = run_in_scope(scope, [&] {
        scope.cancel();
        checkpoint();
        reached_after_checkpoint = true;
        return 1;
    });
    EXPECT_FALSE(reached_after_checkpoint);
    EXPECT_EQ(r.exit, ScopeExit::cancelled_caught);
    EXPECT_TRUE(r.cancelled());
    EXPECT_FALSE(r.value.has_value());
    EXPECT_TRUE(scope.cancelled_caught());
    // Outside the scope nothing is cancelled any more.
    EXPECT_EQ(current_scope(), nullptr);
    EXPECT_FALSE(throws_cancelled([] { checkpoint(); }));
}

TEST(CancelScope, EnclosingCancelPropagatesThroughTheInnerBoundary) {
    CancelScope outer;
    std::unique_ptr<CancelScope> inner;
    const auto r = run_in_scope(outer, [&] {
        inner = std::make_unique<CancelScope>(current_scope());
        (void)run_in_scope(*inner, [&] {
            outer.cancel();
            checkpoint();
        });
        ADD_FAILURE() << "the inner boundary absorbed an enclosing cancel";
    });
    EXPECT_EQ(r.exit, ScopeExit::cancelled_caught);
    EXPECT_TRUE(outer.cancelled_caught());
    EXPECT_FALSE(inner->cancelled_caught());
}

TEST(CancelScope, WhenInnerAndOuterAreBothCancelledTheOuterBoundaryCatches) {
    CancelScope outer;
    std::unique_ptr<CancelScope> inner;
    const auto r = run_in_scope(outer, [&] {
        inner = std::make_unique<CancelScope>(current_scope());
        (void)run_in_scope(*inner, [&] {
            inner->cancel();
            outer.cancel();
            checkpoint();
        });
        ADD_FAILURE() << "the inner boundary absorbed although the outer scope is cancelled";
    });
    EXPECT_EQ(r.exit, ScopeExit::cancelled_caught);
    EXPECT_TRUE(outer.cancelled_caught());
    EXPECT_FALSE(inner->cancelled_caught());
    EXPECT_TRUE(inner->cancel_called());
}

TEST(CancelScope, InnerOwnCancelDoesNotReachTheOuterBody) {
    CancelScope outer;
    bool outer_continued = false;
    const auto r = run_in_scope(outer, [&] {
        CancelScope inner(current_scope());
        const auto ir = run_in_scope(inner, [&] {
            inner.cancel();
            checkpoint();
        });
        EXPECT_EQ(ir.exit, ScopeExit::cancelled_caught);
        checkpoint();  // the outer scope is not cancelled
        outer_continued = true;
    });
    EXPECT_TRUE(outer_continued);
    EXPECT_EQ(r.exit, ScopeExit::completed) << "the inner's absorbed cancel is not the outer's";
    EXPECT_FALSE(outer.cancelled_caught());
}

TEST(CancelScope, AbsorbedNestedCancelDoesNotMakeALaterOuterCancelLookSwallowed) {
    // A nested scope's own cancel was raised and absorbed inside the outer body; later the outer
    // scope is cancelled and its body returns before any checkpoint: that is a race with
    // return (the value wins), not a swallowed Cancelled.
    CancelScope outer;
    const ScopeResult<int> r = run_in_scope(outer, [&] {
        CancelScope inner(current_scope());
        const auto ir = run_in_scope(inner, [&] {
            inner.cancel();
            checkpoint();
        });
        EXPECT_EQ(ir.exit, ScopeExit::cancelled_caught);
        outer.cancel();
        return 5;
    });
    EXPECT_EQ(r.exit, ScopeExit::completed);
    EXPECT_EQ(r.value, 5);
}

TEST(CancelScope, BodyThatSwallowsCancelledIsStillTreatedAsCancelled) {
    CancelScope scope;
    const ScopeResult<int> r = run_in_scope(scope, [&] {
        scope.cancel();
        try {
            checkpoint();
        } catch (const Cancelled&) {
            // swallowed: a misbehaving endpoint
        }
        return 42;
    });
    EXPECT_EQ(r.exit, ScopeExit::cancelled_swallowed);
    EXPECT_FALSE(r.value.has_value()) << "the value of a cancelled body is discarded";
    EXPECT_FALSE(scope.cancelled_caught()) << "no Cancelled unwound the scope";
}

TEST(CancelScope, SwallowedEnclosingCancelIsRaisedAgainAtTheInnerBoundary) {
    CancelScope outer;
    const auto r = run_in_scope(outer, [&] {
        CancelScope inner(current_scope());
        (void)run_in_scope(inner, [&] {
            outer.cancel();
            try {
                checkpoint();
            } catch (const Cancelled&) {
            }
        });
        ADD_FAILURE() << "a swallowed enclosing cancel did not propagate";
    });
    EXPECT_EQ(r.exit, ScopeExit::cancelled_caught);
    EXPECT_TRUE(outer.cancelled_caught());
}

TEST(CancelScope, CancelRacingWithReturnKeepsTheValue) {
    // The cancel lands after the body's last checkpoint: spec §3.2 "race with return".
    CancelScope scope;
    const ScopeResult<int> r = run_in_scope(scope, [&] {
        checkpoint();
        scope.cancel();
        return 7;
    });
    EXPECT_EQ(r.exit, ScopeExit::completed);
    ASSERT_TRUE(r.value.has_value());
    EXPECT_EQ(*r.value, 7);
    EXPECT_TRUE(scope.cancel_called());
    EXPECT_FALSE(scope.cancelled_caught());
}

TEST(CancelScope, OtherExceptionsPropagateUnchanged) {
    CancelScope scope;
    const std::runtime_error original("real error");
    try {
        (void)run_in_scope(scope, [&] {
            scope.cancel();
            try {
                checkpoint();
            } catch (const Cancelled&) {
                throw original;  // an error raised while handling the cancel beats it
            }
        });
        ADD_FAILURE() << "nothing propagated";
    } catch (const std::runtime_error& e) {
        EXPECT_STREQ(e.what(), "real error");
    }
    EXPECT_FALSE(scope.cancelled_caught());
}

// spec §3.2 "real errors beat cancellation": a cleanup handler that checkpoints while handling a
// real error would mask it with a Cancelled; the boundary raises the real error instead, the same
// object, whether or not the scope would have absorbed the Cancelled.
TEST(CancelScope, CancelledRaisedWhileHandlingARealErrorGivesWayToItAtTheBoundary) {
    for (const bool own_cancel : {true, false}) {
        CancelScope outer;
        CancelScope scope(&outer);
        const ScopeEntry outer_entry(outer);
        const std::runtime_error* thrown = nullptr;  // the exception object itself
        try {
            (void)run_in_scope(scope, [&] {
                try {
                    throw std::runtime_error("real error");
                } catch (const std::runtime_error& e) {
                    thrown = &e;
                    if (own_cancel) {
                        scope.cancel();
                    } else {
                        outer.cancel();
                    }
                    checkpoint();  // cleanup that blocks: the Cancelled would mask the error
                    throw;
                }
            });
            ADD_FAILURE() << "nothing propagated";
        } catch (const std::runtime_error& e) {
            EXPECT_EQ(&e, thrown) << "not the same object";
        } catch (const Cancelled&) {
            ADD_FAILURE() << "the Cancelled masked the real error (own_cancel=" << own_cancel
                          << ")";
        }
        EXPECT_FALSE(scope.cancelled_caught());
    }
}

// A Cancelled raised while handling another Cancelled masks nothing: absorbed as usual.
TEST(CancelScope, CancelledRaisedWhileHandlingACancelledIsAbsorbedAsUsual) {
    CancelScope scope;
    const auto r = run_in_scope(scope, [&] {
        scope.cancel();
        try {
            checkpoint();
        } catch (const Cancelled&) {
            checkpoint();
        }
    });
    EXPECT_EQ(r.exit, ScopeExit::cancelled_caught);
}

TEST(CancelScope, HandThrownCancelledWithoutACancelledScopePropagates) {
    CancelScope scope;
    EXPECT_TRUE(throws_cancelled([&] { (void)run_in_scope(scope, [] { throw Cancelled{}; }); }));
    EXPECT_FALSE(scope.cancelled_caught());
}

TEST(CancelScope, RecordsTheFirstCancellerAndReason) {
    CancelScope scope;
    EXPECT_FALSE(scope.canceller().has_value());
    const Uid first = make_uid("parent");
    const Uid second = make_uid("third");
    EXPECT_TRUE(scope.cancel(first, "cancel request 17"));
    EXPECT_FALSE(scope.cancel(second, "actor cancel"));
    ASSERT_TRUE(scope.canceller().has_value());
    EXPECT_EQ(*scope.canceller(), first);
    EXPECT_EQ(scope.canceller()->name, "parent");
    EXPECT_EQ(scope.reason(), "cancel request 17");
}

TEST(CancelScope, NestedScopeRecordsNoCancellerOfItsOwn) {
    CancelScope outer;
    CancelScope inner(&outer);
    outer.cancel(make_uid("requester"), "why");
    EXPECT_TRUE(inner.cancelled());
    EXPECT_FALSE(inner.canceller().has_value());
    EXPECT_TRUE(outer.canceller().has_value());
}

TEST(CancelScope, AlsoInScopeCancellationCountsAsEnclosing) {
    CancelScope actor_root;
    CancelScope caller;  // the user's own scope
    const auto r = run_in_scope(caller, [&] {
        CancelScope body(current_scope(), &actor_root);
        EXPECT_EQ(body.parent(), &caller);
        bool propagated = false;
        try {
            (void)run_in_scope(body, [&] {
                actor_root.cancel();
                checkpoint();
            });
        } catch (const Cancelled&) {
            propagated = true;
        }
        EXPECT_TRUE(propagated) << "an actor cancel must escape the body like an enclosing one";
        EXPECT_FALSE(caller.cancelled()) << "the caller's scope is not under the actor root";
    });
    EXPECT_EQ(r.exit, ScopeExit::completed);
}

TEST(CancelScope, SleepForWakesAtOnceWhenCancelledFromAnotherThread) {
    CancelScope scope;
    std::latch sleeping(1);
    auto elapsed = std::async(std::launch::async, [&] {
        const auto start = Clock::now();
        const auto r = run_in_scope(scope, [&] {
            sleeping.count_down();
            sleep_for(2 * kDeadline);
        });
        EXPECT_EQ(r.exit, ScopeExit::cancelled_caught);
        return Clock::now() - start;
    });
    sleeping.wait();
    scope.cancel();
    ASSERT_EQ(elapsed.wait_for(kDeadline), std::future_status::ready);
    EXPECT_LT(elapsed.get(), kDeadline) << "the sleep was not interrupted";
}

TEST(CancelScope, SleepForInACancelledScopeThrowsWithoutSleeping) {
    CancelScope scope;
    scope.cancel();
    ScopeEntry entry(scope);
    const auto start = Clock::now();
    EXPECT_TRUE(throws_cancelled([] { sleep_for(kDeadline); }));
    EXPECT_LT(Clock::now() - start, kDeadline);
}

TEST(CancelScope, SleepForOutsideEveryScopeSleeps) {
    const auto start = Clock::now();
    sleep_for(2ms);
    EXPECT_GE(Clock::now() - start, 2ms);
}

TEST(CancelScope, ConcurrentCancelReachesEveryCheckpointingThread) {
    // Many threads checkpoint in a loop inside scopes nested in one root; one cancel ends all.
    CancelScope root;
    const int threads = 8;
    std::latch started(threads);
    std::atomic<int> unwound{0};
    std::vector<std::thread> pool;
    for (int i = 0; i < threads; ++i) {
        pool.emplace_back([&] {
            CancelScope body(&root);
            CancelScope nested(&body);
            bool cancelled = false;
            try {
                (void)run_in_scope(body, [&] {
                    (void)run_in_scope(nested, [&] {
                        started.count_down();
                        const Deadline deadline(kDeadline);
                        while (!deadline.expired()) checkpoint();
                    });
                });
            } catch (const Cancelled&) {
                cancelled = true;
            }
            if (cancelled) unwound.fetch_add(1, std::memory_order::relaxed);
        });
    }
    started.wait();
    root.cancel(make_uid("actor"), "actor cancel");
    for (auto& t : pool) t.join();
    EXPECT_EQ(unwound.load(), threads);
}

TEST(CancelScopeDeathTest, EnteringAScopeNotNestedInTheInnermostAborts) {
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    EXPECT_DEATH(
        {
            CancelScope a;
            CancelScope unrelated;
            ScopeEntry ea(a);
            ScopeEntry eb(unrelated);
        },
        "must be nested directly in the thread's innermost scope");
}

TEST(CancelScopeDeathTest, CancelOnANonBlockingThreadAborts) {
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    EXPECT_DEATH(
        {
            CancelScope s;
            NonBlockingThreadMark control_loop;
            s.cancel();
        },
        "non-blocking thread");
}

// ---------------------------------------------------------------------------------------------
// CancellerThread

TEST(CancellerThread, RunsPostedWorkOffThePostingThreadInPostOrder) {
    CancellerThread canceller;
    const int n = 100;
    std::vector<int> order;
    std::set<std::thread::id> ran_on;
    std::promise<void> done;
    for (int i = 0; i < n; ++i) {
        // order and ran_on are touched only by the canceller thread until `done`.
        ASSERT_TRUE(canceller.post([&, i] {
            order.push_back(i);
            ran_on.insert(std::this_thread::get_id());
            if (i == n - 1) done.set_value();
        }));
    }
    ASSERT_EQ(done.get_future().wait_for(kDeadline), std::future_status::ready);
    ASSERT_EQ(order.size(), static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i) EXPECT_EQ(order[static_cast<std::size_t>(i)], i);
    ASSERT_EQ(ran_on.size(), 1u);
    EXPECT_NE(*ran_on.begin(), std::this_thread::get_id());
    EXPECT_FALSE(canceller.on_this_thread());
}

TEST(CancellerThread, PostNeverWaitsForABusyCanceller) {
    // Declared before the canceller: its tasks use them until stop().
    Gate gate;
    std::latch busy(1);
    std::atomic<std::size_t> ran{0};
    CancellerThread canceller;
    ASSERT_TRUE(canceller.post([&] {
        busy.count_down();
        EXPECT_TRUE(gate.wait());
    }));
    busy.wait();  // the canceller thread is now blocked inside a task
    const std::size_t n = test::scaled(10'000, 100);
    // Posting everything must finish while the canceller is still blocked: post never waits.
    auto poster = std::async(std::launch::async, [&] {
        for (std::size_t i = 0; i < n; ++i) {
            if (!canceller.post([&] { ran.fetch_add(1, std::memory_order::relaxed); }))
                return false;
        }
        return true;
    });
    ASSERT_EQ(poster.wait_for(kDeadline), std::future_status::ready);
    EXPECT_TRUE(poster.get());
    EXPECT_EQ(ran.load(), 0u) << "tasks ran while the canceller was blocked in an earlier one";
    gate.open();
    EXPECT_TRUE(test::wait_until([&] { return ran.load() == n; }, kDeadline));
}

TEST(CancellerThread, ScopeCancelPostedByTheControlLoopRunsStopCallbacksOnTheCanceller) {
    CancellerThread canceller;
    CancelScope root;
    CancelScope body(&root);
    std::promise<std::thread::id> callback_thread;
    std::stop_callback on_stop(body.stop_token(),
                               [&] { callback_thread.set_value(std::this_thread::get_id()); });
    const Uid requester = make_uid("requester");
    std::thread::id control_loop_id;
    std::thread control_loop([&] {
        NonBlockingThreadMark mark;  // cancel() here would abort
        control_loop_id = std::this_thread::get_id();
        EXPECT_TRUE(canceller.post([&] { root.cancel(requester, "actor cancel"); }));
    });
    control_loop.join();
    auto f = callback_thread.get_future();
    ASSERT_EQ(f.wait_for(kDeadline), std::future_status::ready);
    const std::thread::id ran_on = f.get();
    EXPECT_NE(ran_on, control_loop_id);
    EXPECT_NE(ran_on, std::this_thread::get_id());
    EXPECT_TRUE(body.cancelled());
    EXPECT_EQ(root.canceller(), requester);
}

TEST(CancellerThread, ReportsEscapingExceptionsToTheHandler) {
    std::mutex m;
    std::vector<std::string> seen;
    {
        CancellerThread canceller([&](std::exception_ptr e) {
            std::lock_guard lock(m);
            try {
                std::rethrow_exception(e);
            } catch (const std::exception& x) {
                seen.emplace_back(x.what());
            } catch (const Cancelled&) {
                seen.emplace_back("Cancelled");
            }
        });
        ASSERT_TRUE(canceller.post([] { throw std::runtime_error("boom"); }));
        ASSERT_TRUE(canceller.post([] { throw Cancelled{}; }));
        canceller.stop();  // runs everything posted before it
    }
    ASSERT_EQ(seen.size(), 2u);
    EXPECT_EQ(seen[0], "boom");
    EXPECT_EQ(seen[1], "Cancelled");
}

TEST(CancellerThread, StopRunsEverythingPostedThenRefusesLaterPosts) {
    Gate gate;
    std::atomic<int> ran{0};
    CancellerThread canceller;
    ASSERT_TRUE(canceller.post([&] { EXPECT_TRUE(gate.wait()); }));
    for (int i = 0; i < 50; ++i) ASSERT_TRUE(canceller.post([&] { ran.fetch_add(1); }));
    gate.open();
    canceller.stop();
    EXPECT_EQ(ran.load(), 50);
    EXPECT_EQ(canceller.executed_approx(), 51u);
    EXPECT_FALSE(canceller.post([&] { ran.fetch_add(1); }));
    canceller.stop();  // idempotent
    EXPECT_EQ(ran.load(), 50);
}

TEST(CancellerThread, ManyPostersLoseNothing) {
    const std::size_t per_thread = test::scaled(20'000, 200);
    const int posters = 4;
    std::atomic<std::size_t> ran{0};
    {
        CancellerThread canceller;
        std::latch go(posters);
        std::vector<std::thread> threads;
        for (int p = 0; p < posters; ++p) {
            threads.emplace_back([&] {
                go.arrive_and_wait();
                for (std::size_t i = 0; i < per_thread; ++i) {
                    EXPECT_TRUE(canceller.post([&] { ran.fetch_add(1); }));
                }
            });
        }
        for (auto& t : threads) t.join();
        canceller.stop();
    }
    EXPECT_EQ(ran.load(), per_thread * posters);
}

TEST(CancellerThread, PostsRacingWithStopAreRunOrRefusedNeverDropped) {
    for (int round = 0; round < 20; ++round) {
        std::atomic<std::size_t> accepted{0};
        std::atomic<std::size_t> ran{0};
        CancellerThread canceller;
        std::latch go(2);
        std::thread poster([&] {
            go.arrive_and_wait();
            for (int i = 0; i < 2000; ++i) {
                if (canceller.post([&] { ran.fetch_add(1); })) accepted.fetch_add(1);
            }
        });
        go.arrive_and_wait();
        canceller.stop();
        poster.join();
        EXPECT_FALSE(canceller.post([] {})) << "accepted after stop()";
        EXPECT_EQ(ran.load(), accepted.load()) << "round " << round;
    }
}

// ---------------------------------------------------------------------------------------------
// EndpointPool

EndpointPoolOptions pool_options(std::size_t max_threads, Duration idle_timeout) {
    EndpointPoolOptions o;
    o.max_threads = max_threads;
    o.idle_timeout = idle_timeout;
    o.on_error = [](std::exception_ptr e) {
        ADD_FAILURE() << "unexpected task exception";
        report_to_stderr("test pool", e);
    };
    return o;
}

TEST(EndpointPool, GrowsOnDemandUpToTheCapThenRefuses) {
    Gate gate;  // declared before the pool: tasks use it until the pool is shut down
    std::latch all_running(4);
    EndpointPool pool(pool_options(4, std::chrono::seconds(60)));
    for (int i = 0; i < 4; ++i) {
        ASSERT_TRUE(pool.try_submit([&] {
            all_running.count_down();
            EXPECT_TRUE(gate.wait());
        }));
    }
    all_running.wait();
    EXPECT_EQ(pool.running(), 4u);
    EXPECT_EQ(pool.threads(), 4u);

    bool refused_task_ran = false;
    Task fifth = [&] { refused_task_ran = true; };
    SubmitRefusal why{};
    EXPECT_FALSE(pool.try_submit(std::move(fifth), &why));
    EXPECT_EQ(why, SubmitRefusal::at_capacity);
    ASSERT_TRUE(static_cast<bool>(fifth)) << "a refused task stays with the caller";
    fifth();
    EXPECT_TRUE(refused_task_ran);

    gate.open();
    EXPECT_TRUE(test::wait_until([&] { return pool.running() == 0; }, kDeadline));
    const EndpointPoolStats s = pool.stats();
    EXPECT_EQ(s.peak_running, 4u);
    EXPECT_EQ(s.peak_threads, 4u);
    EXPECT_EQ(s.started, 4u);
    EXPECT_EQ(s.refused, 1u);
    EXPECT_EQ(s.completed, 4u);
    EXPECT_EQ(s.idle, 4u);
    // Capacity is back: the next task is accepted and reuses an idle thread.
    std::promise<void> ran;
    ASSERT_TRUE(pool.try_submit([&] { ran.set_value(); }));
    ASSERT_EQ(ran.get_future().wait_for(kDeadline), std::future_status::ready);
    EXPECT_EQ(pool.stats().started, 4u);
}

TEST(EndpointPool, ReusesAnIdleThread) {
    EndpointPool pool(pool_options(8, std::chrono::seconds(60)));
    std::set<std::thread::id> ids;
    for (int i = 0; i < 5; ++i) {
        std::promise<std::thread::id> id;
        ASSERT_TRUE(pool.try_submit([&] { id.set_value(std::this_thread::get_id()); }));
        auto f = id.get_future();
        ASSERT_EQ(f.wait_for(kDeadline), std::future_status::ready);
        ids.insert(f.get());
        // The thread goes idle after the task object is destroyed; wait for that, so that the
        // next submit finds it idle (else a second thread would be right to start).
        ASSERT_TRUE(test::wait_until([&] { return pool.stats().idle == 1; }, kDeadline));
    }
    EXPECT_EQ(ids.size(), 1u);
    EXPECT_EQ(pool.stats().started, 1u);
    EXPECT_EQ(pool.stats().completed, 5u);
}

TEST(EndpointPool, ReusesTheMostRecentlyIdledThreadFirst) {
    // LIFO reuse keeps surplus threads idle long enough to retire under a steady light load.
    Gate first_gate;
    Gate second_gate;
    std::promise<std::thread::id> first_id;
    std::promise<std::thread::id> second_id;
    EndpointPool pool(pool_options(4, std::chrono::seconds(60)));
    ASSERT_TRUE(pool.try_submit([&] {
        first_id.set_value(std::this_thread::get_id());
        EXPECT_TRUE(first_gate.wait());
    }));
    ASSERT_TRUE(pool.try_submit([&] {
        second_id.set_value(std::this_thread::get_id());
        EXPECT_TRUE(second_gate.wait());
    }));
    auto f1 = first_id.get_future();
    auto f2 = second_id.get_future();
    ASSERT_EQ(f1.wait_for(kDeadline), std::future_status::ready);
    ASSERT_EQ(f2.wait_for(kDeadline), std::future_status::ready);
    const std::thread::id t1 = f1.get();
    const std::thread::id t2 = f2.get();
    first_gate.open();
    ASSERT_TRUE(test::wait_until([&] { return pool.stats().idle == 1; }, kDeadline));
    second_gate.open();  // the second thread goes idle last
    ASSERT_TRUE(test::wait_until([&] { return pool.stats().idle == 2; }, kDeadline));
    std::promise<std::thread::id> third_id;
    ASSERT_TRUE(pool.try_submit([&] { third_id.set_value(std::this_thread::get_id()); }));
    auto f3 = third_id.get_future();
    ASSERT_EQ(f3.wait_for(kDeadline), std::future_status::ready);
    const std::thread::id t3 = f3.get();
    EXPECT_EQ(t3, t2);
    EXPECT_NE(t3, t1);
}

TEST(EndpointPool, RetiresIdleThreadsAfterTheTimeout) {
    const std::size_t before = test::library_threads();
    Gate gate;
    std::latch running(3);
    EndpointPool pool(pool_options(8, std::chrono::milliseconds(50)));
    for (int i = 0; i < 3; ++i) {
        ASSERT_TRUE(pool.try_submit([&] {
            running.count_down();
            EXPECT_TRUE(gate.wait());
        }));
    }
    running.wait();
    EXPECT_EQ(test::library_threads(), before + 3);
    gate.open();
    EXPECT_TRUE(test::wait_until([&] { return pool.threads() == 0; }, kDeadline));
    const EndpointPoolStats s = pool.stats();
    EXPECT_EQ(s.retired, 3u);
    EXPECT_EQ(s.idle, 0u);
    // The kernel threads are gone too (the last retiree is joined only at shutdown, but it
    // has exited; the count drops as the kernel reaps them).
    EXPECT_TRUE(test::wait_until([&] { return test::library_threads() == before; }, kDeadline))
        << test::library_threads() << " threads, " << before << " before";
    // A retired pool still serves: a new thread is started.
    std::promise<void> ran;
    ASSERT_TRUE(pool.try_submit([&] { ran.set_value(); }));
    ASSERT_EQ(ran.get_future().wait_for(kDeadline), std::future_status::ready);
    EXPECT_EQ(pool.stats().started, 4u);
}

TEST(EndpointPool, ShutdownWaitsForRunningTasksJoinsEveryThreadAndRefusesNewTasks) {
    const std::size_t before = test::library_threads();
    Gate gate;
    std::latch running(8);
    std::atomic<int> finished{0};
    auto pool = std::make_unique<EndpointPool>(pool_options(16, std::chrono::seconds(60)));
    for (int i = 0; i < 8; ++i) {
        ASSERT_TRUE(pool->try_submit([&] {
            running.count_down();
            EXPECT_TRUE(gate.wait());
            finished.fetch_add(1);
        }));
    }
    running.wait();
    auto shutdown = std::async(std::launch::async, [&] { pool->shutdown(); });
    // Once shutdown has begun, submissions are refused (accepted ones before that just run).
    SubmitRefusal why{};
    EXPECT_TRUE(test::wait_until(
        [&] { return !pool->try_submit([] {}, &why) && why == SubmitRefusal::shut_down; },
        kDeadline));
    EXPECT_EQ(shutdown.wait_for(0s), std::future_status::timeout)
        << "shutdown returned while tasks were still running";
    gate.open();
    ASSERT_EQ(shutdown.wait_for(kDeadline), std::future_status::ready);
    shutdown.get();
    EXPECT_EQ(finished.load(), 8);
    EXPECT_EQ(pool->threads(), 0u);
    pool.reset();
    EXPECT_TRUE(test::wait_until([&] { return test::library_threads() == before; }, kDeadline))
        << test::library_threads() << " threads, " << before << " before";
}

// A worker that finished a task watches for the next one for spin_before_sleep; shutdown must
// end that watch instead of waiting it out (an Actor with a long spin_before_sleep hung in its
// destructor).
TEST(EndpointPool, ShutdownEndsAnIdleWorkersWatchAtOnce) {
    EndpointPoolOptions o = pool_options(4, std::chrono::seconds(60));
    o.spin_before_sleep = std::chrono::hours(1);
    auto pool = std::make_unique<EndpointPool>(std::move(o));
    std::promise<void> ran;
    ASSERT_TRUE(pool->try_submit([&] { ran.set_value(); }));
    ASSERT_EQ(ran.get_future().wait_for(kDeadline), std::future_status::ready);
    ASSERT_TRUE(test::wait_until([&] { return pool->stats().idle == 1; }, kDeadline));
    auto shutdown = std::async(std::launch::async, [&] { pool->shutdown(); });
    ASSERT_EQ(shutdown.wait_for(kDeadline), std::future_status::ready)
        << "shutdown waited for the idle worker's watch";
    shutdown.get();
    EXPECT_EQ(pool->threads(), 0u);
}

TEST(EndpointPool, RunsEveryTaskOfALongSubmitLoopExactlyOnce) {
    const std::size_t n = test::scaled(1000, 100);
    const std::size_t before = test::library_threads();
    std::vector<std::atomic<int>> runs(n);
    {
        EndpointPool pool(pool_options(1024, std::chrono::seconds(5)));
        for (std::size_t i = 0; i < n; ++i) {
            SubmitRefusal why{};
            ASSERT_TRUE(pool.try_submit([&runs, i] { runs[i].fetch_add(1); }, &why))
                << "task " << i << " refused: " << to_string(why);
        }
        EXPECT_TRUE(test::wait_until([&] { return pool.stats().completed == n; }, kDeadline));
        EXPECT_LE(pool.stats().peak_threads, std::min<std::size_t>(n, 1024));
    }
    for (std::size_t i = 0; i < n; ++i) EXPECT_EQ(runs[i].load(), 1) << "task " << i;
    EXPECT_TRUE(test::wait_until([&] { return test::library_threads() == before; }, kDeadline));
}

TEST(EndpointPool, ReportsEscapingExceptionsToTheHandler) {
    std::mutex m;
    std::vector<std::string> seen;
    EndpointPoolOptions o = pool_options(4, std::chrono::seconds(60));
    o.on_error = [&](std::exception_ptr e) {
        std::lock_guard lock(m);
        try {
            std::rethrow_exception(e);
        } catch (const std::exception& x) {
            seen.emplace_back(x.what());
        } catch (const Cancelled&) {
            seen.emplace_back("Cancelled");
        }
    };
    {
        EndpointPool pool(std::move(o));
        ASSERT_TRUE(pool.try_submit([] { throw std::logic_error("endpoint bug"); }));
        ASSERT_TRUE(pool.try_submit([] { throw Cancelled{}; }));
        EXPECT_TRUE(test::wait_until([&] { return pool.stats().completed == 2; }, kDeadline));
    }
    std::lock_guard lock(m);
    ASSERT_EQ(seen.size(), 2u);
    EXPECT_NE(std::find(seen.begin(), seen.end(), "endpoint bug"), seen.end());
    EXPECT_NE(std::find(seen.begin(), seen.end(), "Cancelled"), seen.end());
}

TEST(EndpointPool, ThreadHooksRunOncePerThread) {
    std::atomic<int> starts{0};
    std::atomic<int> exits{0};
    EndpointPoolOptions o = pool_options(4, std::chrono::seconds(60));
    o.on_thread_start = [&] { starts.fetch_add(1); };
    o.on_thread_exit = [&] { exits.fetch_add(1); };
    {
        Gate gate;
        std::latch running(3);
        EndpointPool pool(std::move(o));
        for (int i = 0; i < 3; ++i) {
            ASSERT_TRUE(pool.try_submit([&] {
                running.count_down();
                EXPECT_TRUE(gate.wait());
            }));
        }
        running.wait();
        gate.open();
    }
    EXPECT_EQ(starts.load(), 3);
    EXPECT_EQ(exits.load(), 3);
}

TEST(EndpointPool, CancelledEndpointsUnwindAndThePoolShutsDownClean) {
    // The runtime's shape: endpoint bodies in scopes nested in the actor's root scope, blocked;
    // the control loop posts the actor cancel to the canceller thread; every body unwinds.
    const std::size_t before = test::library_threads();
    const int endpoints = 16;
    std::atomic<int> unwound{0};
    {
        CancelScope actor_root;
        std::latch blocked(endpoints);
        CancellerThread canceller;
        EndpointPool pool(pool_options(64, std::chrono::seconds(60)));
        for (int i = 0; i < endpoints; ++i) {
            ASSERT_TRUE(pool.try_submit([&] {
                CancelScope body(&actor_root);
                try {
                    (void)run_in_scope(body, [&] {
                        blocked.count_down();
                        sleep_for(2 * kDeadline);
                    });
                } catch (const Cancelled&) {
                    unwound.fetch_add(1);
                }
            }));
        }
        blocked.wait();
        ASSERT_TRUE(canceller.post([&] { actor_root.cancel(make_uid("requester"), "SIGINT"); }));
        EXPECT_TRUE(test::wait_until([&] { return pool.running() == 0; }, kDeadline));
        pool.shutdown();
        canceller.stop();
    }
    EXPECT_EQ(unwound.load(), endpoints);
    EXPECT_TRUE(test::wait_until([&] { return test::library_threads() == before; }, kDeadline));
}

TEST(EndpointPool, RejectsAZeroCap) {
    EndpointPoolOptions o;
    o.max_threads = 0;
    EXPECT_THROW(EndpointPool{std::move(o)}, std::invalid_argument);
}

}  // namespace
}  // namespace shmctx::detail
