// LD_PRELOAD shim: every 100 ms, logs the resident set (statm) beside glibc malloc's own
// counts (mallinfo2: in use in arenas, mmapped chunks, free in arenas, arena size) to
// $MALLINFO_LOG, so a peak of RSS can be told apart: live memory or freed memory kept.
#define _GNU_SOURCE
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static void *run(void *arg) {
    (void)arg;
    const char *path = getenv("MALLINFO_LOG");
    FILE *out = fopen(path ? path : "/tmp/mallinfo.log", "w");
    if (!out) return NULL;
    long page = sysconf(_SC_PAGESIZE);
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    fprintf(out, "t_s rss_mib in_use_mib mmapped_mib free_in_arenas_mib arena_mib\n");
    for (;;) {
        struct timespec d = {0, 100 * 1000 * 1000};
        nanosleep(&d, NULL);
        long size = 0, res = 0;
        FILE *f = fopen("/proc/self/statm", "r");
        if (f) { if (fscanf(f, "%ld %ld", &size, &res) != 2) res = 0; fclose(f); }
        struct mallinfo2 m = mallinfo2();
        clock_gettime(CLOCK_MONOTONIC, &now);
        double t = (now.tv_sec - t0.tv_sec) + (now.tv_nsec - t0.tv_nsec) / 1e9;
        double mib = 1024.0 * 1024.0;
        fprintf(out, "%.1f %.1f %.1f %.1f %.1f %.1f\n", t, res * page / mib, m.uordblks / mib,
                m.hblkhd / mib, m.fordblks / mib, m.arena / mib);
        fflush(out);
    }
    return NULL;
}

__attribute__((constructor)) static void start(void) {
    pthread_t t;
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    pthread_create(&t, &a, run, NULL);
}
