// run_actor: the main of a child actor executable (DESIGN.md §6; docs/protocol.md §13).
#include "shmctx/run_actor.hpp"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

#include "shmctx/nursery.hpp"
#include "shmctx/spawner.hpp"

namespace shmctx {

namespace {

/// The descriptor a nursery passed for our ready line, or -1. Removed from the environment so
/// that processes we start do not see it.
int take_ready_fd() {
    const char* value = std::getenv(kReadyFdEnv);
    if (value == nullptr) return -1;
    const std::string_view text(value);
    int fd = -1;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), fd);
    ::unsetenv(kReadyFdEnv);
    if (ec != std::errc{} || end != text.data() + text.size() || fd < 3 ||
        ::fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) {
        std::fprintf(stderr, "shmctx: run_actor: ignoring a bad %s=\"%.*s\"\n", kReadyFdEnv,
                     static_cast<int>(text.size()), text.data());
        return -1;
    }
    return fd;
}

/// Writes the one ready line ("ready" or "error <text>") and closes the descriptor.
void report(int& fd, std::string line) {
    if (fd < 0) return;
    for (char& c : line) {
        if (c == '\n' || c == '\r') c = ' ';  // one line, whatever the error text holds
    }
    if (line.size() > 2000) line.resize(2000);
    line += '\n';
    // A parent that gave up on us closed the read end: EPIPE, not a SIGPIPE that kills us. The
    // signal is blocked around the write and a pending one discarded (no process-wide SIG_IGN).
    sigset_t pipe_set;
    sigset_t old;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    (void)::pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
    bool epipe = false;
    std::size_t done = 0;
    while (done < line.size()) {
        const ssize_t n = ::write(fd, line.data() + done, line.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EPIPE) epipe = true;
        if (n <= 0) break;  // the parent gave up on us (EPIPE): nothing to tell
        done += static_cast<std::size_t>(n);
    }
    const timespec zero{};
    while (epipe && ::sigtimedwait(&pipe_set, nullptr, &zero) == SIGPIPE) {
    }
    (void)::pthread_sigmask(SIG_SETMASK, &old, nullptr);
    ::close(fd);
    fd = -1;
}

}  // namespace

int run_actor(std::string name, const std::function<void(Actor&)>& setup, RunActorOptions options) {
    (void)child_process_init();
    if (const char* given = std::getenv(kActorNameEnv)) {
        name = given;
        ::unsetenv(kActorNameEnv);
    }
    int ready_fd = take_ready_fd();

    // Signals become a descriptor: blocked here (before the actor starts its threads, which
    // inherit the mask) and read from a signalfd by the watcher below. No handler runs.
    // The mask is restored when run_actor returns, so that what the program does or starts
    // afterwards (system(), popen()) sees the signals as before.
    int signal_fd = -1;
    int stop_fd = -1;
    sigset_t signals;
    sigset_t old_mask;
    sigemptyset(&signals);
    (void)::pthread_sigmask(SIG_BLOCK, nullptr, &old_mask);
    const auto restore_signals = [&] {
        if (signal_fd >= 0) ::close(signal_fd);
        if (stop_fd >= 0) ::close(stop_fd);
        signal_fd = stop_fd = -1;
        (void)::pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
    };
    if (options.handle_signals) {
        sigaddset(&signals, SIGINT);
        sigaddset(&signals, SIGTERM);
        (void)::pthread_sigmask(SIG_BLOCK, &signals, nullptr);
        signal_fd = ::signalfd(-1, &signals, SFD_CLOEXEC);
        stop_fd = ::eventfd(0, EFD_CLOEXEC);
        if (signal_fd < 0 || stop_fd < 0) {
            // Without them the signals would stay blocked for good: leave them as they were.
            std::fprintf(stderr,
                         "shmctx: run_actor %s: signalfd/eventfd: %s; SIGINT/SIGTERM "
                         "keep their default action\n",
                         name.c_str(), std::strerror(errno));
            restore_signals();
        }
    }

    std::optional<Actor> actor;
    try {
        actor.emplace(name, options.actor);
        setup(*actor);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "shmctx: run_actor %s: %s\n", name.c_str(), e.what());
        report(ready_fd, std::string("error ") + e.what());
        restore_signals();
        return kRunActorSetupFailed;
    } catch (...) {
        std::fprintf(stderr, "shmctx: run_actor %s: setup threw a non-std exception\n",
                     name.c_str());
        report(ready_fd, "error setup threw a non-std exception");
        restore_signals();
        return kRunActorSetupFailed;
    }
    report(ready_fd, "ready");

    // The watcher turns the first SIGINT/SIGTERM into Actor::cancel() (which never blocks);
    // a second one while the cancel is still running exits at once, as an impatient user
    // expects of a second Ctrl-C.
    std::atomic<int> first_signal{0};
    std::thread watcher;
    if (signal_fd >= 0) {
        watcher = std::thread([&] {
            for (;;) {
                pollfd p[2] = {{signal_fd, POLLIN, 0}, {stop_fd, POLLIN, 0}};
                if (::poll(p, 2, -1) < 0) {
                    if (errno == EINTR) continue;
                    return;
                }
                if ((p[1].revents & POLLIN) != 0) return;
                signalfd_siginfo si{};
                if (::read(signal_fd, &si, sizeof si) != static_cast<ssize_t>(sizeof si)) continue;
                const int sig = static_cast<int>(si.ssi_signo);
                int none = 0;
                // relaxed: read by this thread and, after join, by the main thread.
                if (first_signal.compare_exchange_strong(none, sig, std::memory_order::relaxed)) {
                    actor->cancel();
                } else {
                    std::fprintf(stderr, "shmctx: run_actor %s: second signal %d; exiting now\n",
                                 name.c_str(), sig);
                    ::_exit(128 + sig);
                }
            }
        });
    }

    (void)actor->wait_cancelled();
    if (watcher.joinable()) {
        const std::uint64_t one = 1;
        (void)!::write(stop_fd, &one, sizeof one);
        watcher.join();
    }
    actor.reset();  // orderly: links closed, objects removed
    // A signal that came while the actor was closing stays pending: discard it (it asked for
    // what has happened anyway) before the mask is restored, or it would kill us now.
    if (signal_fd >= 0) {
        signalfd_siginfo si{};
        const int flags = ::fcntl(signal_fd, F_GETFL);
        (void)::fcntl(signal_fd, F_SETFL, flags | O_NONBLOCK);
        while (::read(signal_fd, &si, sizeof si) == static_cast<ssize_t>(sizeof si)) {
        }
    }
    restore_signals();
    const int sig = first_signal.load(std::memory_order::relaxed);  // joined: see above
    return sig != 0 ? 128 + sig : kRunActorOk;
}

}  // namespace shmctx
