/*
 * A small SVG line-chart writer for the bench's scaling curve: charts laid
 * out in a grid, each with evenly spaced points along x (labelled, so a
 * log-scale series such as 1, 2, 4 ... 32 clients reads naturally), a
 * linear y axis from 0 with round ticks, one polyline per series, a
 * legend, and an optional note under each point. Plain SVG 1.1 that any
 * browser or rsvg shows; no dependency.
 */
#ifndef BENCH_PLOT_H
#define BENCH_PLOT_H

/* One line of a chart. */
typedef struct bench_plot_series {
    const char *name;  /* legend text */
    const double *y;   /* the chart's n values; a negative value is not drawn */
    const char *color; /* an SVG colour, e.g. "#1f77b4" */
    int dashed;        /* nonzero: a dashed line (tells apart series that overlap) */
} bench_plot_series;

typedef struct bench_plot_chart {
    const char *title;
    const char *x_label;
    const char *y_label;
    const char *const *x_ticks; /* n labels, one per point */
    const char *const *notes;   /* n notes shown under the points, or NULL */
    int n;                      /* points per series, >= 1 */
    const bench_plot_series *series;
    int n_series;
} bench_plot_chart;

/*
 * Write an SVG document titled `title` with the n_charts charts in `cols`
 * columns to path (text is XML-escaped). Returns 0, or -1 with a message
 * on stderr.
 */
int bench_plot_svg(const char *path, const char *title, const char *subtitle,
                   const bench_plot_chart *charts, int n_charts, int cols);

#endif
