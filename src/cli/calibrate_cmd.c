/* calibrate_cmd.c - `shardlm bench calibrate`: what one rank computes and what the network
 * between the ranks carries, written as the JSON file `shardlm plan --calibration` reads.
 *
 * Every rank trains the configuration on its own (MPI_COMM_SELF) at the same time, so the
 * rate includes what ranks sharing a node cost each other; its model FLOP/s is the
 * planner's compute rate. Then the ranks measure the GEMM peak and the network together. */
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "cli.h"
#include "shardlm/conf.h"
#include "shardlm/kernels.h"
#include "shardlm/model.h"
#include "shardlm/parallel.h"
#include "shardlm/runtime.h"
#include "shardlm/timer.h"

static const char usage[] =
    "usage: shardlm bench calibrate [CONFIG.ini] [section.key=value ...] --out FILE [--steps N] [--bytes B]\n"
    "  trains CONFIG for N steps (12) on every rank at once, each alone (the median tokens/s from step 2\n"
    "  on counts), then measures the GEMM peak,\n"
    "  the latency and bandwidth between the first and last rank and all-reduce bandwidth (B bytes,\n"
    "  16 MiB); writes FILE for `shardlm plan --calibration FILE`\n";

/* Median tokens/s of a metrics file's steps from step 2 on (the first steps pay for page
 * faults and warm caches). */
static double steady_tokens_per_s(const char *path)
{
    FILE *fp = fopen(path, "r");
    if (!fp) return 0;
    char line[8192];
    double v[1000];
    int n = 0;
    while (n < 1000 && fgets(line, sizeof line, fp)) {
        json_t *r = json_loads(line, 0, NULL);
        if (!r) continue;
        if (json_integer_value(json_object_get(r, "step")) >= 2) v[n++] = json_number_value(json_object_get(r, "tokens_per_s"));
        json_decref(r);
    }
    fclose(fp);
    return n ? slm_median(v, n) : 0;
}

/* Train conf on this rank alone with its output silenced; its model GFLOP/s, or 0. */
static double train_alone(slm_conf *conf, int rank)
{
    char metrics[1024];
    const char *tmp = getenv("TMPDIR");
    snprintf(metrics, sizeof metrics, "%s/slm-calibrate-%d-%d.jsonl", tmp && *tmp ? tmp : "/tmp", (int)getpid(), rank);
    snprintf(conf->log.metrics, sizeof conf->log.metrics, "%s", metrics);
    fflush(stdout);
    const int saved = dup(STDOUT_FILENO), null = open("/dev/null", O_WRONLY);
    if (null >= 0) dup2(null, STDOUT_FILENO);
    const slm_status st = slm_train_run(conf, MPI_COMM_SELF);
    fflush(stdout);
    if (saved >= 0) dup2(saved, STDOUT_FILENO), close(saved);
    if (null >= 0) close(null);
    const double tps = st == SLM_OK ? steady_tokens_per_s(metrics) : 0;
    remove(metrics);
    const slm_model_config mc = slm_conf_model(conf);
    return tps * slm_model_flops_per_token(&mc) / 1e9;
}

int slm_cmd_calibrate(int argc, char **argv, MPI_Comm comm)
{
    int rank, world;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &world);
    if (argc > 2 && (!strcmp(argv[2], "--help") || !strcmp(argv[2], "-h"))) {
        if (rank == 0) fputs(usage, stdout);
        return SLM_EXIT_OK;
    }
    slm_conf conf;
    const char *out = NULL;
    long steps = 12, bytes = 16L << 20;
    int i = 2;
    slm_status st = slm_conf_from_args(&conf, argc, argv, &i);
    for (; i < argc && st == SLM_OK; i++) {
        char *end = NULL;
        if (!strcmp(argv[i], "--out") && i + 1 < argc) out = argv[++i];
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = strtol(argv[++i], &end, 10);
        else if (!strcmp(argv[i], "--bytes") && i + 1 < argc) bytes = strtol(argv[++i], &end, 10);
        else if (argv[i][0] != '-') st = slm_conf_set(&conf, argv[i]);
        else st = SLM_ERROR(SLM_ERR_ARG, "bench calibrate: unknown option '%s'", argv[i]);
        if (st == SLM_OK && end && *end) st = SLM_ERROR(SLM_ERR_ARG, "bench calibrate: '%s' is not a number", argv[i]);
    }
    if (st == SLM_OK && !out) st = SLM_ERROR(SLM_ERR_ARG, "bench calibrate: --out FILE is required");
    if (st == SLM_OK && (steps < 3 || steps > 1000))
        st = SLM_ERROR(SLM_ERR_ARG, "bench calibrate: --steps %ld: expected 3 to 1000", steps);
    if (st == SLM_OK && (bytes < 8 || bytes > 1L << 30))
        st = SLM_ERROR(SLM_ERR_ARG, "bench calibrate: --bytes %ld: expected 8 to 2^30", bytes);
    /* the run each rank makes alone: the steps, no checkpoint, sample or evaluation; the
     * ranks of a node share its cores unless train.threads says otherwise */
    MPI_Comm node;
    MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node);
    int local;
    MPI_Comm_size(node, &local);
    MPI_Comm_free(&node);
    if (st == SLM_OK) {
        conf.train.steps = steps;
        conf.sample.tokens = 0;
        conf.ckpt.dir[0] = '\0';
        conf.eval.every = 0;
        conf.log.every = 1000000;
        conf.log.peak_gflops = 1;
        conf.parallel.tp = conf.parallel.pp = 1;
        strcpy(conf.parallel.bind, "none");
        if (conf.train.threads <= 0) {
            long cores = sysconf(_SC_NPROCESSORS_ONLN);
            conf.train.threads = cores > local ? (int)(cores / local) : 1;
        }
        st = slm_conf_resolve_model(&conf);
        if (st == SLM_OK) st = slm_conf_validate(&conf, 1);
    }
    if (st != SLM_OK) {
        slm_cli_report_error(comm, 0);
        return SLM_EXIT_USAGE;
    }
    double rate = train_alone(&conf, rank), min_rate;
    MPI_Allreduce(MPI_IN_PLACE, &rate, 1, MPI_DOUBLE, MPI_SUM, comm);
    MPI_Allreduce(&rate, &min_rate, 1, MPI_DOUBLE, MPI_MIN, comm);
    if (min_rate <= 0) {
        if (rank == 0) fprintf(stderr, "shardlm: error: bench calibrate: the training run failed on some rank\n");
        return SLM_EXIT_FAILURE;
    }
    rate /= world;
    /* the peak of the backend the training run selected (train.matmul) */
    slm_set_threads(conf.train.threads);
    double peak = slm_gemm_peak_gflops(1024, 1.0);
    MPI_Allreduce(MPI_IN_PLACE, &peak, 1, MPI_DOUBLE, MPI_SUM, comm);
    peak /= world;
    slm_net_measurement net;
    if (slm_net_measure(comm, (size_t)bytes, 7, &net) != SLM_OK) {
        slm_cli_report_error(comm, 1);
        return SLM_EXIT_FAILURE;
    }
    if (rank != 0) return SLM_EXIT_OK;
    char host[256] = "?";
    gethostname(host, sizeof host - 1);
    const time_t now = time(NULL);
    char date[32];
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    FILE *fp = fopen(out, "w");
    if (!fp) {
        fprintf(stderr, "shardlm: error: bench calibrate: cannot create %s\n", out);
        return SLM_EXIT_FAILURE;
    }
    fprintf(fp,
            "{\"gflops_per_rank\":%.6g,\"gemm_gflops\":%.6g,\"mfu\":%.4f,\"latency_s\":%.6g,"
            "\"bandwidth_bytes_per_s\":%.6g,\"allreduce_bus_bytes_per_s\":%.6g,\"message_bytes\":%zu,"
            "\"ranks\":%d,\"nodes\":%d,\"threads\":%d,\"matmul\":\"%s\",\"precision\":\"%s\","
            "\"model\":{\"n_layer\":%d,\"n_head\":%d,\"d_model\":%d,\"vocab_size\":%d,\"seq_len\":%d,"
            "\"micro_batch\":%d},\"host\":\"%s\",\"date\":\"%s\"}\n",
            rate, peak, rate / peak, net.latency_s, net.bandwidth_Bps, net.allreduce_bus_Bps, net.bytes, world,
            net.nodes, conf.train.threads, slm_gemm_name(), conf.train.precision, conf.model.n_layer,
            conf.model.n_head, conf.model.d_model, conf.model.vocab_size, conf.model.seq_len, conf.train.micro_batch,
            host, date);
    if (fclose(fp)) {
        fprintf(stderr, "shardlm: error: bench calibrate: cannot write %s\n", out);
        return SLM_EXIT_FAILURE;
    }
    printf("calibrate %d rank%s on %d node%s, %d thread%s each: training %.1f GFLOP/s per rank (%.0f%% of the "
           "%.1f GFLOP/s GEMM peak)",
           world, world > 1 ? "s" : "", net.nodes, net.nodes > 1 ? "s" : "", conf.train.threads,
           conf.train.threads > 1 ? "s" : "", rate, 100 * rate / peak, peak);
    if (world > 1)
        printf("; latency %.1f us, bandwidth %.2f GB/s, all-reduce bus %.2f GB/s (%zu-byte messages)",
               net.latency_s * 1e6, net.bandwidth_Bps / 1e9, net.allreduce_bus_Bps / 1e9, net.bytes);
    printf("; written to %s\n", out);
    return SLM_EXIT_OK;
}
