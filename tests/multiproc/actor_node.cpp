// Helper for context_xproc_test: a child actor process, started with posix_spawn.
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
// stdin lines: "quit" ends the process; "release" opens the gate of the gated_count endpoints.
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <string>

#include "shmctx/actor.hpp"
#include "shmctx/errors.hpp"
#include "shmctx/spawner.hpp"
#include "until_cancelled.hpp"

namespace {

using namespace shmctx;
using namespace std::chrono_literals;

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

int run(int argc, char** argv) {
    const std::string role = argc > 3 ? argv[3] : "";
    if (!((role == "server" && argc == 4) || (role == "relay" && argc == 5))) {
        std::fprintf(stderr, "usage: actor_node <ns> <name> server|relay <peer>\n");
        return 2;
    }
    const std::string name = argv[2];
    ActorOptions options;
    options.ns = argv[1];
    Actor actor(name, options);
    expose_server(actor, name);
    expose_streams(actor);
    if (role == "relay") expose_relay(actor, argv[4]);
    say("ready");
    std::string line;
    while (read_line(line) && line != "quit") {
        if (line == "release") open_gate();
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
