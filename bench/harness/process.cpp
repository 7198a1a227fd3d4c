#include "process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <thread>
#include <utility>

#include "shmctx/errors.hpp"

extern char** environ;  // NOLINT: POSIX declares it nowhere else

namespace shmctx::bench {
namespace {

[[noreturn]] void fail(const std::string& what) {
    throw SystemError("perf harness: " + what + ": " + std::strerror(errno));
}

/// Milliseconds to pass to poll(), at most 100 so that we notice the peer's death quickly.
int poll_ms(const Deadline& deadline) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline.remaining());
    return static_cast<int>(std::min<std::chrono::milliseconds::rep>(left.count(), 100));
}

}  // namespace

Peer Peer::spawn(const std::vector<std::string>& args, int pass_fd, int as_fd) {
    int in[2];
    int out[2];
    if (::pipe2(in, O_CLOEXEC) != 0) fail("pipe2");
    if (::pipe2(out, O_CLOEXEC) != 0) {
        ::close(in[0]);
        ::close(in[1]);
        fail("pipe2");
    }
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, in[0], STDIN_FILENO);
    posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
    if (pass_fd >= 0) posix_spawn_file_actions_adddup2(&actions, pass_fd, as_fd);

    std::vector<std::string> argv_storage;
    argv_storage.reserve(args.size() + 1);
    argv_storage.emplace_back("shmctx_perf_harness");
    argv_storage.insert(argv_storage.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : argv_storage) argv.push_back(a.data());
    argv.push_back(nullptr);

    // The peer starts with an empty signal mask and default dispositions, whatever the harness
    // blocked (main() routes SIGINT/SIGTERM to a sigwait thread): a peer must die on them.
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t none;
    sigset_t defaults;
    sigemptyset(&none);
    sigemptyset(&defaults);
    for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGPIPE}) sigaddset(&defaults, sig);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &defaults);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

    pid_t pid = -1;
    const int rc = ::posix_spawn(&pid, "/proc/self/exe", &actions, &attr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
    ::close(in[0]);
    ::close(out[1]);
    if (rc != 0) {
        ::close(in[1]);
        ::close(out[0]);
        errno = rc;
        fail("posix_spawn /proc/self/exe");
    }
    // A pidfd lets PeerWatch notice the peer's exit; -1 (old kernel) only loses that shortcut.
    const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
    return Peer(pid, pidfd, in[1], out[0]);
}

Peer::Peer(Peer&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)),
      pidfd_(std::exchange(other.pidfd_, -1)),
      in_(std::exchange(other.in_, -1)),
      out_(std::exchange(other.out_, -1)),
      buffer_(std::move(other.buffer_)),
      status_(other.status_) {}

Peer::~Peer() {
    if (pid_ > 0 && !status_) {
        ::kill(pid_, SIGKILL);
        (void)reap(true);
    }
    if (in_ >= 0) ::close(in_);
    if (out_ >= 0) ::close(out_);
    if (pidfd_ >= 0) ::close(pidfd_);
}

PeerWatch::PeerWatch(int pidfd, std::stop_source source) : done_fd_(::eventfd(0, EFD_CLOEXEC)) {
    if (done_fd_ < 0) fail("eventfd");
    thread_ = std::thread([pidfd, done = done_fd_, source]() mutable {
        pollfd p[2] = {{done, POLLIN, 0}, {pidfd, POLLIN, 0}};
        for (;;) {
            const int rc = ::poll(p, pidfd >= 0 ? 2 : 1, -1);
            if (rc < 0 && errno == EINTR) continue;
            if (rc > 0 && p[1].revents != 0 && p[0].revents == 0) source.request_stop();
            return;
        }
    });
}

PeerWatch::~PeerWatch() {
    const std::uint64_t one = 1;
    (void)!::write(done_fd_, &one, sizeof one);
    thread_.join();
    ::close(done_fd_);
}

bool Peer::reap(bool block) {
    if (status_) return true;
    int status = 0;
    for (;;) {
        const pid_t rc = ::waitpid(pid_, &status, block ? 0 : WNOHANG);
        if (rc == pid_) {
            status_ = status;
            return true;
        }
        if (rc == 0) return false;
        if (errno != EINTR) return false;
    }
}

std::string Peer::describe() {
    (void)reap(false);
    if (!status_) return "running";
    if (WIFEXITED(*status_)) return "exited with " + std::to_string(WEXITSTATUS(*status_));
    if (WIFSIGNALED(*status_)) return "killed by signal " + std::to_string(WTERMSIG(*status_));
    return "stopped";
}

std::string Peer::read_line(const Deadline& deadline) {
    for (;;) {
        if (const auto nl = buffer_.find('\n'); nl != std::string::npos) {
            std::string line = buffer_.substr(0, nl);
            buffer_.erase(0, nl + 1);
            return line;
        }
        pollfd p{out_, POLLIN, 0};
        const int rc = ::poll(&p, 1, poll_ms(deadline));
        if (rc < 0 && errno != EINTR) fail("poll");
        if (rc > 0) {
            char chunk[512];
            const ssize_t n = ::read(out_, chunk, sizeof chunk);
            if (n > 0) {
                buffer_.append(chunk, static_cast<std::size_t>(n));
                continue;
            }
            if (n == 0) {
                (void)reap(true);
                throw std::runtime_error("peer " + std::to_string(pid_) + " closed its output (" +
                                         describe() + ")");
            }
            if (errno != EINTR && errno != EAGAIN) fail("read");
        }
        if (deadline.expired())
            throw std::runtime_error("peer " + std::to_string(pid_) + " did not answer in time (" +
                                     describe() + ")");
    }
}

void Peer::write_line(std::string_view line) {
    std::string text(line);
    text.push_back('\n');
    std::size_t done = 0;
    while (done < text.size()) {
        const ssize_t n = ::write(in_, text.data() + done, text.size() - done);
        if (n < 0) {
            if (errno == EINTR) continue;
            fail("write to peer (" + describe() + ")");
        }
        done += static_cast<std::size_t>(n);
    }
}

bool Peer::wait_exit(const Deadline& deadline) {
    while (!reap(false)) {
        if (deadline.expired()) return false;
        if (pidfd_ >= 0) {
            pollfd p{pidfd_, POLLIN, 0};  // readable once the peer exited
            (void)::poll(&p, 1, poll_ms(deadline));
        } else {
            // No pidfd (old kernel): poll the exit; not synchronisation.
            std::this_thread::sleep_for(std::chrono::microseconds(200));
        }
    }
    return true;
}

void Peer::wait_success(const Deadline& deadline) {
    if (!wait_exit(deadline))
        throw std::runtime_error("peer " + std::to_string(pid_) + " did not exit in time");
    if (!WIFEXITED(*status_) || WEXITSTATUS(*status_) != 0)
        throw std::runtime_error("peer " + std::to_string(pid_) + " failed: " + describe());
}

void pin_to(int cpu) {
    if (cpu < 0) return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(static_cast<std::size_t>(cpu), &set);
    if (::sched_setaffinity(0, sizeof set, &set) != 0)
        fail("sched_setaffinity cpu " + std::to_string(cpu));
}

AffinityScope::AffinityScope(int cpu) {
    saved_ = ::sched_getaffinity(0, sizeof mask_, &mask_) == 0;
    pin_to(cpu);
}

void AffinityScope::restore() const noexcept {
    if (saved_) (void)::sched_setaffinity(0, sizeof mask_, &mask_);
}

Placement choose_placement(const std::vector<int>& requested) {
    Placement p;
    std::vector<int> allowed;
    cpu_set_t set;
    CPU_ZERO(&set);
    if (::sched_getaffinity(0, sizeof set, &set) == 0) {
        for (int c = 0; c < CPU_SETSIZE; ++c)
            if (CPU_ISSET(static_cast<std::size_t>(c), &set)) allowed.push_back(c);
    }
    if (requested.size() >= 2) {
        p.parent_cpu = requested[0];
        p.peer_cpu = requested[1];
    } else if (allowed.size() >= 2) {
        p.parent_cpu = allowed[0];
        p.peer_cpu = allowed[1];
    } else {
        p.text = "unpinned (" + std::to_string(allowed.size()) + " cpu allowed)";
        return p;
    }
    pin_to(p.parent_cpu);
    p.text =
        "parent cpu" + std::to_string(p.parent_cpu) + ", peer cpu" + std::to_string(p.peer_cpu);
    return p;
}

std::string cpu_model() {
    std::ifstream in("/proc/cpuinfo");
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind("model name", 0) == 0) {
            const auto colon = line.find(':');
            if (colon != std::string::npos)
                return line.substr(line.find_first_not_of(' ', colon + 1));
        }
    }
    return "unknown";
}

bool cpus_are_virtual() {
    std::ifstream in("/proc/cpuinfo");
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind("flags", 0) == 0)
            return (line + " ").find(" hypervisor ") != std::string::npos;
    }
    return false;
}

std::string git_commit(const std::string& source_dir) {
    const std::string cmd = "git -C '" + source_dir + "' rev-parse HEAD 2>/dev/null";
    FILE* f = ::popen(cmd.c_str(), "r");  // NOLINT: report metadata only, fixed command
    if (f == nullptr) return "unknown";
    char buf[64] = {};
    const bool ok = std::fgets(buf, sizeof buf, f) != nullptr;
    const int status = ::pclose(f);
    std::string sha = ok ? std::string(buf) : std::string();
    while (!sha.empty() && (sha.back() == '\n' || sha.back() == '\r')) sha.pop_back();
    if (status != 0 || sha.size() != 40) return "unknown";
    // A modified tree is not that commit: say so ("git diff --quiet HEAD" exits 1).
    const std::string dirty = "git -C '" + source_dir + "' diff --quiet HEAD 2>/dev/null";
    const int rc = std::system(dirty.c_str());  // NOLINT: report metadata only, fixed command
    if (rc != -1 && WIFEXITED(rc) && WEXITSTATUS(rc) == 1) sha += "-dirty";
    return sha;
}

const std::atomic<bool>& stop_on_signals(const char* program, const char* unit) {
    static std::atomic<bool> stop{false};
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    std::thread([set, program, unit] {
        int sig = 0;
        if (sigwait(&set, &sig) == 0) {
            stop.store(true, std::memory_order::relaxed);  // relaxed: polled between runs
            std::fprintf(stderr, "%s: stopping after the current %s\n", program, unit);
        }
    }).detach();
    return stop;
}

}  // namespace shmctx::bench
