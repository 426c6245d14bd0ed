/* ckpt_cmd.c - `shardlm ckpt list|inspect|verify`: checkpoint tools. */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include "cli.h"
#include "shardlm/ckpt.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: shardlm ckpt list DIR\n"
               "       shardlm ckpt inspect CHECKPOINT.h5\n"
               "       shardlm ckpt verify CHECKPOINT.h5|DIR   (every checksum; a DIR: its newest good one)\n"
               "       shardlm ckpt export CHECKPOINT.h5 OUT.safetensors\n");
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
    } else if (!strcmp(what, "verify")) {
        struct stat sb;
        slm_ckpt_meta meta;
        if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) { /* the newest good one, skipping bad ones */
            char found[4096];
            st = slm_ckpt_find(comm, path, NULL, NULL, found, sizeof found);
            if (st == SLM_OK && rank == 0)
                printf(found[0] ? "ok: %s is the newest good checkpoint\n" : "no good checkpoint in %s\n",
                       found[0] ? found : path);
            if (st == SLM_OK && !found[0]) return SLM_EXIT_FAILURE;
        } else {
            st = slm_ckpt_verify(comm, path, NULL, &meta);
            if (st == SLM_OK && rank == 0)
                printf("ok: %s (step %ld, %s): every checksum verified\n", path, meta.step, meta.layout);
        }
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
