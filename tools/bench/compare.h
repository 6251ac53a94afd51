/*
 * The shop on PostgreSQL next to the shop on SQLite (issue 13): the two
 * reports of one `--store both` run, measured back to back on the same
 * machine, shown as one table and one JSON object. Each figure (orders/s
 * end to end, POST and GET rates, POST -> 201 p99 at half rate, RSS per
 * process) is given for both stores with the ratio PostgreSQL / SQLite,
 * and the two targets of issue 13 (PostgreSQL end to end >= 0.5 x SQLite
 * and >= 1,000 orders/s) carry a "met"/"MISSED" verdict.
 */
#ifndef BENCH_COMPARE_H
#define BENCH_COMPARE_H

#include <stdio.h>

#include "report.h"

/* Print the comparison of sq (SQLite) and pg (PostgreSQL) to f. */
void bench_compare_print(const bench_report *sq, const bench_report *pg, FILE *f);

/*
 * Write {"store": "both", "sqlite": REPORT, "postgres": REPORT,
 * "comparison": {...}} to path, each REPORT as bench_report_json writes
 * it. 0, or -1 with a message on stderr.
 */
int bench_compare_json(const bench_report *sq, const bench_report *pg, const char *path);

#endif
