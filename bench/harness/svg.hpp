// A small SVG writer for the harness's charts (charts.cpp): shapes, text and groups written
// into one self-contained document (no script, no external font, image or stylesheet).
// Thread-safety: a Document is used by one thread.
#pragma once

#include <span>
#include <sstream>
#include <string>
#include <string_view>

namespace shmctx::bench::svg {

/// `text` made safe as XML character data or an attribute value: & < > " ' as entity
/// references; control characters (invalid in XML 1.0, except tab and newline, which become a
/// space) and bytes >= 0x80 (the input need not be valid UTF-8) as '?'.
std::string escaped(std::string_view text);

struct Point {
    double x = 0;
    double y = 0;
};

struct Stroke {
    std::string_view color = "#000";
    double width = 1;
    std::string_view dash = {};  ///< stroke-dasharray, e.g. "6 3"; empty: solid
};

enum class Anchor { start, middle, end };

struct TextStyle {
    double size = 12;
    Anchor anchor = Anchor::start;
    bool bold = false;
    std::string_view color = "#000";
    double rotate = 0;  ///< degrees, around the text's position
};

class Document {
public:
    Document(double width, double height);

    void rect(double x, double y, double w, double h, std::string_view fill,
              std::string_view stroke = "none");
    void line(Point a, Point b, const Stroke& stroke);
    /// Nothing is written for fewer than two points.
    void polyline(std::span<const Point> points, const Stroke& stroke);
    /// `content` is escaped.
    void text(Point at, std::string_view content, const TextStyle& style = {});
    /// A group with an id and a <title> (a tooltip and a name for tests); both escaped.
    void begin_group(std::string_view id, std::string_view title);
    void end_group();

    /// The whole document, with the XML declaration.
    std::string str() const;

private:
    double width_;
    double height_;
    std::ostringstream body_;
};

}  // namespace shmctx::bench::svg
