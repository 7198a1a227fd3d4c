// nursery_child: a child actor executable for the supervision tests (issue 8). Its main is
// shmctx::run_actor, as a user's child actor's would be; a nursery names it.
//
// Usage: nursery_child [--version | --exit-log FILE | --fail-setup | --hang-setup]
//   --version        print a line and exit 0 (the spawn floor of bench/nursery_spawn.cpp)
//   --exit-log FILE  append "exit <name> <code>" to FILE when run_actor has returned
//   --fail-setup     setup throws std::runtime_error("setup refused")
//   --hang-setup     setup sleeps 60 s (a child that never becomes ready)
//   --garbage-ready  writes "hello" on the ready pipe (fd 3) before run_actor does
//
// Endpoints (args are FlexBuffers values):
//   do_nothing        returns nothing
//   assert_err        int delay_ms (default 0): sleeps (cancellably), then throws
//                     test::AssertionError; a non-int argument throws std::invalid_argument
//                     (tractor's TypeError for unexpected arguments)
//   sleep_forever     started(), then sleeps until cancelled
//   stream_forever    started(), then streams 0, 1, 2, ... every millisecond until cancelled
//   pid               returns getpid()
//   exit_soon         int code: returns, then the process _exits with `code` 20 ms later
//   die               the process kills itself with SIGKILL (a crash mid-call)
//   stuck             appends "stuck <name>" to the exit log (if any), then sleeps 60 s
//                     ignoring cancellation (a child that does not stop)
//   cancel_self       Actor::cancel() on its own actor, then returns
//   exposed           returns nothing; exposed last (see main)
//   subtree           int depth: if depth > 0 opens a nursery, starts "<name>-sub" from this
//                     executable and opens `subtree(depth - 1)` on it; started() with the pids of
//                     this process and every process below it ("p1 p2 ..."), then sleeps until
//                     cancelled (its nursery tears the subtree down on the way out)
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <string>
#include <thread>

#include "nursery_support.hpp"
#include "shmctx/actor.hpp"
#include "shmctx/nursery.hpp"
#include "shmctx/run_actor.hpp"

namespace {

using namespace std::chrono_literals;
using shmctx::Context;
using shmctx::Payload;

std::string g_name;  // written before run_actor starts any thread

Payload assert_err(Context& ctx, const Payload& args) {
    std::int64_t delay_ms = 0;
    if (!args.empty()) {
        try {
            delay_ms = args.value<std::int64_t>();
        } catch (const std::exception& e) {
            throw std::invalid_argument(std::string("assert_err() takes an int delay: ") +
                                        e.what());
        }
    }
    if (delay_ms > 0) ctx.sleep_for(std::chrono::milliseconds(delay_ms));
    throw shmctx::test::AssertionError("assert 0 in " + g_name);
}

Payload sleep_forever(Context& ctx, const Payload&) {
    ctx.started();
    ctx.sleep_for(std::chrono::hours(1));
    return {};
}

Payload stream_forever(Context& ctx, const Payload&) {
    ctx.started();
    auto stream = ctx.open_stream();
    for (std::int64_t i = 0;; ++i) {
        stream.send(Payload::value(i).view());
        ctx.sleep_for(1ms);
    }
}

Payload subtree(shmctx::Actor& actor, const std::string& exe, Context& ctx, const Payload& args) {
    const std::int64_t depth = args.value<std::int64_t>();
    const std::string me = std::to_string(::getpid());
    if (depth <= 0) {
        ctx.started(Payload::value(me).view());
        ctx.sleep_for(std::chrono::hours(1));
        return {};
    }
    std::vector<std::string> log_args;
    if (const char* log = std::getenv("NURSERY_EXIT_LOG")) log_args = {"--exit-log", log};
    // Each level's teardown includes the levels below: a generous cancel_timeout, so that a
    // loaded (sanitizer) run still tears the tree down in order instead of killing a level.
    shmctx::NurseryOptions no;
    no.cancel_timeout = 20s;
    shmctx::open_nursery(
        actor,
        [&](shmctx::ActorNursery& an) {
            shmctx::Portal sub = an.start_actor(g_name + "-sub", exe, log_args);
            sub.open_context(
                "subtree", Payload::value(depth - 1).view(),
                [&](Context& sub_ctx, const Payload& below) {
                    ctx.started(Payload::value(me + " " + below.value<std::string>()).view());
                    sub_ctx.sleep_for(std::chrono::hours(1));
                });
        },
        no);
    return {};
}

}  // namespace

int main(int argc, char** argv) {
    std::string exit_log;
    bool fail_setup = false;
    bool hang_setup = false;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--version") {
            std::puts("nursery_child");  // the process-spawn floor of shmctx_bench_nursery
            return 0;
        }
        if (a == "--exit-log" && i + 1 < argc) {
            exit_log = argv[++i];
        } else if (a == "--fail-setup") {
            fail_setup = true;
        } else if (a == "--hang-setup") {
            hang_setup = true;
        } else if (a == "--garbage-ready") {
            // Writes a wrong line where the nursery expects "ready" (fd 3), before run_actor.
            (void)!::write(3, "hello\n", 6);
        } else {
            std::fprintf(stderr, "nursery_child: unknown argument %s\n", a.c_str());
            return 2;
        }
    }
    if (!exit_log.empty()) ::setenv("NURSERY_EXIT_LOG", exit_log.c_str(), 1);
    const char* given = std::getenv(shmctx::kActorNameEnv);
    g_name = given != nullptr ? given : "nursery_child";
    shmctx::test::register_test_errors();
    char self[4096];
    const ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
    const std::string exe = n > 0 ? std::string(self, static_cast<std::size_t>(n)) : argv[0];

    const int code = shmctx::run_actor(g_name, [&](shmctx::Actor& actor) {
        if (fail_setup) throw std::runtime_error("setup refused");
        if (hang_setup) std::this_thread::sleep_for(60s);  // never ready: the test's subject
        actor.expose("do_nothing", [](Context&, const Payload&) { return Payload{}; });
        actor.expose("assert_err", assert_err);
        actor.expose("sleep_forever", sleep_forever);
        actor.expose("stream_forever", stream_forever);
        actor.expose("pid", [](Context&, const Payload&) {
            return Payload::value(static_cast<std::int64_t>(::getpid()));
        });
        actor.expose("exit_soon", [](Context&, const Payload& args) {
            const int exit_code = static_cast<int>(args.value<std::int64_t>());
            std::thread([exit_code] {
                std::this_thread::sleep_for(20ms);  // lets the Return reach the parent first
                ::_exit(exit_code);
            }).detach();
            return Payload{};
        });
        actor.expose("die", [](Context&, const Payload&) -> Payload {
            ::raise(SIGKILL);  // a crash as the parent sees it: the process is gone
            return {};
        });
        actor.expose("stuck", [](Context&, const Payload&) {
            if (const char* log = std::getenv("NURSERY_EXIT_LOG")) {
                std::ofstream(log, std::ios::app) << "stuck " << g_name << "\n";  // it is in
            }
            std::this_thread::sleep_for(60s);  // deliberately deaf to cancellation
            return Payload{};
        });
        actor.expose("cancel_self", [&actor](Context&, const Payload&) {
            actor.cancel();
            return Payload{};
        });
        actor.expose("subtree", [&actor, exe](Context& ctx, const Payload& args) {
            return subtree(actor, exe, ctx, args);
        });
        // Exposed last: a peer that started us without a nursery (no ready line) calls it
        // until it answers, and then every endpoint above is there.
        actor.expose("exposed", [](Context&, const Payload&) { return Payload{}; });
    });
    if (!exit_log.empty()) {
        std::ofstream(exit_log, std::ios::app) << "exit " << g_name << " " << code << "\n";
    }
    return code;
}
