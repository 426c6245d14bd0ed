/* ckpt_cmd.c - `shardlm ckpt list|inspect|verify|export`: checkpoint tools. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include "cli.h"
#include "shardlm/ckpt.h"
#include "shardlm/hf.h"
#include "shardlm/log.h"
#include "shardlm/runtime.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: shardlm ckpt list DIR\n"
               "       shardlm ckpt inspect CHECKPOINT.h5\n"
               "       shardlm ckpt verify CHECKPOINT.h5|DIR...   (all of each file; a DIR: its newest good one)\n"
               "       shardlm ckpt export CHECKPOINT.h5 OUT.safetensors\n"
               "       shardlm ckpt export --format hf CHECKPOINT.h5 OUTDIR [--dtype f32|bf16]\n"
               "                           [--max-shard-size SIZE] [--rope-pairing half|interleaved]\n"
               "\n"
               "export writes the parameters as one safetensors file (F32, shardlm's names), or with\n"
               "--format hf as a Hugging Face model directory: config.json and model.safetensors, or\n"
               "model-0000K-of-0000N.safetensors files of at most SIZE bytes of data each (a number with\n"
               "an optional KB, MB, GB or KiB, MiB, GiB; default 5GB) and model.safetensors.index.json.\n"
               "--rope-pairing interleaved stores a Llama model's q and k rows with rotary dimensions\n"
               "2i, 2i+1 side by side (recorded in config.json); default half, as Hugging Face does.\n");
}

typedef struct {
    const char *format, *dtype, *pairing, *ckpt, *out;
    size_t max_shard;
} export_args;

/* "5GB", "512MiB", "1000": bytes. */
static slm_status parse_size(const char *text, size_t *out)
{
    static const struct {
        const char *suffix;
        double scale;
    } units[] = {{"", 1}, {"B", 1}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"KiB", 1024.0}, {"MiB", 1048576.0},
                 {"GiB", 1073741824.0}};
    char *end = NULL;
    const double v = strtod(text, &end);
    for (size_t i = 0; end != text && v > 0 && i < sizeof units / sizeof units[0]; i++)
        if (!strcasecmp(end, units[i].suffix) && v * units[i].scale < 1e18) {
            *out = (size_t)(v * units[i].scale);
            if (*out) return SLM_OK;
        }
    return SLM_ERROR(SLM_ERR_ARG, "--max-shard-size '%s': expected a positive size in bytes, optionally with KB, MB, GB, "
                                  "KiB, MiB or GiB", text);
}

static slm_status parse_export(int argc, char **argv, export_args *a)
{
    *a = (export_args){"safetensors", NULL, NULL, NULL, NULL, (size_t)5e9};
    int npos = 0, sized = 0;
    for (int i = 2; i < argc; i++) {
        const char *o = argv[i];
        if (o[0] != '-' || !o[1]) {
            SLM_CHECK(npos < 2, SLM_ERR_ARG, "ckpt export: one checkpoint and one output, not also '%s'", o);
            *(npos++ ? &a->out : &a->ckpt) = o;
            continue;
        }
        SLM_CHECK(i + 1 < argc, SLM_ERR_ARG, "ckpt export: %s needs a value", o);
        const char *v = argv[++i];
        if (!strcmp(o, "--format")) a->format = v;
        else if (!strcmp(o, "--dtype")) a->dtype = v;
        else if (!strcmp(o, "--rope-pairing")) a->pairing = v;
        else if (!strcmp(o, "--max-shard-size")) {
            SLM_CALL(parse_size(v, &a->max_shard));
            sized = 1;
        } else return SLM_ERROR(SLM_ERR_ARG, "ckpt export: unknown option '%s'", o);
    }
    SLM_CHECK(npos == 2, SLM_ERR_ARG, "ckpt export: expected a checkpoint and an output");
    SLM_CHECK(!strcmp(a->format, "safetensors") || !strcmp(a->format, "hf"), SLM_ERR_ARG,
              "ckpt export: --format %s: expected safetensors or hf", a->format);
    SLM_CHECK(!strcmp(a->format, "hf") || (!a->dtype && !a->pairing && !sized), SLM_ERR_ARG,
              "ckpt export: --dtype, --max-shard-size and --rope-pairing go with --format hf");
    SLM_CHECK(!a->dtype || !strcmp(a->dtype, "f32") || !strcmp(a->dtype, "bf16"), SLM_ERR_ARG,
              "ckpt export: --dtype %s: expected f32 or bf16", a->dtype);
    slm_rope_pairing p;
    SLM_CHECK(!a->pairing || slm_rope_pairing_parse(a->pairing, &p), SLM_ERR_ARG,
              "ckpt export: --rope-pairing %s: expected half or interleaved", a->pairing);
    return SLM_OK;
}

/* `ckpt export`: rank 0 writes, the others wait for its verdict. */
static int export_cmd(MPI_Comm comm, int rank, int argc, char **argv)
{
    export_args a;
    if (parse_export(argc, argv, &a) != SLM_OK) {
        slm_cli_report_error(comm, 0);
        return SLM_EXIT_USAGE;
    }
    const int hf = !strcmp(a.format, "hf");
    slm_rope_pairing pairing = SLM_ROPE_PAIRING_HALF;
    if (a.pairing) slm_rope_pairing_parse(a.pairing, &pairing);
    slm_status st = SLM_OK;
    if (rank == 0)
        st = hf ? slm_ckpt_export_hf(a.ckpt, a.out, a.dtype && !strcmp(a.dtype, "bf16") ? "BF16" : "F32", a.max_shard,
                                     pairing)
                : slm_ckpt_export_safetensors(a.ckpt, a.out);
    int bad = st != SLM_OK;
    MPI_Bcast(&bad, 1, MPI_INT, 0, comm);
    if (bad) {
        slm_cli_report_error(comm, 0);
        return SLM_EXIT_FAILURE;
    }
    if (rank == 0) printf("exported %s -> %s%s\n", a.ckpt, a.out, hf ? " (Hugging Face model directory)" : "");
    return SLM_EXIT_OK;
}

/* Verify path against the tensor table of the model its own attributes describe, and its
 * optimizer groups against that table as the optimizer keeps them (an optimizer whose
 * groups are not known here: those are only read). The attributes are checked first (the
 * digest from version 2 on), so a damaged shape is reported as damage rather than built
 * into a table. Collective. */
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
    const slm_tensor_info *table = slm_model_tensor(model, 0);
    const int nt = slm_model_num_tensors(model);
    /* the optimizer's settings as the run that wrote the file had them (its configuration
     * attribute; a file older than the optimizers says nothing and is AdamW's) */
    slm_conf conf;
    slm_conf_defaults(&conf);
    slm_optim_config optim;
    if (slm_conf_load_text(&conf, stored->config, path) == SLM_OK) optim = slm_conf_optim(&conf);
    else slm_optim_config_defaults(&optim);
    slm_error_clear();
    snprintf(optim.name, sizeof optim.name, "%s", stored->optimizer);
    slm_ckpt_group groups[SLM_TRAIN_MAX_CKPT_GROUPS] = {{"params", table, nt, NULL, 0}};
    slm_optim_group_info info[SLM_OPTIM_MAX_GROUPS];
    const int ngroups = slm_train_ckpt_groups(&optim, table, nt, groups, info);
    slm_tensor_info moe_table;
    const int moe = ngroups > 0 ? slm_train_moe_ckpt_group(&stored->model, &moe_table, &groups[ngroups]) : 0;
    const int outer = ngroups > 0 ? slm_train_outer_ckpt_groups(&conf, table, nt, &groups[ngroups + moe]) : 0;
    /* an optimizer this build does not know: /params checked, the rest only read */
    const slm_ckpt_expect expect = {stored, groups, ngroups > 0 ? ngroups + moe + outer : 1, ngroups < 0};
    s = slm_ckpt_verify(comm, path, &expect, meta);
    if (ngroups > 0) slm_optim_groups_free(info, ngroups - 1);
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
    if (argc >= 2 && !strcmp(argv[1], "export")) return export_cmd(comm, rank, argc, argv);
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
