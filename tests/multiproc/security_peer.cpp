// Helper for security_xproc_test (issue 9 items 3 and 4). Spawned with posix_spawn by the test
// (which runs as root when it can); prints its observations on stdout, one per line, and exits 0
// when the mode ran to its end (the test judges the lines). Modes:
//
//   intrude <user> <ns> <actor> <victim-uid> <victim-pid>
//       drops to <user> (setgroups, setgid, setuid: before anything else), then tries to reach
//       the actor <actor> of <victim-uid> in <ns> every way a library user could: Actor::connect,
//       shm::open_peer, the actor file's lock, the segment (read-write and read-only), each
//       arena, a listing of its names and contents, and a signal to its process. One line
//       "<probe>: <outcome>" per attempt ("PermissionDenied", "ActorNotFound", "EPERM", "ok ...").
//   plant <user> <owner-uid> <ns> <name>
//       drops to <user>, then creates under <owner-uid>'s names of <ns> an actor file, a segment
//       and an arena for actor <name>, each mode 0666 (what a careless or hostile user could
//       leave in the world-writable /dev/shm); prints "planted <actor-file> <segment> <arena>",
//       waits for a line or EOF on stdin, removes them and prints "removed".
//   exec-as <user> <program> [args...]
//       drops to <user> and execv()s <program> (the shmctx CLI as another user).
//   actor <ns> <name> <mode-octal>
//       an Actor with ActorOptions::mode = <mode>; prints "ready", serves until EOF on stdin.
//       Run with SHMCTX_FAULT=actor.before_publish=stall it stops while its segment is still
//       the tmp object, so the test can stat that one too.
//   exhaust <ns>
//       private mount namespace with a 4 MiB tmpfs on /dev/shm (prints "skip ..." and exits 0
//       when unshare/mount are not permitted); then, in that order: actors linked to a server
//       until one cannot be made ("actors ok=N", "actor-failure <where>: <Type>: <text>"); the
//       server and the links made before still stream ("survivor ok=10", "last-link ok=10"); a
//       late actor whose own arena cannot be backed, then one whose server side cannot be
//       ("own-arena-failure ...", "peer-arena-failure ..."), each connecting and streaming
//       once the room is back ("own-arena-after ok=10", "peer-arena-after ok=10"); nested
//       streams until a data ring cannot be carved ("streams ok=N", "stream-failure ...",
//       "stream-after ok=10"); "leftover N" objects at the end and "done".
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "private_shm.hpp"
#include "process.hpp"
#include "shmctx/actor.hpp"
#include "shmctx/errors.hpp"
#include "shmctx/shm/actor_file.hpp"
#include "shmctx/shm/actor_segment.hpp"
#include "shmctx/shm/names.hpp"
#include "shmctx/shm/segment.hpp"
#include "shmctx/uuid.hpp"

namespace {

using namespace shmctx;
using namespace std::chrono_literals;

void say(const std::string& line) {
    std::fputs((line + "\n").c_str(), stdout);
    std::fflush(stdout);
}

int usage() {
    std::fprintf(stderr, "security_peer: bad arguments (see the file comment)\n");
    return 64;
}

/// Becomes `user` for good: supplementary groups, gid, then uid (in that order: once the uid is
/// dropped, the groups can no longer be changed). Exits 3 on failure, since every later probe
/// would then test root's rights instead of the other user's.
void drop_to(const std::string& user) {
    const passwd* pw = ::getpwnam(user.c_str());
    if (pw == nullptr) {
        std::fprintf(stderr, "security_peer: no user '%s'\n", user.c_str());
        std::exit(3);
    }
    const uid_t uid = pw->pw_uid;
    const gid_t gid = pw->pw_gid;
    if (::setgroups(0, nullptr) != 0 || ::setgid(gid) != 0 || ::setuid(uid) != 0) {
        std::fprintf(stderr, "security_peer: cannot become '%s': %s\n", user.c_str(),
                     std::strerror(errno));
        std::exit(3);
    }
    // The drop must be irreversible, or the probes below prove nothing.
    if (::setuid(0) == 0 || ::geteuid() != uid || ::getegid() != gid) {
        std::fprintf(stderr, "security_peer: still privileged after dropping to '%s'\n",
                     user.c_str());
        std::exit(3);
    }
}

/// Runs `probe` and names its outcome: "ok <what it returned>" or the error type.
std::string outcome_of(const std::function<std::string()>& probe) {
    try {
        return "ok " + probe();
    } catch (const PermissionDenied& e) {
        return std::string("PermissionDenied (") + e.what() + ")";
    } catch (const ActorNotFound& e) {
        return std::string("ActorNotFound (") + e.what() + ")";
    } catch (const std::exception& e) {
        return std::string("other (") + e.what() + ")";
    }
}

/// The outcome's first word: what the test asserts on.
std::string word(const std::string& outcome) { return outcome.substr(0, outcome.find(' ')); }

int run_intrude(const std::string& user, const std::string& ns, const std::string& actor,
                uid_t victim_uid, pid_t victim_pid) {
    drop_to(user);
    say("uid " + std::to_string(::geteuid()));
    const shm::Names ours(ns);  // the intruder's own names: its euid is in the prefix
    const shm::Names theirs(ns, victim_uid);

    // 1. The public API: connect looks the name up under our own euid.
    {
        Actor intruder("intruder", ActorOptions{.ns = ns});
        const std::string o = outcome_of([&] {
            (void)intruder.connect(actor, Deadline(300ms));
            return std::string("connected");
        });
        say("connect: " + o);
    }
    // 2. The shm layer aimed at the victim's names: the kernel refuses every open (mode 0600).
    say("open_peer: " + outcome_of([&] {
            auto peer = shm::open_peer(theirs, actor, Deadline(300ms));
            return "pid " + std::to_string(peer.pid());
        }));
    say("actor_file: " + outcome_of([&] {
            return std::to_string(static_cast<int>(shm::lock_state(theirs, actor)));
        }));
    say("segment_rw: " + outcome_of([&] {
            auto seg = shm::Segment::try_open(theirs.actor_segment(actor));
            return seg ? std::to_string(seg->size()) : std::string("absent");
        }));
    say("segment_ro: " + outcome_of([&] {
            auto seg = shm::Segment::try_open(theirs.actor_segment(actor),
                                              shm::SegmentOptions{0600, true});
            return seg ? std::to_string(seg->size()) : std::string("absent");
        }));
    say("actor_header: " + outcome_of([&] {
            auto seg =
                shm::ActorSegment::try_open(theirs, actor, shm::ActorSegmentOptions{0600, true});
            return seg ? seg->info().uuid.to_hex() : std::string("absent");
        }));
    // 3. Listing: names are visible (a directory scan of /dev/shm), contents are not.
    const auto arenas = theirs.list("link");
    std::size_t denied = 0;
    for (const auto& a : arenas) {
        const std::string o = outcome_of([&] {
            auto seg = shm::Segment::try_open(theirs.prefix() + "link." + a,
                                              shm::SegmentOptions{0600, true});
            return seg ? std::string("mapped") : std::string("absent");
        });
        if (word(o) == "PermissionDenied")
            ++denied;
        else
            say("arena " + a + ": " + o);
    }
    say("arenas listed=" + std::to_string(arenas.size()) + " denied=" + std::to_string(denied));
    say("their_names actors=" + std::to_string(theirs.list("actor").size()) +
        " segs=" + std::to_string(theirs.list("seg").size()));
    say("own_names actors=" + std::to_string(ours.list("actor").size()) +
        " segs=" + std::to_string(ours.list("seg").size()) +
        " links=" + std::to_string(ours.list("link").size()));
    // reclaim_stale as the intruder over the victim's names: it must remove nothing (the
    // sticky bit of /dev/shm and the owner checks) and not throw.
    say("reclaim: " + outcome_of([&] {
            const auto report = shm::reclaim_stale(theirs, false);
            return "removed=" + std::to_string(report.removed.size());
        }));
    // 4. Cancel: without a link there is no control ring to send a cancel on, and no signal
    //    either (kill with signal 0 checks the permission and sends nothing).
    errno = 0;
    const int rc = ::kill(victim_pid, 0);
    say(std::string("signal: ") + (rc == 0          ? "ok"
                                   : errno == EPERM ? "EPERM"
                                                    : std::strerror(errno)));
    say("done");
    return 0;
}

int create_mode_0666(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0 || ::fchmod(fd, 0666) != 0) {
        std::fprintf(stderr, "security_peer: create '%s': %s\n", path.c_str(),
                     std::strerror(errno));
        std::exit(4);
    }
    return fd;
}

int run_plant(const std::string& user, uid_t owner_uid, const std::string& ns,
              const std::string& name) {
    drop_to(user);
    const shm::Names theirs(ns, owner_uid);
    const std::string file = theirs.actor_file(name);
    const std::string seg = theirs.actor_segment(name);
    const std::string arena = theirs.arena(Uuid::random(), Uuid::random());
    const int fd = create_mode_0666(shm::shm_path(file));
    auto segment = shm::Segment::create(seg, 4096, shm::SegmentOptions{0666});
    auto arena_seg = shm::Segment::create(arena, 8192, shm::SegmentOptions{0666});
    say("planted " + file + " " + seg + " " + arena);
    char c = 0;
    for (;;) {  // until a line ("quit") or EOF
        const ssize_t n = ::read(STDIN_FILENO, &c, 1);
        if (n == 0 || (n < 0 && errno != EINTR) || (n == 1 && c == '\n')) break;
    }
    ::close(fd);
    ::unlink(shm::shm_path(file).c_str());
    shm::Segment::remove(seg);
    shm::Segment::remove(arena);
    say("removed");
    return 0;
}

int run_exec_as(const std::string& user, std::vector<std::string> argv) {
    drop_to(user);
    std::vector<char*> cargv;
    for (auto& a : argv) cargv.push_back(a.data());
    cargv.push_back(nullptr);
    ::execv(cargv[0], cargv.data());
    std::fprintf(stderr, "security_peer: execv '%s': %s\n", cargv[0], std::strerror(errno));
    return 5;
}

int run_actor(const std::string& ns, const std::string& name, mode_t mode) {
    Actor actor(name, ActorOptions{.ns = ns, .mode = mode});
    say("ready");
    char c = 0;
    for (;;) {
        const ssize_t n = ::read(STDIN_FILENO, &c, 1);
        if (n == 0 || (n < 0 && errno != EINTR)) return 0;
    }
}

// ---- exhaust ----

/// "<Type>: <what>" of the current exception, with RemoteActorError's boxed type.
std::string describe_current() {
    try {
        throw;
    } catch (const ShmExhausted& e) {
        return std::string("ShmExhausted: ") + e.what();
    } catch (const RemoteActorError& e) {
        return "RemoteActorError[" + e.boxed_type_name() + "]: " + e.what();
    } catch (const ActorNotFound& e) {
        return std::string("ActorNotFound: ") + e.what();
    } catch (const std::exception& e) {
        return std::string("other: ") + e.what();
    } catch (...) {
        return "other: not a std::exception";
    }
}

/// The "sink" endpoint: counts stream messages until the parent closes; returns the count.
Payload sink(Context& ctx, const Payload&) {
    ctx.started();
    auto stream = ctx.open_stream();
    std::int64_t n = 0;
    for (const auto& msg : stream) {
        (void)msg;
        ++n;
    }
    return Payload::value(n);
}

/// One context with a stream of `n` messages; returns the child's count.
std::int64_t stream_round(Portal& portal, std::int64_t n) {
    auto r = portal.open_context("sink", {}, [&](Context& ctx, const Payload&) {
        auto stream = ctx.open_stream();
        for (std::int64_t i = 0; i < n; ++i) stream.send("m");
    });
    return r.outcome.value().value<std::int64_t>();
}

/// Opens contexts with streams inside each other's bodies (each keeps its data rings) until one
/// fails; records where and how. Returns how many streams were open at the deepest point.
int nest_streams(Portal& portal, int depth, std::string& failure) {
    int deepest = depth;
    try {
        auto r = portal.open_context("sink", {}, [&](Context& ctx, const Payload&) {
            auto stream = ctx.open_stream();
            stream.send("m");  // carves our outbound ring
            if (depth + 1 >= 200) {
                failure = "no failure after 200 streams";
                return;
            }
            deepest = nest_streams(portal, depth + 1, failure);
        });
        if (r.outcome.value().value<std::int64_t>() != 1) failure += " [a sink lost its message]";
    } catch (...) {
        if (failure.empty()) failure = "depth " + std::to_string(depth) + ": " + describe_current();
    }
    return deepest;
}

std::size_t objects_of(const shm::Names& names) {
    std::size_t n = 0;
    for (const char* kind : {"actor", "seg", "tmp", "link"}) n += names.list(kind).size();
    return n;
}

int run_exhaust(const std::string& ns) {
    if (const std::string why = test::mount_private_dev_shm("4m"); !why.empty()) {
        say("skip " + why);
        return 0;
    }
    say("mounted free=" + std::to_string(shm::shm_free_bytes()));
    const shm::Names names(ns);
    ActorOptions options{.ns = ns};
    options.data_ring_bytes = std::size_t{128} * 1024;  // a few streams fill 4 MiB
    {
        Actor server("server", options);
        server.expose("sink", sink);
        Actor client("client", options);
        Portal portal = client.connect("server", Deadline(5s));
        say("baseline ok=" + std::to_string(stream_round(portal, 10)));

        // 1. Actors (each with a link to the server) until a segment or arena cannot be made.
        std::vector<std::unique_ptr<Actor>> actors;
        std::vector<Portal> portals;
        std::string actor_failure;
        std::size_t link_bytes = 0;
        const std::size_t free_before_actors = shm::shm_free_bytes();
        for (int i = 0; i < 200 && actor_failure.empty(); ++i) {
            std::string where = "actor c" + std::to_string(i);
            try {
                auto actor = std::make_unique<Actor>("c" + std::to_string(i), options);
                where = "connect c" + std::to_string(i);
                const std::size_t before = shm::shm_free_bytes();
                Portal p = actor->connect("server", Deadline(5s));
                // Both arenas of a link (ours and the server's), control rings included.
                if (link_bytes == 0) link_bytes = before - shm::shm_free_bytes();
                where = "stream c" + std::to_string(i);
                if (stream_round(p, 3) != 3) throw std::runtime_error("lost messages");
                portals.push_back(std::move(p));
                actors.push_back(std::move(actor));
            } catch (...) {
                actor_failure = where + ": " + describe_current();
            }
        }
        say("actors ok=" + std::to_string(actors.size()));
        say("actor-failure " + (actor_failure.empty() ? "none after 200" : actor_failure));
        // The server and the links made before the failure keep working.
        say("survivor ok=" + std::to_string(stream_round(portal, 10)));
        if (!portals.empty()) {
            say("last-link ok=" + std::to_string(stream_round(portals.back(), 10)));
        }
        portals.clear();
        actors.clear();  // their segments and arenas (and the server's arenas to them) go
        // The server closes their links and unmaps their objects asynchronously; then every
        // byte they used is free again.
        const bool back = test::wait_until(
            [&] { return server.links() == 1 && shm::shm_free_bytes() >= free_before_actors; },
            Deadline(10s));
        say(std::string("space back=") + (back ? "1" : "0") + " links=" +
            std::to_string(server.links()) + " free=" + std::to_string(shm::shm_free_bytes()) +
            " before=" + std::to_string(free_before_actors));

        // 2. Room for one more actor segment and `arena_room` bytes: the actor starts, its
        //    connect fails (our arena, or the server's arena for the way back, cannot be
        //    backed), and it connects and streams once the room is back.
        auto late_link = [&](const std::string& label, std::size_t arena_room) {
            const std::string filler_name = "security-peer-filler";
            // An earlier late actor's link is closed by the server asynchronously: measure
            // the room only once all of it is back.
            (void)test::wait_until(
                [&] { return server.links() == 1 && shm::shm_free_bytes() >= free_before_actors; },
                Deadline(10s));
            const std::size_t free_now = shm::shm_free_bytes();
            const std::size_t keep = shm::ActorSegment::kTotalBytes + arena_room;
            std::optional<shm::Segment> filler;
            if (free_now > keep) {
                filler.emplace(shm::Segment::create(filler_name, free_now - keep));
            }
            std::string link_failure = "none";
            try {
                Actor late("late", options);
                try {
                    // Short: when the server's side fails, all we see is no answer.
                    (void)late.connect("server", Deadline(1s));
                } catch (...) {
                    link_failure = "connect: " + describe_current();
                }
                filler.reset();
                shm::Segment::remove(filler_name);
                Portal p = late.connect("server", Deadline(5s));
                say(label + "-after ok=" + std::to_string(stream_round(p, 10)));
            } catch (...) {
                link_failure += " / afterwards: " + describe_current();
            }
            shm::Segment::remove(filler_name);
            say(label + "-failure " + link_failure);
        };
        late_link("own-arena", 4096);  // our arena's header fits, its control ring does not
        // One side of a link (our arena, header and control ring) fits, the server's does not.
        late_link("peer-arena", link_bytes / 2 + 4096);
        // The late actors are gone: the server closes their links (asynchronously).
        (void)test::wait_until(
            [&] { return server.links() == 1 && shm::shm_free_bytes() >= free_before_actors; },
            Deadline(10s));
        say("server links=" + std::to_string(server.links()));

        // 3. Streams until a data ring cannot be carved.
        std::string failure;
        const int deepest = nest_streams(portal, 0, failure);
        say("streams ok=" + std::to_string(deepest));
        say("stream-failure " + failure);
        // Every nested context ended; their rings are free again: the link still streams.
        say("stream-after ok=" + std::to_string(stream_round(portal, 10)));
    }
    say("leftover " + std::to_string(objects_of(names)));
    say("done");
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    const std::vector<std::string> args(argv + 1, argv + argc);
    if (args.empty()) return usage();
    try {
        const std::string& mode = args[0];
        if (mode == "intrude" && args.size() == 6) {
            return run_intrude(args[1], args[2], args[3], static_cast<uid_t>(std::stoul(args[4])),
                               static_cast<pid_t>(std::stol(args[5])));
        }
        if (mode == "plant" && args.size() == 5) {
            return run_plant(args[1], static_cast<uid_t>(std::stoul(args[2])), args[3], args[4]);
        }
        if (mode == "exec-as" && args.size() >= 3) {
            return run_exec_as(args[1], std::vector<std::string>(args.begin() + 2, args.end()));
        }
        if (mode == "actor" && args.size() == 4) {
            return run_actor(args[1], args[2],
                             static_cast<mode_t>(std::stoul(args[3], nullptr, 8)));
        }
        if (mode == "exhaust" && args.size() == 2) return run_exhaust(args[1]);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "security_peer %s: %s\n", args[0].c_str(), e.what());
        return 2;
    }
    return usage();
}
