/*
 * The SVG chart writer; see plot.h. Geometry: each chart is a CHART_W x
 * CHART_H cell; inside it a plot area with margins for the axis labels
 * (left), the title and legend (top) and the tick labels and notes
 * (bottom).
 */
#include "plot.h"

#include <math.h>
#include <stdio.h>

#define CHART_W  480.0
#define CHART_H  320.0
#define MARGIN_L 70.0
#define MARGIN_R 20.0
#define MARGIN_T 64.0
#define MARGIN_B 64.0
#define HEADER_H 56.0
#define Y_TICKS  5

/* Write s with &, < and > escaped. */
static void plot_text(FILE *f, const char *s)
{
    for (; s != NULL && *s != '\0'; s++) {
        switch (*s) {
        case '&':
            fputs("&amp;", f);
            break;
        case '<':
            fputs("&lt;", f);
            break;
        case '>':
            fputs("&gt;", f);
            break;
        default:
            fputc(*s, f);
            break;
        }
    }
}

/* A round step (1, 2 or 5 times a power of ten) giving about Y_TICKS ticks
 * up to max. */
static double plot_step(double max)
{
    if (max <= 0) {
        return 1.0;
    }
    double raw = max / Y_TICKS;
    double p = pow(10.0, floor(log10(raw)));
    double m = raw / p;
    return (m <= 1.0 ? 1.0 : m <= 2.0 ? 2.0 : m <= 5.0 ? 5.0 : 10.0) * p;
}

static double plot_max(const bench_plot_chart *c)
{
    double max = 0;
    for (int s = 0; s < c->n_series; s++) {
        for (int i = 0; i < c->n; i++) {
            if (c->series[s].y[i] > max) {
                max = c->series[s].y[i];
            }
        }
    }
    return max;
}

/* A tick value without needless digits. */
static void plot_tick_label(char *out, size_t cap, double v, double step)
{
    if (step >= 1000.0 && v >= 10000.0) {
        snprintf(out, cap, fmod(v, 1000.0) == 0 ? "%.0fk" : "%.1fk", v / 1000.0);
    } else if (step >= 1.0 || v == 0) {
        snprintf(out, cap, "%.0f", v);
    } else {
        int digits = (int)ceil(-log10(step));
        snprintf(out, cap, "%.*f", digits, v);
    }
}

/* Frame, grid, y ticks and labels of chart c in the cell at (x0, y0). */
static void plot_axes(FILE *f, const bench_plot_chart *c, double x0, double y0,
                      double top, double step)
{
    double px = x0 + MARGIN_L, py = y0 + MARGIN_T;
    double pw = CHART_W - MARGIN_L - MARGIN_R, ph = CHART_H - MARGIN_T - MARGIN_B;
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" class=\"title\">", x0 + CHART_W / 2, y0 + 20);
    plot_text(f, c->title);
    fputs("</text>\n", f);
    fprintf(
        f,
        "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" class=\"frame\"/>\n",
        px, py, pw, ph);
    for (double v = 0; v <= top + step / 2; v += step) {
        double y = py + ph - v / top * ph;
        char label[32];
        plot_tick_label(label, sizeof(label), v, step);
        fprintf(
            f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" class=\"grid\"/>\n",
            px, y, px + pw, y);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" class=\"ytick\">%s</text>\n", px - 6,
                y + 4, label);
    }
    fprintf(f, "<text transform=\"translate(%.1f,%.1f) rotate(-90)\" class=\"axis\">",
            x0 + 16, py + ph / 2);
    plot_text(f, c->y_label);
    fputs("</text>\n", f);
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" class=\"axis\">", px + pw / 2,
            y0 + CHART_H - 8);
    plot_text(f, c->x_label);
    fputs("</text>\n", f);
}

static double plot_x(const bench_plot_chart *c, double x0, int i)
{
    double pw = CHART_W - MARGIN_L - MARGIN_R;
    double px = x0 + MARGIN_L;
    return c->n == 1 ? px + pw / 2 : px + pw * (0.06 + 0.88 * (double)i / (c->n - 1));
}

/* x tick labels and notes under the plot area. */
static void plot_x_ticks(FILE *f, const bench_plot_chart *c, double x0, double y0)
{
    double base = y0 + CHART_H - MARGIN_B;
    for (int i = 0; i < c->n; i++) {
        double x = plot_x(c, x0, i);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" class=\"xtick\">", x, base + 16);
        plot_text(f, c->x_ticks[i]);
        fputs("</text>\n", f);
        if (c->notes != NULL && c->notes[i] != NULL) {
            fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" class=\"note\">", x, base + 31);
            plot_text(f, c->notes[i]);
            fputs("</text>\n", f);
        }
    }
}

/* The series' lines, points and legend. */
static void plot_series(FILE *f, const bench_plot_chart *c, double x0, double y0,
                        double top)
{
    double py = y0 + MARGIN_T, ph = CHART_H - MARGIN_T - MARGIN_B;
    for (int s = 0; s < c->n_series; s++) {
        const bench_plot_series *se = &c->series[s];
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\"%s points=\"",
                se->color, se->dashed ? " stroke-dasharray=\"6,4\"" : "");
        for (int i = 0; i < c->n; i++) {
            if (se->y[i] >= 0) {
                fprintf(f, "%.1f,%.1f ", plot_x(c, x0, i), py + ph - se->y[i] / top * ph);
            }
        }
        fputs("\"/>\n", f);
        for (int i = 0; i < c->n; i++) {
            if (se->y[i] >= 0) {
                fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"%s\"/>\n",
                        plot_x(c, x0, i), py + ph - se->y[i] / top * ph, se->color);
            }
        }
        double lx = x0 + MARGIN_L + (double)s * 130.0;
        double ly = y0 + 42;
        fprintf(f,
                "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
                "stroke-width=\"3\"%s/><text x=\"%.1f\" y=\"%.1f\" class=\"legend\">",
                lx, ly - 2, lx + 16, ly - 2, se->color,
                se->dashed ? " stroke-dasharray=\"4,3\"" : "", lx + 20, ly + 1);
        plot_text(f, se->name);
        fputs("</text>\n", f);
    }
}

static void plot_chart(FILE *f, const bench_plot_chart *c, double x0, double y0)
{
    double max = plot_max(c);
    double step = plot_step(max * 1.05);
    double top = step * ceil(max * 1.05 / step);
    if (top <= 0) {
        top = step;
    }
    plot_axes(f, c, x0, y0, top, step);
    plot_x_ticks(f, c, x0, y0);
    plot_series(f, c, x0, y0, top);
}

int bench_plot_svg(const char *path, const char *title, const char *subtitle,
                   const bench_plot_chart *charts, int n_charts, int cols)
{
    FILE *f = fopen(path, "we");
    if (f == NULL) {
        perror(path);
        return -1;
    }
    int rows = (n_charts + cols - 1) / cols;
    double w = CHART_W * cols, h = HEADER_H + CHART_H * rows;
    fprintf(
        f,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
        "viewBox=\"0 0 %.0f %.0f\" font-family=\"DejaVu Sans, Arial, sans-serif\">\n"
        "<style>.title{font-size:15px;font-weight:bold;text-anchor:middle}"
        ".axis{font-size:12px;text-anchor:middle}.ytick{font-size:11px;text-anchor:end}"
        ".xtick{font-size:11px;text-anchor:middle}"
        ".note{font-size:10px;fill:#555;text-anchor:middle}.legend{font-size:11px}"
        ".frame{fill:none;stroke:#333}.grid{stroke:#ddd}"
        ".head{font-size:17px;font-weight:bold}.sub{font-size:12px;fill:#444}</style>\n"
        "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
        w, h, w, h);
    fputs("<text x=\"16\" y=\"24\" class=\"head\">", f);
    plot_text(f, title);
    fputs("</text>\n<text x=\"16\" y=\"44\" class=\"sub\">", f);
    plot_text(f, subtitle);
    fputs("</text>\n", f);
    for (int i = 0; i < n_charts; i++) {
        plot_chart(f, &charts[i], CHART_W * (i % cols), HEADER_H + CHART_H * (i / cols));
    }
    fputs("</svg>\n", f);
    return fclose(f) == 0 ? 0 : -1;
}
