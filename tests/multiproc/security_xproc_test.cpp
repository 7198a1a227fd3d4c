// Permissions and resource limits across real processes (issue 9 items 3 and 4; DESIGN.md threat
// model and §2; docs/protocol.d/security.md). The helper is security_peer:
//  - modes: every object an actor creates (actor file, tmp segment, published segment, arenas)
//    has ActorOptions::mode exactly, 0600 by default;
//  - another Unix user (created with useradd when we are root, else the tests skip) can neither
//    join, open, read, clean nor signal our actor; objects it plants under our names are refused
//    with PermissionDenied even when their mode would let us in;
//  - a full /dev/shm (a 2 MiB tmpfs in a private mount namespace) is ShmExhausted with the
//    figures, at the allocation, never a SIGBUS, and the actors keep working.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <pwd.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "namespace_guard.hpp"
#include "process.hpp"
#include "shmctx/actor.hpp"
#include "shmctx/context.hpp"
#include "shmctx/errors.hpp"
#include "shmctx/payload.hpp"
#include "shmctx/shm/actor_file.hpp"
#include "shmctx/shm/actor_segment.hpp"
#include "shmctx/shm/names.hpp"
#include "shmctx/shm/segment.hpp"

namespace shmctx {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr auto kDeadline = 20s;
constexpr const char* kOtherUser = "shmctx-test-other";

bool starts_with(const std::string& s, std::string_view prefix) { return s.rfind(prefix, 0) == 0; }

/// All lines of a helper that runs to its end, and its wait status.
struct Transcript {
    std::vector<std::string> lines;
    std::optional<int> status;
    std::string describe;
    std::string text() const {
        std::string out;
        for (const auto& l : lines) out += "  " + l + "\n";
        return out;
    }
    bool exited_ok() const { return status && WIFEXITED(*status) && WEXITSTATUS(*status) == 0; }
    /// The line starting with `key`, without the key; "" if none.
    std::string after(std::string_view key) const {
        for (const auto& l : lines) {
            if (starts_with(l, key)) return l.substr(key.size());
        }
        return "";
    }
};

Transcript run_to_end(test::Child child, Deadline deadline = kDeadline) {
    Transcript t;
    while (auto line = child.read_line(deadline)) t.lines.push_back(*line);
    t.status = child.wait(deadline);
    t.describe = child.describe();
    return t;
}

/// uid of the second user, created with useradd if missing; nullopt with `why` when it cannot
/// exist here (not root, or useradd failed).
std::optional<uid_t> other_user(std::string& why) {
    if (::geteuid() != 0) {
        why = "needs root to create and become a second user (euid " + std::to_string(::geteuid()) +
              ")";
        return std::nullopt;
    }
    if (const passwd* pw = ::getpwnam(kOtherUser)) return pw->pw_uid;
    // Parallel test processes may race here: the loser's useradd fails, the user exists anyway.
    auto t = run_to_end(test::spawn("/usr/sbin/useradd", {"--system", "--no-create-home", "--shell",
                                                          "/usr/sbin/nologin", kOtherUser}));
    if (const passwd* pw = ::getpwnam(kOtherUser)) return pw->pw_uid;
    why = std::string("useradd ") + kOtherUser + " failed (" + t.describe + ")";
    return std::nullopt;
}

/// An endpoint that echoes each stream message and returns how many it saw.
Payload echo(Context& ctx, const Payload&) {
    ctx.started();
    auto stream = ctx.open_stream();
    std::int64_t n = 0;
    for (const auto& msg : stream) {
        stream.send(msg.view());
        ++n;
    }
    return Payload::value(n);
}

/// One context of `echo` with `n` round trips; returns the child's count.
std::int64_t echo_round(Portal& portal, std::int64_t n) {
    auto r = portal.open_context("echo", {}, [&](Context& ctx, const Payload&) {
        auto stream = ctx.open_stream();
        for (std::int64_t i = 0; i < n; ++i) {
            stream.send("ping");
            if (stream.receive().text() != "ping") throw std::runtime_error("echo damaged");
        }
    });
    return r.outcome.value().value<std::int64_t>();
}

struct stat stat_object(const std::string& object) {
    struct stat st {};
    if (::stat(shm::shm_path(object).c_str(), &st) != 0) {
        ADD_FAILURE() << "stat " << object << ": " << std::strerror(errno);
    }
    return st;
}

// ---------------------------------------------------------------------------------------------
// Modes

class ActorModes : public ::testing::TestWithParam<mode_t> {};

// Two actors, linked, with a stream open both ways: both actor files, both segments and both
// arenas (one per direction, owned by its producer; the data rings are carved inside) have
// exactly the requested mode and our uid, under a umask (0077) that would narrow 0660.
TEST_P(ActorModes, EveryObjectOfLinkedActorsHasTheMode) {
    const mode_t mode = GetParam();
    test::NamespaceGuard ns("mode");
    const mode_t old_umask = ::umask(0077);
    ActorOptions options{.ns = ns.names.ns(), .mode = mode};
    std::vector<std::string> objects;
    std::vector<struct stat> stats;
    {
        Actor server("server", options);
        server.expose("echo", echo);
        Actor client("client", options);
        Portal portal = client.connect("server", kDeadline);
        auto r = portal.open_context("echo", {}, [&](Context& ctx, const Payload&) {
            auto stream = ctx.open_stream();
            stream.send("ping");
            EXPECT_EQ(stream.receive().text(), "ping");
            objects = test::all_objects(ns.names);  // while both data rings are carved
            for (const auto& o : objects) stats.emplace_back(stat_object(o));
        });
        EXPECT_EQ(r.outcome.value().value<std::int64_t>(), 1);
    }
    ::umask(old_umask);
    std::map<std::string, int> kinds;
    ASSERT_EQ(stats.size(), objects.size());
    for (std::size_t i = 0; i < objects.size(); ++i) {
        const std::string& o = objects[i];
        const struct stat& st = stats[i];
        const std::string kind =
            o.substr(ns.names.prefix().size(),
                     o.find('.', ns.names.prefix().size()) - ns.names.prefix().size());
        ++kinds[kind];
        EXPECT_EQ(st.st_mode & 07777, mode)
            << o << " has mode " << std::oct << (st.st_mode & 07777);
        EXPECT_EQ(st.st_uid, ::geteuid()) << o;
    }
    EXPECT_EQ(kinds["actor"], 2) << ::testing::PrintToString(objects);
    EXPECT_EQ(kinds["seg"], 2) << ::testing::PrintToString(objects);
    EXPECT_EQ(kinds["link"], 2) << ::testing::PrintToString(objects);
    EXPECT_THAT(test::all_objects(ns.names), ::testing::IsEmpty());
}

// The segment under construction (tmp.<name>.<uuid>, before link() publishes it) has the mode
// too: an actor process stalled at the fault point "actor.before_publish" shows it.
TEST_P(ActorModes, TmpSegmentOfAnActorBeingBuiltHasTheMode) {
    if (!shm::fault_points_enabled()) GTEST_SKIP() << "built without -DSHMCTX_FAULT_POINTS=ON";
    const mode_t mode = GetParam();
    test::NamespaceGuard ns("tmpmode");
    char mode_text[8];
    std::snprintf(mode_text, sizeof mode_text, "%o", static_cast<unsigned>(mode));
    auto child = test::spawn("security_peer", {"actor", ns.names.ns(), "stalled", mode_text},
                             {"SHMCTX_FAULT=actor.before_publish=stall"});
    ASSERT_TRUE(test::wait_until([&] { return ns.names.list("tmp").size() == 1; }, kDeadline))
        << "no tmp segment appeared; helper " << child.describe();
    const std::string tmp = ns.names.prefix() + "tmp." + ns.names.list("tmp").front();
    EXPECT_EQ(stat_object(tmp).st_mode & 07777, mode) << tmp;
    EXPECT_EQ(stat_object(ns.names.actor_file("stalled")).st_mode & 07777, mode);
    EXPECT_TRUE(ns.names.list("seg").empty()) << "published before the stall point";
    child.kill(SIGKILL);
    const auto st = child.wait(kDeadline);
    ASSERT_TRUE(st && WIFSIGNALED(*st)) << child.describe();
    // The stalled actor is dead now: the sweep any actor runs removes what it left.
    const auto report = shm::reclaim_stale(ns.names);
    EXPECT_THAT(report.removed, ::testing::Contains(tmp));
    EXPECT_THAT(test::all_objects(ns.names), ::testing::IsEmpty());
}

INSTANTIATE_TEST_SUITE_P(Security, ActorModes, ::testing::Values(mode_t{0600}, mode_t{0660}),
                         [](const ::testing::TestParamInfo<mode_t>& p) {
                             return p.param == 0600 ? std::string("Default0600")
                                                    : std::string("Group0660");
                         });

TEST(ActorModesDefault, DefaultOptionsAreOwnerOnly) {
    EXPECT_EQ(ActorOptions{}.mode, 0600U);
    EXPECT_EQ(shm::SegmentOptions{}.mode, 0600U);
}

// ---------------------------------------------------------------------------------------------
// Another Unix user

class OtherUser : public ::testing::Test {
protected:
    void SetUp() override {
        std::string why;
        uid_ = other_user(why);
        if (!uid_) GTEST_SKIP() << why;
    }
    std::optional<uid_t> uid_;
};

// Our actor (mode 0600) with a live link and a stream carved; the other user tries everything.
// connect() is ActorNotFound, not PermissionDenied: object names carry the euid, so the other
// user's connect looks in its own name space, where our actor does not exist (a name of another
// user is not one it can ask for); aimed at our names with the shm layer, every open is
// refused by the kernel (EACCES -> PermissionDenied) before a byte is read.
TEST_F(OtherUser, CannotJoinOpenListCleanOrSignalOurActor) {
    test::NamespaceGuard ns("intrude");
    ActorOptions options{.ns = ns.names.ns()};
    Actor victim("victim", options);
    victim.expose("echo", echo);
    Actor friend_actor("friend", options);
    Portal portal = friend_actor.connect("victim", kDeadline);
    ASSERT_EQ(echo_round(portal, 3), 3);
    const auto objects_before = test::all_objects(ns.names);

    const Transcript t = run_to_end(
        test::spawn("security_peer", {"intrude", kOtherUser, ns.names.ns(), "victim",
                                      std::to_string(::geteuid()), std::to_string(::getpid())}));
    ASSERT_TRUE(t.exited_ok()) << "helper " << t.describe << "; output:\n" << t.text();
    EXPECT_EQ(t.after("uid "), std::to_string(*uid_)) << t.text();
    EXPECT_THAT(t.after("connect: "), StartsWith("ActorNotFound")) << t.text();
    EXPECT_THAT(t.after("open_peer: "), StartsWith("PermissionDenied")) << t.text();
    EXPECT_THAT(t.after("actor_file: "), StartsWith("PermissionDenied")) << t.text();
    EXPECT_THAT(t.after("segment_rw: "), StartsWith("PermissionDenied")) << t.text();
    EXPECT_THAT(t.after("segment_ro: "), StartsWith("PermissionDenied")) << t.text();
    EXPECT_THAT(t.after("actor_header: "), StartsWith("PermissionDenied")) << t.text();
    // Names are visible (a directory listing), contents are not: each arena refused.
    EXPECT_EQ(t.after("arenas listed="), "2 denied=2") << t.text();
    EXPECT_EQ(t.after("their_names "), "actors=2 segs=2") << t.text();
    EXPECT_EQ(t.after("own_names "), "actors=0 segs=0 links=0") << t.text();
    EXPECT_EQ(t.after("reclaim: "), "ok removed=0") << t.text();
    EXPECT_EQ(t.after("signal: "), "EPERM") << t.text();
    EXPECT_EQ(t.lines.back(), "done") << t.text();

    // Nothing of ours changed, nothing cancelled, and the actor still serves.
    EXPECT_EQ(test::all_objects(ns.names), objects_before);
    EXPECT_FALSE(victim.cancel_called());
    EXPECT_EQ(victim.links(), 1U);
    EXPECT_EQ(echo_round(portal, 3), 3);
    // The intruder's own actor cleaned up after itself.
    EXPECT_THAT(shm::Names(ns.names.ns(), *uid_).list("actor"), ::testing::IsEmpty());
}

#ifdef SHMCTX_CLI_PATH
// `shmctx ls` run by the other user shows nothing of ours, in our namespace or in all of them.
TEST_F(OtherUser, CliListsNothingOfOurs) {
    test::NamespaceGuard ns("cli");
    Actor victim("victim", ActorOptions{.ns = ns.names.ns()});
    for (const std::vector<std::string>& args :
         {std::vector<std::string>{"ls", "--ns", ns.names.ns(), "--json"},
          std::vector<std::string>{"ls", "--all-ns", "--json"}}) {
        std::vector<std::string> argv{"exec-as", kOtherUser, SHMCTX_CLI_PATH};
        argv.insert(argv.end(), args.begin(), args.end());
        const Transcript t = run_to_end(test::spawn("security_peer", argv));
        ASSERT_TRUE(t.exited_ok()) << "shmctx " << args[1] << ": " << t.describe << "\n"
                                   << t.text();
        EXPECT_THAT(t.text(), ::testing::Not(HasSubstr("victim"))) << t.text();
        EXPECT_THAT(t.text(), ::testing::Not(HasSubstr(victim.uid().to_string()))) << t.text();
    }
}
#endif

// Objects planted under our names by the other user with mode 0666: we are root, so the kernel
// would let us open them; the library's owner check refuses each with PermissionDenied naming
// the owner, for the raw segment, the arena, the actor file (claim and connect) alike.
TEST_F(OtherUser, ObjectsOwnedByAnotherUidAreRefusedWhateverTheirMode) {
    test::NamespaceGuard ns("plant");
    auto child = test::spawn("security_peer", {"plant", kOtherUser, std::to_string(::geteuid()),
                                               ns.names.ns(), "planted"});
    const auto line = child.read_line(kDeadline);
    ASSERT_TRUE(line && starts_with(*line, "planted ")) << "helper " << child.describe();
    std::vector<std::string> planted;
    {
        std::istringstream in(line->substr(8));
        for (std::string s; in >> s;) planted.push_back(s);
    }
    ASSERT_EQ(planted.size(), 3U) << *line;
    const std::string& file = planted[0];
    const std::string& seg = planted[1];
    const std::string& arena = planted[2];
    for (const auto& o : planted) {
        const struct stat st = stat_object(o);
        EXPECT_EQ(st.st_uid, *uid_) << o;
        EXPECT_EQ(st.st_mode & 0777, 0666U) << o;
    }
    const std::string owner_text = "owned by uid " + std::to_string(*uid_);
    for (const std::string* name : {&seg, &arena}) {
        try {
            (void)shm::Segment::try_open(*name);
            ADD_FAILURE() << "opened " << *name << " owned by uid " << *uid_;
        } catch (const PermissionDenied& e) {
            EXPECT_THAT(e.what(), HasSubstr(owner_text)) << e.what();
        }
        EXPECT_THROW((void)shm::Segment::try_open(*name, shm::SegmentOptions{0600, true}),
                     PermissionDenied);
    }
    EXPECT_THROW((void)shm::ActorSegment::try_open(ns.names, "planted"), PermissionDenied);
    // Claiming the name: the actor file is not ours.
    try {
        Actor impostor("planted", ActorOptions{.ns = ns.names.ns()});
        ADD_FAILURE() << "claimed a name whose actor file uid " << *uid_ << " owns";
    } catch (const PermissionDenied& e) {
        EXPECT_THAT(e.what(), HasSubstr(owner_text)) << e.what();
    }
    // Connecting to it: refused at the actor file, before the segment is mapped.
    {
        Actor client("client", ActorOptions{.ns = ns.names.ns()});
        try {
            (void)client.connect("planted", Deadline(500ms));
            ADD_FAILURE() << "connected to a planted actor";
        } catch (const PermissionDenied& e) {
            EXPECT_THAT(e.what(), HasSubstr(owner_text)) << e.what();
        }
    }
    // Our sweep (run by the client's start-up too) skips them with a note, removing nothing.
    const auto report = shm::reclaim_stale(ns.names);
    EXPECT_THAT(report.removed, ::testing::IsEmpty());
    EXPECT_EQ(stat_object(file).st_uid, *uid_);
    EXPECT_EQ(stat_object(seg).st_uid, *uid_);
    EXPECT_EQ(stat_object(arena).st_uid, *uid_);

    // The owner removes what it planted (root could, but the test must not lean on that).
    child.write("quit\n");
    EXPECT_TRUE(child.expect_line("removed", kDeadline)) << "helper " << child.describe();
    const auto st = child.wait(kDeadline);
    EXPECT_TRUE(st && WIFEXITED(*st) && WEXITSTATUS(*st) == 0) << child.describe();
    EXPECT_THAT(test::all_objects(ns.names), ::testing::IsEmpty());
}

// ---------------------------------------------------------------------------------------------
// Exhaustion of /dev/shm

// A 2 MiB tmpfs over /dev/shm in the helper's private mount namespace: data rings and then
// actors are created until the space runs out. Each failure is ShmExhausted (directly, or boxed
// when the peer's carve failed) naming the bytes asked for and the bytes free; nothing crashes
// (a SIGBUS would kill the helper), the link streams again once the failed contexts are gone,
// the server keeps serving, and the actors leave nothing behind.
TEST(ShmExhaustion, ActorsLinksAndStreamsFailWithShmExhaustedAndTheActorKeepsWorking) {
    const Transcript t = run_to_end(
        test::spawn("security_peer", {"exhaust", test::unique_ns("exh")}), Deadline(60s));
    ASSERT_TRUE(t.exited_ok()) << "helper " << t.describe
                               << " (signal 7 would be a SIGBUS); output:\n"
                               << t.text();
    ASSERT_FALSE(t.lines.empty());
    if (starts_with(t.lines[0], "skip")) {
        GTEST_SKIP() << "cannot mount a private tmpfs here (needs root or CAP_SYS_ADMIN): "
                     << t.lines[0];
    }
    const auto exhausted_with_figures = [&](const std::string& failure) {
        EXPECT_THAT(failure, HasSubstr("ShmExhausted: posix_fallocate(")) << t.text();
        EXPECT_THAT(failure, ::testing::ContainsRegex("[0-9]+ bytes at offset")) << t.text();
        EXPECT_THAT(failure, ::testing::ContainsRegex("[0-9]+ bytes free in /dev/shm")) << t.text();
    };
    EXPECT_EQ(t.after("baseline ok="), "10") << t.text();
    // 1. Actors with a link each: the first that does not fit fails, the others keep working.
    EXPECT_GE(std::stoi("0" + t.after("actors ok=")), 1) << t.text();
    exhausted_with_figures(t.after("actor-failure "));
    EXPECT_EQ(t.after("survivor ok="), "10") << t.text();
    EXPECT_EQ(t.after("last-link ok="), "10") << t.text();
    EXPECT_THAT(t.after("space back="), StartsWith("1 ")) << t.text();
    // 2. A link whose own arena cannot be backed: connect raises ShmExhausted at once.
    EXPECT_THAT(t.after("own-arena-failure "), StartsWith("connect: ShmExhausted")) << t.text();
    exhausted_with_figures(t.after("own-arena-failure "));
    EXPECT_EQ(t.after("own-arena-after ok="), "10") << t.text();
    // The server's side cannot be backed: it logs ShmExhausted (stderr) and never answers, so
    // connect ends at its deadline with ActorNotFound; a retry once there is room links (the
    // retry announces again: without that the server never looked a second time).
    EXPECT_THAT(t.after("peer-arena-failure "), StartsWith("connect: ActorNotFound")) << t.text();
    EXPECT_EQ(t.after("peer-arena-after ok="), "10") << t.text();
    EXPECT_EQ(t.after("server links="), "1") << t.text();
    // 3. Streams: the carve of a data ring fails, the contexts end, the link streams again.
    EXPECT_GE(std::stoi("0" + t.after("streams ok=")), 1) << t.text();
    exhausted_with_figures(t.after("stream-failure "));
    EXPECT_EQ(t.after("stream-after ok="), "10") << t.text();
    EXPECT_EQ(t.after("leftover "), "0") << t.text();
    EXPECT_EQ(t.lines.back(), "done") << t.text();
}

}  // namespace
}  // namespace shmctx
