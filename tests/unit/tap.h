/*
 * tap.h - a tiny TAP producer for unit tests (meson `protocol: 'tap'`).
 *
 *     int main(void) { TAP_CHECK(1 + 1 == 2); TAP_EQ_INT(x, 3); return tap_done(); }
 *
 * Every check prints one "ok N - ..." or "not ok N - ..." line with both values on
 * failure; tap_done() prints the plan and returns the exit status.
 */
#ifndef MI_TAP_H
#define MI_TAP_H

#undef NDEBUG
#include <stdio.h>
#include <string.h>

static int tap_n_, tap_failed_;

static inline void tap_result_(int ok, const char *expr, const char *file, int line)
{
    tap_n_++;
    if (!ok)
        tap_failed_++;
    printf("%sok %d - %s (%s:%d)\n", ok ? "" : "not ", tap_n_, expr, file, line);
}

#define TAP_CHECK(c) tap_result_(!!(c), #c, __FILE__, __LINE__)
#define TAP_EQ_INT(a, b)                                                                  \
    do {                                                                                  \
        long long a_ = (long long)(a), b_ = (long long)(b);                               \
        tap_result_(a_ == b_, #a " == " #b, __FILE__, __LINE__);                          \
        if (a_ != b_)                                                                     \
            printf("#   got %lld, want %lld\n", a_, b_);                                  \
    } while (0)
#define TAP_EQ_STR(a, b)                                                                  \
    do {                                                                                  \
        const char *a_ = (a), *b_ = (b);                                                  \
        int ok_ = a_ && b_ && !strcmp(a_, b_);                                            \
        tap_result_(ok_, #a " eq " #b, __FILE__, __LINE__);                               \
        if (!ok_)                                                                         \
            printf("#   got \"%s\", want \"%s\"\n", a_ ? a_ : "(null)", b_ ? b_ : "(null)"); \
    } while (0)

static inline int tap_done(void)
{
    printf("1..%d\n", tap_n_);
    return tap_failed_ ? 1 : 0;
}

#endif
