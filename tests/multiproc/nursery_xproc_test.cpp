// Supervision (issue 8): ActorNursery and run_actor with real child processes. The test process
// is the root actor; every child is a nursery_child process (its main is shmctx::run_actor).
// Ports spec §5 #99–112 (tractor's test_cancellation.py at the supervision level):
//   #99–100  test_remote_error[no_args, unexpected_args]     RemoteErrorArrives*
//   #101     test_multierror                                  SeveralFailuresAreRaisedTogether
//   #102–103 test_multierror_fast_nursery[0, 0.5 s]           FastNursery/*
//   #104–105 test_cancel_single_subactor[cancel, KeyboardInt] CancelSingleSubactor*
//   #106     test_cancel_infinite_streamer                    InfiniteStreamerCancelledByDeadline
//   #107–112 test_some_cancels_all[6 cases]                   SomeCancelsAll/*
// and beyond: a parent killed with SIGKILL takes its children (and theirs) with it; nested
// nurseries three levels deep torn down in order; run_actor's signals and exit codes; a child
// that fails its setup, never becomes ready, crashes, or ignores its cancel.
//
// Every test checks through /proc that it leaves no child process (zombie or not) and, through
// the ctest fixture, nothing in /dev/shm. Waits are on conditions with deadlines; the sleeps
// are inside children (tractor's delays), never synchronisation.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <exception>
#include <fstream>
#include <ostream>
#include <sstream>
#include <string>
#include <vector>

#include "context_support.hpp"
#include "error_as.hpp"
#include "namespace_guard.hpp"
#include "nursery_support.hpp"
#include "process.hpp"
#include "shmctx/actor.hpp"
#include "shmctx/errors.hpp"
#include "shmctx/nursery.hpp"
#include "shmctx/run_actor.hpp"

namespace shmctx {
namespace {

using namespace std::chrono_literals;
using test::error_as;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr auto kDeadline = 20s;
constexpr auto kTestLimit = 150s;

std::string describe(const std::exception_ptr& e) { return test::describe_error(e); }

template <class F>
std::exception_ptr capture(F&& f) {
    try {
        f();
    } catch (...) {
        return std::current_exception();
    }
    return nullptr;
}

bool is_assertion_rae(const std::exception_ptr& e) {
    const auto* rae = error_as<RemoteActorError>(e);
    return rae != nullptr && rae->boxed_is<test::AssertionError>();
}

/// A body exception that is no shmctx error (tractor's KeyboardInterrupt in #105).
struct Interrupt : std::runtime_error {
    Interrupt() : std::runtime_error("interrupted by the test") {}
};

std::vector<pid_t> parse_pids(const std::string& text) {
    std::vector<pid_t> pids;
    std::istringstream in(text);
    long p = 0;
    while (in >> p) pids.push_back(static_cast<pid_t>(p));
    return pids;
}

/// A nursery_child started without a nursery has no ready line: its actor is connectable
/// before run_actor's setup has exposed its endpoints. Calls its last-exposed endpoint until
/// it answers (NotExposed until then).
Portal connect_when_exposed(Actor& actor, const std::string& name) {
    Portal p = actor.connect(name, kDeadline);
    const bool exposed = test::wait_until(
        [&] {
            try {
                (void)p.run("exposed", {}, kDeadline);
                return true;
            } catch (const RemoteActorError& e) {
                if (!e.boxed_is<NotExposed>()) throw;
                return false;
            }
        },
        kDeadline);
    if (!exposed) throw std::runtime_error(name + " never exposed its endpoints");
    return p;
}

class Nursery : public ::testing::Test {
protected:
    Nursery() { test::register_test_errors(); }
    void TearDown() override {
        if (!log_.empty()) ::unlink(log_.c_str());
        // No child process left, not even a zombie (the nursery reaps by pidfd).
        EXPECT_THAT(test::children_of(::getpid()), IsEmpty()) << "a child process was left";
    }
    ActorOptions options() const {
        ActorOptions o;
        o.ns = guard_.names.ns();
        return o;
    }
    /// A file the children append "exit <name> <code>" to (--exit-log); removed by TearDown.
    std::string exit_log() {
        log_ = "/tmp/" + guard_.names.ns() + ".exits";
        ::unlink(log_.c_str());
        return log_;
    }
    static std::vector<std::string> read_lines(const std::string& path) {
        std::ifstream in(path);
        std::vector<std::string> lines;
        for (std::string line; std::getline(in, line);) lines.push_back(line);
        return lines;
    }
    std::string log_;
    test::NamespaceGuard guard_{"nursery"};
    test::Watchdog watchdog_{std::chrono::duration_cast<std::chrono::seconds>(kTestLimit), {}};
    const std::string exe_ = test::sibling_binary("nursery_child");
};

// #99: a run_in_actor function's error reaches the parent with its original type.
TEST_F(Nursery, RemoteErrorArrivesWithItsOriginalType) {
    Actor root("root", options());
    const auto e = capture([&] {
        open_nursery(root,
                     [&](ActorNursery& an) { an.run_in_actor("errorer", exe_, "assert_err"); });
    });
    const auto* rae = error_as<RemoteActorError>(e);
    ASSERT_NE(rae, nullptr) << describe(e);
    EXPECT_TRUE(rae->boxed_is<test::AssertionError>()) << rae->boxed_type_name();
    EXPECT_EQ(rae->src_uid().name, "errorer");
    EXPECT_THAT(rae->message(), HasSubstr("assert 0 in errorer"));
}

// #100: unexpected arguments: the child's argument error (tractor's TypeError) arrives typed.
TEST_F(Nursery, RemoteErrorForUnexpectedArgumentsArrivesTyped) {
    Actor root("root", options());
    const auto e = capture([&] {
        open_nursery(root, [&](ActorNursery& an) {
            an.run_in_actor("errorer", exe_, "assert_err", Payload::value("not an int").view());
        });
    });
    const auto* rae = error_as<RemoteActorError>(e);
    ASSERT_NE(rae, nullptr) << describe(e);
    EXPECT_TRUE(rae->boxed_is<std::invalid_argument>()) << rae->boxed_type_name();
}

// #101: two failing children; the body waits on their results and rethrows the second one's
// error. The nursery raises both failures together, each once (the body's error is errorer2's).
TEST_F(Nursery, SeveralFailuresAreRaisedTogether) {
    Actor root("root", options());
    const auto e = capture([&] {
        open_nursery(root, [&](ActorNursery& an) {
            ChildResult first = an.run_in_actor("errorer1", exe_, "assert_err");
            ChildResult second = an.run_in_actor("errorer2", exe_, "assert_err");
            // errorer1's failure is in before the body raises (else the body's error would
            // cancel errorer1 first, and only one failure would exist to report).
            EXPECT_THROW((void)first.get(kDeadline), RemoteActorError);
            try {
                (void)second.get(kDeadline);
                ADD_FAILURE() << "errorer2's result did not raise";
            } catch (const RemoteActorError& err) {
                EXPECT_TRUE(err.boxed_is<test::AssertionError>());
                throw;
            }
        });
    });
    const auto* group = error_as<ErrorGroup>(e);
    ASSERT_NE(group, nullptr) << describe(e);
    ASSERT_EQ(group->errors().size(), 2U) << describe(e);
    std::vector<std::string> sources;
    for (const auto& err : group->errors()) {
        EXPECT_TRUE(is_assertion_rae(err)) << describe(err);
        if (const auto* rae = error_as<RemoteActorError>(err))
            sources.push_back(rae->src_uid().name);
    }
    std::sort(sources.begin(), sources.end());
    EXPECT_EQ(sources, (std::vector<std::string>{"errorer1", "errorer2"}));
}

// #102–103: 25 children failing at once (or after 0.5 s): one error per child, none lost.
class FastNursery : public Nursery, public ::testing::WithParamInterface<int> {};

TEST_P(FastNursery, RaisesOneErrorPerFailedChild) {
    Actor root("root", options());
    const int delay_ms = GetParam();
    constexpr int kChildren = 25;
    const auto e = capture([&] {
        open_nursery(root, [&](ActorNursery& an) {
            for (int i = 0; i < kChildren; ++i) {
                (void)an.run_in_actor("errorer" + std::to_string(i), exe_, "assert_err",
                                      Payload::value(delay_ms).view());
            }
        });
    });
    const auto* group = error_as<ErrorGroup>(e);
    ASSERT_NE(group, nullptr) << describe(e);
    EXPECT_EQ(group->errors().size(), static_cast<std::size_t>(kChildren));
    for (const auto& err : group->errors()) EXPECT_TRUE(is_assertion_rae(err)) << describe(err);
}

INSTANTIATE_TEST_SUITE_P(Delays, FastNursery, ::testing::Values(0, 500));

// #104: the body cancels the nursery: the long-lived child is cancelled and reaped, no error.
TEST_F(Nursery, CancelSingleSubactorByNurseryCancel) {
    Actor root("root", options());
    const std::string log = exit_log();
    pid_t child = -1;
    const auto result = open_nursery(root, [&](ActorNursery& an) {
        Portal portal = an.start_actor("nothin", exe_, {"--exit-log", log});
        EXPECT_TRUE(portal.run("do_nothing", {}, kDeadline).empty());
        child = an.child_pids().at(0);
        an.cancel();
        EXPECT_TRUE(an.cancel_called());
        // The body's next blocking call raises Cancelled, which the nursery absorbs.
        (void)portal.run("do_nothing", {}, kDeadline);
        ADD_FAILURE() << "the cancelled body went on";
    });
    EXPECT_TRUE(result.cancelled_caught);
    EXPECT_FALSE(test::process_alive(child));
    // The child was cancelled by request (run_actor's exit code 0), not killed.
    EXPECT_EQ(read_lines(log), (std::vector<std::string>{"exit nothin 0"}));
}

// #105: the body raises: every child is cancelled and reaped and the body's error propagates
// unchanged.
TEST_F(Nursery, CancelSingleSubactorByBodyError) {
    Actor root("root", options());
    pid_t child = -1;
    const auto e = capture([&] {
        open_nursery(root, [&](ActorNursery& an) {
            Portal portal = an.start_actor("nothin", exe_);
            EXPECT_TRUE(portal.run("do_nothing", {}, kDeadline).empty());
            child = an.child_pids().at(0);
            throw Interrupt();
        });
    });
    EXPECT_NE(error_as<Interrupt>(e), nullptr) << describe(e);
    EXPECT_FALSE(test::process_alive(child));
}

// #106: a stream from a child that never ends, cut by the nursery's deadline: the body is
// cancelled (cancelled_caught), the nursery's cancel_called is set, the child is reaped.
TEST_F(Nursery, InfiniteStreamerCancelledByDeadline) {
    Actor root("root", options());
    NurseryOptions no;
    no.deadline = Deadline(3s);  // covers the child's start too, slow under sanitizers
    bool cancel_called = false;
    std::int64_t received = 0;
    // Reads the nursery's cancel_called while the body unwinds.
    struct OnUnwind {
        ActorNursery& an;
        bool& out;
        ~OnUnwind() { out = an.cancel_called(); }
    };
    const auto result = open_nursery(
        root,
        [&](ActorNursery& an) {
            const OnUnwind on_unwind{an, cancel_called};
            Portal portal = an.start_actor("donny", exe_);
            (void)portal.open_context("stream_forever", {}, [&](Context& ctx, const Payload&) {
                auto stream = ctx.open_stream();
                for (auto& msg : stream) {
                    EXPECT_EQ(msg.to_payload().value<std::int64_t>(), received);
                    ++received;
                }
                ADD_FAILURE() << "the infinite stream ended";
            });
            ADD_FAILURE() << "open_context returned";
        },
        no);
    EXPECT_TRUE(result.cancelled_caught);
    EXPECT_TRUE(cancel_called);
    EXPECT_GT(received, 0);
}

// #107–112: test_some_cancels_all. Daemons (start_actor) and run_in_actor children; either the
// run_in_actor children fail, or a daemon's call fails in the body. Every case ends with the
// first error type expected, every child cancelled and reaped.
struct SomeCancelsAllCase {
    int actors;
    bool expect_group;
    std::string ria_fn;
    std::int64_t ria_delay_ms;
    std::string daemon_fn;  // empty: the body calls nothing on the daemons
    std::int64_t daemon_delay_ms;
    bool daemon_expect_error;
};

void PrintTo(const SomeCancelsAllCase& c, std::ostream* os) {
    *os << c.actors << " actors, run_in_actor " << c.ria_fn << "(" << c.ria_delay_ms
        << " ms), daemons " << (c.daemon_fn.empty() ? "idle" : c.daemon_fn) << "("
        << c.daemon_delay_ms << " ms)";
}

class SomeCancelsAll : public Nursery, public ::testing::WithParamInterface<SomeCancelsAllCase> {};

TEST_P(SomeCancelsAll, FirstErrorsRaisedAndEveryChildCancelled) {
    const SomeCancelsAllCase c = GetParam();
    Actor root("root", options());
    int expected_errors = c.actors;
    bool nursery_cancelled = false;
    std::vector<pid_t> pids;
    const auto e = capture([&] {
        open_nursery(root, [&](ActorNursery& an) {
            std::vector<Portal> daemons;
            for (int i = 0; i < c.actors; ++i) {
                daemons.push_back(an.start_actor("daemon_" + std::to_string(i), exe_));
            }
            pids = an.child_pids();
            for (int i = 0; i < c.actors; ++i) {
                const Payload args =
                    c.ria_fn == "assert_err" ? Payload::value(c.ria_delay_ms) : Payload{};
                pids.push_back(
                    an.run_in_actor("actor_" + std::to_string(i), exe_, c.ria_fn, args.view())
                        .pid());
            }
            if (c.daemon_fn.empty()) return;
            for (Portal& d : daemons) {
                const Payload args =
                    c.daemon_fn == "assert_err" ? Payload::value(c.daemon_delay_ms) : Payload{};
                try {
                    (void)d.run(c.daemon_fn, args.view(), kDeadline);
                } catch (const RemoteActorError& err) {
                    EXPECT_TRUE(err.boxed_is<test::AssertionError>());
                    expected_errors = 1;  // only this one: the others are cancelled
                    nursery_cancelled = true;
                    throw;
                }
                if (c.daemon_expect_error) ADD_FAILURE() << "the daemon call should have failed";
            }
        });
    });
    ASSERT_TRUE(e) << "no error raised";
    if (c.expect_group) {
        const auto* group = error_as<ErrorGroup>(e);
        ASSERT_NE(group, nullptr) << describe(e);
        EXPECT_EQ(group->errors().size(), static_cast<std::size_t>(expected_errors));
        for (const auto& err : group->errors()) EXPECT_TRUE(is_assertion_rae(err)) << describe(err);
    } else {
        EXPECT_TRUE(is_assertion_rae(e)) << describe(e);
        EXPECT_EQ(expected_errors, c.daemon_fn.empty() ? c.actors : 1);
    }
    (void)nursery_cancelled;
    ASSERT_EQ(pids.size(), static_cast<std::size_t>(2 * c.actors));
    for (const pid_t p : pids) EXPECT_FALSE(test::process_alive(p)) << p;
}

INSTANTIATE_TEST_SUITE_P(
    Cases, SomeCancelsAll,
    ::testing::Values(
        // daemons sit idle while the run_in_actor children fail at once
        SomeCancelsAllCase{1, false, "assert_err", 0, "", 0, false},
        SomeCancelsAllCase{2, true, "assert_err", 0, "", 0, false},
        SomeCancelsAllCase{3, true, "assert_err", 0, "", 0, false},
        // one daemon fails while the run_in_actor children sleep forever
        SomeCancelsAllCase{3, false, "sleep_forever", 0, "assert_err", 0, true},
        // the daemons fail after a while while the run_in_actor children finish at once
        SomeCancelsAllCase{3, false, "do_nothing", 0, "assert_err", 1000, true},
        // the daemons finish at once while the run_in_actor children fail after a while
        SomeCancelsAllCase{3, true, "assert_err", 1000, "do_nothing", 0, false}));

// Leaving normally waits for run_in_actor results and returns them; long-lived children are
// cancelled (run_actor exits 0) and reaped.
TEST_F(Nursery, NormalExitWaitsForResultsAndCancelsDaemons) {
    Actor root("root", options());
    const std::string log = exit_log();
    std::vector<pid_t> pids;
    std::int64_t value = 0;
    open_nursery(root, [&](ActorNursery& an) {
        (void)an.start_actor("daemon", exe_, {"--exit-log", log});
        ChildResult r = an.run_in_actor("worker", exe_, "pid", {}, {"--exit-log", log});
        pids = an.child_pids();
        value = r.get(kDeadline).value<std::int64_t>();
        EXPECT_TRUE(r.ready());
        EXPECT_EQ(value, r.pid());  // the function ran in the child it names
    });
    ASSERT_GE(pids.size(), 1U);
    std::vector<std::string> lines = read_lines(log);
    std::sort(lines.begin(), lines.end());
    EXPECT_EQ(lines, (std::vector<std::string>{"exit daemon 0", "exit worker 0"}));
}

// A child whose process ends before the nursery asked it to (a crash, an exit of its own) is a
// failure raised at the end, naming how it ended.
TEST_F(Nursery, ChildExitingOnItsOwnIsReportedWithItsStatus) {
    Actor root("root", options());
    const auto e = capture([&] {
        open_nursery(root, [&](ActorNursery& an) {
            Portal p = an.start_actor("quitter", exe_);
            try {
                (void)p.run("exit_soon", Payload::value(3).view(), kDeadline);
            } catch (const TransportClosed&) {
                // It may exit before its Return reaches us: the exit is what is tested.
            }
            EXPECT_TRUE(test::wait_until([&] { return an.running_children() == 0; }, kDeadline));
        });
    });
    const auto* failed = error_as<ActorFailed>(e);
    ASSERT_NE(failed, nullptr) << describe(e);
    EXPECT_THAT(std::string(failed->what()), HasSubstr("'quitter'"));
    EXPECT_THAT(std::string(failed->what()), HasSubstr("exited with 3"));
}

// A clean exit nobody in the nursery asked for (the actor was cancelled by someone: here by
// itself, as by another actor's cancel_actor) is the child's orderly end: no failure.
TEST_F(Nursery, ChildEndingCleanlyOnItsOwnIsNoFailure) {
    Actor root("root", options());
    const std::string log = exit_log();
    open_nursery(root, [&](ActorNursery& an) {
        Portal p = an.start_actor("quitter", exe_, {"--exit-log", log});
        (void)p.run("cancel_self", {}, kDeadline);
        EXPECT_TRUE(test::wait_until([&] { return an.running_children() == 0; }, kDeadline));
    });
    EXPECT_EQ(read_lines(log), (std::vector<std::string>{"exit quitter 0"}));
}

TEST_F(Nursery, ChildFailingItsSetupIsActorFailedWithTheReason) {
    Actor root("root", options());
    const auto e = capture([&] {
        open_nursery(
            root, [&](ActorNursery& an) { (void)an.start_actor("bad", exe_, {"--fail-setup"}); });
    });
    const auto* failed = error_as<ActorFailed>(e);
    ASSERT_NE(failed, nullptr) << describe(e);
    EXPECT_THAT(std::string(failed->what()), HasSubstr("setup refused"));
}

TEST_F(Nursery, ChildNeverReadyIsKilledAfterTheStartTimeout) {
    Actor root("root", options());
    NurseryOptions no;
    no.start_timeout = 300ms;
    const auto e = capture([&] {
        open_nursery(
            root, [&](ActorNursery& an) { (void)an.start_actor("slow", exe_, {"--hang-setup"}); },
            no);
    });
    const auto* failed = error_as<ActorFailed>(e);
    ASSERT_NE(failed, nullptr) << describe(e);
    EXPECT_THAT(std::string(failed->what()), HasSubstr("not ready within 300 ms"));
}

TEST_F(Nursery, MissingExecutableIsActorFailed) {
    Actor root("root", options());
    const auto e = capture([&] {
        open_nursery(root, [&](ActorNursery& an) {
            (void)an.start_actor("ghost", "/nonexistent/shmctx-child");
        });
    });
    const auto* failed = error_as<ActorFailed>(e);
    ASSERT_NE(failed, nullptr) << describe(e);
    EXPECT_THAT(std::string(failed->what()), HasSubstr("No such file"));
}

// A child deaf to its cancel is SIGKILLed cancel_timeout after it and reaped; the nursery
// returns (what we asked for is no failure).
TEST_F(Nursery, ChildIgnoringItsCancelIsKilled) {
    Actor root("root", options());
    NurseryOptions no;
    no.cancel_timeout = 300ms;
    const std::string log = exit_log();
    pid_t child = -1;
    open_nursery(
        root,
        [&](ActorNursery& an) {
            child = an.run_in_actor("deaf", exe_, "stuck", {}, {"--exit-log", log}).pid();
            // Cancel only once it is stuck (else its cancel could come first and be answered).
            EXPECT_TRUE(test::wait_until([&] { return !read_lines(log).empty(); }, kDeadline));
            an.cancel();
        },
        no);
    EXPECT_FALSE(test::process_alive(child));
    // Killed: run_actor never returned, so no exit line (a child that exits by itself, even on
    // the SIGTERM that follows the unanswered cancel, writes one).
    EXPECT_EQ(read_lines(log), (std::vector<std::string>{"stuck deaf"}));
}

// A run_in_actor child that dies in the middle of its function is a failure naming how it
// ended, whatever thread (the runner or the monitor) learns of it first.
TEST_F(Nursery, RunInActorChildDyingMidCallIsReported) {
    Actor root("root", options());
    const auto e = capture([&] {
        open_nursery(root, [&](ActorNursery& an) { (void)an.run_in_actor("dier", exe_, "die"); });
    });
    const auto* failed = error_as<ActorFailed>(e);
    ASSERT_NE(failed, nullptr) << describe(e);
    EXPECT_THAT(std::string(failed->what()), HasSubstr("'dier'"));
    EXPECT_THAT(std::string(failed->what()), HasSubstr("SIGKILL"));
}

// A cancel while a child is starting (it never becomes ready): the start raises Cancelled,
// which the nursery absorbs; the child is killed and reaped.
TEST_F(Nursery, CancelDuringStartActor) {
    Actor root("root", options());
    std::thread canceller;
    const auto result = open_nursery(root, [&](ActorNursery& an) {
        canceller = std::thread([&an] {
            EXPECT_TRUE(test::wait_until([&] { return an.running_children() == 1; }, kDeadline));
            an.cancel();
        });
        (void)an.start_actor("slow", exe_, {"--hang-setup"});
        ADD_FAILURE() << "start_actor returned";
    });
    canceller.join();
    EXPECT_TRUE(result.cancelled_caught);
}

TEST_F(Nursery, WrongReadyLineIsActorFailed) {
    Actor root("root", options());
    const auto e = capture([&] {
        open_nursery(root, [&](ActorNursery& an) {
            (void)an.start_actor("liar", exe_, {"--garbage-ready"});
        });
    });
    const auto* failed = error_as<ActorFailed>(e);
    ASSERT_NE(failed, nullptr) << describe(e);
    EXPECT_THAT(std::string(failed->what()), HasSubstr("wrote \"hello"));
}

// The body's own error comes first in the group, then the children's failures.
TEST_F(Nursery, BodyErrorAndChildFailuresAreRaisedTogetherBodyFirst) {
    Actor root("root", options());
    const auto e = capture([&] {
        open_nursery(root, [&](ActorNursery& an) {
            ChildResult r = an.run_in_actor("errorer", exe_, "assert_err");
            EXPECT_THROW((void)r.get(kDeadline), RemoteActorError);  // its failure is in
            throw Interrupt();
        });
    });
    const auto* group = error_as<ErrorGroup>(e);
    ASSERT_NE(group, nullptr) << describe(e);
    ASSERT_EQ(group->errors().size(), 2U);
    EXPECT_NE(error_as<Interrupt>(group->errors()[0]), nullptr) << describe(group->errors()[0]);
    EXPECT_TRUE(is_assertion_rae(group->errors()[1])) << describe(group->errors()[1]);
}

// An enclosing cancel (Actor::cancel) reaches a body blocked in the nursery; the children are
// torn down and the Cancelled propagates (the nursery did not cancel itself).
TEST_F(Nursery, ActorCancelTearsTheNurseryDown) {
    Actor root("root", options());
    std::vector<pid_t> pids;
    std::thread canceller;
    bool cancelled = false;
    try {
        open_nursery(root, [&](ActorNursery& an) {
            Portal p = an.start_actor("sleeper", exe_);
            pids = an.child_pids();
            canceller = std::thread([&root] { root.cancel(); });
            (void)p.open_context("sleep_forever", {}, [&](Context& ctx, const Payload&) {
                ctx.sleep_for(std::chrono::hours(1));
            });
        });
    } catch (const Cancelled&) {
        cancelled = true;
    }
    if (canceller.joinable()) canceller.join();
    EXPECT_TRUE(cancelled);
    ASSERT_EQ(pids.size(), 1U);
    EXPECT_FALSE(test::process_alive(pids[0]));
}

// Nested nurseries three levels deep: cancelling the root's nursery tears the tree down from
// the bottom: each level reaps the one below before it exits itself.
TEST_F(Nursery, NestedNurseriesTearDownInOrder) {
    Actor root("root", options());
    const std::string log = exit_log();
    std::vector<pid_t> pids;
    NurseryOptions no;
    no.cancel_timeout = 20s;  // covers the subtree's own teardown, even under sanitizers
    open_nursery(
        root,
        [&](ActorNursery& an) {
            Portal top = an.start_actor("lvl1", exe_, {"--exit-log", log});
            (void)top.open_context("subtree", Payload::value(2).view(),
                                   [&](Context& ctx, const Payload& first) {
                                       pids = parse_pids(first.value<std::string>());
                                       an.cancel();
                                       ctx.sleep_for(std::chrono::hours(1));
                                   });
        },
        no);
    ASSERT_EQ(pids.size(), 3U);
    for (const pid_t p : pids) EXPECT_FALSE(test::process_alive(p)) << p;
    EXPECT_EQ(read_lines(log),
              (std::vector<std::string>{"exit lvl1-sub-sub 0", "exit lvl1-sub 0", "exit lvl1 0"}));
}

// A parent killed with SIGKILL takes its children, and theirs, with it (PDEATHSIG follows the
// supervisor thread). The killed parent is a nursery_child started by the test; the test makes
// itself the subreaper so that the orphans are reparented to it and it can see (and reap) them.
TEST_F(Nursery, ParentKilledWithSigkillTakesItsChildrenWithIt) {
    ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
    struct SubreaperOff {
        ~SubreaperOff() { (void)::prctl(PR_SET_CHILD_SUBREAPER, 0); }
    } subreaper_off;
    Actor root("root", options());
    test::Child parent =
        test::spawn(exe_, {}, {"SHMCTX_ACTOR_NAME=parent", "SHMCTX_NS=" + guard_.names.ns()});
    std::vector<pid_t> pids;
    {
        Portal p = connect_when_exposed(root, "parent");
        std::thread killer;
        const auto e = capture([&] {
            (void)p.open_context("subtree", Payload::value(2).view(),
                                 [&](Context& ctx, const Payload& first) {
                                     pids = parse_pids(first.value<std::string>());
                                     parent.kill(SIGKILL);
                                     ctx.sleep_for(std::chrono::hours(1));
                                 });
        });
        EXPECT_NE(error_as<PeerDied>(e), nullptr) << describe(e);
    }
    ASSERT_EQ(pids.size(), 3U);
    const auto killed_at = Clock::now();
    // Children and grandchildren die of PDEATHSIG; as orphans they are now ours to reap.
    for (std::size_t i = 1; i < pids.size(); ++i) {
        EXPECT_TRUE(test::wait_until([&] { return !test::process_alive(pids[i]); }, 1s))
            << "pid " << pids[i] << " still alive 1 s after its parent was killed";
    }
    const auto gone_after = Clock::now() - killed_at;
    std::printf("children gone %.1f ms after the parent's SIGKILL\n",
                std::chrono::duration<double, std::milli>(gone_after).count());
    (void)parent.wait(kDeadline);
    for (std::size_t i = 1; i < pids.size(); ++i) {
        int st = 0;
        EXPECT_EQ(::waitpid(pids[i], &st, 0), pids[i]);
        EXPECT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    }
}

// run_actor: SIGINT becomes Actor::cancel() with the child as its own canceller (spec #87: the
// parent's context sees a ctxc naming the child), and the exit code is 128 + SIGINT.
TEST_F(Nursery, RunActorTurnsSigintIntoItsOwnCancel) {
    Actor root("root", options());
    test::Child child =
        test::spawn(exe_, {}, {"SHMCTX_ACTOR_NAME=sig", "SHMCTX_NS=" + guard_.names.ns()});
    Portal p = connect_when_exposed(root, "sig");
    const auto e = capture([&] {
        (void)p.open_context("sleep_forever", {}, [&](Context& ctx, const Payload&) {
            child.kill(SIGINT);
            (void)ctx.wait_for_result();
        });
    });
    const auto* ctxc = error_as<ContextCancelled>(e);
    ASSERT_NE(ctxc, nullptr) << describe(e);
    EXPECT_EQ(ctxc->canceller().name, "sig");
    const auto status = child.wait(kDeadline);
    ASSERT_TRUE(status.has_value());
    EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 128 + SIGINT) << child.describe();
}

TEST_F(Nursery, RunActorExitsWith143OnSigterm) {
    test::Child child =
        test::spawn(exe_, {}, {"SHMCTX_ACTOR_NAME=term", "SHMCTX_NS=" + guard_.names.ns()});
    Actor root("root", options());
    (void)connect_when_exposed(root, "term");  // it is up
    child.kill(SIGTERM);
    const auto status = child.wait(kDeadline);
    ASSERT_TRUE(status.has_value());
    EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 128 + SIGTERM) << child.describe();
}

}  // namespace
}  // namespace shmctx
