// One soak worker process (issue 7 item 4; docs/protocol.d/soak.md), started by shmctx_soak with
// posix_spawn:
//
//   soak_worker <ns> <name> <seed> [--peers N] [--clients K] [--hang-ms H]
//               [--policies raise,spill,block] [--disrupt F] [--cancel-actor-odds P]
//
// An Actor named <name> exposing the soak's "stream" endpoints, with K client threads that open
// soak contexts on random peers (w0..w{N-1} but itself, and the driver) until told to stop.
//
// stdout (read by the driver), one line each:
//   ready claim_us=U fds=F threads=T      the actor is up (U: how long claiming the name took)
//   stats k=v ...                         this incarnation's counters, every second
//   fail <text>                           a soak failure, as soon as it is detected
//   peerdied <peer> <op_start_ns> <seen_ns>  a PeerDied surfaced (CLOCK_MONOTONIC times)
//   hang <text>                           an operation passed the hang limit (the driver dumps
//                                         our stacks with gdb)
//   recycled gen=G                        a peer's cancel_actor() finished our actor: it was
//                                         destroyed in order and created again
//   stopped                               after "stop": the client threads have ended
//   final k=v ... fds_start= fds_end= threads_start= threads_end=   after "quit"
// stdin: "stop" ends the client threads; "quit" (or EOF) shuts the actor down and exits 0
// (1 when the shutdown left threads or fds behind, 2 on a usage error, 3 on a start-up error).
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "shmctx/actor.hpp"
#include "shmctx/errors.hpp"
#include "shmctx/spawner.hpp"
#include "soak_common.hpp"

namespace {

using namespace shmctx;
using namespace shmctx::soak;

std::mutex out_mutex;

void say(const std::string& line) {
    const std::lock_guard lock(out_mutex);
    std::fputs((line + "\n").c_str(), stdout);
    std::fflush(stdout);
}

struct Args {
    std::string ns;
    std::string name;
    std::uint64_t seed = 1;
    std::size_t peers = 4;
    std::size_t clients = 2;
    std::chrono::milliseconds hang{30'000};
    std::string policies = "raise,spill,block";
    double disrupt = 1.0;
    double cancel_actor_odds = 0.003;
};

std::optional<Args> parse(int argc, char** argv) {
    if (argc < 4) return std::nullopt;
    Args a;
    a.ns = argv[1];
    a.name = argv[2];
    a.seed = std::strtoull(argv[3], nullptr, 10);
    for (int i = 4; i + 1 < argc; i += 2) {
        const std::string k = argv[i];
        const std::uint64_t v = std::strtoull(argv[i + 1], nullptr, 10);
        if (k == "--peers") {
            a.peers = v;
        } else if (k == "--clients") {
            a.clients = v;
        } else if (k == "--hang-ms") {
            a.hang = std::chrono::milliseconds(v);
        } else if (k == "--policies") {
            a.policies = argv[i + 1];
            if (parse_policies(a.policies) == 0) return std::nullopt;
        } else if (k == "--disrupt") {
            a.disrupt = std::strtod(argv[i + 1], nullptr);
        } else if (k == "--cancel-actor-odds") {
            a.cancel_actor_odds = std::strtod(argv[i + 1], nullptr);
        } else {
            return std::nullopt;
        }
    }
    if ((argc - 4) % 2 != 0) return std::nullopt;
    return a;
}

/// Reads stdin lines without blocking the main loop. Single thread.
class StdinLines {
public:
    /// The next complete line, waiting up to `timeout`; nullopt if none. eof() after EOF.
    std::optional<std::string> next(std::chrono::milliseconds timeout) {
        if (auto l = take()) return l;
        if (eof_) return std::nullopt;
        pollfd p{STDIN_FILENO, POLLIN, 0};
        const int rc = ::poll(&p, 1, static_cast<int>(timeout.count()));
        if (rc <= 0) return std::nullopt;
        char buf[512];
        const ssize_t n = ::read(STDIN_FILENO, buf, sizeof buf);
        if (n <= 0) {
            eof_ = true;
            return std::nullopt;
        }
        buf_.append(buf, static_cast<std::size_t>(n));
        return take();
    }
    bool eof() const noexcept { return eof_; }

private:
    std::optional<std::string> take() {
        const auto nl = buf_.find('\n');
        if (nl == std::string::npos) return std::nullopt;
        std::string line = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        return line;
    }
    std::string buf_;
    bool eof_ = false;
};

/// The actor and its client threads, one incarnation. Single thread (the main thread's).
class Incarnation {
public:
    Incarnation(Env& env, const Args& a, int gen) : env_(env) {
        ActorOptions o;
        o.ns = a.ns;
        const std::int64_t t0 = mono_ns();
        actor_ = std::make_unique<Actor>(a.name, o);
        claim_us_ = (mono_ns() - t0) / 1000;
        expose_endpoints(*actor_, env_);
        std::vector<std::string> peers;
        std::vector<std::string> targets;
        for (std::size_t i = 0; i < a.peers; ++i) {
            const std::string p = "w" + std::to_string(i);
            if (p == a.name) continue;
            peers.push_back(p);
            targets.push_back(p);
        }
        peers.emplace_back("driver");  // the driver is a peer, never cancelled
        for (std::size_t i = 0; i < a.clients; ++i) {
            const std::uint64_t seed =
                splitmix64(a.seed ^ fnv1a(a.name) ^ (static_cast<std::uint64_t>(gen) << 32) ^ i);
            threads_.emplace_back([this, peers, targets, seed] {
                client_loop(env_, *actor_, peers, targets, seed, stop_);
            });
        }
    }
    Incarnation(const Incarnation&) = delete;
    Incarnation& operator=(const Incarnation&) = delete;
    /// Stops the clients, then destroys the actor in order.
    ~Incarnation() {
        stop_clients();
        actor_.reset();
    }

    void stop_clients() {
        stop_.store(true, std::memory_order::release);  // [soak.stop] pairs with client_loop
        for (auto& t : threads_) {
            if (t.joinable()) t.join();
        }
        threads_.clear();
    }
    Actor& actor() { return *actor_; }
    std::int64_t claim_us() const { return claim_us_; }

private:
    Env& env_;
    std::unique_ptr<Actor> actor_;
    std::int64_t claim_us_ = 0;
    std::atomic<bool> stop_{false};
    std::vector<std::thread> threads_;
};

int run(const Args& a) {
    settle_runtime_threads();
    const std::size_t fds_start = count_fds();
    const std::size_t threads_start = count_threads();
    register_soak_errors();

    Env env;
    env.self_name = a.name;
    env.hang_limit = a.hang;
    env.policy_mask = parse_policies(a.policies);
    env.p_cancel_actor = a.cancel_actor_odds;
    env.scale_disruptions(a.disrupt);
    bool hang_said = false;  // main thread only
    env.fail = [](const std::string& what) {
        std::string one_line = what;  // the driver reads one line per event
        std::replace(one_line.begin(), one_line.end(), '\n', '|');
        say("fail " + one_line);
    };
    env.peer_died = [](const std::string& peer, std::int64_t start, std::int64_t seen) {
        say("peerdied " + peer + " " + std::to_string(start) + " " + std::to_string(seen));
    };

    int gen = 0;
    std::unique_ptr<Incarnation> inc;
    try {
        inc = std::make_unique<Incarnation>(env, a, gen);
    } catch (const std::exception& e) {
        say("fail " + a.name + " could not start: " + error_type_name(e) + ": " + e.what());
        return 3;
    }
    if (inc->claim_us() > 2'000'000) {
        say("fail " + a.name + " took " + std::to_string(inc->claim_us() / 1000) +
            " ms to claim its name");
    }
    say("ready claim_us=" + std::to_string(inc->claim_us()) +
        " fds=" + std::to_string(count_fds()) + " threads=" + std::to_string(count_threads()));

    StdinLines in;
    std::int64_t next_stats = mono_ns() + 1'000'000'000;
    for (;;) {
        const std::optional<std::string> line = in.next(std::chrono::milliseconds(100));
        if (in.eof() || (line && *line == "quit")) break;
        if (line && *line == "stop") {
            inc->stop_clients();
            say("stopped");
        }
        if (inc->actor().cancel_called()) {
            // A peer's cancel_actor(): this actor is finished as a server. Wait for its tasks,
            // then destroy it in order and claim the name again (in-process restart).
            inc->stop_clients();
            if (!inc->actor().wait_cancelled(env.hang_limit)) {
                say("fail " + a.name + ": tasks still running " +
                    std::to_string(env.hang_limit.count()) + " ms after cancel_actor");
            }
            const std::string caller = inc->actor().cancel_caller()
                                           ? inc->actor().cancel_caller()->to_string()
                                           : std::string("-");
            inc.reset();
            env.counters.add(Ctr::recycles);
            ++gen;
            try {
                inc = std::make_unique<Incarnation>(env, a, gen);
            } catch (const std::exception& e) {
                say("fail " + a.name + " could not restart after cancel_actor by " + caller + ": " +
                    error_type_name(e) + ": " + e.what());
                return 3;
            }
            say("recycled gen=" + std::to_string(gen) + " by=" + caller +
                " claim_us=" + std::to_string(inc->claim_us()));
        }
        for (const std::string& h : env.tracker.overdue(
                 std::chrono::duration_cast<std::chrono::nanoseconds>(env.hang_limit).count())) {
            say("fail hang: " + h);
            if (!hang_said) say("hang " + h);  // the driver dumps our stacks once
            hang_said = true;
        }
        if (mono_ns() >= next_stats) {
            next_stats += 1'000'000'000;
            say("stats " + env.counters.line() + " threads=" + std::to_string(count_threads()) +
                " fds=" + std::to_string(count_fds()) +
                " in_flight=" + std::to_string(env.tracker.in_flight()));
        }
    }
    inc.reset();

    // Threads of the library end before ~Actor returns; allow a short bounded wait anyway, and
    // report what is left.
    const std::int64_t until = mono_ns() + 5'000'000'000;
    while (count_threads() > threads_start && mono_ns() < until) pause_for(2ms);
    const std::size_t fds_end = count_fds();
    const std::size_t threads_end = count_threads();
    say("final " + env.counters.line() + " fds_start=" + std::to_string(fds_start) +
        " fds_end=" + std::to_string(fds_end) + " threads_start=" + std::to_string(threads_start) +
        " threads_end=" + std::to_string(threads_end));
    return fds_end == fds_start && threads_end == threads_start ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
    (void)shmctx::child_process_init();
    const std::optional<Args> a = parse(argc, argv);
    if (!a) {
        std::fprintf(stderr,
                     "usage: soak_worker <ns> <name> <seed> [--peers N] [--clients K] "
                     "[--hang-ms H] [--policies P,..] [--disrupt F] [--cancel-actor-odds P]\n");
        return 2;
    }
    try {
        return run(*a);
    } catch (const std::exception& e) {
        say(std::string("fail worker error: ") + e.what());
        return 3;
    }
}
