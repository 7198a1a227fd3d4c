// Minimal process spawner: posix_spawn from one long-lived thread, reaping by pidfd.
//
// Why a dedicated thread: a child arms PR_SET_PDEATHSIG, and the kernel delivers that signal
// when the *thread* that created the child exits, not when the parent process does. If
// children were spawned from whatever thread asked, a short-lived worker thread ending would
// SIGKILL its children. So every posix_spawn runs on the Spawner's own thread, which lives as
// long as the Spawner (an actor's supervisor thread, DESIGN.md §6). Callers hand a request to
// it and wait for the result with a deadline.
//
// Child side: the spawned executable calls shmctx::child_process_init() first thing in main.
// It arms PDEATHSIG first and then checks getppid() against SHMCTX_PARENT_PID, so a child whose
// parent died before the signal was armed exits instead of running on as an orphan
// (docs/protocol.md §7 walks through the race).
//
// Reaping: only by pidfd (waitid(P_PIDFD)); never waitpid(-1), which would steal other
// components' children. A ChildProcess that is destroyed while its child still runs SIGKILLs
// and reaps it: no zombies. The library installs no signal handlers; SIGCHLD must not be
// ignored (the kernel would then auto-reap and the exit status would be lost), which spawn()
// checks.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "shmctx/deadline.hpp"
#include "shmctx/errors.hpp"

namespace shmctx {

/// Environment variable through which a Spawner tells its child the parent's pid.
inline constexpr const char* kParentPidEnv = "SHMCTX_PARENT_PID";

/// Exit code of a child whose parent died before child_process_init() armed PDEATHSIG (or
/// whose SHMCTX_PARENT_PID is malformed). Distinct from common shell codes (1, 2, 126, 127,
/// 128+n) so a supervisor log says what happened.
inline constexpr int kParentGoneExitCode = 97;

/// A spawn (or wait) that failed: the system call, the executable and strerror are in what();
/// sys_errno() is the errno (ETIMEDOUT: the Spawner thread did not take the request in time;
/// ECANCELED: the Spawner was being destroyed).
class SpawnError : public Error {
public:
    SpawnError(int sys_errno, const std::string& what)
        : Error(Errc::system_error, what), errno_(sys_errno) {}
    int sys_errno() const noexcept { return errno_; }

private:
    int errno_;
};

/// How a child ended, decoded from waitid's siginfo. Thread-safety: value type.
class ExitStatus {
public:
    static ExitStatus exited(int code) noexcept { return ExitStatus(false, code, false); }
    static ExitStatus killed(int sig, bool core_dumped) noexcept {
        return ExitStatus(true, sig, core_dumped);
    }

    bool is_exited() const noexcept { return !signaled_; }
    bool is_signaled() const noexcept { return signaled_; }
    /// The exit code; only meaningful when is_exited().
    int exit_code() const noexcept { return signaled_ ? -1 : value_; }
    /// The terminating signal; only meaningful when is_signaled().
    int signal() const noexcept { return signaled_ ? value_ : 0; }
    bool core_dumped() const noexcept { return core_; }
    bool success() const noexcept { return !signaled_ && value_ == 0; }
    /// "exited with 3" / "killed by signal 9 (SIGKILL)".
    std::string describe() const;

    friend bool operator==(const ExitStatus&, const ExitStatus&) = default;

private:
    ExitStatus(bool signaled, int value, bool core) noexcept
        : signaled_(signaled), value_(value), core_(core) {}
    bool signaled_;
    int value_;
    bool core_;
};

/// Options of one spawn. Thread-safety: value type.
struct SpawnOptions {
    /// Descriptors installed as the child's stdin/stdout/stderr (dup2 in the child; ours stay
    /// open and are the caller's to close). -1 = the child inherits ours.
    int stdin_fd = -1;
    int stdout_fd = -1;
    int stderr_fd = -1;
    /// Further descriptors of ours to install in the child as fd 3, 4, ... in this order (the
    /// child's copies are not close-on-exec; ours stay open and are the caller's to close).
    /// With close_other_fds, every descriptor above them is closed in the child.
    std::vector<int> pass_fds;
    /// Start the child in a process group of its own (POSIX_SPAWN_SETPGROUP): a terminal's
    /// Ctrl-C (SIGINT to the foreground group) then reaches only us, and we decide how the
    /// child ends. Its PDEATHSIG is unaffected.
    bool new_process_group = false;
    /// Pass our environment (minus SHMCTX_PARENT_PID and the names env_extra sets).
    bool inherit_environment = true;
    /// Close every descriptor >= 3 in the child (after the dup2s). Every fd the library opens is
    /// O_CLOEXEC anyway; this also covers third-party code that forgot to set it.
    bool close_other_fds = true;
    /// How long spawn() waits for the Spawner thread to take the request. Once taken, spawn()
    /// waits for the posix_spawn to finish (bounded by exec), so no child is ever lost.
    Duration timeout = std::chrono::seconds(5);
};

/// A spawned child process: its pid and a pidfd (O_CLOEXEC) opened right after the spawn. The
/// pid cannot be reused before we reap it, so the pidfd names exactly our child.
/// The destructor SIGKILLs and reaps a child that is still running.
/// Thread-safety: single thread (move it between threads freely).
class ChildProcess {
public:
    ChildProcess() = default;
    ChildProcess(ChildProcess&& other) noexcept;
    ChildProcess& operator=(ChildProcess&& other) noexcept;
    ChildProcess(const ChildProcess&) = delete;
    ChildProcess& operator=(const ChildProcess&) = delete;
    ~ChildProcess();

    /// False for a default-constructed or moved-from handle.
    bool valid() const noexcept { return pid_ > 0; }
    pid_t pid() const noexcept { return pid_; }
    /// The pidfd, for the caller's epoll (readable once the child has exited); -1 after reaping.
    int pidfd() const noexcept { return pidfd_; }
    const std::string& exe() const noexcept { return exe_; }

    /// Waits until the child has exited or the deadline passes, then reaps it with
    /// waitid(P_PIDFD). The status, or nullopt if it still runs at the deadline. Once reaped,
    /// returns the stored status at once. Throws SpawnError if someone else reaped our child.
    std::optional<ExitStatus> wait(Deadline deadline = Deadline::never());
    /// The status if the child has been reaped by wait().
    const std::optional<ExitStatus>& status() const noexcept { return status_; }
    /// True until the child has exited (an exited but unreaped child is not running).
    bool running() const noexcept;
    /// Sends `sig` with pidfd_send_signal (no pid-reuse race). False if the child has already
    /// exited; throws SpawnError on any other failure.
    bool kill(int sig);
    /// "spawn_child (pid 1234): running" / "...: exited with 3" / "no process".
    std::string describe() const;

private:
    friend class Spawner;
    ChildProcess(pid_t pid, int pidfd, std::string exe) noexcept
        : pid_(pid), pidfd_(pidfd), exe_(std::move(exe)) {}
    /// SIGKILL + blocking reap if still unreaped, then close the pidfd.
    void reap_and_close() noexcept;

    pid_t pid_ = -1;
    int pidfd_ = -1;
    std::string exe_;
    std::optional<ExitStatus> status_;
};

/// Owns the long-lived thread that performs every posix_spawn. Children that called
/// child_process_init() receive SIGKILL when that thread ends, i.e. when the Spawner is
/// destroyed or the process dies: a Spawner must outlive the children it started (destroy or
/// wait() the ChildProcess handles first; their destructors reap).
/// Thread-safety: thread-safe (spawn() from any number of threads); destroy it only when no
/// spawn() call is in progress.
class Spawner {
public:
    Spawner();
    ~Spawner();
    Spawner(const Spawner&) = delete;
    Spawner& operator=(const Spawner&) = delete;

    /// Starts `exe` (a path; no PATH search) with argv = {exe, args...}, our environment (see
    /// SpawnOptions) plus `env_extra` ("NAME=value") plus SHMCTX_PARENT_PID=<our pid>. The child
    /// starts with an empty signal mask and default dispositions for every signal. Throws
    /// SpawnError (posix_spawn's errno, e.g. ENOENT or EACCES; ETIMEDOUT; ECANCELED; EINVAL if
    /// SIGCHLD is ignored, `exe` is empty, or an env_extra entry is not NAME=value or sets
    /// SHMCTX_PARENT_PID; EBADF if a pass_fds entry is not an open descriptor).
    ChildProcess spawn(const std::string& exe, const std::vector<std::string>& args = {},
                       const std::vector<std::string>& env_extra = {},
                       const SpawnOptions& options = {});

    /// The kernel thread id of the spawning thread (the "parent" PDEATHSIG follows).
    pid_t thread_tid() const noexcept { return tid_; }

private:
    struct Request;
    void run() noexcept;
    static void perform(Request& r) noexcept;

    std::mutex mu_;
    std::condition_variable work_cv_;  // the worker waits for requests or stop
    std::condition_variable done_cv_;  // callers wait for their request to finish
    std::deque<Request*> queue_;       // guarded by mu_; requests live on the callers' stacks
    bool stopping_ = false;            // guarded by mu_
    pid_t tid_ = 0;                    // written before the constructor returns
    std::thread worker_;
};

/// Call first thing in main of an executable a Spawner may start, before creating threads
/// (it calls unsetenv). If SHMCTX_PARENT_PID is set: arms PR_SET_PDEATHSIG(SIGKILL), then
/// checks getppid() against it; on a mismatch (the parent died before the signal was armed)
/// or a malformed value it prints a line to stderr and _exit(kParentGoneExitCode). Removes the
/// variable so it does not leak to processes this one starts by other means. Returns true if
/// this process runs under a shmctx parent.
bool child_process_init();

}  // namespace shmctx
