// Spawner: posix_spawn on one long-lived thread, pidfd reaping. Protocol and races:
// docs/protocol.md §7.
#include "shmctx/spawner.hpp"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <unordered_set>
#include <utility>

extern char** environ;

namespace shmctx {

namespace {

std::string errno_text(int err) { return std::strerror(err); }

// Raw syscalls: glibc 2.36's <sys/pidfd.h> lacks extern "C" (fixed in 2.37), so its
// declarations do not link from C++.
int pidfd_open(pid_t pid) noexcept { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }
int pidfd_send_signal(int pidfd, int sig) noexcept {
    return static_cast<int>(::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0));
}

std::string_view env_name(std::string_view entry) {
    return entry.substr(0, std::min(entry.find('='), entry.size()));
}

/// poll(2) timeout for a deadline, rounded up so we never wake just before it.
int poll_timeout_ms(const Deadline& d) {
    if (d.is_infinite()) return -1;
    const auto left = d.remaining();
    const auto ms = std::chrono::ceil<std::chrono::milliseconds>(left).count();
    return static_cast<int>(std::min<long long>(ms, INT_MAX));
}

/// Decodes the siginfo of a reaped child (waitid with WEXITED only, so no stop/continue codes).
ExitStatus decode(const siginfo_t& si) {
    switch (si.si_code) {
        case CLD_EXITED:
            return ExitStatus::exited(si.si_status);
        case CLD_DUMPED:
            return ExitStatus::killed(si.si_status, true);
        default:  // CLD_KILLED
            return ExitStatus::killed(si.si_status, false);
    }
}

/// Fails the spawn if the kernel would auto-reap our children: with SIGCHLD set to SIG_IGN or
/// SA_NOCLDWAIT, an exited child vanishes at once, its status is lost, and its pid may be
/// reused before our pidfd_open (the one thing that makes pid -> pidfd safe is that an
/// unreaped child's pid cannot be reused).
void check_sigchld_not_ignored() {
    struct sigaction sa {};
    if (::sigaction(SIGCHLD, nullptr, &sa) != 0) {
        const int err = errno;
        throw SpawnError(err, "sigaction(SIGCHLD) query failed: " + errno_text(err));
    }
    if (sa.sa_handler == SIG_IGN || (sa.sa_flags & SA_NOCLDWAIT) != 0) {
        throw SpawnError(EINVAL,
                         "spawn refused: SIGCHLD is ignored or has SA_NOCLDWAIT, so the kernel "
                         "would auto-reap children (exit status lost, pid identity unsafe)");
    }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// ExitStatus

std::string ExitStatus::describe() const {
    if (!signaled_) return "exited with " + std::to_string(value_);
    std::string s = "killed by signal " + std::to_string(value_);
    if (const char* abbrev = ::sigabbrev_np(value_)) s += std::string(" (SIG") + abbrev + ")";
    if (core_) s += ", core dumped";
    return s;
}

// ---------------------------------------------------------------------------------------------
// ChildProcess

ChildProcess::ChildProcess(ChildProcess&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)),
      pidfd_(std::exchange(other.pidfd_, -1)),
      exe_(std::move(other.exe_)),
      status_(std::exchange(other.status_, std::nullopt)) {}

ChildProcess& ChildProcess::operator=(ChildProcess&& other) noexcept {
    if (this != &other) {
        reap_and_close();
        pid_ = std::exchange(other.pid_, -1);
        pidfd_ = std::exchange(other.pidfd_, -1);
        exe_ = std::move(other.exe_);
        status_ = std::exchange(other.status_, std::nullopt);
    }
    return *this;
}

ChildProcess::~ChildProcess() { reap_and_close(); }

void ChildProcess::reap_and_close() noexcept {
    if (pidfd_ >= 0) {
        if (!status_) {
            // The pidfd still names our unreaped child, so the signal cannot hit a recycled pid.
            (void)pidfd_send_signal(pidfd_, SIGKILL);
            for (;;) {
                siginfo_t si{};
                // Blocking: SIGKILL ends the child promptly; ECHILD (reaped by someone else) ends
                // the loop too.
                if (::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd_), &si,
                             WEXITED) == 0 ||
                    errno != EINTR) {
                    break;
                }
            }
        }
        ::close(pidfd_);
        pidfd_ = -1;
    }
    pid_ = -1;
}

std::optional<ExitStatus> ChildProcess::wait(Deadline deadline) {
    if (status_) return status_;
    if (pidfd_ < 0) return std::nullopt;  // no process
    for (;;) {
        siginfo_t si{};  // si_pid stays 0 when WNOHANG finds nothing
        if (::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd_), &si,
                     WEXITED | WNOHANG) != 0) {
            const int err = errno;
            if (err == EINTR) continue;
            throw SpawnError(err, "waitid(P_PIDFD) on " + describe() + ": " + errno_text(err) +
                                      (err == ECHILD ? " (reaped elsewhere: waitpid(-1) or "
                                                       "SIGCHLD ignored?)"
                                                     : ""));
        }
        if (si.si_pid != 0) {
            status_ = decode(si);
            ::close(pidfd_);
            pidfd_ = -1;
            return status_;
        }
        if (deadline.expired()) return std::nullopt;
        pollfd p{pidfd_, POLLIN, 0};
        const int rc = ::poll(&p, 1, poll_timeout_ms(deadline));
        if (rc < 0 && errno != EINTR) {
            const int err = errno;
            throw SpawnError(err, "poll(pidfd) on " + describe() + ": " + errno_text(err));
        }
        // Readable, timed out or interrupted: the next waitid/expired() check decides.
    }
}

bool ChildProcess::running() const noexcept {
    if (status_ || pidfd_ < 0) return false;
    pollfd p{pidfd_, POLLIN, 0};
    // A pidfd becomes readable when the process has exited (zombie or not).
    return ::poll(&p, 1, 0) == 0;
}

bool ChildProcess::kill(int sig) {
    if (!running()) return false;
    if (pidfd_send_signal(pidfd_, sig) == 0) return true;
    const int err = errno;
    if (err == ESRCH) return false;
    throw SpawnError(err, "pidfd_send_signal(" + std::to_string(sig) + ") to " + describe() + ": " +
                              errno_text(err));
}

std::string ChildProcess::describe() const {
    if (pid_ <= 0) return "no process";
    const std::string base = exe_.substr(exe_.rfind('/') + 1);
    std::string s = base + " (pid " + std::to_string(pid_) + "): ";
    if (status_) return s + status_->describe();
    return s + (running() ? "running" : "exited, not yet reaped");
}

// ---------------------------------------------------------------------------------------------
// Spawner

struct Spawner::Request {
    enum class State { queued, running, done };

    // Inputs, owned by the caller's frame, read by the worker while state == running.
    const std::string* path = nullptr;
    char* const* argv = nullptr;
    char* const* envp = nullptr;
    const SpawnOptions* options = nullptr;

    State state = State::queued;  // guarded by Spawner::mu_
    // Outputs, written by the worker before state = done (published by mu_).
    pid_t pid = -1;
    int pidfd = -1;
    int err = 0;
    const char* failed_call = nullptr;
};

Spawner::Spawner() {
    worker_ = std::thread([this] { run(); });
    std::unique_lock lock(mu_);
    done_cv_.wait(lock, [this] { return tid_ != 0; });
}

Spawner::~Spawner() {
    {
        std::lock_guard lock(mu_);
        stopping_ = true;
    }
    work_cv_.notify_one();
    worker_.join();
}

void Spawner::run() noexcept {
    // Process-directed signals go to other threads: user handlers never run on this thread, and
    // its blocked mask is not what children start with (POSIX_SPAWN_SETSIGMASK empties it).
    sigset_t all;
    sigfillset(&all);
    (void)::pthread_sigmask(SIG_BLOCK, &all, nullptr);
    (void)::pthread_setname_np(::pthread_self(), "shmctx-spawner");

    std::unique_lock lock(mu_);
    tid_ = static_cast<pid_t>(::syscall(SYS_gettid));
    done_cv_.notify_all();
    for (;;) {
        work_cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
        if (stopping_) {
            for (Request* r : queue_) {
                r->err = ECANCELED;
                r->failed_call = "spawn (Spawner destroyed)";
                r->state = Request::State::done;
            }
            queue_.clear();
            done_cv_.notify_all();
            return;
        }
        Request* r = queue_.front();
        queue_.pop_front();
        r->state = Request::State::running;
        lock.unlock();
        perform(*r);
        lock.lock();
        r->state = Request::State::done;
        done_cv_.notify_all();
    }
}

void Spawner::perform(Request& r) noexcept {
    posix_spawnattr_t attr;
    posix_spawn_file_actions_t fa;
    if (const int rc = ::posix_spawnattr_init(&attr); rc != 0) {
        r.err = rc;
        r.failed_call = "posix_spawnattr_init";
        return;
    }
    if (const int rc = ::posix_spawn_file_actions_init(&fa); rc != 0) {
        ::posix_spawnattr_destroy(&attr);
        r.err = rc;
        r.failed_call = "posix_spawn_file_actions_init";
        return;
    }
    // The child starts clean: empty mask (this thread blocks everything) and default
    // dispositions for every signal (an ignored SIGPIPE or SIGTERM would survive exec).
    sigset_t none;
    sigset_t all;
    sigemptyset(&none);
    sigfillset(&all);
    const SpawnOptions& o = *r.options;
    short flags = POSIX_SPAWN_SETSIGMASK |
                  POSIX_SPAWN_SETSIGDEF;  // NOLINT(google-runtime-int): the API's type
    if (o.new_process_group) flags |= POSIX_SPAWN_SETPGROUP;
    int rc = ::posix_spawnattr_setflags(&attr, flags);
    if (rc == 0) rc = ::posix_spawnattr_setsigmask(&attr, &none);
    if (rc == 0) rc = ::posix_spawnattr_setsigdefault(&attr, &all);
    if (rc == 0 && o.new_process_group) rc = ::posix_spawnattr_setpgroup(&attr, 0);
    const std::pair<int, int> redirects[] = {
        {o.stdin_fd, STDIN_FILENO}, {o.stdout_fd, STDOUT_FILENO}, {o.stderr_fd, STDERR_FILENO}};
    for (const auto& [from, to] : redirects) {
        if (rc == 0 && from >= 0) rc = ::posix_spawn_file_actions_adddup2(&fa, from, to);
    }
    // pass_fds[i] becomes fd 3 + i. Through a staging range above every source and target
    // first: a direct dup2 onto 3 + i could overwrite a source still to be passed.
    const int passed = static_cast<int>(o.pass_fds.size());
    int staging = 3 + passed;
    for (const int fd : o.pass_fds) staging = std::max(staging, fd + 1);
    for (int i = 0; rc == 0 && i < passed; ++i) {
        rc = ::posix_spawn_file_actions_adddup2(&fa, o.pass_fds[static_cast<std::size_t>(i)],
                                                staging + i);
    }
    for (int i = 0; rc == 0 && i < passed; ++i) {
        rc = ::posix_spawn_file_actions_adddup2(&fa, staging + i, 3 + i);
        if (rc == 0) rc = ::posix_spawn_file_actions_addclose(&fa, staging + i);
    }
    if (rc == 0 && o.close_other_fds) {
        rc = ::posix_spawn_file_actions_addclosefrom_np(&fa, 3 + passed);
    }
    if (rc != 0) {
        r.err = rc;
        r.failed_call = "posix_spawn setup";
    } else {
        pid_t pid = -1;
        rc = ::posix_spawn(&pid, r.path->c_str(), &fa, &attr, r.argv, r.envp);
        if (rc != 0) {
            r.err = rc;
            r.failed_call = "posix_spawn";
        } else {
            // Safe pid -> pidfd: the child is ours and unreaped (SIGCHLD not ignored, checked in
            // spawn(); nobody may waitpid(-1)), so its pid cannot have been reused yet. The
            // kernel sets O_CLOEXEC on every pidfd.
            const int pidfd = pidfd_open(pid);
            if (pidfd >= 0) {
                r.pid = pid;
                r.pidfd = pidfd;
            } else {
                r.err = errno;
                r.failed_call = "pidfd_open";
                // No handle can own it: kill and reap this one pid now (never waitpid(-1)).
                (void)::kill(pid, SIGKILL);
                int st = 0;
                while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
                }
            }
        }
    }
    ::posix_spawn_file_actions_destroy(&fa);
    ::posix_spawnattr_destroy(&attr);
}

ChildProcess Spawner::spawn(const std::string& exe, const std::vector<std::string>& args,
                            const std::vector<std::string>& env_extra,
                            const SpawnOptions& options) {
    if (exe.empty()) throw SpawnError(EINVAL, "spawn: empty executable path");
    for (const int fd : options.pass_fds) {
        if (fd < 0 || ::fcntl(fd, F_GETFD) < 0) {
            throw SpawnError(EBADF, "spawn " + exe + ": pass_fds has " + std::to_string(fd) +
                                        ", which is not an open descriptor");
        }
    }
    check_sigchld_not_ignored();

    // Build argv and envp here, on the caller's thread: the worker only spawns.
    std::vector<std::string> argv_s;
    argv_s.reserve(args.size() + 1);
    argv_s.push_back(exe);
    argv_s.insert(argv_s.end(), args.begin(), args.end());

    std::unordered_set<std::string_view> overridden{std::string_view(kParentPidEnv)};
    for (const std::string& e : env_extra) {
        const std::string_view name = env_name(e);
        if (name.empty() || name.size() == e.size()) {
            throw SpawnError(EINVAL,
                             "spawn " + exe + ": env entry \"" + e + "\" is not NAME=value");
        }
        if (name == kParentPidEnv) {
            throw SpawnError(EINVAL,
                             "spawn " + exe + ": " + kParentPidEnv + " is set by the Spawner");
        }
        overridden.insert(name);
    }
    std::vector<std::string> env_s;
    if (options.inherit_environment) {
        for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
            if (overridden.count(env_name(*e)) == 0) env_s.emplace_back(*e);
        }
    }
    env_s.insert(env_s.end(), env_extra.begin(), env_extra.end());
    env_s.push_back(std::string(kParentPidEnv) + "=" + std::to_string(::getpid()));

    std::vector<char*> argv;
    argv.reserve(argv_s.size() + 1);
    for (std::string& a : argv_s) argv.push_back(a.data());
    argv.push_back(nullptr);
    std::vector<char*> envp;
    envp.reserve(env_s.size() + 1);
    for (std::string& e : env_s) envp.push_back(e.data());
    envp.push_back(nullptr);

    Request req;
    req.path = &exe;
    req.argv = argv.data();
    req.envp = envp.data();
    req.options = &options;

    // A timeout of a year or more means "no deadline" (and avoids time_point overflow).
    const Deadline deadline = options.timeout >= std::chrono::hours(24 * 365)
                                  ? Deadline::never()
                                  : Deadline(options.timeout);
    {
        std::unique_lock lock(mu_);
        if (stopping_) throw SpawnError(ECANCELED, "spawn " + exe + ": Spawner is being destroyed");
        queue_.push_back(&req);
        work_cv_.notify_one();
        const auto finished = [&req] { return req.state == Request::State::done; };
        const bool in_time = deadline.is_infinite()
                                 ? (done_cv_.wait(lock, finished), true)
                                 : done_cv_.wait_until(lock, deadline.at(), finished);
        if (!in_time) {
            if (req.state == Request::State::queued) {
                // Withdraw it: the worker has not seen it, so nothing refers to req afterwards.
                queue_.erase(std::find(queue_.begin(), queue_.end(), &req));
                throw SpawnError(ETIMEDOUT, "spawn " + exe +
                                                ": the Spawner thread did not take the request "
                                                "before the deadline");
            }
            // Running: the worker reads our frame and may have created a child; wait for it
            // (posix_spawn returns once the child has exec'd or failed).
            done_cv_.wait(lock, finished);
        }
    }
    if (req.err != 0) {
        throw SpawnError(req.err,
                         std::string(req.failed_call) + " " + exe + ": " + errno_text(req.err));
    }
    return ChildProcess(req.pid, req.pidfd, exe);
}

// ---------------------------------------------------------------------------------------------
// Child side

bool child_process_init() {
    const char* value = std::getenv(kParentPidEnv);
    if (value == nullptr) return false;
    const std::string_view text(value);
    long expected = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), expected);
    if (ec != std::errc{} || end != text.data() + text.size() || expected <= 0 ||
        expected > INT_MAX) {
        std::fprintf(stderr, "shmctx: malformed %s=\"%s\"; exiting\n", kParentPidEnv, value);
        ::_exit(kParentGoneExitCode);
    }
    // 1. Arm first: from here on, the death of the spawning thread SIGKILLs us.
    if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) {
        std::fprintf(stderr, "shmctx: prctl(PR_SET_PDEATHSIG) failed: %s; exiting\n",
                     std::strerror(errno));
        ::_exit(kParentGoneExitCode);
    }
    // 2. Then check: if the parent died before step 1, we were reparented (to init or a
    //    subreaper) and no signal will ever come, so getppid() no longer matches.
    const pid_t parent = ::getppid();
    if (parent != static_cast<pid_t>(expected)) {
        std::fprintf(stderr,
                     "shmctx: parent %ld is gone (getppid() = %d) before PDEATHSIG was armed; "
                     "exiting\n",
                     expected, static_cast<int>(parent));
        ::_exit(kParentGoneExitCode);
    }
    ::unsetenv(kParentPidEnv);
    return true;
}

}  // namespace shmctx
