/* shardlm/cpu.h - what CPU this is: the model name and the vector instructions the
 * operating system lets programs use, for the start-up log, the benchmarks and the choice
 * of OpenBLAS kernels. Local. */
#ifndef SHARDLM_CPU_H
#define SHARDLM_CPU_H

#include <stddef.h>

typedef struct slm_cpu_info {
    char model[128];   /* "AMD EPYC 9R14 96-Core Processor", or "unknown" */
    char vendor[16];   /* "GenuineIntel", "AuthenticAMD", ... */
    int family, model_id;
    int avx, avx2, fma;
    int avx512;        /* AVX-512 F, BW, DQ and VL together: what OpenBLAS's SkylakeX kernels use */
    int avx512_bf16, amx;
} slm_cpu_info;

/* Read once (from /proc/cpuinfo, else the compiler's CPU probe) and kept. */
const slm_cpu_info *slm_cpu_get(void);

/* One line for logs: "AMD EPYC (AuthenticAMD family 25 model 1; avx2 fma)". */
void slm_cpu_describe(char *buf, size_t len);

#endif
