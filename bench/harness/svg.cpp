// The SVG writer (svg.hpp).
#include "svg.hpp"

#include <cmath>
#include <cstdio>

namespace shmctx::bench::svg {
namespace {

/// Coordinates with two decimals (enough at any zoom a browser offers; short files).
std::string n(double v) {
    if (!std::isfinite(v)) v = 0;
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.2f", v);
    return buf;
}

std::string stroke_attrs(const Stroke& s) {
    std::string out = " stroke=\"" + escaped(s.color) + "\" stroke-width=\"" + n(s.width) + "\"";
    if (!s.dash.empty()) out += " stroke-dasharray=\"" + escaped(s.dash) + "\"";
    return out;
}

}  // namespace

std::string escaped(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    for (const char c : text) {
        const auto u = static_cast<unsigned char>(c);
        switch (c) {
            case '&':
                out += "&amp;";
                break;
            case '<':
                out += "&lt;";
                break;
            case '>':
                out += "&gt;";
                break;
            case '"':
                out += "&quot;";
                break;
            case '\'':
                out += "&apos;";
                break;
            case '\t':
            case '\n':
            case '\r':
                out += ' ';
                break;
            default:
                out += (u < 0x20 || u >= 0x7f) ? '?' : c;
        }
    }
    return out;
}

Document::Document(double width, double height) : width_(width), height_(height) {}

void Document::rect(double x, double y, double w, double h, std::string_view fill,
                    std::string_view stroke) {
    body_ << "<rect x=\"" << n(x) << "\" y=\"" << n(y) << "\" width=\"" << n(w) << "\" height=\""
          << n(h) << "\" fill=\"" << escaped(fill) << "\" stroke=\"" << escaped(stroke) << "\"/>\n";
}

void Document::line(Point a, Point b, const Stroke& stroke) {
    body_ << "<line x1=\"" << n(a.x) << "\" y1=\"" << n(a.y) << "\" x2=\"" << n(b.x) << "\" y2=\""
          << n(b.y) << "\"" << stroke_attrs(stroke) << "/>\n";
}

void Document::polyline(std::span<const Point> points, const Stroke& stroke) {
    if (points.size() < 2) return;
    body_ << "<polyline fill=\"none\"" << stroke_attrs(stroke)
          << " stroke-linejoin=\"round\" points=\"";
    for (std::size_t i = 0; i < points.size(); ++i)
        body_ << (i != 0 ? " " : "") << n(points[i].x) << "," << n(points[i].y);
    body_ << "\"/>\n";
}

void Document::text(Point at, std::string_view content, const TextStyle& style) {
    const char* anchor = style.anchor == Anchor::start    ? "start"
                         : style.anchor == Anchor::middle ? "middle"
                                                          : "end";
    body_ << "<text x=\"" << n(at.x) << "\" y=\"" << n(at.y) << "\" font-size=\"" << n(style.size)
          << "\" text-anchor=\"" << anchor << "\" fill=\"" << escaped(style.color) << "\"";
    if (style.bold) body_ << " font-weight=\"bold\"";
    if (style.rotate != 0)
        body_ << " transform=\"rotate(" << n(style.rotate) << " " << n(at.x) << " " << n(at.y)
              << ")\"";
    body_ << ">" << escaped(content) << "</text>\n";
}

void Document::begin_group(std::string_view id, std::string_view title) {
    body_ << "<g id=\"" << escaped(id) << "\">\n<title>" << escaped(title) << "</title>\n";
}

void Document::end_group() { body_ << "</g>\n"; }

std::string Document::str() const {
    std::ostringstream out;
    out << "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
        << "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"" << n(width_)
        << "\" height=\"" << n(height_) << "\" viewBox=\"0 0 " << n(width_) << " " << n(height_)
        << "\" font-family=\"sans-serif\">\n"
        << body_.str() << "</svg>\n";
    return out.str();
}

}  // namespace shmctx::bench::svg
