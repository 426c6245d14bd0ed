/* plan_cmd.c - `shardlm plan`: compute-optimal model and data size for a budget under a
 * loss law, a GPT-2 shape of that size, the memory per rank of a layout, and the layouts
 * that fit a node. Arithmetic only; rank 0 prints. Formulas: docs/scaling.md. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cli.h"
#include "shardlm/conf.h"
#include "shardlm/plan.h"
#include "shardlm/runtime.h"

static const char usage[] =
    "usage: shardlm plan [CONFIG.ini] [section.key=value ...] [options]\n"
    "  --law NAME|FILE.json      loss law: hoffmann (default), besiroglu, or a fitted one\n"
    "  --flops C                 compute budget in FLOPs: the compute-optimal N and D, and a shape\n"
    "  --node-hours H --node-gflops R   the budget as H node-hours at R GFLOP/s per node (model FLOPs);\n"
    "                            without --node-gflops, the rate a --calibration measured per node\n"
    "  --params N                a model size: its compute-optimal tokens and budget, and a shape\n"
    "  --tokens D                with --params: the loss the law predicts for N and D\n"
    "  --head-size K --aspect A  shape search: d_model a multiple of K (64), d_model/n_layer near A (64)\n"
    "  --ranks N                 ranks of the layout (1); the config's parallel.* and train.* give the rest\n"
    "  --ranks-per-node R --memory-per-node GIB   list every layout of the ranks that fits a node\n"
    "  --calibration FILE        predict step and wall time from `shardlm bench calibrate`'s FILE\n"
    "  --json                    one JSON object instead of text (docs/scaling.md lists the fields)\n"
    "Without --flops/--node-hours/--params, the model is the configuration's.\n"
    "       shardlm plan fit RUNS.csv [--delta D] [--out LAW.json] [--json]\n"
    "  fit L(N, D) to runs (CSV columns params, tokens, loss); the JSON it writes is a --law\n";

typedef struct plan_args {
    const char *law, *calibration;
    double flops, node_hours, node_gflops, params, tokens, aspect, memory_per_node_gib;
    int head_size, ranks, ranks_per_node, json;
} plan_args;

/* A positive number (1e21 and 1.5e9 forms), or an error naming the option. */
static slm_status number(const char *opt, const char *text, double *out)
{
    char *end = NULL;
    double v = strtod(text, &end);
    SLM_CHECK(end != text && !*end && isfinite(v) && v > 0, SLM_ERR_ARG, "%s '%s': expected a positive number", opt,
              text);
    *out = v;
    return SLM_OK;
}

static slm_status whole(const char *opt, const char *text, int *out)
{
    double v = 0;
    SLM_CALL(number(opt, text, &v));
    SLM_CHECK(v == floor(v) && v <= 1 << 30, SLM_ERR_ARG, "%s '%s': expected a whole number", opt, text);
    *out = (int)v;
    return SLM_OK;
}

static slm_status parse(int argc, char **argv, plan_args *a, slm_conf *c)
{
    *a = (plan_args){"hoffmann", NULL, 0, 0, 0, 0, 0, 64, 0, 64, 1, 0, 0};
    int i = 1;
    SLM_CALL(slm_conf_from_args(c, argc, argv, &i));
    for (; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(o, "--json")) {
            a->json = 1;
            continue;
        }
        if (o[0] != '-') {
            SLM_CALL(slm_conf_set(c, o));
            continue;
        }
        SLM_CHECK(v, SLM_ERR_ARG, "%s needs a value", o);
        if (!strcmp(o, "--law")) a->law = v;
        else if (!strcmp(o, "--calibration")) a->calibration = v;
        else if (!strcmp(o, "--flops")) SLM_CALL(number(o, v, &a->flops));
        else if (!strcmp(o, "--node-hours")) SLM_CALL(number(o, v, &a->node_hours));
        else if (!strcmp(o, "--node-gflops")) SLM_CALL(number(o, v, &a->node_gflops));
        else if (!strcmp(o, "--params")) SLM_CALL(number(o, v, &a->params));
        else if (!strcmp(o, "--tokens")) SLM_CALL(number(o, v, &a->tokens));
        else if (!strcmp(o, "--aspect")) SLM_CALL(number(o, v, &a->aspect));
        else if (!strcmp(o, "--memory-per-node")) SLM_CALL(number(o, v, &a->memory_per_node_gib));
        else if (!strcmp(o, "--head-size")) SLM_CALL(whole(o, v, &a->head_size));
        else if (!strcmp(o, "--ranks")) SLM_CALL(whole(o, v, &a->ranks));
        else if (!strcmp(o, "--ranks-per-node")) SLM_CALL(whole(o, v, &a->ranks_per_node));
        else return SLM_ERROR(SLM_ERR_ARG, "unknown option '%s' (shardlm plan --help)", o);
        i++;
    }
    SLM_CHECK(!a->node_gflops || a->node_hours, SLM_ERR_ARG, "--node-gflops goes with --node-hours");
    SLM_CHECK(!a->node_hours || a->node_gflops || a->calibration, SLM_ERR_ARG,
              "--node-hours needs --node-gflops or a --calibration to take the rate per node from");
    SLM_CHECK((a->flops > 0) + (a->node_hours > 0) + (a->params > 0) <= 1, SLM_ERR_ARG,
              "give one of --flops, --node-hours or --params");
    SLM_CHECK(!a->tokens || a->params, SLM_ERR_ARG, "--tokens goes with --params");
    SLM_CHECK(!a->memory_per_node_gib || a->ranks_per_node, SLM_ERR_ARG, "--memory-per-node needs --ranks-per-node");
    SLM_CHECK(!a->ranks_per_node || a->ranks % a->ranks_per_node == 0, SLM_ERR_ARG,
              "--ranks %d is not a multiple of --ranks-per-node %d", a->ranks, a->ranks_per_node);
    SLM_CALL(slm_conf_resolve_model(c)); /* the model a Hugging Face model.init_from describes */
    return slm_conf_validate(c, a->ranks);
}

static slm_plan_layout layout_of(const slm_conf *c, int ranks, int tp, int pp, int zero_stage)
{
    return (slm_plan_layout){ranks / (tp * pp),      tp, pp, zero_stage, !strcmp(c->train.precision, "bf16"),
                             c->train.micro_batch, c->train.global_batch, c->train.threads > 0 ? c->train.threads : 1,
                             c->parallel.bucket_mb, slm_conf_optim(c), c->parallel.ep};
}

static void print_memory_text(const slm_plan_memory *m, const slm_plan_layout *l, const slm_model_config *mc)
{
    const double mib = 1024.0 * 1024.0;
    printf("memory    per rank at dp %d x tp %d x pp %d, zero stage %d, %s, micro_batch %d%s: params %.1f + grads "
           "%.1f + %s %.1f + gathered %.1f + gradient buffers %.1f + activations %.1f = %.1f MiB (pipeline "
           "stage %d)\n",
           l->dp, l->tp, l->pp, l->zero_stage, l->bf16 ? "bf16" : "fp32", l->micro_batch,
           mc->recompute ? ", recompute" : "", m->params / mib, m->grads / mib, l->optim.name, m->optimizer / mib,
           m->gathered / mib,
           m->grad_buffers / mib, m->activations / mib, m->total / mib, m->stage);
}

/* Every (tp, pp, zero stage) of the ranks that `shardlm train` accepts for the model and
 * batch, with tp within a node, whose ranks fit a node's memory; printed (or appended to the JSON) in order of
 * less communication first: pp, then tp, then zero stage ascending. */
static int fitting_layouts(const slm_conf *c, const slm_model_config *mc, const plan_args *a, int json)
{
    int n = 0;
    const double limit = a->memory_per_node_gib * 1024.0 * 1024.0 * 1024.0;
    for (int pp = 1; pp <= a->ranks && pp <= mc->n_layer; pp++)
        for (int tp = 1; tp <= a->ranks_per_node; tp++) {
            if (a->ranks % (tp * pp) || a->ranks_per_node % tp || slm_model_config_check(mc, tp) != SLM_OK) continue;
            for (int z = 0; z <= 3; z++) {
                slm_conf lc = *c; /* the layout must be one `shardlm train` accepts */
                lc.parallel.tp = tp, lc.parallel.pp = pp, lc.parallel.zero_stage = z;
                const int dp = a->ranks / (tp * pp); /* a pipeline runs all of a step's micro-batches */
                if (pp > 1 && c->train.global_batch % (c->train.micro_batch * dp) == 0)
                    lc.parallel.microbatches = c->train.global_batch / (c->train.micro_batch * dp);
                lc.model.n_layer = mc->n_layer, lc.model.n_head = mc->n_head, lc.model.d_model = mc->d_model;
                lc.model.n_kv_head = mc->n_kv_head, lc.model.ffn_hidden = mc->ffn_hidden;
                if (slm_conf_validate(&lc, a->ranks) != SLM_OK) continue;
                slm_plan_layout l = layout_of(c, a->ranks, tp, pp, z);
                slm_plan_memory m;
                if (slm_plan_memory_for(mc, &l, &m) != SLM_OK) continue;
                const double node = m.total * a->ranks_per_node;
                if (node > limit) continue;
                if (json)
                    printf("%s{\"dp\":%d,\"tp\":%d,\"pp\":%d,\"zero_stage\":%d,\"bytes_per_rank\":%.0f,"
                           "\"bytes_per_node\":%.0f}",
                           n ? "," : "", l.dp, tp, pp, z, m.total, node);
                else
                    printf("          dp %d x tp %d x pp %d, zero stage %d: %.1f MiB per rank, %.2f GiB per node\n",
                           l.dp, tp, pp, z, m.total / 1048576.0, node / 1073741824.0);
                n++;
            }
        }
    return n;
}

/* Everything `plan` prints, worked out the same way on every rank. */
typedef struct plan_result {
    slm_loss_law law;
    slm_model_config mc;
    slm_plan_shape shape;
    double C, N_opt, D_opt;   /* the budget and its optimum (C = 0: no budget given) */
    double N, D_for_N, C_for_N; /* the model size asked about, its optimal tokens and budget */
    double D;                  /* the tokens the loss is predicted for */
    slm_plan_layout lay;
    slm_plan_memory mem;
    int timed;                 /* with a calibration: */
    slm_calibration cal;
    slm_plan_time time;
    double steps;              /* optimizer steps to train D tokens */
    double node_gflops;        /* with --node-hours: the rate per node, given or calibrated */
} plan_result;

static slm_status compute(const plan_args *a, const slm_conf *c, plan_result *r)
{
    const slm_loss_law *b = slm_law_builtin(a->law);
    if (b) r->law = *b;
    else SLM_CALL(slm_law_load(a->law, &r->law));
    r->mc = slm_conf_model(c);
    slm_model_config *mc = &r->mc;
    r->timed = a->calibration != NULL;
    if (r->timed) SLM_CALL(slm_calibration_load(a->calibration, &r->cal));
    /* the sizes: from the budget, from --params, or the configuration's model */
    r->C = a->flops, r->N_opt = r->D_opt = 0;
    if (a->node_hours) { /* given, or the training rate the calibration measured per node */
        r->node_gflops = a->node_gflops ? a->node_gflops
                                        : r->cal.gflops_per_rank * r->cal.ranks / (r->cal.nodes > 0 ? r->cal.nodes : 1);
        r->C = a->node_hours * 3600.0 * r->node_gflops * 1e9;
    }
    if (r->C > 0) slm_law_optimum(&r->law, r->C, &r->N_opt, &r->D_opt);
    const double target = a->params ? a->params : r->N_opt;
    r->shape = (slm_plan_shape){*mc, slm_model_params_of(mc)};
    if (target > 0) {
        SLM_CALL(slm_plan_shape_for(target, mc, a->head_size, a->aspect, &r->shape));
        *mc = r->shape.model;
    }
    /* the size asked about, its own compute-optimal tokens and budget, and the tokens to predict at */
    r->N = a->params ? a->params : r->shape.params;
    r->C_for_N = slm_law_budget_for(&r->law, r->N);
    r->D_for_N = r->C_for_N / (6.0 * r->N);
    r->D = a->tokens      ? a->tokens
           : r->C > 0     ? r->C / (6.0 * r->shape.params)
           : a->params    ? r->D_for_N
                          : (double)c->train.steps * c->train.global_batch * c->model.seq_len;
    r->lay = layout_of(c, a->ranks, c->parallel.tp, c->parallel.pp, c->parallel.zero_stage);
    SLM_CALL(slm_plan_memory_for(mc, &r->lay, &r->mem));
    if (r->timed) {
        slm_plan_step_time(mc, &r->lay, &r->mem, &r->cal, &r->time);
        r->steps = ceil(r->D / ((double)c->train.global_batch * mc->seq_len));
    }
    return SLM_OK;
}

static void print_json(const plan_args *a, const slm_conf *c, const plan_result *r)
{
    const slm_loss_law *l = &r->law;
    const slm_model_config *mc = &r->mc;
    const slm_plan_memory *m = &r->mem;
    printf("{\"law\":{\"name\":\"%s\",\"E\":%.17g,\"A\":%.17g,\"B\":%.17g,\"alpha\":%.17g,\"beta\":%.17g},", l->name,
           l->E, l->A, l->B, l->alpha, l->beta);
    if (a->node_hours)
        printf("\"node_hours\":%.17g,\"node_gflops\":%.17g,", a->node_hours, r->node_gflops);
    if (r->C > 0)
        printf("\"budget_flops\":%.17g,\"optimum\":{\"params\":%.17g,\"tokens\":%.17g,\"loss\":%.17g},", r->C, r->N_opt,
               r->D_opt, slm_law_loss(l, r->N_opt, r->D_opt));
    printf("\"model\":{\"arch\":\"%s\",\"n_layer\":%d,\"n_head\":%d,\"n_kv_head\":%d,\"d_model\":%d,"
           "\"ffn_hidden\":%d,\"vocab_size\":%d,\"seq_len\":%d,\"params\":%.17g,\"flops_per_token\":%.17g},",
           mc->arch, mc->n_layer, mc->n_head, mc->n_kv_head, mc->d_model, mc->ffn_hidden, mc->vocab_size, mc->seq_len,
           r->shape.params,
           slm_model_flops_per_token(mc));
    printf("\"params\":%.17g,\"optimal_tokens\":%.17g,\"optimal_budget_flops\":%.17g,\"tokens\":%.17g,\"loss\":%.17g,",
           r->N, r->D_for_N, r->C_for_N, r->D, slm_law_loss(l, r->N, r->D));
    printf("\"layout\":{\"ranks\":%d,\"dp\":%d,\"tp\":%d,\"pp\":%d,\"zero_stage\":%d,\"precision\":\"%s\","
           "\"micro_batch\":%d,\"recompute\":%s,\"buckets\":%d},",
           a->ranks, r->lay.dp, r->lay.tp, r->lay.pp, r->lay.zero_stage, r->lay.bf16 ? "bf16" : "fp32",
           r->lay.micro_batch, mc->recompute ? "true" : "false", r->mem.buckets);
    printf("\"memory\":{\"params_bytes\":%.0f,\"grads_bytes\":%.0f,\"optimizer_bytes\":%.0f,\"gathered_bytes\":%.0f,"
           "\"grad_buffers_bytes\":%.0f,\"activations_bytes\":%.0f,\"total_bytes\":%.0f,\"pipeline_stage\":%d}",
           m->params, m->grads, m->optimizer, m->gathered, m->grad_buffers, m->activations, m->total, m->stage);
    if (r->timed) {
        const slm_plan_time *t = &r->time;
        printf(",\"time\":{\"compute_s\":%.17g,\"bubble_s\":%.17g,\"dp_comm_s\":%.17g,\"tp_comm_s\":%.17g,"
               "\"pp_comm_s\":%.17g,\"step_s\":%.17g,\"overlapped_step_s\":%.17g,\"steps\":%.17g,\"wall_s\":%.17g,"
               "\"overlapped_wall_s\":%.17g}",
               t->compute_s, t->bubble_s, t->dp_comm_s, t->tp_comm_s, t->pp_comm_s, t->step_s, t->overlapped_s,
               r->steps, r->steps * t->step_s, r->steps * t->overlapped_s);
    }
    if (a->memory_per_node_gib) {
        printf(",\"layouts\":[");
        fitting_layouts(c, mc, a, 1);
        printf("]");
    }
    printf("}\n");
}

static void print_text(const plan_args *a, const slm_conf *c, const plan_result *r)
{
    const slm_loss_law *l = &r->law;
    const slm_model_config *mc = &r->mc;
    printf("law       %s: L(N, D) = %g + %g / N^%g + %g / D^%g  (N parameters, D training tokens)\n", l->name, l->E,
           l->A, l->alpha, l->B, l->beta);
    char hours[128] = "";
    if (a->node_hours)
        snprintf(hours, sizeof hours, " (%g node-hours at %.1f GFLOP/s per node%s)", a->node_hours, r->node_gflops,
                 a->node_gflops ? "" : ", calibrated");
    if (r->C > 0)
        printf("budget    %.3g FLOPs%s; compute-optimal (C = 6 N D): N = %.3g parameters, D = %.3g tokens "
               "(%.1f tokens per parameter), loss %.4f\n",
               r->C, hours, r->N_opt, r->D_opt, r->D_opt / r->N_opt, slm_law_loss(l, r->N_opt, r->D_opt));
    printf("model     %s n_layer %d, n_head %d, d_model %d (vocab %d, seq_len %d): %.4g parameters, %.4g FLOPs per "
           "trained token\n",
           mc->arch, mc->n_layer, mc->n_head, mc->d_model, mc->vocab_size, mc->seq_len, r->shape.params,
           slm_model_flops_per_token(mc));
    if (mc->n_experts > 0) {
        const double total = slm_model_params_of(mc), active = slm_model_active_params_of(mc);
        printf("moe       %d of %d blocks with %d experts of width %d, top %d: %.4g parameters in all, %.4g active per "
               "token (%.1f%%); a routed token costs %.4g FLOPs; experts %.1f MiB of parameters per rank\n",
               slm_model_num_moe_layers(mc), mc->n_layer, mc->n_experts, mc->expert_hidden, mc->expert_top_k, total,
               active, 100.0 * active / total, slm_model_flops_per_token(mc),
               slm_plan_expert_bytes(mc, r->lay.tp, r->lay.ep, r->lay.pp) / (1024.0 * 1024.0));
    }
    printf("tokens    %.3g parameters are compute-optimal with %.3g tokens (%.3g FLOPs); at %.3g tokens the law "
           "predicts loss %.4f\n",
           r->N, r->D_for_N, r->C_for_N, r->D, slm_law_loss(l, r->N, r->D));
    print_memory_text(&r->mem, &r->lay, mc);
    if (r->timed) {
        const slm_plan_time *t = &r->time;
        printf("time      per step %.4g s (compute %.4g + pipeline bubble %.4g + data-parallel %.4g + tensor-parallel "
               "%.4g + pipeline %.4g s of communication; %d gradient buckets), %.4g s with the gradient reduction hidden behind backward; "
               "%.4g tokens = %.0f steps = %.3g to %.3g h (calibration: %.1f GFLOP/s per rank, all-reduce %.2f GB/s, "
               "latency %.1f us)\n",
               t->step_s, t->compute_s, t->bubble_s, t->dp_comm_s, t->tp_comm_s, t->pp_comm_s, r->mem.buckets,
               t->overlapped_s, r->D,
               r->steps, r->steps * t->overlapped_s / 3600, r->steps * t->step_s / 3600, r->cal.gflops_per_rank,
               r->cal.allreduce_bus_Bps / 1e9, r->cal.latency_s * 1e6);
    }
    if (a->memory_per_node_gib) {
        printf("layouts   of %d ranks, %d per node, that fit %.1f GiB per node:\n", a->ranks, a->ranks_per_node,
               a->memory_per_node_gib);
        if (!fitting_layouts(c, mc, a, 0)) printf("          none\n");
    }
}

/* The runs of a CSV file with a header naming the columns params, tokens and loss (in any
 * order; other columns are ignored). */
static slm_status read_runs(const char *path, slm_loss_point **pts, int *n)
{
    FILE *fp = fopen(path, "r");
    SLM_CHECK(fp, SLM_ERR_IO, "cannot open %s", path);
    char line[4096];
    int col[3] = {-1, -1, -1}, cap = 0, lineno = 1;
    static const char *names[3] = {"params", "tokens", "loss"};
    *pts = NULL, *n = 0;
    slm_status st = SLM_OK;
    if (!fgets(line, sizeof line, fp)) st = SLM_ERROR(SLM_ERR_FORMAT, "%s is empty", path);
    for (int c = 0, k = 0; st == SLM_OK && line[k];) { /* the header's columns */
        size_t len = strcspn(line + k, ",\r\n");
        for (int j = 0; j < 3; j++)
            if (len == strlen(names[j]) && !strncmp(line + k, names[j], len)) col[j] = c;
        k += (int)len;
        if (line[k] != ',') break;
        k++, c++;
    }
    for (int j = 0; j < 3 && st == SLM_OK; j++)
        if (col[j] < 0) st = SLM_ERROR(SLM_ERR_FORMAT, "%s:1: no column \"%s\" (need params, tokens, loss)", path, names[j]);
    while (st == SLM_OK && fgets(line, sizeof line, fp)) {
        lineno++;
        if (strspn(line, " \t\r\n") == strlen(line)) continue;
        double v[3] = {NAN, NAN, NAN};
        char *q = line;
        for (int c = 0; q; c++) {
            for (int j = 0; j < 3; j++)
                if (c == col[j]) {
                    char *end;
                    v[j] = strtod(q, &end);
                    if (end == q || (*end != ',' && *end != '\n' && *end != '\r' && *end)) v[j] = NAN;
                }
            q = strchr(q, ',');
            if (q) q++;
        }
        if (!(v[0] > 0 && v[1] > 0 && v[2] > 0)) {
            st = SLM_ERROR(SLM_ERR_FORMAT, "%s:%d: params, tokens and loss must be positive numbers", path, lineno);
            break;
        }
        if (*n == cap) {
            cap = cap ? 2 * cap : 64;
            slm_loss_point *grown = realloc(*pts, (size_t)cap * sizeof **pts);
            if (!grown) {
                st = SLM_ERROR(SLM_ERR_NOMEM, "out of memory");
                break;
            }
            *pts = grown;
        }
        (*pts)[(*n)++] = (slm_loss_point){v[0], v[1], v[2]};
    }
    fclose(fp);
    if (st != SLM_OK) free(*pts), *pts = NULL;
    return st;
}

/* `shardlm plan fit RUNS.csv [--delta D] [--out LAW.json] [--json]` */
static int cmd_fit(int argc, char **argv, int rank)
{
    const char *csv = NULL, *out = NULL;
    double delta = 1e-3;
    int json = 0;
    slm_status st = SLM_OK;
    for (int i = 2; i < argc && st == SLM_OK; i++) {
        if (!strcmp(argv[i], "--json")) json = 1;
        else if (!strcmp(argv[i], "--delta") && i + 1 < argc) st = number("--delta", argv[++i], &delta);
        else if (!strcmp(argv[i], "--out") && i + 1 < argc) out = argv[++i];
        else if (argv[i][0] != '-' && !csv) csv = argv[i];
        else st = SLM_ERROR(SLM_ERR_ARG, "plan fit: unexpected '%s' (usage: shardlm plan fit RUNS.csv [--delta D] "
                            "[--out LAW.json] [--json])", argv[i]);
    }
    if (st == SLM_OK && !csv) st = SLM_ERROR(SLM_ERR_ARG, "plan fit: no RUNS.csv given");
    slm_loss_point *pts = NULL;
    int n = 0;
    slm_loss_law law;
    double obj = 0;
    if (st == SLM_OK) st = read_runs(csv, &pts, &n);
    if (st == SLM_OK) st = slm_law_fit(pts, n, delta, &law, &obj);
    free(pts);
    if (st != SLM_OK) {
        slm_cli_report_error_local();
        return SLM_EXIT_USAGE;
    }
    if (rank != 0) return SLM_EXIT_OK;
    char obj_text[256];
    snprintf(obj_text, sizeof obj_text,
             "{\"E\":%.17g,\"A\":%.17g,\"B\":%.17g,\"alpha\":%.17g,\"beta\":%.17g,\"runs\":%d,\"huber_delta\":%g,"
             "\"objective\":%.17g}",
             law.E, law.A, law.B, law.alpha, law.beta, n, delta, obj);
    if (out) {
        FILE *fp = fopen(out, "w");
        if (!fp || fprintf(fp, "%s\n", obj_text) < 0 || fclose(fp)) {
            fprintf(stderr, "shardlm: error: plan fit: cannot write %s\n", out);
            return SLM_EXIT_FAILURE;
        }
    }
    if (json) printf("%s\n", obj_text);
    else
        printf("fit       %d runs of %s, Huber delta %g: L(N, D) = %.4f + %.5g / N^%.4f + %.5g / D^%.4f "
               "(objective %.3g)%s%s\n",
               n, csv, delta, law.E, law.A, law.alpha, law.B, law.beta, obj, out ? "; written to " : "", out ? out : "");
    return SLM_EXIT_OK;
}

int slm_cmd_plan(int argc, char **argv)
{
    const int rank = slm_cli_launcher_rank();
    if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        if (rank == 0) fputs(usage, stdout);
        return SLM_EXIT_OK;
    }
    if (argc > 1 && !strcmp(argv[1], "fit")) return cmd_fit(argc, argv, rank);
    plan_args a;
    slm_conf c;
    plan_result r;
    /* every rank works it out alike, so a bad input fails everywhere; rank 0 prints */
    if (parse(argc, argv, &a, &c) != SLM_OK || compute(&a, &c, &r) != SLM_OK) {
        slm_cli_report_error_local();
        return SLM_EXIT_USAGE;
    }
    if (rank == 0) {
        if (a.json) print_json(&a, &c, &r);
        else print_text(&a, &c, &r);
    }
    return SLM_EXIT_OK;
}
