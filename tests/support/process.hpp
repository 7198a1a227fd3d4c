// Test support: helper processes, unique namespaces, deadlines, the scale knob.
// Cross-process tests posix_spawn a helper binary (never fork a threaded gtest).
// Thread-safety: Child is single thread; free functions are thread-safe.
#pragma once

#include <sys/types.h>
#include <time.h>

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "shmctx/deadline.hpp"

namespace shmctx::test {

/// A spawned helper process. Its stdout is a pipe read with read_line(); its stderr is ours, so
/// a helper's complaints land in the test log. The destructor SIGKILLs and reaps it if needed.
class Child {
public:
    Child() = default;
    Child(pid_t pid, int pidfd, int stdout_fd) : pid_(pid), pidfd_(pidfd), out_(stdout_fd) {}
    Child(Child&& other) noexcept;
    Child& operator=(Child&& other) noexcept;
    ~Child();

    pid_t pid() const noexcept { return pid_; }
    int pidfd() const noexcept { return pidfd_; }
    bool running() const noexcept { return pid_ > 0 && !status_; }

    /// The next line the child printed on stdout (without '\n'); nullopt on EOF or deadline.
    std::optional<std::string> read_line(Deadline deadline = std::chrono::seconds(10));
    /// Reads lines until one equals `line`; false on EOF or deadline.
    bool expect_line(std::string_view line, Deadline deadline = std::chrono::seconds(10));
    /// Writes `text` to the child's stdin (a pipe).
    void write(std::string_view text);
    void kill(int sig) const;
    /// Reaps the child; its wait status (WIFEXITED...) or nullopt if still running at deadline.
    std::optional<int> wait(Deadline deadline = std::chrono::seconds(10));
    /// "exited with 3" / "killed by signal 9" / "running".
    std::string describe() const;

    void set_stdin(int fd) noexcept { in_ = fd; }

private:
    void close_fds() noexcept;
    /// SIGKILLs and reaps a still running child, closes the fds.
    void reap_and_close() noexcept;
    pid_t pid_ = -1;
    int pidfd_ = -1;
    int out_ = -1;
    int in_ = -1;
    std::string buffer_;
    std::optional<int> status_;
};

/// Spawns `exe` (a path, or a name in the test binaries' directory) with `args`, our environment
/// plus `env` ("NAME=value"). Pipes for stdin and stdout.
Child spawn(const std::string& exe, const std::vector<std::string>& args,
            const std::vector<std::string>& env = {});

/// Path of a binary that sits next to the running test binary.
std::string sibling_binary(std::string_view name);

/// SHMCTX_TEST_SCALE (default 1.0; sanitizer runs use less).
double test_scale();
/// max(minimum, n * test_scale()).
std::size_t scaled(std::size_t n, std::size_t minimum = 1);

/// Kernel scheduling state of one of our threads ('R', 'S', ...), or '?': a test waits for a
/// thread to sleep in a blocking call (state 'S') before it acts on it.
char thread_state(pid_t tid);
/// The calling thread's kernel thread id.
pid_t current_tid();

/// A namespace no other test (or parallel ctest process) uses: "test-<pid>-<tag>-<n>".
std::string unique_ns(std::string_view tag);

/// Polls `pred` until true or the deadline; for conditions with no wake-up to wait on.
template <class Pred>
bool wait_until(Pred&& pred, Deadline deadline = std::chrono::seconds(10)) {
    for (;;) {
        if (pred()) return true;
        if (deadline.expired()) return false;
        struct timespec ts {
            0, 200'000
        };
        ::nanosleep(&ts, nullptr);  // poll interval, not synchronisation
    }
}

}  // namespace shmctx::test
