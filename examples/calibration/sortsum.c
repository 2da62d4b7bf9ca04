/* Calibration workload: sort 32,768 pseudo-random ints (128 KiB) with qsort, then
   sum a strided walk over them. Deterministic; prints the checksum. */
#include <stdio.h>
#include <stdlib.h>
static int cmp(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}
int main(void) {
    enum { N = 32768 };
    static int v[N];
    unsigned s = 12345;
    for (int i = 0; i < N; i++) { s = s * 1103515245u + 12345u; v[i] = (int)(s >> 1); }
    qsort(v, N, sizeof v[0], cmp);
    long long sum = 0;
    for (int k = 0; k < 8; k++)
        for (int i = k; i < N; i += 8) sum += v[i];
    printf("%lld\n", sum);
    return 0;
}
