// Helper for spawn_xproc_test: a child started by shmctx::Spawner (or test::spawn).
// Every mode calls shmctx::child_process_init() first, as a real child actor would.
//   exit N        exit with code N
//   sleep         print "ready", answer "ping" lines on stdin with "pong"; at EOF block until
//                 killed
//   ppid          print "ppid <getppid()> under_parent <0|1> env <SHMCTX_PARENT_PID|unset>
//                 extra <SHMCTX_SPAWN_TEST|unset>"
//   sigs          print "blocked <hex>" and "ignored <hex>" (SigBlk/SigIgn of /proc/self/status)
//   fds           print "fds <n> <n> ..." (open descriptors, ascending)
//   grandchild    spawn this binary in "sleep" mode through its own Spawner, wait for its
//                 "ready", print "grandchild <pid>", block until killed
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "shmctx/spawner.hpp"

namespace {

[[noreturn]] void block_forever() {
    for (;;) ::pause();  // only a signal ends us
}

void say(const std::string& line) {
    const std::string out = line + "\n";
    std::string_view rest = out;
    while (!rest.empty()) {
        const ssize_t n = ::write(STDOUT_FILENO, rest.data(), rest.size());
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) std::_Exit(3);
        rest.remove_prefix(static_cast<std::size_t>(n));
    }
}

/// One line from `fd` (without '\n'); empty string on EOF, error or after 10 s.
std::string read_line(int fd) {
    std::string line;
    char c = 0;
    for (;;) {
        pollfd p{fd, POLLIN, 0};
        const int rc = ::poll(&p, 1, 10'000);
        if (rc < 0 && errno == EINTR) continue;
        if (rc <= 0) return {};
        const ssize_t n = ::read(fd, &c, 1);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return {};
        if (c == '\n') return line;
        line.push_back(c);
    }
}

const char* env_or_unset(const char* name) {
    const char* v = std::getenv(name);
    return v != nullptr ? v : "unset";
}

std::string status_field(const char* key) {
    std::ifstream in("/proc/self/status");
    std::string line;
    const std::string prefix = std::string(key) + ":";
    while (std::getline(in, line)) {
        if (line.rfind(prefix, 0) == 0) {
            const auto pos = line.find_first_not_of(" \t", prefix.size());
            return pos == std::string::npos ? std::string() : line.substr(pos);
        }
    }
    return "missing";
}

int sleep_mode() {
    say("ready");
    for (;;) {
        const std::string line = read_line(STDIN_FILENO);
        if (line.empty()) block_forever();
        if (line == "ping") say("pong");
    }
}

int grandchild_mode(const char* self) {
    shmctx::Spawner spawner;
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) return 4;
    const int devnull = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (devnull < 0) return 4;
    shmctx::SpawnOptions opts;
    opts.stdin_fd = devnull;
    opts.stdout_fd = p[1];
    shmctx::ChildProcess grandchild = spawner.spawn(self, {"sleep"}, {}, opts);
    ::close(p[1]);
    ::close(devnull);
    // Its "ready" means it has armed PDEATHSIG: the test's kill cannot race its start.
    if (read_line(p[0]) != "ready") return 5;
    say("grandchild " + std::to_string(grandchild.pid()));
    block_forever();
}

}  // namespace

int main(int argc, char** argv) {
    const bool under_parent = shmctx::child_process_init();
    if (argc < 2) return 2;
    const std::string_view mode = argv[1];
    if (mode == "exit" && argc == 3) return std::atoi(argv[2]);
    if (mode == "sleep") return sleep_mode();
    if (mode == "ppid") {
        say("ppid " + std::to_string(::getppid()) + " under_parent " +
            std::to_string(under_parent ? 1 : 0) + " env " + env_or_unset("SHMCTX_PARENT_PID") +
            " extra " + env_or_unset("SHMCTX_SPAWN_TEST"));
        return 0;
    }
    if (mode == "sigs") {
        say("blocked " + status_field("SigBlk"));
        say("ignored " + status_field("SigIgn"));
        return 0;
    }
    if (mode == "fds") {
        DIR* dir = ::opendir("/proc/self/fd");
        if (dir == nullptr) return 4;
        std::vector<int> fds;
        while (const dirent* e = ::readdir(dir)) {
            if (e->d_name[0] == '.') continue;
            const int fd = std::atoi(e->d_name);
            if (fd != ::dirfd(dir)) fds.push_back(fd);
        }
        ::closedir(dir);
        std::sort(fds.begin(), fds.end());
        std::string line = "fds";
        for (const int fd : fds) line += " " + std::to_string(fd);
        say(line);
        return 0;
    }
    if (mode == "grandchild") return grandchild_mode(argv[0]);
    return 2;
}
