// Helper peer for the actor-file, liveness and reclaim tests (actor_xproc_test.cpp), spawned
// with posix_spawn. Prints its state on stdout, one line each. Modes:
//
//   claim <ns> <name> [gate]   [gate: wait for a "go" line on stdin first] claim the name and
//                              publish the actor segment (LocalActorRecord), run a liveness
//                              watcher beating our heartbeat, print "ready <uuid> <pid>" or
//                              "taken"; then serve stdin until "quit" or EOF, and tear down in
//                              order (exit 0). SHMCTX_FAULT=actor.before_publish=stall stalls
//                              with the segment built but unpublished; =corrupt publishes
//                              it with the next layout version.
//   sleep                      print "ready <pid>", then wait for stdin EOF (an unrelated live
//                              process whose pid a test can forge into a header)
#include <unistd.h>

#include <cstdio>
#include <exception>
#include <string>

#include "shmctx/errors.hpp"
#include "shmctx/shm/actor_file.hpp"
#include "shmctx/shm/liveness.hpp"

namespace {

using namespace shmctx;

void say(const std::string& line) {
    std::fputs((line + "\n").c_str(), stdout);
    std::fflush(stdout);
}

/// The next stdin line without '\n'; false on EOF.
bool read_line(std::string& line) {
    line.clear();
    for (;;) {
        const int c = std::fgetc(stdin);
        if (c == EOF) return !line.empty();
        if (c == '\n') return true;
        line.push_back(static_cast<char>(c));
    }
}

int claim(const std::string& ns, const std::string& name, bool gate) {
    std::string line;
    if (gate) {
        while (read_line(line) && line != "go") {
        }
    }
    const shm::Names names(ns);
    try {
        shm::LocalActorRecord record(names, name);
        shm::LivenessWatcher watcher(&record.segment().heartbeat(),
                                     [](const Uuid&, shm::LivenessEvent) {});
        say("ready " + record.uuid().to_hex() + " " + std::to_string(::getpid()));
        while (read_line(line) && line != "quit") {
        }
        return 0;
    } catch (const NameTaken&) {
        say("taken");
        return 0;
    }
}

int sleep_mode() {
    say("ready " + std::to_string(::getpid()));
    std::string line;
    while (read_line(line)) {
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        const std::string mode = argc > 1 ? argv[1] : "";
        if (mode == "claim" && (argc == 4 || argc == 5)) {
            return claim(argv[2], argv[3], argc == 5 && std::string(argv[4]) == "gate");
        }
        if (mode == "sleep" && argc == 2) return sleep_mode();
        std::fprintf(stderr, "actor_peer: bad arguments (see the file comment)\n");
        return 64;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "actor_peer: %s\n", e.what());
        say(std::string("error ") + e.what());
        return 1;
    }
}
