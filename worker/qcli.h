/*
 * qcli.h - pure helpers of media-queue (worker/queue_cli.c): command-line parsing,
 * batch sizing and upload ages. No I/O, so tests/unit/test-qcli.c covers them.
 */
#ifndef MI_QCLI_H
#define MI_QCLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "err.h"

/* Exit codes of media-queue (documented in --help and README). */
enum { QCLI_EXIT_OK = 0, QCLI_EXIT_FAILED = 1, QCLI_EXIT_USAGE = 2 };

/* Jobs per script call of retry-failed and clean: each call is one short Redis script. */
#define QCLI_BATCH 1000

enum qcli_cmd {
    QCLI_STATS,
    QCLI_ADD,
    QCLI_PAUSE,
    QCLI_RESUME,
    QCLI_RETRY_FAILED,
    QCLI_CLEAN,
    QCLI_UPLOADS_LIST,
    QCLI_UPLOADS_ABORT,
};

/* A parsed command line (after the settings flags were taken out by config_load). */
struct qcli_opts {
    enum qcli_cmd cmd;
    bool json;               /* stats --json */
    int64_t watch_ms;        /* stats --watch, 0: once */
    int64_t limit;           /* retry-failed, clean: --limit N; -1: no limit */
    bool reset_attempts;     /* retry-failed --reset-attempts */
    bool failed;             /* clean: the failed set (else completed) */
    int64_t older_than_ms;   /* clean, uploads: --older-than; -1: not given */
    const char *older_than;  /* the text given, for messages (borrowed from argv) */
};

/**
 * qcli_parse() - parse @argv[0] (the command) and the flags of every command except
 * add, whose arguments queue_cli.c parses itself (cmd is QCLI_ADD then).
 * Return: 0, or QCLI_EXIT_USAGE with @err saying what is wrong.
 */
int qcli_parse(int argc, char **argv, struct qcli_opts *o, struct mi_err *err) MI_MUSTCHECK;

/**
 * qcli_next_batch() - how many jobs to ask for in the next script call when @done of
 * @limit (-1: unlimited) are done and a call takes at most @batch. Return: 0 when done.
 */
int64_t qcli_next_batch(int64_t limit, int64_t done, int64_t batch);

/**
 * qcli_upload_age_s() - seconds since @initiated_at at @now; -1 when unknown (0).
 */
int64_t qcli_upload_age_s(time_t initiated_at, time_t now);

/**
 * qcli_upload_is_old() - whether an upload initiated at @initiated_at (whole seconds,
 * as S3 reports it; 0 = unparseable, never old) is older than @older_than_ms at @now_ms.
 */
bool qcli_upload_is_old(time_t initiated_at, int64_t now_ms, int64_t older_than_ms);

/**
 * qcli_format_age() - @seconds as a short age: "45s", "12m03s", "3h07m", "2d04h"
 * ("?" when negative). Return: @buf.
 */
char *qcli_format_age(int64_t seconds, char *buf, size_t n);

#endif
