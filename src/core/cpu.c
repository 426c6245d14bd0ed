/* cpu.c - the CPU's model and vector instructions (shardlm/cpu.h). /proc/cpuinfo's flags
 * are what the kernel and hypervisor expose, which is what programs may use; the
 * compiler's own probe stands in where there is no /proc. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "shardlm/cpu.h"

static slm_cpu_info info;
static pthread_once_t once = PTHREAD_ONCE_INIT;

/* Whether the space-separated list holds the word. */
static int has_word(const char *list, const char *word)
{
    size_t n = strlen(word);
    for (const char *p = list; (p = strstr(p, word)); p += n)
        if ((p == list || p[-1] == ' ' || p[-1] == '\t') && (p[n] == ' ' || p[n] == '\n' || p[n] == '\0')) return 1;
    return 0;
}

/* "key<tabs>: value" -> value without its newline, when the line's key is key. */
static const char *value_of(const char *line, const char *key)
{
    size_t n = strlen(key);
    if (strncmp(line, key, n)) return NULL;
    const char *p = line + n;
    while (*p == ' ' || *p == '\t') p++;
    if (*p != ':') return NULL;
    for (p++; *p == ' '; p++) {}
    return p;
}

static void read_info(void)
{
    snprintf(info.model, sizeof info.model, "unknown");
    int got_flags = 0;
    FILE *f = fopen("/proc/cpuinfo", "r");
    char *line = NULL;
    size_t cap = 0;
    while (f && getline(&line, &cap, f) > 0) {
        const char *v;
        line[strcspn(line, "\n")] = '\0';
        if ((v = value_of(line, "model name"))) snprintf(info.model, sizeof info.model, "%s", v);
        else if ((v = value_of(line, "vendor_id"))) snprintf(info.vendor, sizeof info.vendor, "%s", v);
        else if ((v = value_of(line, "cpu family"))) info.family = atoi(v);
        else if ((v = value_of(line, "model"))) info.model_id = atoi(v);
        else if ((v = value_of(line, "flags"))) {
            info.avx = has_word(v, "avx");
            info.avx2 = has_word(v, "avx2");
            info.fma = has_word(v, "fma");
            info.avx512 = has_word(v, "avx512f") && has_word(v, "avx512bw") && has_word(v, "avx512dq") &&
                          has_word(v, "avx512vl");
            info.avx512_bf16 = has_word(v, "avx512_bf16");
            info.amx = has_word(v, "amx_tile");
            got_flags = 1;
            break; /* the first processor's block says it all */
        }
    }
    free(line);
    if (f) fclose(f);
#if defined(__x86_64__) || defined(__i386__)
    if (!got_flags) {
        __builtin_cpu_init();
        info.avx = __builtin_cpu_supports("avx");
        info.avx2 = __builtin_cpu_supports("avx2");
        info.fma = __builtin_cpu_supports("fma");
        info.avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
    }
#else
    (void)got_flags;
#endif
}

const slm_cpu_info *slm_cpu_get(void)
{
    pthread_once(&once, read_info);
    return &info;
}

void slm_cpu_describe(char *buf, size_t len)
{
    const slm_cpu_info *c = slm_cpu_get();
    char isa[96] = "";
    const char *names[] = {"avx", "avx2", "fma", "avx512", "avx512_bf16", "amx"};
    const int have[] = {c->avx && !c->avx2, c->avx2, c->fma, c->avx512, c->avx512_bf16, c->amx};
    for (int i = 0; i < 6; i++)
        if (have[i]) snprintf(isa + strlen(isa), sizeof isa - strlen(isa), "%s%s", isa[0] ? " " : "", names[i]);
    snprintf(buf, len, "%s (%s family %d model %d; %s)", c->model, c->vendor[0] ? c->vendor : "?", c->family,
             c->model_id, isa[0] ? isa : "no avx");
}
