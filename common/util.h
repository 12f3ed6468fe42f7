/*
 * util.h - small pure helpers shared by every module: clocks, BullMQ-compatible
 * backoff, jitter and random tokens.
 */
#ifndef MI_UTIL_H
#define MI_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

/** mi_now_ms() - wall-clock milliseconds since the epoch (BullMQ timestamps). */
int64_t mi_now_ms(void);
/** mi_mono_ms() - monotonic milliseconds, for durations and deadlines. */
int64_t mi_mono_ms(void);

/** mi_rand_unit() - a uniform double in [0, 1) from the kernel's random source. */
double mi_rand_unit(void);

/**
 * mi_rand_hex() - fill @out with @nbytes random bytes as lowercase hex plus NUL
 * (@out must hold 2 * @nbytes + 1 bytes).
 */
void mi_rand_hex(char *out, size_t nbytes);

enum mi_backoff_type { MI_BACKOFF_NONE = 0, MI_BACKOFF_FIXED, MI_BACKOFF_EXPONENTIAL };

struct mi_backoff {
    enum mi_backoff_type type;
    int64_t delay_ms;   /* base delay */
    double jitter;      /* 0..1, as BullMQ's backoff.jitter */
};

/**
 * mi_backoff_delay() - BullMQ 6.7.0's retry delay for the @attempt-th retry (1 for
 * the first), with @rnd in [0, 1) (pass mi_rand_unit(); tests pass fixed values).
 * fixed: delay; exponential: round(2^(attempt-1) * delay); jitter j turns a delay
 * d into floor(rnd * d * j + d * (1 - j)). Return: the delay in ms, 0 for NONE.
 */
int64_t mi_backoff_delay(const struct mi_backoff *b, int attempt, double rnd);

/**
 * mi_retry_delay() - delay before reconnect/retry number @attempt (1-based) of an
 * internal operation: exponential from @base_ms, capped at @max_ms, with "full
 * jitter" in [delay/2, delay]. @rnd in [0, 1).
 */
int64_t mi_retry_delay(int attempt, int64_t base_ms, int64_t max_ms, double rnd);

/** mi_hexval() - the value of hex digit @c (either case), or -1. */
int mi_hexval(char c);

/**
 * mi_parse_i64() - parse a whole decimal number in [@min, @max].
 * Return: true on success (value stored), false on garbage, overflow or range.
 */
bool mi_parse_i64(const char *s, int64_t min, int64_t max, int64_t *out);

/**
 * mi_flag_value() - match argv[*i] against option @name ("--limit") in the forms
 * "--limit N" and "--limit=N" (the command-line tools' flags beyond the config table).
 * @val: receives the value (borrowed from argv); *@i is advanced past a separate value.
 * Return: 0 no match, 1 matched, -1 matched but the value is missing (@err set, code 2).
 */
int mi_flag_value(int argc, char **argv, int *i, const char *name, const char **val,
                  struct mi_err *err);

/**
 * mi_parse_size() - parse a byte size: digits with an optional suffix k, M, G
 * (powers of 1024, also KiB/MiB/GiB). Return: true on success.
 */
bool mi_parse_size(const char *s, uint64_t *out);

/**
 * mi_parse_duration_ms() - parse "250ms", "30s", "5m", "2h", "7d" or plain
 * milliseconds. Return: true on success.
 */
bool mi_parse_duration_ms(const char *s, int64_t *out);

#endif
