/* ckpt_cmd.c - `shardlm ckpt list|inspect|verify|export`: checkpoint tools. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "cli.h"
#include "shardlm/ckpt.h"
#include "shardlm/log.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: shardlm ckpt list DIR\n"
               "       shardlm ckpt inspect CHECKPOINT.h5\n"
               "       shardlm ckpt verify CHECKPOINT.h5|DIR...   (all of each file; a DIR: its newest good one)\n"
               "       shardlm ckpt export CHECKPOINT.h5 OUT.safetensors\n");
}

/* Verify path against the tensor table of the model its own attributes describe. The
 * attributes are checked first (the digest of a version-2 file), so a damaged shape is
 * reported as damage rather than built into a table. Collective. */
static slm_status verify_file(MPI_Comm comm, const char *path, slm_ckpt_meta *meta, slm_ckpt_meta *stored)
{
    int nstored = 0;
    SLM_CALL(slm_ckpt_read_meta(comm, path, stored, &nstored));
    /* every layer has tensors of its own: a larger n_layer is damage (a version-1 file,
     * without a digest), and no table is built for it */
    SLM_CHECK(stored->model.n_layer >= 1 && stored->model.n_layer <= nstored, SLM_ERR_FORMAT,
              "%s: model.n_layer = %d, but /params holds %d tensors", path, stored->model.n_layer, nstored);
    slm_model_t model = NULL;
    slm_status s = slm_model_describe(&stored->model, &model);
    if (s != SLM_OK)
        return SLM_ERROR(SLM_ERR_FORMAT, "%s: its model shape does not describe a model: %s", path,
                         slm_error_message());
    const slm_ckpt_expect expect = {stored, slm_model_tensor(model, 0), slm_model_num_tensors(model)};
    s = slm_ckpt_verify(comm, path, &expect, meta);
    slm_model_destroy(&model);
    SLM_CALL(s);
    return SLM_OK;
}

/* The current error as "PATH: reason" (messages name the file already, perhaps after the
 * rank that saw it first). */
static void print_bad(const char *path)
{
    const char *msg = slm_error_message(), *at = strstr(msg, path);
    fflush(stdout);
    if (at && at[strlen(path)] == ':') fprintf(stderr, "bad: %s\n", at);
    else fprintf(stderr, "bad: %s: %s\n", path, msg);
    slm_error_clear();
}

/* The newest checkpoint of dir that verifies, each one skipped reported. 1 if found. */
static int verify_dir(MPI_Comm comm, int rank, const char *dir, slm_ckpt_meta *meta, slm_ckpt_meta *stored)
{
    long *steps = malloc(SLM_CKPT_MAX_LISTED * sizeof *steps);
    int n = 0;
    if (!steps) return 0; /* every rank alike, in practice */
    if (rank == 0) n = slm_ckpt_list_steps(dir, steps, SLM_CKPT_MAX_LISTED);
    MPI_Bcast(&n, 1, MPI_INT, 0, comm);
    if (n > 0) MPI_Bcast(steps, n, MPI_LONG, 0, comm);
    int found = 0;
    for (int i = 0; i < n && !found; i++) {
        char path[4200];
        snprintf(path, sizeof path, "%s/step_%09ld.h5", dir, steps[i]);
        if (verify_file(comm, path, meta, stored) == SLM_OK) {
            if (rank == 0) printf("ok: %s is the newest good checkpoint\n", path);
            found = 1;
        } else {
            if (rank == 0) slm_warn("skipping checkpoint: %s", slm_error_message());
            slm_error_clear();
        }
    }
    if (!found && rank == 0) {
        fflush(stdout);
        fprintf(stderr, n < 0 ? "bad: %s: cannot read the directory\n" : "bad: %s: no good checkpoint\n", dir);
    }
    free(steps);
    return found;
}

/* `ckpt verify PATH...`: one line per path, non-zero exit if any is bad. */
static int verify_paths(MPI_Comm comm, int rank, int n, char **paths)
{
    slm_ckpt_meta *meta = malloc(2 * sizeof *meta); /* 16 kB of configuration text each */
    if (!meta) {
        if (rank == 0) fprintf(stderr, "shardlm ckpt verify: out of memory\n");
        return SLM_EXIT_FAILURE;
    }
    int bad = 0;
    for (int i = 0; i < n; i++) {
        struct stat sb;
        if (stat(paths[i], &sb) == 0 && S_ISDIR(sb.st_mode)) {
            bad += !verify_dir(comm, rank, paths[i], &meta[0], &meta[1]);
        } else if (verify_file(comm, paths[i], &meta[0], &meta[1]) == SLM_OK) {
            if (rank == 0)
                printf("ok: %s (step %ld, %s, format version %d): %s\n", paths[i], meta[0].step, meta[0].layout,
                       meta[0].version, meta[0].version >= 2 ? "every tensor, attribute and checksum verified"
                                                             : "every tensor and chunk checksum verified (version 1 "
                                                               "has no metadata checksums or digest)");
        } else {
            bad++;
            if (rank == 0) print_bad(paths[i]);
            else slm_error_clear();
        }
    }
    fflush(stdout);
    free(meta);
    return bad ? SLM_EXIT_FAILURE : SLM_EXIT_OK;
}

int slm_cmd_ckpt(int argc, char **argv, MPI_Comm comm)
{
    int rank;
    MPI_Comm_rank(comm, &rank);
    if (argc == 4 && !strcmp(argv[1], "export")) {
        slm_status st = rank == 0 ? slm_ckpt_export_safetensors(argv[2], argv[3]) : SLM_OK;
        int bad = st != SLM_OK;
        MPI_Bcast(&bad, 1, MPI_INT, 0, comm);
        if (bad) {
            slm_cli_report_error(comm, 0);
            return SLM_EXIT_FAILURE;
        }
        if (rank == 0) printf("exported %s -> %s\n", argv[2], argv[3]);
        return SLM_EXIT_OK;
    }
    if (argc >= 3 && !strcmp(argv[1], "verify")) return verify_paths(comm, rank, argc - 2, argv + 2);
    if (argc != 3) {
        if (rank == 0) usage(argc > 1 && !strcmp(argv[1], "--help") ? stdout : stderr);
        return argc > 1 && !strcmp(argv[1], "--help") ? SLM_EXIT_OK : SLM_EXIT_USAGE;
    }
    const char *what = argv[1], *path = argv[2];
    slm_status st;
    if (!strcmp(what, "list")) {
        st = rank == 0 ? slm_ckpt_list(path, stdout) : SLM_OK;
    } else if (!strcmp(what, "inspect")) {
        st = slm_ckpt_inspect(comm, path, stdout);
    } else {
        if (rank == 0) usage(stderr);
        return SLM_EXIT_USAGE;
    }
    if (st != SLM_OK) {
        slm_cli_report_error(comm, 1);
        return SLM_EXIT_FAILURE;
    }
    return SLM_EXIT_OK;
}
