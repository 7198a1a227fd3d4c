// Helper for context_xproc_test, stream_xproc_test and cancel_xproc_test: a child actor process,
// started with posix_spawn.
//
//   actor_node <ns> <name> server           an actor exposing the endpoints below
//   actor_node <ns> <name> relay <peer>     the same, plus "relay"
//
// It prints "ready" on stdout once its endpoints are exposed, then serves until a "quit" line or
// EOF on stdin (so it also ends when the test process dies), and exits 0 after the Actor's
// orderly shutdown. Errors go to stderr with exit code 1.
//
// Endpoints (args and values are Payload::value()s):
//   add_one     returns args + 1, without started()
//   square      returns args * args (a non-integer argument is a DecodeError)
//   simple_rpc  started(args + 1), then one "pong" per "ping" until the stream ends; returns the
//               number of pings (spec §5 #73-76)
//   boom        started(), then throws std::runtime_error("boom from <name>")
//   boom_early  throws std::runtime_error("early boom from <name>") before started()
//   hold        started(), opens the stream and receives until it ends, never sending
//   relay       (relay role) started(), opens "boom" on <peer> and blocks in the body until
//               <peer>'s error interrupts it; the error escapes (spec §5 #65-68)
//   gated_count        (stream_xproc_test) inbound ring of 4 messages, no overruns: started(),
//                      opens the stream, reads nothing until a "release" line arrives on stdin,
//                      then reads until the end checking 8-byte sequence numbers 0, 1, 2, ...;
//                      returns "count=N overruns=O full=F sent=S spilled=P drained=D discarded=X"
//                      from its inbound ring's counters (written by the sender's process)
//   gated_count_spill  the same with allow_overruns (the sender spills instead of failing)
//
// Cancellation endpoints (cancel_xproc_test, spec §5 #62-68; each prints "report <key>=<value>"
// lines on stdout that the test reads; uids are reported as Uid::to_string()):
//   sleeper                 started(), opens the stream, blocks until cancelled; reports
//                           sleeper.canceller / sleeper.cancel_called when the Cancelled arrives
//   stream_ints             started(), streams 0, 1, 2, ... (on_full = block) until cancelled;
//                           reports stream_ints.canceller
//   stream_ints_spill       args <n>: started(), streams 0 .. n-1 with the default policy (a
//                           reader with allow_overruns makes it spill), returns n (kill matrix)
//   error_before_started    args "<peer>": opens "sleeper" on <peer> and its stream, then calls
//                           started() with a value over the control-record cap
//                           (PayloadTooLarge, the C++ twin of tractor's unserialisable value) and
//                           cancels the peer context on the way out (spec §5 #62)
//   sleep_then_cancel_peer  args "<peer>": links to <peer>, started(), waits for "release" on
//                           stdin, Portal::cancel_actor()s <peer>, then blocks until cancelled
//                           (spec §5 #63-64 "canceller")
//   stream_from_peer        args "<peer> <hold>": opens "stream_ints" on <peer> and its stream,
//                           started(), iterates; on the peer's ContextCancelled reports what it
//                           sees, (hold = 1) waits for "release", and re-raises it (#63-64)
//   serve_subactors         args "<name>": started(<name>), then for each stream message "<sub>"
//                           spawns a sub-actor process "actor_node <ns> <sub> server" with
//                           shmctx::Spawner and answers "<sub>" once it is ready and linked; on
//                           its way out (any way) cancels each sub-actor (cancel_actor), closes
//                           its stdin and reaps it, reporting serve_subactors.<sub>.cancel_acked
//                           and .exit (spec §5 #65-68 "spawn_server")
//   client_req_subactor     args "<server> <sub> <err_after> <reraise>": opens serve_subactors
//                           on <server>, started("yup i had brudder"), asks for <sub>, waits for
//                           "go" on its stream with the parent, runs 100 echo round trips with
//                           <sub>'s echo_server(err_after), then blocks until cancelled
//                           (spec §5 #65-68 "client"); reports client_req_subactor.spawned once
//                           <sub> is ready, .dialog_done after the round trips, .canceller (and
//                           .reraised) on the Cancelled
//   echo_server             args <err_after> (-1: never): started(<own name>), answers each
//                           integer with itself; raises std::runtime_error after echoing one
//                           greater than err_after
//   cascade_hold            args "<peer>": opens "sleeper" on <peer>, started(), blocks until
//                           cancelled; reports what its sub-context and its actor saw
//   fill_both               inbound ring of 8 messages, no overruns: started(), opens the stream
//                           (on_full = block), fills the parent's inbound ring with try_send
//                           (reports fill_both.sent), then blocks in send() until cancelled
//
// stdin lines: "quit" ends the process; "release" opens the gate of the gated_count endpoints
// (and of sleep_then_cancel_peer, stream_from_peer); "cancel_peer <name>" links to <name> and
// calls Portal::cancel_actor() (reports cancel_peer.<name>.acked and .cancel_called);
// "status" reports actor.cancel_called, actor.cancel_caller, actor.links and
// actor.open_contexts, then status.done.
#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <concepts>
#include <condition_variable>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <mutex>
#include <optional>
#include <span>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "error_as.hpp"
#include "shmctx/actor.hpp"
#include "shmctx/errors.hpp"
#include "shmctx/spawner.hpp"
#include "until_cancelled.hpp"

namespace {

using namespace shmctx;
using namespace std::chrono_literals;
using shmctx::test::error_as;

void say(const std::string& line) {
    std::fputs((line + "\n").c_str(), stdout);
    std::fflush(stdout);
}

/// The next stdin line without '\n'; false on EOF.
bool read_line(std::string& line) {
    line.clear();
    for (;;) {
        const int c = std::fgetc(stdin);
        if (c == EOF) return !line.empty();
        if (c == '\n') return true;
        line.push_back(static_cast<char>(c));
    }
}

void expose_server(Actor& actor, const std::string& name) {
    actor.expose("add_one", [](Context&, const Payload& args) {
        return Payload::value(args.value<std::int64_t>() + 1);
    });
    actor.expose("square", [](Context&, const Payload& args) {
        const auto v = args.value<std::int64_t>();
        return Payload::value(v * v);
    });
    actor.expose("simple_rpc", [](Context& ctx, const Payload& args) {
        ctx.started(Payload::value(args.value<std::int64_t>() + 1));
        auto stream = ctx.open_stream();
        std::int64_t pings = 0;
        for (const auto& msg : stream) {
            if (msg.text() != "ping") {
                throw std::runtime_error("expected ping, got '" + std::string(msg.text()) + "'");
            }
            ++pings;
            stream.send("pong");
        }
        return Payload::value(pings);
    });
    actor.expose("boom", [name](Context& ctx, const Payload&) -> Payload {
        ctx.started();
        throw std::runtime_error("boom from " + name);
    });
    actor.expose("boom_early", [name](Context&, const Payload&) -> Payload {
        throw std::runtime_error("early boom from " + name);
    });
    actor.expose("hold", [](Context& ctx, const Payload&) {
        ctx.started();
        auto stream = ctx.open_stream();
        for (const auto& msg : stream) (void)msg;
        return Payload{};
    });
}

/// Opened by a "release" line on stdin; the gated_count endpoints wait for it.
struct Gate {
    std::mutex m;
    std::condition_variable_any cv;
    bool open = false;  // guarded by m
} gate;

void open_gate() {
    {
        const std::lock_guard lock(gate.m);
        gate.open = true;
    }
    gate.cv.notify_all();
}

/// Waits for the gate inside `ctx` (cancellable: a cancel raises shmctx::Cancelled).
void wait_gate(Context& ctx) {
    std::unique_lock lock(gate.m);
    if (!gate.cv.wait_for(lock, ctx.stop_token(), 60s, [] { return gate.open; })) {
        lock.unlock();
        ctx.checkpoint();
        throw std::runtime_error("gate not released within 60 s");
    }
}

Payload gated_count(Context& ctx) {
    ctx.started();
    auto stream = ctx.open_stream();
    wait_gate(ctx);
    std::uint64_t n = 0;
    for (const auto& msg : stream) {
        std::uint64_t seq = 0;
        if (msg.bytes().size() < sizeof seq) throw std::runtime_error("short message");
        std::memcpy(&seq, msg.bytes().data(), sizeof seq);
        if (seq != n) {
            throw std::runtime_error("message " + std::to_string(n) + " arrived as " +
                                     std::to_string(seq));
        }
        ++n;
    }
    const shm::RingCounters c = stream.inbound_counters();
    return Payload::value(
        "count=" + std::to_string(n) + " overruns=" + std::to_string(c.overruns) +
        " full=" + std::to_string(c.full_events) + " sent=" + std::to_string(c.sent) +
        " spilled=" + std::to_string(c.spilled) + " drained=" + std::to_string(c.spill_drained) +
        " discarded=" + std::to_string(c.spill_discarded));
}

void expose_streams(Actor& actor) {
    ExposeOptions strict;
    strict.msg_buffer_size = 4;
    strict.allow_overruns = false;
    actor.expose(
        "gated_count", [](Context& ctx, const Payload&) { return gated_count(ctx); }, strict);
    ExposeOptions spill = strict;
    spill.allow_overruns = true;
    actor.expose(
        "gated_count_spill", [](Context& ctx, const Payload&) { return gated_count(ctx); }, spill);
}

void expose_relay(Actor& actor, const std::string& peer) {
    actor.expose("relay", [&actor, peer](Context& ctx, const Payload&) {
        ctx.started();
        Portal to_peer = actor.connect(peer);
        to_peer.open_context(
            "boom", {}, [](Context& inner, const Payload&) { test::until_cancelled(inner, 60s); });
        return Payload::value("relay returned");
    });
}

// --- Cancellation (cancel_xproc_test) ---

/// Bound of every wait of the cancellation endpoints: generous, since sanitizer builds run many
/// times slower; a hang still ends (and fails the test) instead of blocking forever.
constexpr auto kWait = 20s;
/// How long an endpoint that expects to be cancelled blocks before it reports that it was not.
constexpr auto kBlockLimit = 60s;

void report(const std::string& key, const std::string& value) {
    say("report " + key + "=" + value);
}
/// Flags as "1"/"0" (a template, so a string literal never converts to bool here).
template <class B>
requires std::same_as<B, bool>
void report(const std::string& key, B value) { report(key, std::string(value ? "1" : "0")); }
std::string uid_text(const std::optional<Uid>& uid) { return uid ? uid->to_string() : "-"; }

/// The whitespace-separated words of a text argument.
std::vector<std::string> words(const Payload& args) {
    std::vector<std::string> out;
    std::istringstream in(args.value<std::string>());
    for (std::string w; in >> w;) out.push_back(w);
    return out;
}

std::vector<std::string> words_of(const Payload& args, std::size_t n, const char* endpoint) {
    std::vector<std::string> w = words(args);
    if (w.size() != n) {
        throw std::invalid_argument(std::string(endpoint) + ": expected " + std::to_string(n) +
                                    " words, got '" + args.value<std::string>() + "'");
    }
    return w;
}

/// A line read from `fd` with a deadline (poll): the "ready" of a sub-actor.
bool expect_line_fd(int fd, const std::string& want, Deadline deadline) {
    std::string line;
    for (;;) {
        const auto left =
            std::chrono::duration_cast<std::chrono::milliseconds>(deadline.remaining());
        struct pollfd p {
            fd, POLLIN, 0
        };
        const int n = ::poll(&p, 1, static_cast<int>(std::min<std::int64_t>(left.count(), 1000)));
        if (n < 0 && errno != EINTR) return false;
        if (n <= 0) {
            if (deadline.expired()) return false;
            continue;
        }
        char c = 0;
        const ssize_t r = ::read(fd, &c, 1);
        if (r == 0) return false;  // EOF: the sub-actor ended
        if (r < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            return false;
        }
        if (c != '\n') {
            line.push_back(c);
        } else if (line == want) {
            return true;
        } else {
            line.clear();
        }
    }
}

std::string self_exe() {
    std::array<char, 4096> buf{};
    const ssize_t n = ::readlink("/proc/self/exe", buf.data(), buf.size() - 1);
    if (n <= 0) {
        throw std::runtime_error(std::string("readlink /proc/self/exe: ") + std::strerror(errno));
    }
    return std::string(buf.data(), static_cast<std::size_t>(n));
}

/// serve_subactors' actor nursery: sub-actor processes (this binary, role "server") spawned by
/// the process's Spawner, each linked. The destructor does what tractor's nursery does on its
/// way out: cancels each sub-actor (Portal::cancel_actor, so
/// every context anyone has with it ends with a ContextCancelled naming us), then ends and
/// reaps it (stdin EOF; SIGKILL if it does not exit in time): no zombie, nothing in /dev/shm.
/// Thread-safety: single thread (the endpoint's).
class SubactorNursery {
public:
    SubactorNursery(Spawner& spawner, Actor& actor, std::string ns)
        : spawner_(spawner), actor_(actor), ns_(std::move(ns)) {}
    SubactorNursery(const SubactorNursery&) = delete;
    SubactorNursery& operator=(const SubactorNursery&) = delete;
    ~SubactorNursery() { teardown(); }

    /// Spawns sub-actor `name`, waits for its "ready" and links to it.
    void spawn(const std::string& name) {
        std::array<int, 2> in{-1, -1};
        std::array<int, 2> out{-1, -1};
        if (::pipe2(in.data(), O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
        if (::pipe2(out.data(), O_CLOEXEC) != 0) {
            ::close(in[0]);
            ::close(in[1]);
            throw std::runtime_error("pipe2 failed");
        }
        SpawnOptions o;
        o.stdin_fd = in[0];
        o.stdout_fd = out[1];
        Sub sub;
        sub.name = name;
        sub.in_fd = in[1];
        sub.out_fd = out[0];
        try {
            sub.proc = spawner_.spawn(self_exe(), {ns_, name, "server"}, {}, o);
        } catch (...) {
            for (const int fd : {in[0], in[1], out[0], out[1]}) ::close(fd);
            throw;
        }
        ::close(in[0]);
        ::close(out[1]);
        subs_.push_back(std::move(sub));  // from here on teardown() reaps it
        Sub& s = subs_.back();
        if (!expect_line_fd(s.out_fd, "ready", kWait)) {
            throw std::runtime_error("sub-actor " + name +
                                     " never became ready: " + s.proc.describe());
        }
        s.portal.emplace(actor_.connect(name, kWait));
    }

private:
    void teardown() noexcept {
        for (Sub& s : subs_) {
            try {
                // Shielded from our own (cancelled) scope: cancel_actor waits for the ack.
                const bool acked = s.portal.has_value() && s.portal->cancel_actor(kWait);
                report("serve_subactors." + s.name + ".cancel_acked", acked);
            } catch (const std::exception& e) {
                report("serve_subactors." + s.name + ".cancel_acked", std::string(e.what()));
            }
            s.portal.reset();
            ::close(s.in_fd);  // stdin EOF: the sub-actor shuts down in order
            std::optional<ExitStatus> st;
            try {
                st = s.proc.wait(kWait);
                if (!st) {
                    (void)s.proc.kill(SIGKILL);
                    st = s.proc.wait(kWait);
                }
            } catch (const std::exception& e) {
                std::fprintf(stderr, "actor_node: reaping %s: %s\n", s.name.c_str(), e.what());
            }
            report("serve_subactors." + s.name + ".exit",
                   st ? st->describe() : std::string("not reaped"));
            ::close(s.out_fd);
        }
        subs_.clear();
    }

    struct Sub {
        std::string name;
        ChildProcess proc;
        int in_fd = -1;
        int out_fd = -1;
        std::optional<Portal> portal;
    };
    Spawner& spawner_;
    Actor& actor_;
    std::string ns_;
    std::vector<Sub> subs_;
};

/// spec §5 #65-68 tell_little_bro: 100 echo round trips with `sub`'s echo_server.
void tell_little_bro(Actor& actor, const std::string& sub, std::int64_t err_after) {
    Portal to_sub = actor.connect(sub, kWait);
    to_sub.open_context(
        "echo_server", Payload::value(err_after), [&](Context& sub_ctx, const Payload& first) {
            if (first.value<std::string>() != sub) {
                throw std::runtime_error("echo_server says '" + first.value<std::string>() + "'");
            }
            auto echo = sub_ctx.open_stream();
            for (std::int64_t i = 0; i < 100; ++i) {
                echo.send(Payload::value(i));
                const auto back = echo.receive().value<std::int64_t>();
                if (back != i) {
                    throw std::runtime_error("echo of " + std::to_string(i) + " came back as " +
                                             std::to_string(back));
                }
            }
        });
}

void expose_cancellation(Actor& actor, Spawner& spawner, const std::string& ns) {
    const std::string self = actor.uid().to_string();

    actor.expose("sleeper", [](Context& ctx, const Payload&) -> Payload {
        ctx.started();
        auto stream = ctx.open_stream();
        try {
            test::until_cancelled(ctx, kBlockLimit);
        } catch (const Cancelled&) {
            // spec §3.2: while handling the Cancelled, canceller is the requester and
            // cancel_called is false (this side did not call cancel()).
            report("sleeper.canceller", uid_text(ctx.canceller()));
            report("sleeper.cancel_called", ctx.cancel_called());
            throw;
        }
        return Payload{};
    });

    actor.expose("stream_ints", [](Context& ctx, const Payload&) -> Payload {
        ctx.started();
        StreamOptions o;
        // Paced by the reader: a full ring blocks us (cancellably) instead of overrunning it
        // (tractor sleeps 10 ms between sends; the ring's back-pressure does that job here).
        o.on_full = OnFull::block;
        auto stream = ctx.open_stream(o);
        try {
            for (std::int64_t i = 0;; ++i) stream.send(Payload::value(i));
        } catch (const Cancelled&) {
            report("stream_ints.canceller", uid_text(ctx.canceller()));
            throw;
        }
    });

    actor.expose("stream_ints_spill", [](Context& ctx, const Payload& args) -> Payload {
        const std::int64_t n = args.value<std::int64_t>();
        ctx.started();
        auto stream = ctx.open_stream();  // on_full = raise: spills if the reader allows it
        for (std::int64_t i = 0; i < n; ++i) stream.send(Payload::value(i));
        return Payload::value(n);
    });

    actor.expose("error_before_started", [&actor](Context& ctx, const Payload& args) -> Payload {
        const std::string peer = words_of(args, 1, "error_before_started")[0];
        Portal to_peer = actor.connect(peer, kWait);
        std::optional<Context> peer_handle;
        try {
            to_peer.open_context("sleeper", {}, [&](Context& peer_ctx, const Payload&) {
                peer_handle.emplace(peer_ctx.handle());
                auto stream = peer_ctx.open_stream();
                try {
                    // Over the control-record cap (16 KiB by default): PayloadTooLarge here.
                    const std::vector<std::byte> too_big(std::size_t{64} * 1024);
                    ctx.started(PayloadView(std::span<const std::byte>(too_big)));
                } catch (...) {
                    peer_ctx.cancel(kWait);  // tractor's `finally: await peer_ctx.cancel()`
                    throw;
                }
            });
            report("error_before_started.escaped", std::string("nothing"));
        } catch (const ContextCancelled&) {
            report("error_before_started.escaped", std::string("ContextCancelled"));
            throw;
        } catch (const PayloadTooLarge&) {
            report("error_before_started.escaped", std::string("PayloadTooLarge"));
            if (peer_handle) {
                report("error_before_started.peer_cancel_called", peer_handle->cancel_called());
                report("error_before_started.peer_cancel_acked", peer_handle->cancel_acked());
                report("error_before_started.peer_canceller", uid_text(peer_handle->canceller()));
                report("error_before_started.peer_local_error_is_escaped",
                       peer_handle->local_error() == std::current_exception());
            }
            throw;
        }
        return Payload{};
    });

    actor.expose("sleep_then_cancel_peer", [&actor](Context& ctx, const Payload& args) {
        const std::string peer = words_of(args, 1, "sleep_then_cancel_peer")[0];
        Portal to_peer = actor.connect(peer, kWait);
        ctx.started();
        // The test's "release" replaces tractor's 0.5 s sleep: the parent says when all its
        // contexts are open and it is about to wait for the sleeper's result.
        wait_gate(ctx);
        const bool acked = to_peer.cancel_actor(kWait);
        report("sleep_then_cancel_peer.acked", acked);
        report("sleep_then_cancel_peer.portal_cancel_called", to_peer.cancel_called());
        try {
            test::until_cancelled(ctx, kBlockLimit);  // until our parent cancels us
        } catch (const Cancelled&) {
            report("sleep_then_cancel_peer.canceller", uid_text(ctx.canceller()));
            throw;
        }
        return Payload{};
    });

    actor.expose("stream_from_peer", [&actor](Context& ctx, const Payload& args) -> Payload {
        const std::vector<std::string> w = words_of(args, 2, "stream_from_peer");
        const std::string& peer = w[0];
        const bool hold = w[1] == "1";
        Portal to_peer = actor.connect(peer, kWait);
        std::optional<Context> peer_handle;
        try {
            to_peer.open_context("stream_ints", {}, [&](Context& peer_ctx, const Payload&) {
                peer_handle.emplace(peer_ctx.handle());
                auto stream = peer_ctx.open_stream();
                ctx.started();
                std::int64_t expect = 0;
                for (const auto& msg : stream) {
                    if (msg.value<std::int64_t>() != expect) {
                        throw std::runtime_error("stream_ints sent " +
                                                 std::to_string(msg.value<std::int64_t>()) +
                                                 " for " + std::to_string(expect));
                    }
                    ++expect;
                }
            });
        } catch (const ContextCancelled& ctxc) {
            // The sleeper's cancellation (by a third actor) always reaches us as a ctxc.
            const std::exception_ptr caught = std::current_exception();
            const std::string p = "stream_from_peer.";
            report(p + "ctxc_canceller", ctxc.canceller().to_string());
            report(p + "ctxc_src", ctxc.src_uid().to_string());
            if (peer_handle) {
                const Context& pc = *peer_handle;
                // Unboxed once: the raised object is the recorded one (spec §6.12).
                report(p + "peer_remote_error_is_caught", pc.remote_error() == caught);
                report(p + "peer_maybe_error_is_caught", pc.maybe_error() == caught);
                report(p + "peer_local_error_is_caught", pc.local_error() == caught);
                report(p + "peer_outcome_is_caught", pc.outcome().error() == caught);
                report(p + "peer_canceller", uid_text(pc.canceller()));
                report(p + "peer_cancel_called", pc.cancel_called());
                report(p + "peer_cancel_acked", pc.cancel_acked());
                report(p + "peer_cancelled_caught", pc.cancelled_caught());
            }
            report(p + "ctx_cancel_called", ctx.cancel_called());
            report(p + "ctx_cancel_acked", ctx.cancel_acked());
            report(p + "ctx_canceller", uid_text(ctx.canceller()));
            report(p + "ctx_cancelled_caught", ctx.cancelled_caught());
            report(p + "checked", true);
            if (hold) wait_gate(ctx);
            throw;
        }
        throw std::runtime_error("Never triggered local ContextCancelled");
    });

    actor.expose("serve_subactors", [&actor, &spawner, ns](Context& ctx, const Payload& args) {
        const auto name = args.value<std::string>();
        // Its destructor tears the sub-actors down on every way out (end of stream, cancel,
        // error), before this endpoint's terminal ships: a cancel ack to our parent follows the
        // sub-actors' end.
        SubactorNursery nursery(spawner, actor, ns);
        ctx.started(Payload::value(name));
        auto stream = ctx.open_stream();
        for (const auto& msg : stream) {
            const std::string sub(msg.text());
            nursery.spawn(sub);
            stream.send(std::string_view(sub));
        }
        return Payload{};
    });

    actor.expose("client_req_subactor", [&actor](Context& ctx, const Payload& args) -> Payload {
        const std::vector<std::string> w = words_of(args, 4, "client_req_subactor");
        const std::string& server = w[0];
        const std::string& sub = w[1];
        const std::int64_t err_after = std::stoll(w[2]);
        const bool reraise = w[3] == "1";
        Portal to_server = actor.connect(server, kWait);
        to_server.open_context(
            "serve_subactors", Payload::value(sub), [&](Context& server_ctx, const Payload& first) {
                if (first.value<std::string>() != sub) {
                    throw std::runtime_error("serve_subactors says '" + first.value<std::string>() +
                                             "'");
                }
                ctx.started(Payload::value("yup i had brudder"));
                auto reqs = server_ctx.open_stream();
                reqs.send(std::string_view(sub));
                const std::optional<Message> spawned = reqs.receive_for(kWait);
                if (!spawned || spawned->text() != sub) {
                    throw std::runtime_error("spawn_server did not spawn " + sub);
                }
                report("client_req_subactor.spawned", sub);
                // Explicit handshake instead of tractor's timing: the parent says "go" once its
                // own dialog with the sub-actor is open, so the sub-actor's error (err_after)
                // always finds it open.
                auto parent = ctx.open_stream();
                const std::optional<Message> go = parent.receive_for(kWait);
                if (!go || go->text() != "go") throw std::runtime_error("no go from the parent");
                tell_little_bro(actor, sub, err_after);
                report("client_req_subactor.dialog_done", true);
                try {
                    test::until_cancelled(ctx, kBlockLimit);
                } catch (const Cancelled&) {
                    report("client_req_subactor.canceller", uid_text(ctx.canceller()));
                    if (reraise) report("client_req_subactor.reraised", true);
                    throw;  // tractor's reraise_on_cancel re-raises the same cancellation
                }
            });
        return Payload{};
    });

    actor.expose("echo_server",
                 [self, name = actor.uid().name](Context& ctx, const Payload& args) -> Payload {
                     const auto err_after = args.value<std::int64_t>();
                     ctx.started(Payload::value(name));
                     auto stream = ctx.open_stream();
                     for (const auto& msg : stream) {
                         const auto i = msg.value<std::int64_t>();
                         stream.send(Payload::value(i));
                         if (err_after >= 0 && i > err_after) {
                             throw std::runtime_error("Simulated error in " + self);
                         }
                     }
                     return Payload{};
                 });

    actor.expose("cascade_hold", [&actor](Context& ctx, const Payload& args) -> Payload {
        const std::string peer = words_of(args, 1, "cascade_hold")[0];
        Portal to_peer = actor.connect(peer, kWait);
        std::optional<Context> inner;
        try {
            to_peer.open_context("sleeper", {}, [&](Context& peer_ctx, const Payload&) {
                inner.emplace(peer_ctx.handle());
                ctx.started();
                test::until_cancelled(peer_ctx, kBlockLimit);
            });
        } catch (...) {
            const std::string p = "cascade_hold.";
            if (inner) {
                report(p + "inner_cancel_called", inner->cancel_called());
                report(p + "inner_cancel_acked", inner->cancel_acked());
                report(p + "inner_canceller", uid_text(inner->canceller()));
                const auto* ctxc = error_as<ContextCancelled>(inner->remote_error());
                report(p + "inner_ctxc_canceller",
                       ctxc != nullptr ? ctxc->canceller().to_string() : std::string("-"));
            }
            report(p + "ctx_canceller", uid_text(ctx.canceller()));
            report(p + "actor_cancel_caller", uid_text(actor.cancel_caller()));
            throw;
        }
        return Payload{};
    });

    ExposeOptions fill;
    fill.msg_buffer_size = 8;
    fill.allow_overruns = false;
    actor.expose(
        "fill_both",
        [](Context& ctx, const Payload&) -> Payload {
            ctx.started();
            StreamOptions o;
            o.on_full = OnFull::block;
            auto stream = ctx.open_stream(o);
            std::uint64_t seq = 0;
            const auto record = [&seq] {
                return std::span<const std::byte>(reinterpret_cast<const std::byte*>(&seq),
                                                  sizeof seq);
            };
            try {
                for (;;) {
                    const SendStatus st = stream.try_send(record());
                    if (st == SendStatus::full) break;
                    if (st != SendStatus::ok) {
                        throw std::runtime_error("try_send: " + std::string(to_string(st)));
                    }
                    ++seq;
                }
                report("fill_both.sent", std::to_string(seq));
                stream.send(record());  // blocks: the parent never reads
                report("fill_both.blocked_send_returned", true);
            } catch (const Cancelled&) {
                report("fill_both.cancelled", true);
                report("fill_both.canceller", uid_text(ctx.canceller()));
                throw;
            }
            return Payload{};
        },
        fill);
}

/// stdin "cancel_peer <name>": Portal::cancel_actor() on <name>, from this process's main thread.
void cancel_peer(Actor& actor, const std::string& peer) {
    try {
        Portal to_peer = actor.connect(peer, kWait);
        const bool acked = to_peer.cancel_actor(kWait);
        report("cancel_peer." + peer + ".acked", acked);
        report("cancel_peer." + peer + ".cancel_called", to_peer.cancel_called());
    } catch (const std::exception& e) {
        report("cancel_peer." + peer + ".acked", std::string(e.what()));
    }
}

void report_status(const Actor& actor) {
    report("actor.cancel_called", actor.cancel_called());
    report("actor.cancel_caller", uid_text(actor.cancel_caller()));
    report("actor.links", std::to_string(actor.links()));
    report("actor.open_contexts", std::to_string(actor.open_contexts()));
    report("status.done", true);
}

int run(int argc, char** argv) {
    const std::string role = argc > 3 ? argv[3] : "";
    if (!((role == "server" && argc == 4) || (role == "relay" && argc == 5))) {
        std::fprintf(stderr, "usage: actor_node <ns> <name> server|relay <peer>\n");
        return 2;
    }
    const std::string name = argv[2];
    ActorOptions options;
    options.ns = argv[1];
    // Declared before the Actor: sub-actors die with the Spawner's thread (PDEATHSIG), so it
    // must outlive the endpoints that reap them.
    Spawner spawner;
    Actor actor(name, options);
    expose_server(actor, name);
    expose_streams(actor);
    expose_cancellation(actor, spawner, options.ns);
    if (role == "relay") expose_relay(actor, argv[4]);
    say("ready");
    std::string line;
    const std::string cancel_cmd = "cancel_peer ";
    while (read_line(line) && line != "quit") {
        if (line == "release") {
            open_gate();
        } else if (line.starts_with(cancel_cmd)) {
            cancel_peer(actor, line.substr(cancel_cmd.size()));
        } else if (line == "status") {
            report_status(actor);
        }
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    (void)shmctx::child_process_init();
    try {
        return run(argc, argv);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "actor_node: %s\n", e.what());
        return 1;
    }
}
