// `shmctx clean`: shm::reclaim_stale() over the selected namespaces, with a report. Safety
// (never a live actor's object, never another user's) is reclaim_stale's; see
// docs/protocol.d/cli.md "What clean removes".
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "common.hpp"
#include "shmctx/errors.hpp"
#include "shmctx/shm/actor_file.hpp"

namespace shmctx::cli {
namespace {

struct NamespaceResult {
    std::string ns;
    shm::ReclaimReport report;
    std::set<std::string> dead_actors;  ///< actor names whose actor file, segment or tmp went
    std::optional<std::string> error;   ///< the sweep of this namespace failed
};

/// The actor an object name belongs to: <name> of actor.<name>, seg.<name>, tmp.<name>.<uuid>;
/// nullopt for arenas (named by uuid) and anything else.
std::optional<std::string> actor_of(const shm::Names& names, const std::string& object) {
    if (object.compare(0, names.prefix().size(), names.prefix()) != 0) return std::nullopt;
    const std::string rest = object.substr(names.prefix().size());
    for (const std::string kind : {"actor.", "seg."}) {
        if (rest.compare(0, kind.size(), kind) == 0) return rest.substr(kind.size());
    }
    if (rest.compare(0, 4, "tmp.") == 0) {
        const std::string tail = rest.substr(4);
        return tail.substr(0, tail.find('.'));
    }
    return std::nullopt;
}

void print_text(const std::vector<NamespaceResult>& results,
                const std::vector<std::string>& skipped, bool dry_run, std::size_t removed,
                std::size_t dead) {
    const char* verb = dry_run ? "would remove" : "removed";
    for (const auto& s : skipped) std::printf("note: %s\n", printable(s).c_str());
    for (const auto& r : results) {
        for (const auto& object : r.report.removed)
            std::printf("%s %s\n", verb, printable(object).c_str());
        for (const auto& note : r.report.notes) {
            std::printf("note [%s]: %s\n", r.ns.c_str(), printable(note).c_str());
        }
        if (r.error)
            std::fprintf(stderr, "shmctx clean [%s]: %s\n", r.ns.c_str(),
                         printable(*r.error).c_str());
    }
    std::printf("%s %zu object%s of %zu dead actor%s in %zu namespace%s\n", verb, removed,
                removed == 1 ? "" : "s", dead, dead == 1 ? "" : "s", results.size(),
                results.size() == 1 ? "" : "s");
}

void print_json(const std::vector<NamespaceResult>& results,
                const std::vector<std::string>& skipped, bool dry_run, std::size_t removed,
                std::size_t dead) {
    auto array = [](const auto& items) {
        std::string out = "[";
        for (const auto& item : items) {
            if (out.size() > 1) out += ",";
            out += json_string(item);
        }
        return out + "]";
    };
    std::string out = "{\"dry_run\":" + std::string(dry_run ? "true" : "false");
    out += ",\"removed\":" + std::to_string(removed);
    out += ",\"dead_actors\":" + std::to_string(dead);
    out += ",\"notes\":" + array(skipped);
    out += ",\"namespaces\":[";
    for (std::size_t i = 0; i < results.size(); ++i) {
        const auto& r = results[i];
        if (i > 0) out += ",";
        out += "{\"ns\":" + json_string(r.ns);
        out += ",\"removed\":" + array(r.report.removed);
        out += ",\"dead_actors\":" + array(r.dead_actors);
        out += ",\"notes\":" + array(r.report.notes);
        out += ",\"error\":" + (r.error ? json_string(*r.error) : std::string("null")) + "}";
    }
    out += "]}\n";
    std::fputs(out.c_str(), stdout);
}

}  // namespace

int run_clean(std::span<const std::string_view> args) {
    CommonOptions common;
    bool dry_run = false;
    for (std::size_t i = 0; i < args.size(); ++i) {
        if (parse_common(args, i, common)) continue;
        if (args[i] == "--dry-run") {
            dry_run = true;
            continue;
        }
        throw UsageError("clean: unknown option '" + std::string(args[i]) + "'");
    }
    const uid_t euid = ::geteuid();
    std::vector<std::string> skipped;
    const std::vector<std::string> namespaces = selected_namespaces(common, euid, skipped);

    std::vector<NamespaceResult> results;
    std::size_t removed = 0;
    std::size_t dead = 0;
    bool failed = false;
    for (const auto& ns : namespaces) {
        NamespaceResult r;
        r.ns = ns;
        try {
            const shm::Names names(ns, euid);
            r.report = shm::reclaim_stale(names, dry_run);
            for (const auto& object : r.report.removed) {
                auto actor = actor_of(names, object);
                if (!actor) continue;
                // Only its stale actor file went: a live creator's segment was kept (noted).
                const std::string kept = "kept '" + names.actor_segment(*actor) + "'";
                const bool live =
                    std::any_of(r.report.notes.begin(), r.report.notes.end(),
                                [&](const std::string& note) { return note.rfind(kept, 0) == 0; });
                if (!live) r.dead_actors.insert(std::move(*actor));
            }
        } catch (const Error& e) {
            r.error = e.what();
            failed = true;
        }
        removed += r.report.removed.size();
        dead += r.dead_actors.size();
        results.push_back(std::move(r));
    }
    if (common.json) {
        print_json(results, skipped, dry_run, removed, dead);
    } else {
        print_text(results, skipped, dry_run, removed, dead);
    }
    return failed ? kExitError : kExitOk;
}

}  // namespace shmctx::cli
