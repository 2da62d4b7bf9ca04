/* slatframe calibrate's microbenchmarks (slatframe/calibrate.py compiles this at run time).
 *
 *   membench clock N                        ns per dependent integer add (1 cycle each): the clock
 *   membench chase|gups BYTES 4k|2m ORDER N R  ns per access over an anonymous mapping of BYTES
 *
 * ORDER is a file of the chase: for each of BYTES/4096 nodes a uint32 page index (a
 * permutation of the pages) and a uint32 line (0..63); node k lives at page[k] * 4096 +
 * line[k] * 64 and holds the address of node k + 1 (the last, of node 0). The mapping is
 * advised MADV_NOHUGEPAGE (4k) or MADV_HUGEPAGE (2m) and written page by page before any
 * timing. `chase` follows the pointers (each load depends on the one before: latency);
 * `gups` loads the same nodes in the same order from a precomputed address array (the
 * loads are independent: the core overlaps them). Both first go once round the whole
 * chase, then time N accesses in CPU time (CLOCK_PROCESS_CPUTIME_ID), R times, and keep
 * the fastest (other work on the machine only ever adds time). One line of output:
 *   ns=<ns per access> huge=<bytes of the mapping in huge pages (AnonHugePages)>
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define HUGE (2UL << 20)

static double now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

static int fail(const char *what) {
    fprintf(stderr, "membench: %s\n", what);
    return 2;
}

/* Bytes of [start, start + len) in huge pages: AnonHugePages of its mapping in smaps. */
static unsigned long huge_bytes(uintptr_t start) {
    FILE *f = fopen("/proc/self/smaps", "r");
    char line[512];
    int inside = 0;
    unsigned long kb = 0;
    if (!f) return 0;
    while (fgets(line, sizeof line, f)) {
        uintptr_t lo, hi;
        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' ')) {
            inside = lo <= start && start < hi;
        } else if (inside && sscanf(line, "AnonHugePages: %lu kB", &kb) == 1) {
            break;
        }
    }
    fclose(f);
    return kb * 1024;
}

static int clock_mode(long n) {
    volatile uint64_t seed = 1;
    uint64_t x = seed;
    double t0 = now_ns();
    for (long i = 0; i < n; i++) {
        __asm__ volatile("add $1, %0" : "+r"(x));  /* one dependent add a turn */
        __asm__ volatile("add $1, %0" : "+r"(x));
        __asm__ volatile("add $1, %0" : "+r"(x));
        __asm__ volatile("add $1, %0" : "+r"(x));
    }
    double t1 = now_ns();
    seed = x;
    printf("ns=%.6f huge=0\n", (t1 - t0) / (4.0 * n));
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "clock")) return clock_mode(atol(argv[2]));
    if (argc != 7) return fail("usage: membench clock N | membench chase|gups BYTES 4k|2m ORDER N R");
    int chase = !strcmp(argv[1], "chase");
    unsigned long bytes = strtoul(argv[2], 0, 10);
    int huge = !strcmp(argv[3], "2m");
    long n = atol(argv[5]), rounds = atol(argv[6]);
    unsigned long pages = bytes / 4096;
    if (!pages || n <= 0 || rounds <= 0) return fail("BYTES must be at least 4096, N and R positive");

    char *raw = mmap(0, bytes + HUGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) return fail("mmap failed");
    char *base = (char *)(((uintptr_t)raw + HUGE - 1) & ~(HUGE - 1));
    madvise(base, bytes, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
    for (unsigned long p = 0; p < pages; p++) base[p * 4096] = 1;

    FILE *f = fopen(argv[4], "rb");
    uint32_t *order = malloc(pages * 2 * sizeof(uint32_t));
    char **addr = malloc(pages * sizeof(char *));
    if (!f || !order || !addr || fread(order, sizeof(uint32_t), pages * 2, f) != pages * 2)
        return fail("cannot read the order file");
    fclose(f);
    for (unsigned long k = 0; k < pages; k++) {
        if (order[2 * k] >= pages || order[2 * k + 1] >= 64) return fail("the order file names no such node");
        addr[k] = base + (unsigned long)order[2 * k] * 4096 + (unsigned long)order[2 * k + 1] * 64;
    }
    for (unsigned long k = 0; k < pages; k++) *(char **)addr[k] = addr[(k + 1) % pages];

    double best = -1;
    uintptr_t sink = 0;
    char *p = addr[0];
    if (chase) {
        for (unsigned long k = 0; k < pages; k++) p = *(char **)p;
    } else {
        for (unsigned long k = 0; k < pages; k++) sink += (uintptr_t)*(char **)addr[k];
    }
    for (long r = 0; r < rounds; r++) {
        double t0 = now_ns();
        if (chase) {
            for (long i = 0; i < n; i++) p = *(char **)p;
        } else {
            unsigned long k = 0;
            for (long i = 0; i < n; i++) {
                sink += (uintptr_t)*(char **)addr[k];
                if (++k == pages) k = 0;
            }
        }
        double t = now_ns() - t0;
        if (best < 0 || t < best) best = t;
    }
    sink += (uintptr_t)p;
    printf("ns=%.6f huge=%lu sink=%lu\n", best / n, huge_bytes((uintptr_t)base), (unsigned long)(sink & 1));
    return 0;
}
