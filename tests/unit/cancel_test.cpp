// Acceptance tests of Cancellation (issue 6) with several actors in one process: tractor's
// Context.cancel(), the raise-or-absorb rule, the open_context exit algorithm and actor-level
// cancel (tractor-context-spec.md §3), ported from the spec's §5 matrix, plus the resource and
// corner cases of DESIGN.md §4.4-§4.8.
//
// Spec §5 scenarios ported here: #3-14 (test_simple_context), #15-22 (test_parent_cancels),
// #25-40 (test_parent_exits_ctx_after_child_enters_stream, HEAD variant), #41, #42, #69-70 (OoB
// cancel of a context entered on another thread), #71-72 (real error beats cancellation), #85-86
// (parent cancels a child that would fail) and #87 (a child actor cancels itself). The table
// "spec case -> test" is docs/protocol.d/cancel_tests.md.
//
// Mapping of tractor's Python to C++ (DESIGN.md §4 wins where the spec differs):
//  - tractor's RuntimeError for misuse is our InvalidOperation (a stream opened after the
//    child's own cancel());
//  - "KeyboardInterrupt" is KeyboardInterrupt below, an object NOT derived from std::exception,
//    and "ValueError" is std::invalid_argument;
//  - "sleep forever" is Context::sleep_for(kSleepForever) or a blocking receive(): cancellable,
//    and a cancel that never comes ends in the watchdog's abort naming the test;
//  - tractor's timeouts (0.5 s, 0.616 s) become deadlines: a test asserts that the thing
//    happens (cancel_acked(), the child's cleanup ran), never how fast. Our explicit cancel()
//    and cancel_actor() calls pass kCancelWait instead of the 616/500 ms defaults, so a slow
//    sanitizer build cannot turn a late ack into a failure; the implicit cancel() of the
//    open_context error path keeps its 616 ms default, so those tests check the ack only when
//    it was recorded;
//  - "the child sleeps 0.5 s before ..." becomes a wait for the condition the sleep stood for;
//  - trio's `move_on_after(t): await ctx.wait_for_result()` is a nested cancel scope (the
//    library's private CancelScope) cancelled once the waiting thread sleeps in the wait;
//  - object identity (`is`) is exception_ptr equality (same object) or the address of the
//    caught object.
//
// Every test runs in its own namespace, asserts that its actors left no /dev/shm object behind,
// and runs under a watchdog. Waits are on conditions with deadlines (test::wait_until).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <optional>
#include <ostream>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "context_support.hpp"
#include "core/cancel_scope.hpp"
#include "error_as.hpp"
#include "namespace_guard.hpp"
#include "process.hpp"
#include "shmctx/actor.hpp"
#include "shmctx/context.hpp"
#include "shmctx/errors.hpp"
#include "shmctx/payload.hpp"

namespace shmctx {

// gtest printers (found by ADL, hence outside the unnamed namespace; internal linkage).
[[maybe_unused]] static void PrintTo(const Uid& uid, std::ostream* os) { *os << uid.to_string(); }
[[maybe_unused]] static void PrintTo(State s, std::ostream* os) { *os << to_string(s); }

namespace {

using namespace std::chrono_literals;
using test::body_must_not_run;
using test::current_tid;
using test::error_as;
using test::expect_sequential_contexts_leak_nothing;
using test::thread_state;
using ::testing::HasSubstr;

/// Bound of every wait on a condition: generous, since sanitizer builds run many times slower.
constexpr auto kDeadline = 20s;
/// Deadline of the tests' explicit cancel() / cancel_actor() calls (see the file comment).
constexpr auto kCancelWait = kDeadline;
/// A whole test must finish within this, else the watchdog aborts the binary.
constexpr auto kTestLimit = 120s;
/// "Sleep forever": only a cancellation ends it (the watchdog ends a test whose cancel is lost).
constexpr auto kSleepForever = std::chrono::hours(1);

/// tractor's KeyboardInterrupt: an error that is not a std::exception (and not shmctx::Cancelled).
struct KeyboardInterrupt {
    const char* what() const noexcept { return "KeyboardInterrupt"; }
};
/// tractor's ValueError.
using ValueError = std::invalid_argument;

/// "std::invalid_argument: ..." etc., for failure messages.
std::string describe(const std::exception_ptr& e) {
    if (!e) return "no error";
    try {
        std::rethrow_exception(e);
    } catch (const std::exception& x) {
        return std::string(typeid(x).name()) + ": " + x.what();
    } catch (const Cancelled&) {
        return "shmctx::Cancelled";
    } catch (const KeyboardInterrupt&) {
        return "KeyboardInterrupt";
    } catch (...) {
        return "an unknown object";
    }
}

/// `e` is a ContextCancelled requested by `canceller` and shipped by `src`.
void expect_ctxc(const std::exception_ptr& e, const Uid& canceller, const Uid& src) {
    const auto* ctxc = error_as<ContextCancelled>(e);
    ASSERT_NE(ctxc, nullptr) << "not a ContextCancelled: " << describe(e);
    EXPECT_EQ(ctxc->canceller(), canceller) << ctxc->what();
    EXPECT_EQ(ctxc->src_uid(), src) << ctxc->what();
    EXPECT_EQ(ctxc->boxed_type_name(), "ContextCancelled");
}

/// tractor's `_state` flag of a child task: true while the endpoint runs; its "finally" (this
/// guard's destructor, which runs before the runtime ships the task's terminal) clears it.
class ClearOnExit {
public:
    explicit ClearOnExit(std::atomic<bool>& flag) : flag_(flag) { flag_ = true; }
    ~ClearOnExit() { flag_ = false; }
    ClearOnExit(const ClearOnExit&) = delete;
    ClearOnExit& operator=(const ClearOnExit&) = delete;

private:
    std::atomic<bool>& flag_;
};

/// tractor's simple_setup_teardown: started(data + 1), then returns "yo", or sleeps until
/// cancelled when `block_forever`. `state` is true while it runs.
Endpoint simple_setup_teardown(std::atomic<bool>& state, bool block_forever) {
    return [&state, block_forever](Context& ctx, const Payload& args) -> Payload {
        const ClearOnExit finally(state);
        ctx.started(Payload::value(args.value<std::int64_t>() + 1));
        if (block_forever) ctx.sleep_for(kSleepForever);
        return Payload::value("yo");
    };
}

/// A child endpoint that sleeps until cancelled; `sleeping` is set right before the sleep and
/// `cancelled` when the sleep raised Cancelled.
struct Sleeper {
    std::atomic<bool> sleeping{false};
    std::atomic<bool> cancelled{false};
    Endpoint endpoint() {
        return [this](Context& ctx, const Payload&) -> Payload {
            ctx.started();
            try {
                sleeping = true;
                ctx.sleep_for(kSleepForever);
            } catch (const Cancelled&) {
                cancelled = true;
                throw;
            }
            return Payload::value("slept through");
        };
    }
};

/// tractor's `with move_on_after(t): await ctx.wait_for_result()` while the child blocks: the
/// wait runs in a nested cancel scope that a helper cancels once this thread sleeps in it (the
/// "timeout"; no clock involved). Returns the outcome if the wait returned (it must not).
std::optional<Outcome> wait_for_result_until_timeout(Context& ctx) {
    detail::CancelScope timeout(detail::current_scope());
    const pid_t waiter = current_tid();
    std::atomic<bool> done{false};
    std::jthread timer([&] {
        (void)test::wait_until([&] { return done.load() || thread_state(waiter) == 'S'; },
                               kDeadline);
        timeout.cancel(std::nullopt, "wait_for_result timeout");
    });
    auto r = detail::run_in_scope(timeout, [&] { return ctx.wait_for_result(); });
    done = true;
    return r.value;
}

class CancelTest : public test::ActorTest {
protected:
    CancelTest() : ActorTest("cancel", kTestLimit) {}
};

// ---------------------------------------------------------------------------------------------
// Spec §5 #3-14: test_simple_context [error_parent x child_blocks_forever x open_stream]

enum class ParentError { none, value_error, keyboard_interrupt };

std::string name_of(ParentError e) {
    switch (e) {
        case ParentError::none:
            return "NoError";
        case ParentError::value_error:
            return "ValueError";
        case ParentError::keyboard_interrupt:
            return "KeyboardInterrupt";
    }
    return "?";
}

class SimpleContext : public CancelTest,
                      public ::testing::WithParamInterface<std::tuple<ParentError, bool, bool>> {};

// The parent checks started()'s value (data + 1), then the child's state (it blocks) or its
// result (it returned "yo"); then, with or without a stream the child never opens, raises its
// error or cancels. No error: the run completes (cancel() after the child returned is a no-op,
// the result stays "yo"; a cancel inside the stream is absorbed at exit). An error: it propagates
// unchanged (the very object), and the error path called cancel(). Always: the child's cleanup ran.
TEST_P(SimpleContext, ErrorsPropagateUnchangedAndCancelsAreAbsorbed) {
    const auto [error, child_blocks, open_stream] = GetParam();
    std::atomic<bool> state{false};
    Actor parent("parent", options());
    Actor child("child", options());
    child.expose("simple_setup_teardown", simple_setup_teardown(state, child_blocks));
    Portal portal = parent.connect("child", kDeadline);

    const void* thrown = nullptr;
    auto raise_error = [&] {
        if (error == ParentError::value_error) {
            try {
                throw ValueError("the parent's body failed");
            } catch (const ValueError& e) {
                thrown = &e;
                throw;
            }
        }
        if (error == ParentError::keyboard_interrupt) {
            try {
                throw KeyboardInterrupt{};
            } catch (const KeyboardInterrupt& e) {
                thrown = &e;
                throw;
            }
        }
    };
    std::optional<Context> handle;
    std::optional<Outcome> outcome;
    std::exception_ptr escaped;
    try {
        auto r = portal.open_context(
            "simple_setup_teardown", Payload::value(10), [&](Context& ctx, const Payload& sent) {
                handle.emplace(ctx.handle());
                EXPECT_EQ(sent.value<std::int64_t>(), 11);
                if (child_blocks) {
                    EXPECT_TRUE(state.load()) << "the child is not in its task";
                } else {
                    EXPECT_EQ(ctx.wait_for_result().value().value<std::string>(), "yo");
                }
                if (open_stream) {
                    auto stream = ctx.open_stream();  // the child never opens its side
                    raise_error();
                    if (child_blocks) ctx.cancel(kCancelWait);
                    // else: our Stop reaches a finished child and is ignored
                } else {
                    raise_error();
                    ctx.cancel(kCancelWait);  // after the child returned: a no-op
                }
            });
        outcome = r.outcome;
    } catch (...) {
        escaped = std::current_exception();
    }

    ASSERT_TRUE(handle.has_value());
    EXPECT_TRUE(test::wait_until([&] { return !state.load(); }, kDeadline))
        << "the child's cleanup (tractor's finally) did not run";
    if (error == ParentError::none) {
        ASSERT_EQ(escaped, nullptr) << describe(escaped);
        ASSERT_TRUE(outcome.has_value());
        if (child_blocks) {
            EXPECT_TRUE(outcome->is_absorbed_cancel());
            expect_ctxc(outcome->error(), parent.uid(), child.uid());
            EXPECT_TRUE(handle->cancel_called());
            EXPECT_TRUE(handle->cancel_acked());
            EXPECT_EQ(handle->canceller(), parent.uid());
            EXPECT_EQ(handle->remote_error(), outcome->error());
            EXPECT_EQ(handle->maybe_error(), outcome->error());
            EXPECT_EQ(handle->local_error(), outcome->error());
            EXPECT_EQ(handle->state(), State::self_cancelled);
        } else {
            ASSERT_TRUE(outcome->has_value()) << describe(outcome->error());
            EXPECT_EQ(outcome->value().value<std::string>(), "yo");
            EXPECT_EQ(handle->cancel_called(), !open_stream);
            EXPECT_FALSE(handle->cancel_acked()) << "a cancel after the Return acked a ctxc";
            EXPECT_EQ(handle->remote_error(), nullptr);
            EXPECT_EQ(handle->maybe_error(), nullptr);
            EXPECT_EQ(handle->state(), State::result_returned);
        }
    } else {
        ASSERT_NE(escaped, nullptr) << "the body's error did not propagate";
        if (error == ParentError::value_error) {
            const auto* e = error_as<ValueError>(escaped);
            ASSERT_NE(e, nullptr) << "replaced by " << describe(escaped);
            EXPECT_EQ(static_cast<const void*>(e), thrown) << "not the object the body threw";
            EXPECT_EQ(dynamic_cast<const Error*>(e), nullptr) << "replaced by " << e->what();
        } else {
            const auto* e = error_as<KeyboardInterrupt>(escaped);
            ASSERT_NE(e, nullptr) << "replaced by " << describe(escaped);
            EXPECT_EQ(static_cast<const void*>(e), thrown) << "not the object the body threw";
        }
        EXPECT_TRUE(handle->cancel_called()) << "the error path did not call cancel()";
        EXPECT_EQ(handle->local_error(), escaped);
        if (child_blocks) {
            // The error path's cancel() waits 616 ms for the ack: when it was recorded, it is our
            // own cancel's ctxc, and (remote precedence) the outcome, while the body's error is
            // what propagated (spec §3.5 step 2).
            if (handle->remote_error() != nullptr) {
                expect_ctxc(handle->remote_error(), parent.uid(), child.uid());
                EXPECT_TRUE(handle->cancel_acked());
                EXPECT_EQ(handle->maybe_error(), handle->remote_error());
                EXPECT_EQ(handle->outcome().error(), handle->remote_error());
            } else {
                RecordProperty("ack", "not within the error path's 616 ms");
            }
        } else {
            EXPECT_EQ(handle->remote_error(), nullptr);
            EXPECT_FALSE(handle->cancel_acked());
            EXPECT_EQ(handle->maybe_error(), escaped);
        }
    }
    EXPECT_EQ(parent.open_contexts(), 0U);
    EXPECT_TRUE(test::wait_until([&] { return child.open_contexts() == 0; }, kDeadline));
}

INSTANTIATE_TEST_SUITE_P(Matrix, SimpleContext,
                         ::testing::Combine(::testing::Values(ParentError::none,
                                                              ParentError::value_error,
                                                              ParentError::keyboard_interrupt),
                                            ::testing::Bool(), ::testing::Bool()),
                         [](const auto& p) {
                             return name_of(std::get<0>(p.param)) +
                                    (std::get<1>(p.param) ? "ChildBlocks" : "ChildReturns") +
                                    (std::get<2>(p.param) ? "InStream" : "NoStream");
                         });

// ---------------------------------------------------------------------------------------------
// Spec §5 #25-40: test_parent_exits_ctx_after_child_enters_stream (HEAD)
// [use_ctx_cancel_method x rent_wait_for_msg x child_send_before_receive]

/// tractor's expect_cancelled: started(), opens its stream, optionally sends "yo" first, then
/// echoes until it is cancelled, checking the child-side state of spec §3.2 while Cancelled
/// unwinds it.
struct ExpectCancelled {
    std::atomic<bool> state{false};
    std::atomic<bool> in_loop{false};
    std::atomic<bool> cancelled{false};
    Endpoint endpoint(Uid parent_uid, bool send_before_receive) {
        return [this, parent_uid, send_before_receive](Context& ctx, const Payload&) -> Payload {
            const ClearOnExit finally(state);
            ctx.started();
            try {
                auto stream = ctx.open_stream();
                if (send_before_receive) stream.send("yo");
                in_loop = true;
                for (const auto& msg : stream) stream.send(msg.view());
            } catch (const Cancelled&) {
                cancelled = true;
                EXPECT_TRUE(ctx.cancelled()) << "the scope was not cancelled";
                EXPECT_FALSE(ctx.cancelled_caught()) << "nothing is caught before the boundary";
                EXPECT_EQ(ctx.canceller(), parent_uid);
                EXPECT_FALSE(ctx.cancel_called()) << "the child did not call cancel()";
                EXPECT_EQ(ctx.maybe_error(), nullptr);
                EXPECT_FALSE(ctx.has_outcome());
                throw;
            }
            throw std::runtime_error("the child was not cancelled: its stream ended");
        };
    }
};

enum class CancelWhen { never, pre_stream, post_stream_open, post_stream_close };

std::string name_of(CancelWhen c) {
    switch (c) {
        case CancelWhen::never:
            return "NoCancelMethod";
        case CancelWhen::pre_stream:
            return "PreStream";
        case CancelWhen::post_stream_open:
            return "PostStreamOpen";
        case CancelWhen::post_stream_close:
            return "PostStreamClose";
    }
    return "?";
}

class ParentExitsAfterChildEntersStream
    : public CancelTest,
      public ::testing::WithParamInterface<std::tuple<CancelWhen, bool, bool>> {};

// The child sits in its echo loop. 'pre_stream': the parent cancels, then open_stream() raises
// the ack (ctxc, canceller = parent), which escapes the body and open_context absorbs. The
// others cancel and exit silently: 'never' (tractor's use_ctx_cancel_method=False) first waits
// for the result with a timeout when rent_wait_for_msg (the child never returns by itself);
// tractor's HEAD test takes that same path for 'post_*' (its nesting), which we replace by the
// names' intent: the parent opens its stream, with rent_wait_for_msg exchanges one message (the
// child's "yo", or an echoed "ping"), and cancels with the stream open ('post_stream_open') or
// cancels and then closes it explicitly ('post_stream_close'; closing first would end the
// child's loop by EndOfChannel instead of a cancel). After exit, always: cancel_acked, the
// identity remote_error == local_error == maybe_error == outcome, a new open_stream() raises the
// ctxc, the child's cleanup ran, the link is still up; for the explicit methods no Cancelled
// unwound the parent's scope.
TEST_P(ParentExitsAfterChildEntersStream, CancelIsAbsorbedAndTheLinkSurvives) {
    const auto [when, rent_wait_for_msg, child_sends_first] = GetParam();
    ExpectCancelled probe;
    Actor parent("parent", options());
    Actor child("child", options());
    child.expose("expect_cancelled", probe.endpoint(parent.uid(), child_sends_first));
    child.expose("ping", [](Context&, const Payload&) { return Payload::value("pong"); });
    Portal portal = parent.connect("child", kDeadline);

    std::optional<Context> handle;
    std::optional<Outcome> outcome;
    std::exception_ptr escaped;
    bool open_stream_raised = false;
    try {
        auto r =
            portal.open_context("expect_cancelled", {}, [&](Context& ctx, const Payload& sent) {
                handle.emplace(ctx.handle());
                EXPECT_TRUE(sent.empty());
                EXPECT_TRUE(probe.state.load());
                ASSERT_TRUE(test::wait_until([&] { return probe.in_loop.load(); }, kDeadline));
                switch (when) {
                    case CancelWhen::pre_stream: {
                        ctx.cancel(kCancelWait);
                        EXPECT_TRUE(ctx.cancel_acked());
                        try {
                            auto stream = ctx.open_stream();
                            ADD_FAILURE() << "open_stream() after our acked cancel did not raise";
                        } catch (const ContextCancelled& e) {
                            open_stream_raised = true;
                            EXPECT_EQ(e.canceller(), parent.uid());
                            EXPECT_EQ(&e, error_as<ContextCancelled>(ctx.remote_error()))
                                << "not the recorded remote error";
                            throw;  // open_context absorbs it
                        }
                        break;
                    }
                    case CancelWhen::never:
                        if (rent_wait_for_msg) {
                            const auto o = wait_for_result_until_timeout(ctx);
                            EXPECT_FALSE(o.has_value()) << "wait_for_result() returned while "
                                                           "the child blocks";
                        }
                        ctx.cancel(kCancelWait);
                        break;
                    case CancelWhen::post_stream_open:
                    case CancelWhen::post_stream_close: {
                        auto stream = ctx.open_stream();
                        if (rent_wait_for_msg) {
                            if (child_sends_first) {
                                EXPECT_EQ(stream.receive().text(), "yo");
                            } else {
                                stream.send("ping");
                                EXPECT_EQ(stream.receive().text(), "ping");
                            }
                        }
                        ctx.cancel(kCancelWait);
                        EXPECT_TRUE(ctx.cancel_acked());
                        if (when == CancelWhen::post_stream_close) {
                            stream.close();
                            EXPECT_TRUE(stream.closed());
                        }
                        break;
                    }
                }
            });
        outcome = r.outcome;
    } catch (...) {
        escaped = std::current_exception();
    }

    ASSERT_EQ(escaped, nullptr) << describe(escaped);
    ASSERT_TRUE(handle.has_value());
    ASSERT_TRUE(outcome.has_value());
    EXPECT_EQ(open_stream_raised, when == CancelWhen::pre_stream);
    EXPECT_TRUE(outcome->is_absorbed_cancel());
    expect_ctxc(outcome->error(), parent.uid(), child.uid());
    EXPECT_TRUE(handle->cancel_called());
    EXPECT_TRUE(handle->cancel_acked());
    EXPECT_EQ(handle->canceller(), parent.uid());
    const std::exception_ptr re = handle->remote_error();
    EXPECT_EQ(handle->local_error(), re);
    EXPECT_EQ(handle->maybe_error(), re);
    EXPECT_EQ(handle->outcome().error(), re);
    EXPECT_EQ(outcome->error(), re);
    if (when != CancelWhen::never) {
        EXPECT_FALSE(handle->cancelled_caught()) << "a Cancelled unwound the parent's scope";
    }
    try {
        auto again = handle->open_stream();
        ADD_FAILURE() << "open_stream() after the exit did not raise";
    } catch (const ContextCancelled& e) {
        EXPECT_EQ(&e, error_as<ContextCancelled>(re));
    }
    EXPECT_TRUE(probe.cancelled) << "the child's task did not see Cancelled";
    EXPECT_TRUE(test::wait_until([&] { return !probe.state.load(); }, kDeadline));
    EXPECT_EQ(parent.links(), 1U);
    EXPECT_EQ(portal.run("ping").value<std::string>(), "pong") << "the link is still usable";
}

INSTANTIATE_TEST_SUITE_P(Matrix, ParentExitsAfterChildEntersStream,
                         ::testing::Combine(::testing::Values(CancelWhen::never,
                                                              CancelWhen::pre_stream,
                                                              CancelWhen::post_stream_open,
                                                              CancelWhen::post_stream_close),
                                            ::testing::Bool(), ::testing::Bool()),
                         [](const auto& p) {
                             return name_of(std::get<0>(p.param)) +
                                    (std::get<1>(p.param) ? "ParentWaits" : "ParentNoWait") +
                                    (std::get<2>(p.param) ? "ChildSendsFirst"
                                                          : "ChildReceivesFirst");
                         });

// ---------------------------------------------------------------------------------------------
// Spec §5 #41, #42

// Spec §5 #41: the parent's main thread iterates the stream; a second thread sends "yo", then
// cancels the context, then checks that the child's task ended. No error escapes: the iteration
// ends (EndOfChannel) or raises our own ctxc, which open_context absorbs. The link stays up.
TEST_F(CancelTest, MultitaskParentCancelsFromNonrootTask) {
    ExpectCancelled probe;
    Actor parent("parent", options());
    Actor child("child", options());
    child.expose("expect_cancelled", probe.endpoint(parent.uid(), false));
    child.expose("ping", [](Context&, const Payload&) { return Payload::value("pong"); });
    Portal portal = parent.connect("child", kDeadline);

    std::atomic<bool> child_ended_seen{false};
    std::size_t received = 0;
    std::optional<Context> handle;
    std::optional<Outcome> outcome;
    std::exception_ptr escaped;
    try {
        auto r = portal.open_context("expect_cancelled", {}, [&](Context& ctx, const Payload&) {
            handle.emplace(ctx.handle());
            auto stream = ctx.open_stream();
            {
                std::jthread canceller([&] {
                    stream.send("yo");  // the only sending thread
                    ctx.cancel(kCancelWait);
                    child_ended_seen =
                        test::wait_until([&] { return !probe.state.load(); }, kDeadline);
                });
                try {
                    for (const auto& msg : stream) {
                        EXPECT_EQ(msg.text(), "yo");
                        ++received;
                    }
                } catch (const ContextCancelled& e) {
                    EXPECT_EQ(e.canceller(), parent.uid());
                    canceller.join();
                    throw;  // must be allowed to reach open_context, which absorbs it
                }
            }
        });
        outcome = r.outcome;
    } catch (...) {
        escaped = std::current_exception();
    }
    ASSERT_EQ(escaped, nullptr) << describe(escaped);
    ASSERT_TRUE(outcome.has_value());
    EXPECT_TRUE(outcome->is_absorbed_cancel());
    expect_ctxc(outcome->error(), parent.uid(), child.uid());
    EXPECT_TRUE(handle->cancel_acked());
    EXPECT_LE(received, 1U);
    EXPECT_TRUE(child_ended_seen) << "the child's task was still running after the ack";
    EXPECT_TRUE(probe.cancelled);
    EXPECT_EQ(parent.links(), 1U);
    EXPECT_EQ(portal.run("ping").value<std::string>(), "pong");
}

// Spec §5 #42: the child cancels itself before started(); its open_stream() then raises
// InvalidOperation (tractor: RuntimeError), its next sleep raises Cancelled. The parent's
// open_context raises at entry a ContextCancelled whose canceller is the child, saying "itself".
TEST_F(CancelTest, ChildCancelsBeforeStartedRaisesCtxcAtEntry) {
    std::atomic<bool> child_open_stream_refused{false};
    std::atomic<bool> child_sleep_cancelled{false};
    Actor parent("parent", options());
    Actor child("child", options());
    child.expose("cancels_itself", [&](Context& ctx, const Payload&) -> Payload {
        ctx.cancel();
        EXPECT_TRUE(ctx.cancel_called());
        try {
            auto stream = ctx.open_stream();
        } catch (const InvalidOperation&) {
            child_open_stream_refused = true;
        }
        try {
            ctx.sleep_for(kSleepForever);
        } catch (const Cancelled&) {
            child_sleep_cancelled = true;
            throw;
        }
        return Payload::value("slept through");
    });
    Portal portal = parent.connect("child", kDeadline);
    std::atomic<bool> body_ran{false};
    try {
        portal.open_context("cancels_itself", {}, body_must_not_run(body_ran));
        ADD_FAILURE() << "open_context returned";
    } catch (const ContextCancelled& e) {
        EXPECT_EQ(e.canceller(), child.uid());
        EXPECT_EQ(e.src_uid(), child.uid());
        EXPECT_EQ(e.boxed_type_name(), "ContextCancelled");
        EXPECT_TRUE(e.boxed_is<ContextCancelled>());
        EXPECT_THAT(e.message(), HasSubstr("itself"));
        EXPECT_THAT(e.what(), HasSubstr("itself"));
    }
    EXPECT_FALSE(body_ran);
    EXPECT_TRUE(child_open_stream_refused);
    EXPECT_TRUE(child_sleep_cancelled);
    EXPECT_EQ(parent.open_contexts(), 0U);
}

// ---------------------------------------------------------------------------------------------
// Spec §5 #71-72: test_unmasked_remote_exc (a real error beats cancellation, spec §3.2)

// (a) The child sleeps; the parent cancels. The child's cleanup takes a while (a plain, not
// cancellable, sleep: the scenario's cleanup time, not a synchronisation), then checkpoints,
// which raises Cancelled again (level-triggered). The parent's wait_for_result() returns the
// ctxc, which is the outcome.
TEST_F(CancelTest, CancelledChildCheckpointingInItsCleanupStillShipsCtxc) {
    std::atomic<bool> sleeping{false};
    std::atomic<bool> cleanup_checkpoint_raised{false};
    Actor parent("parent", options());
    Actor child("child", options());
    child.expose("sleep_n_chkpt_in_finally", [&](Context& ctx, const Payload&) -> Payload {
        ctx.started();
        try {
            sleeping = true;
            ctx.sleep_for(kSleepForever);
        } catch (const Cancelled&) {
            // tractor's cleanup sleeps 0.1 s (shielded) first; how long it takes changes
            // nothing here: the checkpoint raises again because cancellation is level-triggered.
            try {
                ctx.checkpoint();
            } catch (const Cancelled&) {
                cleanup_checkpoint_raised = true;
            }
            throw;
        }
        return Payload::value("slept through");
    });
    Portal portal = parent.connect("child", kDeadline);
    auto r = portal.open_context("sleep_n_chkpt_in_finally", {}, [&](Context& ctx, const Payload&) {
        ASSERT_TRUE(test::wait_until([&] { return sleeping.load(); }, kDeadline));
        ctx.cancel(kCancelWait);
        const Outcome o = ctx.wait_for_result();
        EXPECT_TRUE(o.is_absorbed_cancel());
        expect_ctxc(o.error(), parent.uid(), child.uid());
        EXPECT_EQ(o.error(), ctx.outcome().error());
    });
    EXPECT_TRUE(r.outcome.is_absorbed_cancel());
    EXPECT_TRUE(cleanup_checkpoint_raised) << "a checkpoint in a cancelled scope did not raise";
}

// (b) The child raises a real error; in its "finally" (the catch-all handler that cleans up and
// rethrows) it waits until the parent's cancel arrived and then hits a checkpoint: the Cancelled
// that raises masks the real error (C++ replaces the exception in flight, as Python's finally
// does). The runtime must ship the real error, not a ctxc (spec §3.2, §6.13: a Cancelled raised
// while a non-cancel error unwinds must not replace it), and the parent must raise it although
// it called cancel() (not absorbed).
TEST_F(CancelTest, RealErrorMaskedByACancelledInItsCleanupIsShippedUnmasked) {
    std::atomic<bool> in_cleanup{false};
    std::atomic<bool> cancel_seen_in_cleanup{false};
    Actor parent("parent", options());
    Actor child("child", options());
    child.expose("raise_then_chkpt_in_finally", [&](Context& ctx, const Payload&) -> Payload {
        ctx.started();
        try {
            throw std::runtime_error("the child's real error");
        } catch (...) {
            // The cleanup: not cancellable (tractor shields it) until the parent's cancel is in.
            in_cleanup = true;
            cancel_seen_in_cleanup = test::wait_until([&] { return ctx.cancelled(); }, kDeadline);
            ctx.checkpoint();  // raises Cancelled, masking the runtime_error in flight
            throw;
        }
    });
    Portal portal = parent.connect("child", kDeadline);
    std::optional<Context> handle;
    std::exception_ptr raised_by_wait;
    try {
        portal.open_context("raise_then_chkpt_in_finally", {}, [&](Context& ctx, const Payload&) {
            handle.emplace(ctx.handle());
            ASSERT_TRUE(test::wait_until([&] { return in_cleanup.load(); }, kDeadline));
            ctx.cancel(kCancelWait);
            try {
                (void)ctx.wait_for_result();
                ADD_FAILURE() << "wait_for_result() returned";
            } catch (...) {
                raised_by_wait = std::current_exception();
                throw;
            }
        });
        ADD_FAILURE() << "open_context returned";
    } catch (const ContextCancelled& e) {
        ADD_FAILURE() << "the child's real error was masked by its cancellation: " << e.what();
    } catch (const RemoteActorError& e) {
        EXPECT_TRUE(e.boxed_is<std::runtime_error>()) << e.boxed_type_name() << ": " << e.what();
        EXPECT_THAT(e.message(), HasSubstr("the child's real error"));
        EXPECT_EQ(e.src_uid(), child.uid());
        EXPECT_EQ(std::current_exception(), raised_by_wait);
    }
    EXPECT_TRUE(cancel_seen_in_cleanup) << "the parent's cancel never reached the child";
    ASSERT_TRUE(handle.has_value());
    EXPECT_TRUE(handle->cancel_called());
    EXPECT_FALSE(handle->cancel_acked());
    EXPECT_EQ(handle->state(), State::errored);
}

// ---------------------------------------------------------------------------------------------
// DESIGN.md §4.6: shmctx::Cancelled is not a std::exception

class StdExceptionHandler : public CancelTest, public ::testing::WithParamInterface<bool> {};

// An endpoint that wraps its blocking call (a sleep, or a stream receive) in
// `catch (const std::exception&)` is still cancelled: the handler never sees the Cancelled, the
// parent's cancel() is acked and its open_context returns the absorbed ctxc.
TEST_P(StdExceptionHandler, DoesNotSwallowCancelled) {
    const bool in_receive = GetParam();
    std::atomic<bool> blocking{false};
    std::atomic<bool> swallowed{false};
    std::atomic<bool> cancelled{false};
    Actor parent("parent", options());
    Actor child("child", options());
    child.expose("careless", [&](Context& ctx, const Payload&) -> Payload {
        ctx.started();
        try {
            try {
                blocking = true;
                if (in_receive) {
                    auto stream = ctx.open_stream();
                    (void)stream.receive();
                } else {
                    ctx.sleep_for(kSleepForever);
                }
            } catch (const std::exception&) {
                swallowed = true;
                return Payload::value("swallowed");
            }
        } catch (const Cancelled&) {
            cancelled = true;
            throw;
        }
        return Payload::value("not cancelled");
    });
    Portal portal = parent.connect("child", kDeadline);
    std::optional<Context> handle;
    auto r = portal.open_context("careless", {}, [&](Context& ctx, const Payload&) {
        handle.emplace(ctx.handle());
        ASSERT_TRUE(test::wait_until([&] { return blocking.load(); }, kDeadline));
        ctx.cancel(kCancelWait);
        EXPECT_TRUE(ctx.cancel_acked());
    });
    EXPECT_FALSE(swallowed) << "catch (const std::exception&) caught shmctx::Cancelled";
    EXPECT_TRUE(cancelled);
    EXPECT_TRUE(r.outcome.is_absorbed_cancel()) << describe(r.outcome.error());
    expect_ctxc(r.outcome.error(), parent.uid(), child.uid());
    ASSERT_TRUE(handle.has_value());
    EXPECT_EQ(handle->state(), State::self_cancelled);
}

INSTANTIATE_TEST_SUITE_P(BlockingCall, StdExceptionHandler, ::testing::Bool(),
                         [](const auto& p) { return p.param ? "Receive" : "SleepFor"; });

// ---------------------------------------------------------------------------------------------
// Cancel under back-pressure (DESIGN.md §4.2, §4.4)

// Both data rings are full and neither side reads: the child filled the parent's inbound ring
// and is blocked in a send (on_full = block); the parent filled the child's inbound ring with
// try_send until `full`. The parent's cancel() still reaches the child (the request travels on
// the control ring), the blocked send raises Cancelled, and the ack is recorded.
TEST_F(CancelTest, CancelWhileBothDataRingsAreFullIsAcked) {
    std::atomic<std::uint64_t> child_filled{0};
    std::atomic<bool> child_send_cancelled{false};
    Actor parent("parent", options());
    Actor child("child", options());
    child.expose("filler", [&](Context& ctx, const Payload&) -> Payload {
        ctx.started();
        StreamOptions so;
        so.on_full = OnFull::block;
        auto stream = ctx.open_stream(so);
        std::uint64_t sent = 0;
        for (;;) {
            const SendStatus st = stream.try_send("from the child");
            if (st == SendStatus::full) break;
            if (st != SendStatus::ok) {
                throw std::runtime_error("child try_send: " + std::string(to_string(st)));
            }
            if (++sent > 1'000'000) throw std::runtime_error("the parent's ring is never full");
        }
        child_filled = sent;
        try {
            stream.send("one too many");  // blocks: the parent does not read
            ADD_FAILURE() << "the blocked send returned";
        } catch (const Cancelled&) {
            child_send_cancelled = true;
            throw;
        }
        return Payload::value("not cancelled");
    });
    Portal portal = parent.connect("child", kDeadline);
    std::uint64_t parent_filled = 0;
    std::optional<Context> handle;
    auto r = portal.open_context("filler", {}, [&](Context& ctx, const Payload&) {
        handle.emplace(ctx.handle());
        auto stream = ctx.open_stream();
        for (;;) {
            const SendStatus st = stream.try_send("from the parent");
            if (st == SendStatus::full) break;
            ASSERT_EQ(st, SendStatus::ok) << to_string(st);
            ASSERT_LT(++parent_filled, 1'000'000U) << "the child's ring is never full";
        }
        // The child filled our ring, and its blocking send found it full (a second full event
        // after the try_send that ended its filling).
        ASSERT_TRUE(test::wait_until(
            [&] { return child_filled.load() != 0 && stream.inbound_counters().full_events >= 2; },
            kDeadline))
            << "filled " << child_filled.load() << ", full events "
            << stream.inbound_counters().full_events;
        EXPECT_EQ(stream.inbound_counters().sent, child_filled.load());
        EXPECT_EQ(stream.outbound_counters().received, 0U) << "the child read";
        ctx.cancel(kCancelWait);
        EXPECT_TRUE(ctx.cancel_acked()) << "cancel() returned without the ack";
    });
    EXPECT_GT(parent_filled, 0U);
    EXPECT_TRUE(child_send_cancelled) << "the blocked send did not raise Cancelled";
    EXPECT_TRUE(r.outcome.is_absorbed_cancel()) << describe(r.outcome.error());
    expect_ctxc(r.outcome.error(), parent.uid(), child.uid());
    EXPECT_TRUE(test::wait_until(
        [&] { return parent.open_contexts() == 0 && child.open_contexts() == 0; }, kDeadline));
}

// ---------------------------------------------------------------------------------------------
// Load: 1,000 cancelled contexts leak nothing

// 1,000 contexts opened and cancelled in sequence: the parent's body cancels right after
// started() (every second one after a message each way on a stream, so both data rings are
// carved), and every 10th is cancelled from outside instead: an enclosing cancel scope cancelled
// while the body waits in receive(), whose open_context cancels the remote task on its way out
// (spec §3.5 step 2). No endpoint thread, registered context, ring (small arenas; allocated
// bytes stay flat) or /dev/shm object leaks.
TEST_F(CancelTest, ThousandCancelledContextsLeakNoThreadsContextsRingsOrFiles) {
    ActorOptions o = options();
    o.data_ring_bytes = std::size_t{16} * 1024;
    o.arena_bytes = std::size_t{4} << 20;  // ~120 leaked 32 KiB ring slots exhaust it
    Actor parent("parent", o);
    Actor child("child", o);
    child.expose("wait", [](Context& ctx, const Payload& args) -> Payload {
        ctx.started();
        auto stream = ctx.open_stream();
        if (args.value<bool>()) stream.send("ready");
        for (const auto& msg : stream) (void)msg;  // until cancelled (or the parent's Stop)
        return Payload::value("stopped");
    });
    Portal portal = parent.connect("child", kDeadline);

    auto one = [&](std::int64_t i) {
        if (i % 10 == 0) {
            detail::CancelScope outer;
            std::optional<Context> handle;
            const auto res = detail::run_in_scope(outer, [&] {
                (void)portal.open_context(
                    "wait", Payload::value(true), [&](Context& ctx, const Payload&) {
                        handle.emplace(ctx.handle());
                        auto stream = ctx.open_stream();
                        stream.send(Payload::value(i));
                        EXPECT_EQ(stream.receive().text(), "ready");
                        outer.cancel(parent.uid(), "enclosing cancel");
                        (void)stream.receive();  // raises Cancelled
                        ADD_FAILURE() << "receive() in a cancelled scope returned";
                    });
                ADD_FAILURE() << "open_context returned in a cancelled scope";
            });
            ASSERT_TRUE(res.cancelled()) << "context " << i;
            ASSERT_TRUE(handle.has_value());
            ASSERT_TRUE(handle->cancel_called()) << "context " << i << ": no cancel on the way out";
            return;
        }
        const bool with_stream = i % 2 == 1;
        auto r = portal.open_context("wait", Payload::value(with_stream),
                                     [&](Context& ctx, const Payload&) {
                                         if (with_stream) {
                                             auto stream = ctx.open_stream();
                                             stream.send(Payload::value(i));
                                             EXPECT_EQ(stream.receive().text(), "ready");
                                             ctx.cancel(kCancelWait);
                                         } else {
                                             ctx.cancel(kCancelWait);
                                         }
                                         ASSERT_TRUE(ctx.cancel_acked()) << "context " << i;
                                     });
        ASSERT_TRUE(r.outcome.is_absorbed_cancel())
            << "context " << i << ": " << describe(r.outcome.error());
    };

    expect_sequential_contexts_leak_nothing(parent, child, names(), o.data_ring_bytes,
                                            static_cast<std::int64_t>(test::scaled(1000, 50)), one);
}

// =============================================================================================
// Actor-level cancel: Actor::cancel(), Portal::cancel_actor() (spec §3.6, DESIGN.md §4.4, §4.6)

// ---------------------------------------------------------------------------------------------
// Spec §5 #15-22: test_parent_cancels [cancel_method x chk_ctx_result_before_exit x
// child_returns_early]

enum class CancelMethod { ctx, portal };

class ParentCancels : public CancelTest,
                      public ::testing::WithParamInterface<std::tuple<CancelMethod, bool, bool>> {};

// Early return (either method): the result is "yo", no error anywhere, an actor cancel does not
// touch the finished context. Blocking + ctx.cancel(): wait_for_result() returns (does not raise)
// our ctxc, remote_error == maybe_error (== local_error when set), silent exit, no Cancelled
// caught. Blocking + portal.cancel_actor(): wait_for_result() raises the ctxc (canceller: us,
// but this context did not call cancel()), the block raises it too, and again after the block.
TEST_P(ParentCancels, ResultAndExitFollowTheCancelMethod) {
    const auto [method, check_before_exit, child_returns_early] = GetParam();
    std::atomic<bool> state{false};
    Actor parent("parent", options());
    Actor child("child", options());
    child.expose("simple_setup_teardown", simple_setup_teardown(state, !child_returns_early));
    Portal portal = parent.connect("child", kDeadline);

    auto check_result = [&](Context& ctx) {
        if (child_returns_early) {
            const Outcome o = ctx.wait_for_result();
            ASSERT_TRUE(o.has_value()) << describe(o.error());
            EXPECT_EQ(o.value().value<std::string>(), "yo");
        } else if (method == CancelMethod::ctx) {
            const Outcome o = ctx.wait_for_result();  // returns the ctxc, does not raise
            EXPECT_TRUE(o.is_absorbed_cancel());
            expect_ctxc(o.error(), parent.uid(), child.uid());
            EXPECT_EQ(o.error(), ctx.maybe_error());
            EXPECT_EQ(o.error(), ctx.remote_error());
            if (ctx.local_error() != nullptr) {
                EXPECT_EQ(ctx.local_error(), o.error());
            }
        } else {
            try {
                (void)ctx.wait_for_result();
                ADD_FAILURE() << "wait_for_result() returned after cancel_actor()";
            } catch (const ContextCancelled& e) {
                EXPECT_EQ(e.canceller(), parent.uid());
                EXPECT_EQ(std::current_exception(), ctx.maybe_error());
                throw;
            }
        }
    };

    std::optional<Context> handle;
    std::optional<Outcome> outcome;
    std::exception_ptr escaped;
    try {
        auto r = portal.open_context(
            "simple_setup_teardown", Payload::value(10), [&](Context& ctx, const Payload& sent) {
                handle.emplace(ctx.handle());
                EXPECT_EQ(sent.value<std::int64_t>(), 11);
                if (child_returns_early) {
                    // tractor sleeps 0.5 s here: wait for what it stands for, the Return.
                    ASSERT_TRUE(test::wait_until([&] { return ctx.has_outcome(); }, kDeadline));
                }
                if (method == CancelMethod::ctx) {
                    ctx.cancel(kCancelWait);
                } else {
                    EXPECT_TRUE(portal.cancel_actor(kCancelWait)) << "the actor cancel not acked";
                    EXPECT_TRUE(portal.cancel_called());
                }
                if (check_before_exit) check_result(ctx);
            });
        outcome = r.outcome;
    } catch (...) {
        escaped = std::current_exception();
    }

    ASSERT_TRUE(handle.has_value());
    EXPECT_TRUE(test::wait_until([&] { return !state.load(); }, kDeadline));
    if (method == CancelMethod::portal) {
        EXPECT_TRUE(portal.cancel_called());
        EXPECT_TRUE(child.cancel_called());
        EXPECT_EQ(child.cancel_caller(), parent.uid());
        EXPECT_TRUE(child.wait_cancelled(kDeadline));
    }
    if (child_returns_early) {
        ASSERT_EQ(escaped, nullptr) << describe(escaped);
        ASSERT_TRUE(outcome.has_value());
        ASSERT_TRUE(outcome->has_value()) << describe(outcome->error());
        EXPECT_EQ(outcome->value().value<std::string>(), "yo");
        EXPECT_EQ(handle->maybe_error(), nullptr);
        EXPECT_EQ(handle->remote_error(), nullptr);
        EXPECT_FALSE(handle->cancel_acked());
        EXPECT_EQ(handle->cancel_called(), method == CancelMethod::ctx);
        EXPECT_EQ(handle->outcome().value().value<std::string>(), "yo");
        if (!check_before_exit) {
            EXPECT_EQ(handle->wait_for_result().value().value<std::string>(), "yo");
        }
    } else if (method == CancelMethod::ctx) {
        ASSERT_EQ(escaped, nullptr) << describe(escaped);
        ASSERT_TRUE(outcome.has_value());
        EXPECT_TRUE(outcome->is_absorbed_cancel());
        expect_ctxc(outcome->error(), parent.uid(), child.uid());
        EXPECT_EQ(outcome->error(), handle->maybe_error());
        EXPECT_EQ(outcome->error(), handle->remote_error());
        if (handle->local_error() != nullptr) {
            EXPECT_EQ(handle->local_error(), outcome->error());
        }
        EXPECT_TRUE(handle->cancel_acked());
        EXPECT_FALSE(handle->cancelled_caught()) << "a Cancelled unwound the parent's scope";
        if (!check_before_exit) check_result(*handle);
    } else {
        ASSERT_NE(escaped, nullptr) << "the block exit did not raise the actor cancel's ctxc";
        expect_ctxc(escaped, parent.uid(), child.uid());
        EXPECT_EQ(escaped, handle->maybe_error());
        EXPECT_EQ(escaped, handle->remote_error());
        EXPECT_EQ(handle->outcome().error(), escaped);
        EXPECT_FALSE(handle->cancel_called());
        EXPECT_FALSE(handle->cancel_acked());
        EXPECT_EQ(handle->canceller(), parent.uid());
        EXPECT_EQ(handle->state(), State::peer_cancelled);
        try {
            (void)handle->wait_for_result();  // checking again after exit raises again
            ADD_FAILURE() << "wait_for_result() after the exit returned";
        } catch (const ContextCancelled&) {
            EXPECT_EQ(std::current_exception(), escaped);
        }
    }
    EXPECT_EQ(parent.open_contexts(), 0U);
}

INSTANTIATE_TEST_SUITE_P(Matrix, ParentCancels,
                         ::testing::Combine(::testing::Values(CancelMethod::ctx,
                                                              CancelMethod::portal),
                                            ::testing::Bool(), ::testing::Bool()),
                         [](const auto& p) {
                             return std::string(std::get<0>(p.param) == CancelMethod::ctx
                                                    ? "CtxCancel"
                                                    : "PortalCancelActor") +
                                    (std::get<1>(p.param) ? "ResultInBlock" : "ResultAfterBlock") +
                                    (std::get<2>(p.param) ? "ChildReturnsEarly" : "ChildBlocks");
                         });

// ---------------------------------------------------------------------------------------------
// Spec §5 #69-70: test_cancel_ctx_with_parent_side_entered_in_bg_task [cancel_ctx]

class ParentEnteredOnAnotherThread : public CancelTest,
                                     public ::testing::WithParamInterface<bool> {};

// A background thread is inside an open_context body, asleep (not on the context). The main
// thread optionally cancels the context, then cancels the child actor, then waits for the
// result. With ctx.cancel(): the ack cancels the background body's scope (it is not receiving on
// the context), it exits silently, and wait_for_result() returns the ctxc. Without: the actor
// cancel's ctxc (canceller: us) interrupts the body, the block raises it, and wait_for_result()
// raises it in the main thread too.
TEST_P(ParentEnteredOnAnotherThread, OutOfBandCancelEndsTheBackgroundBody) {
    const bool cancel_ctx = GetParam();
    Sleeper sleeper;
    Actor parent("parent", options());
    Actor child("child", options());
    child.expose("sleeper", sleeper.endpoint());
    Portal portal = parent.connect("child", kDeadline);

    std::mutex m;
    std::optional<Context> handle;  // guarded by m
    std::atomic<bool> body_interrupted{false};
    std::optional<Outcome> bg_outcome;
    std::exception_ptr bg_error;
    std::jthread bg([&] {
        try {
            auto r = portal.open_context("sleeper", {}, [&](Context& ctx, const Payload&) {
                {
                    const std::lock_guard lock(m);
                    handle.emplace(ctx.handle());
                }
                try {
                    ctx.sleep_for(kSleepForever);
                } catch (const Cancelled&) {
                    body_interrupted = true;
                    throw;
                }
                ADD_FAILURE() << "the background body slept through";
            });
            bg_outcome = r.outcome;
        } catch (...) {
            bg_error = std::current_exception();
        }
    });
    ASSERT_TRUE(test::wait_until(
        [&] {
            const std::lock_guard lock(m);
            return handle.has_value() && sleeper.sleeping.load();
        },
        kDeadline));
    Context ctx = [&] {
        const std::lock_guard lock(m);
        return handle->handle();
    }();
    if (cancel_ctx) ctx.cancel(kCancelWait);
    EXPECT_TRUE(portal.cancel_actor(kCancelWait));
    std::exception_ptr main_error;
    if (cancel_ctx) {
        const Outcome o = ctx.wait_for_result();
        EXPECT_TRUE(o.is_absorbed_cancel());
        expect_ctxc(o.error(), parent.uid(), child.uid());
    } else {
        try {
            (void)ctx.wait_for_result();
            ADD_FAILURE() << "wait_for_result() returned after cancel_actor()";
        } catch (const ContextCancelled& e) {
            main_error = std::current_exception();
            EXPECT_EQ(e.canceller(), parent.uid());
        }
    }
    bg.join();
    EXPECT_TRUE(body_interrupted) << "the background body's sleep was not cancelled";
    EXPECT_TRUE(sleeper.cancelled);
    EXPECT_TRUE(ctx.cancelled_caught()) << "the Cancelled was not absorbed at the body's boundary";
    if (cancel_ctx) {
        EXPECT_EQ(bg_error, nullptr) << describe(bg_error);
        ASSERT_TRUE(bg_outcome.has_value());
        EXPECT_TRUE(bg_outcome->is_absorbed_cancel());
        EXPECT_TRUE(ctx.cancel_acked());
    } else {
        ASSERT_NE(bg_error, nullptr) << "the background block exited silently";
        expect_ctxc(bg_error, parent.uid(), child.uid());
        EXPECT_EQ(bg_error, main_error) << "not the same ctxc object";
        EXPECT_FALSE(ctx.cancel_called());
        EXPECT_FALSE(ctx.cancel_acked());
        EXPECT_EQ(ctx.canceller(), parent.uid());
    }
}

INSTANTIATE_TEST_SUITE_P(CancelCtx, ParentEnteredOnAnotherThread, ::testing::Bool(),
                         [](const auto& p) {
                             return p.param ? "CtxCancelFirst" : "ActorCancelOnly";
                         });

// ---------------------------------------------------------------------------------------------
// Spec §5 #85-86: test_context_spawns_aio_task_that_errors [parent_cancels] (generic parts)

enum class ParentCancelsBy { context, actor, nobody };

class ChildThatWouldFail : public CancelTest,
                           public ::testing::WithParamInterface<ParentCancelsBy> {};

// The child fails (std::logic_error, tractor's AssertionError) unless it is cancelled first.
// 'context': silent exit, the outcome is our ctxc. 'actor': the block and a later
// wait_for_result() raise the ctxc (canceller: us), which is the outcome. Nobody: the boxed
// logic_error.
TEST_P(ChildThatWouldFail, OutcomeFollowsWhoCancelled) {
    const ParentCancelsBy by = GetParam();
    std::atomic<bool> waiting{false};
    Actor parent("parent", options());
    Actor child("child", options());
    child.expose("fails_later", [&](Context& ctx, const Payload& args) -> Payload {
        ctx.started();
        waiting = true;
        // Cancelled cases: blocks until the cancel. Otherwise it fails at once (tractor fails
        // after a short delay; nothing here depends on it).
        if (args.value<bool>()) ctx.sleep_for(kSleepForever);
        throw std::logic_error("the child's assertion failed");
    });
    Portal portal = parent.connect("child", kDeadline);
    std::optional<Context> handle;
    std::optional<Outcome> outcome;
    std::exception_ptr escaped;
    try {
        auto r = portal.open_context(
            "fails_later", Payload::value(by != ParentCancelsBy::nobody),
            [&](Context& ctx, const Payload&) {
                handle.emplace(ctx.handle());
                if (by == ParentCancelsBy::nobody) return;
                ASSERT_TRUE(test::wait_until([&] { return waiting.load(); }, kDeadline));
                if (by == ParentCancelsBy::context) {
                    ctx.cancel(kCancelWait);
                } else {
                    EXPECT_TRUE(portal.cancel_actor(kCancelWait));
                }
            });
        outcome = r.outcome;
    } catch (...) {
        escaped = std::current_exception();
    }
    ASSERT_TRUE(handle.has_value());
    switch (by) {
        case ParentCancelsBy::context:
            ASSERT_EQ(escaped, nullptr) << describe(escaped);
            ASSERT_TRUE(outcome.has_value());
            EXPECT_TRUE(outcome->is_absorbed_cancel());
            expect_ctxc(handle->outcome().error(), parent.uid(), child.uid());
            EXPECT_EQ(handle->outcome().error(), outcome->error());
            break;
        case ParentCancelsBy::actor:
            ASSERT_NE(escaped, nullptr) << "the block exit did not raise";
            expect_ctxc(escaped, parent.uid(), child.uid());
            EXPECT_EQ(handle->outcome().error(), escaped);
            try {
                (void)handle->wait_for_result();
                ADD_FAILURE() << "wait_for_result() returned";
            } catch (const ContextCancelled&) {
                EXPECT_EQ(std::current_exception(), escaped);
            }
            break;
        case ParentCancelsBy::nobody: {
            const auto* e = error_as<RemoteActorError>(escaped);
            ASSERT_NE(e, nullptr) << describe(escaped);
            EXPECT_EQ(error_as<ContextCancelled>(escaped), nullptr) << e->what();
            EXPECT_TRUE(e->boxed_is<std::logic_error>()) << e->boxed_type_name();
            EXPECT_EQ(e->src_uid(), child.uid());
            break;
        }
    }
}

INSTANTIATE_TEST_SUITE_P(By, ChildThatWouldFail,
                         ::testing::Values(ParentCancelsBy::context, ParentCancelsBy::actor,
                                           ParentCancelsBy::nobody),
                         [](const auto& p) {
                             switch (p.param) {
                                 case ParentCancelsBy::context:
                                     return "Context";
                                 case ParentCancelsBy::actor:
                                     return "Actor";
                                 case ParentCancelsBy::nobody:
                                     break;
                             }
                             return "Nobody";
                         });

// ---------------------------------------------------------------------------------------------
// Spec §5 #87: the child actor cancels itself (tractor: SIGINT in the child; DESIGN.md §6:
// run_actor turns SIGINT into Actor::cancel())

// The child actor's own cancel (requester: itself) ends its task; the parent's
// wait_for_result() raises a ctxc whose canceller is the child. The actor reports who asked,
// its tasks end, and a new Start is refused with a boxed ContextCancelled.
TEST_F(CancelTest, ChildActorCancellingItselfRaisesCtxcNamingTheChild) {
    Sleeper sleeper;
    Actor parent("parent", options());
    Actor child("child", options());
    child.expose("sleeper", sleeper.endpoint());
    Portal portal = parent.connect("child", kDeadline);
    std::optional<Context> handle;
    try {
        portal.open_context("sleeper", {}, [&](Context& ctx, const Payload&) {
            handle.emplace(ctx.handle());
            ASSERT_TRUE(test::wait_until([&] { return sleeper.sleeping.load(); }, kDeadline));
            child.cancel();
            (void)ctx.wait_for_result();
            ADD_FAILURE() << "wait_for_result() returned";
        });
        ADD_FAILURE() << "open_context returned";
    } catch (const ContextCancelled& e) {
        EXPECT_EQ(e.canceller(), child.uid());
        EXPECT_EQ(e.src_uid(), child.uid());
        EXPECT_THAT(e.message(), HasSubstr("itself"));
    }
    ASSERT_TRUE(handle.has_value());
    EXPECT_EQ(handle->canceller(), child.uid());
    EXPECT_EQ(handle->canceller(), handle->peer());
    EXPECT_FALSE(handle->cancel_called());
    EXPECT_FALSE(handle->cancel_acked());
    EXPECT_TRUE(sleeper.cancelled);
    EXPECT_TRUE(child.cancel_called());
    EXPECT_EQ(child.cancel_caller(), child.uid());
    EXPECT_TRUE(child.wait_cancelled(kDeadline));
    EXPECT_FALSE(portal.cancel_called()) << "we did not call cancel_actor()";
    std::atomic<bool> body_ran{false};
    try {
        portal.open_context("sleeper", {}, body_must_not_run(body_ran));
        ADD_FAILURE() << "a cancelled actor accepted a Start";
    } catch (const RemoteActorError& e) {
        EXPECT_TRUE(e.boxed_is<ContextCancelled>()) << e.boxed_type_name() << ": " << e.what();
    }
    EXPECT_FALSE(body_ran);
}

// ---------------------------------------------------------------------------------------------
// Cascade down a tree of actors (spec §3.6)

enum class Requester { a_itself, root, third_party };

class ActorCancelCascade : public CancelTest, public ::testing::WithParamInterface<Requester> {};

// root -> A -> B, one process: root's body holds a context with A, whose endpoint holds one
// with B, whose task sleeps. A's actor is cancelled (by A itself, by root through
// cancel_actor(), or by a third actor Z). A's endpoint is cancelled, its open_context with B
// takes the error path and cancels B's task: B sees Cancelled with canceller A, and A's
// context with B records B's ctxc (canceller A). Root's context with A raises a ctxc whose
// canceller is the requester and whose source is A.
TEST_P(ActorCancelCascade, ReachesTheGrandchildWithTheMiddleAsCanceller) {
    const Requester requester = GetParam();
    std::atomic<bool> b_sleeping{false};
    std::atomic<bool> b_cancelled{false};
    std::mutex m;
    std::optional<Uid> b_canceller;  // guarded by m
    std::optional<Context> a_to_b;   // guarded by m
    std::atomic<bool> a_body_interrupted{false};
    Actor root("root", options());
    Actor a("a", options());
    Actor b("b", options());
    Actor z("z", options());
    b.expose("sleeper", [&](Context& ctx, const Payload&) -> Payload {
        ctx.started();
        try {
            b_sleeping = true;
            ctx.sleep_for(kSleepForever);
        } catch (const Cancelled&) {
            {
                const std::lock_guard lock(m);
                b_canceller = ctx.canceller();
            }
            b_cancelled = true;
            throw;
        }
        return Payload::value("b slept through");
    });
    a.expose("relay", [&](Context& ctx, const Payload&) -> Payload {
        ctx.started();
        Portal to_b = a.connect("b", kDeadline);
        to_b.open_context("sleeper", {}, [&](Context& inner, const Payload&) {
            {
                const std::lock_guard lock(m);
                a_to_b.emplace(inner.handle());
            }
            try {
                inner.sleep_for(kSleepForever);
            } catch (const Cancelled&) {
                a_body_interrupted = true;
                throw;
            }
        });
        return Payload::value("a's relay returned");
    });
    Portal root_to_a = root.connect("a", kDeadline);
    Portal z_to_a = z.connect("a", kDeadline);
    const Uid expected_requester = requester == Requester::a_itself ? a.uid()
                                   : requester == Requester::root   ? root.uid()
                                                                    : z.uid();
    std::optional<Context> handle;
    std::exception_ptr escaped;
    try {
        root_to_a.open_context("relay", {}, [&](Context& ctx, const Payload&) {
            handle.emplace(ctx.handle());
            ASSERT_TRUE(test::wait_until(
                [&] {
                    const std::lock_guard lock(m);
                    return b_sleeping.load() && a_to_b.has_value();
                },
                kDeadline));
            switch (requester) {
                case Requester::a_itself:
                    a.cancel();
                    break;
                case Requester::root:
                    EXPECT_TRUE(root_to_a.cancel_actor(kCancelWait));
                    break;
                case Requester::third_party:
                    EXPECT_TRUE(z_to_a.cancel_actor(kCancelWait));
                    break;
            }
            (void)ctx.wait_for_result();
            ADD_FAILURE() << "wait_for_result() returned";
        });
        ADD_FAILURE() << "open_context returned";
    } catch (...) {
        escaped = std::current_exception();
    }

    expect_ctxc(escaped, expected_requester, a.uid());
    ASSERT_TRUE(handle.has_value());
    EXPECT_EQ(handle->remote_error(), escaped);
    EXPECT_FALSE(handle->cancel_called());
    EXPECT_FALSE(handle->cancel_acked());
    // spec §3.3 step 2: our own uid when we requested it, else the relayer (A).
    EXPECT_EQ(handle->canceller(), requester == Requester::root ? root.uid() : a.uid());

    EXPECT_TRUE(a.wait_cancelled(kDeadline));
    EXPECT_TRUE(a.cancel_called());
    EXPECT_EQ(a.cancel_caller(), expected_requester);
    EXPECT_TRUE(a_body_interrupted) << "A's open_context body with B was not cancelled";
    EXPECT_TRUE(test::wait_until([&] { return b_cancelled.load(); }, kDeadline))
        << "the cancel did not cascade to B";
    {
        const std::lock_guard lock(m);
        EXPECT_EQ(b_canceller, a.uid()) << "B's canceller must be A (the middle)";
        ASSERT_TRUE(a_to_b.has_value());
        EXPECT_TRUE(a_to_b->cancel_called()) << "A's error path did not cancel its context";
        // The error path's cancel() waits 616 ms for B's ack: when recorded, it names A.
        if (a_to_b->remote_error() != nullptr) {
            expect_ctxc(a_to_b->remote_error(), a.uid(), b.uid());
            EXPECT_TRUE(a_to_b->cancel_acked());
        }
    }
    EXPECT_FALSE(b.cancel_called()) << "B's actor was not cancelled, only its task";
    EXPECT_FALSE(root.cancel_called());
    EXPECT_EQ(root_to_a.cancel_called(), requester == Requester::root);
    EXPECT_TRUE(test::wait_until([&] { return b.open_contexts() == 0; }, kDeadline));
}

INSTANTIATE_TEST_SUITE_P(Requester, ActorCancelCascade,
                         ::testing::Values(Requester::a_itself, Requester::root,
                                           Requester::third_party),
                         [](const auto& p) {
                             switch (p.param) {
                                 case Requester::a_itself:
                                     return "MiddleItself";
                                 case Requester::root:
                                     return "Root";
                                 case Requester::third_party:
                                     break;
                             }
                             return "ThirdParty";
                         });

// ---------------------------------------------------------------------------------------------
// DESIGN.md §4.2, never a silent drop (found by the soak): a cancel that cuts the flush of a
// spill (the receiver allows overruns and reads slowly) drops messages send() had accepted, so
// neither side may see the stream end normally.

/// "rx" endpoint "gated_sink": inbound ring of 4, overruns allowed; reads nothing until `gate`,
/// then counts messages until the stream ends, recording whether it ended normally.
struct GatedSink {
    std::atomic<bool> gate{false};
    std::atomic<std::int64_t> received{0};
    std::atomic<bool> ended_normally{false};
    void expose(Actor& rx) {
        ExposeOptions eo;
        eo.msg_buffer_size = 4;
        eo.allow_overruns = true;
        rx.expose(
            "gated_sink",
            [this](Context& ctx, const Payload&) -> Payload {
                ctx.started();
                auto stream = ctx.open_stream();
                EXPECT_TRUE(test::wait_until([&] { return gate.load(); }, kDeadline));
                for (const auto& m : stream) {
                    (void)m;
                    ++received;
                }
                ended_normally = true;
                return Payload::value(received.load());
            },
            eo);
    }
};

TEST_F(CancelTest, ACancelCuttingTheParentsSpillFlushRaisesFromCloseAndNeverEndsNormally) {
    GatedSink sink;
    Actor rx("rx", options());
    sink.expose(rx);
    Actor tx("tx", options());
    Portal portal = tx.connect("rx", kDeadline);
    constexpr int kSent = 100;  // 4 in the ring, 96 spilled
    std::atomic<pid_t> closer{0};
    std::atomic<bool> close_raised{false};
    std::jthread canceller([&] {
        // Cancel once the body sleeps in close(), waiting for the spill to drain.
        EXPECT_TRUE(test::wait_until(
            [&] {
                const pid_t tid = closer.load();
                return tid != 0 && thread_state(tid) == 'S';
            },
            kDeadline));
        tx.cancel();  // asynchronous: it reaches the body's scope a moment later
        // The receiver starts reading only once the cut is seen: opened earlier, it could drain
        // the spill before the cancel lands, and the close would (rightly) end normally.
        EXPECT_TRUE(test::wait_until([&] { return close_raised.load(); }, kDeadline))
            << "close() never raised";
        sink.gate = true;
    });
    bool cancelled = false;
    try {
        (void)portal.open_context("gated_sink", {}, [&](Context& ctx, const Payload&) {
            auto stream = ctx.open_stream();
            for (int i = 0; i < kSent; ++i) stream.send("x");
            EXPECT_GT(stream.outbound_counters().spilled, 0U);
            closer = current_tid();
            try {
                stream.close();
            } catch (const Cancelled&) {
                close_raised = true;
                throw;
            }
            ADD_FAILURE() << "close() returned after its flush was cut";
        });
        ADD_FAILURE() << "open_context returned normally";
    } catch (const Cancelled&) {
        cancelled = true;
    }
    canceller.join();
    EXPECT_TRUE(cancelled);
    EXPECT_TRUE(close_raised);
    ASSERT_TRUE(test::wait_until([&] { return rx.open_contexts() == 0; }, kDeadline));
    EXPECT_FALSE(sink.ended_normally.load() && sink.received.load() < kSent)
        << "the receiver saw a normal end after " << sink.received.load() << " of " << kSent;
}

TEST_F(CancelTest, ACancelCuttingTheChildsSpillFlushAtItsReturnShipsACtxcNotTheReturn) {
    Actor parent("parent", options());
    Actor child("child", options());
    constexpr int kSent = 100;
    std::atomic<pid_t> returning{0};
    child.expose("spiller", [&](Context& ctx, const Payload&) -> Payload {
        ctx.started();
        auto stream = ctx.open_stream();
        for (int i = 0; i < kSent; ++i) stream.send("x");
        returning = current_tid();
        return Payload::value(std::int64_t{kSent});  // the MsgStream's close flushes
    });
    Portal portal = parent.connect("child", kDeadline);
    OpenOptions oo;
    oo.msg_buffer_size = 4;
    oo.allow_overruns = true;
    std::int64_t received = 0;
    const auto r = portal.open_context(
        "spiller", {},
        [&](Context& ctx, const Payload&) {
            auto stream = ctx.open_stream();
            // The child returned and sleeps flushing its spill into our full ring.
            EXPECT_TRUE(test::wait_until(
                [&] {
                    const pid_t tid = returning.load();
                    return tid != 0 && thread_state(tid) == 'S';
                },
                kDeadline));
            ctx.cancel(kCancelWait);
            try {
                for (;;) {
                    (void)stream.receive();
                    ++received;
                }
            } catch (const ContextCancelled&) {
                // our own cancel's ack: the child's task ended cancelled
            } catch (const EndOfChannel&) {
                ADD_FAILURE() << "a normal end of stream after " << received << " messages";
            }
        },
        oo);
    EXPECT_TRUE(r.outcome.is_absorbed_cancel()) << "not our absorbed cancel";
    EXPECT_FALSE(r.outcome.has_value() && received < kSent)
        << "a Return after " << received << " of " << kSent << " messages";
}

}  // namespace
}  // namespace shmctx
