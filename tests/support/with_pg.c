/*
 * with_pg CMD [ARGS...]: run CMD under a throwaway PostgreSQL cluster
 * (pg_cluster.h) started for this run only, and stop and remove the
 * cluster afterwards, whatever CMD did. CMD sees the cluster as
 *   WS_TEST_PG_URL  libpq keyword string: "host=DIR dbname=postgres user=webshop"
 *   WS_TEST_PG_DIR  the cluster's dir (socket, postgres.log)
 * SIGTERM/SIGINT/SIGHUP (meson's timeout) are passed on to CMD, then the
 * cluster is stopped; if with_pg itself is killed, the postmaster follows
 * (PR_SET_PDEATHSIG). Exits with CMD's status (128+N when a signal ended
 * it), or 125 when the cluster could not be started. Prints how long the
 * cluster took to init, start and stop on stderr.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pg_cluster.h"

static volatile sig_atomic_t with_pg_child;

static void with_pg_forward(int sig)
{
    if (with_pg_child > 0) {
        kill(with_pg_child, sig);
    }
}

static int with_pg_run(char **argv)
{
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "with_pg: fork: %s\n", strerror(errno));
        return 125;
    }
    if (pid == 0) {
        execvp(argv[0], argv);
        fprintf(stderr, "with_pg: exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    with_pg_child = pid;
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            return 125;
        }
    }
    with_pg_child = 0;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int main(int argc, char **argv)
{
    int first = argc > 1 && strcmp(argv[1], "--") == 0 ? 2 : 1;
    if (first >= argc) {
        fprintf(stderr, "usage: with_pg [--] CMD [ARGS...]\n");
        return 2;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = with_pg_forward;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);

    pg_cluster c;
    if (pg_cluster_up(&c) != 0) {
        fprintf(stderr, "with_pg: could not start a PostgreSQL cluster\n");
        return 125;
    }
    fprintf(stderr, "with_pg: cluster %s: initdb %lld ms, start %lld ms\n", c.dir,
            c.init_ms, c.start_ms);
    setenv("WS_TEST_PG_URL", c.url, 1);
    setenv("WS_TEST_PG_DIR", c.dir, 1);
    int rc = with_pg_run(argv + first);
    pg_cluster_stop(&c, 0);
    fprintf(stderr, "with_pg: cluster stopped in %lld ms\n", c.stop_ms);
    pg_cluster_destroy(&c);
    return rc;
}
