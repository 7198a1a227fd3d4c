// The actor tests' server process (actor_server.hpp).
#include "actor_server.hpp"

#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <exception>
#include <iostream>
#include <stdexcept>
#include <string>

#include "process.hpp"
#include "shmctx/shm/actor_file.hpp"
#include "shmctx/shm/names.hpp"

namespace shmctx::bench {

using namespace std::chrono_literals;

int actor_server_main(std::span<const std::string_view> args, std::string_view what,
                      const std::function<void(Actor&)>& expose) {
    std::string ns, name;
    int cpu = -1;
    try {
        ActorOptions o;
        for (std::size_t i = 2; i + 1 < args.size(); i += 2) {
            if (args[i] == "--ns") {
                ns = std::string(args[i + 1]);
            } else if (args[i] == "--name") {
                name = std::string(args[i + 1]);
            } else if (args[i] == "--ring-bytes") {
                o.data_ring_bytes = static_cast<std::size_t>(std::stoull(std::string(args[i + 1])));
            } else if (args[i] == "--cpu") {
                cpu = std::stoi(std::string(args[i + 1]));
            } else {
                throw std::invalid_argument("unknown argument " + std::string(args[i]));
            }
        }
        if (ns.empty() || name.empty()) throw std::invalid_argument("--ns and --name required");
        // Die with the parent: a SIGKILLed benchmark must not leave its server behind.
        if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || ::getppid() == 1)
            throw std::runtime_error("parent already gone");
        o.ns = ns;
        pin_to(cpu);  // before the actor exists: every thread it starts inherits the CPU
        Actor actor(name, o);
        expose(actor);
        std::cout << "ready" << std::endl;
        std::string line;
        while (std::getline(std::cin, line)) {
            if (line == "quit") break;
        }
        return 0;  // ~Actor: orderly shutdown, our shared objects removed
    } catch (const std::exception& e) {
        std::fprintf(stderr, "%.*s (%s): FAILED: %s\n", static_cast<int>(what.size()), what.data(),
                     name.c_str(), e.what());
        return 3;
    }
}

void with_actor_server(std::string_view role, const std::string& ns, std::size_t ring_bytes,
                       std::ostream& progress, const std::function<void(Portal&)>& body,
                       int client_cpu, int server_cpu) {
    const std::string server_name = std::string(role);
    const auto measure = [&] {
        Peer server = Peer::spawn({"--role", std::string(role), "--ns", ns, "--name", server_name,
                                   "--ring-bytes", std::to_string(ring_bytes), "--cpu",
                                   std::to_string(server_cpu)});
        if (const std::string line = server.read_line(Deadline(10s)); line != "ready")
            throw std::runtime_error(server_name + ": expected \"ready\", got \"" + line + "\"");
        try {
            ActorOptions o;
            o.ns = ns;
            o.data_ring_bytes = ring_bytes;
            const AffinityScope pinned(client_cpu);  // outlives the client and its threads
            Actor client(server_name + "-client", o);
            Portal portal = client.connect(server_name, 10s);
            body(portal);
        } catch (const std::exception& e) {
            (void)server.wait_exit(Deadline(200ms));
            throw std::runtime_error(std::string(e.what()) + " [" + server_name + " " +
                                     server.describe() + "]");
        }
        server.write_line("quit");
        server.wait_success(Deadline(10s));
    };
    try {
        measure();
    } catch (...) {
        // ~Peer has killed and reaped the server by now; a dead server cannot remove its own
        // objects: reclaim them.
        try {
            (void)shm::reclaim_stale(shm::Names(ns));
        } catch (const std::exception& e) {
            progress << server_name << ": reclaiming the test's objects: " << e.what() << "\n";
        }
        throw;
    }
}

}  // namespace shmctx::bench
