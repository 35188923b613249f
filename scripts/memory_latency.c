/*
 * Memory latency and memory-level parallelism of a machine, the two figures
 * that bound corecache's item lookups (docs/benchmarks.md, "tenth session").
 *
 * Builds a random cyclic chain of 64-byte lines over SIZE_MB of memory and
 * follows CHAINS independent walks through it at once: with one chain each
 * load waits for the last (the latency of a miss); with more, the misses
 * overlap, as a batch of prefetched lookups does. HUGE=1 advises transparent
 * huge pages (what `-L` does for the item memory), 0 forbids them.
 *
 *   cc -O2 -o memory_latency scripts/memory_latency.c
 *   taskset -c 1 ./memory_latency SIZE_MB HUGE CHAINS     e.g. 16 0 1, 16 0 16
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

#define MAX_CHAINS 64
#define TWO_MB (2UL << 20)

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s SIZE_MB HUGE(0|1) CHAINS(1-%d)\n", argv[0], MAX_CHAINS);
        return 2;
    }
    size_t mb = strtoul(argv[1], NULL, 10);
    int huge = atoi(argv[2]);
    int chains = atoi(argv[3]);
    if (mb == 0 || chains < 1 || chains > MAX_CHAINS) {
        fprintf(stderr, "SIZE_MB must be positive and CHAINS 1-%d\n", MAX_CHAINS);
        return 2;
    }
    size_t lines = mb * 1024 * 1024 / 64;
    char *map = mmap(NULL, lines * 64 + TWO_MB, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (map == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    char *base = (char *)(((uintptr_t)map + TWO_MB - 1) & ~(uintptr_t)(TWO_MB - 1));
    madvise(base, lines * 64, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);

    size_t *order = malloc(lines * sizeof *order);
    if (!order) {
        perror("malloc");
        return 1;
    }
    for (size_t i = 0; i < lines; i++) order[i] = i;
    srand(1);
    for (size_t i = lines - 1; i > 0; i--) {
        size_t j = ((size_t)rand() * RAND_MAX + rand()) % (i + 1);
        size_t t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    for (size_t i = 0; i < lines; i++)
        *(char **)(base + order[i] * 64) = base + order[(i + 1) % lines] * 64;

    char *at[MAX_CHAINS];
    for (int c = 0; c < chains; c++) at[c] = base + order[(lines / chains) * c] * 64;
    long steps = 2000000;
    struct timespec start, end;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (long i = 0; i < steps; i++)
        for (int c = 0; c < chains; c++) at[c] = *(char **)at[c];
    clock_gettime(CLOCK_MONOTONIC, &end);
    uintptr_t sink = 0;
    for (int c = 0; c < chains; c++) sink ^= (uintptr_t)at[c];
    double ns = (end.tv_sec - start.tv_sec) * 1e9 + (end.tv_nsec - start.tv_nsec);
    printf("%zu MB, huge pages %s, %d chains: %.1f ns per load (%lu)\n", mb,
           huge ? "advised" : "off", chains, ns / ((double)steps * chains),
           (unsigned long)(sink & 1));
    return 0;
}
