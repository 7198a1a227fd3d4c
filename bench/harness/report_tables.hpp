// The harness report's tables as data (internal to the harness library): built once from a
// Report and rendered both as aligned plain text (print_table, report.cpp) and as GitHub
// Markdown (render_markdown, markdown.cpp), so that both outputs show the same figures in the
// same format and a figure is formatted in one place only.
//
// Thread-safety: pure functions.
#pragma once

#include <string>
#include <vector>

#include "harness.hpp"

namespace shmctx::bench {

/// One table of the report. Cells are final text ("46.1M", "210ns", "(1.2M - 3.4M)").
struct ReportTable {
    std::string title;                 ///< "throughput  64 B  spin"
    std::string subtitle;              ///< placement of the section, or ""
    std::string intro;                 ///< a sentence before the table (method note), or ""
    std::vector<std::string> columns;  ///< column 0 is a name (left-aligned), the rest figures
    bool text_values = false;          ///< the columns after the first hold text (left-aligned)
    std::vector<std::vector<std::string>> rows;
    std::vector<std::string> notes;  ///< sentences after the table
};

/// A line of the report's header block.
struct ReportField {
    std::string name;
    std::string value;
};

/// Commit, date, CPU, build, placement, runs x duration, ring and batch.
std::vector<ReportField> report_header(const Report& report);
/// True for a build whose figures mean something (Release, RelWithDebInfo).
bool optimised_build(const Report& report);
/// Every table of the report in order: one per batch, then idle CPU, spill, cancel, targets
/// (those the report has data for).
std::vector<ReportTable> report_tables(const Report& report);
/// A batch's title without its placement: "fixed-rate  64 B  spin  10k/s".
std::string batch_title(const Batch& batch);
/// "c2c round trip 139ns (min 120ns), memcpy 26.1 GB/s".
std::string batch_placement(const Batch& batch);
/// The placement of every batch: section, c2c round trip median and minimum, memcpy GB/s.
ReportTable placement_table(const Report& report);
/// The targets table's title.
inline constexpr std::string_view kTargetsTitle =
    "DESIGN.md §8 targets (ratios of medians within one batch)";

}  // namespace shmctx::bench
