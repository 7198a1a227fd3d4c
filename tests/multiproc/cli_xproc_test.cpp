// The `shmctx` CLI (tools/shmctx; docs/protocol.d/cli.md) against real actor processes: actor_peer
// helpers (a name claimed and a segment published, heartbeat beating) and, for links and ring
// counters, an actor_node linked to an Actor in this process. The CLI itself is run with
// posix_spawn and its stdout read back.
//
// Covered: `clean --dry-run` lists a killed actor's objects and removes nothing, `clean` removes
// them all and a second one finds nothing; a live actor's objects survive `clean`; `ls` shows
// live actors with their pid, a stopped one as unresponsive (--sample), a killed one as dead, a
// corrupt segment or arena as a problem line; `ls --json` parses and carries the ring counters
// of an open context's stream; usage errors exit 2.
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "namespace_guard.hpp"
#include "process.hpp"
#include "shmctx/actor.hpp"
#include "shmctx/context.hpp"
#include "shmctx/payload.hpp"
#include "shmctx/shm/actor_segment.hpp"
#include "shmctx/shm/arena.hpp"
#include "shmctx/shm/names.hpp"
#include "shmctx/shm/ring.hpp"
#include "shmctx/shm/segment.hpp"
#include "shmctx/shm/wake.hpp"
#include "shmctx/uuid.hpp"

#ifndef SHMCTX_CLI_PATH
#error "SHMCTX_CLI_PATH must name the shmctx CLI binary (tests/multiproc/CMakeLists.txt)"
#endif

namespace shmctx {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::UnorderedElementsAreArray;

/// Bound of every wait on a condition: generous, since sanitizer builds run many times slower.
constexpr auto kDeadline = 20s;

// ---- a tiny JSON parser: enough to prove the output parses and to read fields ----

struct Json {
    enum class Kind { null, boolean, number, string, array, object } kind = Kind::null;
    bool boolean = false;
    std::string text;  ///< a string's value, or a number's literal text
    std::vector<Json> items;
    std::vector<std::pair<std::string, Json>> members;

    const Json& operator[](std::string_view key) const {
        for (const auto& [k, v] : members) {
            if (k == key) return v;
        }
        throw std::runtime_error("no member '" + std::string(key) + "'");
    }
    std::uint64_t u64() const {
        std::uint64_t v = 0;
        const auto r = std::from_chars(text.data(), text.data() + text.size(), v);
        if (kind != Kind::number || r.ec != std::errc() || r.ptr != text.data() + text.size()) {
            throw std::runtime_error("not an unsigned integer: '" + text + "'");
        }
        return v;
    }
    bool is_null() const { return kind == Kind::null; }
};

class JsonParser {
public:
    explicit JsonParser(std::string_view s) : s_(s) {}
    /// The one value in the input (whitespace around it allowed); throws on any syntax error.
    Json parse_document() {
        Json v = value();
        skip_ws();
        if (i_ != s_.size()) fail("trailing characters");
        return v;
    }

private:
    [[noreturn]] void fail(const std::string& what) const {
        throw std::runtime_error("JSON: " + what + " at offset " + std::to_string(i_));
    }
    void skip_ws() {
        while (i_ < s_.size() &&
               (s_[i_] == ' ' || s_[i_] == '\n' || s_[i_] == '\t' || s_[i_] == '\r')) {
            ++i_;
        }
    }
    bool eat(char c) {
        skip_ws();
        if (i_ < s_.size() && s_[i_] == c) {
            ++i_;
            return true;
        }
        return false;
    }
    void expect(char c) {
        if (!eat(c)) fail(std::string("expected '") + c + "'");
    }
    bool literal(std::string_view word) {
        if (s_.substr(i_, word.size()) != word) return false;
        i_ += word.size();
        return true;
    }
    std::string string() {
        expect('"');
        std::string out;
        while (i_ < s_.size() && s_[i_] != '"') {
            const char c = s_[i_++];
            if (static_cast<unsigned char>(c) < 0x20) fail("control character in string");
            if (c != '\\') {
                out.push_back(c);
                continue;
            }
            if (i_ >= s_.size()) fail("truncated escape");
            const char e = s_[i_++];
            switch (e) {
                case '"':
                case '\\':
                case '/':
                    out.push_back(e);
                    break;
                case 'n':
                    out.push_back('\n');
                    break;
                case 't':
                    out.push_back('\t');
                    break;
                case 'r':
                    out.push_back('\r');
                    break;
                case 'b':
                    out.push_back('\b');
                    break;
                case 'f':
                    out.push_back('\f');
                    break;
                case 'u': {
                    unsigned v = 0;
                    const auto r = std::from_chars(s_.data() + i_,
                                                   s_.data() + std::min(i_ + 4, s_.size()), v, 16);
                    if (r.ec != std::errc() || r.ptr != s_.data() + i_ + 4) fail("bad \\u escape");
                    i_ += 4;
                    out.push_back(v < 0x80 ? static_cast<char>(v) : '?');
                    break;
                }
                default:
                    fail("bad escape");
            }
        }
        if (i_ >= s_.size()) fail("unterminated string");
        ++i_;
        return out;
    }
    Json value() {
        skip_ws();
        if (i_ >= s_.size()) fail("unexpected end");
        Json v;
        const char c = s_[i_];
        if (c == '{') {
            v.kind = Json::Kind::object;
            ++i_;
            if (eat('}')) return v;
            do {
                skip_ws();
                std::string key = string();
                expect(':');
                v.members.emplace_back(std::move(key), value());
            } while (eat(','));
            expect('}');
        } else if (c == '[') {
            v.kind = Json::Kind::array;
            ++i_;
            if (eat(']')) return v;
            do {
                v.items.push_back(value());
            } while (eat(','));
            expect(']');
        } else if (c == '"') {
            v.kind = Json::Kind::string;
            v.text = string();
        } else if (literal("null")) {
            v.kind = Json::Kind::null;
        } else if (literal("true")) {
            v.kind = Json::Kind::boolean;
            v.boolean = true;
        } else if (literal("false")) {
            v.kind = Json::Kind::boolean;
        } else if (c == '-' || (c >= '0' && c <= '9')) {
            v.kind = Json::Kind::number;
            const std::size_t start = i_;
            if (s_[i_] == '-') ++i_;
            while (i_ < s_.size() && std::strchr("0123456789.eE+-", s_[i_]) != nullptr) ++i_;
            v.text = std::string(s_.substr(start, i_ - start));
        } else {
            fail(std::string("unexpected '") + c + "'");
        }
        return v;
    }

    std::string_view s_;
    std::size_t i_ = 0;
};

// ---- running the CLI ----

struct CliRun {
    std::optional<int> status;
    std::vector<std::string> lines;
    std::string describe;
    std::string out() const {
        std::string all;
        for (const auto& l : lines) all += l + "\n";
        return all;
    }
    bool exited_with(int code) const {
        return status && WIFEXITED(*status) && WEXITSTATUS(*status) == code;
    }
    bool has_line(std::string_view line) const {
        return std::find(lines.begin(), lines.end(), line) != lines.end();
    }
};

CliRun run_cli(const std::vector<std::string>& args) {
    test::Child child = test::spawn(SHMCTX_CLI_PATH, args);
    CliRun run;
    const Deadline deadline(kDeadline);
    while (auto line = child.read_line(deadline)) run.lines.push_back(std::move(*line));
    run.status = child.wait(deadline);
    run.describe = "shmctx";
    for (const auto& a : args) run.describe += " " + a;
    run.describe += " (" + child.describe() + "):\n" + run.out();
    return run;
}

/// The row of actor `name` in `ls --json` output.
const Json& row_of(const Json& rows, std::string_view name) {
    for (const auto& r : rows.items) {
        if (r["name"].text == name) return r;
    }
    throw std::runtime_error("no row for actor '" + std::string(name) + "'");
}

/// A started actor_peer ("claim" mode): its uuid and pid.
struct PeerActorProcess {
    test::Child child;
    Uuid uuid;
    pid_t pid = 0;
};

class CliXproc : public ::testing::Test {
protected:
    const shm::Names& names() const { return guard_.names; }
    std::string ns() const { return guard_.names.ns(); }

    PeerActorProcess start_peer(const std::string& name) {
        PeerActorProcess p{test::spawn("actor_peer", {"claim", ns(), name}), {}, 0};
        const auto line = p.child.read_line(kDeadline);
        std::istringstream in(line.value_or(""));
        std::string word;
        std::string hex;
        in >> word >> hex >> p.pid;
        if (word != "ready" || !Uuid::parse_hex(hex, p.uuid)) {
            ADD_FAILURE() << "actor_peer " << name << " did not start: '" << line.value_or("EOF")
                          << "', " << p.child.describe();
        }
        return p;
    }
    static void kill_peer(PeerActorProcess& p) {
        p.child.kill(SIGKILL);
        const auto status = p.child.wait(kDeadline);
        ASSERT_TRUE(status && WIFSIGNALED(*status)) << p.child.describe();
    }
    static void quit_peer(PeerActorProcess& p) {
        p.child.write("quit\n");
        const auto status = p.child.wait(kDeadline);
        EXPECT_TRUE(status && WIFEXITED(*status) && WEXITSTATUS(*status) == 0)
            << p.child.describe();
    }
    /// A plain object under `name` (a forged leftover); left in place when this returns.
    static void forge(const std::string& name, std::byte fill = std::byte{0}) {
        shm::Segment seg = shm::Segment::create(name, 8192);
        std::fill(seg.data(), seg.data() + seg.size(), fill);
    }

    void TearDown() override {
        EXPECT_THAT(test::all_objects(guard_.names), IsEmpty())
            << "shared-memory objects left in namespace " << ns();
    }

private:
    test::NamespaceGuard guard_{"cli"};
};

// (a) A killed actor's actor file, segment, tmp segment and arena: the dry run names each and
// removes nothing; clean removes all of them; a second clean finds nothing.
TEST_F(CliXproc, CleanReclaimsAKilledActorAndDryRunRemovesNothing) {
    PeerActorProcess dead = start_peer("victim");
    ASSERT_TRUE(dead.child.running());
    // What a crash mid-build and an open link leave besides the actor file and segment.
    forge(names().actor_segment_tmp("victim", Uuid::random()));
    forge(names().arena(dead.uuid, Uuid::random()));
    kill_peer(dead);
    const std::vector<std::string> before = test::all_objects(names());
    ASSERT_EQ(before.size(), 4U);

    const CliRun dry = run_cli({"clean", "--dry-run", "--ns", ns()});
    ASSERT_TRUE(dry.exited_with(0)) << dry.describe;
    for (const auto& object : before) {
        EXPECT_TRUE(dry.has_line("would remove " + object)) << object << "\n" << dry.describe;
    }
    EXPECT_TRUE(dry.has_line("would remove 4 objects of 1 dead actor in 1 namespace"))
        << dry.describe;
    EXPECT_THAT(test::all_objects(names()), UnorderedElementsAreArray(before))
        << "a dry run removed something";

    // --all-ns finds this namespace among the others in /dev/shm (read-only: a dry run).
    const CliRun all = run_cli({"clean", "--dry-run", "--all-ns", "--json"});
    ASSERT_TRUE(all.exited_with(0)) << all.describe;
    const Json report = JsonParser(all.out()).parse_document();
    bool found = false;
    for (const auto& n : report["namespaces"].items) {
        if (n["ns"].text != ns()) continue;
        found = true;
        std::vector<std::string> listed;
        for (const auto& o : n["removed"].items) listed.push_back(o.text);
        EXPECT_THAT(listed, UnorderedElementsAreArray(before)) << all.describe;
    }
    EXPECT_TRUE(found) << all.describe;
    const CliRun ls_all = run_cli({"ls", "--all-ns", "--json"});
    ASSERT_TRUE(ls_all.exited_with(0)) << ls_all.describe;
    const Json rows = JsonParser(ls_all.out()).parse_document();
    EXPECT_EQ(std::count_if(rows.items.begin(), rows.items.end(),
                            [&](const Json& r) {
                                return r["ns"].text == ns() && r["name"].text == "victim" &&
                                       r["state"].text == "dead";
                            }),
              1)
        << ls_all.describe;
    EXPECT_THAT(test::all_objects(names()), UnorderedElementsAreArray(before));

    const CliRun clean = run_cli({"clean", "--ns", ns()});
    ASSERT_TRUE(clean.exited_with(0)) << clean.describe;
    for (const auto& object : before) {
        EXPECT_TRUE(clean.has_line("removed " + object)) << object << "\n" << clean.describe;
    }
    EXPECT_TRUE(clean.has_line("removed 4 objects of 1 dead actor in 1 namespace"))
        << clean.describe;
    EXPECT_THAT(test::all_objects(names()), IsEmpty());

    const CliRun again = run_cli({"clean", "--ns", ns()});
    ASSERT_TRUE(again.exited_with(0)) << again.describe;
    EXPECT_EQ(again.lines,
              std::vector<std::string>{"removed 0 objects of 0 dead actors in 1 namespace"})
        << again.describe;
}

// (b) Next to a killed actor, a live actor's actor file, segment and arena survive clean, and
// ls shows it live with its pid (and its corrupt arena as a problem, not a crash).
TEST_F(CliXproc, CleanKeepsALiveActorsObjectsAndLsShowsItLive) {
    PeerActorProcess live = start_peer("alive");
    PeerActorProcess dead = start_peer("gone");
    ASSERT_TRUE(live.child.running() && dead.child.running());
    const std::string live_arena = names().arena(live.uuid, Uuid::random());
    forge(live_arena, std::byte{0xAB});  // not a valid arena: ls must say so
    kill_peer(dead);

    const CliRun clean = run_cli({"clean", "--ns", ns()});
    ASSERT_TRUE(clean.exited_with(0)) << clean.describe;
    EXPECT_THAT(test::all_objects(names()),
                UnorderedElementsAreArray(
                    {names().actor_file("alive"), names().actor_segment("alive"), live_arena}))
        << clean.describe;
    EXPECT_TRUE(clean.has_line("removed " + names().actor_file("gone"))) << clean.describe;
    EXPECT_THAT(clean.out(), Not(HasSubstr(".alive"))) << clean.describe;

    const CliRun ls = run_cli({"ls", "--ns", ns()});
    ASSERT_TRUE(ls.exited_with(0)) << ls.describe;
    ASSERT_GE(ls.lines.size(), 3U) << ls.describe;
    // A row: NAMESPACE NAME PID UUID STATE ...; then a problem line for the forged arena.
    std::istringstream row(ls.lines[1]);
    std::string row_ns, name, pid, uuid, state;
    row >> row_ns >> name >> pid >> uuid >> state;
    EXPECT_EQ(row_ns, ns()) << ls.describe;
    EXPECT_EQ(name, "alive") << ls.describe;
    EXPECT_EQ(pid, std::to_string(live.pid)) << ls.describe;
    EXPECT_EQ(uuid, live.uuid.short_hex()) << ls.describe;
    EXPECT_EQ(state, "live") << ls.describe;
    EXPECT_THAT(ls.lines[2], HasSubstr("! arena " + live_arena + ": bad magic")) << ls.describe;
    EXPECT_TRUE(ls.has_line("1 actor (1 live) in 1 namespace")) << ls.describe;

    quit_peer(live);
    ::unlink(shm::shm_path(live_arena).c_str());  // forged by us: its "owner" never knew it
}

// A live actor whose actor file was removed by hand: its segment's creator lock still proves it
// alive, so ls shows it live (with a problem line) and clean keeps its segment.
TEST_F(CliXproc, CleanKeepsALiveActorWhoseActorFileWasRemoved) {
    PeerActorProcess p = start_peer("unnamed");
    ASSERT_TRUE(p.child.running());
    ASSERT_EQ(::unlink(shm::shm_path(names().actor_file("unnamed")).c_str()), 0);

    const CliRun ls = run_cli({"ls", "--ns", ns()});
    ASSERT_TRUE(ls.exited_with(0)) << ls.describe;
    ASSERT_GE(ls.lines.size(), 3U) << ls.describe;
    EXPECT_THAT(ls.lines[1], HasSubstr(" live ")) << ls.describe;
    EXPECT_THAT(ls.lines[2], HasSubstr("does not hold the actor file's lock")) << ls.describe;

    const CliRun clean = run_cli({"clean", "--ns", ns()});
    ASSERT_TRUE(clean.exited_with(0)) << clean.describe;
    EXPECT_THAT(clean.out(), HasSubstr("its creator still holds its lock")) << clean.describe;
    EXPECT_TRUE(clean.has_line("removed 0 objects of 0 dead actors in 1 namespace"))
        << clean.describe;
    EXPECT_EQ(test::all_objects(names()),
              std::vector<std::string>{names().actor_segment("unnamed")});
    quit_peer(p);  // its orderly end removes its segment
}

// (c) ls --json parses; an actor killed with SIGKILL is shown dead with its last pid.
TEST_F(CliXproc, LsJsonShowsAKilledActorDead) {
    PeerActorProcess p = start_peer("doomed");
    ASSERT_TRUE(p.child.running());
    {
        const CliRun ls = run_cli({"ls", "--json", "--ns", ns()});
        ASSERT_TRUE(ls.exited_with(0)) << ls.describe;
        const Json rows = JsonParser(ls.out()).parse_document();
        ASSERT_EQ(rows.items.size(), 1U) << ls.describe;
        const Json& r = row_of(rows, "doomed");
        EXPECT_EQ(r["state"].text, "live") << ls.describe;
        EXPECT_EQ(r["ns"].text, ns());
        EXPECT_EQ(r["pid"].u64(), static_cast<std::uint64_t>(p.pid));
        EXPECT_EQ(r["uuid"].text, p.uuid.to_hex());
        EXPECT_EQ(r["links"].u64(), 0U);
        EXPECT_THAT(r["problems"].items, IsEmpty()) << ls.describe;
    }
    kill_peer(p);
    {
        const CliRun ls = run_cli({"ls", "--json", "--ns", ns()});
        ASSERT_TRUE(ls.exited_with(0)) << ls.describe;
        const Json rows = JsonParser(ls.out()).parse_document();
        const Json& r = row_of(rows, "doomed");
        EXPECT_EQ(r["state"].text, "dead") << ls.describe;
        EXPECT_EQ(r["pid"].u64(), static_cast<std::uint64_t>(p.pid)) << ls.describe;
    }
    const CliRun clean = run_cli({"clean", "--ns", ns(), "--json"});
    ASSERT_TRUE(clean.exited_with(0)) << clean.describe;
    const Json report = JsonParser(clean.out()).parse_document();
    EXPECT_EQ(report["removed"].u64(), 2U) << clean.describe;
    EXPECT_EQ(report["dead_actors"].u64(), 1U) << clean.describe;
    EXPECT_EQ(report["namespaces"].items.at(0)["dead_actors"].items.at(0).text, "doomed");
}

// ls --json of two linked actors in the middle of a streaming context: each has one link, whose
// arena holds its control ring and the context's data ring with the messages sent so far.
TEST_F(CliXproc, LsJsonShowsLinksAndRingCountersOfAnOpenStream) {
    test::Child node = test::spawn("actor_node", {ns(), "server", "server"});
    ASSERT_TRUE(node.expect_line("ready", kDeadline)) << node.describe();
    {
        ActorOptions options;
        options.ns = ns();
        Actor parent("parent", options);
        Portal portal = parent.connect("server", kDeadline);
        constexpr std::uint64_t kPings = 3;
        portal.open_context("simple_rpc", Payload::value(0), [&](Context& ctx, const Payload&) {
            auto stream = ctx.open_stream();
            for (std::uint64_t i = 0; i < kPings; ++i) {
                stream.send("ping");
                EXPECT_EQ(stream.receive().text(), "pong");
            }
            const CliRun ls = run_cli({"ls", "--json", "--ns", ns()});
            ASSERT_TRUE(ls.exited_with(0)) << ls.describe;
            const Json rows = JsonParser(ls.out()).parse_document();
            for (const auto& [name, pid] :
                 {std::pair{"parent", ::getpid()}, std::pair{"server", node.pid()}}) {
                const Json& r = row_of(rows, name);
                EXPECT_EQ(r["state"].text, "live") << name << "\n" << ls.describe;
                EXPECT_EQ(r["pid"].u64(), static_cast<std::uint64_t>(pid)) << name;
                ASSERT_EQ(r["links"].u64(), 1U) << name << "\n" << ls.describe;
                const Json& arena = r["arenas"].items.at(0);
                EXPECT_TRUE(arena["problem"].is_null()) << name << "\n" << ls.describe;
                std::size_t control = 0;
                std::size_t data = 0;
                for (const auto& ring : arena["rings"].items) {
                    if (ring["kind"].text == "control") {
                        ++control;
                        EXPECT_GE(ring["sent"].u64(), 1U) << name << ": the context's start";
                    } else {
                        ++data;
                        EXPECT_EQ(ring["sent"].u64(), kPings) << name << "\n" << ls.describe;
                        EXPECT_EQ(ring["received"].u64(), kPings) << name << "\n" << ls.describe;
                        EXPECT_EQ(ring["overruns"].u64(), 0U);
                    }
                }
                EXPECT_EQ(control, 1U) << name << "\n" << ls.describe;
                EXPECT_EQ(data, 1U) << name << "\n" << ls.describe;
            }
        });
    }
    node.write("quit\n");
    const auto status = node.wait(kDeadline);
    EXPECT_TRUE(status && WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << node.describe();
}

// A stopped actor's heartbeat does not move: `ls --sample` calls it unresponsive, not dead;
// once it runs again it is live.
TEST_F(CliXproc, LsSampleReportsAStoppedActorUnresponsive) {
    PeerActorProcess p = start_peer("sleepy");
    ASSERT_TRUE(p.child.running());
    // Stopped only after its first beat: a heartbeat that never started proves nothing.
    CliRun beating;
    ASSERT_TRUE(test::wait_until(
        [&] {
            beating = run_cli({"ls", "--json", "--ns", ns()});
            if (!beating.exited_with(0)) return false;
            const Json rows = JsonParser(beating.out()).parse_document();
            return row_of(rows, "sleepy")["heartbeat"]["beats"].u64() > 0;
        },
        kDeadline))
        << beating.describe;
    p.child.kill(SIGSTOP);
    const CliRun stopped = run_cli({"ls", "--json", "--sample", "300", "--ns", ns()});
    p.child.kill(SIGCONT);
    ASSERT_TRUE(stopped.exited_with(0)) << stopped.describe;
    EXPECT_EQ(row_of(JsonParser(stopped.out()).parse_document(), "sleepy")["state"].text,
              "unresponsive")
        << stopped.describe;
    // Its liveness thread beats every 100 ms; a loaded machine may miss a window, so retry.
    CliRun again;
    EXPECT_TRUE(test::wait_until(
        [&] {
            again = run_cli({"ls", "--json", "--sample", "300", "--ns", ns()});
            return again.exited_with(0) &&
                   row_of(JsonParser(again.out()).parse_document(), "sleepy")["state"].text ==
                       "live";
        },
        kDeadline))
        << again.describe;
    quit_peer(p);
}

// A corrupt segment is a problem line of its row, never a crash; clean removes it (no live
// holder), in JSON as in text.
TEST_F(CliXproc, LsReportsACorruptSegmentAndCleanRemovesIt) {
    forge(names().actor_segment("garbled"), std::byte{0x5A});
    const CliRun ls = run_cli({"ls", "--ns", ns()});
    ASSERT_TRUE(ls.exited_with(0)) << ls.describe;
    EXPECT_THAT(ls.out(), HasSubstr("  ! segment: actor segment '" +
                                    names().actor_segment("garbled") + "': bad magic"))
        << ls.describe;
    const CliRun json = run_cli({"ls", "--json", "--ns", ns()});
    ASSERT_TRUE(json.exited_with(0)) << json.describe;
    const Json rows = JsonParser(json.out()).parse_document();
    const Json& r = row_of(rows, "garbled");
    EXPECT_EQ(r["state"].text, "dead");
    EXPECT_TRUE(r["pid"].is_null());
    EXPECT_THAT(r["problems"].items.at(0).text, HasSubstr("bad magic"));

    const CliRun clean = run_cli({"clean", "--ns", ns()});
    ASSERT_TRUE(clean.exited_with(0)) << clean.describe;
    EXPECT_TRUE(clean.has_line("removed " + names().actor_segment("garbled"))) << clean.describe;
}

// (d) Usage errors exit 2 and change nothing; help exits 0.
TEST_F(CliXproc, UsageErrorsExitTwo) {
    const std::vector<std::vector<std::string>> bad = {
        {},
        {"frobnicate"},
        {"clean", "--bogus"},
        {"clean", "--ns"},
        {"clean", "--ns", ns(), "--all-ns"},
        {"ls", "--all-ns", "--ns", ns()},
        {"ls", "--ns", "not.a.namespace"},
        {"ls", "--sample", "soon"},
        {"ls", "--sample", "-1"},
        {"ls", "--dry-run"},
    };
    for (const auto& args : bad) {
        const CliRun run = run_cli(args);
        EXPECT_TRUE(run.exited_with(2)) << run.describe;
        EXPECT_THAT(run.lines, IsEmpty()) << "usage errors go to stderr: " << run.describe;
    }
    const CliRun help = run_cli({"help"});
    EXPECT_TRUE(help.exited_with(0)) << help.describe;
    EXPECT_THAT(help.out(), HasSubstr("usage: shmctx"));
}

// ---- `shmctx errors` and `shmctx stat` (issue 10 item 2; docs/protocol.d/counters.md) ----

/// The entry of actor `name` in `errors --json` output.
const Json* errors_of(const Json& actors, std::string_view name) {
    for (const auto& a : actors.items) {
        if (a["name"].text == name) return &a;
    }
    return nullptr;
}

/// The first error of `actor` (errors --json) whose text contains `part`, or null.
const Json* error_with(const Json& actor, std::string_view part) {
    if (actor["errors"].is_null()) return nullptr;
    for (const auto& e : actor["errors"].items) {
        if (e["text"].text.find(part) != std::string::npos) return &e;
    }
    return nullptr;
}

// A helper process's actor fails its link to us with a ProtocolError (we corrupt the tail of our
// control ring, which it reads): `shmctx errors --json`, run from a third process, shows the
// error in the helper's distinct-error log with count 1 and its times; its counters say
// protocol_errors 1 (`stat`); after the helper is killed its log is still read from the dead
// actor's segment, and `clean` then removes it.
TEST_F(CliXproc, ErrorsJsonShowsAHelpersProtocolErrorAlsoAfterItDied) {
    test::Child node = test::spawn("actor_node", {ns(), "victim", "server"});
    ASSERT_TRUE(node.expect_line("ready", kDeadline)) << node.describe();
    const auto before_ns =
        static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                       std::chrono::system_clock::now().time_since_epoch())
                                       .count());
    {
        ActorOptions options;
        options.ns = ns();
        Actor bad("bad", options);
        Portal portal = bad.connect("victim", kDeadline);
        const auto r = portal.open_context("add_one", Payload::value(std::int64_t{41}),
                                           [](Context&, const Payload&) {});
        ASSERT_EQ(r.outcome.value().value<std::int64_t>(), 42);
        {
            // Before the corruption, the helper's log is empty.
            const CliRun errors = run_cli({"errors", "--json", "--ns", ns()});
            ASSERT_TRUE(errors.exited_with(0)) << errors.describe;
            const Json actors = JsonParser(errors.out()).parse_document();
            const Json* victim = errors_of(actors, "victim");
            ASSERT_NE(victim, nullptr) << errors.describe;
            EXPECT_TRUE((*victim)["errors"].items.empty()) << errors.describe;
            EXPECT_EQ((*victim)["used"].u64(), 0U);
        }
        // Our arena for the link (we are its producer): its first carve is our control ring.
        const std::string arena = names().arena(bad.uid().uuid, portal.peer().uuid);
        const int fd = ::open(shm::shm_path(arena).c_str(), O_RDWR | O_CLOEXEC);
        ASSERT_GE(fd, 0) << arena;
        constexpr std::size_t kMap = 64 * 1024;
        void* map = ::mmap(nullptr, kMap, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        ::close(fd);
        ASSERT_NE(map, MAP_FAILED);
        auto* ring = reinterpret_cast<shm::RingHeader*>(
            static_cast<std::byte*>(map) + shm::kArenaCarveBase + shm::kCarveHeaderBytes);
        ASSERT_EQ(ring->immutable.magic.load(std::memory_order::acquire), shm::kRingMagic);
        // A tail far past head + data bytes: what a corrupt producer could publish.
        ring->producer.tail_bytes.store(std::uint64_t{1} << 40, std::memory_order::release);
        ::munmap(map, kMap);
        // Ring its control loop's doorbell (wake slot 0), as our next record would, so that it
        // reads the ring now.
        auto seg = shm::ActorSegment::try_open(names(), "victim");
        ASSERT_TRUE(seg);
        shm::WakeSlot* bell = seg->wake_table().slot(0);
        ASSERT_NE(bell, nullptr);
        shm::ring(*bell);

        CliRun errors;
        const Json* found = nullptr;
        Json actors;
        ASSERT_TRUE(test::wait_until(
            [&] {
                errors = run_cli({"errors", "--json", "--ns", ns()});
                if (!errors.exited_with(0)) return false;
                actors = JsonParser(errors.out()).parse_document();
                const Json* victim = errors_of(actors, "victim");
                found = victim != nullptr ? error_with(*victim, "link to bad") : nullptr;
                return found != nullptr;
            },
            Deadline(kDeadline)))
            << errors.describe << node.describe();
        EXPECT_THAT((*found)["text"].text, HasSubstr("failed"));
        EXPECT_EQ((*found)["count"].u64(), 1U) << errors.describe;
        EXPECT_GE((*found)["first_unix_ns"].u64(), before_ns);
        EXPECT_EQ((*found)["first_unix_ns"].u64(), (*found)["last_unix_ns"].u64());
        EXPECT_EQ((*found)["truncated"].kind, Json::Kind::boolean);
        EXPECT_FALSE((*found)["truncated"].boolean);
        const Json* victim = errors_of(actors, "victim");
        EXPECT_EQ((*victim)["state"].text, "live");
        EXPECT_EQ((*victim)["pid"].u64(), static_cast<std::uint64_t>(node.pid()));
        EXPECT_EQ((*victim)["dropped"].u64(), 0U);

        // Its counters, as `stat` reads them without joining.
        const CliRun stat = run_cli({"stat", "--json", "--count", "1", "--ns", ns()});
        ASSERT_TRUE(stat.exited_with(0)) << stat.describe;
        ASSERT_EQ(stat.lines.size(), 1U) << stat.describe;
        const Json sample = JsonParser(stat.lines[0]).parse_document();
        bool seen = false;
        for (const auto& a : sample["actors"].items) {
            if (a["name"].text != "victim") continue;
            seen = true;
            EXPECT_EQ(a["counters"]["protocol_errors"].u64(), 1U) << stat.describe;
            EXPECT_EQ(a["counters"]["links_failed"].u64(), 1U) << stat.describe;
            EXPECT_EQ(a["counters"]["tasks_started"].u64(), 1U) << stat.describe;
            EXPECT_GE(a["counters"]["errors_reported"].u64(), 1U) << stat.describe;
        }
        EXPECT_TRUE(seen) << stat.describe;
    }
    // Killed: its segment (and its log) stay in /dev/shm until someone reclaims them.
    node.kill(SIGKILL);
    const auto status = node.wait(kDeadline);
    ASSERT_TRUE(status && WIFSIGNALED(*status)) << node.describe();
    const CliRun errors = run_cli({"errors", "--json", "--ns", ns()});
    ASSERT_TRUE(errors.exited_with(0)) << errors.describe;
    const Json actors = JsonParser(errors.out()).parse_document();
    const Json* victim = errors_of(actors, "victim");
    ASSERT_NE(victim, nullptr) << errors.describe;
    EXPECT_EQ((*victim)["state"].text, "dead") << errors.describe;
    const Json* found = error_with(*victim, "link to bad");
    ASSERT_NE(found, nullptr) << errors.describe;
    EXPECT_EQ((*found)["count"].u64(), 1U);
    const CliRun text = run_cli({"errors", "--ns", ns()});
    ASSERT_TRUE(text.exited_with(0)) << text.describe;
    EXPECT_THAT(text.out(), HasSubstr("link to bad")) << text.describe;
    const CliRun clean = run_cli({"clean", "--ns", ns()});
    EXPECT_TRUE(clean.exited_with(0)) << clean.describe;
}

// Live streaming between this process and a helper: two `stat --json` samples 100 ms apart show
// our data ring's sent counter rising and a positive rate in the second sample (none in the
// first: there is nothing to compare with), and our counters (one context, one link).
TEST_F(CliXproc, StatJsonShowsRisingSentCountersAndARate) {
    test::Child node = test::spawn("actor_node", {ns(), "server", "server"});
    ASSERT_TRUE(node.expect_line("ready", kDeadline)) << node.describe();
    CliRun stat;
    {
        ActorOptions options;
        options.ns = ns();
        Actor parent("parent", options);
        Portal portal = parent.connect("server", kDeadline);
        portal.open_context("simple_rpc", Payload::value(0), [&](Context& ctx, const Payload&) {
            auto stream = ctx.open_stream();
            std::atomic<bool> done{false};
            std::thread cli([&] {
                stat =
                    run_cli({"stat", "--json", "--count", "2", "--interval", "100", "--ns", ns()});
                done.store(true, std::memory_order::release);
            });
            std::uint64_t pings = 0;
            while (!done.load(std::memory_order::acquire)) {
                stream.send("ping");
                EXPECT_EQ(stream.receive().text(), "pong");
                ++pings;
            }
            cli.join();
            EXPECT_GT(pings, 0U);
        });
    }
    node.write("quit\n");
    const auto status = node.wait(kDeadline);
    EXPECT_TRUE(status && WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << node.describe();

    ASSERT_TRUE(stat.exited_with(0)) << stat.describe;
    ASSERT_EQ(stat.lines.size(), 2U) << stat.describe;
    std::vector<std::uint64_t> sent;
    std::vector<Json> rates;
    for (std::size_t i = 0; i < 2; ++i) {
        const Json sample = JsonParser(stat.lines[i]).parse_document();
        EXPECT_EQ(sample["sample"].u64(), i + 1);
        const Json* parent = nullptr;
        for (const auto& a : sample["actors"].items) {
            if (a["name"].text == "parent") parent = &a;
        }
        ASSERT_NE(parent, nullptr) << stat.describe;
        EXPECT_EQ((*parent)["counters"]["contexts_opened"].u64(), 1U) << stat.describe;
        EXPECT_EQ((*parent)["counters"]["links_up"].u64(), 1U) << stat.describe;
        ASSERT_EQ((*parent)["links"].items.size(), 1U) << stat.describe;
        for (const auto& ring : (*parent)["links"].items[0]["rings"].items) {
            if (ring["kind"].text != "data") continue;
            sent.push_back(ring["sent"].u64());
            rates.push_back(ring["sent_per_s"]);
        }
    }
    ASSERT_EQ(sent.size(), 2U) << stat.describe;
    EXPECT_LT(sent[0], sent[1]) << stat.describe;
    EXPECT_TRUE(rates[0].is_null()) << stat.describe;
    ASSERT_EQ(rates[1].kind, Json::Kind::number) << stat.describe;
    EXPECT_GT(std::stod(rates[1].text), 0.0) << stat.describe;
}

}  // namespace
}  // namespace shmctx
