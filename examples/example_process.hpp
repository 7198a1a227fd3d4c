// Plumbing shared by the examples, kept out of them so that they show only shmctx: command-line
// arguments, printing, and running this same executable again as the peer process.
//
//   parent process                              child process (this executable, --role worker)
//   example::init(): parse --ns                 example::init(): child_process_init() first
//   PeerProcess peer("worker", args) ─spawn──►  shmctx::Actor worker("worker"); worker.expose(...)
//   peer.wait_ready(10s)  ◄── "[worker] ready"  example::signal_ready()  (after every expose!)
//   actor.connect("worker"), open contexts...   endpoints run on the Actor's own threads
//   peer.finish(10s): closes its stdin ───────► example::wait_for_parent() returns; ~Actor
//                     waits for exit 0           return 0
//
// Why a "ready" line: an Actor is connectable as soon as it is constructed, before its expose()
// calls ran; a parent that opened a context in between would get "not exposed". The child says
// "ready" only after exposing everything, and the parent connects only after reading it.
//
// Every line is printed as "[role] text"; the parent relays the child's lines to its own stdout
// as they come (a thread per child), so the two processes' output interleaves in real time.
// Thread-safety: say() from any thread; PeerProcess from the thread that created it.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>

#include "shmctx/deadline.hpp"
#include "shmctx/spawner.hpp"

namespace example {

struct Args {
    std::string ns;    ///< the shmctx namespace: actors see only actors of their namespace
    std::string role;  ///< empty in the parent; the child's actor name in the child
};

/// This process's role, the prefix of its lines.
inline std::string& role_prefix() {
    static std::string role;
    return role;
}

/// Prints one line "[role] text" (printf format) and flushes it: one write per line, so lines of
/// several threads and processes never mix.
[[gnu::format(printf, 1, 2)]] inline void say(const char* format, ...) {
    char text[512];
    va_list ap;
    va_start(ap, format);
    std::vsnprintf(text, sizeof text, format, ap);
    va_end(ap);
    std::printf("[%s] %s\n", role_prefix().c_str(), text);
    std::fflush(stdout);
}

/// Parses `--ns NAMESPACE` (default "example-<name>-<pid>") and the internal `--role NAME`.
/// In a child (a role given) it first calls shmctx::child_process_init(), which must run before
/// any thread exists: the child then dies with its parent instead of running on as an orphan.
inline Args init(int argc, char** argv, std::string_view example, std::string_view parent_role) {
    Args args;
    for (int i = 1; i < argc; i += 2) {
        const std::string_view flag = argv[i];
        if (i + 1 < argc && flag == "--ns") {
            args.ns = argv[i + 1];
        } else if (i + 1 < argc && flag == "--role") {
            args.role = argv[i + 1];
        } else {
            std::fprintf(stderr, "usage: %s [--ns NAMESPACE]\n", argv[0]);
            std::exit(2);
        }
    }
    if (!args.role.empty()) shmctx::child_process_init();
    if (args.ns.empty()) {
        args.ns = "example-" + std::string(example) + "-" + std::to_string(::getpid());
    }
    role_prefix() = args.role.empty() ? std::string(parent_role) : args.role;
    return args;
}

/// Child: tells the parent that our actor exists and every endpoint is exposed.
inline void signal_ready() { say("ready"); }

/// Child: blocks until the parent closes our stdin (its "we are done"), or dies.
inline void wait_for_parent() {
    char buffer[256];
    for (;;) {
        const ssize_t n = ::read(STDIN_FILENO, buffer, sizeof buffer);
        if (n == 0 || (n < 0 && errno != EINTR)) return;
    }
}

/// Parent: this executable started again as the child `role`, and the relay of its output.
class PeerProcess {
public:
    PeerProcess(const std::string& role, const Args& args) : role_(role) {
        int to_child[2];
        int from_child[2];
        if (::pipe2(to_child, O_CLOEXEC) != 0 || ::pipe2(from_child, O_CLOEXEC) != 0) {
            throw std::runtime_error("pipe2 failed");
        }
        shmctx::SpawnOptions options;
        options.stdin_fd = to_child[0];
        options.stdout_fd = from_child[1];  // stderr stays ours: the child's errors show as is
        child_ = spawner_.spawn("/proc/self/exe", {"--ns", args.ns, "--role", role}, {}, options);
        ::close(to_child[0]);
        ::close(from_child[1]);
        to_child_ = to_child[1];
        relay_ = std::thread([this, fd = from_child[0]] { relay(fd); });
    }
    PeerProcess(const PeerProcess&) = delete;
    PeerProcess& operator=(const PeerProcess&) = delete;
    ~PeerProcess() {
        if (to_child_ >= 0) {  // an error path: finish() was not called
            ::close(to_child_);
            (void)child_.wait(std::chrono::seconds(5));  // let it shut down in order...
            child_ = shmctx::ChildProcess();             // ...else kill and reap it
        }
        if (relay_.joinable()) relay_.join();
    }

    /// True once the child printed "ready"; false if it exited or `deadline` passed first.
    bool wait_ready(shmctx::Deadline deadline) {
        std::unique_lock lock(mu_);
        cv_.wait_until(lock, deadline.at(), [&] { return ready_ || eof_; });
        if (!ready_) say("%s did not get ready: %s", role_.c_str(), child_.describe().c_str());
        return ready_;
    }

    /// Closes the child's stdin (its signal to shut down) and waits for it to exit: true on
    /// exit code 0.
    bool finish(shmctx::Deadline deadline) {
        ::close(to_child_);
        to_child_ = -1;
        const auto status = child_.wait(deadline);
        relay_.join();  // the child's stdout is closed now: the relay has read everything
        if (status && status->success()) return true;
        say("%s did not finish cleanly: %s", role_.c_str(), child_.describe().c_str());
        return false;
    }

private:
    void relay(int fd) {
        std::FILE* in = ::fdopen(fd, "r");
        if (in == nullptr) ::close(fd);
        const std::string ready_line = "[" + role_ + "] ready\n";
        char line[1024];
        while (in != nullptr && std::fgets(line, sizeof line, in) != nullptr) {
            std::fputs(line, stdout);
            std::fflush(stdout);
            if (ready_line == line) {
                const std::lock_guard lock(mu_);
                ready_ = true;
                cv_.notify_all();
            }
        }
        if (in != nullptr) std::fclose(in);
        const std::lock_guard lock(mu_);
        eof_ = true;
        cv_.notify_all();
    }

    std::string role_;
    shmctx::Spawner spawner_;  // must outlive the child: PDEATHSIG follows the spawning thread
    shmctx::ChildProcess child_;
    int to_child_ = -1;
    std::thread relay_;
    std::mutex mu_;
    std::condition_variable cv_;
    bool ready_ = false;  // guarded by mu_
    bool eof_ = false;    // guarded by mu_
};

}  // namespace example
