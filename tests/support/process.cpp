#include "process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <utility>

extern char** environ;

namespace shmctx::test {

namespace {
int poll_ms(const Deadline& d) {
    if (d.is_infinite()) return -1;
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(d.remaining()).count();
    return static_cast<int>(std::min<long long>(ms + 1, INT_MAX));
}
}  // namespace

Child::Child(Child&& other) noexcept { *this = std::move(other); }

Child& Child::operator=(Child&& other) noexcept {
    if (this != &other) {
        reap_and_close();  // not this->~Child(): that would also destroy buffer_ and status_
        pid_ = std::exchange(other.pid_, -1);
        pidfd_ = std::exchange(other.pidfd_, -1);
        out_ = std::exchange(other.out_, -1);
        in_ = std::exchange(other.in_, -1);
        buffer_ = std::move(other.buffer_);
        status_ = std::exchange(other.status_, std::nullopt);
    }
    return *this;
}

Child::~Child() { reap_and_close(); }

void Child::reap_and_close() noexcept {
    if (pid_ > 0 && !status_) {
        ::kill(pid_, SIGKILL);
        int st = 0;
        while (::waitpid(pid_, &st, 0) < 0 && errno == EINTR) {
        }
    }
    close_fds();
    pid_ = -1;
}

void Child::close_fds() noexcept {
    for (int* fd : {&pidfd_, &out_, &in_}) {
        if (*fd >= 0) ::close(*fd);
        *fd = -1;
    }
}

std::optional<std::string> Child::read_line(Deadline deadline) {
    for (;;) {
        if (const auto nl = buffer_.find('\n'); nl != std::string::npos) {
            std::string line = buffer_.substr(0, nl);
            buffer_.erase(0, nl + 1);
            return line;
        }
        if (out_ < 0) return std::nullopt;
        pollfd p{out_, POLLIN, 0};
        const int rc = ::poll(&p, 1, poll_ms(deadline));
        if (rc < 0 && errno == EINTR) continue;
        if (rc <= 0) return std::nullopt;
        char buf[4096];
        const ssize_t n = ::read(out_, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return std::nullopt;
        buffer_.append(buf, static_cast<std::size_t>(n));
    }
}

bool Child::expect_line(std::string_view line, Deadline deadline) {
    while (auto got = read_line(deadline)) {
        if (*got == line) return true;
    }
    return false;
}

void Child::write(std::string_view text) {
    while (!text.empty()) {
        const ssize_t n = ::write(in_, text.data(), text.size());
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) throw std::runtime_error("write to child failed");
        text.remove_prefix(static_cast<std::size_t>(n));
    }
}

void Child::kill(int sig) const {
    if (pid_ > 0 && !status_) ::kill(pid_, sig);
}

std::optional<int> Child::wait(Deadline deadline) {
    if (status_) return status_;
    if (pid_ <= 0) return std::nullopt;
    for (;;) {
        pollfd p{pidfd_, POLLIN, 0};
        const int rc = ::poll(&p, 1, poll_ms(deadline));
        if (rc < 0 && errno == EINTR) continue;
        if (rc <= 0) return std::nullopt;
        int st = 0;
        if (::waitpid(pid_, &st, 0) == pid_) {
            status_ = st;
            return status_;
        }
        if (errno != EINTR) return std::nullopt;
    }
}

std::string Child::describe() const {
    if (!status_) return pid_ > 0 ? "running (pid " + std::to_string(pid_) + ")" : "not started";
    if (WIFEXITED(*status_)) return "exited with " + std::to_string(WEXITSTATUS(*status_));
    if (WIFSIGNALED(*status_)) return "killed by signal " + std::to_string(WTERMSIG(*status_));
    return "status " + std::to_string(*status_);
}

char thread_state(pid_t tid) {
    std::ifstream stat("/proc/self/task/" + std::to_string(tid) + "/stat");
    std::string line;
    std::getline(stat, line);
    // The state follows the command name, which may itself hold ") ": take the last ')'.
    const auto paren = line.rfind(')');
    return paren == std::string::npos || paren + 2 >= line.size() ? '?' : line[paren + 2];
}

pid_t current_tid() { return static_cast<pid_t>(::syscall(SYS_gettid)); }

std::string sibling_binary(std::string_view name) {
    char buf[PATH_MAX];
    const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n <= 0) throw std::runtime_error("readlink /proc/self/exe failed");
    std::string self(buf, static_cast<std::size_t>(n));
    return self.substr(0, self.rfind('/') + 1) + std::string(name);
}

Child spawn(const std::string& exe, const std::vector<std::string>& args,
            const std::vector<std::string>& env) {
    const std::string path = exe.find('/') == std::string::npos ? sibling_binary(exe) : exe;
    int out_pipe[2];
    int in_pipe[2];
    if (::pipe2(out_pipe, O_CLOEXEC) != 0 || ::pipe2(in_pipe, O_CLOEXEC) != 0) {
        throw std::runtime_error("pipe2 failed");
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, out_pipe[1], STDOUT_FILENO);
    posix_spawn_file_actions_adddup2(&fa, in_pipe[0], STDIN_FILENO);

    std::vector<std::string> argv_s{path};
    argv_s.insert(argv_s.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : argv_s) argv.push_back(a.data());
    argv.push_back(nullptr);
    std::vector<std::string> env_s;
    for (char** e = environ; *e != nullptr; ++e) env_s.emplace_back(*e);
    env_s.insert(env_s.end(), env.begin(), env.end());
    std::vector<char*> envp;
    for (auto& e : env_s) envp.push_back(e.data());
    envp.push_back(nullptr);

    pid_t pid = -1;
    const int rc = ::posix_spawn(&pid, path.c_str(), &fa, nullptr, argv.data(), envp.data());
    posix_spawn_file_actions_destroy(&fa);
    ::close(out_pipe[1]);
    ::close(in_pipe[0]);
    if (rc != 0) {
        ::close(out_pipe[0]);
        ::close(in_pipe[1]);
        throw std::runtime_error("posix_spawn " + path + ": " + std::strerror(rc));
    }
    const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
    Child child(pid, pidfd, out_pipe[0]);
    child.set_stdin(in_pipe[1]);
    return child;
}

double test_scale() {
    const char* env = std::getenv("SHMCTX_TEST_SCALE");
    if (env == nullptr || *env == '\0') return 1.0;
    const double v = std::strtod(env, nullptr);
    return v > 0 ? v : 1.0;
}

std::size_t scaled(std::size_t n, std::size_t minimum) {
    const auto v = static_cast<std::size_t>(static_cast<double>(n) * test_scale());
    return std::max(v, minimum);
}

std::string unique_ns(std::string_view tag) {
    static std::atomic<unsigned> counter{0};
    // relaxed: uniqueness only.
    const unsigned n = counter.fetch_add(1, std::memory_order::relaxed);
    std::string ns =
        "test-" + std::to_string(::getpid()) + "-" + std::string(tag) + "-" + std::to_string(n);
    if (ns.size() > 48) ns.resize(48);
    return ns;
}

}  // namespace shmctx::test
