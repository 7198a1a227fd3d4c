// Spawner and child_process_init across real processes (helper: spawn_child.cpp).
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "process.hpp"
#include "shmctx/spawner.hpp"

namespace shmctx {
namespace {

using namespace std::chrono_literals;

std::string helper() { return test::sibling_binary("spawn_child"); }

/// An owned descriptor.
class Fd {
public:
    explicit Fd(int fd = -1) noexcept : fd_(fd) {}
    Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
    Fd& operator=(Fd&& o) noexcept {
        reset(std::exchange(o.fd_, -1));
        return *this;
    }
    ~Fd() { reset(); }
    int get() const noexcept { return fd_; }
    void reset(int fd = -1) noexcept {
        if (fd_ >= 0) ::close(fd_);
        fd_ = fd;
    }

private:
    int fd_;
};

struct Pipe {
    Fd read;
    Fd write;
    Pipe() {
        int p[2];
        if (::pipe2(p, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
        read.reset(p[0]);
        write.reset(p[1]);
    }
};

/// Reads lines from a pipe with a deadline.
class LineReader {
public:
    explicit LineReader(Fd fd) : fd_(std::move(fd)) {}
    std::optional<std::string> next(Deadline deadline = 10s) {
        for (;;) {
            if (const auto nl = buf_.find('\n'); nl != std::string::npos) {
                std::string line = buf_.substr(0, nl);
                buf_.erase(0, nl + 1);
                return line;
            }
            pollfd p{fd_.get(), POLLIN, 0};
            const auto ms = std::chrono::ceil<std::chrono::milliseconds>(deadline.remaining());
            const int rc = ::poll(&p, 1, static_cast<int>(std::min<long long>(ms.count(), 60'000)));
            if (rc < 0 && errno == EINTR) continue;
            if (rc <= 0) return std::nullopt;
            char chunk[512];
            const ssize_t n = ::read(fd_.get(), chunk, sizeof chunk);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) return std::nullopt;
            buf_.append(chunk, static_cast<std::size_t>(n));
        }
    }

private:
    Fd fd_;
    std::string buf_;
};

/// A child with its stdout (and optionally stdin) connected to pipes.
struct Piped {
    ChildProcess child;
    std::optional<LineReader> out;
    Fd in;
};

Piped spawn_piped(Spawner& spawner, std::vector<std::string> args, bool with_stdin = false,
                  std::vector<std::string> env = {}, SpawnOptions opts = {}) {
    Pipe out;
    std::optional<Pipe> in;
    opts.stdout_fd = out.write.get();
    if (with_stdin) {
        in.emplace();
        opts.stdin_fd = in->read.get();
    }
    Piped p;
    p.child = spawner.spawn(helper(), args, env, opts);
    out.write.reset();  // the child holds the only write end now: EOF when it dies
    p.out.emplace(std::move(out.read));
    if (in) p.in = std::move(in->write);
    return p;
}

void write_line(const Fd& fd, const std::string& text) {
    const std::string line = text + "\n";
    ASSERT_EQ(::write(fd.get(), line.data(), line.size()), static_cast<ssize_t>(line.size()));
}

/// State letter and parent pid of /proc/<pid>/stat; nullopt if no such process.
std::optional<std::pair<char, pid_t>> proc_stat(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
    std::string text;
    if (!in || !std::getline(in, text)) return std::nullopt;
    const auto close = text.rfind(')');  // comm may contain spaces and parentheses
    if (close == std::string::npos) return std::nullopt;
    std::istringstream rest(text.substr(close + 1));
    char state = 0;
    pid_t ppid = 0;
    rest >> state >> ppid;
    return std::make_pair(state, ppid);
}

bool is_our_zombie(pid_t pid) {
    const auto st = proc_stat(pid);
    return st && st->first == 'Z' && st->second == ::getpid();
}

/// Restores a signal disposition changed by a test.
class ScopedDisposition {
public:
    ScopedDisposition(int sig, void (*handler)(int)) : sig_(sig) {
        struct sigaction sa {};
        sa.sa_handler = handler;
        sigemptyset(&sa.sa_mask);
        ::sigaction(sig_, &sa, &old_);
    }
    ~ScopedDisposition() { ::sigaction(sig_, &old_, nullptr); }

private:
    int sig_;
    struct sigaction old_ {};
};

/// Pids of our children (any state), from /proc/<pid>/stat.
std::vector<pid_t> our_children() {
    std::vector<pid_t> out;
    DIR* dir = ::opendir("/proc");
    if (dir == nullptr) return out;
    while (const dirent* e = ::readdir(dir)) {
        const pid_t pid = static_cast<pid_t>(std::atoi(e->d_name));
        if (pid <= 0) continue;
        if (const auto st = proc_stat(pid); st && st->second == ::getpid()) out.push_back(pid);
    }
    ::closedir(dir);
    return out;
}

/// Every test must leave no child of ours behind, running or zombie ("no zombies, ever").
class NoChildLeftBehind : public ::testing::Test {
protected:
    void TearDown() override {
        const auto left = our_children();
        EXPECT_TRUE(left.empty()) << left.size()
                                  << " child(ren) of the test process left, e.g. pid "
                                  << left.front() << " state " << proc_stat(left.front())->first;
    }
};
class Spawn : public NoChildLeftBehind {};
class ChildInit : public NoChildLeftBehind {};

TEST_F(Spawn, CollectsExitCodes) {
    Spawner spawner;
    for (const int code : {0, 3, 42, 255}) {
        ChildProcess c = spawner.spawn(helper(), {"exit", std::to_string(code)});
        ASSERT_TRUE(c.valid());
        const auto st = c.wait(10s);
        ASSERT_TRUE(st.has_value()) << c.describe();
        EXPECT_TRUE(st->is_exited()) << c.describe();
        EXPECT_EQ(st->exit_code(), code) << c.describe();
        EXPECT_EQ(st->success(), code == 0);
        EXPECT_FALSE(c.running());
        EXPECT_EQ(c.pidfd(), -1) << "the pidfd is closed once the child is reaped";
        EXPECT_EQ(c.wait(0s), st) << "a reaped child keeps its status";
    }
}

TEST_F(Spawn, ChildSeesUsAsParentAndGetsEnvironment) {
    Spawner spawner;
    Piped p = spawn_piped(spawner, {"ppid"}, false, {"SHMCTX_SPAWN_TEST=hello world"});
    const auto line = p.out->next();
    ASSERT_TRUE(line.has_value()) << p.child.describe();
    // env is unset after child_process_init consumed it.
    EXPECT_EQ(*line,
              "ppid " + std::to_string(::getpid()) + " under_parent 1 env unset extra hello world");
    const auto st = p.child.wait(10s);
    ASSERT_TRUE(st && st->success()) << p.child.describe();
}

TEST_F(Spawn, EnvironmentCanBeReplacedEntirely) {
    ASSERT_EQ(::setenv("SHMCTX_SPAWN_TEST", "inherited", 1), 0);
    Spawner spawner;
    SpawnOptions opts;
    opts.inherit_environment = false;
    Piped inherited = spawn_piped(spawner, {"ppid"});
    Piped bare = spawn_piped(spawner, {"ppid"}, false, {}, opts);
    ::unsetenv("SHMCTX_SPAWN_TEST");
    const auto a = inherited.out->next();
    const auto b = bare.out->next();
    ASSERT_TRUE(a && b) << inherited.child.describe() << " / " << bare.child.describe();
    EXPECT_NE(a->find("extra inherited"), std::string::npos) << *a;
    EXPECT_NE(b->find("under_parent 1"), std::string::npos) << *b;
    EXPECT_NE(b->find("extra unset"), std::string::npos) << *b;
    // Let both exit on their own (a SIGKILL from the destructor during an ASan child's exit
    // would orphan LeakSanitizer's tracer process).
    for (ChildProcess* c : {&inherited.child, &bare.child}) {
        const auto st = c->wait(10s);
        EXPECT_TRUE(st && st->success()) << c->describe();
    }
}

TEST_F(Spawn, KillReportsTheSignal) {
    Spawner spawner;
    Piped p = spawn_piped(spawner, {"sleep"});
    ASSERT_EQ(p.out->next(), "ready") << p.child.describe();
    EXPECT_TRUE(p.child.running());
    EXPECT_FALSE(p.child.wait(50ms).has_value()) << "still running at the deadline";
    EXPECT_TRUE(p.child.kill(SIGTERM));
    const auto st = p.child.wait(10s);
    ASSERT_TRUE(st.has_value()) << p.child.describe();
    EXPECT_TRUE(st->is_signaled()) << p.child.describe();
    EXPECT_EQ(st->signal(), SIGTERM) << p.child.describe();
    EXPECT_NE(p.child.describe().find("killed by signal 15 (SIGTERM)"), std::string::npos)
        << p.child.describe();
    EXPECT_FALSE(p.child.running());
    EXPECT_FALSE(p.child.kill(SIGKILL)) << "no signal to a reaped child";
}

// The spawner thread blocks every signal and the test ignores SIGTERM and SIGPIPE: without
// POSIX_SPAWN_SETSIGMASK / SETSIGDEF the child would inherit both.
TEST_F(Spawn, ChildStartsWithEmptyMaskAndDefaultDispositions) {
    Spawner spawner;
    ScopedDisposition term(SIGTERM, SIG_IGN);
    ScopedDisposition pipe(SIGPIPE, SIG_IGN);
    Piped p = spawn_piped(spawner, {"sigs"});
    EXPECT_EQ(p.out->next(), "blocked 0000000000000000") << p.child.describe();
    const auto ignored = p.out->next();
    ASSERT_TRUE(ignored && ignored->rfind("ignored ", 0) == 0) << p.child.describe();
    // glibc's posix_spawn leaves its own reserved signals (32 .. SIGRTMIN-1, which
    // sigfillset() excludes) at SIG_IGN; the new program's libc re-installs them as needed.
    std::uint64_t mask = std::stoull(ignored->substr(8), nullptr, 16);
    for (int sig = 32; sig < SIGRTMIN; ++sig) mask &= ~(std::uint64_t{1} << (sig - 1));
    EXPECT_EQ(mask, 0u) << *ignored << " (bit n-1 = signal n)";
    const auto st = p.child.wait(10s);
    ASSERT_TRUE(st && st->success()) << p.child.describe();
}

TEST_F(Spawn, ChildGetsOnlyStdioDescriptors) {
    Spawner spawner;
    // A descriptor without O_CLOEXEC, as careless third-party code might leave one.
    Fd leaky(::fcntl(STDERR_FILENO, F_DUPFD, 10));
    ASSERT_GE(leaky.get(), 10);
    Piped p = spawn_piped(spawner, {"fds"}, true);
    EXPECT_EQ(p.out->next(), "fds 0 1 2") << p.child.describe();
    ASSERT_TRUE(p.child.wait(10s).has_value()) << p.child.describe();

    ChildProcess c = spawner.spawn(helper(), {"sleep"});
    const int flags = ::fcntl(c.pidfd(), F_GETFD);
    ASSERT_GE(flags, 0);
    EXPECT_NE(flags & FD_CLOEXEC, 0) << "pidfds are close-on-exec";
}

TEST_F(Spawn, DestructorKillsAndReapsARunningChild) {
    Spawner spawner;
    pid_t pid = -1;
    Fd probe;
    {
        Piped p = spawn_piped(spawner, {"sleep"});
        ASSERT_EQ(p.out->next(), "ready") << p.child.describe();
        pid = p.child.pid();
        const auto st = proc_stat(pid);
        ASSERT_TRUE(st.has_value());
        EXPECT_NE(st->first, 'Z');
        probe.reset(::fcntl(p.child.pidfd(), F_DUPFD_CLOEXEC, 0));
        ASSERT_GE(probe.get(), 0);
    }  // ~ChildProcess: SIGKILL + reap
    siginfo_t si{};
    errno = 0;
    EXPECT_EQ(::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(probe.get()), &si,
                       WEXITED | WNOHANG),
              -1);
    EXPECT_EQ(errno, ECHILD) << "the child must already be reaped";
    EXPECT_FALSE(is_our_zombie(pid)) << "pid " << pid << " left as a zombie";
}

TEST_F(Spawn, MoveAssignmentReapsTheOverwrittenChild) {
    Spawner spawner;
    ChildProcess a = spawner.spawn(helper(), {"sleep"});
    const pid_t first = a.pid();
    Fd probe(::fcntl(a.pidfd(), F_DUPFD_CLOEXEC, 0));
    a = spawner.spawn(helper(), {"exit", "0"});
    siginfo_t si{};
    EXPECT_EQ(::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(probe.get()), &si,
                       WEXITED | WNOHANG),
              -1);
    EXPECT_FALSE(is_our_zombie(first));
    const auto st = a.wait(10s);
    ASSERT_TRUE(st && st->success()) << a.describe();
}

// PR_SET_PDEATHSIG follows the thread that created the child. Spawning from a thread that exits
// right after must not kill the child, because the Spawner's own thread is the creator.
TEST_F(Spawn, ChildOutlivesTheShortLivedThreadThatAskedForIt) {
    Spawner spawner;
    Piped p;
    std::atomic<pid_t> caller_tid{0};
    std::thread caller([&] {
        caller_tid.store(::gettid(), std::memory_order::relaxed);  // read after join()
        p = spawn_piped(spawner, {"sleep"}, true);
        // "ready": child_process_init has armed PDEATHSIG before this thread exits.
        ASSERT_EQ(p.out->next(), "ready") << p.child.describe();
    });
    caller.join();
    ASSERT_TRUE(p.child.valid());
    const pid_t tid = caller_tid.load(std::memory_order::relaxed);
    EXPECT_NE(tid, spawner.thread_tid());
    // join() returns before the kernel has finished the thread's exit (which is where the
    // parent-death signal would be sent); wait until the task is gone.
    const std::string task = "/proc/self/task/" + std::to_string(tid);
    ASSERT_TRUE(test::wait_until([&] { return ::access(task.c_str(), F_OK) != 0; }, 10s));
    write_line(p.in, "ping");
    EXPECT_EQ(p.out->next(), "pong") << p.child.describe();
    EXPECT_TRUE(p.child.running()) << p.child.describe();
}

// Control for the test above: the same child created by a plain posix_spawn on a thread that
// then exits is SIGKILLed. Without this, the test above could pass for the wrong reason.
TEST_F(Spawn, ControlChildOfAnExitingThreadIsKilled) {
    test::Child child;
    std::thread caller([&] {
        child = test::spawn(helper(), {"sleep"},
                            {std::string(kParentPidEnv) + "=" + std::to_string(::getpid())});
        ASSERT_EQ(child.read_line(), "ready") << child.describe();
    });
    caller.join();
    const auto st = child.wait(10s);
    ASSERT_TRUE(st.has_value()) << child.describe();
    EXPECT_TRUE(WIFSIGNALED(*st) && WTERMSIG(*st) == SIGKILL) << child.describe();
}

TEST_F(Spawn, DestroyingTheSpawnerKillsItsChildren) {
    ChildProcess c;
    {
        Spawner spawner;
        Piped p = spawn_piped(spawner, {"sleep"});
        ASSERT_EQ(p.out->next(), "ready") << p.child.describe();
        c = std::move(p.child);
    }
    const auto st = c.wait(10s);
    ASSERT_TRUE(st.has_value()) << c.describe();
    EXPECT_EQ(st->signal(), SIGKILL) << c.describe();
}

// Parent SIGKILL takes the child with it: kill the middle process, its child (our grandchild,
// spawned through the middle's own Spawner) must be gone within 1 s.
TEST_F(Spawn, ParentSigkillTakesItsChildWithIt) {
    // Orphans of our descendants are reparented to us instead of to init for this test: the
    // grandchild is then reaped here (no zombie left to an init that may not reap) and its
    // status proves how it died.
    ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
    struct ClearSubreaper {
        ~ClearSubreaper() { (void)::prctl(PR_SET_CHILD_SUBREAPER, 0); }
    } clear_subreaper;

    Spawner spawner;
    Piped middle = spawn_piped(spawner, {"grandchild"});
    const auto line = middle.out->next();
    ASSERT_TRUE(line && line->rfind("grandchild ", 0) == 0) << middle.child.describe();
    const pid_t grandchild = std::stoi(line->substr(11));
    // Not our child: pidfd_open works on any pid. The pid cannot have been reused (the
    // grandchild is alive and unreaped), and its parent is checked after opening.
    Fd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, grandchild, 0)));
    ASSERT_GE(pidfd.get(), 0) << "pidfd_open(" << grandchild << "): " << std::strerror(errno);
    const auto st = proc_stat(grandchild);
    ASSERT_TRUE(st.has_value());
    ASSERT_EQ(st->second, middle.child.pid()) << "pid " << grandchild << " is not the grandchild";
    ASSERT_NE(st->first, 'Z');

    const auto t0 = Clock::now();
    ASSERT_TRUE(middle.child.kill(SIGKILL));
    pollfd p{pidfd.get(), POLLIN, 0};
    const int rc = ::poll(&p, 1, 1000);
    const auto ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    EXPECT_EQ(rc, 1) << "grandchild " << grandchild << " still alive 1 s after its parent died";
    if (rc != 1) {  // do not leave an orphan behind a failed test
        (void)::syscall(SYS_pidfd_send_signal, pidfd.get(), SIGKILL, nullptr, 0);
    }
    std::printf("grandchild gone %.2f ms after the parent's SIGKILL\n", ms);
    const auto mst = middle.child.wait(10s);
    ASSERT_TRUE(mst.has_value()) << middle.child.describe();
    EXPECT_EQ(mst->signal(), SIGKILL) << middle.child.describe();

    // The middle is reaped, so its exit (and the reparenting of its children to us) is complete.
    siginfo_t si{};
    ASSERT_EQ(
        ::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd.get()), &si, WEXITED), 0)
        << "grandchild not reparented to us: " << std::strerror(errno);
    EXPECT_EQ(si.si_code, CLD_KILLED);
    EXPECT_EQ(si.si_status, SIGKILL) << "the grandchild must die by its PDEATHSIG";
}

TEST_F(ChildInit, ExitsWhenTheParentPidDoesNotMatch) {
    const auto expect_exit = [](const std::vector<std::string>& env, int code) {
        test::Child c = test::spawn(helper(), {"exit", "0"}, env);
        const auto st = c.wait(10s);
        ASSERT_TRUE(st.has_value()) << c.describe();
        EXPECT_TRUE(WIFEXITED(*st) && WEXITSTATUS(*st) == code) << c.describe();
    };
    const std::string var = kParentPidEnv;
    // Our own parent is not the child's parent: as if we had died and it had been reparented.
    expect_exit({var + "=" + std::to_string(::getppid())}, kParentGoneExitCode);
    expect_exit({var + "=12abc"}, kParentGoneExitCode);
    expect_exit({var + "=-5"}, kParentGoneExitCode);
    expect_exit({var + "=" + std::to_string(::getpid())}, 0);  // the real parent
}

TEST_F(ChildInit, ReportsNoParentWithoutTheVariable) {
    test::Child c = test::spawn(helper(), {"ppid"});
    const auto line = c.read_line();
    ASSERT_TRUE(line.has_value()) << c.describe();
    EXPECT_NE(line->find("under_parent 0"), std::string::npos) << *line;
}

TEST_F(Spawn, SpawnsConcurrentlyFromSeveralThreads) {
    Spawner spawner;
    constexpr std::size_t kThreads = 4;
    const int per_thread = static_cast<int>(test::scaled(25, 4));
    std::vector<std::vector<std::string>> failures(kThreads);
    std::vector<std::thread> threads;
    for (std::size_t t = 0; t < kThreads; ++t) {
        threads.emplace_back([&, t] {
            for (int i = 0; i < per_thread; ++i) {
                const int code = (static_cast<int>(t) * 61 + i) % 200;
                try {
                    ChildProcess c = spawner.spawn(helper(), {"exit", std::to_string(code)});
                    const auto st = c.wait(30s);
                    if (!st || !st->is_exited() || st->exit_code() != code) {
                        failures[t].push_back("expected exit " + std::to_string(code) + ", " +
                                              c.describe());
                    }
                } catch (const std::exception& e) {
                    failures[t].push_back(e.what());
                }
            }
        });
    }
    for (auto& th : threads) th.join();
    for (std::size_t t = 0; t < kThreads; ++t) {
        EXPECT_TRUE(failures[t].empty()) << "thread " << t << ": " << failures[t].front();
    }
}

// Requests that time out in the queue are withdrawn; those the spawner thread already took
// complete and are returned. Either way no child is left without a handle.
TEST_F(Spawn, TimedOutRequestsLeaveNoChildBehind) {
    ASSERT_TRUE(our_children().empty());
    Spawner spawner;
    SpawnOptions opts;
    opts.timeout = std::chrono::microseconds(1);
    constexpr std::size_t kThreads = 4;
    const int per_thread = static_cast<int>(test::scaled(20, 4));
    std::atomic<int> timed_out{0};
    std::atomic<int> spawned{0};
    std::vector<std::vector<std::string>> failures(kThreads);
    std::vector<std::thread> threads;
    for (std::size_t t = 0; t < kThreads; ++t) {
        threads.emplace_back([&, t] {
            for (int i = 0; i < per_thread; ++i) {
                try {
                    ChildProcess c = spawner.spawn(helper(), {"exit", "7"}, {}, opts);
                    spawned.fetch_add(1, std::memory_order::relaxed);  // counter only
                    const auto st = c.wait(30s);
                    if (!st || st->exit_code() != 7) failures[t].push_back(c.describe());
                } catch (const SpawnError& e) {
                    if (e.sys_errno() == ETIMEDOUT) {
                        timed_out.fetch_add(1, std::memory_order::relaxed);  // counter only
                    } else {
                        failures[t].push_back(e.what());
                    }
                }
            }
        });
    }
    for (auto& th : threads) th.join();
    for (std::size_t t = 0; t < kThreads; ++t) {
        EXPECT_TRUE(failures[t].empty()) << "thread " << t << ": " << failures[t].front();
    }
    EXPECT_EQ(spawned.load(std::memory_order::relaxed) + timed_out.load(std::memory_order::relaxed),
              static_cast<int>(kThreads) * per_thread);
    const auto left = our_children();
    EXPECT_TRUE(left.empty()) << left.size() << " child(ren) without a handle, e.g. pid "
                              << left.front();
    std::printf("%d spawned, %d timed out in the queue\n", spawned.load(), timed_out.load());
}

TEST_F(Spawn, MissingExecutableIsAnError) {
    Spawner spawner;
    try {
        (void)spawner.spawn("/nonexistent/shmctx-no-such-binary");
        FAIL() << "spawned a missing executable";
    } catch (const SpawnError& e) {
        EXPECT_EQ(e.sys_errno(), ENOENT) << e.what();
        EXPECT_NE(std::string(e.what()).find("posix_spawn"), std::string::npos) << e.what();
    }
}

TEST_F(Spawn, RejectsBadEnvironmentEntries) {
    Spawner spawner;
    for (const std::string& bad : {std::string(kParentPidEnv) + "=1", std::string("NOEQUALS")}) {
        try {
            (void)spawner.spawn(helper(), {"exit", "0"}, {bad});
            FAIL() << "accepted env entry " << bad;
        } catch (const SpawnError& e) {
            EXPECT_EQ(e.sys_errno(), EINVAL) << e.what();
        }
    }
}

TEST_F(Spawn, RefusesWhenSigchldIsIgnored) {
    Spawner spawner;
    ScopedDisposition ignore(SIGCHLD, SIG_IGN);
    try {
        (void)spawner.spawn(helper(), {"exit", "0"});
        FAIL() << "spawned with SIGCHLD ignored";
    } catch (const SpawnError& e) {
        EXPECT_EQ(e.sys_errno(), EINVAL) << e.what();
    }
}

TEST(ExitStatus, Describes) {
    EXPECT_EQ(ExitStatus::exited(3).describe(), "exited with 3");
    EXPECT_EQ(ExitStatus::killed(SIGKILL, false).describe(), "killed by signal 9 (SIGKILL)");
    EXPECT_EQ(ExitStatus::killed(SIGSEGV, true).describe(),
              "killed by signal 11 (SIGSEGV), core dumped");
}

}  // namespace
}  // namespace shmctx
