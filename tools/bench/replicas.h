/*
 * The shop with B replicas next to the shop with A (issue 14; `--replicas
 * A,B`, `--replicas-compare` = 1,2): the two reports of one run, measured
 * back to back on the same machine and store with the same ceilings,
 * shown as one table and one JSON object. Each figure (orders/s end to end
 * through HAProxy and directly at one front, GET /inventory and GET
 * /order/{id} latency through HAProxy and direct, the latency HAProxy
 * adds, the RSS of all processes) is given for both with the ratio B / A;
 * the cost of coordination, orders/s end to end through HAProxy B / A,
 * carries its target (TARGET_COORDINATION) and a "met"/"MISSED" verdict.
 * On one machine more replicas cannot add speed: the ratio says what
 * running more than one of each costs.
 */
#ifndef BENCH_REPLICAS_H
#define BENCH_REPLICAS_H

#include <stdio.h>

#include "report.h"

/* Orders/s end to end (through HAProxy), B replicas / A replicas. */
#define TARGET_COORDINATION 0.8

/* Print the comparison of a (a->replicas) and b (b->replicas) to f. */
void bench_replicas_print(const bench_report *a, const bench_report *b, FILE *f);

/*
 * Write {"replicas": [A, B], "replicas_A": REPORT, "replicas_B": REPORT,
 * "comparison": {...}} to path, each REPORT as bench_report_json writes
 * it. 0, or -1 with a message on stderr.
 */
int bench_replicas_json(const bench_report *a, const bench_report *b, const char *path);

#endif
