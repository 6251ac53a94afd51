/*
 * Fault points: named places in the code where a test makes the process
 * fail on purpose (crash right after a commit, stall a loop), compiled
 * only into builds configured with -Dfault_points=true (meson defines
 * WS_FAULT_POINTS); in every other build the macros below are constants
 * and the code behind them is dead and removed.
 *
 * A point is armed from the environment, read once at the first use:
 *   WEBSHOP_FAULT=name[=arg][,name[=arg]...]
 * e.g. WEBSHOP_FAULT=crash_after_reserve_commit or
 * WEBSHOP_FAULT=bus_loop_stall=/tmp/x/stall (the stall holds while that
 * file exists). Every armed point is logged once (fault_point_armed) so a
 * log shows that faults were on.
 *
 * Usage at a point:
 *   if (WS_FAULT_POINT("crash_after_reserve_commit")) { ...; ws_fault_crash(...); }
 *   WS_FAULT_STALL("bus_loop_stall");
 *
 * Threads: any; the table is parsed once (pthread_once) and read-only after.
 */
#ifndef WS_FAULT_H
#define WS_FAULT_H

#include <stdbool.h>

/* The exit status of a process killed by ws_fault_crash. */
#define WS_FAULT_EXIT 9

#ifdef WS_FAULT_POINTS
#define WS_FAULT_POINT(name) ws_fault_armed(name)
#define WS_FAULT_STALL(name) ws_fault_stall(name)
#else
#define WS_FAULT_POINT(name) ((void)(name), false)
#define WS_FAULT_STALL(name) ((void)(name))
#endif

/* True when this build has fault points (WS_FAULT_POINTS). */
bool ws_fault_compiled(void);

/* True when point name is listed in WEBSHOP_FAULT. Call through
 * WS_FAULT_POINT so that production builds do not even look. */
bool ws_fault_armed(const char *name);

/* The argument given to point name ("name=arg"), NULL when it has none or
 * is not armed. Valid for the life of the process. */
const char *ws_fault_arg(const char *name);

/* Log fault_point name=... and _exit(WS_FAULT_EXIT) at once: no atexit
 * handlers, no flushing of stdio buffers other than the log line. */
_Noreturn void ws_fault_crash(const char *name);

/* If point name is armed with a file argument: while that file exists,
 * block (polling every 10 ms), logging fault_point_stalled when it starts
 * and fault_point_resumed when the file is removed. Otherwise return at
 * once. */
void ws_fault_stall(const char *name);

/* Forget the parsed table and read WEBSHOP_FAULT again at the next use
 * (tests that change the environment). Not while other threads use points. */
void ws_fault_reset(void);

#endif
