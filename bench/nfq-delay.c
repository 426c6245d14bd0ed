/* nfq-delay.c - hold every packet of an NFQUEUE for a fixed time, then accept it.
 *
 * A stand-in for `tc qdisc add ... netem delay` on kernels built without sch_netem.
 * bench/overlap-netns builds it and runs one copy inside each fake host, fed by
 *
 *   iptables-legacy -t mangle -A PREROUTING -i eth0 -j NFQUEUE --queue-num Q --queue-bypass
 *
 * so each host delays what it receives (one-way delay D; round trip 2D when both hosts
 * run it).
 *
 *   usage: nfq-delay QUEUE_NUM DELAY_MS
 *
 * Design: only packet metadata is copied to user space. Every packet gets the same delay,
 * so release times are in arrival order and a FIFO is enough; a timerfd armed for the
 * oldest packet's release time wakes the loop, which then accepts every due packet with
 * one batch verdict (a batch verdict covers all queued ids up to the one given, and ids
 * grow with arrival). SIGTERM/SIGINT arrive through a signalfd; on exit whatever is still
 * held is accepted. If the kernel queue overflows, the queue is set to fail open (packets
 * pass undelayed rather than being dropped); if our own FIFO is full, the packet is
 * accepted at once and counted.
 *
 * Build: gcc -O2 -o nfq-delay nfq-delay.c $(pkg-config --cflags --libs libnetfilter_queue)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <libnetfilter_queue/libnetfilter_queue.h>
#include <linux/netfilter.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define FIFO_CAP 262144u /* power of two */

struct held {
    uint32_t id;
    struct timespec due;
};

static struct held fifo[FIFO_CAP];
static size_t first, count;
static long long delay_ns;
static unsigned long long n_delayed, n_passed;

static struct timespec add_ns(struct timespec t, long long ns)
{
    t.tv_sec += ns / 1000000000LL;
    t.tv_nsec += ns % 1000000000LL;
    if (t.tv_nsec >= 1000000000L) {
        t.tv_sec++;
        t.tv_nsec -= 1000000000L;
    }
    return t;
}

static int not_after(struct timespec a, struct timespec b) /* a <= b */
{
    return a.tv_sec < b.tv_sec || (a.tv_sec == b.tv_sec && a.tv_nsec <= b.tv_nsec);
}

static int on_packet(struct nfq_q_handle *q, struct nfgenmsg *msg, struct nfq_data *d, void *arg)
{
    (void)msg;
    (void)arg;
    struct nfqnl_msg_packet_hdr *hdr = nfq_get_msg_packet_hdr(d);
    if (!hdr) return 0;
    uint32_t id = ntohl(hdr->packet_id);
    if (count == FIFO_CAP) {
        n_passed++;
        return nfq_set_verdict(q, id, NF_ACCEPT, 0, NULL);
    }
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    struct held *h = &fifo[(first + count) & (FIFO_CAP - 1)];
    h->id = id;
    h->due = add_ns(now, delay_ns);
    count++;
    n_delayed++;
    return 0;
}

/* Accept every packet whose time has come, with one batch verdict. */
static void release_due(struct nfq_q_handle *q)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    int any = 0;
    uint32_t last = 0;
    while (count && not_after(fifo[first].due, now)) {
        last = fifo[first].id;
        first = (first + 1) & (FIFO_CAP - 1);
        count--;
        any = 1;
    }
    if (any) nfq_set_verdict_batch(q, last, NF_ACCEPT);
}

static void arm(int tfd)
{
    struct itimerspec it;
    memset(&it, 0, sizeof it);
    if (count) it.it_value = fifo[first].due; /* absolute; all-zero disarms */
    if (count && it.it_value.tv_sec == 0 && it.it_value.tv_nsec == 0) it.it_value.tv_nsec = 1;
    timerfd_settime(tfd, TFD_TIMER_ABSTIME, &it, NULL);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s QUEUE_NUM DELAY_MS\n", argv[0]);
        return 2;
    }
    char *end;
    long qnum = strtol(argv[1], &end, 10);
    if (*end || qnum < 0 || qnum > 65535) {
        fprintf(stderr, "nfq-delay: bad queue number '%s'\n", argv[1]);
        return 2;
    }
    double ms = strtod(argv[2], &end);
    if (*end || ms < 0 || ms > 10000) {
        fprintf(stderr, "nfq-delay: bad delay '%s' (milliseconds, 0-10000)\n", argv[2]);
        return 2;
    }
    delay_ns = (long long)(ms * 1e6 + 0.5);

    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigprocmask(SIG_BLOCK, &sigs, NULL);
    int sfd = signalfd(-1, &sigs, SFD_CLOEXEC);
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
    if (sfd < 0 || tfd < 0) {
        perror("nfq-delay: signalfd/timerfd");
        return 1;
    }

    struct nfq_handle *h = nfq_open();
    if (!h) {
        perror("nfq-delay: nfq_open");
        return 1;
    }
    nfq_unbind_pf(h, AF_INET);
    if (nfq_bind_pf(h, AF_INET) < 0) {
        perror("nfq-delay: nfq_bind_pf");
        return 1;
    }
    struct nfq_q_handle *q = nfq_create_queue(h, (uint16_t)qnum, on_packet, NULL);
    if (!q) {
        perror("nfq-delay: nfq_create_queue");
        return 1;
    }
    if (nfq_set_mode(q, NFQNL_COPY_META, 0) < 0) {
        perror("nfq-delay: nfq_set_mode");
        return 1;
    }
    nfq_set_queue_maxlen(q, 100000);
    /* fail open on kernel queue overflow; take GSO packets whole instead of segmenting */
    uint32_t flags = NFQA_CFG_F_FAIL_OPEN | NFQA_CFG_F_GSO;
    if (nfq_set_queue_flags(q, flags, flags) < 0)
        fprintf(stderr, "nfq-delay: note: queue flags not supported, continuing\n");
    int nfd = nfq_fd(h);
    nfnl_rcvbufsiz(nfq_nfnlh(h), 8u << 20);
    int on = 1;
    setsockopt(nfd, SOL_NETLINK, NETLINK_NO_ENOBUFS, &on, sizeof on);

    fprintf(stderr, "nfq-delay: queue %ld, one-way delay %.3f ms, pid %d\n", qnum, ms, (int)getpid());
    static char buf[256 * 1024] __attribute__((aligned(8)));
    int running = 1;
    while (running) {
        struct pollfd p[3] = {{nfd, POLLIN, 0}, {tfd, POLLIN, 0}, {sfd, POLLIN, 0}};
        if (poll(p, 3, -1) < 0) {
            if (errno == EINTR) continue;
            perror("nfq-delay: poll");
            break;
        }
        if (p[2].revents & POLLIN) running = 0;
        if (p[1].revents & POLLIN) {
            uint64_t ticks;
            if (read(tfd, &ticks, sizeof ticks) < 0) { /* nothing: re-armed below */
            }
        }
        if (p[0].revents & POLLIN) {
            for (;;) {
                ssize_t n = recv(nfd, buf, sizeof buf, MSG_DONTWAIT);
                if (n < 0) {
                    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ENOBUFS)
                        perror("nfq-delay: recv");
                    break;
                }
                nfq_handle_packet(h, buf, (int)n);
            }
        }
        release_due(q);
        arm(tfd);
    }
    if (count) nfq_set_verdict_batch(q, fifo[(first + count - 1) & (FIFO_CAP - 1)].id, NF_ACCEPT);
    fprintf(stderr, "nfq-delay: exit, %llu packets delayed, %llu passed undelayed (FIFO full)\n", n_delayed,
            n_passed);
    nfq_destroy_queue(q);
    nfq_close(h);
    return 0;
}
