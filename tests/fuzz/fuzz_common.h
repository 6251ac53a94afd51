/*
 * What every libFuzzer target of the webshop shares: a check that aborts
 * with a message (so libFuzzer records the input as a crash) and quiet
 * logging, so that the log lines of rejected inputs do not slow the run.
 */
#ifndef WS_FUZZ_COMMON_H
#define WS_FUZZ_COMMON_H

#include <stdio.h>
#include <stdlib.h>

#include "log.h"

#define FUZZ_CHECK(cond, ...)                                                            \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond);     \
            fprintf(stderr, __VA_ARGS__);                                                \
            fputc('\n', stderr);                                                         \
            abort();                                                                     \
        }                                                                                \
    } while (0)

/* Drop the warn lines rejected inputs cause; errors still show. */
static inline void fuzz_quiet_logs(void)
{
    ws_log_set_level(WS_LOG_ERROR);
}

#endif
