// Measurement shim (allocators/glibc-trim-shim.txt), not part of the engine: built with
// cc -O2 -shared -fPIC -o trim.so trim-shim.c -lpthread, loaded with LD_PRELOAD.
// Measurement shim only: a thread that calls malloc_trim(0) every TRIM_EVERY_MS (default 2000).
#include <malloc.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>
static void *loop(void *arg) {
    const char *e = getenv("TRIM_EVERY_MS");
    long ms = e ? atol(e) : 2000;
    for (;;) { usleep(ms * 1000); malloc_trim(0); }
    return arg;
}
__attribute__((constructor)) static void start(void) {
    pthread_t t; pthread_create(&t, NULL, loop, NULL); pthread_detach(t);
}
