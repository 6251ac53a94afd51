/*
 * A throwaway PostgreSQL 15 cluster for tests: a fresh temp dir, `initdb
 * --no-sync` (trust auth, superuser "webshop"), and the postmaster run in
 * the foreground as our child with a Unix socket in that dir and no TCP
 * listener. initdb refuses to run as root, so when we are root both run as
 * the user "postgres" (the dir is handed to it). The postmaster gets
 * PR_SET_PDEATHSIG(SIGQUIT) and its own session: a test that dies takes it
 * along (immediate shutdown), and a signal sent to the test's process
 * group does not reach it. Binaries come from WS_PG_BINDIR, default
 * /usr/lib/postgresql/15/bin.
 *
 * tests/support/with_pg runs a command under one such cluster and exports
 * it as WS_TEST_PG_URL (a libpq keyword string) and WS_TEST_PG_DIR.
 *
 * Functions return 0 on success and -1 with a line on stderr; the cluster
 * is used from the thread that started it (PDEATHSIG follows that thread).
 */
#ifndef WS_PG_CLUSTER_H
#define WS_PG_CLUSTER_H

#include <sys/types.h>

typedef struct pg_cluster {
    char dir[256];  /* the temp dir: socket, logs, data/ */
    char data[300]; /* dir/data */
    char url[512];  /* "host=DIR dbname=postgres user=webshop" */
    char bindir[256];
    pid_t pid;          /* the postmaster while it runs, else 0 */
    long long init_ms;  /* how long initdb took */
    long long start_ms; /* how long the last start took (until ready) */
    long long stop_ms;  /* how long the last stop took */
} pg_cluster;

/* Make the dir and run initdb in it. */
int pg_cluster_init(pg_cluster *c);

/* Start the postmaster and wait (up to 30 s) until it accepts connections. */
int pg_cluster_start(pg_cluster *c);

/* Stop it: immediate = 0 is a fast shutdown (SIGINT, what `pg_ctl -m fast`
 * sends), 1 an immediate one (SIGQUIT, what `pg_ctl -m immediate` sends:
 * no checkpoint, clients cut off, crash recovery at the next start). Waits
 * until it has exited. 0 also when it was not running. */
int pg_cluster_stop(pg_cluster *c, int immediate);

/* Stop it if it runs and remove the dir; c may be NULL. */
void pg_cluster_destroy(pg_cluster *c);

/* Init and start in one call (destroying what it made on failure). */
int pg_cluster_up(pg_cluster *c);

#endif
