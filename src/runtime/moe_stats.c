/* moe_stats.c - the routing statistics of MoE blocks in a run: summed over the ranks
 * after each step, they move the selection biases (train.moe_balance = bias), give the
 * auxiliary and z losses of the step, and the per-block load the log and the metrics
 * report. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "shardlm/activity.h"
#include "trainer_impl.h"

slm_status slm_trainer_moe_init(trainer *tr)
{
    const slm_model_config *mc = slm_model_config_of(tr->model);
    tr->moe_len = slm_model_moe_stats_len(mc);
    if (!tr->moe_len) return SLM_OK;
    const size_t ns = (size_t)tr->conf->train.steps + 1, nb = (size_t)slm_model_num_moe_layers(mc) * mc->n_experts;
    tr->moe_stats = calloc(tr->moe_len, sizeof(double));
    tr->moe_aux = calloc(ns, sizeof(double));
    tr->moe_z = calloc(ns, sizeof(double));
    tr->moe_bias = calloc(nb, sizeof(float));
    if (tr->conf->log.dump[0] && mc->moe.balance == SLM_MOE_BALANCE_BIAS)
        tr->moe_bias_hist = calloc(ns * nb, sizeof(float));
    SLM_CHECK(tr->moe_stats && tr->moe_aux && tr->moe_z && tr->moe_bias &&
                  (tr->moe_bias_hist || !tr->conf->log.dump[0] || mc->moe.balance != SLM_MOE_BALANCE_BIAS),
              SLM_ERR_NOMEM, "cannot allocate the MoE statistics");
    return SLM_OK;
}

void slm_trainer_moe_free(trainer *tr)
{
    free(tr->moe_stats);
    free(tr->moe_aux);
    free(tr->moe_z);
    free(tr->moe_bias);
    free(tr->moe_bias_hist);
}

void slm_trainer_moe_discard(trainer *tr)
{
    if (tr->moe_len) slm_model_moe_take_stats(tr->model, tr->moe_stats);
}

/* The whole model's biases on every rank: each pipeline stage holds its own blocks'. */
void slm_trainer_moe_gather_bias(trainer *tr)
{
    if (!tr->moe_len) return;
    const slm_model_config *mc = slm_model_config_of(tr->model);
    const int n = slm_model_num_moe_layers(mc) * mc->n_experts;
    slm_model_moe_get_bias(tr->model, tr->moe_bias);
    if (slm_mesh_pp_size(tr->mesh) > 1)
        MPI_Allreduce(MPI_IN_PLACE, tr->moe_bias, n, MPI_FLOAT, MPI_SUM, slm_mesh_pp_comm(tr->mesh));
}

void slm_trainer_moe_scatter_bias(trainer *tr)
{
    if (tr->moe_len) slm_model_moe_set_bias(tr->model, tr->moe_bias);
}

void slm_trainer_moe_step(trainer *tr, long step)
{
    if (!tr->moe_len) return;
    const slm_model_config *mc = slm_model_config_of(tr->model);
    const int E = mc->n_experts, nmoe = slm_model_num_moe_layers(mc);
    slm_model_moe_take_stats(tr->model, tr->moe_stats);
    /* the ranks of a tensor-parallel group routed the same tokens: count them once */
    if (slm_mesh_tp_rank(tr->mesh) > 0) memset(tr->moe_stats, 0, tr->moe_len * sizeof(double));
    slm_activity_set("MPI_Allreduce: MoE routing statistics", -1);
    MPI_Allreduce(MPI_IN_PLACE, tr->moe_stats, (int)tr->moe_len, MPI_DOUBLE, MPI_SUM, slm_mesh_world(tr->mesh));
    double aux = 0.0, z = 0.0;
    for (int li = 0; li < nmoe; li++) {
        const double *s = tr->moe_stats + (size_t)li * SLM_MOE_STAT_LEN(E);
        const double micro = s[E + SLM_MOE_STAT_MICRO] > 0 ? s[E + SLM_MOE_STAT_MICRO] : 1.0;
        aux += s[E + SLM_MOE_STAT_AUX] / micro;
        z += s[E + SLM_MOE_STAT_Z] / micro;
    }
    tr->moe_aux[step] = aux;
    tr->moe_z[step] = z;
    if (tr->moe_bias_hist) { /* the biases this step routed with */
        slm_trainer_moe_gather_bias(tr);
        memcpy(tr->moe_bias_hist + (size_t)step * nmoe * E, tr->moe_bias, (size_t)nmoe * E * sizeof(float));
    }
    slm_model_moe_update_bias(tr->model, tr->moe_stats);
}

void slm_trainer_moe_summary(const trainer *tr, slm_moe_layer_load *out)
{
    const slm_model_config *mc = slm_model_config_of(tr->model);
    const int E = mc->n_experts, nmoe = slm_model_num_moe_layers(mc);
    for (int li = 0; li < nmoe; li++) {
        const double *s = tr->moe_stats + (size_t)li * SLM_MOE_STAT_LEN(E);
        double sum = 0.0, sq = 0.0, lo = INFINITY, hi = 0.0;
        for (int e = 0; e < E; e++) {
            sum += s[e];
            lo = s[e] < lo ? s[e] : lo;
            hi = s[e] > hi ? s[e] : hi;
        }
        const double mean = sum / E;
        for (int e = 0; e < E; e++) sq += (s[e] - mean) * (s[e] - mean);
        const double micro = s[E + SLM_MOE_STAT_MICRO] > 0 ? s[E + SLM_MOE_STAT_MICRO] : 1.0;
        out[li] = (slm_moe_layer_load){(li + 1) * mc->moe_every - 1,
                                       mean > 0 ? lo / mean : 0.0,
                                       mean > 0 ? hi / mean : 0.0,
                                       mean > 0 ? sqrt(sq / E) / mean : 0.0,
                                       sum > 0 ? s[E + SLM_MOE_STAT_DROPPED] / sum : 0.0,
                                       s[E + SLM_MOE_STAT_AUX] / micro,
                                       s[E + SLM_MOE_STAT_Z] / micro};
    }
}

void slm_trainer_moe_log(const trainer *tr, long step)
{
    if (!tr->moe_len || tr->rank != 0) return;
    const slm_model_config *mc = slm_model_config_of(tr->model);
    const int nmoe = slm_model_num_moe_layers(mc);
    slm_moe_layer_load load[nmoe];
    slm_trainer_moe_summary(tr, load);
    int worst = 0;
    double cv = 0.0, dropped = 0.0;
    for (int li = 0; li < nmoe; li++) {
        cv += load[li].cv / nmoe;
        dropped += load[li].dropped / nmoe;
        if (load[li].cv > load[worst].cv) worst = li;
    }
    printf("moe       step %ld | aux %.4f | z %.4f | load cv %.3f (block %d: cv %.3f, min %.2f max %.2f of the "
           "mean) | dropped %.2f%%\n",
           step + 1, tr->moe_aux[step], tr->moe_z[step], cv, load[worst].block, load[worst].cv, load[worst].min,
           load[worst].max, 100.0 * dropped);
}
