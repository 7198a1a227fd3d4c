// The harness report as GitHub Markdown (--md FILE, --save DIR) and the file names of a saved
// result set. The tables are the text report's (report_tables.hpp); only the rendering is here.
#include <algorithm>
#include <cctype>
#include <sstream>
#include <string>
#include <vector>

#include "harness.hpp"
#include "report_tables.hpp"

namespace shmctx::bench {
namespace {

/// A cell's text made safe inside a Markdown table row: '|' escaped, line breaks as spaces, a
/// '<' that could open an HTML tag as "&lt;" (a CPU model or an error text is not markup).
std::string md_cell(std::string_view s) {
    std::string out;
    for (std::size_t i = 0; i < s.size(); ++i) {
        const char c = s[i];
        const char next = i + 1 < s.size() ? s[i + 1] : '\0';
        if (c == '|')
            out += "\\|";
        else if (c == '\n' || c == '\r')
            out += ' ';
        else if (c == '<' && (std::isalpha(static_cast<unsigned char>(next)) != 0 || next == '/' ||
                              next == '!' || next == '?'))
            out += "&lt;";
        else
            out += c;
    }
    return out;
}

void md_row(const std::vector<std::string>& cells, std::ostream& out) {
    out << "|";
    for (const auto& c : cells) out << " " << md_cell(c) << " |";
    out << "\n";
}

/// A table: the name column left-aligned, figures right-aligned (text values left-aligned).
void md_table(const std::vector<std::string>& columns,
              const std::vector<std::vector<std::string>>& rows, std::ostream& out,
              bool text_values = false) {
    md_row(columns, out);
    out << "|";
    for (std::size_t i = 0; i < columns.size(); ++i)
        out << (i == 0 || text_values ? ":---|" : "---:|");
    out << "\n";
    for (const auto& r : rows) md_row(r, out);
}

/// Words of a CPU model name that say nothing about the machine's family.
bool filler_word(const std::string& w) {
    static constexpr std::string_view kFiller[] = {
        "intel",     "amd",  "genuine", "genuineintel", "authenticamd", "cpu",
        "processor", "with", "radeon",  "graphics",     "unknown"};
    if (std::find(std::begin(kFiller), std::end(kFiller), w) != std::end(kFiller)) return true;
    // "64-core", "8-core"
    return w.size() > 5 && w.compare(w.size() - 5, 5, "-core") == 0;
}

}  // namespace

std::string render_markdown(const Report& r) {
    std::ostringstream out;
    out << "# shmctx perf harness: " << md_cell(r.commit.substr(0, 12)) << ", "
        << md_cell(r.date.substr(0, 10)) << "\n\n";
    std::vector<std::vector<std::string>> fields;
    for (const ReportField& f : report_header(r)) fields.push_back({f.name, f.value});
    md_table({"run", "value"}, fields, out, true);
    if (!optimised_build(r))
        out << "\n**Not an optimised build: the figures are not meaningful.**\n";
    auto section = [&out](const ReportTable& t) {
        out << "\n### " << md_cell(t.title) << "\n\n";
        if (!t.subtitle.empty()) out << md_cell(t.subtitle) << ".\n\n";
        if (!t.intro.empty()) out << t.intro << "\n\n";
        md_table(t.columns, t.rows, out, t.text_values);
        if (!t.notes.empty()) out << "\n";
        for (const auto& n : t.notes) out << "- " << md_cell(n) << "\n";
    };
    if (!r.batches.empty()) section(placement_table(r));
    for (const ReportTable& t : report_tables(r)) section(t);
    return out.str();
}

void write_markdown(const Report& r, const std::string& path) {
    write_file(path, render_markdown(r));
}

std::string cpu_slug(std::string_view model, int online_cpus, bool virtual_cpus) {
    // Lower case, the clock ("@ 2.90GHz") dropped, trademarks removed, split into words of
    // [a-z0-9-].
    std::string text(model.substr(0, model.find('@')));
    for (char& c : text) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    for (std::string_view mark : {"(r)", "(tm)", "(c)"})
        for (auto at = text.find(mark); at != std::string::npos; at = text.find(mark))
            std::fill_n(text.begin() + static_cast<std::ptrdiff_t>(at), mark.size(), ' ');
    std::vector<std::string> words;
    std::string word;
    text.push_back(' ');  // ends the last word
    for (char c : text) {
        if (std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '-') {
            word += c;
        } else if (!word.empty()) {
            if (!filler_word(word)) words.push_back(word);
            word.clear();
        }
    }
    // The family word; "core" alone says little, so "core-i7" with the next word.
    std::string slug = words.empty() ? "cpu" : words[0];
    if (slug == "core" && words.size() > 1) slug.append("-").append(words[1]);
    slug = slug.substr(0, 16);
    while (!slug.empty() && slug.back() == '-') slug.pop_back();
    if (slug.empty()) slug = "cpu";
    if (online_cpus > 0)
        slug.append("-").append(std::to_string(online_cpus)).append(virtual_cpus ? "vcpu" : "cpu");
    return slug;
}

std::string result_stem(const Report& r) {
    // "2026-11-30T09:51:57Z" -> "2026-11-30"; "797c220a...-dirty" -> "797c220-dirty".
    const std::string date = r.date.size() >= 10 ? r.date.substr(0, 10) : "unknown-date";
    std::string commit = r.commit == "unknown" ? r.commit : r.commit.substr(0, 7);
    if (r.commit.size() > 6 && r.commit.compare(r.commit.size() - 6, 6, "-dirty") == 0)
        commit += "-dirty";
    std::string stem = date;
    stem.append("_").append(commit).append("_").append(
        cpu_slug(r.cpu, r.online_cpus, r.virtual_cpus));
    return stem;
}

}  // namespace shmctx::bench
