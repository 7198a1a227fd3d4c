// The kill matrix (issue 7, DESIGN.md §2 and §4.7): for each fault point on the cross-process
// paths, a peer process ("victim", an actor_node) is SIGKILLed exactly there (SHMCTX_FAULT=
// <point>=kill[@N] in its environment, shmctx/shm/fault.hpp) while this process, the survivor,
// has a thread blocked on it in receive, send, wait_for_result, cancel, cancel_actor, a Poller or
// connect. Every row checks:
//   - the blocked call wakes with PeerDied (decided on kernel evidence: the runtime raises it
//     only on the liveness watcher's pidfd or lock evidence), never a hang;
//   - what the victim published before it died is delivered, in order, and nothing it had only
//     claimed or half written is (the stream rows check every sequence number);
//   - a child task the dead victim had started here is cancelled with our own uid as canceller;
//   - no context, link or thread of ours is left for the victim, and its actor file, segment
//     and arenas are reclaimed by us, the survivor (only our own objects remain);
//   - an actor of the same name starts at once and serves.
// The rows and what each shows are listed in docs/protocol.md §12.4 (the kill matrix table).
//
// Every wait has a deadline and each test runs under a watchdog. The helpers end at stdin EOF,
// so they also end if this process dies.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "context_support.hpp"
#include "namespace_guard.hpp"
#include "process.hpp"
#include "shmctx/actor.hpp"
#include "shmctx/context.hpp"
#include "shmctx/errors.hpp"
#include "shmctx/payload.hpp"
#include "shmctx/poller.hpp"
#include "shmctx/shm/fault.hpp"
#include "until_cancelled.hpp"

namespace shmctx {
namespace {

using namespace std::chrono_literals;
using test::current_tid;
using test::objects_of;
using test::thread_state;
using test::wait_until;
using ::testing::HasSubstr;

/// Bound of every wait on a condition: generous, since sanitizer builds run many times slower.
constexpr auto kDeadline = 20s;
constexpr auto kTestLimit = 120s;

/// What the survivor does while the victim dies.
enum class Scenario {
    receive_stream,  ///< body blocked in receive() on the victim's stream_ints (on_full = block)
    poll_spill,      ///< a Poller on the victim's stream_ints_spill, which spills (we allow it)
    run_rpc,         ///< Portal::run (wait_for_result) in a loop until the victim dies
    cancel_context,  ///< Context::cancel() of the victim's sleeper, waiting for its ack
    cancel_actor,    ///< Portal::cancel_actor() waiting for its ack, a sleeper open meanwhile
    connect,         ///< connect() while the victim sets up its end of the link
    start,           ///< the victim dies starting up (no link): restart must still work
    send_blocked,    ///< our send() blocked on a full ring the victim never reads (SIGKILL)
    victim_parent,   ///< the victim opened a context on us and is SIGKILLed
};

struct KillCase {
    const char* name;
    const char* fault;  ///< SHMCTX_FAULT for the victim; nullptr: the test SIGKILLs it
    Scenario scenario;
    /// Stream rows: the messages that must arrive before PeerDied (-1: any prefix). The ring
    /// holds 64, so the victim reaches hit 40 however slowly we read.
    std::int64_t delivered = -1;
};

void PrintTo(const KillCase& c, std::ostream* os) { *os << c.name; }

// Hit numbers: stream records and drains count from the first; 40 leaves a few ring-fulls
// behind us. control.half_written@6: the victim's 6th control record (LinkOpen, then StartAck,
// Return of two add_one calls, ...), so death comes in the middle of an RPC's answer.
const KillCase kCases[] = {
    // 39 committed records and a claimed 40th, which must not show.
    {"DataRecordClaimed", "stream.after_claim=kill@40", Scenario::receive_stream, 39},
    // The 40th committed (and published): all 40 arrive.
    {"DataRecordCommitted", "stream.after_commit=kill@40", Scenario::receive_stream, 40},
    // The victim's first carve is its control ring (with its arena), the second the data ring.
    {"RingCarved", "arena.after_carve=kill@2", Scenario::receive_stream, 0},
    {"SpillScheduling", "spill.before_schedule=kill@100", Scenario::poll_spill},
    {"DrainerMidDrain", "spill.after_dequeue=kill@20", Scenario::poll_spill},
    {"ControlRecordHalfWritten", "control.half_written=kill@6", Scenario::run_rpc},
    {"CancelInFlight", "cancel.received=kill", Scenario::cancel_context},
    {"CancelAckPending", "cancel.before_ack=kill", Scenario::cancel_context},
    {"ActorCancelInFlight", "cancel.received=kill", Scenario::cancel_actor},
    {"LinkSetupBeforeLinkOpen", "link.before_open=kill", Scenario::connect},
    {"LinkSetupAnnounced", "link.after_announce=kill", Scenario::connect},
    {"ActorFilePublication", "actor.before_publish=kill", Scenario::start},
    {"SendBlockedOnFullRing", nullptr, Scenario::send_blocked},
    {"DeadParentsChildTask", nullptr, Scenario::victim_parent},
};

bool killed_by_sigkill(const std::optional<int>& status) {
    return status.has_value() && WIFSIGNALED(*status) && WTERMSIG(*status) == SIGKILL;
}

/// A child task the victim starts here: blocks until cancelled, records who cancelled it.
struct SleeperLog {
    std::mutex mu;
    bool started = false;
    bool cancelled = false;
    std::optional<Uid> canceller;
};

class KillMatrix : public ::testing::TestWithParam<KillCase> {
protected:
    void SetUp() override {
        if (!shm::fault_points_enabled()) {
            GTEST_SKIP() << "this build has no fault points (configure with "
                            "-DSHMCTX_FAULT_POINTS=ON, as ./dev test does)";
        }
    }

    ActorOptions options() const {
        ActorOptions o;
        o.ns = guard_.names.ns();
        return o;
    }
    const shm::Names& names() const { return guard_.names; }

    test::Child spawn_victim(const char* fault, bool expect_ready = true) {
        std::vector<std::string> env;
        if (fault != nullptr) env.push_back(std::string("SHMCTX_FAULT=") + fault);
        test::Child child = test::spawn("actor_node", {names().ns(), "victim", "server"}, env);
        if (expect_ready && !child.expect_line("ready", kDeadline)) {
            child.kill(SIGKILL);
            (void)child.wait(kDeadline);
            ADD_FAILURE() << "the victim never became ready: " << child.describe();
        }
        return child;
    }

    /// The victim is gone and we forgot it: no link, no context, and of the namespace's
    /// objects only ours (`baseline`) remain, since we reclaimed its objects on its death.
    void expect_survivor_clean(Actor& survivor, const std::set<std::string>& baseline) {
        EXPECT_TRUE(wait_until([&] { return survivor.links() == 0; }, kDeadline));
        EXPECT_TRUE(wait_until([&] { return survivor.open_contexts() == 0; }, kDeadline))
            << survivor.open_contexts() << " contexts still open";
        EXPECT_TRUE(wait_until([&] { return objects_of(names()) == baseline; }, kDeadline))
            << "objects left: " << ::testing::PrintToString(objects_of(names()));
    }

    /// A victim of the same name starts at once and serves.
    void expect_restart_works(Actor& survivor) {
        const auto start = Clock::now();
        test::Child again = spawn_victim(nullptr);
        ASSERT_TRUE(again.running()) << again.describe();
        ::testing::Test::RecordProperty(
            "restart_us", std::to_string(std::chrono::duration_cast<std::chrono::microseconds>(
                                             Clock::now() - start)
                                             .count()));
        Portal portal = survivor.connect("victim", kDeadline);
        EXPECT_EQ(portal.run("add_one", Payload::value(std::int64_t{41}), kDeadline)
                      .value<std::int64_t>(),
                  42);
        again.write("quit\n");
        const auto status = again.wait(kDeadline);
        EXPECT_TRUE(status.has_value() && WIFEXITED(*status) && WEXITSTATUS(*status) == 0)
            << again.describe();
    }

    test::NamespaceGuard guard_{"kill"};
    test::Watchdog watchdog_{kTestLimit, [names = guard_.names] {
                                 for (const auto& o : test::all_objects(names)) {
                                     ::unlink(shm::shm_path(o).c_str());
                                 }
                             }};
};

/// Receives the victim's 0, 1, 2, ... until PeerDied (which it lets through), checking each
/// value and, at the death, that every record the victim published was received (the ring's
/// own count); `next` counts the messages received.
void receive_sequence_until_death(Context& ctx, bool with_poller, std::int64_t& next) {
    auto stream = ctx.open_stream();
    Poller poller;
    if (with_poller) poller.add(stream);
    const auto check_all_published_received = [&] {
        const shm::RingCounters c = stream.inbound_counters();
        EXPECT_EQ(static_cast<std::uint64_t>(next), c.sent)
            << "published records lost (received " << next << ")";
    };
    try {
        for (;;) {
            if (with_poller) {
                const auto ready = poller.wait(Deadline(kDeadline));
                if (ready.empty()) {
                    ADD_FAILURE() << "the Poller never woke (after " << next << " messages)";
                    return;
                }
            }
            const Message m = stream.receive();  // PeerDied ends the loop
            EXPECT_EQ(m.value<std::int64_t>(), next) << "lost or reordered";
            ++next;
        }
    } catch (const PeerDied&) {
        check_all_published_received();
        throw;
    }
}

TEST_P(KillMatrix, SurvivorWakesReclaimsAndTheNameRestarts) {
    const KillCase& c = GetParam();
    Actor survivor("survivor", options());
    SleeperLog sleeper;
    survivor.expose("sleeper", [&](Context& ctx, const Payload&) -> Payload {
        ctx.started();
        {
            const std::lock_guard lock(sleeper.mu);
            sleeper.started = true;
        }
        try {
            test::until_cancelled(ctx, kDeadline);
        } catch (const Cancelled&) {
            const std::lock_guard lock(sleeper.mu);
            sleeper.cancelled = true;
            sleeper.canceller = ctx.canceller();
            throw;
        }
        return Payload{};
    });
    const std::set<std::string> baseline = objects_of(names());

    if (c.scenario == Scenario::start) {
        test::Child victim = spawn_victim(c.fault, /*expect_ready=*/false);
        EXPECT_TRUE(killed_by_sigkill(victim.wait(kDeadline))) << victim.describe();
        EXPECT_THROW((void)survivor.connect("victim", 200ms), ActorNotFound)
            << "a half-built actor is invisible";
        // Nobody was linked to it: what it left is reclaimed by the next actor of its name.
        ASSERT_NO_FATAL_FAILURE(expect_restart_works(survivor));
        EXPECT_TRUE(wait_until([&] { return objects_of(names()) == baseline; }, kDeadline))
            << "objects left: " << ::testing::PrintToString(objects_of(names()));
        return;
    }

    test::Child victim = spawn_victim(c.fault);
    ASSERT_TRUE(victim.running()) << victim.describe();
    std::exception_ptr raised;
    const auto catch_into = [&](auto&& fn) {
        try {
            fn();
        } catch (...) {
            raised = std::current_exception();
        }
    };

    switch (c.scenario) {
        case Scenario::receive_stream:
        case Scenario::poll_spill: {
            Portal portal = survivor.connect("victim", kDeadline);
            const bool spill = c.scenario == Scenario::poll_spill;
            OpenOptions o;
            o.allow_overruns = spill;
            std::int64_t received = 0;
            catch_into([&] {
                (void)portal.open_context(
                    spill ? "stream_ints_spill" : "stream_ints",
                    spill ? Payload::value(std::int64_t{100000}) : Payload{},
                    [&](Context& ctx, const Payload&) {
                        receive_sequence_until_death(ctx, spill, received);
                    },
                    o);
            });
            if (c.delivered >= 0) {
                EXPECT_EQ(received, c.delivered);
            }
            break;
        }
        case Scenario::run_rpc: {
            Portal portal = survivor.connect("victim", kDeadline);
            int calls = 0;
            catch_into([&] {
                for (std::int64_t i = 0; i < 100; ++i, ++calls) {
                    EXPECT_EQ(
                        portal.run("add_one", Payload::value(i), kDeadline).value<std::int64_t>(),
                        i + 1);
                }
            });
            EXPECT_LT(calls, 100) << "the victim never reached its fault point";
            break;
        }
        case Scenario::cancel_context: {
            Portal portal = survivor.connect("victim", kDeadline);
            catch_into([&] {
                (void)portal.open_context("sleeper", {}, [&](Context& ctx, const Payload&) {
                    auto stream = ctx.open_stream();
                    const auto start = Clock::now();
                    ctx.cancel(Deadline(kDeadline));  // ends when the link goes
                    EXPECT_LT(Clock::now() - start, kDeadline) << "cancel() waited it out";
                    (void)stream.receive();
                });
            });
            break;
        }
        case Scenario::cancel_actor: {
            Portal portal = survivor.connect("victim", kDeadline);
            std::atomic<bool> sleeping{false};
            std::exception_ptr ctx_error;
            std::jthread holder([&] {
                try {
                    (void)portal.open_context("sleeper", {}, [&](Context& ctx, const Payload&) {
                        sleeping = true;
                        auto stream = ctx.open_stream();
                        (void)stream.receive();
                    });
                } catch (...) {
                    ctx_error = std::current_exception();
                }
            });
            ASSERT_TRUE(wait_until([&] { return sleeping.load(); }, kDeadline));
            const auto start = Clock::now();
            EXPECT_FALSE(portal.cancel_actor(Deadline(kDeadline))) << "acked by a dead actor?";
            EXPECT_LT(Clock::now() - start, kDeadline) << "cancel_actor() waited it out";
            holder.join();
            raised = ctx_error;
            break;
        }
        case Scenario::connect:
            catch_into([&] {
                Portal portal = survivor.connect("victim", kDeadline);
                // The victim may die after its LinkOpen went out: then the first call fails.
                (void)portal.run("add_one", Payload::value(std::int64_t{1}), kDeadline);
            });
            break;
        case Scenario::send_blocked: {
            Portal portal = survivor.connect("victim", kDeadline);
            std::atomic<pid_t> sender{0};
            std::jthread killer([&] {
                // Kill once our sender sleeps in send() (it spins first, then blocks).
                EXPECT_TRUE(wait_until(
                    [&] {
                        const pid_t tid = sender.load();
                        return tid != 0 && thread_state(tid) == 'S';
                    },
                    kDeadline));
                victim.kill(SIGKILL);
            });
            catch_into([&] {
                (void)portal.open_context("gated_count", {}, [&](Context& ctx, const Payload&) {
                    StreamOptions o;
                    o.on_full = OnFull::block;
                    auto stream = ctx.open_stream(o);
                    sender = current_tid();
                    for (std::int64_t i = 0;; ++i) stream.send(Payload::value(i));
                });
            });
            killer.join();
            break;
        }
        case Scenario::victim_parent: {
            Portal portal = survivor.connect("victim", kDeadline);
            std::jthread killer([&] {
                EXPECT_TRUE(wait_until(
                    [&] {
                        const std::lock_guard lock(sleeper.mu);
                        return sleeper.started;
                    },
                    kDeadline));
                victim.kill(SIGKILL);
            });
            catch_into([&] {
                (void)portal.open_context("cascade_hold", Payload::value("survivor"),
                                          [&](Context& ctx, const Payload&) {
                                              auto stream = ctx.open_stream();
                                              (void)stream.receive();
                                          });
            });
            killer.join();
            // Our child task of the dead parent: cancelled, with ourselves as canceller.
            EXPECT_TRUE(wait_until(
                [&] {
                    const std::lock_guard lock(sleeper.mu);
                    return sleeper.cancelled;
                },
                kDeadline));
            const std::lock_guard lock(sleeper.mu);
            ASSERT_TRUE(sleeper.canceller.has_value());
            EXPECT_EQ(sleeper.canceller->uuid, survivor.uid().uuid)
                << "canceller " << sleeper.canceller->to_string();
            break;
        }
        case Scenario::start:
            break;
    }

    ASSERT_TRUE(raised != nullptr) << "nothing was raised";
    try {
        std::rethrow_exception(raised);
    } catch (const PeerDied& e) {
        EXPECT_THAT(e.what(), HasSubstr("victim"));
        EXPECT_THAT(e.what(), HasSubstr("died"));
    } catch (const std::exception& e) {
        ADD_FAILURE() << "expected PeerDied, got " << error_type_name(e) << ": " << e.what();
    }
    EXPECT_TRUE(killed_by_sigkill(victim.wait(kDeadline))) << victim.describe();
    ASSERT_NO_FATAL_FAILURE(expect_survivor_clean(survivor, baseline));
    ASSERT_NO_FATAL_FAILURE(expect_restart_works(survivor));
    EXPECT_TRUE(wait_until([&] { return objects_of(names()) == baseline; }, kDeadline));
}

INSTANTIATE_TEST_SUITE_P(FaultPoints, KillMatrix, ::testing::ValuesIn(kCases),
                         [](const auto& p) { return std::string(p.param.name); });

}  // namespace
}  // namespace shmctx
