/* pipeline.c - one training step of a pipeline stage: the 1F1B schedule.
 *
 * Stage s of P runs the M micro-batches of its data-parallel rank: first min(P-1-s, M)
 * forwards (the warm-up), then one forward and one backward in turn, then the remaining
 * backwards. Activations go to the next stage and their gradients back to the previous
 * one with nonblocking point-to-point messages (tag: the micro-batch), so no stage ever
 * waits on a send. A stage keeps the activations of at most P - s micro-batches, one slot
 * each. The time a stage waits for a message it needs is its share of the bubble. */
#include <stdlib.h>
#include <string.h>
#include "shardlm/activity.h"
#include "shardlm/timer.h"
#include "trainer_impl.h"

typedef struct {
    trainer *tr;
    MPI_Comm comm;
    int stage, stages, first, last, slots;
    size_t n;               /* floats per message: B x T x C */
    MPI_Request *act_sent;  /* (slots) activations in flight to the next stage */
    MPI_Request *grad_sent; /* (slots) gradients in flight to the previous stage */
    float *grad_buf;        /* (slots, n) gradients being sent */
    double loss, wait_s, bytes;
    long step;
} pipe_state;

static void wait_for(pipe_state *p, MPI_Request *r, const char *what)
{
    double t0 = slm_now();
    slm_activity_set(what, -1);
    MPI_Wait(r, MPI_STATUS_IGNORE);
    p->wait_s += slm_now() - t0;
}

static void forward(pipe_state *p, int k)
{
    trainer *tr = p->tr;
    const int slot = k % p->slots;
    slm_trainer_load_batch(tr, p->step, k);
    if (!p->first) { /* the previous stage's output for micro-batch k */
        MPI_Request r;
        MPI_Irecv(slm_model_stage_input(tr->model, slot), (int)p->n, MPI_FLOAT, p->stage - 1, k, p->comm, &r);
        wait_for(p, &r, "MPI_Wait: pipeline activations from the previous stage");
    }
    slm_activity_set("forward", -1);
    p->loss += slm_model_forward_slot(tr->model, slot, tr->inputs, tr->targets, tr->B, tr->T);
    if (p->last) slm_trainer_keep_logits(tr, p->step, k);
    if (!p->last) {
        wait_for(p, &p->act_sent[slot], "MPI_Wait: pipeline activations to the next stage");
        MPI_Isend(slm_model_stage_output(tr->model, slot), (int)p->n, MPI_FLOAT, p->stage + 1, k, p->comm,
                  &p->act_sent[slot]);
        p->bytes += (double)p->n * sizeof(float);
    }
}

static void backward(pipe_state *p, int k, int M)
{
    trainer *tr = p->tr;
    const int slot = k % p->slots;
    if (!p->last) { /* the next stage's gradient of this stage's output */
        MPI_Request r;
        MPI_Irecv(slm_model_stage_grad(tr->model), (int)p->n, MPI_FLOAT, p->stage + 1, k, p->comm, &r);
        wait_for(p, &r, "MPI_Wait: pipeline gradients from the next stage");
    }
    slm_activity_set("backward", -1);
    slm_fsdp_set_last_micro(tr->fsdp, k == M - 1); /* data-parallel reduction after the last */
    slm_model_backward_slot(tr->model, slot, 1.0f / ((float)tr->B * tr->T * M * tr->dp));
    if (!p->first) {
        float *buf = p->grad_buf + (size_t)slot * p->n;
        wait_for(p, &p->grad_sent[slot], "MPI_Wait: pipeline gradients to the previous stage");
        memcpy(buf, slm_model_stage_grad(tr->model), p->n * sizeof(float));
        MPI_Isend(buf, (int)p->n, MPI_FLOAT, p->stage - 1, k, p->comm, &p->grad_sent[slot]);
        p->bytes += (double)p->n * sizeof(float);
    }
}

void slm_trainer_pipeline_step(trainer *tr, long step, double *loss, double *wait_s, double *bytes)
{
    const int M = tr->accum;
    pipe_state p = {.tr = tr, .comm = slm_mesh_pp_comm(tr->mesh), .stage = slm_mesh_pp_rank(tr->mesh),
                    .stages = slm_mesh_pp_size(tr->mesh), .step = step};
    p.first = p.stage == 0;
    p.last = p.stage == p.stages - 1;
    p.slots = tr->pipe_slots;
    p.n = (size_t)tr->B * tr->T * (size_t)tr->conf->model.d_model;
    p.act_sent = tr->pipe_act_sent; /* allocated at set-up: nothing here can fail on one rank */
    p.grad_sent = tr->pipe_grad_sent;
    p.grad_buf = tr->pipe_grad_buf;
    for (int i = 0; i < p.slots; i++) p.act_sent[i] = p.grad_sent[i] = MPI_REQUEST_NULL;
    const int warm = p.stages - 1 - p.stage < M ? p.stages - 1 - p.stage : M;
    for (int k = 0; k < warm; k++) forward(&p, k);
    for (int k = warm; k < M; k++) {
        forward(&p, k);
        backward(&p, k - warm, M);
    }
    for (int k = M - warm; k < M; k++) backward(&p, k, M);
    for (int i = 0; i < p.slots; i++) {
        wait_for(&p, &p.act_sent[i], "MPI_Wait: pipeline activations to the next stage");
        wait_for(&p, &p.grad_sent[i], "MPI_Wait: pipeline gradients to the previous stage");
    }
    *loss = p.loss;
    *wait_s = p.wait_s;
    *bytes = p.bytes;
}
