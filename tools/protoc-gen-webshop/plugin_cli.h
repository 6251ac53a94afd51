/*
 * The command line of a protoc plugin run by hand. protoc runs a plugin
 * with no arguments and a CodeGeneratorRequest on stdin; a person who runs
 * it asks --help or --version, and should not get binary on the terminal
 * or a plugin waiting for a request that will never come. Shared by
 * protoc-gen-webshop and protoc-gen-openapi.
 */
#ifndef PLUGIN_CLI_H
#define PLUGIN_CLI_H

#include <stdio.h>

/* What main does next. */
#define PLUGIN_CLI_RUN (-1) /* no arguments, stdin not a terminal: read the request */

/* Look at argv: --help or -h prints help (prog's usage line, then the
 * text, which should say what it generates and its parameters) to out and
 * returns 0; --version prints "prog VERSION" to out and returns 0; any
 * other argument, or no argument with a terminal on stdin (in_is_tty),
 * prints a one-line reason and "try --help" to err and returns 2.
 * Otherwise PLUGIN_CLI_RUN. */
int plugin_cli(const char *prog, const char *version, const char *help, int argc,
               char **argv, int in_is_tty, FILE *out, FILE *err);

#endif
