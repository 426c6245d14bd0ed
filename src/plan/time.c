/* time.c - predicted step time of a layout from a calibration of the machine. */
#include <math.h>
#include <string.h>
#include "shardlm/plan.h"
#include "plan_impl.h"

slm_status slm_calibration_load(const char *path, slm_calibration *cal)
{
    static const char *const keys[] = {"gflops_per_rank", "gemm_gflops", "latency_s", "bandwidth_bytes_per_s",
                                       "allreduce_bus_bytes_per_s", "ranks", "nodes", "threads"};
    double v[8];
    SLM_CALL(slm_plan_json_numbers(path, keys, 8, v, "write the file with shardlm bench calibrate"));
    SLM_CHECK(v[0] > 0 && v[1] > 0 && v[5] >= 1, SLM_ERR_FORMAT,
              "%s: gflops_per_rank, gemm_gflops and ranks must be positive", path);
    SLM_CHECK(v[5] < 2 || (v[2] > 0 && v[3] > 0 && v[4] > 0), SLM_ERR_FORMAT,
              "%s: a calibration of several ranks needs positive latency and bandwidths", path);
    *cal = (slm_calibration){v[0], v[1], v[2], v[3], v[4], (int)v[5], (int)v[6], (int)v[7]};
    return SLM_OK;
}

/* Ring all-reduces of `bytes` in all over p ranks, in `n` collectives: 2 (p-1)/p of the
 * bytes through the bus, and 2 (p-1) message latencies each. */
static double allreduce_s(double bytes, int n, int p, const slm_calibration *cal)
{
    if (p < 2) return 0;
    return 2.0 * (p - 1) / p * bytes / cal->allreduce_bus_Bps + 2.0 * (p - 1) * n * cal->latency_s;
}

/* The data-parallel traffic of one step, in halves of an all-reduce of the rank's
 * parameters (one reduce-scatter or all-gather each): `volume` of them through the bus,
 * `messages` collectives per bucket. */
static void dp_halves(const slm_plan_layout *l, const slm_plan_memory *mem, int micro_steps, double *volume,
                      double *messages)
{
    const double M = micro_steps;
    switch (l->zero_stage) {
    case 2: *volume = *messages = M + 1; break;
    case 3:
        *volume = M * (3.0 - mem->embed_params / mem->nparams);
        *messages = 3.0 * M;
        break;
    default: *volume = *messages = 2; break;
    }
}

void slm_plan_step_time(const slm_model_config *cfg, const slm_plan_layout *l, const slm_plan_memory *mem,
                        const slm_calibration *cal, slm_plan_time *out)
{
    const double T = cfg->seq_len, C = cfg->d_model;
    const int m = l->global_batch / (l->micro_batch * l->dp); /* micro-batches per step */
    const double tokens = (double)l->global_batch * T;
    out->compute_s = slm_model_flops_per_token(cfg) * tokens / ((double)l->dp * l->tp * l->pp) /
                     (cal->gflops_per_rank * 1e9);
    out->bubble_s = out->compute_s * (l->pp - 1) / m;
    const double wire = mem->nparams * (l->bf16 ? 2.0 : 4.0); /* the gradient (and gathered) bytes */
    double volume, messages;
    dp_halves(l, mem, m, &volume, &messages);
    const int p = l->dp;
    out->dp_comm_s = p < 2 ? 0
                           : volume * (p - 1) / p * wire / cal->allreduce_bus_Bps +
                                 messages * (p - 1) * mem->buckets * cal->latency_s;
    const double act = (double)l->micro_batch * T * C * 4.0;
    const int layers = (cfg->n_layer + l->pp - 1) / l->pp;
    out->tp_comm_s = 4.0 * layers * m * allreduce_s(act, 1, l->tp, cal);
    out->pp_comm_s = l->pp > 1 ? 2.0 * m * (cal->latency_s + act / cal->bandwidth_Bps) : 0;
    const double rest = out->compute_s + out->bubble_s + out->tp_comm_s + out->pp_comm_s;
    out->step_s = rest + out->dp_comm_s;
    out->overlapped_s = rest + fmax(0.0, out->dp_comm_s - 2.0 / 3.0 * out->compute_s);
}
