/* llmc.c - initial weights from an llm.c GPT-2 checkpoint (gpt2_124M.bin and the like).
 *
 * The file: 256 int32 header - magic 20240326, version 3 (fp32 parameters), max_seq_len,
 * vocab_size, n_layer, n_head, channels, padded_vocab_size - then the parameters as fp32,
 * tensor after tensor with all layers of a tensor together: wte (Vp,C), wpe (maxT,C),
 * ln1w (L,C), ln1b (L,C), qkvw (L,3C,C), qkvb (L,3C), attprojw (L,C,C), attprojb (L,C),
 * ln2w (L,C), ln2b (L,C), fcw (L,4C,C), fcb (L,4C), fcprojw (L,C,4C), fcprojb (L,C),
 * lnfw (C), lnfb (C). Every shardlm tensor is one contiguous range of that file (wte and
 * wpe: their first rows), so a rank copies just the ranges it holds. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include "shardlm/ckpt.h"

#define LLMC_MAGIC 20240326
#define LLMC_HEADER 256

struct slm_llmc {
    void *map;
    size_t len;
    const float *params;
    int maxT, V, L, NH, C, Vp;
};

slm_status slm_llmc_open(const char *path, const slm_model_config *cfg, slm_llmc_t *out)
{
    *out = NULL;
    int fd = open(path, O_RDONLY);
    SLM_CHECK(fd >= 0, SLM_ERR_IO, "model.init_from: cannot open %s: %s", path, strerror(errno));
    struct stat st;
    fstat(fd, &st);
    size_t len = (size_t)st.st_size;
    if (len < LLMC_HEADER * 4) {
        close(fd);
        return SLM_ERROR(SLM_ERR_FORMAT, "%s: %zu bytes is shorter than the llm.c header", path, len);
    }
    void *map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    SLM_CHECK(map != MAP_FAILED, SLM_ERR_IO, "cannot map %s: %s", path, strerror(errno));
    const int32_t *h = map;
    slm_status s = SLM_OK;
    if (h[0] != LLMC_MAGIC)
        s = SLM_ERROR(SLM_ERR_FORMAT, "%s: bad magic %d (an llm.c GPT-2 checkpoint starts with %d)", path, h[0],
                      LLMC_MAGIC);
    else if (h[1] != 3)
        s = SLM_ERROR(SLM_ERR_FORMAT, "%s: llm.c checkpoint version %d; only version 3 (fp32) is read", path, h[1]);
    else if (h[4] != cfg->n_layer || h[5] != cfg->n_head || h[6] != cfg->d_model || h[3] != cfg->vocab_size)
        s = SLM_ERROR(SLM_ERR_CONFIG,
                      "%s holds n_layer=%d n_head=%d d_model=%d vocab_size=%d; the run has model.n_layer=%d "
                      "model.n_head=%d model.d_model=%d model.vocab_size=%d", path, h[4], h[5], h[6], h[3],
                      cfg->n_layer, cfg->n_head, cfg->d_model, cfg->vocab_size);
    else if (cfg->seq_len > h[2])
        s = SLM_ERROR(SLM_ERR_CONFIG, "%s has positions for %d tokens; model.seq_len = %d is longer", path, h[2],
                      cfg->seq_len);
    else if (h[7] < h[3])
        s = SLM_ERROR(SLM_ERR_FORMAT, "%s: padded vocabulary %d is smaller than the vocabulary %d", path, h[7], h[3]);
    if (s == SLM_OK) {
        size_t L = (size_t)h[4], C = (size_t)h[6];
        size_t n = (size_t)h[7] * C + (size_t)h[2] * C + L * (12 * C * C + 13 * C) + 2 * C;
        if (len != LLMC_HEADER * 4 + 4 * n)
            s = SLM_ERROR(SLM_ERR_FORMAT, "%s: %zu bytes, but its header describes %zu parameters (%zu bytes)", path,
                          len, n, LLMC_HEADER * 4 + 4 * n);
    }
    slm_llmc_t m = s == SLM_OK ? calloc(1, sizeof *m) : NULL;
    if (s == SLM_OK && !m) s = SLM_ERROR(SLM_ERR_NOMEM, "out of memory");
    if (s != SLM_OK) {
        munmap(map, len);
        return s;
    }
    m->map = map;
    m->len = len;
    m->params = (const float *)((const char *)map + LLMC_HEADER * 4);
    m->maxT = h[2];
    m->V = h[3];
    m->L = h[4];
    m->NH = h[5];
    m->C = h[6];
    m->Vp = h[7];
    *out = m;
    return SLM_OK;
}

void slm_llmc_close(slm_llmc_t *mp)
{
    if (!*mp) return;
    munmap((*mp)->map, (*mp)->len);
    free(*mp);
    *mp = NULL;
}

/* Where tensor t of shardlm's table starts in the llm.c parameter array. */
static size_t source_offset(const slm_llmc_t m, const slm_tensor_info *t)
{
    const size_t L = (size_t)m->L, C = (size_t)m->C;
    /* sizes per layer of the twelve block tensors, in llm.c's order */
    static const char *names[12] = {"ln1.weight", "ln1.bias", "attn.qkv.weight", "attn.qkv.bias",
                                    "attn.proj.weight", "attn.proj.bias", "ln2.weight", "ln2.bias",
                                    "mlp.fc.weight", "mlp.fc.bias", "mlp.proj.weight", "mlp.proj.bias"};
    const size_t per_layer[12] = {C, C, 3 * C * C, 3 * C, C * C, C, C, C, 4 * C * C, 4 * C, 4 * C * C, C};
    size_t base = (size_t)m->Vp * C + (size_t)m->maxT * C; /* after wte and wpe */
    if (!strcmp(t->name, "wte")) return 0;
    if (!strcmp(t->name, "wpe")) return (size_t)m->Vp * C;
    size_t blocks_end = base;
    for (int k = 0; k < 12; k++) blocks_end += L * per_layer[k];
    if (!strcmp(t->name, "lnf.weight")) return blocks_end;
    if (!strcmp(t->name, "lnf.bias")) return blocks_end + C;
    int layer = t->block;
    const char *leaf = strchr(strchr(t->name, '.') + 1, '.') + 1; /* after "blocks.<l>." */
    for (int k = 0; k < 12; k++) {
        if (!strcmp(leaf, names[k])) return base + (size_t)layer * per_layer[k];
        base += L * per_layer[k];
    }
    return 0; /* not reached: the table has no other names */
}

void slm_llmc_fill(slm_llmc_t m, const slm_tensor_info *tensors, int ntensors, size_t offset, size_t count,
                   float *dst)
{
    for (int i = 0; i < ntensors; i++) {
        const slm_tensor_info *t = &tensors[i];
        size_t lo, hi;
        if (!slm_tensor_overlap(t, offset, count, &lo, &hi)) continue;
        const float *src = m->params + source_offset(m, t);
        if (!t->tp_split) memcpy(dst + (lo - offset), src + (lo - t->offset), (hi - lo) * sizeof(float));
        else /* this rank's rows or columns of the tensor */
            for (size_t j = lo; j < hi; j++) dst[j - offset] = src[slm_tensor_global_index(t, j - t->offset)];
    }
}
