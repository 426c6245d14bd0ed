/* metrics.c - one JSON object per step, one line each (JSON lines). */
#include <math.h>
#include <string.h>
#include "shardlm/runtime.h"

/* JSON has no NaN/Infinity: write null so every line stays parseable. */
static void num(FILE *f, const char *key, double v, int last)
{
    /* loss and grad_norm with every digit, so runs can be compared bit for bit */
    int exact = !strcmp(key, "loss") || !strcmp(key, "grad_norm");
    if (isfinite(v)) fprintf(f, exact ? "\"%s\":%.17g%s" : "\"%s\":%.9g%s", key, v, last ? "" : ",");
    else fprintf(f, "\"%s\":null%s", key, last ? "" : ",");
}

void slm_metrics_write(FILE *f, const slm_step_metrics *m)
{
    fprintf(f, "{\"step\":%ld,\"steps\":%ld,\"tokens\":%lld,\"matmul\":\"%s\",", m->step, m->steps, m->tokens_seen,
            m->matmul ? m->matmul : "");
    num(f, "loss", m->loss, 0);
    num(f, "lr", m->lr, 0);
    num(f, "grad_norm", m->grad_norm, 0);
    num(f, "tokens_per_s", m->tokens_per_s, 0);
    num(f, "mfu", m->mfu, 0);
    num(f, "step_ms", m->step_ms, 0);
    num(f, "exposed_comm_ms", m->exposed_comm_ms, 0);
    num(f, "peak_rss_mib", m->peak_rss_mib, 0);
    num(f, "comm_bytes", m->comm_bytes, 0);
    num(f, "tp_comm_bytes", m->tp_comm_bytes, 0);
    num(f, "pp_comm_bytes", m->pp_comm_bytes, 0);
    num(f, "ep_comm_ms", m->ep_comm_ms, 0);
    num(f, "ep_comm_bytes", m->ep_comm_bytes, 0);
    num(f, "pipeline_wait_ms", m->pipeline_wait_ms, 0);
    num(f, "val_loss", m->val_loss, 0);
    num(f, "matmul_ms", m->matmul_ms, 0);
    num(f, "attention_ms", m->attention_ms, 0);
    num(f, "elementwise_ms", m->elementwise_ms, 0);
    num(f, "optimizer_ms", m->optimizer_ms, 0);
    num(f, "data_ms", m->data_ms, 0);
    num(f, "overlap", m->overlap_fraction, m->moe_layers == 0 && m->outer_step == 0);
    if (m->outer_step > 0) {
        fprintf(f, "\"island\":%d,\"outer_step\":%ld,\"outer_islands\":%d,", m->island, m->outer_step,
                m->outer_islands);
        num(f, "outer_bytes", m->outer_bytes, 0);
        num(f, "outer_norm", m->outer_norm, 0);
        num(f, "outer_wait_ms", m->outer_wait_ms, 0);
        num(f, "outer_ms", m->outer_ms, m->moe_layers == 0);
    }
    if (m->moe_layers > 0) {
        num(f, "moe_aux_loss", m->moe_aux_loss, 0);
        num(f, "moe_z_loss", m->moe_z_loss, 0);
        fputs("\"moe\":[", f);
        for (int i = 0; i < m->moe_layers; i++) {
            const slm_moe_layer_load *l = &m->moe[i];
            fprintf(f, "%s{\"block\":%d,", i ? "," : "", l->block);
            num(f, "load_min", l->min, 0);
            num(f, "load_max", l->max, 0);
            num(f, "load_cv", l->cv, 0);
            num(f, "dropped", l->dropped, 0);
            num(f, "aux_loss", l->aux, 0);
            num(f, "z_loss", l->z, 1);
            fputs("}", f);
        }
        fputs("]", f);
    }
    fputs("}\n", f);
    fflush(f);
}
