/* train_cmd.c - `shardlm train [CONFIG.ini] [section.key=value ...]`. */
#include <stdio.h>
#include <string.h>
#include "cli.h"
#include "shardlm/agree.h"
#include "shardlm/conf.h"
#include "shardlm/log.h"
#include "shardlm/runtime.h"

static void train_help(void)
{
    slm_conf c;
    slm_conf_defaults(&c);
    printf("usage: shardlm train [--dry-run] [CONFIG.ini] [section.key=value ...]\n\n"
           "Trains on the ranks it is started on. CONFIG.ini is read first, then each\n"
           "section.key=value override in order. Unknown keys are errors. --dry-run checks\n"
           "the configuration, builds the rank mesh, binds the ranks and prints both, then\n"
           "stops. Keys and defaults:\n");
    slm_conf_print(&c, stdout);
}

/* Parse the command line into conf. Every rank parses the same arguments and files, so
 * every rank reaches the same verdict without communicating - except where the model
 * comes from a Hugging Face directory: each rank reads its config.json, and all agree on
 * the outcome (a rank whose copy is missing must not leave the others waiting). Then the
 * resolved configuration is validated. Collective. */
static slm_status parse(int argc, char **argv, slm_conf *conf, MPI_Comm comm, int world)
{
    int i = 1;
    slm_status s = slm_conf_from_args(conf, argc, argv, &i);
    for (; i < argc && s == SLM_OK; i++) s = slm_conf_set(conf, argv[i]);
    if (s != SLM_OK) return s; /* the same on every rank */
    SLM_CALL(slm_agree(comm, slm_conf_resolve_model(conf)));
    SLM_CALL(slm_conf_validate(conf, world));
    return SLM_OK;
}

int slm_cmd_train(int argc, char **argv, MPI_Comm comm)
{
    int rank, world;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &world);
    if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        if (rank == 0) train_help();
        return SLM_EXIT_OK;
    }
    slm_log_setup(rank, world, SLM_LOG_INFO, 0);
    int dry_run = argc > 1 && !strcmp(argv[1], "--dry-run");
    if (dry_run) { /* the rest of the command line is what a real run would get */
        argv++;
        argc--;
    }
    slm_conf conf;
    if (parse(argc, argv, &conf, comm, world) != SLM_OK) {
        slm_cli_report_error(comm, 0);
        return SLM_EXIT_USAGE;
    }
    slm_status s = dry_run ? slm_train_dry_run(&conf, comm) : slm_train_run(&conf, comm);
    if (s == SLM_PREEMPTED) {
        if (rank == 0) printf("preempted %s\n", slm_error_message());
        return SLM_EXIT_PREEMPTED;
    }
    if (s != SLM_OK) { /* every rank returns its error (runtime.h) */
        slm_cli_report_error(comm, 1);
        return SLM_EXIT_FAILURE;
    }
    return SLM_EXIT_OK;
}
